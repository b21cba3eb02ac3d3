"""Open a user's photo as a plain 8-bit RGB image, or say in words why it cannot be used.

Photos come from phones, scanners and editors, so every PIL mode has to land on RGB
without surprises: transparency must not turn black, 16-bit data must not clip to white,
and phone photos must stand the way the phone showed them (EXIF orientation). iPhone HEIC
photos open when pillow-heif is installed, and otherwise get a message saying how to fix it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# Suffixes offered in file pickers. Loading never filters by suffix: anything PIL opens is used.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".avif",
    ".heic",
    ".heif",
)

# Decompression-bomb guard. 80 MP is above any phone or DSLR photo yet well below what would
# exhaust memory once decoded (80 MP x 4 bytes = 320 MB). Tests lower it via monkeypatch.
MAX_PIXELS = 80_000_000

# Transparent areas become mid-grey: black or white backgrounds would teach the model a
# strong, wrong background colour, grey is the least informative choice.
BACKGROUND_GREY = (128, 128, 128)

HEIC_ADVICE = "HEIC photo: install pillow-heif (pip install pillow-heif) or convert it to JPEG"

# ISO base-media "ftyp" brands of HEIC/HEIF stills and sequences. AVIF shares the container
# (and the generic mif1/msf1 brands) but Pillow reads it itself.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm",
                          b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


log = logging.getLogger(__name__)


def _register_heif_opener() -> bool:
    """Let PIL open HEIC/HEIF when the optional pillow-heif package is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    try:
        register_heif_opener()
    except Exception as exc:  # noqa: BLE001 - a broken optional plugin must not stop the app
        log.warning("pillow-heif is installed but could not be registered: %s", exc)
        return False
    return True


HEIF_SUPPORT = _register_heif_opener()


def is_heif(head: bytes) -> bool:
    """Whether the first bytes of a file are a HEIC/HEIF 'ftyp' box (not AVIF).

    The box is: 4-byte size, b"ftyp", major brand, 4-byte version, compatible brands.
    """
    if len(head) < 12 or head[4:8] != b"ftyp":
        return False
    size = int.from_bytes(head[:4], "big")
    end = min(max(size, 16), len(head))
    brands = {head[8:12], *(head[i:i + 4] for i in range(16, end - 3, 4))}
    return not brands & _AVIF_BRANDS and bool(brands & _HEIF_BRANDS)


class ImageRejected(InputError):
    """A photo that cannot be used; `reason` is a short phrase shown next to the file name."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        where = f"Photo '{self.path.name}'" if self.path is not None else "Photo"
        super().__init__(
            f"{where} cannot be used: {reason}. "
            "Remove it, or replace it with a JPEG, PNG or WebP photo."
        )

    def __reduce__(self):
        # Default exception pickling would pass the full message back in as `reason`.
        return (type(self), (self.reason, self.path))


def open_rgb(path: str | Path) -> Image.Image:
    """Return the photo at `path` fully decoded as an RGB image, upright per its EXIF tag.

    Raises ImageRejected with a human-readable reason for anything unusable.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            _check_pixel_count(im.size, path)
            # Decode now, inside the try, so truncated data is reported here and not at
            # some later crop/resize far away from the file name.
            im.load()
            upright = _upright(im)
            return to_rgb(upright)
    except ImageRejected as exc:
        if exc.path is None:
            raise ImageRejected(exc.reason, path) from None
        raise
    except Image.DecompressionBombError as exc:
        reason = f"image too large for the decompression-bomb guard ({exc})"
        raise ImageRejected(reason, path) from None
    except UnidentifiedImageError:
        if _starts_like_heif(path):
            raise ImageRejected(HEIC_ADVICE, path) from None
        raise ImageRejected("not an image (PIL cannot identify the format)", path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports corrupt or cut-off data as any of these, depending on the codec.
        raise ImageRejected(f"unreadable or truncated image: {exc}", path) from None


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageRejected("file not found", path) from None
    except OSError as exc:
        raise ImageRejected(f"cannot read the file: {exc.strerror or exc}", path) from None
    if not path.is_file():
        raise ImageRejected("not a regular file", path)
    if size == 0:
        raise ImageRejected("empty file (0 bytes)", path)


def _starts_like_heif(path: Path) -> bool:
    # Sniffed from the content, like every other format: phones also save HEIC as .jpg.
    try:
        with open(path, "rb") as fh:
            return is_heif(fh.read(64))
    except OSError:
        return False


def _check_pixel_count(size: tuple[int, int], path: Path) -> None:
    # Our own check rather than Image.MAX_IMAGE_PIXELS: that is a process-wide setting, and
    # PIL only warns (not raises) between 1x and 2x of it. Respect it when someone lowered it.
    limit = MAX_PIXELS
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    width, height = size
    if width * height > limit:
        raise ImageRejected(
            f"image too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, "
            f"limit is {limit / 1e6:g} megapixels (decompression-bomb guard); "
            "downscale it first",
            path,
        )


def _upright(im: Image.Image) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not cost the user a photo
        return im.copy()
    return upright if upright is not None else im.copy()


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert an image of any PIL mode to 8-bit RGB (a new image, the input is untouched)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _grey_array_to_rgb(_scale_integer(np.asarray(im)))
    if mode == "F":
        return _grey_array_to_rgb(_scale_float(np.asarray(im, dtype=np.float64)))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten_alpha(im)
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageRejected(f"unsupported colour mode {mode!r} ({exc})") from None


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND_GREY, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_integer(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    if values.size and values.min() >= 0 and values.max() <= 65535:
        # 16-bit data: 65535 / 257 = 255 exactly, so the full range maps onto 8 bits.
        return values / 257.0
    return _stretch(values)


def _scale_float(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values, 0.0)
    if values.size == 0:
        return values
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1.0:
        return values * 255.0  # the usual 0..1 float convention
    if low >= 0 and high <= 255.0:
        return values
    return _stretch(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    # Unknown range: map min..max onto 0..255 so the picture stays visible.
    low, high = float(values.min()), float(values.max())
    if not math.isfinite(high - low) or high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
