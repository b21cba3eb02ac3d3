"""The diffusers LoRA file loads on diffusers stacks old and new with the same effect as the
kohya file, and files in the layout we wrote before still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamstudio.core.models import load_pipeline
from dreamstudio.lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, peft_weights
from dreamstudio.lora.files import lora_state_dicts, read_lora_weights, save_lora
from dreamstudio.lora.kohya import export_kohya
from tests.support import fuse_lora
from tests.support.older_stack import run_on_older_stack

RANK = 4


@pytest.fixture(scope="module")
def lora(tiny_model, tmp_path_factory):
    """A LoRA on UNet and text encoder with random (non-zero) up and down weights, saved
    as DreamStudio saves a trained one, with its kohya file: (folder, peft weights)."""
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    add_lora(pipe.unet, RANK, UNET_TARGETS)
    add_lora(pipe.text_encoder, RANK, TEXT_ENCODER_TARGETS)
    generator = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=generator) * 0.05
               for k, v in peft_weights(pipe.unet, pipe.text_encoder).items()}
    folder = tmp_path_factory.mktemp("lora")
    info = {"config": {"rank": RANK, "model": str(tiny_model)}, "subject_name": "rex"}
    save_lora(folder, *lora_state_dicts(weights), info)
    export_kohya(weights, RANK, folder / "rex.safetensors", info)
    return folder, weights


def expected_fused(model_dir: Path, weights: dict) -> dict:
    """Every LoRA-targeted weight as W + B @ A (alpha = rank: scale 1), from the files."""
    base = {f"unet.{k}": v for k, v in
            load_file(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    base |= {f"text_encoder.{k.removeprefix('text_model.')}": v for k, v in
             load_file(str(model_dir / "text_encoder" / "model.safetensors")).items()}
    expected = {}
    for key, down in weights.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            up = weights[f"{module}.lora_B.weight"]
            expected[f"{module}.weight"] = base[f"{module}.weight"] + up @ down
    return expected


def assert_fused_as_expected(fused: dict, expected: dict) -> None:
    assert {k.split(".")[0] for k in expected} == {"unet", "text_encoder"}
    for key, weight in expected.items():
        torch.testing.assert_close(fused[key], weight, rtol=1e-5, atol=1e-5, msg=key)


def test_text_encoder_keys_have_the_layout_every_stack_loads(lora):
    folder, _ = lora
    keys = list(load_file(str(folder / "pytorch_lora_weights.safetensors")))
    te = [k for k in keys if k.startswith("text_encoder.")]
    assert len(te) == 2 * 4 * 2  # down and up of q, k, v, out in both layers
    assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in te)


def test_our_stack_fuses_the_file_as_the_lora_math_and_the_kohya_file_do(lora, tiny_model):
    folder, weights = lora
    expected = expected_fused(tiny_model, weights)
    fused, adapters = fuse_lora.fused_weights(tiny_model,
                                              folder / "pytorch_lora_weights.safetensors")
    assert set(adapters) == {"unet", "text_encoder"}
    assert_fused_as_expected(fused, expected)
    from_kohya, _ = fuse_lora.fused_weights(tiny_model, folder / "rex.safetensors")
    assert_fused_as_expected(from_kohya, expected)


def test_an_older_diffusers_stack_loads_the_file_with_the_same_weights(lora, tiny_model,
                                                                       tmp_path):
    """diffusers 0.35 + transformers 4.57 + peft 0.17 raised IndexError on the file that
    had `text_encoder.encoder...` keys."""
    folder, weights = lora
    out = tmp_path / "fused.safetensors"
    result = run_on_older_stack(Path(fuse_lora.__file__), str(tiny_model),
                                str(folder / "pytorch_lora_weights.safetensors"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["versions"] == {"diffusers": "0.35.2", "transformers": "4.57.6",
                                  "peft": "0.17.1"}
    assert set(report["adapters"]) == {"unet", "text_encoder"}
    older = load_file(str(out))
    assert_fused_as_expected(older, expected_fused(tiny_model, weights))
    ours, _ = fuse_lora.fused_weights(tiny_model, folder / "pytorch_lora_weights.safetensors")
    assert set(older) == set(ours)
    for key in ours:
        torch.testing.assert_close(older[key], ours[key], msg=key)


def _old_layout_copy(folder: Path, to: Path) -> Path:
    """The LoRA as DreamStudio wrote it before: text-encoder keys without `text_model.`."""
    to.mkdir()
    weights = {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in
               load_file(str(folder / "pytorch_lora_weights.safetensors")).items()}
    assert any(k.startswith("text_encoder.encoder.") for k in weights)
    save_file(weights, str(to / "pytorch_lora_weights.safetensors"), metadata={"format": "pt"})
    (to / "dreamstudio_lora.json").write_bytes((folder / "dreamstudio_lora.json").read_bytes())
    return to


def test_loras_in_the_layout_we_wrote_before_still_load(lora, tiny_model, tmp_path):
    folder, weights = lora
    old = _old_layout_copy(folder, tmp_path / "old")
    fused, adapters = fuse_lora.fused_weights(tiny_model, old / "pytorch_lora_weights.safetensors")
    assert set(adapters) == {"unet", "text_encoder"}
    assert_fused_as_expected(fused, expected_fused(tiny_model, weights))


@pytest.mark.parametrize("layout", ["current", "old"])
def test_the_weights_read_back_are_the_ones_saved(lora, tmp_path, layout):
    folder, weights = lora
    if layout == "old":
        folder = _old_layout_copy(folder, tmp_path / "old")
    back = read_lora_weights(folder)
    strip = {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in back.items()}
    assert set(strip) == set(weights)
    for key, tensor in weights.items():
        assert torch.equal(strip[key], tensor), key


def test_a_file_that_is_not_a_lora_is_refused_when_read(tmp_path):
    save_file({"model.weight": torch.zeros(2)}, str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError, match="not a DreamStudio LoRA file"):
        read_lora_weights(tmp_path)
