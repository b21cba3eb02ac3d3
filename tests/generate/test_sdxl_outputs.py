"""What surrounds an SDXL generation: a LoRA of the other family refused clearly, the family
in the PNG and the history, a small grid, previews and samplers on the tiny SDXL model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dreamstudio.config import GenerateConfig
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.history import list_history
from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.generate.previews import (
    LATENT_RGB_SDXL,
    LATENT_RGB_SDXL_BIAS,
    approximate_rgb,
    load_decoder,
    preview_for,
    to_images,
)
from dreamstudio.lora.files import CONFIG_NAME
from tests.support.png import read_a1111_parameters

PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module")
def generator(tiny_sdxl_model):
    return Generator(str(tiny_sdxl_model), device="cpu")


def _config(**kw) -> GenerateConfig:
    return GenerateConfig(**({"prompt": PROMPT, "steps": 3, "seed": 7, "height": 64,
                              "width": 64} | kw))


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def _without_record(lora_dir, folder):
    copy = shutil.copytree(lora_dir, folder)
    (copy / CONFIG_NAME).unlink()
    return copy


def test_an_sd1_lora_on_an_sdxl_model_says_which_is_which(generator, lora_dir, tmp_path):
    # From the record or, without one, from its keys (attention in the first down block).
    for folder in (lora_dir, _without_record(lora_dir, tmp_path / "bare")):
        with pytest.raises(InputError, match=r"trained for SD 1\.x; the base model .* is "
                                             r"SDXL: pick a LoRA trained on an SDXL model"):
            generator.generate(_config(lora_dir=folder))
    # Nothing of it stayed loaded: the base model draws as before.
    assert generator.pipeline.get_list_adapters() == {}
    generator.generate(_config())


def test_an_sdxl_lora_on_an_sd1_model_says_which_is_which(tiny_model, sdxl_lora_dir, tmp_path):
    sd1 = Generator(str(tiny_model), device="cpu")
    for folder in (sdxl_lora_dir, _without_record(sdxl_lora_dir, tmp_path / "bare")):
        with pytest.raises(InputError, match=r"trained for SDXL; the base model .* is SD 1\.x: "
                                             r"pick a LoRA trained on an SD 1\.x model"):
            sd1.generate(GenerateConfig(prompt=PROMPT, steps=1, height=64, width=64,
                                        lora_dir=folder))
    assert sd1.lora_loads == 0


def test_the_png_and_the_history_record_the_models_family(generator, sdxl_lora_dir, tmp_path):
    [made] = generator.generate(_config(lora_dir=sdxl_lora_dir), tmp_path)
    assert read_parameters(made.path)["model_family"] == "sdxl"
    assert "Model family: SDXL" in read_a1111_parameters(made.path)
    [item] = list_history(tmp_path)
    assert item.family == "sdxl" and "SDXL" in item.caption()
    # A PNG from before families were recorded has none.
    params = {k: v for k, v in item.params.items() if k != "model_family"}
    assert type(item)(item.path, params).family is None


def test_a_two_by_one_grid_on_sdxl(generator, sdxl_lora_dir, tmp_path):
    from dreamstudio.generate.grid import GridAxis, GridConfig, run_grid

    base = _config(steps=2, lora_dir=sdxl_lora_dir)
    result = run_grid(generator, GridConfig(base, GridAxis.parse("unet_scale", "0, 1")),
                      tmp_path)
    assert result.status == "completed" and (result.done, result.total) == (2, 2)
    [row] = result.cells
    single = generator.generate(_config(steps=2, lora_dir=sdxl_lora_dir, unet_scale=1.0))
    assert np.array_equal(_pixels(row[1]), _pixels(single[0].image))
    assert not np.array_equal(_pixels(row[0]), _pixels(row[1]))
    assert read_parameters(result.path)["model_family"] == "sdxl"


def test_previews_use_the_sdxl_colour_map(generator):
    shown = []
    generator.generate(_config(steps=4, preview_every=2),
                       preview=lambda pictures, step, total: shown.append(pictures))
    [[picture]] = shown
    assert picture.mode == "RGB" and picture.size == (64, 64)
    # The map is SDXL's (with its bias), not SD 1.x's.
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    [mapped] = preview_for(generator.pipeline)(latents)
    [sdxl] = to_images(approximate_rgb(latents, LATENT_RGB_SDXL, LATENT_RGB_SDXL_BIAS),
                       mapped.size)
    [sd1] = to_images(approximate_rgb(latents), mapped.size)
    assert np.array_equal(_pixels(mapped), _pixels(sdxl))
    assert np.abs(_pixels(mapped) - _pixels(sd1)).mean() > 5


def test_the_sdxl_scheduler_is_euler_and_samplers_switch(generator):
    assert generator.sampler_label("Default") == "Euler"
    assert generator.pipeline.scheduler.config.timestep_spacing == "leading"
    default = _pixels(generator.generate(_config())[0].image)
    # "Euler" is the same scheduler rebuilt from the model's config (its "leading" spacing).
    assert np.array_equal(default, _pixels(generator.generate(_config(sampler="Euler"))[0].image))
    karras = generator.generate(_config(sampler="DPM++ 2M Karras"))[0].image
    assert generator.sampler_name == "DPM++ 2M Karras"
    assert not np.array_equal(default, _pixels(karras))
    assert np.array_equal(default, _pixels(generator.generate(_config())[0].image))
    assert generator.model_loads == 1


def test_a_tiny_preview_decoder_works_on_sdxl(generator, tmp_path):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                    num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                    latent_channels=4).save_pretrained(tmp_path / "taesdxl")
    calls = []
    load_decoder(tmp_path / "taesdxl").decoder.register_forward_hook(lambda *a: calls.append(1))
    shown = []
    generator.generate(_config(steps=4, preview_every=2, preview_decoder=tmp_path / "taesdxl"),
                       preview=lambda pictures, step, total: shown.append(pictures))
    assert len(shown) == 1 and shown[0][0].size == (64, 64) and calls == [1]
