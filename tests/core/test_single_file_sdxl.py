"""SDXL single-file checkpoints: told from their tensor names and shapes (the header only),
loaded with StableDiffusionXLPipeline, offline."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open

from dreamstudio.core.architectures import config_folder, detect_architecture
from dreamstudio.core.models import load_pipeline
from dreamstudio.errors import ModelLoadError
from tests.core.test_families import sdxl_header
from tests.support.sdxl_single_file import convert_sdxl_folder, save_sdxl_shaped_mini_model

CPU = torch.device("cpu")


def test_an_sdxl_checkpoint_is_recognised(tmp_path):
    assert detect_architecture(sdxl_header(tmp_path / "sd_xl_base_1.0.safetensors")) == "sdxl"


def test_detection_reads_the_header_only(tmp_path):
    """A header naming SDXL's tensors at SDXL's sizes over a sparse, empty body: nothing
    but the header can have been read."""
    shapes = {"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight":
              [640, 2048], "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
              "conditioner.embedders.1.model.positional_embedding": [77, 1280],
              "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding"
              ".weight": [49408, 768]}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * torch.Size(shape).numel()
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    assert detect_architecture(path) == "sdxl"


@pytest.mark.parametrize("kwargs, message", [
    ({"second_encoder": False}, "is an SDXL refiner"),
    ({"in_channels": 9}, "9-channel UNet input"),
    ({"width": 1024}, "1024-wide text conditioning, not SDXL's 2048"),
])
def test_sdxl_files_that_are_no_text_to_image_base_are_named(tmp_path, kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        detect_architecture(sdxl_header(tmp_path / "model.safetensors", **kwargs))


def test_a_named_sd_architecture_does_not_fit_an_sdxl_file(tmp_path):
    with pytest.raises(ModelLoadError, match="is SDXL, but --model-config sd1"):
        detect_architecture(sdxl_header(tmp_path / "xl.safetensors"), "sd1")
    assert detect_architecture(sdxl_header(tmp_path / "xl2.safetensors"), "sdxl") == "sdxl"


def test_an_sdxl_file_loads_with_the_xl_pipeline_and_the_shipped_configs(tmp_path, monkeypatch,
                                                                         tiny_sdxl_model):
    """The route, whatever diffusers does with it: the XL pipeline's from_single_file, the
    shipped SDXL configs and both tokenizers built from the shipped vocabulary."""
    from diffusers import StableDiffusionXLPipeline

    if not (config_folder("sdxl") / "model_index.json").is_file():
        pytest.skip("the shipped SDXL configs (dreamstudio/core/model_configs/sdxl) are not "
                    "in this checkout")
    called = {}
    real = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_model))

    def from_single_file(cls, path, **kwargs):
        called.update(kwargs, path=path)
        return real

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_single_file",
                        classmethod(from_single_file))
    checkpoint = sdxl_header(tmp_path / "juggernaut.safetensors")
    assert load_pipeline(str(checkpoint), CPU) is real
    assert called["config"] == str(config_folder("sdxl"))
    assert called["tokenizer"]("sks").input_ids == [49406, 48136, 49407]
    assert called["tokenizer_2"].pad_token == "!"  # OpenCLIP's padding
    assert called["add_watermarker"] is False


def test_a_converted_sdxl_checkpoint_loads_with_the_folders_weights(tmp_path):
    """A real single file in the original layout, loaded through the users' loader with its
    architecture's diffusers folder (--model-config)."""
    from diffusers import StableDiffusionXLPipeline

    folder = save_sdxl_shaped_mini_model(tmp_path / "mini-xl")
    checkpoint = convert_sdxl_folder(folder, tmp_path / "mini-xl.safetensors")
    with safe_open(str(checkpoint), framework="pt") as fh:
        names = fh.keys()
    assert any(k.startswith("conditioner.embedders.1.model.") for k in names)
    loaded = load_pipeline(str(checkpoint), CPU, config_dir=str(folder))
    reference = StableDiffusionXLPipeline.from_pretrained(str(folder))
    assert isinstance(loaded, StableDiffusionXLPipeline)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        got, want = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        missing = [k for k in want if k not in got or not torch.equal(got[k], want[k])]
        assert not missing, (name, missing[:5])
    assert loaded.tokenizer_2("a sks dog").input_ids == reference.tokenizer_2("a sks dog").input_ids
