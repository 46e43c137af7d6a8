"""The BGP interop scenarios every daemon shares, run against FRR, BIRD, GoBGP and ExaBGP.

Host "rs" runs our speaker, host "peer" the daemon (tests/support/bgp_interop.py). Each scenario
reads both sides: our status snapshot, event log and Loc-RIB, and the daemon's own view through the
uniform InteropDaemon interface (tests/support/daemons/base.py: its RIB, Adj-RIB-Out, session view,
the NOTIFICATIONs it received, its message counts). Where daemons show things differently, the driver
answers the same question, so every daemon gets the same assertions.

A scenario that needs something not every daemon can do runs only on the daemons whose driver has
that Capability (`daemons_with`); the capability is in the test's name and parameters, so nothing
is skipped. What only one daemon can show stays in its own module (test_bgp_interop_<daemon>.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support.bgp_interop import (
    DAEMONS,
    PEER_ASN,
    PEER_ASN_2OCTET,
    PEER_ROUTES,
    RS_ASN,
    RS_ASN_2OCTET,
    RS_ROUTES,
    Topology,
    assert_held_down,
    build_topology,
    check_refreshed_after_restart,
    daemons_with,
    diff_views,
    many_routes,
    never_established,
    next_event_index,
    poll,
    removed_prefixes,
    sample_rib,
    start_daemon,
    start_rs,
    tcp_ext_counter,
    updates_received,
    wait_advertised,
    wait_daemon_holds_exactly,
    wait_down,
    wait_end_of_rib,
    wait_established,
    wait_gone,
    wait_rs_holds_exactly,
)
from tests.support.daemons.base import Capability, InteropDaemon, ReceivedNotification, Route
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

ALL_PEER_PREFIXES = [r.prefix for r in PEER_ROUTES]
BOTH_FAMILIES = ["ipv4-unicast", "ipv6-unicast"]


class PeerFactory:
    """The `daemon` fixture: which daemon a test runs against, started in the test's topology."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.capabilities = DAEMONS[kind].capabilities

    def start(self, topo: Topology, **options: Any) -> InteropDaemon:
        """start_daemon(kind, topo, **options); the lab stops it by PID at teardown."""
        return start_daemon(self.kind, topo, **options)


@pytest.fixture(params=list(DAEMONS))
def daemon(request: pytest.FixtureRequest) -> PeerFactory:
    """Every daemon by default; `parametrize("daemon", daemons_with(...), indirect=True)` narrows it."""
    return PeerFactory(request.param)


def capable(capability: Capability) -> pytest.MarkDecorator:
    """Run the test only against the daemons that can do `capability` (parametrised, not skipped)."""
    return pytest.mark.parametrize("daemon", daemons_with(capability), indirect=True)


def originated(peer: InteropDaemon, routes: list[Route] | tuple[Route, ...] = PEER_ROUTES) -> list[Route]:
    """`routes` as the daemon sends them (with the attributes it fills in itself)."""
    return [peer.originated_as(r) for r in routes]


def codes(notifications: list[ReceivedNotification], code: int, subcode: int) -> list[ReceivedNotification]:
    return [n for n in notifications if (n.code, n.subcode) == (code, subcode)]


# -- session, exact attributes both ways, withdraw, origination ---------------------------------------

# "2octet": 2-octet AS numbers on both ends, the 4-octet AS capability still exchanged.
# "old-speaker": the daemon without the 4-octet AS capability (RFC 6793 §4.2), so AS_PATH travels in
# 2-octet encoding; only daemons with Capability.OLD_SPEAKER (not GoBGP; FRR's variant, which drops
# every capability, is in its own module).
ASNS = {"4octet": (RS_ASN, PEER_ASN), "2octet": (RS_ASN_2OCTET, PEER_ASN_2OCTET)}
ASNS["old-speaker"] = ASNS["2octet"]
EXCHANGE_CASES = [
    pytest.param(kind, transport, asns, id=f"{kind}-{transport}-{asns}")
    for kind in DAEMONS
    for asns in ASNS
    for transport in ("ipv4", "ipv6")
    if asns != "old-speaker" or kind in daemons_with(Capability.OLD_SPEAKER)
]


@pytest.mark.parametrize(("daemon", "transport", "asns"), EXCHANGE_CASES, indirect=["daemon"])
def test_session_up_routes_exchanged_with_exact_attributes_then_withdrawn_each_way(
    lab: Lab, daemon: PeerFactory, transport: str, asns: str
) -> None:
    topo = build_topology(lab, transport)
    rs_asn, peer_asn = ASNS[asns]
    old = asns == "old-speaker"
    peer = daemon.start(topo, asn=peer_asn, rs_asn=rs_asn, old_speaker=old)
    rs = start_rs(topo, asn=rs_asn, peer_asn=peer_asn, routes=RS_ROUTES)
    wait_established(rs, peer, topo)
    them, us = topo.peer_address(), topo.rs_address()

    negotiated = rs.peer_status(them)["negotiated"]
    assert negotiated["peer_asn"] == peer_asn
    assert negotiated["four_octet_as"] is not old
    assert negotiated["route_refresh"] is True
    assert negotiated["families"] == BOTH_FAMILIES
    assert negotiated["hold_time"] == 9
    # The daemon's own view of the same session.
    view = peer.session_view(us)
    assert view.peer_asn == rs_asn
    assert view.four_octet_as is not old

    # Received: exactly what the daemon says it sends us (its Adj-RIB-Out), attribute for attribute.
    sent = wait_advertised(peer, topo, originated(peer))
    # Nothing else, but what FRR reflects back to us (it has no sender-side loop check).
    assert set(sent) - set(ALL_PEER_PREFIXES) <= {r.prefix for r in RS_ROUTES}
    got = wait_rs_holds_exactly(rs, topo, originated(peer), sender_asn=peer_asn)
    assert diff_views(got, {p: sent[p] for p in ALL_PEER_PREFIXES}) == []
    assert rs.peer_status(them)["prefixes_accepted"] == len(PEER_ROUTES)
    # Originated: the daemon's RIB shows our routes with our attributes and ORIGIN IGP.
    wait_daemon_holds_exactly(peer, RS_ROUTES, sender_asn=rs_asn)
    origins = peer.origins()
    assert {r.prefix: origins.get(r.prefix) for r in RS_ROUTES} == {r.prefix: "igp" for r in RS_ROUTES}

    # The daemon withdraws one prefix per family; the rest stays untouched.
    since = next_event_index(rs)
    gone = [PEER_ROUTES[1].prefix, PEER_ROUTES[3].prefix]
    peer.withdraw(gone)
    wait_gone(rs, gone)
    assert {p for e in removed_prefixes(rs, gone, since) for p in e["removed"]} == set(gone)
    wait_rs_holds_exactly(rs, topo, originated(peer, (PEER_ROUTES[0], PEER_ROUTES[2])), sender_asn=peer_asn)
    # We advertise one more route later, then withdraw it and one of the first.
    extra = Route("203.0.113.64/27", med=5, communities=("65000:1",))
    rs.advertise([extra])
    wait_daemon_holds_exactly(peer, [*RS_ROUTES, extra], sender_asn=rs_asn)
    rs.withdraw([RS_ROUTES[0].prefix, extra.prefix])
    wait_gone(peer, [RS_ROUTES[0].prefix, extra.prefix])
    wait_daemon_holds_exactly(peer, RS_ROUTES[1:], sender_asn=rs_asn)
    assert rs.session_state(them) == "Established"
    assert peer.session_state(us) == "Established"


# -- route refresh -------------------------------------------------------------------------------------


def test_route_refresh_we_request_is_answered_in_place_without_a_gap(lab: Lab, daemon: PeerFactory) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_established(rs, peer, topo)
    them, us = topo.peer_address(), topo.rs_address()
    wait_rs_holds_exactly(rs, topo, originated(peer))
    wait_daemon_holds_exactly(peer, RS_ROUTES)
    enhanced = Capability.ENHANCED_ROUTE_REFRESH in daemon.capabilities
    assert rs.peer_status(them)["negotiated"]["enhanced_route_refresh"] is enhanced
    assert peer.session_view(us).enhanced_route_refresh is enhanced

    # We ask (RFC 2918, one ROUTE-REFRESH per negotiated family): the daemon counts both and re-sends
    # its table (between BoRR and EoRR where RFC 7313 was negotiated); nothing flaps in our Loc-RIB.
    requests = peer.refresh_requests_received(us)
    updates = updates_received(rs, them)
    since = next_event_index(rs)
    with sample_rib(rs, ALL_PEER_PREFIXES) as sampler:
        assert sorted(rs.refresh(them)) == BOTH_FAMILIES
        poll(
            lambda: peer.refresh_requests_received(us) == requests + 2,
            f"{daemon.kind} to count our two ROUTE-REFRESH messages",
        )
        poll(lambda: updates_received(rs, them) >= updates + len(PEER_ROUTES), f"{daemon.kind} to re-send")
        sampler.take_more(2)  # sampled after the re-sent table was processed
    assert sampler.samples >= 2 and not sampler.gaps and not sampler.errors
    assert removed_prefixes(rs, ALL_PEER_PREFIXES, since) == []
    wait_rs_holds_exactly(rs, topo, originated(peer))
    status = rs.peer_status(them)
    assert status["prefixes_stale"] == 0  # the EoRR (or the refresh itself) left nothing stale
    assert status["established_count"] == 1
    assert rs.session_state(them) == "Established"


# GoBGP 3.x cannot send ROUTE-REFRESH (`softresetin` re-runs its import policy over its Adj-RIB-In).
@capable(Capability.SENDS_ROUTE_REFRESH)
def test_route_refresh_the_daemon_requests_is_answered_with_our_whole_table(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo)
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_established(rs, peer, topo)
    them, us = topo.peer_address(), topo.rs_address()
    wait_daemon_holds_exactly(peer, RS_ROUTES)

    received = peer.updates_received_from(us)
    peer.request_refresh(us)
    poll(
        lambda: peer.updates_received_from(us) >= received + len(RS_ROUTES),
        f"our re-sent UPDATEs at {daemon.kind}",
    )
    wait_daemon_holds_exactly(peer, RS_ROUTES)
    assert peer.session_state(us) == "Established"
    assert rs.peer_status(them)["established_count"] == 1


# -- graceful restart ----------------------------------------------------------------------------------


def test_graceful_restart_of_the_daemon_keeps_routes_stale_then_end_of_rib_flushes_what_it_dropped(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    wait_established(rs, peer, topo)
    them, us = topo.peer_address(), topo.rs_address()
    wait_rs_holds_exactly(rs, topo, originated(peer))
    assert rs.peer_status(them)["negotiated"]["graceful_restart"] is True
    assert peer.session_view(us).graceful_restart is True

    # The restarted daemon re-announces 203.0.113.0/26 (with a new MED) and 2001:db8:100::/48, and no
    # longer 198.51.100.0/25 or 2001:db8:101::/48.
    v4_kept, v4_dropped, v6_kept, v6_dropped = PEER_ROUTES
    after = [replace(v4_kept, med=77), v6_kept]
    since = next_event_index(rs)
    with sample_rib(rs, ALL_PEER_PREFIXES) as sampler:
        peer.graceful_stop()
        down = wait_down(rs, them, since=since)
        # Closed without a NOTIFICATION: RFC 4724 §4.2 applies.
        assert down["reason"] == "TcpConnectionFails" and down["notification"] is None
        stale = rs.peer_status(them)
        assert stale["state"] != "Established"
        assert stale["prefixes_stale"] == len(PEER_ROUTES)
        assert set(rs.received_routes()) == set(ALL_PEER_PREFIXES)  # kept while the daemon is away
        poll(
            lambda: f"{them}: graceful restart, {len(PEER_ROUTES)} paths stale" in rs.log_text(),
            "our speaker to log the stale paths",
            timeout=5,
        )
        sampler.take_more(3)  # sampled while the daemon is away, however quickly it restarts
        after_down = next_event_index(rs)
        peer.graceful_start(after)
        wait_end_of_rib(rs, them, BOTH_FAMILIES, since=after_down)
        sampler.take_more(3)
    check_refreshed_after_restart(
        rs,
        topo,
        sampler,
        kept=[v4_kept.prefix, v6_kept.prefix],
        dropped=[v4_dropped.prefix, v6_dropped.prefix],
        survivors=originated(peer, after),
        since=since,
    )
    assert rs.peer_status(them)["prefixes_accepted"] == len(after)
    assert peer.session_view(us).graceful_restart is True


# -- TCP-MD5 -------------------------------------------------------------------------------------------


def test_tcp_md5_matching_keys_establish_and_the_key_is_never_logged(lab: Lab, daemon: PeerFactory) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo, password="shared-md5-key")
    rs = start_rs(topo, password="shared-md5-key", routes=RS_ROUTES)
    wait_established(rs, peer, topo)
    wait_rs_holds_exactly(rs, topo, originated(peer))
    wait_daemon_holds_exactly(peer, RS_ROUTES)
    assert "shared-md5-key" not in rs.log_text()


@pytest.mark.slow
def test_tcp_md5_mismatch_never_establishes_says_why_then_the_matching_key_establishes(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo, password=f"{daemon.kind}-side-key")
    rs = start_rs(topo, password="krs-side-key", routes=RS_ROUTES)
    them, us = topo.peer_address(), topo.rs_address()

    never_established(rs, peer, topo, 4.0)
    status = rs.peer_status(them)
    # The kernel drops badly signed segments silently; our status names the likely cause.
    assert "TCP-MD5" in (status["last_error"] or ""), status
    assert status["connect_attempts"] >= 2
    assert status["state"] in ("Connect", "Active")
    # Each kernel dropped the other side's SYNs, signed with the other key.
    assert tcp_ext_counter(topo.peer, "TCPMD5Failure") >= 2
    poll(lambda: rs.status()["kernel_drops"]["TCPMD5Failure"] >= 1, f"{daemon.kind}'s SYNs dropped here")
    assert rs.received_routes() == {}

    peer.set_password(us, "krs-side-key")
    wait_established(rs, peer, topo)
    wait_daemon_holds_exactly(peer, RS_ROUTES)
    wait_rs_holds_exactly(rs, topo, originated(peer))
    assert "krs-side-key" not in rs.log_text() and f"{daemon.kind}-side-key" not in rs.log_text()


# -- liveness, errors and limits -----------------------------------------------------------------------


@pytest.mark.slow
def test_hold_timer_expires_when_the_daemon_freezes_its_routes_go_and_come_back_after_it_thaws(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    wait_established(rs, peer, topo)
    them = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, originated(peer))
    assert rs.peer_status(them)["negotiated"]["hold_time"] == 3

    since = next_event_index(rs)
    peer.pause()
    try:
        down = wait_down(rs, them, since=since, timeout=8)  # 3 s hold plus slack; 90 s would fail
        assert down["reason"] == "HoldTimerExpires"
        assert down["notification"] == {"code": 4, "subcode": 0}
        assert rs.received_routes() == {}
        removed = {p for e in removed_prefixes(rs, ALL_PEER_PREFIXES, since) for p in e["removed"]}
        assert removed == set(ALL_PEER_PREFIXES)
        status = rs.peer_status(them)
        sent = status["last_notification_sent"]
        assert (sent["code"], sent["subcode"], sent["name"]) == (4, 0, "Hold Timer Expired")
        assert status["last_transition"] == "HoldTimerExpires"
    finally:
        peer.resume()
    # Thawed, the daemon reconnects and its routes come back. (Whether it reads our NOTIFICATION first
    # or its own hold timer fires first is up to the daemon; ExaBGP's module checks its reading.)
    wait_rs_holds_exactly(rs, topo, originated(peer), timeout=20)


def test_wrong_peer_as_is_refused_with_notification_2_2_and_never_establishes(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo)
    rs = start_rs(topo, peer_asn=PEER_ASN + 7)  # the daemon really is PEER_ASN
    them, us = topo.peer_address(), topo.rs_address()
    event = rs.wait_event(
        lambda e: e["type"] == "state" and e["notification"] == {"code": 2, "subcode": 2},
        timeout=15,
        what="NOTIFICATION 2/2 (Bad Peer AS)",
    )
    assert event["new"] != "Established"
    status = rs.peer_status(them)
    sent = status["last_notification_sent"]
    assert (sent["code"], sent["subcode"]) == (2, 2)
    assert sent["name"] == "OPEN Message Error/Bad Peer AS"
    assert status["last_transition"] == "OpenMessageError"
    assert f"peer AS {PEER_ASN}" in status["last_transition_detail"]
    # The daemon's own count includes what it does not report the code of (GoBGP before Established).
    poll(lambda: peer.notifications_received_count(us) >= 1, f"{daemon.kind} to count the NOTIFICATION")
    never_established(rs, peer, topo, 1.0)
    assert rs.received_routes() == {}


# GoBGP closes on a NOTIFICATION in OpenSent/OpenConfirm without logging its code (only counts it).
@capable(Capability.NOTIFICATION_CODE_BEFORE_ESTABLISHED)
def test_wrong_peer_as_notification_is_reported_by_the_daemon_as_2_2_in_its_own_words(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo)
    start_rs(topo, peer_asn=PEER_ASN + 7)
    us = topo.rs_address()
    poll(
        lambda: bool(codes(peer.received_notifications(us), 2, 2)), f"{daemon.kind} to report 2/2", timeout=15
    )
    assert codes(peer.received_notifications(us), 2, 2)[0].text == peer.notification_text(2, 2)
    assert peer.session_state(us) != "Established"


def test_max_prefix_exceeded_tears_down_with_cease_6_1_the_daemon_reports_it_and_the_session_stays_idle(
    lab: Lab, daemon: PeerFactory
) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo, routes=many_routes(10))
    rs = start_rs(topo, max_prefix=5)
    them, us = topo.peer_address(), topo.rs_address()

    limit = rs.wait_event(lambda e: e["type"] == "prefix_limit", timeout=15, what="max-prefix event")
    assert (limit["event"], limit["limit"]) == ("TEARDOWN", 5)
    down = wait_down(rs, them)
    assert down["reason"] == "MaxPrefixes"
    assert down["notification"] == {"code": 6, "subcode": 1}
    sent = rs.peer_status(them)["last_notification_sent"]
    assert sent["name"] == "Cease/Maximum Number of Prefixes Reached"

    # Sent on an Established session: every daemon reports the code, in its own words where it has them.
    poll(lambda: bool(codes(peer.received_notifications(us), 6, 1)), f"{daemon.kind} to report Cease 6/1")
    received = peer.received_notifications(us)
    assert codes(received, 6, 1)[0].text == peer.notification_text(6, 1)
    # The first thing it heard from us; anything later refuses its reconnects (Cease 6/5) while we
    # hold the session down.
    assert (received[0].code, received[0].subcode) == (6, 1)
    assert {(n.code, n.subcode) for n in received[1:]} <= {(6, 5)}
    assert rs.received_routes() == {}
    # Held Idle (RFC 4271 §8.1.1, automatic start off): no reconnect after the 0.5 s IdleHold.
    assert_held_down(rs, them)
    assert rs.session_state(them) != "Established"


# -- import policy -------------------------------------------------------------------------------------


def test_deny_by_default_receives_the_daemon_routes_but_accepts_none(lab: Lab, daemon: PeerFactory) -> None:
    topo = build_topology(lab, "ipv4")
    peer = daemon.start(topo)
    rs = start_rs(topo, allowed=(), routes=RS_ROUTES)  # no allow-list at all (RFC 8212)
    wait_established(rs, peer, topo)
    them, us = topo.peer_address(), topo.rs_address()
    # Import policy only: what we originate still reaches the daemon.
    wait_daemon_holds_exactly(peer, RS_ROUTES)

    # A daemon that sends our own routes back (FRR: no sender-side loop check) has them refused as AS
    # loops; everything it originates is refused as not allowed.
    def reflected() -> int:
        return len({r.prefix for r in RS_ROUTES} & set(peer.advertised_to(us)))

    def expected() -> dict[str, int]:
        return {"NotAllowed": len(PEER_ROUTES), **({"AsLoop": n} if (n := reflected()) else {})}

    poll(lambda: rs.peer_status(them)["rejected_by_reason"] == expected(), f"{daemon.kind}'s routes refused")
    status = rs.peer_status(them)
    assert status["prefixes_received"] == len(PEER_ROUTES) + reflected()
    assert status["prefixes_accepted"] == 0
    assert status["rejected_by_reason"] == expected()
    assert rs.received_routes() == {}
    assert [e for e in rs.events() if e["type"] == "routes"] == []
    assert status["state"] == "Established"
