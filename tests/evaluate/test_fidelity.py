"""The paper's fidelity metrics: definitions on known vectors, scorers, and an end-to-end run."""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamstudio.cli import main
from dreamstudio.config import TrainConfig
from dreamstudio.data.images import open_rgb
from dreamstudio.data.manifest import image_files
from dreamstudio.errors import InputError
from dreamstudio.evaluate.config import EvalConfig
from dreamstudio.evaluate.evaluate import evaluate
from dreamstudio.evaluate.metrics import (
    PAPER_REFERENCE,
    prompt_fidelity,
    self_similarity,
    subject_fidelity,
)
from dreamstudio.evaluate.prompts import (
    LIVE_PROMPTS,
    OBJECT_PROMPTS,
    SUBJECT_CLASSES,
    fill,
    infer_kind,
    templates_for,
    without_identifier,
)
from dreamstudio.evaluate.report import format_table
from dreamstudio.evaluate.scorers import ClipScorer, DinoScorer, ScorerCache
from dreamstudio.generate.generator import Generator
from dreamstudio.train.identifiers import split_instance_prompt
from dreamstudio.train.trainer import train
from tests.support.tiny_scorers import build_tiny_scorers

PROMPT = "a photo of sks dog"
from tests.conftest import DATASETS

# --- metric definitions -------------------------------------------------------------------

def test_identical_orthogonal_and_opposite_embeddings():
    e = torch.tensor([[1.0, 2.0, 3.0]])
    assert subject_fidelity(e, e) == pytest.approx(1.0)
    assert subject_fidelity(e, 5 * e) == pytest.approx(1.0)  # scale does not matter
    assert subject_fidelity(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])) == 0.0
    assert subject_fidelity(e, -e) == pytest.approx(-1.0)
    assert prompt_fidelity(e, e) == pytest.approx(1.0)
    assert prompt_fidelity(e, -2 * e) == pytest.approx(-1.0)


def test_subject_fidelity_averages_every_generated_real_pair():
    gen = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    real = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cos: (g0,r0)=1, (g0,r1)=1/sqrt2, (g1,r0)=0, (g1,r1)=1/sqrt2
    expected = (1 + 1 / math.sqrt(2) + 0 + 1 / math.sqrt(2)) / 4
    assert subject_fidelity(gen, real) == pytest.approx(expected)
    # Real photos against each other: only the distinct pairs, never a photo with itself.
    assert self_similarity(real) == pytest.approx(1 / math.sqrt(2))
    assert self_similarity(real[:1]) is None


def test_prompt_fidelity_pairs_image_i_with_text_i_only():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert prompt_fidelity(images, texts) == pytest.approx(1.0)  # crossed pairs would add 0s
    assert prompt_fidelity(images, texts.flip(0)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        prompt_fidelity(images, texts[:1])


def test_paper_reference_rows():
    rows = {r.name: r for r in PAPER_REFERENCE}
    real = rows["Real images (paper)"]
    assert (real.dino, real.clip_i, real.clip_t) == (0.774, 0.885, None)
    sd = rows["DreamBooth, Stable Diffusion (paper)"]
    assert (sd.dino, sd.clip_i, sd.clip_t) == (0.668, 0.803, 0.305)


# --- prompts --------------------------------------------------------------------------------

def _shared_file_prompts(text: str) -> tuple[list[str], list[str]]:
    _, objects, live = re.split(r"Object Prompts|Live Subject Prompts", text)
    pattern = re.compile(r"^('.*?')\.format\(unique_token, class_token\)", re.MULTILINE)
    return ([ast.literal_eval(m) for m in pattern.findall(objects)],
            [ast.literal_eval(m) for m in pattern.findall(live)])


def test_shipped_prompts_and_classes_equal_the_dataset_file():
    path = DATASETS / "prompts_and_classes.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    objects, live = _shared_file_prompts(text)
    assert list(OBJECT_PROMPTS) == objects and len(objects) == 25
    assert list(LIVE_PROMPTS) == live and len(live) == 25
    classes = dict(line.split(",", 1) for line in
                   text.split("subject_name,class")[1].split("Prompts")[0].split("\n")
                   if "," in line)
    assert SUBJECT_CLASSES == classes


def test_prompt_helpers():
    jungle, cube = templates_for("live")[0], templates_for("object")[-1]
    assert fill(jungle, "sks", "dog") == "a sks dog in the jungle"
    assert fill(without_identifier(jungle, "sks"), "sks", "dog") == "a dog in the jungle"
    assert fill(without_identifier(cube, ""), "", "toy") == "a cube shaped toy"
    assert infer_kind("dog") == infer_kind("cat") == "live"
    assert infer_kind(SUBJECT_CLASSES["rc_car"]) == "object"
    assert split_instance_prompt(PROMPT) == ("sks", "dog")
    assert split_instance_prompt("a photo of sks stuffed animal") == ("sks", "stuffed animal")
    assert split_instance_prompt("a zwx teddy bear", class_prompt="a teddy bear") == (
        "zwx", "teddy bear")
    with pytest.raises(InputError, match="identifier"):
        split_instance_prompt("dog")


# --- scorers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory):
    return build_tiny_scorers(tmp_path_factory.mktemp("scorers"))


@pytest.fixture(scope="module")
def tiny_scorers(scorer_dirs):
    return (DinoScorer(str(scorer_dirs[0]), device="cpu"),
            ClipScorer(str(scorer_dirs[1]), device="cpu"))


def test_identical_images_score_one_and_different_images_less(tiny_scorers, dog_photos):
    dino, clip = tiny_scorers
    with Image.open(dog_photos[0]) as a, Image.open(dog_photos[1]) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    for embed in (dino.embed_images, clip.embed_images):
        same = embed([a, a.copy()])
        assert subject_fidelity(same[:1], same[1:]) == pytest.approx(1.0, abs=1e-6)
        assert subject_fidelity(embed([a]), embed([grey, b])) < 0.999
    texts = clip.embed_texts(["a dog in the jungle", "a dog in the jungle", "a red toy"])
    assert prompt_fidelity(texts[:1], texts[1:2]) == pytest.approx(1.0, abs=1e-6)
    assert prompt_fidelity(texts[:1], texts[2:]) < 0.999


def test_scorer_cache_loads_each_model_once_per_device(scorer_dirs, tmp_path):
    dino_dir, clip_dir = (str(d) for d in scorer_dirs)
    cache = ScorerCache()
    dino, clip = cache.get(dino_dir, clip_dir, "cpu")
    assert isinstance(dino, DinoScorer) and isinstance(clip, ClipScorer)
    assert (dino.name, clip.name) == (dino_dir, clip_dir)
    again = cache.get(dino_dir, clip_dir, torch.device("cpu"))
    assert again[0] is dino and again[1] is clip and len(cache) == 2
    # Another DINO loads that one only; a model that fails to load leaves nothing behind.
    other_dino = str(build_tiny_scorers(tmp_path, seed=1)[0])
    swapped = cache.get(other_dino, clip_dir, "cpu")
    assert swapped[0] is not dino and swapped[0].name == other_dino and swapped[1] is clip
    with pytest.raises(InputError, match="Hub cannot be reached"):
        cache.get("facebook/no-such-dino", clip_dir, "cpu")
    assert len(cache) == 3


def test_unloadable_scorer_names_the_model(tmp_path):
    with pytest.raises(InputError, match="Hub cannot be reached"):
        DinoScorer("facebook/no-such-dino", device="cpu")
    with pytest.raises(InputError, match="not a CLIP model"):
        ClipScorer(str(tmp_path), device="cpu")


# --- end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_dir(tiny_model, small_dog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-lora")
    train(TrainConfig(model=str(tiny_model), instance_dir=small_dog_dir, instance_prompt=PROMPT,
                      output_dir=out, steps=3, resolution=64))
    return out


def _config(lora_dir, real_dir, scorer_dirs, **overrides) -> EvalConfig:
    settings = {"images_per_prompt": 1, "num_prompts": 2, "steps": 2, "height": 64,
                "width": 64, "dino_model": str(scorer_dirs[0]),
                "clip_model": str(scorer_dirs[1]), **overrides}
    return EvalConfig(lora_dir=lora_dir, real_images_dir=real_dir, **settings)


def test_config_defaults_from_the_lora_and_explicit_args_win(lora_dir, small_dog_dir,
                                                              tmp_path):
    dirs = (tmp_path, tmp_path)
    config = _config(lora_dir, small_dog_dir, scorer_dirs=dirs)
    assert (config.identifier, config.class_noun, config.kind) == ("sks", "dog", "live")
    assert config.prompt_pairs() == [("a sks dog in the jungle", "a dog in the jungle"),
                                     ("a sks dog in the snow", "a dog in the snow")]
    config = _config(lora_dir, small_dog_dir, scorer_dirs=dirs, identifier="zwx",
                     class_noun="toy", prompts=["a {0} {1} on the moon", "zwx toy, red"])
    assert config.kind == "object"
    assert config.prompt_pairs() == [("a zwx toy on the moon", "a toy on the moon"),
                                     ("zwx toy, red", "toy, red")]
    with pytest.raises(InputError, match="steps"):
        _config(lora_dir, small_dog_dir, scorer_dirs=dirs, steps=0)
    with pytest.raises(InputError, match="Real photo folder"):
        _config(lora_dir, tmp_path / "missing", scorer_dirs=dirs)


def test_evaluate_end_to_end(tiny_model, lora_dir, small_dog_dir, scorer_dirs,
                             tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    config = _config(lora_dir, small_dog_dir, scorer_dirs=scorer_dirs)
    generator = Generator(str(tiny_model), device="cpu")
    events = []
    scorers = (DinoScorer(config.dino_model, device="cpu"),
               ClipScorer(config.clip_model, device="cpu"))
    report = evaluate(config, generator, out, progress=events.append, dino=scorers[0],
                      clip=scorers[1])

    assert report.status == "completed" and len(report.rows) == 2
    assert [e.phase for e in events][-1] == "done" and events[-1].done == events[-1].total == 4
    # Each score is the paper's metric of the saved image: recomputed here from the PNG
    # (lossless), the real photos and the prompt without the identifier.
    dino, clip = scorers
    real = [open_rgb(p) for p in image_files(small_dog_dir)]
    real_dino, real_clip = dino.embed_images(real), clip.embed_images(real)
    for row in report.rows:
        assert "sks" not in row.clip_t_prompt.split()
        assert len(row.images) == 1 and (out / row.images[0]).is_file()
        with Image.open(out / row.images[0]) as im:
            image = im.convert("RGB")
        gen_clip = clip.embed_images([image])
        expected = {"dino": subject_fidelity(dino.embed_images([image]), real_dino),
                    "clip_i": subject_fidelity(gen_clip, real_clip),
                    "clip_t": prompt_fidelity(gen_clip, clip.embed_texts([row.clip_t_prompt]))}
        for m, value in expected.items():
            assert getattr(row, m) == pytest.approx(value, abs=1e-4), m

    data = json.loads((out / "fidelity.json").read_text())
    assert data["preprocessing"] == {"dino": dino.preprocessing, "clip": clip.preprocessing}
    assert "centre crop" in data["preprocessing"]["dino"]
    assert [r["clip_t_prompt"] for r in data["rows"]] == ["a dog in the jungle",
                                                          "a dog in the snow"]
    for m in ("dino", "clip_i", "clip_t"):
        assert data["means"][m] == pytest.approx(sum(r[m] for r in data["rows"]) / 2)
    assert len(data["reference"]) == len(PAPER_REFERENCE)

    with open(out / "fidelity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == ["prompt"] * 2 + ["mean"] + ["reference"] * len(
        PAPER_REFERENCE)
    for m in ("dino", "clip_i", "clip_t"):
        values = [float(r[m]) for r in rows[:2]]
        assert float(rows[2][m]) == pytest.approx(sum(values) / 2, abs=1e-6)
    assert rows[3]["clip_t"] == ""  # the paper's real-images row has no CLIP-T

    table = format_table(report)
    assert "a sks dog in the snow" in table and "0.668" in table

    # Cancelled during the second prompt: the first is kept, the second leaves no images
    # and no result files are written; the cached pipeline is not reloaded.
    cancel = threading.Event()

    def cancel_on_second_prompt(p):
        if p.message.startswith("Prompt 2/") and p.done > p.total // 2:
            cancel.set()

    again = tmp_path_factory.mktemp("eval-cancel")
    cancelled = evaluate(config, generator, again, progress=cancel_on_second_prompt,
                         cancel=cancel, dino=scorers[0], clip=scorers[1])
    assert cancelled.status == "cancelled" and len(cancelled.rows) == 1
    assert [p.name for p in (again / "images").rglob("*.png")] == [
        Path(cancelled.rows[0].images[0]).name]
    assert not (again / "fidelity.json").exists()
    assert generator.model_loads == 1


def test_cli_subcommand(tiny_model, lora_dir, small_dog_dir, scorer_dirs, tmp_path, capsys):
    dino_dir, clip_dir = scorer_dirs
    assert main([
        "evaluate", "--lora", str(lora_dir), "--real-dir", str(small_dog_dir),
        "--output", str(tmp_path / "out"), "--num-prompts", "1", "--images-per-prompt", "1",
        "--steps", "1", "--height", "64", "--width", "64", "--dino-model", str(dino_dir),
        "--clip-model", str(clip_dir), "--device", "cpu",
    ]) == 0  # --model defaults to the LoRA's base model (the tiny one)
    out = capsys.readouterr().out
    assert "a sks dog in the jungle" in out and "Mean of 1 prompts" in out
    assert (tmp_path / "out" / "fidelity.csv").is_file()
