"""The Loc-RIB: every peer's accepted paths per prefix, the best path and the ECMP set.

Memory shape (a full feed is ~1,000,000 prefixes): a prefix with one path (the common case)
stores the interned Path object itself in `_entries`, no list or entry object; only prefixes
with several candidates get a small `_Entry`. Each peer's paths are indexed by prefix, so a peer
going down costs O(its paths) and touches nobody else's prefixes. The next-hop index counts paths
per (next hop, peer) instead of listing prefixes, so it costs nothing per prefix:
`paths_by_next_hop` scans only the peers that use that next hop.

Changes are reported as `RibChange` only when the best path or the ECMP set changed, which is all
the FIB and the export side need to act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, KeysView, Sequence
from typing import NamedTuple

from bgp.rib.decision import DecisionOptions, DecisionReason, select
from bgp.rib.path import Path, PeerInfo, RouteBatch
from bgp.types import IPAddress, PrefixKey

# A peer's path is keyed by its prefix, or by (prefix, path id) for non-zero ADD-PATH ids.
PeerKey = PrefixKey | tuple[PrefixKey, int]

_ONLY_PATH = DecisionReason.ONLY_PATH


class RibChange(NamedTuple):
    """The best path and/or ECMP set of one prefix changed.

    A NamedTuple rather than a frozen dataclass: equally immutable with attribute access, but
    about three times cheaper to build, and a full feed builds one per prefix.
    """

    prefix: PrefixKey
    old_best: Path | None
    new_best: Path | None
    old_ecmp: tuple[Path, ...]
    new_ecmp: tuple[Path, ...]
    reason: DecisionReason | None  # the step that chose new_best; None when the prefix is gone


class _Entry:
    """A prefix with two or more candidate paths (ranked: the ECMP set first, best at 0)."""

    __slots__ = ("ecmp_count", "ranked", "reason")

    def __init__(self, ranked: tuple[Path, ...], ecmp_count: int, reason: DecisionReason) -> None:
        self.ranked = ranked
        self.ecmp_count = ecmp_count
        self.reason = reason


def _same(a: tuple[Path, ...], b: tuple[Path, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _prefix_of(key: PeerKey) -> PrefixKey:
    return key if isinstance(key, int) else key[0]


class LocRib:
    """Best-path selection over the paths every peer's Adj-RIB-In accepted.

    Paths are compared by identity: the Adj-RIB-In interns them, so announcing the same Path
    again is a no-op and a new Path object for a prefix is a replacement.
    """

    def __init__(
        self,
        *,
        max_paths: int = 1,
        always_compare_med: bool = False,
        missing_med_worst: bool = False,
        default_local_pref: int = 100,
    ) -> None:
        self.options = DecisionOptions(max_paths, always_compare_med, missing_med_worst, default_local_pref)
        self._entries: dict[PrefixKey, Path | _Entry] = {}
        self._peers: dict[str, dict[PeerKey, Path]] = {}
        self._next_hops: dict[IPAddress | None, dict[str, int]] = {}

    # -- changes ---------------------------------------------------------------------------------

    def update(
        self, peer: PeerInfo, prefix: PrefixKey, path: Path | None, path_id: int = 0
    ) -> RibChange | None:
        """Announce `path` for `prefix` from `peer` (replacing its previous one), or withdraw with None."""
        changes = self.update_many(peer, (prefix,), path, path_id)
        return changes[0] if changes else None

    def apply(self, batch: RouteBatch) -> list[RibChange]:
        """Apply one batch produced by an AdjRibIn."""
        return self.update_many(batch.peer, batch.prefixes, batch.path, batch.path_id)

    def update_many(
        self, peer: PeerInfo, prefixes: Sequence[PrefixKey], path: Path | None, path_id: int = 0
    ) -> list[RibChange]:
        """Announce one path for many prefixes (or withdraw with None): one call per UPDATE."""
        peer_id = peer.peer_id
        if path is not None and (path.peer.peer_id != peer_id or path.path_id != path_id):
            raise ValueError("the path belongs to another peer or path id")
        changes: list[RibChange] = []
        table = self._peers.get(peer_id)
        if path is None:
            if table is None:
                return changes
            for prefix in prefixes:
                old = table.pop(prefix if path_id == 0 else (prefix, path_id), None)
                if old is None:
                    continue
                self._release_next_hop(old, peer_id)
                change = self._remove(prefix, old)
                if change is not None:
                    changes.append(change)
            if not table:
                del self._peers[peer_id]
            return changes
        if table is None:
            table = self._peers[peer_id] = {}
        entries = self._entries
        append = changes.append
        single = (path,)
        acquired = 0
        for prefix in prefixes:
            key = prefix if path_id == 0 else (prefix, path_id)
            old = table.get(key)
            if old is path:
                continue
            table[key] = path
            acquired += 1
            if old is None:
                current = entries.get(prefix)
                if current is None:
                    entries[prefix] = path
                    append(RibChange(prefix, None, path, (), single, _ONLY_PATH))
                    continue
                change = self._add(prefix, current, path)
            else:
                self._release_next_hop(old, peer_id)
                change = self._replace(prefix, old, path)
            if change is not None:
                append(change)
        if acquired:
            peers = self._next_hops.setdefault(path.attributes.next_hop, {})
            peers[peer_id] = peers.get(peer_id, 0) + acquired
        elif not table:
            del self._peers[peer_id]
        return changes

    def remove_peer(self, peer_id: str) -> list[RibChange]:
        """Drop every path of one peer (session down without graceful restart): O(its paths)."""
        table = self._peers.pop(peer_id, None)
        if table is None:
            return []
        changes: list[RibChange] = []
        for key, old in table.items():
            change = self._remove(_prefix_of(key), old)
            if change is not None:
                changes.append(change)
        for next_hop in [nh for nh, peers in self._next_hops.items() if peer_id in peers]:
            peers = self._next_hops[next_hop]
            del peers[peer_id]
            if not peers:
                del self._next_hops[next_hop]
        return changes

    def reconfigure(self, options: DecisionOptions) -> list[RibChange]:
        """Change the decision options (e.g. max_paths) and re-run the decision where it matters."""
        self.options = options
        changes: list[RibChange] = []
        multi = [(prefix, entry) for prefix, entry in self._entries.items() if isinstance(entry, _Entry)]
        for prefix, entry in multi:
            old_best, old_ecmp = entry.ranked[0], entry.ranked[: entry.ecmp_count]
            change = self._decide(prefix, entry.ranked, old_best, old_ecmp)
            if change is not None:
                changes.append(change)
        return changes

    # -- queries -----------------------------------------------------------------------------------

    def best(self, prefix: PrefixKey) -> Path | None:
        current = self._entries.get(prefix)
        if current is None or isinstance(current, Path):
            return current
        return current.ranked[0]

    def ecmp(self, prefix: PrefixKey) -> tuple[Path, ...]:
        """The multipath set (best first), at most max_paths long; empty when no path."""
        current = self._entries.get(prefix)
        if current is None:
            return ()
        if isinstance(current, Path):
            return (current,)
        return current.ranked[: current.ecmp_count]

    def candidates(self, prefix: PrefixKey) -> tuple[Path, ...]:
        """Every path for the prefix, ECMP set first."""
        current = self._entries.get(prefix)
        if current is None:
            return ()
        if isinstance(current, Path):
            return (current,)
        return current.ranked

    def reason(self, prefix: PrefixKey) -> DecisionReason | None:
        current = self._entries.get(prefix)
        if current is None:
            return None
        return _ONLY_PATH if isinstance(current, Path) else current.reason

    def prefixes(self) -> KeysView[PrefixKey]:
        """Every prefix with at least one path (a live view: copy it before yielding to other code)."""
        return self._entries.keys()

    def selected(self) -> Iterator[tuple[PrefixKey, tuple[Path, ...]]]:
        """(prefix, ECMP set) for every prefix, for a full FIB resync."""
        for prefix, current in self._entries.items():
            if isinstance(current, Path):
                yield prefix, (current,)
            else:
                yield prefix, current.ranked[: current.ecmp_count]

    def paths_by_next_hop(self, address: IPAddress) -> list[tuple[PrefixKey, Path]]:
        """Every (prefix, path) whose next hop is `address` (failover work proportional to it)."""
        peers = self._next_hops.get(address)
        if not peers:
            return []
        found: list[tuple[PrefixKey, Path]] = []
        verdicts: dict[int, bool] = {}
        for peer_id in peers:
            for key, path in self._peers[peer_id].items():
                hit = verdicts.get(id(path))
                if hit is None:
                    hit = verdicts[id(path)] = path.attributes.next_hop == address
                if hit:
                    found.append((_prefix_of(key), path))
        return found

    def next_hops(self) -> Iterable[IPAddress | None]:
        return self._next_hops.keys()

    def peer_path_count(self, peer_id: str) -> int:
        table = self._peers.get(peer_id)
        return 0 if table is None else len(table)

    def peer_paths(self, peer_id: str) -> Iterator[tuple[PrefixKey, Path]]:
        for key, path in self._peers.get(peer_id, {}).items():
            yield _prefix_of(key), path

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._entries

    # -- internals ---------------------------------------------------------------------------------

    def _release_next_hop(self, path: Path, peer_id: str) -> None:
        next_hop = path.attributes.next_hop
        peers = self._next_hops[next_hop]
        count = peers[peer_id] - 1
        if count:
            peers[peer_id] = count
        else:
            del peers[peer_id]
            if not peers:
                del self._next_hops[next_hop]

    def _add(self, prefix: PrefixKey, current: Path | _Entry, path: Path) -> RibChange | None:
        if isinstance(current, Path):
            return self._decide(prefix, (current, path), current, (current,))
        ranked = current.ranked
        return self._decide(prefix, (*ranked, path), ranked[0], ranked[: current.ecmp_count])

    def _replace(self, prefix: PrefixKey, old: Path, path: Path) -> RibChange | None:
        current = self._entries[prefix]
        if current is old:
            self._entries[prefix] = path
            return RibChange(prefix, old, path, (old,), (path,), _ONLY_PATH)
        assert isinstance(current, _Entry)
        ranked = current.ranked
        candidates = tuple(path if p is old else p for p in ranked)
        return self._decide(prefix, candidates, ranked[0], ranked[: current.ecmp_count])

    def _remove(self, prefix: PrefixKey, old: Path) -> RibChange | None:
        current = self._entries[prefix]
        if current is old:
            del self._entries[prefix]
            return RibChange(prefix, old, None, (old,), (), None)
        assert isinstance(current, _Entry)
        ranked = current.ranked
        candidates = tuple(p for p in ranked if p is not old)
        return self._decide(prefix, candidates, ranked[0], ranked[: current.ecmp_count])

    def _decide(
        self,
        prefix: PrefixKey,
        candidates: tuple[Path, ...],
        old_best: Path,
        old_ecmp: tuple[Path, ...],
    ) -> RibChange | None:
        if len(candidates) == 1:
            best = candidates[0]
            self._entries[prefix] = best
            new_ecmp: tuple[Path, ...] = (best,)
            reason = _ONLY_PATH
        else:
            ranked, count, reason = select(candidates, self.options)
            current = self._entries[prefix]
            if isinstance(current, _Entry):
                current.ranked, current.ecmp_count, current.reason = ranked, count, reason
            else:
                self._entries[prefix] = _Entry(ranked, count, reason)
            best = ranked[0]
            new_ecmp = ranked[:count]
        if best is old_best and _same(new_ecmp, old_ecmp):
            return None
        return RibChange(prefix, old_best, best, old_ecmp, new_ecmp, reason)
