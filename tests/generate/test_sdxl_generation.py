"""Generation on the tiny SDXL model with an SDXL LoRA: scales, kept embeddings (pooled
included), the folded UNet LoRA, and the VAE's precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstudio.config import GenerateConfig
from dreamstudio.generate.generator import Generator

PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module")
def generator(tiny_sdxl_model):
    return Generator(str(tiny_sdxl_model), device="cpu")


def _config(**kw) -> GenerateConfig:
    settings = {"prompt": PROMPT, "steps": 3, "seed": 7, "height": 64, "width": 64,
                "precision": "fp32"} | kw
    return GenerateConfig(**settings)


def _image(generator, **kw) -> np.ndarray:
    return np.asarray(generator.generate(_config(**kw))[0].image).astype(np.int16)


def _unet_weights(generator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in generator.pipeline.unet.state_dict().items()
            if "lora_" not in k}


def test_zero_scales_reproduce_the_base_model(generator, sdxl_lora_dir):
    base = _image(generator)
    zero = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.0, text_encoder_scale=0.0)
    assert np.array_equal(base, zero)


def test_each_scale_alone_changes_the_image(generator, sdxl_lora_dir):
    zero = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.0, text_encoder_scale=0.0)
    unet_only = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=1.0, text_encoder_scale=0.0)
    te_only = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.0, text_encoder_scale=1.0)
    assert np.abs(unet_only - zero).mean() > 0.5
    assert np.abs(te_only - zero).mean() > 0.1
    assert not np.array_equal(unet_only, te_only)


def test_the_text_encoder_scale_reaches_both_encoders(tiny_sdxl_model, sdxl_lora_dir):
    """SDXL's prompt embedding is both encoders' hidden states side by side (each 32 wide in
    the tiny model) and the second's pooled output: each part moves with the one scale."""
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    width = generator.pipeline.text_encoder.config.hidden_size
    parts = {}
    for scale in (0.0, 1.0):
        generator.load_for(_config(lora_dir=sdxl_lora_dir, text_encoder_scale=scale))
        embeds, _, pooled, _ = generator._prompt_embeddings(_config())
        parts[scale] = (embeds[..., :width], embeds[..., width:], pooled)
    for name, off, on in zip(("encoder 1", "encoder 2", "pooled"), parts[0.0], parts[1.0],
                             strict=True):
        assert (on - off).abs().max() > 1e-3, name
    assert generator.prompt_encodes == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_image_as_a_plain_sdxl_pipeline_call(generator, tiny_sdxl_model, sdxl_lora_dir,
                                                  precision):
    """The kept embeddings (pooled ones included), the folded LoRA and the scale on both text
    encoders draw what diffusers draws from the prompt string with the same seed."""
    from diffusers import StableDiffusionXLPipeline

    config = _config(negative_prompt="blurry", seed=5, guidance=6.0, lora_dir=sdxl_lora_dir,
                     unet_scale=0.7, text_encoder_scale=0.3, precision=precision)
    ours = np.asarray(generator.generate(config)[0].image).astype(np.int16)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_model), dtype=dtype,
                                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(sdxl_lora_dir), adapter_name="subject")
    pipe.set_adapters("subject", adapter_weights={"unet": 0.7, "text_encoder": 0.3,
                                                  "text_encoder_2": 0.3})
    theirs = pipe(PROMPT, negative_prompt="blurry", num_inference_steps=3, guidance_scale=6.0,
                  height=64, width=64, generator=torch.Generator("cpu").manual_seed(5)).images[0]
    difference = np.abs(ours - np.asarray(theirs).astype(np.int16))
    largest, mean = {"fp32": (1, 0.05), "bf16": (8, 1.5)}[precision]
    assert difference.max() <= largest and difference.mean() < mean


def test_a_unet_scale_change_does_not_encode_the_prompt_again(tiny_sdxl_model, sdxl_lora_dir):
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    _image(generator, lora_dir=sdxl_lora_dir)
    kept = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.4, guidance=3.0)
    assert generator.prompt_encodes == 1
    fresh = Generator(str(tiny_sdxl_model), device="cpu")
    assert np.array_equal(kept, _image(fresh, lora_dir=sdxl_lora_dir, unet_scale=0.4,
                                       guidance=3.0))
    _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.4, text_encoder_scale=0.5)
    assert generator.prompt_encodes == 2


def test_the_folded_unet_lora_equals_peft_path(tiny_sdxl_model, sdxl_lora_dir):
    """SDXL's UNet (linear projections, transformer blocks two deep) folds like SD 1.x's."""
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    folded = _image(generator, lora_dir=sdxl_lora_dir, unet_scale=0.6)
    layers = generator._folded.layers
    # Every adapted layer folds, those of the second transformer block in a level too.
    assert len(layers) == len([n for n, _ in generator.pipeline.unet.named_modules()
                               if n.endswith("lora_A.subject")])
    assert any(".transformer_blocks.1." in n for n, m in
               generator.pipeline.unet.named_modules() if m in layers)
    generator._folded.restore()
    generator.pipeline.set_adapters("subject", adapter_weights={
        "unet": 0.6, "text_encoder": 1.0, "text_encoder_2": 1.0})
    generator._weights = None  # the next call must fold again
    unfolded = generator.pipeline(  # SDXL's own guidance default is 5, not ours
        PROMPT, num_inference_steps=3, guidance_scale=7.5, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert np.abs(folded - np.asarray(unfolded).astype(np.int16)).max() <= 1


def test_leaving_the_lora_gives_back_every_base_weight(tiny_sdxl_model, sdxl_lora_dir):
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    base = _image(generator)
    original = _unet_weights(generator)
    assert not np.array_equal(base, _image(generator, lora_dir=sdxl_lora_dir, unet_scale=1.5))
    assert np.array_equal(_image(generator), base)
    for name, weight in _unet_weights(generator).items():
        assert torch.equal(weight, original[name]), name


def _decoded(generator, config) -> torch.Tensor:
    """What the VAE decoded while drawing `config` (before the pipeline's clamping)."""
    seen = []
    generator.load_for(config)  # a new precision reloads: the hook goes on the VAE that draws
    hook = generator.pipeline.vae.decoder.register_forward_hook(
        lambda module, args, output: seen.append(output.detach().float()))
    try:
        generator.generate(config)
    finally:
        hook.remove()
    return seen[-1]


def test_bf16_draws_finite_images_and_the_vae_keeps_its_upcast(tiny_sdxl_model):
    """SDXL's VAE overflows in fp16: its force_upcast (the pipeline then decodes in fp32)
    stays as the model ships it, and bf16 (fp32's range) decodes without a NaN."""
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    decoded = _decoded(generator, _config(precision="bf16"))
    assert torch.isfinite(decoded).all()
    assert generator.pipeline.vae.config.force_upcast is True
    assert generator.pipeline.vae.dtype == torch.bfloat16


def test_a_vae_the_user_names_replaces_the_models_own(tiny_sdxl_model, tmp_path):
    """Generator(vae=...): an fp16-safe VAE (force_upcast off) is the one that decodes."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(tiny_sdxl_model / "vae"))
    vae.register_to_config(force_upcast=False)
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(0.5)  # a VAE of its own, so the pixels tell
    vae.save_pretrained(tmp_path / "safe-vae")
    own = Generator(str(tiny_sdxl_model), device="cpu")
    named = Generator(str(tiny_sdxl_model), device="cpu", vae=str(tmp_path / "safe-vae"))
    assert named.pipeline.vae.config.force_upcast is False
    assert own.pipeline.vae.config.force_upcast is True
    assert not np.array_equal(_image(own), _image(named))
    assert torch.isfinite(_decoded(named, _config(precision="bf16"))).all()
