"""A base model's family, read before anything loads: from its folder, its Hub id, its file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from dreamstudio.config.families import family_name, family_of
from dreamstudio.core.families import SD1, SD2, SDXL, hub_family, source_family

SDXL_CROSS_ATTENTION = (
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def sdxl_header(path, width=2048, in_channels=4, second_encoder=True):
    """A checkpoint with SDXL's names at their real shapes, and only the tensors detection
    reads (its header is what is read)."""
    tensors = {
        SDXL_CROSS_ATTENTION: torch.zeros(640, width, dtype=torch.float16),
        CONV_IN: torch.zeros(320, in_channels, 3, 3, dtype=torch.float16),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight":
            torch.zeros(768, dtype=torch.float16),
    }
    if second_encoder:
        tensors["conditioner.embedders.1.model.ln_final.weight"] = torch.zeros(
            1280, dtype=torch.float16)
    save_file(tensors, path)
    return path


def test_folders_say_their_family_in_model_index_json(tiny_model, tiny_sdxl_model, tmp_path):
    assert source_family(str(tiny_model)) == SD1
    assert source_family(str(tiny_sdxl_model)) == SDXL
    # A folder saved by another tool may name only its second text encoder.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps(
        {"_class_name": "DiffusionPipeline", "text_encoder_2": ["transformers", "x"]}))
    assert source_family(str(other)) == SDXL


@pytest.mark.parametrize("model_id, family", [
    ("stabilityai/stable-diffusion-xl-base-1.0", SDXL),
    ("RunDiffusion/Juggernaut-XL-v9", SDXL),
    ("someone/my_sdxl_finetune", SDXL),
    ("nerijs/pixel-art-xl", SDXL),
    ("SG161222/RealVisXL_V4.0", SDXL),  # "XL" glued to the name's word
    ("someone/juggernautXL", SDXL),
    ("someone/pixel-art-diffusion", SD1),  # "pixel" ends in "xel", not an "xl" word
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", SD1),
    ("stabilityai/stable-diffusion-2-1", SD2),
])
def test_hub_ids_name_their_family(model_id, family):
    assert hub_family(model_id) == family
    assert source_family(model_id) == family


def test_a_single_file_is_sdxl_from_its_tensor_names(tmp_path):
    assert source_family(str(sdxl_header(tmp_path / "juggernaut.safetensors"))) == SDXL


def test_a_single_file_with_a_config_folder_takes_the_folders_family(tmp_path,
                                                                     tiny_sdxl_model):
    checkpoint = sdxl_header(tmp_path / "tiny.safetensors", width=64)
    assert source_family(str(checkpoint), str(tiny_sdxl_model)) == SDXL


def test_the_ui_and_cli_name_families_and_fall_back_to_sd1_on_unreadable_files(tmp_path):
    assert [family_name(f) for f in (SD1, SD2, SDXL)] == ["SD 1.x", "SD 2.x", "SDXL"]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    assert family_of(str(broken)) == SD1  # the loader says what is wrong when it loads
    assert family_of("stabilityai/stable-diffusion-xl-base-1.0") == SDXL
