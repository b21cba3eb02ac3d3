"""Our side of the SDXL benchmark in a process of its own: `python -m bench.sdxl_ours ...`.

bench.sdxl starts it like diffusers' script, so both sides are timed and their memory read
the same way (from outside the process). It trains with `train(TrainConfig(...))` and prints
one line per finished step, `dreamstudio step N/M t=SECONDS` (SECONDS: the trainer's clock,
a check on the arrival times bench.sdxl records).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

STEP_LINE = "dreamstudio step {step}/{total} t={seconds:.4f}"
STEP_PATTERN = r"dreamstudio step (\d+)/(\d+) t="


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_ours",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--precision", required=True)
    parser.add_argument("--train-text-encoder", action="store_true")
    args = parser.parse_args(argv)

    from dreamstudio.config import TrainConfig
    from dreamstudio.train.trainer import train

    start = time.monotonic()

    def progress(p) -> None:
        if p.phase == "training":
            print(STEP_LINE.format(step=p.step, total=p.total_steps,
                                   seconds=time.monotonic() - start), flush=True)

    config = TrainConfig(
        model=args.model, instance_dir=args.photos, instance_prompt=args.prompt,
        output_dir=args.output, steps=args.steps, resolution=args.resolution, rank=args.rank,
        batch_size=1, seed=0, mixed_precision=args.precision,
        train_text_encoder=args.train_text_encoder, validation_every=0, checkpoint_every=0,
        export_kohya=False,
    )
    train(config, progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
