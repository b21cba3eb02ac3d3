"""Find faces in a photo with facenet-pytorch's MTCNN (weights ship inside the wheel).

facenet_pytorch pulls in torch and requests, so it is imported on first use only:
`import dreamstudio` must stay fast for the UI and the tests that never detect faces.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from collections.abc import Sequence

# MTCNN's own last-stage threshold is 0.7; at that level it still fires on fabric folds and
# pet faces. 0.9 keeps real human faces (typically > 0.99) and drops most of those.
DEFAULT_MIN_PROB = 0.9

# MTCNN's image pyramid makes its cost grow with pixel count; a 24 MP phone photo takes
# seconds. At 1024 px on the long side a face that fills a training crop is still > 100 px.
DEFAULT_DETECT_SIDE = 1024


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1) in the coordinates of the image given to detect."""

    box: tuple[float, float, float, float]
    prob: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


def most_prominent(faces: Sequence[Face]) -> Face:
    """The face most likely to be the subject: the biggest one, discounted by its doubt."""
    if not faces:
        raise ValueError("most_prominent() needs at least one face")
    return max(faces, key=_prominence)


def faces_by_prominence(faces: Sequence[Face]) -> list[Face]:
    """Faces sorted most prominent first, so "face 1" is the one picked automatically."""
    return sorted(faces, key=_prominence, reverse=True)


def _prominence(face: Face) -> float:
    return face.area * face.prob


class FaceDetector:
    """MTCNN on the CPU, built on first use and shared by every thread that detects with it."""

    def __init__(
        self,
        min_prob: float = DEFAULT_MIN_PROB,
        detect_side: int = DEFAULT_DETECT_SIDE,
        device: str = "cpu",
    ) -> None:
        if not 0.0 <= min_prob <= 1.0:
            raise ValueError(f"min_prob must be between 0 and 1, got {min_prob}")
        if detect_side < 64:
            raise ValueError(f"detect_side must be at least 64 px, got {detect_side}")
        self.min_prob = min_prob
        self.detect_side = detect_side
        self.device = device
        self._mtcnn: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        # Double-checked so that concurrent first calls build the network once, and later
        # calls do not pay for the lock.
        if self._mtcnn is None:
            with self._lock:
                if self._mtcnn is None:
                    from facenet_pytorch import MTCNN

                    self._mtcnn = MTCNN(keep_all=True, device=self.device, post_process=False)
        return self._mtcnn

    def detect(self, img: Image.Image) -> list[Face]:
        """Faces with probability >= min_prob, boxes in `img`'s coordinates, clipped to it."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        width, height = img.size
        small = _shrink(img, self.detect_side)
        scale_x = width / small.width
        scale_y = height / small.height

        boxes, probs = self._model().detect(small)
        if boxes is None:
            return []
        faces = []
        for box, prob in zip(boxes, probs, strict=True):
            if prob is None or float(prob) < self.min_prob:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            # MTCNN boxes may poke outside the image; clip so callers can trust them.
            mapped = (
                min(max(x0 * scale_x, 0.0), width),
                min(max(y0 * scale_y, 0.0), height),
                min(max(x1 * scale_x, 0.0), width),
                min(max(y1 * scale_y, 0.0), height),
            )
            face = Face(box=mapped, prob=float(prob))
            if face.area > 0:
                faces.append(face)
        return faces


def _shrink(img: Image.Image, longest: int) -> Image.Image:
    if max(img.size) <= longest:
        return img
    scale = longest / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # reducing_gap: a fast integer pre-reduction, then a proper filter; plenty for detection.
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


_shared: FaceDetector | None = None
_shared_lock = threading.Lock()


def shared_detector() -> FaceDetector:
    """One process-wide detector, so the UI and batch preparation load MTCNN only once."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = FaceDetector()
    return _shared
