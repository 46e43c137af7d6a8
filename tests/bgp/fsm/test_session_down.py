"""Going down: stop(), force_down() (BFD), TCP loss; what SessionDown tells the RIB (RFC 4724, RFC 8538)."""

from __future__ import annotations

import pytest

from bgp.codec.errors import CeaseSubcode
from bgp.codec.messages import Notification
from bgp.fsm import DownReason, SessionDown, State, shutdown_communication
from bgp.types import IPV4_UNICAST, IPV6_UNICAST
from tests.bgp.fsm.harness import Harness, make_config, notification, peer_open


def test_established_stop_sends_cease_admin_shutdown_with_shutdown_communication() -> None:
    h = Harness()
    h.establish()
    h.session.stop(h.now, message="maintenance window 42 ✓")
    h.pump()
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (6, 2)
    assert sent.shutdown_message() == "maintenance window 42 ✓"
    assert h.closed == [1]
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.ESTABLISHED, State.IDLE, "ManualStop")
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "ManualStop"
    assert down.graceful_restart is False
    assert down.notification_sent == sent


def test_idle_after_stop_never_reconnects() -> None:
    h = Harness()
    h.establish()
    h.session.stop(h.now)
    h.pump()
    h.advance(3600)
    assert h.connects == [0.0]
    assert h.state() is State.IDLE
    assert h.session.next_deadline() is None


def test_established_stop_without_message_sends_no_data() -> None:
    h = Harness()
    h.establish()
    h.session.stop(h.now)
    h.pump()
    assert h.notifications_sent(1) == [Notification(6, 2)]


def test_established_stop_with_peer_deconfigured_subcode() -> None:
    h = Harness()
    h.establish()
    h.session.stop(h.now, CeaseSubcode.PEER_DECONFIGURED, message="ignored for this subcode")
    h.pump()
    assert h.notifications_sent(1) == [Notification(6, 3)]


def test_connect_stop_goes_idle_without_notification() -> None:
    h = Harness().start()
    h.session.stop(h.now)
    h.pump()
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.CONNECT, State.IDLE, "ManualStop")
    assert h.session.next_deadline() is None


def test_idle_stop_then_start_connects_immediately() -> None:
    h = Harness().start()
    h.session.stop(h.now)
    h.session.start(h.now)
    h.pump()
    assert h.state() is State.CONNECT
    assert len(h.connects) == 2


def test_shutdown_communication_is_cut_at_255_octets_on_a_character_boundary() -> None:
    data = shutdown_communication("é" * 200)  # 400 octets of UTF-8
    assert data[0] == 254
    assert data[1:].decode("utf-8") == "é" * 127
    assert shutdown_communication("") == b""


def test_established_force_down_bfd_sends_cease_bfd_down_and_flushes_routes() -> None:
    h = Harness()
    h.establish()  # the peer negotiated graceful restart
    h.session.force_down(h.now, DownReason.BFD_DOWN)
    h.pump()
    assert h.notifications_sent(1) == [Notification(6, 10)]
    assert h.closed == [1]
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.ESTABLISHED, State.IDLE, "BfdDown")
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "BfdDown"
    assert down.graceful_restart is False  # the forwarding path failed: stale routes would blackhole


def test_idle_after_force_down_reconnects_after_idle_hold_with_backoff() -> None:
    h = Harness(make_config(idle_hold_time=2.0))
    h.establish()
    h.session.force_down(h.now, DownReason.BFD_DOWN)
    h.pump()
    h.advance(1.9)
    assert h.connects == [0.0]
    h.advance(0.1)
    assert h.state() is State.CONNECT
    assert len(h.connects) == 2
    assert h.session.idle_hold_time == 4.0


def test_connect_force_down_goes_idle_and_retries_after_idle_hold() -> None:
    h = Harness().start()
    h.session.force_down(h.now, DownReason.BFD_DOWN)
    h.pump()
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.CONNECT, State.IDLE, "BfdDown")
    h.advance(h.config.idle_hold_time)
    assert h.state() is State.CONNECT


def test_idle_force_down_when_stopped_does_nothing() -> None:
    h = Harness()
    h.session.force_down(h.now, DownReason.BFD_DOWN)
    h.pump()
    assert h.events == []
    assert h.session.next_deadline() is None


@pytest.mark.parametrize(
    ("reason", "subcode"),
    [
        (DownReason.MAX_PREFIXES, 1),
        (DownReason.ADMIN_RESET, 4),
        (DownReason.CONFIGURATION_CHANGE, 6),
        (DownReason.OUT_OF_RESOURCES, 8),
    ],
)
def test_established_force_down_sends_matching_cease(reason: DownReason, subcode: int) -> None:
    h = Harness()
    h.establish()
    h.session.force_down(h.now, reason)
    h.pump()
    assert h.notifications_sent(1) == [Notification(6, subcode)]
    assert h.events_of(SessionDown)[0].reason.value == reason.value


def test_established_tcp_loss_keeps_routes_of_gr_peer_as_stale() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(graceful_restart=90, families=(IPV4_UNICAST,)))
    h.lose(1, "connection reset")
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "TcpConnectionFails"
    assert down.graceful_restart is True
    assert down.restart_time == 90
    assert down.stale_families == (IPV4_UNICAST,)
    assert down.detail == "connection reset"
    assert h.closed == []  # already gone: nothing to close
    assert h.state() is State.IDLE


def test_established_tcp_loss_flushes_routes_of_peer_without_gr() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(graceful_restart=None))
    h.lose(1)
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is False
    assert down.restart_time == 0


def test_established_tcp_loss_with_zero_restart_time_flushes() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(graceful_restart=0))
    h.lose(1)
    assert h.events_of(SessionDown)[0].graceful_restart is False


def test_established_notification_received_from_gr_peer_without_n_bit_flushes() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=False))
    h.feed(1, notification(6, 6))
    assert h.events_of(SessionDown)[0].graceful_restart is False


def test_established_notification_received_with_n_bit_keeps_routes() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=True))
    assert h.session.negotiated is not None
    assert h.session.negotiated.graceful_notification
    h.feed(1, notification(6, 6))
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is True
    assert set(down.stale_families) == {IPV4_UNICAST, IPV6_UNICAST}


def test_established_hard_reset_received_with_n_bit_flushes() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=True))
    h.feed(1, notification(6, 9, bytes([6, 2])))
    [down] = h.events_of(SessionDown)
    assert down.graceful_restart is False
    assert down.notification_received == Notification(6, 9, bytes([6, 2]))


def test_established_update_error_sent_with_n_bit_keeps_routes() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=True))
    h.feed(1, peer_open())  # FSM error 5/3: not a Hard Reset
    [down] = h.events_of(SessionDown)
    assert down.notification_sent is not None
    assert down.notification_sent.code == 5
    assert down.graceful_restart is True


def test_established_stop_with_n_bit_sends_hard_reset_wrapping_admin_shutdown() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=True))
    h.session.stop(h.now, message="bye")
    h.pump()
    [sent] = h.notifications_sent(1)
    # RFC 8538 §3: Hard Reset, data = the Cease it stands for (6/2) and that Cease's data.
    assert (sent.code, sent.subcode) == (6, 9)
    assert sent.data == bytes([6, 2, 3]) + b"bye"
    assert h.events_of(SessionDown)[0].graceful_restart is False


def test_established_n_bit_only_on_our_side_is_not_negotiated() -> None:
    h = Harness(make_config(graceful_restart_notification=True))
    h.establish(open_bytes=peer_open(notification_bit=False))
    h.session.stop(h.now)
    h.pump()
    assert h.notifications_sent(1) == [Notification(6, 2)]


def test_open_confirm_connection_lost_goes_idle_without_session_down() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open())
    h.lose(1)
    assert h.state() is State.IDLE
    assert h.transitions()[-1] == (State.OPEN_CONFIRM, State.IDLE, "TcpConnectionFails")
    assert h.events_of(SessionDown) == []


def test_established_connection_lost_then_late_events_for_it_are_ignored() -> None:
    h = Harness()
    h.establish()
    h.lose(1)
    events = len(h.events)
    h.feed(1, b"\xff" * 19)
    h.lose(1)
    assert len(h.events) == events


# -- held Idle: force_down with AllowAutomaticStart off (RFC 4271 §8.1.1) ------------------------


def _held(restart_at: float | None = None) -> Harness:
    h = Harness(make_config(idle_hold_time=1.0))
    h.establish()
    h.session.force_down(h.now, DownReason.MAX_PREFIXES, automatic_start=False, restart_at=restart_at)
    h.pump()
    return h


def test_established_force_down_without_automatic_start_sends_cease_1_and_stays_idle_for_an_hour() -> None:
    h = _held()
    assert h.notifications_sent(1) == [Notification(6, 1)]
    assert h.transitions()[-1] == (State.ESTABLISHED, State.IDLE, "MaxPrefixes")
    assert (h.session.held, h.session.hold_until) == (DownReason.MAX_PREFIXES, None)
    assert h.session.next_deadline() is None  # no IdleHold: nothing will start it
    h.advance(3600)
    assert h.connects == [0.0]
    assert h.state() is State.IDLE


def test_held_idle_refuses_the_peers_connection_with_cease_connection_rejected() -> None:
    h = _held()
    h.connect(2, outgoing=False)
    assert h.notifications_sent(2) == [Notification(6, 5)]
    assert h.closed == [1, 2]
    assert h.state() is State.IDLE
    assert h.session.held is DownReason.MAX_PREFIXES


def test_held_idle_with_restart_time_starts_once_when_it_elapses() -> None:
    h = _held(restart_at=30.0)
    assert h.session.hold_until == 30.0
    h.advance(29.9)
    assert h.connects == [0.0]
    h.advance(0.1)
    assert h.state() is State.CONNECT
    assert h.connects == [0.0, 30.0]
    assert h.transitions()[-1] == (State.IDLE, State.CONNECT, "AutomaticStart")
    assert h.session.held is None and h.session.hold_until is None


def test_held_idle_is_released_at_once_by_manual_start() -> None:
    h = _held(restart_at=30.0)
    h.advance(5)
    h.session.start(h.now)
    h.pump()
    assert h.state() is State.CONNECT
    assert h.connects == [0.0, 5.0]
    assert h.transitions()[-1] == (State.IDLE, State.CONNECT, "ManualStart")
    assert h.session.held is None
    h.advance(60)  # the old restart time is gone: no second start
    assert h.connects[:2] == [0.0, 5.0] and 30.0 not in h.connects


def test_held_idle_session_after_restart_drops_normally_with_idle_hold() -> None:
    h = _held(restart_at=10.0)
    h.advance(10)
    h.connect(3)
    h.feed(3, peer_open())
    h.lose(3)
    assert h.session.held is None
    assert h.session.next_deadline() is not None  # an ordinary drop: IdleHold restarts it


def test_held_idle_stop_clears_the_hold() -> None:
    h = _held(restart_at=10.0)
    h.session.stop(h.now)
    h.pump()
    assert h.session.held is None and h.session.next_deadline() is None
    h.advance(60)
    assert h.connects == [0.0]


def test_connect_force_down_without_automatic_start_goes_idle_and_stays() -> None:
    h = Harness().start()
    h.session.force_down(h.now, DownReason.MAX_PREFIXES, automatic_start=False)
    h.pump()
    assert h.state() is State.IDLE
    assert h.session.held is DownReason.MAX_PREFIXES
    h.advance(600)
    assert h.connects == [0.0]
