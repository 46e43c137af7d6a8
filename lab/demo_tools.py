"""Small helper processes `routeserver demo` runs inside its lab hosts (network namespaces).

    python -m lab.demo_tools watch --table 100 --prefix 203.0.113.10/32   (in the route server)
    python -m lab.demo_tools echo --bind 203.0.113.10 --name appl-a      (in each appliance)
    python -m lab.demo_tools probe --target 203.0.113.10                 (in the client)
    python -m lab.demo_tools status                                      (in the route server)

Each long-running helper prints one JSON object per line to stdout, stamped with time.monotonic():
CLOCK_MONOTONIC is one clock for every process on the machine (namespaces do not change it), so the
demo can subtract these stamps from the moment it froze an appliance, however late it reads the line.

Why helper processes: a socket belongs to the network namespace of the process that opens it, and the
demo itself stays in the root namespace, where it must never touch anything. The helpers import only
the standard library and controller/writers/rtnl.py, so they start in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import select
import socket
import sys
import time
from collections.abc import Sequence
from ipaddress import ip_address, ip_network

from bgp.types import prefix_key
from controller.writers import rtnl

ECHO_PORT = 7007
MAX_DATAGRAM = 512


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# -- watch: the kernel route of one prefix -------------------------------------------------------------


def gateways(channel: rtnl.NetlinkChannel, table: int, prefix: str) -> list[str]:
    """The gateways the kernel forwards `prefix` to from `table` (plain, multipath or nexthop objects)."""
    network = ip_network(prefix)
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    key = prefix_key(network)
    try:
        routes = [r for r in channel.routes(family, table) if r.key == key and r.table == table]
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the table does not exist yet
            return []
        raise
    found: set[str] = set()
    objects: dict[int, rtnl.KernelNexthop] | None = None
    for route in routes:
        found |= {str(hop.gateway) for hop in route.nexthops}
        if route.nh_id is None:
            continue
        if objects is None:
            objects = {nh.nh_id: nh for nh in channel.nexthops()}
        pending, seen = [route.nh_id], set()
        while pending:
            nh = objects.get(pending.pop())
            if nh is None or nh.nh_id in seen:
                continue
            seen.add(nh.nh_id)
            if nh.gateway is not None:
                found.add(str(nh.gateway))
            pending.extend(nh.members)
    return sorted(found, key=ip_address)


def watch(table: int, prefix: str) -> int:
    """Print {"kind": "route", "t", "via"} now and whenever the prefix's gateways change.

    `t` is when the first netlink notification of the batch that changed them was received: the
    kernel sends it after applying the change, so it bounds the moment traffic moved from above.
    """
    network = ip_network(prefix)
    groups = [rtnl.RTNLGRP_IPV4_ROUTE if network.version == 4 else rtnl.RTNLGRP_IPV6_ROUTE]
    monitor = rtnl.open_monitor([*groups, rtnl.RTNLGRP_NEXTHOP])
    channel = rtnl.NetlinkChannel(timeout=5.0)
    last = gateways(channel, table, prefix)
    emit({"kind": "route", "t": time.monotonic(), "via": last, "initial": True})
    while True:
        select.select([monitor], [], [])
        received = time.monotonic()
        while True:  # drain the batch: one resolution per burst of notifications
            try:
                monitor.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # an overflow only means: look again
                    raise
        now = gateways(channel, table, prefix)
        if now != last:
            last = now
            emit({"kind": "route", "t": received, "via": now})


# -- echo and probe: which appliance answers the client ------------------------------------------------


def echo(bind: str, port: int, name: str) -> int:
    """Answer every datagram with `<its first word> <name>`, from the address it was sent to."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, port))
        emit({"kind": "echo", "t": time.monotonic(), "listening": f"{bind}:{port}"})
        while True:
            data, peer = sock.recvfrom(MAX_DATAGRAM)
            word = data.split(maxsplit=1)[0] if data.strip() else b"?"
            sock.sendto(word + b" " + name.encode(), peer)


def probe(target: str, port: int, interval: float) -> int:
    """Send a numbered datagram every `interval`; print a line whenever a different host answers.

    Each line says who answers now, when its first answer arrived, when the previous answer did
    (`prev_t`) and how many probes in between were never answered (`lost`).
    """
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        seq = 0
        answered = 0  # highest sequence number answered
        responder: str | None = None
        last_reply: float | None = None
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_send:
                seq += 1
                with contextlib.suppress(OSError):  # no route for a moment: lost, as a packet would be
                    sock.sendto(str(seq).encode(), (target, port))
                next_send += interval
                if next_send < now:  # we were descheduled; do not burst to catch up
                    next_send = now + interval
            ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            if not ready:
                continue
            while True:
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                received = time.monotonic()
                words = data.decode(errors="replace").split()
                if len(words) != 2 or not words[0].isdigit():
                    continue
                number, name = int(words[0]), words[1]
                if number <= answered:
                    continue  # a late duplicate or reordered answer
                lost = number - answered - 1 if answered else 0
                if name != responder:
                    emit(
                        {
                            "kind": "probe",
                            "t": received,
                            "from": name,
                            "seq": number,
                            "prev_from": responder,
                            "prev_t": last_reply,
                            "lost": lost,
                        }
                    )
                    responder = name
                answered, last_reply = number, received


# -- status: the route server's /status from inside its namespace -------------------------------------


def status(address: str, port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        print(f"cannot get status from {address}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200:
        print(f"{address}:{port} answered {response.status}", file=sys.stderr)
        return 1
    sys.stdout.write(body.decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo_tools")
    modes = parser.add_subparsers(dest="mode", required=True)
    w = modes.add_parser("watch")
    w.add_argument("--table", type=int, required=True)
    w.add_argument("--prefix", required=True)
    e = modes.add_parser("echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--port", type=int, default=ECHO_PORT)
    e.add_argument("--name", required=True)
    p = modes.add_parser("probe")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, default=ECHO_PORT)
    p.add_argument("--interval-ms", type=float, default=10.0)
    s = modes.add_parser("status")
    s.add_argument("--address", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9179)
    s.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        if args.mode == "watch":
            return watch(args.table, args.prefix)
        if args.mode == "echo":
            return echo(args.bind, args.port, args.name)
        if args.mode == "probe":
            return probe(args.target, args.port, args.interval_ms / 1000)
        return status(args.address, args.port, args.timeout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
