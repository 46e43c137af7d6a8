"""The BFD session state machine on a virtual clock (RFC 5880 §6.2, §6.5, §6.8)."""

from __future__ import annotations

import itertools
import random

import pytest

from bfd.codec import ControlPacket, Diag, DropReason, State
from bfd.session import Session, SessionConfig, StateChange, TransitionReason
from tests.bfd.support import PEER_DISCR, VirtualNetwork, peer_packet, sent, session_in

A_DISCR, B_DISCR = 0x0A0A0A0A, 0x0B0B0B0B


def drive(session: Session, until: float) -> list[tuple[float, ControlPacket]]:
    """Run a session with a silent peer, returning what it sent and when."""
    out: list[tuple[float, ControlPacket]] = []
    while (deadline := session.next_deadline()) is not None and deadline <= until:
        session.handle_timer(deadline)
        out.extend((deadline, packet) for packet in sent(session))
    return out


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def periodic_gaps(net: VirtualNetwork, index: int, since: float) -> list[float]:
    return gaps([s.at for s in net.sent_by(index, since) if not s.packet.final])


def assert_never_poll_and_final(net: VirtualNetwork) -> None:
    assert not [s for s in net.log if s.packet.poll and s.packet.final]  # §6.8.7


# ---- start -------------------------------------------------------------------------------------


def test_new_session_sends_down_at_once_with_slow_tx() -> None:
    session = Session(
        SessionConfig(local_discr=A_DISCR, min_tx_us=50_000, min_rx_us=70_000), random.Random(1), 10.0
    )
    (packet,) = sent(session)
    assert packet.state is State.DOWN
    assert (packet.my_discr, packet.your_discr) == (A_DISCR, 0)
    assert packet.diag == Diag.NO_DIAGNOSTIC
    assert packet.desired_min_tx_us == 1_000_000  # §6.8.3 floor while not Up
    assert packet.required_min_rx_us == 70_000
    assert packet.required_min_echo_rx_us == 0
    assert not (packet.poll or packet.final or packet.demand or packet.auth)
    deadline = session.next_deadline()
    assert deadline is not None
    assert 10.75 <= deadline <= 11.0


def test_slow_tx_every_second_while_peer_is_silent() -> None:
    session = Session(SessionConfig(local_discr=A_DISCR, min_tx_us=100_000), random.Random(2), 0.0)
    sent(session)
    packets = drive(session, 30.0)
    assert len(packets) > 25
    assert all(0.75 - 1e-9 <= gap <= 1.0 + 1e-9 for gap in gaps([0.0] + [at for at, _ in packets]))
    assert {p.desired_min_tx_us for _, p in packets} == {1_000_000}
    assert session.state is State.DOWN
    assert session.take_events() == []


def test_passive_session_is_silent_until_the_peer_speaks() -> None:
    session = Session(SessionConfig(local_discr=A_DISCR, passive=True), random.Random(1), 0.0)
    assert sent(session) == []
    assert session.next_deadline() is None
    session.handle_packet(peer_packet(None, State.DOWN), 1.0)
    (packet,) = sent(session)
    assert (packet.state, packet.your_discr) == (State.INIT, PEER_DISCR)
    # The peer goes silent: after a detection time the remote discriminator is forgotten, and a
    # passive session stops transmitting again (§6.8.1, §6.8.7).
    drive(session, 10.0)
    assert session.state is State.DOWN
    assert session.remote_discr == 0
    assert session.next_deadline() is None


# ---- every transition of §6.2 / §6.8.6 steps 21-23 ------------------------------------------------

R = TransitionReason
TRANSITIONS = [
    (State.DOWN, State.ADMIN_DOWN, State.DOWN, None),
    (State.DOWN, State.DOWN, State.INIT, (Diag.NO_DIAGNOSTIC, R.RECEIVED_DOWN)),
    (State.DOWN, State.INIT, State.UP, (Diag.NO_DIAGNOSTIC, R.RECEIVED_INIT)),
    (State.DOWN, State.UP, State.DOWN, None),
    (State.INIT, State.ADMIN_DOWN, State.DOWN, (Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, R.RECEIVED_ADMIN_DOWN)),
    (State.INIT, State.DOWN, State.INIT, None),
    (State.INIT, State.INIT, State.UP, (Diag.NO_DIAGNOSTIC, R.RECEIVED_INIT)),
    (State.INIT, State.UP, State.UP, (Diag.NO_DIAGNOSTIC, R.RECEIVED_UP)),
    (State.UP, State.ADMIN_DOWN, State.DOWN, (Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, R.RECEIVED_ADMIN_DOWN)),
    (State.UP, State.DOWN, State.DOWN, (Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, R.RECEIVED_DOWN)),
    (State.UP, State.INIT, State.UP, None),
    (State.UP, State.UP, State.UP, None),
]


@pytest.mark.parametrize(
    ("local", "received", "expected", "change"),
    TRANSITIONS,
    ids=[f"{a.name}-rx-{b.name}" for a, b, _, _ in TRANSITIONS],
)
def test_received_state_drives_transition(
    local: State, received: State, expected: State, change: tuple[Diag, TransitionReason] | None
) -> None:
    session = session_in(local, now=3.0)
    assert session.handle_packet(peer_packet(session, received), 3.5) is None
    assert session.state is expected
    events = session.take_events()
    packets = sent(session)
    if change is None:
        assert events == []
        assert packets == []
        return
    diag, reason = change
    assert events == [StateChange(local, expected, diag, reason, 3.5)]
    assert session.local_diag == diag
    # The new state is announced at once, to the peer it came from (§6.8.7 contents).
    assert [(p.state, p.diag, p.your_discr) for p in packets] == [(expected, diag, PEER_DISCR)]


@pytest.mark.parametrize("received", list(State))
def test_admin_down_session_discards_everything(received: State) -> None:
    session = session_in(State.ADMIN_DOWN)
    reason = session.handle_packet(peer_packet(session, received, poll=True), 1.0)
    assert reason is DropReason.SESSION_ADMIN_DOWN  # §6.8.6 step 21, before the Poll is answered
    assert session.state is State.ADMIN_DOWN
    assert session.take_events() == []
    assert sent(session) == []
    assert session.counters.drops == {DropReason.SESSION_ADMIN_DOWN: 1}
    assert session.counters.rx == 0
    assert session.remote_state is received  # steps 13-20 still ran


@pytest.mark.parametrize("local", [State.DOWN, State.INIT, State.UP])
def test_admin_down_and_up(local: State) -> None:
    session = session_in(local)
    session.admin_down(2.0)
    assert session.take_events() == [
        StateChange(local, State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, R.ADMIN_DOWN, 2.0)
    ]
    (packet,) = sent(session)  # §6.8.16 / RFC 5882 §3.2: tell the peer it is deliberate, at once
    assert (packet.state, packet.diag) == (State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN)
    assert packet.desired_min_tx_us == 1_000_000
    assert not packet.poll
    session.admin_down(2.5)
    assert session.take_events() == []
    # AdminDown keeps being sent at the slow rate and nothing is detected.
    packets = drive(session, 12.0)
    assert packets
    assert {(p.state, p.diag) for _, p in packets} == {(State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN)}
    assert session.take_events() == []
    session.admin_up(12.0)
    assert session.take_events() == [
        StateChange(State.ADMIN_DOWN, State.DOWN, Diag.NO_DIAGNOSTIC, R.ADMIN_UP, 12.0)
    ]
    assert [p.state for p in sent(session)] == [State.DOWN]
    session.admin_up(12.5)
    assert session.take_events() == []


def test_admin_down_with_path_down_diag() -> None:
    session = session_in(State.UP)
    session.admin_down(1.0, Diag.PATH_DOWN)
    assert sent(session)[0].diag == Diag.PATH_DOWN


# ---- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "peer_mult", "peer_tx_us", "our_rx_us", "expected_us"),
    [
        (State.UP, 3, 300_000, 300_000, 900_000),
        (State.UP, 4, 500_000, 100_000, 2_000_000),  # the peer sends slower than we could receive
        (State.UP, 2, 50_000, 200_000, 400_000),  # we do not accept faster than 200 ms
        (State.INIT, 3, 1_000_000, 300_000, 3_000_000),
    ],
)
def test_detection_fires_exactly_at_detection_time(
    local: State, peer_mult: int, peer_tx_us: int, our_rx_us: int, expected_us: int
) -> None:
    session = session_in(local, now=5.0, min_rx_us=our_rx_us)
    last = 7.0
    state = State.UP if local is State.UP else State.DOWN
    session.handle_packet(
        peer_packet(session, state, detect_mult=peer_mult, desired_min_tx_us=peer_tx_us), last
    )
    assert session.state is local
    assert session.detection_time_us == expected_us
    expiry = last + expected_us / 1_000_000
    drive(session, expiry - 1e-6)
    assert session.state is local
    assert session.next_deadline() == expiry
    session.handle_timer(expiry)
    assert session.state is State.DOWN
    (event,) = session.take_events()
    assert event == StateChange(
        local, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, R.DETECTION_TIME_EXPIRED, expiry
    )
    assert event.failure is (local is State.UP)
    assert session.remote_discr == 0  # §6.8.1
    (packet,) = sent(session)
    assert (packet.state, packet.diag, packet.your_discr) == (
        State.DOWN,
        Diag.CONTROL_DETECTION_TIME_EXPIRED,
        0,
    )


def test_remote_discriminator_forgotten_after_silence_while_down() -> None:
    session = session_in(State.DOWN)
    session.handle_packet(peer_packet(session, State.UP), 1.0)  # Up from Down changes nothing
    assert session.remote_discr == PEER_DISCR
    drive(session, 1.0 + 0.9 - 1e-6)
    assert session.remote_discr == PEER_DISCR
    drive(session, 1.9)
    assert session.remote_discr == 0
    assert session.take_events() == []


def test_packets_keep_an_up_session_up() -> None:
    session = session_in(State.UP)
    now = 0.0
    for _ in range(100):
        now += 0.85  # just inside the 0.9 s detection time
        drive(session, now)
        session.handle_packet(peer_packet(session, State.UP), now)
    assert session.state is State.UP
    assert session.take_events() == []
    assert session.counters.rx == 102


def test_failure_is_only_a_lost_up_session() -> None:
    up_lost = StateChange(State.UP, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, R.RECEIVED_DOWN, 0)
    admin = StateChange(State.UP, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, R.RECEIVED_ADMIN_DOWN, 0)
    init_lost = StateChange(
        State.INIT, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, R.DETECTION_TIME_EXPIRED, 0
    )
    assert up_lost.failure
    assert not admin.failure
    assert not init_lost.failure


# ---- two sessions on a virtual network ---------------------------------------------------------


def test_three_way_handshake_brings_both_up() -> None:
    net = VirtualNetwork.pair(SessionConfig(local_discr=A_DISCR), SessionConfig(local_discr=B_DISCR))
    net.run_until_up()
    for index in (0, 1):
        assert [(e.old, e.new) for e in net.events_of(index)] == [
            (State.DOWN, State.INIT),
            (State.INIT, State.UP),
        ]
    a, b = net.sessions
    assert (a.remote_discr, b.remote_discr) == (B_DISCR, A_DISCR)
    assert net.now < 0.1  # both send Down at once, then answer each state change at once
    assert_never_poll_and_final(net)


def test_timer_negotiation_honours_the_remote_both_ways() -> None:
    """We want to send every 100 ms but the peer requires 300 ms: we send every 300 ms (less jitter).
    The peer wants to send every 500 ms: our detection time is its multiplier x 500 ms."""
    a_cfg = SessionConfig(local_discr=A_DISCR, min_tx_us=100_000, min_rx_us=100_000, multiplier=3)
    b_cfg = SessionConfig(local_discr=B_DISCR, min_tx_us=500_000, min_rx_us=300_000, multiplier=5)
    net = VirtualNetwork.pair(a_cfg, b_cfg)
    net.run_until_up()
    a, b = net.sessions
    assert a.tx_interval_us == 300_000
    assert b.tx_interval_us == 500_000
    assert a.detection_time_us == 5 * 500_000
    assert b.detection_time_us == 3 * 300_000
    start = net.now
    net.run_until(start + 20.0)
    a_gaps = periodic_gaps(net, 0, start)
    b_gaps = periodic_gaps(net, 1, start)
    assert len(a_gaps) > 60
    assert all(0.225 - 1e-9 <= g <= 0.300 + 1e-9 for g in a_gaps)
    assert all(0.375 - 1e-9 <= g <= 0.500 + 1e-9 for g in b_gaps)
    assert len(net.events) == 4  # only the way up
    assert_never_poll_and_final(net)


def test_jitter_with_multiplier_one_is_75_to_90_percent() -> None:
    a_cfg = SessionConfig(local_discr=A_DISCR, min_tx_us=200_000, min_rx_us=200_000, multiplier=1)
    b_cfg = SessionConfig(local_discr=B_DISCR, min_tx_us=200_000, min_rx_us=200_000, multiplier=3)
    net = VirtualNetwork.pair(a_cfg, b_cfg)
    net.run_until_up()
    start = net.now
    net.run_until(start + 30.0)
    a_gaps = periodic_gaps(net, 0, start)
    b_gaps = periodic_gaps(net, 1, start)
    assert all(0.150 - 1e-9 <= g <= 0.180 + 1e-9 for g in a_gaps)
    assert max(b_gaps) > 0.19  # the other side jitters over the full 75-100 %
    assert net.sessions[1].state is State.UP  # a multiplier of 1 holds with the tighter jitter


def test_detection_after_link_loss_is_exact() -> None:
    net = VirtualNetwork.pair(SessionConfig(local_discr=A_DISCR), SessionConfig(local_discr=B_DISCR))
    net.run_until_up()
    net.run_until(net.now + 3.0)
    b = net.sessions[1]
    detection = b.detection_time_us
    assert detection == 900_000
    net.events.clear()
    net.cut(0)  # A -> B is lost
    net.run_until(net.now + 5.0)
    last_arrival = max(t for receiver, t in net.arrivals if receiver == 1)
    b_events = net.events_of(1)
    assert b_events[0] == StateChange(
        State.UP,
        State.DOWN,
        Diag.CONTROL_DETECTION_TIME_EXPIRED,
        R.DETECTION_TIME_EXPIRED,
        b_events[0].at,
    )
    assert b_events[0].at == pytest.approx(last_arrival + detection / 1e6, abs=1e-9)
    assert b_events[0].failure
    # B's Down reaches A, which goes down too: the peer signalled it (diag 3), a failure.
    a_events = net.events_of(0)
    assert a_events[0].reason is R.RECEIVED_DOWN
    assert a_events[0].diag == Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    assert a_events[0].failure
    net.restore(0)
    net.run_until_up(limit=net.now + 5.0)


def test_peer_admin_down_is_not_a_failure() -> None:
    net = VirtualNetwork.pair(SessionConfig(local_discr=A_DISCR), SessionConfig(local_discr=B_DISCR))
    net.run_until_up()
    net.events.clear()
    a, b = net.sessions
    b.admin_down(net.now)
    net.flush()
    assert net.log[-1].packet.state is State.ADMIN_DOWN
    net.run_until(net.now + 0.01)
    (a_event,) = net.events_of(0)
    assert (a_event.new, a_event.diag, a_event.reason) == (
        State.DOWN,
        Diag.NEIGHBOR_SIGNALED_SESSION_DOWN,
        R.RECEIVED_ADMIN_DOWN,
    )
    assert not a_event.failure
    assert a.remote_state is State.ADMIN_DOWN
    net.run_until(net.now + 10.0)
    assert (a.state, b.state) == (State.DOWN, State.ADMIN_DOWN)  # A does not move to Init
    assert b.counters.drops[DropReason.SESSION_ADMIN_DOWN] > 0
    assert len(net.events) == 2
    b.admin_up(net.now)
    net.flush()
    net.run_until_up(limit=net.now + 5.0)


# ---- Poll / Final ------------------------------------------------------------------------------


def _up_pair(
    a_tx: int = 300_000, a_rx: int = 300_000, b_tx: int = 300_000, b_rx: int = 300_000
) -> VirtualNetwork:
    net = VirtualNetwork.pair(
        SessionConfig(local_discr=A_DISCR, min_tx_us=a_tx, min_rx_us=a_rx),
        SessionConfig(local_discr=B_DISCR, min_tx_us=b_tx, min_rx_us=b_rx),
    )
    net.run_until_up()
    net.run_until(net.now + 2.0)
    net.events.clear()
    return net


def test_going_up_polls_from_slow_to_configured_timers() -> None:
    net = VirtualNetwork.pair(
        SessionConfig(local_discr=A_DISCR, min_tx_us=100_000), SessionConfig(local_discr=B_DISCR)
    )
    net.run_until_up()
    first_up = next(s for s in net.sent_by(0) if s.packet.state is State.UP)
    assert first_up.packet.poll
    assert first_up.packet.desired_min_tx_us == 100_000
    assert any(s.packet.final for s in net.sent_by(1))
    assert not net.sessions[0].poll_active


def test_slowing_tx_on_a_live_session_waits_for_final_and_does_not_flap() -> None:
    net = _up_pair()
    a, b = net.sessions
    a.set_timers(net.now, min_tx_us=600_000)
    net.flush()
    poll = net.log[-1].packet
    assert (poll.poll, poll.desired_min_tx_us) == (True, 600_000)
    assert a.poll_active
    assert a.tx_interval_us == 300_000  # §6.8.3: not slower before the peer has answered
    net.run_until(net.now + 0.0015)  # the Poll has arrived, the Final not yet
    assert b.detection_time_us == 3 * 600_000  # the peer adapted on the Poll itself
    assert a.tx_interval_us == 300_000
    net.run_until(net.now + 0.001)
    assert not a.poll_active
    assert a.tx_interval_us == 600_000
    start = net.now
    net.run_until(start + 20.0)
    assert all(0.45 - 1e-9 <= g <= 0.6 + 1e-9 for g in periodic_gaps(net, 0, start + 0.6))
    assert net.events == []
    assert_never_poll_and_final(net)


def test_shortening_detection_waits_for_final() -> None:
    net = _up_pair(a_rx=300_000, b_tx=100_000)
    a, b = net.sessions
    assert a.detection_time_us == 900_000
    a.set_timers(net.now, min_rx_us=100_000)
    net.flush()
    assert a.detection_time_us == 900_000  # §6.8.3: the old, longer value until the Final
    net.run_until(net.now + 0.0015)
    assert b.tx_interval_us == 100_000  # the peer speeds up on the Poll
    net.run_until(net.now + 0.001)
    assert a.detection_time_us == 300_000
    net.run_until(net.now + 20.0)
    assert net.events == []


def test_faster_tx_and_longer_detection_apply_at_once() -> None:
    net = _up_pair()
    a, _ = net.sessions
    a.set_timers(net.now, min_tx_us=100_000, min_rx_us=600_000)
    assert a.timers.effective_tx_us == 100_000
    assert a.detection_time_us == 3 * 600_000
    net.flush()
    net.run_until(net.now + 10.0)
    assert net.events == []
    assert not a.poll_active


def test_a_change_during_a_poll_needs_a_second_final() -> None:
    session = session_in(State.UP)
    final = peer_packet(session, State.UP, final=True)
    session.handle_packet(final, 0.0)  # end the Poll the Up transition started
    assert not session.poll_active
    session.set_timers(1.0, min_tx_us=600_000)
    session.set_timers(1.0, min_tx_us=700_000)
    assert session.poll_active
    session.handle_packet(final, 1.01)
    assert session.poll_active
    assert session.timers.effective_tx_us == 300_000
    session.handle_packet(final, 1.02)
    assert not session.poll_active
    assert session.timers.effective_tx_us == 700_000
    assert all(p.poll for p in sent(session) if not p.final)


def test_poll_is_answered_with_final_outside_the_schedule() -> None:
    session = session_in(State.UP)
    session.handle_packet(peer_packet(session, State.UP), 0.1)
    before = session.next_deadline()
    session.handle_packet(peer_packet(session, State.UP, poll=True, desired_min_tx_us=1_000_000), 0.1)
    (packet,) = sent(session)
    assert (packet.final, packet.poll, packet.state) == (True, False, State.UP)
    assert session.next_deadline() == before
    assert session.detection_time_us == 3_000_000  # the peer's slower TX counts at once


def test_poll_that_changes_state_is_answered_once() -> None:
    """The Final already carries the new state, so no separate announcement is sent."""
    session = session_in(State.INIT)
    session.handle_packet(peer_packet(session, State.UP, poll=True), 1.0)
    assert session.state is State.UP
    assert [(p.state, p.final) for p in sent(session)] == [(State.UP, True)]


def test_peer_raising_its_rx_repaces_our_next_packet() -> None:
    session = session_in(State.UP)  # the Up announcement went out at 0.0
    session.handle_packet(
        peer_packet(session, State.UP, required_min_rx_us=2_000_000, desired_min_tx_us=1_000_000), 0.1
    )
    assert session.tx_interval_us == 2_000_000
    deadline = session.next_deadline()
    assert deadline is not None
    assert 1.5 <= deadline < 2.0


def test_set_timers_validates() -> None:
    session = session_in(State.UP)
    with pytest.raises(ValueError):
        session.set_timers(1.0, multiplier=0)
    with pytest.raises(ValueError):
        session.set_timers(1.0, min_rx_us=0)


def test_set_timers_multiplier_is_sent_at_once() -> None:
    session = session_in(State.UP)
    session.set_timers(1.0, multiplier=7)
    drive(session, 1.5)
    session.handle_packet(peer_packet(session, State.UP, poll=True), 1.5)
    assert sent(session)[-1].detect_mult == 7


# ---- limits on transmission --------------------------------------------------------------------


def test_remote_demand_mode_stops_periodic_tx_but_polls_are_answered() -> None:
    session = session_in(State.UP)
    session.handle_packet(peer_packet(session, State.UP, final=True), 0.0)  # end our Poll
    sent(session)
    now = 0.0
    quiet: list[ControlPacket] = []
    for _ in range(20):
        now += 0.25
        session.handle_packet(peer_packet(session, State.UP, demand=True), now)
        quiet.extend(p for _, p in drive(session, now + 0.2))
    assert quiet == []
    session.handle_packet(peer_packet(session, State.UP, demand=True, poll=True), now + 0.2)
    assert [p.final for p in sent(session)] == [True]
    session.handle_packet(peer_packet(session, State.UP, demand=False), now + 0.3)
    assert drive(session, now + 0.7)  # periodic transmission resumes
    assert session.state is State.UP


def test_remote_min_rx_zero_stops_periodic_tx() -> None:
    session = session_in(State.UP)
    session.handle_packet(peer_packet(session, State.UP, required_min_rx_us=0), 0.1)
    assert sent(session) == []
    assert session.next_deadline() == pytest.approx(1.0)  # only the detection deadline is left
    assert drive(session, 0.95) == []


# ---- reception checks --------------------------------------------------------------------------


def test_single_hop_requires_ttl_255() -> None:
    session = session_in(State.UP)
    assert session.handle_packet(peer_packet(session, State.UP), 1.0, ttl=254) is DropReason.BAD_TTL
    assert session.handle_packet(peer_packet(session, State.UP), 1.0, ttl=255) is None
    assert session.handle_packet(peer_packet(session, State.UP), 1.0) is None
    assert session.counters.drops == {DropReason.BAD_TTL: 1}


def test_multihop_requires_the_configured_minimum_ttl() -> None:
    session = session_in(State.UP, multihop=True, min_ttl=250)
    assert session.handle_packet(peer_packet(session, State.UP), 1.0, ttl=249) is DropReason.BAD_TTL
    assert session.handle_packet(peer_packet(session, State.UP), 1.0, ttl=250) is None


def test_packet_for_another_discriminator_is_dropped() -> None:
    session = session_in(State.UP)
    packet = peer_packet(session, State.DOWN, your_discr=session.config.local_discr + 1)
    assert session.handle_packet(packet, 1.0) is DropReason.UNKNOWN_YOUR_DISCRIMINATOR
    assert session.state is State.UP


def test_counters() -> None:
    session = Session(SessionConfig(local_discr=A_DISCR), random.Random(1), 0.0)
    transmitted = len(sent(session))
    session.handle_packet(peer_packet(session, State.DOWN), 0.1)
    session.handle_packet(peer_packet(session, State.UP), 0.2, ttl=1)
    transmitted += len(sent(session)) + len(drive(session, 5.0))
    assert session.counters.rx == 1
    assert session.counters.tx == transmitted > 3
    assert session.counters.drops == {DropReason.BAD_TTL: 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_discr": 0},
        {"local_discr": 1 << 32},
        {"local_discr": 1, "min_tx_us": 0},
        {"local_discr": 1, "min_rx_us": 0},
        {"local_discr": 1, "multiplier": 256},
        {"local_discr": 1, "min_ttl": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SessionConfig(**kwargs)  # type: ignore[arg-type]
