"""Route selection into the FIB, and persist-routes, per RouteServer. Pure: `now` comes in.

The Loc-RIB has already run the BGP decision process across every peer of the route server; the
FIB turns its per-prefix result into next hops for the writers:

- ActivePassive (AWS VPC Route Server behaviour): the best path's next hop only. The standby takes
  over when the active path is withdrawn or its session/BFD goes down.
- ECMP (Azure Route Server behaviour): the equal-cost set (equal through MED), up to `max_paths`,
  in the RIB's deterministic order.

Persist routes (AWS semantics, `persistRoutes`): while every session of the route server is down,
the last FIB is held instead of emptied. When a session returns, a persist window of
`duration_seconds` starts: re-advertised prefixes replace their persisted entries at once, and when
the window ends whatever was not re-advertised is removed. `reset()` drops the persisted FIB now.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.writers.base import Address, FibEntry, Prefix


class SelectionMode(enum.Enum):
    ACTIVE_PASSIVE = "ActivePassive"
    ECMP = "ECMP"


def select_next_hops(
    mode: SelectionMode, best: Address | None, ecmp: Sequence[Address], max_paths: int
) -> tuple[Address, ...]:
    """The next hops to install for one prefix, in order; empty when there is no usable path."""
    if best is None:
        return ()
    if mode is SelectionMode.ACTIVE_PASSIVE:
        return (best,)
    hops = tuple(dict.fromkeys(ecmp or (best,)))
    return hops[: max(1, max_paths)]


class PersistState(enum.Enum):
    LIVE = "Live"  # at least one session up, nothing persisted
    HOLDING = "Holding"  # every session down: the last FIB is held
    RECOVERING = "Recovering"  # sessions back: persisted entries kept until the window ends


@dataclass(frozen=True, slots=True)
class PersistConfig:
    enabled: bool = False
    duration_seconds: int = 120


class Fib:
    """The FIB of one route server: live entries from the RIB plus, when enabled, persisted ones.

    Every method returns the changes for the writers (prefix -> FibEntry, or None to remove), so a
    caller never diffs whole tables; work is proportional to the prefixes that changed.
    """

    def __init__(self, persist: PersistConfig | None = None) -> None:
        self.persist = persist or PersistConfig()
        self._live: dict[Prefix, tuple[Address, ...]] = {}
        self._persisted: dict[Prefix, tuple[Address, ...]] = {}
        self._state = PersistState.LIVE
        self._sessions_up = 0
        self._window_ends: float | None = None

    @property
    def state(self) -> PersistState:
        return self._state

    def entries(self) -> dict[Prefix, tuple[Address, ...]]:
        """The effective FIB: live entries, and persisted ones where no live entry exists."""
        merged = dict(self._persisted)
        merged.update(self._live)
        return merged

    def persisted(self) -> Mapping[Prefix, tuple[Address, ...]]:
        return self._persisted

    def next_deadline(self) -> float | None:
        return self._window_ends

    def update(self, prefix: Prefix, hops: tuple[Address, ...]) -> dict[Prefix, FibEntry | None]:
        """Set the live next hops of one prefix (empty: no live path)."""
        return self.update_many([(prefix, hops)])

    def update_many(
        self, items: Iterable[tuple[Prefix, tuple[Address, ...]]]
    ) -> dict[Prefix, FibEntry | None]:
        changes: dict[Prefix, FibEntry | None] = {}
        for prefix, hops in items:
            before = self._effective(prefix)
            if hops:
                self._live[prefix] = hops
                self._persisted.pop(prefix, None)  # re-advertised: the live path wins from now on
            else:
                self._live.pop(prefix, None)
                if self._state is PersistState.HOLDING and before:
                    # The path went away because its session went down: hold it.
                    self._persisted[prefix] = before
            after = self._effective(prefix)
            if after != before:
                changes[prefix] = FibEntry(prefix, after) if after else None
        return changes

    def sessions_changed(self, sessions_up: int, now: float) -> dict[Prefix, FibEntry | None]:
        """Track how many sessions are up; drives HOLDING and the recovery window."""
        previous, self._sessions_up = self._sessions_up, sessions_up
        if not self.persist.enabled:
            return {}
        if sessions_up == 0 and previous > 0:
            # Every session is down: hold the whole current FIB (RIB withdrawals arrive after this).
            self._state = PersistState.HOLDING
            self._window_ends = None
            self._persisted.update(self._live)
        elif sessions_up > 0 and self._state is PersistState.HOLDING:
            self._state = PersistState.RECOVERING
            self._window_ends = now + self.persist.duration_seconds
        return {}

    def handle_timer(self, now: float) -> dict[Prefix, FibEntry | None]:
        """End of the recovery window: drop what was not re-advertised."""
        if self._window_ends is None or now < self._window_ends:
            return {}
        return self._drop_persisted()

    def reset(self) -> dict[Prefix, FibEntry | None]:
        """Empty the persisted FIB now (the user's "reset" action)."""
        return self._drop_persisted()

    def _drop_persisted(self) -> dict[Prefix, FibEntry | None]:
        changes: dict[Prefix, FibEntry | None] = {}
        for prefix in list(self._persisted):
            del self._persisted[prefix]
            if prefix not in self._live:
                changes[prefix] = None
        self._window_ends = None
        still_down = self._sessions_up == 0 and self.persist.enabled
        self._state = PersistState.HOLDING if still_down else PersistState.LIVE
        return changes

    def _effective(self, prefix: Prefix) -> tuple[Address, ...]:
        return self._live.get(prefix) or self._persisted.get(prefix) or ()
