"""What the Train tab shows of a run: status text, loss curve, validation images, files."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pandas as pd

from ..studio import BEST_RULE, best_point, run_log_path
from .common import duration

if TYPE_CHECKING:
    from ..studio import JobStatus

MAX_PLOT_POINTS = 500
PHASES = {
    "queued": "Starting",
    "loading": "Loading the base model",
    "class_images": "Generating class images",
    "training": "Training",
    "validation": "Rendering a validation image",
    "scoring": "Scoring the LoRA",
    "saving": "Saving the LoRA",
    "done": "Done",
    "cancelled": "Cancelled",
}
KOHYA_HINT = ("load this in AUTOMATIC1111 / Forge / ComfyUI (copy it into their "
              "models/Lora folder)")
_VALIDATION_NAME = re.compile(r"^step-(\d+)-(\d+)\.png$")


def status_dict(status: JobStatus, address: tuple[str, str] | None = None) -> dict:
    """The training status as plain JSON data (for the API and the Markdown view);
    `address` is the run's (subject, run name), as Studio.run_address finds it."""
    p, cfg, result = status.progress, status.config, status.result
    subject, run = address or (None, cfg.output_dir.name if cfg else None)
    message = result.message if result else (p.message if p else "")
    return {
        "state": status.state,
        "phase": p.phase if p else None,
        "step": p.step if p else 0,
        "total_steps": p.total_steps if p else (cfg.steps if cfg else 0),
        "loss": p.loss if p else None,
        # From the job's start: the trainer's own clock starts after the model has loaded.
        "elapsed_seconds": round(status.elapsed, 1),
        "started_at": (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.started_at))
                       if status.started_at else None),
        "eta_seconds": round(p.eta_seconds, 1) if p and p.eta_seconds is not None else None,
        "message": message,
        "error": status.error,
        "subject": subject,
        "run": run,
        "resumed": bool(cfg and cfg.resume),
        "lora_dir": str(result.output_dir) if result and result.lora_path else None,
        "kohya_path": str(result.kohya_path) if result and result.kohya_path else None,
        "log_path": str(run_log_path(cfg.output_dir)) if cfg else None,
        "validation_images": list(p.validation_images) if p else [],
        "steps_per_second": (round(result.steps_per_second, 3)
                             if result and result.steps_per_second else None),
        "num_losses": len(status.losses),
        "fidelity": [dict(point) for point in p.fidelity] if p else [],
        "fidelity_note": p.fidelity_note if p else None,
    }


def file_url(path: str | Path) -> str:
    """A link the browser can open: the app serves files inside the workspace."""
    return f"gradio_api/file={quote(str(path))}"


def _bar(step: int, total: int, width: int = 24) -> str:
    filled = int(width * step / total) if total else 0
    return f"`{'█' * filled}{'░' * (width - filled)}` {100 * step // max(total, 1)} %"


def _files(s: dict) -> str:
    lines = []
    if s["kohya_path"]:
        lines.append(f"**For AUTOMATIC1111 / Forge / ComfyUI:** [{Path(s['kohya_path']).name}]"
                     f"({file_url(s['kohya_path'])}): {KOHYA_HINT}.  \n`{s['kohya_path']}`")
    if s["log_path"]:
        lines.append(f"Run log: [train.log]({file_url(s['log_path'])}) · `{s['log_path']}`")
    return "\n\n".join(lines)


def status_markdown(s: dict) -> str:
    if s["state"] == "idle":
        return "No training has run since the app started."
    run = f"*{s['subject']} / {s['run']}*"
    loss = f" · loss {s['loss']:.4f}" if s["loss"] is not None else ""
    steps = f"step {s['step']} / {s['total_steps']}{loss}"
    took = f"Elapsed {duration(s['elapsed_seconds'])}"
    files = _files(s)
    if s["state"] == "running":
        phase = PHASES.get(s["phase"], s["phase"] or "")
        # Class images count up, and "Resumed at step N" comes before the first loss.
        if s["phase"] in ("class_images", "validation", "scoring") or s["loss"] is None:
            phase = s["message"] or phase
        # While class images are drawn, the time left is theirs: training comes after.
        whose = " for the class images" if s["phase"] == "class_images" else ""
        left = (f" · about **{duration(s['eta_seconds'])} left**{whose}"
                if s["eta_seconds"] is not None else "")
        verb = "Resuming" if s["resumed"] else "Training"
        return (f"### ⏳ {verb} {run}\n**{phase}** · {steps}\n\n"
                f"{_bar(s['step'], s['total_steps'])}\n\n{took}{left}\n\n{files}")
    if s["state"] == "completed":
        speed = f" · {s['steps_per_second']:g} steps/s" if s["steps_per_second"] else ""
        return (f"### ✅ Finished {run}\n{steps} · {took}{speed}\n\n{s['message']}\n\n{files}"
                f"\n\nNext: open the **Generate** tab and pick **{s['subject']} / {s['run']}**.")
    if s["state"] == "cancelled":
        return f"### ⏹️ Cancelled {run}\n{s['message']}\n\n{took}\n\n{files}"
    return f"### ❌ Training {run} failed\n{s['error'] or s['message']}\n\n{files}"


def loss_frame(steps: list[int], losses: list[float]) -> pd.DataFrame:
    stride = max(1, -(-len(losses) // MAX_PLOT_POINTS))
    return pd.DataFrame({"step": steps[::stride], "loss": losses[::stride]})


def validation_items(paths: list[str]) -> list[tuple[str, str]]:
    """Gallery items with a caption saying at which step each image was rendered."""
    items = []
    for path in paths:
        match = _VALIDATION_NAME.match(Path(path).name)
        caption = f"step {int(match.group(1))}" if match else Path(path).name
        if Path(path).is_file():
            items.append((str(path), caption))
    return items


# The plotted scores, by the names the paper gives them.
FIDELITY_METRICS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T"}


def fidelity_frame(points: list[dict]) -> pd.DataFrame:
    """One row per scored step and metric, for a line per metric."""
    rows = [(p["step"], FIDELITY_METRICS[key], p[key])
            for p in sorted(points, key=lambda p: p["step"]) for key in FIDELITY_METRICS]
    return pd.DataFrame(rows, columns=["step", "metric", "score"])


def fidelity_markdown(points: list[dict], note: str | None = None) -> str:
    """The best scored step so far and the rule that picks it (or why there is none)."""
    best = best_point(points)
    if best is None:
        text = ("Turn on **Score checkpoints** (Advanced) to plot how much the LoRA's images "
                "look like your photos (DINO, CLIP-I) and follow the prompt (CLIP-T) at each "
                "checkpoint.")
    else:
        text = (f"**Best so far: step {best['step']}** — DINO {best['dino']:.2f}, "
                f"CLIP-T {best['clip_t']:.2f} (best = {BEST_RULE}; {len(points)} step"
                f"{'s' if len(points) != 1 else ''} scored).")
    return f"{text}\n\n⚠️ {note}" if note else text
