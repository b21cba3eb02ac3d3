"""Pivotal tuning: the identifier becomes new tokens whose embedding trains with the LoRA.

A rare token still means something to the base model; new tokens start from it and then
move to wherever the subject is best described, so the LoRA has less to learn (it helps most
with faces and subjects unlike anything the base model knows).

Naming: the identifier `sks` gets the token `<sks>`, and with several vectors `<sks>_1`,
`<sks>_2`, ... – diffusers' own multi-vector convention, so `load_textual_inversion(file)`
gives the same tokens and a prompt with `<sks>` expands to all of them. `pivotal_prompt` is
the one rewrite of a prompt, used by training and generation alike: the identifier (a whole
word, any case) becomes `<sks>` (lora/embeddings.py, shared with the generator), and diffusers' `maybe_convert_prompt` expands it (the
pipeline does that itself inside `encode_prompt`; tokenizing by hand needs `expand`).

Initialisation: every new row starts as the mean of the identifier's own token embeddings,
so at step 0 a one-token identifier reads exactly as in plain DreamBooth.

On SDXL the tokens go into both tokenizers, and each text encoder gets its own new rows
(`rows`, `rows_2`), each initialised from that encoder's embedding of the identifier; both
train with the same learning rate and stop at the same step.

Only the new rows train: they are a separate parameter (`PivotalEmbedding.rows`) spliced in
after the frozen lookup, so the optimizer (and its weight decay) never sees the other rows,
which stay bit-identical to the base model's.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import InputError
from ..lora.embeddings import loaded_tokens, pivotal_prompt


def token_names(identifier: str, count: int) -> list[str]:
    """['<sks>', '<sks>_1', ...]: lower case, since CLIP's tokenizer lowercases the text it
    matches added tokens against."""
    return loaded_tokens(f"<{identifier.casefold()}>", count)


def expand(pipe, prompt: str) -> str:
    """What the pipeline's encode_prompt feeds its tokenizer: multi-vector tokens spelt out."""
    return pipe.maybe_convert_prompt(prompt, pipe.tokenizer)


class PivotalEmbedding(nn.Module):
    """The text encoder's token embedding with trainable rows for ids from `start` on."""

    def __init__(self, base: nn.Embedding, start: int, init: torch.Tensor):
        super().__init__()
        self.base, self.start = base, start
        self.rows = nn.Parameter(init.detach().clone().float())
        self.training_rows = True  # off after pivotal_stop: the rows then stay as they are

    @property
    def weight(self) -> torch.Tensor:
        # transformers reads the input embedding's weight (dtype, size) in places.
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids)
        new = ids >= self.start
        if not new.any():
            return out
        rows = self.rows if self.training_rows else self.rows.detach()
        picked = rows[(ids - self.start).clamp(0, len(rows) - 1)].to(out.dtype)
        return torch.where(new.unsqueeze(-1), picked, out)


class PivotalTokens:
    """The new tokens of one run, attached to its tokenizer(s) and text encoder(s)
    (`embedding_2`: SDXL's second text encoder, None off SDXL)."""

    def __init__(self, identifier: str, tokens: list[str], embedding: PivotalEmbedding,
                 embedding_2: PivotalEmbedding | None = None):
        self.identifier, self.tokens, self.embedding = identifier, tokens, embedding
        self.embedding_2 = embedding_2

    @property
    def token(self) -> str:
        return self.tokens[0]

    @property
    def rows(self) -> nn.Parameter:
        return self.embedding.rows

    @property
    def rows_2(self) -> nn.Parameter | None:
        return self.embedding_2.rows if self.embedding_2 is not None else None

    def parameters(self) -> list[nn.Parameter]:
        """The trainable rows, the first text encoder's first."""
        return [e.rows for e in self.embeddings()]

    def embeddings(self) -> list[PivotalEmbedding]:
        return [e for e in (self.embedding, self.embedding_2) if e is not None]

    def prompt(self, text: str) -> str:
        return pivotal_prompt(text, self.identifier, self.token)

    def set_step(self, step: int, steps: int, stop: float) -> None:
        """Train the rows during the first `stop` fraction of `steps` steps only."""
        for embedding in self.embeddings():
            embedding.training_rows = step < round(stop * steps)


def _refuse_no_identifier(identifier: str, prompt: str) -> None:
    if not identifier or identifier.strip() == prompt.strip() or re.search(r"\s", identifier):
        raise InputError(
            f"Pivotal tuning needs an identifier in the instance prompt '{prompt}' (e.g. "
            "'a photo of sks dog'); give the prompt one, or turn pivotal tuning off."
        )


def _refuse_taken(tokenizer, tokens: list[str], added: int | None = None) -> None:
    """InputError when a token is in the tokenizer already (or `added` says not all went in)."""
    taken = [t for t in tokens if t in tokenizer.get_vocab()] if added is None else []
    if taken or (added is not None and added != len(tokens)):
        raise InputError(f"The tokens {taken or tokens} already exist in the base model's "
                         "tokenizer; pick another identifier for pivotal tuning.")


def _new_rows(tokenizer, text_encoder, identifier: str, count: int) -> PivotalEmbedding:
    """Resize `text_encoder`'s embedding to `tokenizer` (the tokens added) and splice in the
    trainable rows, each the mean of this encoder's embedding of the identifier."""
    base = text_encoder.get_input_embeddings()
    start = base.num_embeddings
    ids = tokenizer(identifier, add_special_tokens=False).input_ids
    with torch.no_grad():
        init = base.weight[ids].float().mean(0).expand(count, -1)
    # mean_resizing would draw random rows (and cost a covariance); they are set right after.
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    resized = text_encoder.get_input_embeddings()
    with torch.no_grad():
        resized.weight[start:] = init.to(resized.weight.dtype)
    resized.requires_grad_(False)
    embedding = PivotalEmbedding(resized, start, init)
    text_encoder.set_input_embeddings(embedding)
    return embedding


def attach_pivotal(tokenizer, text_encoder, identifier: str, count: int, prompt: str,
                   tokenizer_2=None, text_encoder_2=None) -> PivotalTokens:
    """Add `count` tokens for `identifier` (found in `prompt`) and make only their embedding
    rows trainable (on SDXL, given `tokenizer_2` and `text_encoder_2`, in both); InputError
    when the prompt has no identifier or the tokens exist."""
    _refuse_no_identifier(identifier, prompt)
    tokens = token_names(identifier, count)
    pairs = [(tokenizer, text_encoder)]
    if text_encoder_2 is not None:
        pairs.append((tokenizer_2, text_encoder_2))
    # One tokenizer object may serve both encoders: its tokens are added once.
    tokenizers = list({id(tok): tok for tok, _ in pairs}.values())
    for tok in tokenizers:  # refused before any tokenizer or encoder changes
        _refuse_taken(tok, tokens)
    for tok in tokenizers:
        _refuse_taken(tok, tokens, tok.add_tokens(tokens))
    return PivotalTokens(identifier, tokens,
                         *[_new_rows(tok, encoder, identifier, count) for tok, encoder in pairs])


def _cpu(rows: torch.Tensor | None) -> torch.Tensor | None:
    return None if rows is None else rows.detach().to("cpu", torch.float32).contiguous()


def trained_rows(pivotal: PivotalTokens) -> torch.Tensor:
    """The new tokens' embedding as it stands: [count, dim], float32 on the CPU."""
    return _cpu(pivotal.rows)


def trained_rows_2(pivotal: PivotalTokens) -> torch.Tensor | None:
    """The same in SDXL's second text encoder; None off SDXL."""
    return _cpu(pivotal.rows_2)
