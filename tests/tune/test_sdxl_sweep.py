"""A scored sweep of an SDXL LoRA on the tiny SDXL model: one LoRA load, every cell drawn."""

from __future__ import annotations

from dreamstudio.generate.generator import Generator
from dreamstudio.generate.png_metadata import read_parameters
from dreamstudio.tune.config import TuneConfig
from dreamstudio.tune.results import BASE, FINAL
from dreamstudio.tune.sweep import run_sweep
from tests.support.sdxl_lora import save_sdxl_lora


def test_a_sweep_of_an_sdxl_run(tiny_sdxl_model, small_dog_dir, scorers, scorer_dirs,
                                tmp_path_factory):
    # A run folder holding just its final LoRA, as a run without checkpoints leaves it.
    run_dir = save_sdxl_lora(tiny_sdxl_model, tmp_path_factory.mktemp("sdxl-run"), record={
        "config": {"rank": 4, "model": str(tiny_sdxl_model),
                   "instance_prompt": "a photo of sks dog"},
        "family": "sdxl", "steps_done": 6})
    config = TuneConfig(run_dir=run_dir, real_images_dir=small_dog_dir, candidates=["all"],
                        unet_scales=[0.0, 1.0], text_encoder_scales=[1.0], guidances=[7.5],
                        images_per_prompt=1, steps=2, leak_images=1, height=64, width=64,
                        dino_model=str(scorer_dirs[0]), clip_model=str(scorer_dirs[1]))
    generator = Generator(str(tiny_sdxl_model), device="cpu")
    folder = tmp_path_factory.mktemp("sdxl-tune")
    result = run_sweep(config, generator, folder, *scorers)

    assert result.status == "completed"
    assert {(c.candidate, c.unet_scale) for c in result.cells} == {(FINAL, 0.0), (FINAL, 1.0)}
    assert [b.candidate for b in result.base] == [BASE]
    assert generator.model_loads == 1 and generator.lora_loads == 1
    for cell in result.cells + result.base:
        assert None not in (cell.dino, cell.clip_i, cell.clip_t, cell.leak)
        assert all(read_parameters(folder / p)["model_family"] == "sdxl" for p in cell.images)
    # The UNet scale moves what is drawn, so the scores of its two cells differ.
    by_scale = {c.unet_scale: c for c in result.cells}
    assert by_scale[0.0].dino != by_scale[1.0].dino
    assert result.recommendation is not None
