"""Route selection into the FIB, and persist-routes, per RouteServer. Pure: `now` comes in.

Owns: `select_next_hops`, `Fib` and `PersistState`. Its settings (`SelectionMode`, `PersistConfig`)
and route types are controller/desired.py's (importable from here too). May not touch: I/O, asyncio,
the clock, writers or the runtime; the runtime drives it and hands its changes to the writers.

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

Sessions rarely fail at the same instant, even when one cause takes them all (the route server's own
link dies): BFD notices each one when its own detection timer runs out, milliseconds apart. So with
persist enabled, a prefix whose last path leaves because its session went down (never one withdrawn
by UPDATE) is not removed at once but held for `grace_seconds`. If every session is down before the
grace ends, the held prefixes join the persisted FIB (Holding) like the last session's; otherwise
they are removed when it ends. A prefix that still has another path moves at once: the grace never
delays a failover, it only delays removing a route that has nowhere else to go.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence

from controller.desired import (
    DEFAULT_GRACE_SECONDS,
    Address,
    Hops,
    PersistConfig,
    RouteKey,
    SelectionMode,
)


def select_next_hops(
    mode: SelectionMode, best: Address | None, ecmp: Sequence[Address], max_paths: int
) -> Hops:
    """The next hops to install for one prefix, in order; empty when there is no usable path."""
    if best is None:
        return ()
    if mode is SelectionMode.ACTIVE_PASSIVE:
        return (best,)
    hops = tuple(dict.fromkeys(ecmp or (best,)))
    return hops[: max(1, max_paths)]


class HopsInterner:
    """One tuple object per distinct next-hop set, so the FIB and the tables store a pointer per
    prefix (a million VIPs behind two appliances share two tuples) and equal sets compare by identity.

    Bounded: next-hop sets come and go with the appliances, so past `limit` distinct sets the table
    starts again (sharing is an optimisation; equality never depends on it).
    """

    __slots__ = ("_limit", "_sets", "_single")

    def __init__(self, limit: int = 65_536) -> None:
        self._limit = limit
        self._single: dict[Address, Hops] = {}
        self._sets: dict[Hops, Hops] = {}

    def one(self, hop: Address) -> Hops:
        """The interned (hop,)."""
        hops = self._single.get(hop)
        if hops is None:
            if len(self._single) >= self._limit:
                self._single.clear()
            hops = self._single[hop] = (hop,)
        return hops

    def __call__(self, hops: Hops) -> Hops:
        if len(hops) == 1:
            return self.one(hops[0])
        if not hops:
            return ()
        known = self._sets.get(hops)
        if known is None:
            if len(self._sets) >= self._limit:
                self._sets.clear()
            known = self._sets[hops] = hops
        return known


class Move:
    """Prefixes that went from one next-hop set to another in one FIB update: how many, and one of
    them (the log line's example). `new` empty: they lost their last next hop."""

    __slots__ = ("count", "first", "new", "old")

    def __init__(self, old: Hops, new: Hops, first: RouteKey) -> None:
        self.old, self.new, self.first, self.count = old, new, first, 1


class MoveTally:
    """What one `Fib.update_many` changed: prefixes added (no next hops before) and the moves by
    (previous, new) next-hop set, keyed by the sets' ids (they are interned, and alive in `moves`)."""

    __slots__ = ("added", "moves")

    def __init__(self) -> None:
        self.added = 0
        self.moves: dict[tuple[int, int], Move] = {}


_NONE = id(())  # the empty tuple is one object: "no next hops" in a MoveTally key


def _tally_removal(live: Mapping[RouteKey, Hops], tally: MoveTally) -> None:
    """Count every live entry as lost (its next hops -> none), with one prefix per next-hop set."""
    counts = Counter(map(id, live.values()))  # in C: the sets are interned, ids stand for them
    firsts: dict[int, tuple[RouteKey, Hops]] = {}
    for prefix, hops in live.items():  # stops once every set has its example (usually at once)
        if id(hops) not in firsts:
            firsts[id(hops)] = (prefix, hops)
            if len(firsts) == len(counts):
                break
    for ident, count in counts.items():
        prefix, hops = firsts[ident]
        move = tally.moves[(ident, _NONE)] = Move(hops, (), prefix)
        move.count = count


class PersistState(enum.Enum):
    LIVE = "Live"  # at least one session up, nothing persisted
    HOLDING = "Holding"  # every session down: the last FIB is held
    RECOVERING = "Recovering"  # sessions back: persisted entries kept until the window ends


class Fib:
    """The FIB of one route server: live entries from the RIB plus, when enabled, persisted ones.

    Every method returns the changes for the writers (key -> next hops, or None to remove), so a
    caller never diffs whole tables; work is proportional to the prefixes that changed. Prefixes
    are Loc-RIB keys (controller.desired.RouteKey) and the next-hop tuples are the caller's
    (interned there), so an entry costs one dict slot.
    """

    def __init__(self, persist: PersistConfig | None = None) -> None:
        self.persist = persist or PersistConfig()
        self._live: dict[RouteKey, Hops] = {}
        self._persisted: dict[RouteKey, Hops] = {}
        self._state = PersistState.LIVE
        self._sessions_up = 0
        self._window_ends: float | None = None
        # Persist grace: prefixes held in `_persisted` because their session went down while others
        # stayed up, with the end of their grace; the queue holds (end, prefixes) in time order.
        # An entry is current only while the prefix is still persisted and its end matches.
        self._grace_until: dict[RouteKey, float] = {}
        self._grace_queue: deque[tuple[float, list[RouteKey]]] = deque()
        # Bumped by every call that may change which prefixes the FIB (or the RIB behind it) holds:
        # readers that cache something per prefix set (controller/runtime/routes.py) compare it.
        self.version = 0

    @property
    def state(self) -> PersistState:
        return self._state

    def entries(self) -> Mapping[RouteKey, Hops]:
        """The effective FIB: live entries, and persisted ones where no live entry exists.

        Read it, do not keep it: while nothing is persisted this is the live table itself, not a
        copy (status scrapes, table resyncs and views read it, and a copy per call was one more FIB
        per table per read); otherwise a merged copy.
        """
        if not self._persisted:
            return self._live
        merged = dict(self._persisted)
        merged.update(self._live)
        return merged

    def lookup(self, prefix: RouteKey) -> tuple[Hops, bool]:
        """One prefix's effective next hops and whether they are held (persisted or in their grace)."""
        hops = self._live.get(prefix)
        if hops:
            return hops, False
        held = self._persisted.get(prefix)
        return (held, True) if held else ((), False)

    def persisted(self) -> Mapping[RouteKey, Hops]:
        """Held entries: persisted (Holding, the recovery window) and those in their grace."""
        return self._persisted

    @property
    def recovery_deadline(self) -> float | None:
        """When the recovery window ends (None: no window running)."""
        return self._window_ends

    def next_deadline(self) -> float | None:
        """The next `handle_timer` instant: the window's end or the earliest grace end."""
        grace = self._grace_queue[0][0] if self._grace_queue else None
        if grace is None or self._window_ends is None:
            return self._window_ends if grace is None else grace
        return min(grace, self._window_ends)

    def update(
        self, prefix: RouteKey, hops: Hops, session_down_at: float | None = None
    ) -> dict[RouteKey, Hops | None]:
        """Set the live next hops of one prefix (empty: no live path)."""
        return self.update_many([(prefix, hops)], session_down_at)

    def update_many(
        self,
        items: Iterable[tuple[RouteKey, Hops]],
        session_down_at: float | None = None,
        tally: MoveTally | None = None,
    ) -> dict[RouteKey, Hops | None]:
        """Set live next hops; `session_down_at`: these paths left with a session that went down then.

        Persist grace (module docstring): prefixes losing their last path that way are held.
        `tally`, if given, counts what changed by (previous next hops, new next hops), the failover
        report, in the same pass (nothing per prefix is kept for it).
        """
        self.version += 1
        live, persisted = self._live, self._persisted
        if (
            isinstance(items, list)
            and items
            and items[0][0] not in live  # a cheap first look: a failover batch fails it at once
            and not persisted
            and self._state is not PersistState.HOLDING
        ):
            # A bulk feed: every prefix new, each with next hops. Checked and applied in C (no
            # Python per prefix): the change set is the batch itself.
            fresh: dict[RouteKey, Hops | None] = dict(items)
            if len(fresh) == len(items) and all(fresh.values()) and live.keys().isdisjoint(fresh):
                live.update(fresh)  # type: ignore[arg-type]  # all(values): no None among them
                if tally is not None:
                    tally.added += len(fresh)
                return fresh
        changes: dict[RouteKey, Hops | None] = {}
        graced: list[RouteKey] = []
        tally_moves = tally.moves if tally is not None else {}
        holding = self._state is PersistState.HOLDING
        grace = session_down_at is not None and self.persist.enabled
        # One pass, inlined: this runs once per prefix of every UPDATE and of every peer that goes
        # down. Interned next hops (HopsInterner) make "unchanged" an identity check.
        for prefix, hops in items:
            current = live.get(prefix)
            if hops:
                if current is hops:
                    continue
                previous = current or (persisted.get(prefix) if persisted else None) or ()
                live[prefix] = hops
                if persisted:
                    persisted.pop(prefix, None)  # re-advertised: the live path wins from now on
                after = hops
            else:
                previous = current or (persisted.get(prefix) if persisted else None) or ()
                if current is not None:
                    del live[prefix]
                if holding and previous:
                    # The path went away because its session went down: hold it.
                    persisted[prefix] = previous
                elif current and grace:
                    # Persist grace hook: its session went down; hold it (see _hold_for_grace).
                    persisted[prefix] = current
                    graced.append(prefix)
                after = (persisted.get(prefix) if persisted else None) or ()
            if after != previous:
                changes[prefix] = after or None
                if tally is None:
                    continue
                if not previous:
                    tally.added += 1
                    continue
                # Interned next hops: a pair of ids keys the move (hashing addresses is Python code).
                pair = (id(previous), id(after))
                move = tally_moves.get(pair)
                if move is None:
                    tally_moves[pair] = Move(previous, after, prefix)
                else:
                    move.count += 1
        if graced:
            self._hold_for_grace(graced, session_down_at or 0.0)
        return changes

    def remove_many(
        self,
        prefixes: Sequence[RouteKey],
        session_down_at: float | None = None,
        tally: MoveTally | None = None,
    ) -> dict[RouteKey, Hops | None]:
        """`update_many` of these prefixes losing their live path (a peer that went down), in bulk.

        The same result; while nothing is persisted or held, no Python code runs per prefix when
        the prefixes are the whole FIB (the only peer went down with a million routes) and a lean
        loop runs otherwise.
        """
        if (
            self._persisted
            or self._state is not PersistState.LIVE
            or (session_down_at is not None and self.persist.enabled)
        ):
            return self.update_many([(prefix, ()) for prefix in prefixes], session_down_at, tally)
        self.version += 1
        live = self._live
        # Every prefix of the FIB goes (the Loc-RIB's keys are distinct): checked in C, without a
        # set of a million keys.
        if len(prefixes) == len(live) and all(map(live.__contains__, prefixes)):
            if tally is not None:
                _tally_removal(live, tally)
            live.clear()
            return dict.fromkeys(prefixes)
        changes: dict[RouteKey, Hops | None] = {}
        moves = tally.moves if tally is not None else None
        pop = live.pop
        for prefix in prefixes:
            previous = pop(prefix, None)
            if previous is None:
                continue
            changes[prefix] = None
            if moves is not None:
                pair = (id(previous), _NONE)
                move = moves.get(pair)
                if move is None:
                    moves[pair] = Move(previous, (), prefix)
                else:
                    move.count += 1
        return changes

    def _hold_for_grace(self, prefixes: list[RouteKey], down_at: float) -> None:
        """Start the grace of prefixes whose session went down at `down_at` (already persisted)."""
        ends = down_at + self.persist.grace_seconds
        if self._grace_queue:
            ends = max(ends, self._grace_queue[-1][0])  # keep the queue in time order
        for prefix in prefixes:
            self._grace_until[prefix] = ends
        self._grace_queue.append((ends, prefixes))

    def sessions_changed(self, sessions_up: int, now: float) -> dict[RouteKey, Hops | None]:
        """Track how many sessions are up; drives HOLDING and the recovery window."""
        previous, self._sessions_up = self._sessions_up, sessions_up
        self.version += 1
        if not self.persist.enabled:
            return {}
        if sessions_up == 0 and previous > 0:
            # Every session is down: hold the whole current FIB (RIB withdrawals arrive after this).
            self._state = PersistState.HOLDING
            self._window_ends = None
            self._persisted.update(self._live)
            # Prefixes in their grace are persisted already: from now on they are held like the rest.
            self._grace_until.clear()
            self._grace_queue.clear()
        elif sessions_up > 0 and self._state is PersistState.HOLDING:
            self._state = PersistState.RECOVERING
            self._window_ends = now + self.persist.duration_seconds
        return {}

    def handle_timer(self, now: float) -> dict[RouteKey, Hops | None]:
        """End of a grace (some session is still up: drop its prefixes) and of the recovery window
        (drop what was not re-advertised; prefixes still in their grace keep it)."""
        self.version += 1
        changes: dict[RouteKey, Hops | None] = {}
        queue = self._grace_queue
        while queue and queue[0][0] <= now:
            ends, prefixes = queue.popleft()
            for prefix in prefixes:
                if self._grace_until.get(prefix) != ends:
                    continue  # lost again later: a newer grace owns it
                del self._grace_until[prefix]
                if self._persisted.pop(prefix, None) is not None and prefix not in self._live:
                    changes[prefix] = None
        if self._window_ends is not None and now >= self._window_ends:
            changes.update(self._drop_persisted(keep_grace=True))
        return changes

    def reset(self) -> dict[RouteKey, Hops | None]:
        """Empty the persisted FIB now (the user's "reset" action), prefixes in their grace too."""
        return self._drop_persisted(keep_grace=False)

    def _drop_persisted(self, keep_grace: bool) -> dict[RouteKey, Hops | None]:
        self.version += 1
        changes: dict[RouteKey, Hops | None] = {}
        grace = self._grace_until
        for prefix in list(self._persisted):
            if keep_grace and prefix in grace:
                continue
            del self._persisted[prefix]
            if prefix not in self._live:
                changes[prefix] = None
        if not keep_grace:
            grace.clear()
            self._grace_queue.clear()
        self._window_ends = None
        still_down = self._sessions_up == 0 and self.persist.enabled
        self._state = PersistState.HOLDING if still_down else PersistState.LIVE
        return changes


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "Fib",
    "HopsInterner",
    "Move",
    "MoveTally",
    "PersistConfig",
    "PersistState",
    "SelectionMode",
    "select_next_hops",
]
