"""SDXL's shipped configs, its architecture for benchmarks, and the SDXL benchmark against
diffusers' script (no timing targets: figures, and that they are measured as described)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import sdxl
from bench.sdxl_arch import SDXL_CONFIGS, sdxl_components, sdxl_tokenizers
from bench.sdxl_timing import timed_run

# Our trainer trains SDXL once it conditions the UNet on both text encoders (the SDXL
# training work adds this module); until then our side cannot run on an SDXL model.
SDXL_TRAINING = importlib.util.find_spec("dreamstudio.train.conditioning") is not None
THEIR_SCRIPT = os.environ.get("DREAMSTUDIO_DIFFUSERS_SDXL_SCRIPT")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_shipped_configs_build_sdxl_base_with_its_parameter_counts():
    with torch.device("meta"):
        unet, vae, text_encoder, text_encoder_2 = sdxl_components()
    # SDXL base 1.0's published sizes.
    assert _count(unet) == 2_567_463_684
    assert _count(text_encoder) == 123_060_480  # CLIP ViT-L/14's text model
    assert round(_count(text_encoder_2) / 1e6, 1) == 694.7  # OpenCLIP bigG's, projected
    assert _count(vae) == 83_653_863
    # The UNet reads what the encoders give: both hidden states side by side, and the
    # pooled embedding beside six size/crop numbers of 256 features each.
    assert unet.config.cross_attention_dim == (text_encoder.config.hidden_size
                                               + text_encoder_2.config.hidden_size)
    assert unet.config.projection_class_embeddings_input_dim == (
        6 * unet.config.addition_time_embed_dim + text_encoder_2.config.projection_dim)
    assert vae.config.scaling_factor == 0.13025 and vae.config.force_upcast


def test_the_shipped_folder_reads_as_sdxl_with_its_two_tokenizers():
    from diffusers import EulerDiscreteScheduler

    from dreamstudio.core.families import SDXL, folder_family

    assert folder_family(SDXL_CONFIGS) == SDXL
    scheduler = EulerDiscreteScheduler.from_pretrained(SDXL_CONFIGS, subfolder="scheduler")
    assert scheduler.config.timestep_spacing == "leading"
    assert scheduler.config.prediction_type == "epsilon"
    tokenizer, tokenizer_2 = sdxl_tokenizers()
    ids = tokenizer("a photo of sks dog", padding="max_length").input_ids
    ids_2 = tokenizer_2("a photo of sks dog", padding="max_length").input_ids
    assert len(ids) == len(ids_2) == 77
    # Same words, same tokens; only the padding differs (end-of-text vs OpenCLIP's "!").
    assert ids[:7] == ids_2[:7] and ids[6] == 49407
    assert ids[-1] == 49407 and ids_2[-1] == 0


def _fake_trainer(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_trainer.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(script)]


def test_steps_are_timed_from_their_reports_and_the_run_stops_after_the_last(tmp_path):
    # Like their script: tqdm redraws with "\r" and no newline; it then lingers (saving,
    # reloading the pipeline), which the benchmark does not wait for.
    cmd = _fake_trainer(tmp_path, """
        import sys, time
        data = b"x" * (200 * 2**20)  # some memory to see in the peak
        time.sleep(0.3)
        for n in range(1, 4):
            sys.stderr.write(f"\\rSteps: {n * 33}%|###  | {n}/3 [00:01<00:02, 0.5s/it]")
            sys.stderr.flush()
            time.sleep(0.4)
        time.sleep(60)
    """)
    times = timed_run(cmd, dict(os.environ), sdxl.THEIR_STEP_PATTERN, last_step=3)
    assert sorted(times.arrivals) == [1, 2, 3]
    assert times.seconds_per_step(1, 3) >= 0.35  # two 0.4 s sleeps between the reports
    assert times.stopped_after_training and times.wall_s < 30
    assert times.peak_rss_training_gib >= 0.19 and times.peak_rss_process_gib >= 0.19


def test_a_run_that_fails_says_why(tmp_path):
    cmd = _fake_trainer(tmp_path, """
        import sys
        print("Steps:   0%|     | 0/3 [00:00<?, ?it/s]")
        sys.exit("OSError: no model_index.json in /nowhere")
    """)
    with pytest.raises(RuntimeError, match="no model_index.json in /nowhere"):
        timed_run(cmd, dict(os.environ), sdxl.THEIR_STEP_PATTERN, last_step=3)
    times = timed_run(_fake_trainer(tmp_path, "print('Steps: 100%|#| 1/1 [00:00<00:00]')"),
                      dict(os.environ), sdxl.THEIR_STEP_PATTERN, last_step=3)
    with pytest.raises(RuntimeError, match=r"step\(s\) \[3\] were never reported"):
        times.seconds_per_step(1, 3)


def test_the_sides_alternate_and_the_median_run_counts(monkeypatch, tmp_path):
    calls = []
    speeds = {"ours": iter([2.0, 1.0, 3.0]), "theirs": iter([9.0, 6.0, 3.0])}

    def fake_run_side(side, *args, **kw):
        calls.append(side)
        return {"s_per_step": next(speeds[side]), "peak_rss_training_gib": 1.5,
                "peak_rss_process_gib": 2.0}

    monkeypatch.setattr(sdxl, "run_side", fake_run_side)
    settings = sdxl.Settings(model=tmp_path, photos=tmp_path)
    script = tmp_path / "train_dreambooth_lora_sdxl.py"
    script.write_text("# their script\n")
    (tmp_path / "COMMIT").write_text("0123abc\n")
    r = sdxl.run_benchmark(settings, ["ours", "theirs"], 3, script)
    assert calls == ["ours", "theirs"] * 3
    assert r["ours"]["s_per_step"] == 2.0 and r["theirs"]["s_per_step"] == 6.0
    assert r["speedup_steps_per_s"] == 3.0
    assert r["diffusers"]["commit"] == "0123abc" and len(r["diffusers"]["sha256"]) == 64
    assert r["settings"]["resolution"] == 512 and r["settings"]["rank"] == 4
    assert "ours / theirs steps/s: x3.0" in sdxl.format_report(r)


def _check_side(data: dict, side: str) -> None:
    figures = data[side]
    run = figures["runs"][0]
    assert figures["s_per_step"] > 0 and figures["steps_per_s"] > 0
    assert 0 < run["until_first_step_s"] <= run["wall_s"]
    assert run["peak_rss_training_gib"] > 0 and run["peak_rss_process_gib"] > 0


@pytest.mark.skipif(not SDXL_TRAINING, reason="our trainer does not train SDXL in this tree")
def test_our_side_runs_end_to_end_on_the_tiny_sdxl_model(tiny_sdxl_model, small_dog_dir,
                                                          tmp_path):
    out = tmp_path / "sdxl.json"
    assert sdxl.main(["--model", str(tiny_sdxl_model), "--photos", str(small_dog_dir),
                      "--sides", "ours", "--resolution", "64", "--steps", "1",
                      "--warmup", "1", "--rounds", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    _check_side(data, "ours")
    assert data["ours"]["runs"][0]["s_per_step_trainer_clock"] > 0
    assert data["machine"]["cores"] and data["settings"]["precision"] == "bf16"
    assert "theirs" not in data and "speedup_steps_per_s" not in data


@pytest.mark.skipif(not (THEIR_SCRIPT and Path(THEIR_SCRIPT).is_file()),
                    reason="set DREAMSTUDIO_DIFFUSERS_SDXL_SCRIPT to diffusers' "
                           "train_dreambooth_lora_sdxl.py (not in this repository)")
def test_their_side_runs_on_the_tiny_sdxl_model(tiny_sdxl_model, small_dog_dir, tmp_path):
    out = tmp_path / "sdxl.json"
    assert sdxl.main(["--model", str(tiny_sdxl_model), "--photos", str(small_dog_dir),
                      "--sides", "theirs", "--diffusers-script", THEIR_SCRIPT,
                      "--resolution", "64", "--steps", "1", "--warmup", "1",
                      "--rounds", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    _check_side(data, "theirs")
    assert data["diffusers"]["script"] == THEIR_SCRIPT
