"""FRR-only interop cases; the scenarios FRR shares with the other daemons are in
test_bgp_interop_scenarios.py.

FRR's `dont-capability-negotiate` makes it a plain RFC 4271 speaker: an OPEN without any capability,
so IPv4 unicast only (RFC 4760 §8) and AS_PATH in 2-octet encoding (RFC 6793 §4.2.2). No other daemon
here drops every capability at once.
"""

from __future__ import annotations

import pytest

from tests.support.bgp_interop import (
    PEER_ASN_2OCTET,
    PEER_ROUTES,
    RS_ASN_2OCTET,
    RS_ROUTES,
    build_topology,
    family_of,
    start_daemon,
    start_rs,
    wait_advertised,
    wait_daemon_holds_exactly,
    wait_established,
    wait_gone,
    wait_rs_holds_exactly,
)
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]


def test_speaker_without_capabilities_exchanges_ipv4_with_2_octet_as_path_and_withdraws(lab: Lab) -> None:
    topo = build_topology(lab, "ipv4")
    peer_routes = [r for r in PEER_ROUTES if family_of(r.prefix) == "ipv4"]
    rs_routes = [r for r in RS_ROUTES if family_of(r.prefix) == "ipv4"]
    frr = start_daemon(
        "frr",
        topo,
        asn=PEER_ASN_2OCTET,
        rs_asn=RS_ASN_2OCTET,
        capability_negotiation=False,
        families=("ipv4",),
    )
    rs = start_rs(topo, asn=RS_ASN_2OCTET, peer_asn=PEER_ASN_2OCTET, routes=RS_ROUTES)
    wait_established(rs, frr, topo)
    them = topo.peer_address()

    negotiated = rs.peer_status(them)["negotiated"]
    assert negotiated["peer_asn"] == PEER_ASN_2OCTET
    assert negotiated["four_octet_as"] is False
    assert negotiated["route_refresh"] is False
    assert negotiated["families"] == ["ipv4-unicast"]
    assert negotiated["hold_time"] == 9
    assert frr.session_view(topo.rs_address()).four_octet_as is False

    sent = [frr.originated_as(r) for r in peer_routes]
    wait_advertised(frr, topo, sent)
    wait_rs_holds_exactly(rs, topo, sent, sender_asn=PEER_ASN_2OCTET)
    assert rs.peer_status(them)["prefixes_accepted"] == len(peer_routes)
    wait_daemon_holds_exactly(frr, rs_routes, sender_asn=RS_ASN_2OCTET)

    frr.withdraw(["198.51.100.0/25"])
    wait_gone(rs, ["198.51.100.0/25"])
    wait_rs_holds_exactly(
        rs, topo, [r for r in sent if r.prefix != "198.51.100.0/25"], sender_asn=PEER_ASN_2OCTET
    )
    rs.withdraw([rs_routes[0].prefix])
    wait_gone(frr, [rs_routes[0].prefix])
    assert rs.session_state(them) == "Established"
