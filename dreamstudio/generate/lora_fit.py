"""Why a LoRA did not load onto a pipeline, in one sentence a person can act on.

diffusers' own answer is a log record plus an exception listing every layer (a hundred
lines for a LoRA of another architecture, a bare "Unable to load weights" for a damaged
file). This module reads the file's header and the pipeline's layers and names the first
difference instead. A LoRA of the other side of the SDXL / SD 1.x-2.x divide is caught before
loading (`family_mismatch`), from its record or its keys: diffusers may load some of its
layers without an error where names happen to match.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.families import FAMILY_NAMES, SD1, SD2, SDXL, is_sdxl
from ..lora.files import read_lora_info

# The key endings of a LoRA's two matrices in the diffusers layouts (attention-processor,
# text-encoder monkey-patch and peft): "down" maps the layer's inputs, "up" its outputs;
# a DoRA's magnitude vector has one value per output.
_MATRIX = re.compile(
    r"\.(?:lora|lora_linear_layer)\.(down|up)\.weight$|\.lora_(A|B)(?:\.[^.]+)?\.weight$"
    r"|\.lora_magnitude_vector(?:\.weight)?$"
)
_COMPONENTS = {"unet": "UNet", "text_encoder": "text encoder",
               "text_encoder_2": "second text encoder"}
# Keys that tell the family without a record: only SDXL has a second text encoder, and only
# SD 1.x / 2.x have attention in the UNet's first down block (SDXL's first has none); the
# width of that attention's cross-attention input tells SD 2.x (1024) from SD 1.x.
_SDXL_KEY = re.compile(r"^text_encoder_2\.")
_SD_CROSS_ATTENTION = re.compile(r"^unet\.down_blocks\.0\.attentions\..*\.attn2\.to_k\.")
SD2_CONTEXT_WIDTH = 1024


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Hold back diffusers' log during a LoRA load: on failure it logs the whole exception
    before raising it, and the error the caller makes from it says the same, once."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def lora_family(weights: Path) -> str | None:
    """The family the LoRA file `weights` was trained for: its record's "family" (written
    since SDXL came), else what its keys show; None when neither tells (or it is damaged)."""
    family = read_lora_info(weights.parent).get("family")
    if family in FAMILY_NAMES:
        return family
    shapes = _read_shapes(weights)
    if isinstance(shapes, str):
        return None  # the load fails, and describe_load_failure says why
    if any(_SDXL_KEY.match(key) for key in shapes):
        return SDXL
    widths = [shape[1] for key, shape in shapes.items()
              if _SD_CROSS_ATTENTION.match(key) and _is_down(key) and len(shape) > 1]
    if widths:
        return SD2 if widths[0] == SD2_CONTEXT_WIDTH else SD1
    return None


def family_mismatch(weights: Path, model: str, model_family: str) -> str | None:
    """Why the LoRA file `weights` cannot go on the base model `model` of `model_family`,
    when one is SDXL and the other is not; None when they fit or the LoRA does not say."""
    trained_for = lora_family(weights)
    if trained_for is None or is_sdxl(trained_for) == is_sdxl(model_family):
        return None
    lora_name, model_name = FAMILY_NAMES[trained_for], FAMILY_NAMES[model_family]
    trained_on = (read_lora_info(weights.parent).get("config") or {}).get("model")
    base = f"the base model it was trained on ({trained_on})" if trained_on else \
        f"an {lora_name} base model"
    return (f"The LoRA in {weights.parent} was trained for {lora_name}; the base model "
            f"{model} is {model_name}: pick a LoRA trained on an {model_name} model, or "
            f"load {base}.")


def describe_load_failure(pipe, weights: Path, model: str, exc: Exception) -> str:
    """The message for `exc`, raised while loading the LoRA file `weights` onto `pipe`
    (the base model `model`), with the pipeline back in its state before the load."""
    shapes = _read_shapes(weights)
    if isinstance(shapes, str):
        return (f"The LoRA file {weights} is damaged or not a LoRA ({shapes}). Train it "
                "again, or copy it again if it came from elsewhere.")
    trained_on = (read_lora_info(weights.parent).get("config") or {}).get("model")
    notes = [f"it was trained on {trained_on}"] if trained_on and trained_on != model else []
    remedy = ("Pick a LoRA trained on this base model, or load the base model it was "
              "trained on.")
    differences, missing = _compare(pipe, shapes)
    if differences:
        component, layer, side, lora_size, model_size = differences[0]
        count = len({(c, name) for c, name, *_ in differences})
        notes.insert(0, f"{count} layer{'s' if count > 1 else ''} differ")
        return (f"The LoRA in {weights.parent} was trained for another model: one whose "
                f"{component} layer {layer} has {lora_size} {side}, where in the base model "
                f"{model} it has {model_size} ({'; '.join(notes)}). {remedy}")
    if missing:
        component, layer = missing[0]
        count = len(set(missing))
        notes.insert(0, f"{count} such layer{'s' if count > 1 else ''}")
        return (f"The LoRA in {weights.parent} was trained for another model: one whose "
                f"{component} has a layer {layer}, which the base model {model} lacks "
                f"({'; '.join(notes)}). {remedy}")
    reason = " ".join(str(exc).split())
    if len(reason) > 200:
        reason = reason[:200] + "..."
    return f"Could not load the LoRA in {weights.parent} onto {model}: {reason}"


def _read_shapes(weights: Path) -> dict[str, list[int]] | str:
    """The LoRA matrices' shapes by key, from the file's header; or why it is unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            names = f.keys()  # a safe_open handle is not iterable itself
            shapes = {key: f.get_slice(key).get_shape() for key in names}
    except (SafetensorError, OSError, ValueError) as exc:
        return f"it cannot be read as safetensors: {' '.join(str(exc).split())}"
    lora = {k: v for k, v in shapes.items() if _MATRIX.search(k)}
    if not lora:
        return f"none of its {len(shapes)} tensors is a LoRA matrix"
    return lora


def _compare(pipe, shapes: dict[str, list[int]]):
    """(component, layer, 'inputs'|'outputs', LoRA's size, model's size) for each layer
    whose size differs, and (component, layer) for each the model does not have."""
    differences, missing = [], []
    order = list(_COMPONENTS)  # UNet first: every LoRA has one, not every one a text encoder
    for key, shape in sorted(shapes.items(), key=lambda kv: (_rank(kv[0], order), kv[0])):
        match = _MATRIX.search(key)
        prefix, _, layer = key[: match.start()].partition(".")
        model = getattr(pipe, prefix, None)
        if prefix not in _COMPONENTS or model is None:
            continue
        module = _find(model, layer)
        component = _COMPONENTS[prefix]
        if module is None:
            missing.append((component, layer))
            continue
        weight = getattr(module, "base_layer", module).weight
        down = _is_down(key)
        axis = 1 if down else 0  # down: (rank, inputs, ...); up: (outputs, rank, ...)
        if len(shape) > axis and shape[axis] != weight.shape[axis]:
            differences.append((component, layer, "inputs" if down else "outputs",
                                shape[axis], weight.shape[axis]))
    return differences, missing


def _is_down(key: str) -> bool:
    """Whether `key` is a LoRA's "down" (A) matrix, whose second axis is the layer's inputs."""
    match = _MATRIX.search(key)
    return bool(match) and (match.group(1) == "down" or match.group(2) == "A")


def _rank(key: str, order: list[str]) -> int:
    prefix = key.partition(".")[0]
    return order.index(prefix) if prefix in order else len(order)


def _find(model, layer: str):
    # Text-encoder keys come with or without CLIP's "text_model." level.
    for name in (layer, f"text_model.{layer}"):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return None
