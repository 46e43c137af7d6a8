"""Our BGP speaker as a process inside a lab host, controlled over a unix socket (JSON lines).

Started by tests/support/daemons/krs.py as `python -m tests.support.krs_speaker_proc --config FILE`.
The config file is JSON: asn, router_id, listen (addresses), port, control (socket path), neighbors
(one object per peer, see `_peer_config`), routes (originated at start, see `_attributes`).

Every request is one JSON object on one line, answered by one JSON object on one line:

    {"cmd": "status"}                          -> {"ok": true, "status": {...SpeakerStatus...}}
    {"cmd": "routes"}                          -> {"ok": true, "routes": [{prefix, next_hop, as_path, ...}]}
    {"cmd": "count"}                           -> {"ok": true, "loc_rib": N, "peers": {id: {state, accepted}}}
    {"cmd": "advertise", "routes": [...]}      -> {"ok": true}
    {"cmd": "withdraw", "prefixes": [...]}     -> {"ok": true}
    {"cmd": "events", "since": 0}              -> {"ok": true, "events": [...], "next": N}
    {"cmd": "refresh", "peer": "10.0.0.2"}     -> {"ok": true, "families": [...]}
    {"cmd": "peer_down", "peer": "...", "graceful": false} -> {"ok": true}

Errors answer {"ok": false, "error": "..."}. SIGTERM shuts the speaker down (Cease to every peer).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import json
import logging
import signal
import sys
import time
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from itertools import islice
from pathlib import Path
from typing import Any

from bgp.api import (
    ConnectionRefused,
    EndOfRib,
    PeerConfig,
    PeerStateChanged,
    PrefixLimit,
    RoutesChanged,
    SpeakerEvent,
)
from bgp.fsm.events import DownReason
from bgp.rib.policy import ImportPolicy, MaxPrefix, MaxPrefixAction, PrefixRule
from bgp.speaker import Speaker
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    AsPath,
    AsPathSegment,
    LargeCommunity,
    Origin,
    PathAttributes,
    SegmentType,
    key_str,
)

FAMILIES = {"ipv4": IPV4_UNICAST, "ipv6": IPV6_UNICAST}


def parse_rule(text: str) -> PrefixRule:
    """'10.0.0.0/8 ge 24 le 32' -> PrefixRule."""
    parts = text.split()
    prefix = ip_network(parts[0])
    options = dict(zip(parts[1::2], (int(v) for v in parts[2::2]), strict=True))
    return PrefixRule(prefix, ge=options.get("ge"), le=options.get("le"))


def _peer_config(n: dict[str, Any]) -> PeerConfig:
    allowed = n.get("allowed")
    if allowed is None:
        allowed = ["0.0.0.0/0 le 32", "::/0 le 128"]
    max_prefix = None
    if n.get("max_prefix") is not None:
        actions = {"warn": MaxPrefixAction.WARN, "reject": MaxPrefixAction.REJECT}
        action = actions.get(n.get("max_prefix_action") or "", MaxPrefixAction.TEARDOWN)
        max_prefix = MaxPrefix(int(n["max_prefix"]), action)
    families = tuple(FAMILIES[f] for f in n.get("families", ["ipv4", "ipv6"]))
    return PeerConfig(
        peer_address=ip_address(n["address"]),
        peer_asn=int(n["asn"]),
        local_address=ip_address(n["local_address"]) if n.get("local_address") else None,
        port=int(n.get("port", 179)),
        passive=bool(n.get("passive", False)),
        hold_time=int(n.get("hold_time", 90)),
        connect_retry_time=float(n.get("connect_retry", 1)),
        password=n.get("password"),
        ttl_security_hops=n.get("gtsm_hops"),
        multihop_ttl=n.get("multihop_ttl"),
        families=families,
        import_policy=ImportPolicy(allowed=tuple(parse_rule(r) for r in allowed)),
        max_prefix=max_prefix,
        graceful_restart=bool(n.get("graceful_restart", True)),
        idle_hold_time=float(n.get("idle_hold_time", 0.5)),
        next_hop_ipv4=IPv4Address(n["next_hop_ipv4"]) if n.get("next_hop_ipv4") else None,
        next_hop_ipv6=IPv6Address(n["next_hop_ipv6"]) if n.get("next_hop_ipv6") else None,
        max_idle_hold_time=float(n.get("max_idle_hold_time", 2.0)),
    )


def _community(text: str) -> int:
    high, low = text.split(":")
    return (int(high) << 16) | int(low)


def _attributes(route: dict[str, Any], asn: int) -> PathAttributes:
    """A fixture Route as attributes: as_path_prepend extra copies of our ASN (eBGP adds one more)."""
    prepend = int(route.get("as_path_prepend", 0))
    segments = (AsPathSegment(SegmentType.AS_SEQUENCE, (asn,) * prepend),) if prepend else ()
    next_hop = route.get("next_hop")
    return PathAttributes(
        origin=Origin.IGP,
        as_path=AsPath(segments),
        next_hop=ip_address(next_hop) if next_hop else None,
        med=route.get("med"),
        local_pref=route.get("local_pref"),
        communities=tuple(_community(c) for c in route.get("communities", ())),
        large_communities=tuple(
            LargeCommunity(*(int(x) for x in c.split(":"))) for c in route.get("large_communities", ())
        ),
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    return value


def _event_json(event: SpeakerEvent) -> dict[str, Any]:
    now = time.time()
    if isinstance(event, PeerStateChanged):
        notification = None
        if event.notification is not None:
            notification = {"code": event.notification.code, "subcode": event.notification.subcode}
        return {
            "type": "state",
            "t": now,
            "peer": event.peer_id,
            "old": event.old.value,
            "new": event.new.value,
            "reason": event.reason.value,
            "notification": notification,
            "detail": event.detail,
        }
    if isinstance(event, RoutesChanged):
        changes = event.changes
        return {
            "type": "routes",
            "t": now,
            "peer": event.peer_id,
            "count": len(event.changes),
            # Only the first 20 are rendered: an UPDATE can carry ~800 prefixes, a session loss 1M.
            "added": [key_str(c.prefix) for c in islice((c for c in changes if c.old_best is None), 20)],
            "removed": [key_str(c.prefix) for c in islice((c for c in changes if c.new_best is None), 20)],
        }
    if isinstance(event, ConnectionRefused):
        return {"type": "refused", "t": now, "address": str(event.address), "port": event.port}
    if isinstance(event, PrefixLimit):
        return {
            "type": "prefix_limit",
            "t": now,
            "peer": event.peer_id,
            "event": event.event.name,
            "count": event.count,
            "limit": event.limit,
        }
    assert isinstance(event, EndOfRib)
    return {"type": "eor", "t": now, "peer": event.peer_id, "family": str(event.family)}


class Controller:
    """Serves the control socket for one speaker."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker
        self.events: list[dict[str, Any]] = []
        speaker.add_listener(lambda event: self.events.append(_event_json(event)))

    def routes(self) -> list[dict[str, Any]]:
        found = []
        for key, ecmp in self.speaker.loc_rib.selected():
            best = ecmp[0]
            attrs = best.attributes
            found.append(
                {
                    "prefix": key_str(key),
                    "peer": best.peer.peer_id,
                    "next_hop": str(attrs.next_hop) if attrs.next_hop is not None else None,
                    "as_path": list(attrs.as_path.asns()),
                    "origin": attrs.origin.name,
                    "med": attrs.med,
                    "local_pref": attrs.local_pref,
                    "communities": [f"{c >> 16}:{c & 0xFFFF}" for c in attrs.communities],
                    "large_communities": [str(c) for c in attrs.large_communities],
                    "ecmp": [p.peer.peer_id for p in ecmp],
                }
            )
        return found

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        speaker = self.speaker
        if cmd == "status":
            return {"ok": True, "status": _jsonable(speaker.statuses())}
        if cmd == "routes":
            return {"ok": True, "routes": self.routes()}
        if cmd == "count":  # O(peers): cheap enough to poll every few ms (bench/bgp_intake.py)
            peers = {}
            for config in speaker.peers():
                status = speaker.status(config.peer_id)
                peers[status.peer_id] = {"state": status.state, "accepted": status.prefixes_accepted}
            return {"ok": True, "loc_rib": len(speaker.loc_rib), "peers": peers}
        if cmd == "advertise":
            for route in request["routes"]:
                await speaker.advertise([route["prefix"]], _attributes(route, speaker.local_asn))
            return {"ok": True}
        if cmd == "withdraw":
            await speaker.withdraw(request["prefixes"])
            return {"ok": True}
        if cmd == "events":
            since = int(request.get("since", 0))
            return {"ok": True, "events": self.events[since:], "next": len(self.events)}
        if cmd == "refresh":
            families = speaker.request_refresh(request["peer"])
            return {"ok": True, "families": [str(f) for f in families]}
        if cmd == "peer_down":
            speaker.peer_down(request["peer"], DownReason.BFD_DOWN, graceful=bool(request.get("graceful")))
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await self.handle(json.loads(line))
                except Exception as exc:
                    logging.exception("control request failed")
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()


async def run(config: dict[str, Any]) -> None:
    speaker = Speaker(
        int(config["asn"]),
        config["router_id"],
        config.get("listen", ["0.0.0.0", "::"]),
        int(config.get("port", 179)),
    )
    controller = Controller(speaker)
    await speaker.start()
    for neighbor in config.get("neighbors", []):
        await speaker.add_peer(_peer_config(neighbor))
    for route in config.get("routes", []):
        await speaker.advertise([route["prefix"]], _attributes(route, speaker.local_asn))
    server = await asyncio.start_unix_server(controller.serve, path=config["control"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("krs speaker AS%s ready on %s", speaker.local_asn, speaker.listening())
    await stop.wait()
    server.close()
    await speaker.stop("lab shutdown")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(json.loads(args.config.read_text())))


if __name__ == "__main__":
    main()
