"""Single-file checkpoints as model sites offer them, made offline with diffusers' converter."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import struct
from pathlib import Path

import torch

CONVERTER = Path(__file__).with_name("convert_diffusers_to_original_stable_diffusion.py")


def convert_folder(folder: Path, target: Path) -> Path:
    """What diffusers' conversion script does to a diffusers folder, as a .safetensors file."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    weights = [load_file(folder / sub / name) for sub, name in (
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"))]
    save_file({k: v.contiguous() for k, v in _checkpoint_state_dict(*weights).items()}, target)
    return target


def save_sd_shaped_mini_model(directory: Path, seed: int = 0) -> Path:
    """SD 1.x's block layout (4 UNet levels, 2 layers per block, a 4-level VAE) at tiny widths.

    The converter hard-codes that layout, so the tiny_model fixture (2 levels, 1 layer per
    block) cannot go through it; this model can, in well under a second.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamstudio.core.tiny_model import EPSILON, assemble_pipeline

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
        norm_num_groups=4, sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
        eos_token_id=49407, pad_token_id=49407,
    ))
    pipe = assemble_pipeline(unet, vae, text_encoder, EPSILON)
    pipe.save_pretrained(directory)
    return Path(directory)


def _checkpoint_state_dict(unet: dict, vae: dict, text: dict) -> dict[str, torch.Tensor]:
    """The script's own key mapping (as its __main__ applies it) on state dicts, which may
    hold meta tensors."""
    tool = runpy.run_path(str(CONVERTER))
    # transformers 5 saves CLIPTextModel without the text_model. level that the script, like
    # every checkpoint on a model site, expects.
    text = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        state = {"model.diffusion_model." + k: v
                 for k, v in tool["convert_unet_state_dict"](unet).items()}
        state |= {"first_stage_model." + k: v
                  for k, v in tool["convert_vae_state_dict"](vae).items()}
        if "text_model.encoder.layers.22.layer_norm2.bias" in text:  # the script's SD 2 test
            text = tool["convert_text_enc_state_dict_v20"](
                {"transformer." + k: v for k, v in text.items()})
            state |= {"cond_stage_model.model." + k: v for k, v in text.items()}
        else:
            state |= {"cond_stage_model.transformer." + k: v for k, v in text.items()}
    return state


def write_zero_checkpoint(components, target: Path) -> Path:
    """A .safetensors checkpoint of (unet, vae, text_encoder) built on "meta": every tensor
    has its real name and shape, and all are zeros held as a sparse file, so a full-size
    architecture costs no disk writes and no random initialisation."""
    header, offset = {}, 0
    for name, tensor in sorted(_checkpoint_state_dict(*(m.state_dict() for m in components)).items()):
        size = tensor.numel() * 2
        header[name] = {"dtype": "F16", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(target, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return target


def sd2_components():
    """SD 2.x's UNet, VAE and text encoder (OpenCLIP ViT-H's text tower less its last layer,
    as diffusers holds it), from the published parameters; build them on "meta"."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
    ))
    return unet, vae, text_encoder
