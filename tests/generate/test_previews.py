"""Previews of images forming: the latent colour map, the cadence, the time left, a tiny
preview decoder, and that no preview ever changes the finished image."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from dreamstudio.config import GenerateConfig
from dreamstudio.errors import InputError
from dreamstudio.generate.eta import StepClock
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.generate.previews import (
    LATENT_RGB,
    approximate_rgb,
    fit_latent_rgb,
    is_preview_step,
    load_decoder,
    to_images,
)

PROMPT = "a photo of sks dog"


def _latent(*channels: float, size: int = 4) -> torch.Tensor:
    return torch.tensor(channels, dtype=torch.float32)[None, :, None, None].expand(
        1, 4, size, size).clone()


def _colour(latent: torch.Tensor) -> tuple[int, int, int]:
    [image] = to_images(approximate_rgb(latent), (latent.shape[-1] * 8,) * 2)
    return image.getpixel((0, 0))


def test_the_colour_map_turns_sd_latents_into_their_colours():
    assert _colour(_latent(0, 0, 0, 0)) == (128, 128, 128)  # no signal: mid grey
    bright = _colour(_latent(1.5, 0, 0, 0))  # channel 1 is luminance
    assert all(c > 128 + 30 for c in bright)
    blue = _colour(_latent(0, 0, 0, -1.5))  # channel 4 runs yellow to blue
    assert blue[2] > blue[1] > blue[0] > 128
    assert _colour(_latent(0, 0, 0, 1.5))[2] < 128 - 80  # and the other way: yellow
    # The exact arithmetic for one pixel: (latent @ matrix + 1) / 2, in 0-255.
    expected = [(1 + 1.0 * LATENT_RGB[0][k] - 0.5 * LATENT_RGB[2][k]) / 2 * 255
                for k in range(3)]
    assert np.allclose(_colour(_latent(1.0, 0, -0.5, 0)), expected, atol=1)


def test_previews_are_upsampled_to_the_image_size():
    latent = torch.zeros(2, 4, 8, 6)
    latent[:, 0, :, :3] = 2.0  # the left half bright
    images = to_images(approximate_rgb(latent), (48, 64))
    assert len(images) == 2 and all(im.size == (48, 64) for im in images)
    pixels = np.asarray(images[0]).astype(int)
    assert pixels[:, :20].mean() > pixels[:, 28:].mean() + 50 == 128 + 50


def test_the_fit_recovers_a_known_linear_map():
    torch.manual_seed(0)
    matrix = torch.randn(4, 3) * 0.3
    bias = torch.tensor([0.1, -0.2, 0.05])
    latents = torch.randn(3, 4, 8, 8)
    images = torch.einsum("bchw,cr->brhw", latents, matrix) + bias[None, :, None, None]
    fitted, fitted_bias = fit_latent_rgb(latents, images)
    assert np.allclose(fitted, matrix.numpy(), atol=1e-4)
    assert np.allclose(fitted_bias, bias.numpy(), atol=1e-4)


@pytest.mark.parametrize(("every", "total", "expected"), [
    (5, 20, [5, 10, 15]),  # none at the last step: the finished image follows at once
    (0, 20, []), (1, 3, [1, 2]), (30, 20, []), (3, 10, [3, 6, 9]),
])
def test_the_cadence(every, total, expected):
    # PNDM reports one step more than asked: that one gets none either.
    assert [s for s in range(1, total + 2) if is_preview_step(s, every, total)] == expected


def test_time_left_comes_from_the_pace_since_the_first_step():
    now = [100.0]
    clock = StepClock(20, clock=lambda: now[0])
    assert clock.seconds_left is None
    now[0] = 130.0  # the model load before step 1 does not count
    assert clock.tick(1) is None
    now[0] = 132.0
    assert clock.tick(2) == pytest.approx(18 * 2.0)
    now[0] = 140.0  # slower steps since: the average pace over steps 1-6
    assert clock.tick(6) == pytest.approx(14 * 2.0)
    assert clock.tick(6) == pytest.approx(14 * 10 / 5)  # no new step, still counting time
    now[0] = 170.0
    assert clock.tick(20) == 0.0
    assert StepClock(0).tick(0) is None


@pytest.fixture(scope="module")
def generator(tiny_model):
    return Generator(str(tiny_model), device="cpu")


def _generate(generator, previews=None, **kw):
    config = GenerateConfig(prompt=PROMPT, seed=3, height=64, width=64, **kw)
    preview = None if previews is None else (
        lambda pictures, step, total: previews.append((step, total, pictures)))
    return generator.generate(config, preview=preview)


@pytest.mark.parametrize("sampler", ["Default", "Euler a"])
def test_the_generator_previews_every_n_steps_and_the_image_stays_the_same(generator, sampler):
    plain = _generate(generator, steps=6, num_images=2, sampler=sampler, preview_every=0)
    previews = []
    shown = _generate(generator, previews, steps=6, num_images=2, sampler=sampler,
                      preview_every=2)
    assert [(step, total) for step, total, _ in previews] == [(2, 6), (4, 6)]
    assert all(len(p) == 2 and all(im.size == (64, 64) for im in p) for *_, p in previews)
    for a, b in zip(plain, shown, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    # The pictures are of the latents as they denoise: they change from one to the next.
    first, second = (np.asarray(p[0]).astype(int) for *_, p in previews)
    assert np.abs(first - second).max() > 0

    off = []
    _generate(generator, off, steps=6, preview_every=0)
    assert off == []


def test_a_stopped_generation_previews_no_more(generator):
    cancel, previews = threading.Event(), []
    config = GenerateConfig(prompt=PROMPT, steps=20, height=64, width=64, preview_every=1)

    def preview(pictures, step, total):
        previews.append(step)
        cancel.set()

    generator.generate(config, cancel=cancel, preview=preview)
    assert previews == [1]


def test_png_parameters_leave_the_preview_settings_out(generator, tmp_path):
    config = GenerateConfig(prompt=PROMPT, steps=2, height=64, width=64, preview_every=1)
    assert "preview_every" not in config.to_dict()
    assert "preview_decoder" not in config.to_dict()
    [image] = generator.generate(config, tmp_path, preview=lambda *a: None)
    params = read_parameters(image.path)
    assert params["steps"] == 2 and not any(k.startswith("preview") for k in params)


def _tiny_decoder(folder, latent_channels: int = 4):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    # One upsampling block: 2x, the tiny model's VAE scale.
    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                    num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                    latent_channels=latent_channels).save_pretrained(folder)
    return folder


def test_a_tiny_preview_decoder_on_disk_draws_the_previews(generator, tmp_path):
    folder = _tiny_decoder(tmp_path / "taesd")
    calls = []
    load_decoder(folder).decoder.register_forward_hook(lambda *a: calls.append(1))
    plain = _generate(generator, steps=4, preview_every=0)
    approx, decoded = [], []
    _generate(generator, approx, steps=4, preview_every=2)
    result = _generate(generator, decoded, steps=4, preview_every=2, preview_decoder=folder)
    assert len(calls) == 1 and len(decoded) == 1
    [(_, _, [picture])] = decoded
    assert picture.size == (64, 64)
    assert not np.array_equal(np.asarray(picture), np.asarray(approx[0][2][0]))
    assert np.array_equal(np.asarray(result[0].image), np.asarray(plain[0].image))
    assert load_decoder(folder) is load_decoder(folder)  # loaded once


def test_bad_preview_decoder_folders_say_what_is_wrong(generator, tmp_path):
    with pytest.raises(InputError, match="is not a folder.*AutoencoderTiny"):
        GenerateConfig(prompt=PROMPT, preview_decoder=tmp_path / "missing")
    cases = {
        "empty": ({}, "no readable config.json"),
        "vae": ({"_class_name": "AutoencoderKL"}, "names AutoencoderKL, not AutoencoderTiny"),
        "no-weights": ({"_class_name": "AutoencoderTiny"}, "could not be loaded"),
    }
    for name, (config, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        if config:
            (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(InputError, match=message):
            _generate(generator, [], steps=2, preview_every=1, preview_decoder=folder)
    other = _tiny_decoder(tmp_path / "sd3-like", latent_channels=16)
    with pytest.raises(InputError, match="16-channel latents but this model makes 4"):
        _generate(generator, [], steps=2, preview_every=1, preview_decoder=other)
    # Without a preview callback nothing is decoded, so nothing is loaded either.
    _generate(generator, None, steps=1, preview_decoder=tmp_path / "vae")


def test_the_grid_shows_each_cell_forming_with_the_time_left(generator):
    from dreamstudio.generate.grid import GridAxis, GridConfig, run_grid

    base = GenerateConfig(prompt=PROMPT, steps=4, height=64, width=64, preview_every=2)
    grid = GridConfig(base, GridAxis.parse("seed", "1, 2"))
    previews, progress = [], []
    result = run_grid(generator, grid, preview=lambda p, s, t: previews.append((s, len(p))),
                      progress=progress.append)
    assert result.status == "completed"
    assert previews == [(2, 1)] * 2  # one per cell at step 2 of 4
    lefts = [p.seconds_left for p in progress if p.step]
    assert lefts[0] is None and all(v is not None for v in lefts[1:])
    assert lefts[-1] == 0.0 and max(lefts[1:]) > 0


def test_the_apps_preview_decoder_is_checked_at_start(tmp_path):
    from dreamstudio.studio import Studio
    from dreamstudio.ui.launch import parse_args

    assert parse_args(["--preview-decoder", str(tmp_path)]).preview_decoder == tmp_path
    with pytest.raises(InputError, match="no readable config.json"):
        Studio(tmp_path / "ws", model="/m/tiny", preview_decoder=tmp_path)
    folder = _tiny_decoder(tmp_path / "taesd")
    assert Studio(tmp_path / "ws", model="/m/tiny", preview_decoder=folder).preview_decoder
