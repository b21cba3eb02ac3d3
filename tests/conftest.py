"""Shared fixtures: a tiny but real SD pipeline saved to disk once per test session."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the tests may wait on the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from tests.support.app import running_app
from tests.support.sample_photos import find_datasets

REPO = Path(__file__).resolve().parents[1]
DATASETS = find_datasets()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Folder of a seeded tiny StableDiffusionPipeline (64 px images, real CLIP tokenizer)."""
    from dreamstudio.core.tiny_model import save_tiny_model

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_vpred_model(tmp_path_factory) -> Path:
    """The same tiny pipeline configured as a v-prediction (SD 2.x style) model."""
    from dreamstudio.core.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd-v", seed=1,
                           prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory) -> Path:
    """Folder of a seeded tiny StableDiffusionXLPipeline: two text encoders (the second with
    a projection), a UNet with text-time conditioning, 64 px images."""
    from dreamstudio.core.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl", family="sdxl")


@pytest.fixture(scope="session")
def dog_photos() -> list[Path]:
    photos = sorted((DATASETS / "dog").glob("*.jpg"))
    if not photos:
        pytest.skip(f"DreamBooth sample photos not found in {DATASETS}")
    return photos


@pytest.fixture(scope="session")
def small_dog_dir(tmp_path_factory, dog_photos) -> Path:
    """The real dog photos, centre-cropped to 64 px (the tiny model's resolution)."""
    from PIL import Image


    folder = tmp_path_factory.mktemp("dog64")
    for i, src in enumerate(dog_photos):
        with Image.open(src) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im.crop((left, top, left + side, top + side)).resize((64, 64)).save(
                folder / f"{i:02d}.png"
            )
    return folder


@pytest.fixture(scope="session")
def app_runner():
    """`running_app` for tests: `with app_runner(model, workspace) as (url, studio): ...`."""
    return running_app
