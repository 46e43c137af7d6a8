"""`routeserver run -f` inside a lab host: its configuration, the process, its /status, the kernel table.

Shared by the route-server integration tests (tests/integration/test_route_server_*.py) and the
benchmarks (bench/failover.py, bench/kernel_intake.py):

- `ServerSpec`/`PeerSpec` render the YAML documents `routeserver run -f` reads (RouteServer, one
  RouteServerPeer per appliance, a RouteTableAssociation), so each test states only what it varies.
- `RouteServerProcess` runs `python -m controller.cli run` in a lab host (admin on 127.0.0.1 inside
  the namespace), reloads it (SIGHUP), stops it (SIGTERM) or kills it (SIGKILL) and starts it again.
- `/status` is read over HTTP from a thread of this process that has entered the host's network
  namespace (`NetnsThread`): polling every 50 ms would otherwise fork a Python per poll on a 2-core
  machine shared with the daemons under test.
- `kernel_routes` reads a kernel table with iproute2 (plain, multipath and nexthop-object routes
  alike); `RouteMonitor` records `ip -ts monitor route nexthop` to a file, so a test can show that a
  route was never deleted across an event.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.daemons.base import BfdTimers, Neighbor, Route, RoutingDaemon
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Host, LabError, ManagedProcess, wait_until
from tests.support.prereq import REPO_ROOT

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
FAST_BFD = BfdTimers(100, 100, 3)
ADMIN_PORT = 9179
API_VERSION = "routeserver.dev/v1alpha1"


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allow:
    """One allowedPrefixes entry."""

    prefix: str
    ge: int | None = None
    le: int | None = None

    def document(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"prefix": self.prefix}
        if self.ge is not None:
            entry["ge"] = self.ge
        if self.le is not None:
            entry["le"] = self.le
        return entry


@dataclass(frozen=True)
class PeerSpec:
    """One RouteServerPeer (an appliance)."""

    name: str
    address: str
    asn: int
    hold_time: int = 9
    connect_retry: int = 1
    liveness: str = "BFD"
    allowed: tuple[Allow, ...] | None = None  # None: inherit the route server's importPolicy
    max_prefixes: int | None = None
    max_prefix_action: str = "Teardown"
    max_prefix_restart_after: int | None = None  # restartAfterSeconds (Teardown only)
    passive: bool = False
    graceful_restart: bool = False  # advertise GR (receiving speaker): FRR then sends End-of-RIB too
    auth_secret: str | None = None  # TCP-MD5 key: the name of a Secret (key "password")

    def document(self, route_server: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "routeServerRef": {"name": route_server},
            "peerAddress": self.address,
            "peerASN": self.asn,
            "liveness": self.liveness,
            "timers": {"holdTimeSeconds": self.hold_time, "connectRetryTimeSeconds": self.connect_retry},
        }
        if self.passive:
            spec["passive"] = True
        if self.auth_secret is not None:
            spec["authSecretRef"] = {"name": self.auth_secret, "key": "password"}
        if self.graceful_restart:
            spec["gracefulRestart"] = {"enabled": True}
        if self.allowed is not None:
            spec["allowedPrefixes"] = [a.document() for a in self.allowed]
        if self.max_prefixes is not None:
            spec["maxPrefixes"] = {"limit": self.max_prefixes, "action": self.max_prefix_action}
            if self.max_prefix_restart_after is not None:
                spec["maxPrefixes"]["restartAfterSeconds"] = self.max_prefix_restart_after
        return {
            "apiVersion": API_VERSION,
            "kind": "RouteServerPeer",
            "metadata": {"name": self.name},
            "spec": spec,
        }


@dataclass(frozen=True)
class ServerSpec:
    """A RouteServer with its peers and one node-table association."""

    peers: tuple[PeerSpec, ...]
    name: str = "vip"
    asn: int = 64512
    allowed: tuple[Allow, ...] | None = (Allow("203.0.113.0/24", 32, 32),)
    bfd_tx_ms: int = 100
    bfd_multiplier: int = 3
    selection: str = "ActivePassive"
    max_paths: int | None = None
    persist_seconds: int | None = None  # persistRoutes enabled with this window
    table: int = 100
    metric: int | None = None
    listen_addresses: tuple[str, ...] | None = None
    router_id: str | None = None  # None: the agent picks its lowest IPv4 address
    node_selector: dict[str, str] | None = None  # matchLabels (operator tests: which nodes serve it)

    def documents(self) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {
            "asn": self.asn,
            "bfdProfile": {
                "minTxIntervalMilliseconds": self.bfd_tx_ms,
                "detectMultiplier": self.bfd_multiplier,
            },
        }
        if self.allowed is not None:
            spec["importPolicy"] = {"allowedPrefixes": [a.document() for a in self.allowed]}
        if self.selection != "ActivePassive" or self.max_paths is not None:
            selection: dict[str, Any] = {"mode": self.selection}
            if self.max_paths is not None:
                selection["maxPaths"] = self.max_paths
            spec["routeSelection"] = selection
        if self.persist_seconds is not None:
            spec["persistRoutes"] = {"enabled": True, "durationSeconds": self.persist_seconds}
        if self.router_id is not None:
            spec["routerID"] = self.router_id
        if self.listen_addresses is not None:
            spec["listenAddresses"] = list(self.listen_addresses)
        if self.node_selector is not None:
            spec["nodeSelector"] = {"matchLabels": dict(self.node_selector)}
        node: dict[str, Any] = {"table": self.table}
        if self.metric is not None:
            node["metric"] = self.metric
        return [
            {"apiVersion": API_VERSION, "kind": "RouteServer", "metadata": {"name": self.name}, "spec": spec},
            *(p.document(self.name) for p in self.peers),
            {
                "apiVersion": API_VERSION,
                "kind": "RouteTableAssociation",
                "metadata": {"name": f"{self.name}-table"},
                "spec": {"routeServerRef": {"name": self.name}, "target": {"node": node}},
            },
        ]

    def render(self) -> str:
        return yaml.safe_dump_all(self.documents(), sort_keys=False)

    def with_(self, **changes: Any) -> ServerSpec:
        return replace(self, **changes)


# -- a thread inside a namespace -------------------------------------------------------------------


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


class NetnsThread:
    """One worker thread that has entered a lab namespace; callables submitted run there.

    Sockets opened on it belong to that namespace for their whole life. The thread checks that it
    really is in the namespace before it runs anything (setns acts on the calling thread only), and
    the executor refuses work if entering failed, so nothing runs in the root namespace by mistake.
    """

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._path = f"/run/netns/{netns}"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{netns}", initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self._path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns({self._path}): {os.strerror(errno)}")
        finally:
            os.close(fd)
        if _netns_inode("/proc/thread-self/ns/net") != _netns_inode(self._path):
            raise LabError(f"thread did not enter {self.netns}")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path (call it on a NetnsThread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the route server process ----------------------------------------------------------------------


class RouteServerProcess:
    """`routeserver run -f CONFIG` in a lab host, its admin endpoint read from inside the namespace."""

    def __init__(
        self,
        host: Host,
        spec: ServerSpec,
        *,
        resync_interval: float | None = None,
        admin_port: int = ADMIN_PORT,
        log_level: str | None = None,
        extra_args: Sequence[str] = (),
        name: str = "routeserver",
        checkout: Path = REPO_ROOT,
    ) -> None:
        self.host = host
        self.spec = spec
        # Whose code runs: this repository, or another checkout of it (a bench's "before" build).
        self.checkout = checkout
        self.config = host.workdir / f"{name}.yaml"
        self.resync_interval = resync_interval
        self.admin_port = admin_port
        # KRS_TEST_LOG_LEVEL=DEBUG: every route server of a run logs at that level (debugging a flake).
        self.log_level = log_level or os.environ.get("KRS_TEST_LOG_LEVEL", "INFO")
        self.extra_args = list(extra_args)
        self.name = name
        self.proc: ManagedProcess | None = None
        self.starts = 0
        self._thread = NetnsThread(host.netns)

    # -- lifecycle

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "controller.cli", "run", "-f", str(self.config)]
        argv += ["--watch-interval", "0", "--admin-address", f"127.0.0.1:{self.admin_port}"]
        argv += ["--node-name", self.host.name, "--log-level", self.log_level]
        if self.resync_interval is not None:
            argv += ["--resync-interval", str(self.resync_interval)]
        return argv + self.extra_args

    def start(self, wait: bool = True) -> None:
        """Write the configuration and start the process; wait until /status answers."""
        self.config.write_text(self.spec.render())
        self.starts += 1
        name = self.name if self.starts == 1 else f"{self.name}-{self.starts}"
        env = {"PYTHONPATH": str(self.checkout)} if self.checkout != REPO_ROOT else None
        self.proc = self.host.popen(self.argv(), name=name, cwd=self.checkout, env=env)
        if wait:
            self.wait(self._answers, 30, "the route server's admin endpoint")

    def _answers(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"routeserver exited {self.proc.wait()}:\n{self.log()}")
        try:
            self.status()
        except (OSError, ValueError):
            return False
        return True

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.signal(sig)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: no withdrawals, no NOTIFICATIONs; the kernel keeps whatever was installed."""
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def reload(self, spec: ServerSpec, timeout: float = 10.0) -> None:
        """Write a new configuration, SIGHUP, wait until it is applied."""
        generation = int(self.status()["config"]["generation"])
        self.spec = spec
        self.config.write_text(spec.render())
        self.signal(signal.SIGHUP)
        self.wait(lambda: self.status()["config"]["generation"] > generation, timeout, "the reload applied")

    def close(self) -> None:
        self._thread.close()

    # -- reading it

    def log(self, tail: int = 8000) -> str:
        if self.proc is None:
            return ""
        return self.proc.log_text()[-tail:]

    def get(self, path: str) -> bytes:
        status, body = self._thread.call(http_get, self.admin_port, path)
        if status != 200:
            raise ValueError(f"{path}: HTTP {status}")
        return body

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.get("/status"))
        return data

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def route_server(self) -> dict[str, Any]:
        (rs,) = self.status()["route_servers"]
        result: dict[str, Any] = rs
        return result

    def peer(self, name: str) -> dict[str, Any]:
        peer: dict[str, Any] = next(p for p in self.route_server()["peers"] if p["name"] == name)
        return peer

    def peers(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.route_server()["peers"]}

    def table(self) -> dict[str, Any]:
        (table,) = self.route_server()["tables"]
        result: dict[str, Any] = table
        return result

    def routes(self) -> dict[str, set[str]]:
        """The route server's kernel table (prefix -> gateways)."""
        return kernel_routes(self.host, self.spec.table)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
        """wait_until with the kernel table and the route server's log in the failure message."""

        def guarded() -> bool:
            try:
                return predicate()
            except (OSError, ValueError, KeyError, StopIteration):
                return False

        try:
            wait_until(guarded, timeout, interval=interval, what=what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nkernel table {self.spec.table}: {self.routes()}\nrouteserver log:\n{self.log()}"
            ) from None

    def wait_established(self, names: Sequence[str], timeout: float = 40.0) -> None:
        self.wait(
            lambda: all(self.peer(n)["bgp_state"] == "Established" for n in names),
            timeout,
            f"BGP Established with {', '.join(names)}",
        )

    def wait_bfd_up(self, names: Sequence[str], timeout: float = 20.0) -> None:
        self.wait(
            lambda: all((self.peer(n).get("bfd") or {}).get("state") == "Up" for n in names),
            timeout,
            f"BFD Up with {', '.join(names)}",
        )

    def wait_routes(self, expected: dict[str, set[str]], timeout: float, what: str) -> None:
        """Until every prefix of `expected` is in the kernel table with exactly those gateways."""
        self.wait(lambda: all(self.routes().get(p) == hops for p, hops in expected.items()), timeout, what)


@contextlib.contextmanager
def route_server(host: Host, spec: ServerSpec, **kwargs: Any) -> Iterator[RouteServerProcess]:
    """A started RouteServerProcess, its namespace thread closed at the end (the lab stops the process)."""
    server = RouteServerProcess(host, spec, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.close()


# -- the kernel table ------------------------------------------------------------------------------


def _gateways_of_nexthop(host: Host, nhid: int) -> set[str]:
    (nh,) = json.loads(host.run("ip", "-j", "nexthop", "show", "id", str(nhid)).stdout)
    if "gateway" in nh:
        return {nh["gateway"]}
    found: set[str] = set()
    for member in nh.get("group", []):
        found |= _gateways_of_nexthop(host, member["id"])
    return found


def kernel_routes(host: Host, table: int | str, family: str = "") -> dict[str, set[str]]:
    """prefix -> gateways of every route in a kernel table (plain, multipath or nexthop objects).

    `family` "-4"/"-6" restricts the dump; by default both (iproute2 lists IPv4 first, then IPv6).
    """
    routes: dict[str, set[str]] = {}
    families = [family] if family else ["-4", "-6"]
    for fam in families:
        done = host.run("ip", "-j", fam, "route", "show", "table", str(table), check=False)
        if done.returncode != 0:
            if "does not exist" in done.stderr:
                continue  # nothing was ever written there
            raise LabError(done.stderr)
        for route in json.loads(done.stdout.strip() or "[]"):
            dst = route["dst"]
            if "/" not in dst and dst != "default":
                dst += "/128" if ":" in dst else "/32"
            hops = {route["gateway"]} if "gateway" in route else set()
            hops |= {nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh}
            if not hops and "nhid" in route:
                hops = _gateways_of_nexthop(host, route["nhid"])
            routes[dst] = hops
    return routes


def route_details(host: Host, table: int | str, prefix: str) -> list[dict[str, Any]]:
    """iproute2's JSON for the routes of one prefix in a table (protocol, metric, nhid, ...)."""
    fam = "-6" if ":" in prefix else "-4"
    done = host.run("ip", "-j", fam, "route", "show", "table", str(table), "exact", prefix, check=False)
    if done.returncode != 0:
        return []
    found: list[dict[str, Any]] = json.loads(done.stdout.strip() or "[]")
    return found


# -- a route monitor -------------------------------------------------------------------------------

_STAMP = re.compile(r"^\[(?P<stamp>[^\]]+)\]\s*(?P<text>.*)$")


@dataclass(frozen=True)
class MonitorEvent:
    at: float  # wall clock
    deleted: bool
    kind: str  # "route" or "nexthop"
    text: str


@dataclass
class RouteMonitor:
    """`ip -ts monitor route nexthop` in a host, recorded to a file; parsed on demand."""

    host: Host
    name: str = "route-monitor"
    proc: ManagedProcess | None = None
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.path = self.host.workdir / f"{self.name}.log"

    def start(self) -> None:
        self.proc = self.host.popen(["ip", "-ts", "monitor", "route", "nexthop"], name=self.name)
        # `ip monitor` subscribes before it prints anything; give it a moment to be in place.
        wait_until(lambda: self.proc is not None and self.proc.alive(), 2, what="ip monitor running")
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def events(self) -> list[MonitorEvent]:
        found: list[MonitorEvent] = []
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return found
        for line in text.splitlines():
            match = _STAMP.match(line.strip())
            if match is None:
                continue
            body = match.group("text")
            stamp = _parse_stamp(match.group("stamp"))
            deleted = body.startswith("Deleted ")
            rest = body.removeprefix("Deleted ").strip()
            kind = "nexthop" if rest.startswith("id ") else "route"
            found.append(MonitorEvent(stamp, deleted, kind, rest))
        return found

    def route_events(self, prefix: str, table: int | str) -> list[MonitorEvent]:
        """Route notifications for `prefix` in `table` (iproute2 prints a host prefix without /32)."""
        address, _, length = prefix.partition("/")
        full = 128 if ":" in address else 32
        names = {prefix, address} if length and int(length) == full else {prefix}
        found = []
        for event in self.events():
            if event.kind != "route":
                continue
            words = event.text.split()
            if words and words[0] in names and f"table {table}" in event.text:
                found.append(event)
        return found


def _parse_stamp(text: str) -> float:
    """iproute2's -ts stamp: `2026-11-25T01:06:05.123456+0000` (or without the zone)."""
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S.%f"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(text, fmt).timestamp()
    return float("nan")


# -- lab topology and appliances -------------------------------------------------------------------


@dataclass(frozen=True)
class Spoke:
    """One appliance host linked to the route server host: its address and the route server's."""

    host: Host
    address: str  # the appliance's address on the link
    server_address: str  # the route server's address on the link
    ifname: str  # the route server's interface towards it


def star(rs: Host, hosts: Sequence[Host], ipv6: bool = False) -> list[Spoke]:
    """Link each host to `rs` on its own subnet: 10.0.N.0/24 (or 2001:db8:N::/64), .1/::1 on rs."""
    spokes = []
    for index, host in enumerate(hosts, start=1):
        if ipv6:
            server, address, length = f"2001:db8:{index}::1", f"2001:db8:{index}::2", 64
        else:
            server, address, length = f"10.0.{index}.1", f"10.0.{index}.2", 24
        link = rs.lab.link(rs, host, [f"{server}/{length}"], [f"{address}/{length}"])
        spokes.append(Spoke(host, address, server, link.a_ifname))
    return spokes


def appliance(
    kind: str,
    spoke: Spoke,
    *,
    asn: int,
    server_asn: int = 64512,
    routes: Sequence[Route] = (),
    bfd: BfdTimers | None = FAST_BFD,
    hold_time: int = 9,
) -> RoutingDaemon:
    """An FRR or BIRD appliance peering with the route server on its spoke (not started)."""
    ipv6 = ":" in spoke.address
    neighbor = Neighbor(
        spoke.server_address,
        server_asn,
        bfd=bfd,
        hold_time=hold_time,
        connect_retry=1,
        families=("ipv6",) if ipv6 else ("ipv4",),
    )
    router_id = spoke.address if not ipv6 else f"10.255.0.{asn % 250 + 1}"
    daemon_class: type[RoutingDaemon] = FrrDaemon if kind == "frr" else BirdDaemon
    return daemon_class(spoke.host, asn=asn, router_id=router_id, neighbors=[neighbor], routes=list(routes))
