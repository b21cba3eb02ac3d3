"""Face identity: how much the generated faces look like the subject's (facenet-pytorch).

Faces are found by the same MTCNN detector the Data room uses (data/faces.py), cut out at
the detected box and resized to 160 px, as facenet-pytorch's MTCNN does, then embedded by
InceptionResnetV1. The score is the mean cosine similarity over every (generated face, real
face) pair, the same pairing as DINO and CLIP-I, so the three columns read alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..core.devices import pick_device
from ..data.faces import FaceDetector, most_prominent, shared_detector
from ..errors import InputError
from .metrics import subject_fidelity

DEFAULT_FACE_WEIGHTS = "vggface2"
# The weight sets facenet-pytorch downloads by name; anything else is a local file.
NAMED_WEIGHTS = ("vggface2", "casia-webface")
FACE_SIZE = 160
FACE_PREPROCESSING = (
    f"MTCNN face box (most prominent face), cut out and resized to {FACE_SIZE} px "
    "(bilinear), (x - 127.5) / 128"
)


@dataclass
class FaceIdentity:
    """Face identity of generated images against real photos, and where no face was found."""

    score: float | None  # None when either side has no face at all
    generated: int
    misses: list[int] = field(default_factory=list)  # indices of generated images, no face
    real_misses: list[int] = field(default_factory=list)  # indices of real photos, no face

    @property
    def found(self) -> int:
        return self.generated - len(self.misses)

    def to_dict(self, names: list[str] | None = None, real_names: list[str] | None = None):
        def named(indices, labels):
            return [labels[i] for i in indices] if labels else list(indices)

        return {"score": self.score, "generated": self.generated, "found": self.found,
                "misses": len(self.misses), "missed": named(self.misses, names),
                "real_missed": named(self.real_misses, real_names),
                "pairing": "mean over every (generated face, real face) pair"}


def _build_network(weights: str):
    from facenet_pytorch import InceptionResnetV1

    if weights in NAMED_WEIGHTS:
        try:
            return InceptionResnetV1(pretrained=weights)
        except Exception as exc:  # urllib, http and torch.load all raise their own types
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(
                f"Could not load the face model weights '{weights}': facenet-pytorch downloads "
                f"them from GitHub on first use and that failed ({type(exc).__name__}: "
                f"{detail}). Download them once with network access (they are cached under "
                "$TORCH_HOME/checkpoints), or give the path of a local weights file instead."
            ) from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(
            f"Face model weights '{weights}' not found: not a file and not one of "
            f"{', '.join(NAMED_WEIGHTS)}. Give the path of an InceptionResnetV1 state dict "
            "(.pt) instead."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # The released files carry their identity classifier, which embedding never uses.
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        network = InceptionResnetV1(pretrained=None)
        network.load_state_dict(state)
    except Exception as exc:  # a wrong or damaged file fails in torch.load or load_state_dict
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"The face weights file {path} is not an InceptionResnetV1 state dict "
            f"({type(exc).__name__}: {detail[:200]}). Give another file."
        ) from exc
    network.classify = False
    return network


def face_crop(image: Image.Image, detector: FaceDetector) -> Image.Image | None:
    """The most prominent face cut out at FACE_SIZE px, or None where there is none."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    faces = detector.detect(image)
    if not faces:
        return None
    x0, y0, x1, y1 = (int(v) for v in most_prominent(faces).box)
    return image.crop((x0, y0, x1, y1)).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)


def _face_pixels(crops: list[Image.Image]) -> torch.Tensor:
    rows = []
    for crop in crops:
        pixels = torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(FACE_SIZE, FACE_SIZE, 3).permute(2, 0, 1).float()
        # facenet-pytorch's fixed standardisation, which its VGGFace2 weights were trained on.
        rows.append((pixels - 127.5) / 128.0)
    return torch.stack(rows)


class FaceScorer:
    """InceptionResnetV1 face embeddings of MTCNN-found faces.

    `weights` is "vggface2" (the default), "casia-webface" or a local state-dict file.
    """

    preprocessing = FACE_PREPROCESSING

    def __init__(self, weights: str = DEFAULT_FACE_WEIGHTS, device=None,
                 detector: FaceDetector | None = None):
        self.name = str(weights)
        self.device = pick_device(device)
        self.detector = detector or shared_detector()
        self.model = _build_network(str(weights)).to(self.device, torch.float32).eval()

    @torch.inference_mode()
    def embed_crops(self, crops: list[Image.Image]) -> torch.Tensor:
        """N x 512 embeddings of face crops already cut out at FACE_SIZE px."""
        return self.model(_face_pixels(crops).to(self.device)).float().cpu()

    def embed_faces(self, images: list[Image.Image]) -> tuple[torch.Tensor | None, list[int]]:
        """Embeddings of the images with a face (in order), and the indices of those without."""
        crops, misses = [], []
        for i, image in enumerate(images):
            crop = face_crop(image, self.detector)
            if crop is None:
                misses.append(i)
            else:
                crops.append(crop)
        return (self.embed_crops(crops) if crops else None), misses

    def identity(self, generated: list[Image.Image], real: list[Image.Image]) -> FaceIdentity:
        """Face identity of `generated` against `real`; faceless images are misses."""
        gen_emb, misses = self.embed_faces(generated)
        real_emb, real_misses = self.embed_faces(real)
        score = None
        if gen_emb is not None and real_emb is not None:
            score = subject_fidelity(gen_emb, real_emb)
        return FaceIdentity(score=score, generated=len(generated), misses=misses,
                            real_misses=real_misses)
