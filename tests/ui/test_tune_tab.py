"""The Tune tab's handlers without a server or a model: the Studio's sweep calls are
stood in for, so these check what the page sends and what it shows of the answers."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from dreamstudio.lora.files import WEIGHTS_NAME
from dreamstudio.studio import Studio
from dreamstudio.tune.candidates import Candidate
from dreamstudio.tune.results import (
    BASE,
    FINAL,
    CellScore,
    SweepPlan,
    SweepResult,
    TuneProgress,
)
from dreamstudio.tune.rule import recommend
from dreamstudio.ui.generate_widgets import build_widgets as build_generate_widgets
from dreamstudio.ui.loras import BASE_MODEL
from dreamstudio.ui.tune_tab import GenerateTargets, TuneHandlers
from dreamstudio.ui.tune_widgets import build_widgets

SUBJECT, RUN = "dog", "run1"


def _result(folder: Path, config: dict) -> SweepResult:
    png = folder / "tune.png"
    Image.new("RGB", (40, 30), "white").save(png)
    base = CellScore(BASE, None, 0.0, 0.0, 7.5, dino=0.2, clip_i=0.6, clip_t=0.31)
    # UNet 1 looks more like the subject but falls 10% below the base model's CLIP-T.
    cells = [CellScore(FINAL, 4, 0.6, 1.0, 7.5, dino=0.4, clip_i=0.7, clip_t=0.3),
             CellScore(FINAL, 4, 1.0, 1.0, 7.5, dino=0.6, clip_i=0.8, clip_t=0.28)]
    rec = recommend(cells, [base], config["clip_t_tolerance"], False)
    return SweepResult("completed", cells, [base], rec, config, "held_out", False, {},
                       drawn=3, files={"json": str(folder / "tune.json"), "png": str(png)})


class FakeSweeps:
    """Stands in for the Studio's tune methods and records what the page asked for."""

    def __init__(self, studio: Studio, folder: Path):
        self.folder, self.configs, self.used = folder, [], []
        self.saved: SweepResult | None = None
        run_dir = studio.workspace.run_dir(SUBJECT, RUN)
        self.candidates = [Candidate("step-000002", 2, run_dir / "checkpoints", "a"),
                           Candidate(FINAL, 4, run_dir, "b")]
        studio.tune_candidates = lambda subject, run: self.candidates
        studio.last_tune = lambda subject, run: self.saved
        studio.tune_config = self.tune_config
        studio.tune_plan = lambda config: SweepPlan([FINAL], 2, 1, 3, 2, 1.5, 2.0)
        studio.tune = self.tune
        studio.use_tuned = self.use_tuned

    def tune_config(self, subject, run, **settings):
        self.configs.append((subject, run, settings))
        return settings

    def tune(self, config, progress=None, cancel: threading.Event | None = None):
        progress(TuneProgress("drawing", 1, 3, "final, UNet 0.6", Image.new("RGB", (8, 8))))
        self.saved = _result(self.folder, {"unet_scales": [0.6, 1.0], "candidates": [FINAL],
                                           "clip_t_tolerance": config["clip_t_tolerance"]})
        return self.saved

    def use_tuned(self, subject, run, cell):
        self.used.append((subject, run, cell.key))
        return f"{subject} / {run}", {"unet_scale": cell.unet_scale,
                                      "text_encoder_scale": cell.text_encoder_scale,
                                      "guidance": cell.guidance}


@pytest.fixture
def tab(tmp_path):
    studio = Studio(tmp_path / "ws", model="/m/tiny")
    run_dir = studio.workspace.run_dir(SUBJECT, RUN)
    run_dir.mkdir(parents=True)
    (run_dir / WEIGHTS_NAME).write_bytes(b"")
    fake = FakeSweeps(studio, tmp_path)
    with gr.Blocks(), gr.Tabs() as tabs:
        with gr.Tab("Generate", id="generate"):
            generate = build_generate_widgets(studio, [BASE_MODEL], BASE_MODEL, "",
                                              ([], [], ""))
        with gr.Tab("Tune", id="tune"):
            ui = build_widgets(studio, [SUBJECT], SUBJECT, [RUN], RUN, [], [])
    s = generate.settings
    targets = GenerateTargets(generate.lora, generate.known, s["unet_scale"],
                              s["text_encoder_scale"], s["guidance"], tabs)
    return studio, ui, TuneHandlers(studio, ui, targets), fake, targets


def _inputs(ui, **changes) -> dict:
    values = {name: widget.value for name, widget in ui.settings.items()}
    return {"subject": SUBJECT, "run": RUN, "candidates": [FINAL], **values, **changes}


def test_refresh_lists_the_run_and_ticks_its_final_lora(tab):
    _, ui, handlers, _, _ = tab
    out = handlers.refresh(None, None)
    assert out[ui.subject]["value"] == SUBJECT and out[ui.run]["value"] == RUN
    assert out[ui.candidates]["choices"] == [("checkpoint at step 2", "step-000002"),
                                             ("final LoRA (step 4)", FINAL)]
    assert out[ui.candidates]["value"] == [FINAL]
    assert out[ui.plot] is None and out[ui.table].empty  # no sweep saved yet


def test_estimate_sends_parsed_values_and_says_the_plan(tab):
    _, ui, handlers, fake, _ = tab
    out = handlers.estimate(**_inputs(ui, unet_scales="0.5-1 (+0.25)", clip_t_tolerance=7.5))
    plan = SweepPlan([FINAL], 2, 1, 3, 2, 1.5, 2.0)
    assert out[ui.status] == f"**Estimate:** {plan.describe()}"
    subject, run, sent = fake.configs[-1]
    assert (subject, run, sent["candidates"]) == (SUBJECT, RUN, [FINAL])
    assert sent["unet_scales"] == [0.5, 0.75, 1.0] and sent["clip_t_tolerance"] == 0.075
    assert sent["text_encoder_scales"] == [0.5, 1.0] and sent["guidances"] == [7.5]


def test_bad_values_are_a_message_and_nothing_runs(tab):
    _, ui, handlers, fake, _ = tab
    out = handlers.estimate(**_inputs(ui, guidances="7.5, 30"))
    assert out[ui.status].startswith("⚠️") and "1-20" in out[ui.status]
    out = list(handlers.sweep(**_inputs(ui, subject="")))
    assert out[-1][ui.status].startswith("⚠️ Pick a subject")
    assert fake.configs == []


def test_sweep_streams_progress_then_shows_the_result(tab):
    _, ui, handlers, _, _ = tab
    updates = list(handlers.sweep(**_inputs(ui)))
    assert "image 1/3 · drawing · final, UNet 0.6" in [u.get(ui.status) for u in updates]
    assert any(isinstance(u.get(ui.last_image), Image.Image) for u in updates)
    last = updates[-1]
    assert last[ui.status].startswith("✅ Sweep done: 2 cell(s)")
    assert last[ui.plot].endswith("tune.png") and len(last[ui.table]) == 3
    assert list(last[ui.table]["LoRA"]) == [BASE, FINAL, FINAL]
    assert "Recommended: final, UNet 0.6" in last[ui.summary]
    assert last[ui.files] == [str(Path(last[ui.plot]).with_name("tune.json")), last[ui.plot]]


def test_a_saved_sweep_is_shown_with_its_values_when_the_run_is_picked(tab):
    _, ui, handlers, _, _ = tab
    list(handlers.sweep(**_inputs(ui)))
    out = handlers.show_run(SUBJECT, RUN)
    assert out[ui.settings["unet_scales"]] == "0.6, 1"
    assert out[ui.settings["clip_t_tolerance"]] == 5
    assert out[ui.candidates]["value"] == [FINAL]
    assert "Showing the sweep saved" in out[ui.status] and len(out[ui.table]) == 3


def test_use_this_fills_the_generate_controls_and_opens_the_tab(tab):
    _, ui, handlers, fake, t = tab
    out = handlers.use(SUBJECT, RUN)
    assert out[ui.use_note].startswith("⚠️") and "no sweep yet" in out[ui.use_note]
    list(handlers.sweep(**_inputs(ui)))
    out = handlers.use(SUBJECT, RUN, 15)  # at 15% the likelier UNet 1 cell passes too
    assert fake.used == [(SUBJECT, RUN, (FINAL, 1.0, 1.0, 7.5))]
    assert out[t.lora]["value"] == f"{SUBJECT} / {RUN}"
    assert f"{SUBJECT} / {RUN}" in out[t.lora]["choices"] and out[t.known][0] == BASE_MODEL
    assert (out[t.unet_scale], out[t.text_encoder_scale], out[t.guidance]) == (1.0, 1.0, 7.5)
    assert out[t.tabs].selected == "generate"


def test_moving_the_tolerance_judges_the_saved_sweep_again(tab):
    _, ui, handlers, fake, _ = tab
    assert handlers.rejudge(SUBJECT, RUN, 15) == {}  # no sweep yet: nothing changes
    list(handlers.sweep(**_inputs(ui)))
    out = handlers.rejudge(SUBJECT, RUN, 15)
    assert "Recommended: final, UNet 1," in out[ui.summary]
    assert "tolerance of 15%" in out[ui.summary] and "used 5%" in out[ui.summary]
    assert isinstance(out[ui.plot], Image.Image)  # drawn again for the new pick
    picked = out[ui.table].set_index("UNet")["pick"]
    assert (picked[1.0], picked[0.6]) == ("yes", "no")
    same = handlers.rejudge(SUBJECT, RUN, 5)
    assert same[ui.plot].endswith("tune.png") and "Judged at" not in same[ui.summary]
    assert fake.saved.recommendation.cell.unet_scale == 0.6  # the saved sweep is unchanged


def test_stop_without_a_sweep_says_so(tab):
    _, ui, handlers, _, _ = tab
    assert "nothing to stop" in handlers.stop()[ui.status]
