"""NodeTableWriter instances in a process inside a lab host, driven over a unix socket (JSON lines).

The writer programs the tables of the network namespace its sockets are opened in; running it in
a process started with `ip netns exec` (Host.popen) keeps the test runner itself, and with it the
root namespace, out of reach. Started as `python -m tests.support.writer_proc --control PATH`.

Every request is one JSON object on one line, answered by one JSON object on one line:

    {"cmd": "open", "name": "w", "table": 100, "metric": 50, "protocol": 245,
     "nexthop_objects": true, "require_table": false, "watch": true,
     "resync_interval": null, "debounce": 0.05, "rt_tables": [paths]}   -> {"ok": true}
    {"cmd": "start", "name": "w"}                                -> {"ok": true, "report": {...}}
    {"cmd": "apply", "name": "w", "changes": {"203.0.113.1/32": ["10.0.1.2"], "...": null}}
                                                                 -> {"ok": true, "report": {...}}
        (a value may also be {"hops": [...], "backup": [...]}: next hops with their backup, `Backed`)
    {"cmd": "fail_over", "name": "w", "gateways": ["10.0.1.2"]}  -> {"ok": true, "report": {...} or null}
    {"cmd": "resync", "name": "w", "desired": {"203.0.113.1/32": ["10.0.1.2"]}}  -> same
    {"cmd": "withdraw_all", "name": "w"}                         -> same
    {"cmd": "installed", "name": "w"}                            -> {"ok": true, "routes": {prefix: [gw]}}
    {"cmd": "background", "name": "w"}                           -> {"ok": true, "reports": [...]}
    {"cmd": "close", "name": "w"}                                -> {"ok": true}

A report is {"installed", "removed", "netlink_messages", "seconds", "rejected": [{prefix, reason,
message}]}; "background" returns the reports of the writer's own repairs (notifications, periodic
resync). Errors answer {"ok": false, "error": "..."}. SIGTERM exits without withdrawing anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from bgp.types import key_str, prefix_key
from controller.desired import Backed, Hops, RouteKey
from controller.writers.base import WriteReport
from controller.writers.netlink import DEFAULT_PROTOCOL, RT_TABLES_PATHS, NodeTableWriter


def report_json(report: WriteReport, seconds: float | None = None) -> dict[str, Any]:
    return {
        "installed": report.installed,
        "removed": report.removed,
        "netlink_messages": report.netlink_messages,
        "seconds": seconds,
        "rejected": [
            {"prefix": key_str(r.prefix), "reason": r.reason.value, "message": r.message}
            for r in report.rejected
        ],
    }


def _entries(raw: Mapping[str, list[str] | dict[str, list[str]] | None]) -> dict[RouteKey, Hops | None]:
    out: dict[RouteKey, Hops | None] = {}
    interned: dict[Hops, Hops] = {}  # one object per distinct set, as the FIB hands them over
    for text, gateways in raw.items():
        prefix = prefix_key(ip_network(text))
        hops: Hops | None = None
        if isinstance(gateways, dict):
            primary = tuple(ip_address(g) for g in gateways["hops"])
            hops = Backed(primary, tuple(ip_address(g) for g in gateways["backup"]))
        elif gateways is not None:
            hops = tuple(ip_address(g) for g in gateways)
        out[prefix] = None if hops is None else interned.setdefault(hops, hops)
    return out


class Server:
    def __init__(self) -> None:
        self.writers: dict[str, NodeTableWriter] = {}
        self.background: dict[str, list[dict[str, Any]]] = {}

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        name = request["name"]
        if cmd == "open":
            reports: list[dict[str, Any]] = []
            self.background[name] = reports
            writer = NodeTableWriter(
                request["table"],
                metric=request.get("metric"),
                protocol=request.get("protocol", DEFAULT_PROTOCOL),
                use_nexthop_objects=request.get("nexthop_objects"),
                require_table=request.get("require_table", False),
                watch=request.get("watch", False),
                resync_interval=request.get("resync_interval"),
                debounce=request.get("debounce", 0.05),
                rt_tables=request.get("rt_tables", RT_TABLES_PATHS),
                on_report=lambda r: reports.append(report_json(r)),
            )
            self.writers[name] = writer
            return {"ok": True}
        writer = self.writers[name]
        started = time.perf_counter()
        if cmd == "start":
            report = await writer.start()
            return {"ok": True, "report": report_json(report), "nexthop_objects": writer.uses_nexthop_objects}
        if cmd == "apply":
            report = await writer.apply(_entries(request["changes"]))
        elif cmd == "resync":
            desired = {p: e for p, e in _entries(request["desired"]).items() if e is not None}
            report = await writer.resync(desired)
        elif cmd == "fail_over":
            failed = writer.fail_over([ip_address(g) for g in request["gateways"]])
            seconds = time.perf_counter() - started
            return {"ok": True, "report": None if failed is None else report_json(failed, seconds)}
        elif cmd == "withdraw_all":
            report = await writer.withdraw_all()
        elif cmd == "installed":
            routes = {key_str(p): [str(g) for g in gws] for p, gws in writer.installed().items()}
            return {"ok": True, "routes": routes, "foreign": sorted(key_str(p) for p in writer.foreign())}
        elif cmd == "background":
            return {"ok": True, "reports": list(self.background[name])}
        elif cmd == "close":
            await writer.close()
            del self.writers[name]
            return {"ok": True}
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        return {"ok": True, "report": report_json(report, time.perf_counter() - started)}

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            try:
                answer = await self.handle(json.loads(line))
            except Exception as exc:  # every failure goes back to the test as text
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        writer.close()


async def main(control: Path) -> None:
    server = Server()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    unix = await asyncio.start_unix_server(server.serve_client, path=str(control), limit=64 * 1024 * 1024)
    print(f"writer_proc ready on {control}", flush=True)
    async with unix:
        await stop.wait()
    for writer in server.writers.values():
        with contextlib.suppress(Exception):
            await writer.close()


class WriterClient:
    """The test side: one connection to a writer_proc, one request at a time."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self._file.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ConnectionError("writer_proc closed the connection")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"writer_proc {cmd}: {answer.get('error')}")
        return answer

    def close(self) -> None:
        self._file.close()
        self._sock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.control)))
