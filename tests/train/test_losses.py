"""The loss-side training methods: prior prediction, min-SNR-gamma, offset noise and the
face-weighted loss; their formulas, what they do to a tiny-model run, and their records."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from dreamstudio.config import TrainConfig
from dreamstudio.data.manifest import PhotoResult, PrepareReport, write_manifest
from dreamstudio.errors import InputError, TrainingError
from dreamstudio.lora.files import read_lora_info
from dreamstudio.lora.kohya import kohya_metadata
from dreamstudio.train import step as step_module
from dreamstudio.train import trainer as trainer_module
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.train.latents import face_weight_maps
from dreamstudio.train.losses import face_weight_map, min_snr_weights, offset_noise, weighted_mse
from dreamstudio.train.resume import check_resumable, resume_settings
from dreamstudio.train.step import training_step
from dreamstudio.train.trainer import train
from dreamstudio.workspace.runs import load_run_settings, save_run_settings

PROMPT, CLASS_PROMPT = "a photo of sks dog", "a photo of dog"
METHODS = {"prior_mode": "prediction", "min_snr_gamma": 5.0, "noise_offset": 0.05,
           "face_loss_weight": 1.0, "face_outside_weight": 0.3}


def _config(model, instance_dir, output_dir, **kw) -> TrainConfig:
    settings = {"steps": 3, "resolution": 64, "checkpoint_every": 0, "validation_every": 0,
                "mixed_precision": "no", "export_kohya": False}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=instance_dir, instance_prompt=PROMPT,
                       output_dir=output_dir, **settings)


def _capture_sessions(monkeypatch, before=None) -> list:
    """Record the session of every step the trainer runs; `before(session, step)` first."""
    sessions = []

    def step(session, index):
        sessions.append(session)
        if before is not None:
            before(session, index)
        return training_step(session, index)

    monkeypatch.setattr(trainer_module, "training_step", step)
    return sessions


def _lora_layers(session):
    from peft.tuners.lora import LoraLayer

    models = [session.accelerator.unwrap_model(m) for m in (session.unet, session.text_encoder)]
    return [m for model in models for m in model.modules() if isinstance(m, LoraLayer)]


# Min-SNR-gamma


class _Scheduler:
    def __init__(self, alphas):
        self.alphas_cumprod = torch.tensor(alphas, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_the_formula_on_hand_picked_timesteps(kind):
    alphas = [255 / 256, 15 / 16, 0.5, 0.125, 1 / 128]  # exact in float32
    scheduler, gamma = _Scheduler(alphas), 5.0
    timesteps = torch.tensor([0, 1, 2, 3, 4])
    got = min_snr_weights(timesteps, scheduler, gamma, kind)
    for t, weight in zip(timesteps.tolist(), got.tolist(), strict=True):
        snr = alphas[t] / (1 - alphas[t])
        want = min(snr, gamma) / (snr + 1 if kind == "v_prediction" else snr)
        assert weight == pytest.approx(want, rel=1e-5), (t, kind)
    # Noisy steps (SNR below gamma) keep their full weight under epsilon.
    if kind == "epsilon":
        assert got[2:].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_min_snr_weights_read_the_real_schedule(tiny_model):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(tiny_model, subfolder="scheduler")
    t = torch.tensor([10, 500, 990])
    a = scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a)
    want = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr
    torch.testing.assert_close(min_snr_weights(t, scheduler, 5.0, "epsilon"), want.float())


# Offset noise


def test_offset_noise_adds_one_constant_per_image_and_channel():
    noise = torch.zeros(64, 4, 8, 8)
    shifted = offset_noise(noise, 0.05, torch.Generator().manual_seed(0))
    per_channel = shifted.flatten(2)
    assert torch.equal(per_channel, per_channel[..., :1].expand_as(per_channel))
    assert per_channel[..., 0].std().item() == pytest.approx(0.05, rel=0.2)
    assert offset_noise(noise, 0.0) is noise


# Face-weighted loss


def test_the_face_box_maps_into_the_crop_then_to_latent_cells():
    # A 200 px crop at (100, 100); the face covers crop pixels 50-150, latent cells 2-5 of 8.
    weights = face_weight_map([150, 150, 250, 250], [100, 100, 300, 300], 8, 1.0, 0.25)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    assert torch.all(weights[inside] == 1.0) and torch.all(weights[~inside] == 0.25)
    # A face edge inside a cell weighs that cell by the part it covers.
    half = face_weight_map([150, 150, 237.5, 250], [100, 100, 300, 300], 8, 1.0, 0.0)
    assert half[3, 5].item() == pytest.approx(0.5) and half[3, 6].item() == 0.0
    assert torch.equal(face_weight_map(None, [0, 0, 8, 8], 4, 2.0, 0.0), torch.ones(4, 4))


def test_with_outside_weight_zero_what_lies_outside_the_face_does_not_count():
    weights = face_weight_map([150, 150, 250, 250], [100, 100, 300, 300], 8, 1.0, 0.0)
    mask = weights[None, None].expand(2, 1, 8, 8)
    outside = (weights == 0).expand(2, 4, 8, 8)
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    loss = weighted_mse(pred, target, mask)
    noisy_pred = torch.where(outside, pred + 10 * torch.randn_like(pred), pred)
    noisy_target = torch.where(outside, torch.randn_like(target), target)
    assert weighted_mse(noisy_pred, noisy_target, mask).item() == loss.item()
    pred.requires_grad_(True)
    weighted_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[outside] == 0) and torch.all(pred.grad[~outside] != 0)


def _face_folder(src, dst, face_box=(8, 16, 40, 48), with_face=1):
    """A prepared folder of 64 px crops (crop box = the whole 64 px photo), the first
    `with_face` with a face box."""
    dst.mkdir()
    results = []
    for i, path in enumerate(sorted(src.glob("*.png"))):
        shutil.copy(path, dst / path.name)
        results.append(PhotoResult(source=path.name, kept=True, output=path.name,
                                   crop_box=[0, 0, 64, 64],
                                   face_box=list(face_box) if i < with_face else None))
    write_manifest(PrepareReport(results=results), dst)
    return dst, [dst / r.output for r in results]


def test_face_maps_follow_the_manifest_and_mirror_with_the_flips(small_dog_dir, tmp_path):
    folder, files = _face_folder(small_dog_dir, tmp_path / "faces")
    maps = face_weight_maps(folder, files, 8, 1.0, 0.0, mirrored=True)
    n = len(files)
    assert maps.shape == (2 * n, 1, 8, 8)
    assert torch.all(maps[0, 0, 2:6, 1:5] == 1) and maps[0].sum().item() == 16
    assert torch.equal(maps[n], maps[0].flip(-1)) and not torch.equal(maps[n], maps[0])
    assert torch.all(maps[1:n] == 1)  # no face box: trained as usual
    plain = face_weight_maps(small_dog_dir, sorted(small_dog_dir.glob("*.png")), 8, 1.0, 0.0)
    assert torch.all(plain == 1)  # no manifest at all


def test_a_face_weighted_run_weights_its_steps_by_the_face_maps(
    tiny_model, small_dog_dir, tmp_path, monkeypatch
):
    folder, files = _face_folder(small_dog_dir, tmp_path / "faces", with_face=len(
        list(small_dog_dir.glob("*.png"))))
    sessions = _capture_sessions(monkeypatch)
    seen = []
    original = step_module.weighted_mse

    def spy(pred, target, pixel_weights=None, sample_weights=None):
        seen.append(pixel_weights)
        return original(pred, target, pixel_weights, sample_weights)

    monkeypatch.setattr(step_module, "weighted_mse", spy)
    result = train(_config(tiny_model, folder, tmp_path / "run", steps=2, flip=True,
                           face_outside_weight=0.0))
    assert result.status == "completed"
    maps = sessions[0].face_weights
    assert maps.shape[0] == 2 * len(files)
    latent = sessions[0].instance_latents.mean.shape[-1]
    assert maps.shape[-1] == latent and (maps == 0).any()
    assert len(seen) == 2 and all(w is not None and (w == 0).any() for w in seen)


# Prior prediction


def test_prior_prediction_is_zero_at_lora_scale_zero_and_writes_no_class_image(
    tiny_model, small_dog_dir, tmp_path, monkeypatch
):
    from diffusers import UNet2DConditionModel

    def scale(session, step):
        for layer in _lora_layers(session):
            layer.unscale_layer()
            if step == 2:
                layer.scale_layer(0.0)

    sessions = _capture_sessions(monkeypatch, scale)
    class_dir = tmp_path / "class"
    result = train(_config(tiny_model, small_dog_dir, tmp_path / "run", class_dir=class_dir,
                           class_prompt=CLASS_PROMPT, prior_mode="prediction",
                           learning_rate=1e-2, text_encoder_lr=1e-2))
    assert result.status == "completed"
    prior = sessions[0].prior_losses
    assert len(prior) == 3
    assert prior[0] == 0.0  # lora_B starts at zero: the LoRA changes nothing yet
    assert prior[1] > 0.0  # it has drifted after one step
    assert prior[2] == 0.0  # scale 0 on every LoRA layer: the base model's own output
    assert not class_dir.exists()

    base = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet").state_dict()
    trained = sessions[0].accelerator.unwrap_model(sessions[0].unet).state_dict()
    compared = 0
    for key, value in trained.items():
        if "lora_" in key:
            continue
        name = key.replace(".base_layer", "")
        torch.testing.assert_close(value, base[name], rtol=0, atol=0)
        compared += 1
    assert compared == len(base)


def test_prior_prediction_with_a_frozen_text_encoder(tiny_model, small_dog_dir, tmp_path,
                                                     monkeypatch):
    sessions = _capture_sessions(monkeypatch)
    result = train(_config(tiny_model, small_dog_dir, tmp_path / "run", steps=2,
                           class_prompt=CLASS_PROMPT, prior_mode="prediction",
                           train_text_encoder=False))
    assert result.status == "completed"
    s = sessions[0]
    assert s.prior_losses[0] == 0.0 and len(s.prior_losses) == 2
    torch.testing.assert_close(s.cached_embeds["class"].embeds, s.base_class_embeds.embeds)


def test_prior_prediction_needs_a_class_prompt_but_no_class_folder(tmp_path):
    config = TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path,
                         class_prompt=CLASS_PROMPT, prior_mode="prediction")
    assert config.with_prior_preservation and not config.uses_class_images
    with pytest.raises(InputError, match="class folder"):
        TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path,
                    class_prompt=CLASS_PROMPT)
    for bad, match in [({"prior_mode": "both"}, "prior mode"), ({"min_snr_gamma": 0}, "gamma"),
                       ({"noise_offset": -0.1}, "noise offset"),
                       ({"face_loss_weight": 0, "face_outside_weight": 0}, "both 0")]:
        with pytest.raises(InputError, match=match):
            TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path,
                        **bad)


# Records: run config, resume, kohya metadata


def test_every_method_is_in_the_run_config_the_lora_record_and_the_kohya_file(
    tiny_model, small_dog_dir, tmp_path
):
    folder, _ = _face_folder(small_dog_dir, tmp_path / "faces")
    config = _config(tiny_model, folder, tmp_path / "run", steps=2, class_prompt=CLASS_PROMPT,
                     export_kohya=True, **METHODS)
    save_run_settings(config)
    reloaded = TrainConfig(**load_run_settings(config.output_dir))
    assert {k: getattr(reloaded, k) for k in METHODS} == METHODS
    result = train(config)
    info = read_lora_info(result.output_dir)
    with safe_open(str(result.kohya_path), "pt") as f:
        meta = f.metadata()
    assert meta["dreamstudio_prior_mode"] == "prediction"
    assert float(meta["ss_min_snr_gamma"]) == 5.0 and float(meta["ss_noise_offset"]) == 0.05
    assert float(meta["dreamstudio_face_loss_weight"]) == 1.0
    assert float(meta["dreamstudio_face_outside_weight"]) == 0.3
    assert {k: info["config"][k] for k in METHODS} == METHODS


def test_methods_left_off_are_absent_from_the_kohya_metadata(tmp_path):
    config = TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path)
    meta = kohya_metadata({"config": config.to_dict()})
    for key in ("dreamstudio_prior_mode", "ss_min_snr_gamma", "ss_noise_offset",
                "dreamstudio_face_loss_weight", "dreamstudio_face_outside_weight"):
        assert key not in meta


def _resume_config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path / "run",
                       model="some/model", resolution=64, steps=10, resume=True,
                       class_prompt=CLASS_PROMPT, class_dir=tmp_path / "class", **kw)


def test_a_resume_must_keep_the_prior_mode_but_may_change_the_weightings(tmp_path):
    written = _resume_config(tmp_path)
    save_checkpoint(written.output_dir, 4, {"w": torch.zeros(1)},
                    {"step": 4, "settings": resume_settings(written)}, keep=2)
    with pytest.raises(TrainingError, match=r"prior_mode \(was 'class_images', now 'predic"):
        check_resumable(_resume_config(tmp_path, prior_mode="prediction"))
    reweighted = _resume_config(tmp_path, min_snr_gamma=5.0, noise_offset=0.05,
                                face_outside_weight=0.3)
    assert check_resumable(reweighted).step == 4


def test_a_checkpoint_from_before_prior_modes_resumes_as_class_images(tmp_path):
    written = _resume_config(tmp_path)
    older = {k: v for k, v in resume_settings(written).items() if k != "prior_mode"}
    save_checkpoint(written.output_dir, 4, {"w": torch.zeros(1)},
                    {"step": 4, "settings": older}, keep=2)
    assert check_resumable(written).step == 4
    with pytest.raises(TrainingError, match="prior_mode"):
        check_resumable(_resume_config(tmp_path, prior_mode="prediction"))


def test_the_train_tab_form_round_trips_every_method(tmp_path):
    from dreamstudio.ui.train_form import FIELDS, form_values, train_settings

    config = TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path,
                         class_prompt=CLASS_PROMPT, **METHODS)
    values = form_values(config.to_dict())
    assert values["min_snr_gamma"] is True  # a checkbox
    settings = train_settings(values)
    assert settings == {k: getattr(config, k) for k in FIELDS}
    off = train_settings(form_values(TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT,
                                                 output_dir=tmp_path).to_dict()))
    assert off["min_snr_gamma"] is None and off["prior_mode"] == "class_images"


def test_min_snr_and_offset_noise_reach_a_v_prediction_run(tiny_vpred_model, small_dog_dir,
                                                           tmp_path, monkeypatch):
    calls, offsets = [], []
    weights, offset = step_module.min_snr_weights, step_module.offset_noise

    def snr_spy(timesteps, scheduler, gamma, kind):
        calls.append((gamma, kind))
        return weights(timesteps, scheduler, gamma, kind)

    def offset_spy(noise, strength, generator=None):
        shifted = offset(noise, strength, generator)
        shift = (shifted - noise).flatten(2)
        offsets.append((shift.std(-1).max().item(), shift.abs().max().item()))
        return shifted

    monkeypatch.setattr(step_module, "min_snr_weights", snr_spy)
    monkeypatch.setattr(step_module, "offset_noise", offset_spy)
    result = train(_config(tiny_vpred_model, small_dog_dir, tmp_path / "run", steps=2,
                           min_snr_gamma=5.0, noise_offset=0.05))
    assert result.status == "completed"
    assert calls == [(5.0, "v_prediction")] * 2
    # A constant per image and channel, not zero.
    assert len(offsets) == 2 and all(spread < 1e-6 < size for spread, size in offsets)
