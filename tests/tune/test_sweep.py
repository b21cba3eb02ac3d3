"""The sweep engine on the tiny model: every cell once, each LoRA loaded once, the same seeds
everywhere, images reused on a rerun or a wider sweep, a stop that keeps what was drawn."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from dreamstudio.cli import main
from dreamstudio.data.images import open_rgb
from dreamstudio.errors import InputError
from dreamstudio.generate.generator import GeneratedImage, Generator
from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.lora.adapters import classic_clip_path
from dreamstudio.lora.files import read_lora_weights
from dreamstudio.tune.candidates import choose_candidates, export_checkpoint, run_candidates
from dreamstudio.tune.config import TuneConfig
from dreamstudio.tune.results import BASE, FINAL
from dreamstudio.tune.sweep import plan_sweep, run_sweep, time_sweep


class CountingGenerator(Generator):
    """A Generator that records every generate call (its LoRA, cell and seeds)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.cancel_after: tuple[int, threading.Event] | None = None

    def generate(self, config, output_dir=None, progress=None, cancel=None, preview=None):
        if self.cancel_after and len(self.calls) == self.cancel_after[0]:
            self.cancel_after[1].set()
        self.calls.append((config.lora_dir, config.unet_scale, config.text_encoder_scale,
                           config.guidance, config.prompt, config.seed, config.num_images,
                           config.steps))
        return super().generate(config, output_dir, progress, cancel, preview)


@pytest.fixture
def generator(tiny_model):
    return CountingGenerator(str(tiny_model), device="cpu")


def _config(run_dir, photos, scorer_dirs, **overrides) -> TuneConfig:
    values = {"candidates": ["all"], "unet_scales": [0.5, 1.0], "text_encoder_scales": [1.0],
              "guidances": [7.5], "images_per_prompt": 2, "steps": 2, "leak_images": 1,
              "height": 64, "width": 64, "dino_model": str(scorer_dirs[0]),
              "clip_model": str(scorer_dirs[1]), **overrides}
    return TuneConfig(run_dir=run_dir, real_images_dir=photos, **values)


def _sweep(config, generator, folder, scorers, **kwargs):
    return run_sweep(config, generator, folder, *scorers, **kwargs)


def test_the_sweep_draws_every_cell_once_with_the_same_seeds(run_dir, small_dog_dir,
                                                             scorer_dirs, scorers, generator,
                                                             tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs)
    plan, _ = plan_sweep(config, tmp_path, generator.model)
    result = _sweep(config, generator, tmp_path, scorers)

    assert result.status == "completed"
    assert plan.candidates == ["step-000003", FINAL]
    # 2 candidates x 2 UNet scales + 1 base row; each cell draws 4 prompts and the leak.
    assert (plan.cells, plan.base_cells) == (4, 1)
    assert plan.images == 5 * (4 * 2 + 1) == result.drawn
    keys = {(c.candidate, c.unet_scale) for c in result.cells}
    assert keys == {(n, u) for n in ("step-000003", FINAL) for u in (0.5, 1.0)}
    assert [b.candidate for b in result.base] == [BASE]
    # Every (cell, prompt) drawn once; the base model first, without any LoRA.
    cells_prompts = [(str(c[0]), c[1], c[2], c[3], c[4]) for c in generator.calls]
    assert len(cells_prompts) == len(set(cells_prompts)) == 5 * 5
    assert all(c[0] is None for c in generator.calls[:5])
    assert generator.model_loads == 1 and generator.lora_loads == 2
    # The same seeds in every cell.
    assert {c[5] for c in generator.calls} == {0}
    assert {c[6] for c in generator.calls if c[4] != config.class_prompt_text()} == {2}
    for cell in result.cells + result.base:
        seeds = sorted(read_parameters(tmp_path / p)["seed"] for p in cell.images)
        assert seeds == [0, 1] * 4 or seeds == [0] * 4 + [1] * 4
        assert None not in (cell.dino, cell.clip_i, cell.clip_t, cell.leak)
        assert cell.face is None  # a dog: no face identity
    assert all(c.leak_flagged is not None for c in result.cells)
    assert result.compared_with == "training"  # this photo folder holds nothing back
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert len(saved["cells"]) == 4 and (tmp_path / "tune.csv").is_file()
    assert (tmp_path / "tune.png").is_file()


def test_a_rerun_reuses_every_image_and_a_wider_sweep_draws_only_new_cells(
        run_dir, small_dog_dir, scorer_dirs, scorers, generator, tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs, images_per_prompt=1)
    first = _sweep(config, generator, tmp_path, scorers)
    generator.calls.clear()

    again = _sweep(config, generator, tmp_path, scorers)
    assert generator.calls == []
    assert again.drawn == 0 and again.reused == first.drawn
    assert [c.dino for c in again.cells] == [c.dino for c in first.cells]

    wider = _config(run_dir, small_dog_dir, scorer_dirs, images_per_prompt=1,
                    unet_scales=[0.5, 0.75, 1.0])
    plan, _ = plan_sweep(wider, tmp_path, generator.model)
    assert plan.to_draw == 2 * (4 + 1)  # the two candidates' new 0.75 cells
    result = _sweep(wider, generator, tmp_path, scorers)
    assert {c[1] for c in generator.calls} == {0.75}
    assert len(generator.calls) == 2 * 5 and result.drawn == plan.to_draw
    assert len(result.cells) == 6


def test_a_stopped_sweep_keeps_its_images_and_writes_no_results(
        run_dir, small_dog_dir, scorer_dirs, scorers, generator, tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs, images_per_prompt=1)
    cancel = threading.Event()
    generator.cancel_after = (7, cancel)  # the eighth draw: the third of the second cell
    result = _sweep(config, generator, tmp_path, scorers, cancel=cancel)

    assert result.status == "cancelled" and result.recommendation is None
    assert len(result.base) == 1 and result.cells == []
    assert not (tmp_path / "tune.json").exists()
    plan, _ = plan_sweep(config, tmp_path, generator.model)
    # The base cell's 5 draws and the next cell's first 2 are kept; the stopped draw left
    # nothing half-denoised behind.
    assert plan.to_draw == plan.images - 7
    assert len(list(tmp_path.rglob("*.png"))) == 7


def test_the_plan_says_how_much_it_draws_and_how_long_it_takes(
        run_dir, small_dog_dir, scorer_dirs, generator, tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs, candidates=None)
    plan, cells = plan_sweep(config, tmp_path, generator.model)
    assert plan.candidates == [FINAL]  # the default: the final LoRA
    assert list(tmp_path.iterdir()) == []  # planning draws nothing
    timed = time_sweep(plan, cells, config, generator, tmp_path)
    assert timed.seconds_per_image > 0 and timed.seconds > 0
    assert f"{plan.images} images" in timed.describe()
    assert [c[7] for c in generator.calls] == [1, 1, 3]  # the short timing's step counts


def test_a_checkpoint_is_drawn_with_its_own_weights(run_dir, tmp_path):
    checkpoint = next(c for c in run_candidates(run_dir) if c.name == "step-000003")
    folder = export_checkpoint(checkpoint, tmp_path / "lora", run_dir)
    exported = read_lora_weights(folder)
    te = "text_encoder."
    # The file names the text encoder's layers as other tools do (text_model.encoder...).
    trained = {(te + classic_clip_path(k[len(te):]) if k.startswith(te) else k): v
               for k, v in load_file(str(checkpoint.weights_file)).items()}
    assert exported.keys() == trained.keys()
    assert all((exported[k] == trained[k]).all() for k in trained)
    final = read_lora_weights(run_dir)
    assert any(not (final[k] == trained[k]).all() for k in trained)


def test_unknown_candidates_and_bad_values_are_refused(run_dir, small_dog_dir, scorer_dirs):
    with pytest.raises(InputError, match="has no step-000099; it has step-000003, final"):
        choose_candidates(run_dir, ["step-000099"])
    with pytest.raises(InputError, match="outside 0-2"):
        _config(run_dir, small_dog_dir, scorer_dirs, unet_scales=[2.5])
    with pytest.raises(InputError, match="tolerance"):
        _config(run_dir, small_dog_dir, scorer_dirs, clip_t_tolerance=5)


def test_the_cli_sweeps_a_run_and_refuses_bad_values_in_one_line(
        run_dir, small_dog_dir, scorer_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["tune", "--run", str(run_dir), "--photos", str(small_dog_dir),
            "--dino-model", str(scorer_dirs[0]), "--clip-model", str(scorer_dirs[1]),
            "--steps", "1", "--unet-scales", "0.5, 1", "--text-encoder-scales", "1",
            "--leak-images", "1", "--height", "64", "--width", "64", "--device", "cpu",
            "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "15 images" in printed  # (2 cells of the final LoRA + the base) x (4 + 1 leak)
    assert json.loads((out / "tune.json").read_text())["status"] == "completed"
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:12], "3", *args[13:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "3" in err


def test_sweep_images_sit_where_their_settings_say(run_dir, small_dog_dir, scorer_dirs,
                                                    generator, tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs)
    _, cells = plan_sweep(config, tmp_path, generator.model)
    paths = {p for c in cells for d in c.all_draws for p in d.paths}
    assert len(paths) == 45
    _, other_cells = plan_sweep(_config(run_dir, small_dog_dir, scorer_dirs, steps=3),
                                tmp_path, generator.model)
    # Other sampler steps give other images: never the same files.
    assert paths.isdisjoint({p for c in other_cells for d in c.all_draws for p in d.paths})
    assert all(Path(p).is_relative_to(tmp_path) for p in paths)


class CopyingGenerator(CountingGenerator):
    """A LoRA that copies the subject outright: with its UNet part on, every image is one
    of the subject's photos (the leak the paper's check is there to catch)."""

    def __init__(self, *args, photos, **kwargs):
        super().__init__(*args, **kwargs)
        self.photos = photos

    def generate(self, config, output_dir=None, progress=None, cancel=None, preview=None):
        made = super().generate(config, output_dir, progress, cancel, preview)
        if config.lora_dir is None or config.unet_scale == 0:
            return made
        return [GeneratedImage(self.photos[i % len(self.photos)].copy(), item.seed, None)
                for i, item in enumerate(made)]


def test_a_lora_that_copies_the_subject_leaks_and_is_flagged(
        run_dir, small_dog_dir, scorer_dirs, scorers, tiny_model, tmp_path):
    # One photo: a copy of it scores exactly 1.0, whatever the random tiny DINO makes of
    # two different photos of one dog.
    photos = tmp_path / "photo"
    photos.mkdir()
    photo = open_rgb(min(small_dog_dir.iterdir()))
    photo.save(photos / "dog.png")
    generator = CopyingGenerator(str(tiny_model), device="cpu", photos=[photo])
    config = _config(run_dir, photos, scorer_dirs, candidates=None,
                     unet_scales=[0.0, 1.0], images_per_prompt=1, leak_images=2,
                     leak_margin=0.005)  # the random tiny DINO puts all images within ~0.02
    result = _sweep(config, generator, tmp_path / "sweep", scorers)
    off, copying = sorted(result.cells, key=lambda c: c.unet_scale)
    assert copying.leak == pytest.approx(1.0)
    assert copying.leak > off.leak and copying.leak > result.base[0].leak
    assert copying.leak_flagged and not off.leak_flagged
    assert copying.dino > off.dino  # it is the subject, after all: fidelity alone would pick it
    assert result.recommendation.cell is None or not result.recommendation.cell.leak_flagged


def test_people_are_scored_by_face_identity_and_faceless_images_are_misses(
        run_dir, scorer_dirs, scorers, tiny_model, tmp_path):
    from skimage import data as skimage_data

    from dreamstudio.evaluate.faces import FaceScorer
    from tests.support.tiny_scorers import build_tiny_face_weights

    photos = tmp_path / "photos"
    photos.mkdir()
    face = Image.fromarray(skimage_data.astronaut()).resize((256, 256))
    face.save(photos / "astronaut.png")
    generator = CopyingGenerator(str(tiny_model), device="cpu", photos=[face])
    faces = FaceScorer(str(build_tiny_face_weights(tmp_path / "face.pt")), device="cpu")
    config = _config(run_dir, photos, scorer_dirs, candidates=None, unet_scales=[1.0],
                     images_per_prompt=1, leak_images=0, class_noun="person",
                     identifier="sks")
    assert config.scores_faces  # people: face identity by default
    result = run_sweep(config, generator, tmp_path / "sweep", *scorers, faces)
    assert result.uses_face and "face" in result.preprocessing
    (cell,) = result.cells
    assert cell.face == pytest.approx(1.0) and (cell.face_found, cell.face_misses) == (4, 0)
    base = result.base[0]  # the tiny model draws noise: no face in any of its images
    assert base.face is None and (base.face_found, base.face_misses) == (0, 4)


def test_the_progress_says_what_is_left_from_the_pace_of_the_draws(
        run_dir, small_dog_dir, scorer_dirs, scorers, generator, tmp_path):
    config = _config(run_dir, small_dog_dir, scorer_dirs, candidates=None, unet_scales=[1.0],
                     images_per_prompt=1, leak_images=0)
    seen = []
    _sweep(config, generator, tmp_path, scorers, progress=seen.append)
    drawn = [p for p in seen if p.phase == "drawing" and p.image is not None]
    assert [p.done for p in drawn] == list(range(1, 9))  # base + 1 cell, 4 prompts each
    assert all(p.eta_seconds > 0 for p in drawn[:-1]) and drawn[-1].eta_seconds == 0
    assert "left" in drawn[0].eta_text and seen[-1].phase == "done"
