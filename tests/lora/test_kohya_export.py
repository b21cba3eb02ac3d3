"""The kohya export (A1111 / Forge / ComfyUI): key mapping and round trip."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dreamstudio.config import TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, peft_weights
from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME, read_lora_info
from dreamstudio.lora.kohya import kohya_metadata, kohya_module_name, subject_file_name, to_kohya
from dreamstudio.train.trainer import train


@pytest.fixture(scope="module")
def run(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("kohya")
    return train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                             instance_prompt="a photo of sks dog", output_dir=out, steps=10,
                             resolution=64, learning_rate=5e-3, text_encoder_lr=5e-3,
                             subject_name="Rex the dog", validation_every=0,
                             checkpoint_every=0, mixed_precision="no"))


def test_every_lora_layer_maps_to_a_module_of_the_models(tiny_model):
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    add_lora(pipe.unet, 4, UNET_TARGETS)
    add_lora(pipe.text_encoder, 4, TEXT_ENCODER_TARGETS)
    weights = peft_weights(pipe.unet, pipe.text_encoder)
    kohya = to_kohya(weights, alpha=4)

    def targeted(model, prefix, targets):
        names = set()
        for name, module in model.named_modules():
            if any(name.endswith("." + t) for t in targets) and hasattr(module, "lora_A"):
                names.add(kohya_module_name(prefix, name))
        return names

    expected = targeted(pipe.unet, "unet", UNET_TARGETS) | targeted(
        pipe.text_encoder, "text_encoder", TEXT_ENCODER_TARGETS)
    modules = {k.rsplit(".", 2)[0] for k in kohya if k.endswith(".weight")}
    assert modules == expected
    assert all(m.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_"))
               for m in modules)
    for module in modules:
        down, up = kohya[f"{module}.lora_down.weight"], kohya[f"{module}.lora_up.weight"]
        assert down.shape[0] == 4 and up.shape[1] == 4
        assert kohya[f"{module}.alpha"].item() == 4.0
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" in modules


def test_file_is_named_after_the_subject_with_metadata(run):
    assert run.kohya_path.name == "Rex_the_dog.safetensors"
    with safe_open(str(run.kohya_path), framework="pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4"
    assert meta["ss_max_train_steps"] == "10"
    assert meta["ss_sd_model_name"] == "tiny-sd"  # the folder's name, not where it is
    assert meta["dreamstudio_identifier"] == "sks"
    assert meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_unet_lr"] == "0.005" and meta["ss_text_encoder_lr"] == "0.005"
    finished = read_lora_info(run.lora_path.parent)["finished_at"]
    assert meta["dreamstudio_date"] == meta["ss_training_finished_at"] == finished
    assert any(k.startswith("lora_te_") for k in keys)


def test_date_is_when_training_finished_else_now():
    info = {"config": {"rank": 4}, "finished_at": "2021-03-04T05:06:07+0100"}
    meta = kohya_metadata(info)
    assert meta["dreamstudio_date"] == meta["ss_training_finished_at"] == info["finished_at"]
    # Info from before the date was recorded: the export's own time, as a valid timestamp.
    before = time.time()
    fallback = kohya_metadata({"config": {"rank": 4}})
    assert "ss_training_finished_at" not in fallback
    stamp = datetime.strptime(fallback["dreamstudio_date"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert before - 2 <= stamp <= time.time() + 1


def test_kohya_file_generates_the_same_image_as_the_diffusers_file(run, tiny_model):
    def render(lora_path):
        pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
        pipe.load_lora_weights(str(lora_path))
        image = pipe("a photo of sks dog", num_inference_steps=3, height=64, width=64,
                     generator=torch.Generator().manual_seed(0)).images[0]
        return np.asarray(image).astype(int)

    from_diffusers = render(run.lora_path)
    from_kohya = render(run.kohya_path)
    assert np.abs(from_diffusers - from_kohya).max() <= 1


@pytest.mark.parametrize("name, expected", [("Rex the dog", "Rex_the_dog.safetensors"),
                                            ("../../etc", "etc.safetensors"),
                                            ("Zoë", "Zoë.safetensors"), ("", "subject.safetensors")])
def test_subject_file_names_are_safe(name, expected):
    assert subject_file_name(name) == expected


@pytest.mark.parametrize("model, shown", [
    ("/home/ana/private/models/dreamshaper_8.safetensors", "dreamshaper_8.safetensors"),
    ("/home/ana/private/models/sd15-diffusers/", "sd15-diffusers"),
    ("~/models/v1-5-pruned.ckpt", "v1-5-pruned.ckpt"),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
])
def test_the_base_model_is_named_without_the_users_folders(model, shown):
    assert kohya_metadata({"config": {"model": model, "rank": 4}})["ss_sd_model_name"] == shown


def test_a_local_base_model_that_exists_is_named_by_its_own_name(tiny_model):
    meta = kohya_metadata({"config": {"model": str(tiny_model), "rank": 4}})
    assert meta["ss_sd_model_name"] == "tiny-sd"
    assert str(tiny_model.parent) not in json.dumps(meta)


@pytest.mark.parametrize("name", ["pytorch_lora_weights", "PyTorch_Lora_Weights",
                                  "pytorch lora weights", "dreamstudio_lora", ".pytorch_lora_weights"])
def test_the_export_never_takes_the_name_of_a_file_beside_it(name):
    taken = {WEIGHTS_NAME.casefold(), CONFIG_NAME.casefold(),
             f"{Path(CONFIG_NAME).stem}.safetensors".casefold()}
    assert subject_file_name(name).casefold() not in taken


def test_a_run_named_like_the_weights_file_keeps_both_files(tiny_model, small_dog_dir,
                                                          tmp_path):
    out = tmp_path / "pytorch_lora_weights"  # as with --output DIR/pytorch_lora_weights
    result = train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                               instance_prompt="a photo of sks dog", output_dir=out, steps=1,
                               resolution=64, validation_every=0, checkpoint_every=0,
                               mixed_precision="no", train_text_encoder=False))
    assert result.kohya_path != result.lora_path
    assert result.kohya_path.name == "pytorch_lora_weights_kohya.safetensors"
    # Still the diffusers file beside the kohya one (safe_open has keys() but no iteration).
    with safe_open(str(result.lora_path), framework="pt") as fh:
        assert all(k.startswith("unet.") for k in fh.keys())  # noqa: SIM118
    with safe_open(str(result.kohya_path), framework="pt") as fh:
        assert all(k.startswith("lora_unet_") for k in fh.keys())  # noqa: SIM118
