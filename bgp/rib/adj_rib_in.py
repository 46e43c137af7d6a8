"""Adj-RIB-In of one peer: import policy, accepted paths, counters, max-prefix and graceful restart.

It holds the paths that passed import policy (RFC 4271 §3.2; rejected routes are only counted and
sampled, never stored, so a peer flooding denied prefixes costs no memory; a wider policy is
picked up with ROUTE-REFRESH, RFC 2918). Every intake call returns `RouteBatch`es for the Loc-RIB
containing only what changed: re-announcing an identical path yields nothing.

Per prefix the table stores one pointer to an interned `Path` (one per attribute set and path id),
keyed by the prefix key int (or (prefix, path id) for non-zero ADD-PATH ids, RFC 7911). It is
also the Loc-RIB's only list of this peer's prefixes (`rib_keys`, the `PeerSource` of
bgp.rib.loc_rib): the Loc-RIB keeps no per-peer copy, so `clear` must come after
`LocRib.remove_peer`.

Graceful restart (RFC 4724 §4.2, receiving speaker): when the session drops, `mark_stale` moves
each family's table aside in O(1); re-announced paths move back into the fresh table (replaced if
their attributes changed, never withdrawn in between), and `flush_stale` on End-of-RIB or the
restart/stale timer withdraws what the peer did not re-announce.

Max-prefix (`MaxPrefix`, counted over accepted paths): WARN never caps intake; REJECT and TEARDOWN
accept new paths only while there is room (replacing a held path is always allowed) and refuse the
rest with RejectReason.MAX_PREFIX. Refused paths are not kept (like BIRD's `block`): withdrawals make
room for later announcements, and `refused_since_clear` tells the caller that a ROUTE-REFRESH
(RFC 2918) is needed to get the refused ones back once a new limit leaves room for them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

from bgp.rib.path import Path, PeerInfo, RouteBatch
from bgp.rib.policy import (
    ImportPolicy,
    MaxPrefix,
    MaxPrefixAction,
    MaxPrefixEvent,
    PrefixCheck,
    RejectReason,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, Family, PathAttributes, PrefixKey, key_family

PeerKey = PrefixKey | tuple[PrefixKey, int]

FAMILIES = (IPV4_UNICAST, IPV6_UNICAST)
INTERN_CACHE_SIZE = 16384


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected route, kept in a short ring buffer for status pages."""

    prefix: PrefixKey
    path_id: int
    reason: RejectReason


@dataclass(slots=True)
class IntakeCounters:
    """Cumulative counts for metrics (bounded: one entry per RejectReason at most)."""

    received: int = 0  # prefixes announced by the peer
    withdrawn: int = 0  # prefixes withdrawn by the peer
    accepted: int = 0  # announcements that passed import policy
    rejected: dict[RejectReason, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(slots=True)
class IntakeResult:
    """What one intake call did: batches for `LocRib.apply`, in order, and a max-prefix signal."""

    changes: list[RouteBatch] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    max_prefix: MaxPrefixEvent | None = None


def _group(target: dict[int, list[PrefixKey]], path_id: int, prefix: PrefixKey) -> None:
    group = target.get(path_id)
    if group is None:
        target[path_id] = [prefix]
    else:
        group.append(prefix)


class AdjRibIn:
    """The routes one peer sent us that import policy accepted."""

    def __init__(
        self,
        peer: PeerInfo,
        policy: ImportPolicy,
        max_prefix: MaxPrefix | None = None,
        *,
        rejection_samples: int = 32,
    ) -> None:
        self.peer = peer
        self._policy = policy
        self.max_prefix = max_prefix
        self.counters = IntakeCounters()
        self.recent_rejections: deque[Rejection] = deque(maxlen=rejection_samples)
        self._fresh: dict[Family, dict[PeerKey, Path]] = {f: {} for f in FAMILIES}
        self._stale: dict[Family, dict[PeerKey, Path]] = {f: {} for f in FAMILIES}
        self._count = 0
        self._threshold_warned = False
        self._exceeded_warned = False
        # Paths refused for max-prefix since the table was last emptied: the peer thinks we hold them.
        self.refused_since_clear = 0
        # Recently seen attribute objects -> their Path, keyed by id(attributes) (plus the path id
        # when non-zero): the codec interns attribute objects, so identity is the cheap lookup,
        # and the cached Path keeps its attributes alive, so an id cannot be reused while cached.
        # Bounded and simply cleared when full: a miss only costs one more Path object, and an
        # equal re-announcement is still recognised by value (see `announce`).
        self._interned: dict[int | tuple[int, int], Path] = {}

    @property
    def policy(self) -> ImportPolicy:
        """Read-only: `set_policy` changes it and re-checks the held paths."""
        return self._policy

    # -- intake ------------------------------------------------------------------------------------

    def announce(
        self,
        family: Family,
        prefixes: Sequence[PrefixKey],
        attributes: PathAttributes,
        path_ids: Sequence[int] = (),
    ) -> IntakeResult:
        """Prefixes of one family sharing one attribute set (one `Reach` of an UPDATE)."""
        result = IntakeResult()
        total = len(prefixes)
        self.counters.received += total
        fresh = self._table(family)
        if not total:
            return result
        if path_ids and len(path_ids) != total:
            raise ValueError("path_ids must be parallel to prefixes")
        reason = self._policy.check_attributes(attributes, self.peer)
        if reason is not None:
            self._reject_all(family, prefixes, path_ids, reason, result)
            return result
        check = self._policy.prefix_check(family)
        stale = self._stale[family]
        room = self._room(total)
        if not path_ids and not stale and room is None:
            self._announce_plain(fresh, prefixes, self._intern(attributes, 0), check, result)
            return result
        paths: dict[int, Path] = {}
        accepted: dict[int, list[PrefixKey]] = {}
        rejected: list[Rejection] = []
        equal: dict[int, bool] = {}
        added = 0
        tripped = False
        for index, prefix in enumerate(prefixes):
            path_id = path_ids[index] if path_ids else 0
            key: PeerKey = prefix if path_id == 0 else (prefix, path_id)
            if check is not None:
                verdict = check(prefix)
                if verdict is not None:
                    # Never a held path: those passed this check (set_policy re-checks them).
                    rejected.append(Rejection(prefix, path_id, verdict))
                    continue
            path = paths.get(path_id)
            if path is None:
                path = paths[path_id] = self._intern(attributes, path_id)
            old = fresh.get(key)
            refreshed = False
            if old is None and stale:
                old = stale.pop(key, None)
                refreshed = old is not None
            if old is None:
                if room is not None:
                    if room <= 0:
                        rejected.append(Rejection(prefix, path_id, RejectReason.MAX_PREFIX))
                        self.refused_since_clear += 1
                        tripped = True
                        continue
                    room -= 1
                added += 1
            else:
                # Same Path, or a new attributes object with the same content (a new codec
                # cache after a restart): no change, keep the old Path rather than churn the
                # Loc-RIB. A refreshed stale path simply becomes fresh again (RFC 4724 §4.2).
                same = old is path
                if not same:
                    cached = equal.get(id(old))
                    same = equal[id(old)] = old == path if cached is None else cached
                if same:
                    if refreshed:
                        fresh[key] = old
                    continue
            fresh[key] = path
            _group(accepted, path_id, prefix)
        self._count += added
        result.accepted = total - len(rejected)
        self.counters.accepted += result.accepted
        for path_id, group in accepted.items():
            result.changes.append(RouteBatch(self.peer, paths[path_id], group, path_id))
        self._record(rejected, result)
        result.max_prefix = self._max_prefix_event(tripped)
        return result

    def _announce_plain(
        self,
        fresh: dict[PeerKey, Path],
        prefixes: Sequence[PrefixKey],
        path: Path,
        check: PrefixCheck | None,
        result: IntakeResult,
    ) -> None:
        """`announce` for the common case: no ADD-PATH, no stale paths, no max-prefix cap in reach.

        The same steps as the general loop with everything that cannot happen left out, since
        this loop runs once per received prefix.
        """
        accepted: list[PrefixKey] = []
        rejected: list[Rejection] = []
        equal: dict[int, bool] = {}
        added = 0
        get = fresh.get
        append = accepted.append
        for prefix in prefixes:
            if check is not None:
                verdict = check(prefix)
                if verdict is not None:
                    rejected.append(Rejection(prefix, 0, verdict))
                    continue
            old = get(prefix)
            if old is None:
                added += 1
            elif old is path:
                continue
            else:
                same = equal.get(id(old))
                if same is None:
                    same = equal[id(old)] = old == path
                if same:
                    continue
            fresh[prefix] = path
            append(prefix)
        self._count += added
        result.accepted = len(prefixes) - len(rejected)
        self.counters.accepted += result.accepted
        if accepted:
            result.changes.append(RouteBatch(self.peer, path, accepted))
        self._record(rejected, result)
        result.max_prefix = self._max_prefix_event(False)

    def withdraw(
        self, family: Family, prefixes: Sequence[PrefixKey], path_ids: Sequence[int] = ()
    ) -> IntakeResult:
        """Withdrawn prefixes of one family (one `Unreach`); unknown or rejected ones are no-ops."""
        result = IntakeResult()
        self.counters.withdrawn += len(prefixes)
        fresh = self._table(family)
        stale = self._stale[family]
        if path_ids and len(path_ids) != len(prefixes):
            raise ValueError("path_ids must be parallel to prefixes")
        removed: dict[int, list[PrefixKey]] = {}
        count = 0
        for index, prefix in enumerate(prefixes):
            path_id = path_ids[index] if path_ids else 0
            key: PeerKey = prefix if path_id == 0 else (prefix, path_id)
            if fresh.pop(key, None) is not None or (stale and stale.pop(key, None) is not None):
                _group(removed, path_id, prefix)
                count += 1
        self._count -= count
        result.changes = [RouteBatch(self.peer, None, group, path_id) for path_id, group in removed.items()]
        result.max_prefix = self._max_prefix_event(False)
        return result

    # -- graceful restart (RFC 4724 §4.2) ----------------------------------------------------------

    def mark_stale(self, families: Iterable[Family] | None = None) -> int:
        """The session went down with GR: keep the paths, marked stale. Returns how many."""
        marked = 0
        for family in FAMILIES if families is None else families:
            fresh = self._table(family)
            if not fresh:
                continue
            marked += len(fresh)
            stale = self._stale[family]
            if stale:
                stale.update(fresh)  # restarted again before End-of-RIB: both sets stay stale
                fresh.clear()
            else:
                self._stale[family] = fresh
                self._fresh[family] = {}
        return marked

    def flush_stale(self, family: Family) -> list[RouteBatch]:
        """End-of-RIB (or the restart/stale timer) for `family`: withdraw what was not refreshed."""
        self._table(family)
        stale = self._stale[family]
        if not stale:
            return []
        self._stale[family] = {}
        self._count -= len(stale)
        removed: dict[int, list[PrefixKey]] = {}
        for key in stale:
            if isinstance(key, int):
                _group(removed, 0, key)
            else:
                _group(removed, key[1], key[0])
        self._max_prefix_event(False)
        return [RouteBatch(self.peer, None, group, path_id) for path_id, group in removed.items()]

    def stale_families(self) -> list[Family]:
        return [family for family, stale in self._stale.items() if stale]

    def clear(self) -> int:
        """Session down without GR: forget everything, after `LocRib.remove_peer` has listed it."""
        dropped = self._count
        self._fresh = {f: {} for f in FAMILIES}
        self._stale = {f: {} for f in FAMILIES}
        self._count = 0
        self._threshold_warned = self._exceeded_warned = False
        self.refused_since_clear = 0
        return dropped

    # -- reconfiguration ---------------------------------------------------------------------------

    def set_policy(self, policy: ImportPolicy) -> IntakeResult:
        """Apply a new import policy to the held paths; what it now rejects is withdrawn.

        Routes the old policy rejected were not kept: after widening a policy the caller asks
        the peer for a ROUTE-REFRESH (RFC 2918) to receive them again.
        """
        self._policy = policy
        result = IntakeResult()
        rejected: list[Rejection] = []
        removed: dict[int, list[PrefixKey]] = {}
        verdicts: dict[int, RejectReason | None] = {}
        for family in FAMILIES:
            check = policy.prefix_check(family)
            for table in (self._fresh[family], self._stale[family]):
                doomed: list[PeerKey] = []
                for key, path in table.items():
                    prefix, path_id = (key, 0) if isinstance(key, int) else key
                    if id(path) in verdicts:
                        verdict = verdicts[id(path)]
                    else:
                        verdict = verdicts[id(path)] = policy.check_attributes(path.attributes, self.peer)
                    if verdict is None and check is not None:
                        verdict = check(prefix)
                    if verdict is not None:
                        doomed.append(key)
                        rejected.append(Rejection(prefix, path_id, verdict))
                        _group(removed, path_id, prefix)
                for key in doomed:
                    del table[key]
                self._count -= len(doomed)
        result.changes = [RouteBatch(self.peer, None, group, path_id) for path_id, group in removed.items()]
        self._record(rejected, result)
        result.max_prefix = self._max_prefix_event(False)
        return result

    def set_max_prefix(self, max_prefix: MaxPrefix | None) -> IntakeResult:
        """Apply a changed limit to the held paths.

        Warnings re-arm (a new limit earns its own threshold warning). Over a lowered REJECT limit the
        most recently learned paths are withdrawn as MAX_PREFIX rejections (stale ones first), so the
        table holds at most the limit as it would after a fresh session; over a TEARDOWN limit the
        result says TEARDOWN and the caller closes the session (FRR re-checks a changed limit the
        same way); over a WARN limit it says EXCEEDED.
        """
        self.max_prefix = max_prefix
        self._threshold_warned = self._exceeded_warned = False
        result = IntakeResult()
        if max_prefix is None:
            return result
        excess = self._count - max_prefix.limit
        if max_prefix.action is MaxPrefixAction.REJECT and excess > 0:
            rejected: list[Rejection] = []
            removed: dict[int, list[PrefixKey]] = {}
            newest = tuple(reversed(FAMILIES))
            tables = [self._stale[f] for f in newest] + [self._fresh[f] for f in newest]
            for table in tables:
                doomed: list[PeerKey] = []
                for key in reversed(table):  # dicts keep insertion order: newest first
                    if len(doomed) == excess:
                        break
                    doomed.append(key)
                for key in doomed:
                    del table[key]
                    prefix, path_id = (key, 0) if isinstance(key, int) else key
                    rejected.append(Rejection(prefix, path_id, RejectReason.MAX_PREFIX))
                    _group(removed, path_id, prefix)
                excess -= len(doomed)
                self._count -= len(doomed)
            self.refused_since_clear += len(rejected)
            result.changes = [RouteBatch(self.peer, None, group, pid) for pid, group in removed.items()]
            self._record(rejected, result)
            result.max_prefix = self._max_prefix_event(True)
            return result
        result.max_prefix = self._max_prefix_event(False)
        return result

    def set_peer(self, peer: PeerInfo) -> None:
        """New session parameters (e.g. router id after a restart); new paths carry them."""
        if peer.peer_id != self.peer.peer_id:
            raise ValueError("an Adj-RIB-In belongs to one peer id")
        self.peer = peer
        self._interned = {}

    # -- queries -----------------------------------------------------------------------------------

    def get(self, prefix: PrefixKey, path_id: int = 0) -> Path | None:
        key: PeerKey = prefix if path_id == 0 else (prefix, path_id)
        family = key_family(prefix)
        path = self._fresh[family].get(key)
        return self._stale[family].get(key) if path is None else path

    def is_stale(self, prefix: PrefixKey, path_id: int = 0) -> bool:
        key: PeerKey = prefix if path_id == 0 else (prefix, path_id)
        return key in self._stale[key_family(prefix)]

    def items(self, family: Family) -> Iterator[tuple[PrefixKey, Path]]:
        """(prefix, path) of every held path of the family, fresh and stale."""
        for table in (self._fresh[family], self._stale[family]):
            for key, path in table.items():
                yield (key if isinstance(key, int) else key[0]), path

    def rib_keys(self) -> Iterator[PeerKey]:
        """Every held key, fresh and stale (the Loc-RIB's `PeerSource`: what this peer has there).

        Withdrawals leave the tables together with the batch that carries them to the Loc-RIB, so
        once those are applied the keys are exactly the peer's keys in the Loc-RIB.
        """
        return chain.from_iterable(table for f in FAMILIES for table in (self._fresh[f], self._stale[f]))

    def count(self, family: Family | None = None) -> int:
        """Accepted paths held (fresh and stale)."""
        if family is None:
            return self._count
        return len(self._fresh[family]) + len(self._stale[family])

    def stale_count(self, family: Family | None = None) -> int:
        families = FAMILIES if family is None else (family,)
        return sum(len(self._stale[f]) for f in families)

    def __len__(self) -> int:
        return self._count

    # -- internals ---------------------------------------------------------------------------------

    def _table(self, family: Family) -> dict[PeerKey, Path]:
        try:
            return self._fresh[family]
        except KeyError:
            raise ValueError(f"unsupported family {family}") from None

    def _intern(self, attributes: PathAttributes, path_id: int) -> Path:
        key = id(attributes) if path_id == 0 else (id(attributes), path_id)
        path = self._interned.get(key)
        if path is None:
            if len(self._interned) >= INTERN_CACHE_SIZE:
                self._interned.clear()
            path = self._interned[key] = Path(self.peer, attributes, path_id)
        return path

    def _reject_all(
        self,
        family: Family,
        prefixes: Sequence[PrefixKey],
        path_ids: Sequence[int],
        reason: RejectReason,
        result: IntakeResult,
    ) -> None:
        """Attributes unacceptable: every prefix is rejected and held ones withdrawn."""
        fresh, stale = self._fresh[family], self._stale[family]
        removed: dict[int, list[PrefixKey]] = {}
        count = 0
        if fresh or stale:
            for index, prefix in enumerate(prefixes):
                path_id = path_ids[index] if path_ids else 0
                key: PeerKey = prefix if path_id == 0 else (prefix, path_id)
                if fresh.pop(key, None) is not None or (stale and stale.pop(key, None) is not None):
                    _group(removed, path_id, prefix)
                    count += 1
        self._count -= count
        result.changes = [RouteBatch(self.peer, None, group, path_id) for path_id, group in removed.items()]
        total = len(prefixes)
        result.rejected = total
        self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + total
        samples = self.recent_rejections
        start = max(0, total - (samples.maxlen or 0))
        for index in range(start, total):
            samples.append(Rejection(prefixes[index], path_ids[index] if path_ids else 0, reason))
        result.max_prefix = self._max_prefix_event(False)

    def _record(self, rejected: list[Rejection], result: IntakeResult) -> None:
        if not rejected:
            return
        result.rejected = len(rejected)
        counts = self.counters.rejected
        for rejection in rejected:
            counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
        self.recent_rejections.extend(rejected[-(self.recent_rejections.maxlen or 0) :])

    def _room(self, incoming: int) -> int | None:
        """How many new paths fit under a REJECT/TEARDOWN limit; None when no cap is in reach."""
        limit = self.max_prefix
        if limit is None or limit.action is MaxPrefixAction.WARN or self._count + incoming <= limit.limit:
            return None
        return limit.limit - self._count

    def _max_prefix_event(self, tripped: bool) -> MaxPrefixEvent | None:
        """Warn and reject once per crossing (re-armed when the count falls back), teardown every time.

        `tripped`: this step refused paths for lack of room.
        """
        limit = self.max_prefix
        if limit is None:
            return None
        count = self._count
        threshold = limit.threshold
        if count < threshold:
            self._threshold_warned = False
        reject = limit.action is MaxPrefixAction.REJECT
        # Under REJECT the count stops at the limit: only room freed below it ends the crossing.
        if count < limit.limit or (count == limit.limit and not reject):
            self._exceeded_warned = False
        if limit.action is MaxPrefixAction.TEARDOWN and (tripped or count > limit.limit):
            self._threshold_warned = self._exceeded_warned = True
            return MaxPrefixEvent.TEARDOWN
        if tripped if reject else count > limit.limit:
            if self._exceeded_warned:
                return None
            self._threshold_warned = self._exceeded_warned = True
            return MaxPrefixEvent.REJECTED if reject else MaxPrefixEvent.EXCEEDED
        if count >= threshold and count > 0 and not self._threshold_warned:
            self._threshold_warned = True
            return MaxPrefixEvent.THRESHOLD
        return None
