"""How many prefixes each peer has in a route server's FIB: the `prefixesInstalled` of its status.

A peer's path for a prefix is installed when the FIB's next hops for that prefix come from it:
ActivePassive, the best path (with a next hop); ECMP, every path of the equal-cost set whose next hop
is among the prefix's selected next hops. Counted incrementally from the Loc-RIB changes the runtime
already handles (each RibChange names the old and new selection), so a scrape costs nothing per
route; `recount` rebuilds the counts from the whole Loc-RIB when the selection rules change.

Only live paths count: persisted FIB entries (persist-routes) belong to no live session.

Owns: `InstalledCounts`. Must not touch: the FIB, the RIB or the runtime; it is told the changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

from bgp.rib.loc_rib import RibChange
from bgp.rib.path import Path
from controller.desired import Address, SelectionMode

Hops = Callable[[Path | None, Sequence[Path]], tuple[Address, ...]]
_OLD_BEST = itemgetter(1)  # RibChange.old_best, read in C (map)
_NEW_BEST = itemgetter(2)  # RibChange.new_best
BULK = 64  # changes from which ActivePassive counts per distinct path, not per change


class InstalledCounts:
    """Per peer id, the prefixes whose FIB next hops include that peer's path."""

    def __init__(self, mode: SelectionMode, hops: Hops) -> None:
        self._counts: Counter[str] = Counter()
        self.configure(mode, hops)

    def configure(self, mode: SelectionMode, hops: Hops) -> None:
        """New selection rules (the counts are stale until `recount`)."""
        self._active_passive = mode is SelectionMode.ACTIVE_PASSIVE
        self._hops = hops

    def get(self, peer_id: str) -> int:
        return self._counts.get(peer_id, 0)

    def clear(self) -> None:
        self._counts.clear()

    def apply(self, changes: Iterable[RibChange]) -> None:
        counts = self._counts
        if self._active_passive:
            if isinstance(changes, list) and len(changes) >= BULK:
                # A feed's paths are a few interned objects: count per distinct Path, in C. A change
                # whose old and new best are the same Path adds one and takes one: no net count.
                self._count_paths(list(map(_OLD_BEST, changes)), -1)
                self._count_paths(list(map(_NEW_BEST, changes)), 1)
                return
            for change in changes:
                old, new = change.old_best, change.new_best
                if old is new:
                    continue
                if old is not None and old.next_hop is not None:
                    counts[old.peer.peer_id] -= 1
                if new is not None and new.next_hop is not None:
                    counts[new.peer.peer_id] += 1
            return
        # ECMP: the paths of one UPDATE share their Path objects, so the peers of each distinct
        # (best, ECMP set) are worked out once per call, keyed by the paths' identities.
        seen: dict[tuple[int, ...], tuple[str, ...]] = {}
        for change in changes:
            for best, ecmp, step in (
                (change.old_best, change.old_ecmp, -1),
                (change.new_best, change.new_ecmp, 1),
            ):
                if best is None or best.next_hop is None:
                    continue
                if len(ecmp) <= 1:
                    counts[best.peer.peer_id] += step
                    continue
                key = tuple(map(id, ecmp))
                peers = seen.get(key)
                if peers is None:
                    peers = seen[key] = tuple(self._peers(best, ecmp))
                for peer_id in peers:
                    counts[peer_id] += step

    def apply_removals(self, changes: Sequence[RibChange]) -> None:
        """`apply` of changes that all remove the prefix (no new best path), counted in bulk: per
        distinct old selection rather than per prefix (the paths of one peer are a few objects)."""
        if not self._active_passive:
            self.apply(changes)
            return
        self._count_paths(list(map(_OLD_BEST, changes)), -1)

    def _count_paths(self, paths: list[Path | None], step: int) -> None:
        """Add `step` per occurrence of each path (with a next hop) to its peer's count, per distinct
        Path object: the per-prefix work is C's (map, zip, Counter)."""
        by_id = dict(zip(map(id, paths), paths, strict=True))  # in C: one entry per distinct Path
        counts = self._counts
        for ident, count in Counter(map(id, paths)).items():
            path = by_id[ident]
            if path is not None and path.next_hop is not None:
                counts[path.peer.peer_id] += step * count

    def recount(self, selected: Iterable[tuple[Path | None, Sequence[Path]]]) -> None:
        """Counts from scratch: (best, ECMP set) of every prefix."""
        counts: Counter[str] = Counter()
        for best, ecmp in selected:
            for peer_id in self._peers(best, ecmp):
                counts[peer_id] += 1
        self._counts = counts

    def _peers(self, best: Path | None, ecmp: Sequence[Path]) -> set[str]:
        if best is None:
            return set()
        if self._active_passive:
            return {best.peer.peer_id} if best.next_hop is not None else set()
        hops = self._hops(best, ecmp)
        if not hops:
            return set()
        return {p.peer.peer_id for p in (ecmp or (best,)) if p.next_hop in hops}
