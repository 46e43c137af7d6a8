"""`routeserver appliance`: what a VIP holder runs next to its service, our BGP speaker + BFD in one process.

The appliance peers with one route server, originates the prefixes it serves (VIPs, anycast
addresses) with the attributes that rank it (AS-path prepend or MED for a standby, communities for
policy) and proves liveness with a single-hop BFD session to the route server (RFC 5881). A BFD
failure while the session is Established tears the BGP session down (RFC 5882 §4.2), as the route
server does on its side. SIGTERM (or SIGINT) withdraws the prefixes first, so the route server moves
traffic before the session closes, then ends BGP with Cease/Administrative Shutdown (RFC 8203) and
BFD with AdminDown (RFC 5880 §6.8.16, which the route server does not treat as a failure).

    routeserver appliance --asn 65001 --local-address 10.0.0.11 --peer 10.0.0.1 --peer-asn 64512 \\
        --advertise 203.0.113.10/32 --prepend 2 --bfd-interval-ms 100

Structured log lines (controller/logs.py) go to stderr. Exit codes: 0 after a clean stop, 1 when the
speaker cannot start (a port cannot be bound), 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from bfd.codec import State as BfdState
from bfd.service import BfdProfile, BfdService, SessionHandle
from bfd.session import StateChange
from bfd.transport import Ports
from bgp.api import PeerConfig, PeerStateChanged, SpeakerEvent
from bgp.fsm.events import DownReason, State
from bgp.speaker import Speaker
from bgp.types import (
    GRACEFUL_SHUTDOWN,
    NO_ADVERTISE,
    NO_EXPORT,
    NO_EXPORT_SUBCONFED,
    AsPath,
    AsPathSegment,
    IPAddress,
    LargeCommunity,
    Origin,
    PathAttributes,
    Prefix,
    SegmentType,
)
from controller import logs
from controller.argtypes import address, int_in, positive_seconds

log = logging.getLogger("lab.appliance")

MAX_ASN = 0xFFFFFFFF
MAX_PREPEND = 32  # longer paths only make a route less likely to be used; 32 is plenty
WELL_KNOWN_COMMUNITIES = {
    "no-export": NO_EXPORT,
    "no-advertise": NO_ADVERTISE,
    "no-export-subconfed": NO_EXPORT_SUBCONFED,
    "graceful-shutdown": GRACEFUL_SHUTDOWN,
}


@dataclass(frozen=True)
class ApplianceOptions:
    """Everything `routeserver appliance` is told on its command line."""

    asn: int
    router_id: IPv4Address
    peer_address: IPAddress
    peer_asn: int
    prefixes: tuple[Prefix, ...]
    local_address: IPAddress | None = None
    peer_port: int = 179
    listen_port: int = 179  # 0: only connect (never accept)
    prepend: int = 0
    med: int | None = None
    communities: tuple[int, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    next_hop: IPAddress | None = None
    hold_time: int = 90
    connect_retry: float = 5.0
    bfd: bool = True
    bfd_interval_ms: int = 300
    bfd_multiplier: int = 3
    bfd_ports: Ports | None = field(default=None, compare=False)  # other UDP ports, for tests

    @property
    def peer_id(self) -> str:
        return str(self.peer_address)

    def attributes(self) -> PathAttributes:
        """Our routes' attributes before export; the speaker prepends our ASN once more for eBGP.

        A standby prepends `prepend` extra copies of our ASN (RFC 4271 §9.1.2.2 a: the shorter AS
        path wins) or sends a higher MED (§9.1.2.2 c; compared between paths from the same AS).
        """
        segments: tuple[AsPathSegment, ...] = ()
        if self.prepend:
            segments = (AsPathSegment(SegmentType.AS_SEQUENCE, (self.asn,) * self.prepend),)
        return PathAttributes(
            origin=Origin.IGP,
            as_path=AsPath(segments),
            med=self.med,
            communities=tuple(sorted(set(self.communities))),
            large_communities=self.large_communities,
        )

    def peer_config(self) -> PeerConfig:
        next_hop = self.next_hop
        return PeerConfig(
            peer_address=self.peer_address,
            peer_asn=self.peer_asn,
            peer_id=self.peer_id,
            local_address=self.local_address,
            port=self.peer_port,
            hold_time=self.hold_time,
            connect_retry_time=self.connect_retry,
            next_hop_ipv4=next_hop if isinstance(next_hop, IPv4Address) else None,
            next_hop_ipv6=next_hop if isinstance(next_hop, IPv6Address) else None,
        )

    def bfd_profile(self) -> BfdProfile:
        return BfdProfile.from_ms(self.bfd_interval_ms, self.bfd_interval_ms, self.bfd_multiplier)


# -- argument parsing ---------------------------------------------------------------------------------


def parse_peer(text: str) -> tuple[IPAddress, int]:
    """`ADDRESS`, `ADDRESS:PORT`, `[IPV6]:PORT` or a bare IPv6 address -> (address, port)."""
    text = text.strip()
    port = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"expected [IPV6]:PORT, got {text!r}")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    try:
        address = ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    try:
        number = int(port) if port else 179
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port in {text!r}") from None
    if not 1 <= number <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return address, number


def parse_community(text: str) -> int | LargeCommunity:
    """`ASN:VALUE` (RFC 1997), `GLOBAL:LOCAL1:LOCAL2` (RFC 8092) or a well-known name."""
    name = text.strip().lower()
    if name in WELL_KNOWN_COMMUNITIES:
        return WELL_KNOWN_COMMUNITIES[name]
    parts = name.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ASN:VALUE, A:B:C or one of {', '.join(WELL_KNOWN_COMMUNITIES)}; got {text!r}"
        ) from None
    if len(numbers) == 2 and all(0 <= n <= 0xFFFF for n in numbers):
        return (numbers[0] << 16) | numbers[1]
    if len(numbers) == 3 and all(0 <= n <= MAX_ASN for n in numbers):
        return LargeCommunity(*numbers)
    raise argparse.ArgumentTypeError(f"community {text!r} out of range (16-bit parts, or 32-bit large)")


def _prefix(text: str) -> Prefix:
    try:
        return ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid prefix {text!r}: {exc}") from None


def read_prefix_file(path: str) -> list[Prefix]:
    """The prefixes of an --advertise-file; ValueError naming the file and line of a bad one."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise ValueError(f"--advertise-file {path}: {exc.strerror or exc}") from None
    prefixes: list[Prefix] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            prefixes.append(_prefix(text))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--advertise-file {path} line {number}: {exc}") from None
    return prefixes


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `routeserver appliance` (controller/cli.py calls this)."""
    parser = commands.add_parser(
        "appliance",
        help="run an appliance: peer with a route server, advertise prefixes, prove liveness with BFD",
        description="Peer with a route server over BGP and BFD and advertise prefixes (a VIP holder's "
        "sidecar). SIGTERM withdraws the prefixes, then closes the session.",
    )
    parser.add_argument("--asn", required=True, type=int_in(1, MAX_ASN, "--asn"), help="our AS number")
    parser.add_argument("--router-id", type=address, help="BGP Identifier (default: --local-address)")
    parser.add_argument("--local-address", type=address, help="our address toward the route server")
    parser.add_argument(
        "--peer", required=True, type=parse_peer, metavar="ADDRESS[:PORT]", help="the route server"
    )
    parser.add_argument(
        "--peer-asn", required=True, type=int_in(1, MAX_ASN, "--peer-asn"), help="the route server's AS"
    )
    parser.add_argument(
        "--advertise",
        dest="prefixes",
        action="append",
        default=[],
        type=_prefix,
        metavar="PREFIX",
        help="a prefix to originate, e.g. 203.0.113.10/32 (repeatable)",
    )
    parser.add_argument(
        "--advertise-file",
        dest="prefix_files",
        action="append",
        default=[],
        metavar="FILE",
        help="originate the prefixes in FILE too: one per line, '#' starts a comment (repeatable; "
        "for more prefixes than a command line holds)",
    )
    parser.add_argument(
        "--prepend",
        type=int_in(0, MAX_PREPEND, "--prepend"),
        default=0,
        metavar="N",
        help="prepend our AS N extra times (a standby: a longer path loses)",
    )
    parser.add_argument(
        "--med", type=int_in(0, MAX_ASN, "--med"), metavar="N", help="MULTI_EXIT_DISC (lower wins)"
    )
    parser.add_argument(
        "--community",
        dest="communities",
        action="append",
        type=parse_community,
        default=[],
        metavar="COMMUNITY",
        help="ASN:VALUE, GLOBAL:LOCAL1:LOCAL2 or no-export/no-advertise/... (repeatable)",
    )
    parser.add_argument("--next-hop", type=address, help="next hop of our routes (default: our address)")
    parser.add_argument(
        "--hold-time",
        type=int_in(0, 0xFFFF, "--hold-time"),
        default=90,
        metavar="SECONDS",
        help="BGP hold time (0 or 3..65535; default 90)",
    )
    parser.add_argument(
        "--connect-retry",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds between connection attempts (default 5)",
    )
    parser.add_argument(
        "--listen-port",
        type=int_in(0, 0xFFFF, "--listen-port"),
        default=179,
        help="accept the route server's connections on this port too; 0 only connects (default 179)",
    )
    parser.add_argument(
        "--bfd-interval-ms",
        type=int_in(10, 10_000, "--bfd-interval-ms"),
        default=300,
        metavar="MS",
        help="BFD transmit and receive interval (default 300)",
    )
    parser.add_argument(
        "--bfd-multiplier",
        type=int_in(1, 255, "--bfd-multiplier"),
        default=3,
        metavar="N",
        help="BFD detection multiplier (default 3)",
    )
    parser.add_argument("--no-bfd", action="store_true", help="liveness by the BGP hold timer only")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.set_defaults(handler=main_from_args)
    return parser


def options_from_args(args: argparse.Namespace) -> ApplianceOptions:
    """Check what argparse cannot check alone; ValueError with a message for the user."""
    peer_address, peer_port = args.peer
    local: IPAddress | None = args.local_address
    if local is not None and local.version != peer_address.version:
        raise ValueError("--local-address and --peer must be of the same address family")
    router_id = args.router_id
    if router_id is None:
        if not isinstance(local, IPv4Address):
            raise ValueError("--router-id is needed unless --local-address is an IPv4 address")
        router_id = local
    if not isinstance(router_id, IPv4Address) or int(router_id) == 0:
        raise ValueError("--router-id must be a non-zero IPv4 address (RFC 6286)")
    if args.prepend and args.asn == args.peer_asn:
        raise ValueError("--prepend needs an eBGP peer: the route server would see its own AS in the path")
    if args.hold_time in (1, 2):
        raise ValueError("--hold-time must be 0 or at least 3 seconds (RFC 4271 §4.2)")
    prefixes = list(args.prefixes)
    for path in args.prefix_files:
        prefixes += read_prefix_file(path)
    if not prefixes:
        raise ValueError("nothing to advertise: give --advertise PREFIX or --advertise-file FILE")
    communities = tuple(c for c in args.communities if isinstance(c, int))
    large = tuple(c for c in args.communities if isinstance(c, LargeCommunity))
    return ApplianceOptions(
        asn=args.asn,
        router_id=router_id,
        peer_address=peer_address,
        peer_port=peer_port,
        peer_asn=args.peer_asn,
        prefixes=tuple(dict.fromkeys(prefixes)),
        local_address=local,
        listen_port=args.listen_port,
        prepend=args.prepend,
        med=args.med,
        communities=communities,
        large_communities=large,
        next_hop=args.next_hop,
        hold_time=args.hold_time,
        connect_retry=args.connect_retry,
        bfd=not args.no_bfd,
        bfd_interval_ms=args.bfd_interval_ms,
        bfd_multiplier=args.bfd_multiplier,
    )


def main_from_args(args: argparse.Namespace) -> int:
    """The `routeserver appliance` entry point."""
    logs.setup(args.log_level, args.log_format)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        logs.event(log, logging.ERROR, "invalid_arguments", str(exc))
        return 2
    return asyncio.run(run(options))


async def run(options: ApplianceOptions) -> int:
    """Run until SIGTERM/SIGINT; the process's whole life."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    appliance = Appliance(options)
    try:
        await appliance.start()
    except OSError as exc:
        logs.event(log, logging.ERROR, "appliance_failed", "cannot start", error=str(exc))
        await appliance.stop()
        return 1
    await stop.wait()
    await appliance.stop()
    return 0


# -- the appliance ---------------------------------------------------------------------------------------


class Appliance:
    """One BGP session to the route server with our prefixes, guarded by one BFD session."""

    def __init__(self, options: ApplianceOptions, bfd: BfdService | None = None) -> None:
        self.options = options
        listen = options.listen_port != 0
        listen_on: Sequence[IPAddress | str] = (
            (options.local_address,) if options.local_address is not None else ("0.0.0.0", "::")
        )
        self.speaker = Speaker(
            options.asn, options.router_id, listen_on, options.listen_port or 179, listen=listen
        )
        self._own_bfd = bfd is None and options.bfd
        self.bfd: BfdService | None = bfd
        self._bfd_handle: SessionHandle | None = None
        self._bfd_local: IPAddress | None = None
        self._bfd_generation = 0
        self.bfd_state: BfdState | None = None
        self.bgp_state = State.IDLE
        self._remove_listener: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Open the listener, queue our routes, start the session (and BFD when the path is known)."""
        options = self.options
        if self._own_bfd:
            self.bfd = BfdService(ports=options.bfd_ports, name="appliance-bfd")
            self.bfd.start()
        self._remove_listener = self.speaker.add_listener(self._on_event)
        await self.speaker.start()
        await self.speaker.advertise(options.prefixes, options.attributes())
        await self.speaker.add_peer(options.peer_config())
        logs.event(
            log,
            logging.INFO,
            "appliance_started",
            "appliance started",
            asn=options.asn,
            router_id=str(options.router_id),
            peer=f"{options.peer_address}:{options.peer_port}",
            peer_asn=options.peer_asn,
            prefixes=[str(p) for p in options.prefixes],
            as_path=str(options.attributes().as_path) or None,
            med=options.med,
            bfd=f"{options.bfd_interval_ms}ms x {options.bfd_multiplier}" if options.bfd else "off",
        )
        if options.bfd and options.local_address is not None:
            await self._request_bfd(options.local_address)

    async def stop(self) -> None:
        """Withdraw, close BGP (Cease/Administrative Shutdown), release BFD (AdminDown), stop."""
        if self._stopping:
            return
        self._stopping = True
        options = self.options
        with contextlib.suppress(Exception):
            await self.speaker.withdraw(options.prefixes)
            logs.event(
                log,
                logging.INFO,
                "routes_withdrawn",
                "prefixes withdrawn",
                prefixes=[str(p) for p in options.prefixes],
            )
        await self.speaker.stop("appliance stopping")
        if self._remove_listener is not None:
            self._remove_listener()
        for task in list(self._tasks):
            task.cancel()
        self._bfd_generation += 1
        handle, self._bfd_handle = self._bfd_handle, None
        if handle is not None:
            await asyncio.to_thread(handle.release)
        if self._own_bfd and self.bfd is not None:
            await asyncio.to_thread(self.bfd.stop)
        logs.event(log, logging.INFO, "appliance_stopped", "appliance stopped")

    # -- events -----------------------------------------------------------------------------------------

    def _on_event(self, event: SpeakerEvent) -> None:
        if not isinstance(event, PeerStateChanged) or event.peer_id != self.options.peer_id:
            return
        self.bgp_state = event.new
        if event.new is State.ESTABLISHED:
            logs.event(
                log,
                logging.INFO,
                "bgp_session_up",
                "BGP session established",
                peer=self.options.peer_id,
                advertised=len(self.options.prefixes),
            )
            local = self._session_local_address()
            if self.options.bfd and local is not None and local != self._bfd_local and not self._stopping:
                self._spawn(self._request_bfd(local))
        elif event.old is State.ESTABLISHED:
            logs.event(
                log,
                logging.WARNING,
                "bgp_session_down",
                "BGP session down",
                peer=self.options.peer_id,
                reason=event.reason.value,
                detail=event.detail or None,
            )

    def _session_local_address(self) -> IPAddress | None:
        try:
            driver = self.speaker.driver(self.options.peer_id)
        except KeyError:
            return None
        for conn in driver.connections():
            if conn.local is not None and not conn.closing:
                return conn.local[0]
        return None

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request_bfd(self, local: IPAddress) -> None:
        """A single-hop BFD session from `local` to the route server (RFC 5881), replacing any other."""
        bfd = self.bfd
        if bfd is None or local == self._bfd_local:
            return
        self._bfd_generation += 1
        generation = self._bfd_generation
        self._bfd_local = local
        old, self._bfd_handle = self._bfd_handle, None
        if old is not None:
            await asyncio.to_thread(old.release)
        loop = asyncio.get_running_loop()
        try:
            handle = await asyncio.to_thread(
                bfd.request, self.options.peer_address, local=local, profile=self.options.bfd_profile()
            )
        except (OSError, ValueError) as exc:
            self._bfd_local = None
            logs.event(log, logging.ERROR, "bfd_failed", "BFD session cannot be created", error=str(exc))
            return
        if generation != self._bfd_generation:
            await asyncio.to_thread(handle.release)
            return
        self._bfd_handle = handle
        await asyncio.to_thread(handle.subscribe, lambda change: self._on_bfd(generation, change), loop)
        logs.event(
            log,
            logging.INFO,
            "bfd_session_requested",
            "BFD session requested",
            peer=self.options.peer_id,
            local=str(local),
            interval_ms=self.options.bfd_interval_ms,
            multiplier=self.options.bfd_multiplier,
        )

    def _on_bfd(self, generation: int, change: StateChange) -> None:
        """A BFD state change on the loop thread; a failure ends the BGP session (RFC 5882 §4.2)."""
        if generation != self._bfd_generation:
            return
        self.bfd_state = change.new
        if change.failure:
            established = self.bgp_state is State.ESTABLISHED
            logs.event(
                log,
                logging.WARNING,
                "bfd_down",
                "BFD down: tearing the BGP session down (RFC 5882)" if established else "BFD down",
                peer=self.options.peer_id,
                reason=change.reason.value,
            )
            if established and not self._stopping:
                with contextlib.suppress(KeyError):
                    self.speaker.peer_down(self.options.peer_id, DownReason.BFD_DOWN)
        elif change.new is BfdState.UP:
            logs.event(log, logging.INFO, "bfd_up", "BFD session up", peer=self.options.peer_id)
