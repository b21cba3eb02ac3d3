"""Which Stable Diffusion a single-file checkpoint is, and the shipped configs that describe it.

A checkpoint from a model site holds weights only; diffusers would fetch the architecture's
configs from the Hub. The configs of the families we support ship in model_configs/, and the
family is read from the tensors' shapes (the file's header: no weights are read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ModelLoadError
from .clip_vocab import clip_tokenizer

CONFIGS = Path(__file__).parent / "model_configs"
ARCHITECTURES = {
    "sd1": "SD 1.x (512 px, epsilon)",
    "sd2-v": "SD 2.x 768 px (v-prediction)",
    "sd2-base": "SD 2.x 512 px base (epsilon)",
    "sdxl": "SDXL base 1.0 (1024 px, epsilon)",
}
# The UNet's cross-attention width is the text encoder's: 768 for CLIP ViT-L (SD 1.x),
# 1024 for OpenCLIP ViT-H (SD 2.x).
_CROSS_ATTENTION = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
_GENERATION = {768: "sd1", 1024: "sd2"}
# SDXL's conditioner holds its two text encoders (0: CLIP ViT-L, 1: OpenCLIP ViT-bigG); the
# refiner has only the second, as embedder 0. Its UNet's first level has no attention, and
# cross-attention reads both encoders' outputs side by side: 768 + 1280 = 2048 wide.
_SDXL_EMBEDDERS = "conditioner.embedders."
_SDXL_SECOND_ENCODER = "conditioner.embedders.1."
_SDXL_CROSS_ATTENTION = (
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
_SDXL_WIDTH = 2048
_V_PARAMETERIZATION = re.compile(r"^\s*parameterization:\s*[\"']?v[\"']?\s*$", re.MULTILINE)


def uses_shipped_config(config: str | None) -> bool:
    """Whether a checkpoint given with `config` (--model-config) loads from the shipped
    configs: none given, or one of ARCHITECTURES (an existing folder of that name wins)."""
    return config is None or (config in ARCHITECTURES and not Path(config).is_dir())


def config_folder(architecture: str) -> Path:
    return CONFIGS / architecture


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape; for .safetensors from the header alone."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                names = fh.keys()
                return {k: tuple(fh.get_slice(k).get_shape()) for k in names}
        import torch

        data = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        data = data.get("state_dict", data) if isinstance(data, dict) else {}
        return {k: tuple(v.shape) for k, v in data.items() if hasattr(v, "shape")}
    except Exception as exc:  # any parse failure means the same to the user
        raise ModelLoadError(
            f"Checkpoint {path} could not be read ({type(exc).__name__}): it may be truncated "
            "or corrupt; download it again."
        ) from exc


def _sd2_variant(path: Path) -> str:
    # Velocity or noise prediction cannot be read from the weights. A1111's convention, a
    # .yaml beside the checkpoint, says it when present; else SD 2.x's 768 px models (the
    # family's main release, and diffusers' own default) predict velocity, and a file
    # named for 512 px or "base" is the epsilon base model.
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8", errors="replace")
        return "sd2-v" if _V_PARAMETERIZATION.search(text) else "sd2-base"
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    return "sd2-base" if words & {"512", "base"} else "sd2-v"


def _in_channels(path: Path, shapes: dict[str, tuple[int, ...]], wanted: str) -> None:
    in_channels = shapes.get(_CONV_IN, (0, 4))[1]
    if in_channels != 4:
        raise ModelLoadError(
            f"Checkpoint {path} has a {in_channels}-channel UNet input (an inpainting or "
            f"image-conditioned model); pass a text-to-image {wanted} base model."
        )


def _sdxl(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    if not any(k.startswith(_SDXL_SECOND_ENCODER) for k in shapes):
        raise ModelLoadError(
            f"Checkpoint {path} is an SDXL refiner (one text encoder, for image-to-image "
            "touch-ups), not a base model; pass SDXL base 1.0 or a model built on it."
        )
    _in_channels(path, shapes, "SDXL")
    width = shapes.get(_SDXL_CROSS_ATTENTION, (0, _SDXL_WIDTH))[-1]
    if width != _SDXL_WIDTH:
        raise ModelLoadError(
            f"Checkpoint {path} has SDXL's text encoders but a {width}-wide text "
            f"conditioning, not SDXL's {_SDXL_WIDTH}. Pass --model-config with a diffusers "
            "folder of its architecture."
        )
    return "sdxl"


def _generation(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    if any(k.startswith(_SDXL_EMBEDDERS) for k in shapes):
        return _sdxl(path, shapes)
    if _CROSS_ATTENTION not in shapes:
        what = ("a LoRA, not a base model" if any("lora" in k.lower() for k in shapes)
                else "not a Stable Diffusion 1.x, 2.x or SDXL checkpoint (no UNet "
                     "cross-attention)")
        raise ModelLoadError(
            f"Checkpoint {path} is {what}. Pass an SD 1.x, 2.x or SDXL base model.")
    _in_channels(path, shapes, "SD 1.x, 2.x or SDXL")
    width = shapes[_CROSS_ATTENTION][-1]
    if width not in _GENERATION:
        raise ModelLoadError(
            f"Checkpoint {path} has a {width}-wide text conditioning, neither SD 1.x (768) nor "
            "SD 2.x (1024). Pass --model-config with a diffusers folder of its architecture."
        )
    return _GENERATION[width]


GENERATION_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def detect_architecture(path: Path, choice: str | None = None) -> str:
    """The shipped architecture for the checkpoint at `path`: `choice` (one of ARCHITECTURES)
    if given and of the checkpoint's generation, else the one its tensors and name say."""
    generation = _generation(path, checkpoint_shapes(path))
    if choice is None:
        return generation if generation in ("sd1", "sdxl") else _sd2_variant(path)
    if not choice.startswith(generation):
        raise ModelLoadError(
            f"Checkpoint {path} is {GENERATION_NAMES[generation]}, but --model-config "
            f"{choice} describes {ARCHITECTURES[choice]}. Leave --model-config out to pick "
            "the architecture from the checkpoint."
        )
    return choice


def _shipped_folder(architecture: str) -> Path:
    folder = config_folder(architecture)
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"The shipped configs of {ARCHITECTURES[architecture]} are missing from "
            f"{folder} (a damaged install): reinstall DreamStudio, or pass --model-config "
            "with a diffusers folder of the model's architecture."
        )
    return folder


def shipped_tokenizer(architecture: str, subfolder: str = "tokenizer"):
    """A shipped architecture's tokenizer (`subfolder` tokenizer_2: SDXL's second)."""
    settings = json.loads(
        (_shipped_folder(architecture) / subfolder / "tokenizer_config.json").read_text()
    )
    return clip_tokenizer(settings)


def tokenizer_folders(architecture: str) -> tuple[str, ...]:
    """The tokenizer subfolders of a shipped architecture: SDXL has one per text encoder."""
    return ("tokenizer", "tokenizer_2") if architecture == "sdxl" else ("tokenizer",)


def checkpoint_tokenizers(path: Path, choice: str | None = None) -> list:
    """Every tokenizer of the checkpoint at `path` (two for SDXL), from the shipped configs."""
    architecture = detect_architecture(path, choice)
    return [shipped_tokenizer(architecture, sub) for sub in tokenizer_folders(architecture)]


def single_file_sources(path: Path, config: str | None) -> tuple[str, dict]:
    """What from_single_file needs besides the file: the config folder (or Hub id) and the
    components to pass ready-made. `config` is a user's folder or Hub id, taken as it is,
    one of ARCHITECTURES, or None to pick from the checkpoint."""
    if not uses_shipped_config(config):
        return config, {}
    architecture = detect_architecture(path, config)
    # The shipped folders hold no vocabulary files: the tokenizers are built from the
    # shipped CLIP vocabulary instead of being written out.
    tokenizers = {sub: shipped_tokenizer(architecture, sub)
                  for sub in tokenizer_folders(architecture)}
    return str(_shipped_folder(architecture)), tokenizers
