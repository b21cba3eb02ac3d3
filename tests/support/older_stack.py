"""An older diffusers / transformers / peft trio, for proving our LoRA files load there too.

transformers 4.x (with the diffusers and peft of its time) is what many users still run,
and it addresses the text encoder differently from our pinned 5.x. The trio is installed
once from PyPI into a folder of the user's cache (about 180 MB, some 15 s) and reused by
later runs; a test puts it first on PYTHONPATH of a subprocess, which takes torch,
safetensors and accelerate from our own environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# The newest releases before transformers 5, and the hub client and tokenizers they need
# (ours are too new for them); installed without dependencies, so every one is listed.
OLDER_STACK = ("diffusers==0.35.2", "transformers==4.57.6", "peft==0.17.1",
               "huggingface_hub==0.36.2", "tokenizers==0.22.2")
_UNREACHABLE = ("no matching distribution", "could not find a version", "connection",
                "network is unreachable", "name or service not known", "max retries",
                "temporary failure in name resolution", "timed out")


def cache_root() -> Path:
    if os.environ.get("DREAMSTUDIO_TEST_CACHE"):
        return Path(os.environ["DREAMSTUDIO_TEST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dreamstudio-tests"


def older_stack() -> Path:
    """The folder holding OLDER_STACK, installed now if no earlier run did; skips the test
    only when PyPI cannot be reached (any other install failure fails it)."""
    name = "-".join(spec.replace("==", "-") for spec in OLDER_STACK)
    folder = cache_root() / name
    if (folder / ".complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}."))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
             "--disable-pip-version-check", "--target", str(partial), *OLDER_STACK],
            check=False, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip("PyPI did not answer within 10 minutes: the older diffusers stack "
                    f"({', '.join(OLDER_STACK)}) could not be installed")
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        output = (result.stderr + result.stdout).strip()
        last = output.splitlines()[-1] if output else f"pip exited {result.returncode}"
        if any(marker in output.lower() for marker in _UNREACHABLE):
            pytest.skip(f"PyPI is unreachable, so the older diffusers stack cannot be "
                        f"installed: {last}")
        pytest.fail(f"installing the older diffusers stack failed: {output[-2000:]}")
    (partial / ".complete").write_text("\n".join(OLDER_STACK) + "\n", encoding="utf-8")
    try:
        os.rename(partial, folder)
    except OSError:  # another test process got there first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def run_on_older_stack(script: Path, *args: str, timeout: int = 300):
    """Run `python script args...` with the older stack first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(older_stack()), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(script), *args], check=False,
                          capture_output=True, text=True, env=env, timeout=timeout)
