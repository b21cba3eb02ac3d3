"""The Gradio app end to end: launched in-process, driven over HTTP with gradio_client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamstudio.core.models import DEFAULT_MODEL
from dreamstudio.errors import InputError
from dreamstudio.ui.launch import SHARE_USER, launch, main, parse_args

pytestmark = pytest.mark.slow

SUBJECT = "dog"  # prepared and trained once (the `trained` fixture); no test changes it
PROMPT = "a photo of sks dog"
RUN = "run1"
LABEL = f"{SUBJECT} / {RUN}"


def _train_args(run_name: str, steps: int, subject: str = SUBJECT) -> dict:
    return {
        "subject": subject, "instance_prompt": PROMPT, "prior_preservation": False,
        "class_prompt": "", "num_class_images": 100, "prior_loss_weight": 1.0, "steps": steps,
        "resolution": 64, "learning_rate": 1e-3, "text_encoder_lr": 1e-4,
        "train_text_encoder": True, "rank": 4, "batch_size": 1, "seed": 0,
        "run_name": run_name, "api_name": "/start_training",
    }


def _wait_until_done(client, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.predict(api_name="/training_status")
        if status["state"] != "running":
            return status
        assert time.monotonic() < deadline, f"training still running: {status}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from tests.support.tiny_scorers import build_tiny_scorers

    return build_tiny_scorers(tmp_path_factory.mktemp("scorers"))


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory, app_runner, scorer_dirs):
    from gradio_client import Client

    workspace = tmp_path_factory.mktemp("workspace")
    dino, clip = scorer_dirs
    with app_runner(tiny_model, workspace, "--dino-model", str(dino),
                    "--clip-model", str(clip)) as (url, studio):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        yield Client(url, verbose=False), studio, workspace, port


@pytest.fixture(scope="module")
def prepared(app, dog_photos, tmp_path_factory):
    """Prepare the subject through the API: 3 real photos and one empty file."""
    from gradio_client import handle_file

    client = app[0]
    empty = tmp_path_factory.mktemp("upload") / "empty.jpg"
    empty.write_bytes(b"")
    files = [handle_file(str(p)) for p in dog_photos[:3]] + [handle_file(str(empty))]
    return client.predict(SUBJECT, files, "object", 64, 2.2, api_name="/prepare")


@pytest.fixture(scope="module")
def trained(app, prepared) -> dict:
    """'dog / run1' trained once through the API (6 steps); returns its final status.
    Tests generate with it and score it, but none changes its photos or its LoRA."""
    client = app[0]
    assert "Training started" in client.predict(**_train_args(RUN, steps=6))
    return _wait_until_done(client)


@pytest.fixture
def new_subject(app, dog_photos):
    """Prepares a subject of the test's own (4 real photos) and returns its crops' names:
    tests that edit, rename or delete photos leave the shared subject alone."""
    from gradio_client import handle_file

    client, _, workspace, _ = app

    def prepare(name: str) -> list[str]:
        files = [handle_file(str(p)) for p in dog_photos[:4]]
        client.predict(name, files, "object", 64, 2.2, api_name="/prepare")
        return [r["output"] for r in _manifest(workspace, name)["results"]]

    return prepare


def _manifest(workspace: Path, subject: str) -> dict:
    import json

    return json.loads((workspace / "subjects" / subject / "photos" / "manifest.json")
                      .read_text(encoding="utf-8"))


def test_prepare_keeps_good_photos_and_explains_rejects(app, prepared):
    client, _, workspace, _ = app
    summary, gallery, rejected, *_ = prepared
    assert "3 photos kept" in summary and "1 not used" in summary
    assert len(gallery) == 3
    for item in gallery:
        with Image.open(item["image"]) as im:
            assert im.size == (64, 64)
    assert rejected["data"] == [["empty.jpg", "empty file (0 bytes)"]]
    assert len(list((workspace / "subjects" / SUBJECT / "photos").glob("*.png"))) == 3

    # Picking the subject again shows its current crops.
    _, again, _, mode, size, _ = client.predict(SUBJECT, api_name="/subject_photos")
    assert len(again) == 3 and (mode, size) == ("object", 64)


def test_app_serves_workspace_files_only(app, prepared):
    import httpx

    _, _, workspace, port = app
    assert os.environ["GRADIO_TEMP_DIR"].startswith(str(workspace))
    crop = next((workspace / "subjects" / SUBJECT / "photos").glob("*.png"))
    outside = Path(__file__).resolve()
    base = f"http://127.0.0.1:{port}/gradio_api/file="
    assert httpx.get(f"{base}{crop}").status_code == 200
    assert httpx.get(f"{base}{outside}").status_code in (403, 404)
    # The workspace lock names the app's pid and host: inside the workspace, yet never served.
    lock = workspace / ".dreamstudio-app.lock"
    assert lock.is_file()
    assert httpx.get(f"{base}{lock}").status_code in (403, 404)


def test_second_training_is_refused_and_cancel_works(app, new_subject):
    client, _, workspace, _ = app
    new_subject("pup")
    started = client.predict(**_train_args("long", steps=100_000, subject="pup"))
    assert "Training started" in started and "**pup / long**" in started
    refused = client.predict(**_train_args("other", steps=5, subject="pup"))
    assert "already in progress" in refused
    assert "Cancelling" in client.predict(api_name="/cancel_training")
    status = _wait_until_done(client, timeout=60)
    assert status["state"] == "cancelled", status
    assert "cancelled" in status["message"].lower()
    assert status["lora_dir"] is None
    assert not list((workspace / "subjects" / "pup" / "loras").glob("long/*.safetensors"))
    assert "nothing to cancel" in client.predict(api_name="/cancel_training")


def test_train_then_generate_with_cached_model(app, trained):
    client, studio, workspace, _ = app
    assert trained["state"] == "completed", trained
    assert trained["step"] == trained["total_steps"] == 6
    assert (trained["subject"], trained["run"]) == (SUBJECT, RUN)
    assert trained["lora_dir"] and Path(trained["lora_dir"]).is_dir()
    assert LABEL in client.predict(api_name="/list_loras")
    generated = workspace / "subjects" / SUBJECT / "generated"
    before = set(generated.glob("*.png"))

    def generate(unet_scale: float) -> np.ndarray:
        gallery, caption = client.predict(
            lora=LABEL, prompt=PROMPT, negative_prompt="", unet_scale=unet_scale,
            text_encoder_scale=1.0, guidance=7.5, steps=3, seed=0, num_images=1,
            height=64, width=64, api_name="/generate",
        )
        assert len(gallery) == 1 and LABEL in caption
        with Image.open(gallery[0]["image"]) as im:
            assert im.size == (64, 64)
            return np.asarray(im.convert("RGB"), dtype=np.int16)

    with_lora = generate(1.0)
    lora_loads = studio.generator.lora_loads
    without_lora = generate(0.0)
    assert np.abs(with_lora - without_lora).max() > 0
    assert len(set(generated.glob("*.png")) - before) == 2
    # Moving a slider and generating again changes adapter weights; nothing reloads.
    assert studio.generator.model_loads == 1
    assert studio.generator.lora_loads == lora_loads


def test_user_errors_come_back_as_messages(app, prepared):
    client = app[0]
    _, caption = client.predict(
        lora="(base model, no LoRA)", prompt="  ", negative_prompt="", unet_scale=1.0,
        text_encoder_scale=1.0, guidance=7.5, steps=3, seed=0, num_images=1, height=64,
        width=64, api_name="/generate",
    )
    assert caption.startswith("⚠️") and "prompt is empty" in caption
    message = client.predict(**{**_train_args("x", 5), "subject": "nobody"})
    assert message.startswith("⚠️") and "no prepared photos" in message


# ---- command line (no server, no network) ------------------------------------------------

def test_defaults_bind_localhost():
    options = parse_args([])
    assert (options.host, options.port, options.model) == ("127.0.0.1", 7860, DEFAULT_MODEL)
    assert options.auth is None and not options.share


def test_share_without_auth_makes_a_strong_password():
    first, second = parse_args(["--share"]), parse_args(["--share"])
    assert first.generated_password and first.auth[0] == SHARE_USER
    assert len(first.auth[1]) >= 20 and first.auth[1] != second.auth[1]
    chosen = parse_args(["--share", "--auth", "anna:pa:ss"])
    assert chosen.auth == ("anna", "pa:ss") and not chosen.generated_password


@pytest.mark.parametrize("value", ["nocolon", ":pass", "user:"])
def test_auth_must_be_user_colon_pass(value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--auth", value])
    assert "USER:PASS" in capsys.readouterr().err


def test_missing_local_model_fails_at_startup(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match="not found"):
        launch(["--model", str(missing), "--workspace", str(tmp_path / "ws")], block=False)
    assert main(["--model", str(missing), "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err


# ---- Data tab: reviewing photos, renaming and deleting subjects ---------------------------

def test_exclude_and_include_a_photo_through_the_app(app, new_subject):
    from dreamstudio.data.manifest import image_files

    client, _, workspace, _ = app
    subject = "review-cat"
    reviewed = new_subject(subject)
    photos = workspace / "subjects" / subject / "photos"
    assert len(image_files(photos)) == 4
    text, summary, gallery, _ = client.predict(subject, reviewed[1], True,
                                               api_name="/exclude_photo")
    assert "Left out of training" in text
    assert "left 1 out of training, so 3 will be used" in summary
    assert "(left out)" in gallery[1]["caption"] and len(gallery) == 4
    assert _manifest(workspace, subject)["excluded"] == [reviewed[1]]
    assert [p.name for p in image_files(photos)] == [reviewed[0], *reviewed[2:]]

    text, summary, gallery, _ = client.predict(subject, reviewed[1], False,
                                               api_name="/exclude_photo")
    assert "Left out" not in text and "left 1 out" not in summary
    assert _manifest(workspace, subject)["excluded"] == []
    assert len(image_files(photos)) == 4
    text, *_ = client.predict(subject, "no-such.png", True, api_name="/exclude_photo")
    assert text.startswith("⚠️") and "no-such.png" in text


def test_recrop_a_photo_by_hand_through_the_app(app, new_subject):
    client, _, workspace, _ = app
    subject = "recrop-cat"
    reviewed = new_subject(subject)
    crop = workspace / "subjects" / subject / "photos" / reviewed[0]
    before = crop.read_bytes()
    out = client.predict(subject, reviewed[0], 10, 20, 300, api_name="/recrop_photo")
    text, sliders = out[0], out[5:8]  # x, y, side come back as updates with new limits
    assert "crop 300 px at (10, 20), set by hand" in text
    assert [s["value"] for s in sliders] == [10, 20, 300]
    assert [s["maximum"] for s in sliders] == [780, 780, 780]  # the photo's own size
    result = _manifest(workspace, subject)["results"][0]
    assert result["crop_box"] == [10, 20, 310, 320] and result["manual_crop"] is True
    assert crop.read_bytes() != before
    with Image.open(crop) as im:
        assert im.size == (64, 64)

    # Back to the automatic centre square.
    out = client.predict(subject, reviewed[0], api_name="/reset_crop")
    assert "centre square" in out[0]
    assert _manifest(workspace, subject)["results"][0]["manual_crop"] is False


def test_rename_and_delete_a_subject_through_the_app(app, new_subject, monkeypatch):
    client, studio, workspace, _ = app
    subject = "rename-cat"
    new_subject(subject)
    new_subject("taken")
    subjects = workspace / "subjects"
    for bad in ("../x", "taken", "", "a/b"):
        message, *_ = client.predict(subject, bad, api_name="/rename_subject")
        assert message.startswith("⚠️"), (bad, message)
    assert (subjects / subject).is_dir() and not (workspace / "x").exists()

    new = "Mieze 猫"
    message, dropdown, new_name = client.predict(subject, new, api_name="/rename_subject")
    assert f"to **{new}**" in message and new_name == ""
    choices = [c[1] for c in dropdown["choices"]]
    assert dropdown["value"] == new and new in choices and subject not in choices
    assert choices == sorted(p.name for p in subjects.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
    assert (subjects / new / "photos" / "manifest.json").is_file()
    assert not (subjects / subject).exists()

    message, *_ = client.predict(new, False, api_name="/delete_subject")
    assert message.startswith("⚠️") and "tick 'Yes, delete'" in message
    assert (subjects / new).is_dir()

    class Training:  # what Studio.jobs.status() says while a run of this subject goes on
        running = True
        config = type("Config", (), {"output_dir": subjects / new / "loras" / "run"})()

    monkeypatch.setattr(studio.jobs, "status", lambda: Training())
    message, *_ = client.predict(new, True, api_name="/delete_subject")
    assert "being trained right now" in message and (subjects / new).is_dir()
    monkeypatch.undo()

    message, dropdown, confirm = client.predict(new, True, api_name="/delete_subject")
    assert message == f"Deleted **{new}**." and confirm is False
    choices = [c[1] for c in dropdown["choices"]]
    assert dropdown["value"] is None and new not in choices and "taken" in choices
    assert not (subjects / new).exists() and (subjects / "taken").is_dir()


# ---- Train tab: run names, resume, live visibility, identifier, class images ---------------

def test_training_shows_validation_images_files_and_resumes(app, new_subject):
    client = app[0]
    new_subject("rex")
    args = {**_train_args("visible", steps=4, subject="rex"), "validation_every": 2,
            "checkpoint_every": 2, "export_kohya": True, "mixed_precision": "no"}
    assert "Training started" in client.predict(**args)
    status = _wait_until_done(client)
    assert status["state"] == "completed", status
    shots = [Path(p) for p in status["validation_images"]]
    assert [p.name for p in shots] == ["step-000002-0.png", "step-000004-0.png"]
    assert all(p.is_file() for p in shots)
    assert Path(status["kohya_path"]).is_file() and Path(status["log_path"]).is_file()
    assert status["elapsed_seconds"] > 0 and status["started_at"]

    # The name is taken now: refused, with a free name to use instead.
    refused = client.predict(**args)
    assert refused.startswith("⚠️") and "already exists" in refused and "'visible-2'" in refused
    assert "checkpoint at step 2" in client.predict("rex", "visible", api_name="/run_info")

    # Resume refuses other settings before anything loads, then continues with the same.
    mismatch = client.predict(**{**args, "rank": 8, "steps": 6,
                                 "api_name": "/resume_training"})
    assert mismatch.startswith("⚠️") and "rank (was 4, now 8)" in mismatch
    resumed = client.predict(**{**args, "steps": 6, "api_name": "/resume_training"})
    assert "from step 2 to 6" in resumed
    status = _wait_until_done(client)
    assert status["state"] == "completed" and status["resumed"], status
    assert status["step"] == 6
    assert [Path(p).name for p in status["validation_images"]][-2:] == [
        "step-000004-0.png", "step-000006-0.png"]


def test_identifier_check_and_suggestions_through_the_app(app):
    client = app[0]
    instance, klass, check = client.predict("sks", "dog", api_name="/check_identifier")
    assert (instance, klass) == ("a photo of sks dog", "a photo of dog")
    assert "one token" in check and "⚠️" not in check
    _, _, check = client.predict("dog", "dog", api_name="/check_identifier")
    assert "common word" in check
    first = client.predict("dog", "a photo of dog", api_name="/suggest_identifiers")
    radio, word, instance, check = first
    assert word == radio["value"] and instance == f"a photo of {word} dog"
    assert "one token" in check and len(radio["choices"]) == 5


def test_own_class_images_join_the_shared_folder(app, dog_photos):
    from gradio_client import handle_file

    client, studio, _, _ = app
    prompt = "a photo of a dog"
    text, gallery, _ = client.predict(prompt, 64, 3, [handle_file(str(dog_photos[0]))],
                                      api_name="/add_class_images")
    assert "Added 1 picture" in text and "**1 of 3**" in text and "1 yours" in text
    assert "missing" in text and "reuses them" in text
    assert [item["caption"] for item in gallery] == ["yours"]
    folder = studio.workspace.class_images_dir(studio.model, prompt, 64)
    (stored,) = [p.name for p in folder.iterdir()]
    assert stored.startswith("own_")
    again, gallery = client.predict(prompt, 64, 1, api_name="/class_images")
    assert "**1 of 1**" in again and len(gallery) == 1


# ---- Generate tab: grids, samplers, history, stop; Evaluate tab ----------------------------

def _generate_args(label: str, **changes) -> dict:
    return {"lora": label, "prompt": PROMPT, "negative_prompt": "", "unet_scale": 1.0,
            "text_encoder_scale": 1.0, "guidance": 7.5, "steps": 2, "seed": 3, "num_images": 1,
            "height": 64, "width": 64, "sampler": "Euler a", **changes}


def test_grid_sampler_and_history_through_the_app(app, trained):
    client, studio, workspace, _ = app
    label = LABEL
    generated = workspace / "subjects" / SUBJECT / "generated"
    grids = len(list(generated.glob("*_grid_*.png")))
    lora_loads = studio.generator.lora_loads
    gallery, caption = client.predict(
        **_generate_args(label), x_axis="unet_scale", x_values="0, 1", y_axis="guidance",
        y_values="3-7 (+4)", api_name="/grid")
    assert caption.startswith("Grid of 4 images (2 × 2)"), caption
    assert "X = LoRA UNet scale 0, 1; Y = CFG scale 3, 7" in caption
    with Image.open(gallery[0]["image"]) as im:
        assert im.width > 2 * 64 and im.height > 2 * 64  # cells plus their labels
    assert len(list(generated.glob("*_grid_*.png"))) == grids + 1
    # One model load for the app's life; at most this LoRA's own load for the whole grid.
    assert studio.generator.model_loads == 1
    assert studio.generator.lora_loads - lora_loads <= 1
    loads = (studio.generator.model_loads, studio.generator.lora_loads)
    client.predict(**_generate_args(label), x_axis="text_encoder_scale", x_values="0-1 [3]",
                   y_axis="none", y_values="", api_name="/grid")
    assert (studio.generator.model_loads, studio.generator.lora_loads) == loads

    _, caption = client.predict(**_generate_args(label), x_axis="unet_scale",
                                x_values="0-2 (+0.01)", y_axis="none", y_values="",
                                api_name="/grid")
    assert caption.startswith("⚠️") and "at most 64" in caption

    _, caption = client.predict(**_generate_args(label, sampler="DDIM", seed=9, guidance=4.0,
                                                 unet_scale=0.6), api_name="/generate")
    assert "DDIM sampler" in caption
    history = client.predict(label, api_name="/history")
    newest, grid = history[0], history[2]
    assert newest["parameters"]["sampler"] == "DDIM" and newest["parameters"]["seed"] == 9
    assert grid["caption"].startswith("grid: LoRA UNet scale × CFG scale")
    settings = client.predict(label, newest["file"], api_name="/history_settings")
    assert {k: settings[k] for k in ("lora", "sampler", "seed", "guidance", "unet_scale",
                                     "steps", "height", "width")} == {
        "lora": label, "sampler": "DDIM", "seed": 9, "guidance": 4.0, "unet_scale": 0.6,
        "steps": 2, "height": 64, "width": 64}
    assert "Sampler: DDIM" in settings["parameters_text"]
    grid_settings = client.predict(label, grid["file"], api_name="/history_settings")
    assert grid_settings["grid"]["x"]["values"] == [0.0, 1.0]
    assert grid_settings["grid"]["y"]["axis"] == "guidance"
    base_history = client.predict("(base model, no LoRA)", api_name="/history")
    assert all(not item["parameters"]["lora_dir"] for item in base_history)


def test_stop_interrupts_a_running_grid(app, trained):
    client, _, workspace, _ = app
    label = LABEL
    grids = workspace / "subjects" / SUBJECT / "generated"
    before = len(list(grids.glob("*_grid_*.png")))
    assert "nothing to stop" in client.predict(api_name="/stop_generation")
    job = client.submit(**_generate_args(label, steps=50), x_axis="seed", x_values="1-8",
                        y_axis="none", y_values="", api_name="/grid")
    deadline = time.monotonic() + 60
    while "Stopping" not in client.predict(api_name="/stop_generation"):
        assert time.monotonic() < deadline, "the grid never started"
        time.sleep(0.1)
    gallery, caption = job.result(timeout=120)
    assert caption.startswith("⏹️ Stopped after") and "not saved" in caption
    assert len(gallery) == 1  # the partial grid is still shown
    assert len(list(grids.glob("*_grid_*.png"))) == before


def test_evaluate_tab_scores_a_lora_with_the_cached_model(app, trained, scorer_dirs):
    import json

    client, studio, workspace, _ = app
    label = LABEL
    dino, clip = scorer_dirs
    settings = {"lora": label, "kind": "auto", "images_per_prompt": 1, "num_prompts": 2,
                "steps": 2, "dino_model": str(dino), "clip_model": str(clip)}
    status, prompts, summary, samples, files = client.predict(**settings,
                                                              api_name="/evaluate")
    assert "Done" in status and "2 prompts × 1 images" in status, status
    assert [row[0] for row in prompts["data"]] == ["a sks dog in the jungle",
                                                   "a sks dog in the snow"]
    rows = {row[0]: row[1:] for row in summary["data"]}
    assert "DreamBooth, Stable Diffusion (paper)" in rows and len(samples) == 2
    [folder] = (workspace / "subjects" / SUBJECT / "evaluations").glob(f"{RUN}-*")
    saved = json.loads((folder / "fidelity.json").read_text(encoding="utf-8"))
    # The page says which photos subject fidelity was measured against.
    assert ("kept for scoring only" if saved["compared_with"] == "held_out"
            else "training photo(s)") in status
    metrics = ("dino", "clip_i", "clip_t")
    # Each prompt's scores are the saved ones, and the means row is their average.
    assert prompts["data"] == [[r["prompt"], *(round(r[m], 3) for m in metrics)]
                               for r in saved["rows"]]
    for m in metrics:
        assert saved["means"][m] == pytest.approx(sum(r[m] for r in saved["rows"]) / 2)
    mean = rows["This LoRA: mean of 2 prompts"]
    assert mean == [round(saved["means"][m], 3) for m in metrics]
    assert saved["real_images"] and all("/photos/" in p for p in saved["real_images"])
    assert sorted(Path(f).name for f in files) == ["fidelity.csv", "fidelity.json"]
    assert studio.generator.model_loads == 1

    assert "nothing to stop" in client.predict(api_name="/stop_evaluation")


def test_evaluate_takes_only_the_scorer_models_the_page_offers(app, trained, scorer_dirs,
                                                               tmp_path, monkeypatch):
    """Any caller of the API can send any text: a folder elsewhere on the server or a Hub id
    must be refused before anything is read or downloaded, by Gradio and by the handler."""
    from types import SimpleNamespace

    from gradio_client.exceptions import AppError

    from dreamstudio.ui.evaluate_tab import EvaluateHandlers, scorer_choices

    client, studio, _, _ = app
    dino, clip = (str(d) for d in scorer_dirs)
    assert scorer_choices(studio, "dino_model") == [dino, "facebook/dino-vits16"]
    assert scorer_choices(studio, "clip_model") == [clip, "openai/clip-vit-base-patch32"]
    loaded = []
    monkeypatch.setattr(studio, "scorers", lambda *models: loaded.append(models))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = {"lora": LABEL, "kind": "auto", "images_per_prompt": 1, "num_prompts": 1,
                "steps": 1, "dino_model": dino, "clip_model": clip}
    for bad in ({"dino_model": str(elsewhere)}, {"clip_model": "someone/any-model"}):
        try:
            status = client.predict(**{**settings, **bad}, api_name="/evaluate")[0]
        except AppError as exc:  # Gradio's own check of a dropdown's value
            status = str(exc)
        assert "not in the list of choices" in status or "not one this app offers" in status
    handlers = EvaluateHandlers(studio, SimpleNamespace(status="status"))
    for name, bad in (("dino_model", str(elsewhere)), ("clip_model", "someone/any-model")):
        answer = handlers.evaluate(**{**settings, name: bad})
        assert answer["status"].startswith(f"⚠️ {name[:4].upper()} model '{bad}' is not one "
                                           "this app offers"), answer
        assert f"app.py --{name.replace('_', '-')}" in answer["status"]
    assert loaded == []


# ---- Tune tab ----------------------------------------------------------------------------

def _tune_args(dino: str, clip: str, **changes) -> dict:
    # UNet 0 with text encoder 0 draws what the base model draws, so its CLIP-T is the base
    # model's: it passes the rule (at the default 5% tolerance) whatever the tiny scorers
    # make of it.
    return {"subject": SUBJECT, "run": RUN, "candidates": ["final"], "unet_scales": "0, 1",
            "text_encoder_scales": "0", "guidances": "7.5", "prompt_set": "quick",
            "images_per_prompt": 1, "steps": 2, "leak_images": 1, "clip_t_tolerance": 5,
            "face_identity": "off", "dino_model": dino, "clip_model": clip, **changes}


def test_tune_tab_sweeps_and_puts_the_pick_into_generate(app, trained, scorer_dirs):
    import json

    client, studio, workspace, _ = app
    args = _tune_args(*(str(d) for d in scorer_dirs))
    assert "nothing to stop" in client.predict(api_name="/stop_tune")
    # Picking the run lists its LoRAs (the page does it when the tab opens); the
    # checkboxes then take their names.
    candidates = client.predict(SUBJECT, RUN, api_name="/tune_show")[0]
    assert [c[1] for c in candidates["choices"]] == ["final"]
    estimate = client.predict(**args, api_name="/tune_estimate")
    assert "2 cells (1 LoRA(s)) + 1 base-model row(s)" in estimate, estimate
    assert "on this machine" in estimate and "reused" not in estimate

    status, last, plot, table, summary, files, _ = client.predict(**args,
                                                                  api_name="/tune_sweep")
    assert status.startswith("✅ Sweep done: 2 cell(s) and 1 base-model row(s)"), status
    folder = workspace / "subjects" / SUBJECT / "tunes" / RUN
    saved = json.loads((folder / "tune.json").read_text(encoding="utf-8"))
    assert sorted(Path(f).name for f in files) == ["tune.csv", "tune.json", "tune.png"]
    with Image.open(plot) as im:
        assert im.width > 100 and im.height > 100
    with Image.open(last) as im:
        assert im.size == (64, 64)  # the last image drawn, shown while the sweep ran
    # The table is every row of the saved sweep, base model first.
    rows = table["data"]
    head = table["headers"]
    assert [(r[head.index("LoRA")], r[head.index("UNet")]) for r in rows] == [
        ("base", 0.0), ("final", 0.0), ("final", 1.0)]
    for row, cell in zip(rows, saved["base"] + saved["cells"], strict=True):
        assert row[head.index("CLIP-T")] == round(cell["clip_t"], 3)
    rec = saved["recommendation"]["cell"]
    assert rec is not None, saved["recommendation"]
    assert saved["recommendation"]["rule"] in summary
    assert "Subject fidelity was measured against" in summary

    # Run again: every image is on disk already; the saved sweep comes back with the run.
    again = client.predict(**args, api_name="/tune_estimate")
    assert "0 to draw" in again and "reused from an earlier sweep" in again, again
    shown = client.predict(SUBJECT, RUN, api_name="/tune_show")
    assert any(isinstance(v, str) and "Showing the sweep saved" in v for v in shown), shown

    # "Use this in Generate": the recommended LoRA and sliders for the Generate controls.
    # (The API leaves out the Generate tab's seen-labels state and the tabs to open.)
    lora, unet, te, guidance, note = client.predict(SUBJECT, RUN, 0, api_name="/tune_use")
    label = lora["value"]
    assert studio.find_lora(label) is not None and label in [c[1] for c in lora["choices"]]
    assert (unet, te, guidance) == (rec["unet_scale"], rec["text_encoder_scale"],
                                    rec["guidance"])
    assert f"**{label}**" in note
    gallery, caption = client.predict(**_generate_args(label, unet_scale=unet,
                                                       text_encoder_scale=te,
                                                       guidance=guidance),
                                      api_name="/generate")
    assert len(gallery) == 1 and label in caption
    assert studio.generator.model_loads == 1


def test_stop_interrupts_a_running_sweep(app, trained, scorer_dirs):
    client, studio, _, _ = app
    args = _tune_args(*(str(d) for d in scorer_dirs), unet_scales="0.2-1 [5]", steps=40,
                      guidances="3")
    client.predict(SUBJECT, RUN, api_name="/tune_show")  # the checkboxes learn the run's LoRAs
    job = client.submit(**args, api_name="/tune_sweep")
    deadline = time.monotonic() + 60
    while "Stopping" not in client.predict(api_name="/stop_tune"):
        assert time.monotonic() < deadline, "the sweep never started"
        time.sleep(0.1)
    status, *_, summary, _, _ = job.result(timeout=120)
    assert status.startswith("⏹️ Stopped after"), status
    assert "No recommendation for a sweep that was stopped" in summary
    # A stopped sweep is not saved as the run's result (an earlier finished one may be).
    saved = studio.last_tune(SUBJECT, RUN)
    assert saved is None or saved.config["guidances"] != [3.0]


def test_a_file_as_workspace_is_named_not_taken_for_a_busy_port(tiny_model, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("a file")
    assert main(["--model", str(tiny_model), "--workspace", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"--workspace {taken} is a file, not a folder" in err and "--port" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_refused_at_start(tiny_model, tmp_path, capsys,
                                                        monkeypatch):
    from dreamstudio.errors import DreamStudioError

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # launch sets it; put it back after
    argv = ["--model", str(tiny_model), "--workspace", str(tmp_path / "ws"), "--device", "cuda"]
    try:
        demo, _ = launch(argv, block=False, quiet=True)
    except DreamStudioError as exc:
        assert "no CUDA GPU" in str(exc)
    else:
        demo.close()
        pytest.fail("the app started on a device that is not there")
    assert not (tmp_path / "ws" / ".dreamstudio-app.lock").exists()  # refused before serving
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err, err


class _Clock:
    """Stands in for the login limit's clock: time moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_failed_logins_are_limited_per_address(tiny_model, tmp_path, app_runner, monkeypatch):
    import httpx

    from dreamstudio.ui import login_limit

    clock = _Clock()
    monkeypatch.setattr(login_limit, "time", clock)
    with app_runner(tiny_model, tmp_path / "ws", "--auth", "anna:a-long-passphrase") as (url, _):
        def login(password: str, via: str | None = None) -> httpx.Response:
            headers = {"x-forwarded-for": f"198.51.100.1, {via}"} if via else {}
            return httpx.post(f"{url}login", data={"username": "anna", "password": password},
                              headers=headers, timeout=30)

        assert login("a-long-passphrase").status_code == 200
        answers = [login(f"guess-{i}").status_code for i in range(login_limit.MAX_FAILURES)]
        assert answers == [400] * login_limit.MAX_FAILURES  # each wrong try answered...
        refused = login("a-long-passphrase")  # ...and then even the right one is refused
        assert refused.status_code == 429, refused.text
        assert "Too many failed logins" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) == login_limit.LOCKOUT_SECONDS
        # A visitor through the share tunnel (another address) is not locked out.
        assert login("a-long-passphrase", via="203.0.113.7").status_code == 200

        clock.now += login_limit.LOCKOUT_SECONDS + 1
        assert login("a-long-passphrase").status_code == 200  # the lock has passed
        for i in range(login_limit.MAX_FAILURES):
            login(f"again-{i}")
        assert login("x").status_code == 429
        clock.now += login_limit.LOCKOUT_SECONDS + 1
        assert login("x").status_code == 400  # one more try after the lock...
        assert login("y").status_code == 429  # ...and the next lock is twice as long
        clock.now += login_limit.LOCKOUT_SECONDS + 1
        assert login("a-long-passphrase").status_code == 429
