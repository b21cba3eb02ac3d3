"""The GPU check starts, runs every phase and writes its figures; here on the CPU with the
tiny model (the GPU figures themselves need a CUDA machine)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from bench.gpu_check import eight_bit_adam_status, main, steady_s_per_step, synthetic_photos


@pytest.mark.slow  # two tiny training runs and a generation: ~25 s on 2 cores
def test_a_cpu_dry_run_writes_every_figure(tiny_model, tmp_path, capsys):
    photos = synthetic_photos(tmp_path / "photos", count=2, side=64)
    out = tmp_path / "check.json"
    assert main(["--device", "cpu", "--model", str(tiny_model), "--photos", str(photos),
                 "--steps", "3", "--resolution", "64", "--images", "2", "--image-steps", "2",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    env = data["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["diffusers"]
    assert env["gpu"] is None
    for name, checkpointing in (("train_plain", False), ("train_low_memory", True)):
        run = data[name]
        assert run["steps"] == 3 and run["gradient_checkpointing"] is checkpointing
        # Three steps: the first has no start, the second counts as warm-up.
        assert run["s_per_step"] > 0 and run["first_steps_excluded"] == 2
        assert 0 < run["loop_s"] <= run["total_s"]
        # VRAM is a CUDA figure: on the CPU it is absent, never a made-up zero.
        assert run["peak_vram_allocated_gib"] is None and run["peak_vram_reserved_gib"] is None
    assert not data["train_low_memory"]["use_8bit_adam"]
    assert data["train_low_memory"]["eight_bit_adam"].startswith("skipped: ")
    gen = data["generate"]
    assert gen["images"] == 2 and gen["size"] == [64, 64] and gen["image_steps"] == 2
    assert gen["images_per_s"] > 0 and gen["with_lora"]
    assert data["verdict"]["judged"] is False and data["verdict"]["pass"] is None
    assert data["verdict"]["projected_300_steps_s"]["plain"] > 0
    table = capsys.readouterr().out
    assert "train, plain" in table and "targets: not judged" in table


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], "--steps: must be at least 1"),
    (["--resolution", "100"], "resolution must be a multiple of 8"),
    (["--images", "40"], "number of images must be 1-16"),
    (["--device", "tpu"], "Unknown device 'tpu'"),
    (["--model", "/nonexistent"], "no diffusers model there"),
])
def test_bad_options_fail_in_one_line_with_exit_code_2(argv, words, capsys):
    try:
        code = main(["--device", "cpu", *argv])
    except SystemExit as exc:  # argparse's own checks exit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_cuda_asked_for_without_a_gpu_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1


def test_the_steady_step_time_leaves_out_the_warm_up():
    # Step ends: two slow warm-up steps, then steps of 1 s.
    ends = [10.0, 15.0, 18.0] + [18.0 + i for i in range(1, 20)]
    per_step, excluded = steady_s_per_step(ends)
    assert per_step == 1.0 and excluded == 6
    assert steady_s_per_step([3.0, 5.0]) == (2.0, 1)  # a dry run's two steps
    assert steady_s_per_step([3.0]) == (None, 1)


def test_8_bit_adam_is_said_to_be_skipped_where_it_cannot_run(monkeypatch):
    import importlib.util

    assert eight_bit_adam_status(torch.device("cpu")) == "skipped: 8-bit AdamW needs CUDA"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert eight_bit_adam_status(torch.device("cuda")) == "skipped: bitsandbytes not installed"


def test_synthetic_photos_are_photos_of_the_asked_size(tmp_path):
    folder = synthetic_photos(tmp_path / "p", count=3, side=96)
    files = sorted(folder.iterdir())
    assert len(files) == 3
    with Image.open(files[0]) as im:
        assert im.size == (96, 96) and im.mode == "RGB"


def _run(loop_s: float, reserved_gib: float, eight_bit: bool = True) -> dict:
    return {"s_per_step": loop_s / 300, "loop_s": loop_s, "peak_vram_reserved_gib": reserved_gib,
            "use_8bit_adam": eight_bit,
            "eight_bit_adam": "used" if eight_bit else "skipped: bitsandbytes not installed"}


def test_the_targets_are_judged_on_the_low_memory_run_of_a_full_cuda_check():
    from bench.gpu_report import verdict

    cuda = torch.device("cuda")
    fast_small = {"train_plain": _run(12, 14), "train_low_memory": _run(18, 7.5)}
    assert verdict(fast_small, cuda, 300, 512)["pass"] is True
    too_big = {"train_plain": _run(12, 14), "train_low_memory": _run(18, 8.5)}
    assert verdict(too_big, cuda, 300, 512)["pass"] is False
    too_slow = {"train_plain": _run(12, 7), "train_low_memory": _run(25, 7.5)}
    result = verdict(too_slow, cuda, 300, 512)
    assert result["pass"] is False and result["plain_under_20_s"] is True
    without_bnb = {"train_plain": _run(12, 14), "train_low_memory": _run(18, 7.5, False)}
    assert "bitsandbytes not installed" in verdict(without_bnb, cuda, 300, 512)["note"]
    # A shorter run, a smaller size or the CPU: figures, but no verdict.
    for device, steps, side in ((cuda, 2, 512), (cuda, 300, 256), (torch.device("cpu"), 300, 512)):
        assert verdict(fast_small, device, steps, side)["judged"] is False
