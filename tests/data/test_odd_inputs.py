"""What a photo folder or a photo can hold beyond ordinary files and sizes: links, folders,
pipes and 16-bit giants each get a verdict with a reason, and none is read where it must not be."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from dreamstudio.config import PrepareConfig
from dreamstudio.data import images
from dreamstudio.data.images import open_rgb
from dreamstudio.data.prepare import list_image_files, prepare_photos


def _photo(path: Path, colour=(200, 60, 20)) -> Path:
    Image.new("RGB", (160, 160), colour).save(path)
    return path


def test_links_folders_and_pipes_in_a_photo_folder_are_listed_with_a_reason(
    tmp_path: Path, monkeypatch
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    _photo(src / "a.png")
    _photo(tmp_path / "outside.png", (10, 200, 30))
    (src / "b_dangling.jpg").symlink_to(src / "gone.jpg")
    (src / "c_folder.jpg").mkdir()
    os.mkfifo(src / "d_pipe.jpg")
    (src / "e_outside.png").symlink_to(tmp_path / "outside.png")
    (src / "f_passwd").symlink_to("/etc/passwd")
    (src / "g_inside.png").symlink_to("a.png")  # a link within the folder is fine
    (src / "holiday").mkdir()  # a plain sub-folder is not mistaken for a photo
    (src / "h_loop.jpg").symlink_to("h_loop.jpg")

    sources = list_image_files(src)
    assert [p.name for p in sources] == ["a.png", "b_dangling.jpg", "c_folder.jpg",
                                         "d_pipe.jpg", "e_outside.png", "f_passwd",
                                         "g_inside.png", "h_loop.jpg"]
    opened = []
    real_open = Image.open
    monkeypatch.setattr(images.Image, "open",
                        lambda fp, *a, **k: opened.append(Path(fp).name) or real_open(fp, *a, **k))
    report = prepare_photos(sources, tmp_path / "out", PrepareConfig(mode="object", size=128))

    reasons = {r.source: r.reason for r in report.results}
    assert [r.source for r in report.kept] == ["a.png"]  # g_inside is a's twin
    assert reasons["b_dangling.jpg"] == "broken link: the file it points to does not exist"
    assert reasons["c_folder.jpg"] == "a folder, not a photo file"
    assert reasons["d_pipe.jpg"] == "a named pipe, not a photo file"
    outside = ("a link to a file outside the photo folder, not followed: copy the photo "
               "itself into the folder")
    assert reasons["e_outside.png"] == reasons["f_passwd"] == outside
    assert reasons["g_inside.png"].startswith("duplicate of a.png")
    assert reasons["h_loop.jpg"] == "a link that loops back on itself"
    # Neither the outside files nor the pipe were opened.
    assert opened == ["a.png", "g_inside.png"]


def _grey16_png(path: Path, side: int) -> Path:
    """A 16-bit grey PNG (a ramp, so it compresses to little, like the one that hurt)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    row = b"\x00" + (np.arange(side) * 40).astype(">u2").tobytes()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(row * side)) + chunk(b"IEND", b""))
    return path


def test_sixteen_bit_photo_is_converted_in_bounded_memory(tmp_path: Path) -> None:
    side = 1200
    path = _grey16_png(tmp_path / "deep.png", side)
    tracemalloc.start()  # numpy reports its arrays to tracemalloc; PIL's own buffers not
    try:
        img = open_rgb(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.size == (side, side) and img.mode == "RGB"
    assert img.getpixel((100, 5)) == (round(4000 / 257),) * 3  # still scaled, not clipped
    # The decoded photo is 2 bytes a pixel; converting it took 24 more in float copies
    # (2.7 GB for an 8900x8900 PNG of 154 KB). The 8-bit grey result, its copy into PIL and
    # a few rows at a time are what it needs.
    assert peak < 3 * side * side, peak


def test_sixteen_bit_photos_of_other_ranges_still_convert(tmp_path: Path) -> None:
    signed = np.array([[-500, 0], [250, 1500]], dtype=np.int32)
    img = images.to_rgb(Image.fromarray(signed, mode="I"))
    assert [img.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 64, 96, 255]
    floats = np.array([[np.nan, 0.5], [np.inf, 1.0]], dtype=np.float32)
    img = images.to_rgb(Image.fromarray(floats, mode="F"))
    assert [img.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 128, 0, 255]



class _NoFaces:
    """A face detector on photos of a pet: finds nothing (MTCNN is not needed to know)."""

    def detect(self, img):
        return []


def test_face_mode_on_a_pet_says_face_mode_is_for_people(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(4):
        _photo(src / f"cat{i}.png", (i * 60, 120, 30))
    report = prepare_photos(list_image_files(src), tmp_path / "out",
                            PrepareConfig(mode="face", size=128), detector=_NoFaces())
    assert [r.reason for r in report.results] == ["no face found"] * 4
    assert report.warnings == [
        ("No face was found in any photo: face mode is for people. For a pet or an object, "
        "prepare the photos in object mode (a centre square) instead.")]
    assert not any("Add more photos" in w for w in report.warnings)
