"""The Studio queries the UI asks instead of reading the workspace's folders itself."""

from __future__ import annotations

import json
import os

from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME
from dreamstudio.studio import Studio


def _lora(studio: Studio, subject: str, run: str, mtime: float, info: dict | None = None):
    folder = studio.workspace.run_dir(subject, run)
    folder.mkdir(parents=True)
    (folder / WEIGHTS_NAME).write_bytes(b"")
    os.utime(folder / WEIGHTS_NAME, (mtime, mtime))
    if info is not None:
        (folder / CONFIG_NAME).write_text(json.dumps(info))
    return folder


def test_a_run_folder_names_its_subject_and_run(tmp_path):
    studio = Studio(tmp_path / "ws", model="/m/tiny")
    run = studio.workspace.run_dir("Mieze 猫", "run-1")
    assert studio.run_address(run) == ("Mieze 猫", "run-1")
    assert studio.run_address(studio.workspace.photos_dir("dog")) is None
    assert studio.run_address(tmp_path / "elsewhere" / "loras" / "run") is None
    assert studio.run_address(studio.workspace.subject_dir("dog")) is None


def test_photos_count_as_prepared_once_their_manifest_is_written(tmp_path):
    from dreamstudio.data.manifest import MANIFEST_NAME

    studio = Studio(tmp_path / "ws", model="/m/tiny")
    assert not studio.has_photos("dog") and studio.uploaded_count("dog") == 0
    originals = studio.workspace.originals_dir("dog")
    originals.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (originals / name).write_bytes(b"jpg")
    assert studio.uploaded_count("dog") == 2 and not studio.has_photos("dog")
    studio.workspace.photos_dir("dog").mkdir(parents=True)
    (studio.workspace.photos_dir("dog") / MANIFEST_NAME).write_text("{}")
    assert studio.has_photos("dog")
    assert studio.subjects() == ["dog"]


def test_the_newest_lora_and_the_lora_in_a_folder(tmp_path):
    studio = Studio(tmp_path / "ws", model="/m/tiny")
    assert studio.newest_lora() is None
    old = _lora(studio, "dog", "b-old", 1_000)
    _lora(studio, "cat", "a-new", 2_000)
    assert studio.newest_lora().label == "cat / a-new"
    assert studio.lora_at(str(old)).label == "dog / b-old"
    assert studio.lora_at(old / ".." / "b-old").label == "dog / b-old"
    assert studio.lora_at(studio.workspace.run_dir("dog", "gone")) is None


def test_a_loras_facts_come_from_its_saved_config(tmp_path):
    studio = Studio(tmp_path / "ws", model="/m/tiny")
    _lora(studio, "dog", "run", 1_000, {
        "config": {"instance_prompt": "a photo of sks dog", "steps": 300, "rank": 8},
        "final_loss": 0.25, "finished_at": "2024-05-01T10:20:30"})
    _lora(studio, "dog", "bare", 1_000)  # no config beside the weights
    run, bare = (studio.find_lora(f"dog / {name}") for name in ("run", "bare"))
    facts = run.facts
    assert (facts.instance_prompt, facts.steps, facts.rank, facts.final_loss,
            facts.finished_at) == ("a photo of sks dog", 300, 8, 0.25, "2024-05-01T10:20:30")
    assert bare.facts.instance_prompt is None
