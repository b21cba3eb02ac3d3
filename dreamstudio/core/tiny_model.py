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


def _tiny_clip_config(projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, **extra)


def build_tiny_sdxl_pipeline(seed: int = 0, prediction_type: str = EPSILON):
    """A seeded StableDiffusionXLPipeline of SDXL's shape, tiny: a UNet with text-time
    conditioning, two CLIP text encoders (the second with a projection, whose pooled output
    conditions the UNet), SDXL's VAE scaling and Euler scheduler; 64x64 images."""
    import tempfile

    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    pooled_dim, time_dim = 32, 8
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        # SDXL's UNet sees both encoders' hidden states side by side (32 + 32) and, added to
        # the time embedding, the pooled prompt and the six size/crop numbers.
        cross_attention_dim=64, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=16, sample_size=64,
        scaling_factor=0.13025, force_upcast=True,
    )
    text_encoder = CLIPTextModel(_tiny_clip_config())
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(pooled_dim))
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        # SDXL's second tokenizer pads with "!" (OpenCLIP's convention), not end-of-text.
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77, pad_token="!")
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
        prediction_type=prediction_type,
    )
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
    )


def save_tiny_model(directory: Path, seed: int = 0, prediction_type: str = EPSILON,
                    family: str = "sd1") -> Path:
    """Build the tiny pipeline (`family` "sd1", or "sdxl" for the tiny SDXL one) and save
    it as a diffusers folder; return the folder."""
    build = build_tiny_sdxl_pipeline if family == "sdxl" else build_tiny_pipeline
    pipe = build(seed=seed, prediction_type=prediction_type)
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory
