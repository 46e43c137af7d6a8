"""Helpers for BFD service tests on loopback: free ports, service pairs, a scripted peer, raw packets.

Everything stays on 127.0.0.0/8 and ::1 in the current namespace with kernel-chosen high ports: no
address, link or route is created, and the RFC ports 3784/4784 are never used here.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address

from bfd.codec import ControlPacket, State, decode, encode
from bfd.service import BfdService
from bfd.session import Session, SessionConfig, StateChange
from bfd.transport import Ports

LO = IPv4Address("127.0.0.1")
LO6 = IPv6Address("::1")


def free_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    """A UDP port nobody holds right now (the kernel's pick), on the loopback of `family`."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {timeout}s")


@contextmanager
def service_pair() -> Iterator[tuple[BfdService, BfdService]]:
    """Two services in this process that send to each other's ports, both started, always stopped."""
    a_single, b_single, a_multi, b_multi = (free_port() for _ in range(4))
    a = BfdService(
        ports=Ports(single_hop=a_single, multihop=a_multi, peer_single_hop=b_single, peer_multihop=b_multi),
        name="bfd-a",
    )
    b = BfdService(
        ports=Ports(single_hop=b_single, multihop=b_multi, peer_single_hop=a_single, peer_multihop=a_multi),
        name="bfd-b",
    )
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


class Recorder:
    """A subscriber callback (run on the BFD thread) that keeps every change."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self.closed = False

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)

    def close(self) -> None:
        self.closed = True

    def states(self) -> list[State]:
        return [c.new for c in self.changes]


def send_raw(
    data: bytes,
    port: int,
    *,
    ttl: int = 255,
    source: str = "127.0.0.1",
    destination: str = "127.0.0.1",
) -> None:
    """One datagram from `source` with the given TTL / Hop Limit (a hand-made peer)."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.bind((source, 0))
        sock.sendto(data, (destination, port))


def down_packet(my_discr: int = 0x0BADCAFE, your_discr: int = 0) -> bytes:
    return encode(ControlPacket(state=State.DOWN, my_discr=my_discr, your_discr=your_discr))


class ScriptedPeer:
    """A peer the test can silence: the pure core on a plain UDP socket, pumped by a thread.

    It listens on `listen_port` (where the service under test sends) and sends to `service_port`
    with TTL 255. `silence()` stops its transmission while it keeps receiving: a frozen peer.
    """

    def __init__(
        self, listen_port: int, service_port: int, config: SessionConfig, address: str = "127.0.0.1"
    ) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        self.sock.bind((address, listen_port))
        self.destination = (address, service_port)
        self.session = Session(config, random.Random(5), time.monotonic())
        self.silent = False
        self.received: list[ControlPacket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-peer", daemon=True)
        self._thread.start()

    @property
    def address(self) -> IPv4Address | IPv6Address:
        return ip_address(self.destination[0])

    def silence(self) -> float:
        """Stop sending; returns when (monotonic)."""
        with self._lock:
            self.silent = True
            return time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _flush(self) -> None:
        for data in self.session.take_packets():
            if not self.silent:
                self.sock.sendto(data, self.destination)
        self.session.take_events()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._flush()
                deadline = self.session.next_deadline()
            timeout = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select([self.sock], [], [], timeout)
            with self._lock:
                now = time.monotonic()
                if ready:
                    data = self.sock.recv(512)
                    packet = decode(data)
                    self.received.append(packet)
                    self.session.handle_packet(packet, now, ttl=255)
                deadline = self.session.next_deadline()
                if deadline is not None and deadline <= now:
                    self.session.handle_timer(now)
