"""Generation with LoRA scales on the tiny model: base equivalence, per-component effect."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamstudio.config import GenerateConfig
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.png_metadata import read_parameters

PROMPT = "a photo of sks dog"


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


def test_load_for_sets_up_a_config_without_drawing(tiny_model, lora_dir):
    fresh = Generator(str(tiny_model), device="cpu")
    config = GenerateConfig(prompt=PROMPT, lora_dir=lora_dir, unet_scale=0.4,
                            text_encoder_scale=0.6, sampler="DDIM")
    fresh.load_for(config)
    assert (fresh.model_loads, fresh.lora_loads) == (1, 1)
    assert fresh.sampler_name == "DDIM"
    fresh.load_for(config)  # nothing changed: nothing reloads
    assert (fresh.model_loads, fresh.lora_loads) == (1, 1)


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


# ---- samplers, metadata, grids (the model loads once for all of them) --------------------

def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_samplers_switch_on_the_cached_pipeline_and_default_returns(generator, lora_dir):
    from dreamstudio.generate.samplers import SAMPLER_NAMES

    def image(**kw):
        config = GenerateConfig(prompt=PROMPT, steps=2, seed=7, height=64, width=64,
                                lora_dir=lora_dir, **kw)
        return _pixels(generator.generate(config)[0].image)

    default = image()
    original = generator.pipeline.scheduler
    loads = (generator.model_loads, generator.lora_loads)
    seen = {}
    for name in SAMPLER_NAMES[1:]:
        seen[name] = image(sampler=name)
        assert generator.sampler_name == name
        # Built from the model's own config: its noise schedule carries over.
        assert generator.pipeline.scheduler.config.beta_schedule == original.config.beta_schedule
    assert type(generator.pipeline.scheduler).__name__ == "UniPCMultistepScheduler"
    assert not np.array_equal(seen["DDIM"], seen["Euler a"])
    assert not np.array_equal(seen["DPM++ 2M Karras"], default)
    again = image()
    assert generator.pipeline.scheduler is original and generator.sampler_name == "PLMS"
    assert np.array_equal(again, default)
    assert (generator.model_loads, generator.lora_loads) == loads


def _a1111_fields(text: str) -> tuple[str, str, dict]:
    """Parse infotext the way AUTOMATIC1111's PNG Info does (its regex, its line rules)."""
    import re

    *lines, last = text.strip().split("\n")
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    pattern = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
    fields = {k: v.strip() for k, v in re.findall(pattern, last)}
    return "\n".join(prompt), "\n".join(negative), fields


def test_png_parameters_are_complete_for_a1111_and_image_sites(generator, lora_dir, tmp_path):
    from dreamstudio.core.devices import precision_name
    from dreamstudio.generate.generator import lora_file_name
    from tests.support.png import read_a1111_parameters

    config = GenerateConfig(prompt="a photo of sks dog, by the sea", negative_prompt="blurry",
                            steps=3, seed=11, height=64, width=64, lora_dir=lora_dir,
                            unet_scale=0.7, text_encoder_scale=0.3, guidance=5.0,
                            sampler="DPM++ 2M Karras")
    [result] = generator.generate(config, tmp_path)
    name = lora_file_name(lora_dir)
    assert (lora_dir / f"{name}.safetensors").is_file()  # the kohya file A1111 loads
    prompt, negative, fields = _a1111_fields(read_a1111_parameters(result.path))
    assert prompt == f"a photo of sks dog, by the sea <lora:{name}:te=0.3:unet=0.7>"
    assert negative == "blurry"
    assert fields == {
        "Steps": "3", "Sampler": "DPM++ 2M Karras", "CFG scale": "5.0", "Seed": "11",
        "Size": "64x64", "Model": generator.model.rstrip("/").split("/")[-1], "LoRA": name,
        "LoRA UNet scale": "0.7", "LoRA text encoder scale": "0.3", "Generator": "DreamStudio",
        "Precision": precision_name(generator.dtype),
    }
    params = read_parameters(result.path)
    assert params["sampler"] == "DPM++ 2M Karras" and params["lora_name"] == name
    [base] = generator.generate(GenerateConfig(prompt=PROMPT, steps=2, height=64, width=64),
                                tmp_path)
    prompt, negative, fields = _a1111_fields(read_a1111_parameters(base.path))
    assert prompt == PROMPT and negative == "" and fields["Sampler"] == "PLMS"
    assert "LoRA" not in fields and "<lora:" not in prompt


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_image_as_a_plain_diffusers_call(generator, tiny_model, lora_dir, precision):
    """What the app draws is what diffusers draws with the same settings, in full precision
    and in bf16 (kept prompt embeddings, folded LoRA, channels-last and all)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    config = GenerateConfig(prompt=PROMPT, negative_prompt="blurry", steps=3, seed=5,
                            height=64, width=64, lora_dir=lora_dir, unet_scale=0.7,
                            text_encoder_scale=0.3, guidance=6.0, sampler="DPM++ 2M Karras",
                            precision=precision)
    ours = generator.generate(config)[0].image
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None,
                                                   requires_safety_checker=False, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_dir), adapter_name="subject")
    pipe.set_adapters("subject", adapter_weights={"unet": 0.7, "text_encoder": 0.3})
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=True, algorithm_type="dpmsolver++")
    theirs = pipe(PROMPT, negative_prompt="blurry", num_inference_steps=3, guidance_scale=6.0,
                  height=64, width=64,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0]
    # The folded UNet LoRA (one matmul, not three) and, in bf16, channels-last's other
    # convolution kernels round differently: the same image within a level or a few.
    difference = np.abs(_pixels(ours) - _pixels(theirs))
    largest, mean = {"fp32": (1, 0.05), "bf16": (8, 1.5)}[precision]
    assert difference.max() <= largest and difference.mean() < mean


def test_a_stopped_generation_saves_nothing(generator, tmp_path):
    import threading

    cancel = threading.Event()
    cancel.set()
    results = generator.generate(GenerateConfig(prompt=PROMPT, steps=5, height=64, width=64),
                                 tmp_path, cancel=cancel)
    assert results[0].path is None and not list(tmp_path.iterdir())


def test_grid_loads_once_and_each_cell_is_that_settings_image(tiny_model, lora_dir, tmp_path):
    from dreamstudio.generate.grid import GridAxis, GridConfig, run_grid
    from tests.support.png import read_a1111_parameters

    fresh = Generator(str(tiny_model), device="cpu")
    base = GenerateConfig(prompt=PROMPT, steps=2, seed=7, height=64, width=64,
                          lora_dir=lora_dir, sampler="Euler a")
    grid = GridConfig(base, GridAxis.parse("unet_scale", "0, 1"),
                      GridAxis.parse("text_encoder_scale", "0, 1"))
    seen = []
    result = run_grid(fresh, grid, tmp_path, progress=seen.append)
    assert (fresh.model_loads, fresh.lora_loads) == (1, 1)
    assert result.status == "completed" and (result.done, result.total) == (4, 4)
    assert [p.done for p in seen if p.step == 0 and p.steps][:4] == [0, 1, 2, 3]
    assert seen[-1].done == 4 and seen[-1].fraction == 1.0

    def single(unet, te):
        config = GenerateConfig(prompt=PROMPT, steps=2, seed=7, height=64, width=64,
                                lora_dir=lora_dir, sampler="Euler a", unet_scale=unet,
                                text_encoder_scale=te)
        return _pixels(fresh.generate(config)[0].image)

    cells = [[_pixels(c) for c in row] for row in result.cells]
    assert np.array_equal(cells[0][0], single(0.0, 0.0))  # row = text encoder, column = UNet
    assert np.array_equal(cells[1][0], single(0.0, 1.0))
    assert np.array_equal(cells[0][1], single(1.0, 0.0))
    assert not np.array_equal(cells[0][0], cells[0][1])
    assert (fresh.model_loads, fresh.lora_loads) == (1, 1)

    # The saved grid: labelled (bigger than the cells), with the axes in its metadata.
    [saved] = list(tmp_path.glob("*_grid_*.png"))
    assert saved == result.path
    with Image.open(saved) as im:
        assert im.width > 2 * 64 and im.height > 2 * 64
    params = read_parameters(saved)
    assert params["grid"]["x"] == {"axis": "unet_scale", "label": "LoRA UNet scale",
                                   "values": [0.0, 1.0]}
    assert params["grid"]["y"]["axis"] == "text_encoder_scale" and params["seed"] == 7
    text = read_a1111_parameters(saved)
    assert 'X Type: LoRA UNet scale, X Values: "0, 1"' in text and "Sampler: Euler a" in text


def test_grid_stops_between_and_within_cells(generator, lora_dir, tmp_path):
    import threading

    from dreamstudio.generate.grid import GridAxis, GridConfig, run_grid

    base = GenerateConfig(prompt=PROMPT, steps=2, seed=1, height=64, width=64)
    grid = GridConfig(base, GridAxis.parse("seed", "1, 2, 3"), GridAxis.parse("guidance", "3, 9"))

    between = threading.Event()
    result = run_grid(generator, grid, tmp_path, cancel=between,
                      progress=lambda p: p.done == 2 and between.set())
    assert result.status == "cancelled" and result.done == 2 and result.path is None
    assert result.cells[0][:2] != [None, None] and result.cells[0][2] is None
    assert result.cells[1] == [None, None, None]
    assert not list(tmp_path.iterdir())  # a stopped grid is shown, never saved

    within, steps = threading.Event(), []

    def on_progress(p):
        if p.step:
            steps.append(p.step)
            within.set()

    long = GridConfig(GenerateConfig(prompt=PROMPT, steps=30, height=64, width=64),
                      GridAxis.parse("seed", "1, 2"))
    result = run_grid(generator, long, tmp_path, cancel=within, progress=on_progress)
    assert result.status == "cancelled" and result.done == 0
    assert max(steps) < 30 and result.image.width >= 2 * 64


def test_switching_loras_keeps_the_requested_scales(generator, lora_dir, tmp_path):
    """Scales are only re-sent when they change; a newly loaded LoRA must still get them."""
    import shutil

    copy = shutil.copytree(lora_dir, tmp_path / "same-lora")
    first = _image(generator, lora_dir=lora_dir, unet_scale=0.5, text_encoder_scale=0.5)
    loads = generator.lora_loads
    other = _image(generator, lora_dir=copy, unet_scale=0.5, text_encoder_scale=0.5)
    assert generator.lora_loads == loads + 1
    assert np.array_equal(first, other)


def test_a_slider_change_keeps_the_prompt_embeddings(tiny_model, lora_dir):
    """UNet scale, guidance and sampler reuse the kept embeddings; the prompt, the
    negative prompt and the text-encoder scale encode again; a kept embedding draws what a
    fresh generator draws."""
    generator = Generator(str(tiny_model), device="cpu")
    base = {"lora_dir": lora_dir, "unet_scale": 1.0, "text_encoder_scale": 1.0}
    _image(generator, **base)
    assert generator.prompt_encodes == 1
    for change in [{"unet_scale": 0.4}, {"guidance": 3.0},
                   {"sampler": "Euler a"}]:
        kept = _image(generator, **{**base, **change})
        assert generator.prompt_encodes == 1, change
    assert np.array_equal(kept, _image(Generator(str(tiny_model), device="cpu"),
                                       **{**base, "sampler": "Euler a"}))
    encodes = 1
    for change in [{"text_encoder_scale": 0.5}, {"negative_prompt": "blurry"},
                   {"text_encoder_scale": 0.0}]:
        base = {**base, **change}
        fresh = _image(Generator(str(tiny_model), device="cpu"), **base)
        assert np.array_equal(_image(generator, **base), fresh), change
        encodes += 1
        assert generator.prompt_encodes == encodes, change
    config = GenerateConfig(prompt="a photo of sks dog in snow", steps=2, height=64, width=64,
                            **base)
    generator.generate(config)
    assert generator.prompt_encodes == encodes + 1


def test_precision_auto_takes_bf16_where_the_cpu_has_it_and_fp32_can_be_forced(tiny_model):
    import torch

    from dreamstudio.core.devices import cpu_has_bf16

    generator = Generator(str(tiny_model), device="cpu")
    expected = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert generator.dtype_for("auto") == expected
    auto = _image(generator)
    assert generator.pipeline.unet.dtype == expected
    full = _image(generator, precision="fp32")
    assert generator.pipeline.unet.dtype == torch.float32
    assert generator.model_loads == (2 if expected != torch.float32 else 1)
    bf16 = _image(generator, precision="bf16")
    assert generator.pipeline.unet.dtype == torch.bfloat16
    assert not np.array_equal(full, bf16)  # a forced precision really draws in it
    difference = np.abs(full - bf16)
    assert difference.mean() < 4  # the same picture, rounded apart
    if expected == torch.bfloat16:
        assert np.array_equal(auto, bf16)


def test_fp16_on_the_cpu_is_refused_with_what_to_use():
    with pytest.raises(InputError, match="fp16 generation needs a GPU.*bf16"):
        Generator("unused", device="cpu").dtype_for("fp16")
    with pytest.raises(InputError, match="Unknown precision 'half'"):
        GenerateConfig(prompt=PROMPT, precision="half")


def test_the_png_records_the_precision_it_was_drawn_in(tiny_model, tmp_path):
    from dreamstudio.generate.history import settings_from
    from tests.support.png import read_a1111_parameters

    generator = Generator(str(tiny_model), device="cpu")
    config = GenerateConfig(prompt=PROMPT, steps=2, height=64, width=64, precision="fp32")
    [result] = generator.generate(config, tmp_path)
    params = read_parameters(result.path)
    assert params["precision"] == "fp32"
    assert _a1111_fields(read_a1111_parameters(result.path))[2]["Precision"] == "fp32"
    assert settings_from(params)["precision"] == "fp32"
    [auto] = generator.generate(GenerateConfig(prompt=PROMPT, steps=2, height=64, width=64),
                                tmp_path)
    from dreamstudio.core.devices import precision_name

    assert read_parameters(auto.path)["precision"] == precision_name(generator.dtype_for("auto"))
