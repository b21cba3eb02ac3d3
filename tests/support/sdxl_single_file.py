"""An SDXL single-file checkpoint made offline from a diffusers folder, for tests only.

Model sites offer SDXL models in Stability's original layout: the UNet under
model.diffusion_model. (input_blocks / middle_block / output_blocks), the VAE under
first_stage_model., CLIP ViT-L under conditioner.embedders.0.transformer. and OpenCLIP
ViT-bigG under conditioner.embedders.1.model. (fused q/k/v, a transposed projection).
`convert_sdxl_folder` writes a diffusers folder in that layout from the folder's own config
(any number of levels and layers per block), so a tiny model goes through the same loading
path as a real checkpoint. Our own renaming, written from the layouts (not a copied script).
"""

from __future__ import annotations

from pathlib import Path

import torch

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
           ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def _unet_key(key: str, layers: int) -> str:
    """One diffusers UNet key in the original layout (`layers` resnets per down level)."""
    for prefix, original in _UNET_TOP.items():
        if key.startswith(prefix + "."):
            return original + key[len(prefix):]
    parts = key.split(".")
    kind, level = parts[0], int(parts[1]) if parts[1].isdigit() else None
    if kind == "down_blocks":
        part, index, tail = parts[2], int(parts[3]), ".".join(parts[4:])
        block = 1 + level * (layers + 1)
        if part == "resnets":
            return f"input_blocks.{block + index}.0.{_rename(tail, _RESNET)}"
        if part == "attentions":
            return f"input_blocks.{block + index}.1.{tail}"
        # downsamplers.0.conv.*: the level's last slot
        return f"input_blocks.{block + layers}.0.op.{'.'.join(parts[5:])}"
    if kind == "mid_block":
        part, index, tail = parts[1], int(parts[2]), ".".join(parts[3:])
        if part == "resnets":
            return f"middle_block.{2 * index}.{_rename(tail, _RESNET)}"
        return f"middle_block.1.{tail}"
    if kind == "up_blocks":
        part, index, tail = parts[2], int(parts[3]), ".".join(parts[4:])
        block = level * (layers + 1)  # an up level has one resnet more
        if part == "resnets":
            return f"output_blocks.{block + index}.0.{_rename(tail, _RESNET)}"
        if part == "attentions":
            return f"output_blocks.{block + index}.1.{tail}"
        raise KeyError(key)  # upsamplers: placed by _unet, which knows the level's attention
    raise KeyError(key)


def _unet(state: dict, config) -> dict:
    layers = config["layers_per_block"]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "up_blocks" and parts[2] == "upsamplers":
            level = int(parts[1])
            has_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
            slot = level * (layers + 1) + layers
            out[f"output_blocks.{slot}.{2 if has_attention else 1}.conv.{parts[-1]}"] = value
        else:
            out[_unet_key(key, layers)] = value
    return {"model.diffusion_model." + k: v for k, v in out.items()}


_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                  ("to_out.0", "proj_out"))


def _vae(state: dict, config) -> dict:
    ups = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        side, *parts = key.split(".")
        name = ".".join(parts)
        if parts[0] in ("down_blocks", "up_blocks"):
            level = int(parts[1])
            where = f"down.{level}" if side == "encoder" else f"up.{ups - 1 - level}"
            if parts[2] == "resnets":
                name = f"{where}.block.{'.'.join(parts[3:])}".replace("conv_shortcut",
                                                                       "nin_shortcut")
            else:  # downsamplers.0.conv / upsamplers.0.conv
                sample = "downsample" if side == "encoder" else "upsample"
                name = f"{where}.{sample}.{'.'.join(parts[4:])}"
        elif parts[0] == "mid_block":
            if parts[1] == "resnets":
                name = f"mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:])}".replace(
                    "conv_shortcut", "nin_shortcut")
            else:
                name = "mid.attn_1." + _rename(".".join(parts[3:]), _VAE_ATTENTION)
                if value.ndim == 2:  # the original's attention projections are 1x1 convs
                    value = value[:, :, None, None]
        elif parts[0] == "conv_norm_out":
            name = "norm_out." + ".".join(parts[1:])
        out[f"first_stage_model.{side}.{name}"] = value
    return out


def _clip_l(state: dict) -> dict:
    # transformers 5 saves CLIPTextModel without the text_model. level checkpoints keep.
    return {"conditioner.embedders.0.transformer."
            + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items()}


_OPEN_CLIP = (("text_model.encoder.layers.", "transformer.resblocks."), ("layer_norm1", "ln_1"),
              ("layer_norm2", "ln_2"), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
              (".self_attn.out_proj.", ".attn.out_proj."))


def _open_clip(state: dict) -> dict:
    state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
             for k, v in state.items()}
    fixed = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif ".self_attn.q_proj." in key:  # q, k and v fused, in that order
            kind = key.rsplit(".", 1)[1]
            layer = key.split(".self_attn.")[0]
            fused = torch.cat([state[f"{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[_rename(layer, _OPEN_CLIP) + f".attn.in_proj_{kind}"] = fused
        elif ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        elif key.startswith("text_model.encoder.layers."):
            out[_rename(key, _OPEN_CLIP)] = value
    return {"conditioner.embedders.1.model." + k: v for k, v in out.items()}


def convert_sdxl_folder(folder: Path, target: Path) -> Path:
    """A diffusers SDXL folder as one .safetensors checkpoint in the original layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    text_2 = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2")
    state = (_unet(unet.state_dict(), unet.config) | _vae(vae.state_dict(), vae.config)
             | _clip_l(text.state_dict()) | _open_clip(text_2.state_dict()))
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    return target


def save_sdxl_shaped_mini_model(directory: Path) -> Path:
    """The tiny SDXL pipeline with its second text encoder wider than its first (48 vs 32),
    as in SDXL (1280 vs 768): a single-file loader tells the two encoders apart by width."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from dreamstudio.core.tiny_model import build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline(seed=3)
    first = pipe.text_encoder.config
    torch.manual_seed(3)
    pipe.text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=first.vocab_size, hidden_size=48, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        projection_dim=pipe.text_encoder_2.config.projection_dim))
    pipe.unet = UNet2DConditionModel.from_config(
        {**pipe.unet.config, "cross_attention_dim": first.hidden_size + 48})
    pipe.save_pretrained(directory)
    return Path(directory)
