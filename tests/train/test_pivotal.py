"""Pivotal tuning: new identifier tokens whose embedding trains with the LoRA (pivotal.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.errors import InputError, TrainingError
from dreamstudio.generate.generator import Generator
from dreamstudio.lora.embeddings import A1111_KEY, pivotal_prompt, read_embedding
from dreamstudio.lora.files import read_lora_info
from dreamstudio.lora.kohya import find_kohya_file
from dreamstudio.train import trainer
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.train.resume import check_resumable, resume_settings
from dreamstudio.tune.candidates import export_checkpoint, run_candidates

PROMPT = "a photo of sks dog"
LATER = "a photo of sks dog on the beach"
CPU = torch.device("cpu")


def _config(model, photos, out, **kw) -> TrainConfig:
    settings = {"steps": 4, "resolution": 64, "checkpoint_every": 0, "validation_every": 0,
                "mixed_precision": "no", "export_kohya": False, "pivotal": True,
                "pivotal_lr": 5e-2, "learning_rate": 5e-3, "text_encoder_lr": 5e-3}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=photos, instance_prompt=PROMPT,
                       output_dir=out, **settings)


def _train_capturing(config: TrainConfig, rows_per_step: list | None = None,
                     progress=None, cancel=None):
    """Train, and keep what the trained session computes before it is dropped: its token
    embedding, its prompt embeddings of LATER and its UNet's output on fixed inputs."""
    seen: dict = {}
    finish, step = trainer._finish, trainer.training_step

    def capture(session, steps_per_second):
        with torch.no_grad():
            embeds, _ = session.pipe.encode_prompt(session.prompt(LATER), CPU, 1, False)
            latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
            seen["unet"] = session.unet(latents, torch.tensor([500]), embeds).sample
        emb = session.text_encoder.get_input_embeddings()
        seen.update(embeds=embeds, latents=latents, start=emb.start,
                    base=emb.base.weight.detach().clone(), rows=emb.rows.detach().clone())
        return finish(session, steps_per_second)

    def stepping(session, i):
        loss = step(session, i)
        if rows_per_step is not None:
            rows_per_step.append(session.pivotal.rows.detach().clone())
        return loss

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "_finish", capture)
        mp.setattr(trainer, "training_step", stepping)
        result = trainer.train(config, progress, cancel)
    return result, seen


@pytest.fixture(scope="module")
def run(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pivotal-run")
    result, seen = _train_capturing(_config(tiny_model, small_dog_dir, out, export_kohya=True))
    return result, seen


@pytest.fixture(scope="module")
def base_embedding(tiny_model):
    pipe = load_pipeline(str(tiny_model), CPU, torch.float32)
    return pipe.text_encoder.get_input_embeddings().weight.detach().clone()


def test_the_identifier_becomes_the_token_as_a_whole_word_in_any_case():
    assert pivotal_prompt("a photo of SKS dog, sks.", "sks", "<sks>") == \
        "a photo of <sks> dog, <sks>."
    assert pivotal_prompt("skss and masks and <sks>", "sks", "<sks>") == \
        "skss and masks and <sks>"


def test_only_the_new_tokens_rows_change(run, base_embedding, tiny_model):
    _, seen = run
    start = seen["start"]
    assert start == base_embedding.shape[0]
    assert torch.equal(seen["base"][:start], base_embedding)  # bit-identical
    rows = seen["rows"]
    assert rows.shape == (2, base_embedding.shape[1])
    tokenizer = load_pipeline(str(tiny_model), CPU, torch.float32).tokenizer
    sks = base_embedding[tokenizer("sks", add_special_tokens=False).input_ids].mean(0)
    assert not torch.allclose(rows[0], sks)  # trained away from its start


def test_the_saved_files_reload_in_diffusers_and_name_the_tokens(run, tiny_model):
    result, seen = run
    info = read_lora_info(result.output_dir)
    record = info["pivotal"]
    assert record["token"] == "<sks>" and record["vectors"] == 2
    for name, token in ((record["diffusers_file"], None), (record["a1111_file"], "<sks>")):
        pipe = load_pipeline(str(tiny_model), CPU, torch.float32)
        pipe.load_textual_inversion(str(result.output_dir / name), token=token)
        ids = pipe.tokenizer.convert_tokens_to_ids(["<sks>", "<sks>_1"])
        weight = pipe.text_encoder.get_input_embeddings().weight
        torch.testing.assert_close(weight[ids], seen["rows"], rtol=0, atol=0)
        assert pipe.maybe_convert_prompt("<sks> dog", pipe.tokenizer) == "<sks> <sks>_1 dog"
    with safe_open(str(result.output_dir / record["a1111_file"]), "pt") as f:
        assert list(f.keys()) == [A1111_KEY] and f.get_tensor(A1111_KEY).shape[0] == 2
    assert record["a1111_file"].endswith("/sks.safetensors")  # A1111's prompt word
    assert find_kohya_file(result.output_dir) is not None  # the embedding is kept apart


def test_the_kohya_file_records_the_tokens(run):
    result, _ = run
    with safe_open(str(find_kohya_file(result.output_dir)), "pt") as f:
        meta = f.metadata()
    assert meta["dreamstudio_pivotal"] == "True"
    assert meta["dreamstudio_pivotal_token"] == "<sks>"
    assert meta["dreamstudio_pivotal_tokens"] == "2"
    assert meta["dreamstudio_pivotal_lr"] == "0.05" and meta["dreamstudio_pivotal_stop"] == "1.0"
    assert meta["dreamstudio_pivotal_embedding"] == "embedding/sks.safetensors"


def test_generation_with_the_saved_files_reproduces_the_trained_model(run, tiny_model,
                                                                      base_embedding):
    result, seen = run
    gen = Generator(str(tiny_model), device="cpu", dtype=torch.float32)
    config = GenerateConfig(lora_dir=result.output_dir, prompt=LATER, unet_scale=1.0,
                            text_encoder_scale=1.0)
    gen.load_for(config)
    embeds, _ = gen._prompt_embeddings(config)
    torch.testing.assert_close(embeds, seen["embeds"], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        unet = gen.pipeline.unet(seen["latents"], torch.tensor([500]), embeds).sample
    torch.testing.assert_close(unet, seen["unet"], rtol=1e-4, atol=1e-4)

    # Without the LoRA the tokenizer and text encoder are the base model's again.
    gen.load_for(GenerateConfig(prompt=LATER))
    pipe = gen.pipeline
    assert "<sks>" not in pipe.tokenizer.get_vocab()
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, base_embedding)
    gen.load_for(config)  # and loading it again works
    torch.testing.assert_close(gen._prompt_embeddings(config)[0], seen["embeds"],
                               rtol=1e-5, atol=1e-5)


def test_the_embedding_trains_without_the_text_encoder_lora_and_stops_when_told(
        tiny_model, small_dog_dir, tmp_path):
    rows: list[torch.Tensor] = []
    config = _config(tiny_model, small_dog_dir, tmp_path / "run", train_text_encoder=False,
                     pivotal_stop=0.5)
    result, seen = _train_capturing(config, rows)
    assert not torch.equal(rows[0], rows[1])  # trained during the first half
    assert torch.equal(rows[1], rows[2]) and torch.equal(rows[2], rows[3])  # then frozen
    assert torch.equal(seen["rows"], rows[-1])
    weights = load_file(str(result.lora_path))
    assert weights and not any(k.startswith("text_encoder.") for k in weights)


def test_a_resumed_pivotal_run_equals_an_uninterrupted_one(tiny_model, small_dog_dir,
                                                           tmp_path):
    kw = {"steps": 6, "checkpoint_every": 2, "pivotal_stop": 0.7, "validation_every": 3,
          "validation_steps": 2}
    straight, _ = _train_capturing(_config(tiny_model, small_dog_dir, tmp_path / "a", **kw))
    cancel = threading.Event()

    def progress(p):
        if p.phase == "training" and p.step == 3:
            cancel.set()

    out = tmp_path / "b"
    first, _ = _train_capturing(_config(tiny_model, small_dog_dir, out, **kw), None, progress,
                                cancel)
    assert first.status == "cancelled"
    # A checkpoint kept as a LoRA keeps its own tokens (tune/candidates.py).
    checkpoint = run_candidates(out)[0]
    kept = export_checkpoint(checkpoint, tmp_path / "kept", out, kohya=True)
    record = read_lora_info(kept)["pivotal"]
    assert record["token"] == "<sks>"
    torch.testing.assert_close(read_embedding(kept, record),
                               load_file(str(checkpoint.weights_file))["pivotal.rows"])
    resumed, _ = _train_capturing(_config(tiny_model, small_dog_dir, out, resume=True, **kw))
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a = load_file(str(straight.output_dir / "embedding/learned_embeds.safetensors"))
    b = load_file(str(resumed.output_dir / "embedding/learned_embeds.safetensors"))
    torch.testing.assert_close(a["<sks>"], b["<sks>"], rtol=1e-5, atol=1e-6)
    with pytest.raises(TrainingError, match="pivotal"):
        check_resumable(_config(tiny_model, small_dog_dir, out, resume=True, steps=9,
                                pivotal=False))


def test_a_checkpoint_from_before_pivotal_tuning_resumes_only_without_it(tmp_path):
    config = _config("some/model", tmp_path, tmp_path / "run", resume=True, pivotal=False,
                     steps=10)
    old = {k: v for k, v in resume_settings(config).items() if not k.startswith("pivotal")}
    save_checkpoint(config.output_dir, 5, {"w": torch.zeros(1)},
                    {"step": 5, "settings": old}, keep=2)
    assert check_resumable(config).step == 5
    with pytest.raises(TrainingError, match="pivotal"):
        check_resumable(_config("some/model", tmp_path, tmp_path / "run", resume=True,
                                steps=10))


@pytest.mark.parametrize(("field", "value"), [("pivotal_tokens", 0), ("pivotal_tokens", 9),
                                              ("pivotal_lr", 0), ("pivotal_stop", 0),
                                              ("pivotal_stop", 1.5)])
def test_bad_pivotal_settings_are_refused(tmp_path, field, value):
    with pytest.raises(InputError, match="pivotal"):
        _config("some/model", tmp_path, tmp_path / "run", **{field: value})


def test_the_settings_round_trip_through_the_saved_run_config(run):
    result, _ = run
    cfg = TrainConfig(**read_lora_info(result.output_dir)["config"])
    assert (cfg.pivotal, cfg.pivotal_tokens, cfg.pivotal_lr, cfg.pivotal_stop) == \
        (True, 2, 5e-2, 1.0)


def test_the_cli_flags_set_the_pivotal_settings(tmp_path):
    from dreamstudio.cli import build_parser, config_from

    args = build_parser().parse_args([
        "train", "--instance-dir", str(tmp_path), "--instance-prompt", PROMPT, "--output",
        str(tmp_path / "o"), "--pivotal", "--pivotal-tokens", "3", "--pivotal-lr", "1e-3",
        "--pivotal-stop", "0.5"])
    cfg = config_from(args, TrainConfig)
    assert (cfg.pivotal, cfg.pivotal_tokens, cfg.pivotal_lr, cfg.pivotal_stop) == \
        (True, 3, 1e-3, 0.5)
    plain = config_from(build_parser().parse_args([
        "train", "--instance-dir", str(tmp_path), "--instance-prompt", PROMPT, "--output",
        str(tmp_path / "o")]), TrainConfig)
    assert plain.pivotal is False


def test_kohya_metadata_without_pivotal_tuning_says_so_and_names_no_tokens():
    from dreamstudio.lora.kohya import kohya_metadata

    meta = kohya_metadata({"config": {"rank": 4, "pivotal": False}, "pivotal": {"token": "x"}})
    assert meta["dreamstudio_pivotal"] == "False"
    assert not [k for k in meta if k.startswith("dreamstudio_pivotal_")]
