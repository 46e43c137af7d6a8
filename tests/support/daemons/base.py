"""The common shape of every routing-daemon fixture, so tests can run one scenario against each daemon.

A fixture renders its daemon's own configuration from these neutral dataclasses, starts the daemon
inside a lab host (tests/support/netns.py), waits until it is ready, and reads back the daemon's own
view (sessions, BFD, received routes) in normalised form for assertions.

`RoutingDaemon` is what every lab speaker offers (our own included); `InteropDaemon` is the uniform
interface of the real daemons the interop scenarios run against (FRR, BIRD, GoBGP, ExaBGP): freeze,
graceful restart, the NOTIFICATIONs it received, its Adj-RIB-Out, its view of the session, refresh.
What a daemon cannot do is a `Capability` it lacks, so a scenario selects daemons by capability
instead of skipping.
"""

from __future__ import annotations

import abc
import enum
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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


class Capability(enum.Enum):
    """Something only some daemons can do; an interop scenario needing it runs on those only."""

    # It can ask its neighbour to re-send its routes (ROUTE-REFRESH, RFC 2918). GoBGP 3.x cannot.
    SENDS_ROUTE_REFRESH = "sends-route-refresh"
    # It can run as an OLD speaker, without the 4-octet AS capability (RFC 6793 §4.2), and still
    # carry both families (MP-BGP). GoBGP always sends the capability; FRR only drops it together
    # with every other capability (dont-capability-negotiate, see its own test module).
    OLD_SPEAKER = "old-speaker"
    # It reports code and subcode of a NOTIFICATION received before Established (OpenSent,
    # OpenConfirm). GoBGP only counts those.
    NOTIFICATION_CODE_BEFORE_ESTABLISHED = "notification-code-before-established"
    # It negotiates enhanced route refresh (RFC 7313: BoRR/EoRR around a re-advertisement). GoBGP 3.x
    # does not advertise it.
    ENHANCED_ROUTE_REFRESH = "enhanced-route-refresh"


@dataclass(frozen=True)
class ReceivedNotification:
    """A NOTIFICATION as the daemon reports having received it."""

    code: int
    subcode: int
    text: str = ""  # the daemon's own wording; "" for daemons that report only the numbers


@dataclass(frozen=True)
class SessionView:
    """The daemon's own view of one BGP session: the neighbour's AS and what both sides negotiated."""

    peer_asn: int | None
    four_octet_as: bool  # the 4-octet AS capability (RFC 6793) sent and received
    graceful_restart: bool  # the graceful-restart capability (RFC 4724) sent and received
    enhanced_route_refresh: bool  # the enhanced route refresh capability (RFC 7313) sent and received


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

    @abc.abstractmethod
    def pause(self) -> None:
        """Freeze the BGP process (SIGSTOP) with its TCP connections open: the neighbour's hold timer
        must fire. Never a link down."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Thaw what `pause` froze (SIGCONT)."""

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


class InteropDaemon(RoutingDaemon):
    """A real daemon (FRR, BIRD, GoBGP, ExaBGP) as the interop scenarios drive and read it.

    Every answer is the daemon's own view (its CLI, logs or API), normalised so that one scenario
    asserts the same thing for all daemons.
    """

    capabilities: frozenset[Capability] = frozenset()
    # The daemon's wording of the NOTIFICATIONs the scenarios provoke, by (code, subcode): what
    # `received_notifications` reports as `text`. Empty for daemons that report only the numbers.
    notification_texts: Mapping[tuple[int, int], str] = {}

    def notification_text(self, code: int, subcode: int) -> str:
        return self.notification_texts.get((code, subcode), "")

    def originated_as(self, route: Route) -> Route:
        """`route` as this daemon puts it on the wire when told to originate it (attributes it fills
        in itself, e.g. FRR's MED 0). Default: unchanged."""
        return route

    @abc.abstractmethod
    def advertised_to(self, neighbor_address: str) -> dict[str, RouteView]:
        """The daemon's Adj-RIB-Out towards the neighbour as it goes on the wire to an eBGP peer:
        AS path with the daemon's own ASN in front, "next hop self" resolved to the daemon's own address
        of the route's family, no LOCAL_PREF (RFC 4271 §5.1.5)."""

    @abc.abstractmethod
    def session_view(self, neighbor_address: str) -> SessionView:
        """What the daemon says about the session: the neighbour's AS and the negotiated capabilities."""

    @abc.abstractmethod
    def received_notifications(self, neighbor_address: str) -> list[ReceivedNotification]:
        """NOTIFICATIONs the daemon reports having received from the neighbour, oldest first (with
        code and subcode; see Capability.NOTIFICATION_CODE_BEFORE_ESTABLISHED)."""

    def notifications_received_count(self, neighbor_address: str) -> int:
        """How many NOTIFICATIONs the daemon received from the neighbour, including any it does not
        report the code of."""
        return len(self.received_notifications(neighbor_address))

    @abc.abstractmethod
    def refresh_requests_received(self, neighbor_address: str) -> int:
        """ROUTE-REFRESH requests (RFC 2918, one per family) the daemon received from the neighbour."""

    @abc.abstractmethod
    def updates_received_from(self, neighbor_address: str) -> int:
        """Route announcements the daemon counts as received from the neighbour (grows by at least one
        per re-sent route)."""

    def request_refresh(self, neighbor_address: str) -> None:
        """Ask the neighbour to re-send its routes in every family (Capability.SENDS_ROUTE_REFRESH)."""
        raise NotImplementedError(f"{self.kind} cannot send ROUTE-REFRESH")

    @abc.abstractmethod
    def set_password(self, neighbor_address: str, password: str | None) -> None:
        """Change the neighbour's TCP-MD5 key (at run time, or by restarting where the daemon must)."""

    @abc.abstractmethod
    def origins(self) -> dict[str, str]:
        """ORIGIN ("igp", "egp", "incomplete") of the routes the daemon learned, by prefix."""

    @abc.abstractmethod
    def graceful_stop(self) -> None:
        """Go away the way a restarting speaker does: sessions closed without a NOTIFICATION
        (RFC 4724 §4.2), forwarding state kept."""

    @abc.abstractmethod
    def graceful_start(self, routes: Sequence[Route]) -> None:
        """Come back after `graceful_stop` as a restarting speaker (Restart State and Forwarding
        State bits, RFC 4724 §3), originating `routes`, End-of-RIB after them."""


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
