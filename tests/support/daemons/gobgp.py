"""GoBGP (gobgpd + the gobgp CLI over its gRPC API) as a lab peer.

Each instance gets its own TOML config and its own API port on the namespace's loopback. GoBGP has
no BFD. Origination is `gobgp global rib add` with an explicit AS path for prepends (GoBGP adds its
own ASN once on eBGP export, so N prepends are N extra copies here).

Graceful restart (RFC 4724) as the restarting speaker: `crash()` kills gobgpd without a NOTIFICATION
and `restart_graceful()` starts it again with `-r` (Restart State bit, Forwarding State bit per
family), the neighbours administratively down until the routes are re-added, so that its End-of-RIB
follows the complete table. GoBGP never sends ROUTE-REFRESH: `softresetin` re-runs its import policy
over the Adj-RIB-In it keeps.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tests.support.daemons.base import (
    InteropDaemon,
    ReceivedNotification,
    Route,
    RouteView,
    SessionView,
)
from tests.support.netns import Host, LabError, ManagedProcess
from tests.support.prereq import require_binary

_STATES = {
    "idle": "Idle",
    "connect": "Connect",
    "active": "Active",
    "opensent": "OpenSent",
    "openconfirm": "OpenConfirm",
    "established": "Established",
    "1": "Idle",
    "2": "Connect",
    "3": "Active",
    "4": "OpenSent",
    "5": "OpenConfirm",
    "6": "Established",
}
_API_PORT = 50051
_ORIGINS = {0: "igp", 1: "egp", 2: "incomplete"}


class GobgpDaemon(InteropDaemon):
    """gobgpd; no Capability flags: it sends no ROUTE-REFRESH, always the 4-octet AS capability, and
    reports the code of a NOTIFICATION only on an Established session."""

    kind = "gobgp"

    def __init__(
        self,
        host: Host,
        *,
        origin: str | None = None,
        gr_restart_time: int = 120,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, **kwargs)
        self.dir = host.workdir / f"gobgp-{self.asn}-{id(self) % 10000}"
        self._proc: ManagedProcess | None = None
        self._advertised: dict[str, Route] = {}
        self.origin = origin  # "igp" | "egp" | "incomplete"; None: GoBGP's default for `rib add`
        self.gr_restart_time = gr_restart_time
        self._restarting = False  # render neighbours admin-down and pass -r (restart_graceful)

    def render(self) -> str:
        lines = [
            "[global.config]",
            f"  as = {self.asn}",
            f'  router-id = "{self.router_id}"',
            f"  port = {self.listen_port}",
        ]
        for n in self.neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{n.address}"',
                f"    peer-as = {n.asn}",
            ]
            if n.password:
                lines.append(f'    auth-password = "{n.password}"')
            if self._restarting:
                lines.append("    admin-down = true")
            lines += ["  [neighbors.transport.config]", f"    remote-port = {n.port}"]
            if n.local_address:
                lines.append(f'    local-address = "{n.local_address}"')
            if n.passive:
                lines.append("    passive-mode = true")
            lines += [
                "  [neighbors.timers.config]",
                f"    hold-time = {n.hold_time}",
                f"    keepalive-interval = {max(1, n.hold_time // 3)}",
                f"    connect-retry = {n.connect_retry}",
            ]
            if n.multihop_ttl:
                lines += [
                    "  [neighbors.ebgp-multihop.config]",
                    "    enabled = true",
                    f"    multihop-ttl = {n.multihop_ttl}",
                ]
            if n.graceful_restart:
                lines += [
                    "  [neighbors.graceful-restart.config]",
                    "    enabled = true",
                    f"    restart-time = {self.gr_restart_time}",
                ]
            for family in n.families:
                lines += [
                    "  [[neighbors.afi-safis]]",
                    "    [neighbors.afi-safis.config]",
                    f'      afi-safi-name = "{family}-unicast"',
                ]
                if n.graceful_restart:
                    lines += ["    [neighbors.afi-safis.mp-graceful-restart.config]", "      enabled = true"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        gobgpd = require_binary("gobgpd")
        require_binary("gobgp")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "gobgpd.toml"
        conf.write_text(self.render())
        argv = [
            gobgpd,
            "-f",
            str(conf),
            "-t",
            "toml",
            "--api-hosts",
            f"127.0.0.1:{_API_PORT}",
            "--pprof-disable",
            "-l",
            "info",
        ]
        if self._restarting:
            argv.append("-r")
        self._proc = self.host.popen(argv, name=f"gobgpd-{self.asn}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise LabError(f"gobgpd exited: {self._proc.log_text()[-2000:]}")
            if self.cli("global", check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise LabError("gobgpd API did not answer")
        if self._restarting:
            routes, self._advertised = list(self._advertised.values()), {}
            self.advertise(routes)
            for n in self.neighbors:
                self.cli("neighbor", n.address, "enable")
        elif self.routes:
            self.advertise(self.routes)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def crash(self) -> None:
        """SIGKILL: the sessions drop without a NOTIFICATION (what graceful restart is for)."""
        if self._proc is not None:
            self._proc.signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None

    def restart_graceful(self, routes: Sequence[Route] | None = None) -> None:
        """Crash, then start again as a restarting speaker (`-r`) originating `routes`.

        `routes` default to what was originated before. They are added while every neighbour is still
        administratively down; the neighbours are enabled afterwards, so GoBGP's End-of-RIB (sent once
        the peer's End-of-RIB arrived, RFC 4724 §4.1) follows the complete table.
        """
        self.crash()
        self.graceful_start(list(self._advertised.values()) if routes is None else routes)

    def graceful_stop(self) -> None:
        self.crash()

    def graceful_start(self, routes: Sequence[Route]) -> None:
        self._advertised = {r.prefix: r for r in routes}
        self._restarting = True
        try:
            self.start()
        finally:
            self._restarting = False

    def pause(self) -> None:
        """SIGSTOP: gobgpd freezes with its sockets open (the peer's hold timer must fire)."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self._proc.log_text() if self._proc is not None else ""

    def log_records(self) -> list[dict[str, Any]]:
        """gobgpd's JSON log lines (its own record of notifications, state changes, ...)."""
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def notifications_received(self, neighbor_address: str) -> list[tuple[int, int]]:
        """(code, subcode) of each NOTIFICATION gobgpd logged as received from the neighbour.

        GoBGP logs the code only for a session that was Established; before that (OpenSent,
        OpenConfirm) it closes on any unexpected message and only counts it (`message_counters`).
        """
        return [
            (int(r["Code"]), int(r["Subcode"]))
            for r in self.log_records()
            if r.get("msg") == "received notification" and r.get("Key") == neighbor_address
        ]

    def neighbor_json(self, neighbor_address: str) -> dict[str, Any]:
        proc = self.cli("-j", "neighbor", neighbor_address, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def message_counters(self, neighbor_address: str) -> dict[str, dict[str, int]]:
        """GoBGP's per-type message counters: {"sent": {"update": n, ...}, "received": {...}}."""
        messages = self.neighbor_json(neighbor_address).get("state", {}).get("messages", {})
        return {
            direction: {k: int(v) for k, v in messages.get(direction, {}).items()}
            for direction in ("sent", "received")
        }

    def advertised_to(self, neighbor_address: str) -> dict[str, RouteView]:
        """GoBGP's Adj-RIB-Out towards the neighbour: what it says it sent, after its export rules."""
        routes: dict[str, RouteView] = {}
        for family in ("ipv4", "ipv6"):
            proc = self.cli("-j", "neighbor", neighbor_address, "adj-out", "-a", family, check=False)
            if proc.returncode != 0 or not proc.stdout.strip():
                continue
            for prefix, paths in json.loads(proc.stdout).items():
                for path in paths:
                    view = _route_view(prefix, path, local_ok=True)
                    if view is not None:
                        routes[prefix] = replace(view, local_pref=None)
        return routes

    def origins(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for family in ("ipv4", "ipv6"):
            proc = self.cli("-j", "global", "rib", "-a", family, check=False)
            if proc.returncode != 0 or not proc.stdout.strip():
                continue
            for prefix, paths in json.loads(proc.stdout).items():
                for path in paths:
                    if _route_view(prefix, path) is None:
                        continue
                    for attr in path.get("attrs", []):
                        if attr.get("type") == 1:
                            found[prefix] = _ORIGINS.get(int(attr.get("value", 0)), "?")
        return found

    # -- InteropDaemon ------------------------------------------------------------------------

    def session_view(self, neighbor_address: str) -> SessionView:
        state = self.neighbor_json(neighbor_address).get("state", {})

        def both(capability: str) -> bool:
            return all(
                any(c.get("type_url", "").endswith(capability) for c in state.get(side, []))
                for side in ("local_cap", "remote_cap")
            )

        return SessionView(
            peer_asn=state.get("peer_asn"),
            four_octet_as=both(".FourOctetASNCapability"),
            graceful_restart=both(".GracefulRestartCapability"),
            enhanced_route_refresh=both(".EnhancedRouteRefreshCapability"),
        )

    def received_notifications(self, neighbor_address: str) -> list[ReceivedNotification]:
        return [ReceivedNotification(c, s) for c, s in self.notifications_received(neighbor_address)]

    def notifications_received_count(self, neighbor_address: str) -> int:
        """GoBGP's own counter: it also counts what it received before Established (no code logged)."""
        return self.message_counters(neighbor_address)["received"].get("notification", 0)

    def refresh_requests_received(self, neighbor_address: str) -> int:
        return self.message_counters(neighbor_address)["received"].get("refresh", 0)

    def updates_received_from(self, neighbor_address: str) -> int:
        return self.message_counters(neighbor_address)["received"].get("update", 0)

    def set_password(self, neighbor_address: str, password: str | None) -> None:
        """GoBGP reads the key from its config: restart it with the new one."""
        self.stop()
        self.neighbors = [
            replace(n, password=password) if n.address == neighbor_address else n for n in self.neighbors
        ]
        self.routes, self._advertised = list(self._advertised.values()), {}
        self.start()

    def cli(self, *args: str, check: bool = True) -> Any:
        return self.host.run("gobgp", "-p", str(_API_PORT), "-u", "127.0.0.1", *args, check=check, timeout=20)

    def advertise(self, routes: Sequence[Route]) -> None:
        for route in routes:
            family = "ipv6" if ":" in route.prefix else "ipv4"
            if route.prefix in self._advertised:
                self.cli("global", "rib", "-a", family, "del", route.prefix)
            args = ["global", "rib", "-a", family, "add", route.prefix]
            # An explicit next hop of the route's family: over an IPv6 session GoBGP would otherwise
            # give IPv4 routes an IPv6 next hop (RFC 8950), which most peers refuse.
            args += ["nexthop", route.next_hop or self.own_address(ipv6=family == "ipv6")]
            if route.as_path_prepend:
                args += ["aspath", " ".join([str(self.asn)] * route.as_path_prepend)]
            if route.med is not None:
                args += ["med", str(route.med)]
            if route.communities:
                args += ["community", ",".join(route.communities)]
            if route.large_communities:
                args += ["large-community", ",".join(route.large_communities)]
            if self.origin is not None:
                args += ["origin", self.origin]
            self.cli(*args)
            self._advertised[route.prefix] = route

    def withdraw(self, prefixes: Sequence[str]) -> None:
        for prefix in prefixes:
            family = "ipv6" if ":" in prefix else "ipv4"
            self.cli("global", "rib", "-a", family, "del", prefix)
            self._advertised.pop(prefix, None)

    def session_state(self, neighbor_address: str) -> str:
        proc = self.cli("-j", "neighbor", neighbor_address, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return "Idle"
        data = json.loads(proc.stdout)
        state = data.get("state", {})
        raw = str(state.get("session_state", state.get("session-state", "idle"))).lower()
        return _STATES.get(raw, "Idle")

    def received_routes(self) -> dict[str, RouteView]:
        routes: dict[str, RouteView] = {}
        for family in ("ipv4", "ipv6"):
            proc = self.cli("-j", "global", "rib", "-a", family, check=False)
            if proc.returncode != 0 or not proc.stdout.strip():
                continue
            for prefix, paths in json.loads(proc.stdout).items():
                for path in paths:
                    view = _route_view(prefix, path)
                    if view is not None and (prefix not in routes or path.get("best")):
                        routes[prefix] = view
        return routes


def _route_view(prefix: str, path: dict[str, Any], local_ok: bool = False) -> RouteView | None:
    source = path.get("neighbor-ip") or path.get("source-id") or ""
    if not local_ok and (source in ("", "<nil>", "0.0.0.0", "::") or path.get("is-local")):
        return None
    as_path: tuple[int, ...] = ()
    next_hop = med = local_pref = None
    communities: tuple[str, ...] = ()
    large: tuple[str, ...] = ()
    for attr in path.get("attrs", []):
        kind = attr.get("type")
        if kind == 2:
            as_path = tuple(a for seg in attr.get("as_paths", []) for a in seg.get("asns", []))
        elif kind == 3:
            next_hop = attr.get("nexthop")
        elif kind == 4:
            med = attr.get("metric")
        elif kind == 5:
            local_pref = attr.get("value")
        elif kind == 8:
            communities = tuple(f"{c >> 16}:{c & 0xFFFF}" for c in attr.get("communities", []))
        elif kind == 14:
            next_hop = attr.get("nexthop", next_hop)
        elif kind == 32:
            large = tuple(
                f"{v.get('ASN', v.get('asn'))}:{v.get('LocalData1', v.get('local_data1'))}:"
                f"{v.get('LocalData2', v.get('local_data2'))}"
                for v in attr.get("value", [])
            )
    return RouteView(prefix, next_hop, as_path, med, local_pref, communities, large)
