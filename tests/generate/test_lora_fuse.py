"""The UNet LoRA folded into the weights: same images as peft's path, no drift, clean unload."""

from __future__ import annotations

import numpy as np
import torch

from dreamstudio.config import GenerateConfig
from dreamstudio.generate.generator import Generator

PROMPT = "a photo of sks dog"


def _image(generator, **kw):
    config = GenerateConfig(prompt=PROMPT, steps=3, seed=3, height=64, width=64,
                            precision="fp32", **kw)
    return np.asarray(generator.generate(config)[0].image).astype(np.int16)


def _unet_weights(generator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in generator.pipeline.unet.state_dict().items()
            if "lora_" not in k}


def test_the_unet_lora_runs_folded_not_beside_each_layer(tiny_model, lora_dir):
    generator = Generator(str(tiny_model), device="cpu")
    _image(generator, lora_dir=lora_dir)
    calls = []
    unet = generator.pipeline.unet
    hooks = [m.register_forward_hook(lambda *a: calls.append(1))
             for name, m in unet.named_modules() if name.endswith("lora_A.subject")]
    assert hooks  # the adapter is loaded
    try:
        folded = _image(generator, lora_dir=lora_dir, unet_scale=0.6)
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls
    # peft's own path (the folding undone) draws the same picture.
    generator._folded.restore()
    generator.pipeline.set_adapters("subject", adapter_weights={"unet": 0.6,
                                                                "text_encoder": 1.0})
    generator._weights = None  # the next call must fold again
    unfolded = np.asarray(generator.pipeline(
        PROMPT, num_inference_steps=3, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(3)).images[0]).astype(np.int16)
    assert np.abs(folded - unfolded).max() <= 1


def test_a_scale_gives_the_same_weights_whatever_came_before(tiny_model, lora_dir):
    direct = Generator(str(tiny_model), device="cpu")
    expected = _image(direct, lora_dir=lora_dir, unet_scale=0.7)
    expected_weights = _unet_weights(direct)
    moved = Generator(str(tiny_model), device="cpu")
    for scale in (2.0, 0.0, 1.3, 0.1, 0.7):
        image = _image(moved, lora_dir=lora_dir, unet_scale=scale)
    assert np.array_equal(image, expected)
    for name, weight in _unet_weights(moved).items():
        assert torch.equal(weight, expected_weights[name]), name


def test_leaving_the_lora_gives_back_the_base_weights(tiny_model, lora_dir):
    generator = Generator(str(tiny_model), device="cpu")
    base = _image(generator)
    original = _unet_weights(generator)
    with_lora = _image(generator, lora_dir=lora_dir, unet_scale=1.5)
    assert not np.array_equal(base, with_lora)
    assert np.array_equal(_image(generator), base)
    for name, weight in _unet_weights(generator).items():
        assert torch.equal(weight, original[name]), name
