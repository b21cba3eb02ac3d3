"""The app's Data -> Train -> Generate path on the tiny SDXL model, over HTTP (gradio_client),
and in headless Chromium where it is installed: the family is named, SDXL's defaults fill
the tabs, a short run trains and its LoRA draws."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_app import _train_args, _wait_until_done
from tests.e2e.test_browser import (  # browser: the headless Chromium fixture
    _field,
    _set_number,
    _set_text,
    _wait_for_gallery,
    _wait_for_text,
    browser,  # noqa: F401
)

pytestmark = pytest.mark.slow

SUBJECT, RUN, PROMPT = "dog", "xl1", "a photo of sks dog"
LABEL = f"{SUBJECT} / {RUN}"


@pytest.fixture(scope="module")
def sdxl_app(tiny_sdxl_model, tmp_path_factory, app_runner):
    from gradio_client import Client

    workspace = tmp_path_factory.mktemp("sdxl-workspace")
    with app_runner(tiny_sdxl_model, workspace) as (url, studio):
        yield Client(url, verbose=False), studio, workspace, url


def test_data_train_generate_on_sdxl_through_the_api(sdxl_app, dog_photos):
    from gradio_client import handle_file

    client, studio, _, _ = sdxl_app
    assert studio.family_name == "SDXL"
    files = [handle_file(str(p)) for p in dog_photos[:3]]
    client.predict(SUBJECT, files, "object", 64, 2.2, api_name="/prepare")
    assert len(studio.photos(SUBJECT).kept) == 3

    args = _train_args(RUN, steps=4) | {"learning_rate": 1e-3, "text_encoder_lr": 1e-4}
    assert "Training started" in client.predict(**args)
    status = _wait_until_done(client, timeout=300)
    assert status["state"] == "completed", status
    assert LABEL in client.predict(api_name="/list_loras")

    def generate(unet_scale: float) -> np.ndarray:
        gallery, caption = client.predict(
            lora=LABEL, prompt=PROMPT, negative_prompt="", unet_scale=unet_scale,
            text_encoder_scale=1.0, guidance=5.0, steps=3, seed=0, num_images=1,
            height=64, width=64, api_name="/generate")
        assert len(gallery) == 1 and LABEL in caption, caption
        with Image.open(gallery[0]["image"]) as im:
            assert im.size == (64, 64)
            return np.asarray(im.convert("RGB"), dtype=np.int16)

    with_lora, without = generate(1.0), generate(0.0)
    assert np.abs(with_lora - without).max() > 0
    assert studio.generator.model_loads == 1


def test_data_train_generate_on_sdxl_in_a_real_browser(browser, sdxl_app, dog_photos,  # noqa: F811
                                                       tmp_path):
    _, studio, _, url = sdxl_app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    _wait_for_text(page, "Type a name for a new subject")
    _wait_for_text(page, "SDXL")  # the header names the family
    page.get_by_label("Object or pet: centre square").check()
    _set_number(page, "Image size (pixels)", 64)
    page.locator("input[type=file]").first.set_input_files([str(p) for p in dog_photos[:3]])
    _set_text(page, "Subject name", "rexxl", enter=True)
    _field(page, "Subject name").first.blur()
    page.get_by_role("button", name="Prepare photos").click()
    assert len(_wait_for_gallery(page, "Training images")) == 3

    page.get_by_role("tab", name="Train").click()
    _wait_for_text(page, "Base model family: SDXL")
    _set_text(page, "Subject", "rexxl", enter=True)
    _set_text(page, "Class noun", "dog")
    _set_text(page, "Instance prompt", PROMPT)
    _set_number(page, "Steps", 3)
    _set_number(page, "Resolution", 64)
    page.get_by_role("button", name="Start training").click()
    _wait_for_text(page, "Finished", timeout=300_000)
    assert studio.training_status().state == "completed"

    page.get_by_role("tab", name="Generate").click()
    _wait_for_text(page, "one text-encoder scale applies to both text encoders")
    _set_text(page, "Prompt", PROMPT)
    _set_number(page, "Steps", 3)
    _set_number(page, "Height (pixels)", 64)
    _set_number(page, "Width (pixels)", 64)
    page.get_by_role("button", name="Generate", exact=True).click()
    first = _wait_for_gallery(page, "Generated images", timeout=180_000)
    image = Path(unquote(first[0].split("file=", 1)[1]))
    with Image.open(image) as im:
        assert im.size == (64, 64)
    page.close()
