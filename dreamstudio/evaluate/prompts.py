"""The DreamBooth paper's evaluation prompts and subject classes (Ruiz et al. 2022, 2208.12242).

Copied from the dataset's `prompts_and_classes.txt` so the app works without that folder.
Templates use `{0}` for the unique identifier and `{1}` for the class noun, as in the file.
"""

from __future__ import annotations

import re

from ..errors import InputError

# Dataset subject folder -> the class noun the paper used for it.
SUBJECT_CLASSES: dict[str, str] = {
    "backpack": "backpack",
    "backpack_dog": "backpack",
    "bear_plushie": "stuffed animal",
    "berry_bowl": "bowl",
    "can": "can",
    "candle": "candle",
    "cat": "cat",
    "cat2": "cat",
    "clock": "clock",
    "colorful_sneaker": "sneaker",
    "dog": "dog",
    "dog2": "dog",
    "dog3": "dog",
    "dog5": "dog",
    "dog6": "dog",
    "dog7": "dog",
    "dog8": "dog",
    "duck_toy": "toy",
    "fancy_boot": "boot",
    "grey_sloth_plushie": "stuffed animal",
    "monster_toy": "toy",
    "pink_sunglasses": "glasses",
    "poop_emoji": "toy",
    "rc_car": "toy",
    "red_cartoon": "cartoon",
    "robot_toy": "toy",
    "shiny_sneaker": "sneaker",
    "teapot": "teapot",
    "vase": "vase",
    "wolf_plushie": "stuffed animal",
}

# The paper's live subjects: the classes that get the live-subject prompt list.
PAPER_LIVE_CLASSES: frozenset[str] = frozenset({"cat", "dog"})

# The app also teaches people (face crops); outfits and hats suit them as they suit pets,
# so these nouns pick the live list too when no kind is given. Explicit kinds always win.
PERSON_CLASSES: frozenset[str] = frozenset({
    "person", "man", "woman", "boy", "girl", "child", "kid", "baby", "guy", "lady",
})
LIVE_CLASSES: frozenset[str] = PAPER_LIVE_CLASSES | PERSON_CLASSES | frozenset({
    "puppy", "kitten", "animal", "pet", "horse", "bird", "rabbit", "bunny",
})

KINDS = ("object", "live")

_SHARED_START = (
    "a {0} {1} in the jungle",
    "a {0} {1} in the snow",
    "a {0} {1} on the beach",
    "a {0} {1} on a cobblestone street",
    "a {0} {1} on top of pink fabric",
    "a {0} {1} on top of a wooden floor",
    "a {0} {1} with a city in the background",
    "a {0} {1} with a mountain in the background",
    "a {0} {1} with a blue house in the background",
    "a {0} {1} on top of a purple rug in a forest",
)
_SHARED_END = (
    "a red {0} {1}",
    "a purple {0} {1}",
    "a shiny {0} {1}",
    "a wet {0} {1}",
    "a cube shaped {0} {1}",
)

OBJECT_PROMPTS: tuple[str, ...] = _SHARED_START + (
    "a {0} {1} with a wheat field in the background",
    "a {0} {1} with a tree and autumn leaves in the background",
    "a {0} {1} with the Eiffel Tower in the background",
    "a {0} {1} floating on top of water",
    "a {0} {1} floating in an ocean of milk",
    "a {0} {1} on top of green grass with sunflowers around it",
    "a {0} {1} on top of a mirror",
    "a {0} {1} on top of the sidewalk in a crowded street",
    "a {0} {1} on top of a dirt road",
    "a {0} {1} on top of a white rug",
) + _SHARED_END

LIVE_PROMPTS: tuple[str, ...] = _SHARED_START + (
    "a {0} {1} wearing a red hat",
    "a {0} {1} wearing a santa hat",
    "a {0} {1} wearing a rainbow scarf",
    "a {0} {1} wearing a black top hat and a monocle",
    "a {0} {1} in a chef outfit",
    "a {0} {1} in a firefighter outfit",
    "a {0} {1} in a police outfit",
    "a {0} {1} wearing pink glasses",
    "a {0} {1} wearing a yellow shirt",
    "a {0} {1} in a purple wizard outfit",
) + _SHARED_END


def is_person(class_noun: str) -> bool:
    """Whether the class is people, whose likeness is measured by face identity too."""
    return class_noun.strip().lower() in PERSON_CLASSES


def infer_kind(class_noun: str) -> str:
    """'live' for animals and people, else 'object' (the paper: cat and dog are live)."""
    return "live" if class_noun.strip().lower() in LIVE_CLASSES else "object"


def templates_for(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise InputError(f"Evaluation kind must be 'object' or 'live' (got {kind!r}).")
    return LIVE_PROMPTS if kind == "live" else OBJECT_PROMPTS


def _squash(text: str) -> str:
    return " ".join(text.split())


def fill(template: str, identifier: str, class_noun: str) -> str:
    """A template with `{0}`/`{1}` filled in; any other text is returned as it is."""
    if "{0}" not in template and "{1}" not in template:
        return _squash(template)
    # replace() rather than format(): a user's own prompt may contain other braces.
    return _squash(template.replace("{0}", identifier).replace("{1}", class_noun))


def without_identifier(prompt: str, identifier: str) -> str:
    """`prompt` with the identifier dropped: templates lose `{0}`, plain text the word."""
    if "{0}" in prompt:
        return _squash(prompt.replace("{0}", ""))
    if not identifier:
        return _squash(prompt)
    # Whole words only, so an identifier like "sks" leaves a word like "sksa" alone.
    # Any case: 'a SKS dog' was trained as the same token as 'sks' (CLIP lowercases).
    return _squash(re.sub(rf"(?<!\S){re.escape(identifier)}(?!\S)", " ", prompt,
                          flags=re.IGNORECASE))
