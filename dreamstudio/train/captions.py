"""Per-photo captions as training prompts: where the identifier goes into a caption.

A caption says what differs in one photo ("a dog on a sofa"), so the LoRA need not learn the
sofa as part of the subject. The rule that turns it into that photo's prompt:

1. A caption that already holds the identifier (any case, as a word) is used as it is.
2. Else the identifier goes in front of the first place the class noun stands, as a word
   or its plural: "a dog on a sofa" -> "a sks dog on a sofa", "two dogs" -> "two sks dogs".
3. Else the instance prompt goes in front: "on a sofa" -> "a photo of sks dog, on a sofa".

Photos without a caption train on the instance prompt, as without captions at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from ..data.manifest import training_captions
from ..errors import InputError
from .identifiers import split_instance_prompt
from .pivotal import expand
from .session import TrainingSession

log = logging.getLogger("dreamstudio.training")


def caption_prompt(caption: str | None, instance_prompt: str, class_prompt: str | None = None,
                   tokenizer=None) -> str:
    """The prompt a photo with `caption` trains on (see the module's rule)."""
    text = " ".join((caption or "").split())
    if not text:
        return instance_prompt
    try:
        identifier, noun = split_instance_prompt(instance_prompt, class_prompt=class_prompt,
                                                 tokenizer=tokenizer)
    except InputError:
        # No identifier to tell apart: the whole instance prompt carries the subject.
        return f"{instance_prompt}, {text}"
    if re.search(rf"(?<![\w-]){re.escape(identifier)}(?![\w-])", text, re.IGNORECASE):
        return text
    words = r"\s+".join(re.escape(w) for w in noun.split())
    found = re.search(rf"(?<![\w-]){words}(?:e?s)?(?![\w-])", text, re.IGNORECASE)
    if found:
        return f"{text[:found.start()]}{identifier} {text[found.start():]}"
    return f"{instance_prompt}, {text}"


def photo_prompts(captions: list[str | None], instance_prompt: str,
                  class_prompt: str | None = None, tokenizer=None) -> list[str]:
    """One training prompt per photo, in the photos' order."""
    return [caption_prompt(c, instance_prompt, class_prompt, tokenizer) for c in captions]


def run_captions(config) -> dict[str, str]:
    """The captions a run with `config` trains on, by crop name: none with use_captions off
    or for a folder without a manifest."""
    return training_captions(config.instance_dir) if config.use_captions else {}


def captions_digest(captions: dict[str, str]) -> str:
    """What a checkpoint records of the captions it was trained with ('' for none), so that
    a resume can tell that they were edited meanwhile."""
    if not captions:
        return ""
    text = json.dumps(captions, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def set_instance_prompts(session: TrainingSession) -> None:
    """Each photo's prompt and token ids on the session (use_captions off: all the instance
    prompt)."""
    s, cfg = session, session.config
    captions = (s.instance.captions if cfg.use_captions else []) or [None] * len(s.instance.files)
    s.captions = {p.name: c for p, c in zip(s.instance.files, captions, strict=True) if c}
    s.instance_prompts = photo_prompts(captions, cfg.instance_prompt, cfg.class_prompt,
                                       s.pipe.tokenizer)
    # With pivotal tuning the identifier is the new tokens, spelled out as the pipeline does.
    fed = [expand(s.pipe, s.prompt(p)) for p in s.instance_prompts] if s.pivotal else \
        s.instance_prompts
    # Both tokenizers' ids on SDXL (conditioning.py).
    s.instance_ids = s.text.tokenize(fed).to(s.device)
    if s.captions:
        log.info("captions: %d of %d photos train on their own prompt: %s", len(s.captions),
                 len(captions), sorted(set(captioned_prompts(s).values())))


def captioned_prompts(session: TrainingSession) -> dict[str, str]:
    """The prompt each captioned photo trains on, by crop name (info.json records it)."""
    return {p.name: prompt for p, prompt in zip(session.instance.files,
                                                session.instance_prompts, strict=True)
            if p.name in session.captions}
