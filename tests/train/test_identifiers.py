"""Identifier checks and suggestions with the real CLIP tokenizer of the tiny model."""

from __future__ import annotations

import pytest

from dreamstudio.errors import ModelLoadError
from dreamstudio.train.identifiers import (
    IdentifierAdvisor,
    check_identifier,
    class_noun_of,
    compose_prompts,
    identifier_of,
    load_tokenizer,
    parse_template_prompt,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def advisor(tiny_model):
    return IdentifierAdvisor(str(tiny_model))


def test_the_real_clip_vocabulary_is_loaded(tokenizer):
    assert len(tokenizer) == 49408


def test_sks_is_one_rare_token(tokenizer):
    check = check_identifier(tokenizer, "sks", "dog")
    assert check.single_token and check.tokens == ["sks"]
    assert not check.common and check.ok and check.warnings == []
    assert (check.instance_prompt, check.class_prompt) == ("a photo of sks dog", "a photo of dog")


@pytest.mark.parametrize("word", ["dog", "photo", "Man"])
def test_common_words_are_flagged(tokenizer, word):
    check = check_identifier(tokenizer, word, "backpack")
    assert check.single_token and check.common and not check.ok
    assert "common word" in check.warnings[0]


def test_a_long_made_up_word_splits_and_is_flagged(tokenizer):
    check = check_identifier(tokenizer, "zqxvbrumbleflonk", "dog")
    assert len(check.token_ids) > 2 and not check.single_token and not check.ok
    assert f"becomes {len(check.token_ids)} tokens" in check.warnings[0]
    assert " + ".join(check.tokens) in check.warnings[0]


def test_missing_identifier_or_class_noun_is_explained(tokenizer):
    empty = check_identifier(tokenizer, "  ", "dog")
    assert not empty.ok and "No identifier" in empty.warnings[0]
    assert empty.instance_prompt == ""  # never "a photo of dog": that retrains the class
    no_class = check_identifier(tokenizer, "sks", "")
    assert "No class noun" in no_class.warnings[0]
    assert no_class.instance_prompt == "a photo of sks"
    same = check_identifier(tokenizer, "sks", "sks")
    assert any("same word" in w for w in same.warnings)


def test_suggestions_are_rare_single_tokens_and_deterministic(tokenizer, advisor):
    first = advisor.suggest(8, seed=0)
    assert len(first) == len(set(first)) == 8
    assert advisor.suggest(8, seed=0) == first
    assert advisor.suggest(8, seed=1) != first
    for word in first:
        check = check_identifier(tokenizer, word, "dog")
        assert check.single_token and not check.common, check
        assert 2 <= len(word) <= 4 and word.isalpha() and word.islower()
        assert check.token_ids[0] >= 0.8 * len(tokenizer)  # the rare end of the vocabulary
        assert check.ok


def test_prompt_helpers():
    assert compose_prompts(" ohwx ", "golden retriever") == (
        "a photo of ohwx golden retriever", "a photo of golden retriever")
    assert class_noun_of("a photo of a person") == "person"
    assert class_noun_of("a photo of dog") == "dog"
    assert parse_template_prompt("a photo of sks dog") == ("sks", "dog")
    assert parse_template_prompt("sks dog in the snow") is None


def test_the_identifier_recorded_with_a_lora_is_the_word_before_the_class_noun():
    # One rule for the trainer's record, the evaluation and the kohya metadata.
    assert identifier_of("a photo of sks dog") == "sks"
    assert identifier_of("a photo of zwx stuffed animal") == "zwx"  # not 'stuffed'
    assert identifier_of("a zwx red car", class_prompt="a red car") == "zwx"
    assert identifier_of("sks") == "sks"  # nothing to tell apart: the prompt itself


def test_a_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="identifiers cannot be checked"):
        load_tokenizer(str(tmp_path))
