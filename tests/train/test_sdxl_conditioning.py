"""What the UNet is conditioned on in training (train/conditioning.py): SD 1.x unchanged, SDXL
as its pipeline encodes a prompt, and SDXL's size / crop ids from the manifest's boxes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dreamstudio.core.models import load_pipeline
from dreamstudio.data.manifest import PhotoResult, PrepareReport, write_manifest
from dreamstudio.train.conditioning import (
    Conditioning,
    TextConditioner,
    image_time_ids,
    time_ids_for,
)
from dreamstudio.train.latents import load_images, tokenize

PROMPTS = ["a photo of sks dog", "a sks dog on a sofa"]


@pytest.fixture(scope="module")
def sdxl_pipe(tiny_sdxl_model):
    return load_pipeline(str(tiny_sdxl_model), torch.device("cpu"))


def test_sd1_ids_and_embeddings_are_the_single_encoders_own(tiny_model):
    pipe = load_pipeline(str(tiny_model), torch.device("cpu"))
    text = TextConditioner(pipe)
    ids = text.tokenize(PROMPTS)
    assert torch.equal(ids, tokenize(pipe.tokenizer, PROMPTS))
    with torch.no_grad():
        cond = text.encode(ids)
        assert torch.equal(cond.embeds, pipe.text_encoder(ids)[0])
    assert cond.pooled is None and cond.time_ids is None
    assert set(cond.unet_kwargs()) == {"encoder_hidden_states"}


def test_sdxl_conditioning_is_what_its_pipeline_encodes(sdxl_pipe):
    text = TextConditioner(sdxl_pipe)
    ids = text.tokenize(PROMPTS)
    assert ids.shape == (2, 2, 77)
    assert torch.equal(ids[:, 0], tokenize(sdxl_pipe.tokenizer, PROMPTS))
    assert torch.equal(ids[:, 1], tokenize(sdxl_pipe.tokenizer_2, PROMPTS))
    with torch.no_grad():
        cond = text.encode(ids)
        pooled = sdxl_pipe.text_encoder_2(ids[:, 1]).text_embeds
        embeds, _, pipe_pooled, _ = sdxl_pipe.encode_prompt(
            PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=False)
    assert cond.embeds.shape == (2, 77, 64)  # 32 + 32 hidden units, concatenated
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=0)
    torch.testing.assert_close(cond.embeds, embeds)
    torch.testing.assert_close(cond.pooled, pipe_pooled)


def test_the_conditioning_ops_keep_rows_together():
    cond = Conditioning(torch.arange(6.).view(3, 2, 1), torch.arange(3.)[:, None],
                        torch.arange(18.).view(3, 6))
    picked = cond[torch.tensor([2, 0])]
    assert picked.pooled.flatten().tolist() == [2, 0]
    assert picked.time_ids[0].tolist() == cond.time_ids[2].tolist()
    joined = Conditioning.cat([picked, cond[torch.tensor([1])].repeat(2)])
    assert len(joined) == 4 and joined.pooled.flatten().tolist() == [2, 0, 1, 1]
    kwargs = joined.unet_kwargs()
    assert kwargs["added_cond_kwargs"]["time_ids"].shape == (4, 6)
    assert kwargs["added_cond_kwargs"]["text_embeds"] is joined.pooled


def test_a_manifest_crop_gives_the_rules_time_ids():
    # A 400 x 300 photo whose 240 px crop starts at x 100, y 50; trained at 64 px.
    entry = PhotoResult(source="p.jpg", kept=True, crop_box=[100, 50, 340, 290],
                        output="p.png", image_size=[400, 300])
    scale = 64 / 240
    ids = image_time_ids(entry, (512, 512), 64)
    assert ids == pytest.approx([300, 400, 50 * scale, 100 * scale, 64, 64])
    # Mirrored: the crop's left edge is as far from the left as its right was from the right.
    flipped = image_time_ids(entry, (512, 512), 64, mirrored=True)
    assert flipped == pytest.approx([300, 400, 50 * scale, (400 - 340) * scale, 64, 64])


def test_a_file_without_a_manifest_entry_gets_its_size_and_the_centre_crop():
    # 106 x 80 scaled to 85 x 64: the centre crop starts at x 10, its mirror at 85-10-64 = 11.
    assert image_time_ids(None, (106, 80), 64) == [80, 106, 0, 10, 64, 64]
    assert image_time_ids(None, (106, 80), 64, mirrored=True) == [80, 106, 0, 11, 64, 64]
    assert image_time_ids(None, (64, 64), 64) == [64, 64, 0, 0, 64, 64]


def test_time_ids_follow_the_folders_manifest_and_the_flipped_copies(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    Image.new("RGB", (96, 64), "blue").save(tmp_path / "b.png")
    entries = [PhotoResult(source="a.jpg", kept=True, crop_box=[0, 20, 128, 148],
                           output="a.png", image_size=[256, 200]),
               PhotoResult(source="b.jpg", kept=True, output="b.png")]  # no boxes recorded
    write_manifest(PrepareReport(results=entries), tmp_path)
    images = load_images(tmp_path, 64)
    ids = time_ids_for(tmp_path, images, 64, mirrored=True)
    by_name = {p.name: i for i, p in enumerate(images.files)}
    a, b, n = by_name["a.png"], by_name["b.png"], len(images.files)
    assert ids.shape == (4, 6)
    assert ids[a].tolist() == [200, 256, 10, 0, 64, 64]
    assert ids[a + n].tolist() == [200, 256, 10, 64, 64, 64]  # (256 - 128) / 2
    assert ids[b].tolist() == [64, 96, 0, 16, 64, 64]
    assert ids[b + n].tolist() == [64, 96, 0, 16, 64, 64]
