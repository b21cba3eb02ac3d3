"""The Train tab's logic without a server: presets, form values, status text, run text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dreamstudio.config import TrainConfig
from dreamstudio.errors import InputError
from dreamstudio.train.events import TrainProgress, TrainResult
from dreamstudio.train.jobs import JobStatus
from dreamstudio.train.presets import PRESETS
from dreamstudio.ui.train_form import FIELDS, FILLABLE, form_values, train_settings
from dreamstudio.ui.train_status import status_dict, status_markdown, validation_items
from dreamstudio.ui.train_text import run_markdown
from dreamstudio.workspace.runs import RunInfo


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_setting_reaches_a_field(name):
    settings = PRESETS[name].settings
    values = form_values(settings, identifier="sks")
    assert set(values) <= set(FILLABLE)
    for key, value in settings.items():
        if key == "class_prompt":
            assert values["prior_preservation"] is bool(value)
            if value:
                assert values["class_prompt"] == value
        else:
            assert key in FIELDS, f"preset setting {key!r} has no field in the Train tab"
            # Read back as the form reads it (min-SNR is a checkbox: on is gamma 5).
            convert = FIELDS[key][0]
            assert convert(values[key]) == value, key


def test_a_preset_with_a_class_composes_the_instance_prompt():
    values = form_values(PRESETS["Person / face"].settings, identifier="ohwx")
    assert values["class_noun"] == "person"
    assert values["instance_prompt"] == "a photo of ohwx person"


def test_a_runs_settings_fill_the_form_and_come_back_unchanged(tmp_path):
    config = TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of ohwx dog",
                         output_dir=tmp_path / "run", rank=8, flip=True, lr_scheduler="cosine",
                         validation_every=25, checkpoint_every=50, steps=400)
    values = form_values(config.to_dict())
    assert (values["identifier"], values["class_noun"]) == ("ohwx", "dog")
    assert values["prior_preservation"] is False and values["validation_prompt"] == ""
    settings = train_settings(values)
    assert settings == {k: getattr(config, k) for k in FIELDS}


def test_an_empty_number_is_refused_by_its_label():
    config = TrainConfig(instance_dir=".", instance_prompt="x", output_dir="out")
    values = {k: getattr(config, k) for k in FIELDS}
    assert train_settings(values) == values
    values["steps"] = None  # what Gradio sends for a cleared Number box
    with pytest.raises(InputError, match="'Steps' is empty"):
        train_settings(values)


def _status(tmp_path, state="completed") -> JobStatus:
    out = tmp_path / "subjects" / "dog" / "loras" / "first-try"
    config = TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks dog",
                         output_dir=out, steps=30)
    shots = [str(out / "validation" / f"step-{s:06d}-0.png") for s in (10, 20)]
    progress = TrainProgress("done", step=30, total_steps=30, loss=0.1, elapsed=5.0,
                             validation_images=shots)
    result = TrainResult("completed", out, out / "w.safetensors", 30, 0.1, 5.0,
                         kohya_path=out / "first-try.safetensors", steps_per_second=6.0,
                         message="Training finished")
    now = time.time()
    return JobStatus(state, progress, result, config=config, started_at=now - 125,
                     finished_at=now)


def test_the_finished_status_names_its_files(tmp_path):
    s = status_dict(_status(tmp_path), ("dog", "first-try"))
    assert (s["subject"], s["run"]) == ("dog", "first-try")
    assert s["elapsed_seconds"] == pytest.approx(125, abs=0.2)  # from the job's start
    assert s["kohya_path"].endswith("first-try.safetensors")
    assert s["log_path"].endswith("first-try/train.log")
    text = status_markdown(s)
    assert "load this in AUTOMATIC1111 / Forge / ComfyUI" in text
    assert "gradio_api/file=" in text and "train.log" in text
    assert "Elapsed 2 min 05 s" in text
    assert "Finished *dog / first-try*" in text
    # A run outside any workspace (no address) is named by its folder alone.
    outside = status_dict(_status(tmp_path))
    assert (outside["subject"], outside["run"]) == (None, "first-try")


def test_while_class_images_are_drawn_the_status_counts_them_and_their_time_left(tmp_path):
    status = _status(tmp_path, state="running")
    status.result = None
    status.progress = TrainProgress("class_images", total_steps=30, eta_seconds=95,
                                    message="Class images: 4/10 · drawing 4 more, step 3/25")
    text = status_markdown(status_dict(status, ("dog", "first-try")))
    assert "**Class images: 4/10 · drawing 4 more, step 3/25**" in text
    assert "about **1 min 35 s left** for the class images" in text
    status.progress = TrainProgress("training", step=3, total_steps=30, loss=0.2,
                                    eta_seconds=95)
    assert "left** for" not in status_markdown(status_dict(status, ("dog", "first-try")))


def test_validation_images_are_captioned_by_step(tmp_path):
    folder = tmp_path / "validation"
    folder.mkdir()
    for name in ("step-000010-0.png", "step-000020-0.png"):
        (folder / name).write_bytes(b"png")
    paths = [str(folder / "step-000010-0.png"), str(folder / "step-000020-0.png"),
             str(folder / "step-000030-0.png")]  # not written (yet): left out
    assert [c for _, c in validation_items(paths)] == ["step 10", "step 20"]


def test_the_run_text_says_what_resume_would_do():
    idle = JobStatus()
    path = Path("/ws/subjects/dog/loras/r")
    assert "new run" in run_markdown("r", RunInfo("r", path), idle)
    stopped = RunInfo("r", path, exists=True, checkpoint_step=200, settings={"steps": 300})
    text = run_markdown("r", stopped, idle)
    assert "checkpoint at step 200 of 300" in text and "Resume" in text
    done = RunInfo("r", path, exists=True, has_lora=True, settings={"steps": 300})
    assert "finished LoRA (300 steps)" in run_markdown("r", done, idle)
    assert "Resume" not in run_markdown("r", done, idle)


def test_the_class_image_text_counts_only_what_the_run_would_use(tmp_path):
    from dreamstudio.train.class_gallery import ClassImage, ClassImageSet
    from dreamstudio.ui.train_text import class_images_markdown

    made = {"class_prompt": "a photo of dog", "resolution": 64}
    images = ClassImageSet(tmp_path, [ClassImage(tmp_path / "own.png", None),
                                      ClassImage(tmp_path / "class_0000.png", made),
                                      ClassImage(tmp_path / "class_0001.png", made, False),
                                      ClassImage(tmp_path / "class_0002.png", made, False)],
                           wanted=4, record={})
    text = class_images_markdown(images, "a photo of dog", 64)
    assert "**2 of 4**" in text and "(1 generated by DreamStudio, 1 yours)" in text
    assert "2 more were generated with other settings" in text
    assert "generates the 2 missing" in text


def test_the_gallery_shows_the_class_image_forming_then_the_validation_images(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from dreamstudio.ui.train_handlers import TrainHandlers

    status = _status(tmp_path, state="running")
    status.result = None
    forming = Image.new("RGB", (64, 64), "red")
    status.progress = TrainProgress("class_images", total_steps=30, preview=forming,
                                    message="Class images: 0/2 · drawing 2 more, step 5/6")
    studio = SimpleNamespace(training_status=lambda: status,
                             run_address=lambda path: ("dog", "first-try"))
    ui = SimpleNamespace(status="status", last="last", plot="plot", validation="validation",
                         fidelity_plot="fidelity_plot", fidelity="fidelity", keep_btn="keep",
                         form={"run_info": "run_info"})
    handlers = TrainHandlers(studio, ui)
    run = str(status.config.output_dir)
    last = [None, run, len(status.losses), 0, "running", None, 0, None]
    update = handlers.poll(last, "dog", "first-try")
    assert update["validation"] == [(forming, "class image forming")]
    # The same picture is not sent again; once training starts the gallery goes back.
    assert "validation" not in handlers.poll(update["last"], "dog", "first-try")
    status.progress = TrainProgress("training", step=1, total_steps=30, loss=0.3)
    update = handlers.poll(update["last"], "dog", "first-try")
    assert update["validation"] == []


POINTS = [{"step": 2, "dino": 0.41, "clip_i": 0.7, "clip_t": 0.27},
          {"step": 4, "dino": 0.41, "clip_i": 0.72, "clip_t": 0.3},
          {"step": 6, "dino": 0.35, "clip_i": 0.66, "clip_t": 0.31}]


def test_the_scored_steps_plot_one_line_per_metric_and_name_the_best():
    from dreamstudio.ui.train_status import fidelity_frame, fidelity_markdown

    frame = fidelity_frame(list(reversed(POINTS)))
    assert sorted(set(frame["metric"])) == ["CLIP-I", "CLIP-T", "DINO"]
    dino = frame[frame["metric"] == "DINO"]
    assert list(dino["step"]) == [2, 4, 6] and list(dino["score"]) == [0.41, 0.41, 0.35]
    text = fidelity_markdown(POINTS)
    # Equal DINO at steps 2 and 4: the earlier wins, and the rule is said.
    assert "Best so far: step 2** — DINO 0.41, CLIP-T 0.27" in text
    assert "highest DINO; on a tie the earlier step" in text
    assert "Score checkpoints" in fidelity_markdown([])
    assert "⚠️ no scorer" in fidelity_markdown([], "no scorer")


def _handlers(status, kept: list):
    from types import SimpleNamespace

    from dreamstudio.ui.train_handlers import TrainHandlers

    def keep(subject, run, step):
        kept.append((subject, run, step))
        return SimpleNamespace(label=f"{subject} / {run}-step{step}")

    studio = SimpleNamespace(training_status=lambda: status, keep_checkpoint=keep,
                             run_address=lambda path: ("dog", path.name))
    ui = SimpleNamespace(status="status", last="last", plot="plot", validation="validation",
                         fidelity_plot="fidelity_plot", fidelity="fidelity", keep_btn="keep",
                         message="message", form={"run_info": "run_info"})
    return TrainHandlers(studio, ui)


def test_the_keep_button_is_enabled_by_scored_steps_and_keeps_the_best(tmp_path):
    status = _status(tmp_path)
    kept = []
    handlers = _handlers(status, kept)
    handlers.run_text = lambda subject, name: "run"
    update = handlers.poll(None, "dog", "first-try")
    assert update["keep"]["interactive"] is False
    assert "Score checkpoints" in update["fidelity"]
    with pytest.warns(UserWarning):  # the toast the user sees
        refused = handlers.keep_best()
    assert "No run has scored checkpoints" in refused["message"]
    assert kept == []

    status.progress.fidelity = POINTS
    update = handlers.poll(update["last"], "dog", "first-try")
    assert update["keep"]["interactive"] is True
    assert len(update["fidelity_plot"]) == 3 * len(POINTS)
    assert "keep" not in handlers.poll(update["last"], "dog", "first-try")  # nothing new
    message = handlers.keep_best()["message"]
    assert kept == [("dog", "first-try", 2)]
    assert "**dog / first-try-step2**" in message


def test_the_status_reports_the_scores_and_why_scoring_stopped(tmp_path):
    status = _status(tmp_path, state="running")
    status.result = None
    status.progress = TrainProgress("scoring", step=4, total_steps=30, loss=0.2,
                                    message="Scoring the LoRA at step 4", fidelity=POINTS[:1],
                                    fidelity_note="scorer missing")
    s = status_dict(status, ("dog", "first-try"))
    assert s["fidelity"] == POINTS[:1] and s["fidelity_note"] == "scorer missing"
    assert "**Scoring the LoRA at step 4**" in status_markdown(s)


def test_the_score_checkpoints_box_is_a_form_setting(tmp_path):
    config = TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of ohwx dog",
                         output_dir=tmp_path / "run", score_checkpoints=True)
    values = form_values(config.to_dict())
    assert values["score_checkpoints"] is True
    assert train_settings(values)["score_checkpoints"] is True
