"""The Kubernetes operator (`routeserver agent`) under load: idle cost, failover, API requests, BFD lateness.

Everything runs against a real API server (tests/support/operator_lab.py `Cluster`: etcd +
kube-apiserver + kube-controller-manager on loopback, the chart installed with `helm`, the agent
with the chart's ServiceAccount token) and real agents in lab namespaces (tests/support/netns.py).
Parts (`--only`, comma-separated; default all):

    idle      one agent, 10 BIRD appliances (one per host, BGP + BFD 100 ms x 3, one /32 each),
              established and idle: agent CPU over --idle-seconds (utime+stime of the agent and its
              descendants from /proc/PID/stat) and RSS/HWM (/proc/PID/status), API requests/s.
    failover  the two_nodes topology (node-a, node-b; fw-a BIRD active, fw-b FRR standby): freeze
              fw-a (`pfifo limit 0`), time until the VIP resolves to fw-b only in each node's table
              100 (a netlink dump every 5 ms per node, from a thread inside the node's namespace),
              --repeats times; medians per node and the per-run node-b minus node-a difference.
    flap      both appliances advertise --vips extra /32s (10.200.0.0/16; fw-b prepends twice);
              fw-a is frozen and unfrozen --flaps times (each time: every VIP moved to fw-b on both
              nodes, then back to fw-a with the sessions Established); the agents' API requests by
              purpose and status writes by kind over the window (plus a --tail for deferred writes).
    churn     fw-a toggles a `protocol static churn` of --churn-batch /32s (10.201.0.0/16) on and
              off over BIRD's control socket at --churn-rate prefix updates/s for --churn-seconds;
              API requests/s by purpose per agent.
    burst     BFD up on both nodes; --burst RouteServerPeer objects of a RouteServer no node serves
              are created (`kubectl create`), then deleted (one delete-collection): false BFD downs
              (agent established_count / bfd down_count, FRR's BFD down events, BIRD's protocol
              "since" times), the agents' event-loop lag (max gauge, histogram delta over the burst)
              and the gaps between BFD control packets each node sent, captured at fw-b.

Run as root from the repository root (results also go to bench/results/, gitignored):

    .venv/bin/python -m bench.operator                       # everything, ~6-8 min
    .venv/bin/python -m bench.operator --only idle --idle-seconds 30
    .venv/bin/python -m bench.operator --only failover,burst --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench`, `controller` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, BirdControl, machine, markdown_table, median, memory, write_results
from bench.failover import snapshot
from tests.support.daemons.base import Neighbor, Route
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Host, Lab, wait_until
from tests.support.operator_lab import VIP, AgentProcess, Cluster, TwoNodes, two_nodes
from tests.support.route_server import FAST_BFD, Allow, NetnsThread, PeerSpec, ServerSpec

PARTS = ("idle", "failover", "flap", "churn", "burst")
ENDPOINT = "routeserver.dev/endpoint"
FW_A, FW_B = "10.0.1.11", "10.0.1.12"
TABLE = 100
FLAP_BASE = int(IPv4Address("10.200.0.0"))
CHURN_BASE = int(IPv4Address("10.201.0.0"))
ALLOWED = (
    Allow("203.0.113.0/24", 32, 32),
    Allow("10.200.0.0/16", 32, 32),
    Allow("10.201.0.0/16", 32, 32),
)
SPEC = ServerSpec(
    (PeerSpec("fw-a", FW_A, 65001), PeerSpec("fw-b", FW_B, 65002)),
    allowed=ALLOWED,
    node_selector={ENDPOINT: "true"},
)
NODE_LABELS = {"node-a": {ENDPOINT: "true"}, "node-b": {ENDPOINT: "true"}}
SETTLE = 1.5  # after BFD Up: both sides leave the 1 s slow-start TX rate (RFC 5880 §6.8.3)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BFD_PORT = 3784
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def prefixes(base: int, count: int) -> list[str]:
    return [str(IPv4Network((base + i, 32))) for i in range(count)]


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


# -- metrics -------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """One /metrics scrape: (name, labels) -> value."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def scrape(cls, agent: AgentProcess) -> Metrics:
        text = agent.metrics()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is None or line.startswith("#"):
                continue
            labels = tuple(sorted(_LABEL.findall(match.group("labels") or "")))
            samples[(match.group("name"), labels)] = float(match.group("value"))
        return cls(time.monotonic(), samples)

    def by(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(labels).get(label, ""): value for (n, labels), value in self.samples.items() if n == name
        }

    def value(self, name: str) -> float | None:
        return next((v for (n, _), v in self.samples.items() if n == name), None)


def delta(before: Metrics, after: Metrics, name: str, label: str) -> dict[str, float]:
    old, new = before.by(name, label), after.by(name, label)
    return {k: new[k] - old.get(k, 0.0) for k in sorted(new) if new[k] - old.get(k, 0.0)}


def rates(before: Metrics, after: Metrics, name: str, label: str) -> dict[str, float]:
    seconds = after.at - before.at
    return {k: round(v / seconds, 2) for k, v in delta(before, after, name, label).items()}


def api_report(before: Metrics, after: Metrics) -> dict[str, Any]:
    requests = delta(before, after, "routeserver_api_requests_total", "purpose")
    seconds = after.at - before.at
    return {
        "seconds": round(seconds, 2),
        "requests": requests,
        "requests_per_s": rates(before, after, "routeserver_api_requests_total", "purpose"),
        "requests_per_s_total": round(sum(requests.values()) / seconds, 2),
        "failures": delta(before, after, "routeserver_api_request_failures_total", "purpose"),
        "status_writes": delta(before, after, "routeserver_status_writes_total", "kind"),
        "status_writes_per_s": rates(before, after, "routeserver_status_writes_total", "kind"),
        "kube_events": delta(before, after, "routeserver_kube_events_total", "result"),
        "lag_max_s": after.value("routeserver_event_loop_lag_max_seconds"),
    }


def lag_histogram(before: Metrics, after: Metrics) -> dict[str, int]:
    """The event-loop lag samples between two scrapes, per bucket (not cumulative): "<=0.001", ">1.0"."""
    cumulative = delta(before, after, "routeserver_event_loop_lag_seconds_bucket", "le")
    ordered = sorted(cumulative.items(), key=lambda kv: float(kv[0]))
    out: dict[str, int] = {}
    below = 0.0
    previous = "0"
    for le, count in ordered:
        name = f"<={le}" if le != "+Inf" else f">{previous}"
        if count - below:
            out[name] = int(count - below)
        below, previous = count, le
    return out


def lag_samples_over(before: Metrics, after: Metrics, bound: str) -> int:
    """Event-loop lag samples between two scrapes later than `bound` seconds (a bucket bound: "0.05")."""
    cumulative = delta(before, after, "routeserver_event_loop_lag_seconds_bucket", "le")
    return int(cumulative.get("+Inf", 0) - cumulative.get(bound, 0))


def scrape_all(agents: dict[str, AgentProcess]) -> dict[str, Metrics]:
    return {name: Metrics.scrape(agent) for name, agent in agents.items()}


def requests_table(title: str, reports: dict[str, dict[str, Any]]) -> str:
    purposes = sorted({p for r in reports.values() for p in r["requests_per_s"]})
    kinds = sorted({k for r in reports.values() for k in r["status_writes_per_s"]})
    rows: list[list[object]] = []
    for name, report in reports.items():
        rows.append(
            [
                name,
                report["seconds"],
                report["requests_per_s_total"],
                *(report["requests_per_s"].get(p, 0) for p in purposes),
                " ".join(f"{k}:{report['status_writes_per_s'].get(k, 0)}" for k in kinds) or "-",
            ]
        )
    headers = ["agent", "window s", "req/s", *purposes, "status writes/s by kind"]
    return f"{title}\n\n" + markdown_table(headers, rows)


# -- processes -----------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += descendants(int(child))
    return found


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total


def agent_pid(agent: AgentProcess) -> int:
    assert agent.proc is not None
    pid = agent.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"controller.cli" in cmdline, cmdline  # `ip netns exec` execs the agent in place
    return pid


# -- the VIP watcher -----------------------------------------------------------------------------------


class VipWatcher:
    """Dumps one node's table 100 every `interval` s from a thread in its namespace; keeps changes."""

    def __init__(self, host: Host, prefix: str, interval: float = 0.005) -> None:
        self.prefix = IPv4Network(prefix)
        self.interval = interval
        self.changes: list[tuple[float, frozenset[str]]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = NetnsThread(host.netns)
        self._future = self._thread.submit(self._run)

    def _run(self) -> None:
        last: frozenset[str] | None = None
        while not self._stop.is_set():
            tracker = snapshot([self.prefix], TABLE)
            now = time.monotonic()
            self.polls += 1
            value = tracker.gateways(self.prefix)
            if value != last:
                self.changes.append((now, value))
                last = value
            self._stop.wait(self.interval)

    def first(self, gateways: set[str], after: float) -> float | None:
        target = frozenset(gateways)
        return next((t for t, v in self.changes if t >= after and v == target), None)

    def close(self) -> None:
        self._stop.set()
        self._future.result(10)
        self._thread.close()


def count_via(host_thread: NetnsThread, table_prefixes: list[IPv4Network], gateway: str) -> int:
    tracker = host_thread.call(snapshot, table_prefixes, TABLE)
    return tracker.count_via(gateway)


# -- BFD packet gaps -----------------------------------------------------------------------------------


class BfdGaps:
    """At fw-b: the gaps between BFD control packets from each node (a packet socket in fw-b)."""

    def __init__(self, host: Host, sources: dict[str, str]) -> None:
        self.sources = {IPv4Address(a).packed: n for n, a in sources.items()}
        self.last: dict[str, float] = {}
        self.gaps: dict[str, list[float]] = {n: [] for n in sources}
        self.ifname = host.interfaces()[0]
        self._stop = threading.Event()
        self._thread = NetnsThread(host.netns)
        self._ready = threading.Event()
        self._future = self._thread.submit(self._run)
        self._ready.wait(5)

    def _run(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.bind((self.ifname, ETH_P_IP))
        sock.setblocking(False)
        self._ready.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([sock], [], [], 0.05)
                if not readable:
                    continue
                while True:
                    try:
                        packet, address = sock.recvfrom(2048)
                    except BlockingIOError:
                        break
                    now = time.monotonic()
                    if address[2] == PACKET_OUTGOING or len(packet) < 28 or packet[9] != socket.IPPROTO_UDP:
                        continue
                    header = (packet[0] & 0x0F) * 4
                    if int.from_bytes(packet[header + 2 : header + 4], "big") != BFD_PORT:
                        continue
                    name = self.sources.get(packet[12:16])
                    if name is None:
                        continue
                    if name in self.last:
                        self.gaps[name].append((now - self.last[name]) * 1000)
                    self.last[name] = now
        finally:
            sock.close()

    def close(self) -> dict[str, dict[str, float | int | None]]:
        self._stop.set()
        self._future.result(10)
        self._thread.close()
        out: dict[str, dict[str, float | int | None]] = {}
        for name, gaps in self.gaps.items():
            ordered = sorted(gaps)
            out[name] = {
                "packets": len(gaps) + 1 if gaps else 0,
                "median_ms": round(statistics.median(ordered), 1) if ordered else None,
                "p99_ms": round(ordered[int(len(ordered) * 0.99)], 1) if ordered else None,
                "max_ms": round(ordered[-1], 1) if ordered else None,
                "min_ms": round(ordered[0], 1) if ordered else None,
            }
        return out


# -- part 1: idle --------------------------------------------------------------------------------------


def part_idle(lab: Lab, cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    count = args.idle_peers
    node_address = "10.0.2.1"
    addresses = {f"ap{i}": f"10.0.2.{11 + i}" for i in range(count)}
    node = lab.host("node-i")
    hosts = {name: lab.host(name) for name in addresses}
    lab.switch("swi", {node: [f"{node_address}/24"], **{hosts[n]: [f"{a}/24"] for n, a in addresses.items()}})
    spec = ServerSpec(
        tuple(PeerSpec(name, address, 65100 + i) for i, (name, address) in enumerate(addresses.items())),
        name="idle",
        table=101,
        node_selector={"bench": "idle"},
    )
    cluster.node("node-i", {"bench": "idle"})
    cluster.apply(spec.documents())
    daemons = [
        BirdDaemon(
            hosts[name],
            asn=65100 + i,
            router_id=address,
            neighbors=[
                Neighbor(
                    node_address, spec.asn, bfd=FAST_BFD, hold_time=9, connect_retry=1, families=("ipv4",)
                )
            ],
            routes=[Route(f"203.0.113.{100 + i}/32")],
        )
        for i, (name, address) in enumerate(addresses.items())
    ]
    agent = AgentProcess(node, cluster, spec)
    try:
        for daemon in daemons:
            daemon.start()
        agent.start()
        agent.wait_established(list(addresses), 120)
        agent.wait_bfd_up(list(addresses), 60)
        time.sleep(5)  # initial status writes and BFD slow start are over
        pid = agent_pid(agent)
        pids = descendants(pid)
        before = Metrics.scrape(agent)
        ticks0, wall0 = cpu_ticks(pids), time.monotonic()
        rss_samples = []
        while time.monotonic() - wall0 < args.idle_seconds:
            time.sleep(min(5.0, args.idle_seconds - (time.monotonic() - wall0)) or 0.01)
            rss_samples.append(sum(memory(p).rss for p in pids))
        ticks1, wall1 = cpu_ticks(pids), time.monotonic()
        after = Metrics.scrape(agent)
        mem = memory(pid)
        peers = agent.peers()
        seconds = wall1 - wall0
        cpu_percent = (ticks1 - ticks0) / CLK_TCK / seconds * 100
        result = {
            "peers": count,
            "seconds": round(seconds, 2),
            "processes": len(pids),
            "cpu_seconds": round((ticks1 - ticks0) / CLK_TCK, 2),
            "cpu_percent": round(cpu_percent, 2),
            "rss_mib": round(mem.rss / 2**20, 1),
            "hwm_mib": round(mem.hwm / 2**20, 1),
            "rss_mib_min_max": [round(min(rss_samples) / 2**20, 1), round(max(rss_samples) / 2**20, 1)],
            "api": api_report(before, after),
            "lag_histogram": lag_histogram(before, after),
            "lag_samples_over_50ms": lag_samples_over(before, after, "0.05"),
            "all_established": all(p["bgp_state"] == "Established" for p in peers.values()),
            "bfd_down_count": sum((p.get("bfd") or {}).get("down_count", 0) for p in peers.values()),
        }
        print(
            f"idle: {count} peers, {seconds:.0f} s: CPU {cpu_percent:.2f} % of one core,"
            f" RSS {result['rss_mib']} MiB, HWM {result['hwm_mib']} MiB,"
            f" API {result['api']['requests_per_s_total']} req/s {result['api']['requests']}",
            flush=True,
        )
        return result
    finally:
        agent.close()
        for daemon in daemons:
            daemon.stop()
        for plural, name in (("routetableassociations", "idle-table"), ("routeservers", "idle")):
            cluster.kubectl("delete", plural, name, "--ignore-not-found", "--wait=false", check=False)
        for peer in addresses:
            cluster.kubectl(
                "delete", "routeserverpeer", peer, "--ignore-not-found", "--wait=false", check=False
            )
        cluster.kubectl("delete", "node", "node-i", "--ignore-not-found", check=False)


# -- the two-node setup --------------------------------------------------------------------------------


@dataclass
class Nodes:
    setup: TwoNodes
    threads: dict[str, NetnsThread] = field(default_factory=dict)

    @property
    def agents(self) -> dict[str, AgentProcess]:
        return self.setup.agents

    @property
    def fw_a(self) -> BirdDaemon:
        daemon = self.setup.appliances["fw-a"]
        assert isinstance(daemon, BirdDaemon)
        return daemon

    @property
    def fw_b(self) -> FrrDaemon:
        daemon = self.setup.appliances["fw-b"]
        assert isinstance(daemon, FrrDaemon)
        return daemon

    def fw_a_interfaces(self) -> list[str]:
        return self.setup.lab.hosts["fw-a"].interfaces()

    def count_via(self, watched: list[IPv4Network], gateway: str) -> dict[str, int]:
        return {n: count_via(t, watched, gateway) for n, t in self.threads.items()}

    def wait_up(self, timeout: float = 60.0) -> None:
        self.setup.wait_all(
            lambda a: (
                all(
                    p["bgp_state"] == "Established" and (p.get("bfd") or {}).get("state") == "Up"
                    for p in a.peers().values()
                )
                and len(a.peers()) == 2
            ),
            timeout,
            "both sessions Established with BFD Up",
        )

    def close(self) -> None:
        for thread in self.threads.values():
            thread.close()


def start_nodes(lab: Lab, cluster: Cluster) -> Nodes:
    setup = two_nodes(lab, cluster, SPEC, NODE_LABELS, start_agents=False)
    cluster.apply(SPEC.documents())
    for agent in setup.agents.values():
        agent.start()
    nodes = Nodes(setup, {n: NetnsThread(h.netns) for n, h in setup.nodes.items()})
    wait_ready(nodes)
    return nodes


def wait_ready(nodes: Nodes) -> None:
    nodes.wait_up(90)
    vip = [IPv4Network(VIP)]
    wait_until(lambda: nodes.count_via(vip, FW_A) == {"node-a": 1, "node-b": 1}, 30, what="the VIP via fw-a")
    time.sleep(SETTLE)


def restart_agents(nodes: Nodes) -> None:
    """Fresh agents (SIGTERM keeps the routes): the sessions' IdleHold backoff starts over.

    Every BFD-driven drop doubles the session's IdleHold (1 s .. 60 s; RFC 4271 DampPeerOscillations)
    and only a session Established for 60 s starts it over, so without this a part would measure
    the drops of the parts before it.
    """
    for agent in nodes.agents.values():
        agent.terminate()
        agent.start()
    wait_ready(nodes)


def events_by_reason(cluster: Cluster) -> dict[str, int]:
    """Kubernetes Events in "default" by reason, each counted with its series (aggregated repeats)."""
    counts: dict[str, int] = {}
    for item in cluster.items("events.events.k8s.io", "-n", "default"):
        series = (item.get("series") or {}).get("count", 1)
        reason = str(item.get("reason"))
        counts[reason] = counts.get(reason, 0) + int(series)
    return counts


def events_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def stop_nodes(nodes: Nodes, cluster: Cluster, keep_logs: Path | None = None) -> None:
    nodes.close()
    if keep_logs is not None:
        keep_logs.mkdir(parents=True, exist_ok=True)
        for name, host in nodes.setup.nodes.items():
            for log in host.workdir.glob("agent*.log"):
                shutil.copy(log, keep_logs / f"{name}-{log.name}")
    for agent in nodes.agents.values():
        agent.close()
    cluster.delete_route_server_objects()
    for name in NODE_LABELS:
        cluster.kubectl("delete", "node", name, "--ignore-not-found", check=False)


# -- part 2: failover ----------------------------------------------------------------------------------


def part_failover(nodes: Nodes, args: argparse.Namespace) -> dict[str, Any]:
    fw_a = nodes.setup.lab.hosts["fw-a"]
    interfaces = nodes.fw_a_interfaces()
    vip = [IPv4Network(VIP)]
    runs: list[dict[str, Any]] = []
    watchers = {n: VipWatcher(h, VIP) for n, h in nodes.setup.nodes.items()}
    try:
        for repetition in range(args.repeats):
            frozen = time.monotonic()
            fw_a.freeze(interfaces)
            try:
                wait_until(
                    lambda frozen=frozen: all(w.first({FW_B}, frozen) is not None for w in watchers.values()),
                    10,
                    interval=0.01,
                    what="the VIP via fw-b on both nodes",
                )
            finally:
                fw_a.unfreeze(interfaces)
            moved = {n: (w.first({FW_B}, frozen) or 0.0) - frozen for n, w in watchers.items()}
            run = {f"{n}_ms": round(v * 1000, 1) for n, v in moved.items()}
            run["b_minus_a_ms"] = round((moved["node-b"] - moved["node-a"]) * 1000, 1)
            runs.append(run)
            print(f"  failover #{repetition}: {run}", flush=True)
            wait_until(
                lambda: nodes.count_via(vip, FW_A) == {"node-a": 1, "node-b": 1},
                60,
                what="the VIP back via fw-a",
            )
            nodes.wait_up(60)
            time.sleep(SETTLE)
    finally:
        polls = {n: w.polls for n, w in watchers.items()}
        for watcher in watchers.values():
            watcher.close()

    def stats(key: str) -> dict[str, float | None]:
        values = [r[key] for r in runs]
        return {"median": median(values), "min": min(values), "max": max(values)}

    summary = {key: stats(key) for key in ("node-a_ms", "node-b_ms", "b_minus_a_ms")}
    return {"runs": runs, "summary": summary, "polls": polls}


# -- part 3: flap of 1,000 VIPs ------------------------------------------------------------------------


def advertise_many(nodes: Nodes, routes: list[str]) -> None:
    nodes.fw_a.advertise([Route(p) for p in routes])
    lines = [
        "route-map BENCHPRE permit 10",
        " set as-path prepend 65002 65002",
        "exit",
        "router bgp 65002",
        " address-family ipv4 unicast",
        *(f"  network {p} route-map BENCHPRE" for p in routes),
        " exit-address-family",
    ]
    nodes.fw_b.configure(lines)


class Recovery:
    """After an unfreeze: when each agent had fw-a Established again and each table all VIPs via fw-a."""

    def __init__(self, nodes: Nodes, watched: list[IPv4Network], since: float) -> None:
        self.nodes = nodes
        self.watched = watched
        self.since = since
        self.established: dict[str, float] = {}
        self.all_back: dict[str, float] = {}
        self.last: dict[str, tuple[str, int]] = {}

    def done(self) -> bool:
        now = time.monotonic() - self.since
        for name, agent in self.nodes.agents.items():
            state = agent.peer("fw-a")["bgp_state"]
            count = count_via(self.nodes.threads[name], self.watched, FW_A)
            self.last[name] = (state, count)
            if state == "Established":
                self.established.setdefault(name, now)
            if count == len(self.watched):
                self.all_back.setdefault(name, now)
        return len(self.all_back) == len(self.nodes.agents)

    def figures(self) -> dict[str, float]:
        out = {f"{n}_established_s": round(t, 2) for n, t in self.established.items()}
        out.update({f"{n}_all_back_s": round(t, 2) for n, t in self.all_back.items()})
        return out

    def __str__(self) -> str:
        return f"last (fw-a state, VIPs via fw-a) {self.last}, {self.figures()}"


def part_flap(nodes: Nodes, args: argparse.Namespace) -> dict[str, Any]:
    routes = prefixes(FLAP_BASE, args.vips)
    watched = [IPv4Network(p) for p in routes] + [IPv4Network(VIP)]
    total = len(watched)
    all_via = {"node-a": total, "node-b": total}
    started = time.monotonic()
    advertise_many(nodes, routes)
    wait_until(
        lambda: nodes.count_via(watched, FW_A) == all_via,
        120,
        interval=0.2,
        what=f"{total} VIPs via fw-a on both nodes",
    )
    print(
        f"  flap: {total} VIPs via fw-a on both nodes {time.monotonic() - started:.1f} s after advertising",
        flush=True,
    )
    time.sleep(3)  # the initial session status writes are done
    fw_a = nodes.setup.lab.hosts["fw-a"]
    interfaces = nodes.fw_a_interfaces()
    before = scrape_all(nodes.agents)
    cycles = []
    for flap in range(args.flaps):
        frozen = time.monotonic()
        fw_a.freeze(interfaces)
        try:
            wait_until(
                lambda: nodes.count_via(watched, FW_B) == all_via,
                20,
                interval=0.02,
                what="every VIP via fw-b",
            )
        finally:
            moved = time.monotonic() - frozen
            fw_a.unfreeze(interfaces)
        recovery = Recovery(nodes, watched, frozen)
        wait_until(
            recovery.done, args.back_timeout, interval=0.1, what=f"every VIP back via fw-a: {recovery}"
        )
        back = time.monotonic() - frozen
        nodes.wait_up(60)
        cycles.append({"all_moved_s": round(moved, 3), "all_back_s": round(back, 2), **recovery.figures()})
        print(
            f"  flap #{flap}: all {total} moved to fw-b after {moved:.3f} s, back after {back:.1f} s",
            flush=True,
        )
    time.sleep(args.tail)  # deferred summary passes land inside the window
    after = scrape_all(nodes.agents)
    reports = {n: api_report(before[n], after[n]) for n in nodes.agents}
    session_objects = nodes.setup.cluster.items("routeserversessions")
    for name, report in reports.items():
        seconds = report["seconds"]
        # Each agent writes its own node's session objects only.
        sessions = max(1, sum(1 for o in session_objects if o["spec"].get("node") == name))
        report["session_objects"] = sessions
        report["session_writes_per_object_per_s"] = round(
            sum(v for k, v in report["status_writes"].items() if k.startswith("session_"))
            / sessions
            / seconds,
            3,
        )
        report["summary_writes_per_object_per_s"] = {
            k: round(v / seconds / (len(SPEC.peers) if k == "summary_RouteServerPeer" else 1), 3)
            for k, v in report["status_writes"].items()
            if k.startswith("summary_")
        }
        report["requests_per_flap"] = round(sum(report["requests"].values()) / args.flaps, 1)
    return {"vips": total, "flaps": args.flaps, "tail_s": args.tail, "cycles": cycles, "agents": reports}


# -- part 4: churn -------------------------------------------------------------------------------------


def part_churn(nodes: Nodes, args: argparse.Namespace) -> dict[str, Any]:
    fw_a = nodes.fw_a
    batch = prefixes(CHURN_BASE, args.churn_batch)
    block = (
        "protocol static churn { disabled; ipv4; " + " ".join(f"route {p} blackhole;" for p in batch) + " }\n"
    )
    fw_a.conf.write_text(fw_a.render() + block)
    control = BirdControl(fw_a.ctl)
    try:
        reply = " ".join(control.command("configure"))
        assert "Reconfigured" in reply or "in progress" in reply, reply
        toggles_per_s = args.churn_rate / args.churn_batch
        period = 1.0 / toggles_per_s
        before = scrape_all(nodes.agents)
        started = time.monotonic()
        toggles = 0
        enabled = False
        while time.monotonic() - started < args.churn_seconds:
            control.command("disable churn" if enabled else "enable churn")
            enabled = not enabled
            toggles += 1
            next_at = started + toggles * period
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - started
        if enabled:
            control.command("disable churn")
        time.sleep(args.tail)
        after = scrape_all(nodes.agents)
        reports = {n: api_report(before[n], after[n]) for n in nodes.agents}
        peers = {n: a.peer("fw-a") for n, a in nodes.agents.items()}
    finally:
        control.close()
    fw_a.reconfigure()  # drop the churn protocol
    achieved = toggles * args.churn_batch / elapsed
    print(
        f"  churn: {toggles} toggles of {args.churn_batch} prefixes in {elapsed:.1f} s"
        f" = {achieved:.0f} updates/s",
        flush=True,
    )
    return {
        "batch": args.churn_batch,
        "toggles": toggles,
        "seconds": round(elapsed, 2),
        "tail_s": args.tail,
        "updates_per_s": round(achieved, 1),
        "agents": reports,
        "fw_a_established_count": {n: p["established_count"] for n, p in peers.items()},
    }


# -- part 5: burst of object changes -------------------------------------------------------------------


def ghost_documents(count: int) -> str:
    docs = [
        "apiVersion: routeserver.dev/v1alpha1\nkind: RouteServer\nmetadata:\n  name: ghost\nspec:\n"
        "  asn: 64600\n  nodeSelector:\n    matchLabels:\n      bench: nobody\n"
    ]
    for i in range(count):
        address = IPv4Address(int(IPv4Address("10.50.0.0")) + i)
        docs.append(
            f"apiVersion: routeserver.dev/v1alpha1\nkind: RouteServerPeer\nmetadata:\n  name: ghost-{i}\n"
            f"  labels:\n    bench: burst\nspec:\n  routeServerRef:\n    name: ghost\n"
            f"  peerAddress: {address}\n  peerASN: {65200 + i % 100}\n"
        )
    return "---\n".join(docs)


def liveness(nodes: Nodes) -> dict[str, Any]:
    agents = {
        n: {
            p["name"]: {
                "established_count": p["established_count"],
                "bfd_down_count": (p.get("bfd") or {}).get("down_count"),
                "bfd_state": (p.get("bfd") or {}).get("state"),
                "bfd_tx_interval_ms": (p.get("bfd") or {}).get("tx_interval_ms"),
            }
            for p in a.peers().values()
        }
        for n, a in nodes.agents.items()
    }
    counters = nodes.fw_b.vtysh_json("show bfd peers counters json") or []
    frr = {c["peer"]: c.get("session-down", c.get("session-down-event")) for c in counters}
    bird = [
        line.strip()
        for line in nodes.fw_a.birdc("show protocols").stdout.splitlines()
        if line.startswith(("peer_", "bfd1"))
    ]
    return {"agents": agents, "frr_bfd_down_events": frr, "bird_protocols": bird}


def part_burst(nodes: Nodes, cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    nodes.wait_up(60)
    time.sleep(SETTLE)
    manifest = Path(tempfile.mkstemp(prefix="ghost-", suffix=".yaml")[1])
    manifest.write_text(ghost_documents(args.burst))
    kubectl = [cluster.api.kubectl_bin, f"--kubeconfig={cluster.api.kubeconfig}"]
    sources = {"node-a": "10.0.1.1", "node-b": "10.0.1.2"}
    # The same figures without the burst first: what the quiet agents and this machine do anyway.
    quiet_before = scrape_all(nodes.agents)
    quiet = BfdGaps(nodes.setup.lab.hosts["fw-b"], sources)
    time.sleep(args.baseline)
    quiet_gaps = quiet.close()
    quiet_after = scrape_all(nodes.agents)
    before_live = liveness(nodes)
    before = scrape_all(nodes.agents)
    gaps = BfdGaps(nodes.setup.lab.hosts["fw-b"], sources)
    try:
        started = time.monotonic()
        subprocess.run(
            [*kubectl, "create", "-f", str(manifest)], check=True, capture_output=True, timeout=600
        )
        created = time.monotonic() - started
        time.sleep(args.tail)
        middle = scrape_all(nodes.agents)
        started_delete = time.monotonic()
        subprocess.run(
            [*kubectl, "delete", "routeserverpeers", "-l", "bench=burst", "--wait=false"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(
            [*kubectl, "delete", "routeserver", "ghost", "--wait=false"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deleted = time.monotonic() - started_delete
        time.sleep(args.tail)
    finally:
        packet_gaps = gaps.close()
        manifest.unlink(missing_ok=True)
    after = scrape_all(nodes.agents)
    after_live = liveness(nodes)
    false_downs = {
        n: sum(
            (after_live["agents"][n][p]["bfd_down_count"] or 0)
            - (before_live["agents"][n][p]["bfd_down_count"] or 0)
            + after_live["agents"][n][p]["established_count"]
            - before_live["agents"][n][p]["established_count"]
            for p in after_live["agents"][n]
        )
        for n in nodes.agents
    }
    frr_downs = {
        p: (after_live["frr_bfd_down_events"].get(p) or 0) - (before_live["frr_bfd_down_events"].get(p) or 0)
        for p in after_live["frr_bfd_down_events"]
    }
    result = {
        "objects": args.burst,
        "create_s": round(created, 2),
        "delete_s": round(deleted, 2),
        "tail_s": args.tail,
        "agent_false_downs": false_downs,
        "frr_bfd_down_events": frr_downs,
        "bird_protocols_unchanged": before_live["bird_protocols"] == after_live["bird_protocols"],
        "bird_protocols": after_live["bird_protocols"],
        "liveness_before": before_live,
        "liveness_after": after_live,
        "bfd_packet_gaps_at_fw_b": packet_gaps,
        "baseline_s": args.baseline,
        "baseline_bfd_packet_gaps_at_fw_b": quiet_gaps,
        "agents": {
            n: {
                "create": api_report(before[n], middle[n]),
                "delete": api_report(middle[n], after[n]),
                "lag_max_before_s": before[n].value("routeserver_event_loop_lag_max_seconds"),
                "lag_max_after_s": after[n].value("routeserver_event_loop_lag_max_seconds"),
                "lag_histogram": lag_histogram(before[n], after[n]),
                "lag_samples_over_50ms": lag_samples_over(before[n], after[n], "0.05"),
                "lag_samples_over_10ms": lag_samples_over(before[n], after[n], "0.01"),
                "create_lag_histogram": lag_histogram(before[n], middle[n]),
                "delete_lag_histogram": lag_histogram(middle[n], after[n]),
                "lag_max_after_create_s": middle[n].value("routeserver_event_loop_lag_max_seconds"),
                "baseline_lag_histogram": lag_histogram(quiet_before[n], quiet_after[n]),
                "baseline_lag_samples_over_50ms": lag_samples_over(quiet_before[n], quiet_after[n], "0.05"),
                "baseline_lag_samples_over_10ms": lag_samples_over(quiet_before[n], quiet_after[n], "0.01"),
                "watch_last_event_age_s": after[n].value("routeserver_watch_last_event_age_seconds"),
            }
            for n in nodes.agents
        },
    }
    print(
        f"  burst: created {args.burst} in {created:.1f} s, deleted in {deleted:.1f} s;"
        f" false downs {false_downs},"
        f" FRR {frr_downs}, BFD gaps {packet_gaps}",
        flush=True,
    )
    return result


# -- output --------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _gaps(gaps: dict[str, float | int | None]) -> str:
    return f"{_fmt(gaps['median_ms'])} / {_fmt(gaps['p99_ms'])} / {_fmt(gaps['max_ms'])}"


def print_summary(results: dict[str, Any]) -> None:
    if "idle" in results:
        r = results["idle"]
        headers = ["peers", "seconds", "CPU %", "CPU s", "RSS MiB", "HWM MiB", "RSS min-max MiB", "API req/s"]
        row = [
            r["peers"],
            r["seconds"],
            r["cpu_percent"],
            r["cpu_seconds"],
            r["rss_mib"],
            r["hwm_mib"],
            "-".join(str(v) for v in r["rss_mib_min_max"]),
            r["api"]["requests_per_s_total"],
        ]
        print("\nidle (CPU % of one core)\n\n" + markdown_table(headers, [row]))
    if "failover" in results:
        s = results["failover"]["summary"]
        rows = [
            [key.removesuffix("_ms"), _fmt(v["median"]), f"{_fmt(v['min'])}..{_fmt(v['max'])}"]
            for key, v in s.items()
        ]
        print(
            "\nfailover (freeze fw-a -> VIP via fw-b)\n\n"
            + markdown_table(["node", "median ms", "min..max ms"], rows)
        )
    if "flap" in results:
        r = results["flap"]
        print("\n" + requests_table(f"{r['vips']} VIPs, {r['flaps']} flaps", r["agents"]))
        for name, report in r["agents"].items():
            print(
                f"  {name}: {report['requests_per_flap']} requests/flap; session status writes/object/s"
                f" {report['session_writes_per_object_per_s']} ({report['session_objects']} objects);"
                f" summary writes/object/s {report['summary_writes_per_object_per_s']}"
            )
        print(f"  cycles: {r['cycles']}")
        print(f"  Kubernetes Events by reason (both agents): {r.get('events_by_reason')}")
    if "churn" in results:
        r = results["churn"]
        title = f"churn {r['updates_per_s']} updates/s for {r['seconds']} s"
        print("\n" + requests_table(title, r["agents"]))
        print(f"  Kubernetes Events by reason (both agents): {r.get('events_by_reason')}")
    if "burst" in results:
        r = results["burst"]
        rows = []
        for name, agent in r["agents"].items():
            rows.append(
                [
                    name,
                    agent["create"]["requests_per_s_total"],
                    agent["delete"]["requests_per_s_total"],
                    _ms(agent["lag_max_before_s"]),
                    _ms(agent["lag_max_after_s"]),
                    f"{agent['lag_samples_over_10ms']} / {agent['lag_samples_over_50ms']}",
                    f"{agent['baseline_lag_samples_over_10ms']} / {agent['baseline_lag_samples_over_50ms']}",
                    r["agent_false_downs"][name],
                    _gaps(r["bfd_packet_gaps_at_fw_b"][name]),
                    _gaps(r["baseline_bfd_packet_gaps_at_fw_b"][name]),
                ]
            )
        headers = [
            "agent",
            "create req/s",
            "delete req/s",
            "lag max before ms",
            "lag max after ms",
            "lag >10/>50 ms burst",
            "quiet",
            "false downs",
            "BFD TX gap med/p99/max ms burst",
            "quiet",
        ]
        print(f"\nburst of {r['objects']} objects\n\n" + markdown_table(headers, rows))
        print(
            f"  FRR BFD down events {r['frr_bfd_down_events']};"
            f" BIRD protocols unchanged {r['bird_protocols_unchanged']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts from {','.join(PARTS)}"
    )
    parser.add_argument("--idle-peers", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5, help="failovers")
    parser.add_argument("--vips", type=int, default=1000, help="VIPs of the flap (besides the one VIP)")
    parser.add_argument("--flaps", type=int, default=3)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the two nodes' agent logs here")
    parser.add_argument("--back-timeout", type=float, default=90.0, help="per flap: every VIP back via fw-a")
    parser.add_argument("--churn-rate", type=float, default=1000.0, help="prefix updates/s")
    parser.add_argument("--churn-batch", type=int, default=100, help="prefixes per toggle")
    parser.add_argument("--churn-seconds", type=float, default=20.0)
    parser.add_argument(
        "--burst", type=int, default=1000, help="RouteServerPeer objects created, then deleted"
    )
    parser.add_argument("--baseline", type=float, default=10.0, help="quiet seconds before the burst")
    parser.add_argument(
        "--tail", type=float, default=5.0, help="seconds added to a window for deferred writes"
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}")
    host_info = machine()
    results: dict[str, Any] = {}
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="opbench-") as workdir, Lab("opbench") as lab:
        cluster = Cluster(Path(workdir))
        try:
            cluster.start()
            print(f"cluster up in {time.monotonic() - begun:.1f} s", flush=True)
            if "idle" in parts:
                results["idle"] = part_idle(lab, cluster, args)
            if set(parts) & {"failover", "flap", "churn", "burst"}:
                nodes = start_nodes(lab, cluster)
                try:
                    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                        ("failover", lambda: part_failover(nodes, args)),
                        ("burst", lambda: part_burst(nodes, cluster, args)),
                        ("flap", lambda: part_flap(nodes, args)),
                        ("churn", lambda: part_churn(nodes, args)),
                    ]
                    first = True
                    for name, step in steps:
                        if name in parts:
                            started = time.monotonic()
                            try:
                                if not first:
                                    restart_agents(nodes)
                                first = False
                                events_before = events_by_reason(cluster)
                                results[name] = step()
                                results[name]["events_by_reason"] = events_delta(
                                    events_before, events_by_reason(cluster)
                                )
                            except Exception as exc:  # the other parts still run; the error is reported
                                traceback.print_exc()
                                results.setdefault("errors", {})[name] = repr(exc)
                                continue
                            results[name]["part_seconds"] = round(time.monotonic() - started, 1)
                finally:
                    stop_nodes(nodes, cluster, args.keep_logs)
        finally:
            cluster.close()
    results["total_seconds"] = round(time.monotonic() - begun, 1)
    print_summary(results)
    path = write_results(
        "operator",
        {
            "machine": host_info,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            **results,
        },
    )
    print(f"\ntotal {results['total_seconds']} s; results: {path.relative_to(REPO_ROOT)}")
    return 1 if "errors" in results else 0


if __name__ == "__main__":
    sys.exit(main())
