"""DreamBooth LoRA training on the tiny model: outputs, learning, prior preservation, cancel."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.errors import InputError, TrainingError
from dreamstudio.lora.files import WEIGHTS_NAME, read_lora_info
from dreamstudio.train.jobs import TrainingJobs
from dreamstudio.train.latents import load_images
from dreamstudio.train.trainer import train
from tests.support.denoising_loss import fixed_noise_loss

PROMPT = "a photo of sks dog"


def _config(model, instance_dir, output_dir, **kw) -> TrainConfig:
    settings = {"steps": 40, "resolution": 64, "rank": 4, "seed": 0}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=instance_dir, instance_prompt=PROMPT,
                       output_dir=output_dir, **settings)


@pytest.fixture(scope="module")
def trained(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    return train(_config(tiny_model, small_dog_dir, out, steps=120))


def test_training_writes_a_diffusers_lora_that_a_fresh_pipeline_loads(trained, tiny_model):
    assert trained.status == "completed"
    assert trained.lora_path.name == WEIGHTS_NAME
    keys = load_file(str(trained.lora_path)).keys()
    assert any(k.startswith("unet.") for k in keys)
    assert any(k.startswith("text_encoder.") for k in keys)
    info = read_lora_info(trained.output_dir)
    assert info["config"]["instance_prompt"] == PROMPT
    assert info["steps_done"] == 120

    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    pipe.load_lora_weights(str(trained.output_dir))
    adapters = pipe.get_list_adapters()
    assert adapters.get("unet") and adapters.get("text_encoder")


def test_training_measurably_learns_the_instance_images(trained, tiny_model, small_dog_dir):
    pixels = load_images(small_dog_dir, 64).pixels
    base = load_pipeline(str(tiny_model), torch.device("cpu"))
    before = fixed_noise_loss(base, pixels, PROMPT, seed=123)
    base.load_lora_weights(str(trained.output_dir))
    after = fixed_noise_loss(base, pixels, PROMPT, seed=123)
    assert after < before * 0.93, (before, after)


def test_unet_only_training_has_no_text_encoder_keys(tiny_model, small_dog_dir, tmp_path):
    result = train(_config(tiny_model, small_dog_dir, tmp_path, steps=2,
                           train_text_encoder=False))
    keys = load_file(str(result.lora_path)).keys()
    assert keys and all(k.startswith("unet.") for k in keys)


def test_prior_preservation_generates_missing_class_images_and_reuses_them(
    tiny_model, small_dog_dir, tmp_path
):
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    cfg = _config(tiny_model, small_dog_dir, tmp_path / "out", steps=3,
                  class_dir=class_dir, class_prompt="a photo of dog", num_class_images=3,
                  class_image_steps=2)
    phases = []
    result = train(cfg, progress=lambda p: phases.append(p.phase))
    assert result.status == "completed"
    made = sorted(class_dir.glob("*.png"))
    assert len(made) == 3
    assert "class_images" in phases
    stamps = [p.stat().st_mtime_ns for p in made]
    phases.clear()
    train(cfg, progress=lambda p: phases.append(p.phase))
    assert [p.stat().st_mtime_ns for p in sorted(class_dir.glob("*.png"))] == stamps
    assert "class_images" not in phases
    keys = load_file(str(result.lora_path)).keys()
    assert any(k.startswith("text_encoder.") for k in keys)


def test_prior_loss_weight_enters_the_loss(tiny_model, small_dog_dir, tmp_path):
    class_dir = tmp_path / "class"
    base = {"steps": 1, "class_dir": class_dir, "class_prompt": "a photo of dog",
                "num_class_images": 2, "class_image_steps": 2}
    light = train(_config(tiny_model, small_dog_dir, tmp_path / "a", prior_loss_weight=0.0,
                          **base))
    heavy = train(_config(tiny_model, small_dog_dir, tmp_path / "b", prior_loss_weight=1.0,
                          **base))
    # Same seed, same data: the only difference is the weighted class term.
    assert heavy.losses[0] > light.losses[0] + 1e-3


def test_v_prediction_model_trains_on_velocity(tiny_vpred_model, small_dog_dir, tmp_path):
    result = train(_config(tiny_vpred_model, small_dog_dir, tmp_path, steps=2))
    assert read_lora_info(tmp_path)["prediction_type"] == "v_prediction"
    assert result.status == "completed"


def test_two_runs_back_to_back_with_different_precision(tiny_model, small_dog_dir, tmp_path):
    first = train(_config(tiny_model, small_dog_dir, tmp_path / "a", steps=2))
    second = train(_config(tiny_model, small_dog_dir, tmp_path / "b", steps=2,
                           mixed_precision="bf16"))
    assert first.status == second.status == "completed"
    weights = load_file(str(second.lora_path))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())


def test_cancel_stops_within_a_step_and_keeps_the_previous_lora(
    trained, tiny_model, small_dog_dir, tmp_path
):
    out = tmp_path / "run"
    out.mkdir()
    previous = trained.lora_path.read_bytes()
    (out / WEIGHTS_NAME).write_bytes(previous)
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p.step)
        if p.phase == "training" and p.step == 3:
            cancel.set()

    result = train(_config(tiny_model, small_dog_dir, out, steps=50), progress, cancel)
    assert result.status == "cancelled"
    assert result.steps_done == 3 and max(seen) == 3  # no step ran after the cancel
    assert "cancelled" in result.message
    assert (out / WEIGHTS_NAME).read_bytes() == previous


def test_only_one_background_run_at_a_time(tiny_model, small_dog_dir, tmp_path):
    jobs = TrainingJobs()
    jobs.start(_config(tiny_model, small_dog_dir, tmp_path / "a", steps=500))
    with pytest.raises(TrainingError, match="already in progress"):
        jobs.start(_config(tiny_model, small_dog_dir, tmp_path / "b", steps=2))
    assert jobs.cancel()
    status = jobs.wait(timeout=120)
    assert status.state == "cancelled"
    assert not (tmp_path / "a" / WEIGHTS_NAME).exists()
    # The app can train again afterwards.
    jobs.start(_config(tiny_model, small_dog_dir, tmp_path / "c", steps=2))
    assert jobs.wait(timeout=120).state == "completed"


def test_failed_run_reports_a_clear_error(tiny_model, tmp_path):
    jobs = TrainingJobs()
    empty = tmp_path / "empty"
    empty.mkdir()
    jobs.start(_config(tiny_model, empty, tmp_path / "out", steps=2))
    status = jobs.wait(timeout=60)
    assert status.state == "failed"
    assert "No usable instance images" in status.error


def test_non_finite_loss_stops_without_writing(tiny_model, small_dog_dir, tmp_path):
    with pytest.raises(TrainingError, match="loss became"):
        train(_config(tiny_model, small_dog_dir, tmp_path, steps=20, learning_rate=1e8,
                      text_encoder_lr=1e8, max_grad_norm=1e30))
    assert not (tmp_path / WEIGHTS_NAME).exists()


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"steps": 0}, "steps"),
        ({"rank": 0}, "rank"),
        ({"resolution": 100}, "resolution"),
        ({"class_dir": "x"}, "class prompt"),
        ({"mixed_precision": "fp8"}, "mixed precision"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        _config("m", tmp_path, tmp_path, **kw)


def test_class_images_are_drawn_at_the_runs_precision(tiny_model, tmp_path):
    from dreamstudio.core.models import load_pipeline
    from dreamstudio.train.class_images import generate_missing_class_images

    pipe = load_pipeline(str(tiny_model), torch.device("cpu"), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    pipe.unet.conv_in.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    for dtype in (torch.bfloat16, torch.float32):
        made = generate_missing_class_images(pipe, tmp_path / str(dtype), "a photo of dog", 1,
                                             64, steps=2, autocast_dtype=dtype)
        assert made == 1
        assert set(seen) == {dtype}
        seen.clear()
    assert pipe.unet.dtype == torch.float32, "the weights themselves stay as loaded"


def test_casting_a_unet_without_fp32_modules_logs_no_false_warning(tiny_model):
    import logging

    from diffusers import UNet2DConditionModel

    from dreamstudio.train.setup import cast_frozen

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    diffusers_log.addHandler(handler)
    try:
        unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
        unet.to(dtype=torch.bfloat16)  # diffusers' own cast warns about an empty list
        warned = len(records)
        cast_frozen(unet, torch.float32)
    finally:
        diffusers_log.removeHandler(handler)
    if warned == 0:
        pytest.skip("this diffusers no longer warns about an empty fp32-module list")
    assert len(records) == warned, "cast_frozen adds no warning"
    assert unet.dtype == torch.float32
    assert diffusers_log.level == logging.NOTSET, "the logger's level is restored"
