"""DoRA and a LoRA alpha of its own: what trains, and every file loading as it was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.errors import InputError, TrainingError
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.lora_fit import _read_shapes
from dreamstudio.lora.adapters import (
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    add_lora,
    classic_clip_path,
    peft_weights,
)
from dreamstudio.lora.files import (
    WEIGHTS_NAME,
    lora_state_dicts,
    read_lora_info,
    read_lora_weights,
    save_lora,
)
from dreamstudio.lora.kohya import finish_export, kohya_metadata, kohya_module_name
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.train.resume import check_resumable, resume_settings
from dreamstudio.train.trainer import train

PROMPT = "a photo of sks dog"
RANK, ALPHA = 4, 8


@pytest.fixture(scope="module")
def trained(tiny_model, small_dog_dir, tmp_path_factory):
    """A DoRA trained 3 steps with alpha 2 x rank: (its folder, the live model's peft
    weights as the trainer took them at the end, before writing any file)."""
    from dreamstudio.train import model_stage

    out = tmp_path_factory.mktemp("dora-run")
    taken = []

    def take(unet, text_encoder=None, text_encoder_2=None):
        taken.append({k: v.detach().clone() for k, v in
                      peft_weights(unet, text_encoder, text_encoder_2).items()})
        return taken[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_stage, "peft_weights", take)
        train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir,
                          instance_prompt=PROMPT, output_dir=out, steps=3, resolution=64,
                          checkpoint_every=0, validation_every=0, mixed_precision="no",
                          learning_rate=5e-3, text_encoder_lr=5e-3, rank=RANK,
                          lora_alpha=ALPHA, use_dora=True, subject_name="rex"))
    return out, taken[-1]


@pytest.fixture(scope="module")
def dora_run(trained):
    return trained[0]


def _inputs(pipe):
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    ids = pipe.tokenizer([PROMPT], padding="max_length", return_tensors="pt",
                         max_length=pipe.tokenizer.model_max_length).input_ids
    return latents, ids


@torch.no_grad()
def _outputs(pipe, embeds=None):
    """(text embeddings, UNet noise prediction given `embeds` or those embeddings)."""
    latents, ids = _inputs(pipe)
    own = pipe.text_encoder(ids)[0]
    return own, pipe.unet(latents, 10, own if embeds is None else embeds).sample


def _peft_model(model_dir, weights: dict, alpha, use_dora: bool):
    """The base pipeline with a peft adapter of these settings holding `weights`."""
    from peft.utils import set_peft_model_state_dict

    pipe = load_pipeline(str(model_dir), torch.device("cpu"))
    for prefix, model, targets in (("unet.", pipe.unet, UNET_TARGETS),
                                   ("text_encoder.", pipe.text_encoder, TEXT_ENCODER_TARGETS)):
        add_lora(model, RANK, targets, alpha, use_dora)
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        result = set_peft_model_state_dict(model, part)
        assert not result.unexpected_keys
    return pipe


def _assert_diffusers_loads_what_peft_runs(model_dir, folder, reference):
    loaded = load_pipeline(str(model_dir), torch.device("cpu"))
    loaded.load_lora_weights(str(folder))
    embeds, unet_out = _outputs(reference)
    base_embeds, _ = _outputs(load_pipeline(str(model_dir), torch.device("cpu")))
    assert (embeds - base_embeds).abs().max() > 1e-3  # the text-encoder LoRA does something
    got_embeds, got_unet = _outputs(loaded, embeds)
    torch.testing.assert_close(got_embeds, embeds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_unet, unet_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("alpha", "use_dora"), [(None, True), (ALPHA, False), (2, True)])
def test_diffusers_loads_the_file_to_the_outputs_of_the_peft_model(tiny_model, tmp_path,
                                                                    alpha, use_dora):
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    add_lora(pipe.unet, RANK, UNET_TARGETS, alpha, use_dora)
    add_lora(pipe.text_encoder, RANK, TEXT_ENCODER_TARGETS, alpha, use_dora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every LoRA weight (magnitudes too) away from its start
        for model in (pipe.unet, pipe.text_encoder):
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    info = {"config": {"rank": RANK, "lora_alpha": alpha, "use_dora": use_dora}}
    save_lora(tmp_path, *lora_state_dicts(peft_weights(pipe.unet, pipe.text_encoder)), info)
    _assert_diffusers_loads_what_peft_runs(tiny_model, tmp_path, pipe)


def test_the_trained_dora_reloads_in_diffusers_as_the_trained_model(tiny_model, trained):
    dora_run, weights = trained
    _assert_diffusers_loads_what_peft_runs(
        tiny_model, dora_run, _peft_model(tiny_model, weights, ALPHA, use_dora=True))


def _module(pipe, stem: str):
    """`unet.<path>` or `text_encoder.[text_model.]<path>` as the pipeline's module."""
    component, path = stem.split(".", 1)
    return getattr(pipe, component).get_submodule(path.removeprefix("text_model."))


def test_the_magnitude_vectors_train(tiny_model, dora_run):
    # A DoRA starts with each magnitude at its layer's row norms (B = 0 at the start).
    base = load_pipeline(str(tiny_model), torch.device("cpu"))
    weights = read_lora_weights(dora_run)
    magnitudes = {k: v for k, v in weights.items() if k.endswith(".lora_magnitude_vector")}
    assert {k.split(".")[0] for k in magnitudes} == {"unet", "text_encoder"}
    assert len(magnitudes) == sum(k.endswith(".lora_A.weight") for k in weights)
    moved = 0
    for key, magnitude in magnitudes.items():
        module = _module(base, key.removesuffix(".lora_magnitude_vector"))
        start = module.weight.detach().norm(dim=1)
        assert magnitude.shape == start.shape, key
        moved += not torch.allclose(magnitude, start, atol=1e-6)
    assert moved == len(magnitudes)


def test_the_file_reads_back_as_the_trained_peft_weights(trained):
    dora_run, trained_weights = trained
    # The file keeps CLIP's `text_model.` level, as other tools address the text encoder.
    weights = {(f"text_encoder.{classic_clip_path(k.removeprefix('text_encoder.'))}"
                if k.startswith("text_encoder.") else k): v for k, v in trained_weights.items()}
    back = read_lora_weights(dora_run)
    assert back.keys() == weights.keys()
    for key, tensor in weights.items():
        torch.testing.assert_close(back[key], tensor, msg=key)


def test_a_dora_file_is_a_lora_to_the_load_checks(dora_run):
    shapes = _read_shapes(dora_run / WEIGHTS_NAME)
    assert isinstance(shapes, dict)
    assert any("lora_magnitude_vector" in k for k in shapes)


def _kohya(dora_run):
    path = dora_run / "rex.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return load_file(str(path)), metadata


def test_the_kohya_file_has_the_real_alpha_and_a_dora_scale_per_module(tiny_model, dora_run):
    tensors, metadata = _kohya(dora_run)
    base = load_pipeline(str(tiny_model), torch.device("cpu"))
    modules = {}
    for key in read_lora_weights(dora_run):
        if key.endswith(".lora_A.weight"):
            stem = key.removesuffix(".lora_A.weight")
            modules[kohya_module_name(*stem.split(".", 1))] = _module(base, stem)
    scales = {k.removesuffix(".dora_scale"): v for k, v in tensors.items()
              if k.endswith(".dora_scale")}
    assert scales.keys() == modules.keys()
    for name, module in modules.items():
        # One value per output row, as (out, 1): the output-axis kind ComfyUI reads.
        assert scales[name].shape == (module.weight.shape[0], 1), name
        assert tensors[f"{name}.alpha"].item() == ALPHA
        assert tensors[f"{name}.lora_down.weight"].shape == (RANK, module.weight.shape[1])
    assert metadata["ss_network_alpha"] == str(ALPHA)
    assert metadata["ss_network_dim"] == str(RANK)
    assert metadata["dreamstudio_dora"] == "True"
    assert json.loads(metadata["ss_network_args"])["dora_wd"] is True


def test_a_missing_kohya_file_is_rewritten_with_the_real_alpha(dora_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    copy.mkdir()
    for name in (WEIGHTS_NAME, "dreamstudio_lora.json"):
        shutil.copy(dora_run / name, copy / name)
    assert finish_export(copy) == copy / "rex.safetensors"
    again, _ = _kohya(copy)
    original, _ = _kohya(dora_run)
    assert again.keys() == original.keys()
    for key, tensor in original.items():
        torch.testing.assert_close(again[key], tensor, msg=key)


def test_the_run_record_keeps_the_settings(dora_run):
    config = read_lora_info(dora_run)["config"]
    assert (config["use_dora"], config["lora_alpha"], config["rank"]) == (True, ALPHA, RANK)


def test_generating_with_a_dora_gives_what_diffusers_draws(tiny_model, dora_run):
    generator = Generator(str(tiny_model), device="cpu")
    config = {"prompt": PROMPT, "steps": 3, "seed": 3, "height": 64, "width": 64,
              "precision": "fp32"}
    base = np.asarray(generator.generate(GenerateConfig(**config))[0].image).astype(np.int16)
    image = np.asarray(generator.generate(GenerateConfig(lora_dir=dora_run, **config))[0]
                       .image).astype(np.int16)
    assert not np.array_equal(image, base)
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    pipe.load_lora_weights(str(dora_run))
    scheduler = generator.pipeline.scheduler  # the sampler the generator chose
    pipe.scheduler = type(scheduler).from_config(scheduler.config)
    expected = np.asarray(pipe(PROMPT, num_inference_steps=3, height=64, width=64,
                               generator=torch.Generator("cpu").manual_seed(3)).images[0]
                          ).astype(np.int16)
    assert np.abs(image - expected).max() <= 1


# --- the settings through the run config, a resume and the kohya metadata -----------------

def _settings(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT,
                       output_dir=tmp_path / "run", steps=10, **kw)


def test_dora_and_alpha_round_trip_through_the_run_config(tmp_path):
    config = _settings(tmp_path, use_dora=True, lora_alpha=16)
    again = TrainConfig(**json.loads(json.dumps(config.to_dict())))
    assert (again.use_dora, again.lora_alpha, again.alpha) == (True, 16, 16)
    assert _settings(tmp_path).alpha == _settings(tmp_path).rank  # unset: the rank
    assert _settings(tmp_path, lora_alpha=0).lora_alpha is None  # the form's 0: unset
    with pytest.raises(InputError, match="LoRA alpha must be between"):
        _settings(tmp_path, lora_alpha=-2)


def _checkpoint_with(tmp_path, settings: dict) -> None:
    save_checkpoint(tmp_path / "run", 4, {"unet.x.lora_A.weight": torch.zeros(1, 1)},
                    {"step": 4, "settings": settings}, keep=2)


def test_a_resume_must_keep_dora_and_alpha(tmp_path):
    _checkpoint_with(tmp_path, resume_settings(_settings(tmp_path, use_dora=True,
                                                         lora_alpha=8)))
    assert check_resumable(_settings(tmp_path, use_dora=True, lora_alpha=8, resume=True))
    with pytest.raises(TrainingError, match=r"use_dora \(was True, now False\)"):
        check_resumable(_settings(tmp_path, lora_alpha=8, resume=True))
    with pytest.raises(TrainingError, match=r"lora_alpha \(was 8, now 4\)"):
        check_resumable(_settings(tmp_path, use_dora=True, resume=True))


def test_a_checkpoint_from_before_the_settings_resumes_as_it_trained(tmp_path):
    old = {k: v for k, v in resume_settings(_settings(tmp_path)).items()
           if k not in ("use_dora", "lora_alpha")}
    _checkpoint_with(tmp_path, old)
    assert check_resumable(_settings(tmp_path, resume=True))
    assert check_resumable(_settings(tmp_path, lora_alpha=4, resume=True))  # = its rank
    with pytest.raises(TrainingError, match="use_dora"):
        check_resumable(_settings(tmp_path, use_dora=True, resume=True))
    with pytest.raises(TrainingError, match="lora_alpha"):
        check_resumable(_settings(tmp_path, lora_alpha=8, resume=True))


def test_the_kohya_metadata_of_a_plain_lora_says_no_dora():
    metadata = kohya_metadata({"config": {"rank": 8, "lora_alpha": None}})
    assert (metadata["ss_network_alpha"], metadata["dreamstudio_dora"]) == ("8", "False")
    assert "ss_network_args" not in metadata
