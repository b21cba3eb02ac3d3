"""The workspace: names a user types stay inside it, subjects can be renamed and deleted,
and a restarted app finds everything again."""

from __future__ import annotations

import pytest
from PIL import Image

from dreamstudio.core.files import safe_file_name, safe_name
from dreamstudio.data.uploads import add_photos
from dreamstudio.errors import InputError
from dreamstudio.studio import Studio
from dreamstudio.workspace.layout import Workspace


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "/etc", "..", ".hidden", "", "  ",
                                  "CON", "nul.txt", "x" * 200, "bad\x00name"])
def test_unsafe_names_are_refused(name, tmp_path):
    with pytest.raises(InputError):
        Workspace(tmp_path).subject_dir(name)


@pytest.mark.parametrize("name", ["my dog", "Zoë", "犬", "Ölgemälde 2", "rex_01"])
def test_unicode_names_work_and_stay_inside(name, tmp_path):
    ws = Workspace(tmp_path)
    folder = ws.photos_dir(name)
    folder.mkdir(parents=True)
    assert ws.contains(folder)
    assert safe_name(name) in ws.subjects()


def test_class_image_folder_is_shared_by_model_prompt_and_resolution(tmp_path):
    ws = Workspace(tmp_path)
    a = ws.class_images_dir("m", "a photo of dog", 512)
    assert a == ws.class_images_dir("m", "A photo of dog ", 512)
    assert a != ws.class_images_dir("m", "a photo of dog", 256)
    assert a != ws.class_images_dir("other", "a photo of dog", 512)
    assert ws.contains(a)


# --- file names of uploads: repaired, never refused -----------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("IMG 0001.JPG", "IMG 0001.JPG"),
    ('say "cheese".jpg', "say _cheese_.jpg"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.png", "photo.png"),
    (".hidden.jpg", "hidden.jpg"),
    ("CON.jpg", "_CON.jpg"),
    ("a:b*c?.webp", "a_b_c_.webp"),
    ("", "photo"),
    ("Zoë 犬.heic", "Zoë 犬.heic"),
])
def test_upload_names_are_repaired(name, expected):
    assert safe_file_name(name) == expected


def test_very_long_upload_names_are_shortened_keeping_the_suffix():
    name = safe_file_name("é" * 300 + ".jpeg")
    assert name.endswith(".jpeg") and len(name.encode("utf-8")) <= 120
    assert name.startswith("é") and "\ufffd" not in name  # no half characters


def test_odd_upload_names_do_not_stop_the_others(tmp_path):
    uploads = tmp_path / "up"
    uploads.mkdir()
    names = ['quote " me.jpg', "x" * 200 + ".jpg", "Füße am Strand.jpg", "plain.jpg"]
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(uploads / name)
    duplicate = uploads / "again.jpg"
    duplicate.write_bytes((uploads / "plain.jpg").read_bytes())
    studio = Studio(tmp_path / "ws")
    upload = add_photos(studio.workspace.originals_dir("beach"),
                        [uploads / n for n in names] + [duplicate])
    assert len(upload.added) == 4 and upload.duplicates == ["again.jpg"]
    for path in upload.added:
        assert path.parent == studio.workspace.originals_dir("beach") and path.is_file()
        assert len(path.name.encode("utf-8")) <= 120 and '"' not in path.name


# --- rename and delete ------------------------------------------------------------------------


def _subject(ws: Workspace, name: str) -> None:
    (ws.photos_dir(name)).mkdir(parents=True)
    (ws.photos_dir(name) / "manifest.json").write_text("{}")


@pytest.mark.parametrize("new", ["../x", "x/..", "/tmp/x", "..", "a\\b", "CON", "", ".x"])
def test_rename_to_an_unsafe_name_is_refused(new, tmp_path):
    ws = Workspace(tmp_path)
    _subject(ws, "dog")
    with pytest.raises(InputError):
        ws.rename_subject("dog", new)
    assert ws.subjects() == ["dog"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "subjects"]


def test_rename_to_a_taken_name_is_refused(tmp_path):
    ws = Workspace(tmp_path)
    _subject(ws, "dog")
    _subject(ws, "cat")
    with pytest.raises(InputError, match="already a subject called 'cat'"):
        ws.rename_subject("dog", "cat")
    with pytest.raises(InputError, match="already a subject called 'cat'"):
        ws.rename_subject("dog", " CAT ")  # the same folder on Windows and macOS
    with pytest.raises(InputError, match="no subject called 'bird'"):
        ws.rename_subject("bird", "parrot")
    assert ws.subjects() == ["cat", "dog"]


def test_rename_moves_everything_and_unicode_works(tmp_path):
    ws = Workspace(tmp_path)
    _subject(ws, "dog")
    assert ws.rename_subject("dog", "Rex der Große 犬") == "Rex der Große 犬"
    assert ws.subjects() == ["Rex der Große 犬"]
    assert (ws.photos_dir("Rex der Große 犬") / "manifest.json").is_file()
    assert ws.rename_subject("Rex der Große 犬", "rex der große 犬") == "rex der große 犬"
    assert ws.subjects() == ["rex der große 犬"]  # a change of case only is allowed


def test_delete_removes_the_subject_but_not_shared_class_images(tmp_path):
    ws = Workspace(tmp_path)
    _subject(ws, "dog")
    _subject(ws, "cat")
    classes = ws.class_images_dir("m", "a photo of dog", 512)
    classes.mkdir(parents=True)
    ws.delete_subject("dog")
    assert ws.subjects() == ["cat"] and classes.is_dir()
    assert sorted(p.name for p in ws.subjects_dir.iterdir()) == ["cat"]  # no leftovers
    with pytest.raises(InputError, match="no subject called 'dog'"):
        ws.delete_subject("dog")
    with pytest.raises(InputError):
        ws.delete_subject("../subjects/cat")
    assert ws.subjects() == ["cat"]


def test_symlinked_or_hidden_folders_are_not_subjects(tmp_path):
    ws = Workspace(tmp_path)
    _subject(ws, "dog")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.subjects_dir / "link").symlink_to(outside, target_is_directory=True)
    (ws.subjects_dir / ".deleting-1234").mkdir()
    assert ws.subjects() == ["dog"]
    with pytest.raises(InputError, match="outside the workspace"):
        ws.delete_subject("link")
    assert outside.is_dir()


class _Running:
    def __init__(self, output_dir):
        self.running = True
        self.config = type("Config", (), {"output_dir": output_dir})()


def test_studio_refuses_to_rename_or_delete_a_subject_in_training(tmp_path, monkeypatch):
    studio = Studio(tmp_path)
    _subject(studio.workspace, "dog")
    _subject(studio.workspace, "cat")
    run = studio.workspace.run_dir("dog", "run1")
    monkeypatch.setattr(studio.jobs, "status", lambda: _Running(run))
    with pytest.raises(InputError, match="being trained right now .*run1.*cannot be deleted"):
        studio.delete_subject("dog")
    with pytest.raises(InputError, match="cannot be renamed"):
        studio.rename_subject("dog", "rex")
    # Other subjects are free.
    assert studio.rename_subject("cat", "kitty") == "kitty"
    studio.delete_subject("kitty")
    assert studio.workspace.subjects() == ["dog"]


# --- a restart sees everything ----------------------------------------------------------------


def test_a_restarted_app_lists_subjects_photos_and_loras(tmp_path):
    from dreamstudio.config import PrepareConfig
    from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME

    uploads = tmp_path / "up"
    uploads.mkdir()
    for i in range(3):
        Image.new("RGB", (100, 80), (i * 70, 90, 20)).save(uploads / f"{i}.png")
    first = Studio(tmp_path / "ws")
    report = first.prepare("Zoë", sorted(uploads.iterdir()), PrepareConfig(mode="object", size=64))
    first.exclude_photo("Zoë", report.kept[0].output)
    run = first.workspace.run_dir("Zoë", "run1")
    run.mkdir(parents=True)
    (run / WEIGHTS_NAME).write_bytes(b"weights")
    (run / CONFIG_NAME).write_text('{"steps": 5}')

    again = Studio(tmp_path / "ws")  # a new process would build exactly this
    assert again.workspace.subjects() == ["Zoë"]
    photos = again.photos("Zoë")
    assert len(photos.kept) == 3 and photos.excluded == [report.kept[0].output]
    assert [(e.label, e.info) for e in again.loras()] == [("Zoë / run1", {"steps": 5})]
    assert again.find_lora("Zoë / run1").path == run

    again.rename_subject("Zoë", "Zoe")
    assert [e.label for e in again.loras()] == ["Zoe / run1"]
    assert again.photos("Zoe").excluded == [report.kept[0].output]


def test_unused_path_never_names_an_existing_file(tmp_path):
    from dreamstudio.core.files import unused_path

    assert unused_path(tmp_path, "dog", ".png") == tmp_path / "dog.png"
    (tmp_path / "dog.png").touch()
    (tmp_path / "dog_1.png").touch()
    assert unused_path(tmp_path, "dog", ".png") == tmp_path / "dog_2.png"
    assert unused_path(tmp_path, "dog", "") == tmp_path / "dog"
