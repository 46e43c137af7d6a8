"""Helpers for BFD core tests: scripted peer packets, stub RNGs and a two-sided virtual network."""

from __future__ import annotations

import dataclasses
import heapq
import random

from bfd.codec import ControlPacket, State, decode
from bfd.session import Session, SessionConfig, StateChange

PEER_DISCR = 0x0BADCAFE


class StubRng:
    """Returns fixed values: `random()` -> `value`, `getrandbits` -> successive `bits` (cycled)."""

    def __init__(self, value: float = 0.5, bits: tuple[int, ...] = (0x12345678,)) -> None:
        self.value = value
        self.bits = bits
        self._i = 0

    def random(self) -> float:
        return self.value

    def getrandbits(self, k: int, /) -> int:
        bits = self.bits[self._i % len(self.bits)]
        self._i += 1
        return bits & ((1 << k) - 1)


def peer_packet(
    session: Session | None,
    state: State,
    *,
    my_discr: int = PEER_DISCR,
    your_discr: int | None = None,
    **fields: object,
) -> ControlPacket:
    """A packet from the scripted peer; Your Discriminator defaults to the session's own (or 0 when
    the state allows it and no session is given)."""
    if your_discr is None:
        your_discr = session.config.local_discr if session is not None else 0
    values: dict[str, object] = {
        "detect_mult": 3,
        "desired_min_tx_us": 300_000,
        "required_min_rx_us": 300_000,
    }
    values.update(fields)
    return ControlPacket(state=state, my_discr=my_discr, your_discr=your_discr, **values)  # type: ignore[arg-type]


def sent(session: Session) -> list[ControlPacket]:
    return [decode(data) for data in session.take_packets()]


def session_in(state: State, now: float = 0.0, **config: object) -> Session:
    """A session brought into `state` by scripted peer packets (or admin_down)."""
    cfg = SessionConfig(local_discr=0x1000, **config)  # type: ignore[arg-type]
    session = Session(cfg, random.Random(1), now)
    if state is State.INIT:
        session.handle_packet(peer_packet(session, State.DOWN, your_discr=0), now)
    elif state is State.UP:
        session.handle_packet(peer_packet(session, State.DOWN, your_discr=0), now)
        session.handle_packet(peer_packet(session, State.UP), now)
    elif state is State.ADMIN_DOWN:
        session.admin_down(now)
    assert session.state is state
    session.take_packets()
    session.take_events()
    return session


@dataclasses.dataclass
class Sent:
    at: float
    sender: int
    packet: ControlPacket


class VirtualNetwork:
    """Two sessions joined by a link with a fixed one-way delay, driven on a virtual clock.

    Every deadline is handled at exactly its time, so tests can assert exact protocol timing.
    Direction 0 carries packets from sessions[0] to sessions[1], direction 1 the reverse.
    """

    def __init__(self, a: Session, b: Session, now: float = 0.0, delay: float = 0.001) -> None:
        self.sessions = (a, b)
        self.now = now
        self.delay = delay
        self.link_up = [True, True]
        self.log: list[Sent] = []
        self.events: list[tuple[int, StateChange]] = []
        self.arrivals: list[tuple[int, float]] = []  # (receiver, time) of accepted packets
        self._flight: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self.flush()

    @classmethod
    def pair(cls, a_config: SessionConfig, b_config: SessionConfig, seed: int = 7) -> VirtualNetwork:
        a = Session(a_config, random.Random(seed), 0.0)
        b = Session(b_config, random.Random(seed + 1), 0.0)
        return cls(a, b)

    def cut(self, direction: int) -> None:
        self.link_up[direction] = False

    def restore(self, direction: int) -> None:
        self.link_up[direction] = True

    def run_until(self, end: float) -> None:
        for _ in range(1_000_000):
            moments = [d for s in self.sessions if (d := s.next_deadline()) is not None]
            if self._flight:
                moments.append(self._flight[0][0])
            nxt = min(moments, default=None)
            if nxt is None or nxt > end:
                self.now = end
                return
            self.now = max(self.now, nxt)
            while self._flight and self._flight[0][0] <= self.now:
                _, _, receiver, data = heapq.heappop(self._flight)
                if self.sessions[receiver].handle_packet(decode(data), self.now, ttl=255) is None:
                    self.arrivals.append((receiver, self.now))
                self.flush()
            for session in self.sessions:
                deadline = session.next_deadline()
                if deadline is not None and deadline <= self.now:
                    session.handle_timer(self.now)
            self.flush()
        raise AssertionError("virtual network did not settle: a deadline is not advancing")

    def run_until_up(self, limit: float = 10.0) -> None:
        while not all(s.state is State.UP and not s.poll_active for s in self.sessions):
            assert self.now < limit, [s.state for s in self.sessions]
            self.run_until(self.now + 0.05)

    def sent_by(self, index: int, since: float = 0.0) -> list[Sent]:
        return [s for s in self.log if s.sender == index and s.at >= since]

    def events_of(self, index: int) -> list[StateChange]:
        return [e for i, e in self.events if i == index]

    def flush(self) -> None:
        """Put what the sessions produced outside run_until (admin or timer calls) on the wire."""
        for index, session in enumerate(self.sessions):
            for data in session.take_packets():
                self.log.append(Sent(self.now, index, decode(data)))
                if self.link_up[index]:
                    self._seq += 1
                    heapq.heappush(self._flight, (self.now + self.delay, self._seq, 1 - index, data))
            self.events.extend((index, event) for event in session.take_events())
