"""Continuing a training session from its latest checkpoint, and what such a checkpoint holds.

`check_resumable` is the one judge of whether a run can be resumed with a config: the app
asks it before queueing a job and the trainer before loading any model, so both refuse the
same things with the same words. `tidy_run_folder` clears what a killed earlier attempt at
the run left behind, before anything of the new attempt is written; `remove_leftovers` with
an age does so where another attempt may be writing (listing runs).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from ..config import TrainConfig, default_of
from ..core.files import find_temporaries
from ..errors import TrainingError
from ..lora.kohya import finish_export
from .captions import captions_digest, run_captions
from .checkpoints import (
    PIVOTAL_KEY,
    PIVOTAL_KEY_2,
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_state,
    save_checkpoint,
    unfinished_checkpoints,
)
from .model_stage import trained_weights
from .session import TrainingSession

log = logging.getLogger("dreamstudio.training")

# Settings a checkpoint must share with the run that resumes it: any other setting (the
# learning rate, validation, ...) may change between the two.
# The loss weightings (min-SNR, offset noise, face weights) are not among them: like the
# learning rate they change how much each step moves the LoRA, not what it is, and a run may
# well go on with another (e.g. face weighting for its second half). What the prior is
# learned from (class images or the base's prediction) is.
RESUME_KEYS = ("model", "instance_prompt", "class_prompt", "rank", "train_text_encoder",
               "resolution", "batch_size", "seed", "use_dora", "lora_alpha", "pivotal",
               "pivotal_tokens", "prior_mode")


def _as_trained(settings: dict) -> dict:
    """Recorded settings as what they train: an unset alpha is the rank (alpha 8 at rank 8
    trains what "unset" did), and a checkpoint older than a setting trained without it."""
    if not settings:
        return settings
    trained = {"use_dora": False, "pivotal": False, "prior_mode": "class_images", **settings}
    if "rank" in settings:
        trained["lora_alpha"] = settings.get("lora_alpha") or settings["rank"]
    # Without pivotal tuning its token count trains nothing.
    trained["pivotal_tokens"] = (settings.get("pivotal_tokens", default_of(TrainConfig,
                                 "pivotal_tokens")) if trained["pivotal"] else None)
    return trained

# The state's entry of the captions a checkpoint was trained with (their digest).
CAPTIONS_KEY = "captions_digest"

# What earlier versions wrote under temporary names: the LoRA's folder, the kohya file.
_OLD_SAVING, _OLD_KOHYA = ".saving-*", ".kohya-*.safetensors"
# How long a leftover must have been untouched before a run's listing may remove it. A
# live writer touches its temporary every few seconds (the largest, a checkpoint, is
# written in seconds); an hour leaves room for a slow or network disk and for a process
# paused mid-write (Ctrl-Z, a sleeping laptop). Removing a live one would fail its run,
# keeping a dead one an hour longer costs only disk space.
STALE_AFTER_S = 3600.0


def _last_touched(path: Path) -> float:
    """When `path`, or for a folder anything in it, last changed."""
    times = [path.lstat().st_mtime]
    if path.is_dir():
        times += [p.lstat().st_mtime for p in path.rglob("*")]
    return max(times)


def remove_leftovers(folder: Path, min_age_s: float = 0.0) -> list[Path]:
    """Remove what killed attempts at the run in `folder` left (half-written checkpoints,
    temporaries of the LoRA, kohya, validation and settings files, and those of earlier
    versions) untouched for `min_age_s` seconds; 0: all of it, for where nothing else can
    be writing. Returns what was removed."""
    folder = Path(folder)
    folders = [*unfinished_checkpoints(folder),
               *(p for p in folder.glob(_OLD_SAVING) if p.is_dir())]
    files = [p for p in find_temporaries(folder) + list(folder.glob(_OLD_KOHYA))
             if p.is_file() and not any(p.is_relative_to(f) for f in folders)]
    now, removed = time.time(), []
    for path in folders + files:
        try:
            if min_age_s and now - _last_touched(path) < min_age_s:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            # Renamed into place by its writer meanwhile, or a read-only workspace (which
            # loses only disk space): neither is the listing's to report.
            continue
        removed.append(path)
    return removed


def tidy_run_folder(config: TrainConfig) -> None:
    """Remove the half-written files of a killed attempt at this run; on a resume, also
    write the kohya file of a LoRA that was killed while it was being exported."""
    folder = Path(config.output_dir)
    if not folder.is_dir():
        return
    removed = remove_leftovers(folder)
    if removed:
        log.info("removed what an interrupted attempt left: %s", [p.name for p in removed])
    if config.resume:
        finish_export(folder)


def resume_settings(config: TrainConfig) -> dict:
    """The settings a checkpoint records so that a resume can be checked against them."""
    return {k: getattr(config, k) for k in RESUME_KEYS}


def _refuse_changed_captions(config: TrainConfig, state: dict, run: str, step: int) -> None:
    # The captions live in the photos' manifest, not in the config, so the checkpoint keeps
    # their digest beside the settings. One from before captions trained on none ('').
    if state.get(CAPTIONS_KEY, "") != captions_digest(run_captions(config)):
        raise TrainingError(
            f"Cannot resume '{run}': the photos' captions (Data tab) differ from those its "
            f"checkpoint at step {step} was trained with. Set them back, turn captions off "
            "if the run trained without them, or start a new run."
        )


def check_resumable(config: TrainConfig) -> Checkpoint:
    """The checkpoint that `config` (with resume on) continues from; TrainingError if there
    is none, it is unreadable, it was written with other settings, or it is not before
    `config.steps`. Reads only the checkpoint's small state file: no model is loaded."""
    checkpoint = latest_checkpoint(config.output_dir)
    if checkpoint is None:
        raise TrainingError(
            f"Nothing to resume: {config.output_dir} has no complete checkpoint. "
            "Start the run without resume."
        )
    state = load_state(checkpoint)
    run = Path(config.output_dir).name
    step = state.get("step", checkpoint.step)
    # Only recorded settings are compared: a checkpoint that lacks one cannot disagree,
    # except those added later, which it trained with at their old behaviour.
    saved = state.get("settings", {})
    saved, now = _as_trained(saved), _as_trained(resume_settings(config))
    changed = [k for k in RESUME_KEYS if k in saved and saved[k] != now[k]]
    if changed:
        listed = ", ".join(f"{k} (was {saved[k]!r}, now {now[k]!r})"
                           for k in changed)
        raise TrainingError(
            f"Cannot resume '{run}': these settings differ from the run that wrote its "
            f"checkpoint at step {step}: {listed}. Set them back (in the app, pick the run "
            "again to reload its settings), or start a new run."
        )
    _refuse_changed_captions(config, state, run, step)
    if step >= config.steps:
        raise TrainingError(
            f"The checkpoint of '{run}' is at step {step}; set Steps above {step} to "
            "continue training."
        )
    return checkpoint


def _own_state(session: TrainingSession) -> dict:
    """What differs between the processes of a run: each draws its own data and noise."""
    class_batches = session.class_batches
    return {
        "generator": session.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "order": list(session.batches.order),
        "class_order": list(class_batches.order) if class_batches else [],
        "losses": list(session.losses),
    }


def save_session(session: TrainingSession, step: int) -> None:
    """Checkpoint everything the loop needs to go on from after `step` exactly as if it had
    never stopped: LoRA weights, optimizer and schedule, every random state, data order.
    Every process calls it; the main one writes, with the others' random states and data
    order beside its own (a resume that gave every process the main one's would train
    them all on the same images)."""
    from accelerate.utils import gather_object

    cfg, accelerator = session.config, session.accelerator
    if not cfg.checkpoint_every or step == 0:
        return
    own = _own_state(session)
    ranks = gather_object([own]) if accelerator.num_processes > 1 else [own]
    if not accelerator.is_main_process:
        return
    weights = trained_weights(session)
    if session.pivotal:
        weights[PIVOTAL_KEY] = session.pivotal.rows
        if session.pivotal.rows_2 is not None:
            weights[PIVOTAL_KEY_2] = session.pivotal.rows_2
    state = {
        "step": step,
        "optimizer": session.optimizer.state_dict(),
        "lr_scheduler": session.lr_scheduler.state_dict(),
        **own,
        "ranks": ranks,
        "validation_images": list(session.validation_images),
        "fidelity": [dict(p) for p in session.fidelity],
        "settings": resume_settings(cfg),
        CAPTIONS_KEY: captions_digest(session.captions),
    }
    if session.pivotal:  # for exporting the checkpoint as a LoRA (tune/candidates.py)
        state["pivotal"] = {"identifier": session.pivotal.identifier,
                            "token": session.pivotal.token}
    path = save_checkpoint(cfg.output_dir, step, weights, state, cfg.keep_checkpoints)
    log.info("checkpoint written: %s", path)


def restore_session(session: TrainingSession, checkpoint: Checkpoint) -> int:
    """Put the checkpoint's state into the session (models, optimizer, schedule and data
    order already built); return the step it was written at, where the loop goes on."""
    from peft.utils import set_peft_model_state_dict

    weights, state = load_checkpoint(checkpoint)
    accelerator = session.accelerator
    for prefix, model in (("unet.", session.unet), ("text_encoder.", session.text_encoder),
                          ("text_encoder_2.", session.text_encoder_2)):
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if part:
            set_peft_model_state_dict(accelerator.unwrap_model(model), part)
    if session.pivotal:
        with torch.no_grad():
            session.pivotal.rows.copy_(weights[PIVOTAL_KEY])
            if session.pivotal.rows_2 is not None:
                session.pivotal.rows_2.copy_(weights[PIVOTAL_KEY_2])
    session.optimizer.load_state_dict(state["optimizer"])
    session.lr_scheduler.load_state_dict(state["lr_scheduler"])
    # Checkpoints of earlier versions hold the main process's state only.
    ranks, index = state.get("ranks") or [state], accelerator.process_index
    if index < len(ranks):
        own = ranks[index]
        session.generator.set_state(own["generator"])
        torch.set_rng_state(own["torch_rng"])
        session.batches.order = list(own["order"])
        if session.class_batches:
            session.class_batches.order = list(own["class_order"])
        session.losses = list(own["losses"])
    else:
        # More processes than the run had: this one goes on with its own fresh draws.
        log.warning("the checkpoint was written by %d process(es); process %d starts its "
                    "data order afresh", len(ranks), index)
        session.losses = list(state["losses"])
    session.validation_images = list(state.get("validation_images", []))
    session.fidelity = [dict(p) for p in state.get("fidelity", [])]
    log.info("resumed from %s at step %d", checkpoint.path, state["step"])
    session.emit("training", state["step"], message=f"Resumed at step {state['step']}")
    return state["step"]
