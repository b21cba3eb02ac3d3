"""Scoring checkpoints while training (score_checkpoints) and keeping the best one as a LoRA."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.config import GenerateConfig, TrainConfig, default_of
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import Generator
from dreamstudio.lora.files import lora_weights_path, read_lora_info
from dreamstudio.lora.kohya import kohya_path
from dreamstudio.studio import Studio
from dreamstudio.train.checkpoints import WEIGHTS_FILE, list_checkpoints, load_state
from dreamstudio.train.resume import check_resumable
from dreamstudio.train.scoring import best_point, scoring_prompts
from dreamstudio.train.trainer import train
from dreamstudio.workspace.runs import (
    fidelity_log_path,
    load_run_settings,
    run_log_path,
    save_run_settings,
)
from tests.support.tiny_scorers import build_tiny_scorers

PROMPT = "a photo of sks dog"
SUBJECT, RUN = "dog", "scored"


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    return build_tiny_scorers(tmp_path_factory.mktemp("scorers"))


def _config(model, photos, output_dir, scorers, **kw) -> TrainConfig:
    dino, clip = scorers
    settings = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 1, "resolution": 64,
                "rank": 4, "seed": 0, "validation_every": 0, "validation_steps": 2,
                "score_checkpoints": True, "score_images": 2,
                "score_dino_model": str(dino), "score_clip_model": str(clip)}
    settings.update(kw)
    return TrainConfig(model=str(model), instance_dir=photos, instance_prompt=PROMPT,
                       output_dir=output_dir, **settings)


@pytest.fixture(scope="module")
def scored(tiny_model, small_dog_dir, scorers, tmp_path_factory):
    """A scored run inside a workspace: 6 steps, checkpoints at 2 and 4 (only 4 kept)."""
    workspace = tmp_path_factory.mktemp("ws")
    config = _config(tiny_model, small_dog_dir, workspace / "subjects" / SUBJECT / "loras" / RUN,
                     scorers)
    save_run_settings(config)  # as the app does when it starts a run
    reports = []
    result = train(config, progress=reports.append)
    return workspace, config, result, reports


def _digests(weights: dict) -> list[str]:
    """The tensors' values, whatever their key names (diffusers renames the trainer's)."""
    return sorted(hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
                  for t in weights.values())


def test_each_checkpoint_and_the_final_lora_are_scored(scored):
    _, config, result, reports = scored
    assert result.status == "completed"
    log = json.loads(fidelity_log_path(config.output_dir).read_text(encoding="utf-8"))
    points = log["points"]
    assert [p["step"] for p in points] == [2, 4, 6]
    for point in points:
        assert all(isinstance(point[k], float) and -1 <= point[k] <= 1
                   for k in ("dino", "clip_i", "clip_t"))
    assert log["best_step"] == best_point(points)["step"]
    assert log["prompts"] == scoring_prompts(PROMPT, None, 2)[0]
    assert log["compared_with"] == "training"  # a plain folder: no held-out photos
    # The app sees every point as it comes, and the checkpoint keeps those up to its step.
    assert reports[-1].fidelity == points
    assert [p.step for p in reports if p.phase == "scoring"] == [2, 2, 4, 4, 6, 6]
    (checkpoint,) = list_checkpoints(config.output_dir)
    assert load_state(checkpoint)["fidelity"] == points[:2]


def test_the_prompts_are_the_quick_ones_of_the_kind_then_the_papers():
    prompts, texts = scoring_prompts("a photo of sks dog", None, 6)
    assert prompts[:2] == ["a sks dog in the jungle", "a sks dog on the beach"]
    assert texts[:2] == ["a dog in the jungle", "a dog on the beach"]
    assert len(set(prompts)) == 6  # past the four quick prompts: the paper's others
    assert scoring_prompts("a photo of sks backpack", None, 4)[0][3] == "a red sks backpack"


def test_scoring_does_not_change_what_is_trained(scored, tiny_model, small_dog_dir, scorers,
                                                 tmp_path):
    _, config, result, _ = scored
    plain = train(_config(tiny_model, small_dog_dir, tmp_path / "plain", scorers,
                          score_checkpoints=False))
    assert plain.losses == result.losses
    scored_weights = load_file(str(result.lora_path))
    plain_weights = load_file(str(plain.lora_path))
    assert scored_weights.keys() == plain_weights.keys()
    assert all(torch.equal(scored_weights[k], plain_weights[k]) for k in scored_weights)
    assert not fidelity_log_path(tmp_path / "plain").exists()
    # Nor the global random state a resume would go on with (loading a scorer draws from it).
    (with_scores,), (without,) = list_checkpoints(config.output_dir), list_checkpoints(
        tmp_path / "plain")
    assert torch.equal(load_state(with_scores)["torch_rng"], load_state(without)["torch_rng"])


def test_a_scorer_that_cannot_load_leaves_the_run_completed_with_a_warning(
        tiny_model, small_dog_dir, scorers, tmp_path):
    not_a_model = tmp_path / "not-a-dino"
    not_a_model.mkdir()
    reports = []
    result = train(_config(tiny_model, small_dog_dir, tmp_path / "run", scorers, steps=4,
                           score_dino_model=str(not_a_model)), progress=reports.append)
    assert result.status == "completed" and result.lora_path.is_file()
    assert "Checkpoint scoring is off for this run" in result.message
    assert str(not_a_model) in reports[-1].fidelity_note
    assert reports[-1].fidelity == []
    warnings = [line for line in run_log_path(tmp_path / "run").read_text().splitlines()
                if " WARNING " in line]
    assert len(warnings) == 1 and "checkpoint scoring stopped at step 2" in warnings[0]
    # Tried once: the later checkpoint and the final LoRA do not load it again.
    assert not any(p.phase == "scoring" and p.step > 2 for p in reports)
    # The loss curve has one point per step, none for the failed scoring.
    assert [p.step for p in reports if p.phase == "training" and p.loss is not None] == [
        1, 2, 3, 4]


def test_a_resumed_run_keeps_the_earlier_scores(tiny_model, small_dog_dir, scorers, tmp_path):
    first = _config(tiny_model, small_dog_dir, tmp_path / "run", scorers, steps=4)
    train(first)
    # Scoring may be turned off and on between the attempts: it does not block a resume.
    check_resumable(_config(tiny_model, small_dog_dir, tmp_path / "run", scorers, steps=6,
                            resume=True, score_checkpoints=False))
    earlier = json.loads(fidelity_log_path(first.output_dir).read_text())["points"]
    result = train(_config(tiny_model, small_dog_dir, tmp_path / "run", scorers, steps=6,
                           resume=True))
    points = json.loads(fidelity_log_path(first.output_dir).read_text())["points"]
    # Resumed from the checkpoint at step 2: its score is kept, 4 is scored again.
    assert [p["step"] for p in points] == [2, 4, 6]
    assert points[0] == earlier[0]
    assert result.status == "completed"


def test_keep_checkpoint_writes_a_lora_with_the_checkpoints_weights(scored, tiny_model,
                                                                    tmp_path):
    workspace, config, _, _ = scored
    studio = Studio(workspace, model=str(tiny_model), device="cpu")
    entry = studio.keep_checkpoint(SUBJECT, RUN, 4)
    assert entry.label == f"{SUBJECT} / {RUN}-step4"
    assert entry.label in [e.label for e in studio.loras(SUBJECT)]
    (checkpoint,) = list_checkpoints(config.output_dir)
    assert _digests(load_file(str(lora_weights_path(entry.path)))) == _digests(
        load_file(str(checkpoint.path / WEIGHTS_FILE)))
    info = read_lora_info(entry.path)
    assert info["steps_done"] == 4
    assert kohya_path(entry.path, info).is_file()
    settings = load_run_settings(entry.path)
    assert settings["steps"] == 4 and settings["output_dir"] == str(entry.path)
    assert settings["instance_prompt"] == PROMPT

    generator = Generator(str(tiny_model), device="cpu")
    images = generator.generate(GenerateConfig(prompt=PROMPT, lora_dir=entry.path, steps=2,
                                               height=64, width=64), tmp_path / "out")
    assert len(images) == 1
    # Kept again (a second click, or "use this" on the Tune tab): the same LoRA, no copy.
    before = sorted(p.name for p in entry.path.parent.iterdir())
    assert studio.keep_checkpoint(SUBJECT, RUN, 4).path == entry.path
    assert sorted(p.name for p in entry.path.parent.iterdir()) == before


def test_a_pruned_checkpoint_or_the_final_step_is_refused_clearly(scored, tiny_model):
    workspace, _, _, _ = scored
    studio = Studio(workspace, model=str(tiny_model), device="cpu")
    with pytest.raises(InputError, match=r"no checkpoint at step 2 any more.*latest 1 "
                                         r"checkpoints \(steps it still has: 4\)"):
        studio.keep_checkpoint(SUBJECT, RUN, 2)
    with pytest.raises(InputError, match="Step 6 is the final LoRA"):
        studio.keep_checkpoint(SUBJECT, RUN, 6)
    with pytest.raises(InputError, match="no run 'nope'"):
        studio.keep_checkpoint(SUBJECT, "nope", 4)


def test_best_is_the_highest_dino_and_the_earlier_of_a_tie():
    points = [{"step": 300, "dino": 0.5, "clip_t": 0.2}, {"step": 100, "dino": 0.4,
                                                          "clip_t": 0.3},
              {"step": 200, "dino": 0.5, "clip_t": 0.25}]
    assert best_point(points)["step"] == 200
    assert best_point([]) is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"score_checkpoints": True, "checkpoint_every": 0}, "Scoring checkpoints needs checkpoints"),
    ({"score_images": 0}, "images per scored checkpoint must be 1-8"),
    ({"score_images": 9}, "images per scored checkpoint must be 1-8"),
])
def test_scoring_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(instance_dir=tmp_path, instance_prompt=PROMPT, output_dir=tmp_path / "o",
                    **settings)


def test_the_app_scores_with_the_scorer_models_it_was_started_with(tmp_path):
    studio = Studio(tmp_path / "ws", model="some/model",
                    scorer_models={"dino_model": "/models/dino", "clip_model": "/models/clip"})
    photos = studio.workspace.photos_dir(SUBJECT)
    photos.mkdir(parents=True)
    (photos / "manifest.json").write_text("{}")
    config = studio.training_config(SUBJECT, PROMPT, run_name="r", score_checkpoints=True)
    assert (config.score_dino_model, config.score_clip_model) == ("/models/dino",
                                                                  "/models/clip")
    plain = Studio(tmp_path / "ws", model="some/model").training_config(SUBJECT, PROMPT,
                                                                        run_name="r")
    assert plain.score_dino_model == default_of(TrainConfig, "score_dino_model")
