"""A tiny but real Stable Diffusion pipeline built offline, for tests and benchmarks.

The weights are random (seeded) but every component is the real class with the real
CLIP BPE vocabulary, so loading, LoRA training, saving and generation exercise exactly
the code paths a full-size model does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .clip_vocab import write_clip_tokenizer_files

EPSILON = "epsilon"  # what SD 1.x predicts; "v_prediction" builds an SD 2.x-style model


def assemble_pipeline(unet, vae, text_encoder, prediction_type: str):
    """A StableDiffusionPipeline around the given models with the real CLIP tokenizer and
    SD 1.x's PNDM scheduler settings."""
    import tempfile

    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
        prediction_type=prediction_type,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_pipeline(seed: int = 0, prediction_type: str = EPSILON):
    """Return a seeded StableDiffusionPipeline whose images are 64x64 (latents 32x32)."""

    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return assemble_pipeline(unet, vae, text_encoder, prediction_type)


def save_tiny_model(directory: Path, seed: int = 0, prediction_type: str = EPSILON) -> Path:
    """Build the tiny pipeline and save it as a diffusers folder; return the folder."""
    pipe = build_tiny_pipeline(seed=seed, prediction_type=prediction_type)
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory
