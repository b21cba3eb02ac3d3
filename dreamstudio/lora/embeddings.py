"""The token embedding of a pivotal-tuned LoRA on disk, beside its weights.

Two files in the LoRA's `embedding/` folder (a folder of its own, so the run folder keeps
one .safetensors for the kohya export beside the diffusers weights):
- `learned_embeds.safetensors`, diffusers' textual-inversion format `{"<sks>": [n, dim]}`:
  `pipe.load_textual_inversion(path)` adds `<sks>`, `<sks>_1`, ... and expands `<sks>` in
  a prompt to all of them;
- `<identifier>.safetensors`, `{"emb_params": [n, dim]}`, what A1111, Forge and ComfyUI read
  from their embeddings folder; A1111 matches the file's name in the prompt, so the
  training prompt ('a photo of sks dog') works there as it is.
The LoRA's record (`dreamstudio_lora.json`) names both under "pivotal".
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.files import atomic_path

EMBEDDING_DIR = "embedding"
DIFFUSERS_EMBEDDING = "learned_embeds.safetensors"
A1111_KEY = "emb_params"


def a1111_name(identifier: str) -> str:
    return (re.sub(r"[^\w-]+", "_", identifier.casefold()).strip("_") or "subject") \
        + ".safetensors"


def save_embedding(lora_dir: Path, token: str, identifier: str, rows: torch.Tensor) -> dict:
    """Write both files atomically; the record to keep under "pivotal" in the LoRA's info."""
    folder = Path(lora_dir) / EMBEDDING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows.detach().to("cpu", torch.float32).contiguous()
    files = {"diffusers_file": f"{EMBEDDING_DIR}/{DIFFUSERS_EMBEDDING}",
             "a1111_file": f"{EMBEDDING_DIR}/{a1111_name(identifier)}"}
    for key, rel in ((token, files["diffusers_file"]), (A1111_KEY, files["a1111_file"])):
        with atomic_path(Path(lora_dir) / rel) as tmp:
            save_file({key: rows.clone()}, str(tmp), metadata={"token": token})
    return {"identifier": identifier, "token": token, "vectors": int(rows.shape[0]), **files}


def embedding_record(info: dict) -> dict | None:
    """The "pivotal" record of a LoRA's info, None for a LoRA without an embedding."""
    record = info.get("pivotal")
    return record if isinstance(record, dict) and record.get("token") else None


def embedding_path(lora_dir: Path, record: dict) -> Path:
    return Path(lora_dir) / record.get("diffusers_file", f"{EMBEDDING_DIR}/{DIFFUSERS_EMBEDDING}")


def read_embedding(lora_dir: Path, record: dict) -> torch.Tensor:
    """The [n, dim] rows of the diffusers file."""
    return next(iter(load_file(str(embedding_path(lora_dir, record))).values()))


def loaded_tokens(token: str, vectors: int) -> list[str]:
    """The tokens diffusers adds for a `vectors`-row embedding named `token`."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def pivotal_prompt(prompt: str, identifier: str, token: str) -> str:
    """The one rewrite of a prompt for a pivotal-tuned LoRA, in training and generation:
    each whole-word `identifier` (any case) becomes `token`; a `<sks>` already typed stays.
    diffusers' `maybe_convert_prompt` then spells out the multi-vector tokens."""
    pattern = rf"(?<![\w<]){re.escape(identifier)}(?![\w>])"
    return re.sub(pattern, token, prompt, flags=re.IGNORECASE)
