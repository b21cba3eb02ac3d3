"""The CLI contract: prepare -> train -> generate, and one clear line on bad input."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreamstudio.cli import build_parser, config_from, main
from dreamstudio.config import GenerateConfig, PrepareConfig, TrainConfig, default_of
from dreamstudio.evaluate.config import EvalConfig
from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.lora.files import WEIGHTS_NAME
from dreamstudio.tune.config import TuneConfig

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dreamstudio", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_prepare_train_generate_end_to_end(tiny_model, dog_photos, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in dog_photos[:3]:
        (photos / src.name).write_bytes(src.read_bytes())
    (photos / "notes.jpg").write_text("not a photo")

    crops = tmp_path / "crops"
    out = run("prepare", str(photos), str(crops), "--mode", "object", "--size", "64").stdout
    assert "3 kept, 1 rejected" in out
    assert "notes.jpg: rejected: not an image" in out
    manifest = json.loads((crops / "manifest.json").read_text())
    assert sum(r["kept"] for r in manifest["results"]) == 3

    lora = tmp_path / "lora"
    run("train", "--model", str(tiny_model), "--instance-dir", str(crops), "--instance-prompt",
        "a photo of sks dog", "--output", str(lora), "--steps", "3", "--resolution", "64",
        "--class-dir", str(tmp_path / "class"), "--class-prompt", "a photo of dog",
        "--num-class-images", "2")
    assert (lora / WEIGHTS_NAME).is_file()
    assert len(list((tmp_path / "class").glob("*.png"))) == 2

    images = tmp_path / "images"
    out = run("generate", "--model", str(tiny_model), "--lora", str(lora), "--prompt",
              "a photo of sks dog on a beach", "--output", str(images), "--steps", "2",
              "--num-images", "2", "--height", "64", "--width", "64", "--unet-scale", "0.8",
              "--seed", "5").stdout
    paths = [Path(line) for line in out.split()]
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    with Image.open(paths[0]) as im:
        assert im.size == (64, 64)
    assert read_parameters(paths[1])["seed"] == 6
    assert read_parameters(paths[0])["unet_scale"] == 0.8


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_required_argument(tmp_path):
    line = _one_line_error(run("train", "--instance-dir", str(tmp_path), "--output",
                               str(tmp_path), check=False))
    assert "--instance-prompt" in line


def test_bad_value_is_named(tiny_model, tmp_path):
    line = _one_line_error(run("generate", "--model", str(tiny_model), "--prompt", "x",
                               "--output", str(tmp_path), "--guidance", "50", check=False))
    assert "guidance must be 1-20" in line


def test_missing_model_is_named(small_dog_dir, tmp_path):
    missing = tmp_path / "no-such-model"
    line = _one_line_error(run("train", "--model", str(missing), "--instance-dir",
                               str(small_dog_dir), "--instance-prompt", "a photo of sks dog",
                               "--output", str(tmp_path / "o"), check=False))
    assert str(missing) in line


def test_empty_instance_folder(tiny_model, tmp_path):
    line = _one_line_error(run("train", "--model", str(tiny_model), "--instance-dir",
                               str(tmp_path), "--instance-prompt", "a photo of sks dog",
                               "--output", str(tmp_path / "o"), check=False))
    assert "No usable instance images" in line


# --- options built from the config dataclasses --------------------------------------------

# The flags users type (README "Command line"); renaming one breaks their scripts.
FLAGS = {
    "prepare": "input_dir output_dir --mode --size --face-margin --no-hold-out",
    "train": "--model --model-config --vae --instance-dir --instance-prompt --output --class-dir "
             "--class-prompt --num-class-images --prior-loss-weight --steps --lr "
             "--text-encoder-lr --no-text-encoder --rank --resolution --seed --batch-size "
             "--mixed-precision --gradient-checkpointing --use-8bit-adam --no-channels-last "
             "--flip --lr-scheduler --lr-warmup-steps --checkpoint-every --keep-checkpoints "
             "--resume --validation-prompt --validation-every --score-checkpoints --score-images "
             "--score-dino-model --score-clip-model --no-kohya --use-dora --lora-alpha "
             "--optimizer --no-captions --pivotal --pivotal-tokens --pivotal-lr --pivotal-stop "
             "--prior-mode --min-snr-gamma --noise-offset --face-loss-weight "
             "--face-outside-weight --name --device",
    "generate": "--model --model-config --vae --lora --prompt --output --negative-prompt "
                "--unet-scale --text-encoder-scale --guidance --steps --seed --num-images "
                "--height --width --sampler --precision --grid-x --grid-x-values --grid-y --grid-y-values "
                "--device",
    "evaluate": "--model --model-config --vae --lora --real-dir --output --identifier --class-noun "
                "--kind --images-per-prompt --num-prompts --steps --guidance --seed "
                "--unet-scale --text-encoder-scale --height --width --dino-model --clip-model "
                "--device",
    "tune": "--model --model-config --vae --run --photos --output --candidates --unet-scales "
            "--text-encoder-scales --guidances --prompt-set --images-per-prompt --steps --seed "
            "--height --width --negative-prompt --sampler --precision --leak-images "
            "--clip-t-tolerance --leak-margin --face-identity --face-weights --dino-model "
            "--clip-model --identifier --class-noun --kind --leak-prompt --estimate --device",
    "tiny-model": "output_dir",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _all(cls) -> tuple[type, set[str]]:
    return cls, {f.name for f in dataclasses.fields(cls)}


def _configs() -> dict[str, list[tuple[type, set[str]]]]:
    """Each command's config fields by option dest; the base model options are TrainConfig's.
    (evaluate's --model is its own: it defaults to the LoRA's base model.)"""
    base = {"model", "model_config_dir", "vae", "device"}
    return {"prepare": [_all(PrepareConfig)], "train": [_all(TrainConfig)],
            "generate": [_all(GenerateConfig), (TrainConfig, base)],
            "evaluate": [_all(EvalConfig), (TrainConfig, base - {"model"})],
            "tune": [_all(TuneConfig), (TrainConfig, base - {"model"})]}


def test_every_flag_keeps_its_name():
    commands = _commands()
    assert set(commands) == set(FLAGS)
    for name, parser in commands.items():
        flags = [a.option_strings[0] if a.option_strings else a.dest for a in _options(parser)]
        assert flags == FLAGS[name].split(), name


def test_cli_defaults_and_help_are_the_dataclass_fields():
    commands = _commands()
    for name, classes in _configs().items():
        checked = 0
        for action in _options(commands[name]):
            owner = next((c for c, names in classes if action.dest in names), None)
            if owner is None:
                continue  # a command-only option (--output, --grid-x, ...)
            f = next(f for f in dataclasses.fields(owner) if f.name == action.dest)
            flag = action.option_strings[0]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                assert action.required, flag
            else:
                default = default_of(owner, f.name)
                assert not action.required and action.default == default, (name, flag)
                assert type(action.default) is type(default), (name, flag)
            if "choices" in f.metadata:
                assert tuple(action.choices) == tuple(f.metadata["choices"]), flag
            if "help" in f.metadata and not flag.startswith("--no-"):
                assert action.help.replace("%%", "%").startswith(f.metadata["help"]), flag
            checked += 1
        assert checked >= 3, name


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_no_options_give_the_dataclass_defaults(tmp_path):
    args = _parse("train", "--instance-dir", str(tmp_path), "--instance-prompt", "a sks dog",
                  "--output", str(tmp_path / "o"))
    assert config_from(args, TrainConfig) == TrainConfig(
        instance_dir=tmp_path, instance_prompt="a sks dog", output_dir=tmp_path / "o")
    args = _parse("generate", "--prompt", "a dog", "--output", str(tmp_path))
    assert config_from(args, GenerateConfig) == GenerateConfig(prompt="a dog")
    assert (args.model, args.model_config_dir, args.device) == (
        TrainConfig.model, None, None)
    assert config_from(_parse("prepare", "in", "out"), PrepareConfig) == PrepareConfig()


def test_renamed_and_negated_flags_set_their_fields(tmp_path):
    args = _parse("train", "--instance-dir", str(tmp_path), "--instance-prompt", "a sks dog",
                  "--output", str(tmp_path / "o"), "--lr", "0.01", "--no-text-encoder",
                  "--no-kohya", "--no-channels-last", "--name", "Rex", "--model-config",
                  "cfg", "--flip", "--steps", "7")
    config = config_from(args, TrainConfig)
    assert (config.learning_rate, config.train_text_encoder, config.export_kohya,
            config.channels_last, config.subject_name, config.model_config_dir, config.flip,
            config.steps) == (0.01, False, False, False, "Rex", "cfg", True, 7)
    assert config.output_dir == tmp_path / "o"


def test_bad_option_values_are_one_line_with_exit_code_2(capsys):
    for argv in (["train", "--steps", "0"], ["generate", "--sampler", "Turbo"],
                 ["prepare", "in", "out", "--mode", "car"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err, err


# --- errors that used to be tracebacks: one line, exit code 2 ---------------------------

def _main_error(capsys, *argv: str) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one line on stderr."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def _train_argv(tmp_path, *extra: str) -> list[str]:
    return ["train", "--model", str(tmp_path / "no-model"), "--instance-dir", str(tmp_path),
            "--instance-prompt", "a photo of sks dog", *extra]


def test_an_output_that_is_a_file_is_named(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    for argv in (["prepare", str(tmp_path), str(taken)],
                 _train_argv(tmp_path, "--output", str(taken)),
                 ["generate", "--model", str(tmp_path), "--prompt", "a dog", "--output",
                  str(taken)]):
        err = _main_error(capsys, *argv)
        assert f"{taken} is a file, not a folder" in err, err
    assert taken.read_text() == "a file, not a folder"


def test_a_folder_the_user_may_not_read_is_named(tmp_path, capsys, monkeypatch):
    """PermissionError as a non-root user sees it (tests run as root, so it is raised here
    where the real one would be: listing the input folder)."""
    from dreamstudio.data import prepare

    photos = tmp_path / "photos"
    photos.mkdir()

    def refuse(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(prepare, "list_image_files", refuse)
    err = _main_error(capsys, "prepare", str(photos), str(tmp_path / "out"))
    assert f"permission denied for {photos}" in err, err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads and writes any folder, whatever its permissions")
def test_unreadable_input_and_unwritable_output_for_real(dog_photos, tmp_path, capsys):
    photos, locked = tmp_path / "photos", tmp_path / "locked"
    photos.mkdir()
    (photos / dog_photos[0].name).write_bytes(dog_photos[0].read_bytes())
    locked.mkdir()
    try:
        locked.chmod(0o500)
        err = _main_error(capsys, "prepare", str(photos), str(locked / "out"))
        assert "permission denied" in err and str(locked) in err, err
        photos.chmod(0o000)
        err = _main_error(capsys, "prepare", str(photos), str(tmp_path / "out"))
        assert "permission denied" in err and str(photos) in err, err
    finally:
        photos.chmod(0o700)
        locked.chmod(0o700)


def test_a_device_that_is_not_there_is_named(tmp_path, capsys, monkeypatch):
    import torch

    generate = ["generate", "--model", str(tmp_path), "--prompt", "a dog", "--output",
                str(tmp_path / "out")]
    err = _main_error(capsys, *generate, "--device", "tpu")
    assert "Unknown device 'tpu'" in err and "cpu, cuda, mps" in err, err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _main_error(capsys, *generate, "--device", "cuda")
    assert "no CUDA GPU" in err and "use cpu" in err, err
    err = _main_error(capsys, *_train_argv(tmp_path, "--output", str(tmp_path / "o"),
                                           "--device", "cuda"))
    assert "no CUDA GPU" in err, err
    assert not (tmp_path / "o").exists()


def test_seeds_beyond_what_torch_takes_are_refused(tmp_path, capsys):
    too_big = str(2**64)
    err = _main_error(capsys, "generate", "--model", str(tmp_path), "--prompt", "a dog",
                      "--output", str(tmp_path / "out"), "--seed", too_big)
    assert f"seed must be a whole number from 0 to {2**63 - 1} (got {too_big})" in err, err
    err = _main_error(capsys, *_train_argv(tmp_path, "--output", str(tmp_path / "o"),
                                           "--seed", too_big))
    assert "seed must be a whole number" in err, err
    assert GenerateConfig(prompt="a dog", seed=2**63 - 1, num_images=16).seed == 2**63 - 1


def test_negative_warmup_is_refused(tmp_path, capsys):
    err = _main_error(capsys, *_train_argv(tmp_path, "--output", str(tmp_path / "o"),
                                           "--lr-warmup-steps", "-5"))
    assert "warm-up steps must be >= 0 (got -5)" in err, err
