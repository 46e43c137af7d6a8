"""The Loc-RIB: every peer's accepted paths per prefix, the best path and the ECMP set.

Memory shape (a full feed is ~1,000,000 prefixes): a prefix with one path (the common case)
stores the interned Path object itself in `_entries`, no list or entry object; only prefixes
with several candidates get a small `_Entry`. Nothing else is kept per prefix: a peer's previous
path for a prefix is found among that prefix's candidates (by peer id and path id), and which
prefixes a peer has is asked of the peer's `PeerSource`, its Adj-RIB-In, which holds exactly
those keys once its batches have been applied (`attach`). So a peer going down costs O(its
paths) and touches nobody else's prefixes. A peer fed without a source (`update_many` from tests
and tools) gets a key set kept here instead. The next-hop index counts paths per (next hop, peer)
instead of listing prefixes, so it costs nothing per prefix: `paths_by_next_hop` scans only the
peers that use that next hop, and the counts add up to each peer's path count.

Changes are reported as `RibChange` only when the best path or the ECMP set changed, which is all
the FIB and the export side need to act on.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, KeysView, Sequence
from contextlib import contextmanager
from typing import NamedTuple, Protocol

from bgp.rib.decision import DecisionOptions, DecisionReason, select
from bgp.rib.path import Path, PeerInfo, RouteBatch
from bgp.types import IPAddress, PrefixKey

# A peer's path is keyed by its prefix, or by (prefix, path id) for non-zero ADD-PATH ids.
PeerKey = PrefixKey | tuple[PrefixKey, int]

_ONLY_PATH = DecisionReason.ONLY_PATH
_new_tuple = tuple.__new__  # builds a RibChange without the Python-level NamedTuple __new__


# Above this many paths `remove_peer` pauses the cyclic garbage collector: its RibChanges are
# acyclic, and building a million of them otherwise triggers collections that scan them all again.
_PAUSE_COLLECTOR_AT = 10_000


@contextmanager
def _collector_paused(size: int) -> Iterator[None]:
    if size < _PAUSE_COLLECTOR_AT or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class PeerSource(Protocol):
    """Where the Loc-RIB finds which keys one peer has in it: the peer's Adj-RIB-In.

    `rib_keys` lists every key (the prefix, or (prefix, path id) for a non-zero path id) of a
    path the peer has in the Loc-RIB. A source may run ahead of the Loc-RIB by batches it returned
    that are not applied yet: keys the Loc-RIB does not hold are skipped, and paths whose keys the
    source already dropped are found by `remove_peer` searching every prefix (correct, but slow).
    """

    def rib_keys(self) -> Iterable[PeerKey]: ...


class _OwnKeys(dict[PeerKey, None]):
    """The keys of a peer fed without a source: the Loc-RIB keeps them itself."""

    def rib_keys(self) -> Iterable[PeerKey]:
        return self.keys()


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


def _backup(ranked: tuple[Path, ...], count: int) -> Path | None:
    """The best-ranked path through a next hop outside the ECMP set: what carries the traffic if
    every next hop of the set fails (prefix-independent convergence, the FIB's `Backed` hops)."""
    if count == 1:
        first = ranked[0].attributes.next_hop
        for path in ranked[1:]:
            if path.attributes.next_hop != first:
                return path
        return None
    hops = {path.attributes.next_hop for path in ranked[:count]}
    for path in ranked[count:]:
        if path.attributes.next_hop not in hops:
            return path
    return None


def _entry_backup(current: Path | _Entry) -> Path | None:
    return _backup(current.ranked, current.ecmp_count) if type(current) is _Entry else None


def _own(ranked: tuple[Path, ...], peer_id: str, path_id: int) -> Path | None:
    """The peer's path with this path id among a prefix's candidates, if it has one."""
    for path in ranked:
        if path.path_id == path_id and path.peer.peer_id == peer_id:
            return path
    return None


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
        self._sources: dict[str, PeerSource] = {}
        self._next_hops: dict[IPAddress | None, dict[str, int]] = {}
        # Also report a change when only a prefix's backup changed (`backup`): the FIB keeps it
        # next to the next hops, so a failover can move traffic before any per-prefix work.
        self.track_backups = False

    # -- sources -----------------------------------------------------------------------------------

    def attach(self, peer_id: str, source: PeerSource) -> None:
        """List the peer's keys through `source` from now on (a no-op for its current source).

        Only while the peer has no paths here or `source` already is its source: the paths held
        so far would otherwise be listed by nobody (ValueError).
        """
        if self._sources.get(peer_id) is source:
            return
        if self.peer_path_count(peer_id):
            raise ValueError(f"peer {peer_id} already has paths in the Loc-RIB")
        self._sources[peer_id] = source

    def detach(self, peer_id: str) -> list[RibChange]:
        """Forget the peer's source (the peer is removed), dropping any paths it still has here."""
        changes = self.remove_peer(peer_id)
        self._sources.pop(peer_id, None)
        return changes

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
        source = self._sources.get(peer_id)
        if path is None:
            changes = self._withdraw(peer_id, prefixes, path_id)
            if isinstance(source, _OwnKeys):
                for prefix in prefixes:
                    source.pop(prefix if path_id == 0 else (prefix, path_id), None)
                if not source:
                    del self._sources[peer_id]
            return changes
        changes = self._announce(peer_id, prefixes, path, path_id)
        if source is None:
            source = self._sources[peer_id] = _OwnKeys()
        if isinstance(source, _OwnKeys):
            source.update(dict.fromkeys(prefixes if path_id == 0 else [(p, path_id) for p in prefixes]))
        return changes

    def remove_peer(self, peer_id: str) -> list[RibChange]:
        """Drop every path of one peer (session down without graceful restart): O(its paths).

        Call it before emptying the peer's source, which lists what to remove. Should the source
        have lost keys anyway, the next-hop counts show that paths are left, and every prefix is
        searched for them.
        """
        expected = self.peer_path_count(peer_id)
        source = self._sources.get(peer_id)
        if isinstance(source, _OwnKeys):
            del self._sources[peer_id]
        if not expected:
            return []
        with _collector_paused(expected):
            changes, removed = self._remove_listed(peer_id, () if source is None else source.rib_keys())
        if removed < expected:
            changes += self._remove_everywhere(peer_id)
        for next_hop in [nh for nh, peers in self._next_hops.items() if peer_id in peers]:
            peers = self._next_hops[next_hop]
            del peers[peer_id]
            if not peers:
                del self._next_hops[next_hop]
        if not self._entries:
            # A dict never shrinks as keys are deleted: the last peer's million slots would stay.
            self._entries = {}
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

    def backup(self, prefix: PrefixKey) -> Path | None:
        """The path that takes over if every next hop of the prefix's ECMP set fails (`_backup`)."""
        current = self._entries.get(prefix)
        return _entry_backup(current) if current is not None else None

    def sole_next_hops(self, peer_id: str) -> list[IPAddress]:
        """The next hops that only this peer's paths use (O(next hops)): if the peer goes, no path
        through them is left, and each of its prefixes falls to its backup."""
        return [
            hop
            for hop, peers in self._next_hops.items()
            if hop is not None and len(peers) == 1 and peer_id in peers
        ]

    def distinct_next_hops(self) -> int:
        """How many next hops the held paths use (a backup needs at least two)."""
        return len(self._next_hops)

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
            for prefix, path in self.peer_paths(peer_id):
                hit = verdicts.get(id(path))
                if hit is None:
                    hit = verdicts[id(path)] = path.attributes.next_hop == address
                if hit:
                    found.append((prefix, path))
        return found

    def next_hops(self) -> Iterable[IPAddress | None]:
        return self._next_hops.keys()

    def peer_path_count(self, peer_id: str) -> int:
        """How many paths the peer has here (O(next hops), from the next-hop counts)."""
        return sum(peers.get(peer_id, 0) for peers in self._next_hops.values())

    def peer_paths(self, peer_id: str) -> Iterator[tuple[PrefixKey, Path]]:
        """(prefix, path) of every path the peer has here, in its source's key order."""
        source = self._sources.get(peer_id)
        if source is None:
            return
        entries = self._entries
        for key in source.rib_keys():
            prefix, path_id = (key, 0) if isinstance(key, int) else key
            current = entries.get(prefix)
            if current is None:
                continue
            path = _own((current,) if isinstance(current, Path) else current.ranked, peer_id, path_id)
            if path is not None:
                yield prefix, path

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._entries

    # -- internals ---------------------------------------------------------------------------------

    def _announce(
        self, peer_id: str, prefixes: Sequence[PrefixKey], path: Path, path_id: int
    ) -> list[RibChange]:
        changes: list[RibChange] = []
        entries = self._entries
        append = changes.append
        single = (path,)
        acquired = 0
        for prefix in prefixes:
            current = entries.get(prefix)
            if current is None:
                entries[prefix] = path
                append(_new_tuple(RibChange, (prefix, None, path, (), single, _ONLY_PATH)))
                acquired += 1
                continue
            if current is path:
                continue
            if type(current) is Path:
                if current.path_id == path_id and current.peer.peer_id == peer_id:
                    # The peer's only path replaced (a re-announcement with other attributes).
                    entries[prefix] = path
                    self._release_next_hop(current, peer_id)
                    append(_new_tuple(RibChange, (prefix, current, path, (current,), single, _ONLY_PATH)))
                    acquired += 1
                    continue
                change = self._decide(prefix, (current, path), current, (current,))
            else:
                assert isinstance(current, _Entry)
                old = _own(current.ranked, peer_id, path_id)
                if old is path:
                    continue
                if old is None:
                    change = self._add(prefix, current, path)
                else:
                    self._release_next_hop(old, peer_id)
                    change = self._replace(prefix, old, path)
            acquired += 1
            if change is not None:
                append(change)
        if acquired:
            peers = self._next_hops.setdefault(path.attributes.next_hop, {})
            peers[peer_id] = peers.get(peer_id, 0) + acquired
        return changes

    def _withdraw(self, peer_id: str, prefixes: Iterable[PrefixKey], path_id: int) -> list[RibChange]:
        changes: list[RibChange] = []
        entries = self._entries
        for prefix in prefixes:
            current = entries.get(prefix)
            if current is None:
                continue
            old = _own((current,) if isinstance(current, Path) else current.ranked, peer_id, path_id)
            if old is None:
                continue
            self._release_next_hop(old, peer_id)
            change = self._remove(prefix, old)
            if change is not None:
                changes.append(change)
        return changes

    def _remove_listed(self, peer_id: str, keys: Iterable[PeerKey]) -> tuple[list[RibChange], int]:
        """`remove_peer` over the keys its source lists: the changes and how many paths went."""
        changes: list[RibChange] = []
        append = changes.append
        entries = self._entries
        get = entries.get
        # id(path) -> (path,) for the peer's paths of path id 0 seen as a prefix's only path: the
        # common case then costs one lookup, a dict deletion and the change (sharing the tuple).
        alone: dict[int, tuple[Path]] = {}
        known = alone.get
        other = 0  # paths removed among other candidates (they may report no change)
        for key in keys:
            if type(key) is int:
                current = get(key)
                old_ecmp = known(id(current))
                if old_ecmp is not None:
                    del entries[key]
                    append(_new_tuple(RibChange, (key, current, None, old_ecmp, (), None)))
                    continue
                prefix, path_id = key, 0
            else:
                prefix, path_id = key  # type: ignore[misc]
                current = get(prefix)
            if current is None:
                continue
            if type(current) is Path:
                if current.path_id != path_id or current.peer.peer_id != peer_id:
                    continue
                old_ecmp = (current,)
                if path_id == 0:
                    alone[id(current)] = old_ecmp
                del entries[prefix]
                append(_new_tuple(RibChange, (prefix, current, None, old_ecmp, (), None)))
                continue
            assert isinstance(current, _Entry)
            ranked = current.ranked
            if len(ranked) == 2:
                # Failover's common case: the other path is left, no decision to run.
                first, second = ranked
                if first.path_id == path_id and first.peer.peer_id == peer_id:
                    left = second
                elif second.path_id == path_id and second.peer.peer_id == peer_id:
                    left = first
                else:
                    continue
                entries[prefix] = left
                if left is first and current.ecmp_count == 1:
                    if self.track_backups and second.attributes.next_hop != first.attributes.next_hop:
                        append(_new_tuple(RibChange, (prefix, first, first, (first,), (first,), _ONLY_PATH)))
                    else:
                        other += 1  # only the standby went
                else:
                    was = ranked[: current.ecmp_count]
                    append(_new_tuple(RibChange, (prefix, first, left, was, (left,), _ONLY_PATH)))
                continue
            old = _own(ranked, peer_id, path_id)
            if old is None:
                continue
            other += 1
            change = self._remove(prefix, old)
            if change is not None:
                append(change)
                other -= 1  # counted by len(changes)
        return changes, len(changes) + other

    def _remove_everywhere(self, peer_id: str) -> list[RibChange]:
        """Every path of the peer, found by searching all prefixes (for a source that lost keys)."""
        changes: list[RibChange] = []
        for prefix, current in list(self._entries.items()):
            candidates = (current,) if isinstance(current, Path) else current.ranked
            for old in [p for p in candidates if p.peer.peer_id == peer_id]:
                change = self._remove(prefix, old)
                if change is not None:
                    changes.append(change)
        return changes

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
            return _new_tuple(RibChange, (prefix, old, path, (old,), (path,), _ONLY_PATH))
        assert isinstance(current, _Entry)
        ranked = current.ranked
        candidates = tuple(path if p is old else p for p in ranked)
        return self._decide(prefix, candidates, ranked[0], ranked[: current.ecmp_count])

    def _remove(self, prefix: PrefixKey, old: Path) -> RibChange | None:
        current = self._entries[prefix]
        if current is old:
            del self._entries[prefix]
            return _new_tuple(RibChange, (prefix, old, None, (old,), (), None))
        assert isinstance(current, _Entry)
        ranked = current.ranked
        old_best, old_ecmp = ranked[0], ranked[: current.ecmp_count]
        if len(ranked) == 2:
            # Failover's common case: one path is left, no decision to run.
            left = ranked[1] if ranked[0] is old else ranked[0]
            self._entries[prefix] = left
            if left is old_best and len(old_ecmp) == 1:
                # The standby went: a change only for its backup role, when it had one.
                if self.track_backups and old.attributes.next_hop != left.attributes.next_hop:
                    return _new_tuple(RibChange, (prefix, left, left, old_ecmp, old_ecmp, _ONLY_PATH))
                return None
            return _new_tuple(RibChange, (prefix, old_best, left, old_ecmp, (left,), _ONLY_PATH))
        candidates = tuple(p for p in ranked if p is not old)
        return self._decide(prefix, candidates, old_best, old_ecmp)

    def _decide(
        self,
        prefix: PrefixKey,
        candidates: tuple[Path, ...],
        old_best: Path,
        old_ecmp: tuple[Path, ...],
    ) -> RibChange | None:
        track = self.track_backups
        old_backup = _entry_backup(self._entries[prefix]) if track else None
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
        if (
            best is old_best
            and _same(new_ecmp, old_ecmp)
            and (not track or _entry_backup(self._entries[prefix]) is old_backup)
        ):
            return None  # nothing changed (with track_backups: neither did the backup)
        return _new_tuple(RibChange, (prefix, old_best, best, old_ecmp, new_ecmp, reason))
