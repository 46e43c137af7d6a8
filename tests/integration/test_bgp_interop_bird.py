"""BIRD-only interop cases; the scenarios BIRD shares with the other daemons are in
test_bgp_interop_scenarios.py.

BIRD is the one daemon that shows its own side of a graceful restart: restarted with `bird -R` it
runs in recovery mode and lists the families whose forwarding state it kept (the F bits it sent,
RFC 4724 §3).
"""

from __future__ import annotations

import pytest

from tests.support.bgp_interop import (
    PEER_ROUTES,
    build_topology,
    next_event_index,
    start_daemon,
    start_rs,
    wait_down,
    wait_end_of_rib,
    wait_established,
    wait_rs_holds_exactly,
)
from tests.support.daemons.bird import BirdDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]


def test_graceful_restart_of_bird_runs_recovery_with_forwarding_state_preserved_for_both_families(
    lab: Lab,
) -> None:
    topo = build_topology(lab, "ipv4")
    bird = start_daemon("bird", topo, graceful_restart=True)
    assert isinstance(bird, BirdDaemon)
    rs = start_rs(topo, graceful_restart=True)
    wait_established(rs, bird, topo)
    them, us = topo.peer_address(), topo.rs_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    assert "Restart recovery" not in bird.protocol_text(us)

    since = next_event_index(rs)
    bird.graceful_stop()
    wait_down(rs, them, since=since)
    bird.graceful_start(PEER_ROUTES)
    wait_end_of_rib(rs, them, ["ipv4-unicast", "ipv6-unicast"], since=since)
    text = bird.protocol_text(us)
    assert "Restart recovery" in text and "AF preserved: ipv4 ipv6" in text
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
