"""Our speaker against FRR (bgpd 8.x) in a two-host lab: host "rs" runs our speaker, host "peer" FRR.

Each test reads both sides: our status snapshot, event log and Loc-RIB (tests/support/daemons/krs.py)
and FRR's own view through vtysh JSON (its Adj-RIB-Out, RIB, message counters and the last
NOTIFICATION it exchanged). Scenario pieces shared with the other daemons are in
tests/support/bgp_interop.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from tests.support.bgp_interop import (
    PEER_ASN,
    PEER_ASN_2OCTET,
    PEER_ROUTER_ID,
    PEER_ROUTES,
    RS_ASN,
    RS_ASN_2OCTET,
    RS_ROUTES,
    Topology,
    assert_held_down,
    build_topology,
    family_of,
    many_routes,
    next_event_index,
    removed_prefixes,
    sample_rib,
    start_rs,
    updates_received,
    wait_daemon_holds_exactly,
    wait_down,
    wait_end_of_rib,
    wait_gone,
    wait_rs_holds_exactly,
)
from tests.support.daemons.base import Route
from tests.support.daemons.frr import FrrDaemon, FrrNeighbor, FrrNotification
from tests.support.daemons.krs import KrsSpeaker
from tests.support.netns import Lab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.interop]


def start_frr(
    topo: Topology,
    *,
    asn: int = PEER_ASN,
    rs_asn: int = RS_ASN,
    routes: Sequence[Route] = PEER_ROUTES,
    **neighbor: object,
) -> FrrDaemon:
    """FRR on host "peer" with one neighbour (our speaker) and short timers."""
    options: dict[str, object] = {"hold_time": 9, "connect_retry": 1}
    options.update(neighbor)
    frr = FrrDaemon(
        topo.peer,
        asn=asn,
        router_id=PEER_ROUTER_ID,
        neighbors=[FrrNeighbor(topo.rs_address(), rs_asn, **options)],  # type: ignore[arg-type]
        routes=routes,
    )
    # Graceful restart with forwarding state preserved (the F bit, RFC 4724 §3): zebra keeps the FIB.
    frr.gr_preserve_fw_state = bool(options.get("graceful_restart"))
    frr.start()
    return frr


def frr_sent(frr: FrrDaemon, topo: Topology, routes: Sequence[Route], timeout: float = 10.0) -> list[Route]:
    """What FRR says it sends us (its Adj-RIB-Out towards us), as the Routes we then must hold.

    FRR's `network` statement gives a locally originated route MED 0 when no MED is set, so the MED
    comes from FRR's Adj-RIB-Out; everything else must be exactly what its route-maps set.
    """
    wanted = {r.prefix for r in routes}
    out = {}

    def complete() -> bool:
        nonlocal out
        out = frr.advertised_routes(topo.rs_address())
        return wanted <= set(out)

    wait_until(complete, timeout, what="FRR's Adj-RIB-Out towards us")
    sent = []
    for route in routes:
        view = out[route.prefix]
        assert view.as_path == (frr.asn,) * route.as_path_prepend, view  # FRR adds its own ASN on egress
        assert route.med is None or view.med == route.med, view
        assert view.next_hop is None, view  # next hop self
        sent.append(replace(route, med=view.med))
    return sent


def _established(rs: KrsSpeaker, frr: FrrDaemon, topo: Topology) -> None:
    rs.wait_session(topo.peer_address(), timeout=20)
    frr.wait_session(topo.rs_address(), timeout=10)


# -- session, attributes, withdraw, origination ---------------------------------------------------------


EXCHANGE_CASES = [
    pytest.param("ipv4", RS_ASN, PEER_ASN, True, id="ipv4-4octet"),
    pytest.param("ipv6", RS_ASN, PEER_ASN, True, id="ipv6-4octet"),
    pytest.param("ipv4", RS_ASN_2OCTET, PEER_ASN_2OCTET, True, id="ipv4-2octet"),
    pytest.param("ipv6", RS_ASN_2OCTET, PEER_ASN_2OCTET, True, id="ipv6-2octet"),
    # FRR's dont-capability-negotiate: a plain RFC 4271 OPEN, so IPv4 unicast only (RFC 4760 §8) and
    # AS_PATH in 2-octet encoding (RFC 6793 §4.2.2: no 4-octet capability).
    pytest.param("ipv4", RS_ASN_2OCTET, PEER_ASN_2OCTET, False, id="ipv4-2octet-no-capabilities"),
]


@pytest.mark.parametrize(("transport", "rs_asn", "peer_asn", "capabilities"), EXCHANGE_CASES)
def test_session_up_routes_exchanged_with_exact_attributes_and_withdrawn(
    lab: Lab, transport: str, rs_asn: int, peer_asn: int, capabilities: bool
) -> None:
    topo = build_topology(lab, transport)
    families = ("ipv4", "ipv6") if capabilities else ("ipv4",)
    peer_routes = [r for r in PEER_ROUTES if family_of(r.prefix) in families]
    rs_routes = [r for r in RS_ROUTES if family_of(r.prefix) in families]
    frr = start_frr(
        topo,
        asn=peer_asn,
        rs_asn=rs_asn,
        routes=PEER_ROUTES,
        capability_negotiation=capabilities,
        families=families,
    )
    rs = start_rs(topo, asn=rs_asn, peer_asn=peer_asn, routes=RS_ROUTES)
    _established(rs, frr, topo)

    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert negotiated["peer_asn"] == peer_asn
    assert negotiated["four_octet_as"] is capabilities
    assert negotiated["route_refresh"] is capabilities
    assert negotiated["families"] == [f"{f}-unicast" for f in families]
    assert negotiated["hold_time"] == 9

    # Received: exactly what FRR sent, attribute for attribute.
    sent = frr_sent(frr, topo, peer_routes)
    wait_rs_holds_exactly(rs, topo, sent, sender_asn=peer_asn)
    assert rs.peer_status(topo.peer_address())["prefixes_accepted"] == len(peer_routes)
    # Originated: FRR's RIB shows our routes with the attributes we gave them.
    wait_daemon_holds_exactly(frr, rs_routes, sender_asn=rs_asn)

    # Withdraw one prefix per family each way; the rest stays untouched.
    gone = [p for p in ("198.51.100.0/25", "2001:db8:101::/48") if family_of(p) in families]
    frr.withdraw(gone)
    wait_gone(rs, gone)
    wait_rs_holds_exactly(rs, topo, [r for r in sent if r.prefix not in gone], sender_asn=peer_asn)
    rs.withdraw([r.prefix for r in rs_routes[:1]])
    wait_gone(frr, [rs_routes[0].prefix])
    wait_daemon_holds_exactly(frr, rs_routes[1:], sender_asn=rs_asn)


# -- route refresh -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_route_refresh_in_both_directions(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    _established(rs, frr, topo)
    sent = frr_sent(frr, topo, PEER_ROUTES)
    wait_rs_holds_exactly(rs, topo, sent)
    wait_daemon_holds_exactly(frr, RS_ROUTES)
    peer, us = topo.peer_address(), topo.rs_address()
    assert rs.peer_status(peer)["negotiated"]["enhanced_route_refresh"] is True

    # We ask FRR: it counts our ROUTE-REFRESH per family and re-sends its table (RFC 2918 §4), bracketed
    # by BoRR/EoRR (RFC 7313): the routes are refreshed in place, never withdrawn on the way.
    stats = frr.message_stats(us)
    updates = updates_received(rs, peer)
    since = next_event_index(rs)
    with sample_rib(rs, [r.prefix for r in PEER_ROUTES]) as sampler:
        assert sorted(rs.refresh(peer)) == ["ipv4-unicast", "ipv6-unicast"]
        wait_until(
            lambda: frr.message_stats(us)["routeRefreshRecv"] >= stats["routeRefreshRecv"] + 2,
            10,
            what="FRR to count our two ROUTE-REFRESH messages",
        )
        wait_until(
            lambda: updates_received(rs, peer) >= updates + len(PEER_ROUTES),
            10,
            what="FRR's re-sent UPDATEs",
        )
    assert sampler.samples > 0 and not sampler.gaps and not sampler.errors
    assert removed_prefixes(rs, [r.prefix for r in PEER_ROUTES], since) == []
    wait_rs_holds_exactly(rs, topo, sent)

    # FRR asks us (`clear bgp X soft in`): we answer with our whole table again.
    stats = frr.message_stats(us)
    frr.soft_clear_in(us)
    wait_until(
        lambda: frr.message_stats(us)["routeRefreshSent"] >= stats["routeRefreshSent"] + 2,
        10,
        what="FRR to send ROUTE-REFRESH",
    )
    wait_until(
        lambda: frr.message_stats(us)["updatesRecv"] >= stats["updatesRecv"] + len(RS_ROUTES),
        10,
        what="our re-sent UPDATEs at FRR",
    )
    wait_daemon_holds_exactly(frr, RS_ROUTES)
    assert frr.session_state(us) == "Established"
    assert rs.peer_status(peer)["established_count"] == 1


# -- graceful restart ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_graceful_restart_of_frr_keeps_routes_stale_then_refreshes_without_gap(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    _established(rs, frr, topo)
    sent = frr_sent(frr, topo, PEER_ROUTES)
    wait_rs_holds_exactly(rs, topo, sent)
    peer = topo.peer_address()
    assert rs.peer_status(peer)["negotiated"]["graceful_restart"] is True
    gr = frr.neighbor(topo.rs_address())["gracefulRestartInfo"]
    assert gr["localGrMode"] == "Restart" and gr["remoteGrMode"] in ("Helper", "Restart")

    # The restarted bgpd changes its table: one route gets a new MED (must be refreshed), one IPv6
    # route is no longer originated (must be flushed at End-of-RIB), the others come back unchanged.
    changed, dropped = "203.0.113.0/26", "2001:db8:101::/48"
    after = [replace(r, med=51) if r.prefix == changed else r for r in PEER_ROUTES if r.prefix != dropped]
    kept = [r.prefix for r in after]
    since = next_event_index(rs)
    with sample_rib(rs, kept) as sampler:
        frr.restart_bgpd(routes=after)
        down = wait_down(rs, peer, since=since)
        assert down["reason"] == "TcpConnectionFails" and down["notification"] is None
        wait_until(
            lambda: f"{peer}: graceful restart, {len(PEER_ROUTES)} paths stale" in rs.log_text(),
            5,
            what="our speaker to keep FRR's paths stale",
        )
        eor = wait_end_of_rib(rs, peer, ["ipv4-unicast", "ipv6-unicast"], since=since)
        wait_rs_holds_exactly(rs, topo, frr_sent(frr, topo, after))
    assert sampler.samples > 5 and not sampler.errors
    assert sampler.gaps == [], f"Loc-RIB gaps during the restart: {sampler.gaps[:5]}"

    events = rs.events(since)
    stale_kept = [e for e in events if e["type"] == "routes" and set(e["removed"]) & set(kept)]
    assert stale_kept == [], stale_kept
    # The route the restarted FRR no longer has stayed (stale) until its family's End-of-RIB flushed it.
    flushed = [i for i, e in enumerate(events) if e["type"] == "routes" and dropped in e["removed"]]
    back_up = [i for i, e in enumerate(events) if e["type"] == "state" and e["new"] == "Established"]
    assert len(flushed) == 1 and len(back_up) == 1 and flushed[0] > back_up[0], events
    assert events[flushed[0] + 1] == eor["ipv6-unicast"], events
    status = rs.peer_status(peer)
    assert status["established_count"] == 2
    assert status["prefixes_stale"] == 0
    assert status["prefixes_accepted"] == len(after)


# -- TCP-MD5 -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tcp_md5_mismatch_is_reported_and_the_matching_key_establishes(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo, password="frr-side-key")
    rs = start_rs(topo, password="krs-side-key", routes=RS_ROUTES)
    peer, us = topo.peer_address(), topo.rs_address()

    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        assert rs.session_state(peer) != "Established"
        time.sleep(0.1)
    status = rs.peer_status(peer)
    assert status["established_count"] == 0
    # The kernel drops badly signed segments silently; our status names the likely cause.
    assert "TCP-MD5" in (status["last_error"] or ""), status["last_error"]
    assert rs.status()["kernel_drops"]["TCPMD5Failure"] > 0
    assert frr.session_state(us) != "Established"

    frr.set_password(us, "krs-side-key")
    _established(rs, frr, topo)
    wait_daemon_holds_exactly(frr, RS_ROUTES)
    wait_rs_holds_exactly(rs, topo, frr_sent(frr, topo, PEER_ROUTES))
    assert "krs-side-key" not in rs.log_text() and "frr-side-key" not in rs.log_text()


# -- liveness and errors ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_hold_timer_expires_when_frr_freezes_and_its_routes_go(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    _established(rs, frr, topo)
    wait_rs_holds_exactly(rs, topo, frr_sent(frr, topo, PEER_ROUTES))
    peer = topo.peer_address()
    assert rs.peer_status(peer)["negotiated"]["hold_time"] == 3

    since = next_event_index(rs)
    frr.pause()
    try:
        down = wait_down(rs, peer, since=since, timeout=8)  # 3 s hold plus slack; 90 s would fail
    finally:
        frr.resume()
    assert down["reason"] == "HoldTimerExpires"
    assert down["notification"] == {"code": 4, "subcode": 0}
    status = rs.peer_status(peer)
    assert status["last_notification_sent"]["name"] == "Hold Timer Expired"
    assert status["last_transition"] == "HoldTimerExpires"
    assert removed_prefixes(rs, [r.prefix for r in PEER_ROUTES], since)
    assert not ({r.prefix for r in PEER_ROUTES} & set(rs.received_routes()))


def test_wrong_peer_as_is_refused_with_notification_2_2_seen_by_frr(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo)
    rs = start_rs(topo, peer_asn=PEER_ASN + 7)  # FRR really is PEER_ASN
    peer, us = topo.peer_address(), topo.rs_address()

    def bad_peer_as_at_frr() -> list[FrrNotification]:
        return [n for n in frr.notifications(us) if n.received and (n.code, n.subcode) == (2, 2)]

    wait_until(bad_peer_as_at_frr, 15, what="FRR to log our NOTIFICATION 2/2")
    assert bad_peer_as_at_frr()[0].text == "OPEN Message Error/Bad Peer AS"
    status = rs.peer_status(peer)
    sent = status["last_notification_sent"]
    assert (sent["code"], sent["subcode"]) == (2, 2)
    assert sent["name"] == "OPEN Message Error/Bad Peer AS"
    assert status["last_transition"] == "OpenMessageError"
    assert f"peer AS {PEER_ASN}" in status["last_transition_detail"]
    assert status["established_count"] == 0
    assert frr.session_state(us) != "Established"


def test_max_prefix_teardown_sends_cease_6_1_frr_reports_it_and_the_session_stays_idle(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo, routes=many_routes(10))
    rs = start_rs(topo, max_prefix=5)
    peer, us = topo.peer_address(), topo.rs_address()

    limit = rs.wait_event(lambda e: e["type"] == "prefix_limit", timeout=15, what="max-prefix event")
    assert (limit["event"], limit["limit"]) == ("TEARDOWN", 5)
    down = wait_down(rs, peer)
    assert down["reason"] == "MaxPrefixes"
    assert down["notification"] == {"code": 6, "subcode": 1}
    sent = rs.peer_status(peer)["last_notification_sent"]
    assert sent["name"] == "Cease/Maximum Number of Prefixes Reached"

    def cease_at_frr() -> list[FrrNotification]:
        return [n for n in frr.notifications(us) if n.received and (n.code, n.subcode) == (6, 1)]

    wait_until(cease_at_frr, 10, what="FRR to log our Cease 6/1")
    assert cease_at_frr()[0].text == "Cease/Maximum Number of Prefixes Reached"
    last = frr.last_notification(us)
    assert last is not None and last.received and (last.code, last.subcode) == (6, 1), last
    assert rs.received_routes() == {}
    # Held Idle (RFC 4271 §8.1.1, automatic start off): no reconnect after the 0.5 s IdleHold.
    assert_held_down(rs, peer)
    assert rs.session_state(peer) != "Established"


# -- import policy ---------------------------------------------------------------------------------------


def test_deny_by_default_receives_frr_routes_but_accepts_none(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    frr = start_frr(topo)
    rs = start_rs(topo, allowed=(), routes=RS_ROUTES)  # no allow-list at all (RFC 8212)
    _established(rs, frr, topo)
    peer = topo.peer_address()

    def all_rejected() -> bool:
        status = rs.peer_status(peer)
        return bool(status["rejected_by_reason"].get("NotAllowed", 0) >= len(PEER_ROUTES))

    wait_until(all_rejected, 10, what="FRR's routes to be rejected NotAllowed")
    status = rs.peer_status(peer)
    assert status["prefixes_received"] >= len(PEER_ROUTES)
    assert status["prefixes_accepted"] == 0
    assert status["rejected_by_reason"]["NotAllowed"] == len(PEER_ROUTES)
    # FRR also reflects our own routes back (it does no sender-side loop check); those are AS loops.
    assert set(status["rejected_by_reason"]) <= {"NotAllowed", "AsLoop"}
    assert rs.received_routes() == {}
    # Import policy only: what we originate still reaches FRR.
    wait_daemon_holds_exactly(frr, RS_ROUTES)
