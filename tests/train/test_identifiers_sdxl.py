"""Identifiers on SDXL: checked against both of its tokenizers (one per text encoder)."""

from __future__ import annotations

import pytest

from dreamstudio.train.identifiers import (
    IdentifierAdvisor,
    check_identifier,
    load_tokenizer,
    load_tokenizers,
)


@pytest.fixture(scope="module")
def coarse_tokenizer():
    """A CLIP tokenizer with only the first 2,000 merges: it splits words the full
    vocabulary keeps whole, as a second text encoder with another vocabulary would."""
    from transformers import CLIPTokenizer

    from dreamstudio.core.clip_vocab import clip_vocabulary

    tokens, merges = clip_vocabulary()
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=list(merges[:2000]),
                         unk_token="<|endoftext|>", bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", pad_token="!")


def test_an_sdxl_folder_gives_both_tokenizers(tiny_sdxl_model, tiny_model):
    first, second = load_tokenizers(str(tiny_sdxl_model))
    assert len(first) == len(second) == 49408
    assert second.pad_token == "!"  # tokenizer_2, OpenCLIP's padding
    assert len(load_tokenizers(str(tiny_model))) == 1
    assert load_tokenizer(str(tiny_sdxl_model)).pad_token == first.pad_token


def test_a_split_in_the_second_tokenizer_is_reported(tiny_model, coarse_tokenizer):
    tokenizer = load_tokenizer(str(tiny_model))
    alone = check_identifier(tokenizer, "sks", "dog")
    assert alone.ok
    both = check_identifier(tokenizer, "sks", "dog", others=[coarse_tokenizer])
    assert both.single_token and not both.ok
    assert len(both.warnings) == 1 and "for text encoder 2" in both.warnings[0]
    assert "becomes" in both.warnings[0] and " + " in both.warnings[0]
    # A split in the first tokenizer is reported once, as for SD 1.x.
    split = check_identifier(tokenizer, "xqzvk", "dog", others=[coarse_tokenizer])
    assert sum("becomes" in w for w in split.warnings) == 1


def test_the_advisor_checks_and_suggests_with_both(tiny_sdxl_model, coarse_tokenizer):
    advisor = IdentifierAdvisor(str(tiny_sdxl_model))
    assert len(advisor.tokenizers) == 2
    assert advisor.check("sks", "dog").ok  # SDXL's two CLIP vocabularies agree on it
    advisor._tokenizers = [advisor.tokenizer, coarse_tokenizer]
    assert not advisor.check("sks", "dog").ok
    for word in advisor.suggest(5, seed=0):  # each suggestion stays one token in both
        assert len(coarse_tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
