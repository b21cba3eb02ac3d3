"""The subject's identifier: a rare token of the base model's own text encoder.

DreamBooth (Ruiz et al. 2022, section 3.2) binds the subject to a rare token so that it
carries little prior meaning the fine-tuning must first overwrite: a common word ("dog")
drags its meaning into every image, and a made-up word the tokenizer splits into several
pieces ("xqzv" -> "x", "qz", "v") is a mix of pieces that each mean something. For CLIP's
byte-pair vocabulary a token's id is its merge rank, so high ids are the rare tokens.

Only the tokenizer is loaded (a few MB, well under a second), never the model. SDXL has
two text encoders with a tokenizer each: an identifier must stay one token in both.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..core.architectures import checkpoint_tokenizers, uses_shipped_config
from ..core.models import DEFAULT_MODEL, describe_source
from ..errors import InputError, ModelLoadError
from ..evaluate.prompts import SUBJECT_CLASSES

PROMPT_TEMPLATE = "a photo of {}"
WORD_END = "</w>"  # CLIP's marker of a token that ends a word
# Token ids as fractions of the vocabulary (for CLIP's 49,408 tokens: common below ~9,900,
# suggestions from ~39,500 up, i.e. the last fifth of the merges).
COMMON_FRACTION = 0.2
RARE_FRACTION = 0.8
SUGGEST_LENGTHS = (2, 4)

# Everyday short English words: common whatever their token rank says.
_COMMON_WORDS_TEXT = """
a an the of to in on at by for from with as is are was were be been am do does did done
has have had not no yes and or but if so than then this that these those it its he she
we you they me him her us them my your our their his who what when where why how all any
each few more most some such one two six ten new old big small good bad best top hot cold
red blue pink gold dark light man men boy girl baby kid kids lady guy dog dogs cat cats
pet toy toys car bus box bag cup mug hat cap bed sofa door wall road tree leaf rock sand
sea sky sun moon star fire ice snow rain wind air day year time life love home face eye
eyes hand head hair arm leg foot feet body skin nose ear lip lips art book film shot pic
pics view city town shop park farm zoo lake hill bird fish duck cow pig bear lion wolf fox
deer frog owl bee ant rat cake food milk tea wine beer meat egg rice corn bean pie bun
play game team king queen lord god war gun guns law job work fun joy pain hope fear look
make take give get got go went come came see saw say said know tell want need like feel
keep let put run sit eat buy pay win lose open shut stop move turn show help call ask
try use very much many well just only also even back down up out off over into onto
here there now soon ever next last long tall wide high low near far free full real
true fake nice cute cool fine easy hard soft warm wet dry raw rich poor sick dead live
photo photos picture image portrait painting drawing close closeup
"""
COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())

# Never suggested: slurs, sexual, drug and violent words, as whole tokens or inside one.
_BLOCKED = ("nig", "fag", "jap", "kkk", "klan", "nazi", "kike", "spic", "gook", "coon",
            "dyk", "homo", "gay", "sex", "porn", "milf", "lewd", "nip", "cum", "cock", "dick",
            "tit", "cunt", "slut", "whor", "rape", "fck", "fuk", "fuc", "shit", "stfu", "wtf",
            "ass", "lsd", "thc", "weed", "kill", "gun", "isis")
_ALPHA = re.compile(r"^[a-z]+$")


def compose_prompts(identifier: str, class_noun: str,
                    template: str = PROMPT_TEMPLATE) -> tuple[str, str]:
    """('a photo of sks dog', 'a photo of dog'): the instance and the class prompt."""
    identifier, noun = (identifier or "").strip(), (class_noun or "").strip()
    # No identifier, no instance prompt: "a photo of dog" would retrain the whole class.
    return (template.format(f"{identifier} {noun}".strip()) if identifier else "",
            template.format(noun) if noun else "")


def class_noun_of(class_prompt: str | None) -> str:
    """'a photo of a person' -> 'person': the noun phrase of a class prompt."""
    text = (class_prompt or "").strip()
    prefix = PROMPT_TEMPLATE.format("")
    if text.lower().startswith(prefix):
        text = text[len(prefix):]
    words = text.split()
    if len(words) > 1 and words[0].lower() in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def parse_template_prompt(prompt: str | None) -> tuple[str, str] | None:
    """The inverse of compose_prompts: 'a photo of sks dog' -> ('sks', 'dog'); None if the
    prompt is not of that form (the Train form then leaves its fields alone)."""
    text = (prompt or "").strip()
    prefix = PROMPT_TEMPLATE.format("")
    if not text.lower().startswith(prefix):
        return None
    words = text[len(prefix):].split()
    return (words[0], " ".join(words[1:])) if len(words) >= 2 else None


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s-]", " ", text).split()


def _rarity(tokenizer, word: str) -> int:
    # A token's id is its merge rank: the highest id among a word's pieces is its rarest.
    return max(_encode(tokenizer, word.lower()), default=-1)


def find_identifier(instance_prompt: str, class_prompt: str | None = None,
                    tokenizer=None) -> str | None:
    """The identifier of a training prompt, as written there ('a SKS dog' -> 'SKS').

    It is a word the class prompt lacks (compared whatever the case) and no everyday word;
    of those, the rarest token to `tokenizer`, or without one the first that has a word
    after it (the class noun follows the identifier). None if the prompt has no such word.
    """
    words = _words(instance_prompt or "")
    known = {w.casefold() for w in _words(class_prompt or "")}
    candidates = [i for i, w in enumerate(words)
                  if w.casefold() not in known and w.lower() not in COMMON_WORDS]
    if not candidates:
        return None
    if tokenizer is not None:
        return words[max(candidates, key=lambda i: (_rarity(tokenizer, words[i]), -i))]
    followed = [i for i in candidates if i + 1 < len(words)]
    return words[(followed or candidates)[0]]


def _class_noun_after(words: list[str], at: int, class_prompt: str | None) -> str | None:
    """The class noun that follows the identifier at words[at], as written there."""
    rest = words[at + 1:]
    lowered = [w.lower() for w in rest]
    candidates = []
    if class_prompt:
        class_words = _words(class_prompt)
        shared = 0
        while (shared < min(len(words), len(class_words))
               and words[shared].lower() == class_words[shared].lower()):
            shared += 1
        candidates.append(" ".join(class_words[shared:]))
    multi_word = {c for c in SUBJECT_CLASSES.values() if " " in c}
    candidates += sorted(multi_word, key=len, reverse=True)
    for candidate in candidates:
        noun = [w.lower() for w in _words(candidate)]
        if noun and lowered[:len(noun)] == noun:
            return " ".join(rest[:len(noun)])
    return rest[0] if rest else None


def split_instance_prompt(
    instance_prompt: str, class_noun: str | None = None, class_prompt: str | None = None,
    identifier: str | None = None, tokenizer=None,
) -> tuple[str, str]:
    """(identifier, class noun) of a training prompt such as 'a photo of sks dog'.

    The identifier is `identifier` if the prompt has that word (any case; e.g. the one
    recorded with a LoRA), else find_identifier's. The class noun is `class_noun` if given,
    else what follows the identifier: what the class prompt adds to the words both prompts
    share ('a photo of dog' -> 'dog'), a known multi-word class ('stuffed animal'), or the
    next word.
    """
    words = _words(instance_prompt)
    lowered = [w.casefold() for w in words]
    hint = (identifier or "").strip().casefold()
    if not hint or hint not in lowered or hint in COMMON_WORDS:
        found = find_identifier(instance_prompt, class_prompt, tokenizer)
        hint = found.casefold() if found else ""
    at = lowered.index(hint) if hint else None
    noun = class_noun or (_class_noun_after(words, at, class_prompt) if at is not None
                          else None)
    if at is not None and noun:
        return words[at], noun
    if class_noun:
        raise InputError(
            f"Cannot find an identifier before the class noun '{class_noun}' in the training "
            f"prompt '{instance_prompt}'. Give the identifier too (e.g. --identifier sks)."
        )
    raise InputError(
        f"Cannot tell the identifier and the class noun apart in the training prompt "
        f"'{instance_prompt}'. Give them explicitly (e.g. --identifier sks --class-noun dog)."
    )


def identifier_of(instance_prompt: str, class_prompt: str | None = None,
                  tokenizer=None) -> str:
    """The identifier recorded with a LoRA; the whole prompt if none can be told apart."""
    return find_identifier(instance_prompt, class_prompt, tokenizer) or instance_prompt


def refuse_identifier_in_class_prompt(instance_prompt: str, class_prompt: str | None,
                                      tokenizer=None) -> None:
    """Refuse a class prompt that holds the instance prompt's identifier (any case): the
    class images would then be drawn, and trained, as the subject itself."""
    identifier = find_identifier(instance_prompt, None, tokenizer) if class_prompt else None
    if not identifier or identifier.casefold() not in {
            w.casefold() for w in _words(class_prompt)}:
        return
    plain = " ".join(w for w in class_prompt.split()
                     if re.sub(r"[^\w-]", "", w).casefold() != identifier.casefold())
    raise InputError(
        f"The class prompt '{class_prompt}' contains the identifier '{identifier}' of the "
        f"instance prompt, which defeats prior preservation (the class images would be "
        f"learnt as the subject). Leave it out, e.g. '{plain}'."
    )


def tokenizer_source(model: str, model_config_dir: str | None = None) -> str:
    """Where the tokenizer of `model` lives: the folder or Hub id itself, or for a single
    checkpoint file the config folder given with it."""
    if describe_source(model) == "file":
        return model_config_dir or DEFAULT_MODEL
    return str(Path(model).expanduser()) if describe_source(model) == "folder" else model


def _tokenizer_folders(source: str) -> tuple[str, ...]:
    """The tokenizer subfolders of a diffusers folder or Hub id: SDXL's second encoder has
    its own, tokenizer_2 (named in model_index.json)."""
    from ..core.families import hub_family, is_sdxl

    folder = Path(source).expanduser()
    if folder.is_dir():
        second = (folder / "tokenizer_2").is_dir()
    else:
        second = is_sdxl(hub_family(source))
    return ("tokenizer", "tokenizer_2") if second else ("tokenizer",)


def load_tokenizers(model: str, model_config_dir: str | None = None) -> list:
    """The base model's CLIP tokenizers alone (no weights): one, or SDXL's two."""
    from transformers import CLIPTokenizer

    if describe_source(model) == "file" and uses_shipped_config(model_config_dir):
        return checkpoint_tokenizers(Path(model).expanduser(), model_config_dir)
    source = tokenizer_source(model, model_config_dir)
    tokenizers = []
    try:
        for subfolder in _tokenizer_folders(source):
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder=subfolder)
            # transformers 5 quietly builds an empty tokenizer from a folder without vocab
            # files.
            if len(tokenizer) < 1000:
                raise ValueError(f"no vocabulary in {source}/{subfolder}")
            tokenizers.append(tokenizer)
        return tokenizers
    except Exception as exc:  # offline Hub, missing folder, damaged files: one message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"The tokenizer of the base model could not be loaded from '{source}' ({detail}), "
            "so identifiers cannot be checked. Training still works; with a single-file "
            "checkpoint, pass a diffusers config folder (it has tokenizer/) to check them."
        ) from exc


def load_tokenizer(model: str, model_config_dir: str | None = None):
    """The base model's (first) CLIP tokenizer alone (no weights)."""
    return load_tokenizers(model, model_config_dir)[0]


@dataclass
class IdentifierCheck:
    identifier: str
    tokens: list[str]  # as the text encoder sees them, without the word-end marker
    token_ids: list[int]
    vocab_size: int
    instance_prompt: str
    class_prompt: str
    common: bool = False  # a frequent token or an everyday word: it already means something
    warnings: list[str] = field(default_factory=list)

    @property
    def single_token(self) -> bool:
        return len(self.token_ids) == 1

    @property
    def ok(self) -> bool:
        return bool(self.identifier) and not self.warnings


def _encode(tokenizer, word: str) -> list[int]:
    return list(tokenizer(word, add_special_tokens=False)["input_ids"])


def _common_below(tokenizer) -> int:
    return int(len(tokenizer) * COMMON_FRACTION)


def check_identifier(tokenizer, identifier: str, class_noun: str = "",
                     template: str = PROMPT_TEMPLATE, others=()) -> IdentifierCheck:
    """How the text encoder sees `identifier`, with a warning for each way it is a poor one.
    `others` are the model's further tokenizers (SDXL's second): a split there is reported
    as well."""
    word = (identifier or "").strip()
    instance_prompt, class_prompt = compose_prompts(word, class_noun, template)
    ids = _encode(tokenizer, word) if word else []
    tokens = [t.removesuffix(WORD_END) for t in tokenizer.convert_ids_to_tokens(ids)]
    check = IdentifierCheck(word, tokens, ids, len(tokenizer), instance_prompt, class_prompt)
    warn = check.warnings.append
    if not word:
        warn("No identifier yet: type a rare word such as 'sks', or press Suggest.")
        return check
    if len(word.split()) > 1:
        warn(f"'{word}' is several words: use one word as the identifier.")
    if len(ids) > 1:
        warn(f"'{word}' becomes {len(ids)} tokens ({' + '.join(tokens)}): the subject would "
             "be tied to several pieces that each already mean something. Prefer a word "
             "that stays one token, e.g. one of the suggestions.")
    else:
        for number, other in enumerate(others, start=2):
            other_ids = _encode(other, word)
            if len(other_ids) > 1:
                pieces = [t.removesuffix(WORD_END)
                          for t in other.convert_ids_to_tokens(other_ids)]
                warn(f"'{word}' becomes {len(other_ids)} tokens ({' + '.join(pieces)}) for "
                     f"text encoder {number}: the subject would be tied to several pieces "
                     "there. Prefer a word that stays one token, e.g. one of the "
                     "suggestions.")
    if len(ids) == 1 and (word.lower() in COMMON_WORDS or ids[0] < _common_below(tokenizer)):
        check.common = True
        warn(f"'{word}' is a common word to the text encoder (token #{ids[0]} of "
             f"{len(tokenizer)}): it already means something, and training would bend that "
             "meaning. Prefer a rare token, e.g. one of the suggestions.")
    if (class_noun or "").strip() and word.lower() == class_noun.strip().lower():
        warn("The identifier and the class noun are the same word: the identifier must be "
             "a separate, rare word.")
    elif not (class_noun or "").strip():
        warn("No class noun: add what the subject is (dog, man, woman, backpack...), so the "
             "model starts from what it knows about that class.")
    return check


def _suggestable(token: str) -> bool:
    lo, hi = SUGGEST_LENGTHS
    return (lo <= len(token) <= hi and bool(_ALPHA.match(token))
            and token not in COMMON_WORDS
            and len(set(token)) > 1  # no 'zzzz', 'nnnn'
            and any(c not in "aeiou" for c in token)  # no vowels-only 'aua'
            and not any(b in token for b in _BLOCKED))


def rare_candidates(tokenizer) -> list[str]:
    """Every suggestable token: rare (top band of ids), word-final, short, alphabetic."""
    start = int(len(tokenizer) * RARE_FRACTION)
    found = []
    for token, token_id in tokenizer.get_vocab().items():
        if token_id < start or not token.endswith(WORD_END):
            continue
        text = token.removesuffix(WORD_END)
        # Typed alone, the word must come back as this very token (BPE may split it).
        if _suggestable(text) and _encode(tokenizer, text) == [token_id]:
            found.append((token_id, text))
    return [text for _, text in sorted(found)]


def suggest_identifiers(tokenizer, count: int = 5, seed: int = 0,
                        candidates: list[str] | None = None) -> list[str]:
    """`count` rare single-token identifiers, the same ones for the same seed."""
    candidates = rare_candidates(tokenizer) if candidates is None else candidates
    return random.Random(seed).sample(candidates, min(count, len(candidates)))


class IdentifierAdvisor:
    """Checks and suggestions for one base model, with its own tokenizers (loaded on first
    use, no weights); the vocabulary is scanned once (~0.2 s)."""

    def __init__(self, model: str, model_config_dir: str | None = None):
        self.model, self.model_config_dir = model, model_config_dir
        self._lock = threading.Lock()
        self._tokenizers: list | None = None
        self._candidates: list[str] | None = None

    @property
    def tokenizers(self) -> list:
        with self._lock:
            if self._tokenizers is None:
                self._tokenizers = load_tokenizers(self.model, self.model_config_dir)
            return self._tokenizers

    @property
    def tokenizer(self):
        return self.tokenizers[0]

    def check(self, identifier: str, class_noun: str) -> IdentifierCheck:
        first, *others = self.tokenizers
        return check_identifier(first, identifier, class_noun, others=others)

    def suggest(self, count: int, seed: int) -> list[str]:
        if self._candidates is None:
            first, *others = self.tokenizers
            # A suggestion stays one token for every text encoder.
            self._candidates = [word for word in rare_candidates(first)
                                if all(len(_encode(t, word)) == 1 for t in others)]
        return suggest_identifiers(self.tokenizer, count, seed, self._candidates)
