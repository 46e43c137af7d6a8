"""BFD labs: our service against FRR bfdd and BIRD, single hop and multihop, with precise peer logs.

Topologies (addresses from the lab ranges only):

    single hop:  krs eth0 10.0.0.1/24 2001:db8::1/64 ---- peer eth0 10.0.0.2/24 2001:db8::2/64
    multihop:    krs 10.0.1.1 2001:db8:1::1 --- router 10.0.1.254 | 10.0.2.254 --- peer 10.0.2.2 2001:db8:2::2
                 (static routes inside krs and peer; the router forwards, so packets arrive with TTL 254)

The peer daemons get a BFD session to us and a passive BGP neighbour (never connects: BIRD and FRR
only need it to exist, the BFD session is configured on its own). `BfdFrr`/`BfdBird` add what BFD
tests need to the common fixtures without changing them: state-change log lines with microsecond
wall-clock timestamps (FRR `log timestamp precision 6`, BIRD `timeformat log "%F %T.%6f"` and bfd
`debug { events }`), parsed by `down_times()`, and each daemon's raw view of a session.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from tests.support.daemons.base import BfdAuth, BfdTimers, Neighbor, RoutingDaemon
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.daemons.krs_bfd import DEFAULT_TIMERS, KrsBfd
from tests.support.netns import Host, Lab

OUR_ASN = 65001
PEER_ASN = 65002

_FRR_LINE = re.compile(
    r"^(?P<ts>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) BFD: .*state-change: "
    r"\[mhop:(?P<mhop>\w+) peer:(?P<peer>\S+) .*\] (?P<old>[\w-]+) -> (?P<new>[\w-]+)"
)
_BIRD_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) <\w+> \S+: Session to (?P<peer>\S+) changed state"
    r" from (?P<old>\w+) to (?P<new>\w+)"
)


def _wallclock(text: str, fmt: str) -> float:
    whole, _, fraction = text.partition(".")
    return time.mktime(time.strptime(whole, fmt)) + float(f"0.{fraction}")


@dataclass(frozen=True)
class Transition:
    """A state change read from a daemon's log; `at` is wall-clock time (time.time())."""

    peer: str
    old: str
    new: str
    at: float


class BfdFrr(FrrDaemon):
    """FRR with bfdd state changes logged to bfd.log with microsecond timestamps (`transitions()`)."""

    @property
    def log_path(self) -> Any:
        return self.dir / "bfd.log"

    def start(self) -> None:
        super().start()
        # bfdd logs "state-change: [...] up -> down" only with `debug bfd peer`, at debug level.
        self.vtysh(
            "configure terminal",
            "log timestamp precision 6",
            f"log file {self.log_path} debugging",
            "debug bfd peer",
        )

    def transitions(self) -> list[Transition]:
        found = []
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for line in text.splitlines():
            match = _FRR_LINE.match(line)
            if match:
                found.append(
                    Transition(
                        match["peer"],
                        match["old"],
                        match["new"],
                        _wallclock(match["ts"], "%Y/%m/%d %H:%M:%S"),
                    )
                )
        return found

    def peer_json(self, peer: str) -> dict[str, Any]:
        for entry in self.vtysh_json("show bfd peers json") or []:
            if entry.get("peer") == peer:
                return dict(entry)
        raise KeyError(peer)

    def counters(self, peer: str) -> dict[str, Any]:
        for entry in self.vtysh_json("show bfd peers counters json") or []:
            if entry.get("peer") == peer:
                return dict(entry)
        raise KeyError(peer)

    def _peer_line(self, n: Neighbor) -> str:
        line = f" peer {n.address}"
        if n.bfd_multihop:
            line += " multihop"
        if n.local_address:
            line += f" local-address {n.local_address}"
        return line

    def shutdown(self, peer: str, shut: bool = True) -> None:
        """`shutdown` under the bfd peer: FRR sends AdminDown (RFC 5880 §6.8.16)."""
        (n,) = [n for n in self.neighbors if n.address == peer]
        self.configure(["bfd", self._peer_line(n), "  shutdown" if shut else "  no shutdown"])


class BfdBird(BirdDaemon):
    """BIRD with bfd session events logged with microsecond timestamps."""

    def render(self) -> str:
        text = super().render().replace("protocol bfd bfd1 {", "protocol bfd bfd1 {\n  debug { events };")
        return 'timeformat log "%F %T.%6f";\n' + text

    def transitions(self) -> list[Transition]:
        path = self.dir / "bird.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        found = []
        for line in text.splitlines():
            match = _BIRD_LINE.match(line)
            if match:
                found.append(
                    Transition(
                        match["peer"],
                        match["old"],
                        match["new"],
                        _wallclock(match["ts"], "%Y-%m-%d %H:%M:%S"),
                    )
                )
        return found

    def session_row(self, peer: str) -> dict[str, str]:
        """One row of `show bfd sessions`: state, since, interval (s), timeout (s)."""
        out = self.birdc("show bfd sessions", check=False).stdout
        for line in out.splitlines():
            fields = line.split()
            if fields and fields[0] == peer and len(fields) >= 6:
                return {
                    "state": fields[2],
                    "since": " ".join(fields[3:-2]),
                    "interval": fields[-2],
                    "timeout": fields[-1],
                }
        raise KeyError(peer)


def bfd_neighbor(
    address: str,
    local: str,
    timers: BfdTimers,
    *,
    multihop: bool = False,
    auth: BfdAuth | None = None,
) -> Neighbor:
    """The peer daemon's view of us: a BFD session plus a passive BGP neighbour that never connects."""
    return Neighbor(
        address,
        OUR_ASN,
        local_address=local,
        passive=True,
        bfd=timers,
        bfd_multihop=multihop,
        bfd_auth=auth,
        multihop_ttl=2 if multihop else None,
    )


@dataclass
class BfdLab:
    """Our harness and one peer daemon, with the addresses each side uses."""

    krs: KrsBfd
    peer: RoutingDaemon
    peer_host: Host
    our_address: str
    peer_address: str
    multihop: bool


def _addresses(family: str, multihop: bool) -> tuple[str, str]:
    if multihop:
        return ("10.0.1.1", "10.0.2.2") if family == "ipv4" else ("2001:db8:1::1", "2001:db8:2::2")
    return ("10.0.0.1", "10.0.0.2") if family == "ipv4" else ("2001:db8::1", "2001:db8::2")


def build(
    lab: Lab,
    daemon: str,
    family: str = "ipv4",
    *,
    timers: BfdTimers = DEFAULT_TIMERS,
    multihop: bool = False,
    auth: BfdAuth | None = None,
) -> BfdLab:
    """Hosts, links, routes, the peer daemon (started) and our harness (started, no session yet)."""
    krs_host, peer_host = lab.host("krs"), lab.host("peer")
    if multihop:
        router = lab.host("router")
        lab.link(
            krs_host, router, ["10.0.1.1/24", "2001:db8:1::1/64"], ["10.0.1.254/24", "2001:db8:1::fe/64"]
        )
        lab.link(
            router, peer_host, ["10.0.2.254/24", "2001:db8:2::fe/64"], ["10.0.2.2/24", "2001:db8:2::2/64"]
        )
        for host, net4, via4, net6, via6 in (
            (krs_host, "10.0.2.0/24", "10.0.1.254", "2001:db8:2::/64", "2001:db8:1::fe"),
            (peer_host, "10.0.1.0/24", "10.0.2.254", "2001:db8:1::/64", "2001:db8:2::fe"),
        ):
            host.run("ip", "route", "add", net4, "via", via4)
            host.run("ip", "-6", "route", "add", net6, "via", via6)
    else:
        lab.link(krs_host, peer_host, ["10.0.0.1/24", "2001:db8::1/64"], ["10.0.0.2/24", "2001:db8::2/64"])
    ours, theirs = _addresses(family, multihop)
    neighbor = bfd_neighbor(ours, theirs, timers, multihop=multihop, auth=auth)
    router_id = "10.0.2.2" if multihop else "10.0.0.2"
    peer: RoutingDaemon
    if daemon == "frr":
        peer = BfdFrr(peer_host, asn=PEER_ASN, router_id=router_id, neighbors=[neighbor])
    elif daemon == "bird":
        peer = BfdBird(peer_host, asn=PEER_ASN, router_id=router_id, neighbors=[neighbor])
    else:
        raise ValueError(daemon)
    peer.start()
    krs = KrsBfd(krs_host)
    krs.start()
    return BfdLab(krs, peer, peer_host, ours, theirs, multihop)
