"""PNGs with DreamStudio's parameters, as generation writes them, for the history tests."""

from __future__ import annotations

import os

from PIL import Image

from dreamstudio.generate.png_metadata import save_png_with_parameters

PARAMS = {"prompt": "a photo of sks dog", "negative_prompt": "blurry", "unet_scale": 0.7,
          "text_encoder_scale": 0.3, "guidance": 5.0, "steps": 25, "seed": 11, "width": 64,
          "height": 96, "sampler": "Euler a", "sampler_name": "Euler a",
          "lora_dir": "/ws/subjects/dog/loras/run1", "model": "/m/tiny", "num_images": 1}


def save_generated(folder, mtime, **changes):
    """An 8x8 PNG in `folder` with PARAMS (updated by `changes`), last modified at `mtime`."""
    path = save_png_with_parameters(Image.new("RGB", (8, 8)), folder, {**PARAMS, **changes})
    os.utime(path, (mtime, mtime))
    return path
