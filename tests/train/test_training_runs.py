"""Faults and visibility of a run: checkpoints and resume, validation images, run log."""

from __future__ import annotations

import re
import threading

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import TrainConfig
from dreamstudio.errors import TrainingError
from dreamstudio.lora.files import WEIGHTS_NAME, read_lora_info
from dreamstudio.train.checkpoints import list_checkpoints
from dreamstudio.train.setup import make_optimizer
from dreamstudio.train.trainer import train

PROMPT = "a photo of sks dog"


def _config(model, instance_dir, output_dir, **kw) -> TrainConfig:
    settings = {"steps": 8, "resolution": 64, "checkpoint_every": 0, "validation_every": 0,
                "mixed_precision": "no", "export_kohya": False}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=instance_dir, instance_prompt=PROMPT,
                       output_dir=output_dir, **settings)


def _cancel_at(step: int):
    cancel = threading.Event()

    def progress(p):
        if p.phase == "training" and p.step == step:
            cancel.set()

    return progress, cancel


def test_resumed_run_ends_with_the_same_lora_as_an_uninterrupted_one(
    tiny_model, small_dog_dir, tmp_path
):
    kw = {"steps": 10, "checkpoint_every": 3, "lr_scheduler": "cosine", "flip": True}
    straight = train(_config(tiny_model, small_dog_dir, tmp_path / "straight", **kw))

    out = tmp_path / "interrupted"
    progress, cancel = _cancel_at(5)
    first = train(_config(tiny_model, small_dog_dir, out, **kw), progress, cancel)
    assert first.status == "cancelled" and "resume" in first.message
    assert [c.step for c in list_checkpoints(out)] == [3, 5]
    assert not (out / WEIGHTS_NAME).exists()

    resumed = train(_config(tiny_model, small_dog_dir, out, resume=True, **kw))
    assert resumed.status == "completed" and resumed.steps_done == 10
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a, b = load_file(str(straight.lora_path)), load_file(str(resumed.lora_path))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_only_the_last_checkpoints_are_kept(tiny_model, small_dog_dir, tmp_path):
    train(_config(tiny_model, small_dog_dir, tmp_path, steps=9, checkpoint_every=2,
                  keep_checkpoints=2))
    assert [c.step for c in list_checkpoints(tmp_path)] == [6, 8]
    assert not list((tmp_path / "checkpoints").glob(".writing-*"))


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_model, small_dog_dir, tmp_path):
    train(_config(tiny_model, small_dog_dir, tmp_path, steps=4, checkpoint_every=2))
    with pytest.raises(TrainingError, match=r"rank \(was 4, now 8\)"):
        train(_config(tiny_model, small_dog_dir, tmp_path, steps=6, rank=8, resume=True,
                      checkpoint_every=2))


def test_resume_without_a_checkpoint_says_so(tiny_model, small_dog_dir, tmp_path):
    with pytest.raises(TrainingError, match="Nothing to resume"):
        train(_config(tiny_model, small_dog_dir, tmp_path, resume=True))


def test_validation_images_arrive_during_the_run_and_stay(tiny_model, small_dog_dir, tmp_path):
    seen = []
    result = train(_config(tiny_model, small_dog_dir, tmp_path, steps=4, validation_every=2,
                           validation_steps=2, validation_prompt="a photo of sks dog swimming"),
                   progress=lambda p: seen.append((p.step, list(p.validation_images))))
    images = sorted((tmp_path / "validation").glob("*.png"))
    assert [p.name for p in images] == ["step-000002-0.png", "step-000004-0.png"]
    during = [imgs for step, imgs in seen if step == 3]
    assert during and len(during[-1]) == 1  # the step-2 image was reported before the end
    assert read_lora_info(tmp_path)["validation_images"] == [p.name for p in images]
    log = (tmp_path / "train.log").read_text()
    assert re.search(r"step 4/4 loss \d+\.\d{5}", log)
    assert "validation images at step 2" in log and result.message in log


def test_eight_bit_adam_without_bitsandbytes_is_explained(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("no bitsandbytes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TrainingError, match="pip install bitsandbytes"):
        make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3}], True)


def test_gradient_checkpointing_trains_to_the_same_loss(tiny_model, small_dog_dir, tmp_path):
    plain = train(_config(tiny_model, small_dog_dir, tmp_path / "a", steps=3))
    ckpt = train(_config(tiny_model, small_dog_dir, tmp_path / "b", steps=3,
                         gradient_checkpointing=True, channels_last=False))
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-4)
