"""Per-photo captions in training: where the identifier goes, the token ids the trainer feeds
for each drawn photo, and what the run records of them (info.json, kohya, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dreamstudio.config import PrepareConfig, TrainConfig
from dreamstudio.data import review
from dreamstudio.data.manifest import load_manifest
from dreamstudio.data.prepare import list_image_files, prepare_photos
from dreamstudio.errors import TrainingError
from dreamstudio.lora.files import read_lora_info
from dreamstudio.lora.kohya import kohya_metadata
from dreamstudio.train import step as step_module
from dreamstudio.train.captions import caption_prompt
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.train.latents import tokenize
from dreamstudio.train.resume import check_resumable, resume_settings
from dreamstudio.train.setup import Batches
from dreamstudio.train.trainer import train

PROMPT = "a photo of sks dog"
CLASS = "a photo of dog"


@pytest.mark.parametrize(("caption", "prompt"), [
    ("a dog on a sofa", "a sks dog on a sofa"),
    ("two Dogs in the snow", "two sks Dogs in the snow"),
    ("my dog, wearing a red collar", "my sks dog, wearing a red collar"),
    ("on a sofa", "a photo of sks dog, on a sofa"),
    ("a hotdog stand", "a photo of sks dog, a hotdog stand"),  # 'dog' only as a word
    ("a SKS dog at the beach", "a SKS dog at the beach"),  # already there: as it is
    ("sks sleeping", "sks sleeping"),
    ("   ", PROMPT),
    (None, PROMPT),
])
def test_the_identifier_goes_before_the_class_noun_or_the_prompt_in_front(caption, prompt):
    assert caption_prompt(caption, PROMPT, CLASS) == prompt


def test_a_multi_word_class_noun_and_a_prompt_without_a_class_noun():
    assert caption_prompt("a stuffed animal on a shelf", "a photo of zwx stuffed animal",
                          "a photo of stuffed animal") == "a zwx stuffed animal on a shelf"
    # No class noun to tell apart: the whole instance prompt goes in front.
    assert caption_prompt("a dog on a sofa", "sks") == "sks, a dog on a sofa"


@pytest.fixture
def captioned(tmp_path: Path, small_dog_dir: Path) -> tuple[Path, dict[str, str]]:
    """The dog photos prepared (none held out), two of them captioned; with the prompt each
    photo must train on, by crop name."""
    out = tmp_path / "crops"
    prepare_photos(list_image_files(small_dog_dir), out,
                   PrepareConfig(mode="object", size=64, hold_out=False))
    names = [r.output for r in load_manifest(out).kept]
    assert len(names) >= 3, "the test needs photos without a caption too"
    review.set_caption(out, names[0], "a dog on a sofa")
    review.set_caption(out, names[1], "running on grass")
    expected = {name: PROMPT for name in names}
    expected[names[0]] = "a sks dog on a sofa"
    expected[names[1]] = "a photo of sks dog, running on grass"
    return out, expected


def _config(model, instance_dir, out, **kw) -> TrainConfig:
    settings = {"steps": 4, "resolution": 64, "batch_size": 2, "flip": True,
                "checkpoint_every": 0, "validation_every": 0, "mixed_precision": "no",
                "export_kohya": False}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=instance_dir, instance_prompt=PROMPT,
                       output_dir=out, **settings)


def _record(monkeypatch) -> list[dict]:
    """What each step's batch held: the photos drawn, the token ids and embeddings fed."""
    steps: list[dict] = []
    drawn: list[torch.Tensor] = []
    real_next, real_batch = Batches.next, step_module._batch

    def next_indices(self):
        drawn.append(real_next(self))
        return drawn[-1]

    def batch(session):
        made = real_batch(session)
        steps.append({"session": session, "photos": drawn[-1].clone(),
                      "ids": made.ids.clone(),
                      "embeds": None if made.cond is None else made.cond.embeds.detach().clone()})
        return made

    monkeypatch.setattr(Batches, "next", next_indices)
    monkeypatch.setattr(step_module, "_batch", batch)
    return steps


@pytest.mark.parametrize("train_text_encoder", [True, False])
def test_the_trainer_feeds_each_drawn_photo_its_captions_prompt(
        tiny_model, captioned, tmp_path, monkeypatch, train_text_encoder):
    folder, expected = captioned
    steps = _record(monkeypatch)
    train(_config(tiny_model, folder, tmp_path / "lora", steps=6,
                  train_text_encoder=train_text_encoder))
    assert len(steps) == 6
    session = steps[0]["session"]
    tokenizer, names = session.pipe.tokenizer, [p.name for p in session.instance.files]
    seen = set()
    for record in steps:
        prompts = [expected[names[i]] for i in record["photos"].tolist()]
        seen.update(prompts)
        assert torch.equal(record["ids"], tokenize(tokenizer, prompts))
        if train_text_encoder:
            assert record["embeds"] is None
        else:  # the cached embeddings of each drawn photo's own prompt
            with torch.no_grad():
                embeds = session.text_encoder(tokenize(tokenizer, prompts))[0]
            torch.testing.assert_close(record["embeds"], embeds)
    assert len(seen) >= 2, "the draw should mix captioned and uncaptioned photos"


def test_without_captions_or_with_them_off_every_photo_trains_on_the_instance_prompt(
        tiny_model, small_dog_dir, captioned, tmp_path, monkeypatch):
    folder, _ = captioned
    steps = _record(monkeypatch)
    train(_config(tiny_model, small_dog_dir, tmp_path / "plain", steps=2))
    train(_config(tiny_model, folder, tmp_path / "off", steps=2, use_captions=False))
    assert len(steps) == 4
    tokenizer = steps[0]["session"].pipe.tokenizer
    for record in steps:
        assert torch.equal(record["ids"], tokenize(tokenizer, [PROMPT] * 2))
    off = read_lora_info(tmp_path / "off")
    assert off["captions"] == {} and off["config"]["use_captions"] is False


def test_the_run_records_its_captions_in_info_and_kohya_metadata(
        tiny_model, captioned, tmp_path):
    folder, expected = captioned
    result = train(_config(tiny_model, folder, tmp_path / "lora", steps=1, export_kohya=True))
    info = read_lora_info(tmp_path / "lora")
    captioned_prompts = {k: v for k, v in expected.items() if v != PROMPT}
    assert info["captions"] == captioned_prompts
    assert info["config"]["use_captions"] is True
    with safe_open(str(result.kohya_path), "pt") as f:
        meta = f.metadata()
    assert meta == kohya_metadata(info)
    tags = json.loads(meta["ss_tag_frequency"])["instance"]
    assert tags == {PROMPT: 1, **{p: 1 for p in captioned_prompts.values()}}
    assert meta["dreamstudio_use_captions"] == "True"


def test_kohya_tag_frequency_counts_a_caption_used_by_several_photos():
    info = {"config": {"instance_prompt": PROMPT},
            "captions": {"a.png": "a sks dog on a sofa", "b.png": "a sks dog on a sofa",
                         "c.png": "a sks dog in the snow"}}
    tags = json.loads(kohya_metadata(info)["ss_tag_frequency"])["instance"]
    assert tags == {PROMPT: 1, "a sks dog on a sofa": 2, "a sks dog in the snow": 1}
    older = json.loads(kohya_metadata({"config": {"instance_prompt": PROMPT}})[
        "ss_tag_frequency"])
    assert older == {"instance": {PROMPT: 1}}


def test_a_resume_refuses_captions_edited_since_the_checkpoint(
        tiny_model, captioned, tmp_path):
    folder, _ = captioned
    out = tmp_path / "lora"
    train(_config(tiny_model, folder, out, steps=4, checkpoint_every=2))
    first = load_manifest(folder).kept[0].output
    review.set_caption(folder, first, "a dog on a red sofa")
    with pytest.raises(TrainingError, match=r"captions \(Data tab\) differ .* step 2"):
        check_resumable(_config(tiny_model, folder, out, steps=6, resume=True))
    review.set_caption(folder, first, "a dog on a sofa")  # set back: the resume goes on
    resumed = train(_config(tiny_model, folder, out, steps=6, resume=True,
                            checkpoint_every=2))
    assert resumed.status == "completed" and resumed.steps_done == 6
    # Turning captions off changes what is trained on, too.
    with pytest.raises(TrainingError, match="turn captions off"):
        check_resumable(_config(tiny_model, folder, out, steps=8, resume=True,
                                use_captions=False))


def test_a_checkpoint_from_before_captions_resumes_only_without_them(captioned, tmp_path):
    folder, _ = captioned
    config = _config("some/model", folder, tmp_path / "run", steps=10, resume=True)
    # As earlier versions wrote it: no captions digest.
    save_checkpoint(config.output_dir, 3, {"w": torch.zeros(1)},
                    {"step": 3, "settings": resume_settings(config)}, keep=2)
    with pytest.raises(TrainingError, match="captions"):
        check_resumable(config)
    off = _config("some/model", folder, tmp_path / "run", steps=10, resume=True,
                  use_captions=False)
    assert check_resumable(off).step == 3
