"""Node route-table writer: bulk install and failover, inside a lab namespace.

Lab (tests/support/netns.py): `node` with two veth links to `peer`; next hop A = 10.0.1.2 (eth0),
B = 10.0.2.2 (eth1). The benchmark re-runs itself inside `node` (`ip netns exec`, `--inside`), so
every socket it opens, the writer's and the monitor's, belongs to that namespace only.

Measured (prefixes are IPv4 /32s from 10.64.0.0 upwards, table 100, route keys and next-hop
tuples built before the clock starts):

- install: `NodeTableWriter.apply()` of N new routes via A, with nexthop groups (every route points
  at one group) and with explicit gateways; routes/s = N / wall time of apply(). The kernel's route
  count is checked afterwards. `withdraw_all()` (a table dump, then batched deletes) is timed too.
- naive: a synchronous pyroute2 `IPRoute.route("add", ...)` loop (one ACKed request per route),
  the baseline DESIGN.md §8 quotes.
- watcher: the same install with the notification watcher on (the default in production): whether
  our own notifications overflow its socket and force a full repair pass, and what that costs.
- failover: 1 and 1,000 VIPs move A -> B (then back, alternating) with nexthop groups (one group
  rewrite) and with batched route replaces. Per move: wall time of apply(), netlink messages sent,
  and what a netlink monitor in the namespace (subscribed to IPv4 route and nexthop notifications,
  one thread, perf_counter_ns at each recv) sees: notification count, first and last arrival after
  apply() started, and the spread first-to-last. "All moved at": when forwarding had moved for
  every VIP, as the kernel announced it: with groups the group rewrite (the last RTM_NEWNEXTHOP),
  with replaces the last RTM_NEWROUTE. With groups, the RTM_NEWROUTE notifications that follow the
  rewrite are the kernel's compat-mode echoes (net.ipv4.nexthop_compat_mode=1), sent after it.

Run as root from the repository root (results also go to bench/results/, gitignored):

    .venv/bin/python -m bench.node_writer                          # 10k, 100k, 1M; naive 10k
    .venv/bin/python -m bench.node_writer --sizes 10000,100000 --repeats 5 --failover-repeats 11
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench`, `controller` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, machine, markdown_table, median, write_results
from bgp.types import key_str, prefix_key
from controller.desired import Hops, RouteKey
from controller.writers import rtnl
from controller.writers.base import WriteReport
from controller.writers.netlink import DEFAULT_PROTOCOL, NodeTableWriter

TABLE = 100
NAIVE_TABLE = 101
A = ip_address("10.0.1.2")
B = ip_address("10.0.2.2")
FIRST = int(IPv4Address("10.64.0.0"))
KIND = {
    rtnl.RTM_NEWROUTE: "NEWROUTE",
    rtnl.RTM_DELROUTE: "DELROUTE",
    rtnl.RTM_NEWNEXTHOP: "NEWNEXTHOP",
    rtnl.RTM_DELNEXTHOP: "DELNEXTHOP",
}


def prefixes(count: int) -> list[RouteKey]:
    return [prefix_key(IPv4Network((FIRST + i, 32))) for i in range(count)]


def kernel_count(table: int) -> int:
    channel = rtnl.NetlinkChannel()
    try:
        return sum(1 for _ in channel.dump(rtnl.RTM_GETROUTE, socket.AF_INET, table))
    finally:
        channel.close()


class Monitor:
    """A thread reading route and nexthop notifications with the time each datagram arrived."""

    def __init__(self) -> None:
        self._sock = rtnl.open_monitor((rtnl.RTNLGRP_IPV4_ROUTE, rtnl.RTNLGRP_NEXTHOP), rcvbuf=64 << 20)
        self._sock.setblocking(True)
        self._sock.settimeout(0.02)
        self.events: list[tuple[int, int]] = []
        self.overflows = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                self.overflows += 1
                continue
            now = time.perf_counter_ns()
            self.events.extend((now, kind) for kind, _f, _s, _p, _payload in rtnl.iter_messages(data))

    def stop(self) -> list[tuple[int, int]]:
        self._stop = True
        self._thread.join()
        self._sock.close()
        return self.events


# -- inside the namespace ---------------------------------------------------------------------------


async def bench_install(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        nets = prefixes(size)
        for objects in (True, False):
            for rep in range(repeats if size < 1_000_000 else 1):
                changes: dict[RouteKey, Hops | None] = dict.fromkeys(nets, (A,))
                writer = NodeTableWriter(TABLE, use_nexthop_objects=objects, watch=False)
                await writer.start()
                gc.collect()
                started = time.perf_counter()
                report = await writer.apply(changes)
                install_s = time.perf_counter() - started
                in_kernel = kernel_count(TABLE)
                started = time.perf_counter()
                withdrawn = await writer.withdraw_all()
                withdraw_s = time.perf_counter() - started
                await writer.close()
                assert report.installed == size and in_kernel == size, (report, in_kernel)
                assert withdrawn.removed == size and kernel_count(TABLE) == 0
                rows.append(
                    {
                        "routes": size,
                        "mode": "groups" if objects else "explicit",
                        "rep": rep,
                        "install_s": install_s,
                        "routes_per_s": size / install_s,
                        "messages": report.netlink_messages,
                        "withdraw_s": withdraw_s,
                    }
                )
                print(f"  install {size} {rows[-1]['mode']}: {install_s:.3f} s", file=sys.stderr)
                del changes
    return rows


def bench_naive(count: int) -> dict[str, Any]:
    from pyroute2 import IPRoute

    nets = [key_str(p) for p in prefixes(count)]
    with IPRoute() as ipr:
        started = time.perf_counter()
        for net in nets:
            ipr.route("add", dst=net, gateway=str(A), table=NAIVE_TABLE, proto=DEFAULT_PROTOCOL)
        elapsed = time.perf_counter() - started
    assert kernel_count(NAIVE_TABLE) == count
    subprocess.run(["ip", "route", "flush", "table", str(NAIVE_TABLE)], check=True)
    return {"routes": count, "seconds": elapsed, "routes_per_s": count / elapsed}


async def bench_watcher(size: int) -> dict[str, Any]:
    """Install with the watcher on: does our own notification flood force a repair pass?"""
    reports: list[tuple[float, WriteReport]] = []
    writer = NodeTableWriter(
        TABLE, watch=True, resync_interval=None, on_report=lambda r: reports.append((time.perf_counter(), r))
    )
    await writer.start()
    nets = prefixes(size)
    changes: dict[RouteKey, Hops | None] = dict.fromkeys(nets, (A,))
    started = time.perf_counter()
    await writer.apply(changes)
    install_s = time.perf_counter() - started
    await asyncio.sleep(3.0)
    await writer.resync({})  # the writer now owns the whole FIB: an empty one
    await writer.close()
    return {
        "routes": size,
        "install_s": install_s,
        "repair_passes": len(reports),
        "repair_done_s": (reports[-1][0] - started) if reports else None,
        "repair_messages": sum(r.netlink_messages for _t, r in reports),
    }


async def bench_failover(counts: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        nets = prefixes(count)
        for objects in (True, False):
            writer = NodeTableWriter(TABLE, use_nexthop_objects=objects, watch=False)
            await writer.start()
            await writer.apply(dict.fromkeys(nets, (A,)))
            for rep in range(repeats):
                target = B if rep % 2 == 0 else A
                changes: dict[RouteKey, Hops | None] = dict.fromkeys(nets, (target,))
                monitor = Monitor()
                await asyncio.sleep(0.05)
                started = time.perf_counter_ns()
                report = await writer.apply(changes)
                applied = time.perf_counter_ns()
                await asyncio.sleep(0.3)
                events = monitor.stop()
                assert report.installed == count and not report.rejected, report
                stamps = [t for t, _k in events]
                # When forwarding had moved for every VIP: the group rewrite's notification, or the
                # last route replace's.
                moved = [t for t, k in events if k == (rtnl.RTM_NEWNEXTHOP if objects else rtnl.RTM_NEWROUTE)]
                rows.append(
                    {
                        "vips": count,
                        "mode": "groups" if objects else "replaces",
                        "rep": rep,
                        "apply_ms": (applied - started) / 1e6,
                        "messages": report.netlink_messages,
                        "notifications": dict(Counter(KIND.get(k, str(k)) for _t, k in events)),
                        "first_ms": (min(stamps) - started) / 1e6 if stamps else None,
                        "last_ms": (max(stamps) - started) / 1e6 if stamps else None,
                        "spread_ms": (max(stamps) - min(stamps)) / 1e6 if stamps else None,
                        "moved_ms": (max(moved) - started) / 1e6 if moved else None,
                        "monitor_overflows": monitor.overflows,
                    }
                )
            await writer.withdraw_all()
            await writer.close()
    return rows


async def inside(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"failover": [], "install": [], "naive": None, "watcher": []}
    if "failover" in args.parts:
        print("failover ...", file=sys.stderr)
        out["failover"] = await bench_failover([1, 1000], args.failover_repeats)
    if "install" in args.parts:
        print("install ...", file=sys.stderr)
        out["install"] = await bench_install(args.sizes, args.repeats)
    if "naive" in args.parts:
        print("naive ...", file=sys.stderr)
        out["naive"] = await asyncio.to_thread(bench_naive, args.naive)  # pyroute2 runs its own loop
    if "watcher" in args.parts:
        print("watcher ...", file=sys.stderr)
        out["watcher"] = [await bench_watcher(size) for size in args.sizes if size <= 100_000]
    return out


# -- outside: the lab and the report ------------------------------------------------------------------


def spread(values: list[float]) -> str:
    mid = median(values)
    if mid is None:
        return "-"
    return f"{mid:.2f} ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else f"{mid:.2f}"


def report(data: dict[str, Any]) -> str:
    parts = ["### Bulk install (apply of N new routes, one batch)", ""]
    rows = []
    keys = sorted({(r["routes"], r["mode"]) for r in data["install"]}, key=lambda k: (k[0], k[1]))
    for routes, mode in keys:
        runs = [r for r in data["install"] if (r["routes"], r["mode"]) == (routes, mode)]
        rate = median([r["routes_per_s"] for r in runs]) or 0.0
        rows.append(
            [
                f"{routes:,}",
                "nexthop group" if mode == "groups" else "explicit gateway",
                spread([r["install_s"] for r in runs]),
                f"{rate:,.0f}",
                f"{runs[0]['messages']:,}",
                spread([r["withdraw_s"] for r in runs]),
                len(runs),
            ]
        )
    naive = data["naive"]
    if naive is not None:
        rows.append(
            [
                f"{naive['routes']:,}",
                "pyroute2 route('add') loop",
                f"{naive['seconds']:.2f}",
                f"{naive['routes_per_s']:,.0f}",
                f"{naive['routes']:,}",
                "-",
                1,
            ]
        )
    headers = ["routes", "how", "apply s", "routes/s", "netlink msgs", "withdraw_all s", "runs"]
    parts += [markdown_table(headers, rows), ""]

    parts += ["### Install with the notification watcher on", ""]
    rows = [
        [
            f"{w['routes']:,}",
            f"{w['install_s']:.2f}",
            w["repair_passes"],
            "-" if w["repair_done_s"] is None else f"{w['repair_done_s']:.2f}",
            w["repair_messages"],
        ]
        for w in data["watcher"]
    ]
    headers = ["routes", "apply s", "repair passes after", "repairs done at s", "repair msgs"]
    parts += [markdown_table(headers, rows), ""]

    parts += ["### Failover A -> B (median, min-max, over the repetitions)", ""]
    rows = []
    for vips, mode in sorted({(r["vips"], r["mode"]) for r in data["failover"]}):
        runs = [r for r in data["failover"] if (r["vips"], r["mode"]) == (vips, mode)]
        counts: Counter[str] = Counter()
        for r in runs:
            counts.update(r["notifications"])
        notes = ", ".join(f"{k} {v / len(runs):g}" for k, v in sorted(counts.items()))
        rows.append(
            [
                f"{vips:,}",
                "nexthop group rewrite" if mode == "groups" else "batched route replaces",
                spread([r["apply_ms"] for r in runs]),
                runs[0]["messages"],
                notes,
                spread([r["first_ms"] for r in runs if r["first_ms"] is not None]),
                spread([r["last_ms"] for r in runs if r["last_ms"] is not None]),
                spread([r["spread_ms"] for r in runs if r["spread_ms"] is not None]),
                spread([r["moved_ms"] for r in runs if r["moved_ms"] is not None]),
            ]
        )
    headers = [
        "VIPs",
        "how",
        "apply() ms",
        "netlink msgs",
        "notifications seen (per move)",
        "first ms",
        "last ms",
        "first-to-last ms",
        "all moved at ms",
    ]
    parts += [markdown_table(headers, rows)]
    return "\n".join(parts)


def outside(args: argparse.Namespace) -> None:
    from tests.support.netns import Lab

    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark needs network namespaces")
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with Lab("nodewriter") as lab:
        node = lab.host("node")
        peer = lab.host("peer")
        lab.link(node, peer, ["10.0.1.1/24"], ["10.0.1.2/24"])
        lab.link(node, peer, ["10.0.2.1/24"], ["10.0.2.2/24"])
        argv = [sys.executable, "-m", "bench.node_writer", "--inside"]
        argv += ["--sizes", ",".join(map(str, args.sizes)), "--repeats", str(args.repeats)]
        argv += ["--failover-repeats", str(args.failover_repeats), "--naive", str(args.naive)]
        argv += ["--parts", ",".join(args.parts)]
        os.chdir(REPO_ROOT)
        proc = node.run(*argv, timeout=3600)
        sys.stderr.write(proc.stderr)
        results.update(json.loads(proc.stdout))
    results["elapsed_s"] = time.monotonic() - started
    print(report(results))
    path = write_results("node_writer", results)
    print(f"\nresults: {path.relative_to(REPO_ROOT)}  ({results['elapsed_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--repeats", type=int, default=3, help="install repetitions (1M runs once)")
    parser.add_argument("--failover-repeats", type=int, default=9)
    parser.add_argument("--naive", type=int, default=10_000, help="routes for the pyroute2 loop")
    parser.add_argument(
        "--parts",
        type=lambda s: s.split(","),
        default=["failover", "install", "naive", "watcher"],
        help="comma-separated subset of failover,install,naive,watcher",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(asyncio.run(inside(args))))
    else:
        outside(args)


if __name__ == "__main__":
    main()
