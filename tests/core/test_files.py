"""The one atomic writer: whole files or none, the same permissions for every file written."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamstudio.core.files import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    file_digest,
    file_mode,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "settings.json"
    atomic_write_json(target, {"steps": 300})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("disk pulled out")
    assert json.loads(target.read_text()) == {"steps": 300}
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_the_temporary_keeps_the_suffix_and_sits_beside_the_target(tmp_path):
    target = tmp_path / "deep" / "image.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png"
        assert tmp.name.startswith(".")  # hidden: never listed as a photo or a LoRA
        Image.new("RGB", (4, 4)).save(tmp)
    assert Image.open(target).size == (4, 4)


def test_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask_022):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(path) == umask_022 == file_mode()
    os.umask(0o077)
    assert _mode(atomic_write_text(tmp_path / "b.txt", "y")) == 0o600


def test_json_is_utf8_and_readable(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"name": "Zoë", "path": tmp_path})
    assert json.loads(path.read_text(encoding="utf-8")) == {"name": "Zoë", "path": str(tmp_path)}


def test_digest_is_the_sha256_of_the_content(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(os.urandom(3 << 20))  # more than one read chunk
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_file_a_user_opens_elsewhere_is_readable_by_others(tmp_path, umask_022):
    """LoRA weights, kohya file, LoRA config, manifest, crop and generated PNG: one rule."""
    from dreamstudio.config import PrepareConfig
    from dreamstudio.data.crops import save_crop
    from dreamstudio.data.manifest import PrepareReport, write_manifest
    from dreamstudio.generate.png_metadata import save_png_with_parameters
    from dreamstudio.lora.files import CONFIG_NAME, save_lora
    from dreamstudio.lora.kohya import export_kohya

    layer = {"down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8),
             "down_blocks.0.attentions.0.proj_in.lora_B.weight": torch.zeros(8, 4)}
    lora = save_lora(tmp_path / "run", layer, None, None, {"config": {"rank": 4}})
    kohya = export_kohya({f"unet.{k}": v for k, v in layer.items()}, 4,
                         tmp_path / "run" / "dog.safetensors", {"config": {"rank": 4}})
    manifest = write_manifest(PrepareReport([], PrepareConfig()), tmp_path / "photos")
    crop = tmp_path / "photos" / "000_dog.png"
    save_crop(Image.new("RGB", (32, 32)), (0, 0, 16, 16), 8, crop)
    png = save_png_with_parameters(Image.new("RGB", (8, 8)), tmp_path / "gen", {"seed": 1})
    written = [lora, lora.parent / CONFIG_NAME, kohya, manifest, crop, png]
    assert {p.name: _mode(p) for p in written} == {p.name: umask_022 for p in written}
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == []
