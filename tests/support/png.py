"""Reading back what other tools read from our PNGs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from dreamstudio.generate.png_metadata import A1111_KEY


def read_a1111_parameters(path: Path) -> str | None:
    """The A1111 'parameters' text chunk of a PNG, as A1111 and image sites read it."""
    with Image.open(path) as image:
        return image.info.get(A1111_KEY)
