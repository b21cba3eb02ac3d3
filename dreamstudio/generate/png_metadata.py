"""Generation parameters stored inside PNG files, readable by people and other tools.

Two text chunks: "dreamstudio" (JSON, every setting, read back by the app's history) and
"parameters" (the AUTOMATIC1111 infotext that A1111's PNG Info, ComfyUI and image sites
such as Civitai parse).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..core.families import FAMILY_NAMES, SD1
from ..core.files import atomic_path, unused_path

PARAMS_KEY = "dreamstudio"
A1111_KEY = "parameters"


def _quote(value) -> str:
    """A1111's quoting: a value with a comma, colon or newline goes in JSON quotes, so the
    'Key: value, Key: value' line still splits where it should."""
    text = str(value)
    if not any(c in text for c in ",:\n\""):
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_name(model: str | None) -> str | None:
    """'…/v1-5-pruned-emaonly.safetensors' -> 'v1-5-pruned-emaonly' (A1111 writes names)."""
    if not model:
        return None
    name = Path(str(model).rstrip("/\\")).name
    for suffix in (".safetensors", ".ckpt"):
        name = name.removesuffix(suffix)
    return name or str(model)


def lora_tag(name: str, unet_scale: float, te_scale: float) -> str:
    """A1111's prompt syntax for a LoRA with separate text-encoder and UNet strengths."""
    if unet_scale == te_scale:
        return f"<lora:{name}:{_number(unet_scale)}>"
    return f"<lora:{name}:te={_number(te_scale)}:unet={_number(unet_scale)}>"


def a1111_parameters(params: dict) -> str:
    """The 'parameters' text AUTOMATIC1111 and image sites read.

    The prompt line carries the LoRA as A1111 would (<lora:name:...>), so "Send to txt2img"
    in A1111 reproduces the image with the exported kohya file; the explicit LoRA fields
    say the same for people.
    """
    prompt = params.get("prompt", "")
    lora = None
    if params.get("lora_dir"):
        lora = params.get("lora_name") or Path(params["lora_dir"]).name
        tag = lora_tag(lora, params.get("unet_scale", 1.0), params.get("text_encoder_scale", 1.0))
        prompt = f"{prompt} {tag}"
    lines = [prompt]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [
        ("Steps", params.get("steps")),
        ("Sampler", params.get("sampler_name") or params.get("sampler")),
        ("CFG scale", params.get("guidance")),
        ("Seed", params.get("seed")),
        ("Size", f"{params.get('width')}x{params.get('height')}"),
        ("Model", model_name(params.get("model"))),
        # Not an A1111 field (it knows the family from the checkpoint): for people and sites,
        # and only where it is not SD 1.x, whose infotext stays as A1111 writes it.
        ("Model family", None if params.get("model_family") == SD1
         else FAMILY_NAMES.get(params.get("model_family"))),
        ("Precision", params.get("precision")),
    ]
    if lora:
        fields += [
            ("LoRA", lora),
            ("LoRA UNet scale", params.get("unet_scale")),
            ("LoRA text encoder scale", params.get("text_encoder_scale")),
        ]
    grid = params.get("grid") or {}
    if grid:
        fields.append(("Script", "X/Y plot"))
        for key in ("x", "y"):
            axis = grid.get(key)
            if axis:
                fields += [(f"{key.upper()} Type", axis.get("label")),
                           (f"{key.upper()} Values", ", ".join(_number(v)
                                                              for v in axis.get("values", [])))]
    fields.append(("Generator", "DreamStudio"))
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def save_png_with_parameters(image: Image.Image, output_dir: Path, params: dict,
                             stem: str | None = None) -> Path:
    """Save `image` as a new PNG in `output_dir` with `params` in its text chunks."""
    output_dir.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(PARAMS_KEY, json.dumps(params, sort_keys=True, default=str))
    # Like A1111: tEXt, and iTXt (UTF-8) only where the prompt is not Latin-1.
    info.add_text(A1111_KEY, a1111_parameters(params))
    stem = stem or f"{time.strftime('%Y%m%d-%H%M%S')}_seed{params.get('seed', 0)}"
    path = unused_path(output_dir, stem, ".png")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def _text_chunks(path: Path) -> dict:
    with Image.open(path) as image:
        return {**(getattr(image, "text", {}) or {}), **{
            k: v for k, v in image.info.items() if isinstance(v, str)}}


def read_parameters(path: Path) -> dict:
    """The parameters DreamStudio stored in a PNG ({} if there are none)."""
    raw = _text_chunks(path).get(PARAMS_KEY)
    return json.loads(raw) if raw else {}
