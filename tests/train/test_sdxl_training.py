"""SDXL LoRA training on the tiny SDXL model: it learns, its file loads in a fresh pipeline,
both text encoders train, resume, prior preservation, mixed precision and validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import dreamstudio.train.trainer as trainer_module
from dreamstudio.config import TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.lora.files import read_lora_info
from dreamstudio.train.checkpoints import list_checkpoints
from dreamstudio.train.conditioning import TextConditioner
from dreamstudio.train.latents import LatentCache, load_images
from dreamstudio.train.step import training_step

PROMPT = "a photo of sks dog"
CLASS_PROMPT = "a photo of dog"
LR, TE2_LR = 3e-3, 3e-4


def _config(model, instance_dir, output_dir, **kw) -> TrainConfig:
    settings = {"steps": 4, "resolution": 64, "rank": 4, "seed": 0, "mixed_precision": "no",
                "checkpoint_every": 0, "validation_every": 0, "export_kohya": False}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=instance_dir, instance_prompt=PROMPT,
                       output_dir=output_dir, **settings)


def _train_capturing(config, progress=None, cancel=None):
    """train(config) and the session it ran (None if no step ran)."""
    sessions = []

    def step(session, index):
        sessions.append(session)
        return training_step(session, index)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "training_step", step)
        result = trainer_module.train(config, progress, cancel)
    return result, sessions[0] if sessions else None


def _denoising_loss(pipe, pixels: torch.Tensor, seed: int = 123, num_timesteps: int = 4):
    """The SDXL UNet's loss on `pixels` at fixed noise and timesteps, with the instance
    prompt and each image's size conditioning (its own 64 px, uncropped)."""
    from diffusers import DDPMScheduler

    generator = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    total = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(total * 0.05, total * 0.95, num_timesteps).long()
    text = TextConditioner(pipe)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]]).repeat(num_timesteps, 1)
    losses = []
    with torch.no_grad():
        cache = LatentCache(pipe.vae, pixels, "cpu", torch.float32)
        cond = text.encode(text.tokenize([PROMPT])).repeat(num_timesteps)
        for i in range(len(cache)):
            latents = cache.sample(torch.tensor([i]), generator).repeat(num_timesteps, 1, 1, 1)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            pred = pipe.unet(noisy, timesteps, **cond.with_time_ids(time_ids).unet_kwargs())
            losses.append(F.mse_loss(pred.sample, noise).item())
    return sum(losses) / len(losses)


def _latents(pipe, seed: int = 7):
    """Two sampler steps of the whole pipeline: text encoders, UNet, both LoRA scales."""
    return pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="latent",
                generator=torch.Generator().manual_seed(seed)).images


@pytest.fixture(scope="module")
def trained(tiny_sdxl_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl-lora")
    return _train_capturing(_config(tiny_sdxl_model, small_dog_dir, out, steps=24,
                                    learning_rate=LR, text_encoder_2_lr=TE2_LR))


def test_the_sdxl_lora_loads_in_a_fresh_pipeline_with_all_three_parts(trained,
                                                                      tiny_sdxl_model):
    result, _ = trained
    assert result.status == "completed"
    keys = load_file(str(result.lora_path)).keys()
    for part in ("unet.", "text_encoder.", "text_encoder_2."):
        assert any(k.startswith(part) for k in keys), part
    assert read_lora_info(result.output_dir)["family"] == "sdxl"
    pipe = load_pipeline(str(tiny_sdxl_model), torch.device("cpu"))
    pipe.load_lora_weights(str(result.output_dir))
    adapters = pipe.get_list_adapters()
    assert adapters.get("unet") and adapters.get("text_encoder") and adapters.get(
        "text_encoder_2")


def test_the_loaded_lora_gives_the_trained_models_output(trained, tiny_sdxl_model):
    result, session = trained
    pipe = load_pipeline(str(tiny_sdxl_model), torch.device("cpu"))
    pipe.load_lora_weights(str(result.output_dir))
    noisy = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([100, 700])
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]]).repeat(2, 1)
    outputs = []
    with torch.no_grad():
        for text, unet in ((TextConditioner(pipe), pipe.unet),
                           (session.text, session.accelerator.unwrap_model(session.unet))):
            for model in (unet, text.text_encoder, text.text_encoder_2):
                model.eval()
            cond = text.encode(text.tokenize([PROMPT, PROMPT])).with_time_ids(time_ids)
            outputs.append(unet(noisy, timesteps, **cond.unet_kwargs()).sample)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_sdxl_training_measurably_learns(trained, tiny_sdxl_model, small_dog_dir):
    result, _ = trained
    pixels = load_images(small_dog_dir, 64).pixels[:3]
    pipe = load_pipeline(str(tiny_sdxl_model), torch.device("cpu"))
    before = _denoising_loss(pipe, pixels)
    pipe.load_lora_weights(str(result.output_dir))
    after = _denoising_loss(pipe, pixels)
    # A short run on a shared CPU: lower, by less than a long run's margin.
    assert after < before * 0.99, (before, after)


def test_lora_scales_zero_give_the_base_models_output(trained, tiny_sdxl_model):
    result, _ = trained
    base = _latents(load_pipeline(str(tiny_sdxl_model), torch.device("cpu")))
    pipe = load_pipeline(str(tiny_sdxl_model), torch.device("cpu"))
    pipe.load_lora_weights(str(result.output_dir), adapter_name="subject")
    with_lora = _latents(pipe)
    pipe.set_adapters(["subject"], [0.0])
    assert not torch.allclose(with_lora, base, atol=1e-4)
    torch.testing.assert_close(_latents(pipe), base, rtol=0, atol=1e-6)


def test_both_text_encoders_train_the_second_at_its_own_rate(trained):
    result, session = trained
    weights = load_file(str(result.lora_path))
    ups = [v for k, v in weights.items() if k.startswith("text_encoder_2.") and ".up." in k]
    assert ups and all(v.abs().max() > 0 for v in ups)  # lora_B starts at zero
    groups = session.optimizer.param_groups
    te2 = {id(p) for p in session.accelerator.unwrap_model(session.text_encoder_2).parameters()}
    assert [g["initial_lr"] for g in groups] == [LR, 1e-4, TE2_LR]
    assert groups[2]["params"] and all(id(p) in te2 for p in groups[2]["params"])


def test_a_resumed_sdxl_run_ends_as_an_uninterrupted_one(tiny_sdxl_model, small_dog_dir,
                                                         tmp_path):
    kw = {"steps": 6, "checkpoint_every": 2, "flip": True, "lr_scheduler": "cosine"}
    straight = trainer_module.train(_config(tiny_sdxl_model, small_dog_dir,
                                            tmp_path / "straight", **kw))
    out, cancel = tmp_path / "interrupted", threading.Event()

    def progress(p):
        if p.phase == "training" and p.step == 3:
            cancel.set()

    first = trainer_module.train(_config(tiny_sdxl_model, small_dog_dir, out, **kw),
                                 progress, cancel)
    assert first.status == "cancelled" and [c.step for c in list_checkpoints(out)] == [2, 3]
    resumed = trainer_module.train(_config(tiny_sdxl_model, small_dog_dir, out, resume=True,
                                           **kw))
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a, b = load_file(str(straight.lora_path)), load_file(str(resumed.lora_path))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder_2.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_prior_prediction_runs_on_sdxl(tiny_sdxl_model, small_dog_dir, tmp_path):
    result, session = _train_capturing(_config(
        tiny_sdxl_model, small_dog_dir, tmp_path / "run", steps=2, class_prompt=CLASS_PROMPT,
        prior_mode="prediction", train_text_encoder=False))
    assert result.status == "completed"
    # At step 0 the LoRA adds nothing: its class prediction is the base's exactly.
    assert session.prior_losses[0] == 0.0 and len(session.prior_losses) == 2
    assert session.base_class_embeds.pooled.shape == (1, 32)


def test_class_image_prior_runs_on_sdxl(tiny_sdxl_model, small_dog_dir, tmp_path):
    class_dir = tmp_path / "class"
    result, session = _train_capturing(_config(
        tiny_sdxl_model, small_dog_dir, tmp_path / "run", steps=2, class_prompt=CLASS_PROMPT,
        class_dir=class_dir, num_class_images=2, class_image_steps=2, flip=True))
    assert result.status == "completed" and len(session.prior_losses) == 2
    made = sorted(class_dir.glob("class_*.png"))
    assert len(made) == 2 and all(Image.open(p).size == (64, 64) for p in made)
    # Class images: their own 64 px, uncropped, in both orientations.
    assert session.class_time_ids.tolist() == [[64, 64, 0, 0, 64, 64]] * 4
    # The defaults: the second text encoder learns at the first one's rate.
    assert [g["initial_lr"] for g in session.optimizer.param_groups][1:] == [1e-4, 1e-4]


def test_mixed_precision_with_checkpointing_and_validation_images_on_sdxl(
        tiny_sdxl_model, small_dog_dir, tmp_path):
    result = trainer_module.train(_config(
        tiny_sdxl_model, small_dog_dir, tmp_path / "run", steps=2, mixed_precision="bf16",
        gradient_checkpointing=True, validation_every=2, validation_steps=2))
    assert result.status == "completed" and np.isfinite(result.final_loss)
    shown = sorted((tmp_path / "run" / "validation").glob("*.png"))
    assert shown
    pixels = np.asarray(Image.open(shown[0]), dtype=np.float32)
    assert pixels.std() > 0  # drawn, not a blank (NaN-decoded) frame

