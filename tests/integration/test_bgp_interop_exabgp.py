"""Interop with ExaBGP (5.x from PyPI, in the virtualenv): our speaker on host "rs", ExaBGP on "peer".

ExaBGP reports, through its API process (tests/support/daemons/exabgp_relay.py), every UPDATE,
NOTIFICATION and ROUTE-REFRESH it receives and every session change; that is its own view, read next
to ours (status snapshot, event log, Loc-RIB). ExaBGP can do what GoBGP cannot: send ROUTE-REFRESH
(`announce route-refresh`), run as an OLD speaker without the 4-octet AS capability (RFC 6793 §4.2)
and negotiate enhanced route refresh (RFC 7313), so those paths of our speaker are tested here.

What ExaBGP cannot do here: restart as a speaker that preserved its forwarding state on purpose (it
always sets the F bit, and its `stop()` with graceful restart negotiated is simply a close without a
NOTIFICATION, RFC 4724 §4.2); GoBGP's group covers the F bit clear. Its static routes are its
"Adj-RIB-Out": they are compared with our Loc-RIB attribute by attribute.
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
from tests.support.daemons.exabgp import ExabgpDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

ALL_PEER_PREFIXES = [r.prefix for r in PEER_ROUTES]
AS_TRANS = 23456  # RFC 6793 §9: how an OLD speaker sees a 4-octet AS


def start_exabgp(
    topo: Topology,
    *,
    asn: int = PEER_ASN,
    rs_asn: int = RS_ASN,
    routes: Sequence[Route] = PEER_ROUTES,
    asn4: bool = True,
    **neighbor: Any,
) -> ExabgpDaemon:
    """ExaBGP on host "peer" with our speaker as its one neighbour, originating `routes`."""
    settings: dict[str, Any] = {"hold_time": 9, "connect_retry": 1}
    settings.update(neighbor)
    daemon = ExabgpDaemon(
        topo.peer,
        asn=asn,
        router_id=PEER_ROUTER_ID,
        asn4=asn4,
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
    """asn_octets 2: ExaBGP is an OLD speaker (no 4-octet AS capability) and both ASNs fit 2 octets,
    so AS_PATH travels in 2-octet encoding both ways."""
    topo = build_topology(lab, transport)
    four = asn_octets == 4
    rs_asn, peer_asn = (RS_ASN, PEER_ASN) if four else (RS_ASN_2OCTET, PEER_ASN_2OCTET)
    exa = start_exabgp(topo, asn=peer_asn, rs_asn=rs_asn, asn4=four)
    rs = start_rs(topo, asn=rs_asn, peer_asn=peer_asn)
    rs.wait_session(topo.peer_address(), timeout=15)
    exa.wait_session(topo.rs_address(), timeout=15)

    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert negotiated["peer_asn"] == peer_asn
    assert negotiated["four_octet_as"] is four
    assert set(negotiated["families"]) == {"ipv4-unicast", "ipv6-unicast"}

    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, sender_asn=peer_asn)
    assert rs.peer_status(topo.peer_address())["prefixes_accepted"] == len(PEER_ROUTES)

    since = next_event_index(rs)
    gone = [PEER_ROUTES[1].prefix, PEER_ROUTES[3].prefix]  # one IPv4, one IPv6
    exa.withdraw(gone)
    wait_gone(rs, gone)
    assert {p for e in removed_prefixes(rs, gone, since) for p in e["removed"]} == set(gone)
    wait_rs_holds_exactly(rs, topo, [PEER_ROUTES[0], PEER_ROUTES[2]], sender_asn=peer_asn)
    assert rs.session_state(topo.peer_address()) == "Established"


def test_old_speaker_sees_our_4_octet_asn_as_as_trans_and_as4_path_carries_it(lab: Lab) -> None:
    """RFC 6793 §4.2: ExaBGP without the capability peers with AS_TRANS; our AS_PATH reaches it as
    AS_TRANS in AS_PATH plus the real path in AS4_PATH, which it merges back."""
    topo = build_topology(lab)
    exa = start_exabgp(topo, asn=PEER_ASN_2OCTET, rs_asn=AS_TRANS, asn4=False)
    rs = start_rs(topo, asn=RS_ASN, peer_asn=PEER_ASN_2OCTET, routes=RS_ROUTES)
    rs.wait_session(topo.peer_address(), timeout=15)
    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert (negotiated["four_octet_as"], negotiated["peer_asn"]) == (False, PEER_ASN_2OCTET)
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, sender_asn=PEER_ASN_2OCTET)
    # The prepends too: a 4-octet AS_PATH of three RS_ASN hops survives the 2-octet session intact.
    wait_daemon_holds_exactly(exa, RS_ROUTES, sender_asn=RS_ASN)


@pytest.mark.parametrize("transport", ["ipv4", "ipv6"])
def test_routes_we_originate_appear_in_exabgp_with_our_attributes(lab: Lab, transport: str) -> None:
    topo = build_topology(lab, transport)
    exa = start_exabgp(topo, routes=())
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_daemon_holds_exactly(exa, RS_ROUTES)
    origins = exa.origins()
    assert {p: origins.get(p) for p in (r.prefix for r in RS_ROUTES)} == {r.prefix: "igp" for r in RS_ROUTES}

    extra = Route("203.0.113.64/27", med=5, communities=("65000:1",))
    rs.advertise([extra])
    wait_daemon_holds_exactly(exa, [*RS_ROUTES, extra])
    rs.withdraw([RS_ROUTES[0].prefix, extra.prefix])
    wait_gone(exa, [RS_ROUTES[0].prefix, extra.prefix])
    wait_daemon_holds_exactly(exa, RS_ROUTES[1:])


# -- route refresh -----------------------------------------------------------------------------------


def test_route_refresh_in_both_directions(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    wait_daemon_holds_exactly(exa, RS_ROUTES)
    peer, us = topo.peer_address(), topo.rs_address()
    assert rs.peer_status(peer)["negotiated"]["enhanced_route_refresh"] is True

    # We ask: ExaBGP records one request per family and re-sends its table, demarcated by
    # BoRR/EoRR (RFC 7313): nothing may flap in our Loc-RIB while its routes are re-marked.
    updates_before = updates_received(rs, peer)
    since = next_event_index(rs)
    assert sorted(rs.refresh(peer)) == ["ipv4-unicast", "ipv6-unicast"]
    poll(
        lambda: (
            {(p, afi) for p, afi, kind in exa.refreshes() if kind == "query"} == {(us, "ipv4"), (us, "ipv6")}
        ),
        "ExaBGP to receive our two ROUTE-REFRESH requests",
    )
    poll(
        lambda: updates_received(rs, peer) >= updates_before + len(PEER_ROUTES),
        "ExaBGP to re-send its table",
    )
    assert removed_prefixes(rs, ALL_PEER_PREFIXES, since) == []
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert rs.peer_status(peer)["prefixes_stale"] == 0  # the EoRR closed the refresh

    # ExaBGP asks: we re-send our table inside BoRR ... EoRR, per family.
    announced = {r.prefix: exa.announcements(r.prefix) for r in RS_ROUTES}
    for family in ("ipv4 unicast", "ipv6 unicast"):
        exa.request_refresh(family)
    poll(
        lambda: all(exa.announcements(p) == n + 1 for p, n in announced.items()),
        "our re-advertisement of every route",
    )
    poll(
        lambda: (
            {(afi, kind) for p, afi, kind in exa.refreshes() if p == us and kind != "query"}
            == {("ipv4", "begin"), ("ipv4", "end"), ("ipv6", "begin"), ("ipv6", "end")}
        ),
        "our BoRR/EoRR markers (RFC 7313 §4)",
    )
    wait_daemon_holds_exactly(exa, RS_ROUTES)
    assert rs.session_state(peer) == "Established"


# -- graceful restart ----------------------------------------------------------------------------------


def test_graceful_restart_keeps_routes_stale_then_end_of_rib_flushes_what_was_not_reannounced(
    lab: Lab,
) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert rs.peer_status(peer)["negotiated"]["graceful_restart"] is True

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
        exa.stop()  # graceful restart negotiated: ExaBGP closes without a NOTIFICATION
        down = wait_down(rs, peer, since=since)
        assert down["notification"] is None
        status = rs.peer_status(peer)
        assert status["prefixes_stale"] == len(PEER_ROUTES)
        assert set(rs.received_routes()) == set(ALL_PEER_PREFIXES)
        after_down = next_event_index(rs)
        exa.restart([changed, v6_kept])
        wait_end_of_rib(rs, peer, ("ipv4-unicast", "ipv6-unicast"), since=after_down)
    check_refreshed_after_restart(
        rs, topo, sampler, kept=kept, dropped=dropped, survivors=[changed, v6_kept], since=since
    )


# -- TCP-MD5 ------------------------------------------------------------------------------------------


def test_tcp_md5_matching_keys_establish(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo, password="exabgp-md5-key")
    rs = start_rs(topo, password="exabgp-md5-key")
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    exa.wait_session(topo.rs_address())
    assert "exabgp-md5-key" not in rs.log_text()


@pytest.mark.slow
def test_tcp_md5_mismatch_never_establishes_and_says_why(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo, password="exabgp-side-key")
    rs = start_rs(topo, password="our-side-key")
    never_established(rs, exa, topo, 4.0)
    status = rs.peer_status(topo.peer_address())
    assert "TCP-MD5" in (status["last_error"] or ""), status
    assert status["connect_attempts"] >= 2
    assert status["state"] in ("Connect", "Active")
    # Both kernels dropped the other side's SYNs, signed with the other key.
    assert tcp_ext_counter(topo.peer, "TCPMD5Failure") >= 2
    poll(lambda: rs.status()["kernel_drops"]["TCPMD5Failure"] >= 1, "ExaBGP's SYNs to be dropped here")
    assert rs.received_routes() == {}
    assert "our-side-key" not in rs.log_text()


# -- liveness, errors and limits ----------------------------------------------------------------------


@pytest.mark.slow
def test_hold_timer_expires_when_exabgp_freezes_and_its_routes_go(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert rs.peer_status(peer)["negotiated"]["hold_time"] == 3
    since = next_event_index(rs)
    exa.pause()
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
    finally:
        exa.resume()
    # Thawed, ExaBGP reads our Hold Timer Expired NOTIFICATION, reconnects, and its routes come back.
    poll(lambda: (topo.rs_address(), 4, 0) in exa.notifications(), "ExaBGP to report NOTIFICATION 4/0")
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, timeout=20)


def test_wrong_peer_as_is_refused_with_notification_2_2(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo)
    rs = start_rs(topo, peer_asn=PEER_ASN + 1)
    event = rs.wait_event(
        lambda e: e["type"] == "state" and e["notification"] == {"code": 2, "subcode": 2},
        what="NOTIFICATION 2/2 (Bad Peer AS)",
    )
    assert event["new"] != "Established"
    sent = rs.peer_status(topo.peer_address())["last_notification_sent"]
    assert (sent["code"], sent["subcode"]) == (2, 2)
    poll(lambda: (topo.rs_address(), 2, 2) in exa.notifications(), "ExaBGP to report NOTIFICATION 2/2")
    never_established(rs, exa, topo, 1.0)
    assert rs.received_routes() == {}


def test_max_prefix_exceeded_tears_down_with_cease_6_1_and_the_session_stays_idle(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_exabgp(topo, routes=many_routes(10))
    rs = start_rs(topo, max_prefix=5)
    limit = rs.wait_event(lambda e: e["type"] == "prefix_limit", what="max-prefix event")
    assert (limit["event"], limit["limit"]) == ("TEARDOWN", 5)
    down = wait_down(rs, topo.peer_address())
    assert down["notification"] == {"code": 6, "subcode": 1}
    sent = rs.peer_status(topo.peer_address())["last_notification_sent"]
    assert sent["name"] == "Cease/Maximum Number of Prefixes Reached"
    poll(lambda: (topo.rs_address(), 6, 1) in exa.notifications(), "ExaBGP to report Cease 6/1")
    assert rs.received_routes() == {}
    # Held Idle (RFC 4271 §8.1.1, automatic start off): no reconnect after the 0.5 s IdleHold.
    assert_held_down(rs, topo.peer_address())


def test_deny_by_default_receives_but_accepts_nothing(lab: Lab) -> None:
    topo = build_topology(lab)
    start_exabgp(topo)
    rs = start_rs(topo, allowed=())  # no allow-list entry: RFC 8212 deny
    peer = topo.peer_address()
    rs.wait_session(peer, timeout=15)
    poll(
        lambda: rs.peer_status(peer)["prefixes_received"] >= len(PEER_ROUTES),
        "ExaBGP's routes to arrive",
    )
    status = rs.peer_status(peer)
    assert status["prefixes_received"] == len(PEER_ROUTES)
    assert status["prefixes_accepted"] == 0
    assert status["rejected_by_reason"] == {"NotAllowed": len(PEER_ROUTES)}
    assert rs.received_routes() == {}
    assert [e for e in rs.events() if e["type"] == "routes"] == []
    assert status["state"] == "Established"
