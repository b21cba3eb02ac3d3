"""What a kill -9 leaves in a run folder is cleaned or finished, never taken for a result;
and the files a user moves elsewhere (checkpoints too) follow the umask."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dreamstudio.config import GenerateConfig, TrainConfig
from dreamstudio.errors import TrainingError
from dreamstudio.generate.generator import Generator, lora_file_name
from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME, save_lora
from dreamstudio.lora.kohya import export_kohya
from dreamstudio.train.checkpoints import list_checkpoints, save_checkpoint
from dreamstudio.train.trainer import train

RANK = 2
_LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
_TE_LAYER = "encoder.layers.0.self_attn.q_proj"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _weights() -> dict:
    g = torch.Generator().manual_seed(0)
    return {f"unet.{_LAYER}.lora_A.weight": torch.randn(RANK, 32, generator=g),
            f"unet.{_LAYER}.lora_B.weight": torch.randn(32, RANK, generator=g),
            f"text_encoder.{_TE_LAYER}.lora_A.weight": torch.randn(RANK, 32, generator=g),
            f"text_encoder.{_TE_LAYER}.lora_B.weight": torch.randn(32, RANK, generator=g)}


def _finished_run(folder, model, export=True, subject="Rex the dog"):
    """A run folder as training leaves it when it finished: LoRA, record, kohya file."""
    from dreamstudio.lora.files import lora_state_dicts

    info = {"config": {"model": str(model), "rank": RANK, "export_kohya": export},
            "subject_name": subject, "finished_at": "2024-05-06T07:08:09+0000"}
    save_lora(folder, *lora_state_dicts(_weights()), info)
    if export:
        export_kohya(_weights(), RANK, folder / "Rex_the_dog.safetensors", info)
    return folder


def test_checkpoint_files_and_folders_follow_the_umask(tmp_path, umask_022):
    """safetensors created the weights 0600 and mkdtemp the folder 0700: another user's
    ComfyUI, or the same user in a container, could not read them."""
    path = save_checkpoint(tmp_path, 5, _weights(), {"step": 5}, keep=2)
    assert _mode(path) == 0o755
    assert {p.name: _mode(p) for p in path.iterdir()} == {"lora.safetensors": 0o644,
                                                         "state.pt": 0o644}
    os.umask(0o077)
    private = save_checkpoint(tmp_path, 6, _weights(), {"step": 6}, keep=2)
    assert _mode(private) == 0o700 and _mode(private / "lora.safetensors") == 0o600
    assert [c.step for c in list_checkpoints(tmp_path)] == [5, 6]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def _leftovers(run):
    """What kill -9 at various moments left, in this and earlier versions."""
    made = [run / "checkpoints" / ".writing-k2j3h4g5", run / ".saving-a1b2c3d4"]
    for folder in made:
        folder.mkdir(parents=True)
        (folder / "lora.safetensors").write_bytes(b"half")
    files = [run / ".Rex_the_dog.x7y8z9w0.tmp.safetensors",
             run / ".pytorch_lora_weights.ab12cd34.tmp.safetensors",
             run / ".run_settings.q1w2e3r4.tmp.json",
             run / "validation" / ".step-000002-0.m5n6b7v8.tmp.png",
             run / ".kohya-p0o9i8u7.safetensors"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return made + files


def test_a_run_that_starts_again_clears_what_a_killed_attempt_left(tmp_path, tiny_model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("earlier attempt\n")
    keep = save_checkpoint(run, 2, _weights(), {"step": 2}, keep=2)
    (run / "validation").mkdir()
    (run / "validation" / "step-000002-0.png").write_bytes(b"png")
    leftovers = _leftovers(run)
    # The complete checkpoint has no settings: resume fails on the steps, after tidying.
    with pytest.raises(TrainingError, match="step 2"):
        train(TrainConfig(model=str(tiny_model), instance_dir=tmp_path, output_dir=run,
                          instance_prompt="a photo of sks dog", steps=2, resume=True))
    assert [p for p in leftovers if os.path.lexists(p)] == []
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "checkpoints/step-000002/lora.safetensors", "checkpoints/step-000002/state.pt",
        "train.log", "validation/step-000002-0.png"]
    assert keep.is_dir()


def test_a_temporary_is_never_taken_for_the_kohya_file(tmp_path, tiny_model):
    run = _finished_run(tmp_path / "my-run", tiny_model)
    (run / "Rex_the_dog.safetensors").unlink()  # killed during the export
    (run / ".Rex_the_dog.x7y8z9w0.tmp.safetensors").write_bytes(b"")
    assert lora_file_name(run) == "my-run"
    (run / ".kohya-p0o9i8u7.safetensors").write_bytes(b"")  # an earlier version's
    assert lora_file_name(run) == "my-run"
    export_kohya(_weights(), RANK, run / "Rex_the_dog.safetensors", {"config": {}})
    assert lora_file_name(run) == "Rex_the_dog"


def _tensors(path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()  # noqa: SIM118


def test_opening_a_lora_killed_during_its_export_finishes_the_export(tmp_path, tiny_model):
    run = _finished_run(tmp_path / "run", tiny_model)
    kohya = run / "Rex_the_dog.safetensors"
    expected, expected_meta = _tensors(kohya)
    kohya.unlink()
    generator = Generator(str(tiny_model), device="cpu")
    generator.load_for(GenerateConfig(prompt="a photo of sks dog", lora_dir=run))
    tensors, meta = _tensors(kohya)
    assert meta == expected_meta
    assert set(tensors) == set(expected)
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert lora_file_name(run) == "Rex_the_dog"


def test_resuming_a_run_killed_during_its_export_finishes_the_export(tmp_path, tiny_model):
    run = _finished_run(tmp_path / "run", tiny_model)
    kohya = run / "Rex_the_dog.safetensors"
    expected = load_file(str(kohya))
    kohya.unlink()
    with pytest.raises(TrainingError, match="Nothing to resume"):
        train(TrainConfig(model=str(tiny_model), instance_dir=tmp_path, output_dir=run,
                          instance_prompt="a photo of sks dog", steps=2, resume=True))
    assert load_file(str(kohya)).keys() == expected.keys()


def test_no_export_is_made_for_a_run_that_asked_for_none(tmp_path, tiny_model):
    run = _finished_run(tmp_path / "run", tiny_model, export=False)
    Generator(str(tiny_model), device="cpu").load_for(
        GenerateConfig(prompt="a photo of sks dog", lora_dir=run))
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
