"""A pivotal-tuned SDXL LoRA's embedding files: the SDXL format ("clip_l" / "clip_g") that
A1111 / ComfyUI read, loaded by diffusers into both text encoders, and SD 1.x's unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dreamstudio.lora.embeddings import (
    A1111_KEY,
    load_embedding,
    read_embedding,
    read_embeddings,
    save_embedding,
    unload_embedding,
)
from tests.lora.sdxl_lora import fresh_pipe

TOKEN = "<sks>"


def _rows(n: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn((n, width), generator=torch.Generator().manual_seed(seed))


def test_both_sdxl_files_hold_clip_l_and_clip_g(tmp_path):
    rows, rows_2 = _rows(2, 768, 0), _rows(2, 1280, 1)
    record = save_embedding(tmp_path, TOKEN, "sks", rows, rows_2)
    assert record["family"] == "sdxl" and record["vectors"] == 2
    assert record["a1111_file"] == "embedding/sks.safetensors"  # the prompt's word in A1111
    for rel in (record["diffusers_file"], record["a1111_file"]):
        tensors = load_file(str(tmp_path / rel))
        assert set(tensors) == {"clip_l", "clip_g"}
        assert torch.equal(tensors["clip_l"], rows) and torch.equal(tensors["clip_g"], rows_2)
    back = read_embeddings(tmp_path, record)
    assert torch.equal(back["text_encoder"], rows)
    assert torch.equal(back["text_encoder_2"], rows_2)
    assert torch.equal(read_embedding(tmp_path, record), rows)


def test_the_two_encoders_must_have_as_many_rows(tmp_path):
    with pytest.raises(ValueError, match="2 rows in text encoder 1 but 3"):
        save_embedding(tmp_path, TOKEN, "sks", _rows(2, 768, 0), _rows(3, 1280, 1))


def test_sd1_embedding_files_are_as_before(tmp_path):
    rows = _rows(2, 768, 0)
    record = save_embedding(tmp_path, TOKEN, "sks", rows)
    assert "family" not in record
    assert set(load_file(str(tmp_path / record["diffusers_file"]))) == {TOKEN}
    assert set(load_file(str(tmp_path / record["a1111_file"]))) == {A1111_KEY}
    assert list(read_embeddings(tmp_path, record)) == ["text_encoder"]
    assert torch.equal(read_embedding(tmp_path, record), rows)


def test_the_tokens_load_into_both_text_encoders_and_unload(tiny_sdxl_model, tmp_path):
    pipe = fresh_pipe(tiny_sdxl_model)
    pairs = (("text_encoder", pipe.tokenizer), ("text_encoder_2", pipe.tokenizer_2))
    sizes = {c: len(tok) for c, tok in pairs}
    tables = {c: getattr(pipe, c).get_input_embeddings().weight.detach().clone()
              for c, _ in pairs}
    rows = {c: _rows(2, getattr(pipe, c).config.hidden_size, i)
            for i, (c, _) in enumerate(pairs)}
    record = save_embedding(tmp_path, TOKEN, "sks", rows["text_encoder"],
                            rows["text_encoder_2"])
    load_embedding(pipe, tmp_path, record)
    for component, tokenizer in pairs:
        ids = tokenizer.convert_tokens_to_ids([TOKEN, f"{TOKEN}_1"])
        table = getattr(pipe, component).get_input_embeddings().weight
        torch.testing.assert_close(table[ids], rows[component])
    unload_embedding(pipe, record)
    for component, tokenizer in pairs:
        assert len(tokenizer) == sizes[component] and TOKEN not in tokenizer.get_vocab()
        assert torch.equal(getattr(pipe, component).get_input_embeddings().weight,
                           tables[component])
