"""Training runs of the tiny model as one process of several, for tests/train/test_processes.py.

Launched as `torchrun --nproc_per_node 2 tests/support/ddp_train.py MODEL PHOTOS OUT`, each
process trains the runs of `RUNS` in turn and writes, per run, `OUT/<run>-rank<N>.json`
(losses, the learning rate after each step, its result, what it wrote on disk) and
`OUT/<run>-rank<N>.safetensors` (its LoRA weights at the end). `record_run` is the same
recording, for the one-process runs the test compares with.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

PROMPT = "a photo of sks dog"
# Prior preservation, checkpoints and validation at once; linear warm-up, as in the issue.
BASE = {"steps": 6, "resolution": 64, "mixed_precision": "no", "export_kohya": False,
        "lr_scheduler": "linear", "lr_warmup_steps": 2, "checkpoint_every": 2,
        "keep_checkpoints": 10, "validation_every": 3, "validation_steps": 1,
        "num_validation_images": 1, "class_prompt": "a photo of dog", "num_class_images": 2, "class_image_steps": 1,
        "class_image_batch_size": 2, "device": "cpu"}
COSINE = {**BASE, "lr_scheduler": "cosine", "class_prompt": None,
          "checkpoint_every": 0, "validation_every": 0}
# Issue 13's methods whose steps differ on several processes: prior prediction (the class
# prompt rides in the instance batch) and pivotal tuning (the new rows in the text encoder).
METHODS = {**COSINE, "steps": 3, "class_prompt": "a photo of dog", "prior_mode": "prediction",
           "pivotal": True, "min_snr_gamma": 5.0, "lr_scheduler": "constant",
           "lr_warmup_steps": 0}
# run name: (settings, step after which the run is cancelled, resumed from a checkpoint)
RUNS = {
    "straight": (BASE, None, False),
    "interrupted": (BASE, 3, False),
    "resumed": (BASE, None, True),
    "cosine": (COSINE, None, False),
    "methods": (METHODS, None, False),
}


def config_of(model: Path, photos: Path, out: Path, run: str, resume: bool = False,
              folder: str | None = None):
    from dreamstudio.config import TrainConfig

    settings = RUNS[run][0]
    # The interrupted run and its resume share one folder, as a resumed run does.
    folder = out / (folder or ("interrupted" if run == "resumed" else run))
    extra = ({"class_dir": out / "class_images"}
             if settings["class_prompt"] and settings.get("prior_mode") != "prediction" else {})
    return TrainConfig(model=str(model), instance_dir=photos, instance_prompt=PROMPT,
                       output_dir=folder, resume=resume, **settings, **extra)


def record_run(config, cancel_at: int | None = None) -> tuple[dict, dict]:
    """Train `config`; the record of what happened, and the LoRA weights at the end."""
    from dreamstudio.lora.adapters import peft_weights
    from dreamstudio.train import trainer

    seen: dict = {"lrs": [], "class_image_events": 0, "session": None}
    real_step = trainer.training_step

    def recording_step(session, step):
        loss = real_step(session, step)
        seen["session"] = session
        seen["lrs"].append(session.optimizer.param_groups[0]["lr"])
        return loss

    cancel = threading.Event()

    def progress(p):
        if p.phase == "class_images" and p.message.startswith("Class images:"):
            seen["class_image_events"] += 1
        if cancel_at is not None and p.phase == "training" and p.step == cancel_at:
            cancel.set()

    trainer.training_step = recording_step
    try:
        result = trainer.train(config, progress, cancel)
    finally:
        trainer.training_step = real_step
    session = seen["session"]
    accelerator = session.accelerator
    te = session.text_encoder if config.train_text_encoder else None
    weights = peft_weights(accelerator.unwrap_model(session.unet),
                           accelerator.unwrap_model(te) if te is not None else None)
    record = {"status": result.status, "losses": result.losses, "lrs": seen["lrs"],
              "lora_path": str(result.lora_path) if result.lora_path else None,
              "validation_images": session.validation_images,
              "class_image_events": seen["class_image_events"],
              "process_index": accelerator.process_index,
              "num_processes": accelerator.num_processes,
              "prior_losses": list(session.prior_losses)}
    if session.pivotal is not None:
        from dreamstudio.train.pivotal import trained_rows

        weights = {**weights, "pivotal_rows": trained_rows(session.pivotal)}
    return record, {k: v.detach().cpu().contiguous() for k, v in weights.items()}


def _opens_for_writing(mode, flags) -> bool:
    # open() passes its mode, os.open only its flags.
    if isinstance(mode, str):
        return bool(set(mode) & set("wax+"))
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR))


def _watch_writes(roots: list[Path], written: list[str]) -> None:
    """Note every file or folder this process creates, changes, renames or removes under
    `roots` (safetensors writes from Rust, but its files are renamed into place)."""
    # abspath, not resolve: a hook that touched the disk would call itself.
    roots = [os.path.abspath(r) for r in roots]
    writing = ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree")

    def hook(event, args):
        if event not in writing or not args or not isinstance(args[0], (str, Path)):
            return
        if event == "open" and not _opens_for_writing(*args[1:3]):
            return
        path = os.path.abspath(args[0])
        if event == "os.mkdir" and os.path.isdir(path):
            return  # mkdir(exist_ok=True) of a folder that is there changes nothing
        if any(path == r or path.startswith(r + os.sep) for r in roots):
            written.append(f"{event} {path}")

    sys.addaudithook(hook)


def main(model: str, photos: str, out: str) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out)
    written: list[str] = []
    _watch_writes([out_dir / name for name in ("class_images", *RUNS)], written)
    for run, (_, cancel_at, resume) in RUNS.items():
        written.clear()
        config = config_of(Path(model), Path(photos), out_dir, run, resume)
        record, weights = record_run(config, cancel_at)
        record["written"] = list(written)
        rank = record["process_index"]
        (out_dir / f"{run}-rank{rank}.json").write_text(json.dumps(record))
        save_file(weights, str(out_dir / f"{run}-rank{rank}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
