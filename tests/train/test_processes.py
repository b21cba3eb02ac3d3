"""Training on two CPU processes (torchrun, gloo) is data-parallel for real: the processes
step together on their own data, average their gradients, and only the main one writes.

One launch trains every run of tests/support/ddp_train.py; the one-process runs it is
compared with train here, in the test process, with the same settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import TrainConfig, default_of
from tests.support.ddp_train import BASE, COSINE, METHODS, config_of, record_run

REPO = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tiny_model, small_dog_dir, tmp_path_factory) -> Path:
    """The output folder of one two-process launch of tests/support/ddp_train.py."""
    out = tmp_path_factory.mktemp("two-processes")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "tests.support.ddp_train", str(tiny_model), str(small_dog_dir), str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the two-process launch hung for {LAUNCH_TIMEOUT_S} s:\n{exc.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    ranks = sorted(p.name for p in out.glob("straight-rank*.json"))
    assert ranks == ["straight-rank0.json", "straight-rank1.json"], (
        f"the two processes did not train as one group: records {ranks}")
    return out


def _ranks(out: Path, run: str) -> list[dict]:
    return [json.loads((out / f"{run}-rank{r}.json").read_text()) for r in (0, 1)]


def _weights(out: Path, run: str) -> list[dict]:
    return [load_file(str(out / f"{run}-rank{r}.safetensors")) for r in (0, 1)]


@pytest.fixture(scope="module")
def one_process(launched, tiny_model, small_dog_dir) -> dict:
    """The same runs in this one process: it draws what the launch's rank 0 drew."""
    runs = {}
    for run in ("straight", "cosine"):
        config = config_of(tiny_model, small_dog_dir, launched, run, folder=f"one-{run}")
        runs[run] = record_run(config)
    return runs


def test_both_processes_step_together_on_their_own_data(launched):
    rank0, rank1 = _ranks(launched, "straight")
    assert (rank0["num_processes"], rank1["num_processes"]) == (2, 2)
    assert rank0["status"] == rank1["status"] == "completed"
    assert len(rank0["losses"]) == len(rank1["losses"]) == BASE["steps"]
    assert len(rank0["lrs"]) == len(rank1["lrs"]) == BASE["steps"]
    # Each process draws its own images, noise and timesteps.
    assert rank0["losses"] != rank1["losses"]


def test_gradients_are_averaged(launched, one_process):
    rank0, rank1 = _weights(launched, "straight")
    assert rank0.keys() == rank1.keys() and rank0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Rank 0 alone, with the same data, trains to other weights: the update is the mean.
    record, alone = one_process["straight"]
    assert record["losses"][0] == pytest.approx(_ranks(launched, "straight")[0]["losses"][0])
    assert any(not torch.allclose(alone[k], rank0[k]) for k in rank0)
    saved = load_file(_ranks(launched, "straight")[0]["lora_path"])
    assert len(saved) == len(rank0)


@pytest.mark.parametrize("run, settings", [("straight", BASE), ("cosine", COSINE)],
                         ids=["linear-warm-up", "cosine"])
def test_the_learning_rate_follows_the_one_process_schedule(launched, one_process, run,
                                                            settings):
    expected = one_process[run][0]["lrs"]
    assert len(expected) == settings["steps"]
    for rank in _ranks(launched, run):
        assert rank["lrs"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # The schedule really moved: warm-up up to the full rate, then down to 0 at the end.
    assert max(expected) == pytest.approx(default_of(TrainConfig, "learning_rate"))
    assert expected[-1] == pytest.approx(0.0, abs=1e-12) and expected[-2] > 0


def test_only_the_main_process_writes(launched):
    for run in ("straight", "interrupted", "resumed", "cosine"):
        rank0, rank1 = _ranks(launched, run)
        assert rank1["written"] == [], run
        assert rank1["lora_path"] is None
        assert rank0["written"], run
    rank0 = _ranks(launched, "straight")[0]
    folder = launched / "straight"
    assert Path(rank0["lora_path"]).parent == folder
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "step-000002", "step-000004"]
    assert sorted(p.name for p in (folder / "validation").iterdir()) == [
        "step-000003-0.png", "step-000006-0.png"]
    written = "\n".join(rank0["written"])
    assert str(folder / "checkpoints") in written and str(folder / "validation") in written


def test_class_images_are_generated_once(launched):
    rank0, rank1 = _ranks(launched, "straight")
    assert rank0["class_image_events"] >= 1 and rank1["class_image_events"] == 0
    made = sorted(p.name for p in (launched / "class_images").glob("*.png"))
    assert made == [f"class_{i:04d}.png" for i in range(BASE["num_class_images"])]
    assert any("class_images" in w for w in rank0["written"])


def test_a_run_resumed_on_two_processes_ends_as_an_uninterrupted_one(launched):
    interrupted = _ranks(launched, "interrupted")
    assert [r["status"] for r in interrupted] == ["cancelled", "cancelled"]
    straight, resumed = _ranks(launched, "straight"), _ranks(launched, "resumed")
    for rank in (0, 1):
        assert resumed[rank]["status"] == "completed"
        # Each process goes on with its own data order and random states.
        assert resumed[rank]["losses"] == pytest.approx(straight[rank]["losses"], rel=1e-5)
        assert resumed[rank]["lrs"] == pytest.approx(straight[rank]["lrs"][3:])
    for a, b in zip(_weights(launched, "straight"), _weights(launched, "resumed"), strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_prior_prediction_and_pivotal_tuning_train_as_one_group(launched):
    """Each process's prior loss is its own, but the LoRA and the new token's rows get the
    averaged update: both processes end with the same weights."""
    rank0, rank1 = _ranks(launched, "methods")
    assert rank0["status"] == rank1["status"] == "completed"
    assert len(rank0["prior_losses"]) == len(rank1["prior_losses"]) == METHODS["steps"]
    assert rank0["prior_losses"] != rank1["prior_losses"]
    assert not list((launched / "methods").glob("class_images*"))
    w0, w1 = _weights(launched, "methods")
    assert "pivotal_rows" in w0 and any(k.startswith("text_encoder.") for k in w0)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
