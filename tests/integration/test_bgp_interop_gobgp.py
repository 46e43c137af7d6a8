"""Interop with GoBGP (gobgpd 3.x, Debian package): our speaker on host "rs", gobgpd on host "peer".

Every scenario reads GoBGP's own view (its CLI/gRPC JSON: Adj-RIB-Out, global RIB, message
counters, its JSON log) next to ours (status snapshot, event log, Loc-RIB). GoBGP is also the daemon
that exercises our graceful-restart receiving side end to end: it can restart as a restarting
speaker (`gobgpd -r`: Restart State bit, Forwarding State bit per family, RFC 4724 §3), so stale
routes must stay through the restart and End-of-RIB must flush exactly what it did not re-announce.

What GoBGP cannot do: send ROUTE-REFRESH (3.x keeps an Adj-RIB-In; `gobgp neighbor X softresetin`
re-runs its import policy over it and sends nothing), and show the code of a NOTIFICATION it
receives before Established (OpenSent, OpenConfirm: it closes on any unexpected message there and
only counts it, so the wrong-AS test reads that counter and proves the code on our side). It always
advertises the 4-octet AS capability, so "2-octet" here means 2-octet AS numbers on both ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    check_refreshed_after_restart,
    diff_views,
    many_routes,
    never_established,
    next_event_index,
    poll,
    removed_prefixes,
    sample_rib,
    start_rs,
    tcp_ext_counter,
    updates_received,
    wait_daemon_holds_exactly,
    wait_down,
    wait_end_of_rib,
    wait_gone,
    wait_rs_holds_exactly,
)
from tests.support.daemons.base import Neighbor, Route
from tests.support.daemons.gobgp import GobgpDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

ALL_PEER_PREFIXES = [r.prefix for r in PEER_ROUTES]


def start_gobgp(
    topo: Topology,
    *,
    asn: int = PEER_ASN,
    rs_asn: int = RS_ASN,
    routes: Sequence[Route] = PEER_ROUTES,
    **neighbor: Any,
) -> GobgpDaemon:
    """gobgpd on host "peer" with our speaker as its one neighbour, originating `routes` with ORIGIN IGP."""
    settings: dict[str, Any] = {"hold_time": 9, "connect_retry": 1}
    settings.update(neighbor)
    daemon = GobgpDaemon(
        topo.peer,
        asn=asn,
        router_id=PEER_ROUTER_ID,
        origin="igp",
        neighbors=[Neighbor(topo.rs_address(), rs_asn, **settings)],
        routes=routes,
    )
    daemon.start()
    return daemon


# -- sessions, exact attributes, withdraw, origination ---------------------------------------------


@pytest.mark.parametrize(("transport", "asn_octets"), [("ipv4", 4), ("ipv6", 4), ("ipv4", 2), ("ipv6", 2)])
def test_session_up_and_routes_received_with_exact_attributes_then_withdrawn(
    lab: Lab, transport: str, asn_octets: int
) -> None:
    topo = build_topology(lab, transport)
    rs_asn, peer_asn = (RS_ASN, PEER_ASN) if asn_octets == 4 else (RS_ASN_2OCTET, PEER_ASN_2OCTET)
    gobgp = start_gobgp(topo, asn=peer_asn, rs_asn=rs_asn)
    rs = start_rs(topo, asn=rs_asn, peer_asn=peer_asn)
    rs.wait_session(topo.peer_address(), timeout=15)
    gobgp.wait_session(topo.rs_address(), timeout=15)

    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert negotiated["peer_asn"] == peer_asn
    assert negotiated["four_octet_as"] is True  # GoBGP always sends the capability (RFC 6793)
    assert set(negotiated["families"]) == {"ipv4-unicast", "ipv6-unicast"}
    assert gobgp.neighbor_json(topo.rs_address())["state"]["peer_asn"] == rs_asn

    # Exactly what GoBGP originated (IPv4 and IPv6, over either transport), and exactly what GoBGP
    # itself says it sent us: its Adj-RIB-Out after its eBGP export (own ASN prepended, next hop).
    got = wait_rs_holds_exactly(rs, topo, PEER_ROUTES, sender_asn=peer_asn)
    sent = gobgp.advertised_to(topo.rs_address())
    assert sorted(sent) == sorted(ALL_PEER_PREFIXES)
    assert diff_views(got, sent) == []
    assert rs.peer_status(topo.peer_address())["prefixes_accepted"] == len(PEER_ROUTES)

    since = next_event_index(rs)
    gone = [PEER_ROUTES[1].prefix, PEER_ROUTES[3].prefix]  # one IPv4, one IPv6
    gobgp.withdraw(gone)
    wait_gone(rs, gone)
    assert {p for e in removed_prefixes(rs, gone, since) for p in e["removed"]} == set(gone)
    wait_rs_holds_exactly(rs, topo, [PEER_ROUTES[0], PEER_ROUTES[2]], sender_asn=peer_asn)
    assert rs.session_state(topo.peer_address()) == "Established"


@pytest.mark.parametrize("transport", ["ipv4", "ipv6"])
def test_routes_we_originate_appear_in_gobgp_rib_with_our_attributes(lab: Lab, transport: str) -> None:
    topo = build_topology(lab, transport)
    gobgp = start_gobgp(topo, routes=())
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_daemon_holds_exactly(gobgp, RS_ROUTES)
    origins = gobgp.origins()
    assert {p: origins.get(p) for p in (r.prefix for r in RS_ROUTES)} == {r.prefix: 0 for r in RS_ROUTES}

    # A later advertisement and a withdrawal reach GoBGP too.
    extra = Route("203.0.113.64/27", med=5, communities=("65000:1",))
    rs.advertise([extra])
    wait_daemon_holds_exactly(gobgp, [*RS_ROUTES, extra])
    rs.withdraw([RS_ROUTES[0].prefix, extra.prefix])
    wait_gone(gobgp, [RS_ROUTES[0].prefix, extra.prefix])
    wait_daemon_holds_exactly(gobgp, RS_ROUTES[1:])


# -- route refresh -----------------------------------------------------------------------------------


def test_route_refresh_we_request_is_answered_with_the_full_table(lab: Lab) -> None:
    """Only our side can ask: GoBGP 3.x never sends ROUTE-REFRESH (`softresetin` re-runs its import
    policy over the Adj-RIB-In it keeps); ExaBGP's group tests our answer to a peer's request."""
    topo = build_topology(lab)
    gobgp = start_gobgp(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    wait_daemon_holds_exactly(gobgp, RS_ROUTES)
    peer, us = topo.peer_address(), topo.rs_address()

    # We ask (RFC 2918, one ROUTE-REFRESH per negotiated family): GoBGP counts them and re-sends.
    updates_before = updates_received(rs, peer)
    counters = gobgp.message_counters(us)
    since = next_event_index(rs)
    assert sorted(rs.refresh(peer)) == ["ipv4-unicast", "ipv6-unicast"]
    poll(
        lambda: (
            gobgp.message_counters(us)["received"].get("refresh", 0)
            == counters["received"].get("refresh", 0) + 2
        ),
        "GoBGP to count our two ROUTE-REFRESH messages",
    )
    poll(
        lambda: updates_received(rs, peer) >= updates_before + len(PEER_ROUTES),
        "GoBGP to re-send its table",
    )
    assert removed_prefixes(rs, ALL_PEER_PREFIXES, since) == []
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)

    assert rs.session_state(peer) == "Established"


# -- graceful restart ----------------------------------------------------------------------------------


def test_graceful_restart_keeps_routes_stale_then_end_of_rib_flushes_what_was_not_reannounced(
    lab: Lab,
) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert rs.peer_status(peer)["negotiated"]["graceful_restart"] is True

    # After the restart GoBGP re-announces 203.0.113.0/26 (with a new MED) and 2001:db8:100::/48,
    # and no longer 198.51.100.0/25 or 2001:db8:101::/48.
    v4_kept, v4_dropped, v6_kept, v6_dropped = PEER_ROUTES
    changed = Route(
        v4_kept.prefix,
        as_path_prepend=v4_kept.as_path_prepend,
        med=77,
        communities=v4_kept.communities,
        large_communities=v4_kept.large_communities,
    )
    kept = [v4_kept.prefix, v6_kept.prefix]
    dropped = [v4_dropped.prefix, v6_dropped.prefix]
    since = next_event_index(rs)
    with sample_rib(rs, ALL_PEER_PREFIXES) as sampler:
        gobgp.crash()  # no NOTIFICATION: RFC 4724 §4.2 applies
        down = wait_down(rs, peer, since=since)
        assert down["notification"] is None
        stale = rs.peer_status(peer)
        assert stale["state"] != "Established"
        assert stale["prefixes_stale"] == len(PEER_ROUTES)
        assert set(rs.received_routes()) == set(ALL_PEER_PREFIXES)  # kept while GoBGP is away

        after_down = next_event_index(rs)
        gobgp.restart_graceful([changed, v6_kept])
        wait_end_of_rib(rs, peer, ("ipv4-unicast", "ipv6-unicast"), since=after_down)
    check_refreshed_after_restart(
        rs, topo, sampler, kept=kept, dropped=dropped, survivors=[changed, v6_kept], since=since
    )


def test_graceful_restart_stale_routes_go_when_gobgp_stays_away_past_its_restart_time(lab: Lab) -> None:
    """RFC 4724 §4.2: the stale routes live for the Restart Time GoBGP advertised (2 s here), not ours."""
    topo = build_topology(lab)
    gobgp = GobgpDaemon(
        topo.peer,
        asn=PEER_ASN,
        router_id=PEER_ROUTER_ID,
        origin="igp",
        gr_restart_time=2,
        neighbors=[Neighbor(topo.rs_address(), RS_ASN, hold_time=9, graceful_restart=True)],
        routes=PEER_ROUTES,
    )
    gobgp.start()
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    since = next_event_index(rs)
    gobgp.crash()
    down = wait_down(rs, peer, since=since)
    assert rs.peer_status(peer)["prefixes_stale"] == len(PEER_ROUTES)
    flushed = rs.wait_event(
        lambda e: e["type"] == "routes" and set(e["removed"]) == set(ALL_PEER_PREFIXES),
        timeout=10,
        what="the stale routes to be flushed",
    )
    # Not before GoBGP's 2 s (our own restart time is 120 s); a generous bound above.
    assert 1.8 <= flushed["t"] - down["t"] <= 6.0, flushed["t"] - down["t"]
    assert rs.received_routes() == {}
    assert rs.peer_status(peer)["prefixes_stale"] == 0


def test_graceful_restart_without_forwarding_state_flushes_stale_routes_at_reconnect(lab: Lab) -> None:
    """GoBGP started again without `-r` advertises GR with every F bit clear: RFC 4724 §4.2 says the
    stale routes go at once on the new OPEN, not at End-of-RIB (the counterpart of the test above)."""
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    since = next_event_index(rs)
    gobgp.crash()
    down = wait_down(rs, peer, since=since)
    assert rs.peer_status(peer)["prefixes_stale"] == len(PEER_ROUTES)
    gobgp.start()  # plain start: GR capability with R and every F bit clear
    rs.wait_event(
        lambda e: e["type"] == "state" and e["new"] == "Established" and e["t"] > down["t"],
        timeout=15,
        what="the session back up",
    )
    rs.wait_event(lambda e: e["type"] == "eor" and e["t"] > down["t"], what="End-of-RIB")
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    events = rs.events(since)
    up = next(i for i, e in enumerate(events) if e["type"] == "state" and e["new"] == "Established")
    flushed = {p for e in events[up:] if e["type"] == "routes" for p in e["removed"]}
    # The first removal after the new session flushes every stale route (before any End-of-RIB).
    first = next(i for i, e in enumerate(events) if i > up and e["type"] in ("routes", "eor"))
    assert events[first]["type"] == "routes"
    assert set(events[first]["removed"]) == set(ALL_PEER_PREFIXES), events[first]
    assert flushed >= set(ALL_PEER_PREFIXES)
    assert events[up]["t"] > down["t"]
    assert rs.peer_status(peer)["prefixes_stale"] == 0


# -- TCP-MD5 ------------------------------------------------------------------------------------------


def test_tcp_md5_matching_keys_establish(lab: Lab) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, password="gobgp-md5-key")
    rs = start_rs(topo, password="gobgp-md5-key")
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    gobgp.wait_session(topo.rs_address())
    assert "gobgp-md5-key" not in rs.log_text()


@pytest.mark.slow
def test_tcp_md5_mismatch_never_establishes_and_says_why(lab: Lab) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, password="gobgp-side-key")
    rs = start_rs(topo, password="our-side-key")
    never_established(rs, gobgp, topo, 4.0)
    status = rs.peer_status(topo.peer_address())
    # The kernel drops badly signed segments silently; our status names the likely cause.
    assert "TCP-MD5" in (status["last_error"] or ""), status
    assert status["connect_attempts"] >= 2
    assert status["state"] in ("Connect", "Active")
    # The peer's kernel dropped our SYNs (signed with our key). GoBGP's own SYNs towards us are rarer
    # (its first connect comes only after several seconds) and are not waited for.
    assert tcp_ext_counter(topo.peer, "TCPMD5Failure") >= 2
    assert rs.received_routes() == {}
    assert "our-side-key" not in rs.log_text()


# -- liveness, errors and limits ----------------------------------------------------------------------


@pytest.mark.slow
def test_hold_timer_expires_when_gobgp_freezes_and_its_routes_go(lab: Lab) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert rs.peer_status(peer)["negotiated"]["hold_time"] == 3
    since = next_event_index(rs)
    gobgp.pause()
    try:
        event = rs.wait_event(
            lambda e: e["type"] == "state" and e["reason"] == "HoldTimerExpires",
            timeout=8,
            what="hold timer expiry",
        )
        assert event["old"] == "Established"
        assert event["notification"] == {"code": 4, "subcode": 0}
        assert rs.received_routes() == {}
        assert {p for e in removed_prefixes(rs, ALL_PEER_PREFIXES, since) for p in e["removed"]} == set(
            ALL_PEER_PREFIXES
        )
        sent = rs.peer_status(peer)["last_notification_sent"]
        assert (sent["code"], sent["subcode"]) == (4, 0)
    finally:
        gobgp.resume()
    # Thawed, GoBGP reconnects and its routes come back.
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, timeout=20)


def test_wrong_peer_as_is_refused_with_notification_2_2(lab: Lab) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo)
    rs = start_rs(topo, peer_asn=PEER_ASN + 1)
    event = rs.wait_event(
        lambda e: e["type"] == "state" and e["notification"] == {"code": 2, "subcode": 2},
        what="NOTIFICATION 2/2 (Bad Peer AS)",
    )
    assert event["new"] != "Established"
    sent = rs.peer_status(topo.peer_address())["last_notification_sent"]
    assert (sent["code"], sent["subcode"]) == (2, 2)
    # GoBGP's own view: a NOTIFICATION received, never Established. (It does not log the code of
    # one received before Established; see the module docstring.)
    poll(
        lambda: gobgp.message_counters(topo.rs_address())["received"].get("notification", 0) >= 1,
        "GoBGP to count the NOTIFICATION",
    )
    never_established(rs, gobgp, topo, 1.0)
    assert rs.received_routes() == {}


def test_max_prefix_exceeded_tears_down_with_cease_6_1_and_the_session_stays_idle(lab: Lab) -> None:
    topo = build_topology(lab)
    gobgp = start_gobgp(topo, routes=many_routes(10))
    rs = start_rs(topo, max_prefix=5)
    limit = rs.wait_event(lambda e: e["type"] == "prefix_limit", what="max-prefix event")
    assert (limit["event"], limit["limit"]) == ("TEARDOWN", 5)
    down = wait_down(rs, topo.peer_address())
    assert down["notification"] == {"code": 6, "subcode": 1}
    sent = rs.peer_status(topo.peer_address())["last_notification_sent"]
    assert sent["name"] == "Cease/Maximum Number of Prefixes Reached"
    # GoBGP logs the Cease it received on its Established session, with code and subcode.
    poll(lambda: (6, 1) in gobgp.notifications_received(topo.rs_address()), "GoBGP to log Cease 6/1")
    assert rs.received_routes() == {}
    # Held Idle (RFC 4271 §8.1.1, automatic start off): no reconnect after the 0.5 s IdleHold.
    assert_held_down(rs, topo.peer_address())


def test_deny_by_default_receives_but_accepts_nothing(lab: Lab) -> None:
    topo = build_topology(lab)
    start_gobgp(topo)
    rs = start_rs(topo, allowed=())  # no allow-list entry: RFC 8212 deny
    peer = topo.peer_address()
    rs.wait_session(peer, timeout=15)
    poll(
        lambda: rs.peer_status(peer)["prefixes_received"] >= len(PEER_ROUTES),
        "GoBGP's routes to arrive",
    )
    status = rs.peer_status(peer)
    assert status["prefixes_received"] == len(PEER_ROUTES)
    assert status["prefixes_accepted"] == 0
    assert status["rejected_by_reason"] == {"NotAllowed": len(PEER_ROUTES)}
    assert rs.received_routes() == {}
    assert [e for e in rs.events() if e["type"] == "routes"] == []
    assert status["state"] == "Established"
