"""Our BFD service (bfd.service.BfdService) as a process inside a lab host, driven over a unix socket.

Started by tests/support/daemons/krs_bfd.py as `python -m tests.support.bfd_proc --control PATH`.
The process is shaped like the agent: the main thread runs an asyncio loop (here: the control server
and, on request, a CPU burner standing in for a BGP intake), the BFD service runs on its own thread and
delivers state changes into the main loop with call_soon_threadsafe.

Every request is one JSON object on one line, answered by one JSON object on one line:

    {"cmd": "request", "peer": "10.0.0.2", "local": "10.0.0.1", "interface": null,
     "profile": {"min_tx_ms": 300, "min_rx_ms": 300, "multiplier": 3, "passive": false,
                 "multihop": false, "min_ttl": 254,
                 "auth": {"type": "sha1", "key_id": 1, "secret": "..."}}}   -> {"ok": true, "id": 1}
    {"cmd": "update", "id": 1, "profile": {...}}                             -> {"ok": true}
    {"cmd": "release", "id": 1}                                              -> {"ok": true}
    {"cmd": "status"}                 -> {"ok": true, "sessions": [...], "drops": {...}, ...}
    {"cmd": "events", "since": 0}     -> {"ok": true, "events": [...], "next": N}
    {"cmd": "burn", "mode": "bgp" | "busy" | "off"}                          -> {"ok": true}
    {"cmd": "clock"}                  -> {"ok": true, "monotonic": t}

Times are time.monotonic() seconds, which every network namespace of the machine shares, so a test
can compare them with its own clock. An event carries `at` (when the session changed state, on the BFD
thread) and `delivered` (when the main loop ran the subscriber: later by however long the loop was
busy). Errors answer {"ok": false, "error": "..."}. SIGTERM stops the service (AdminDown everywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from bfd.auth import AuthConfig
from bfd.codec import AuthType
from bfd.service import BfdProfile, BfdService, SessionHandle, SessionStatus
from bfd.session import StateChange
from bfd.transport import Ports

AUTH_TYPES = {
    "simple": AuthType.SIMPLE_PASSWORD,
    "md5": AuthType.KEYED_MD5,
    "meticulous-md5": AuthType.METICULOUS_KEYED_MD5,
    "sha1": AuthType.KEYED_SHA1,
    "meticulous-sha1": AuthType.METICULOUS_KEYED_SHA1,
}


def profile_from_json(data: dict[str, Any]) -> BfdProfile:
    auth = data.get("auth")
    return BfdProfile.from_ms(
        int(data.get("min_tx_ms", 300)),
        int(data.get("min_rx_ms", 300)),
        int(data.get("multiplier", 3)),
        auth=(
            AuthConfig(AUTH_TYPES[auth["type"]], int(auth["key_id"]), str(auth["secret"]).encode())
            if auth
            else None
        ),
        passive=bool(data.get("passive", False)),
        multihop=bool(data.get("multihop", False)),
        min_ttl=int(data.get("min_ttl", 254)),
    )


def change_json(change: StateChange | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {
        "old": change.old.name,
        "new": change.new.name,
        "diag": change.diag.name,
        "reason": change.reason.value,
        "at": change.at,
        "failure": change.failure,
    }


def status_json(status: SessionStatus) -> dict[str, Any]:
    key = status.key
    return {
        "peer": str(key.peer),
        "local": str(key.local) if key.local is not None else None,
        "interface": key.interface,
        "multihop": key.multihop,
        "state": status.state.name,
        "remote_state": status.remote_state.name,
        "local_diag": status.local_diag.name,
        "remote_diag": int(status.remote_diag),
        "local_discr": status.local_discr,
        "remote_discr": status.remote_discr,
        "source_port": status.source_port,
        "profile": {
            "min_tx_us": status.profile.min_tx_us,
            "min_rx_us": status.profile.min_rx_us,
            "multiplier": status.profile.multiplier,
            "passive": status.profile.passive,
            "min_ttl": status.profile.min_ttl,
            "auth": status.profile.auth.auth_type.name if status.profile.auth else None,
        },
        "tx_interval_us": status.tx_interval_us,
        "rx_interval_us": status.rx_interval_us,
        "detection_time_us": status.detection_time_us,
        "remote_min_tx_us": status.remote_min_tx_us,
        "remote_min_rx_us": status.remote_min_rx_us,
        "remote_multiplier": status.remote_multiplier,
        "poll_active": status.poll_active,
        "last_rx": status.last_rx,
        "last_change": change_json(status.last_change),
        "clients": status.clients,
        "releasing": status.releasing,
        "rx_packets": status.rx_packets,
        "tx_packets": status.tx_packets,
        "drops": dict(status.drops),
        "tx_errors": dict(status.tx_errors),
    }


def _make_feed() -> list[bytes]:
    """100,000 IPv4 prefixes of mixed length (/24-/32) as UPDATE bodies, a few attribute sets."""
    from ipaddress import IPv4Address

    from bgp.codec.messages import HEADER_SIZE, CodecContext
    from bgp.codec.update import build_updates
    from bgp.types import IPV4_UNICAST, AsPath, AsPathSegment, Origin, PathAttributes, SegmentType

    ctx = CodecContext()
    bodies: list[bytes] = []
    sets, prefixes = 8, 100_000
    per_set = prefixes // sets
    for s in range(sets):
        attrs = PathAttributes(
            origin=Origin.IGP,
            as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (64512 + s, 4200000000 + s)),)),
            next_hop=IPv4Address(f"198.51.100.{s + 1}"),
            med=s * 10,
        )
        keys = []
        for i in range(s * per_set, (s + 1) * per_set):
            length = 24 + i % 9
            address = (int(IPv4Address("10.0.0.0")) + (i << 8)) & ~((1 << (32 - length)) - 1) & 0xFFFFFFFF
            keys.append((address << 8) | length)
        bodies.extend(m[HEADER_SIZE:] for m in build_updates(IPV4_UNICAST, attrs, keys, ctx))
    return bodies


class Burner:
    """CPU work in the main loop's thread, the way a BGP intake or kopf loads the agent's loop.

    `bgp`: decode a 100k-prefix feed with bgp.codec and build a dict of it, over and over (the loop is
    blocked for one whole feed at a time); `busy`: a pure-Python loop in 50 ms slices.
    """

    def __init__(self) -> None:
        self.mode = "off"
        self.rounds = 0
        self.prefixes = 0
        self._task: asyncio.Task[None] | None = None
        self._feed: list[bytes] | None = None

    def set(self, mode: str) -> None:
        if mode not in ("off", "bgp", "busy"):
            raise ValueError(f"unknown burn mode {mode!r}")
        self.mode = mode
        if mode != "off" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.mode != "off":
                if self.mode == "bgp":
                    self._intake()
                else:
                    end = time.monotonic() + 0.05
                    x = 0
                    while time.monotonic() < end:
                        x += 1
                self.rounds += 1
                await asyncio.sleep(0)
        finally:
            self._task = None

    def _intake(self) -> None:
        from bgp.codec.messages import CodecContext
        from bgp.codec.update import decode_update

        if self._feed is None:
            self._feed = _make_feed()
        ctx = CodecContext()
        cache: dict[bytes, Any] = {}
        table: dict[int, Any] = {}
        for body in self._feed:
            update = decode_update(body, ctx, cache)
            for reach in update.reach:
                for prefix in reach.prefixes:
                    table[prefix] = reach.attributes
        self.prefixes += len(table)


class Controller:
    def __init__(self, service: BfdService, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop
        self.handles: dict[int, SessionHandle] = {}
        self.events: list[dict[str, Any]] = []
        self.burner = Burner()

    def _on_change(self, handle: SessionHandle, change: StateChange) -> None:
        event = change_json(change)
        assert event is not None
        event.update(handle=handle.id, peer=str(handle.key.peer), delivered=time.monotonic())
        self.events.append(event)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "request":
            handle = self.service.request(
                ip_address(request["peer"]),
                local=ip_address(request["local"]) if request.get("local") else None,
                interface=request.get("interface"),
                profile=profile_from_json(request.get("profile", {})),
            )
            self.handles[handle.id] = handle
            handle.subscribe(lambda change, h=handle: self._on_change(h, change), loop=self.loop)  # type: ignore[misc]
            return {"ok": True, "id": handle.id}
        if cmd == "update":
            self.handles[int(request["id"])].update(profile_from_json(request["profile"]))
            return {"ok": True}
        if cmd == "release":
            self.handles.pop(int(request["id"])).release()
            return {"ok": True}
        if cmd == "status":
            status = self.service.status()
            return {
                "ok": True,
                "sessions": [status_json(s) for s in status.sessions],
                "drops": dict(status.drops),
                "listening": dict(status.listening),
                "timer_lateness": list(status.timer_lateness),
                "timer_lateness_max_s": status.timer_lateness_max_s,
                "burn": {"mode": self.burner.mode, "rounds": self.burner.rounds},
            }
        if cmd == "events":
            since = int(request.get("since", 0))
            return {"ok": True, "events": self.events[since:], "next": len(self.events)}
        if cmd == "burn":
            self.burner.set(str(request.get("mode", "off")))
            return {"ok": True}
        if cmd == "clock":
            return {"ok": True, "monotonic": time.monotonic()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = self.handle(json.loads(line))
                except Exception as exc:
                    logging.exception("control request failed")
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()


async def run(control: Path, ports: Ports) -> None:
    loop = asyncio.get_running_loop()
    service = BfdService(ports=ports)
    service.start()
    controller = Controller(service, loop)
    server = await asyncio.start_unix_server(controller.serve, path=str(control))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("krs bfd ready on %s", control)
    await stop.wait()
    controller.burner.set("off")
    server.close()
    service.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--control", required=True, type=Path)
    parser.add_argument(
        "--ports", default="{}", help='JSON for bfd.transport.Ports, e.g. {"single_hop": 3784}'
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(args.control, Ports(**json.loads(args.ports))))


if __name__ == "__main__":
    main()
