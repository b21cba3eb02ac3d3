"""Open a user's photo as a plain 8-bit RGB image, or say in words why it cannot be used.

Photos come from phones, scanners and editors, so every PIL mode has to land on RGB
without surprises: transparency must not turn black, 16-bit data must not clip to white,
and phone photos must stand the way the phone showed them (EXIF orientation). iPhone HEIC
photos open when pillow-heif is installed, and otherwise get a message saying how to fix it.
"""

from __future__ import annotations

import errno
import logging
import math
import stat
from collections.abc import Callable, Iterator
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

LINK_LOOP = "a link that loops back on itself"

# Wide grey images (16-bit, 32-bit, float) are brought to 8 bits this many pixels at a
# time: converting all at once in float64 took 24 bytes a pixel (2.7 GB for one PNG).
CONVERT_CHUNK_PIXELS = 1 << 16

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


def open_rgb(path: str | Path, folder: str | Path | None = None) -> Image.Image:
    """Return the photo at `path` fully decoded as an RGB image, upright per its EXIF tag.

    With `folder`, a link that leads out of it is refused before anything is read: a photo
    folder must not become a way to read other files. Raises ImageRejected with a
    human-readable reason for anything unusable.
    """
    path = Path(path)
    if folder is not None:
        _check_link(path, Path(folder))
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


def _check_link(path: Path, folder: Path) -> None:
    if not path.is_symlink():
        return
    try:
        target = path.resolve()
        inside = target.is_relative_to(folder.resolve())
    except RuntimeError:  # Python < 3.13 reports a loop so; later ones as OSError
        raise ImageRejected(LINK_LOOP, path) from None
    except OSError as exc:
        raise ImageRejected(LINK_LOOP if exc.errno == errno.ELOOP
                            else f"cannot follow the link: {exc.strerror or exc}", path) from None
    if not inside:
        raise ImageRejected(
            "a link to a file outside the photo folder, not followed: copy the photo itself "
            "into the folder", path)


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        reason = ("broken link: the file it points to does not exist" if path.is_symlink()
                  else "file not found")
        raise ImageRejected(reason, path) from None
    except OSError as exc:
        reason = (LINK_LOOP if exc.errno == errno.ELOOP
                  else f"cannot read the file: {exc.strerror or exc}")
        raise ImageRejected(reason, path) from None
    # Decided from stat alone: opening a named pipe would wait forever for a writer.
    if stat.S_ISDIR(info.st_mode):
        raise ImageRejected("a folder, not a photo file", path)
    if stat.S_ISFIFO(info.st_mode):
        raise ImageRejected("a named pipe, not a photo file", path)
    if not stat.S_ISREG(info.st_mode):
        raise ImageRejected("not a regular file (a device or socket)", path)
    if info.st_size == 0:
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
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _wide_grey_to_rgb(im)
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


def _slices(im: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(top row, finite float64 values) of successive bands of rows of a one-band image."""
    rows = max(1, CONVERT_CHUNK_PIXELS // max(im.width, 1))
    for top in range(0, im.height, rows):
        band = np.asarray(im.crop((0, top, im.width, min(top + rows, im.height))),
                          dtype=np.float64)
        yield top, np.where(np.isfinite(band), band, 0.0)


def _wide_grey_to_rgb(im: Image.Image) -> Image.Image:
    low, high = math.inf, -math.inf
    for _, values in _slices(im):
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    scale = _scaling(im.mode, low, high)
    grey = np.empty((im.height, im.width), dtype=np.uint8)
    for top, values in _slices(im):
        grey[top:top + len(values)] = np.clip(np.rint(scale(values)), 0, 255)
    return Image.fromarray(grey).convert("RGB")


def _scaling(mode: str, low: float, high: float) -> Callable[[np.ndarray], np.ndarray]:
    """How values between `low` and `high` of a wide grey `mode` map onto 0..255."""
    if mode == "F":
        if low >= 0 and high <= 1.0:
            return lambda v: v * 255.0  # the usual 0..1 float convention
        if low >= 0 and high <= 255.0:
            return lambda v: v
    elif low >= 0 and high <= 65535:
        # 16-bit data: 65535 / 257 = 255 exactly, so the full range maps onto 8 bits.
        return lambda v: v / 257.0
    # Unknown range: map low..high onto 0..255 so the picture stays visible.
    if not math.isfinite(high - low) or high <= low:
        return np.zeros_like
    return lambda v: (v - low) * (255.0 / (high - low))
