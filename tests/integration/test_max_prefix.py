"""maxPrefixes through `routeserver run` against a BIRD appliance: each action as the CRD text says.

Topology: rs (table 100, allowedPrefixes 203.0.113.0/24 ge 32) and one BIRD appliance fw (AS 65001)
advertising 150 /32s against a limit of 100:

- Warn: all 150 accepted and installed, the crossing counted (event="exceeded"), the session kept;
- Reject: exactly 100 accepted and installed, 50 rejected with reason MaxPrefix, the session kept;
- Teardown: Cease 6/1 (RFC 4486 §4) seen by BIRD, then the session stays Idle (automatic start off,
  RFC 4271 §8.1.1) with status saying why and until when, while BIRD keeps knocking; a raised limit
  (SIGHUP reload) brings it back at once, restartAfterSeconds brings it back after the interval.
"""

from __future__ import annotations

import time

import pytest

from tests.support.daemons.base import Route
from tests.support.daemons.bird import BirdDaemon
from tests.support.netns import Host, Lab
from tests.support.route_server import PeerSpec, RouteServerProcess, ServerSpec, Spoke, appliance, star

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

LIMIT = 100
PREFIXES = tuple(f"203.0.113.{n}/32" for n in range(1, 151))  # 150 > LIMIT
STAYS_DOWN_SECONDS = 8.0  # the old loop came back after ~1, 3 and 7 s


def _lab(lab: Lab) -> tuple[Host, Spoke, BirdDaemon]:
    rs = lab.host("rs")
    (fw,) = star(rs, [lab.host("fw")])
    bird = appliance("bird", fw, asn=65001, routes=[Route(p) for p in PREFIXES], bfd=None)
    assert isinstance(bird, BirdDaemon)
    return rs, fw, bird


def _spec(fw: Spoke, action: str, limit: int = LIMIT, restart_after: int | None = None) -> ServerSpec:
    peer = PeerSpec(
        "fw",
        fw.address,
        65001,
        liveness="BGPKeepalive",
        max_prefixes=limit,
        max_prefix_action=action,
        max_prefix_restart_after=restart_after,
    )
    return ServerSpec((peer,))


def _max_prefix_events(server: RouteServerProcess) -> dict[str, float]:
    found = {}
    for line in server.metrics().splitlines():
        if line.startswith("routeserver_bgp_max_prefix_events_total{") and 'peer="fw"' in line:
            event = line.split('event="', 1)[1].split('"', 1)[0]
            found[event] = float(line.rsplit(" ", 1)[1])
    return found


def _held_gauge(server: RouteServerProcess) -> list[str]:
    return [
        line
        for line in server.metrics().splitlines()
        if line.startswith("routeserver_bgp_session_held_idle") and 'peer="fw"' in line
    ]


def _stays_down(server: RouteServerProcess, seconds: float) -> None:
    """Sample /status: never Established again, one establishment only, nothing in the table."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peer = server.peer("fw")
        assert peer["bgp_state"] != "Established", peer
        assert peer["established_count"] == 1, peer
        assert peer["held_idle_reason"] == "MaxPrefixes", peer
        time.sleep(0.2)
    assert server.routes() == {}


def _torn_down(server: RouteServerProcess, bird: BirdDaemon, fw: Spoke) -> dict[str, object]:
    server.wait(lambda: server.peer("fw")["held_idle_reason"] == "MaxPrefixes", 30, "fw held Idle")
    peer = server.peer("fw")
    assert peer["bgp_state"] == "Idle" and peer["last_transition_reason"] == "MaxPrefixes", peer
    assert peer["last_notification_sent"] == "Cease/Maximum Number of Prefixes Reached", peer
    server.wait(
        lambda: (6, 1) in {(c, s) for c, s, _ in bird.notifications_received(fw.server_address)},
        10,
        "BIRD logging the Cease 6/1 it received",
    )
    return peer


def test_warn_accepts_and_installs_all_150_and_counts_the_crossing_once(lab: Lab) -> None:
    rs, fw, bird = _lab(lab)
    server = RouteServerProcess(rs, _spec(fw, "Warn"))
    server.start()
    try:
        bird.start()
        server.wait(lambda: len(server.routes()) == len(PREFIXES), 60, "all 150 routes installed")
        peer = server.peer("fw")
        assert (peer["bgp_state"], peer["prefixes_accepted"], peer["rejected_by_reason"]) == (
            "Established",
            150,
            {},
        )
        assert peer["held_idle_reason"] is None
        events = _max_prefix_events(server)
        assert events.get("exceeded") == 1.0 and "teardown" not in events, events
        warned = [line for line in server.log(100_000).splitlines() if "event=max_prefix" in line]
        assert len(warned) == 1 and "action=exceeded" in warned[0], warned
        time.sleep(2)
        assert server.peer("fw")["established_count"] == 1
    finally:
        server.close()


def test_reject_accepts_and_installs_exactly_100_and_rejects_50_as_max_prefix(lab: Lab) -> None:
    rs, fw, bird = _lab(lab)
    server = RouteServerProcess(rs, _spec(fw, "Reject"))
    server.start()
    try:
        bird.start()
        server.wait(lambda: server.peer("fw")["prefixes_rejected"] == 50, 60, "50 rejections counted")
        server.wait(lambda: len(server.routes()) == LIMIT, 20, "100 routes installed")
        peer = server.peer("fw")
        assert (peer["bgp_state"], peer["prefixes_accepted"]) == ("Established", LIMIT), peer
        assert peer["rejected_by_reason"] == {"MaxPrefix": 50}
        assert {r["reason"] for r in peer["recent_rejections"]} == {"MaxPrefix"}
        assert set(server.routes()) < set(PREFIXES)
        events = _max_prefix_events(server)
        assert events.get("rejected") == 1.0 and "teardown" not in events, events
        metrics = server.metrics()
        assert (
            'routeserver_bgp_prefixes_rejected_total{peer="fw",reason="MaxPrefix",route_server="vip"} 50.0'
            in metrics
        )
        time.sleep(2)
        peer = server.peer("fw")
        assert (peer["established_count"], peer["bgp_state"]) == (1, "Established")
        assert bird.session_state(fw.server_address) == "Established"
    finally:
        server.close()


def test_teardown_stays_down_until_a_raised_limit_is_reloaded(lab: Lab) -> None:
    rs, fw, bird = _lab(lab)
    server = RouteServerProcess(rs, _spec(fw, "Teardown"))
    server.start()
    try:
        bird.start()
        peer = _torn_down(server, bird, fw)
        assert peer["held_idle_until"] is None  # until the spec changes
        assert _held_gauge(server) == [
            'routeserver_bgp_session_held_idle{peer="fw",reason="MaxPrefixes",route_server="vip"} 1.0'
        ]
        assert _max_prefix_events(server).get("teardown") == 1.0
        _stays_down(server, STAYS_DOWN_SECONDS)
        assert bird.session_state(fw.server_address) != "Established"
        rendered = server.host.run(
            *server.argv()[:3], "status", "--admin-address", f"127.0.0.1:{server.admin_port}"
        )
        assert "MaxPrefixes (held Idle, until the spec changes)" in rendered.stdout, rendered.stdout

        started = time.monotonic()
        server.reload(_spec(fw, "Teardown", limit=200))
        server.wait_established(["fw"], timeout=20)
        assert time.monotonic() - started < 10  # at once: no backoff left to wait out
        server.wait(lambda: len(server.routes()) == len(PREFIXES), 30, "all 150 routes installed")
        peer = server.peer("fw")
        assert (peer["established_count"], peer["held_idle_reason"]) == (2, None), peer
        assert _held_gauge(server) == []
    finally:
        server.close()


def test_teardown_with_restart_after_comes_back_once_after_the_interval(lab: Lab) -> None:
    rs, fw, bird = _lab(lab)
    restart_after = 5
    server = RouteServerProcess(rs, _spec(fw, "Teardown", restart_after=restart_after))
    server.start()
    try:
        bird.start()
        peer = _torn_down(server, bird, fw)
        until = peer["held_idle_until"]
        assert isinstance(until, float) and 0 < until - time.time() <= restart_after, peer
        bird.withdraw(PREFIXES[LIMIT:])  # the appliance is fixed while it is held: 100 left
        _stays_down(server, until - time.time() - 0.5)
        server.wait_established(["fw"], timeout=restart_after + 10)
        assert time.time() >= until - 0.1
        server.wait(lambda: len(server.routes()) == LIMIT, 30, "the 100 remaining routes installed")
        time.sleep(2)
        peer = server.peer("fw")
        assert (peer["bgp_state"], peer["established_count"], peer["held_idle_reason"]) == (
            "Established",
            2,
            None,
        ), peer
        assert peer["last_transition_reason"] == "KeepaliveReceived"
    finally:
        server.close()
