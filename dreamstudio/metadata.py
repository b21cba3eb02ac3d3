"""Generation parameters stored inside PNG files, readable by people and other tools."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMS_KEY = "dreamstudio"


def a1111_parameters(params: dict) -> str:
    """The 'parameters' text AUTOMATIC1111 and image sites read."""
    lines = [params.get("prompt", "")]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [
        ("Steps", params.get("steps")),
        ("Sampler", params.get("sampler")),
        ("CFG scale", params.get("guidance")),
        ("Seed", params.get("seed")),
        ("Size", f"{params.get('width')}x{params.get('height')}"),
        ("Model", params.get("model")),
    ]
    if params.get("lora_dir"):
        fields += [
            ("LoRA", Path(params["lora_dir"]).name),
            ("LoRA UNet scale", params.get("unet_scale")),
            ("LoRA text encoder scale", params.get("text_encoder_scale")),
        ]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def save_png_with_parameters(image: Image.Image, output_dir: Path, params: dict) -> Path:
    """Save `image` as a new PNG in `output_dir` with `params` in its text chunks."""
    output_dir.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(PARAMS_KEY, json.dumps(params, sort_keys=True, default=str))
    info.add_text("parameters", a1111_parameters(params))
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}_seed{params.get('seed', 0)}"
    fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".img-", suffix=".png")
    os.close(fd)
    image.save(tmp, pnginfo=info)
    path = output_dir / f"{stem}.png"
    n = 1
    while path.exists():
        path = output_dir / f"{stem}_{n}.png"
        n += 1
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    return path


def read_parameters(path: Path) -> dict:
    """The parameters DreamStudio stored in a PNG ({} if there are none)."""
    with Image.open(path) as image:
        raw = image.info.get(PARAMS_KEY) or (getattr(image, "text", {}) or {}).get(PARAMS_KEY)
    return json.loads(raw) if raw else {}
