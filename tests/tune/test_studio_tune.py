"""The sweep through the Studio facade: a workspace subject's run, its held-out photo, the
saved result read back, and "use this" giving the Generate tab's LoRA and sliders."""

from __future__ import annotations

import pytest

from dreamstudio.config import PrepareConfig
from dreamstudio.errors import InputError
from dreamstudio.studio import Studio
from dreamstudio.train.trainer import train
from dreamstudio.workspace.runs import save_run_settings


@pytest.fixture(scope="module")
def studio_run(tiny_model, dog_photos, tmp_path_factory):
    studio = Studio(tmp_path_factory.mktemp("ws"), model=str(tiny_model), device="cpu")
    report = studio.prepare("rex", dog_photos, PrepareConfig(mode="object", size=64))
    studio.hold_out_photo("rex", report.kept[0].output, True)
    config = studio.training_config("rex", "a photo of sks dog", "first", steps=2,
                                    resolution=64, validation_every=0)
    save_run_settings(config)
    train(config)
    return studio


def test_a_sweep_from_the_studio_scores_held_out_photos_and_is_kept(studio_run, scorer_dirs):
    studio = studio_run
    assert [c.name for c in studio.tune_candidates("rex", "first")] == ["final"]
    config = studio.tune_config("rex", "first", unet_scales=[1.0], text_encoder_scales=[1.0],
                                steps=1, leak_images=1, height=64, width=64,
                                dino_model=str(scorer_dirs[0]),
                                clip_model=str(scorer_dirs[1]))
    plan = studio.tune_plan(config)
    assert plan.to_draw == plan.images == 2 * 5 and plan.seconds > 0
    result = studio.tune(config)
    assert result.status == "completed" and result.compared_with == "held_out"
    assert len(studio._scorers) == 0  # released after the sweep
    folder = studio.workspace.tunes_dir("rex", "first")
    assert {p.name for p in folder.iterdir()} >= {"tune.json", "tune.csv", "tune.png"}
    saved = studio.last_tune("rex", "first")
    assert [c.dino for c in saved.cells] == [c.dino for c in result.cells]
    assert studio.tune_plan(config, timed=False).to_draw == 0

    label, settings = studio.use_tuned("rex", "first", result.cells[0])
    assert label == studio.workspace.lora_at(studio.workspace.run_dir("rex", "first")).label
    assert settings == {"unet_scale": 1.0, "text_encoder_scale": 1.0, "guidance": 7.5}
    assert studio.use_tuned("rex", "first", result.base[0])[0] is None


def test_a_run_that_is_not_there_is_refused(studio_run):
    with pytest.raises(InputError, match="no run called 'nope'"):
        studio_run.tune_config("rex", "nope")
