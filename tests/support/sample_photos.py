"""Where the DreamBooth sample photos (CC BY 4.0) used by tests and benchmarks live."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def find_datasets() -> Path:
    """$DREAMSTUDIO_DATASETS, ../shared beside the checkout, ./shared, or /work/shared (where
    a clone elsewhere on this machine finds them). The first candidate when none has them,
    so a caller can say where it looked."""
    candidates = [REPO.parent / "shared" / "datasets" / "dreambooth",
                  REPO / "shared" / "datasets" / "dreambooth",
                  Path("/work/shared/datasets/dreambooth")]
    if os.environ.get("DREAMSTUDIO_DATASETS"):
        candidates = [Path(os.environ["DREAMSTUDIO_DATASETS"])]
    for path in candidates:
        if (path / "dog").is_dir():
            return path
    return candidates[0]
