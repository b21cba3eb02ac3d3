"""An SDXL run's checkpoint kept as a LoRA of its own (workspace.kept_checkpoints, through
tune.candidates.export_checkpoint): text encoder 2's weights and the family come along."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from dreamstudio.lora.files import read_lora_info, read_lora_weights
from dreamstudio.lora.kohya import find_kohya_file
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.tune.candidates import checkpoint_family
from dreamstudio.workspace.kept_checkpoints import keep_checkpoint
from dreamstudio.workspace.runs import SETTINGS_FILE
from tests.lora.sdxl_lora import RANK, assert_same_outputs, fresh_pipe, make_sdxl_lora, outputs


def test_a_kept_sdxl_checkpoint_is_an_sdxl_lora_with_both_text_encoders(tiny_sdxl_model,
                                                                        tmp_path):
    made = make_sdxl_lora(tiny_sdxl_model, tmp_path / "made")
    loras = tmp_path / "loras"
    run = loras / "rex"
    run.mkdir(parents=True)
    # A run cancelled after its checkpoint: no final LoRA, so no record with its family.
    (run / SETTINGS_FILE).write_text(json.dumps(
        {"model": str(tiny_sdxl_model), "rank": RANK, "lora_alpha": RANK,
         "subject_name": "rex", "resolution": 64, "train_text_encoder": True}))
    save_checkpoint(run, 2, made.weights, {"step": 2}, keep=2)

    kept = keep_checkpoint(loras, "rex", 2)
    assert kept.name == "rex-step2"
    assert read_lora_info(kept)["family"] == "sdxl"
    back = read_lora_weights(kept)
    back = {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in back.items()}
    assert set(back) == set(made.weights)
    assert any(k.startswith("text_encoder_2.") for k in back)
    for key, tensor in made.weights.items():
        assert torch.equal(back[key], tensor), key
    with safe_open(str(find_kohya_file(kept)), framework="pt") as fh:
        names = {k.split("_")[1] for k in fh.keys()}  # noqa: SIM118
        assert fh.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    assert names == {"unet", "te1", "te2"}
    pipe = fresh_pipe(tiny_sdxl_model)
    pipe.load_lora_weights(str(kept))
    assert_same_outputs(outputs(pipe), made.live)


def test_a_unet_only_checkpoint_takes_the_family_of_its_base_model(tiny_sdxl_model,
                                                                   tiny_model, tmp_path):
    unet_only = {"unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8)}
    assert checkpoint_family(unet_only, {"model": str(tiny_sdxl_model)}) == "sdxl"
    assert checkpoint_family(unet_only, {"model": str(tiny_model)}) == "sd1"
    assert checkpoint_family({"text_encoder_2.x.lora_A.weight": torch.zeros(1)}, {}) == "sdxl"
    assert checkpoint_family(unet_only, {}) is None
