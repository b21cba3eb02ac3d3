"""Class images: each one's recipe is recorded, a run uses only those made as it asks (and
only as many as it asks for), the user's own pictures always count."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from dreamstudio.config import TrainConfig
from dreamstudio.core.models import load_pipeline
from dreamstudio.train import trainer
from dreamstudio.train.class_gallery import RECORD, list_class_images
from dreamstudio.train.class_images import class_image_recipe, generate_missing_class_images
from dreamstudio.workspace.runs import run_log_path


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return load_pipeline(str(tiny_model), torch.device("cpu"))


@pytest.fixture
def loaded_class_files(monkeypatch):
    """The class image files each training run loads."""
    seen = []
    real = trainer.load_image_files

    def spy(files, resolution, what, folder):
        seen.append([p.name for p in files])
        return real(files, resolution, what, folder)

    monkeypatch.setattr(trainer, "load_image_files", spy, raising=False)
    return seen


def _train(tiny_model, small_dog_dir, out, class_dir, class_prompt, **kw):
    return trainer.train(TrainConfig(
        model=str(tiny_model), instance_dir=small_dog_dir, output_dir=out,
        instance_prompt="a photo of sks dog", class_dir=class_dir, class_prompt=class_prompt,
        steps=1, resolution=64, class_image_steps=2, mixed_precision="no",
        validation_every=0, checkpoint_every=0, export_kohya=False, **kw))


def test_class_images_made_for_another_prompt_are_not_reused(pipe, tiny_model, small_dog_dir,
                                                             tmp_path, loaded_class_files):
    class_dir = tmp_path / "class"
    assert generate_missing_class_images(pipe, class_dir, "a photo of dog", 2, 64,
                                         steps=2, model=str(tiny_model)) == 2
    result = _train(tiny_model, small_dog_dir, tmp_path / "run", class_dir,
                    "a photo of a cat", num_class_images=2)
    assert result.status == "completed"
    assert loaded_class_files == [["class_0002.png", "class_0003.png"]]
    record = json.loads((class_dir / RECORD).read_text())["images"]
    assert [record[f"class_{i:04d}.png"]["class_prompt"] for i in range(4)] == [
        "a photo of dog", "a photo of dog", "a photo of a cat", "a photo of a cat"]
    assert record["class_0003.png"]["seed"] == 3 and record["class_0003.png"]["steps"] == 2
    log = run_log_path(tmp_path / "run").read_text()
    assert "2 class images" in log and "made differently ('a photo of dog' at 64 px" in log


def test_a_run_trains_on_the_number_of_class_images_asked_for(pipe, tiny_model, small_dog_dir,
                                                              tmp_path, loaded_class_files):
    class_dir = tmp_path / "class"
    generate_missing_class_images(pipe, class_dir, "a photo of dog", 3, 64, steps=2,
                                  model=str(tiny_model))
    Image.new("RGB", (64, 64), (9, 9, 9)).save(class_dir / "own_mine.png")
    _train(tiny_model, small_dog_dir, tmp_path / "run", class_dir, "a photo of dog",
           num_class_images=2)
    # Yours first, then the generated ones; the rest stays on disk for later runs.
    assert loaded_class_files == [["own_mine.png", "class_0000.png"]]
    assert len(list(class_dir.glob("*.png"))) == 4


def _png(path):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)


def test_each_recipe_difference_counts_and_the_users_pictures_always_do(tmp_path):
    wanted = class_image_recipe("m", "a photo of dog", 64, 25, torch.bfloat16)
    changes = {"class_0000.png": {}, "class_0001.png": {"steps": 50},
               "class_0002.png": {"precision": "no"}, "class_0003.png": {"resolution": 128},
               "class_0004.png": {"model": "other"},
               "class_0005.png": {"class_prompt": " A photo of  DOG"}}
    for name in changes:
        _png(tmp_path / name)
    _png(tmp_path / "class_0009.png")  # the user's, named like a generated one
    _png(tmp_path / "own_x.png")
    (tmp_path / RECORD).write_text(json.dumps(
        {"images": {n: {**wanted, "seed": 0, **c} for n, c in changes.items()}}))
    images = list_class_images(tmp_path, 10, wanted)
    assert [i.path.name for i in images.usable] == [
        "class_0009.png", "own_x.png", "class_0000.png", "class_0005.png"]
    assert {i.path.name: i.source for i in images.images}["class_0009.png"] == "yours"
    assert {i.path.name for i in images.mismatched} == {
        "class_0001.png", "class_0002.png", "class_0003.png", "class_0004.png"}
    assert (images.missing, images.next_index) == (6, 10)


def test_images_of_the_older_record_are_judged_on_what_it_knew(tmp_path):
    for i in range(3):
        _png(tmp_path / f"class_{i:04d}.png")
    (tmp_path / RECORD).write_text(json.dumps(
        {"class_prompt": "a photo of dog", "resolution": 64, "count": 2}))
    dog = class_image_recipe("m", "a photo of dog", 64)
    assert [i.path.name for i in list_class_images(tmp_path, 5, dog).usable] == [
        "class_0002.png", "class_0000.png", "class_0001.png"]  # #2 is not in the record
    cat = class_image_recipe("m", "a photo of cat", 64)
    assert len(list_class_images(tmp_path, 5, cat).mismatched) == 2


def test_class_images_report_each_step_with_the_time_left_and_show_previews(
        pipe, tiny_model, small_dog_dir, tmp_path):
    import threading

    from dreamstudio.train.class_images import ClassImageProgress

    class_dir, seen, previews = tmp_path / "class", [], []
    made = generate_missing_class_images(
        pipe, class_dir, "a photo of dog", 3, 64, steps=4, batch_size=2,
        progress=seen.append, preview=lambda p, s, t: previews.append((len(p), s, t)),
        preview_every=2)
    assert made == 3
    drawing = [(p.done, p.drawing, p.step) for p in seen if p.drawing]
    assert drawing[:4] == [(0, 2, 1), (0, 2, 2), (0, 2, 3), (0, 2, 4)]
    assert drawing[4:] == [(2, 1, 1), (2, 1, 2), (2, 1, 3), (2, 1, 4)]
    assert seen[-1] == ClassImageProgress(3, 3, 0, 0, 4, seen[-1].seconds_left)
    lefts = [p.seconds_left for p in seen if p.drawing]
    assert lefts[0] is None and all(v is not None for v in lefts[1:]) and lefts[-1] == 0.0
    assert previews == [(2, 2, 4), (1, 2, 4)]  # one per batch, at step 2 of 4

    # A stop within a batch ends it there, and its half-drawn images are not kept.
    cancel = threading.Event()
    stopped = tmp_path / "stopped"
    made = generate_missing_class_images(pipe, stopped, "a photo of dog", 2, 64, steps=20,
                                         progress=lambda p: p.step == 3 and cancel.set(),
                                         cancel=cancel)
    assert made == 0 and not list(stopped.glob("*.png"))

    # The Train tab hears it as the run's status message and time left.
    statuses = []
    trainer.train(TrainConfig(
        model=str(tiny_model), instance_dir=small_dog_dir, output_dir=tmp_path / "run",
        instance_prompt="a photo of sks dog", class_dir=tmp_path / "class2",
        class_prompt="a photo of dog", num_class_images=1, steps=1, resolution=64,
        class_image_steps=2, mixed_precision="no", validation_every=0, checkpoint_every=0,
        export_kohya=False), progress=statuses.append)
    messages = [p.message for p in statuses if p.phase == "class_images"]
    assert "Class images: 0/1 · drawing 1 more, step 2/2" in messages
    assert any(p.eta_seconds is not None for p in statuses if p.phase == "class_images")
