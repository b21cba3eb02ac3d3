"""The real page in headless Chromium (Playwright): data -> training -> generation -> a
scored sweep on the Tune tab, whose pick goes back into the Generate tab.

Skipped where Chromium or Playwright is missing; `.ci/run` installs Debian's chromium.
Screenshots of each tab are written to the test's tmp folder (and to $DREAMSTUDIO_SHOTS
if set, e.g. to refresh the README's assets).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_url(tiny_model, tmp_path_factory, app_runner):
    from tests.support.tiny_scorers import build_tiny_scorers

    dino, clip = build_tiny_scorers(tmp_path_factory.mktemp("browser-scorers"))
    with app_runner(tiny_model, tmp_path_factory.mktemp("browser-ws"), "--dino-model",
                    str(dino), "--clip-model", str(clip)) as (url, studio):
        yield url, studio


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"],
        )
        yield browser
        browser.close()


def _field(page, label: str):
    """The visible control whose accessible name starts with `label` (the name also holds
    the info text; a slider's number box is "number input for <label>"; hidden tabs hold
    controls of the same label)."""
    pattern = re.compile(r"^\s*(number input for )?" + re.escape(label) + r"(\s|$)")
    return page.get_by_label(pattern).filter(visible=True)


def _set_number(page, label: str, value) -> None:
    """Sliders and number boxes both have a number input carrying their label."""
    box = _field(page, label).and_(page.locator("input[type=number]")).first
    box.fill(str(value))
    box.press("Enter")


def _set_text(page, label: str, value: str, enter: bool = False) -> None:
    box = _field(page, label).first
    box.fill(value)
    if enter:
        box.press("Enter")


def _wait_for_text(page, text: str, timeout: float = 60_000) -> None:
    try:
        page.wait_for_function("(t) => document.body.innerText.includes(t)", arg=text,
                               timeout=timeout)
    except Exception:
        page.screenshot(path=os.environ.get("DREAMSTUDIO_FAIL_SHOT", "/tmp/browser-fail.png"),
                        full_page=True)
        raise


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"screenshot-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("DREAMSTUDIO_SHOTS"):
        shutil.copy(path, Path(os.environ["DREAMSTUDIO_SHOTS"]) / path.name)
    return path


_GALLERY_SRCS = """(label) => {
  const tag = [...document.querySelectorAll('[data-testid=block-label]')]
    .find(e => e.innerText.trim().startsWith(label));
  if (!tag) return [];
  return [...tag.closest('.block').querySelectorAll('.gallery-item img')].map(i => i.src);
}"""


def _gallery(page, label: str) -> list[str]:
    return page.evaluate(_GALLERY_SRCS, label)


def _wait_for_gallery(page, label: str, other_than: list[str] | None = None,
                      timeout: float = 90_000) -> list[str]:
    page.wait_for_function(
        f"([label, old]) => {{ const s = ({_GALLERY_SRCS})(label);"
        " return s.length > 0 && JSON.stringify(s) !== JSON.stringify(old); }",
        arg=[label, other_than or []], timeout=timeout)
    return _gallery(page, label)


def test_data_train_generate_in_a_real_browser(browser, page_url, dog_photos, tmp_path):
    url, studio = page_url
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)

    # Data: upload 3 real photos and a broken one; see the crops and the rejection reason.
    _wait_for_text(page, "Type a name for a new subject")  # the page's load events ran
    page.get_by_label("Object or pet: centre square").check()
    _set_number(page, "Image size (pixels)", 64)
    page.locator("input[type=file]").first.set_input_files(
        [str(p) for p in dog_photos[:3]] + [str(empty)])
    _set_text(page, "Subject name", "rex", enter=True)
    _field(page, "Subject name").first.blur()
    page.get_by_role("button", name="Prepare photos").click()
    _wait_for_text(page, "empty file (0 bytes)")
    crops = _wait_for_gallery(page, "Training images")
    assert len(crops) == 3
    assert studio.photos("rex") is not None and len(studio.photos("rex").kept) == 3
    assert _shot(page, tmp_path, "data").stat().st_size > 10_000

    # Train: a short run on the tiny model; progress ends in the finished state.
    page.get_by_role("tab", name="Train").click()
    _wait_for_text(page, "The subject's name in prompts")
    _set_text(page, "Subject", "rex", enter=True)
    _set_text(page, "Class noun", "dog")
    _set_text(page, "Instance prompt", "a photo of sks dog")
    _set_number(page, "Steps", 4)
    _set_number(page, "Resolution", 64)
    page.get_by_role("button", name="Start training").click()
    _wait_for_text(page, "Finished", timeout=120_000)
    assert studio.training_status().state == "completed"
    _shot(page, tmp_path, "train")

    # Generate: an image, then the UNet scale slider moved to 0 gives a different image.
    page.get_by_role("tab", name="Generate").click()
    _set_text(page, "Prompt", "a photo of sks dog")
    _set_number(page, "Steps", 3)
    _set_number(page, "Height (pixels)", 64)
    _set_number(page, "Width (pixels)", 64)
    page.get_by_role("button", name="Generate", exact=True).click()
    first = _wait_for_gallery(page, "Generated images")
    _set_number(page, "LoRA strength (UNet)", 0)
    page.get_by_role("button", name="Generate", exact=True).click()
    second = _wait_for_gallery(page, "Generated images", other_than=first)
    images = [Path(unquote(src.split("file=", 1)[1])) for src in (first[0], second[0])]
    assert all(p.is_file() for p in images)
    assert images[0].read_bytes() != images[1].read_bytes()
    assert studio.generator.model_loads == 1
    _shot(page, tmp_path, "generate")

    # Tune: a small sweep of the run just trained; its plot, table and pick are shown, and
    # "Use this in Generate" sets the Generate tab's sliders and opens it.
    page.get_by_role("tab", name="Tune").click()
    _wait_for_text(page, "final LoRA (step 4)")  # the tab's refresh listed the run's LoRAs
    _set_text(page, "UNet scales", "0, 0.5, 1")
    _set_text(page, "Text-encoder scales", "0, 1")
    _set_number(page, "Steps", 2)
    _set_number(page, "Leak images", 1)
    # The default 5% tolerance: the UNet 0 / text encoder 0 cell draws the base model's
    # images, so at least that cell passes the rule whatever the tiny scorers make of it.
    page.get_by_role("button", name="Estimate").click()
    _wait_for_text(page, "6 cells (1 LoRA(s)) + 1 base-model row(s)")
    page.get_by_role("button", name="Run sweep").click()
    _wait_for_text(page, "Sweep done", timeout=180_000)
    _wait_for_text(page, "Rule:")
    page.wait_for_function("() => [...document.querySelectorAll('img')].some("
                           "i => i.src.includes('tune.png') && i.complete)")
    result = studio.last_tune("rex", studio.runs("rex")[0].name)
    assert result is not None and len(result.cells) == 6
    _shot(page, tmp_path, "tune")
    pick = result.recommendation.cell
    assert pick is not None
    page.get_by_role("button", name="Use this in Generate").click()
    page.wait_for_function("() => [...document.querySelectorAll('[role=tab]')].some("
                           "t => t.innerText.includes('Generate') && "
                           "t.getAttribute('aria-selected') === 'true')")
    box = _field(page, "LoRA strength (UNet)").and_(page.locator("input[type=number]")).first
    page.wait_for_function("([el, v]) => parseFloat(el.value) === v",
                           arg=[box.element_handle(), pick.unet_scale])
    page.close()
