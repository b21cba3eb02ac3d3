"""Scoring images against one subject: its photos embedded once, then any set of images.

The sweep scores cell after cell, and training scores checkpoint after checkpoint, against
the same photos; `SubjectScores` embeds them once (DINO, CLIP and, for people, faces) and
then turns a list of images into the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.images import ImageRejected, open_rgb
from ..errors import InputError
from ..evaluate.evaluate import real_photo_files
from ..evaluate.faces import FaceScorer
from ..evaluate.metrics import leak_score, prompt_fidelity, self_similarity, subject_fidelity
from ..evaluate.scorers import ClipScorer, DinoScorer

_CHUNK = 8  # photos embedded per pass: a folder of 12 MP photos would not fit at once


@dataclass
class ImageScores:
    dino: float
    clip_i: float
    clip_t: float | None  # None when no prompt texts were given
    face: float | None = None  # None when faces are not scored or none was found
    face_found: int | None = None
    face_misses: int | None = None


class SubjectScores:
    """The subject's photos, embedded once, and the scorers that embedded them.

    `photos` is the prepared-photos folder: its held-out crops are used when there are any
    (`compared_with` says "held_out"), else its training crops ("training").
    """

    def __init__(self, photos: Path, dino: DinoScorer, clip: ClipScorer,
                 faces: FaceScorer | None = None):
        self.dino, self.clip, self.faces = dino, clip, faces
        files, self.compared_with = real_photo_files(Path(photos))
        dino_rows, clip_rows, images, self.used, self.skipped = [], [], [], [], []
        for start in range(0, len(files), _CHUNK):
            batch = []
            for path in files[start:start + _CHUNK]:
                try:
                    batch.append(open_rgb(path))
                    self.used.append(path)
                except (ImageRejected, OSError) as exc:
                    self.skipped.append((str(path), str(exc)))
            if batch:
                dino_rows.append(dino.embed_images(batch))
                clip_rows.append(clip.embed_images(batch))
                if faces is not None:
                    images += batch
        if not self.used:
            raise InputError(f"No usable photos of the subject in {photos}: prepare its "
                             "photos on the Data tab again.")
        self.real_dino, self.real_clip = torch.cat(dino_rows), torch.cat(clip_rows)
        self.real_faces = None
        self.real_face_misses: list[int] = []
        if faces is not None:
            self.real_faces, self.real_face_misses = faces.embed_faces(images)
            if self.real_faces is None:
                raise InputError(
                    f"No face was found in any photo in {photos}, so face identity cannot be "
                    "measured: turn face identity off, or check the photos on the Data tab.")
        self._texts: dict[str, torch.Tensor] = {}

    @property
    def preprocessing(self) -> dict[str, str]:
        described = {"dino": self.dino.preprocessing, "clip": self.clip.preprocessing}
        if self.faces is not None:
            described["face"] = self.faces.preprocessing
        return described

    @property
    def real_similarity(self) -> dict[str, float | None]:
        """The photos against each other: the ceiling of the subject-fidelity columns."""
        return {"dino": self_similarity(self.real_dino),
                "clip_i": self_similarity(self.real_clip)}

    def _text(self, text: str) -> torch.Tensor:
        if text not in self._texts:
            self._texts[text] = self.clip.embed_texts([text])[0]
        return self._texts[text]

    def score(self, images: list[Image.Image], texts: list[str] | None = None) -> ImageScores:
        """DINO, CLIP-I against the photos, CLIP-T of image i against texts[i], faces."""
        gen_clip = self.clip.embed_images(images)
        clip_t = None
        if texts is not None:
            clip_t = prompt_fidelity(gen_clip, torch.stack([self._text(t) for t in texts]))
        scores = ImageScores(subject_fidelity(self.dino.embed_images(images), self.real_dino),
                             subject_fidelity(gen_clip, self.real_clip), clip_t)
        if self.faces is not None:
            embedded, misses = self.faces.embed_faces(images)
            scores.face_found, scores.face_misses = len(images) - len(misses), len(misses)
            if embedded is not None:
                scores.face = subject_fidelity(embedded, self.real_faces)
        return scores

    def leak(self, images: list[Image.Image]) -> float:
        """How much class-prompt images (no identifier) look like the subject (DINO)."""
        return leak_score(self.dino.embed_images(images), self.real_dino)


def load_scorers(dino_model: str, clip_model: str, face_weights: str | None, device=None):
    """(DINO, CLIP, faces or None) where no app cache holds them (the command line)."""
    faces = FaceScorer(face_weights, device=device) if face_weights else None
    return (DinoScorer(dino_model, device=device), ClipScorer(clip_model, device=device),
            faces)
