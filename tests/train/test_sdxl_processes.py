"""SDXL training on two CPU processes (torchrun, gloo): SDXL conditions on text encoder 1's
penultimate layer, so the LoRA on its last layer gets no gradient, which data parallel must
be told of; with that, both processes end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.support.ddp_sdxl_train import RUNS
from tests.train.test_processes import REPO, _free_port


def test_sdxl_trains_as_one_group_on_two_processes(tiny_sdxl_model, small_dog_dir, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "tests.support.ddp_sdxl_train", str(tiny_sdxl_model), str(small_dog_dir),
               str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for run in RUNS:
        records = [json.loads((tmp_path / f"{run}-{r}.json").read_text()) for r in (0, 1)]
        assert [r["status"] for r in records] == ["completed", "completed"], run
        assert records[0]["num_processes"] == 2
        assert records[0]["losses"] != records[1]["losses"]  # each on its own data
        w0, w1 = (load_file(str(tmp_path / f"{run}-{r}.safetensors")) for r in (0, 1))
        assert any(k.startswith("text_encoder_2.") for k in w0), run
        for key in w0:
            assert torch.equal(w0[key], w1[key]), (run, key)
        assert (tmp_path / run / "pytorch_lora_weights.safetensors").is_file()
    assert "rows_2" in load_file(str(tmp_path / "pred-0.safetensors"))
