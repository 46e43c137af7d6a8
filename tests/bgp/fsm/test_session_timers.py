"""Hold, keepalive, ConnectRetry and IdleHold timers on the virtual clock."""

from __future__ import annotations

import itertools
import random

import pytest

from bgp.codec.messages import Keepalive, Notification
from bgp.fsm import SessionDown, State
from tests.bgp.fsm.harness import KEEPALIVE, Harness, SequenceRng, make_config, notification, peer_open


def _keepalive_times(h: Harness, conn: int = 1) -> list[float]:
    return [t for t, m in h.sent_at[conn] if isinstance(m, Keepalive)]


def test_open_sent_hold_timer_expires_after_four_minutes_sends_4_0() -> None:
    h = Harness().start()
    h.connect(1)
    h.advance(239)
    assert h.state() is State.OPEN_SENT
    h.advance(1)
    assert h.notifications_sent(1) == [Notification(4, 0)]
    assert h.closed == [1]
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.OPEN_SENT, State.IDLE, "HoldTimerExpires")


def test_open_confirm_hold_timer_expires_sends_4_0() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open(hold_time=9))
    h.advance(9)
    assert h.notifications_sent(1) == [Notification(4, 0)]
    assert h.state() is State.IDLE


def test_established_hold_timer_expires_sends_4_0_and_flushes_gr_peer_without_n_bit() -> None:
    # RFC 4724 §4.2: the session ends with our NOTIFICATION, so without the N bit nothing is kept stale
    # (a silent appliance's routes must move to the standby now, not after its restart time).
    h = Harness()
    h.establish(open_bytes=peer_open(hold_time=30))
    h.advance(30)
    assert h.notifications_sent(1)[-1] == Notification(4, 0)
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "HoldTimerExpires"
    assert down.notification_sent == Notification(4, 0)
    assert down.graceful_restart is False
    assert down.stale_families == ()
    assert h.session.negotiated is None


def test_established_hold_timer_expires_keeps_routes_of_gr_peer_with_n_bit() -> None:
    # RFC 8538 §4: with the N bit negotiated, a NOTIFICATION other than Hard Reset (4/0 here) is a restart.
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(hold_time=30, notification_bit=True))
    h.advance(30)
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is True
    assert down.restart_time == 120
    assert set(down.stale_families) == set(h.config.families)


def test_established_hold_timer_expires_flushes_routes_of_peer_without_gr() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(hold_time=30, graceful_restart=None))
    h.advance(30)
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is False
    assert down.stale_families == ()


def test_established_hold_timer_expires_flushes_when_we_do_not_advertise_gr() -> None:
    h = Harness(make_config(graceful_restart_time=None))
    h.establish(open_bytes=peer_open(hold_time=30))
    h.advance(30)
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is False


def test_established_keepalives_received_keep_session_up() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(hold_time=9))
    for _ in range(20):
        h.advance(8)
        h.feed(1, KEEPALIVE)
    assert h.state() is State.ESTABLISHED


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_established_keepalive_cadence_within_jitter_bounds(seed: int) -> None:
    h = Harness(rng=random.Random(seed).random)
    h.establish()
    start = h.now
    for _ in range(40):
        h.advance(10)
        h.feed(1, KEEPALIVE)
    times = [start, *_keepalive_times(h)[1:]]  # the first KEEPALIVE answered the OPEN
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 13
    # RFC 4271 §10: keepalive time 30 s, jitter factor uniformly in [0.75, 1.0].
    assert all(22.5 <= gap <= 30.0 for gap in gaps), gaps
    assert max(gaps) - min(gaps) > 0.5  # actually jittered


def test_established_keepalive_interval_extremes_of_rng() -> None:
    low = Harness(rng=SequenceRng(0.0))
    low.establish()
    low.advance(100)
    high = Harness(rng=SequenceRng(0.999999))
    high.establish()
    high.advance(100)
    assert _keepalive_times(low)[1:4] == [22.5, 45.0, 67.5]
    assert _keepalive_times(high)[1] == pytest.approx(30.0, abs=1e-4)


def test_negotiated_hold_is_the_smaller_and_keepalive_a_third() -> None:
    h = Harness(make_config(hold_time=90))
    h.establish(open_bytes=peer_open(hold_time=15))
    n = h.session.negotiated
    assert n is not None
    assert (n.hold_time, n.keepalive_time) == (15, 5)


def test_configured_keepalive_is_capped_at_a_third_of_negotiated_hold() -> None:
    h = Harness(make_config(hold_time=90, keepalive_time=20))
    h.establish(open_bytes=peer_open(hold_time=30))
    n = h.session.negotiated
    assert n is not None
    assert n.keepalive_time == 10
    short = Harness(make_config(hold_time=90, keepalive_time=5))
    short.establish()
    assert short.session.negotiated is not None
    assert short.session.negotiated.keepalive_time == 5


def test_open_sent_peer_hold_zero_disables_keepalive_and_hold_timers() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(hold_time=0))
    n = h.session.negotiated
    assert n is not None
    assert (n.hold_time, n.keepalive_time) == (0, 0)
    assert h.session.next_deadline() is None
    h.advance(100_000)
    assert h.state() is State.ESTABLISHED
    assert _keepalive_times(h) == [_keepalive_times(h)[0]]  # only the one confirming the OPEN


def test_established_update_sent_with_now_restarts_keepalive_timer() -> None:
    h = Harness(rng=SequenceRng(0.0))
    h.establish()
    first = h.session.next_deadline()
    assert first == h.now + 22.5
    h.advance(20)
    assert h.session.send_messages([KEEPALIVE], now=h.now) is True
    assert h.session.next_deadline() == h.now + 22.5


def test_connect_retry_interval_is_jittered_within_bounds() -> None:
    for value, expected in ((0.0, 3.75), (0.5, 4.375)):
        h = Harness(rng=SequenceRng(value)).start()
        assert h.session.next_deadline() == pytest.approx(expected)


def _error_drop(h: Harness) -> None:
    """Bring the session up to OpenConfirm and have the peer send a NOTIFICATION."""
    if h.state() is State.IDLE:
        deadline = h.session.next_deadline()
        assert deadline is not None
        h.advance(deadline - h.now)
    assert h.state() is State.CONNECT
    conn = len(h.connects)
    h.connect(conn)
    h.feed(conn, peer_open(), notification(6, 4))
    assert h.state() is State.IDLE


def test_idle_hold_doubles_after_each_error_drop_up_to_max() -> None:
    h = Harness(make_config(idle_hold_time=1.0, max_idle_hold_time=8.0)).start()
    waits = []
    for _ in range(6):
        _error_drop(h)
        dropped_at = h.now
        deadline = h.session.next_deadline()
        assert deadline is not None
        waits.append(deadline - dropped_at)
        h.advance(deadline - h.now - 0.5)
        assert h.state() is State.IDLE  # not early
        h.advance(0.5)
        assert h.state() is State.CONNECT
        assert h.transitions()[-1] == (State.IDLE, State.CONNECT, "IdleHoldTimerExpires")
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_idle_hold_resets_after_stable_established_period() -> None:
    h = Harness(make_config(idle_hold_time=1.0, max_idle_hold_time=60.0, idle_hold_reset_time=60.0)).start()
    for _ in range(3):
        _error_drop(h)
    assert h.session.idle_hold_time == 8.0
    h.advance(4.0)
    h.connect(10)
    h.feed(10, peer_open(hold_time=0), KEEPALIVE)
    assert h.state() is State.ESTABLISHED
    h.advance(59)
    h.feed(10, notification(6, 4))
    assert h.session.next_deadline() == h.now + 8.0  # 59 s was not stable yet
    h.advance(8)
    h.connect(11)
    h.feed(11, peer_open(hold_time=0), KEEPALIVE)
    h.advance(60)
    h.feed(11, notification(6, 4))
    assert h.session.next_deadline() == h.now + 1.0  # stable for 60 s: backoff starts over
    assert h.session.idle_hold_time == 2.0


def test_idle_hold_incoming_connection_refused_until_it_expires() -> None:
    h = Harness(make_config(passive=True)).start()
    h.connect(1, outgoing=False)
    h.feed(1, peer_open(), notification(6, 4))
    assert h.state() is State.IDLE
    h.connect(2, outgoing=False)
    assert [(n.code, n.subcode) for n in h.notifications_sent(2)] == [(6, 5)]
    h.advance(h.config.idle_hold_time)
    assert h.state() is State.ACTIVE
    h.connect(3, outgoing=False)
    assert h.state() is State.OPEN_SENT


def test_handle_timer_early_or_repeated_is_harmless() -> None:
    h = Harness()
    h.establish()
    before = h.session.next_deadline()
    h.session.handle_timer(h.now)
    h.session.handle_timer(h.now)
    h.pump()
    assert h.session.next_deadline() == before
    assert h.state() is State.ESTABLISHED
