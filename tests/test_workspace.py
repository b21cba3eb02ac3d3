"""Names a user types stay inside the workspace."""

from __future__ import annotations

import pytest

from dreamstudio.errors import InputError
from dreamstudio.workspace import Workspace, safe_name


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
