"""Local discriminators and demultiplexing of received packets to sessions (RFC 5880 §6.3, §6.8.6).

Each session gets a random, non-zero, unique 32-bit local discriminator (§6.3: it MUST be unique
among our sessions; random makes a restarted peer's stale Your Discriminator unlikely to hit a new
session). A received packet is matched (§6.8.6):

- step 7: by Your Discriminator when it is non-zero; no such session -> `UNKNOWN_YOUR_DISCRIMINATOR`.
  The session found must also be bound to the path the packet arrived on (`ADDRESS_MISMATCH`), so a
  guessed discriminator cannot steer packets from elsewhere into a session.
- step 9: by path when it is zero (the peer does not know us yet): the peer address, our local
  address, the interface and single-/multi-hop. A session registered without a local address or
  interface matches any; the most specific registration wins. Nothing found ->
  `NO_SESSION_FOR_ADDRESS` (we never create sessions from received packets).

The registry is generic in what it stores (the service keeps its own per-session record there).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bfd.codec import U32_MAX, DropReason
from bfd.timers import Rng

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

_RANDOM_TRIES = 16


@dataclasses.dataclass(frozen=True, slots=True)
class PathKey:
    """Where a session's packets travel. `local`/`interface` None in a registration means any."""

    peer: IPAddress
    local: IPAddress | None = None
    interface: str | None = None
    multihop: bool = False

    def covers(self, received: PathKey) -> bool:
        """True if packets arriving on `received` belong to a session registered under self."""
        return (
            self.peer == received.peer
            and self.multihop == received.multihop
            and (self.local is None or self.local == received.local)
            and (self.interface is None or self.interface == received.interface)
        )


class DiscriminatorRegistry(Generic[T]):
    """Sessions by local discriminator and by path."""

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._by_discr: dict[int, tuple[PathKey, T]] = {}
        self._by_path: dict[PathKey, int] = {}

    def add(self, key: PathKey, make: Callable[[int], T]) -> T:
        """Allocate a discriminator, build the entry with `make(discriminator)` and register it.

        Raises ValueError if a session for exactly this path exists (clients share it instead).
        """
        if key in self._by_path:
            raise ValueError(f"a BFD session for {key} already exists")
        discr = self._allocate()
        item = make(discr)
        self._by_discr[discr] = (key, item)
        self._by_path[key] = discr
        return item

    def remove(self, discr: int) -> T | None:
        """Forget a session; its discriminator may be reused later."""
        entry = self._by_discr.pop(discr, None)
        if entry is None:
            return None
        key, item = entry
        del self._by_path[key]
        return item

    def get(self, discr: int) -> T | None:
        entry = self._by_discr.get(discr)
        return None if entry is None else entry[1]

    def find(self, key: PathKey) -> T | None:
        """The session registered for exactly `key`, if any."""
        discr = self._by_path.get(key)
        return None if discr is None else self._by_discr[discr][1]

    def demux(self, your_discr: int, received: PathKey) -> T | DropReason:
        """§6.8.6 steps 7 and 9: the session a received packet belongs to, or why it is dropped."""
        if your_discr != 0:
            entry = self._by_discr.get(your_discr)
            if entry is None:
                return DropReason.UNKNOWN_YOUR_DISCRIMINATOR
            key, item = entry
            return item if key.covers(received) else DropReason.ADDRESS_MISMATCH
        for candidate in (
            received,
            dataclasses.replace(received, local=None),
            dataclasses.replace(received, interface=None),
            dataclasses.replace(received, local=None, interface=None),
        ):
            discr = self._by_path.get(candidate)
            if discr is not None:
                return self._by_discr[discr][1]
        return DropReason.NO_SESSION_FOR_ADDRESS

    def __len__(self) -> int:
        return len(self._by_discr)

    def __iter__(self) -> Iterator[tuple[int, T]]:
        return ((discr, item) for discr, (_, item) in self._by_discr.items())

    def _allocate(self) -> int:
        """A random non-zero discriminator not in use (§6.3); falls back to a scan if the RNG repeats."""
        candidate = 0
        for _ in range(_RANDOM_TRIES):
            candidate = self._rng.getrandbits(32)
            if candidate != 0 and candidate not in self._by_discr:
                return candidate
        if len(self._by_discr) >= U32_MAX:
            raise RuntimeError("no free BFD discriminator")
        while candidate == 0 or candidate in self._by_discr:
            candidate = (candidate + 1) & U32_MAX
        return candidate
