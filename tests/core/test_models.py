"""Loading base models: the three kinds of reference and their errors."""

from __future__ import annotations

import pytest
import torch

from dreamstudio.core.models import describe_source, load_pipeline, prediction_type
from dreamstudio.errors import ModelLoadError


def test_loads_a_diffusers_folder_with_the_real_clip_tokenizer(tiny_model):
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    ids = pipe.tokenizer("sks").input_ids
    assert len(ids) == 3  # start, "sks" as one token, end
    assert pipe.tokenizer.model_max_length == 77
    assert prediction_type(pipe.scheduler) == "epsilon"


def test_v_prediction_is_read_from_the_scheduler(tiny_vpred_model):
    pipe = load_pipeline(str(tiny_vpred_model), torch.device("cpu"))
    assert prediction_type(pipe.scheduler) == "v_prediction"


def test_kinds_of_reference(tiny_model, tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    assert describe_source(str(tiny_model)) == "folder"
    assert describe_source(str(file)) == "file"
    assert describe_source("stable-diffusion-v1-5/stable-diffusion-v1-5") == "hub"
    assert describe_source(str(tmp_path / "nope.safetensors")) == "missing"


def test_hub_id_without_network_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no network access to the Hub") as err:
        load_pipeline("dreamstudio-test/does-not-exist", torch.device("cpu"))
    assert "dreamstudio-test/does-not-exist" in str(err.value)


def test_missing_path_names_what_was_tried(tmp_path):
    with pytest.raises(ModelLoadError, match="not an existing folder"):
        load_pipeline(str(tmp_path / "nothing" / "here.safetensors"), torch.device("cpu"))


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(str(tmp_path), torch.device("cpu"))


def test_corrupt_checkpoint_file(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable .safetensors"):
        load_pipeline(str(bad), torch.device("cpu"))


def test_damaged_component_in_a_folder_is_reported(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="local diffusers folder"):
        load_pipeline(str(copy), torch.device("cpu"))


def test_mistyped_local_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert describe_source("models/sd15") == "missing"
    with pytest.raises(ModelLoadError, match="not an existing folder"):
        load_pipeline("models/sd15", torch.device("cpu"))


def test_single_file_checkpoints_go_through_from_single_file(tiny_model, tmp_path, monkeypatch):
    """A config folder given with a checkpoint goes to from_single_file as it is."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, checkpoint)
    calls = []

    def fake_from_single_file(path, **kwargs):
        calls.append((path, kwargs))
        return StableDiffusionPipeline.from_pretrained(str(tiny_model))

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", fake_from_single_file)
    pipe = load_pipeline(str(checkpoint), torch.device("cpu"), config_dir=str(tiny_model))
    assert calls == [(str(checkpoint), {"dtype": torch.float32, "safety_checker": None,
                                        "config": str(tiny_model)})]
    assert pipe.device.type == "cpu"
