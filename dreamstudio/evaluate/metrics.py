"""The DreamBooth paper's fidelity metrics on embeddings (Ruiz et al. 2022, section 4.1).

Subject fidelity (DINO, CLIP-I): mean cosine similarity over every (generated, real) pair.
Prompt fidelity (CLIP-T): mean cosine similarity between each image and its own prompt.
Leak: subject fidelity (DINO) of images drawn from the class prompt without the identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReferenceRow:
    name: str
    dino: float
    clip_i: float
    clip_t: float | None  # None where the paper reports n/a


# Table 1 of the paper (30 subjects x 25 prompts x 4 images). "Real images" compares real
# photos of a subject with each other: the ceiling for the subject-fidelity columns.
PAPER_REFERENCE: tuple[ReferenceRow, ...] = (
    ReferenceRow("Real images (paper)", 0.774, 0.885, None),
    ReferenceRow("DreamBooth, Imagen (paper)", 0.696, 0.812, 0.306),
    ReferenceRow("DreamBooth, Stable Diffusion (paper)", 0.668, 0.803, 0.305),
    ReferenceRow("Textual Inversion, Stable Diffusion (paper)", 0.569, 0.780, 0.255),
)


def _as_matrix(emb: torch.Tensor, name: str) -> torch.Tensor:
    emb = torch.as_tensor(emb)
    if emb.ndim == 1:
        emb = emb.unsqueeze(0)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty N x D matrix (got {tuple(emb.shape)}).")
    # float64 so a mean over thousands of pairs does not depend on summation order.
    return F.normalize(emb.detach().to("cpu", torch.float64), dim=-1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of `a` with every row of `b` (N x M)."""
    a, b = _as_matrix(a, "first embeddings"), _as_matrix(b, "second embeddings")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}.")
    return a @ b.T


def subject_fidelity(gen_emb: torch.Tensor, real_emb: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of generated vs real image embeddings (DINO, CLIP-I)."""
    return float(cosine_matrix(gen_emb, real_emb).mean())


def self_similarity(emb: torch.Tensor) -> float | None:
    """Mean cosine similarity over distinct pairs of one set (the paper's 'real images' row).

    None for fewer than two embeddings, where there is no pair.
    """
    sims = cosine_matrix(emb, emb)
    n = sims.shape[0]
    if n < 2:
        return None
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    return float(sims[off_diagonal].mean())


def prompt_fidelity(img_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Mean cosine similarity of image i with text i (CLIP-T); rows are paired, not crossed."""
    img, text = _as_matrix(img_emb, "image embeddings"), _as_matrix(text_emb, "text embeddings")
    if img.shape != text.shape:
        raise ValueError(
            f"image and text embeddings must pair up row by row (got {tuple(img.shape)} "
            f"and {tuple(text.shape)})."
        )
    return float((img * text).sum(dim=-1).mean())


# How far a LoRA's leak may rise above the base model's before it is flagged, in DINO cosine
# units. Compared with the base model rather than a fixed level, because a common breed or a
# plain object already looks somewhat like the subject without any LoRA; the margin is a
# judgement call, so every caller can pass its own.
DEFAULT_LEAK_MARGIN = 0.05


def leak_score(class_emb: torch.Tensor, subject_emb: torch.Tensor) -> float:
    """The paper's prior-preservation check: mean DINO similarity of images drawn from the
    class prompt without the identifier ("a photo of a dog") to the subject's photos."""
    return subject_fidelity(class_emb, subject_emb)


def leak_flagged(lora_leak: float, base_leak: float,
                 margin: float = DEFAULT_LEAK_MARGIN) -> bool:
    """Whether a LoRA's leak exceeds the base model's by more than `margin`."""
    if margin < 0:
        raise ValueError(f"the leak margin must be 0 or more (got {margin}).")
    return lora_leak - base_leak > margin
