"""Evaluation on the tiny SDXL model: the same Generator draws, the scorers see only images."""

from __future__ import annotations

import pytest
from PIL import Image

from dreamstudio.evaluate.config import EvalConfig
from dreamstudio.evaluate.evaluate import evaluate
from dreamstudio.evaluate.metrics import subject_fidelity
from dreamstudio.evaluate.scorers import ClipScorer, DinoScorer
from dreamstudio.generate.generator import Generator
from dreamstudio.generate.png_metadata import read_parameters
from tests.support.sdxl_lora import save_sdxl_lora
from tests.support.tiny_scorers import build_tiny_scorers


def test_evaluate_an_sdxl_lora(tiny_sdxl_model, small_dog_dir, tmp_path_factory):
    lora = save_sdxl_lora(tiny_sdxl_model, tmp_path_factory.mktemp("sdxl-eval-lora"))
    dino_dir, clip_dir = build_tiny_scorers(tmp_path_factory.mktemp("sdxl-eval-scorers"))
    config = EvalConfig(lora_dir=lora, real_images_dir=small_dog_dir, identifier="sks",
                        class_noun="dog", images_per_prompt=1, num_prompts=2, steps=2,
                        height=64, width=64, dino_model=str(dino_dir), clip_model=str(clip_dir))
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    dino, clip = DinoScorer(str(dino_dir), device="cpu"), ClipScorer(str(clip_dir), device="cpu")
    out = tmp_path_factory.mktemp("sdxl-eval-out")
    report = evaluate(config, generator, out, dino=dino, clip=clip)

    assert report.status == "completed" and len(report.rows) == 2
    assert generator.model_loads == 1 and generator.lora_loads == 1
    real = dino.embed_images([Image.open(p).convert("RGB")
                              for p in sorted(small_dog_dir.glob("*.png"))])
    for row in report.rows:
        [name] = row.images
        assert read_parameters(out / name)["model_family"] == "sdxl"
        with Image.open(out / name) as im:
            image = im.convert("RGB")
        assert image.size == (64, 64)
        assert row.dino == pytest.approx(subject_fidelity(dino.embed_images([image]), real),
                                         abs=1e-4)
        assert None not in (row.clip_i, row.clip_t)
