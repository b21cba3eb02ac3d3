"""Photos kept "for scoring only" never reach training: checked on the pixels the trainer
encodes into latents, not on a flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dreamstudio.config import PrepareConfig, TrainConfig
from dreamstudio.data.images import open_rgb
from dreamstudio.data.manifest import MANIFEST_NAME, load_manifest
from dreamstudio.data.prepare import list_image_files, prepare_photos
from dreamstudio.errors import InputError
from dreamstudio.train import trainer
from dreamstudio.train.latents import to_training_tensor
from dreamstudio.train.trainer import train


@pytest.fixture
def prepared(tmp_path: Path, small_dog_dir: Path) -> Path:
    """The dog photos plus copies turned upside down, so there are six or more distinct
    photos and the default marking holds one out."""
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted(small_dog_dir.iterdir()):
        image = open_rgb(path)
        image.save(src / path.name)
        image.rotate(180).save(src / f"r{path.name}")
    out = tmp_path / "crops"
    prepare_photos(list_image_files(src), out, PrepareConfig(mode="object", size=64))
    assert load_manifest(out).held_out, "the fixture should hold a photo out"
    return out


def _config(model: Path, instance_dir: Path, out: Path) -> TrainConfig:
    return TrainConfig(model=str(model), instance_dir=instance_dir, output_dir=out,
                       instance_prompt="a photo of sks dog", steps=1, resolution=64, rank=4,
                       seed=0, flip=False, validation_every=0)


def test_the_trainer_encodes_the_training_photos_and_no_held_out_one(
        tiny_model, prepared, tmp_path, monkeypatch) -> None:
    encoded: list[torch.Tensor] = []
    real_cache = trainer.LatentCache

    def recording_cache(vae, pixels, *args, **kwargs):
        encoded.append(pixels.clone())
        return real_cache(vae, pixels, *args, **kwargs)

    monkeypatch.setattr(trainer, "LatentCache", recording_cache)
    train(_config(tiny_model, prepared, tmp_path / "lora"))

    report = load_manifest(prepared)
    pixels = encoded[0]

    def tensor(name: str) -> torch.Tensor:
        return to_training_tensor(open_rgb(prepared / name), 64)

    def was_encoded(name: str) -> bool:
        return any(torch.equal(row, tensor(name)) for row in pixels)

    assert pixels.shape[0] == len(report.used)
    assert all(was_encoded(r.output) for r in report.used)
    assert not any(was_encoded(name) for name in report.held_out)


def test_the_trainer_refuses_a_manifest_holding_every_photo_out(
        tiny_model, prepared, tmp_path) -> None:
    path = prepared / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["held_out"] = [r["output"] for r in data["results"] if r["kept"]]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=rf"{MANIFEST_NAME}.*scoring only"):
        train(_config(tiny_model, prepared, tmp_path / "lora"))
