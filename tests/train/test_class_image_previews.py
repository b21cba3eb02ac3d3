"""While a run draws its class images, its progress carries a picture of the one forming."""

from __future__ import annotations

from PIL import Image

from dreamstudio.config import TrainConfig
from dreamstudio.train.trainer import train


def test_class_image_progress_carries_the_image_forming(tiny_model, small_dog_dir, tmp_path):
    seen = []
    train(TrainConfig(
        model=str(tiny_model), instance_dir=small_dog_dir, instance_prompt="a photo of sks dog",
        output_dir=tmp_path / "run", class_dir=tmp_path / "class",
        class_prompt="a photo of dog", num_class_images=2, class_image_steps=6,
        class_image_batch_size=2, steps=1, resolution=64, mixed_precision="no",
        validation_every=0, checkpoint_every=0), progress=seen.append)
    drawing = [p for p in seen if p.phase == "class_images"]
    previews = [p.preview for p in drawing if p.preview is not None]
    # 6 steps, a preview every 5: one picture, shown from step 5 until the batch is done.
    assert previews and all(isinstance(im, Image.Image) and im.size == (64, 64)
                            for im in previews)
    assert len({id(im) for im in previews}) == 1
    assert all(p.preview is None for p in seen if p.phase != "class_images")
