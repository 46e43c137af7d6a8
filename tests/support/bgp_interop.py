"""Daemon-independent pieces of the BGP interop scenarios (tests/integration/test_bgp_interop_*.py).

Every interop group runs the same lab: host "rs" runs our speaker (KrsSpeaker), host "peer" runs the
real daemon, joined by one veth link carrying 10.0.0.1/24 + 2001:db8::1/64 (rs) and 10.0.0.2/24 +
2001:db8::2/64 (peer). This module owns what a scenario needs to read the same for FRR, BIRD, GoBGP
and ExaBGP: `start_daemon` (one way to start any of them as the peer, through the uniform
InteropDaemon interface of tests/support/daemons/base.py), the canonical routes each side
originates, the exact attributes the other side must then hold, waiting helpers and a Loc-RIB
sampler that proves "no gap". How each daemon shows things is its driver's business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.daemons.base import Capability, InteropDaemon, Neighbor, Route, RouteView, RoutingDaemon
from tests.support.daemons.bird import BirdDaemon, BirdNeighbor
from tests.support.daemons.exabgp import ExabgpDaemon
from tests.support.daemons.frr import FrrDaemon, FrrNeighbor
from tests.support.daemons.gobgp import GobgpDaemon
from tests.support.daemons.krs import KrsNeighbor, KrsSpeaker
from tests.support.netns import Host, Lab

RS_ASN = 4200000001  # 4-octet (RFC 6793): above 65535
PEER_ASN = 4200000002
RS_ASN_2OCTET = 64601  # both ends 2-octet: AS_PATH may travel in 2-octet encoding
PEER_ASN_2OCTET = 64602

ADDRESSES: dict[str, dict[str, str]] = {
    "rs": {"ipv4": "10.0.0.1", "ipv6": "2001:db8::1"},
    "peer": {"ipv4": "10.0.0.2", "ipv6": "2001:db8::2"},
}
RS_ROUTER_ID = "10.0.0.1"
PEER_ROUTER_ID = "10.0.0.2"

# What the peer daemon originates: every attribute we compare, in both families. Communities are
# listed in ascending order so that daemons that sort them on output still compare equal.
PEER_ROUTES: tuple[Route, ...] = (
    Route(
        "203.0.113.0/26",
        as_path_prepend=2,
        med=50,
        communities=("64512:7", "65001:100"),
        large_communities=("4200000002:1:2",),
    ),
    Route("198.51.100.0/25", med=0, communities=("65535:666",)),
    Route("2001:db8:100::/48", as_path_prepend=1, med=20, communities=("64512:9",)),
    Route("2001:db8:101::/48", large_communities=("4200000002:7:7", "4200000002:8:9")),
)
# What our speaker originates towards the peer.
RS_ROUTES: tuple[Route, ...] = (
    Route(
        "203.0.113.128/25",
        as_path_prepend=2,
        med=70,
        communities=("64999:1", "65000:200"),
        large_communities=("4200000001:5:6",),
    ),
    Route("2001:db8:900::/40", as_path_prepend=1, med=30, communities=("64999:2",)),
)


# The daemons the interop scenarios run against, by the name in test ids.
DAEMONS: dict[str, type[InteropDaemon]] = {
    "frr": FrrDaemon,
    "bird": BirdDaemon,
    "gobgp": GobgpDaemon,
    "exabgp": ExabgpDaemon,
}


def daemons_with(*capabilities: Capability) -> list[str]:
    """The daemon names whose driver has every one of `capabilities`."""
    return [kind for kind, cls in DAEMONS.items() if set(capabilities) <= cls.capabilities]


def family_of(prefix: str) -> str:
    """'ipv4' or 'ipv6' for a prefix or an address."""
    return "ipv6" if ":" in prefix else "ipv4"


@dataclass(frozen=True)
class Topology:
    """The two lab hosts and which address family carries the BGP session."""

    rs: Host
    peer: Host
    transport: str  # "ipv4" or "ipv6"

    def rs_address(self, family: str | None = None) -> str:
        """Our address in `family` (default: the session's transport family)."""
        return ADDRESSES["rs"][family or self.transport]

    def peer_address(self, family: str | None = None) -> str:
        """The daemon's address in `family` (default: the session's transport family)."""
        return ADDRESSES["peer"][family or self.transport]


def build_topology(lab: Lab, transport: str = "ipv4") -> Topology:
    """Hosts "rs" and "peer" on one veth link with both address families configured."""
    if transport not in ("ipv4", "ipv6"):
        raise ValueError(transport)
    rs, peer = lab.host("rs"), lab.host("peer")
    lab.link(
        rs,
        peer,
        [f"{ADDRESSES['rs']['ipv4']}/24", f"{ADDRESSES['rs']['ipv6']}/64"],
        [f"{ADDRESSES['peer']['ipv4']}/24", f"{ADDRESSES['peer']['ipv6']}/64"],
    )
    return Topology(rs, peer, transport)


def rs_neighbor(topo: Topology, *, peer_asn: int = PEER_ASN, **options: Any) -> KrsNeighbor:
    """Our neighbour entry for the daemon, with short test timers unless overridden."""
    settings: dict[str, Any] = {"hold_time": 9, "connect_retry": 1, "idle_hold_time": 0.5}
    settings.update(options)
    return KrsNeighbor(topo.peer_address(), peer_asn, **settings)


def start_rs(
    topo: Topology,
    *,
    asn: int = RS_ASN,
    peer_asn: int = PEER_ASN,
    routes: Sequence[Route] = (),
    **neighbor_options: Any,
) -> KrsSpeaker:
    """Start our speaker on host "rs" with one neighbour (the daemon); options go to KrsNeighbor."""
    speaker = KrsSpeaker(
        topo.rs,
        asn=asn,
        router_id=RS_ROUTER_ID,
        neighbors=[rs_neighbor(topo, peer_asn=peer_asn, **neighbor_options)],
        routes=routes,
    )
    speaker.start()
    return speaker


def start_daemon(
    kind: str,
    topo: Topology,
    *,
    asn: int = PEER_ASN,
    rs_asn: int = RS_ASN,
    routes: Sequence[Route] = PEER_ROUTES,
    old_speaker: bool = False,
    daemon_options: Mapping[str, Any] | None = None,
    **neighbor: Any,
) -> InteropDaemon:
    """Start daemon `kind` on host "peer" with our speaker as its one neighbour, short timers unless
    overridden, originating `routes` (ORIGIN IGP).

    `old_speaker`: without the 4-octet AS capability (Capability.OLD_SPEAKER). `daemon_options` go to
    the driver's constructor; `neighbor` options to its Neighbor (FrrNeighbor, BirdNeighbor, ...).
    With graceful restart FRR preserves its forwarding state (the F bit, RFC 4724 §3) like the others.
    """
    cls = DAEMONS[kind]
    if old_speaker and Capability.OLD_SPEAKER not in cls.capabilities:
        raise ValueError(f"{kind} cannot run as an OLD speaker")
    settings: dict[str, Any] = {"hold_time": 9, "connect_retry": 1, **neighbor}
    options: dict[str, Any] = dict(daemon_options or {})
    peer: Neighbor
    if cls is FrrDaemon:
        peer = FrrNeighbor(topo.rs_address(), rs_asn, **settings)
    elif cls is BirdDaemon:
        peer = BirdNeighbor(topo.rs_address(), rs_asn, as4=not old_speaker, **settings)
    else:
        peer = Neighbor(topo.rs_address(), rs_asn, **settings)
    if cls is GobgpDaemon:
        options.setdefault("origin", "igp")  # `gobgp global rib add` would give INCOMPLETE
    elif cls is ExabgpDaemon:
        options.setdefault("asn4", not old_speaker)
    daemon = cls(topo.peer, asn=asn, router_id=PEER_ROUTER_ID, neighbors=[peer], routes=routes, **options)
    if isinstance(daemon, FrrDaemon):
        daemon.gr_preserve_fw_state = peer.graceful_restart
    daemon.start()
    return daemon


def wait_established(rs: KrsSpeaker, daemon: RoutingDaemon, topo: Topology) -> None:
    """Both sides say Established."""
    rs.wait_session(topo.peer_address(), timeout=20)
    daemon.wait_session(topo.rs_address(), timeout=15)


def wait_advertised(daemon: InteropDaemon, topo: Topology, routes: Sequence[Route]) -> dict[str, RouteView]:
    """Wait until the daemon's Adj-RIB-Out towards us holds `routes` (as `originated_as` gives them)
    and return it whole: each route with exactly the attributes it was told to send, its own ASN in
    front and its own address of the family as next hop."""
    want = expected_views(routes, sender_asn=daemon.asn, sender_addresses=ADDRESSES["peer"])
    problems: list[str] = ["not polled"]
    sent: dict[str, RouteView] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sent = daemon.advertised_to(topo.rs_address())
        problems = diff_views(sent, want)
        if not problems:
            break
        time.sleep(0.1)
    assert not problems, f"{daemon.kind}'s Adj-RIB-Out towards us: {problems}"
    return sent


def many_routes(count: int, base: str = "198.51.100") -> list[Route]:
    """`count` distinct IPv4 /32s in base.0/24 (for max-prefix scenarios; count <= 256)."""
    if not 0 < count <= 256:
        raise ValueError(count)
    return [Route(f"{base}.{i}/32") for i in range(count)]


# -- exact attribute comparison ---------------------------------------------------------------------


def expected_view(
    route: Route, *, sender_asn: int, next_hop: str, local_pref: int | None = None
) -> RouteView:
    """What an eBGP receiver must hold for `route` sent by `sender_asn` (one copy plus prepends)."""
    return RouteView(
        prefix=route.prefix,
        next_hop=route.next_hop or next_hop,
        as_path=(sender_asn,) * (1 + route.as_path_prepend),
        med=route.med,
        local_pref=local_pref,
        communities=tuple(route.communities),
        large_communities=tuple(route.large_communities),
    )


def expected_views(
    routes: Iterable[Route], *, sender_asn: int, sender_addresses: Mapping[str, str]
) -> dict[str, RouteView]:
    """Expected views by prefix; the next hop is the sender's address of the route's family."""
    return {
        r.prefix: expected_view(r, sender_asn=sender_asn, next_hop=sender_addresses[family_of(r.prefix)])
        for r in routes
    }


def diff_views(
    got: Mapping[str, RouteView], want: Mapping[str, RouteView], *, compare_local_pref: bool = True
) -> list[str]:
    """Human-readable differences between two prefix -> RouteView maps (only prefixes in `want`)."""
    problems = []
    for prefix, expected in want.items():
        actual = got.get(prefix)
        if actual is None:
            problems.append(f"{prefix}: missing")
            continue
        for name in ("next_hop", "as_path", "med", "local_pref", "communities", "large_communities"):
            if name == "local_pref" and not compare_local_pref:
                continue
            a, e = getattr(actual, name), getattr(expected, name)
            if a != e:
                problems.append(f"{prefix}: {name} is {a!r}, sent {e!r}")
    return problems


def rs_rib(rs: KrsSpeaker) -> dict[str, dict[str, Any]]:
    """Our Loc-RIB best paths, raw rows by prefix (with origin, the peer id and the ECMP set)."""
    return {row["prefix"]: row for row in rs.request("routes")["routes"]}


def wait_rs_holds_exactly(
    rs: KrsSpeaker,
    topo: Topology,
    routes: Sequence[Route],
    *,
    sender_asn: int = PEER_ASN,
    timeout: float = 15.0,
) -> dict[str, RouteView]:
    """Wait until our Loc-RIB holds exactly `routes` as the daemon sent them (origin IGP, from it).

    Exactly: the same prefixes (nothing else) with identical AS path, MED, communities, large
    communities, next hop (the daemon's address of the family) and no LOCAL_PREF (eBGP, RFC 4271 §5.1.5).
    """
    want = expected_views(routes, sender_asn=sender_asn, sender_addresses=ADDRESSES["peer"])
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not polled"]
    got: dict[str, RouteView] = {}
    while time.monotonic() < deadline:
        got = rs.received_routes()
        problems = diff_views(got, want)
        problems += [f"{p}: unexpected" for p in got if p not in want]
        if not problems:
            break
        time.sleep(0.1)
    assert not problems, f"our Loc-RIB differs from what {topo.peer.name} sent: {problems}"
    for prefix, row in rs_rib(rs).items():
        assert row["origin"] == "IGP", f"{prefix}: origin {row['origin']}"
        assert row["peer"] == topo.peer_address(), f"{prefix}: from {row['peer']}"
    return got


def wait_daemon_holds_exactly(
    daemon: RoutingDaemon,
    routes: Sequence[Route],
    *,
    sender_asn: int = RS_ASN,
    timeout: float = 15.0,
) -> dict[str, RouteView]:
    """Wait until the daemon's RIB shows `routes` with the attributes our speaker sent.

    LOCAL_PREF is not compared (a daemon fills in its own default for eBGP routes). Other prefixes
    in its RIB are ignored: the daemon may hold its own routes there.
    """
    want = expected_views(routes, sender_asn=sender_asn, sender_addresses=ADDRESSES["rs"])
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not polled"]
    got: dict[str, RouteView] = {}
    while time.monotonic() < deadline:
        got = daemon.received_routes()
        problems = diff_views(got, want, compare_local_pref=False)
        if not problems:
            break
        time.sleep(0.1)
    assert not problems, f"{daemon.kind}'s RIB differs from what we sent: {problems}"
    return {p: got[p] for p in want}


def wait_gone(daemon: RoutingDaemon, prefixes: Iterable[str], timeout: float = 10.0) -> None:
    """Wait until none of `prefixes` is in the daemon's (or our speaker's) received routes."""
    wanted = set(prefixes)
    deadline = time.monotonic() + timeout
    left = wanted
    while time.monotonic() < deadline:
        left = wanted & set(daemon.received_routes())
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"{daemon.kind} still holds {sorted(left)} after {timeout}s")


# -- our speaker's event log ------------------------------------------------------------------------


def next_event_index(rs: KrsSpeaker) -> int:
    """The index the next event will get; pass it as `since` to look only at what follows."""
    return len(rs.events())


def state_events(rs: KrsSpeaker, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in rs.events(since) if e["type"] == "state"]


def removed_prefixes(rs: KrsSpeaker, prefixes: Iterable[str], since: int = 0) -> list[dict[str, Any]]:
    """RoutesChanged events after `since` that withdrew any of `prefixes` from the Loc-RIB."""
    wanted = set(prefixes)
    return [e for e in rs.events(since) if e["type"] == "routes" and wanted & set(e["removed"])]


def wait_down(rs: KrsSpeaker, peer: str, *, since: int = 0, timeout: float = 15.0) -> dict[str, Any]:
    """Wait for the session with `peer` to leave Established (after event index `since`)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = rs.events(since)
        for event in events:
            if event["type"] == "state" and event["peer"] == peer and event["old"] == "Established":
                return event
        time.sleep(0.05)
    raise AssertionError(f"session with {peer} did not go down within {timeout}s: {events[-10:]}")


def assert_held_down(rs: KrsSpeaker, peer: str, seconds: float = 3.0) -> None:
    """After a max-prefix teardown: for `seconds`, the session stays Idle with one establishment only,
    held by MaxPrefixes (the IdleHold of these speakers is 0.5-2 s, so an automatic restart would show)."""
    deadline = time.monotonic() + seconds
    while True:
        status = rs.peer_status(peer)
        assert status["state"] == "Idle" and status["established_count"] == 1, status
        assert (status["held_idle_reason"], status["held_idle_until"]) == ("MaxPrefixes", None), status
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def wait_end_of_rib(
    rs: KrsSpeaker, peer: str, families: Iterable[str], *, since: int = 0, timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    """Wait for End-of-RIB ("ipv4-unicast", ...) of every family from `peer` after event index `since`."""
    wanted = set(families)
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for event in rs.events(since):
            if event["type"] == "eor" and event["peer"] == peer and event["family"] in wanted:
                found.setdefault(event["family"], event)
        if set(found) == wanted:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no End-of-RIB for {sorted(wanted - set(found))} from {peer} within {timeout}s")


def updates_received(rs: KrsSpeaker, peer: str) -> int:
    return int(rs.peer_status(peer)["updates_received"])


# -- "no gap": sample the Loc-RIB while something happens ---------------------------------------------


@dataclass
class RibSampler:
    """Polls our Loc-RIB in a thread and records every sample in which a watched prefix was missing."""

    rs: KrsSpeaker
    prefixes: frozenset[str]
    interval: float = 0.05
    samples: int = 0
    gaps: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                held = set(self.rs.received_routes())
            except Exception as exc:  # the control socket must answer throughout
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                self.samples += 1
                missing = self.prefixes - held
                if missing:
                    self.gaps.append((time.monotonic(), tuple(sorted(missing))))
            self._stop.wait(self.interval)

    def take_more(self, count: int, timeout: float = 5.0) -> None:
        """Block until `count` more samples were taken, so the sampling covers the moment of the call."""
        target = self.samples + count
        poll(lambda: self.samples >= target or bool(self.errors), f"{count} more RIB samples", timeout)

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def sample_rib(rs: KrsSpeaker, prefixes: Iterable[str], interval: float = 0.05) -> Iterator[RibSampler]:
    """Run a RibSampler for the duration of the block; assert on `.gaps` / `.samples` afterwards."""
    sampler = RibSampler(rs, frozenset(prefixes), interval)
    thread = threading.Thread(target=sampler.run, name="rib-sampler", daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop()
        thread.join(timeout=10)


def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until predicate() holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def tcp_ext_counter(host: Host, name: str) -> int:
    """A TcpExt counter of the host's network namespace (/proc/net/netstat is per namespace)."""
    lines = host.run("cat", "/proc/net/netstat").stdout.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=True):
        if header.startswith("TcpExt:"):
            return int(dict(zip(header.split(), values.split(), strict=True))[name])
    raise AssertionError("no TcpExt counters")


def never_established(rs: KrsSpeaker, daemon: RoutingDaemon, topo: Topology, seconds: float) -> None:
    """Neither side reaches Established for `seconds` (e.g. a TCP-MD5 key mismatch)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert rs.session_state(topo.peer_address()) != "Established"
        assert daemon.session_state(topo.rs_address()) != "Established"
        time.sleep(0.1)
    assert rs.peer_status(topo.peer_address())["established_count"] == 0


def check_refreshed_after_restart(
    rs: KrsSpeaker,
    topo: Topology,
    sampler: RibSampler,
    *,
    kept: Sequence[str],
    dropped: Sequence[str],
    survivors: Sequence[Route],
    since: int,
) -> None:
    """After a graceful restart (RFC 4724 §4.2): no gap for what came back; what did not come back
    stayed (stale) until its family's End-of-RIB, then was flushed; nothing is stale afterwards."""
    assert not sampler.errors
    assert sampler.samples >= 6  # the test took samples while the daemon was away and after it came back
    assert [g for g in sampler.gaps if set(g[1]) & set(kept)] == []
    assert removed_prefixes(rs, kept, since) == []
    events = rs.events(since)
    up = next(i for i, e in enumerate(events) if e["type"] == "state" and e["new"] == "Established")
    for prefix in dropped:
        family = "ipv6-unicast" if ":" in prefix else "ipv4-unicast"
        removals = [i for i, e in enumerate(events) if e["type"] == "routes" and prefix in e["removed"]]
        eor = next(i for i, e in enumerate(events) if e["type"] == "eor" and e["family"] == family)
        assert len(removals) == 1, f"{prefix} removed at events {removals}"
        # Flushed by its family's End-of-RIB: the removal is the event right before it.
        assert up < removals[0] == eor - 1, f"{prefix} flushed at event {removals[0]}, End-of-RIB {eor}"
    wait_rs_holds_exactly(rs, topo, survivors)
    status = rs.peer_status(topo.peer_address())
    assert status["prefixes_stale"] == 0
    assert status["established_count"] == 2
