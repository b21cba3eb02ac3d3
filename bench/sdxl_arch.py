"""SDXL base 1.0's architecture with random weights, for benchmarks (no download).

Every component is built from the configs shipped in dreamstudio/core/model_configs/sdxl/
(from_config), so the architecture's numbers have one home: a folder built here has the
real model's shapes, hence its compute and memory per step, and images that are noise.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from dreamstudio.core.architectures import config_folder
from dreamstudio.core.clip_vocab import clip_tokenizer

SDXL_CONFIGS = config_folder("sdxl")


@contextmanager
def _default_dtype(dtype: torch.dtype):
    # Built straight in the dtype they are saved in: SDXL's UNet alone is 10 GB in fp32.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _settings(component: str, name: str = "config.json") -> dict:
    return json.loads((SDXL_CONFIGS / component / name).read_text(encoding="utf-8"))


def sdxl_tokenizers():
    """SDXL's two CLIP tokenizers from the shipped vocabulary (the second pads with "!")."""
    return tuple(clip_tokenizer(_settings(name, "tokenizer_config.json"))
                 for name in ("tokenizer", "tokenizer_2"))


def sdxl_components(dtype: torch.dtype = torch.float32):
    """SDXL's UNet, VAE and two text encoders from the shipped configs, built on the current
    default device in `dtype` (random weights; on "meta" only their shapes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with _default_dtype(dtype):
        unet = UNet2DConditionModel.from_config(_settings("unet"))
        vae = AutoencoderKL.from_config(_settings("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(_settings("text_encoder")))
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_dict(_settings("text_encoder_2")))
    return unet, vae, text_encoder, text_encoder_2


def save_sdxl_architecture(directory: Path, seed: int = 0,
                           dtype: torch.dtype = torch.bfloat16) -> Path:
    """SDXL base 1.0's exact architecture with random weights, saved as a diffusers folder
    in `dtype` (bf16: about 7 GB on disk and in memory while it is built)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet, vae, text_encoder, text_encoder_2 = sdxl_components(dtype)
    tokenizer, tokenizer_2 = sdxl_tokenizers()
    scheduler = EulerDiscreteScheduler.from_config(_settings("scheduler",
                                                             "scheduler_config.json"))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
    return Path(directory)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_arch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, nargs="?", default=Path("/tmp/sdxlarch"))
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"),
                        default="bfloat16")
    args = parser.parse_args(argv)
    save_sdxl_architecture(args.directory, dtype=getattr(torch, args.dtype))
    print(f"written: {args.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
