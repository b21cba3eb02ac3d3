"""The app's backend facade: one object the UI (and scripts) talk to, gradio-free.

It ties the workspace layout to the preparation, training and generation modules, so the
UI only turns widget values into typed configs and shows what comes back.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .config import GenerateConfig, PrepareConfig, TrainConfig
from .config.families import family_name, family_of, generate_defaults, train_defaults
from .core.devices import pick_device
from .core.models import DEFAULT_MODEL, describe_source
from .core.stop_flags import StopFlags
from .data import review as photo_review
from .data.manifest import PhotoResult, PrepareReport, load_manifest
from .data.prepare import prepare_subject
from .errors import InputError
from .evaluate.evaluate import EvalConfig, EvalProgress, EvalReport
from .evaluate.metrics import PAPER_REFERENCE
from .evaluate.report import CSV_NAME, JSON_NAME, compared_with_sentence
from .evaluate.scorers import ScorerCache
from .generate.eta import StepClock
from .generate.generator import GeneratedImage, Generator
from .generate.grid import (
    AXES,
    MAX_CELLS,
    NO_AXIS,
    GridAxis,
    GridConfig,
    GridProgress,
    GridResult,
    run_grid,
)
from .generate.history import HistoryItem, list_history, settings_from
from .generate.png_metadata import a1111_parameters
from .generate.previews import PreviewFn, check_decoder_folder
from .generate.samplers import SAMPLER_NAMES
from .studio_scores import ScoringFacade
from .train.class_gallery import ClassImageSet, add_class_images, list_class_images
from .train.class_images import planned_recipe
from .train.identifiers import (
    IdentifierAdvisor,
    IdentifierCheck,
    class_noun_of,
    compose_prompts,
    parse_template_prompt,
)
from .train.jobs import JobStatus, TrainingJobs
from .train.presets import PRESETS, Preset, presets_for
from .train.resume import check_resumable
from .train.scoring import BEST_RULE, best_point
from .tune.candidates import Candidate
from .tune.config import TuneConfig
from .tune.plot import draw_scatter
from .tune.report import table_rows
from .tune.results import CellScore, Recommendation, SweepPlan, SweepResult, TuneProgress
from .tune.rule import recommend, rule_text
from .workspace import locks
from .workspace.kept_checkpoints import keep_checkpoint
from .workspace.layout import LoraEntry, LoraFacts, Workspace
from .workspace.runs import (
    RunInfo,
    describe_run,
    list_runs,
    run_log_path,
    save_run_settings,
    training_config_for,
)


class Studio(ScoringFacade):
    def __init__(self, workspace: Path, model: str = DEFAULT_MODEL, device: str | None = None,
                 model_config_dir: str | None = None, scorer_models: dict | None = None,
                 preview_decoder: Path | None = None, vae: str | None = None):
        if device:
            pick_device(device)  # a device that is not there is refused now, not on first use
        if preview_decoder is not None:
            check_decoder_folder(Path(preview_decoder).expanduser())  # refused now, too
        self.preview_decoder = preview_decoder  # what the app's previews are decoded with
        self.workspace = Workspace(workspace)
        self.scorer_models = dict(scorer_models or {})  # offered besides EvalConfig's defaults
        self.model = model
        self.device = device
        self.model_config_dir = model_config_dir
        self.vae = vae  # replaces the model's own VAE in training and generation (--vae)
        # SD 1.x, SD 2.x or SDXL: names the model in the UI, picks its defaults and presets.
        self.family = family_of(model, model_config_dir)
        self.jobs = TrainingJobs()
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()
        self._subject_lock = locks.SubjectLocks()
        self._stop_flags = StopFlags()
        self._scorers = ScorerCache()  # fidelity models, loaded once
        self.identifiers = IdentifierAdvisor(model, model_config_dir)

    def claim_workspace(self, port: int) -> None:
        """Refuse to serve a workspace another live app serves; hold it until exit."""
        locks.take_workspace_lock(self.workspace.root, port)
        atexit.register(locks.release_workspace_lock, self.workspace.root)

    def private_files(self) -> list[str]:
        """Workspace files the app must not serve (the lock file names its pid and host)."""
        return [str(self.workspace.root / locks.WORKSPACE_LOCK)]

    # ---- Data ---------------------------------------------------------------------------
    def prepare(self, subject: str, files: list[Path], config: PrepareConfig,
                progress: Callable[[int, int, str], None] | None = None) -> PrepareReport:
        """Add `files` to the subject and (re)crop all of its photos into training images.

        Review edits (exclusions, hand-made crops, chosen faces) are kept for photos that
        are still there. Uploads that were already in the subject are named in the
        report's warnings (for this answer only; the manifest does not keep them).
        """
        with self._subject_lock(subject):
            return prepare_subject(subject, self.workspace.originals_dir(subject),
                                   self.workspace.photos_dir(subject), files, config, progress)

    def photos(self, subject: str) -> PrepareReport | None:
        if not self.workspace.has_photos(subject):
            return None
        return load_manifest(self.workspace.photos_dir(subject))

    # ---- Reviewing photos (each edit is saved to the manifest at once) --------------------
    def exclude_photo(self, subject: str, photo: str, excluded: bool = True) -> PrepareReport:
        """Leave the crop named `photo` out of training (excluded=False takes it back)."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.set_excluded(photos, photo, excluded)

    def hold_out_photo(self, subject: str, photo: str, held_out: bool = True) -> PrepareReport:
        """Keep the crop named `photo` for scoring only, never trained on (False: train on it)."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.set_held_out(photos, photo, held_out)

    def set_caption(self, subject: str, photo: str, caption: str | None) -> PrepareReport:
        """Caption the crop named `photo` for training (blank: the instance prompt)."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.set_caption(photos, photo, caption)

    def recrop_photo(self, subject: str, photo: str, x: float, y: float,
                     side: float) -> PrepareReport:
        """Crop the square (x, y, side), in the original photo's pixels, by hand."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.recrop(self.workspace.originals_dir(subject), photos, photo,
                                       x, y, side)

    def choose_face(self, subject: str, photo: str, face: int) -> PrepareReport:
        """Crop around face number `face` (0 = the most prominent) found in the photo."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.choose_face(self.workspace.originals_dir(subject), photos,
                                            photo, face)

    def reset_crop(self, subject: str, photo: str) -> PrepareReport:
        """Back to the automatic crop of the photo."""
        with self._subject_lock(subject):
            photos = self.workspace.prepared_photos_dir(subject)
            return photo_review.reset_crop(self.workspace.originals_dir(subject), photos, photo)

    def photo_preview(self, subject: str, photo: str,
                      box: tuple[float, float, float] | None = None) -> photo_review.Preview:
        """The original photo with the crop square (x, y, side) drawn on it, and the crop."""
        report = load_manifest(self.workspace.prepared_photos_dir(subject))
        return photo_review.preview(self.workspace.originals_dir(subject), report, photo, box)

    # ---- Subjects -----------------------------------------------------------------------
    def rename_subject(self, subject: str, new_name: str) -> str:
        """Rename a subject with its photos, LoRAs and images; returns the new name."""
        self._refuse_while_training(subject, "renamed")
        with self._subject_lock(subject):
            return self.workspace.rename_subject(subject, new_name)

    def delete_subject(self, subject: str) -> None:
        """Delete a subject with its photos, LoRAs and generated images, for good."""
        self._refuse_while_training(subject, "deleted")
        with self._subject_lock(subject):
            self.workspace.delete_subject(subject)

    def _training_run(self) -> Path | None:
        status = self.jobs.status()
        return Path(status.config.output_dir) if status.running and status.config else None

    def _refuse_while_training(self, subject: str, what: str) -> None:
        folder = self.workspace.existing_subject_dir(subject)
        if (run := self._training_run()) and run.resolve().is_relative_to(folder):
            raise InputError(
                f"Subject '{subject}' is being trained right now (run '{run.name}'), so it "
                f"cannot be {what}. Wait for the run to finish or cancel it on the Train "
                "tab, then try again."
            )

    # ---- Training -----------------------------------------------------------------------
    def training_config(self, subject: str, instance_prompt: str, run_name: str | None = None,
                        class_prompt: str | None = None, resume: bool = False,
                        **settings) -> TrainConfig:
        """A TrainConfig for a new run (or, resume=True, the named run) of `subject`."""
        # Checkpoints are scored with the models the app was started with (--dino-model).
        scorers = {f"score_{k}": v for k, v in self.scorer_models.items()
                   if k in ("dino_model", "clip_model")}
        return training_config_for(self.workspace, subject, instance_prompt, run_name,
                                   class_prompt, resume, model=self.model, device=self.device,
                                   model_config_dir=self.model_config_dir, vae=self.vae,
                                   **{**scorers, **settings})

    def check_resume(self, config: TrainConfig) -> None:
        """Refuse at once, before any model loads, a resume the trainer would refuse."""
        check_resumable(config)

    def start_training(self, config: TrainConfig) -> None:
        if config.resume:
            self.check_resume(config)
        # A GPU rarely holds the inference pipeline and a training run at once.
        if self._generator is not None and self._generator.device.type != "cpu":
            self._generator.unload()
        # Written once the job is accepted (a refused start leaves no folder behind) and
        # before it starts, so the run's own clean-up at start never meets a half-written
        # file; picking the run later reloads exactly these settings (resume needs them).
        self.jobs.start(config, accepted=None if config.resume else save_run_settings)

    def runs(self, subject: str) -> list[RunInfo]:
        """The subject's runs (finished, cancelled with checkpoints, or failed), by name."""
        return list_runs(self.workspace.loras_dir(subject), self._training_run())

    def run_info(self, subject: str, run_name: str) -> RunInfo:
        return describe_run(self.workspace.run_dir(subject, run_name), self._training_run())

    @property
    def family_name(self) -> str:
        """'SDXL', 'SD 1.x', 'SD 2.x': the base model's family as the UI names it."""
        return family_name(self.family)

    @property
    def presets(self) -> dict[str, Preset]:
        """The Train tab's presets for the base model's family."""
        return presets_for(self.family)

    def train_defaults(self) -> dict:
        """TrainConfig fields whose default the base model's family replaces."""
        return train_defaults(self.family)

    def generate_defaults(self) -> dict:
        """GenerateConfig fields whose default the base model's family replaces."""
        return generate_defaults(self.family)

    # ---- Identifier and class images ------------------------------------------------------
    def check_identifier(self, identifier: str, class_noun: str) -> IdentifierCheck:
        return self.identifiers.check(identifier, class_noun)

    def suggest_identifiers(self, count: int, seed: int) -> list[str]:
        return self.identifiers.suggest(count, seed)

    def class_images_dir(self, class_prompt: str, resolution: int) -> Path:
        if not (class_prompt or "").strip():
            raise InputError("Type a class prompt first, e.g. 'a photo of dog'.")
        return self.workspace.class_images_dir(self.model, class_prompt, resolution)

    def class_images(self, class_prompt: str, resolution: int, wanted: int,
                     **settings) -> ClassImageSet:
        """The shared class images, judged as a run with these TrainConfig settings makes them."""
        recipe = planned_recipe(self.model, class_prompt, resolution, self.device, **settings)
        return list_class_images(self.class_images_dir(class_prompt, resolution), wanted, recipe)

    def add_class_images(self, class_prompt: str, resolution: int,
                         files: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
        """Put your own pictures of the class into the shared folder; training uses them and
        generates only the rest."""
        return add_class_images(self.class_images_dir(class_prompt, resolution), files)

    def keep_checkpoint(self, subject: str, run: str, step: int) -> LoraEntry:
        """The run's checkpoint at `step` written as a LoRA of its own, '<run>-step<step>'."""
        self.workspace.existing_subject_dir(subject)
        with self._subject_lock(subject):
            path = keep_checkpoint(self.workspace.loras_dir(subject), run, step)
        return self.workspace.lora_at(path)

    def training_status(self) -> JobStatus:
        return self.jobs.status()

    def cancel_training(self) -> bool:
        return self.jobs.cancel()

    # ---- Generation ---------------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        with self._generator_lock:
            if self._generator is None:
                self._generator = Generator(self.model, device=self.device,
                                            model_config_dir=self.model_config_dir,
                                            vae=self.vae)
            return self._generator

    def loras(self, subject: str | None = None) -> list[LoraEntry]:
        return self.workspace.loras(subject)

    def find_lora(self, label: str) -> LoraEntry | None:
        return self.workspace.find_lora(label)

    def lora_at(self, path: Path | str) -> LoraEntry | None:
        """The workspace LoRA stored in folder `path` (as a PNG's parameters name it)."""
        return self.workspace.lora_at(path)

    def newest_lora(self) -> LoraEntry | None:
        return self.workspace.newest_lora()

    def run_address(self, path: Path) -> tuple[str, str] | None:
        """(subject, run name) of a run's output folder, e.g. a training config's output_dir."""
        return self.workspace.run_address(path)

    def generate(self, config: GenerateConfig, subject: str | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None,
                 preview: PreviewFn | None = None) -> list[GeneratedImage]:
        self._refuse_outside(config.lora_dir)
        return self.generator.generate(config, self.workspace.generated_dir(subject),
                                       progress=progress, cancel=cancel, preview=preview)

    def generate_grid(self, config: GridConfig, subject: str | None = None,
                      progress: Callable[[GridProgress], None] | None = None,
                      cancel: threading.Event | None = None,
                      preview: PreviewFn | None = None) -> GridResult:
        """An X/Y grid on the cached generator, saved (with its axes) beside the images."""
        self._refuse_outside(config.base.lora_dir)
        return run_grid(self.generator, config, self.workspace.generated_dir(subject),
                        progress=progress, cancel=cancel, preview=preview)

    def _refuse_outside(self, lora_dir: Path | None) -> None:
        # The app serves only the workspace: a LoRA from elsewhere is not the app's to load.
        if lora_dir is not None and not self.workspace.contains(lora_dir):
            raise InputError(f"LoRA {lora_dir} is not inside the workspace.")

    def history(self, subject: str | None) -> list[HistoryItem]:
        """Earlier images of `subject` (None: of the base model), newest first."""
        return list_history(self.workspace.generated_dir(subject))

    # ---- Stopping generation and evaluation ----------------------------------------------
    def cancellable(self, kind: str) -> AbstractContextManager[threading.Event]:
        """A stop flag for one piece of work of `kind` ("generate", "evaluate")."""
        return self._stop_flags.cancellable(kind)

    def stop(self, kind: str) -> bool:
        """Ask all work of `kind` to stop within one sampler step; False if none goes on."""
        return self._stop_flags.stop(kind)

    # ---- Queries of the workspace (the UI asks; the layout module knows the paths) ---------
    def subjects(self) -> list[str]:
        return self.workspace.subjects()

    def has_photos(self, subject: str) -> bool:
        return self.workspace.has_photos(subject)

    def uploaded_count(self, subject: str) -> int:
        return self.workspace.uploaded_count(subject)


# dreamstudio.ui imports from the backend only Studio and the names below (besides
# dreamstudio.config and dreamstudio.errors); tests/test_layering.py holds it to that.
__all__ = [
    "AXES", "BEST_RULE", "CSV_NAME", "DEFAULT_MODEL", "JSON_NAME", "MAX_CELLS", "NO_AXIS",
    "PAPER_REFERENCE", "PRESETS", "SAMPLER_NAMES", "Candidate", "CellScore", "ClassImageSet",
    "EvalConfig", "EvalProgress", "EvalReport", "GridAxis", "GridConfig", "GridProgress",
    "GridResult", "HistoryItem", "IdentifierCheck", "JobStatus", "LoraEntry", "LoraFacts",
    "PhotoResult", "PrepareConfig", "PrepareReport", "Preset", "Recommendation", "RunInfo",
    "StepClock",
    "Studio", "SweepPlan", "SweepResult", "TuneConfig", "TuneProgress", "a1111_parameters",
    "best_point", "class_noun_of", "compared_with_sentence", "compose_prompts", "describe_source",
    "draw_scatter", "parse_template_prompt", "recommend", "rule_text", "run_log_path",
    "settings_from", "table_rows",
]
