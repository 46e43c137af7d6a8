"""ExaBGP (from PyPI, in the project's virtualenv) as a lab peer.

ExaBGP talks to "API processes" over their stdin/stdout. Each instance runs one small relay
process (`exabgp_relay.py`): it appends every JSON message ExaBGP sends (neighbor state changes and
parsed UPDATEs) to a state file, and forwards command lines written to a FIFO in the instance's
directory to ExaBGP (`announce route ...`, `withdraw route ...`). The fixture reads the state file
to report sessions and received routes, replaying announces and withdraws in order. NOTIFICATION
and ROUTE-REFRESH messages ExaBGP receives are recorded too (`notifications`, `refreshes`).

`asn4=False` makes ExaBGP an OLD speaker (no 4-octet AS capability, RFC 6793 §4.2);
`request_refresh` has it send ROUTE-REFRESH for both families (RFC 2918); `pause`/`resume` freeze it
(SIGSTOP); `restart(routes)` changes what it originates across a restart. With graceful restart
negotiated, ExaBGP closes without a NOTIFICATION on `stop()`, and it sets the Forwarding State bit
for every family (RFC 4724 §3).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.support.daemons.base import (
    Capability,
    InteropDaemon,
    ReceivedNotification,
    Route,
    RouteView,
    SessionView,
)
from tests.support.netns import Host, LabError, ManagedProcess
from tests.support.prereq import require_binary

RELAY = Path(__file__).with_name("exabgp_relay.py")
_STATE = {"up": "Established", "connected": "OpenSent", "down": "Idle", "shutdown": "Idle"}


class ExabgpDaemon(InteropDaemon):
    kind = "exabgp"
    capabilities = frozenset(
        {
            Capability.SENDS_ROUTE_REFRESH,
            Capability.OLD_SPEAKER,
            Capability.NOTIFICATION_CODE_BEFORE_ESTABLISHED,
            Capability.ENHANCED_ROUTE_REFRESH,
        }
    )

    def __init__(self, host: Host, *, asn4: bool = True, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.asn4 = asn4
        self.dir = host.workdir / f"exabgp-{self.asn}-{id(self) % 10000}"
        self.fifo = self.dir / "commands.fifo"
        self.events = self.dir / "events.jsonl"
        self._proc: ManagedProcess | None = None
        self._advertised: dict[str, Route] = {r.prefix: r for r in self.routes}

    def _route_command(self, route: Route) -> str:
        # An explicit address of the route's own family: "next-hop self" is refused by ExaBGP when the
        # route's family differs from the session's (IPv6 routes over an IPv4 session).
        hop = route.next_hop or self.own_address(ipv6=":" in route.prefix)
        parts = [f"route {route.prefix}", f"next-hop {hop}"]
        if route.med is not None:
            parts.append(f"med {route.med}")
        if route.as_path_prepend:
            # ExaBGP sends a configured as-path as it is (it adds its own ASN only when none is given).
            parts.append("as-path [ " + " ".join([str(self.asn)] * (route.as_path_prepend + 1)) + " ]")
        if route.communities:
            parts.append("community [ " + " ".join(route.communities) + " ]")
        if route.large_communities:
            parts.append("large-community [ " + " ".join(route.large_communities) + " ]")
        return " ".join(parts)

    def render(self) -> str:
        python = sys.executable
        lines = [
            "process relay {",
            f"  run {python} {RELAY} {self.events} {self.fifo};",
            "  encoder json;",
            "}",
        ]
        for n in self.neighbors:
            local = n.local_address or self.own_address(ipv6=":" in n.address)
            lines += [
                f"neighbor {n.address} {{",
                f"  router-id {self.router_id};",
                f"  local-address {local};",
                f"  local-as {self.asn};",
                f"  peer-as {n.asn};",
                f"  hold-time {n.hold_time};",
                f"  connect {n.port};",
            ]
            if n.passive:
                lines.append("  passive true;")
            if n.password:
                lines.append(f'  md5-password "{n.password}";')
            if n.multihop_ttl:
                lines.append(f"  outgoing-ttl {n.multihop_ttl};")
            lines.append("  family {")
            lines += [f"    {family} unicast;" for family in n.families]
            lines.append("  }")
            lines.append("  capability {")
            lines.append("    route-refresh;")
            if not self.asn4:
                lines.append("    asn4 disable;")
            if n.graceful_restart:
                lines.append("    graceful-restart 120;")
            lines.append("  }")
            lines += [
                "  api {",
                "    processes [ relay ];",
                "    neighbor-changes;",
                "    receive { parsed; open; update; notification; refresh; }",
                "  }",
            ]
            if self._advertised:
                lines.append("  static {")
                lines += [f"    {self._route_command(r)};" for r in self._advertised.values()]
                lines.append("  }")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        exabgp = require_binary("exabgp")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.events.touch()
        conf = self.dir / "exabgp.conf"
        conf.write_text(self.render())
        env = {
            "exabgp.daemon.user": "root",
            "exabgp.daemon.drop": "false",
            "exabgp.daemon.daemonize": "false",
            "exabgp.tcp.port": str(self.listen_port),
            "exabgp.tcp.bind": " ".join(
                n.local_address or self.own_address(ipv6=":" in n.address) for n in self.neighbors
            ),
            "exabgp.api.ack": "false",
            "exabgp.api.cli": "false",
            "exabgp.log.destination": "stdout",
            "exabgp.log.level": "INFO",
        }
        self._proc = self.host.popen([exabgp, "server", str(conf)], name=f"exabgp-{self.asn}", env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise LabError(f"exabgp exited: {self._proc.log_text()[-3000:]}")
            if (self.dir / "relay.ready").exists():
                return
            time.sleep(0.1)
        raise LabError(f"exabgp relay did not start: {self._proc.log_text()[-3000:]}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        (self.dir / "relay.ready").unlink(missing_ok=True)

    def restart(self, routes: Sequence[Route] | None = None) -> None:
        """Stop and start again, originating `routes` from then on (default: the same as before)."""
        self.stop()
        if routes is not None:
            self._advertised = {r.prefix: r for r in routes}
        self.start()

    def pause(self) -> None:
        """SIGSTOP: ExaBGP freezes with its sockets open (the peer's hold timer must fire)."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self._proc.log_text() if self._proc is not None else ""

    def notifications(self, direction: str = "receive") -> list[tuple[str, int, int]]:
        """(peer, code, subcode) of every NOTIFICATION ExaBGP reported (received by default)."""
        found = []
        for message in self._messages():
            if message.get("type") != "notification":
                continue
            neighbor = message.get("neighbor", {})
            if neighbor.get("direction", "receive") != direction:
                continue
            body = neighbor.get("notification", {})
            peer = str(neighbor.get("address", {}).get("peer"))
            found.append((peer, int(body.get("code", -1)), int(body.get("subcode", -1))))
        return found

    def refreshes(self) -> list[tuple[str, str, str]]:
        """(peer, afi, subtype) of every ROUTE-REFRESH ExaBGP received; subtype "query" is a request
        (RFC 2918), "begin"/"end" demarcate a re-advertisement (RFC 7313)."""
        found = []
        for message in self._messages():
            if message.get("type") != "refresh":
                continue
            neighbor = message.get("neighbor", {})
            body = neighbor.get("route-refresh", {})
            peer = str(neighbor.get("address", {}).get("peer"))
            found.append((peer, str(body.get("afi")), str(body.get("subtype"))))
        return found

    def announcements(self, prefix: str) -> int:
        """How many UPDATEs ExaBGP received that announced `prefix` (counts re-advertisements)."""
        count = 0
        for message in self._messages():
            if message.get("type") != "update":
                continue
            update = message.get("neighbor", {}).get("message", {}).get("update", {})
            for family, by_hop in (update.get("announce") or {}).items():
                if not family.endswith("unicast"):
                    continue
                for nlris in by_hop.values():
                    for nlri in nlris:
                        if (nlri["nlri"] if isinstance(nlri, dict) else str(nlri)) == prefix:
                            count += 1
        return count

    def origins(self) -> dict[str, str]:
        """ORIGIN ("igp", "egp", "incomplete") of the routes ExaBGP holds from its peers, by prefix."""
        found: dict[str, str] = {}
        for message in self._messages():
            if message.get("type") != "update":
                continue
            update = message.get("neighbor", {}).get("message", {}).get("update", {})
            origin = str(update.get("attribute", {}).get("origin", ""))
            for family, by_hop in (update.get("announce") or {}).items():
                if family.endswith("unicast"):
                    for nlris in by_hop.values():
                        for nlri in nlris:
                            found[nlri["nlri"] if isinstance(nlri, dict) else str(nlri)] = origin
        return found

    # -- InteropDaemon ------------------------------------------------------------------------

    def advertised_to(self, neighbor_address: str) -> dict[str, RouteView]:
        """ExaBGP's static routes are its Adj-RIB-Out: what `_route_command` tells it to send."""
        return {
            r.prefix: RouteView(
                prefix=r.prefix,
                next_hop=r.next_hop or self.own_address(ipv6=":" in r.prefix),
                as_path=(self.asn,) * (1 + r.as_path_prepend),
                med=r.med,
                communities=r.communities,
                large_communities=r.large_communities,
            )
            for r in self._advertised.values()
        }

    def session_view(self, neighbor_address: str) -> SessionView:
        """The neighbour's AS from ExaBGP's session reports; a capability counts as negotiated when
        ExaBGP sends it (its configuration) and the neighbour's OPEN, as ExaBGP parsed it, has it."""
        peer_asn: int | None = None
        received: dict[str, Any] = {}
        for message in self._messages():
            neighbor = message.get("neighbor", {})
            if neighbor.get("address", {}).get("peer") != neighbor_address:
                continue
            peer_asn = neighbor.get("asn", {}).get("peer", peer_asn)
            if message.get("type") == "open" and neighbor.get("direction") == "receive":
                received = neighbor.get("open", {}).get("capabilities", {})
        ours = next((n for n in self.neighbors if n.address == neighbor_address), None)
        return SessionView(
            peer_asn=peer_asn,
            four_octet_as=self.asn4 and "65" in received,
            graceful_restart=bool(ours and ours.graceful_restart) and "64" in received,
            # `capability { route-refresh; }` makes ExaBGP send both route refresh capabilities.
            enhanced_route_refresh="70" in received,
        )

    def received_notifications(self, neighbor_address: str) -> list[ReceivedNotification]:
        return [ReceivedNotification(c, s) for p, c, s in self.notifications() if p == neighbor_address]

    def refresh_requests_received(self, neighbor_address: str) -> int:
        return sum(1 for p, _afi, kind in self.refreshes() if p == neighbor_address and kind == "query")

    def updates_received_from(self, neighbor_address: str) -> int:
        """Prefix announcements in the UPDATEs from the neighbour (re-advertisements included)."""
        count = 0
        for message in self._messages():
            neighbor = message.get("neighbor", {})
            if message.get("type") != "update" or neighbor.get("address", {}).get("peer") != neighbor_address:
                continue
            update = neighbor.get("message", {}).get("update", {})
            for family, by_hop in (update.get("announce") or {}).items():
                if family.endswith("unicast"):
                    count += sum(len(nlris) for nlris in by_hop.values())
        return count

    def request_refresh(self, neighbor_address: str) -> None:
        """ROUTE-REFRESH for both families (ExaBGP sends it to every Established neighbour)."""
        for family in ("ipv4 unicast", "ipv6 unicast"):
            self.command(f"announce route-refresh {family}")

    def set_password(self, neighbor_address: str, password: str | None) -> None:
        """ExaBGP reads the key from its configuration: restart it with the new one."""
        self.stop()
        self.neighbors = [
            replace(n, password=password) if n.address == neighbor_address else n for n in self.neighbors
        ]
        self.start()

    def graceful_stop(self) -> None:
        """With graceful restart negotiated ExaBGP closes without a NOTIFICATION."""
        self.stop()

    def graceful_start(self, routes: Sequence[Route]) -> None:
        self._advertised = {r.prefix: r for r in routes}
        self.start()

    def command(self, line: str) -> None:
        """Send one API command to ExaBGP through the relay's FIFO."""
        deadline = time.monotonic() + 5
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the relay is between two opens of the FIFO
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        try:
            os.write(fd, (line.strip() + "\n").encode())
        finally:
            os.close(fd)

    def advertise(self, routes: Sequence[Route]) -> None:
        for route in routes:
            self._advertised[route.prefix] = route
            self.command(f"announce {self._route_command(route)}")

    def withdraw(self, prefixes: Sequence[str]) -> None:
        for prefix in prefixes:
            self._advertised.pop(prefix, None)
            self.command(f"withdraw route {prefix}")

    def _messages(self) -> list[dict[str, Any]]:
        out = []
        for line in self.events.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def session_state(self, neighbor_address: str) -> str:
        state = "Idle"
        for message in self._messages():
            neighbor = message.get("neighbor", {})
            if neighbor.get("address", {}).get("peer") != neighbor_address:
                continue
            if message.get("type") == "state":
                state = _STATE.get(str(neighbor.get("state")), state)
            elif message.get("type") == "update":
                state = "Established"
        return state

    def received_routes(self) -> dict[str, RouteView]:
        by_peer: dict[str, dict[str, RouteView]] = {}
        for message in self._messages():
            neighbor = message.get("neighbor", {})
            peer = str(neighbor.get("address", {}).get("peer"))
            routes = by_peer.setdefault(peer, {})
            if message.get("type") == "state" and neighbor.get("state") == "down":
                routes.clear()
                continue
            if message.get("type") != "update":
                continue
            update = neighbor.get("message", {}).get("update", {})
            attrs = update.get("attribute", {})
            for family, by_hop in (update.get("announce") or {}).items():
                if not family.endswith("unicast"):
                    continue
                for next_hop, nlris in by_hop.items():
                    for nlri in nlris:
                        prefix = nlri["nlri"] if isinstance(nlri, dict) else str(nlri)
                        routes[prefix] = _route_view(prefix, next_hop, attrs)
            for family, nlris in (update.get("withdraw") or {}).items():
                if not family.endswith("unicast"):
                    continue
                for nlri in nlris:
                    prefix = nlri["nlri"] if isinstance(nlri, dict) else str(nlri)
                    routes.pop(prefix, None)
        merged: dict[str, RouteView] = {}
        for routes in by_peer.values():
            merged.update(routes)
        return merged


def _route_view(prefix: str, next_hop: str, attrs: dict[str, Any]) -> RouteView:
    as_path = attrs.get("as-path", [])
    if isinstance(as_path, dict):  # segment form {"0": {"element": "as-sequence", "value": [...]}}
        flat: list[int] = []
        for seg in as_path.values():
            flat += [int(a) for a in seg.get("value", [])]
        as_path = flat
    communities = tuple(f"{a}:{b}" for a, b in attrs.get("community", []))
    large = tuple(f"{a}:{b}:{c}" for a, b, c in attrs.get("large-community", []))
    return RouteView(
        prefix=prefix,
        next_hop=next_hop,
        as_path=tuple(int(a) for a in as_path),
        med=attrs.get("med"),
        local_pref=attrs.get("local-preference"),
        communities=communities,
        large_communities=large,
    )
