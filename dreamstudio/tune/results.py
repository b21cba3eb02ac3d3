"""What a sweep produces: one CellScore per (candidate, UNet scale, text-encoder scale,
guidance), the base model's reference rows, the recommendation and the whole result.

Plain data: the sweep fills it (sweep.py), the rule judges it (rule.py), the report writes
it (report.py) and the plot draws it (plot.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BASE = "base"  # the candidate name of the base model's rows (both scales 0, no LoRA)
FINAL = "final"  # the candidate name of a run's final LoRA; checkpoints are "step-000100"


@dataclass
class CellScore:
    candidate: str  # BASE, FINAL or a checkpoint's folder name ("step-000100")
    step: int | None  # training step of the candidate; None for the base model
    unet_scale: float
    text_encoder_scale: float
    guidance: float
    dino: float | None = None  # subject fidelity: DINO vs the subject's photos
    clip_i: float | None = None  # subject fidelity: CLIP image vs image
    clip_t: float | None = None  # prompt fidelity: CLIP image vs the prompt (no identifier)
    face: float | None = None  # face identity; None when not scored or no face found
    face_found: int | None = None  # generated images with a face (None: faces not scored)
    face_misses: int | None = None  # generated images without one
    leak: float | None = None  # DINO of class-prompt images (no identifier) vs the subject
    leak_flagged: bool | None = None  # leak above the base model's by more than the margin
    images: list[str] = field(default_factory=list)  # relative to the sweep folder
    leak_images: list[str] = field(default_factory=list)
    reused: int = 0  # images taken from an earlier sweep instead of drawn

    @property
    def is_base(self) -> bool:
        return self.candidate == BASE

    @property
    def key(self) -> tuple:
        return (self.candidate, self.unet_scale, self.text_encoder_scale, self.guidance)

    @property
    def label(self) -> str:
        if self.is_base:
            return f"base model, guidance {self.guidance:g}"
        return (f"{self.candidate}, UNet {self.unet_scale:g}, text encoder "
                f"{self.text_encoder_scale:g}, guidance {self.guidance:g}")

    def subject_fidelity(self, use_face: bool) -> float | None:
        """The number the rule ranks by: face identity for people when faces were scored,
        else DINO (the paper's main subject-fidelity metric)."""
        return self.face if use_face else self.dino

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Recommendation:
    cell: CellScore | None  # None: no cell passes the rule (`reason` says why)
    rule: str  # the rule in words, as the page and the report state it
    reason: str  # why this cell, or why none
    pareto: list[tuple] = field(default_factory=list)  # keys of the best trade-off cells

    def to_dict(self) -> dict:
        return {"cell": self.cell.to_dict() if self.cell else None, "rule": self.rule,
                "reason": self.reason, "pareto": [list(k) for k in self.pareto]}


@dataclass
class SweepResult:
    status: str  # "completed" or "cancelled"
    cells: list[CellScore]  # the LoRA cells, in sweep order
    base: list[CellScore]  # the base model's rows, one per guidance value
    recommendation: Recommendation | None  # None when cancelled
    config: dict  # TuneConfig.to_dict()
    compared_with: str  # "held_out" or "training": which photos subject fidelity used
    uses_face: bool  # whether face identity was scored (and so ranks subject fidelity)
    preprocessing: dict  # scorer -> the preprocessing it used, in words
    seconds_drawing: float = 0.0
    seconds_scoring: float = 0.0
    drawn: int = 0  # images drawn this time
    reused: int = 0  # images reused from an earlier sweep
    files: dict = field(default_factory=dict)  # "json", "csv", "png" -> path

    def base_for(self, guidance: float) -> CellScore | None:
        return next((b for b in self.base if b.guidance == guidance), None)


@dataclass
class SweepPlan:
    """What a sweep will do, said before it starts."""

    candidates: list[str]  # the candidate names, in order
    cells: int  # LoRA cells (candidates x scales x guidance values)
    base_cells: int  # the base model's reference rows (one per guidance value)
    images: int  # every image the sweep scores, leak images included
    to_draw: int  # of those, the ones not on disk from an earlier sweep
    seconds_per_image: float | None = None  # from a short timing on this machine
    seconds_loading: float | None = None  # model and LoRA loads, from the same timing

    @property
    def reused(self) -> int:
        return self.images - self.to_draw

    @property
    def seconds(self) -> float | None:
        if self.seconds_per_image is None:
            return None
        return self.to_draw * self.seconds_per_image + (self.seconds_loading or 0.0)

    def describe(self) -> str:
        text = (f"{self.cells} cells ({len(self.candidates)} LoRA(s)) + {self.base_cells} "
                f"base-model row(s): {self.images} images, {self.to_draw} to draw")
        if self.reused:
            text += f", {self.reused} reused from an earlier sweep"
        if self.seconds is not None:
            text += f"; about {duration(self.seconds)} on this machine"
        return text + "."


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class TuneProgress:
    phase: str  # "loading", "timing", "drawing", "scoring", "done", "cancelled"
    done: int = 0  # images finished (drawn or reused)
    total: int = 0
    message: str = ""
    image: object | None = None  # the last image drawn (PIL), for the page to show
    eta_seconds: float | None = None  # from the pace of this sweep's draws so far

    @property
    def eta_text(self) -> str:
        return "" if self.eta_seconds is None else f"about {duration(self.eta_seconds)} left"
