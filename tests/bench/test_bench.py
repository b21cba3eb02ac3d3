"""The benchmark runs and writes its figures (no timing assertions: figures, not targets)."""

from __future__ import annotations

import json

from bench.train import main


def test_bench_measures_the_unet_step_and_writes_json(tiny_model, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--model", str(tiny_model), "--resolution", "64", "--only", "share",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("unet_step_bfloat16", "unet_step_float32"):
        step = data[key]
        assert step["tflop_per_step"] > 0 and step["step_s"] > 0
        assert step["matmul_peak_tflops"] > 0 and step["share_of_peak"] > 0
        # The figures are consistent with each other (rounded to 4 digits in the JSON).
        achieved = step["tflop_per_step"] / step["step_s"]
        assert abs(step["achieved_tflops"] - achieved) <= 0.2 * achieved + 1e-3
    assert data["resolution"] == 64 and "speedups" in data


def test_repeated_runs_report_the_median_run():
    from bench.train import _median_run

    runs = [{"s_per_step": s, "wall_long_s": 10 * s} for s in (3.0, 1.0, 2.0)]
    median = _median_run(runs)
    assert median["s_per_step"] == 2.0 and median["wall_long_s"] == 20.0
    assert median["s_per_step_all"] == [3.0, 1.0, 2.0]
    assert _median_run(runs[:2])["s_per_step"] == 1.0  # even count: the lower middle


def test_the_generation_benchmark_measures_what_previews_cost(tiny_model):
    from bench.previews import format_preview_cost, preview_cost
    from dreamstudio.config import GenerateConfig
    from dreamstudio.generate.generator import Generator

    config = GenerateConfig(prompt="a dog", steps=10, height=64, width=64)
    cost = preview_cost(Generator(str(tiny_model), device="cpu"), config, repeats=1, n=2)
    assert cost["previews_per_image"] == 1 and cost["preview_every"] == 5  # step 5 of 10
    assert cost["one_preview_ms"] > 0 and 0 < cost["share_of_image_time"] < 1
    assert "1 per image" in format_preview_cost(cost)


def test_the_sweep_benchmark_splits_drawing_from_scoring(tiny_model, tmp_path):
    from bench.sweep import main as sweep_main
    from tests.support.tiny_scorers import build_tiny_scorers

    dino, clip = build_tiny_scorers(tmp_path / "scorers")
    out = tmp_path / "sweep.json"
    assert sweep_main(["--model", str(tiny_model), "--workdir", str(tmp_path / "work"),
                       "--size", "64", "--steps", "2", "--scorers", str(dino), str(clip),
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    # The default sweep: 3 UNet x 2 text-encoder scales + the base row, 4 prompts + 2 leak.
    assert (data["cells"], data["base_cells"], data["images"]) == (6, 1, 7 * 6)
    assert data["drawn"] == data["images"] and data["reused"] == 0
    # Each figure is rounded to 0.1 s: the parts may add up to 0.1 s over the whole.
    assert 0 < data["drawing_s"] + data["scoring_s"] <= data["sweep_s"] + 0.1 + 1e-9
    assert data["estimate_s"] > 0 and 0 < data["scoring_share"] < 1


def test_the_prior_benchmark_splits_class_image_drawing_from_training(
    tiny_model, small_dog_dir, tmp_path
):
    from bench.prior import main as prior_main

    out = tmp_path / "prior.json"
    report = prior_main(["--model", str(tiny_model), "--photos", str(small_dog_dir),
                         "--resolution", "64", "--steps", "2", "--class-images", "1", "2",
                         "--class-image-steps", "2", "--precision", "no", "--output", str(out)])
    assert json.loads(out.read_text()) == report
    runs = report["runs"]
    assert [(r["method"], r["class_images"]) for r in runs] == [
        ("prior prediction", 0), ("class images", 1), ("class images", 2)]
    assert runs[0]["class_image_s"] == 0 and runs[2]["class_image_s"] > 0
    for r in runs:
        assert 0 < r["training_s"] <= r["total_s"] and r["steps_per_second"] > 0
