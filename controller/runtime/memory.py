"""Memory a large withdraw freed, handed back to the operating system.

Owns: `release_soon`, called after a table write that removed many routes. When the route path has
been quiet for `RELEASE_DELAY` seconds, one `malloc_trim(0)` (glibc) runs off the event loop: the
allocator keeps freed heap pages mapped otherwise (the dicts, ints and records of a million routes
come and go as one peer does), so a process that held a million routes would stay at its peak.
Python's own small-object arenas are returned by the interpreter when they empty; this returns the
rest. Elsewhere than glibc (no `malloc_trim`) it does nothing.

`return_large_blocks` (once, at the start of `routeserver run` and `agent`) fixes glibc's mmap
threshold: by default glibc raises it to the size of each large block it frees (up to 32 MiB), so
after the first dict resize of a big table the next ones (the old tables of the Adj-RIB-In, Loc-RIB,
FIB and writer, 2-21 MiB each at a million routes) come from the heap and stay resident as holes
once freed (at 1M /32s, measured: 34 bytes per prefix at the peak and 40 MiB after a withdraw).
With a fixed threshold every block of `MMAP_THRESHOLD` or more is its own mapping, returned to the
system when it is freed.

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
MMAP_THRESHOLD = 256 * 1024  # bytes: blocks this large are mapped on their own (glibc's start is 128 KiB)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

log = logging.getLogger(__name__)
_handle: asyncio.TimerHandle | None = None


def _libc_function(name: str, argtypes: list[type], restype: type) -> Callable[..., int] | None:
    """A C library function by name, typed; None where there is no such library or function."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name, None)
    except OSError:
        return None
    if function is None:
        return None
    function.argtypes, function.restype = argtypes, restype
    found: Callable[..., int] = function
    return found


_malloc_trim = _libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


def return_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` (no dynamic raise): True when the allocator took it."""
    mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))


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
