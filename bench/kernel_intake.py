"""Kernel intake side by side: from BGP Established until all N prefixes are in the receiver's kernel table.

Lab and feed are bench/bgp_intake.py's: `feed` (BIRD, 198.51.100.1, AS65001) originates N IPv4 /32s
from 10.0.0.0 upwards to `recv` (198.51.100.2, AS65002) over one eBGP session that starts disabled and
is enabled once the receiver is ready, so every receiver gets the same feed from a fresh session.

Receivers in `recv`, one at a time (interleaved per repetition):

    krs      `routeserver run -f` (RouteServer + RouteServerPeer for the feeder + RouteTableAssociation
             for table 100): speaker -> FIB -> NodeTableWriter, the product path end to end
    krs-before  the same from another checkout (`--before DIR`): before/after in one run
    bird     BIRD bgp + kernel protocol (main table, one synchronous netlink request per route)
    frr      FRR bgpd + zebra (main table, zebra's dataplane thread, nexthop groups)

and two references without BGP, run inside `recv` as a helper process (this module with --inside):

    floor    NodeTableWriter.apply() of N new routes (table 101, nexthop group, ~64 KiB batches without
             per-route ACKs): the kernel-write floor of our writer
    naive    a synchronous pyroute2 IPRoute.route("add") loop (one ACKed request per route), 10k only

Measured for the BGP receivers: the start is the feeder's own Established timestamp (BIRD `show
protocols`, millisecond resolution; the same clock for every receiver, no polling error) and, as a
cross-check, the first poll that sees the feeder Established; the end is the first poll that counts
all N routes in the receiver's kernel table by a netlink dump in `recv` (routes of the receiver's
protocol in its table; for krs, table 100). Polls are `--poll` apart (default 0.05 s) and cost CPU
on the same two cores, which is part of every receiver's number equally; the mean poll period is
reported as the end's resolution.

Run as root from the repository root (results also go to bench/results/, gitignored):

    .venv/bin/python -m bench.kernel_intake                            # 10k and 100k, 3 repetitions
    .venv/bin/python -m bench.kernel_intake --full                     # adds 1,000,000
    .venv/bin/python -m bench.kernel_intake --sizes 100000 --receivers krs --repeats 1 --profile /tmp/p
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench`, `controller` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bgp_intake
from bench.bgp_intake import (
    FEEDER_ADDRESS,
    FEEDER_ADDRESS6,
    FEEDER_ASN,
    RECEIVER_ADDRESS,
    RECEIVER_ADDRESS6,
    RECEIVER_ASN,
    SHAPES,
    BirdFeeder,
    BirdReceiver,
    FrrReceiver,
    Receiver,
    bird_state,
    shaped_prefixes,
)
from bench.common import REPO_ROOT, machine, markdown_table, median, write_results
from controller.writers import rtnl
from tests.support.netns import Host, Lab, LabError
from tests.support.route_server import Allow, NetnsThread, PeerSpec, RouteServerProcess, ServerSpec

RECEIVERS = ("krs", "krs-before", "bird", "frr")
_RUNS = itertools.count(1)
REFERENCES = ("floor", "naive")
KRS_TABLE = 100
KRS_LOG_LEVEL = "WARNING"  # --krs-log-level
SHAPE = "slash32"  # --shape: the feed's prefix lengths (bench/bgp_intake.py shaped_prefixes)
BEFORE: Path | None = None  # --before: the checkout krs-before runs
FLOOR_TABLE = 101
NAIVE_TABLE = 102
NAIVE_SIZE = 10_000
PROTO_BIRD = 12
PROTO_BGP = 186  # FRR's zebra
PROTO_KRS = 245  # controller/writers/netlink.py DEFAULT_PROTOCOL


def count_routes(table: int, protocol: int | None) -> int:
    """Routes of the feed's family in one table (of one protocol) by a netlink dump; call it on a
    NetnsThread."""
    channel = rtnl.NetlinkChannel()
    family = socket.AF_INET6 if SHAPE == "ipv6" else socket.AF_INET
    try:
        count = 0
        for payload in channel.dump(rtnl.RTM_GETROUTE, family, table):
            if protocol is None or payload[5] == protocol:  # rtmsg.rtm_protocol
                count += 1
        return count
    except FileNotFoundError:
        return 0  # the table does not exist yet
    finally:
        channel.close()


# -- receivers -----------------------------------------------------------------------------------------


class KrsReceiver(Receiver):
    """`routeserver run` with the feeder as its one peer and a node table association."""

    name = "krs"
    installs = f"table {KRS_TABLE} (routeserver run: speaker -> FIB -> NodeTableWriter)"
    kernel = True

    def __init__(
        self,
        host: Host,
        count: int,
        profile_to: Path | None = None,
        traced_to: Path | None = None,
        checkout: Path | None = None,
    ) -> None:
        super().__init__(host)
        peer = PeerSpec(
            "feeder",
            FEEDER_ADDRESS,
            FEEDER_ASN,
            liveness="BGPKeepalive",
            hold_time=90,
            passive=True,
            allowed=(Allow("10.0.0.0/8", 8, 32), Allow("2001:db8::/32", 32, 128)),
            max_prefixes=max(2 * count, 1),
        )
        spec = ServerSpec(
            (peer,),
            name="intake",
            asn=RECEIVER_ASN,
            allowed=None,
            table=KRS_TABLE,
            router_id=RECEIVER_ADDRESS,
        )
        extra: list[str] = []
        self.warnings: list[str] = []
        self.profile_to = profile_to
        self.process = RouteServerProcess(
            host,
            spec,
            log_level=KRS_LOG_LEVEL,
            name=f"krs-intake-{next(_RUNS)}",  # a log file per run: its warnings are this run's
            extra_args=extra,
            checkout=checkout or REPO_ROOT,
        )
        if profile_to is not None:
            argv = self.process.argv

            def profiled() -> list[str]:
                full = argv()
                return [full[0], "-m", "cProfile", "-o", str(profile_to), *full[1:]]

            self.process.argv = profiled  # type: ignore[method-assign]
        self.traced_to = traced_to
        if traced_to is not None:
            plain = self.process.argv

            def traced() -> list[str]:
                full = plain()  # [python, -m, controller.cli, ...]
                return [full[0], "-m", "bench.traced", str(traced_to), "--", *full[3:]]

            self.process.argv = traced  # type: ignore[method-assign]

    def start(self) -> None:
        self.host.run("ip", "route", "flush", "table", str(KRS_TABLE), check=False, timeout=120)
        self.process.start()

    def sample(self) -> Any:
        raise NotImplementedError  # the kernel count is read by the bench itself

    def pids(self) -> list[int]:
        assert self.process.proc is not None
        return [self.process.proc.pid]

    def check(self, count: int) -> dict[str, Any]:
        table = self.process.table()
        peer = self.process.peer("feeder")
        return {
            "routes_installed": table["routes_installed"],
            "in_sync": table["in_sync"],
            "prefixes_accepted": peer["prefixes_accepted"],
        }

    def stop(self) -> None:
        if self.process.proc is not None and self.process.proc.alive():
            self.process.terminate(timeout=300)
        if self.process.proc is not None:
            # What the route server warned about (a resync, lost netlink errors): part of the result.
            lines = self.process.log(tail=200_000).splitlines()
            keep = ("WARNING", "ERROR", "resync", "repair")
            self.warnings = [line for line in lines if any(k in line for k in keep)][-20:]
        self.process.close()
        self.host.run("ip", "route", "flush", "table", str(KRS_TABLE), check=False, timeout=120)


@dataclass(frozen=True)
class Target:
    table: int
    protocol: int


TARGETS = {
    "krs": Target(KRS_TABLE, PROTO_KRS),
    "krs-before": Target(KRS_TABLE, PROTO_KRS),
    "bird": Target(rtnl.RT_TABLE_MAIN, PROTO_BIRD),
    "frr": Target(rtnl.RT_TABLE_MAIN, PROTO_BGP),
}
INSTALLS = {
    "krs": KrsReceiver.installs,
    "krs-before": "the same, from the --before checkout",
    "bird": "main table (kernel protocol, a synchronous netlink request per route)",
    "frr": "main table (zebra dataplane, nexthop groups)",
    "floor": f"table {FLOOR_TABLE} (NodeTableWriter.apply, no BGP)",
    "naive": f"table {NAIVE_TABLE} (pyroute2 route('add') loop, no BGP)",
}


def make_receiver(
    name: str, host: Host, count: int, profile_to: Path | None, traced_to: Path | None = None
) -> Receiver:
    if name == "krs":
        return KrsReceiver(host, count, profile_to, traced_to)
    if name == "krs-before":
        if BEFORE is None:
            raise ValueError("krs-before needs --before DIR (a checkout of the commit to compare with)")
        return KrsReceiver(host, count, checkout=BEFORE)
    if name == "bird":
        return BirdReceiver(host, kernel=True)
    if name == "frr":
        return FrrReceiver(host)
    raise ValueError(name)


# -- one measurement -----------------------------------------------------------------------------------


@dataclass
class Run:
    receiver: str
    prefixes: int
    repetition: int
    kernel_s: float | None = None  # first poll seeing Established -> first poll counting N
    kernel_from_feeder_s: float | None = None  # feeder's Established (ms clock) -> first poll counting N
    poll_period_s: float | None = None
    polls: int = 0
    check: dict[str, Any] = field(default_factory=dict)
    # Memory of the receiver's processes (bytes): resident before the feed, the peak at completion,
    # resident `settle` seconds after completion, and per load/withdraw cycle (resident after each).
    rss_before: int | None = None
    hwm_loaded: int | None = None
    rss_settled: int | None = None
    cycles: list[dict[str, Any]] = field(default_factory=list)
    # Withdraw-all: from the feeder's session going down (or SIGTERM) to 0 routes in the kernel.
    withdraw_s: float | None = None
    error: str | None = None

    @property
    def bytes_per_prefix(self) -> float | None:
        if self.rss_before is None or self.hwm_loaded is None:
            return None
        return (self.hwm_loaded - self.rss_before) / self.prefixes


def _wait_count(
    thread: NetnsThread, target: Target, want: Callable[[int], bool], timeout: float, poll: float
) -> tuple[float | None, int]:
    """Poll the kernel count until `want(count)`: (monotonic time it held, the last count)."""
    deadline = time.monotonic() + timeout
    while True:
        installed = thread.call(count_routes, target.table, target.protocol, timeout=120)
        now = time.monotonic()
        if want(installed):
            return now, installed
        if now > deadline:
            return None, installed
        time.sleep(poll)


def measure(
    name: str,
    receiver: Receiver,
    feeder: BirdFeeder,
    thread: NetnsThread,
    count: int,
    repetition: int,
    poll: float,
    timeout: float,
    options: MeasureOptions,
) -> Run:
    run = Run(name, count, repetition)
    target = TARGETS[name]
    receiver.start()
    try:
        time.sleep(0.3)
        run.rss_before = receiver.memory().rss
        feeder.enable()
        enabled = time.monotonic()
        established: float | None = None
        first = last = enabled
        done_wall = 0.0
        done: float | None = None
        while True:
            feeder.nudge()
            up = bird_state(feeder._ctl().command("show protocols all peer_0")) == "Established"
            installed = thread.call(count_routes, target.table, target.protocol, timeout=120)
            now = time.monotonic()
            run.polls += 1
            if run.polls == 1:
                first = now
            last = now
            if established is None and up:
                established = now
            if installed >= count:
                done, done_wall = now, time.time()
                break
            if now - enabled > timeout:
                run.error = f"timeout after {timeout:g}s: {installed} of {count} in the kernel"
                break
            time.sleep(poll)
        if run.polls > 1:
            run.poll_period_s = (last - first) / (run.polls - 1)
        if established is not None and done is not None:
            run.kernel_s = done - established
        feeder_up = feeder.established_wall()
        if feeder_up is not None and done is not None:
            run.kernel_from_feeder_s = done_wall - feeder_up
        if done is not None:
            run.hwm_loaded = receiver.memory().hwm
            run.check = receiver.check(count)
            _after_load(run, receiver, feeder, thread, target, count, poll, timeout, options)
    finally:
        feeder.disable()
        receiver.stop()
    if isinstance(receiver, KrsReceiver) and receiver.warnings:
        run.check["warnings"] = receiver.warnings
    return run


@dataclass(frozen=True)
class MeasureOptions:
    settle: float = 3.0  # seconds after completion before the settled RSS is read
    withdraw: str = "peer"  # "peer": the feeder's session goes down; "signal": SIGTERM the receiver
    cycles: int = 1  # load/withdraw cycles in one process (the first is the timed intake)
    traced: Path | None = None  # krs under bench.traced: its report is copied here per run


def _traced_report(receiver: KrsReceiver, keep_as: Path, timeout: float) -> bool:
    """Ask the traced route server for a report (SIGUSR2) and keep it as `keep_as`.

    The report of a large table takes seconds to write (bench.traced renames it into place when
    complete), so this waits for the file, bounded by `timeout`."""
    assert receiver.process.proc is not None and receiver.traced_to is not None
    receiver.traced_to.unlink(missing_ok=True)
    receiver.process.proc.signal(signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not receiver.traced_to.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    shutil.copyfile(receiver.traced_to, keep_as)
    return True


def _after_load(
    run: Run,
    receiver: Receiver,
    feeder: BirdFeeder,
    thread: NetnsThread,
    target: Target,
    count: int,
    poll: float,
    timeout: float,
    options: MeasureOptions,
) -> None:
    """Settled memory, the tracemalloc report, further load/withdraw cycles and the withdraw-all time."""
    time.sleep(options.settle)
    run.rss_settled = receiver.memory().rss
    if options.traced is not None and isinstance(receiver, KrsReceiver) and receiver.traced_to is not None:
        loaded = receiver.traced_to.with_name(f"{receiver.traced_to.stem}-loaded.txt")
        if _traced_report(receiver, loaded, 30.0 + count * 100e-6):
            run.check["tracemalloc"] = str(loaded)
    for cycle in range(options.cycles):
        if cycle:
            feeder.enable()
            loaded, installed = _wait_count(thread, target, lambda n: n >= count, timeout, poll)
            if loaded is None:
                run.error = f"cycle {cycle}: {installed} of {count} in the kernel"
                return
            time.sleep(options.settle)
        loaded_rss = receiver.memory().rss
        last = cycle == options.cycles - 1
        if last and options.withdraw == "signal":
            started = time.monotonic()
            for pid in receiver.pids():
                os.kill(pid, signal.SIGTERM)
        else:
            started = time.monotonic()
            feeder.disable()
        gone, left = _wait_count(thread, target, lambda n: n == 0, timeout, poll / 5)
        if gone is None:
            run.error = f"withdraw: {left} of {count} routes still in the kernel"
            return
        if last:
            run.withdraw_s = gone - started
        if last and options.withdraw == "signal":
            return
        time.sleep(options.settle)
        if (
            options.traced is not None
            and isinstance(receiver, KrsReceiver)
            and receiver.traced_to is not None
        ):
            # What is still allocated once everything was withdrawn (a leak, or caches kept alive).
            kept = receiver.traced_to.with_name(f"{receiver.traced_to.stem}-withdrawn-{cycle}.txt")
            if _traced_report(receiver, kept, 30.0 + count * 100e-6):
                run.check[f"tracemalloc_withdrawn_{cycle}"] = str(kept)
        run.cycles.append(
            {"rss_loaded": loaded_rss, "rss_withdrawn": receiver.memory().rss, "withdraw_s": gone - started}
        )


# -- the references, inside recv -------------------------------------------------------------------------


def _prefixes(count: int) -> list[IPv4Network]:
    return [IPv4Network(p) for p in shaped_prefixes(count, SHAPE)]


async def _floor(count: int) -> dict[str, Any]:
    from bgp.types import prefix_key
    from controller.desired import Hops, RouteKey
    from controller.writers.netlink import NodeTableWriter

    gateway = IPv4Address(FEEDER_ADDRESS)
    changes: dict[RouteKey, Hops | None] = {prefix_key(p): (gateway,) for p in _prefixes(count)}
    writer = NodeTableWriter(FLOOR_TABLE, watch=False)
    await writer.start()
    gc.collect()
    started = time.perf_counter()
    report = await writer.apply(changes)
    elapsed = time.perf_counter() - started
    installed = count_routes(FLOOR_TABLE, None)
    await writer.withdraw_all()
    await writer.close()
    return {"seconds": elapsed, "installed": installed, "messages": report.netlink_messages}


def _naive(count: int) -> dict[str, Any]:
    from pyroute2 import IPRoute

    nets = [str(p) for p in _prefixes(count)]
    with IPRoute() as ipr:
        started = time.perf_counter()
        for net in nets:
            ipr.route("add", dst=net, gateway=FEEDER_ADDRESS, table=NAIVE_TABLE, proto=PROTO_KRS)
        elapsed = time.perf_counter() - started
    installed = count_routes(NAIVE_TABLE, None)
    subprocess.run(["ip", "route", "flush", "table", str(NAIVE_TABLE)], check=True, timeout=120)
    return {"seconds": elapsed, "installed": installed}


def inside_main(args: argparse.Namespace) -> int:
    result = asyncio.run(_floor(args.count)) if args.inside == "floor" else _naive(args.count)
    print(json.dumps(result))
    return 0


def reference(host: Host, kind: str, count: int, repetition: int) -> Run:
    run = Run(kind, count, repetition)
    argv = [sys.executable, "-m", "bench.kernel_intake", "--inside", kind, "--count", str(count)]
    argv += ["--shape", SHAPE]
    done = host.run(*argv, check=False, timeout=600)
    if done.returncode != 0:
        run.error = done.stderr.strip()[-500:]
        return run
    data = json.loads(done.stdout.strip().splitlines()[-1])
    run.kernel_s = run.kernel_from_feeder_s = data["seconds"]
    run.check = data
    if data["installed"] != count:
        run.error = f"{data['installed']} of {count} in the kernel"
    return run


# -- summary -------------------------------------------------------------------------------------------


@dataclass
class Row:
    receiver: str
    installs: str
    prefixes: int
    runs: int
    median_s: float | None
    min_s: float | None
    max_s: float | None
    median_poll_timed_s: float | None
    poll_ms: float | None
    vs_bird: float | None = None
    vs_floor: float | None = None
    peak_mib: float | None = None
    bytes_per_prefix: float | None = None
    settled_mib: float | None = None
    withdraw_s: float | None = None
    cycle_rss_mib: list[float] = field(default_factory=list)  # resident after each withdraw (last run)


ORDER = (*RECEIVERS, *REFERENCES)


def summarise(runs: Sequence[Run]) -> list[Row]:
    rows = []
    for count, name in sorted(
        {(r.prefixes, r.receiver) for r in runs}, key=lambda k: (k[0], ORDER.index(k[1]))
    ):
        good = [r for r in runs if (r.prefixes, r.receiver) == (count, name) and r.error is None]
        times = [r.kernel_from_feeder_s for r in good if r.kernel_from_feeder_s is not None]
        polled = [r.kernel_s for r in good if r.kernel_s is not None]
        polls = [r.poll_period_s for r in good if r.poll_period_s is not None]
        poll = median(polls)
        rows.append(
            Row(
                receiver=name,
                installs=INSTALLS[name],
                prefixes=count,
                runs=len(times),
                median_s=median(times),
                min_s=min(times) if times else None,
                max_s=max(times) if times else None,
                median_poll_timed_s=median(polled),
                poll_ms=poll * 1000 if poll is not None else None,
                peak_mib=_mib(median([r.hwm_loaded for r in good if r.hwm_loaded is not None])),
                bytes_per_prefix=median([b for r in good if (b := r.bytes_per_prefix) is not None]),
                settled_mib=_mib(median([r.rss_settled for r in good if r.rss_settled is not None])),
                withdraw_s=median([r.withdraw_s for r in good if r.withdraw_s is not None]),
                cycle_rss_mib=[_mib(c["rss_withdrawn"]) or 0.0 for c in good[-1].cycles] if good else [],
            )
        )
    for row in rows:
        for attr, ref_name in (("vs_bird", "bird"), ("vs_floor", "floor")):
            ref = next((r for r in rows if r.prefixes == row.prefixes and r.receiver == ref_name), None)
            if ref is not None and ref.median_s and row.median_s is not None:
                setattr(row, attr, row.median_s / ref.median_s)
    return rows


def _mib(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: Sequence[Row]) -> str:
    headers = [
        "receiver",
        "installs into",
        "N",
        "Established -> N in kernel, median s",
        "min-max s",
        "poll-timed s",
        "routes/s",
        "x BIRD",
        "x floor",
        "poll ms",
        "runs",
        "peak RSS MiB",
        "B/prefix",
        "settled MiB",
        "withdraw-all s",
        "RSS after each withdraw MiB",
    ]
    body = [
        [
            r.receiver,
            r.installs,
            f"{r.prefixes:,}",
            _fmt(r.median_s),
            f"{_fmt(r.min_s)}-{_fmt(r.max_s)}",
            _fmt(r.median_poll_timed_s),
            _fmt(r.prefixes / r.median_s if r.median_s else None, ",.0f"),
            _fmt(r.vs_bird, ".2f"),
            _fmt(r.vs_floor, ".2f"),
            _fmt(r.poll_ms, ".1f"),
            r.runs,
            _fmt(r.peak_mib, ".0f"),
            _fmt(r.bytes_per_prefix, ",.0f"),
            _fmt(r.settled_mib, ".0f"),
            _fmt(r.withdraw_s),
            " ".join(f"{m:.0f}" for m in r.cycle_rss_mib) or "-",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


# -- main ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated prefix counts")
    parser.add_argument("--full", action="store_true", help="add 1,000,000 prefixes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--receivers",
        default="krs,bird,frr,floor,naive",
        help=f"from {','.join(ORDER)} (naive runs at 10k only; krs-before needs --before)",
    )
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between kernel counts")
    parser.add_argument("--timeout", type=float, default=0.0, help="per run; default 60 s + 100 us/prefix")
    parser.add_argument(
        "--profile", type=Path, help="run our route server under cProfile, stats to this file"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the settled RSS")
    parser.add_argument(
        "--withdraw",
        choices=("peer", "signal"),
        default="peer",
        help="withdraw-all by the feeder's session going down (peer) or SIGTERM to the receiver (signal)",
    )
    parser.add_argument("--cycles", type=int, default=1, help="load/withdraw cycles per run (leak check)")
    parser.add_argument(
        "--tracemalloc", type=Path, help="run our route server under tracemalloc, reports into this directory"
    )
    parser.add_argument("--krs-log-level", default="WARNING", help="our route server's log level")
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="slash32",
        help="the feed: /32s from 10.0.0.0 (slash32), the full table's length mix (dfz), or IPv6 (ipv6)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout of this repository (git worktree add DIR COMMIT): receiver krs-before runs it",
    )
    parser.add_argument("--inside", choices=REFERENCES, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global KRS_LOG_LEVEL, BEFORE, SHAPE
    SHAPE = args.shape
    if SHAPE == "ipv6":
        bgp_intake.FEEDER_FAMILIES = ("ipv4", "ipv6")
    if args.inside:
        return inside_main(args)

    KRS_LOG_LEVEL = args.krs_log_level
    BEFORE = args.before.resolve() if args.before else None
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    if args.full and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    names = [n for n in args.receivers.split(",") if n]
    if set(names) - set(ORDER):
        parser.error(f"unknown receivers {sorted(set(names) - set(ORDER))}")
    names.sort(key=ORDER.index)
    if SHAPE == "ipv6" and set(names) & set(REFERENCES):
        parser.error(
            "the floor and naive references write IPv4 routes only (leave them out with --shape ipv6)"
        )
    host_info = machine()
    runs: list[Run] = []
    with Lab("kintake") as lab:
        feed, recv = lab.host("feed"), lab.host("recv")
        lab.link(
            feed,
            recv,
            [f"{FEEDER_ADDRESS}/30", f"{FEEDER_ADDRESS6}/64"],
            [f"{RECEIVER_ADDRESS}/30", f"{RECEIVER_ADDRESS6}/64"],
        )
        thread = NetnsThread(recv.netns)
        try:
            for count in sizes:
                feeder = BirdFeeder(feed, count, SHAPE) if any(n in RECEIVERS for n in names) else None
                if feeder is not None:
                    feeder.start()
                try:
                    timeout = args.timeout or 60 + count * 100e-6
                    for repetition in range(args.repeats):
                        for name in names:
                            if name == "naive" and count != NAIVE_SIZE:
                                continue
                            if name in REFERENCES:
                                run = reference(recv, name, count, repetition)
                            else:
                                assert feeder is not None
                                traced = None
                                if args.tracemalloc is not None and name == "krs":
                                    args.tracemalloc.mkdir(parents=True, exist_ok=True)
                                    traced = args.tracemalloc / f"krs-{count}-{repetition}.txt"
                                receiver = make_receiver(name, recv, count, args.profile, traced)
                                options = MeasureOptions(
                                    args.settle, args.withdraw, max(1, args.cycles), traced
                                )
                                try:
                                    run = measure(
                                        name,
                                        receiver,
                                        feeder,
                                        thread,
                                        count,
                                        repetition,
                                        args.poll,
                                        timeout,
                                        options,
                                    )
                                except (LabError, AssertionError, OSError, ValueError, KeyError) as exc:
                                    run = Run(name, count, repetition, error=f"{type(exc).__name__}: {exc}")
                            runs.append(run)
                            print(
                                f"  {name:6} N={count:>9,} #{repetition}: {_fmt(run.kernel_from_feeder_s)} s"
                                f" (poll-timed {_fmt(run.kernel_s)} s) {run.check}"
                                + (f" ERROR {run.error}" if run.error else ""),
                                flush=True,
                            )
                finally:
                    if feeder is not None:
                        feeder.stop()
        finally:
            thread.close()

    rows = summarise(runs)
    print()
    print(table(rows))
    path = write_results(
        "kernel_intake",
        {
            "machine": host_info,
            "arguments": vars(args)
            | {key: str(value) for key, value in vars(args).items() if isinstance(value, Path)},
            "runs": [asdict(r) for r in runs],
            "summary": [asdict(r) for r in rows],
        },
    )
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    if args.profile is not None and args.profile.exists():
        stats = pstats.Stats(str(args.profile))
        stats.strip_dirs()
        for key in ("tottime", "cumulative"):
            print(f"\n== cProfile of the route server, by {key} ==")
            stats.sort_stats(key).print_stats(30)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
