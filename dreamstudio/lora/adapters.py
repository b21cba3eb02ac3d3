"""LoRA adapters on the live models: where they attach, attaching them, reading their weights."""

from __future__ import annotations

# The adapter's name inside the pipeline, for set_adapters / scales.
ADAPTER_NAME = "subject"
# Attention projections, as in the diffusers DreamBooth LoRA scripts.
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# transformers 5 dropped CLIPTextModel's `text_model` level; files for other tools keep it,
# since transformers 4, ComfyUI and A1111 address the text encoder as `text_model.encoder...`.
CLIP_ROOT = "text_model."


def classic_clip_path(module_path: str) -> str:
    """`encoder.layers.0.self_attn.q_proj` -> `text_model.encoder.layers.0.self_attn.q_proj`."""
    return module_path if module_path.startswith(CLIP_ROOT) else CLIP_ROOT + module_path


def add_lora(model, rank: int, targets: list[str], alpha: int | None = None,
             use_dora: bool = False) -> None:
    """Attach a trainable LoRA to `model` in place: scale alpha / rank (alpha None: the
    rank, scale 1); with `use_dora` a DoRA, whose per-output magnitude vectors train too."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
        target_modules=targets, use_dora=use_dora,
    )
    model.add_adapter(config)


def adapter_settings(rank: int, alpha: int | None, use_dora: bool,
                     targets: list[str]) -> dict:
    """The LoRA settings diffusers rebuilds the adapter from when it loads our file
    (its `lora_adapter_metadata`): without them it assumes alpha = rank and no DoRA. Only
    LoraConfig fields that older peft releases know, and the (empty) patterns diffusers
    0.35 requires."""
    return {"r": rank, "lora_alpha": alpha or rank, "use_dora": use_dora,
            "target_modules": list(targets), "rank_pattern": {}, "alpha_pattern": {}}


def peft_weights(unet, text_encoder=None, text_encoder_2=None) -> dict:
    """LoRA weights keyed `unet.<module path>.lora_A.weight` (and `text_encoder.`,
    `text_encoder_2.` ones), the module paths being the models' own; used for checkpoints
    and kohya export."""
    from peft.utils import get_peft_model_state_dict

    weights = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    for prefix, model in (("text_encoder.", text_encoder), ("text_encoder_2.", text_encoder_2)):
        if model is not None:
            # peft would add a resized token embedding (pivotal tuning) as LoRA weights; the
            # LoRA targets none, and the new rows are saved as an embedding of their own.
            weights |= {f"{prefix}{k}": v for k, v in get_peft_model_state_dict(
                model, save_embedding_layers=False).items()}
    return weights
