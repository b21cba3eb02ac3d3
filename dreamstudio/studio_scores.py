"""The Studio facade's scoring half: evaluating a LoRA and the scored sweep (Tune).

Studio (studio.py) inherits these methods; they are here so each file stays one screenful
of concerns. Like the rest of the facade they delegate: the work is in evaluate/ and tune/.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .evaluate.evaluate import EvalConfig, EvalProgress, EvalReport
from .evaluate.evaluate import evaluate as run_evaluation
from .generate.generator import timestamp
from .tune.candidates import Candidate, run_candidates
from .tune.config import TuneConfig
from .tune.report import read_result
from .tune.results import BASE, FINAL, CellScore, SweepPlan, SweepResult, TuneProgress
from .tune.sweep import plan_sweep, run_sweep, time_sweep


class ScoringFacade:
    """Evaluate and Tune, for Studio (which provides workspace, generator and _scorers)."""

    # ---- Evaluation -----------------------------------------------------------------------
    def evaluation_config(self, lora_label: str, **settings) -> EvalConfig:
        """An EvalConfig for a workspace LoRA, scored against its subject's prepared photos."""
        entry = self.find_lora(lora_label)
        if entry is None:
            raise InputError(f"There is no trained LoRA called '{lora_label}': train one on "
                             "the Train tab, or refresh the list.")
        photos = self.workspace.photos_dir(entry.subject)
        if not photos.is_dir():
            raise InputError(f"Subject '{entry.subject}' has no prepared photos to compare "
                             "with: prepare them on the Data tab.")
        return EvalConfig(lora_dir=entry.path, real_images_dir=photos, **settings)

    def scorers(self, dino_model: str, clip_model: str):
        """The DINO and CLIP scorers, loaded once per model id and kept for later evaluations."""
        return self._scorers.get(dino_model, clip_model, self.generator.device)

    def evaluate(self, config: EvalConfig, progress: Callable[[EvalProgress], None] | None = None,
                 cancel: threading.Event | None = None) -> tuple[EvalReport, Path]:
        """Score a LoRA with the cached generator; results go to
        subjects/<name>/evaluations/<lora>-<time>/ (fidelity.json, fidelity.csv, images/)."""
        self._refuse_outside(config.lora_dir)
        subject, lora = self.workspace.run_address(config.lora_dir) or (None, None)
        if subject is None:
            raise InputError(f"{config.lora_dir} is not a subject's LoRA folder "
                             "(subjects/<name>/loras/<run>/): pick a LoRA from the list.")
        output = self.workspace.evaluations_dir(subject) / f"{lora}-{timestamp()}"
        dino, clip = self.scorers(config.dino_model, config.clip_model)
        report = run_evaluation(config, self.generator, output, progress, cancel,
                                dino=dino, clip=clip)
        return report, output

    # ---- Tune: the scored sweep ----------------------------------------------------------
    def tune_candidates(self, subject: str, run: str) -> list[Candidate]:
        """The run's LoRAs a sweep can try: its checkpoints by step, then the final LoRA."""
        return run_candidates(self.workspace.run_dir(subject, run))

    def tune_config(self, subject: str, run: str, **settings) -> TuneConfig:
        """A TuneConfig for a subject's run, scored against the subject's prepared photos."""
        run_dir = self.workspace.run_dir(subject, run)
        if not run_dir.is_dir():
            raise InputError(f"Subject '{subject}' has no run called '{run}': train it on "
                             "the Train tab, or refresh the list.")
        photos = self.workspace.prepared_photos_dir(subject)
        return TuneConfig(run_dir=run_dir, real_images_dir=photos, **settings)

    def _tune_folder(self, config: TuneConfig) -> Path:
        address = self.workspace.run_address(config.run_dir)
        if address is None:
            raise InputError(f"{config.run_dir} is not a subject's run folder "
                             "(subjects/<name>/loras/<run>/): pick a run from the list.")
        return self.workspace.tunes_dir(*address)

    def tune_plan(self, config: TuneConfig, timed: bool = True) -> SweepPlan:
        """How many images the sweep draws (and reuses) and, `timed`, about how long it takes
        here, from drawing one image at 1 and 3 steps (which loads the model)."""
        folder = self._tune_folder(config)
        plan, cells = plan_sweep(config, folder, self.generator.model)
        return time_sweep(plan, cells, config, self.generator, folder) if timed else plan

    def tune(self, config: TuneConfig, progress: Callable[[TuneProgress], None] | None = None,
             cancel: threading.Event | None = None) -> SweepResult:
        """Run the sweep on the cached generator; results go to subjects/<name>/tunes/<run>/
        (tune.json, tune.csv, tune.png, images/). Scorers load once and are released after."""
        folder = self._tune_folder(config)
        device = self.generator.device
        try:
            if progress is not None:
                progress(TuneProgress("loading", 0, 0, "Loading the scoring models"))
            dino, clip = self._scorers.get(config.dino_model, config.clip_model, device)
            faces = (self._scorers.get_face(config.face_weights, device)
                     if config.scores_faces else None)
            return run_sweep(config, self.generator, folder, dino, clip, faces, progress,
                             cancel)
        finally:
            self._scorers.release()

    def last_tune(self, subject: str, run: str) -> SweepResult | None:
        """The run's last finished sweep, as saved (None if it has none)."""
        return read_result(self.workspace.tunes_dir(subject, run))

    def use_tuned(self, subject: str, run: str, cell: CellScore) -> tuple[str | None, dict]:
        """The LoRA label and settings that draw like `cell`, for the Generate tab. A
        checkpoint is kept as a LoRA of its own first (keep_checkpoint); the base model's
        row gives no LoRA (None)."""
        settings = {"unet_scale": cell.unet_scale, "text_encoder_scale": cell.text_encoder_scale,
                    "guidance": cell.guidance}
        if cell.candidate == BASE:
            return None, settings
        if cell.candidate == FINAL:
            entry = self.workspace.lora_at(self.workspace.run_dir(subject, run))
        else:
            entry = self.keep_checkpoint(subject, run, cell.step)
        if entry is None:
            raise InputError(f"Run '{run}' of '{subject}' has no LoRA any more: train it again.")
        return entry.label, settings
