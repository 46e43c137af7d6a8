"""Releasing a withdraw's freed memory to the OS (controller/runtime/memory.py)."""

from __future__ import annotations

import asyncio
import os

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
