"""The app's backend facade: one object the UI (and scripts) talk to, gradio-free.

It ties the workspace layout to the preparation, training and generation modules, so the
UI only turns widget values into typed configs and shows what comes back.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .config import GenerateConfig, TrainConfig
from .errors import InputError
from .generation import GeneratedImage, Generator
from .jobs import JobStatus, TrainingJobs
from .models import DEFAULT_MODEL
from .prepare import PrepareConfig, PrepareReport, list_image_files, load_manifest, prepare_photos
from .workspace import LoraEntry, Workspace, safe_name


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Studio:
    def __init__(self, workspace: Path, model: str = DEFAULT_MODEL, device: str | None = None,
                 model_config_dir: str | None = None):
        self.workspace = Workspace(workspace)
        self.model = model
        self.device = device
        self.model_config_dir = model_config_dir
        self.jobs = TrainingJobs()
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()

    # ---- Data ---------------------------------------------------------------------------
    def add_photos(self, subject: str, files: list[Path]) -> list[Path]:
        """Copy uploaded photos into the subject's originals, skipping exact duplicates."""
        originals = self.workspace.originals_dir(subject)
        originals.mkdir(parents=True, exist_ok=True)
        known = {_digest(p) for p in originals.iterdir() if p.is_file()}
        added = []
        for src in files:
            src = Path(src)
            if not src.is_file():
                continue
            digest = _digest(src)
            if digest in known:
                continue
            known.add(digest)
            name = safe_name(src.name.replace("/", "_"), "file") if src.name else "photo"
            dest = originals / name
            n = 1
            while dest.exists():
                dest = originals / f"{Path(name).stem}_{n}{Path(name).suffix}"
                n += 1
            shutil.copyfile(src, dest)
            added.append(dest)
        return added

    def prepare(self, subject: str, files: list[Path], config: PrepareConfig,
                progress: Callable[[int, int, str], None] | None = None) -> PrepareReport:
        """Add `files` to the subject and (re)crop all of its photos into training images."""
        if files:
            self.add_photos(subject, files)
        originals = self.workspace.originals_dir(subject)
        sources = list_image_files(originals) if originals.is_dir() else []
        if not sources:
            raise InputError(
                f"Subject '{subject}' has no photos yet: upload 3-20 photos of it first."
            )
        return prepare_photos(sources, self.workspace.photos_dir(subject), config,
                              progress=progress)

    def photos(self, subject: str) -> PrepareReport | None:
        folder = self.workspace.photos_dir(subject)
        return load_manifest(folder) if (folder / "manifest.json").is_file() else None

    # ---- Training -----------------------------------------------------------------------
    def training_config(self, subject: str, instance_prompt: str, run_name: str | None = None,
                        class_prompt: str | None = None, **settings) -> TrainConfig:
        """A TrainConfig for `subject` with workspace paths filled in."""
        photos = self.workspace.photos_dir(subject)
        if not (photos / "manifest.json").is_file():
            raise InputError(
                f"Subject '{subject}' has no prepared photos: prepare them on the Data tab first."
            )
        run_name = run_name or time.strftime("run-%Y%m%d-%H%M%S")
        resolution = settings.get("resolution", 512)
        class_dir = None
        if class_prompt and class_prompt.strip():
            class_dir = self.workspace.class_images_dir(self.model, class_prompt, resolution)
        return TrainConfig(
            instance_dir=photos,
            instance_prompt=instance_prompt,
            output_dir=self.workspace.new_run_dir(subject, run_name),
            model=self.model,
            class_dir=class_dir,
            class_prompt=class_prompt,
            model_config_dir=self.model_config_dir,
            device=self.device,
            **settings,
        )

    def start_training(self, config: TrainConfig) -> None:
        # A GPU rarely holds the inference pipeline and a training run at once.
        if self._generator is not None and self._generator.device.type != "cpu":
            self._generator.unload()
        self.jobs.start(config)

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
                                            model_config_dir=self.model_config_dir)
            return self._generator

    def loras(self, subject: str | None = None) -> list[LoraEntry]:
        return self.workspace.loras(subject)

    def find_lora(self, label: str) -> LoraEntry | None:
        return next((e for e in self.loras() if e.label == label), None)

    def generate(self, config: GenerateConfig, subject: str | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> list[GeneratedImage]:
        if config.lora_dir is not None and not self.workspace.contains(config.lora_dir):
            raise InputError(f"LoRA {config.lora_dir} is not inside the workspace.")
        out = (self.workspace.generated_dir(subject) if subject
               else self.workspace.root / "generated")
        return self.generator.generate(config, out, progress=progress, cancel=cancel)
