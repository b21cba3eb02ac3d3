"""Run names, resuming and class images through the Studio facade (no model is loaded)."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from PIL import Image

from dreamstudio.data.manifest import PrepareReport
from dreamstudio.errors import InputError, TrainingError
from dreamstudio.lora.files import WEIGHTS_NAME
from dreamstudio.studio import Studio
from dreamstudio.train.checkpoints import save_checkpoint
from dreamstudio.train.class_gallery import list_class_images
from dreamstudio.train.events import TrainResult
from dreamstudio.train.jobs import TrainingJobs
from dreamstudio.workspace.runs import SETTINGS_FILE, free_run_name

PROMPT = "a photo of sks dog"


def _instant_train(config, progress, cancel):
    return TrainResult("completed", config.output_dir, None, config.steps, 0.1, 0.0)


@pytest.fixture
def studio(tmp_path) -> Studio:
    studio = Studio(tmp_path / "ws", model="some/model")
    studio.jobs = TrainingJobs(train_fn=_instant_train)
    photos = studio.workspace.photos_dir("dog")
    photos.mkdir(parents=True)
    # A manifest of no photos: enough to count as prepared (the trainer is a stand-in).
    (photos / "manifest.json").write_text(json.dumps(PrepareReport(results=[]).to_dict()))
    return studio


def _run_dir(studio, name):
    path = studio.workspace.run_dir("dog", name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checkpoint(run_dir, step=5, **settings):
    saved = {"model": "some/model", "instance_prompt": PROMPT, "rank": 4, "resolution": 64}
    saved.update(settings)
    save_checkpoint(run_dir, step, {"w": torch.zeros(1)}, {"step": step, "settings": saved}, 2)


def test_a_used_run_name_is_refused_and_a_free_one_named(studio):
    (_run_dir(studio, "first-try") / "train.log").write_text("x")
    with pytest.raises(InputError, match="already exists") as err:
        studio.training_config("dog", PROMPT, run_name="first-try", resolution=64)
    assert "'first-try-2'" in str(err.value) and "Resume" not in str(err.value)
    (_run_dir(studio, "first-try-2") / "train.log").write_text("x")
    assert free_run_name(studio.workspace.loras_dir("dog"), "first-try") == "first-try-3"
    # An empty folder (nothing was written) is not a run.
    _run_dir(studio, "empty")
    config = studio.training_config("dog", PROMPT, run_name="empty", resolution=64)
    assert config.output_dir == studio.workspace.run_dir("dog", "empty") and not config.resume


def test_the_refusal_offers_resume_when_there_is_a_checkpoint(studio):
    _checkpoint(_run_dir(studio, "first-try"), step=40)
    with pytest.raises(InputError, match="Resume to continue it from step 40"):
        studio.training_config("dog", PROMPT, run_name="first-try", resolution=64)


def test_resume_needs_a_run_with_a_checkpoint(studio):
    with pytest.raises(InputError, match="does not exist"):
        studio.training_config("dog", PROMPT, run_name="nope", resume=True)
    (_run_dir(studio, "done") / WEIGHTS_NAME).write_bytes(b"x")
    with pytest.raises(InputError, match="finished LoRA but no checkpoint"):
        studio.training_config("dog", PROMPT, run_name="done", resume=True)
    _checkpoint(_run_dir(studio, "stopped"))
    config = studio.training_config("dog", PROMPT, run_name="stopped", resume=True,
                                    resolution=64, steps=10)
    assert config.resume and config.output_dir.name == "stopped"
    assert studio.run_info("dog", "stopped").checkpoint_step == 5


def test_resume_with_other_settings_is_refused_before_any_model_loads(studio):
    _checkpoint(_run_dir(studio, "stopped"), step=5)
    config = studio.training_config("dog", PROMPT, run_name="stopped", resume=True,
                                    resolution=64, rank=8, steps=10)
    with pytest.raises(TrainingError, match=r"rank \(was 4, now 8\)"):
        studio.start_training(config)
    short = studio.training_config("dog", PROMPT, run_name="stopped", resume=True,
                                   resolution=64, steps=5)
    with pytest.raises(TrainingError, match="set Steps above 5"):
        studio.start_training(short)
    assert studio.training_status().state == "idle"
    ok = studio.training_config("dog", PROMPT, run_name="stopped", resume=True,
                                resolution=64, steps=10)
    studio.start_training(ok)
    assert studio.jobs.wait(5).state == "completed"


def test_a_run_finds_its_settings_written_when_it_starts(studio):
    """The trainer tidies its folder first thing: the settings must be complete by then,
    not a temporary it would take for a killed attempt's leftover."""
    seen = []

    def trainer(config, progress, cancel):
        seen.append(sorted(p.name for p in config.output_dir.iterdir()))
        return TrainResult("completed", config.output_dir, None, 0, None, 0.0, [], [], "ok")

    studio.jobs = TrainingJobs(train_fn=trainer)
    config = studio.training_config("dog", PROMPT, run_name="tidy", resolution=64)
    studio.start_training(config)
    assert studio.jobs.wait(5).state == "completed"
    assert seen == [[SETTINGS_FILE]]
    refused = studio.training_config("dog", PROMPT, run_name="refused", resolution=64)

    def busy(config, progress, cancel):
        cancel.wait(10)
        return TrainResult("cancelled", config.output_dir, None, 0, None, 0.0, [], [], "stop")

    studio.jobs = TrainingJobs(train_fn=busy)
    studio.start_training(studio.training_config("dog", PROMPT, run_name="busy", resolution=64))
    with pytest.raises(TrainingError, match="already in progress"):
        studio.start_training(refused)
    assert not refused.output_dir.exists()  # a refused start writes nothing
    studio.cancel_training()
    assert studio.jobs.wait(5).state == "cancelled"


def test_a_started_run_keeps_its_settings_for_resuming(studio):
    config = studio.training_config("dog", PROMPT, run_name="r1", resolution=64, rank=8,
                                    flip=True)
    studio.start_training(config)
    studio.jobs.wait(5)
    saved = json.loads((config.output_dir / SETTINGS_FILE).read_text())
    assert saved == config.to_dict()
    runs = studio.runs("dog")
    assert [r.name for r in runs] == ["r1"]
    assert runs[0].settings["rank"] == 8 and runs[0].settings["flip"] is True
    assert not runs[0].resumable and not runs[0].has_lora


def _png(path, color=(200, 10, 10)):
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_class_images_tell_generated_from_yours(studio, tmp_path):
    folder = studio.class_images_dir("a photo of dog", 64)
    folder.mkdir(parents=True)
    _png(folder / "class_0000.png")
    _png(folder / "class_0001.png", (0, 0, 0))
    (folder / "class_images.json").write_text('{"class_prompt": "a photo of dog", "resolution": 64}')
    mine = _png(tmp_path / "class_0002.png", (1, 2, 3))  # a user file with a generated-like name
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")

    added, skipped = studio.add_class_images("a photo of dog", 64,
                                             [mine, mine, broken, folder / "class_0000.png"])
    assert [p.name for p in added] == ["own_class_0002.png"]
    assert {name for name, _ in skipped} == {"class_0002.png", "broken.png", "class_0000.png"}
    assert any("readable" in why for _, why in skipped)

    images = studio.class_images("a photo of dog", 64, wanted=10)
    assert images.folder == folder and len(images.images) == 3
    assert (images.generated, images.supplied, images.missing) == (2, 1, 7)
    assert {i.path.name: i.source for i in images.images}["own_class_0002.png"] == "yours"
    assert images.record["class_prompt"] == "a photo of dog"
    # Shared by subjects of one class: the folder depends on prompt, model and resolution.
    assert studio.class_images_dir("A photo of dog ", 64) == folder
    assert studio.class_images_dir("a photo of dog", 128) != folder


def test_class_images_need_a_class_prompt(studio, tmp_path):
    with pytest.raises(InputError, match="class prompt"):
        studio.class_images(" ", 64, 10)
    assert list_class_images(tmp_path / "none", 5).missing == 5


def test_a_run_that_failed_before_training_is_listed_as_failed_with_its_reason(studio,
                                                                              tmp_path):
    import dataclasses

    from dreamstudio.train.trainer import train
    from dreamstudio.workspace.runs import run_log_path

    empty = tmp_path / "no-photos"
    empty.mkdir()
    config = dataclasses.replace(studio.training_config("dog", PROMPT, run_name="broken"),
                                 instance_dir=empty, device="cpu")
    with pytest.raises(InputError, match="No usable instance images"):
        train(config)
    [run] = studio.runs("dog")
    assert (run.name, run.has_lora, run.resumable) == ("broken", False, False)
    assert run.failure.startswith("No usable instance images in")
    # A later attempt that has not failed (yet) is no failure.
    with open(run_log_path(run.path), "a", encoding="utf-8") as fh:
        fh.write("2025-01-01T00:00:00 INFO run starting: {}\n")
    assert studio.run_info("dog", "broken").failure is None


def _aged(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _temporaries(run, age_s):
    """What kill -9 leaves in a run folder (this version's and earlier ones'), `age_s` old."""
    folders = [run / "checkpoints" / ".writing-k2j3h4g5", run / ".saving-a1b2c3d4"]
    files = [run / ".Rex_the_dog.x7y8z9w0.tmp.safetensors", run / ".kohya-p0o9i8u7.safetensors",
             run / "validation" / ".step-000002-0.m5n6b7v8.tmp.png"]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "lora.safetensors").write_bytes(b"half")
        _aged(folder / "lora.safetensors", age_s)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    for path in [*files, *folders]:
        _aged(path, age_s)
    return [*folders, *files]


def test_listing_runs_clears_stale_temporaries_but_none_that_may_be_in_progress(studio,
                                                                               monkeypatch):
    from types import SimpleNamespace

    from dreamstudio.train.jobs import JobStatus
    from dreamstudio.train.resume import STALE_AFTER_S

    killed, other, training = (_run_dir(studio, n) for n in ("killed", "other", "training"))
    for run in (killed, other, training):
        (run / "train.log").write_text("x")
    stale = _temporaries(killed, STALE_AFTER_S + 60)
    stale_other = _temporaries(other, STALE_AFTER_S + 60)
    fresh = [killed / ".run_settings.q1w2e3r4.tmp.json"]
    fresh[0].write_bytes(b"{")
    # A checkpoint folder made long ago whose file is being written now is in progress.
    busy_folder = killed / "checkpoints" / ".writing-z9y8x7w6"
    busy_folder.mkdir()
    (busy_folder / "state.pt").write_bytes(b"...")
    _aged(busy_folder, STALE_AFTER_S + 60)
    fresh.append(busy_folder)
    # The run the app trains now is never touched, however old its temporaries look.
    in_training = _temporaries(training, STALE_AFTER_S + 60)
    monkeypatch.setattr(studio.jobs, "status", lambda: JobStatus(
        "running", config=SimpleNamespace(output_dir=training)))

    # Showing one run cleans it; listing them cleans them all.
    assert studio.run_info("dog", "other").exists
    assert [p for p in stale_other if os.path.lexists(p)] == []
    assert all(os.path.lexists(p) for p in stale)
    assert [r.name for r in studio.runs("dog")] == ["killed", "other", "training"]
    assert [p for p in stale if os.path.lexists(p)] == []
    assert all(p.exists() for p in [*fresh, *in_training])
    assert sorted(p.name for p in killed.iterdir()) == [
        ".run_settings.q1w2e3r4.tmp.json", "checkpoints", "train.log", "validation"]


def test_the_class_gallery_counts_what_the_next_run_would_use(studio):
    from dreamstudio.train.class_images import class_image_recipe

    folder = studio.class_images_dir("a photo of dog", 64)
    folder.mkdir(parents=True)
    as_asked = class_image_recipe("some/model", "a photo of dog", 64)  # 25 steps, "no"
    recipes = {"class_0000.png": as_asked, "class_0001.png": {**as_asked, "steps": 50},
               "class_0002.png": {**as_asked, "precision": "bf16"}}
    for name in recipes:
        _png(folder / name)
    _png(folder / "own_cat.png")
    (folder / "class_images.json").write_text(json.dumps({"images": recipes}))

    def usable(**settings):
        images = studio.class_images("a photo of dog", 64, 4, **settings)
        return sorted(i.path.name for i in images.usable), images.missing

    assert usable(mixed_precision="no") == (["class_0000.png", "own_cat.png"], 2)
    assert usable(mixed_precision="bf16") == (["class_0002.png", "own_cat.png"], 2)
    assert usable(mixed_precision="no", class_image_steps=50) == (
        ["class_0001.png", "own_cat.png"], 2)
    # The form's defaults: 25 steps, so the 50-step image is never counted.
    names, missing = usable()
    assert "class_0001.png" not in names and missing == 2
