"""What the Generate and Evaluate tabs' LoRA pickers show: the choices, which one to
preselect, and a line about the chosen LoRA's training."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..studio import LoraEntry, LoraFacts, Studio

BASE_MODEL = "(base model, no LoRA)"


def lora_labels(studio: Studio) -> list[str]:
    """The trained LoRAs' labels ('subject / run')."""
    return [entry.label for entry in studio.loras()]


def newest_label(studio: Studio, default: str | None = BASE_MODEL) -> str | None:
    """The label of the LoRA trained last, or `default` without any."""
    entry = studio.newest_lora()
    return entry.label if entry else default


def lora_text(entry: LoraEntry | None, facts: LoraFacts | None) -> str:
    """One line on what the LoRA was trained on (or that the base model is alone)."""
    if entry is None or facts is None:
        return "The base model alone, without any subject."
    parts = [f"trained on *'{facts.instance_prompt or '?'}'*"]
    if facts.steps:
        parts.append(f"{facts.steps} steps")
    if facts.rank:
        parts.append(f"rank {facts.rank}")
    if facts.final_loss is not None:
        parts.append(f"final loss {facts.final_loss:.4f}")
    if facts.finished_at:
        parts.append(f"finished {facts.finished_at[:16].replace('T', ' ')}")
    return (f"**{entry.label}**: " + ", ".join(parts)
            + ". Put the same words (e.g. 'sks dog') in your prompt.")


def describe(studio: Studio, entry: LoraEntry | None) -> str:
    return lora_text(entry, entry.facts if entry else None)
