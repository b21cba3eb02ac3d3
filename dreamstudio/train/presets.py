"""Training presets: starting points that fill the Train tab, each with when to use it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "Object - LoRA notebook defaults",
            "For an object or a pet from 5-20 photos: the settings of the LoRA DreamBooth "
            "notebook this app replaces (UNet LR 5e-4, text-encoder LR 1e-4, 300 steps, "
            "batch 1, rank 4), without prior preservation. Fast, and usually enough.",
            {"steps": 300, "learning_rate": 5e-4, "text_encoder_lr": 1e-4, "batch_size": 1,
             "rank": 4, "train_text_encoder": True, "class_prompt": None,
             "prior_loss_weight": 1.0, "num_class_images": 100},
        ),
        Preset(
            "Person / face",
            "For a person from face crops: prior preservation on 'a photo of a person' keeps "
            "the model's other people intact (no everyone-looks-like-you drift), and more "
            "steps at a lower UNet LR learn the identity without copying the photos.",
            {"steps": 800, "learning_rate": 2e-4, "text_encoder_lr": 5e-5, "batch_size": 1,
             "rank": 8, "train_text_encoder": True, "class_prompt": "a photo of a person",
             "prior_loss_weight": 1.0, "num_class_images": 100},
        ),
    )
}
