"""Why a LoRA did not load onto a pipeline, in one sentence a person can act on.

diffusers' own answer is a log record plus an exception listing every layer (a hundred
lines for a LoRA of another architecture, a bare "Unable to load weights" for a damaged
file). This module reads the file's header and the pipeline's layers and names the first
difference instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..lora.files import read_lora_info

# The key endings of a LoRA's two matrices in the diffusers layouts (attention-processor,
# text-encoder monkey-patch and peft): "down" maps the layer's inputs, "up" its outputs;
# a DoRA's magnitude vector has one value per output.
_MATRIX = re.compile(
    r"\.(?:lora|lora_linear_layer)\.(down|up)\.weight$|\.lora_(A|B)(?:\.[^.]+)?\.weight$"
    r"|\.lora_magnitude_vector(?:\.weight)?$"
)
_COMPONENTS = {"unet": "UNet", "text_encoder": "text encoder"}


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
        down = match.group(1) == "down" or match.group(2) == "A"
        axis = 1 if down else 0  # down: (rank, inputs, ...); up: (outputs, rank, ...)
        if len(shape) > axis and shape[axis] != weight.shape[axis]:
            differences.append((component, layer, "inputs" if down else "outputs",
                                shape[axis], weight.shape[axis]))
    return differences, missing


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
