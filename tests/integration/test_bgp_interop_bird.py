"""Our speaker against BIRD 2 in a two-host lab: host "rs" runs our speaker, host "peer" BIRD.

Each test reads both sides: our status snapshot, event log and Loc-RIB (tests/support/daemons/krs.py)
and BIRD's own view through birdc (what it exports to us, its RIB, its per-channel route counters
and the NOTIFICATIONs it logged). BIRD 2.0.12 may hold its last UPDATE for up to ~3 s, so waits on
what it sends allow for that. Scenario pieces shared with the other daemons are in
tests/support/bgp_interop.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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
from tests.support.daemons.bird import BirdDaemon, BirdNeighbor
from tests.support.daemons.krs import KrsSpeaker
from tests.support.netns import Lab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.interop]

BIRD_WAIT = 10.0  # BIRD's delayed last UPDATE (~3 s) plus slack


def start_bird(
    topo: Topology,
    *,
    asn: int = PEER_ASN,
    rs_asn: int = RS_ASN,
    routes: Sequence[Route] = PEER_ROUTES,
    **neighbor: object,
) -> BirdDaemon:
    """BIRD on host "peer" with one neighbour (our speaker, protocol peer_0) and short timers."""
    options: dict[str, object] = {"hold_time": 9, "connect_retry": 1}
    options.update(neighbor)
    bird = BirdDaemon(
        topo.peer,
        asn=asn,
        router_id=PEER_ROUTER_ID,
        neighbors=[BirdNeighbor(topo.rs_address(), rs_asn, **options)],  # type: ignore[arg-type]
        routes=routes,
    )
    bird.start()
    return bird


def bird_sent(bird: BirdDaemon, topo: Topology, routes: Sequence[Route]) -> list[Route]:
    """What BIRD says it sends us (its export to peer_0), as the Routes we then must hold.

    BIRD's export view shows the attributes after its export filter; it adds its own ASN on the wire.
    They must be exactly the configured ones (BIRD adds no MED of its own).
    """
    wanted = {r.prefix for r in routes}
    out = {}

    def complete() -> bool:
        nonlocal out
        out = bird.exported_routes(topo.rs_address())
        return wanted <= set(out)

    wait_until(complete, BIRD_WAIT, what="BIRD's export to us")
    sent = []
    for route in routes:
        view = out[route.prefix]
        as_sent = Route(
            route.prefix,
            as_path_prepend=len(view.as_path),
            med=view.med,
            communities=view.communities,
            large_communities=view.large_communities,
        )
        assert view.as_path == (bird.asn,) * len(view.as_path), view
        assert view.next_hop is None, view  # next hop self
        assert as_sent == route, (as_sent, route)
        sent.append(as_sent)
    return sent


def _established(rs: KrsSpeaker, bird: BirdDaemon, topo: Topology) -> None:
    rs.wait_session(topo.peer_address(), timeout=20)
    bird.wait_session(topo.rs_address(), timeout=10)


def _received_by_bird(bird: BirdDaemon, topo: Topology, code: int, subcode: int) -> list[str]:
    us = topo.rs_address()
    return [text for c, s, text in bird.notifications_received(us) if (c, s) == (code, subcode)]


def _import_updates(bird: BirdDaemon, topo: Topology) -> int:
    stats = bird.route_stats(topo.rs_address())
    return sum(int(channel["Import updates"]["received"] or 0) for channel in stats.values())


def _export_updates(bird: BirdDaemon, topo: Topology) -> int:
    stats = bird.route_stats(topo.rs_address())
    return sum(int(channel["Export updates"]["accepted"] or 0) for channel in stats.values())


# -- session, attributes, withdraw, origination ---------------------------------------------------------


EXCHANGE_CASES = [
    pytest.param("ipv4", RS_ASN, PEER_ASN, True, id="ipv4-4octet"),
    pytest.param("ipv6", RS_ASN, PEER_ASN, True, id="ipv6-4octet"),
    # BIRD's `enable as4 off`: no 4-octet AS capability, AS_PATH in 2-octet encoding (RFC 6793).
    pytest.param("ipv4", RS_ASN_2OCTET, PEER_ASN_2OCTET, False, id="ipv4-2octet"),
    pytest.param("ipv6", RS_ASN_2OCTET, PEER_ASN_2OCTET, False, id="ipv6-2octet"),
]


@pytest.mark.parametrize(("transport", "rs_asn", "peer_asn", "as4"), EXCHANGE_CASES)
def test_session_up_routes_exchanged_with_exact_attributes_and_withdrawn(
    lab: Lab, transport: str, rs_asn: int, peer_asn: int, as4: bool
) -> None:
    topo = build_topology(lab, transport)
    bird = start_bird(topo, asn=peer_asn, rs_asn=rs_asn, as4=as4)
    rs = start_rs(topo, asn=rs_asn, peer_asn=peer_asn, routes=RS_ROUTES)
    _established(rs, bird, topo)

    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert negotiated["peer_asn"] == peer_asn
    assert negotiated["four_octet_as"] is as4
    assert negotiated["families"] == ["ipv4-unicast", "ipv6-unicast"]
    assert negotiated["hold_time"] == 9
    assert f"external{' AS4' if as4 else ''}\n" in bird.protocol_text(topo.rs_address())

    # Received: exactly what BIRD exports to us, attribute for attribute.
    sent = bird_sent(bird, topo, PEER_ROUTES)
    wait_rs_holds_exactly(rs, topo, sent, sender_asn=peer_asn, timeout=BIRD_WAIT)
    assert rs.peer_status(topo.peer_address())["prefixes_accepted"] == len(PEER_ROUTES)
    # Originated: BIRD's RIB shows our routes with the attributes we gave them.
    wait_daemon_holds_exactly(bird, RS_ROUTES, sender_asn=rs_asn)

    # Withdraw one prefix per family each way; the rest stays untouched.
    gone = ["198.51.100.0/25", "2001:db8:101::/48"]
    bird.withdraw(gone)
    wait_gone(rs, gone, timeout=BIRD_WAIT)
    wait_rs_holds_exactly(rs, topo, [r for r in sent if r.prefix not in gone], sender_asn=peer_asn)
    rs.withdraw([RS_ROUTES[0].prefix])
    wait_gone(bird, [RS_ROUTES[0].prefix])
    wait_daemon_holds_exactly(bird, RS_ROUTES[1:], sender_asn=rs_asn)


# -- route refresh -----------------------------------------------------------------------------------


def test_route_refresh_in_both_directions(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    _established(rs, bird, topo)
    sent = bird_sent(bird, topo, PEER_ROUTES)
    wait_rs_holds_exactly(rs, topo, sent, timeout=BIRD_WAIT)
    wait_daemon_holds_exactly(bird, RS_ROUTES)
    peer = topo.peer_address()
    assert rs.peer_status(peer)["negotiated"]["enhanced_route_refresh"] is True

    # We ask BIRD: it re-exports its table to us (RFC 2918 §4) between BoRR and EoRR (RFC 7313), and
    # the routes are refreshed in place, never withdrawn on the way.
    exported = _export_updates(bird, topo)
    updates = updates_received(rs, peer)
    since = next_event_index(rs)
    with sample_rib(rs, [r.prefix for r in PEER_ROUTES]) as sampler:
        assert sorted(rs.refresh(peer)) == ["ipv4-unicast", "ipv6-unicast"]
        wait_until(
            lambda: _export_updates(bird, topo) >= exported + len(PEER_ROUTES),
            BIRD_WAIT,
            what="BIRD to re-export its routes to us",
        )
        wait_until(
            lambda: updates_received(rs, peer) >= updates + len(PEER_ROUTES),
            BIRD_WAIT,
            what="BIRD's re-sent UPDATEs",
        )
    assert sampler.samples > 0 and not sampler.gaps and not sampler.errors
    assert removed_prefixes(rs, [r.prefix for r in PEER_ROUTES], since) == []
    wait_rs_holds_exactly(rs, topo, sent)

    # BIRD asks us (`birdc reload in`): we answer with our whole table again, which BIRD counts as
    # received import updates (ignored: nothing changed).
    imported = _import_updates(bird, topo)
    bird.reload_in(topo.rs_address())
    wait_until(
        lambda: _import_updates(bird, topo) >= imported + len(RS_ROUTES),
        BIRD_WAIT,
        what="our re-sent UPDATEs at BIRD",
    )
    wait_daemon_holds_exactly(bird, RS_ROUTES)
    assert bird.session_state(topo.rs_address()) == "Established"
    assert rs.peer_status(peer)["established_count"] == 1


# -- graceful restart ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_graceful_restart_of_bird_keeps_routes_stale_then_refreshes_without_gap(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    _established(rs, bird, topo)
    wait_rs_holds_exactly(rs, topo, bird_sent(bird, topo, PEER_ROUTES), timeout=BIRD_WAIT)
    peer = topo.peer_address()
    assert rs.peer_status(peer)["negotiated"]["graceful_restart"] is True

    # The restarted BIRD changes its table: one route gets a new MED (must be refreshed), one IPv6
    # route is no longer originated (must be flushed at End-of-RIB), the others come back unchanged.
    changed, dropped = "203.0.113.0/26", "2001:db8:101::/48"
    after = [
        Route(r.prefix, as_path_prepend=r.as_path_prepend, med=51, communities=r.communities)
        if r.prefix == changed
        else r
        for r in PEER_ROUTES
        if r.prefix != dropped
    ]
    kept = [r.prefix for r in after]
    since = next_event_index(rs)
    with sample_rib(rs, kept) as sampler:
        bird.graceful_restart(routes=after)
        down = wait_down(rs, peer, since=since)
        # `birdc graceful restart` closes the session without a NOTIFICATION (RFC 4724 §4.2).
        assert down["reason"] == "TcpConnectionFails" and down["notification"] is None
        wait_until(
            lambda: f"{peer}: graceful restart, {len(PEER_ROUTES)} paths stale" in rs.log_text(),
            5,
            what="our speaker to keep BIRD's paths stale",
        )
        eor = wait_end_of_rib(rs, peer, ["ipv4-unicast", "ipv6-unicast"], since=since)
        wait_rs_holds_exactly(rs, topo, bird_sent(bird, topo, after))
    assert sampler.samples > 5 and not sampler.errors
    assert sampler.gaps == [], f"Loc-RIB gaps during the restart: {sampler.gaps[:5]}"
    # BIRD restarted in recovery mode: Restart bit and forwarding state preserved (RFC 4724 §3).
    text = bird.protocol_text(topo.rs_address())
    assert "Restart recovery" in text and "AF preserved: ipv4 ipv6" in text

    events = rs.events(since)
    stale_kept = [e for e in events if e["type"] == "routes" and set(e["removed"]) & set(kept)]
    assert stale_kept == [], stale_kept
    # The route the restarted BIRD no longer has stayed (stale) until its family's End-of-RIB flushed it.
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
    bird = start_bird(topo, password="bird-side-key")
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
    assert bird.session_state(us) != "Established"

    bird.set_password(us, "krs-side-key")
    _established(rs, bird, topo)
    wait_daemon_holds_exactly(bird, RS_ROUTES)
    wait_rs_holds_exactly(rs, topo, bird_sent(bird, topo, PEER_ROUTES), timeout=BIRD_WAIT)
    assert "krs-side-key" not in rs.log_text() and "bird-side-key" not in rs.log_text()


# -- liveness and errors ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_hold_timer_expires_when_bird_freezes_and_its_routes_go(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    _established(rs, bird, topo)
    wait_rs_holds_exactly(rs, topo, bird_sent(bird, topo, PEER_ROUTES), timeout=BIRD_WAIT)
    peer = topo.peer_address()
    assert rs.peer_status(peer)["negotiated"]["hold_time"] == 3

    since = next_event_index(rs)
    bird.pause()
    try:
        down = wait_down(rs, peer, since=since, timeout=8)  # 3 s hold plus slack; 90 s would fail
    finally:
        bird.resume()
    assert down["reason"] == "HoldTimerExpires"
    assert down["notification"] == {"code": 4, "subcode": 0}
    status = rs.peer_status(peer)
    assert status["last_notification_sent"]["name"] == "Hold Timer Expired"
    assert status["last_transition"] == "HoldTimerExpires"
    assert removed_prefixes(rs, [r.prefix for r in PEER_ROUTES], since)
    assert not ({r.prefix for r in PEER_ROUTES} & set(rs.received_routes()))


def test_wrong_peer_as_is_refused_with_notification_2_2_seen_by_bird(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo)
    rs = start_rs(topo, peer_asn=PEER_ASN + 7)  # BIRD really is PEER_ASN
    peer, us = topo.peer_address(), topo.rs_address()

    wait_until(lambda: _received_by_bird(bird, topo, 2, 2), 15, what="BIRD to log our NOTIFICATION 2/2")
    assert _received_by_bird(bird, topo, 2, 2)[0] == "Bad peer AS"
    status = rs.peer_status(peer)
    sent = status["last_notification_sent"]
    assert (sent["code"], sent["subcode"]) == (2, 2)
    assert sent["name"] == "OPEN Message Error/Bad Peer AS"
    assert status["last_transition"] == "OpenMessageError"
    assert f"peer AS {PEER_ASN}" in status["last_transition_detail"]
    assert status["established_count"] == 0
    assert bird.session_state(us) != "Established"


def test_max_prefix_teardown_sends_cease_6_1_bird_reports_it_and_the_session_stays_idle(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo, routes=many_routes(10))
    rs = start_rs(topo, max_prefix=5)
    peer = topo.peer_address()

    limit = rs.wait_event(lambda e: e["type"] == "prefix_limit", timeout=15, what="max-prefix event")
    assert (limit["event"], limit["limit"]) == ("TEARDOWN", 5)
    down = wait_down(rs, peer)
    assert down["reason"] == "MaxPrefixes"
    assert down["notification"] == {"code": 6, "subcode": 1}
    sent = rs.peer_status(peer)["last_notification_sent"]
    assert sent["name"] == "Cease/Maximum Number of Prefixes Reached"

    wait_until(lambda: _received_by_bird(bird, topo, 6, 1), 10, what="BIRD to log our Cease 6/1")
    assert _received_by_bird(bird, topo, 6, 1)[0] == "Maximum number of prefixes reached"
    assert rs.received_routes() == {}
    # Held Idle (RFC 4271 §8.1.1, automatic start off): no reconnect after the 0.5 s IdleHold.
    assert_held_down(rs, peer)
    assert rs.session_state(peer) != "Established"


# -- import policy ---------------------------------------------------------------------------------------


def test_deny_by_default_receives_bird_routes_but_accepts_none(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_bird(topo)
    rs = start_rs(topo, allowed=(), routes=RS_ROUTES)  # no allow-list at all (RFC 8212)
    _established(rs, bird, topo)
    peer = topo.peer_address()

    def all_rejected() -> bool:
        status = rs.peer_status(peer)
        return bool(status["rejected_by_reason"].get("NotAllowed", 0) >= len(PEER_ROUTES))

    wait_until(all_rejected, BIRD_WAIT, what="BIRD's routes to be rejected NotAllowed")
    status = rs.peer_status(peer)
    assert status["prefixes_received"] == len(PEER_ROUTES)
    assert status["prefixes_accepted"] == 0
    assert status["rejected_by_reason"] == {"NotAllowed": len(PEER_ROUTES)}
    assert rs.received_routes() == {}
    # Import policy only: what we originate still reaches BIRD.
    wait_daemon_holds_exactly(bird, RS_ROUTES)
