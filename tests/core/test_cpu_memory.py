"""Freed CPU memory stays mapped inside a run and is given back after it.

Page faults depend on what the process allocated before, so each check runs in a fresh
interpreter, with glibc set to its start values (blocks over 128 KiB get fresh mappings).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dreamstudio.core import cpu_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or cpu_memory._glibc() is None,
    reason="needs glibc")

PROBE = r"""
import json, resource, torch
from dreamstudio.core import cpu_memory
from dreamstudio.core.cpu_memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, reuse_freed_memory

MIB = 2**20
libc = cpu_memory._glibc()
libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)

def faults_per_alloc(rounds=10):
    def touch_and_free():
        t = torch.empty(8 * MIB, dtype=torch.uint8)
        t.fill_(1)  # every page written, so a fresh mapping faults on each one
        del t
    # Aligned blocks walk up the heap until glibc's padding is used up, then settle.
    for _ in range(12):
        touch_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        touch_and_free()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MIB

cpu = torch.device("cpu")
out = {"pages": 8 * MIB // resource.getpagesize(), "outside": faults_per_alloc()}
with reuse_freed_memory(cpu) as applied:
    out["applied"] = applied
    with reuse_freed_memory(cpu):
        pass
    out["inside_after_nested_exit"] = faults_per_alloc()
    blocks = [torch.ones(4 * MIB, dtype=torch.uint8) for _ in range(32)]  # 128 MiB
    del blocks
    out["rss_inside"] = rss_mib()
out["rss_after"] = rss_mib()
out["depth_after"] = cpu_memory._depth
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe():
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=root, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_inside_a_run(probe):
    assert probe["applied"] is True
    assert probe["outside"] > probe["pages"] / 2, "glibc's start values map every block anew"
    assert probe["inside_after_nested_exit"] < probe["pages"] / 20, (
        "inside a run (still inside after a nested block left) the freed block is reused")


def test_memory_is_given_back_when_the_run_ends(probe):
    assert probe["rss_inside"] - probe["rss_after"] > 64
    assert probe["depth_after"] == 0


def test_other_devices_are_left_alone():
    import torch

    with cpu_memory.reuse_freed_memory(torch.device("meta")) as applied:
        assert applied is False
    assert cpu_memory._depth == 0
