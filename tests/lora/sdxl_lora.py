"""A hand-made SDXL LoRA for the lora tests: the tiny SDXL pipeline with a LoRA (or DoRA) on
its UNet and both text encoders, its weights moved off their start by a seeded generator, and
what the live models give with it (UNet output, prompt embeddings of both encoders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dreamstudio.core.models import load_pipeline
from dreamstudio.lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, peft_weights
from dreamstudio.lora.files import lora_state_dicts, save_lora
from dreamstudio.lora.kohya import export_kohya

RANK = 4
PROMPT = "a photo of sks dog"
KOHYA_NAME = "rex.safetensors"


@dataclass
class Outputs:
    unet: torch.Tensor
    embeds: torch.Tensor  # both encoders' penultimate states side by side, as SDXL uses them
    pooled: torch.Tensor  # text_encoder_2's projected embedding


@dataclass
class SdxlLora:
    folder: Path  # the LoRA folder: diffusers file, record, kohya file
    weights: dict  # peft_weights of the live models
    live: Outputs  # what the live models give with the LoRA
    pipe: object  # the live pipeline (LoRA attached)


def fresh_pipe(model_dir: Path):
    return load_pipeline(str(model_dir), torch.device("cpu"))


@torch.no_grad()
def outputs(pipe) -> Outputs:
    """The UNet's output on fixed inputs and the prompt embeddings of PROMPT."""
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device=torch.device("cpu"),
                                              num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    generator = torch.Generator().manual_seed(1)
    unet = pipe.unet
    latents = torch.randn((1, unet.config.in_channels, 8, 8), generator=generator)
    # Fixed conditioning, so the UNet comparison does not hang on the text encoders.
    context = torch.randn((1, 77, unet.config.cross_attention_dim), generator=generator)
    text_embeds = torch.randn((1, pipe.text_encoder_2.config.projection_dim),
                              generator=generator)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    out = unet(latents, torch.tensor([500]), encoder_hidden_states=context,
               added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    return Outputs(out, embeds, pooled)


def _perturb(model, generator: torch.Generator) -> None:
    """Move the LoRA's weights off their start: B off zero (else the LoRA does nothing) and
    a DoRA's magnitudes off the base weights' norms (else they could be left out unseen)."""
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.05
        elif "lora_magnitude_vector" in name:
            param.data = param.data * (1 + 0.1 * torch.randn(param.shape, generator=generator))


def make_sdxl_lora(model_dir: Path, folder: Path, use_dora: bool = False) -> SdxlLora:
    """Build, save (diffusers file, record, kohya file) and measure the LoRA."""
    pipe = fresh_pipe(model_dir)
    add_lora(pipe.unet, RANK, UNET_TARGETS, use_dora=use_dora)
    add_lora(pipe.text_encoder, RANK, TEXT_ENCODER_TARGETS, use_dora=use_dora)
    add_lora(pipe.text_encoder_2, RANK, TEXT_ENCODER_TARGETS, use_dora=use_dora)
    generator = torch.Generator().manual_seed(0)
    for model in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        _perturb(model, generator)
    weights = peft_weights(pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    info = {"config": {"rank": RANK, "lora_alpha": RANK, "use_dora": use_dora,
                       "model": str(model_dir), "resolution": 64},
            "family": "sdxl", "subject_name": "rex"}
    save_lora(folder, *lora_state_dicts(weights), info)
    export_kohya(weights, RANK, folder / KOHYA_NAME, info)
    return SdxlLora(folder, weights, outputs(pipe), pipe)


def assert_same_outputs(got: Outputs, expected: Outputs, atol: float = 1e-5) -> None:
    torch.testing.assert_close(got.unet, expected.unet, rtol=1e-4, atol=atol)
    torch.testing.assert_close(got.embeds, expected.embeds, rtol=1e-4, atol=atol)
    torch.testing.assert_close(got.pooled, expected.pooled, rtol=1e-4, atol=atol)
