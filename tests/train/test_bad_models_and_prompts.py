"""Models and prompts that would train silently wrong are refused before any training."""

from __future__ import annotations

import json
import shutil

import pytest

from dreamstudio.config import TrainConfig
from dreamstudio.errors import InputError, ModelLoadError
from dreamstudio.train.trainer import train


def test_a_model_that_predicts_the_sample_is_refused_by_name(tiny_model, small_dog_dir,
                                                            tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "sample-model")
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "sample"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "run"
    with pytest.raises(ModelLoadError, match=r"'sample'.*cannot train") as caught:
        train(TrainConfig(model=str(model), instance_dir=small_dog_dir, output_dir=out,
                          instance_prompt="a photo of sks dog", steps=1, resolution=64,
                          validation_every=0, checkpoint_every=0))
    assert str(model) in str(caught.value)
    assert not (out / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.parametrize("class_prompt", ["a photo of sks dog", "a photo of a SKS dog",
                                          "sks dogs"])
def test_a_class_prompt_with_the_identifier_is_refused(tmp_path, class_prompt):
    with pytest.raises(InputError, match=r"contains the identifier 'sks'.*Leave it out"):
        TrainConfig(model="m", instance_dir=tmp_path, output_dir=tmp_path / "out",
                    instance_prompt="a photo of sks dog", class_dir=tmp_path / "class",
                    class_prompt=class_prompt)
    # The class prompt without it is what prior preservation wants.
    TrainConfig(model="m", instance_dir=tmp_path, output_dir=tmp_path / "out",
                instance_prompt="a photo of sks dog", class_dir=tmp_path / "class",
                class_prompt="a photo of dog")


def test_the_identifier_is_the_rare_word_whatever_its_place_and_case(tiny_model):
    from dreamstudio.evaluate.prompts import without_identifier
    from dreamstudio.train.identifiers import (
        find_identifier,
        identifier_of,
        load_tokenizer,
        split_instance_prompt,
    )

    assert split_instance_prompt("a sks dog on the beach") == ("sks", "dog")
    assert split_instance_prompt("a photo of SKS dog", class_prompt="a photo of dog") == (
        "SKS", "dog")
    assert identifier_of("a photo of sks dog on the beach", "a photo of dog") == "sks"
    tokenizer = load_tokenizer(str(tiny_model))
    assert find_identifier("a sks dog on the beach", tokenizer=tokenizer) == "sks"
    assert find_identifier("a beach dog, SKS style", tokenizer=tokenizer) == "SKS"
    # Splitting it out of a prompt for CLIP-T ignores case, as CLIP's tokenizer does.
    assert without_identifier("a SKS dog on the beach", "sks") == "a dog on the beach"


def test_evaluation_takes_the_identifier_the_run_recorded(tmp_path, small_dog_dir):
    from dreamstudio.evaluate.config import EvalConfig
    from dreamstudio.lora.files import CONFIG_NAME, WEIGHTS_NAME

    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / WEIGHTS_NAME).write_bytes(b"")
    (lora / CONFIG_NAME).write_text(json.dumps(
        {"config": {"instance_prompt": "a SKS dog on the beach"}, "identifier": "SKS"}))
    config = EvalConfig(lora_dir=lora, real_images_dir=small_dog_dir,
                        prompts=["a SKS dog in the snow"])
    assert (config.identifier, config.class_noun) == ("SKS", "dog")
    assert config.prompt_pairs() == [("a SKS dog in the snow", "a dog in the snow")]
