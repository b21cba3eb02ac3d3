"""An SDXL LoRA's files: the diffusers file loads in a fresh SDXL pipeline as the live model,
the kohya file names every module of the UNet and both text encoders as ComfyUI / A1111 /
Forge read them and loads in diffusers to the same outputs, and the weights read back."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dreamstudio.lora.adapters import TEXT_ENCODER_TARGETS, UNET_TARGETS
from dreamstudio.lora.files import (
    WEIGHTS_NAME,
    lora_state_dicts,
    read_lora_info,
    read_lora_weights,
    weights_family,
)
from dreamstudio.lora.kohya import kohya_metadata, kohya_module_name, to_kohya
from tests.lora.sdxl_lora import (
    KOHYA_NAME,
    RANK,
    assert_same_outputs,
    fresh_pipe,
    make_sdxl_lora,
    outputs,
)


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "dora"])
def sdxl_lora(request, tiny_sdxl_model, tmp_path_factory):
    return make_sdxl_lora(tiny_sdxl_model, tmp_path_factory.mktemp("sdxl-lora"),
                          use_dora=request.param)


@pytest.fixture(scope="module")
def base_outputs(tiny_sdxl_model):
    return outputs(fresh_pipe(tiny_sdxl_model))


def _loaded(model_dir, path):
    pipe = fresh_pipe(model_dir)
    pipe.load_lora_weights(str(path))
    return pipe


def test_the_lora_changes_every_output(sdxl_lora, base_outputs):
    """Else the loading tests below would pass on a file that loads nothing."""
    live = sdxl_lora.live
    assert (live.unet - base_outputs.unet).abs().max() > 1e-3
    assert (live.embeds - base_outputs.embeds).abs().max() > 1e-3
    assert (live.pooled - base_outputs.pooled).abs().max() > 1e-3
    # Both encoders' halves of the embeddings move: text encoder 1's, then 2's.
    width = sdxl_lora.pipe.text_encoder.config.hidden_size
    for half in (slice(0, width), slice(width, None)):
        assert (live.embeds[..., half] - base_outputs.embeds[..., half]).abs().max() > 1e-3


def test_the_diffusers_file_loads_in_a_fresh_sdxl_pipeline_as_the_live_model(
        sdxl_lora, tiny_sdxl_model):
    pipe = _loaded(tiny_sdxl_model, sdxl_lora.folder)
    assert set(pipe.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
    assert_same_outputs(outputs(pipe), sdxl_lora.live)


def test_the_file_has_both_text_encoders_on_their_classic_paths(sdxl_lora):
    keys = list(load_file(str(sdxl_lora.folder / WEIGHTS_NAME)))
    per_layer = 2 * len(TEXT_ENCODER_TARGETS)  # down and up of each projection
    for component in ("text_encoder", "text_encoder_2"):
        lora_keys = [k for k in keys if k.startswith(component + ".") and "magnitude" not in k]
        layers = getattr(sdxl_lora.pipe, component).config.num_hidden_layers
        assert len(lora_keys) == per_layer * layers
        assert all(k.startswith(f"{component}.text_model.encoder.layers.") for k in lora_keys)


def test_the_record_says_sdxl_and_the_weights_tell_it_too(sdxl_lora):
    assert read_lora_info(sdxl_lora.folder)["family"] == "sdxl"
    assert weights_family(sdxl_lora.weights) == "sdxl"
    assert weights_family({k: v for k, v in sdxl_lora.weights.items()
                           if not k.startswith("text_encoder_2.")}) is None


def test_the_weights_read_back_are_the_ones_saved(sdxl_lora):
    back = read_lora_weights(sdxl_lora.folder)
    # Text encoder 1 is written on its classic path; transformers 5 has none.
    back = {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in back.items()}
    assert {k.split(".")[0] for k in back} == {"unet", "text_encoder", "text_encoder_2"}
    assert set(back) == set(sdxl_lora.weights)
    for key, tensor in sdxl_lora.weights.items():
        assert torch.equal(back[key], tensor), key


def test_state_dicts_of_an_sd1_lora_have_no_second_text_encoder(sdxl_lora):
    sd1 = {k: v for k, v in sdxl_lora.weights.items() if not k.startswith("text_encoder_2.")}
    unet, te, te2 = lora_state_dicts(sd1)
    assert unet and te and te2 is None


# --- the kohya file ------------------------------------------------------------------------

def _targeted(model, component: str, targets: list[str]) -> set[str]:
    """The kohya names of the model's modules that carry a LoRA, from its own module tree."""
    return {kohya_module_name(component, name, sdxl=True)
            for name, module in model.named_modules()
            if any(name.endswith("." + t) for t in targets) and hasattr(module, "lora_A")}


def test_every_kohya_key_maps_to_a_lora_module_of_the_three_models(sdxl_lora):
    pipe = sdxl_lora.pipe
    tensors = load_file(str(sdxl_lora.folder / KOHYA_NAME))
    expected = (_targeted(pipe.unet, "unet", UNET_TARGETS)
                | _targeted(pipe.text_encoder, "text_encoder", TEXT_ENCODER_TARGETS)
                | _targeted(pipe.text_encoder_2, "text_encoder_2", TEXT_ENCODER_TARGETS))
    modules = {k.split(".")[0] for k in tensors}
    assert modules == expected  # every key names a LoRA module, and every one is exported
    assert {m.split("_")[1] for m in modules} == {"unet", "te1", "te2"}
    # The names ComfyUI maps for SDXL's CLIP-L and CLIP-G: the classic `text_model_` level.
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in modules
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj" in modules
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0" in modules
    dora = read_lora_info(sdxl_lora.folder)["config"]["use_dora"]
    for module in modules:
        assert tensors[f"{module}.lora_down.weight"].shape[0] == RANK
        assert tensors[f"{module}.lora_up.weight"].shape[1] == RANK
        assert tensors[f"{module}.alpha"].item() == float(RANK)
        assert (f"{module}.dora_scale" in tensors) == dora


def test_diffusers_loads_the_kohya_file_as_our_diffusers_file(sdxl_lora, tiny_sdxl_model):
    if read_lora_info(sdxl_lora.folder)["config"]["use_dora"]:
        pytest.skip("diffusers 0.42 drops a kohya file's dora_scale (it warns that it cannot "
                    "load it); the DoRA's scales are checked against the model's below")
    from_kohya = outputs(_loaded(tiny_sdxl_model, sdxl_lora.folder / KOHYA_NAME))
    from_diffusers = outputs(_loaded(tiny_sdxl_model, sdxl_lora.folder))
    assert_same_outputs(from_kohya, from_diffusers, atol=1e-4)
    assert_same_outputs(from_kohya, sdxl_lora.live, atol=1e-4)


def test_the_kohya_dora_scales_are_the_models_magnitudes(sdxl_lora):
    if not read_lora_info(sdxl_lora.folder)["config"]["use_dora"]:
        pytest.skip("a plain LoRA has no dora_scale")
    tensors = load_file(str(sdxl_lora.folder / KOHYA_NAME))
    magnitudes = {k.removesuffix(".lora_magnitude_vector"): v
                  for k, v in sdxl_lora.weights.items() if k.endswith("lora_magnitude_vector")}
    assert {k.split(".")[0] for k in magnitudes} == {"unet", "text_encoder", "text_encoder_2"}
    for stem, magnitude in magnitudes.items():
        name = kohya_module_name(*stem.split(".", 1), sdxl=True)
        # One norm per output row, as (out, 1): the output-axis kind ComfyUI applies.
        assert torch.equal(tensors[f"{name}.dora_scale"], magnitude.reshape(-1, 1)), name


def test_the_kohya_header_tells_sdxl_as_a1111_forge_and_model_specs_read_it(sdxl_lora):
    with safe_open(str(sdxl_lora.folder / KOHYA_NAME), framework="pt") as fh:
        meta = fh.metadata()
    # A1111 / Forge: an SDXL LoRA is one whose ss_base_model_version starts with "sdxl_".
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.resolution"] == "64x64"
    assert meta["dreamstudio_family"] == "sdxl"


def test_sd1_headers_and_keys_are_as_before():
    meta = kohya_metadata({"config": {"rank": 4}})
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    v2 = kohya_metadata({"config": {"rank": 4}, "prediction_type": "v_prediction"})
    assert v2["ss_v2"] == "True"
    assert v2["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    weights = {"text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 8),
               "text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(8, 4)}
    assert {k.split(".")[0] for k in to_kohya(weights, 4)} == {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj"}
    assert {k.split(".")[0] for k in to_kohya(weights, 4, family="sdxl")} == {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"}
