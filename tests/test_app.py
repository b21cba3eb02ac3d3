"""The Gradio app end to end: launched in-process, driven over HTTP with gradio_client."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamstudio.errors import InputError
from dreamstudio.models import DEFAULT_MODEL
from dreamstudio.ui.launch import SHARE_USER, launch, main, parse_args

pytestmark = pytest.mark.slow

SUBJECT = "dog"
PROMPT = "a photo of sks dog"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(run_name: str, steps: int) -> dict:
    return {
        "subject": SUBJECT, "instance_prompt": PROMPT, "prior_preservation": False,
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
def app(tiny_model, tmp_path_factory):
    from gradio_client import Client

    workspace = tmp_path_factory.mktemp("workspace")
    port = _free_port()
    old_temp = os.environ.get("GRADIO_TEMP_DIR")
    demo, studio = launch(
        ["--model", str(tiny_model), "--workspace", str(workspace), "--port", str(port),
         "--device", "cpu"],
        block=False, quiet=True,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        yield client, studio, workspace, port
    finally:
        studio.cancel_training()
        studio.jobs.wait(30)
        demo.close()
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp


@pytest.fixture(scope="module")
def prepared(app, dog_photos, tmp_path_factory):
    """Prepare the subject through the API: 3 real photos and one empty file."""
    from gradio_client import handle_file

    client = app[0]
    empty = tmp_path_factory.mktemp("upload") / "empty.jpg"
    empty.write_bytes(b"")
    files = [handle_file(str(p)) for p in dog_photos[:3]] + [handle_file(str(empty))]
    return client.predict(SUBJECT, files, "object", 64, 2.2, api_name="/prepare")


def test_prepare_keeps_good_photos_and_explains_rejects(app, prepared):
    client, _, workspace, _ = app
    summary, gallery, rejected, *_ = prepared
    assert "3 photos kept" in summary and "1 not used" in summary
    assert len(gallery) == 3
    for item in gallery:
        with Image.open(item["image"]) as im:
            assert im.size == (64, 64)
    assert [row[0] for row in rejected["data"]] == ["empty.jpg"]
    assert rejected["data"][0][1]  # a reason a person can read
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


def test_second_training_is_refused_and_cancel_works(app, prepared):
    client, _, workspace, _ = app
    started = client.predict(**_train_args("long", steps=100_000))
    assert "Training started" in started
    refused = client.predict(**_train_args("other", steps=5))
    assert "already in progress" in refused
    assert "Cancelling" in client.predict(api_name="/cancel_training")
    status = _wait_until_done(client, timeout=60)
    assert status["state"] == "cancelled", status
    assert "cancelled" in status["message"].lower()
    assert status["lora_dir"] is None
    assert not list((workspace / "subjects" / SUBJECT / "loras").glob("long/*.safetensors"))
    assert "nothing to cancel" in client.predict(api_name="/cancel_training")


def test_train_then_generate_with_cached_model(app, prepared):
    client, studio, workspace, _ = app
    assert "Training started" in client.predict(**_train_args("run1", steps=6))
    status = _wait_until_done(client)
    assert status["state"] == "completed", status
    assert status["step"] == status["total_steps"] == 6
    assert status["lora_dir"] and Path(status["lora_dir"]).is_dir()

    label = f"{SUBJECT} / run1"
    assert label in client.predict(api_name="/list_loras")

    def generate(unet_scale: float) -> np.ndarray:
        gallery, caption = client.predict(
            lora=label, prompt=PROMPT, negative_prompt="", unet_scale=unet_scale,
            text_encoder_scale=1.0, guidance=7.5, steps=3, seed=0, num_images=1,
            height=64, width=64, api_name="/generate",
        )
        assert len(gallery) == 1 and label in caption
        with Image.open(gallery[0]["image"]) as im:
            assert im.size == (64, 64)
            return np.asarray(im.convert("RGB"), dtype=np.int16)

    with_lora, without_lora = generate(1.0), generate(0.0)
    assert np.abs(with_lora - without_lora).max() > 0
    assert len(list((workspace / "subjects" / SUBJECT / "generated").glob("*.png"))) == 2
    # Moving a slider and generating again changes adapter weights; nothing reloads.
    assert studio.generator.model_loads == 1
    assert studio.generator.lora_loads == 1


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
