"""Memory a large withdraw freed, handed back to the operating system.

Owns: `release_soon`, called after a table write that removed many routes. When the route path has
been quiet for `RELEASE_DELAY` seconds, one `malloc_trim(0)` (glibc) runs off the event loop: the
allocator keeps freed heap pages mapped otherwise (the dicts, ints and records of a million routes
come and go as one peer does), so a process that held a million routes would stay at its peak.
Python's own small-object arenas are returned by the interpreter when they empty; this returns the
rest. Elsewhere than glibc (no `malloc_trim`) it does nothing.

Must not touch: routes, the FIB or the tables; it only asks the C allocator to release free pages.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

RELEASE_MIN_ROUTES = 50_000  # a write that removed at least this many routes schedules a release
RELEASE_DELAY = 1.0  # seconds without another such write first (a withdraw comes in many batches)

log = logging.getLogger(__name__)
_handle: asyncio.TimerHandle | None = None


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    function: Callable[[int], int] = trim
    return function


_malloc_trim = _load_malloc_trim()


def release_now() -> bool:
    """Return the allocator's free pages to the OS now (blocks for a few ms per 100 MiB freed)."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False


def release_soon(removed: int) -> None:
    """After a write that removed `removed` routes: release once the route path is quiet (on the loop)."""
    global _handle
    if removed < RELEASE_MIN_ROUTES or _malloc_trim is None:
        return
    if _handle is not None:
        _handle.cancel()
    _handle = asyncio.get_running_loop().call_later(RELEASE_DELAY, _release)


def _release() -> None:
    global _handle
    _handle = None
    future = asyncio.get_running_loop().run_in_executor(None, release_now)
    future.add_done_callback(_released)


def _released(future: asyncio.Future[bool]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("releasing freed memory failed: %s", future.exception())
