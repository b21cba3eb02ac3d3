"""Per-photo captions in the manifest: set in the review, kept through a re-run of Prepare,
and absent (None) in manifests written before captions existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dreamstudio.config import PrepareConfig
from dreamstudio.data import review
from dreamstudio.data.manifest import (
    MANIFEST_NAME,
    PrepareReport,
    load_manifest,
    training_captions,
)
from dreamstudio.data.prepare import list_image_files, prepare_photos
from dreamstudio.errors import InputError


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    """(sources, prepared crops) of four distinct photos, none held out."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        Image.effect_noise((96, 80), 30 + 15 * i).convert("RGB").save(src / f"p{i}.png")
    out = tmp_path / "crops"
    prepare_photos(list_image_files(src), out, PrepareConfig(mode="object", size=64,
                                                             hold_out=False))
    return src, out


def _names(folder: Path) -> list[str]:
    return [r.output for r in load_manifest(folder).kept]


def test_a_caption_is_saved_to_the_manifest_on_one_line(photos) -> None:
    _, out = photos
    first, second = _names(out)[:2]
    report = review.set_caption(out, first, "  a dog\n on a   sofa ")
    assert report.find(first).caption == "a dog on a sofa"
    again = load_manifest(out)
    assert again.find(first).caption == "a dog on a sofa"
    assert again.find(second).caption is None
    assert training_captions(out) == {first: "a dog on a sofa"}


def test_a_blank_caption_removes_it(photos) -> None:
    _, out = photos
    name = _names(out)[0]
    review.set_caption(out, name, "a dog on a sofa")
    review.set_caption(out, name, "   ")
    assert load_manifest(out).find(name).caption is None
    assert training_captions(out) == {}


def test_bad_captions_are_refused_by_name(photos) -> None:
    _, out = photos
    name = _names(out)[0]
    with pytest.raises(InputError, match=f"caption of '{name}' is 301 characters"):
        review.set_caption(out, name, "x" * (review.MAX_CAPTION_CHARS + 1))
    with pytest.raises(InputError, match="no prepared photo named 'nope.png'"):
        review.set_caption(out, "nope.png", "a dog")
    assert load_manifest(out).find(name).caption is None


def test_captions_of_excluded_photos_are_not_trained_on(photos) -> None:
    _, out = photos
    first, second = _names(out)[:2]
    review.set_caption(out, first, "a dog on a sofa")
    review.set_caption(out, second, "a dog in the snow")
    review.set_excluded(out, second, True)
    assert training_captions(out) == {first: "a dog on a sofa"}


def test_captions_survive_preparing_the_photos_again(photos) -> None:
    src, out = photos
    names = _names(out)
    review.set_caption(out, names[1], "a dog in the snow")
    # A new photo sorts first, so every crop gets a new name: the caption follows the photo.
    Image.effect_noise((96, 80), 99).convert("RGB").save(src / "a_new.png")
    prepare_photos(list_image_files(src), out, PrepareConfig(mode="object", size=64,
                                                             hold_out=False))
    report = load_manifest(out)
    by_source = {r.source: r.caption for r in report.kept}
    assert by_source == {"a_new.png": None, "p0.png": None, "p1.png": "a dog in the snow",
                         "p2.png": None, "p3.png": None}
    assert names[1] not in [r.output for r in report.kept]  # renamed, caption kept


def test_the_caption_round_trips_and_an_older_manifest_loads_without_captions(
        photos) -> None:
    _, out = photos
    name = _names(out)[0]
    report = review.set_caption(out, name, "a dog on a sofa")
    data = report.to_dict()
    assert data["version"] == 4
    assert PrepareReport.from_dict(data).find(name).caption == "a dog on a sofa"

    path = out / MANIFEST_NAME
    old = json.loads(path.read_text())
    old["version"] = 3
    for result in old["results"]:
        del result["caption"]
    path.write_text(json.dumps(old))
    assert [r.caption for r in load_manifest(out).kept] == [None] * 4
    assert training_captions(out) == {}
