"""One BFD session in asynchronous mode (RFC 5880 §6), sans-IO.

The session never reads a clock, opens a socket or draws randomness of its own: the caller passes
`now` (monotonic seconds) and a `Rng`. Use it like this::

    session = Session(SessionConfig(local_discr=discr), rng, now)  # discr from DiscriminatorRegistry.add
    # on a datagram (after bfd.codec.decode and bfd.registry demultiplexing):
    session.handle_packet(packet, now, ttl=received_ttl)
    # when the timer armed at session.next_deadline() fires:
    session.handle_timer(now)
    # after every call: send session.take_packets() (bytes, already authenticated) with TTL 255,
    # deliver session.take_events() (StateChange) to clients, re-arm the timer at next_deadline().

`admin_down(now)` / `admin_up(now)` implement §6.8.16 (an AdminDown packet goes out at once, so the
peer sees a deliberate shutdown, not a failure), `set_timers(now, ...)` changes timers on a live session
through a Poll Sequence (§6.5, §6.8.3) without a flap.

Reception follows §6.8.6 from the point the codec and the registry leave off: the TTL rule of
RFC 5881 §5 / RFC 5883 §5, steps 10-12 (authentication), 13-20 (state variables, Final, timers), 21
(discard while AdminDown), 22-23 (transitions, the `_RX_TRANSITIONS` table), 25-26 (remote Demand
mode) and 27 (answer Poll with Final). Every discarded packet is counted by `DropReason`.

Transmission follows §6.8.7: periodic packets at max(Desired Min TX, remote Required Min RX) minus
0-25% jitter, none while we are passive and the remote discriminator is unknown, none while the remote
asks for no packets (Required Min RX 0) or has Demand mode active; a packet also goes out at once on
every state change. Detection (§6.8.4) fires at exactly last reception + detection time.
"""

from __future__ import annotations

import dataclasses
import enum

from bfd.auth import AuthConfig, Authenticator
from bfd.codec import U32_MAX, ControlPacket, Diag, DropReason, State, encode
from bfd.timers import (
    US_PER_S,
    LocalTimers,
    Rng,
    detection_time_us,
    jittered_interval_s,
    tx_interval_us,
)

SINGLE_HOP_TTL = 255  # RFC 5881 §5 (GTSM): sent with and received with exactly 255


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a session is asked to do; intervals in microseconds.

    `min_tx_us` is bfd.DesiredMinTxInterval once Up, `min_rx_us` bfd.RequiredMinRxInterval (non-zero:
    we always want to hear from the peer), `multiplier` bfd.DetectMult. `passive` takes the Passive
    role (§6.1: wait for the peer to speak first). `multihop` selects RFC 5883, where received packets
    need a TTL of at least `min_ttl`; single-hop packets need exactly 255 (RFC 5881 §5).
    """

    local_discr: int
    min_tx_us: int = 300_000
    min_rx_us: int = 300_000
    multiplier: int = 3
    auth: AuthConfig | None = None
    passive: bool = False
    multihop: bool = False
    min_ttl: int = 254

    def __post_init__(self) -> None:
        if not 1 <= self.local_discr <= U32_MAX:
            raise ValueError("local discriminator must be a non-zero 32-bit value (RFC 5880 §6.3)")
        if not 1 <= self.min_tx_us <= U32_MAX:
            raise ValueError("min_tx_us must be 1..2^32-1 microseconds")
        if not 1 <= self.min_rx_us <= U32_MAX:
            raise ValueError("min_rx_us must be 1..2^32-1 microseconds")
        if not 1 <= self.multiplier <= 255:
            raise ValueError("multiplier must be 1..255")
        if not 1 <= self.min_ttl <= 255:
            raise ValueError("min_ttl must be 1..255")


class TransitionReason(enum.Enum):
    """Why the local state changed; the value is a bounded label for logs, status and metrics."""

    RECEIVED_DOWN = "received_down"
    RECEIVED_INIT = "received_init"
    RECEIVED_UP = "received_up"
    RECEIVED_ADMIN_DOWN = "received_admin_down"
    DETECTION_TIME_EXPIRED = "detection_time_expired"
    ADMIN_DOWN = "admin_down"
    ADMIN_UP = "admin_up"


@dataclasses.dataclass(frozen=True, slots=True)
class StateChange:
    """A local state transition, with the diagnostic we now send and the time it happened."""

    old: State
    new: State
    diag: Diag
    reason: TransitionReason
    at: float

    @property
    def failure(self) -> bool:
        """True when an Up session lost liveness; a peer's AdminDown is not a failure (RFC 5882 §3.2)."""
        return (
            self.old is State.UP
            and self.new is State.DOWN
            and self.reason in (TransitionReason.DETECTION_TIME_EXPIRED, TransitionReason.RECEIVED_DOWN)
        )


@dataclasses.dataclass(slots=True)
class SessionCounters:
    rx: int = 0  # packets accepted (§6.8.6 step 28)
    tx: int = 0  # packets handed out by take_packets
    drops: dict[DropReason, int] = dataclasses.field(default_factory=dict)


# §6.8.6 steps 22-23: (our state, received state) -> (next state, diag to set or None to keep, reason).
# Pairs not listed change nothing. Going Up clears the diagnostic of the previous failure.
_RX_TRANSITIONS: dict[tuple[State, State], tuple[State, Diag | None, TransitionReason]] = {
    (State.DOWN, State.DOWN): (State.INIT, None, TransitionReason.RECEIVED_DOWN),
    (State.DOWN, State.INIT): (State.UP, Diag.NO_DIAGNOSTIC, TransitionReason.RECEIVED_INIT),
    (State.INIT, State.INIT): (State.UP, Diag.NO_DIAGNOSTIC, TransitionReason.RECEIVED_INIT),
    (State.INIT, State.UP): (State.UP, Diag.NO_DIAGNOSTIC, TransitionReason.RECEIVED_UP),
    (State.INIT, State.ADMIN_DOWN): (
        State.DOWN,
        Diag.NEIGHBOR_SIGNALED_SESSION_DOWN,
        TransitionReason.RECEIVED_ADMIN_DOWN,
    ),
    (State.UP, State.ADMIN_DOWN): (
        State.DOWN,
        Diag.NEIGHBOR_SIGNALED_SESSION_DOWN,
        TransitionReason.RECEIVED_ADMIN_DOWN,
    ),
    (State.UP, State.DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, TransitionReason.RECEIVED_DOWN),
}


class Session:
    """The §6.8.1 state variables and the §6.8.4-§6.8.7, §6.8.16 procedures for one session."""

    def __init__(self, config: SessionConfig, rng: Rng, now: float) -> None:
        self.config = config
        self._rng = rng
        self._auth = Authenticator(config.auth, rng) if config.auth is not None else None
        # §6.8.1 initial values
        self.state = State.DOWN
        self.local_diag = Diag.NO_DIAGNOSTIC
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_diag = 0
        self.remote_demand = False
        self.remote_min_rx_us = 1
        self.remote_desired_min_tx_us = 0
        self.remote_multiplier = 0
        self.timers = LocalTimers.initial(config.min_tx_us, config.min_rx_us)
        self.poll_active = False
        self._poll_again = False
        self.counters = SessionCounters()
        self._out: list[bytes] = []
        self._events: list[StateChange] = []
        self._last_rx: float | None = None
        self._last_tx: float | None = None
        self._next_tx = now
        self._paced_us = self.tx_interval_us
        if self._may_transmit():
            self._send(now)

    # ---- status -------------------------------------------------------------------------------

    @property
    def tx_interval_us(self) -> int:
        """The negotiated transmit interval before jitter (§6.8.2, §6.8.7)."""
        return tx_interval_us(self.timers.effective_tx_us, self.remote_min_rx_us)

    @property
    def detection_time_us(self) -> int | None:
        """The negotiated detection time (§6.8.4); None until the remote's values are known."""
        if self.remote_multiplier == 0:
            return None
        return detection_time_us(
            self.remote_multiplier, self.timers.effective_rx_us, self.remote_desired_min_tx_us
        )

    @property
    def last_rx(self) -> float | None:
        """When the last accepted packet arrived; None after a detection time of silence."""
        return self._last_rx

    # ---- inputs -------------------------------------------------------------------------------

    def handle_packet(self, packet: ControlPacket, now: float, ttl: int | None = None) -> DropReason | None:
        """Process a decoded, demultiplexed packet (§6.8.6); return why it was discarded, if it was."""
        reason = self._check(packet, now, ttl)
        if reason is not None:
            return self._drop(reason)
        self._last_rx = now
        self.remote_discr = packet.my_discr  # step 13
        self.remote_state = packet.state  # step 14
        self.remote_diag = packet.diag
        self.remote_demand = packet.demand  # step 15
        self.remote_min_rx_us = packet.required_min_rx_us  # step 16
        self.remote_desired_min_tx_us = packet.desired_min_tx_us
        self.remote_multiplier = packet.detect_mult
        # step 17: we never send Echo packets, so a zero Required Min Echo RX needs no action.
        if packet.final and self.poll_active:  # step 18
            self._final_received()
        self._retime(now)  # step 19; step 20 is derived on demand (detection_time_us)
        if self.state is State.ADMIN_DOWN:  # step 21
            return self._drop(DropReason.SESSION_ADMIN_DOWN)
        transition = _RX_TRANSITIONS.get((self.state, packet.state))  # steps 22-23
        if transition is not None:
            new_state, diag, why = transition
            # A Poll is answered below with a packet that carries the new state anyway.
            self._transition(now, new_state, diag, why, announce=not packet.poll)
        # steps 24-26: we never ask for Demand mode; the remote's is honoured by _may_transmit().
        if packet.poll:  # step 27, regardless of timers, state and Demand mode (§6.8.7)
            self._send(now, final=True)
        self.counters.rx += 1  # step 28
        return None

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at `now`: detection timeout (§6.8.4) and periodic transmission (§6.8.7)."""
        deadline = self._rx_deadline()
        if deadline is not None and now >= deadline:
            self._last_rx = None
            self.remote_discr = 0  # §6.8.1: forgotten after a detection time without packets
            if self.state in (State.INIT, State.UP):
                self._transition(
                    now,
                    State.DOWN,
                    Diag.CONTROL_DETECTION_TIME_EXPIRED,
                    TransitionReason.DETECTION_TIME_EXPIRED,
                )
        if now >= self._next_tx and self._may_transmit():
            self._send(now)

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` has work to do; None when nothing is scheduled."""
        deadlines = []
        rx_deadline = self._rx_deadline()
        if rx_deadline is not None:
            deadlines.append(rx_deadline)
        if self._may_transmit():
            deadlines.append(self._next_tx)
        return min(deadlines) if deadlines else None

    def admin_down(self, now: float, diag: Diag = Diag.ADMINISTRATIVELY_DOWN) -> None:
        """§6.8.16 disable: AdminDown is announced at once; the peer will not treat it as a failure."""
        if self.state is not State.ADMIN_DOWN:
            self._transition(now, State.ADMIN_DOWN, diag, TransitionReason.ADMIN_DOWN)

    def admin_up(self, now: float) -> None:
        """§6.8.16 enable: back to Down, from where the three-way handshake starts again."""
        if self.state is State.ADMIN_DOWN:
            self._transition(now, State.DOWN, Diag.NO_DIAGNOSTIC, TransitionReason.ADMIN_UP)

    def set_timers(
        self,
        now: float,
        *,
        min_tx_us: int | None = None,
        min_rx_us: int | None = None,
        multiplier: int | None = None,
    ) -> None:
        """Change timers on a live session (§6.8.3): a Poll Sequence carries the change, and a slower TX or
        a shorter detection only takes effect once the peer has answered, so nothing flaps."""
        self.config = dataclasses.replace(
            self.config,
            min_tx_us=self.config.min_tx_us if min_tx_us is None else min_tx_us,
            min_rx_us=self.config.min_rx_us if min_rx_us is None else min_rx_us,
            multiplier=self.config.multiplier if multiplier is None else multiplier,
        )
        polled = self._apply_timers()
        self._retime(now)
        if polled and self._may_transmit():
            self._send(now)  # carry the Poll at once instead of waiting a full interval

    # ---- outputs ------------------------------------------------------------------------------

    def take_packets(self) -> list[bytes]:
        """Packets to send now, in order, already encoded and authenticated."""
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[StateChange]:
        events, self._events = self._events, []
        return events

    # ---- internals ----------------------------------------------------------------------------

    def _check(self, packet: ControlPacket, now: float, ttl: int | None) -> DropReason | None:
        if ttl is not None:
            if self.config.multihop:
                if ttl < self.config.min_ttl:  # RFC 5883 §5
                    return DropReason.BAD_TTL
            elif ttl != SINGLE_HOP_TTL:  # RFC 5881 §5
                return DropReason.BAD_TTL
        if packet.your_discr not in (0, self.config.local_discr):  # step 7, if misrouted to us
            return DropReason.UNKNOWN_YOUR_DISCRIMINATOR
        if packet.auth is not None and self._auth is None:  # step 10
            return DropReason.AUTH_UNEXPECTED
        if packet.auth is None and self._auth is not None:  # step 11
            return DropReason.AUTH_MISSING
        if self._auth is not None:  # step 12
            detection = self.detection_time_us
            forget_after = None if detection is None else 2 * detection / US_PER_S
            return self._auth.verify(packet, now, forget_after)
        return None

    def _drop(self, reason: DropReason) -> DropReason:
        self.counters.drops[reason] = self.counters.drops.get(reason, 0) + 1
        return reason

    def _rx_deadline(self) -> float | None:
        detection = self.detection_time_us
        if self._last_rx is None or detection is None:
            return None
        return self._last_rx + detection / US_PER_S

    def _may_transmit(self) -> bool:
        """§6.8.7 limits on transmission (a Final answering a Poll ignores them)."""
        if self.config.passive and self.remote_discr == 0:
            return False
        if self.remote_min_rx_us == 0:
            return False
        remote_demand_active = self.remote_demand and self.state is State.UP and self.remote_state is State.UP
        return not (remote_demand_active and not self.poll_active)

    def _transition(
        self, now: float, new: State, diag: Diag | None, reason: TransitionReason, announce: bool = True
    ) -> None:
        old = self.state
        self.state = new
        if diag is not None:
            self.local_diag = diag
        self._events.append(StateChange(old, new, self.local_diag, reason, now))
        self._apply_timers()  # the one-second floor comes and goes with Up (§6.8.3)
        self._retime(now)
        if announce and self._may_transmit():
            self._send(now)

    def _apply_timers(self) -> bool:
        """Bring the advertised intervals in line with config and state; True if a Poll started."""
        cfg = self.config
        if self.state is State.ADMIN_DOWN:
            self.poll_active = self._poll_again = False
            self.timers.update(cfg.min_tx_us, cfg.min_rx_us, up=False)
            self.timers.poll_terminated()
            return False
        if not self.timers.update(cfg.min_tx_us, cfg.min_rx_us, up=self.state is State.UP):
            return False
        # §6.8.3: a change starts a Poll Sequence (§6.5). If one is already running, its Final may
        # answer a packet sent before this change, so one more round is needed.
        if self.poll_active:
            self._poll_again = True
        else:
            self.poll_active = True
        return True

    def _final_received(self) -> None:
        if self._poll_again:
            self._poll_again = False
            return
        self.poll_active = False
        self.timers.poll_terminated()

    def _retime(self, now: float) -> None:
        """Re-pace the next periodic packet when the negotiated interval changed (§6.8.7)."""
        interval = self.tx_interval_us
        if interval == self._paced_us:
            return
        self._paced_us = interval
        if self._last_tx is not None:
            gap = jittered_interval_s(interval, self.config.multiplier, self._rng)
            self._next_tx = max(now, self._last_tx + gap)

    def _send(self, now: float, final: bool = False) -> None:
        packet = ControlPacket(
            state=self.state,
            my_discr=self.config.local_discr,
            your_discr=self.remote_discr,
            diag=self.local_diag,
            poll=self.poll_active and not final,  # §6.8.7: never both P and F
            final=final,
            detect_mult=self.config.multiplier,
            desired_min_tx_us=self.timers.advertised_tx_us,
            required_min_rx_us=self.timers.advertised_rx_us,
            required_min_echo_rx_us=0,  # we do not take part in the Echo function
        )
        self._out.append(self._auth.sign(packet) if self._auth is not None else encode(packet))
        self.counters.tx += 1
        if not final:  # a Final is sent outside the periodic schedule (§6.8.7)
            self._last_tx = now
            self._paced_us = self.tx_interval_us
            self._next_tx = now + jittered_interval_s(self._paced_us, self.config.multiplier, self._rng)
