"""Releasing a withdraw's freed memory to the OS (controller/runtime/memory.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from controller.runtime import memory


def resident_mib() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


@pytest.mark.skipif(memory._malloc_trim is None, reason="not glibc: nothing to release with")
def test_freed_heap_pages_go_back_to_the_os() -> None:
    base = resident_mib()
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]  # ~200 MiB of heap chunks
    keep = bytes(3000)  # allocated above them: the freed pages are not at the heap's top
    loaded = resident_mib()
    del blocks
    assert resident_mib() > base + (loaded - base) // 2  # freed, but still mapped by the allocator
    assert memory.release_now()
    assert resident_mib() < base + (loaded - base) // 4
    assert keep


async def test_a_large_withdraw_schedules_one_release_once_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def released() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(memory, "RELEASE_DELAY", 0.02)
    monkeypatch.setattr(memory, "release_now", released)
    monkeypatch.setattr(memory, "_malloc_trim", lambda pad: 1)
    memory.release_soon(memory.RELEASE_MIN_ROUTES - 1)  # a small write: nothing
    await asyncio.sleep(0.05)
    assert calls == []
    for _ in range(3):  # one withdraw arrives in several batches: one release after the last
        memory.release_soon(memory.RELEASE_MIN_ROUTES)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert calls == [1]


# Run in a child: the allocator's thresholds are per process, and pytest's own must stay as they are.
_LARGE_BLOCKS_SCENARIO = """
import ctypes, ctypes.util, os, sys
from controller.runtime import memory

if sys.argv[1] == "fixed":
    assert memory.return_large_blocks()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MiB = 1 << 20

def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def touched(size: int) -> int:
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block

libc.free(touched(16 * MiB))  # a big table freed (a dict that grew): glibc raises its threshold
base = resident()
tables = [touched(8 * MiB) for _ in range(3)]  # the next tables, smaller than the one freed
keep = touched(4096)  # allocated after them, so freed tables are not at the heap's top
for table in tables:
    libc.free(table)
print((resident() - base) // MiB)
"""


@pytest.mark.skipif(memory._malloc_trim is None, reason="not glibc: no mmap threshold to fix")
@pytest.mark.parametrize("mode", ["default", "fixed"])
def test_a_fixed_mmap_threshold_returns_freed_tables_at_once(mode: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _LARGE_BLOCKS_SCENARIO, mode],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    kept_mib = int(child.stdout)
    if mode == "default":
        assert kept_mib >= 20  # glibc's dynamic threshold: the freed tables stay resident as holes
    else:
        assert kept_mib <= 2  # each table was its own mapping, unmapped when freed
