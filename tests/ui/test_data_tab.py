"""The Data tab's upload, without a server: every file a person drops in reaches the backend,
which keeps or rejects each one with its reason."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData, ListFiles
from PIL import Image

from dreamstudio.studio import Studio
from dreamstudio.ui import data_text
from dreamstudio.ui.data_tab import DataHandlers
from dreamstudio.ui.data_widgets import build_widgets


def test_odd_files_in_an_upload_are_each_judged_not_refused_as_a_batch(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i, name in enumerate(("a.jpg", "b.png", "c.webp")):
        Image.new("RGB", (200, 200), (i * 80, 40, 200 - i * 60)).save(uploads / name)
    # A photo without an extension, a text file and a file called just ".jpg".
    Image.new("RGB", (200, 200), (250, 250, 10)).save(uploads / "IMG_0042", format="PNG")
    (uploads / "notes.txt").write_text("shopping list\n")
    (uploads / ".jpg").write_bytes(b"\x00" * 100)
    studio = Studio(tmp_path / "ws")
    with gr.Blocks():
        ui = build_widgets(studio)
    paths = sorted(str(p) for p in uploads.iterdir())
    # What Gradio does with an upload before the handler sees it: a file-type filter here
    # refused the whole batch ("Invalid file type"), naming no file.
    received = ui.files.preprocess(ListFiles(root=[FileData(path=p) for p in paths]))
    assert sorted(received) == paths

    out = DataHandlers(studio, ui).prepare("rex", received, "object", 128, 2.2)
    report = studio.photos("rex")
    assert sorted(r.source for r in report.kept) == ["IMG_0042", "a.jpg", "b.png", "c.webp"]
    reasons = {r.source: r.reason for r in report.rejected}
    assert reasons == {"notes.txt": "not an image (PIL cannot identify the format)",
                       "jpg": "not an image (PIL cannot identify the format)"}
    table = out[ui.rejected]
    assert table.equals(data_text.rejected_table(report))
    assert sorted(table["Photo"]) == ["jpg", "notes.txt"]


def test_marking_a_photo_for_scoring_only_keeps_it_from_training(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(7):
        Image.effect_noise((160, 160), 40 + i * 10).convert("RGB").save(uploads / f"p{i}.png")
    studio = Studio(tmp_path / "ws")
    with gr.Blocks():
        ui = build_widgets(studio)
    handlers = DataHandlers(studio, ui)
    handlers.prepare("rex", sorted(str(p) for p in uploads.iterdir()), "object", 64, 2.2)
    report = studio.photos("rex")
    default = report.held_out
    assert len(default) == 1  # one in six, applied at preparation
    assert handlers.show_photo("rex", default[0])[ui.held_out] is True

    first = report.kept[0].output
    out = handlers.hold_out("rex", first, True)
    report = studio.photos("rex")
    assert first in report.held_out and first not in [r.output for r in report.used]
    assert "2 kept for scoring only" in out[ui.summary] and "5 will be trained on" in out[ui.summary]
    assert "For scoring only" in out[ui.photo_text]
    assert handlers.show_photo("rex", first)[ui.held_out] is True

    handlers.hold_out("rex", first, False)
    assert studio.photos("rex").held_out == default
    assert handlers.show_photo("rex", first)[ui.held_out] is False


def test_a_caption_typed_for_a_photo_is_saved_and_shown_again(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(3):
        Image.effect_noise((160, 160), 40 + i * 10).convert("RGB").save(uploads / f"p{i}.png")
    studio = Studio(tmp_path / "ws")
    with gr.Blocks():
        ui = build_widgets(studio)
    handlers = DataHandlers(studio, ui)
    handlers.prepare("rex", sorted(str(p) for p in uploads.iterdir()), "object", 64, 2.2)
    first, second = [r.output for r in studio.photos("rex").kept][:2]
    assert handlers.show_photo("rex", first)[ui.caption] == ""

    out = handlers.caption("rex", first, "  a dog on\na sofa ")
    assert out[ui.caption] == "a dog on a sofa"  # the text as saved, on one line
    assert studio.photos("rex").find(first).caption == "a dog on a sofa"
    assert handlers.show_photo("rex", first)[ui.caption] == "a dog on a sofa"
    assert handlers.show_photo("rex", second)[ui.caption] == ""

    handlers.caption("rex", first, "")
    assert studio.photos("rex").find(first).caption is None
    # No photo picked: the message says so and nothing is saved.
    out = handlers.caption("rex", "", "a dog")
    assert "Pick a photo first" in out[ui.photo_text]
    assert [r.caption for r in studio.photos("rex").kept] == [None] * 3
