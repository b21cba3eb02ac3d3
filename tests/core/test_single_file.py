"""Single-file checkpoints (.safetensors as model sites offer them), loaded for real, offline."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from dreamstudio.core.architectures import detect_architecture
from dreamstudio.core.models import load_pipeline, prediction_type
from dreamstudio.errors import ModelLoadError
from tests.support.single_file import (
    convert_folder,
    save_sd_shaped_mini_model,
    sd2_components,
    write_zero_checkpoint,
)

CPU = torch.device("cpu")
CROSS_ATTENTION = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def test_converted_checkpoint_loads_with_the_folders_weights(tmp_path):
    folder = save_sd_shaped_mini_model(tmp_path / "mini")
    checkpoint = convert_folder(folder, tmp_path / "mini.safetensors")
    from diffusers import StableDiffusionPipeline

    loaded = load_pipeline(str(checkpoint), CPU, config_dir=str(folder))
    reference = StableDiffusionPipeline.from_pretrained(str(folder))
    for name in ("unet", "vae", "text_encoder"):
        got, want = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert got.keys() == want.keys(), name
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert loaded.tokenizer("a sks dog").input_ids == reference.tokenizer("a sks dog").input_ids


def _header_only(path, width=768, in_channels=4, extra=None):
    """A checkpoint with just the tensors detection reads, at their real shapes."""
    tensors = {CROSS_ATTENTION: torch.zeros(320, width, dtype=torch.float16),
               CONV_IN: torch.zeros(320, in_channels, 3, 3, dtype=torch.float16)}
    save_file({**tensors, **(extra or {})}, path)
    return path


@pytest.mark.parametrize("name, width, expected", [
    ("dreamshaper_8.safetensors", 768, "sd1"),
    ("v2-1_768-ema-pruned.safetensors", 1024, "sd2-v"),
    ("768-v-ema.safetensors", 1024, "sd2-v"),
    ("v2-1_512-ema-pruned.safetensors", 1024, "sd2-base"),
    ("512-base-ema.safetensors", 1024, "sd2-base"),
])
def test_architecture_is_read_from_the_tensors_and_the_name(tmp_path, name, width, expected):
    assert detect_architecture(_header_only(tmp_path / name, width)) == expected


def test_a_yaml_beside_the_checkpoint_says_whether_it_predicts_velocity(tmp_path):
    checkpoint = _header_only(tmp_path / "my-512-model.safetensors", 1024)
    (tmp_path / "my-512-model.yaml").write_text(
        'model:\n  params:\n    parameterization: "v"\n    linear_start: 0.00085\n')
    assert detect_architecture(checkpoint) == "sd2-v"
    (tmp_path / "my-512-model.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect_architecture(checkpoint) == "sd2-base"


def test_a_named_architecture_wins_over_the_name_but_not_over_the_tensors(tmp_path):
    sd2 = _header_only(tmp_path / "v2-1_768-ema-pruned.safetensors", 1024)
    assert detect_architecture(sd2, "sd2-base") == "sd2-base"
    with pytest.raises(ModelLoadError, match="is SD 2.x, but --model-config sd1"):
        detect_architecture(sd2, "sd1")


@pytest.mark.parametrize("kwargs, message", [
    ({"in_channels": 9}, "9-channel UNet input"),
    ({"width": 1280, "extra": {"conditioner.embedders.0.model.ln_final.weight":
                               torch.zeros(4)}}, "is an SDXL refiner"),
    ({"width": 4096}, "4096-wide text conditioning"),
])
def test_unsupported_checkpoints_are_named(tmp_path, kwargs, message):
    checkpoint = _header_only(tmp_path / "model.safetensors", **kwargs)
    with pytest.raises(ModelLoadError, match=message):
        load_pipeline(str(checkpoint), CPU)


def test_a_lora_given_as_the_base_model_is_told_so(tmp_path):
    lora = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.to_q.lora_A.weight": torch.zeros(4, 4)}, lora)
    with pytest.raises(ModelLoadError, match="is a LoRA, not a base model"):
        load_pipeline(str(lora), CPU)


@pytest.mark.slow
def test_sd15_checkpoint_loads_offline_without_a_config(tmp_path, monkeypatch):
    """SD 1.5's real tensor names and shapes (all zeros); before the shipped configs this
    needed the Hub or --model-config."""
    from bench.sd15 import sd15_components

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.device("meta"):
        components = sd15_components()
    checkpoint = write_zero_checkpoint(components, tmp_path / "v1-5-pruned.safetensors")
    pipe = load_pipeline(str(checkpoint), CPU, torch.float16)
    assert pipe.unet.config.cross_attention_dim == 768
    assert pipe.text_encoder.config.hidden_size == 768
    assert prediction_type(pipe.scheduler) == "epsilon"
    assert pipe.tokenizer("sks").input_ids == [49406, 48136, 49407]
    assert not pipe.unet.conv_in.weight.any()  # the file's weights, not an init


@pytest.mark.slow
def test_sd21_768_checkpoint_loads_offline_as_v_prediction(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.device("meta"):
        components = sd2_components()
    checkpoint = write_zero_checkpoint(components, tmp_path / "v2-1_768-ema-pruned.safetensors")
    pipe = load_pipeline(str(checkpoint), CPU, torch.float16)
    assert pipe.unet.config.cross_attention_dim == 1024
    assert pipe.text_encoder.config.num_hidden_layers == 23
    assert prediction_type(pipe.scheduler) == "v_prediction"
    assert pipe.tokenizer.pad_token == "!"  # OpenCLIP pads with "!", CLIP with end-of-text
    base = shutil.copy(checkpoint, tmp_path / "v2-1_512-ema-pruned.safetensors")
    assert detect_architecture(base) == "sd2-base"


def test_identifier_tokenizer_of_a_checkpoint_needs_no_hub(tmp_path):
    from dreamstudio.train.identifiers import load_tokenizer

    sd2 = _header_only(tmp_path / "v2-1_768-ema-pruned.safetensors", 1024)
    tokenizer = load_tokenizer(str(sd2))
    assert tokenizer("sks").input_ids == [49406, 48136, 49407]
    assert tokenizer.pad_token == "!"
