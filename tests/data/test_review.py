"""Reviewing prepared photos: warnings (blur, size, near-duplicates, count) and the edits a
person makes (exclude, re-crop by hand, pick another face), through Studio like the app."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter
from skimage import data as skdata

from dreamstudio.config import PrepareConfig
from dreamstudio.data import checks as photo_checks
from dreamstudio.data.checks import (
    BLUR_THRESHOLD,
    NEAR_DUPLICATE_BITS,
    dhash,
    hamming,
    review_warnings,
    sharpness,
)
from dreamstudio.data.crops import centre_crop_box
from dreamstudio.data.faces import FaceDetector
from dreamstudio.data.manifest import image_files, load_manifest
from dreamstudio.data.prepare import prepare_photos
from dreamstudio.errors import InputError
from dreamstudio.studio import Studio
from tests.conftest import DATASETS


@pytest.fixture(scope="module")
def real_photos() -> dict[str, Image.Image]:
    """The ten DreamBooth photos (dog, rc_car), plus the astronaut portrait."""
    paths = sorted(DATASETS.glob("*/*.jpg"))
    if len(paths) < 10:
        pytest.skip(f"DreamBooth sample photos not found in {DATASETS}")
    photos = {f"{p.parent.name}/{p.name}": Image.open(p).convert("RGB") for p in paths}
    photos["astronaut"] = Image.fromarray(skdata.astronaut())
    return photos


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()  # building MTCNN costs seconds: once per module


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


# --- measurements on real photos ------------------------------------------------------------


def test_blur_threshold_separates_real_photos_from_blurred_copies(real_photos) -> None:
    for name, img in real_photos.items():
        box = centre_crop_box(img.size)
        side = box[2] - box[0]
        sharp = sharpness(img, box)
        # sigma 1.5 px at the 256 px measuring size = 3 px on a 512 px crop: out of focus.
        blurred = sharpness(img.filter(ImageFilter.GaussianBlur(1.5 * side / 256)), box)
        assert sharp > BLUR_THRESHOLD * 1.5, (name, sharp)
        assert blurred < BLUR_THRESHOLD / 1.5, (name, blurred)


def test_dhash_tells_copies_from_different_photos(real_photos) -> None:
    hashes = {n: dhash(img, centre_crop_box(img.size)) for n, img in real_photos.items()}
    distinct = [hamming(hashes[a], hashes[b]) for a, b in itertools.combinations(hashes, 2)]
    assert min(distinct) > NEAR_DUPLICATE_BITS + 4, sorted(distinct)[:3]
    for name, img in real_photos.items():
        w, h = img.size
        copies = [
            _jpeg(img, 40),
            img.resize((w // 2, h // 2)),
            ImageEnhance.Brightness(img).enhance(1.15),
            img.crop((w * 3 // 100, h * 3 // 100, w, h)),
        ]
        for copy in copies:
            assert hamming(hashes[name], dhash(copy, centre_crop_box(copy.size))) <= (
                NEAR_DUPLICATE_BITS), name
    assert len(hashes["astronaut"]) == 16 and hamming("ff", "0f") == 4


# --- warnings -------------------------------------------------------------------------------


def _photo_dir(tmp_path: Path, real_photos: dict, names: list[str], blur: set[str] = frozenset(),
               copy_of: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "originals"
    folder.mkdir()
    for name in names:
        img = real_photos[copy_of[name] if copy_of and name in copy_of else name]
        if copy_of and name in copy_of:
            img = ImageEnhance.Brightness(img).enhance(1.1)  # not byte-identical
        img = img.resize((300, 300))
        if name in blur:
            img = img.filter(ImageFilter.GaussianBlur(4))
        img.save(folder / (name.replace("/", "_") + ".png"))
    return folder


def test_prepare_warns_about_blur_small_faces_near_duplicates_and_count(
    tmp_path: Path, real_photos: dict, detector: FaceDetector
) -> None:
    names = ["dog/00.jpg", "dog/02.jpg", "rc_car/01.jpg", "copy"]
    folder = _photo_dir(tmp_path, real_photos, names, blur={"dog/02.jpg"},
                        copy_of={"copy": "rc_car/01.jpg"})
    out = tmp_path / "photos"
    report = prepare_photos(sorted(folder.iterdir()), out, PrepareConfig(mode="object", size=256))
    by_source = {r.source: r for r in report.results}
    assert all(r.kept for r in report.results)
    blurry = by_source["dog_02.jpg.png"]
    assert blurry.sharpness < BLUR_THRESHOLD
    assert [w.split(" (")[0] for w in blurry.warnings] == ["looks blurry"]
    assert by_source["dog_00.jpg.png"].warnings == []
    car, copy = by_source["rc_car_01.jpg.png"], by_source["copy.png"]
    assert car.warnings == ["nearly the same picture as copy.png: keep one of them"]
    assert copy.warnings == ["nearly the same picture as rc_car_01.jpg.png: keep one of them"]
    assert report.warnings == [
        "3 photos have warnings: check them below and exclude the ones you do not want."]
    # Stored in the manifest, so the Data tab shows them after a restart.
    data = json.loads((out / "manifest.json").read_text())
    assert data["warnings"] == report.warnings
    assert [r["warnings"] for r in data["results"]] == [r.warnings for r in report.results]

    # Excluding one of the near-duplicates clears the warning on the other one.
    studio_like = load_manifest(out)
    studio_like.excluded = [copy.output]
    review_warnings(studio_like)
    assert studio_like.find(car.output).warnings == []
    assert studio_like.warnings == [
        "1 photo has warnings: check them below and exclude the ones you do not want."]


def test_small_crop_and_set_size_warnings() -> None:
    from dreamstudio.data.manifest import PhotoResult, PrepareReport

    def kept(i: int, side: int) -> PhotoResult:
        # Far-apart hashes, so no near-duplicate warnings get in the way.
        far = (0x9E3779B97F4A7C15 * (i + 1)) % (1 << 64)
        return PhotoResult(source=f"{i}.jpg", kept=True, output=f"{i}.png",
                           crop_box=[0, 0, side, side], sharpness=500.0, dhash=f"{far:016x}")

    report = PrepareReport([kept(0, 255), kept(1, 256)], PrepareConfig(size=512))
    review_warnings(report)
    assert report.results[0].warnings == [
        ("small: the crop is 255 px and would be enlarged 2.1x to 512 px, so it looks soft; "
         "use a closer photo")
    ]
    assert report.results[1].warnings == []  # exactly 2x is still fine
    assert report.warnings[0].startswith("Only 2 photos will be used: DreamBooth needs at least 3")

    many = PrepareReport([kept(i, 512) for i in range(photo_checks.MAX_PHOTOS + 1)],
                         PrepareConfig(size=512))
    review_warnings(many)
    assert many.warnings == [
        ("31 photos will be used: more than 30 slows training without helping much. "
         "Exclude the weakest ones.")
    ]
    many.excluded = [many.results[0].output]
    review_warnings(many)
    assert many.warnings == []

    # Three look-alikes: one warning each, naming the other two.
    triplet = PrepareReport([kept(i, 512) for i in range(3)], PrepareConfig(size=512))
    for result in triplet.results:
        result.dhash = "00000000000000ff"
    triplet.results[2].dhash = "00000000000001ff"  # one bit away still counts
    review_warnings(triplet)
    assert triplet.results[0].warnings == [
        "nearly the same picture as 1.jpg and 2.jpg: keep one of them"]
    assert triplet.results[2].warnings == [
        "nearly the same picture as 0.jpg and 1.jpg: keep one of them"]


# --- edits through the Studio facade --------------------------------------------------------


@pytest.fixture
def studio(tmp_path: Path, real_photos: dict) -> Studio:
    """A subject 'rex' with three real dog photos, prepared in object mode at 128 px."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for name in ("00", "01", "03"):
        real_photos[f"dog/{name}.jpg"].save(uploads / f"dog {name}.jpg", quality=90)
    studio = Studio(tmp_path / "ws")
    studio.prepare("rex", sorted(uploads.iterdir()), PrepareConfig(mode="object", size=128))
    return studio


def test_exclude_and_include_again_are_saved_for_training(studio: Studio) -> None:
    report = studio.photos("rex")
    first, second = (r.output for r in report.kept[:2])
    photos = studio.workspace.photos_dir("rex")
    assert len(image_files(photos)) == 3

    report = studio.exclude_photo("rex", second, True)
    assert report.excluded == [second]
    assert [p.name for p in image_files(photos)] == [r.output for r in report.used]
    assert second not in [p.name for p in image_files(photos)]
    assert report.warnings[0].startswith("Only 2 photos")
    studio.exclude_photo("rex", first, True)
    assert studio.photos("rex").excluded == [first, second]  # photo order, not click order

    studio.exclude_photo("rex", second, False)
    assert studio.photos("rex").excluded == [first]
    assert len(image_files(photos)) == 2
    with pytest.raises(InputError, match="no prepared photo named 'nope.png'"):
        studio.exclude_photo("rex", "nope.png", True)


def test_recrop_cuts_the_square_from_the_original(studio: Studio) -> None:
    result = studio.photos("rex").kept[0]
    original = studio.workspace.originals_dir("rex") / result.source
    report = studio.recrop_photo("rex", result.output, 100, 50, 400)
    edited = report.find(result.output)
    assert edited.crop_box == [100, 50, 500, 450] and edited.manual_crop
    crop_path = studio.workspace.photos_dir("rex") / result.output
    with Image.open(original) as photo:
        expected = photo.convert("RGB").resize((128, 128), Image.Resampling.LANCZOS,
                                               box=(100, 50, 500, 450))
    with Image.open(crop_path) as crop:
        diff = np.abs(np.asarray(crop, np.int16) - np.asarray(expected, np.int16)).mean()
    assert diff < 3

    # Past the edge the square stops at the edge; too big shrinks to the photo.
    width, height = edited.image_size
    box = studio.recrop_photo("rex", result.output, 10_000, -50, 300).find(result.output).crop_box
    assert box == [width - 300, 0, width, 300]
    box = studio.recrop_photo("rex", result.output, 0, 0, 99_999).find(result.output).crop_box
    assert box[2] - box[0] == min(width, height)
    with pytest.raises(InputError, match="must be a number"):
        studio.recrop_photo("rex", result.output, float("nan"), 0, 100)

    # The preview shows the whole photo with the square, and the crop itself.
    preview = studio.photo_preview("rex", result.output, (0, 0, 200))
    assert preview.box == (0, 0, 200, 200) and preview.crop.size == (256, 256)
    assert max(preview.overview.size) <= 512

    # A hand-made crop survives pressing Prepare again (with new settings).
    report = studio.prepare("rex", [], PrepareConfig(mode="object", size=64))
    assert report.find(result.output).crop_box == box and report.find(result.output).manual_crop
    report = studio.reset_crop("rex", result.output)
    assert report.find(result.output).crop_box == list(centre_crop_box((width, height)))
    assert not report.find(result.output).manual_crop


def test_exclusions_survive_prepare_again_with_a_new_photo(studio: Studio, tmp_path) -> None:
    report = studio.photos("rex")
    studio.exclude_photo("rex", report.kept[1].output, True)
    extra = tmp_path / "a first.png"  # sorts first: every crop gets a new number
    Image.new("RGB", (300, 300), (200, 40, 40)).save(extra)
    again = studio.prepare("rex", [extra], PrepareConfig(mode="object", size=128))
    excluded = [r.source for r in again.kept if r.output in again.excluded]
    assert excluded == [report.kept[1].source]
    assert len(image_files(studio.workspace.photos_dir("rex"))) == 3


def test_an_original_changed_since_prepare_is_refused(studio: Studio) -> None:
    result = studio.photos("rex").kept[0]
    original = studio.workspace.originals_dir("rex") / result.source
    Image.new("RGB", (300, 300)).save(original, format="JPEG")
    with pytest.raises(InputError, match="changed since it was prepared"):
        studio.recrop_photo("rex", result.output, 0, 0, 100)
    original.unlink()
    with pytest.raises(InputError, match=result.source):
        studio.reset_crop("rex", result.output)


def test_pick_another_face(tmp_path: Path, real_photos: dict, detector: FaceDetector) -> None:
    astronaut = real_photos["astronaut"]
    group = Image.new("RGB", (900, 520), (128, 128, 128))
    group.paste(astronaut, (0, 0))
    group.paste(astronaut.resize((330, 330)), (560, 150))
    folder = tmp_path / "originals"
    folder.mkdir()
    group.save(folder / "two people.png")
    out = tmp_path / "photos"
    report = prepare_photos([folder / "two people.png"], out,
                            PrepareConfig(mode="face", size=128), detector)
    (result,) = report.results
    assert result.kept and len(result.faces) == 2, result.faces
    big, small = result.faces
    assert big["box"][0] < 450 < small["box"][0]  # most prominent first
    assert result.face_index == 0 and result.crop_box[2] <= 560

    from dreamstudio.data import review as photo_review

    report = photo_review.choose_face(folder, out, result.output, 1)
    edited = report.find(result.output)
    assert edited.face_index == 1 and edited.face_box == small["box"]
    x0, y0, x1, y1 = edited.crop_box
    assert x0 <= small["box"][0] and small["box"][2] <= x1 and x0 > 450
    # The choice survives Prepare again.
    again = prepare_photos([folder / "two people.png"], out, PrepareConfig(mode="face", size=128),
                           detector)
    assert again.results[0].face_index == 1 and again.results[0].crop_box == [x0, y0, x1, y1]
    with pytest.raises(InputError, match="has no face 3: 2 faces were found"):
        photo_review.choose_face(folder, out, result.output, 2)
    assert photo_review.reset_crop(folder, out, result.output).results[0].face_index == 0
