"""Whether two crops the 8x8 hash calls alike are one picture or two shots of one scene.

The hash sees where light and dark lie. A small object against a plain wall, or a person
against the sky, leaves that layout to the backdrop, so different shots hash alike. Here
only structure counts: the gradients of a small grey copy of each crop, compared by their
cosine, so a plain backdrop (no gradient) weighs nothing and a change of brightness or
contrast changes nothing. A copy (re-saved, resized, re-compressed, slightly cropped) is the
same picture up to a small shift and zoom, so the comparison takes the best of a few zooms
and every shift up to MAX_SHIFT; a new shot moves, turns or resizes the subject against the
backdrop, which no such alignment undoes.

Tuned on made-up sets (tests/data/test_lookalikes.py): different shots (a clock moved on a
wall, a toy turned, moved or 1.3x closer, a person in another pose against the sky) measure
at most 0.84 (the toy closer), their copies (JPEG q90 and q40, halved, 15 % brighter, 20 %
less contrast, 3 % cropped off a corner) at least 0.96. On the real DreamBooth photos
different pictures measure at most 0.26, such copies (25 % brighter and 3 % cropped off
every side too) at least 0.97. SAME_PICTURE sits between 0.84 and 0.96, a little nearer the
copies, whose scores vary less.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from PIL import Image

# The crop's grey copy is SIDE x SIDE: fine enough that a subject 1.3x closer no longer
# lines up, small enough to store in the manifest (5.3 KB of text).
SIDE = 64
# A 3 % crop off one corner moves the centred square's content by 3.4 % (2.2 px here) and
# zooms it by 3 %. The price: a subject moved less than MAX_SHIFT (6 % of the crop) against
# a plain backdrop counts as a copy; one moved 10 % does not.
MAX_SHIFT = 4
ZOOMS = (0.94, 0.97, 1.0, 1.03, 1.06)
# Light smoothing: a copy resampled half a pixel off must still line up edge for edge.
SMOOTH_SIGMA = 0.7
SAME_PICTURE = 0.92
# Root-mean-square gradient (grey levels per pixel) below which a crop has no structure to
# compare (a blank wall): the hash alone decides for it.
FLAT = 0.5


def encode(pixels: np.ndarray) -> str:
    """A SIDE x SIDE uint8 grey thumbnail as manifest text."""
    return base64.b64encode(np.asarray(pixels, dtype=np.uint8).tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray | None:
    """The thumbnail back, or None if the text is not one (a damaged or edited manifest)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    if len(raw) != SIDE * SIDE:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(SIDE, SIDE)


class Structure:
    """What one crop is compared by, computed once per review from its stored thumbnail."""

    def __init__(self, pixels: np.ndarray) -> None:
        grey = np.asarray(pixels, dtype=np.float64)
        m = MAX_SHIFT
        core = _gradients(grey)[:, m:SIDE - m, m:SIDE - m]
        self.norm = float(np.sqrt((core ** 2).sum()))
        self.flat = self.norm / np.sqrt(core[0].size) < FLAT
        # Cross-correlation by FFT: every shift of every zoom in one product per pair.
        self.core_spectrum = np.conj(np.fft.rfft2(core, s=(SIDE, SIDE)))
        zoomed = np.stack([_gradients(_zoom(grey, z)) for z in ZOOMS])
        self.spectrum = np.fft.rfft2(zoomed)
        self.window_norms = _window_norms((zoomed ** 2).sum(axis=1), SIDE - 2 * m)


def similarity(a: Structure, b: Structure) -> float:
    """Cosine of the two crops' gradients at their best alignment, the worse of both ways
    round (a region may show in only one of them): 1.0 for the same picture."""
    return min(_aligned(a, b), _aligned(b, a))


def _aligned(fixed: Structure, moving: Structure) -> float:
    if fixed.norm == 0:
        return 0.0
    product = (fixed.core_spectrum[None] * moving.spectrum).sum(axis=1)
    lags = 2 * MAX_SHIFT + 1
    correlation = np.fft.irfft2(product, s=(SIDE, SIDE))[:, :lags, :lags]
    return float((correlation / (fixed.norm * moving.window_norms)).max())


def _gradients(grey: np.ndarray) -> np.ndarray:
    smooth = _smooth(grey)
    out = np.zeros((2, *grey.shape))
    out[0, :, 1:-1] = smooth[:, 2:] - smooth[:, :-2]
    out[1, 1:-1, :] = smooth[2:, :] - smooth[:-2, :]
    return out


def _smooth(grey: np.ndarray) -> np.ndarray:
    radius = int(np.ceil(2 * SMOOTH_SIGMA))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SMOOTH_SIGMA) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(grey, radius, mode="edge")
    n = grey.shape[0]
    rows = sum(w * padded[k:k + n, :] for k, w in enumerate(kernel))
    return sum(w * rows[:, k:k + n] for k, w in enumerate(kernel))


def _zoom(grey: np.ndarray, zoom: float) -> np.ndarray:
    """`grey` magnified `zoom` times about its centre; edge pixels repeat beyond the border,
    so zooming out adds no false edge."""
    pad = MAX_SHIFT
    image = Image.fromarray(np.pad(grey, pad, mode="edge").astype(np.float32))
    centre = (SIDE - 1) / 2
    offset = centre - centre / zoom + pad
    zoomed = image.transform((SIDE, SIDE), Image.Transform.AFFINE,
                             (1 / zoom, 0, offset, 0, 1 / zoom, offset),
                             resample=Image.Resampling.BILINEAR)
    return np.asarray(zoomed, dtype=np.float64)


def _window_norms(energy: np.ndarray, side: int) -> np.ndarray:
    """The gradient norm of every side x side window at each lag, per zoom."""
    lags = 2 * MAX_SHIFT + 1
    total = np.pad(energy.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))
    sums = (total[:, side:side + lags, side:side + lags] - total[:, :lags, side:side + lags]
            - total[:, side:side + lags, :lags] + total[:, :lags, :lags])
    return np.sqrt(np.maximum(sums, 1e-12))
