"""Stable Diffusion 1.5's architecture with random weights, for benchmarks (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

from dreamstudio.core.tiny_model import EPSILON, assemble_pipeline


def sd15_components():
    """SD 1.5's UNet, VAE and text encoder, built on the current default device (random
    weights; on "meta" only their shapes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    return unet, vae, text_encoder


def save_sd15_architecture(directory: Path, seed: int = 0) -> Path:
    """Stable Diffusion 1.5's exact architecture with random weights, as a diffusers folder.

    Compute per step equals the real model's, so speed and memory figures measured on it
    hold for real SD 1.5 weights; its images are noise.
    """
    torch.manual_seed(seed)
    pipe = assemble_pipeline(*sd15_components(), EPSILON)
    pipe.save_pretrained(Path(directory))
    return Path(directory)
