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
