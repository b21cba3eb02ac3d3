"""Tiny DINO and CLIP scorers built in code: random weights, real classes and tokenizer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


def build_tiny_scorers(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny seeded DINO-style ViT and a tiny CLIP into `directory`; return both folders.

    Random weights, real classes and the real 49,408-token CLIP tokenizer: they load through
    DinoScorer / ClipScorer exactly like the real models, in well under a second.
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    from dreamstudio.core.clip_vocab import write_clip_tokenizer_files

    directory = Path(directory)
    dino_dir, clip_dir = directory / "tiny-dino", directory / "tiny-clip"

    torch.manual_seed(seed)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64),
                   add_pooling_layer=False)
    vit.save_pretrained(dino_dir)
    # Saved as the Hub's facebook/dino-vits16 processor is (squash, mean/std 0.5), which
    # DinoScorer must ignore for DINO's own evaluation transform.
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(dino_dir)

    torch.manual_seed(seed + 1)
    clip = CLIPModel(CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4},
        projection_dim=32,
    ))
    clip.save_pretrained(clip_dir)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(clip_dir)
    return dino_dir, clip_dir


def build_tiny_face_weights(path: Path, seed: int = 0) -> Path:
    """Save a seeded random InceptionResnetV1 state dict to `path`; FaceScorer loads it as a
    local weights file, the way a person points at downloaded VGGFace2 weights."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed)
    path = Path(path)
    network = InceptionResnetV1(pretrained=None)
    # Fresh batch-norm statistics (mean 0, variance 1) leave every embedding pointing almost
    # the same way; one pass over noise in training mode centres them, so different faces
    # get measurably different embeddings, as with trained weights.
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration pass
    network.train()
    with torch.no_grad():
        network(torch.randn(8, 3, 160, 160))
    torch.save(network.state_dict(), path)
    return path
