"""Measurements behind the Data tab's warnings: perceptual hashes, sharpness, crop size.

A warning never drops a photo: the person sees it next to the photo and decides whether to
exclude it. Every check runs on the crop (what training sees), not the whole photo, so a
portrait with a blurred background is not called blurry and two crops of one burst are
recognised as near-duplicates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from . import lookalike
from .manifest import PhotoResult, PrepareReport

# Sharpness is measured on a grey copy of the crop at this side, so the figure does not
# depend on the photo's resolution or on the training size.
SHARPNESS_SIDE = 256

# Variance of the Laplacian below which a crop is called blurry. Tuned on the ten real
# DreamBooth photos (dog, rc_car) and the astronaut portrait: sharp centre crops measure
# 102-929 (the lowest are the dog photos: soft fur, shallow depth of field); copies blurred
# with a Gaussian of sigma 1.5 px at 256 px (3 px on a 512 px crop: visibly out of focus)
# measure 7-37, sigma 2 px 5-17. 60 sits between them, near their geometric mean.
BLUR_THRESHOLD = 60.0

# dHash: 8x8 = 64 bits. On the same photos, distinct pictures differ in 20-44 bits (20 for
# two shots of the dog on one sofa); a copy re-saved as JPEG q40, halved, 15 % brighter,
# 20 % less contrast or cropped 3 % off one corner differs in at most 9. Shots of a small
# subject against a plain backdrop differ in as few bits as copies, so a pair the hash calls
# alike is a near-duplicate only if its structure is alike too (lookalike.py).
HASH_SIDE = 8
NEAR_DUPLICATE_BITS = 12

MIN_PHOTOS = 3
MAX_PHOTOS = 30


def _grey_region(img: Image.Image, box: Sequence[int] | None, size: tuple[int, int]) -> np.ndarray:
    box = tuple(box) if box is not None else (0, 0, img.width, img.height)
    # Shrink first, then go grey: converting a 24 MP photo to grey costs more than the rest.
    # reducing_gap: a fast integer pre-reduction before the filter; exact enough here.
    small = img.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    return np.asarray(small.convert("L"), dtype=np.float64)


def dhash(img: Image.Image, box: Sequence[int] | None = None) -> str:
    """The 64-bit difference hash of `img` (or of its `box` region) as 16 hex digits.

    Each bit says whether a pixel of a 9x8 grey thumbnail is brighter than its right
    neighbour: robust to re-encoding, resizing and brightness changes, not to new content.
    """
    pixels = _grey_region(img, box, (HASH_SIDE + 1, HASH_SIDE))
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:0{HASH_SIDE * HASH_SIDE // 4}x}"


def thumbnail(img: Image.Image, box: Sequence[int] | None = None) -> str:
    """The grey copy of the region that the near-duplicate check compares, as text."""
    pixels = _grey_region(img, box, (lookalike.SIDE, lookalike.SIDE))
    return lookalike.encode(pixels)


def hamming(a: str, b: str) -> int:
    """How many bits two hex hashes differ in."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def sharpness(img: Image.Image, box: Sequence[int] | None = None) -> float:
    """Variance of the Laplacian of a grey SHARPNESS_SIDE copy of the region: low = blurry."""
    pixels = _grey_region(img, box, (SHARPNESS_SIDE, SHARPNESS_SIDE))
    laplacian = (pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
                 - 4 * pixels[1:-1, 1:-1])
    return float(laplacian.var())


class _Lookalikes:
    """Whether two photos are nearly the same picture: the hash says alike and, where both
    have a thumbnail with structure in it, so do their gradients. A manifest written before
    thumbnails were stored has only the hash to go by."""

    def __init__(self) -> None:
        self.structures: dict[str, lookalike.Structure | None] = {}
        self.verdicts: dict[frozenset[int], bool] = {}

    def __call__(self, a: PhotoResult, b: PhotoResult) -> bool:
        if not (a.dhash and b.dhash and hamming(a.dhash, b.dhash) <= NEAR_DUPLICATE_BITS):
            return False
        key = frozenset((id(a), id(b)))  # each pair is asked both ways round
        if key not in self.verdicts:
            self.verdicts[key] = self._alike(a, b)
        return self.verdicts[key]

    def _alike(self, a: PhotoResult, b: PhotoResult) -> bool:
        first, second = self._structure(a), self._structure(b)
        if first is None or second is None or (first.flat and second.flat):
            return True
        return lookalike.similarity(first, second) >= lookalike.SAME_PICTURE

    def _structure(self, result: PhotoResult) -> lookalike.Structure | None:
        text = result.thumbnail
        if not text:
            return None
        if text not in self.structures:
            pixels = lookalike.decode(text)
            self.structures[text] = None if pixels is None else lookalike.Structure(pixels)
        return self.structures[text]


def review_warnings(report: PrepareReport) -> None:
    """(Re)write every result's `warnings` and the report's overall `warnings` in place.

    Only kept photos that are not excluded count: excluding one of two near-duplicates
    clears the warning on the other.
    """
    size = report.config.size
    excluded = set(report.excluded)
    used = [r for r in report.kept if r.output not in excluded]
    for result in report.results:
        result.warnings = []
    for result in report.kept:
        if result.sharpness is not None and result.sharpness < BLUR_THRESHOLD:
            result.warnings.append(
                f"looks blurry (sharpness {result.sharpness:.0f}, below {BLUR_THRESHOLD:.0f}): "
                "a sharp photo teaches more detail"
            )
        if result.crop_box is not None:
            side = result.crop_box[2] - result.crop_box[0]
            if side < size / 2:
                enlarged = math.ceil(10 * size / max(side, 1)) / 10  # 2.01 shows as 2.1
                result.warnings.append(
                    f"small: the crop is {side} px and would be enlarged {enlarged:.1f}x "
                    f"to {size} px, so it looks soft; use a closer photo"
                )
    alike = _Lookalikes()
    for a in used:
        twins = [b.source for b in used if b is not a and alike(a, b)]
        if twins:
            names = ", ".join(twins[:-1]) + (" and " if len(twins) > 1 else "") + twins[-1]
            a.warnings.append(f"nearly the same picture as {names}: keep one of them")

    overall = []
    count = len(used)
    if report.faceless:
        # "Add more photos" would send the person off for more photos that fail alike.
        overall.append(
            "No face was found in any photo: face mode is for people. For a pet or an "
            "object, prepare the photos in object mode (a centre square) instead."
        )
    elif count < MIN_PHOTOS:
        overall.append(
            f"Only {count} photo{'s' if count != 1 else ''} will be used: DreamBooth needs at "
            f"least {MIN_PHOTOS}. Add more photos (5-20 work best)."
        )
    elif count > MAX_PHOTOS:
        overall.append(
            f"{count} photos will be used: more than {MAX_PHOTOS} slows training without "
            "helping much. Exclude the weakest ones."
        )
    flagged = sum(1 for r in used if r.warnings)
    if flagged:
        overall.append(
            f"{flagged} photo{'s have' if flagged != 1 else ' has'} warnings: check "
            "them below and exclude the ones you do not want."
        )
    report.warnings = overall
