"""SDXL training as one process of two, for tests/train/test_sdxl_processes.py.

Launched as `torchrun --nproc_per_node 2 -m tests.support.ddp_sdxl_train MODEL PHOTOS OUT`,
each process trains a prior-prediction run with pivotal tuning and a class-image run, and
writes per run `OUT/<run>-<rank>.json` (status, losses) and `OUT/<run>-<rank>.safetensors` (its
LoRA weights and token rows at the end).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from dreamstudio.config import TrainConfig
from dreamstudio.train import trainer
from dreamstudio.train.model_stage import trained_weights
from dreamstudio.train.pivotal import trained_rows, trained_rows_2

RUNS = {"pred": {"prior_mode": "prediction", "pivotal": True},
        "class": {"num_class_images": 2, "class_image_steps": 1, "class_image_batch_size": 2}}


def main(model: Path, photos: Path, out: Path) -> None:
    seen = {}
    real = trainer.training_step

    def step(session, n):
        seen["s"] = session
        return real(session, n)

    trainer.training_step = step
    for name, extra in RUNS.items():
        if name == "class":
            extra = {**extra, "class_dir": out / "class-images"}
        cfg = TrainConfig(model=str(model), instance_dir=photos,
                          instance_prompt="a photo of sks dog", class_prompt="a photo of dog",
                          output_dir=out / name, steps=3, resolution=64, mixed_precision="no",
                          validation_every=0, checkpoint_every=2, device="cpu", **extra)
        result = trainer.train(cfg)
        s = seen["s"]
        weights = {k: v.detach().cpu().contiguous() for k, v in trained_weights(s).items()}
        if s.pivotal is not None:
            weights["rows"], weights["rows_2"] = trained_rows(s.pivotal), trained_rows_2(s.pivotal)
        rank = s.accelerator.process_index
        (out / f"{name}-{rank}.json").write_text(json.dumps(
            {"status": result.status, "losses": result.losses,
             "num_processes": s.accelerator.num_processes}))
        save_file(weights, str(out / f"{name}-{rank}.safetensors"))


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
