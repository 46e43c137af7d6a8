"""Our BFD service in a lab namespace against FRR bfdd and BIRD (RFC 5880/5881/5883).

Each test starts our service as a process in its own namespace (tests/support/bfd_proc.py) and a real
daemon in another, single hop over one veth pair or multihop through a forwarding router namespace,
then reads both sides' own views: ours over the harness's control socket, FRR's `show bfd peers json`,
BIRD's `show bfd sessions` and the daemons' state-change logs.

Detection is measured against the issue's bound: the Down event must come no later than the negotiated
detection time + 10% + 5 ms after the last packet received (and after the freeze). The measured values
are printed (`pytest -s`); bench/bfd_detection.py gives the distributions.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.bfd_lab import PEER_ASN, BfdBird, BfdFrr, BfdLab, bfd_neighbor, build
from tests.support.daemons.base import BfdAuth, BfdTimers
from tests.support.daemons.krs_bfd import KrsBfd
from tests.support.netns import Lab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.interop]

DAEMONS = ["frr", "bird"]
FAMILIES = ["ipv4", "ipv6"]
AUTH_TYPES = ["simple", "md5", "meticulous-md5", "sha1", "meticulous-sha1"]


def _up(env: BfdLab, sid: int, timeout: float = 20.0) -> dict[str, Any]:
    status = env.krs.wait_state(sid, "UP", timeout)
    env.peer.wait_bfd(env.our_address, "Up", timeout)
    return status


def _settled(env: BfdLab, sid: int, detection_us: int, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until our session runs with the expected detection time and no Poll Sequence is pending."""

    def done() -> bool:
        s = env.krs.status(sid)
        return bool(s["state"] == "UP" and s["detection_time_us"] == detection_us and not s["poll_active"])

    wait_until(done, timeout, what=f"detection time {detection_us} us")
    return env.krs.status(sid)


def _downs(krs: KrsBfd, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in krs.events(since) if e["old"] == "UP" and e["new"] != "UP"]


def _check_peer_view(env: BfdLab, ours: BfdTimers, theirs: BfdTimers) -> None:
    """The peer's own view shows our advertised timers and the intervals negotiated from them."""
    peer = env.peer
    if isinstance(peer, BfdFrr):
        frr = peer

        def frr_sees_us() -> bool:
            view = frr.peer_json(env.our_address)
            return bool(
                view["status"] == "up"
                and view["remote-transmit-interval"] == ours.min_tx_ms
                and view["remote-receive-interval"] == ours.min_rx_ms
                and view["remote-detect-multiplier"] == ours.multiplier
            )

        wait_until(frr_sees_us, 10, what="FRR's view of our timers")
        view = frr.peer_json(env.our_address)
        assert view["multihop"] is env.multihop
    else:
        assert isinstance(peer, BfdBird)
        bird = peer
        # BIRD shows its negotiated TX interval and its detection time (seconds).
        interval = max(theirs.min_tx_ms, ours.min_rx_ms) / 1000
        timeout = ours.multiplier * max(theirs.min_rx_ms, ours.min_tx_ms) / 1000

        def bird_sees_us() -> bool:
            row = bird.session_row(env.our_address)
            return (
                row["state"] == "Up"
                and abs(float(row["interval"]) - interval) < 1e-6
                and abs(float(row["timeout"]) - timeout) < 1e-6
            )

        wait_until(bird_sees_us, 10, what=f"BIRD interval {interval}s timeout {timeout}s")


# ---- sessions come up and negotiate ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_single_hop_session_comes_up_with_asymmetric_timers(lab: Lab, daemon: str, family: str) -> None:
    theirs, ours = BfdTimers(300, 200, 3), BfdTimers(100, 150, 4)
    env = build(lab, daemon, family, timers=theirs)
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=ours)
    _up(env, sid)
    # RFC 5880 §6.8.7 and §6.8.4, from our side
    status = _settled(env, sid, theirs.multiplier * max(ours.min_rx_ms, theirs.min_tx_ms) * 1000)
    assert status["tx_interval_us"] == max(ours.min_tx_ms, theirs.min_rx_ms) * 1000
    assert status["remote_min_tx_us"] == theirs.min_tx_ms * 1000
    assert status["remote_min_rx_us"] == theirs.min_rx_ms * 1000
    assert status["remote_multiplier"] == theirs.multiplier
    _check_peer_view(env, ours, theirs)
    assert not env.krs.service_status()["drops"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_multihop_session_through_a_router_comes_up(lab: Lab, daemon: str, family: str) -> None:
    theirs, ours = BfdTimers(200, 200, 3), BfdTimers(100, 100, 3)
    # FRR sends multihop packets with TTL 255, so they arrive with 254 (FRR's own default minimum);
    # BIRD sends them with the system default TTL (64: its multihop TX socket sets none), so 63.
    min_ttl = 254 if daemon == "frr" else 63
    env = build(lab, daemon, family, timers=theirs, multihop=True)
    sid = env.krs.request(
        env.peer_address, local=env.our_address, timers=ours, multihop=True, min_ttl=min_ttl
    )
    status = _up(env, sid)
    assert status["multihop"] is True
    _settled(env, sid, 3 * 200_000)
    _check_peer_view(env, ours, theirs)
    assert not env.krs.service_status()["drops"]


def test_multihop_packets_below_our_minimum_ttl_are_dropped(lab: Lab) -> None:
    env = build(lab, "frr", timers=BfdTimers(100, 100, 3), multihop=True)
    sid = env.krs.request(
        env.peer_address, local=env.our_address, timers=BfdTimers(100, 100, 3), multihop=True
    )
    _up(env, sid)
    env.krs.update(sid, BfdTimers(100, 100, 3), multihop=True, min_ttl=255)  # the router makes it 254
    env.krs.wait_event(lambda e: e["new"] == "DOWN", timeout=5)
    status = env.krs.status(sid)
    assert status["drops"].get("bad_ttl", 0) > 0
    assert status["last_change"]["reason"] == "detection_time_expired"


def test_session_bound_to_an_interface_comes_up_and_a_wrong_interface_hears_nothing(lab: Lab) -> None:
    env = build(lab, "frr", timers=BfdTimers(100, 100, 3))
    sid = env.krs.request(
        env.peer_address, local=env.our_address, interface="eth0", timers=BfdTimers(100, 100, 3)
    )
    _up(env, sid)
    env.krs.release(sid)
    wait_until(lambda: not env.krs.service_status()["sessions"], 5, what="session removed")
    wrong = env.krs.request(
        env.peer_address, local=env.our_address, interface="lo", timers=BfdTimers(100, 100, 3)
    )
    wait_until(
        lambda: env.krs.service_status()["drops"].get("no_session_for_address", 0) >= 2,
        10,
        what="FRR's packets refused: they arrive on eth0",
    )
    assert env.krs.status(wrong)["state"] == "DOWN"


# ---- timer changes without a flap ---------------------------------------------------------------


@pytest.mark.parametrize("daemon", DAEMONS)
def test_timer_change_uses_poll_final_and_neither_side_goes_down(lab: Lab, daemon: str) -> None:
    theirs = BfdTimers(50, 50, 3)
    env = build(lab, daemon, timers=theirs)
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(300, 300, 3))
    _up(env, sid)
    _check_peer_view(env, BfdTimers(300, 300, 3), theirs)
    before = env.peer.session_row(env.our_address)["since"] if isinstance(env.peer, BfdBird) else None
    mark = len(env.krs.events())
    for ours in (BfdTimers(100, 100, 4), BfdTimers(50, 50, 3), BfdTimers(300, 200, 3)):
        env.krs.update(sid, ours)
        _settled(env, sid, theirs.multiplier * max(ours.min_rx_ms, theirs.min_tx_ms) * 1000)
        _check_peer_view(env, ours, theirs)
    assert env.krs.events(mark) == []  # no transition at all on our side
    if isinstance(env.peer, BfdFrr):
        counters = env.peer.counters(env.our_address)
        assert (counters["session-up"], counters["session-down"]) == (1, 0)
    else:
        assert isinstance(env.peer, BfdBird)
        row = env.peer.session_row(env.our_address)
        assert (row["state"], row["since"]) == ("Up", before)


# ---- failure detection --------------------------------------------------------------------------


@pytest.mark.parametrize("daemon", DAEMONS)
def test_frozen_peer_is_detected_within_the_detection_time(lab: Lab, daemon: str) -> None:
    """300x3, 100x3, 50x3: the peer runs 50x3 and our Required Min RX sets its pace towards us."""
    env = build(lab, daemon, timers=BfdTimers(50, 50, 3))
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(300, 300, 3))
    _up(env, sid)
    measured = []
    for interval_ms in (300, 100, 50):
        env.krs.update(sid, BfdTimers(interval_ms, interval_ms, 3))
        detection = 3 * interval_ms * 1000
        _settled(env, sid, detection, timeout=20)
        time.sleep(3 * interval_ms / 1000)
        mark = len(env.krs.events())
        frozen_at = time.monotonic()
        env.peer_host.freeze()
        try:
            down = env.krs.wait_event(lambda e: e["new"] == "DOWN", since=mark, timeout=5)
        finally:
            env.peer_host.unfreeze()
        status = env.krs.status(sid)
        assert down["reason"] == "detection_time_expired"
        assert down["failure"] is True
        since_rx = down["at"] - status["last_rx"]
        since_freeze = down["at"] - frozen_at
        bound = detection / 1e6 * 1.1 + 0.005
        measured.append((interval_ms, detection / 1000, since_rx * 1000, since_freeze * 1000))
        assert detection / 1e6 <= since_rx + 1e-6  # never early (§6.8.4)
        assert since_rx <= bound, measured
        assert since_freeze <= bound, measured
        _up(env, sid, timeout=30)
    for interval_ms, detection_ms, rx_ms, freeze_ms in measured:
        print(
            f"{daemon} {interval_ms}x3: detection {detection_ms:.0f} ms, Down after last rx {rx_ms:.1f} ms, "
            f"after freeze {freeze_ms:.1f} ms"
        )


# ---- administrative down ------------------------------------------------------------------------


def test_frr_shutdown_is_reported_as_admin_down_not_failure(lab: Lab) -> None:
    env = build(lab, "frr", timers=BfdTimers(100, 100, 3))
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(100, 100, 3))
    _up(env, sid)
    assert isinstance(env.peer, BfdFrr)
    env.peer.shutdown(env.our_address)
    down = env.krs.wait_event(lambda e: e["new"] == "DOWN", timeout=5)
    assert (down["reason"], down["diag"], down["failure"]) == (
        "received_admin_down",
        "NEIGHBOR_SIGNALED_SESSION_DOWN",
        False,
    )
    assert env.krs.status(sid)["remote_state"] == "ADMIN_DOWN"
    env.peer.shutdown(env.our_address, shut=False)
    _up(env, sid)


def test_bird_disabling_bfd_sends_no_admin_down_so_we_detect_a_failure(lab: Lab) -> None:
    """BIRD 2 never transmits AdminDown (its sessions are freed silently), so this is a detection."""
    env = build(lab, "bird", timers=BfdTimers(100, 100, 3))
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(100, 100, 3))
    _up(env, sid)
    assert isinstance(env.peer, BfdBird)
    env.peer.birdc("disable bfd1")
    down = env.krs.wait_event(lambda e: e["new"] == "DOWN", timeout=5)
    assert (down["reason"], down["failure"]) == ("detection_time_expired", True)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_our_release_is_seen_by_the_peer_as_neighbor_down(lab: Lab, daemon: str) -> None:
    env = build(lab, daemon, timers=BfdTimers(300, 300, 3))
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(300, 300, 3))
    _up(env, sid)
    released_at = time.time()
    env.krs.release(sid)
    env.peer.wait_bfd(env.our_address, "Down", timeout=5)
    if isinstance(env.peer, BfdFrr):
        view = env.peer.peer_json(env.our_address)
        assert view["diagnostic"] == "neighbor signaled session down"
        assert view["remote-diagnostic"] == "administratively down"
    else:
        assert isinstance(env.peer, BfdBird)
        (down,) = [t for t in env.peer.transitions() if t.old == "Up" and t.new == "Down"]
        # A received AdminDown, not a detection: well before the 900 ms detection time.
        assert down.at - released_at < 0.5


# ---- authentication (BIRD: FRR's bfdd has none) ------------------------------------------------


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_bird_authentication_comes_up(lab: Lab, auth_type: str) -> None:
    auth = BfdAuth(auth_type, 5, "s3cret-key")
    env = build(lab, "bird", timers=BfdTimers(100, 100, 3), auth=auth)
    sid = env.krs.request(env.peer_address, local=env.our_address, timers=BfdTimers(100, 100, 3), auth=auth)
    _up(env, sid)
    time.sleep(1.0)  # many authenticated packets both ways, sequence numbers moving
    status = env.krs.status(sid)
    assert status["state"] == "UP"
    assert status["profile"]["auth"] is not None
    assert not status["drops"]


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_bird_authentication_with_a_wrong_key_stays_down(lab: Lab, auth_type: str) -> None:
    env = build(lab, "bird", timers=BfdTimers(100, 100, 3), auth=BfdAuth(auth_type, 5, "right-key"))
    sid = env.krs.request(
        env.peer_address,
        local=env.our_address,
        timers=BfdTimers(100, 100, 3),
        auth=BfdAuth(auth_type, 5, "wrong-key"),
    )
    reason = "auth_bad_password" if auth_type == "simple" else "auth_bad_digest"
    wait_until(lambda: env.krs.status(sid)["drops"].get(reason, 0) >= 2, 10, what=f"{reason} drops")
    assert env.krs.status(sid)["state"] == "DOWN"
    assert env.peer.bfd_sessions()[env.our_address].state != "Up"


# ---- load ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_sessions_at_100ms_survive_a_busy_main_loop(lab: Lab) -> None:
    """20 sessions at 100 ms x 3 against FRR while our process decodes BGP feeds in its main loop."""
    count, timers = 20, BfdTimers(100, 100, 3)
    krs_host, peer_host = lab.host("krs"), lab.host("peer")
    lab.link(krs_host, peer_host, ["10.0.0.1/24"], ["10.0.0.101/24"])
    for i in range(2, count + 1):
        krs_host.add_address("eth0", f"10.0.0.{i}/24")
        peer_host.add_address("eth0", f"10.0.0.{100 + i}/24")
    pairs = [(f"10.0.0.{i}", f"10.0.0.{100 + i}") for i in range(1, count + 1)]
    frr = BfdFrr(
        peer_host,
        asn=PEER_ASN,
        router_id="10.0.0.101",
        neighbors=[bfd_neighbor(ours, theirs, timers) for ours, theirs in pairs],
    )
    frr.start()
    krs = KrsBfd(krs_host)
    krs.start()
    sids = [krs.request(theirs, local=ours, timers=timers) for ours, theirs in pairs]
    for sid in sids:
        krs.wait_state(sid, "UP", 30)
    mark = len(krs.events())
    krs.burn("bgp")
    time.sleep(15)
    status = krs.service_status()
    krs.burn("off")
    assert status["burn"]["rounds"] > 0
    assert _downs(krs, mark) == []
    assert all(s["state"] == "UP" for s in status["sessions"])
    for ours, _ in pairs:
        assert frr.counters(ours)["session-down"] == 0
