"""Pivotal tuning on SDXL (pivotal.py): the new tokens in both tokenizers, trainable rows in
both text encoders, saved as clip_l / clip_g, reloaded by the generator, resumed."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import Generator
from dreamstudio.lora.embeddings import SDXL_KEYS, read_embeddings
from dreamstudio.lora.files import read_lora_info
from dreamstudio.train import trainer
from dreamstudio.train.checkpoints import PIVOTAL_KEY, PIVOTAL_KEY_2
from dreamstudio.tune.candidates import export_checkpoint, run_candidates

PROMPT = "a photo of sks dog"
LATER = "a photo of sks dog on the beach"
CPU = torch.device("cpu")
ENCODERS = ("text_encoder", "text_encoder_2")
TOKENIZERS = ("tokenizer", "tokenizer_2")


def _config(model, photos, out, **kw) -> TrainConfig:
    settings = {"steps": 4, "resolution": 64, "checkpoint_every": 0, "validation_every": 0,
                "mixed_precision": "no", "export_kohya": False, "pivotal": True,
                "pivotal_lr": 5e-2, "learning_rate": 5e-3, "text_encoder_lr": 5e-3}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=photos, instance_prompt=PROMPT,
                       output_dir=out, **settings)


def _unet_out(pipe, unet, embeds, pooled, latents) -> torch.Tensor:
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]])
    return unet(latents, torch.tensor([500]), embeds,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


def _train_capturing(config: TrainConfig, rows_per_step: list | None = None,
                     progress=None, cancel=None):
    """Train, and keep what the trained session computes before it is dropped: both
    encoders' token embeddings, the prompt embeddings of LATER and the UNet's output."""
    seen: dict = {}
    finish, step = trainer._finish, trainer.training_step

    def capture(session, steps_per_second):
        with torch.no_grad():
            embeds, _, pooled, _ = session.pipe.encode_prompt(
                prompt=session.prompt(LATER), device=CPU, num_images_per_prompt=1,
                do_classifier_free_guidance=False)
            latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
            seen["unet"] = _unet_out(session.pipe, session.unet, embeds, pooled, latents)
        seen.update(embeds=embeds, pooled=pooled, latents=latents)
        for name in ENCODERS:
            emb = getattr(session.pipe, name).get_input_embeddings()
            seen[name] = {"start": emb.start, "base": emb.base.weight.detach().clone(),
                          "rows": emb.rows.detach().clone()}
        return finish(session, steps_per_second)

    def stepping(session, i):
        loss = step(session, i)
        if rows_per_step is not None:
            rows_per_step.append([r.detach().clone() for r in session.pivotal.parameters()])
        return loss

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "_finish", capture)
        mp.setattr(trainer, "training_step", stepping)
        result = trainer.train(config, progress, cancel)
    return result, seen


@pytest.fixture(scope="module")
def run(tiny_sdxl_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl-pivotal-run")
    return _train_capturing(_config(tiny_sdxl_model, small_dog_dir, out))


@pytest.fixture(scope="module")
def base_pipe(tiny_sdxl_model):
    return load_pipeline(str(tiny_sdxl_model), CPU, torch.float32)


def _base_weight(pipe, name: str) -> torch.Tensor:
    return getattr(pipe, name).get_input_embeddings().weight.detach().clone()


def test_only_the_new_tokens_rows_change_in_both_text_encoders(run, base_pipe):
    result, seen = run
    assert result.status == "completed"
    for name, tok in zip(ENCODERS, TOKENIZERS, strict=True):
        base = _base_weight(base_pipe, name)
        start = seen[name]["start"]
        assert start == base.shape[0], name
        assert torch.equal(seen[name]["base"][:start], base), name  # bit-identical
        rows = seen[name]["rows"]
        assert rows.shape == (2, base.shape[1]), name
        ids = getattr(base_pipe, tok)("sks", add_special_tokens=False).input_ids
        assert not torch.allclose(rows[0], base[ids].mean(0)), name  # trained from its start
    # Each encoder has rows of its own (started from its own embedding), not one shared.
    assert not torch.equal(seen["text_encoder"]["rows"], seen["text_encoder_2"]["rows"])


def test_the_saved_files_hold_both_encoders_rows(run):
    result, seen = run
    record = read_lora_info(result.output_dir)["pivotal"]
    assert record["token"] == "<sks>" and record["vectors"] == 2
    assert record["family"] == "sdxl"
    for name in ("diffusers_file", "a1111_file"):
        tensors = load_file(str(result.output_dir / record[name]))
        assert set(tensors) == set(SDXL_KEYS.values())
        for component, key in SDXL_KEYS.items():
            torch.testing.assert_close(tensors[key], seen[component]["rows"], rtol=0, atol=0)


def test_generation_with_the_saved_files_reproduces_the_trained_model(run, tiny_sdxl_model,
                                                                      base_pipe):
    result, seen = run
    gen = Generator(str(tiny_sdxl_model), device="cpu", dtype=torch.float32)
    config = GenerateConfig(lora_dir=result.output_dir, prompt=LATER, unet_scale=1.0,
                            text_encoder_scale=1.0, width=64, height=64)
    gen.load_for(config)
    embeds, _, pooled, _ = gen._prompt_embeddings(config)
    torch.testing.assert_close(embeds, seen["embeds"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, seen["pooled"], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        unet = _unet_out(gen.pipeline, gen.pipeline.unet, embeds, pooled, seen["latents"])
    torch.testing.assert_close(unet, seen["unet"], rtol=1e-4, atol=1e-4)

    # Without the LoRA both tokenizers and text encoders are the base model's again.
    gen.load_for(GenerateConfig(prompt=LATER, width=64, height=64))
    pipe = gen.pipeline
    for name, tok in zip(ENCODERS, TOKENIZERS, strict=True):
        assert "<sks>" not in getattr(pipe, tok).get_vocab(), tok
        assert torch.equal(_base_weight(pipe, name), _base_weight(base_pipe, name)), name
    gen.load_for(config)  # and loading it again works
    torch.testing.assert_close(gen._prompt_embeddings(config)[0], seen["embeds"],
                               rtol=1e-5, atol=1e-5)


def test_both_encoders_rows_train_without_the_text_encoder_lora_and_stop_when_told(
        tiny_sdxl_model, small_dog_dir, tmp_path):
    rows: list[list[torch.Tensor]] = []
    config = _config(tiny_sdxl_model, small_dog_dir, tmp_path / "run",
                     train_text_encoder=False, pivotal_stop=0.5)
    result, seen = _train_capturing(config, rows)
    for i, name in enumerate(ENCODERS):
        assert not torch.equal(rows[0][i], rows[1][i]), name  # trained in the first half
        assert torch.equal(rows[1][i], rows[2][i]) and torch.equal(rows[2][i], rows[3][i])
        assert torch.equal(seen[name]["rows"], rows[-1][i]), name
    weights = load_file(str(result.lora_path))
    assert weights and not any(k.startswith("text_encoder") for k in weights)


def test_a_resumed_sdxl_pivotal_run_equals_an_uninterrupted_one(tiny_sdxl_model,
                                                                small_dog_dir, tmp_path):
    kw = {"steps": 4, "checkpoint_every": 2}
    straight, _ = _train_capturing(_config(tiny_sdxl_model, small_dog_dir, tmp_path / "a", **kw))
    cancel = threading.Event()

    def progress(p):
        if p.phase == "training" and p.step == 2:
            cancel.set()

    out = tmp_path / "b"
    first, _ = _train_capturing(_config(tiny_sdxl_model, small_dog_dir, out, **kw), None,
                                progress, cancel)
    assert first.status == "cancelled"
    # A checkpoint kept as a LoRA keeps both encoders' rows (tune/candidates.py).
    checkpoint = run_candidates(out)[0]
    saved = load_file(str(checkpoint.weights_file))
    kept = export_checkpoint(checkpoint, tmp_path / "kept", out, kohya=True)
    record = read_lora_info(kept)["pivotal"]
    assert record["token"] == "<sks>" and record["family"] == "sdxl"
    embeddings = read_embeddings(kept, record)
    torch.testing.assert_close(embeddings["text_encoder"], saved[PIVOTAL_KEY])
    torch.testing.assert_close(embeddings["text_encoder_2"], saved[PIVOTAL_KEY_2])
    assert not any(k.startswith("pivotal") for k in load_file(
        str(kept / "pytorch_lora_weights.safetensors")))  # not LoRA weights

    resumed, _ = _train_capturing(_config(tiny_sdxl_model, small_dog_dir, out, resume=True,
                                          **kw))
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a = load_file(str(straight.output_dir / "embedding/learned_embeds.safetensors"))
    b = load_file(str(resumed.output_dir / "embedding/learned_embeds.safetensors"))
    for key in SDXL_KEYS.values():
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_an_embedding_that_fails_in_text_encoder_2_leaves_no_token_behind(run, tiny_sdxl_model,
                                                                         tmp_path):
    result, _ = run
    lora = shutil.copytree(result.output_dir, tmp_path / "lora")
    record = read_lora_info(lora)["pivotal"]
    path = lora / record["diffusers_file"]
    tensors = load_file(str(path))
    tensors["clip_g"] = tensors["clip_g"][:, :5].contiguous()  # the wrong width for text encoder 2
    save_file(tensors, str(path))
    gen = Generator(str(tiny_sdxl_model), device="cpu", dtype=torch.float32)
    with pytest.raises(InputError, match="cannot be loaded"):
        gen.load_for(GenerateConfig(lora_dir=lora, prompt=LATER, width=64, height=64))
    for tok in TOKENIZERS:
        assert "<sks>" not in getattr(gen.pipeline, tok).get_vocab(), tok
