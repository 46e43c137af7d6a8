"""The per-route routing database behind `/routes` (AWS GetRouteServerRoutingDatabase), one page at a time.

Owns: `RoutesQuery` (a parsed request), `RouteIndex` (a route server's prefixes in address order,
built cooperatively and cached per FIB version) and `routes_page`, the pure function that builds one
page from a route server's live state: every path the Loc-RIB holds for a prefix (peer, next hop,
AS path, origin, MED, local preference, communities, stale), the import-policy rejections still in
the Adj-RIB-In's sample ring, the winning path(s) and the decision step, the FIB's next hops
(held or live) and each table's state (installed, pending, rejected with the writer's reason, or
filtered out).

Cost. A page is O(limit) work plus two bisections: nothing is copied or sorted per request. The
index is what makes `after` O(log n): a sorted list of Loc-RIB keys (plus held FIB prefixes the RIB
no longer has). Building it is O(n log n), so it is never done inside one loop step: the keys are
copied (one C-level list), sorted in runs of SORT_RUN and merged in slices of MERGE_SLICE, yielding
to the loop between steps. An index is current while the FIB's `version` is unchanged; a stale
one is rebuilt on the next request, awaited when the table is small (at most SYNC_KEYS, a few ms)
and otherwise in the background at most once per REBUILD_SECONDS while the stale one keeps serving:
paging by `after` stays correct over any index (a prefix that left is skipped when its page is
built, one learned since the build shows up after the next rebuild).

Rejected paths: import policy rejections are not kept in the RIB (bgp/rib/adj_rib_in.py: a peer
flooding denied prefixes costs no memory); only the last few per peer are sampled, so a rejected
path is listed only while its sample is in that ring, and a prefix every peer's policy rejected
has no route here at all.

Must not touch: anything; it reads the route server, its speaker's RIBs (bgp.api.Speaker), its FIB
and its tables.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_network
from typing import TYPE_CHECKING

from bgp.rib.adj_rib_in import AdjRibIn
from bgp.rib.loc_rib import LocRib
from bgp.rib.path import Path
from bgp.types import PrefixKey, key_str, prefix_key
from controller.desired import Hops, Prefix, SelectionMode

if TYPE_CHECKING:
    from controller.runtime.ports import TableWriter
    from controller.runtime.route_server import RouteServerRuntime
    from controller.runtime.tables import TableRuntime

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000  # a page is built on the loop in one step: ~7 µs per route at 1M routes, so <= ~7 ms
SORT_RUN = 8192  # keys sorted per loop step while building an index (~ms each)
MERGE_SLICE = 16384  # merged keys per loop step
SYNC_KEYS = 8192  # at most this many prefixes: a stale index is rebuilt before the page is served
REBUILD_SECONDS = 5.0  # larger tables: a stale index is rebuilt at most this often
SCAN_FACTOR = 4  # keys looked at per page at most (limit x this): vanished prefixes cost bounded work
REJECTIONS_NOTE = (
    "import policy rejections are not kept in the RIB: only the most recent ones per peer are sampled"
)

Json = dict[str, object]


@dataclass(frozen=True, slots=True)
class RoutesQuery:
    """One `/routes` request: which route server, the page's cursor and size, an optional filter."""

    route_server: str
    after: PrefixKey | None = None
    limit: int = DEFAULT_LIMIT
    within: Prefix | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> RoutesQuery:
        """From query parameters (routeServer, after, limit, prefix); ValueError says what is wrong."""
        name = params.get("routeServer", "")
        if not name:
            raise ValueError("routeServer is required")
        after = params.get("after") or None
        try:
            after_key = prefix_key(ip_network(after)) if after is not None else None
        except ValueError:
            raise ValueError(f"after: {after!r} is not a prefix") from None
        text = params.get("limit") or str(DEFAULT_LIMIT)
        try:
            limit = int(text)
        except ValueError:
            raise ValueError(f"limit: {text!r} is not a number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
        within_text = params.get("prefix") or None
        try:
            within = ip_network(within_text) if within_text is not None else None
        except ValueError:
            raise ValueError(f"prefix: {within_text!r} is not a prefix (host bits set?)") from None
        return cls(name, after_key, limit, within)


def key_range(within: Prefix) -> tuple[PrefixKey, PrefixKey]:
    """The keys of every prefix inside `within` (itself included): one contiguous range.

    A key is (address << 8 | length): prefixes inside `within` have an address in its range and a
    length at least its own; the only shorter ones with an address in that range start at its first
    address, so they sort just below `prefix_key(within)`.
    """
    low = prefix_key(within)
    high = (low & ~0xFF) + ((within.num_addresses - 1) << 8) + 0xFF
    return low, high


class RouteIndex:
    """A route server's prefixes (Loc-RIB keys and held FIB prefixes) in address order (module docstring)."""

    def __init__(self) -> None:
        self.keys: list[PrefixKey] = []
        self.version: int | None = None  # the FIB version it was built at; None: never built
        self.source: object = None  # the Loc-RIB it was built from (a new speaker has a new one)
        self.built_at = 0.0
        self.build_seconds = 0.0
        self._building: asyncio.Task[None] | None = None

    def current(self, rs: RouteServerRuntime) -> bool:
        return self.version == rs.fib.version and self.source is _rib_of(rs)

    async def get(self, rs: RouteServerRuntime) -> list[PrefixKey]:
        """The index to page over: rebuilt first if stale and small (or new), else in the background."""
        if self.current(rs):
            return self.keys
        rib = _rib_of(rs)
        size = (len(rib) if rib is not None else 0) + len(rs.fib.persisted())
        if self.version is None or size <= SYNC_KEYS or self.source is not rib:
            await self._build_once(rs)
        elif time.monotonic() - self.built_at >= REBUILD_SECONDS and self._building is None:
            self._building = asyncio.get_running_loop().create_task(self._build(rs), name=f"routes-{rs.name}")
            self._building.add_done_callback(self._built)
        return self.keys

    async def _build_once(self, rs: RouteServerRuntime) -> None:
        if self._building is None:
            self._building = asyncio.get_running_loop().create_task(self._build(rs), name=f"routes-{rs.name}")
            self._building.add_done_callback(self._built)
        await asyncio.shield(self._building)

    def _built(self, task: asyncio.Task[None]) -> None:
        if self._building is task:
            self._building = None
        if not task.cancelled():
            task.exception()  # retrieved: a failed build is retried by the next request

    def close(self) -> None:
        if self._building is not None:
            self._building.cancel()
            self._building = None

    async def _build(self, rs: RouteServerRuntime) -> None:
        started = time.monotonic()
        version = rs.fib.version
        rib = _rib_of(rs)
        keys = list(rib.prefixes()) if rib is not None else []  # one C-level copy
        held = list(rs.fib.persisted())
        for start in range(0, len(held), SORT_RUN):
            await asyncio.sleep(0)
            for key in held[start : start + SORT_RUN]:
                if rib is None or key not in rib:
                    keys.append(key)
        del held
        runs: list[list[PrefixKey]] = []
        for start in range(0, len(keys), SORT_RUN):
            run = keys[start : start + SORT_RUN]
            run.sort()
            runs.append(run)
            await asyncio.sleep(0)
        del keys
        if len(runs) <= 1:
            merged = runs[0] if runs else []
        else:
            merged = []
            stream = heapq.merge(*runs)
            while chunk := list(itertools.islice(stream, MERGE_SLICE)):
                merged.extend(chunk)
                await asyncio.sleep(0)
        self.keys, self.version, self.source = merged, version, rib
        self.built_at = time.monotonic()
        self.build_seconds = self.built_at - started


def _rib_of(rs: RouteServerRuntime) -> LocRib | None:
    return rs.speaker.loc_rib if rs.speaker is not None else None


@dataclass(frozen=True, slots=True)
class RoutesPage:
    """One page: each route is already JSON text (built from fragments shared across the page)."""

    route_server: str
    routes: list[str]
    next: str | None  # the cursor for `after`; None: this was the last page
    total: int  # routes in the index (within the filter)
    index_age: float  # seconds since the index was built

    def encode(self) -> bytes:
        head = {
            "routeServer": self.route_server,
            "next": self.next,
            "total": self.total,
            "indexAgeSeconds": round(self.index_age, 3),
            "rejectedPaths": REJECTIONS_NOTE,
        }
        return (json.dumps(head)[:-1] + ',"routes":[' + ",".join(self.routes) + "]}").encode()

    def to_json(self) -> Json:
        data: Json = json.loads(self.encode())
        return data


def routes_page(rs: RouteServerRuntime, keys: list[PrefixKey], query: RoutesQuery) -> RoutesPage:
    """One page of `rs`'s routes in address order over the sorted `keys` (module docstring)."""
    low, high = 0, len(keys)
    if query.within is not None:
        first, last = key_range(query.within)
        low, high = bisect_left(keys, first), bisect_right(keys, last)
    start = low if query.after is None else max(low, bisect_right(keys, query.after))
    builder = _PageBuilder(rs)
    routes: list[str] = []
    limit = query.limit
    scan_end = min(high, start + limit * SCAN_FACTOR)
    index = start
    previous: PrefixKey | None = None
    while index < scan_end and len(routes) < limit:
        key = keys[index]
        index += 1
        if key == previous:
            continue  # a prefix that joined the RIB while the index was built can be there twice
        previous = key
        route = builder.route(key)
        if route is not None:
            routes.append(route)
    following = key_str(keys[index - 1]) if index < high and index > start else None
    age = time.monotonic() - rs.route_index.built_at
    return RoutesPage(rs.name, routes, following, high - low, age)


_dumps = json.dumps
_BOOL = ("false", "true")


class _PageBuilder:
    """Per-page lookups and JSON fragments: each shared Path, address and table is encoded once."""

    def __init__(self, rs: RouteServerRuntime) -> None:
        self.rs = rs
        self.fib = rs.fib
        speaker = rs.speaker
        self.rib = speaker.loc_rib if speaker is not None else None
        self.ecmp = rs.desired.selection.mode is SelectionMode.ECMP
        self.paths: dict[int, str] = {}
        self.text: dict[int, str] = {}
        self.keep: list[object] = []  # an id stays unique only while its object lives
        self.rejected: dict[PrefixKey, list[str]] = {}
        self.adj: dict[str, AdjRibIn] = {}
        if speaker is not None:
            for name in rs.peers:
                try:
                    adj = speaker.adj_rib_in(name)
                except KeyError:
                    continue
                if adj is None:
                    continue
                self.adj[name] = adj
                address = str(adj.peer.address)
                for sample in adj.recent_rejections:
                    fragment = {
                        "peer": name,
                        "peerAddress": address,
                        "pathId": sample.path_id,
                        "status": "Rejected",
                        "reason": sample.reason.value,
                    }
                    self.rejected.setdefault(sample.prefix, []).append(_dumps(fragment))
        self.tables: list[tuple[TableRuntime, str, TableWriter | None]] = [
            (t, '{"table":' + _dumps(t.name), t.writer) for t in rs.tables.values()
        ]

    def describe(self, path: Path) -> str:
        """The path's attributes as the start of a JSON object (no closing brace)."""
        known = self.paths.get(id(path))
        if known is None:
            attrs = path.attributes
            peer = path.peer
            fields = {
                "peer": peer.peer_id,
                "peerAddress": str(peer.address),
                "peerAsn": peer.asn,
                "pathId": path.path_id,
                "nextHop": str(attrs.next_hop) if attrs.next_hop is not None else None,
                "asPath": str(attrs.as_path),
                "origin": attrs.origin.name,
                "med": attrs.med,
                "localPref": attrs.local_pref,
                "communities": [f"{c >> 16}:{c & 0xFFFF}" for c in attrs.communities],
                "largeCommunities": [
                    f"{c.global_admin}:{c.local1}:{c.local2}" for c in attrs.large_communities
                ],
                "status": "Accepted",
            }
            known = self.paths[id(path)] = _dumps(fields)[:-1]
            self.keep.append(path)
        return known

    def addresses(self, hops: Hops) -> str:
        """Next hops as a JSON array; each address object is formatted once per page (hops are shared)."""
        cache = self.text
        out = []
        for hop in hops:
            text = cache.get(id(hop))
            if text is None:
                text = cache[id(hop)] = f'"{hop}"'
                self.keep.append(hop)
            out.append(text)
        return "[" + ",".join(out) + "]"

    def route(self, key: PrefixKey) -> str | None:
        rib = self.rib
        hops, held = self.fib.lookup(key)
        candidates: tuple[Path, ...] = rib.candidates(key) if rib is not None else ()
        if not candidates and not hops:
            return None  # gone since the index was built
        paths: list[str] = []
        winners: list[str] = []
        reason = "null"
        if candidates:
            assert rib is not None
            won = rib.ecmp(key) if self.ecmp else candidates[:1]
            decided = rib.reason(key)
            if decided is not None:
                reason = f'"{decided.value}"'
            adjs = self.adj
            for path in candidates:
                best = path is won[0] or (len(won) > 1 and any(w is path for w in won))
                adj = adjs.get(path.peer.peer_id)
                stale = adj is not None and adj.is_stale(key, path.path_id)
                paths.append(f'{self.describe(path)},"best":{_BOOL[best]},"stale":{_BOOL[stale]}}}')
                if best:
                    winners.append(_dumps(path.peer.peer_id))
        rejected = self.rejected.get(key)
        if rejected:
            paths.extend(rejected)
        text = key_str(key)
        hop_text = self.addresses(hops)
        tables = ",".join(
            self.table_state(table, head, writer, key, hops, hop_text) for table, head, writer in self.tables
        )
        return (
            f'{{"prefix":"{text}","rib":[{",".join(paths)}],'
            f'"best":{{"peers":[{",".join(winners)}],"reason":{reason}}},'
            f'"fib":{{"nextHops":{hop_text},"held":{_BOOL[held]}}},"tables":[{tables}]}}'
        )

    def table_state(
        self,
        table: TableRuntime,
        head: str,
        writer: TableWriter | None,
        prefix: PrefixKey,
        hops: Hops,
        hop_text: str,
    ) -> str:
        there = writer.installed_route(prefix) if writer is not None else None
        if there:
            same = there is hops or there == hops  # (`Backed` hops compare with their backup)
            there_text = hop_text if same else self.addresses(there)
            return f'{head},"state":"Installed","nextHops":{there_text},"inSync":{_BOOL[same]}}}'
        rejection = table.rejected.get(prefix) if table.rejected else None
        if rejection is not None:
            reason, message = rejection.reason.value, _dumps(rejection.message)
            return f'{head},"state":"Rejected","reason":"{reason}","message":{message}}}'
        if not table.passes(prefix):
            return f'{head},"state":"Filtered"}}'
        if writer is None:
            return f'{head},"state":"NotOpen"}}'
        return f'{head},"state":"{"Pending" if prefix in table._pending else "NotInstalled"}"}}'
