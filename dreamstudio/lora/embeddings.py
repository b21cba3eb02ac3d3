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

On SDXL the token has rows in both text encoders' embeddings, and both files hold
`{"clip_l": [n, 768], "clip_g": [n, 1280]}` (text encoder 1's rows, then 2's): the SDXL
embedding format A1111, Forge and ComfyUI read, and the one diffusers' SDXL textual
inversion loads, one tensor per text encoder (`load_embedding` does both).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.families import SDXL, is_sdxl
from ..core.files import atomic_path

EMBEDDING_DIR = "embedding"
DIFFUSERS_EMBEDDING = "learned_embeds.safetensors"
A1111_KEY = "emb_params"
# SDXL embeddings' tensor per text encoder, as A1111 / ComfyUI name them.
SDXL_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
_TOKENIZERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


def a1111_name(identifier: str) -> str:
    return (re.sub(r"[^\w-]+", "_", identifier.casefold()).strip("_") or "subject") \
        + ".safetensors"


def _cpu(rows: torch.Tensor) -> torch.Tensor:
    return rows.detach().to("cpu", torch.float32).contiguous()


def save_embedding(lora_dir: Path, token: str, identifier: str, rows: torch.Tensor,
                   rows_2: torch.Tensor | None = None) -> dict:
    """Write both files atomically; the record to keep under "pivotal" in the LoRA's info.
    `rows_2` are the token's rows in SDXL's second text encoder (None off SDXL): both files
    are then the SDXL format, and the record says "sdxl"."""
    folder = Path(lora_dir) / EMBEDDING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = {"diffusers_file": f"{EMBEDDING_DIR}/{DIFFUSERS_EMBEDDING}",
             "a1111_file": f"{EMBEDDING_DIR}/{a1111_name(identifier)}"}
    if rows_2 is None:
        contents = {"diffusers_file": {token: _cpu(rows)}, "a1111_file": {A1111_KEY: _cpu(rows)}}
    else:
        if rows.shape[0] != rows_2.shape[0]:
            raise ValueError(f"the token has {rows.shape[0]} rows in text encoder 1 but "
                             f"{rows_2.shape[0]} in text encoder 2: they must match")
        pair = {SDXL_KEYS["text_encoder"]: _cpu(rows), SDXL_KEYS["text_encoder_2"]: _cpu(rows_2)}
        contents = {name: {k: v.clone() for k, v in pair.items()} for name in files}
    for name, rel in files.items():
        with atomic_path(Path(lora_dir) / rel) as tmp:
            save_file(contents[name], str(tmp), metadata={"token": token})
    record = {"identifier": identifier, "token": token, "vectors": int(rows.shape[0]), **files}
    return record | ({"family": SDXL} if rows_2 is not None else {})


def embedding_record(info: dict) -> dict | None:
    """The "pivotal" record of a LoRA's info, None for a LoRA without an embedding."""
    record = info.get("pivotal")
    return record if isinstance(record, dict) and record.get("token") else None


def embedding_path(lora_dir: Path, record: dict) -> Path:
    return Path(lora_dir) / record.get("diffusers_file", f"{EMBEDDING_DIR}/{DIFFUSERS_EMBEDDING}")


def read_embeddings(lora_dir: Path, record: dict) -> dict[str, torch.Tensor]:
    """The [n, dim] rows of the diffusers file per text encoder: {"text_encoder": rows}, and
    on SDXL "text_encoder_2" too."""
    tensors = load_file(str(embedding_path(lora_dir, record)))
    if SDXL_KEYS["text_encoder"] in tensors:
        return {component: tensors[key] for component, key in SDXL_KEYS.items()}
    return {"text_encoder": next(iter(tensors.values()))}


def read_embedding(lora_dir: Path, record: dict) -> torch.Tensor:
    """The [n, dim] rows of the diffusers file (the first text encoder's on SDXL)."""
    return read_embeddings(lora_dir, record)["text_encoder"]


def load_embedding(pipe, lora_dir: Path, record: dict) -> None:
    """Add the LoRA's tokens to `pipe`: every text encoder with rows in the file gets them,
    in its tokenizer (diffusers' load_textual_inversion, once per text encoder)."""
    for component, rows in read_embeddings(lora_dir, record).items():
        pipe.load_textual_inversion(rows, token=record["token"],
                                    text_encoder=getattr(pipe, component),
                                    tokenizer=getattr(pipe, _TOKENIZERS[component]))


def unload_embedding(pipe, record: dict) -> None:
    """Back to each text encoder's base tokenizer and embedding matrix."""
    tokens = loaded_tokens(record["token"], record.get("vectors", 1))
    components = list(SDXL_KEYS) if is_sdxl(record.get("family")) else ["text_encoder"]
    for component in components:
        pipe.unload_textual_inversion(tokens, text_encoder=getattr(pipe, component),
                                      tokenizer=getattr(pipe, _TOKENIZERS[component]))


def loaded_tokens(token: str, vectors: int) -> list[str]:
    """The tokens diffusers adds for a `vectors`-row embedding named `token`."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def pivotal_prompt(prompt: str, identifier: str, token: str) -> str:
    """The one rewrite of a prompt for a pivotal-tuned LoRA, in training and generation:
    each whole-word `identifier` (any case) becomes `token`; a `<sks>` already typed stays.
    diffusers' `maybe_convert_prompt` then spells out the multi-vector tokens."""
    pattern = rf"(?<![\w<]){re.escape(identifier)}(?![\w>])"
    return re.sub(pattern, token, prompt, flags=re.IGNORECASE)
