"""`routeserver demo`: VIP failover between two appliances, measured, in a lab of network namespaces.

What it builds (lab/netlab.py; nothing outside its own namespaces is touched)::

    rs       10.0.0.1    routeserver run -f demo.yaml: the route server, VIP into kernel table 100
    appl-a   10.0.0.11   routeserver appliance: AS 65001, advertises the VIP (the active one)
    appl-b   10.0.0.12   routeserver appliance: AS 65002, the same VIP with its AS path prepended twice
    client   10.0.0.100  sends a UDP probe to the VIP every 10 ms through rs; each appliance answers
                         with its name
    sw                   a Linux bridge joining the four on one L2 segment

Then it freezes appl-a (a `pfifo limit 0` root qdisc: every packet it sends is dropped while its link
stays up, as when a VM or a process hangs) and measures the time from the freeze to the moment the
kernel route of the VIP in rs points at appl-b. That moment is observed by a netlink monitor running
inside rs (lab/demo_tools.py `watch`), stamped with CLOCK_MONOTONIC, which every process on
the machine shares with the demo; the freeze is stamped just before `tc` runs, so the figure
includes the time tc takes. Between the two, the route server's own log lines (BFD down, BGP session
closed, best path moved) and the client's view (who answers, how many probes were lost) make a
timeline. Then appl-a is unfrozen and the failback is timed the same way.

Needs root, iproute2 and the project; everything is removed on exit, on errors, on Ctrl-C and SIGTERM
(lab/netlab.py tears down by PID). Exit codes: 0 success, 1 the failover or failback did not
happen within its bound (or the lab did not come up), 2 not root or missing tools, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import controller
from controller.argtypes import int_in, seconds_in
from controller.status import render
from lab.netlab import Host, Lab, LabError, ManagedProcess, sweep_stale_labs

VIP = "203.0.113.10/32"
VIP_RANGE = "203.0.113.0/24"
TABLE = 100
RS_ASN = 64512
SEGMENT_PREFIX_LEN = 24
ADDRESSES = {"rs": "10.0.0.1", "appl-a": "10.0.0.11", "appl-b": "10.0.0.12", "client": "10.0.0.100"}
APPLIANCE_ASN = {"appl-a": 65001, "appl-b": 65002}
PREPEND = {"appl-a": 0, "appl-b": 2}
HOLD_TIME = 9  # seconds: far longer than BFD detection, so BFD is visibly what moves the route
CONNECT_RETRY = 1
SETUP_TIMEOUT = 60.0
FAILBACK_TIMEOUT = 60.0
SETTLE = 0.5  # seconds of events still shown after the route moved
REORDER = 0.15  # seconds a timeline line waits for earlier events that arrive late
POLL = 0.01
STATUS_INTERVAL = 0.5

ACTIVE, STANDBY = "appl-a", "appl-b"


@dataclass(frozen=True)
class DemoOptions:
    rounds: int = 1
    bfd_interval_ms: int = 100
    bfd_multiplier: int = 3
    timeout: float = 5.0  # seconds: a failover slower than this fails the demo
    frozen_seconds: float = 2.0  # how long appl-a stays frozen (at least until the failover)
    probe_interval_ms: float = 10.0
    verbose: bool = False

    @property
    def detection_ms(self) -> int:
        return self.bfd_interval_ms * self.bfd_multiplier


# -- argument parsing ---------------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `routeserver demo` (controller/cli.py calls this)."""
    parser = commands.add_parser(
        "demo",
        help="VIP failover between two appliances in a lab of network namespaces, measured (root)",
        description="Build a lab of network namespaces (route server, two appliances, a client), freeze "
        "the active appliance and print a timeline with the measured failover and failback. Needs root; "
        "touches nothing outside its own namespaces and removes them on exit.",
    )
    parser.add_argument(
        "--rounds", type=int_in(1, 100, "--rounds"), default=1, help="freeze/unfreeze rounds (default 1)"
    )
    parser.add_argument(
        "--bfd-interval-ms",
        type=int_in(10, 10_000, "--bfd-interval-ms"),
        default=100,
        metavar="MS",
        help="BFD interval on every session (default 100)",
    )
    parser.add_argument(
        "--bfd-multiplier",
        type=int_in(1, 255, "--bfd-multiplier"),
        default=3,
        metavar="N",
        help="BFD detection multiplier (default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_in(0.1, 120, "--timeout"),
        default=5.0,
        metavar="SECONDS",
        help="fail when the VIP has not moved this long after the freeze (default 5)",
    )
    parser.add_argument(
        "--frozen-seconds",
        type=seconds_in(0, 300, "--frozen-seconds"),
        default=2.0,
        metavar="SECONDS",
        help="keep the active appliance frozen this long before the failback (default 2)",
    )
    parser.add_argument(
        "--probe-interval-ms",
        type=seconds_in(1, 1000, "--probe-interval-ms"),
        default=10.0,
        metavar="MS",
        help="the client's probe interval (default 10)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the appliances' own events too")
    parser.set_defaults(handler=main_from_args)
    return parser


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        rounds=args.rounds,
        bfd_interval_ms=args.bfd_interval_ms,
        bfd_multiplier=args.bfd_multiplier,
        timeout=args.timeout,
        frozen_seconds=args.frozen_seconds,
        probe_interval_ms=args.probe_interval_ms,
        verbose=args.verbose,
    )


def preflight() -> str | None:
    """Why the demo cannot run here (a message for a person), or None."""
    if os.geteuid() != 0:
        return (
            "routeserver demo needs root: it builds network namespaces, veth links and a bridge.\n"
            "It changes nothing outside its own namespaces and removes them when it ends.\n"
            "Run it as root, for example:  sudo routeserver demo   (or: sudo make demo)"
        )
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"routeserver demo needs {' and '.join(missing)} from iproute2 (apt-get install iproute2)"
    return None


def main_from_args(args: argparse.Namespace) -> int:
    """The `routeserver demo` entry point."""
    problem = preflight()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    return Demo(options_from_args(args)).run()


# -- the route server's configuration -----------------------------------------------------------------


def route_server_yaml(options: DemoOptions) -> str:
    """RouteServer (active/passive, BFD), one RouteServerPeer per appliance, the table association."""
    documents = [
        f"""\
apiVersion: routeserver.dev/v1alpha1
kind: RouteServer
metadata:
  name: demo
spec:
  asn: {RS_ASN}
  routerID: {ADDRESSES["rs"]}
  routeSelection:
    mode: ActivePassive
  bfdProfile:
    minTxIntervalMilliseconds: {options.bfd_interval_ms}
    minRxIntervalMilliseconds: {options.bfd_interval_ms}
    detectMultiplier: {options.bfd_multiplier}
"""
    ]
    for name in (ACTIVE, STANDBY):
        documents.append(
            f"""\
apiVersion: routeserver.dev/v1alpha1
kind: RouteServerPeer
metadata:
  name: {name}
spec:
  routeServerRef:
    name: demo
  peerAddress: {ADDRESSES[name]}
  peerASN: {APPLIANCE_ASN[name]}
  liveness: BFD
  timers:
    holdTimeSeconds: {HOLD_TIME}
    connectRetryTimeSeconds: {CONNECT_RETRY}
  allowedPrefixes:
    - prefix: {VIP_RANGE}
      le: 32
"""
        )
    documents.append(
        f"""\
apiVersion: routeserver.dev/v1alpha1
kind: RouteTableAssociation
metadata:
  name: demo-table-{TABLE}
spec:
  routeServerRef:
    name: demo
  target:
    node:
      table: {TABLE}
"""
    )
    return "---\n".join(documents)


# -- events and the timeline ----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Event:
    """Something that happened at monotonic time `t`, as a line for a person and as data."""

    t: float
    text: str = field(compare=False)
    kind: str = field(compare=False)  # route | probe | rs | appliance
    data: Mapping[str, Any] = field(compare=False, default_factory=dict)


def log_time(text: str) -> float:
    """Unix time of a controller/logs.py timestamp (`2024-05-01T12:00:00.123Z`)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def name_of(address: str) -> str:
    for name, known in ADDRESSES.items():
        if known == address:
            return name
    return address


def _hops(addresses: Sequence[str]) -> str:
    return ", ".join(f"{a} ({name_of(a)})" for a in addresses) or "nothing"


def _reason(record: Mapping[str, Any]) -> str:
    return str(record.get("reason", "")).replace("_", " ")


def describe(source: str, record: Mapping[str, Any], wall_offset: float) -> Event | None:
    """A timeline Event from one JSON line of a lab process, or None for what is not worth a line.

    `wall_offset` is time.time() - time.monotonic(): log lines carry wall-clock times, helper lines
    monotonic ones.
    """
    kind = record.get("kind")
    if kind == "route":
        via = [str(a) for a in record.get("via", [])]
        text = f"rs kernel: {VIP} via {_hops(via)}" if via else f"rs kernel: no route for {VIP}"
        return Event(float(record["t"]), text, "route", record)
    if kind == "probe":
        text = f"client: answered by {record['from']}"
        if record.get("prev_t") is not None and record.get("prev_from"):
            gap_ms = (float(record["t"]) - float(record["prev_t"])) * 1000
            text += f" ({record.get('lost', 0)} probes lost, {gap_ms:.0f} ms without an answer)"
        return Event(float(record["t"]), text, "probe", record)
    event, stamp = record.get("event"), record.get("time")
    if not isinstance(event, str) or not isinstance(stamp, str):
        return None
    try:
        t = log_time(stamp) - wall_offset
    except ValueError:
        return None
    peer = record.get("peer", "")
    if source == "rs":
        texts = {
            "bgp_session_up": f"rs: BGP session with {peer} Established",
            "bgp_session_down": f"rs: BGP session with {peer} closed ({_reason(record)})",
            "bfd_up": f"rs: BFD session with {peer} Up",
            "bfd_down": f"rs: BFD session with {peer} Down ({_reason(record)})",
            "failover": "rs: best path moved: {old} -> {new}".format(
                old=_hops(record.get("old_nexthops", [])), new=_hops(record.get("new_nexthops", []))
            ),
            "routes_lost": "rs: routes lost their last next hop",
            "speaker_failed": f"rs: the BGP speaker failed: {record.get('error')}",
            "table_write_failed": f"rs: writing table {TABLE} failed: {record.get('error')}",
        }
        line = texts.get(event)
        return None if line is None else Event(t, line, "rs", record)
    texts = {
        "bgp_session_up": "BGP session Established",
        "bgp_session_down": f"BGP session down ({_reason(record)})",
        "bfd_up": "BFD session Up",
        "bfd_down": f"BFD session Down ({_reason(record)})",
        "appliance_failed": f"failed: {record.get('error')}",
    }
    line = texts.get(event)
    return None if line is None else Event(t, f"{source}: {line}", "appliance", record)


class JsonTail:
    """New complete JSON lines of a growing file (a lab process's output); other lines are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


class Timeline:
    """Prints events relative to `t0` in time order, holding each briefly for late, earlier ones."""

    def __init__(self, out: TextIO, t0: float) -> None:
        self.out = out
        self.t0 = t0
        self._pending: list[Event] = []

    def add(self, event: Event) -> None:
        self._pending.append(event)

    def line(self, t: float, text: str) -> str:
        return f"  t+{(t - self.t0) * 1000:8.1f} ms  {text}"

    def flush(self, upto: float | None = None) -> None:
        self._pending.sort()
        while self._pending and (upto is None or self._pending[0].t <= upto):
            event = self._pending.pop(0)
            print(self.line(event.t, event.text), file=self.out, flush=True)


@dataclass
class RoundResult:
    failover_ms: float | None = None
    failback_ms: float | None = None
    bfd_down_ms: float | None = None
    client_gap_ms: float | None = None
    client_lost: int | None = None


def summarize(values: Sequence[float]) -> str:
    """`314.2 ms` for one value, `median 314.2 ms (min 301.0, max 330.5, n=5)` for more."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f} ms"
    return (
        f"median {statistics.median(values):.1f} ms "
        f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
    )


class DemoFailedError(Exception):
    """The demo cannot go on; the message says why, for a person."""


# -- the demo -----------------------------------------------------------------------------------------


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.lab: Lab | None = None
        self.hosts: dict[str, Host] = {}
        self.ifname: dict[str, str] = {}
        self.procs: dict[str, ManagedProcess] = {}
        self.tails: dict[str, JsonTail] = {}
        self.route_via: list[str] = []
        self.responder: str | None = None
        self.wall_offset = time.time() - time.monotonic()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- run ------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Build, demonstrate, clean up; the exit code (see the module docstring)."""
        previous_hup = signal.signal(signal.SIGHUP, _exit_on_signal)  # a closed terminal still cleans up
        lab: Lab | None = None
        try:
            self._header()
            sweep_stale_labs()  # namespaces of an earlier demo or test run that was killed (dead PIDs only)
            os.environ.update(_child_environment())  # for every process the lab starts
            lab = self.lab = Lab("demo")
            return self._run(lab)
        except DemoFailedError as exc:
            self.say(f"\nFAILED: {exc}")
            self._show_logs()
            return 1
        except LabError as exc:
            self.say(f"\nFAILED: the lab could not be built: {exc}")
            return 1
        except KeyboardInterrupt:
            self.say("\nInterrupted.")
            return 130
        finally:
            if lab is not None:
                # A second Ctrl-C must not cut the teardown short.
                previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
                self.say("Cleaning up: stopping the processes, deleting the namespaces ...")
                try:
                    lab.close()
                except LabError as exc:
                    self.say(f"  cleanup problem: {exc}")
                finally:
                    signal.signal(signal.SIGINT, previous_int)
                if os.environ.get("KRS_KEEP_LAB") == "1":
                    self.say(f"Done; the logs are kept in {lab.workdir} (KRS_KEEP_LAB=1).")
                else:
                    self.say("Done; nothing of the demo is left.")
            signal.signal(signal.SIGHUP, previous_hup)

    def _run(self, lab: Lab) -> int:
        started = time.monotonic()
        self._build(lab)
        self.say(f"Lab built in {time.monotonic() - started:.1f} s (namespaces {lab.prefix}*).")
        self.say()
        setup = time.monotonic()
        self._start_processes()
        self._wait_ready(setup)
        self._show_state()
        results: list[RoundResult] = []
        for number in range(1, self.options.rounds + 1):
            results.append(self._round(number))
        self._summary(results)
        return 0

    def _header(self) -> None:
        o = self.options
        self.say("routeserver demo: VIP failover with BGP + BFD, measured in a lab of network namespaces")
        self.say()
        rows = (
            ("rs", f"route server (routeserver run), AS {RS_ASN}: best path -> kernel table {TABLE}"),
            (ACTIVE, f"active appliance (routeserver appliance), AS {APPLIANCE_ASN[ACTIVE]}: {VIP}"),
            (STANDBY, f"standby, AS {APPLIANCE_ASN[STANDBY]}: the same VIP, AS path +{PREPEND[STANDBY]}"),
            ("client", f"probes the VIP through rs every {o.probe_interval_ms:g} ms: who answers?"),
        )
        for name, role in rows:
            self.say(f"  {name:<7} {ADDRESSES[name]:<11} {role}")
        self.say(
            f"  BFD {o.bfd_interval_ms} ms x {o.bfd_multiplier} (detection {o.detection_ms} ms); "
            f"BGP hold time {HOLD_TIME} s, so BFD, not the hold timer, must notice the failure."
        )
        self.say()
        self.say(f"  Then {ACTIVE} is frozen (a pfifo limit 0 qdisc drops all it sends; its link stays up)")
        self.say(f"  and a netlink monitor inside rs times how long until the VIP's route uses {STANDBY}.")
        self.say(f"  Then {ACTIVE} is unfrozen and the failback is timed too.")
        self.say()

    # -- the lab --------------------------------------------------------------------------------------

    def _build(self, lab: Lab) -> None:
        self.say("Building the lab (5 network namespaces, a bridge, 4 veth links) ...")
        for name in ADDRESSES:
            self.hosts[name] = lab.host(name)
        members = {self.hosts[n]: [f"{a}/{SEGMENT_PREFIX_LEN}"] for n, a in ADDRESSES.items()}
        ports = lab.switch("sw", members)
        self.ifname = {name: ports[host] for name, host in self.hosts.items()}
        rs, client = self.hosts["rs"], self.hosts["client"]
        # rs forwards the client's packets back out the port they came in on: without this it would
        # send ICMP redirects and the client would bypass it (and miss the failover).
        for key in ("all", "default", self.ifname["rs"]):
            rs.sysctl(f"net.ipv4.conf.{key}.send_redirects", "0")
        for key in ("all", "default", self.ifname["client"]):
            client.sysctl(f"net.ipv4.conf.{key}.accept_redirects", "0")
        # Traffic to the VIP range uses the table the route server writes.
        rs.run("ip", "rule", "add", "to", VIP_RANGE, "lookup", str(TABLE), "pref", "1000")
        client.run("ip", "route", "add", VIP_RANGE, "via", ADDRESSES["rs"])
        for name in (ACTIVE, STANDBY):
            self.hosts[name].add_address("lo", VIP)

    def _python(self, *argv: str) -> list[str]:
        return [sys.executable, *argv]

    def _popen(self, host: str, name: str, argv: list[str]) -> ManagedProcess:
        proc = self.hosts[host].popen(argv, name=name)
        self.procs[name] = proc
        self.tails[name] = JsonTail(proc.log_path)
        return proc

    def _start_processes(self) -> None:
        o = self.options
        self.say("Starting the route server, the appliances, the route monitor and the client probe ...")
        rs = self.hosts["rs"]
        config = rs.workdir / "demo.yaml"
        config.write_text(route_server_yaml(o))
        vip_address = VIP.split("/", maxsplit=1)[0]
        self._popen(
            "rs",
            "watch",
            self._python("-m", "lab.demo_tools", "watch", "--table", str(TABLE), "--prefix", VIP),
        )
        self._popen(
            "rs",
            "rs",
            self._python(
                "-m", "controller.cli", "run", "-f", str(config), "--watch-interval", "0",
                "--node-name", "rs", "--log-format", "json",
            ),
        )  # fmt: skip
        for name in (ACTIVE, STANDBY):
            self._popen(
                name,
                f"{name}-echo",
                self._python("-m", "lab.demo_tools", "echo", "--bind", vip_address, "--name", name),
            )
            self._popen(
                name,
                name,
                self._python(
                    "-m", "controller.cli", "appliance",
                    "--asn", str(APPLIANCE_ASN[name]),
                    "--local-address", ADDRESSES[name],
                    "--peer", ADDRESSES["rs"],
                    "--peer-asn", str(RS_ASN),
                    "--advertise", VIP,
                    "--prepend", str(PREPEND[name]),
                    "--bfd-interval-ms", str(o.bfd_interval_ms),
                    "--bfd-multiplier", str(o.bfd_multiplier),
                    "--hold-time", str(HOLD_TIME),
                    "--connect-retry", str(CONNECT_RETRY),
                    "--log-format", "json",
                ),
            )  # fmt: skip
        self._popen(
            "client",
            "probe",
            self._python(
                "-m", "lab.demo_tools", "probe", "--target", vip_address,
                "--interval-ms", f"{o.probe_interval_ms:g}",
            ),
        )  # fmt: skip

    # -- observing --------------------------------------------------------------------------------------

    def _poll(self) -> list[Event]:
        """New events from every process; keeps the current route and responder up to date."""
        for name, proc in self.procs.items():
            if not proc.alive():
                raise DemoFailedError(f"the {name} process exited (code {proc.wait()})")
        events: list[Event] = []
        for source, tail in self.tails.items():
            for record in tail.read():
                event = describe(source, record, self.wall_offset)
                if event is None:
                    continue
                if event.kind == "route":
                    self.route_via = [str(a) for a in record.get("via", [])]
                elif event.kind == "probe":
                    self.responder = str(record["from"])
                if event.kind == "appliance" and not self.options.verbose:
                    continue
                events.append(event)
        return events

    def _status(self) -> dict[str, Any] | None:
        done = self.hosts["rs"].run(sys.executable, "-m", "lab.demo_tools", "status", check=False, timeout=20)
        if done.returncode != 0:
            return None
        try:
            data = json.loads(done.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _peers(self, status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        servers = status.get("route_servers") or []
        if not servers:
            return {}
        return {str(p["name"]): p for p in servers[0].get("peers", [])}

    def _steady(self, status: Mapping[str, Any] | None) -> bool:
        """Both sessions Established with BFD Up, the VIP via appl-a in the kernel, appl-a answering."""
        if status is None:
            return False
        peers = self._peers(status)
        for name in (ACTIVE, STANDBY):
            peer = peers.get(name)
            if peer is None or peer.get("bgp_state") != "Established":
                return False
            if (peer.get("bfd") or {}).get("state") != "Up":
                return False
        return self.route_via == [ADDRESSES[ACTIVE]] and self.responder == ACTIVE

    def _wait_steady(self, timeline: Timeline | None, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        next_status = 0.0
        status: dict[str, Any] | None = None
        while True:
            for event in self._poll():
                if timeline is not None:
                    timeline.add(event)
            now = time.monotonic()
            if timeline is not None:
                timeline.flush(now - REORDER)
            if now >= next_status:
                status = self._status()
                next_status = time.monotonic() + STATUS_INTERVAL
                if self._steady(status):
                    if timeline is not None:
                        timeline.flush()
                    assert status is not None
                    return status
            if now > deadline:
                raise DemoFailedError(f"{what} within {timeout:.0f} s")
            time.sleep(POLL * 5)

    def _wait_ready(self, t0: float) -> None:
        timeline = Timeline(self.out, t0)
        self._wait_steady(
            timeline,
            SETUP_TIMEOUT,
            "the sessions did not come up (BGP Established, BFD Up, VIP via appl-a, client answered)",
        )

    def _show_state(self) -> None:
        status = self._status()
        if status is None:
            raise DemoFailedError("the route server's /status did not answer")
        self.say()
        self.say("The route server's view (routeserver status, inside rs):")
        for line in render(status).rstrip().splitlines():
            self.say(f"  {line}")
        self.say()
        rs = self.hosts["rs"]
        self.say(f"Kernel table {TABLE} in rs (ip route show table {TABLE}):")
        for line in rs.run("ip", "route", "show", "table", str(TABLE)).stdout.strip().splitlines():
            self.say(f"  {line}")
        self.say(f"  -> the VIP is forwarded via {_hops(self.route_via)}")
        self.say(f"The client's probes to the VIP are answered by {self.responder}.")

    # -- one round ----------------------------------------------------------------------------------------

    def _round(self, number: int) -> RoundResult:
        o = self.options
        result = RoundResult()
        if number > 1:
            self._wait_steady(None, FAILBACK_TIMEOUT, "the lab did not return to its steady state")
        self.say()
        self.say(f"Round {number}/{o.rounds}: freezing {ACTIVE}")
        self._failover(result)
        self.say(f"Unfreezing {ACTIVE}")
        self._failback(result)
        return result

    def _failover(self, result: RoundResult) -> None:
        """Freeze the active appliance; time the kernel route's move to the standby (bounded)."""
        o = self.options
        self._poll()  # everything before the freeze is history
        active = self.hosts[ACTIVE]
        t0 = time.monotonic()
        active.freeze([self.ifname[ACTIVE]])
        timeline = Timeline(self.out, t0)
        timeline.add(Event(t0, f"{ACTIVE} frozen (every packet it sends is dropped; link up)", "demo"))
        moved: float | None = None
        until = t0 + max(o.frozen_seconds, SETTLE)
        while True:
            now = time.monotonic()
            for event in self._poll():
                timeline.add(event)
                if moved is None and _routes_via(event, STANDBY):
                    moved = event.t
                    until = max(until, moved + SETTLE)
                if (
                    event.kind == "rs"
                    and event.data.get("event") == "bfd_down"
                    and event.data.get("peer") == ACTIVE
                    and result.bfd_down_ms is None
                ):
                    result.bfd_down_ms = (event.t - t0) * 1000
                if (
                    event.kind == "probe"
                    and event.data.get("from") == STANDBY
                    and result.client_gap_ms is None
                ):
                    prev = event.data.get("prev_t")
                    if prev is not None:
                        result.client_gap_ms = (event.t - float(prev)) * 1000
                    result.client_lost = int(event.data.get("lost", 0))
            timeline.flush(now - REORDER)
            if moved is None and now - t0 > o.timeout:
                timeline.flush()
                raise DemoFailedError(
                    f"the VIP did not move to {STANDBY} within {o.timeout:g} s of the freeze "
                    f"(kernel route via {_hops(self.route_via)})"
                )
            if moved is not None and now >= until:
                break
            time.sleep(POLL)
        timeline.flush()
        assert moved is not None
        result.failover_ms = (moved - t0) * 1000
        self.say(
            f"  => failover {result.failover_ms:.1f} ms: freeze -> kernel route moved to {STANDBY} "
            f"(BFD detection time {o.detection_ms} ms, counted from the last packet before the freeze)"
        )

    def _failback(self, result: RoundResult) -> None:
        """Unfreeze it; time the route's return (its BGP session must come back first)."""
        active = self.hosts[ACTIVE]
        self._poll()
        t1 = time.monotonic()
        active.unfreeze([self.ifname[ACTIVE]])
        timeline = Timeline(self.out, t1)
        timeline.add(Event(t1, f"{ACTIVE} unfrozen", "demo"))
        back: float | None = None
        bfd_up = False
        next_status = 0.0
        while True:
            now = time.monotonic()
            for event in self._poll():
                timeline.add(event)
                if back is None and _routes_via(event, ACTIVE):
                    back = event.t
                if (
                    event.kind == "rs"
                    and event.data.get("event") == "bfd_up"
                    and event.data.get("peer") == ACTIVE
                ):
                    bfd_up = True
            timeline.flush(now - REORDER)
            if back is not None and self.responder == ACTIVE and now >= back + SETTLE:
                if not bfd_up and now >= next_status:  # the log line may be missed; /status is the truth
                    next_status = now + STATUS_INTERVAL
                    peer = self._peers(self._status() or {}).get(ACTIVE) or {}
                    bfd_up = (peer.get("bfd") or {}).get("state") == "Up"
                if bfd_up:
                    break
            if now - t1 > FAILBACK_TIMEOUT:
                timeline.flush()
                raise DemoFailedError(
                    f"{ACTIVE} did not take the VIP back within {FAILBACK_TIMEOUT:.0f} s of the unfreeze "
                    f"(kernel route via {_hops(self.route_via)})"
                )
            time.sleep(POLL)
        timeline.flush()
        result.failback_ms = (back - t1) * 1000
        self.say(f"  => failback {result.failback_ms:.1f} ms: unfreeze -> kernel route back to {ACTIVE}")

    def _summary(self, results: Sequence[RoundResult]) -> None:
        failover = [r.failover_ms for r in results if r.failover_ms is not None]
        failback = [r.failback_ms for r in results if r.failback_ms is not None]
        bfd = [r.bfd_down_ms for r in results if r.bfd_down_ms is not None]
        gaps = [r.client_gap_ms for r in results if r.client_gap_ms is not None]
        self.say()
        self.say(f"Summary ({len(results)} round{'s' if len(results) != 1 else ''}):")
        self.say(f"  measured failover (freeze -> kernel route moved): {summarize(failover)}")
        self.say(f"  BFD down at the route server after the freeze:     {summarize(bfd)}")
        self.say(f"  client without answers during the failover:       {summarize(gaps)}")
        self.say(f"  failback (unfreeze -> kernel route back):          {summarize(failback)}")
        if len(failback) > 1:
            self.say("  Failback slows down from round to round on purpose: each drop doubles the wait")
            self.say("  before BGP reconnects (IdleHold, RFC 4271 §8.1.1 DampPeerOscillations) until the")
            self.say("  session stays Established for 60 s. Failover is BFD's job and does not slow down.")

    def _show_logs(self) -> None:
        for name in ("rs", ACTIVE, STANDBY):
            proc = self.procs.get(name)
            if proc is None:
                continue
            lines = proc.log_text().strip().splitlines()[-15:]
            if lines:
                self.say(f"\nLast lines of the {name} log:")
                for line in lines:
                    self.say(f"  {line}")


def _routes_via(event: Event, name: str) -> bool:
    """The event is the kernel route of the VIP pointing at exactly `name`."""
    return event.kind == "route" and list(event.data.get("via", [])) == [ADDRESSES[name]]


def _child_environment() -> dict[str, str]:
    """Lab processes run `python -m controller...`: make the package importable wherever we run from."""
    package_root = str(Path(controller.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    if package_root not in path.split(os.pathsep):
        path = package_root + (os.pathsep + path if path else "")
    return {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
