"""Where the square crop of a photo goes, and cutting it out.

Boxes are (x0, y0, x1, y1) in the upright photo's pixels (EXIF rotation applied). Squares
are moved inside the photo rather than clipped, so a crop always stays square.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..core.files import atomic_path

Box = tuple[int, int, int, int]


def crop_box_for_face(face_box: Sequence[float], image_size: tuple[int, int], margin: float) -> Box:
    """Integer square (x0, y0, x1, y1) centred on the face, side = margin x larger face side.

    The square is moved inside the image rather than clipped, so the crop stays square and
    the face stays as central as the borders allow; if the image is too small for the wanted
    side, the side shrinks to the image's shorter side.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    width, height = image_size
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box must have positive width and height, got {face_box}")
    side = round(margin * max(x1 - x0, y1 - y0))
    side = max(1, min(side, width, height))
    left = round((x0 + x1) / 2 - side / 2)
    top = round((y0 + y1) / 2 - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return (left, top, left + side, top + side)


def fit_square(x: float, y: float, side: float, image_size: tuple[int, int]) -> Box:
    """The square with top-left (x, y) and `side`, made to fit the image: the side shrinks
    to the shorter image side at most, then the square moves inside (never clipped, so the
    crop stays square). Used for crops set by hand."""
    width, height = image_size
    side = max(1, min(round(side), width, height))
    left = min(max(round(x), 0), width - side)
    top = min(max(round(y), 0), height - side)
    return (left, top, left + side, top + side)


def centre_crop_box(image_size: tuple[int, int]) -> Box:
    """The largest square centred in an image of `image_size` (width, height)."""
    width, height = image_size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def save_crop(img: Image.Image, box: Sequence[int], size: int, output: Path) -> None:
    """Cut `box` out of `img`, scale it to size x size and write it as PNG atomically, so a
    failed re-crop leaves the previous crop in place."""
    crop = img.resize((size, size), Image.Resampling.LANCZOS, box=tuple(box), reducing_gap=3.0)
    with atomic_path(output) as tmp:
        crop.save(tmp, format="PNG")
