"""Config dataclasses: the one home of every default."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dreamstudio.config import GenerateConfig, TrainConfig, default_of


def test_default_of_reads_the_dataclass_field():
    assert default_of(TrainConfig, "learning_rate") == 5e-4
    assert default_of(GenerateConfig, "guidance") == 7.5

    @dataclass
    class Config:
        needed: int
        listed: list = field(default_factory=lambda: [1, 2])

    assert default_of(Config, "listed") == [1, 2]
    with pytest.raises(ValueError, match="no default"):
        default_of(Config, "needed")
    with pytest.raises(KeyError, match="no field 'steps'"):
        default_of(Config, "steps")
