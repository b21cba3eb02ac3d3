"""The CLI contract: prepare -> train -> generate, and one clear line on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.lora.files import WEIGHTS_NAME

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
