"""The checks every config uses: one-line InputErrors, seeds, paths, defaults by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import InputError

# Seeds past 2**63 overflow torch's generators; below it, the per-image and per-process
# offsets added to a seed stay within what torch.manual_seed takes (up to 2**64 - 1).
MAX_SEED = 2**63 - 1


def check(condition: bool, message: str) -> None:
    """Raise InputError(message) unless `condition`: the one-line validation of configs."""
    if not condition:
        raise InputError(message)


def check_seed(seed: int) -> None:
    check(0 <= seed <= MAX_SEED,
          f"seed must be a whole number from 0 to {MAX_SEED} (got {seed}).")


def check_not_a_file(path: Path | None, what: str, flag: str) -> None:
    """Refuse a folder setting that names an existing file: making it fails later, obscurely."""
    check(path is None or not path.exists() or path.is_dir(),
          f"{what} {path} is a file, not a folder: give {flag} a folder path (it is "
          "created if missing).")


def default_of(config_class: type, name: str):
    """The default of field `name` of a config dataclass, for callers that need it before
    they have a config (a widget, a CLI option): so that no default is ever written twice."""
    for spec in dataclasses.fields(config_class):
        if spec.name != name:
            continue
        if spec.default is not dataclasses.MISSING:
            return spec.default
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        raise ValueError(f"{config_class.__name__}.{name} has no default")
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def as_path(value) -> Path | None:
    return None if value in (None, "") else Path(value).expanduser()


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
