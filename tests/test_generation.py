"""Generation with LoRA scales on the tiny model: base equivalence, per-component effect."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.errors import InputError
from dreamstudio.generation import Generator
from dreamstudio.metadata import read_parameters
from dreamstudio.training import train

PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module")
def lora_dir(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen-lora")
    # A high learning rate makes both LoRAs move far from zero in a few steps.
    train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir, instance_prompt=PROMPT,
                      output_dir=out, steps=15, resolution=64, learning_rate=5e-3,
                      text_encoder_lr=5e-3))
    return out


@pytest.fixture(scope="module")
def generator(tiny_model):
    return Generator(str(tiny_model), device="cpu")


def _image(generator, **kw):
    config = GenerateConfig(prompt=PROMPT, steps=4, seed=7, height=64, width=64, **kw)
    return np.asarray(generator.generate(config)[0].image).astype(np.int16)


def test_zero_scales_reproduce_the_base_model(generator, lora_dir):
    base = _image(generator)
    zero = _image(generator, lora_dir=lora_dir, unet_scale=0.0, text_encoder_scale=0.0)
    assert np.array_equal(base, zero)


def test_each_scale_alone_changes_the_image(generator, lora_dir):
    zero = _image(generator, lora_dir=lora_dir, unet_scale=0.0, text_encoder_scale=0.0)
    unet_only = _image(generator, lora_dir=lora_dir, unet_scale=1.0, text_encoder_scale=0.0)
    te_only = _image(generator, lora_dir=lora_dir, unet_scale=0.0, text_encoder_scale=1.0)
    assert np.abs(unet_only - zero).mean() > 0.5
    assert np.abs(te_only - zero).mean() > 0.1
    assert not np.array_equal(unet_only, te_only)


def test_moving_sliders_reloads_nothing(generator, lora_dir):
    _image(generator, lora_dir=lora_dir)
    loads = (generator.model_loads, generator.lora_loads)
    for unet_scale, te_scale, guidance in [(0.5, 1.5, 3.0), (2.0, 0.0, 12.0), (1.0, 1.0, 7.5)]:
        _image(generator, lora_dir=lora_dir, unet_scale=unet_scale,
               text_encoder_scale=te_scale, guidance=guidance)
    assert (generator.model_loads, generator.lora_loads) == loads == (1, 1)


def test_same_seed_same_image_and_seeds_advance_per_image(generator, lora_dir):
    config = GenerateConfig(prompt=PROMPT, steps=3, seed=3, num_images=2, height=64, width=64,
                            lora_dir=lora_dir)
    first = generator.generate(config)
    again = generator.generate(config)
    assert [r.seed for r in first] == [3, 4]
    assert np.array_equal(np.asarray(first[0].image), np.asarray(again[0].image))
    assert not np.array_equal(np.asarray(first[0].image), np.asarray(first[1].image))


def test_saved_png_carries_its_parameters(generator, lora_dir, tmp_path):
    config = GenerateConfig(prompt=PROMPT, negative_prompt="blurry", steps=3, seed=11,
                            height=64, width=64, lora_dir=lora_dir, unet_scale=0.7,
                            text_encoder_scale=0.3, guidance=5.0)
    [result] = generator.generate(config, tmp_path)
    params = read_parameters(result.path)
    assert params["prompt"] == PROMPT and params["seed"] == 11
    assert params["unet_scale"] == 0.7 and params["text_encoder_scale"] == 0.3
    assert params["guidance"] == 5.0 and params["negative_prompt"] == "blurry"
    from PIL import Image

    with Image.open(result.path) as im:
        text = im.info["parameters"]
    assert text.startswith(PROMPT) and "Seed: 11" in text and "CFG scale: 5.0" in text


def test_missing_lora_is_a_clear_error(generator, tmp_path):
    with pytest.raises(InputError, match="No LoRA found"):
        generator.generate(GenerateConfig(prompt=PROMPT, steps=2, lora_dir=tmp_path,
                                          height=64, width=64))


def test_cancel_interrupts_generation(generator):
    import threading

    cancel = threading.Event()
    steps = []

    def progress(done, total):
        steps.append(done)
        cancel.set()

    generator.generate(GenerateConfig(prompt=PROMPT, steps=20, height=64, width=64),
                       progress=progress, cancel=cancel)
    assert len(steps) < 20
