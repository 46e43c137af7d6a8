"""ExaBGP-only interop cases; the scenarios ExaBGP shares with the other daemons are in
test_bgp_interop_scenarios.py.

ExaBGP reports, through its API process (tests/support/daemons/exabgp_relay.py), every message it
receives, so it shows what the others do not: each re-advertisement of a prefix with the BoRR/EoRR
markers around it (RFC 7313), the NOTIFICATION it finds waiting after a freeze, and, as an OLD
speaker (RFC 6793 §4.2), our 4-octet ASN as AS_TRANS on the session with the real path in AS4_PATH.
"""

from __future__ import annotations

import pytest

from tests.support.bgp_interop import (
    PEER_ASN_2OCTET,
    PEER_ROUTES,
    RS_ASN,
    RS_ROUTES,
    build_topology,
    next_event_index,
    poll,
    start_daemon,
    start_rs,
    wait_daemon_holds_exactly,
    wait_down,
    wait_established,
    wait_rs_holds_exactly,
)
from tests.support.daemons.exabgp import ExabgpDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

AS_TRANS = 23456  # RFC 6793 §9: how an OLD speaker sees a 4-octet AS


def test_old_speaker_sees_our_4_octet_asn_as_as_trans_and_as4_path_carries_it(lab: Lab) -> None:
    """ExaBGP without the capability peers with AS_TRANS; our AS_PATH reaches it as AS_TRANS in
    AS_PATH plus the real path in AS4_PATH, which it merges back."""
    topo = build_topology(lab)
    exa = start_daemon("exabgp", topo, asn=PEER_ASN_2OCTET, rs_asn=AS_TRANS, old_speaker=True)
    rs = start_rs(topo, asn=RS_ASN, peer_asn=PEER_ASN_2OCTET, routes=RS_ROUTES)
    rs.wait_session(topo.peer_address(), timeout=15)
    negotiated = rs.peer_status(topo.peer_address())["negotiated"]
    assert (negotiated["four_octet_as"], negotiated["peer_asn"]) == (False, PEER_ASN_2OCTET)
    assert exa.session_view(topo.rs_address()).peer_asn == AS_TRANS
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, sender_asn=PEER_ASN_2OCTET)
    # The prepends too: a 4-octet AS_PATH of three RS_ASN hops survives the 2-octet session intact.
    wait_daemon_holds_exactly(exa, RS_ROUTES, sender_asn=RS_ASN)


def test_refresh_exabgp_requests_is_answered_per_family_between_borr_and_eorr(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_daemon("exabgp", topo)
    assert isinstance(exa, ExabgpDaemon)
    rs = start_rs(topo, routes=RS_ROUTES)
    wait_established(rs, exa, topo)
    us = topo.rs_address()
    wait_daemon_holds_exactly(exa, RS_ROUTES)

    announced = {r.prefix: exa.announcements(r.prefix) for r in RS_ROUTES}
    exa.request_refresh(us)
    poll(
        lambda: all(exa.announcements(p) == n + 1 for p, n in announced.items()),
        "our re-advertisement of every route, once",
    )
    poll(
        lambda: (
            {(afi, kind) for p, afi, kind in exa.refreshes() if p == us and kind != "query"}
            == {("ipv4", "begin"), ("ipv4", "end"), ("ipv6", "begin"), ("ipv6", "end")}
        ),
        "our BoRR/EoRR markers (RFC 7313 §4)",
    )
    wait_daemon_holds_exactly(exa, RS_ROUTES)


@pytest.mark.slow
def test_exabgp_thawed_after_our_hold_timer_expired_reads_our_notification_4_0(lab: Lab) -> None:
    topo = build_topology(lab)
    exa = start_daemon("exabgp", topo, hold_time=3)
    rs = start_rs(topo, hold_time=3)
    them, us = topo.peer_address(), topo.rs_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    since = next_event_index(rs)
    exa.pause()
    try:
        down = wait_down(rs, them, since=since, timeout=8)
    finally:
        exa.resume()
    assert down["notification"] == {"code": 4, "subcode": 0}
    poll(
        lambda: (4, 0) in {(n.code, n.subcode) for n in exa.received_notifications(us)},
        "ExaBGP to report NOTIFICATION 4/0",
    )
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES, timeout=20)
