"""The command line fills what the user left out from the base model family's defaults
(config/families.py); flags given win, and SD 1.x keeps TrainConfig's own defaults."""

from __future__ import annotations

import types

import pytest

from dreamstudio.cli import build_parser, generate_config, main, train_config
from dreamstudio.config import GenerateConfig, TrainConfig, default_of
from dreamstudio.config.families import generate_defaults, train_defaults
from dreamstudio.core.families import SDXL

SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"  # a Hub id: its family is its name


def _train(tmp_path, *options: str):
    return train_config(build_parser().parse_args(
        ["train", "--instance-dir", str(tmp_path), "--instance-prompt", "a photo of sks dog",
         "--output", str(tmp_path / "run"), *options]))


def test_sdxl_training_starts_from_sdxl_defaults(tmp_path):
    family, config = _train(tmp_path, "--model", SDXL_ID)
    assert family == SDXL
    assert (config.resolution, config.learning_rate, config.text_encoder_lr,
            config.steps) == (1024, 1e-4, 1e-5, 500)
    assert train_defaults(SDXL) == {"resolution": 1024, "learning_rate": 1e-4,
                                    "text_encoder_lr": 1e-5, "steps": 500}


def test_flags_given_win_over_the_familys_defaults(tmp_path, tiny_sdxl_model):
    _, config = _train(tmp_path, "--model", str(tiny_sdxl_model), "--resolution", "64",
                       "--lr", "3e-4", "--steps", "7")
    assert (config.resolution, config.learning_rate, config.steps) == (64, 3e-4, 7)
    assert config.text_encoder_lr == 1e-5  # not given: SDXL's
    # A flag given with the value TrainConfig happens to default to still wins.
    _, config = _train(tmp_path, "--model", SDXL_ID, "--resolution", "512")
    assert config.resolution == 512


def test_sd1_keeps_trainconfigs_own_defaults(tmp_path, tiny_model):
    _, config = _train(tmp_path, "--model", str(tiny_model))
    for name in ("resolution", "learning_rate", "text_encoder_lr", "steps"):
        assert getattr(config, name) == default_of(TrainConfig, name), name


def test_generation_defaults_per_family(tmp_path, tiny_model):
    def config(*options: str) -> GenerateConfig:
        return generate_config(build_parser().parse_args(
            ["generate", "--prompt", "a dog", "--output", str(tmp_path), *options]))

    sdxl = config("--model", SDXL_ID)
    assert (sdxl.height, sdxl.width, sdxl.guidance) == (1024, 1024, 5.0)
    assert generate_defaults(SDXL) == {"height": 1024, "width": 1024, "guidance": 5.0}
    given = config("--model", SDXL_ID, "--height", "64", "--guidance", "7.5")
    assert (given.height, given.width, given.guidance) == (64, 1024, 7.5)
    sd1 = config("--model", str(tiny_model))
    assert (sd1.height, sd1.width, sd1.guidance) == (None, None,
                                                     default_of(GenerateConfig, "guidance"))


def test_vae_reaches_training_and_generation(tmp_path, monkeypatch, capsys):
    _, config = _train(tmp_path, "--model", SDXL_ID, "--vae", "madebyollin/sdxl-vae-fp16-fix")
    assert config.vae == "madebyollin/sdxl-vae-fp16-fix"
    made = {}

    class FakeGenerator:
        def __init__(self, model, **kwargs):
            made.update(kwargs, model=model)

        def generate(self, config, output):
            made["config"] = config
            return []

    monkeypatch.setattr("dreamstudio.generate.generator.Generator", FakeGenerator)
    assert main(["generate", "--model", SDXL_ID, "--vae", "my-vae-folder", "--prompt", "a dog",
                 "--output", str(tmp_path / "out")]) == 0
    assert made["vae"] == "my-vae-folder" and made["model"] == SDXL_ID
    assert made["config"].guidance == 5.0


@pytest.mark.parametrize("model, named", [(SDXL_ID, "SDXL"), ("tiny", "SD 1.x")])
def test_training_names_the_family_when_it_starts(tmp_path, monkeypatch, capsys, model,
                                                  named, tiny_model):
    model = str(tiny_model) if model == "tiny" else model
    seen = {}

    def fake_train(config, progress=None):
        seen["config"] = config
        return types.SimpleNamespace(skipped_files=[], message="done", kohya_path=None,
                                     status="completed")

    monkeypatch.setattr("dreamstudio.train.trainer.train", fake_train)
    assert main(["train", "--model", model, "--instance-dir", str(tmp_path),
                 "--instance-prompt", "a photo of sks dog", "--output",
                 str(tmp_path / "run")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"Base model: {model} ({named}), {seen['config'].resolution} px")
