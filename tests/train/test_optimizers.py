"""The optimizer choice: AdamW, 8-bit AdamW (the older switch still says it) and Prodigy."""

from __future__ import annotations

import builtins
import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import TrainConfig
from dreamstudio.errors import InputError
from dreamstudio.lora.kohya import kohya_metadata
from dreamstudio.train.setup import make_optimizer
from dreamstudio.train.trainer import train


def _config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks dog",
                       output_dir=tmp_path / "run", **kw)


def _params():
    return [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1.0}]


def test_prodigy_without_its_package_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "prodigyopt":
            raise ImportError("No module named 'prodigyopt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"Prodigy.*pip install prodigyopt"):
        make_optimizer(_params(), "prodigy")


def test_choosing_prodigy_without_its_package_is_refused_before_training(monkeypatch,
                                                                       tmp_path):
    from dreamstudio.config import train as train_config

    real_find_spec = train_config.find_spec
    monkeypatch.setattr(train_config, "find_spec",
                        lambda name: None if name == "prodigyopt" else real_find_spec(name))
    with pytest.raises(InputError, match="pip install prodigyopt"):
        _config(tmp_path, optimizer="prodigy")
    assert _config(tmp_path, optimizer="adamw").optimizer == "adamw"


def test_each_choice_builds_its_optimizer():
    assert type(make_optimizer(_params(), "adamw")) is torch.optim.AdamW
    assert type(make_optimizer(_params(), False)) is torch.optim.AdamW  # the older switch


def test_the_older_8bit_switch_and_the_choice_say_the_same(tmp_path):
    old = _config(tmp_path, use_8bit_adam=True)  # a run saved before the choice existed
    assert old.optimizer == "adamw8bit"
    new = _config(tmp_path, optimizer="adamw8bit")
    assert new.use_8bit_adam is True
    assert _config(tmp_path, optimizer="adamw").use_8bit_adam is False
    again = TrainConfig(**new.to_dict())
    assert (again.optimizer, again.use_8bit_adam) == ("adamw8bit", True)
    with pytest.raises(InputError, match="8-bit Adam is on but the optimizer is 'prodigy'"):
        TrainConfig(**{**new.to_dict(), "optimizer": "prodigy"})
    with pytest.raises(InputError, match="optimizer must be one of"):
        _config(tmp_path, optimizer="sgd")


def test_the_optimizer_is_in_the_run_config_and_the_kohya_metadata(tmp_path):
    saved = _config(tmp_path, optimizer="adamw8bit").to_dict()
    assert TrainConfig(**saved).optimizer == "adamw8bit"
    assert kohya_metadata({"config": saved})["dreamstudio_optimizer"] == "adamw8bit"


@pytest.mark.skipif(importlib.util.find_spec("prodigyopt") is None,
                    reason="prodigyopt is not installed (optional)")
def test_prodigy_trains(tiny_model, small_dog_dir, tmp_path):
    result = train(TrainConfig(
        model=str(tiny_model), instance_dir=small_dog_dir, instance_prompt="a photo of sks dog",
        output_dir=tmp_path / "run", steps=2, resolution=64, checkpoint_every=0,
        validation_every=0, mixed_precision="no", export_kohya=False, optimizer="prodigy",
        learning_rate=1.0, text_encoder_lr=1.0))
    assert result.status == "completed" and result.steps_done == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    weights = load_file(str(result.lora_path))
    ups = [v for k, v in weights.items() if ".up." in k]
    assert ups and all(torch.isfinite(v).all() for v in ups)
    assert any(v.abs().max() > 0 for v in ups)  # B starts at zero: Prodigy moved it
