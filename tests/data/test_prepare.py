"""Photo loading, face detection and crop preparation, on real photos, offline, on the CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from dreamstudio.config import PrepareConfig
from dreamstudio.data import images
from dreamstudio.data.crops import centre_crop_box, crop_box_for_face
from dreamstudio.data.faces import Face, FaceDetector, most_prominent
from dreamstudio.data.images import ImageRejected, open_rgb
from dreamstudio.data.manifest import MANIFEST_NAME, load_manifest
from dreamstudio.data.prepare import list_image_files, prepare_photos
from dreamstudio.errors import InputError
from tests.conftest import DATASETS

GREY = (128, 128, 128)  # written out, not images.BACKGROUND_GREY, so a change is caught


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    # Building MTCNN costs seconds; one per module keeps the file fast.
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


@pytest.fixture(scope="module")
def astronaut_face(detector: FaceDetector, astronaut: Image.Image) -> Face:
    faces = detector.detect(astronaut)
    assert len(faces) == 1, faces
    return faces[0]


def _dataset_photos(subject: str) -> list[Path]:
    photos = sorted((DATASETS / subject).glob("*.jpg"))
    if not photos:
        pytest.skip(f"DreamBooth sample photos not found in {DATASETS / subject}")
    return photos


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


# --- face detection -------------------------------------------------------------------------


def test_detector_finds_the_astronaut_face(astronaut_face: Face) -> None:
    x0, y0, x1, y1 = astronaut_face.box
    assert astronaut_face.prob >= 0.99
    # The face sits in the upper middle of the 512x512 portrait and is ~90x110 px.
    assert 150 < x0 < x1 < 300 and 30 < y0 < y1 < 200
    assert 60 < astronaut_face.width < 140 and 70 < astronaut_face.height < 160


def test_detector_maps_boxes_back_from_downscaled_detection(
    detector: FaceDetector, astronaut: Image.Image, astronaut_face: Face
) -> None:
    # A small detect_side (sharing the built network) keeps this fast on a busy CPU.
    small_side = FaceDetector(detect_side=384)
    small_side._mtcnn = detector._model()
    big = astronaut.resize((1024, 1024), Image.Resampling.BICUBIC)  # detected at 384 px
    faces = small_side.detect(big)
    assert len(faces) == 1
    expected = np.array(astronaut_face.box) * 2
    assert np.allclose(faces[0].box, expected, atol=0.08 * astronaut_face.width * 2)


def test_detector_finds_nothing_in_a_flat_image(detector: FaceDetector) -> None:
    assert detector.detect(Image.new("RGB", (400, 300), (90, 140, 60))) == []


class _FakeMTCNN:
    """Stands in for MTCNN.detect: fixed boxes (in detection-image pixels) and probabilities."""

    def __init__(self, boxes, probs) -> None:
        self.boxes, self.probs, self.seen_sizes = boxes, probs, []

    def detect(self, img: Image.Image):
        self.seen_sizes.append(img.size)
        return self.boxes, self.probs


def test_detector_drops_doubtful_faces_and_clips_boxes() -> None:
    det = FaceDetector(min_prob=0.9, detect_side=500)
    fake = _FakeMTCNN(
        np.array([[-10.0, 20.0, 60.0, 90.0], [100.0, 100.0, 150.0, 150.0]], dtype=object),
        np.array([0.97, 0.6], dtype=object),
    )
    det._mtcnn = fake
    faces = det.detect(Image.new("RGB", (1000, 400)))
    assert fake.seen_sizes == [(500, 200)]  # detection ran on the downscaled copy
    assert faces == [Face(box=(0.0, 40.0, 120.0, 180.0), prob=0.97)]
    fake.boxes, fake.probs = None, np.array([None], dtype=object)
    assert det.detect(Image.new("L", (300, 300))) == []


def test_detector_builds_mtcnn_once_across_threads(monkeypatch) -> None:
    import threading
    import time

    import facenet_pytorch

    built = []

    def slow_mtcnn(**kwargs):
        time.sleep(0.05)  # widen the race window
        built.append(kwargs)
        return object()

    monkeypatch.setattr(facenet_pytorch, "MTCNN", slow_mtcnn)
    det = FaceDetector()
    threads = [threading.Thread(target=det._model) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [{"keep_all": True, "device": "cpu", "post_process": False}]


def test_most_prominent_weighs_area_by_probability() -> None:
    small_sure = Face(box=(0, 0, 10, 10), prob=1.0)
    big_sure = Face(box=(0, 0, 30, 30), prob=0.95)
    bigger_doubtful = Face(box=(0, 0, 32, 32), prob=0.5)
    assert most_prominent([small_sure, big_sure, bigger_doubtful]) is big_sure
    with pytest.raises(ValueError):
        most_prominent([])


# --- crop geometry --------------------------------------------------------------------------


def test_crop_box_is_centred_when_there_is_room() -> None:
    box = crop_box_for_face((400, 300, 500, 420), (1000, 800), 2.0)
    assert box == (330, 240, 570, 480)  # side 2 x 120 = 240, centred on (450, 360)


def test_crop_box_is_shifted_inside_near_an_edge() -> None:
    # Face near the top-left corner: the wanted box (-44, -34, 154, 164) moves inside,
    # keeping its 2.2 x 90 = 198 px side.
    assert crop_box_for_face((10, 20, 100, 110), (1000, 800), 2.2) == (0, 0, 198, 198)
    # Bottom-right corner: the box ends exactly at the image border.
    box = crop_box_for_face((900, 700, 990, 790), (1000, 800), 2.0)
    assert box == (820, 620, 1000, 800)


def test_crop_box_shrinks_to_the_shorter_side_of_a_small_image() -> None:
    # Wants 2.2 x 140 = 308 px, the image is only 260 px tall; stays centred on x = 160.
    assert crop_box_for_face((100, 60, 220, 200), (300, 260), 2.2) == (30, 0, 290, 260)
    # Wants 300 px, the image is 200 px wide; shifted right, still centred on y = 150.
    assert crop_box_for_face((20, 100, 120, 200), (200, 600), 3.0) == (0, 50, 200, 250)


def test_centre_crop_box_is_the_largest_centred_square() -> None:
    assert centre_crop_box((1000, 600)) == (200, 0, 800, 600)
    assert centre_crop_box((600, 1001)) == (0, 200, 600, 800)
    assert centre_crop_box((64, 64)) == (0, 0, 64, 64)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "portrait"},
        {"size": 500},
        {"size": 32},
        {"size": 4096},
        {"size": 512.0},
        {"face_margin": 0.8},
        {"face_margin": float("nan")},
        {"min_side": 0},
    ],
)
def test_bad_config_is_refused_with_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError):
        PrepareConfig(**kwargs)


def test_min_side_defaults_to_half_the_crop_size() -> None:
    assert PrepareConfig(size=768).min_short_side == 384
    assert PrepareConfig(size=768, min_side=100).min_short_side == 100


# --- face mode end to end -------------------------------------------------------------------


def test_face_mode_crops_around_an_off_centre_face(
    tmp_path: Path, detector: FaceDetector, astronaut: Image.Image, astronaut_face: Face
) -> None:
    offset = (360, 170)
    canvas = Image.new("RGB", (900, 700), GREY)
    canvas.paste(astronaut, offset)
    src = _save(canvas, tmp_path / "portrait.jpg", quality=95)
    out = tmp_path / "out"
    calls: list[tuple[int, int, str]] = []

    report = prepare_photos(
        [src], out, PrepareConfig(mode="face", size=256), detector, lambda *a: calls.append(a)
    )

    (result,) = report.results
    assert result.kept, result.reason
    assert result.face_prob is not None and result.face_prob >= 0.9
    x0, y0, x1, y1 = result.crop_box
    side = x1 - x0
    assert side == y1 - y0
    # Face centre from the detector on the untouched portrait, moved by the paste offset.
    fx, fy = astronaut_face.centre
    fx, fy = fx + offset[0], fy + offset[1]
    assert abs((x0 + x1) / 2 - fx) < 0.1 * side
    assert abs((y0 + y1) / 2 - fy) < 0.1 * side
    # A centre crop of the canvas would be far away: the test is about following the face.
    assert abs((x0 + x1) / 2 - 450) > 0.2 * side
    # The whole recorded face box lies inside the crop, and the side follows the margin.
    fb = result.face_box
    assert x0 <= fb[0] < fb[2] <= x1 and y0 <= fb[1] < fb[3] <= y1
    assert side == pytest.approx(2.2 * max(fb[2] - fb[0], fb[3] - fb[1]), abs=2)

    crop = Image.open(out / result.output)
    assert crop.size == (256, 256) and crop.mode == "RGB"
    # The saved pixels are that region of the photo, not some other part.
    expected = canvas.resize((256, 256), Image.Resampling.LANCZOS, box=tuple(result.crop_box))
    diff = np.abs(np.asarray(crop, np.int16) - np.asarray(expected, np.int16)).mean()
    assert diff < 6
    assert calls[0][:2] == (0, 1) and calls[-1][:2] == (1, 1)


# --- object mode on the real DreamBooth photos ----------------------------------------------


def test_object_mode_keeps_every_dreambooth_dog_photo(tmp_path: Path) -> None:
    photos = _dataset_photos("dog")
    out = tmp_path / "dog"
    report = prepare_photos(photos, out, PrepareConfig(mode="object", size=256))

    assert report.rejected == []
    assert len(report.kept) == len(photos)
    for photo, result in zip(photos, report.results, strict=True):
        assert result.source == photo.name
        with Image.open(photo) as original:
            width, height = original.size
        assert result.crop_box == list(centre_crop_box((width, height)))
        with Image.open(out / result.output) as crop:
            assert crop.size == (256, 256) and crop.mode == "RGB"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    assert manifest["config"]["mode"] == "object"
    assert [r["output"] for r in manifest["results"]] == [r.output for r in report.results]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r.output for r in report.kept)


# --- a mixed batch: one bad file never stops the others -------------------------------------


def test_mixed_batch_rejects_each_bad_photo_with_its_reason(
    tmp_path: Path, detector: FaceDetector, astronaut: Image.Image
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    good_a = _save(astronaut, src / "a_portrait.jpg", quality=92)
    _save(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), src / "b_mirror.png")
    (src / "c_empty.jpg").write_bytes(b"")
    (src / "d_notes.jpg").write_text("shopping list: eggs, milk\n")
    whole = good_a.read_bytes()
    (src / "e_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    _save(Image.new("RGB", (20, 20), (200, 30, 30)), src / "f_tiny.png")
    # A real photo with no person in it when available, else a plain gradient.
    car = DATASETS / "rc_car" / "00.jpg"
    if car.exists():
        # Downscaled: MTCNN on the full 1440 px photo dominates this file's run time.
        with Image.open(car) as photo:
            _save(photo.convert("RGB").resize((480, 480)), src / "g_noface.jpg")
    else:
        ramp = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
        _save(Image.fromarray(ramp).convert("RGB"), src / "g_noface.jpg")
    (src / "h_copy.jpg").write_bytes(whole)
    (src / ".hidden.jpg").write_bytes(whole)

    sources = list_image_files(src)
    assert [p.name for p in sources] == [
        "a_portrait.jpg",
        "b_mirror.png",
        "c_empty.jpg",
        "d_notes.jpg",
        "e_truncated.jpg",
        "f_tiny.png",
        "g_noface.jpg",
        "h_copy.jpg",
    ]
    out = tmp_path / "out"
    report = prepare_photos(sources, out, PrepareConfig(mode="face", size=256), detector)

    by_name = {r.source: r for r in report.results}
    assert [r.source for r in report.kept] == ["a_portrait.jpg", "b_mirror.png"]
    for result in report.kept:
        assert (out / result.output).is_file()
        assert result.output.endswith(".png")
    assert by_name["c_empty.jpg"].reason == "empty file (0 bytes)"
    assert by_name["d_notes.jpg"].reason == "not an image (PIL cannot identify the format)"
    assert by_name["e_truncated.jpg"].reason.startswith("unreadable or truncated image:")
    assert by_name["f_tiny.png"].reason == (
        "too small: 20x20, need at least 128 px on the shorter side"
    )
    assert by_name["g_noface.jpg"].reason == "no face found"
    assert by_name["h_copy.jpg"].reason.startswith("duplicate of a_portrait.jpg")
    for result in report.rejected:
        assert result.output is None and result.crop_box is None
    # Only the kept crops (and the manifest) are on disk.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [r.output for r in report.kept] + [MANIFEST_NAME]
    )

    loaded = load_manifest(out)
    assert loaded.results == report.results
    assert loaded.config == report.config
    assert loaded.kept_paths == [out / r.output for r in report.kept]


def test_rerun_replaces_the_previous_crops(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    first = [
        _save(Image.new("RGB", (300, 200), (i * 40, 80, 120)), src / f"first{i}.png")
        for i in range(3)
    ]
    second = [_save(Image.new("RGB", (200, 300), (30, 200, 10)), src / "second.png")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep_me.txt").write_text("not ours")
    config = PrepareConfig(mode="object", size=128)

    prepare_photos(first, out, config)
    assert len(list(out.glob("*.png"))) == 3
    report = prepare_photos(second, out, config)

    assert sorted(p.name for p in out.glob("*.png")) == ["000_second.png"]
    assert [r.source for r in load_manifest(out).results] == ["second.png"]
    assert report.kept_paths == [out / "000_second.png"]
    assert (out / "keep_me.txt").read_text() == "not ours"  # files we did not write survive


def test_output_folder_must_not_hold_the_sources(tmp_path: Path) -> None:
    photo = _save(Image.new("RGB", (200, 200)), tmp_path / "p.png")
    with pytest.raises(InputError, match="output folder"):
        prepare_photos([photo], tmp_path, PrepareConfig(mode="object", size=128))


def test_unsafe_names_become_safe_unique_file_names(tmp_path: Path) -> None:
    a = tmp_path / "x" / "Fête à l'été #1!.png"
    b = tmp_path / "y" / "Fête à l'été #1!.png"
    for i, p in enumerate((a, b)):
        p.parent.mkdir()
        _save(Image.new("RGB", (200, 200), (i * 90, 10, 10)), p)
    report = prepare_photos([a, b], tmp_path / "out", PrepareConfig(mode="object", size=128))
    assert [r.output for r in report.results] == [
        "000_Fete_a_l_ete_1.png",
        "001_Fete_a_l_ete_1.png",
    ]


def test_list_image_files_needs_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list_image_files(tmp_path / "nope")
    (tmp_path / "sub").mkdir()
    (tmp_path / MANIFEST_NAME).write_text("{}")
    (tmp_path / "b.txt").write_text("x")
    (tmp_path / "a.jpg").write_text("x")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.jpg", "b.txt"]


def test_load_manifest_explains_a_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="preparation"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InputError, match="damaged"):
        load_manifest(tmp_path)


# --- open_rgb: every mode lands on sensible 8-bit RGB ---------------------------------------


def test_transparent_areas_become_grey_not_black(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (20, 0, 40, 20))
    img = open_rgb(_save(rgba, tmp_path / "t.png"))
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == GREY
    assert img.getpixel((30, 5)) == (255, 0, 0)


def test_grey_with_alpha_and_palette_transparency_become_grey(tmp_path: Path) -> None:
    la = Image.new("LA", (10, 10), (255, 0))
    assert open_rgb(_save(la, tmp_path / "la.png")).getpixel((0, 0)) == GREY
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    path = _save(pal, tmp_path / "pt.png", transparency=1)
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    assert open_rgb(path).getpixel((0, 0)) == GREY


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16B", ".tif"), ("I", ".tif")])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path, mode: str, suffix: str) -> None:
    arr = np.full((8, 8), 32768, dtype=np.int64)
    arr[0, 0] = 65535
    path = tmp_path / f"deep{suffix}"
    if mode == "I;16":
        Image.fromarray(arr.astype("<u2")).save(path)
    elif mode == "I;16B":
        Image.frombytes("I;16B", (8, 8), arr.astype(">u2").tobytes()).save(path)
    else:
        Image.fromarray(arr.astype("<i4")).save(path)
    with Image.open(path) as raw:
        assert raw.mode == mode  # only meaningful if PIL really reads this mode back
    img = open_rgb(path)
    assert img.mode == "RGB"
    assert img.getpixel((3, 3)) == (128, 128, 128)  # 32768 / 257 = 127.5, not 255
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_float_image_is_scaled(tmp_path: Path) -> None:
    arr = np.full((8, 8), 0.5, dtype=np.float32)
    arr[0, 0] = 0.0
    path = _save(Image.fromarray(arr), tmp_path / "f.tif")
    with Image.open(path) as raw:
        assert raw.mode == "F"
    img = open_rgb(path)
    assert img.getpixel((3, 3)) == (128, 128, 128)
    assert img.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    img = open_rgb(path)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 220 and g < 40 and b < 40  # red, not inverted cyan


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.new("L", (8, 8), 77), (77, 77, 77)),
        (Image.new("1", (8, 8), 1), (255, 255, 255)),
        (Image.new("RGB", (8, 8), (10, 200, 30)).quantize(colors=4), (10, 200, 30)),
    ],
    ids=["L", "1", "P"],
)
def test_plain_modes_become_rgb(tmp_path: Path, img: Image.Image, expected: tuple) -> None:
    path = _save(img, tmp_path / "plain.png")
    with Image.open(path) as raw:
        assert raw.mode == img.mode
    result = open_rgb(path)
    assert result.mode == "RGB"
    assert result.getpixel((4, 4)) == expected


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 30), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(img, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(path) as raw:
        assert raw.size == (60, 30)
    upright = open_rgb(path)
    assert upright.size == (30, 60)
    r, _, b = upright.getpixel((25, 3))  # the mark moved to the top-right
    assert r > 200 and b < 60


def test_animated_image_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    r, _, b = open_rgb(path).getpixel((8, 8))
    assert r > 200 and b < 50


def test_decompression_bomb_is_rejected(tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageRejected) as info:
        open_rgb(path)
    assert "too large" in info.value.reason and "100x100" in info.value.reason
    assert "bomb.png" in str(info.value)  # the message a person sees names the file


def test_pil_decompression_bomb_error_is_rejected(tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    # PIL itself raises at open when an image exceeds twice its own limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)
    with pytest.raises(ImageRejected) as info:
        open_rgb(path)
    assert "too large" in info.value.reason


def test_rejections_name_the_file_and_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageRejected) as info:
        open_rgb(missing)
    assert info.value.reason == "file not found"
    assert "gone.jpg" in str(info.value) and "Remove it" in str(info.value)
    assert isinstance(info.value, InputError)


# --- more inputs from real life: each gets a clear message or just works ---------------------


def test_png_named_jpg_is_read_by_its_content(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (16, 16), (10, 200, 30)), tmp_path / "actually_png.jpg",
                 format="PNG")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert open_rgb(path).getpixel((8, 8)) == (10, 200, 30)  # PNG is lossless: exact


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 2
    r, _, b = open_rgb(path).getpixel((8, 8))
    assert r > 200 and b < 50


def _png_48bit(path: Path, rgb16: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (PIL can read these but not write them)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    height, width, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_sixteen_bit_rgb_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 32768, 1000
    img = open_rgb(_png_48bit(tmp_path / "deep.png", pixels))
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (255, 128, 3)  # about value / 257 per channel


def _heic_header(major: bytes = b"heic", compatible: tuple[bytes, ...] = (b"mif1",)) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body


def test_heic_without_pillow_heif_says_how_to_fix_it(tmp_path: Path, monkeypatch) -> None:
    if images.HEIF_SUPPORT:
        pytest.skip("pillow-heif is installed here, so HEIC photos open")
    # Phones also save HEIC with a .jpg name: it is recognised by its content.
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(_heic_header() + b"\x00\x00\x00\x08meta" + b"\x00" * 200)
    with pytest.raises(ImageRejected) as info:
        open_rgb(path)
    assert info.value.reason == (
        "HEIC photo: install pillow-heif (pip install pillow-heif) or convert it to JPEG"
    )
    assert "IMG_0001.jpg" in str(info.value)


def test_heif_brands_are_told_from_avif() -> None:
    assert images.is_heif(_heic_header())
    assert images.is_heif(_heic_header(b"mif1", (b"heic", b"miaf")))
    assert not images.is_heif(_heic_header(b"avif", (b"mif1", b"miaf")))
    assert not images.is_heif(_heic_header(b"mif1", (b"avif",)))
    assert not images.is_heif(b"\x00\x00\x00\x18ftypmp42")  # a video, not a photo
    assert not images.is_heif(b"\xff\xd8\xff\xe0")


def test_pillow_heif_opener_is_registered_when_installed(monkeypatch) -> None:
    import sys
    import types

    calls = []
    fake = types.ModuleType("pillow_heif")
    fake.register_heif_opener = lambda: calls.append(True)
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    assert images._register_heif_opener() is True and calls == [True]

    def broken() -> None:
        raise RuntimeError("libheif missing")

    fake.register_heif_opener = broken
    assert images._register_heif_opener() is False  # a broken plugin does not stop the app
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # "not installed"
    assert images._register_heif_opener() is False


def test_real_heic_opens_when_pillow_heif_is_installed(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = _save(Image.new("RGB", (64, 48), (200, 30, 30)), tmp_path / "phone.heic", quality=95)
    r, g, b = open_rgb(path).getpixel((30, 20))
    assert r > 180 and g < 60 and b < 60


def test_one_bomb_in_a_batch_leaves_the_others_intact(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    _save(Image.new("RGB", (200, 200), (10, 10, 10)), src / "a.png")
    _save(Image.new("RGB", (400, 400), (90, 10, 10)), src / "b_huge.png")
    _save(Image.new("CMYK", (200, 200), (0, 255, 255, 0)), src / "c cmyk.jpg")
    pal = Image.new("P", (200, 200), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    _save(pal, src / "d_palette.png", transparency=0)
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    _save(rgba, src / "e_alpha.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)  # 400x400 = 160,000 is over
    report = prepare_photos(list_image_files(src), tmp_path / "out",
                            PrepareConfig(mode="object", size=128))
    by_name = {r.source: r for r in report.results}
    assert [r.source for r in report.kept] == ["a.png", "c cmyk.jpg", "d_palette.png",
                                               "e_alpha.png"]
    assert "decompression-bomb guard" in by_name["b_huge.png"].reason
    with Image.open(tmp_path / "out" / by_name["e_alpha.png"].output) as crop:
        assert crop.getpixel((5, 5)) == GREY  # transparent: neutral grey, not black


def test_odd_names_give_safe_output_names(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    names = ['say "cheese" now.png', "very " + "long " * 45 + "name.png", "Ünïcödé 写真.png",
             "it's me.png", "   .png"]
    for i, name in enumerate(names):
        _save(Image.new("RGB", (150, 150), (i * 40, 20, 20)), src / name)
    report = prepare_photos(list_image_files(src), tmp_path / "out",
                            PrepareConfig(mode="object", size=128))
    assert all(r.kept for r in report.results)
    for result in report.results:
        assert re.fullmatch(r"\d{3}_[A-Za-z0-9_-]{1,60}\.png", result.output), result.output
        assert (tmp_path / "out" / result.output).is_file()
    outputs = {r.source: r.output for r in report.results}
    assert outputs["Ünïcödé 写真.png"].endswith("_Unicode.png")
    assert outputs["   .png"].endswith("_photo.png")


def test_face_mode_records_every_face_and_keeps_edits(
    tmp_path: Path, detector: FaceDetector, astronaut: Image.Image
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    _save(astronaut, src / "a.png")
    out = tmp_path / "out"
    report = prepare_photos([src / "a.png"], out, PrepareConfig(mode="face", size=128), detector)
    (result,) = report.results
    assert result.digest and result.image_size == [512, 512]
    assert len(result.faces) == 1 and result.faces[0]["box"] == result.face_box
    assert result.face_index == 0 and not result.manual_crop
    assert result.sharpness > 60 and len(result.dhash) == 16

    # An old (version 1) manifest without the new fields still loads.
    data = json.loads((out / MANIFEST_NAME).read_text())
    for key in ("digest", "image_size", "faces", "face_index", "manual_crop", "sharpness",
                "dhash", "warnings"):
        data["results"][0].pop(key)
    data.pop("excluded"), data.pop("warnings")
    data["results"][0]["from_the_future"] = 1
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    old = load_manifest(out)
    assert old.results[0].faces is None and old.excluded == [] and old.kept
