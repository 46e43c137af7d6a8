"""The common shape of every routing-daemon fixture, so tests can run one scenario against each daemon.

A fixture renders its daemon's own configuration from these neutral dataclasses, starts the daemon
inside a lab host (tests/support/netns.py), waits until it is ready, and reads back the daemon's own
view (sessions, BFD, received routes) in normalised form for assertions.
"""

from __future__ import annotations

import abc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.netns import Host, LabError, ManagedProcess
from tests.support.prereq import REPO_ROOT

BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")
BFD_STATES = ("AdminDown", "Down", "Init", "Up")


@dataclass(frozen=True)
class BfdTimers:
    min_tx_ms: int = 300
    min_rx_ms: int = 300
    multiplier: int = 3


@dataclass(frozen=True)
class BfdAuth:
    """RFC 5880 §6.7 authentication: type is one of simple, md5, meticulous-md5, sha1, meticulous-sha1."""

    type: str
    key_id: int
    secret: str


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbour of the daemon under test (usually our route server)."""

    address: str
    asn: int
    port: int = 179  # the neighbour's port the daemon connects to
    local_address: str | None = None
    passive: bool = False  # the daemon only listens, never connects
    password: str | None = None  # TCP-MD5 (RFC 2385)
    bfd: BfdTimers | None = None
    bfd_multihop: bool = False
    bfd_auth: BfdAuth | None = None
    multihop_ttl: int | None = None  # eBGP multihop; None means directly connected
    hold_time: int = 90
    connect_retry: int = 1  # seconds; small so tests converge fast
    graceful_restart: bool = False
    families: tuple[str, ...] = ("ipv4", "ipv6")


@dataclass(frozen=True)
class Route:
    """A prefix the daemon originates, with the attributes it should carry."""

    prefix: str
    next_hop: str | None = None  # None: the daemon's own address on the session (next-hop self)
    as_path_prepend: int = 0  # extra copies of the daemon's own ASN
    med: int | None = None
    communities: tuple[str, ...] = ()  # "65000:100"
    large_communities: tuple[str, ...] = ()  # "65000:1:2"


@dataclass(frozen=True)
class RouteView:
    """A route as the daemon itself sees it (its RIB), normalised for comparisons."""

    prefix: str
    next_hop: str | None
    as_path: tuple[int, ...]
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


@dataclass(frozen=True)
class BfdView:
    """A BFD session as the daemon reports it: state and the timers it actually runs with."""

    peer: str
    state: str  # one of BFD_STATES
    remote_state: str | None = None
    diagnostic: str | None = None
    tx_interval_ms: int | None = None  # negotiated transmit interval
    rx_interval_ms: int | None = None  # negotiated receive interval
    detect_multiplier: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class RoutingDaemon(abc.ABC):
    """A real routing daemon running inside a lab host."""

    kind: str = "daemon"

    def __init__(
        self,
        host: Host,
        *,
        asn: int,
        router_id: str,
        neighbors: Sequence[Neighbor] = (),
        routes: Sequence[Route] = (),
        listen_port: int = 179,
    ) -> None:
        self.host = host
        self.asn = asn
        self.router_id = router_id
        self.neighbors = list(neighbors)
        self.routes = list(routes)
        self.listen_port = listen_port

    def own_address(self, ipv6: bool) -> str:
        """The host's first global address of a family (an explicit next hop of that family)."""
        for cidr in self.host.addresses():
            address = cidr.split("/")[0]
            if (":" in address) == ipv6 and not address.startswith("fe80"):
                return address
        raise RuntimeError(f"{self.host.name} has no {'IPv6' if ipv6 else 'IPv4'} address")

    @abc.abstractmethod
    def start(self) -> None:
        """Render the configuration, start the daemon and wait until it answers its control interface."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the daemon (by PID) and wait for it to exit. Idempotent."""

    @abc.abstractmethod
    def advertise(self, routes: Sequence[Route]) -> None:
        """Originate these routes (added to what is already advertised; same prefix replaces)."""

    @abc.abstractmethod
    def withdraw(self, prefixes: Sequence[str]) -> None:
        """Stop originating these prefixes."""

    @abc.abstractmethod
    def session_state(self, neighbor_address: str) -> str:
        """The BGP state of the session to this neighbour, as an RFC 4271 name (see BGP_STATES)."""

    @abc.abstractmethod
    def received_routes(self) -> dict[str, RouteView]:
        """Routes the daemon has learned from its neighbours (not its own), by prefix."""

    def bfd_sessions(self) -> dict[str, BfdView]:
        """BFD sessions by peer address. Daemons without BFD return an empty dict."""
        return {}

    def restart(self) -> None:
        """Stop and start again (a graceful restart when the neighbour negotiated it)."""
        self.stop()
        self.start()

    def wait_session(self, neighbor_address: str, state: str = "Established", timeout: float = 30.0) -> None:
        """Poll until the session reaches `state`; raise with the last state seen otherwise."""
        deadline = time.monotonic() + timeout
        last = "?"
        while time.monotonic() < deadline:
            last = self.session_state(neighbor_address)
            if last == state:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"{self.kind} session to {neighbor_address}: {last}, wanted {state} after {timeout}s"
        )

    def wait_routes(self, prefixes: Sequence[str], timeout: float = 30.0) -> dict[str, RouteView]:
        """Poll until every prefix is in received_routes(); return them."""
        deadline = time.monotonic() + timeout
        seen: dict[str, RouteView] = {}
        while time.monotonic() < deadline:
            seen = self.received_routes()
            if all(p in seen for p in prefixes):
                return {p: seen[p] for p in prefixes}
            time.sleep(0.1)
        missing = sorted(set(prefixes) - set(seen))
        raise AssertionError(f"{self.kind} did not receive {missing[:10]} within {timeout}s")

    def wait_bfd(self, peer: str, state: str = "Up", timeout: float = 30.0) -> BfdView:
        """Poll until the BFD session to `peer` is in `state`."""
        deadline = time.monotonic() + timeout
        last: BfdView | None = None
        while time.monotonic() < deadline:
            last = self.bfd_sessions().get(peer)
            if last is not None and last.state == state:
                return last
            time.sleep(0.05)
        raise AssertionError(f"{self.kind} BFD to {peer}: {last}, wanted {state} after {timeout}s")


def start_python_harness(
    host: Host, module: str, args: Sequence[str], *, name: str, control: Path, probe: Callable[[], object]
) -> ManagedProcess:
    """Start `python -m module args` inside a lab host and wait until its control socket answers `probe`.

    The harnesses for our own speaker and BFD service run this way: a process in the host's namespace,
    driven over a unix socket in the host's work directory (reachable across namespaces).
    """
    proc = host.popen(
        [sys.executable, "-m", module, *args], name=name, cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LabError(f"{name} exited: {proc.log_text()[-3000:]}")
        if control.exists():
            try:
                probe()
                return proc
            except OSError:
                pass
        time.sleep(0.05)
    proc.stop()
    raise LabError(f"{name} did not answer: {proc.log_text()[-3000:]}")
