"""The CLIP byte-pair vocabulary shipped with the package, and tokenizers built from it."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

CLIP_BPE = Path(__file__).parent / "model_configs" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP's own tokenizer keeps this many merges after the header line.
_MERGES = 49152 - 256 - 2


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The 49,408 tokens (in id order) and the merges of the SD 1.x / 2.x tokenizer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with gzip.open(CLIP_BPE) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : _MERGES + 1])
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return tuple(tokens), merges


def write_clip_tokenizer_files(directory: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt of the CLIP tokenizer into `directory`."""
    tokens, merges = clip_vocabulary()
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges_path.write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return vocab_path, merges_path


def clip_tokenizer(settings: dict):
    """A CLIPTokenizer from the shipped vocabulary; `settings` is a tokenizer_config.json's
    content (special tokens, model_max_length), which is where SD 1.x and 2.x differ."""
    from transformers import CLIPTokenizer

    tokens, merges = clip_vocabulary()
    keep = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(tokens)}, merges=list(merges),
        **{k: settings[k] for k in keep if k in settings},
    )
