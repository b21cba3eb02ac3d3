"""Training presets start from TrainConfig's defaults rather than copies of them."""

from __future__ import annotations

from dreamstudio.config import TrainConfig
from dreamstudio.train.presets import PRESETS

NOTEBOOK, PET, FACE = "LoRA notebook defaults", "Object / pet", "Person / face"


def _defaults(tmp_path) -> TrainConfig:
    return TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks dog",
                       output_dir=tmp_path)


def test_the_notebook_preset_is_the_config_defaults_and_quotes_them(tmp_path):
    config = _defaults(tmp_path)
    preset = PRESETS[NOTEBOOK]
    assert preset.settings == {k: getattr(config, k) for k in preset.settings}
    assert {"steps", "learning_rate", "text_encoder_lr", "rank"} <= set(preset.settings)
    for quoted in (f"{config.steps} steps", f"rank {config.rank}",
                   f"batch {config.batch_size}", "UNet LR 5e-4", "text-encoder LR 1e-4"):
        assert quoted in preset.description


def test_the_face_preset_sets_the_same_keys_and_turns_prior_preservation_on(tmp_path):
    config = _defaults(tmp_path)
    face, notebook = PRESETS[FACE].settings, PRESETS[NOTEBOOK].settings
    assert face.keys() == notebook.keys()
    assert face["class_prompt"] == "a photo of a person"
    assert face["steps"] > config.steps and face["learning_rate"] < config.learning_rate
    assert face["num_class_images"] == config.num_class_images
    assert face["prior_loss_weight"] == config.prior_loss_weight


def test_the_method_presets_turn_on_what_they_say_and_make_valid_configs(tmp_path):
    config = _defaults(tmp_path)
    pet, face = PRESETS[PET], PRESETS[FACE]
    changed = {k for k, v in pet.settings.items() if v != getattr(config, k)}
    assert changed == {"min_snr_gamma"} and "min-SNR" in pet.description
    assert face.settings["prior_mode"] == "prediction" and "prediction" in face.description
    assert face.settings["face_outside_weight"] < face.settings["face_loss_weight"]
    assert "face-weighted loss" in face.description and "Pivotal tuning is left off" in \
        face.description
    for preset in (pet, face):
        # A preset's settings train as they are: prior prediction needs no class folder.
        made = TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks person",
                           output_dir=tmp_path, **preset.settings)
        assert made.uses_class_images is False


# ---- SDXL's presets: SDXL's defaults (config/families.py), never SD 1.x's rates ---------

def test_sdxl_presets_keep_sdxls_rates_and_say_what_they_turn_on(tmp_path):
    from dreamstudio.config.families import SDXL, train_defaults
    from dreamstudio.train.presets import SDXL_PRESETS, presets_for

    assert presets_for(SDXL) is SDXL_PRESETS and presets_for("sd1") is PRESETS
    sdxl = train_defaults(SDXL)
    base, pet, face = SDXL_PRESETS.values()
    assert base.settings["learning_rate"] == sdxl["learning_rate"] == 1e-4
    assert base.settings["text_encoder_lr"] == sdxl["text_encoder_lr"] == 1e-5
    assert base.settings["steps"] == sdxl["steps"]
    for quoted in ("UNet LR 1e-4", "text-encoder LR 1e-5", "both text encoders", "1024 px"):
        assert quoted in base.description
    changed = {k for k, v in pet.settings.items() if v != base.settings[k]}
    assert changed == {"min_snr_gamma"} and "min-SNR" in pet.description
    assert face.settings["learning_rate"] < base.settings["learning_rate"]
    assert face.settings["prior_mode"] == "prediction" and "prediction" in face.description
    assert "face-weighted loss" in face.description and "1024 px" in face.description
    for preset in SDXL_PRESETS.values():
        assert "resolution" not in preset.settings  # the Train tab keeps the model's size
        TrainConfig(instance_dir=tmp_path, instance_prompt="a photo of sks person",
                    output_dir=tmp_path, **preset.settings)
