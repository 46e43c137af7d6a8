"""GoBGP-only interop cases; the scenarios GoBGP shares with the other daemons are in
test_bgp_interop_scenarios.py (GoBGP is absent from those needing a Capability it lacks: it sends no
ROUTE-REFRESH, always the 4-octet AS capability, and logs no code for a NOTIFICATION received before
Established).

GoBGP is the daemon whose graceful-restart knobs reach the two corners of RFC 4724 §4.2 on our
receiving side: a short Restart Time it advertises (the stale routes must go when it expires, not at
ours), and a restart without forwarding state (`gobgpd` without `-r`: every F bit clear, so the stale
routes go at once on the new OPEN).
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
    wait_rs_holds_exactly,
)
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

ALL_PEER_PREFIXES = [r.prefix for r in PEER_ROUTES]


def test_graceful_restart_stale_routes_go_when_gobgp_stays_away_past_its_restart_time(lab: Lab) -> None:
    """RFC 4724 §4.2: the stale routes live for the Restart Time GoBGP advertised (2 s here), not ours."""
    topo = build_topology(lab)
    gobgp = start_daemon("gobgp", topo, graceful_restart=True, daemon_options={"gr_restart_time": 2})
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    since = next_event_index(rs)
    gobgp.graceful_stop()
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
    gobgp = start_daemon("gobgp", topo, graceful_restart=True)
    rs = start_rs(topo, graceful_restart=True)
    peer = topo.peer_address()
    wait_rs_holds_exactly(rs, topo, PEER_ROUTES)
    since = next_event_index(rs)
    gobgp.graceful_stop()
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
