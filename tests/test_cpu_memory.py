"""Freed CPU memory stays mapped inside a run and is given back after it."""

import resource
import sys

import pytest
import torch

from dreamstudio import cpu_memory
from dreamstudio.cpu_memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, reuse_freed_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or cpu_memory._glibc() is None,
    reason="needs glibc")

MIB = 2**20
PAGES_8MIB = 8 * MIB // resource.getpagesize()


def _faults_per_alloc(rounds: int = 10) -> float:
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


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MIB


@pytest.fixture
def glibc_start_values():
    """glibc as a fresh process starts: blocks over 128 KiB get fresh mappings."""
    libc = cpu_memory._glibc()
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    yield
    for param, value in cpu_memory._AFTER_RUN.items():
        libc.mallopt(param, value)


def test_freed_blocks_are_reused_inside_a_run(glibc_start_values):
    assert _faults_per_alloc() > PAGES_8MIB / 2, "without the block every 8 MiB is new"
    with reuse_freed_memory(torch.device("cpu")) as applied:
        assert applied is True
        assert _faults_per_alloc() < PAGES_8MIB / 20


def test_memory_is_given_back_when_the_run_ends():
    with reuse_freed_memory(torch.device("cpu")):
        blocks = [torch.ones(4 * MIB, dtype=torch.uint8) for _ in range(32)]  # 128 MiB
        del blocks
        kept = _rss_mib()
    assert kept - _rss_mib() > 64, "free heap memory is returned after the run"


def test_nested_blocks_keep_the_setting_until_the_last_leaves(glibc_start_values):
    with reuse_freed_memory(torch.device("cpu")):
        with reuse_freed_memory(torch.device("cpu")):
            pass
        assert _faults_per_alloc() < PAGES_8MIB / 20
    assert cpu_memory._depth == 0


def test_other_devices_are_left_alone():
    with reuse_freed_memory(torch.device("meta")) as applied:
        assert applied is False
    assert cpu_memory._depth == 0
