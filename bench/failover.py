"""VIP failover side by side: our route server vs FRR and BIRD as the route server, same lab, same run.

Lab (tests/support/netns.py):

    fw-a 10.0.1.2 AS 65001 (active) --- rs 10.0.1.1 / 10.0.2.1 AS 64512 --- fw-b 10.0.2.2 AS 65002 (standby)

The appliances are our `routeserver appliance` (lab/appliance.py; `--appliance frr` uses FRR
instead): both advertise the same N VIPs (/32s from 10.200.0.0, within 10.200.0.0/14), the standby
prepends its AS twice, and both run BFD at the setting under test. The route server in `rs` is, in turn:

    krs    `routeserver run` with a RouteTableAssociation for the main table (nexthop groups)
    frr    FRR bgpd + zebra + bfdd (zebra installs into the main table; FRR has no other table here)
    bird   BIRD bgp + kernel (main table) + bfd

All three write the main table so the comparison is fair (FRR cannot write another table without a
VRF). Per (VIPs, BFD setting) and repetition, each server is started, waited for (every VIP via the
active appliance in rs's main table, both BFD sessions Up at the server, then 1.5 s for BFD to leave
its slow start), the monitor is started, the active appliance is frozen (`pfifo limit 0` root qdisc
on its interface: it sends nothing, its carrier stays up) and the server is stopped again.

Measurement: a helper process in rs (this module with `--monitor`) with a raw NETLINK_ROUTE socket
subscribed to RTNLGRP_IPV4_ROUTE and RTNLGRP_NEXTHOP tracks what every VIP's route resolves to
(explicit gateways, a nexthop object, or a nexthop group's members) and stamps each notification with
time.monotonic() (one clock for the whole machine, so it compares with the freeze time taken in the
bench process just before `tc` runs). A VIP has moved when its route first resolves to the standby
only. A nexthop-group rewrite (one RTM_NEWNEXTHOP) moves every route that uses the group at once and
is counted that way. Reported per run: freeze -> first VIP moved, freeze -> last VIP moved (the
failover time), the first-to-last spread, and the notifications seen. BFD detection is 3 x the
interval after the last packet that got through, so the failover time is detection (plus up to one
TX interval of phase) plus what the server does after detecting.

Targets (the issue): our median not slower than BIRD's, and a first-to-last spread under 2 ms.

Run as root from the repository root (results also go to bench/results/, gitignored):

    .venv/bin/python -m bench.failover                                # 1 and 1000 VIPs, 100/300 ms, R=5
    .venv/bin/python -m bench.failover --vips 1000 --bfd 100 --repeats 3 --servers krs,bird
"""

from __future__ import annotations

import argparse
import json
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench`, `controller` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, machine, markdown_table, median, write_results
from bgp.types import prefix_key
from controller.writers import rtnl
from tests.support.daemons.base import BfdTimers, Neighbor, Route
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Host, Lab, LabError, ManagedProcess, wait_until
from tests.support.route_server import Allow, NetnsThread, PeerSpec, RouteServerProcess, ServerSpec

SERVERS = ("krs", "frr", "bird")
SERVER_ASN, ACTIVE_ASN, STANDBY_ASN = 64512, 65001, 65002
ACTIVE, STANDBY = "10.0.1.2", "10.0.2.2"
SERVER_A, SERVER_B = "10.0.1.1", "10.0.2.1"
VIP_RANGE = "10.200.0.0/14"
FIRST_VIP = int(IPv4Address("10.200.0.0"))
MAX_VIPS = 1 << 18  # the range's size
MAIN = rtnl.RT_TABLE_MAIN
HOLD = 9
SETTLE = 1.5  # after BFD Up: both sides leave the 1 s slow-start TX rate (RFC 5880 §6.8.3)
PREPEND = 2
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
BFD_PORT = (3784).to_bytes(2, "big")


def vips(count: int) -> list[IPv4Network]:
    if count > MAX_VIPS:
        raise ValueError(f"at most {MAX_VIPS} VIPs (in {VIP_RANGE})")
    return [IPv4Network((FIRST_VIP + i, 32)) for i in range(count)]


# -- the monitor (runs inside rs) -------------------------------------------------------------------


class Tracker:
    """What each VIP's route in one table resolves to, from a dump and then from notifications."""

    def __init__(self, prefixes: Iterable[IPv4Network], table: int) -> None:
        self.wanted = {prefix_key(p): p for p in prefixes}  # kernel routes are read back as keys
        self.table = table
        self.routes: dict[IPv4Network, rtnl.KernelRoute] = {}
        self.nexthops: dict[int, rtnl.KernelNexthop] = {}

    def route(self, kernel: rtnl.KernelRoute | None, new: bool) -> IPv4Network | None:
        if kernel is None or kernel.table != self.table:
            return None
        prefix = self.wanted.get(kernel.key)
        if prefix is None:
            return None
        if new:
            self.routes[prefix] = kernel
        else:
            self.routes.pop(prefix, None)
        return prefix

    def nexthop(self, nexthop: rtnl.KernelNexthop | None, new: bool) -> None:
        if nexthop is None:
            return
        if new:
            self.nexthops[nexthop.nh_id] = nexthop
        else:
            self.nexthops.pop(nexthop.nh_id, None)

    def _object_gateways(self, nh_id: int, depth: int = 0) -> frozenset[str]:
        nexthop = self.nexthops.get(nh_id)
        if nexthop is None or depth > 2:
            return frozenset()
        if nexthop.members:
            found: set[str] = set()
            for member in nexthop.members:
                found |= self._object_gateways(member, depth + 1)
            return frozenset(found)
        return frozenset({str(nexthop.gateway)}) if nexthop.gateway is not None else frozenset()

    def gateways(self, prefix: IPv4Network) -> frozenset[str]:
        kernel = self.routes.get(prefix)
        if kernel is None:
            return frozenset()
        # A route using a nexthop object follows the object (a group rewrite moves it); with
        # net.ipv4.nexthop_compat_mode=1 its notifications also spell the gateways out, as of then.
        if kernel.nh_id is not None and kernel.nh_id in self.nexthops:
            return self._object_gateways(kernel.nh_id)
        return frozenset(str(h.gateway) for h in kernel.nexthops)

    def count_via(self, gateway: str) -> int:
        target = frozenset({gateway})
        return sum(1 for p in self.wanted.values() if self.gateways(p) == target)

    def load(self, channel: rtnl.NetlinkChannel) -> None:
        """A full dump (nexthop objects first: routes refer to them)."""
        try:
            for payload in channel.dump(rtnl.RTM_GETNEXTHOP):
                self.nexthop(rtnl.decode_nexthop(payload), True)
        except OSError:
            pass  # a kernel without nexthop objects
        for payload in channel.dump(rtnl.RTM_GETROUTE, socket.AF_INET, self.table):
            self.route(rtnl.decode_route(payload), True)


def snapshot(prefixes: Sequence[IPv4Network], table: int) -> Tracker:
    """A Tracker loaded by one dump (call it on a NetnsThread of the namespace)."""
    tracker = Tracker(prefixes, table)
    channel = rtnl.NetlinkChannel()
    try:
        tracker.load(channel)
    finally:
        channel.close()
    return tracker


class BfdCapture:
    """BFD control packets (UDP 3784) from one address arriving on one interface: the last one's time.

    A packet socket sees them when the driver hands them up, before the qdisc/firewall of the host; the
    time is time.monotonic() at recv (the helper does little else, so the delay is small and the same
    for every server).
    """

    def __init__(self, ifname: str, source: str) -> None:
        self.source = IPv4Address(source).packed
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.bind((ifname, ETH_P_IP))
        self.sock.setblocking(False)
        self.last: float | None = None
        self.count = 0

    def read(self) -> None:
        while True:
            try:
                packet, address = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            now = time.monotonic()
            if address[2] == PACKET_OUTGOING or len(packet) < 28 or packet[9] != socket.IPPROTO_UDP:
                continue
            header = (packet[0] & 0x0F) * 4
            if packet[12:16] == self.source and packet[header + 2 : header + 4] == BFD_PORT:
                self.last = now
                self.count += 1


def monitor_main(args: argparse.Namespace) -> int:
    """`--monitor`: print {"ready": ...}, then {"result": ...} once every VIP resolves to the standby."""
    prefixes = vips(args.count)
    standby = frozenset({args.standby})
    sock = rtnl.open_monitor((rtnl.RTNLGRP_IPV4_ROUTE, rtnl.RTNLGRP_NEXTHOP), rcvbuf=64 << 20)
    sock.setblocking(True)
    capture = BfdCapture(args.ifname, args.active) if args.ifname else None
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    if capture is not None:
        selector.register(capture.sock, selectors.EVENT_READ)
    tracker = snapshot(prefixes, args.table)  # after subscribing: nothing falls between dump and stream
    pending = {p for p in prefixes if tracker.gateways(p) != standby}
    print(json.dumps({"ready": True, "via_active": tracker.count_via(args.active), "pending": len(pending)}))
    sys.stdout.flush()
    moved: dict[IPv4Network, float] = {}
    kinds: Counter[str] = Counter()
    names = {
        rtnl.RTM_NEWROUTE: "NEWROUTE",
        rtnl.RTM_DELROUTE: "DELROUTE",
        rtnl.RTM_NEWNEXTHOP: "NEWNEXTHOP",
        rtnl.RTM_DELNEXTHOP: "DELNEXTHOP",
    }
    first_message: float | None = None
    overflows = 0
    deadline = time.monotonic() + args.timeout
    while pending and time.monotonic() < deadline:
        ready_keys = selector.select(0.05)
        if capture is not None and any(key.fileobj is capture.sock for key, _ in ready_keys):
            capture.read()
        if not any(key.fileobj is sock for key, _ in ready_keys):
            continue
        try:
            data = sock.recv(1 << 20)
        except OSError:
            overflows += 1  # ENOBUFS: notifications lost; a dump settles the state
            tracker = snapshot(prefixes, args.table)
            now = time.monotonic()
            for prefix in [p for p in pending if tracker.gateways(p) == standby]:
                moved[prefix] = now
                pending.discard(prefix)
            continue
        now = time.monotonic()
        for kind, _flags, _seq, _pid, payload in rtnl.iter_messages(data):
            if kind not in names:
                continue
            kinds[names[kind]] += 1
            if first_message is None:
                first_message = now
            if kind in (rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE):
                changed = tracker.route(rtnl.decode_route(payload), kind == rtnl.RTM_NEWROUTE)
                if changed is not None and changed in pending and tracker.gateways(changed) == standby:
                    moved[changed] = now
                    pending.discard(changed)
            else:
                tracker.nexthop(rtnl.decode_nexthop(payload), kind == rtnl.RTM_NEWNEXTHOP)
                if args.trace:
                    print("TRACE", now, names[kind], rtnl.decode_nexthop(payload), file=sys.stderr)
                for prefix in [p for p in pending if tracker.gateways(p) == standby]:
                    moved[prefix] = now
                    pending.discard(prefix)
    times = sorted(moved.values())
    result = {
        "moved": len(moved),
        "pending": len(pending),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "first_message": first_message,
        "messages": dict(kinds),
        "overflows": overflows,
        "last_bfd_rx": capture.last if capture is not None else None,
    }
    print(json.dumps({"result": result}))
    sys.stdout.flush()
    return 0 if not pending else 1


# -- appliances ---------------------------------------------------------------------------------------


class Appliance:
    """One appliance advertising the VIPs; ours (`routeserver appliance`) or FRR."""

    def __init__(self, kind: str, host: Host, address: str, server: str, asn: int, prepend: int) -> None:
        self.kind, self.host, self.address, self.server = kind, host, address, server
        self.asn, self.prepend = asn, prepend
        self.proc: ManagedProcess | None = None
        self.frr: FrrDaemon | None = None
        self.listing: Path | None = None

    def start(self, count: int, bfd_ms: int) -> None:
        prefixes = [str(p) for p in vips(count)]
        if self.kind == "frr":
            neighbor = Neighbor(
                self.server,
                SERVER_ASN,
                bfd=BfdTimers(bfd_ms, bfd_ms, 3),
                hold_time=HOLD,
                connect_retry=1,
                families=("ipv4",),
            )
            routes = [Route(p, as_path_prepend=self.prepend) for p in prefixes]
            self.frr = FrrDaemon(
                self.host, asn=self.asn, router_id=self.address, neighbors=[neighbor], routes=routes
            )
            self.frr.start()
            return
        argv = [sys.executable, "-m", "controller.cli", "appliance", "--asn", str(self.asn)]
        argv += ["--local-address", self.address, "--peer", self.server, "--peer-asn", str(SERVER_ASN)]
        argv += ["--prepend", str(self.prepend), "--hold-time", str(HOLD), "--connect-retry", "1"]
        argv += ["--bfd-interval-ms", str(bfd_ms), "--bfd-multiplier", "3", "--log-level", "WARNING"]
        # A file, not one --advertise each: 100,000 VIPs do not fit on a command line.
        with tempfile.NamedTemporaryFile("w", prefix="vips-", suffix=".txt", delete=False) as listing:
            listing.write("\n".join(prefixes) + "\n")
        self.listing = Path(listing.name)
        argv += ["--advertise-file", listing.name]
        self.proc = self.host.popen(argv, name=f"appliance-{self.asn}", cwd=REPO_ROOT)

    def stop(self) -> None:
        if self.frr is not None:
            self.frr.stop()
            shutil.rmtree(self.frr.dir, ignore_errors=True)
            self.frr = None
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self.listing is not None:
            self.listing.unlink(missing_ok=True)
            self.listing = None

    def alive(self) -> bool:
        return self.frr is not None or (self.proc is not None and self.proc.alive())


# -- route servers ------------------------------------------------------------------------------------


class Server:
    """One route server implementation in rs."""

    name = "?"
    installs = "?"

    def __init__(self, host: Host, bfd_ms: int) -> None:
        self.host = host
        self.bfd_ms = bfd_ms

    def neighbors(self) -> list[Neighbor]:
        bfd = BfdTimers(self.bfd_ms, self.bfd_ms, 3)
        return [
            Neighbor(address, asn, bfd=bfd, hold_time=HOLD, connect_retry=1, families=("ipv4",))
            for address, asn in ((ACTIVE, ACTIVE_ASN), (STANDBY, STANDBY_ASN))
        ]

    def start(self) -> None:
        raise NotImplementedError

    def bfd_up(self) -> bool:
        raise NotImplementedError

    def standby_routes(self) -> int:
        """How many of the standby's routes the server holds (it can only fail over to those)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log(self) -> str:
        return ""


class KrsServer(Server):
    name = "krs"
    installs = "main table, nexthop groups (NodeTableWriter)"

    log_level = "WARNING"

    def __init__(self, host: Host, bfd_ms: int) -> None:
        super().__init__(host, bfd_ms)
        peers = (
            PeerSpec("fw-a", ACTIVE, ACTIVE_ASN, hold_time=HOLD, max_prefixes=MAX_VIPS),
            PeerSpec("fw-b", STANDBY, STANDBY_ASN, hold_time=HOLD, max_prefixes=MAX_VIPS),
        )
        spec = ServerSpec(
            peers, allowed=(Allow(VIP_RANGE, 32, 32),), bfd_tx_ms=bfd_ms, table=MAIN, router_id=SERVER_A
        )
        self.process = RouteServerProcess(host, spec, log_level=self.log_level, name="krs-routeserver")

    def start(self) -> None:
        self.process.start()

    def bfd_up(self) -> bool:
        peers = self.process.peers()
        return all((p.get("bfd") or {}).get("state") == "Up" for p in peers.values())

    def standby_routes(self) -> int:
        return int(self.process.peers()["fw-b"].get("prefixes_accepted", 0))

    def stop(self) -> None:
        if self.process.proc is not None and self.process.proc.alive():
            self.process.terminate()
        self.process.close()

    def log(self) -> str:
        return self.process.log()


class FrrServer(Server):
    name = "frr"
    installs = "main table, zebra (nexthop groups)"

    def __init__(self, host: Host, bfd_ms: int) -> None:
        super().__init__(host, bfd_ms)
        self.daemon = FrrDaemon(host, asn=SERVER_ASN, router_id=SERVER_A, neighbors=self.neighbors())

    def start(self) -> None:
        self.daemon.start()

    def bfd_up(self) -> bool:
        sessions = self.daemon.bfd_sessions()
        return all(sessions.get(a) is not None and sessions[a].state == "Up" for a in (ACTIVE, STANDBY))

    def standby_routes(self) -> int:
        summary = self.daemon.vtysh_json("show bgp ipv4 unicast summary json")
        return int(summary.get("peers", {}).get(STANDBY, {}).get("pfxRcd", 0))

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.daemon.dir, ignore_errors=True)


class BirdServer(Server):
    name = "bird"
    installs = "main table, kernel protocol (route replaces)"

    def __init__(self, host: Host, bfd_ms: int) -> None:
        super().__init__(host, bfd_ms)
        self.daemon = BirdDaemon(host, asn=SERVER_ASN, router_id=SERVER_A, neighbors=self.neighbors())
        self.daemon.kernel_export = True

    def start(self) -> None:
        self.daemon.start()

    def bfd_up(self) -> bool:
        sessions = self.daemon.bfd_sessions()
        return all(sessions.get(a) is not None and sessions[a].state == "Up" for a in (ACTIVE, STANDBY))

    def standby_routes(self) -> int:
        for line in self.daemon.protocol_text(STANDBY).splitlines():
            if line.strip().startswith("Routes:"):
                return int(line.split()[1])  # "Routes: N imported, ..."
        return 0

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.daemon.dir, ignore_errors=True)


def make_server_class(name: str) -> type[Server]:
    classes: dict[str, type[Server]] = {"krs": KrsServer, "frr": FrrServer, "bird": BirdServer}
    return classes[name]


def make_server(name: str, host: Host, bfd_ms: int) -> Server:
    return make_server_class(name)(host, bfd_ms)


def flush(rs: Host) -> None:
    """Whatever a server left in rs's main table (BGP routes of any protocol) and nexthop objects."""
    for proto in ("bgp", "bird", "245"):
        rs.run("ip", "-4", "route", "flush", "table", "main", "proto", proto, check=False, timeout=60)
    rs.run("ip", "nexthop", "flush", check=False, timeout=60)


# -- one measurement ----------------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    vips: int
    bfd_ms: int
    repetition: int
    first_ms: float | None = None  # freeze -> first VIP via the standby
    last_ms: float | None = None  # freeze -> every VIP via the standby (the failover time)
    spread_ms: float | None = None  # first -> last
    first_message_ms: float | None = None  # freeze -> first route/nexthop notification
    freeze_ms: float | None = None  # how long `tc` took to put the qdisc in place
    after_detection_ms: float | None = None  # every VIP moved - (last BFD packet heard + 3 intervals)
    last_bfd_before_freeze_ms: float | None = None
    messages: dict[str, int] = field(default_factory=dict)
    ready_s: float | None = None
    error: str | None = None


class Bench:
    def __init__(self, lab: Lab, appliance_kind: str, timeout: float) -> None:
        self.lab = lab
        self.rs, self.fw_a, self.fw_b = lab.host("rs"), lab.host("fw-a"), lab.host("fw-b")
        self.ifname = lab.link(self.rs, self.fw_a, [f"{SERVER_A}/24"], [f"{ACTIVE}/24"]).a_ifname
        lab.link(self.rs, self.fw_b, [f"{SERVER_B}/24"], [f"{STANDBY}/24"])
        self.active = Appliance(appliance_kind, self.fw_a, ACTIVE, SERVER_A, ACTIVE_ASN, 0)
        self.standby = Appliance(appliance_kind, self.fw_b, STANDBY, SERVER_B, STANDBY_ASN, PREPEND)
        self.thread = NetnsThread(self.rs.netns)
        self.timeout = timeout
        self.monitors = 0

    def close(self) -> None:
        self.thread.close()

    def via(self, prefixes: Sequence[IPv4Network], gateway: str) -> int:
        return self.thread.call(snapshot, prefixes, MAIN).count_via(gateway)

    def measure(self, name: str, count: int, bfd_ms: int, repetition: int) -> Run:
        run = Run(name, count, bfd_ms, repetition)
        prefixes = vips(count)
        flush(self.rs)
        server = make_server(name, self.rs, bfd_ms)
        started = time.monotonic()
        monitor: ManagedProcess | None = None
        try:
            # Fresh appliances for every run: a speaker that saw its session fail again and again
            # backs off before reconnecting (IdleHold damping), which would time the appliance.
            self.active.start(count, bfd_ms)
            self.standby.start(count, bfd_ms)
            server.start()
            wait_until(
                lambda: self.via(prefixes, ACTIVE) == count, 60, 0.1, f"{name}: all VIPs via the active"
            )
            wait_until(server.bfd_up, 30, 0.1, f"{name}: BFD Up with both appliances")
            # The standby's whole table too: a route it has not heard of yet cannot fail over to it.
            wait_until(
                lambda: server.standby_routes() >= count, 60, 0.1, f"{name}: every VIP from the standby"
            )
            run.ready_s = time.monotonic() - started
            time.sleep(SETTLE)
            if self.via(prefixes, ACTIVE) != count:
                raise LabError(f"{name}: VIPs moved before the freeze")
            self.monitors += 1
            monitor = self.rs.popen(
                [
                    sys.executable,
                    "-m",
                    "bench.failover",
                    "--monitor",
                    "--count",
                    str(count),
                    "--table",
                    str(MAIN),
                    "--active",
                    ACTIVE,
                    "--standby",
                    STANDBY,
                    "--timeout",
                    str(self.timeout),
                    "--ifname",
                    self.ifname,
                    *(["--trace"] if KrsServer.log_level == "DEBUG" else []),
                ],
                name=f"monitor-{self.monitors}",
                cwd=REPO_ROOT,
            )
            ready = self._line(monitor, "ready", 20)
            if ready["via_active"] != count:
                raise LabError(f"{name}: monitor sees {ready['via_active']} of {count} VIPs via the active")
            time.sleep(3 * bfd_ms / 1000)  # the capture hears a few BFD packets before the freeze
            frozen_at = time.monotonic()
            self.fw_a.freeze()
            run.freeze_ms = (time.monotonic() - frozen_at) * 1000
            result = self._line(monitor, "result", self.timeout + 5)["result"]
            run.messages = result["messages"]
            if result["pending"]:
                run.error = f"{result['pending']} VIPs never moved to the standby within {self.timeout:g} s"
            if result["first"] is not None:
                run.first_ms = (result["first"] - frozen_at) * 1000
                run.last_ms = (result["last"] - frozen_at) * 1000
                run.spread_ms = (result["last"] - result["first"]) * 1000
            if result["last_bfd_rx"] is not None and result["last"] is not None:
                # Detection fires 3 intervals after the last packet heard (RFC 5880 §6.8.4): the rest is
                # what the server did after detecting (plus the TX jitter of that last interval).
                detected = result["last_bfd_rx"] + 3 * bfd_ms / 1000
                run.after_detection_ms = (result["last"] - detected) * 1000
                run.last_bfd_before_freeze_ms = (frozen_at - result["last_bfd_rx"]) * 1000
            if result["first_message"] is not None:
                run.first_message_ms = (result["first_message"] - frozen_at) * 1000
        except (LabError, AssertionError, OSError, ValueError, KeyError) as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            log = server.log()
            if log:
                print(log[-3000:], file=sys.stderr)
        finally:
            if monitor is not None:
                monitor.stop()
            self.fw_a.unfreeze()
            server.stop()
            self.active.stop()
            self.standby.stop()
            if KrsServer.log_level == "DEBUG" and isinstance(server, KrsServer):
                print(server.process.log(20000), file=sys.stderr)
                if monitor is not None:
                    print(monitor.log_text()[-3000:], file=sys.stderr)
            flush(self.rs)
        return run

    @staticmethod
    def _line(proc: ManagedProcess, key: str, timeout: float) -> dict[str, Any]:
        """The monitor's first stdout JSON line holding `key` (its log file is its stdout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in proc.log_text().splitlines():
                if line.startswith("{") and f'"{key}"' in line:
                    data: dict[str, Any] = json.loads(line)
                    return data
            if not proc.alive():
                break
            time.sleep(0.02)
        raise LabError(f"monitor: no {key} line: {proc.log_text()[-2000:]}")


# -- summary ------------------------------------------------------------------------------------------


@dataclass
class Row:
    server: str
    installs: str
    vips: int
    bfd_ms: int
    runs: int
    median_ms: float | None
    min_ms: float | None
    max_ms: float | None
    first_median_ms: float | None
    spread_median_ms: float | None
    spread_max_ms: float | None
    after_detection_median_ms: float | None
    messages: str
    errors: int
    vs_bird: float | None = None


def summarise(runs: Sequence[Run], installs: dict[str, str]) -> list[Row]:
    rows: list[Row] = []
    keys = sorted(
        {(r.vips, r.bfd_ms, r.server) for r in runs}, key=lambda k: (k[0], k[1], SERVERS.index(k[2]))
    )
    for count, bfd_ms, name in keys:
        group = [r for r in runs if (r.vips, r.bfd_ms, r.server) == (count, bfd_ms, name)]
        good = [r for r in group if r.error is None and r.last_ms is not None]
        last = [r.last_ms for r in good if r.last_ms is not None]
        first = [r.first_ms for r in good if r.first_ms is not None]
        spread = [r.spread_ms for r in good if r.spread_ms is not None]
        messages: Counter[str] = Counter()
        for r in good:
            messages.update(r.messages)
        per_run = {k: round(v / len(good)) for k, v in sorted(messages.items())} if good else {}
        rows.append(
            Row(
                server=name,
                installs=installs.get(name, "?"),
                vips=count,
                bfd_ms=bfd_ms,
                runs=len(good),
                median_ms=median(last),
                min_ms=min(last) if last else None,
                max_ms=max(last) if last else None,
                first_median_ms=median(first),
                spread_median_ms=median(spread),
                spread_max_ms=max(spread) if spread else None,
                after_detection_median_ms=median(
                    [r.after_detection_ms for r in good if r.after_detection_ms is not None]
                ),
                messages=" ".join(f"{k}:{v}" for k, v in per_run.items()),
                errors=len(group) - len(good),
            )
        )
    for row in rows:
        bird = next((r for r in rows if (r.vips, r.bfd_ms, r.server) == (row.vips, row.bfd_ms, "bird")), None)
        if bird is not None and bird.median_ms and row.median_ms is not None:
            row.vs_bird = row.median_ms / bird.median_ms
    return rows


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: Sequence[Row]) -> str:
    headers = [
        "server",
        "VIPs",
        "BFD",
        "failover median ms",
        "min-max ms",
        "first moved ms",
        "spread median ms",
        "spread max ms",
        "after detection ms",
        "x BIRD",
        "notifications/run",
        "runs",
        "errors",
    ]
    body = [
        [
            r.server,
            f"{r.vips:,}",
            f"{r.bfd_ms} ms x 3",
            _fmt(r.median_ms),
            f"{_fmt(r.min_ms)}-{_fmt(r.max_ms)}",
            _fmt(r.first_median_ms),
            _fmt(r.spread_median_ms, ".2f"),
            _fmt(r.spread_max_ms, ".2f"),
            _fmt(r.after_detection_median_ms),
            _fmt(r.vs_bird, ".2f"),
            r.messages,
            r.runs,
            r.errors,
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def targets(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.server != "krs" or row.median_ms is None:
            continue
        what = f"{row.vips:,} VIPs, BFD {row.bfd_ms} ms x 3"
        if row.vs_bird is not None:
            verdict = "yes" if row.vs_bird <= 1.0 else "NO"
            lines.append(f"{what}: median not slower than BIRD's: {verdict} ({row.vs_bird:.2f}x)")
        if row.spread_max_ms is not None:
            verdict = "yes" if row.spread_max_ms < 2.0 else "NO"
            lines.append(
                f"{what}: first-to-last spread under 2 ms: {verdict} (max {row.spread_max_ms:.2f} ms)"
            )
    return lines


def _stdev(runs: Sequence[Run], row: Row) -> float | None:
    values = [
        r.last_ms
        for r in runs
        if (r.server, r.vips, r.bfd_ms) == (row.server, row.vips, row.bfd_ms) and r.last_ms is not None
    ]
    return statistics.pstdev(values) if len(values) > 1 else None


# -- main ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vips", default="1,1000", help="comma-separated VIP counts (default 1,1000)")
    parser.add_argument("--bfd", default="100,300", help="comma-separated BFD intervals in ms (x 3)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"from {','.join(SERVERS)}")
    parser.add_argument("--appliance", choices=("krs", "frr"), default="krs", help="what the appliances run")
    parser.add_argument("--timeout", type=float, default=10.0, help="per failover, seconds")
    parser.add_argument("--krs-log", action="store_true", help="print our route server's DEBUG log per run")
    parser.add_argument(
        "--nexthop-compat-mode",
        choices=("0", "1"),
        help="set net.ipv4.nexthop_compat_mode in rs (default: the kernel's, 1): with 1, the kernel "
        "sends a route notification per route on a rewritten nexthop group",
    )
    # The helper process inside rs:
    parser.add_argument("--monitor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--table", type=int, default=MAIN, help=argparse.SUPPRESS)
    parser.add_argument("--active", default=ACTIVE, help=argparse.SUPPRESS)
    parser.add_argument("--standby", default=STANDBY, help=argparse.SUPPRESS)
    parser.add_argument("--ifname", default="", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.monitor:
        return monitor_main(args)

    counts = [int(v) for v in args.vips.split(",") if v]
    intervals = [int(v) for v in args.bfd.split(",") if v]
    names = [n for n in args.servers.split(",") if n]
    if set(names) - set(SERVERS):
        parser.error(f"unknown servers {sorted(set(names) - set(SERVERS))}")
    names.sort(key=SERVERS.index)
    if args.krs_log:
        KrsServer.log_level = "DEBUG"
    host_info = machine()
    runs: list[Run] = []
    installs = {n: make_server_class(n).installs for n in names}
    with Lab("failover") as lab:
        bench = Bench(lab, args.appliance, args.timeout)
        if args.nexthop_compat_mode is not None:
            bench.rs.run("sysctl", "-q", "-w", f"net.ipv4.nexthop_compat_mode={args.nexthop_compat_mode}")
        compat = bench.rs.run("sysctl", "-n", "net.ipv4.nexthop_compat_mode").stdout.strip()
        print(f"rs: net.ipv4.nexthop_compat_mode={compat}", file=sys.stderr)
        try:
            for count in counts:
                for bfd_ms in intervals:
                    for repetition in range(args.repeats):
                        for name in names:
                            run = bench.measure(name, count, bfd_ms, repetition)
                            runs.append(run)
                            print(
                                f"  {name:5} {count:>5} VIPs BFD {bfd_ms:>3} ms #{repetition}:"
                                f" last {_fmt(run.last_ms)} ms first {_fmt(run.first_ms)} ms"
                                f" spread {_fmt(run.spread_ms, '.2f')} ms"
                                f" after detection {_fmt(run.after_detection_ms)} ms {run.messages}"
                                + (f" ERROR {run.error}" if run.error else ""),
                                flush=True,
                            )
        finally:
            bench.close()

    rows = summarise(runs, installs)
    print()
    print(table(rows))
    print()
    for line in targets(rows):
        print(line)
    path = write_results(
        "failover",
        {
            "machine": host_info,
            "arguments": vars(args),
            "runs": [asdict(r) for r in runs],
            "summary": [asdict(r) for r in rows],
            "targets": targets(rows),
            "failover_stdev_ms": {f"{r.server}/{r.vips}/{r.bfd_ms}": _stdev(runs, r) for r in rows},
        },
    )
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
