"""FRR (zebra + bgpd + bfdd + staticd) as a lab appliance/peer.

Each instance keeps its configs, pid files, vty sockets and zserv socket in its own directory under
the host's work dir (owned by the `frr` user: FRR daemons start as root and drop to `frr`, and
vtysh must reach their sockets). Control goes through `vtysh --vty_socket DIR` with JSON output.
FRR can only install into the main table here (no VRF on this kernel).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tests.support.daemons.base import (
    BfdView,
    Capability,
    InteropDaemon,
    Neighbor,
    ReceivedNotification,
    Route,
    RouteView,
    SessionView,
)
from tests.support.netns import Host, LabError, ManagedProcess
from tests.support.prereq import missing

FRR_DIR = Path("/usr/lib/frr")
DAEMONS = ("zebra", "staticd", "bfdd", "bgpd")
_BGP_STATE = {"Clearing": "Idle", "Deleted": "Idle"}
_NOTIFICATION_LOG = re.compile(
    r"%NOTIFICATION: (?P<dir>received from|sent to) neighbor (?P<peer>\S+) "
    r"(?P<code>\d+)/(?P<subcode>\d+) \((?P<text>[^)]*)\)"
)
_BFD_STATE = {"up": "Up", "down": "Down", "init": "Init", "shutdown": "AdminDown", "adminDown": "AdminDown"}


def _family(prefix: str) -> str:
    return "ipv6" if ":" in prefix else "ipv4"


@dataclass(frozen=True)
class FrrNeighbor(Neighbor):
    """A neighbour with FRR-only options."""

    # False: `dont-capability-negotiate`, a plain RFC 4271 OPEN (IPv4 unicast, 2-octet AS_PATH).
    capability_negotiation: bool = True


@dataclass(frozen=True)
class FrrNotification:
    """The last NOTIFICATION FRR exchanged with a neighbour, as its `show bgp neighbors` reports it."""

    received: bool  # True: the neighbour sent it to FRR
    code: int
    subcode: int
    text: str  # FRR's wording, e.g. "OPEN Message Error/Bad Peer AS"


class FrrDaemon(InteropDaemon):
    kind = "frr"
    capabilities = frozenset(
        {
            Capability.SENDS_ROUTE_REFRESH,
            Capability.NOTIFICATION_CODE_BEFORE_ESTABLISHED,
            Capability.ENHANCED_ROUTE_REFRESH,
        }
    )
    notification_texts = {
        (2, 2): "OPEN Message Error/Bad Peer AS",
        (6, 1): "Cease/Maximum Number of Prefixes Reached",
    }

    def __init__(self, host: Host, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.dir = host.workdir / f"frr-{self.asn}-{id(self) % 10000}"
        self._procs: list[ManagedProcess] = []
        self._advertised: dict[str, Route] = {r.prefix: r for r in self.routes}
        self._route_maps: dict[str, str] = {}
        # Graceful restart knobs (global in FRR), used when a neighbour has graceful_restart:
        self.gr_preserve_fw_state = False  # the F bit (RFC 4724 §3): forwarding kept across a restart
        self.gr_restart_time: int | None = None  # seconds; None: FRR's default (120)

    # -- configuration ------------------------------------------------------------------------

    def _route_map(self, route: Route, index: int) -> list[str]:
        name = f"ORIG{index}"
        self._route_maps[route.prefix] = name
        lines = [f"route-map {name} permit 10"]
        if route.as_path_prepend:
            lines.append(" set as-path prepend " + " ".join([str(self.asn)] * route.as_path_prepend))
        if route.med is not None:
            lines.append(f" set metric {route.med}")
        if route.communities:
            lines.append(" set community " + " ".join(route.communities))
        if route.large_communities:
            lines.append(" set large-community " + " ".join(route.large_communities))
        if route.next_hop:
            if ":" in route.next_hop:
                lines.append(f" set ipv6 next-hop global {route.next_hop}")
            else:
                lines.append(f" set ip next-hop {route.next_hop}")
        lines.append("exit")
        return lines

    def _bgpd_conf(self) -> str:
        lines = [f"hostname {self.host.name}-bgpd", f"log file {self.dir}/bgpd.log informational", "!"]
        for i, route in enumerate(self._advertised.values()):
            lines += self._route_map(route, i)
        lines += [
            "route-map PERMIT_ALL permit 10",
            "exit",
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            " no bgp network import-check",
            " bgp log-neighbor-changes",  # NOTIFICATIONs sent and received go to bgpd.log
            " bgp graceful-restart" if any(n.graceful_restart for n in self.neighbors) else " !",
        ]
        if any(n.graceful_restart for n in self.neighbors):
            if self.gr_preserve_fw_state:
                lines.append(" bgp graceful-restart preserve-fw-state")
            if self.gr_restart_time is not None:
                lines.append(f" bgp graceful-restart restart-time {self.gr_restart_time}")
        for index, n in enumerate(self.neighbors):
            a = n.address
            lines.append(f" neighbor {a} remote-as {n.asn}")
            if n.port != 179:
                lines.append(f" neighbor {a} port {n.port}")
            if n.local_address:
                lines.append(f" neighbor {a} update-source {n.local_address}")
            if n.passive:
                lines.append(f" neighbor {a} passive")
            if n.password:
                lines.append(f" neighbor {a} password {n.password}")
            if n.multihop_ttl:
                lines.append(f" neighbor {a} ebgp-multihop {n.multihop_ttl}")
            keepalive = max(1, n.hold_time // 3) if n.hold_time else 0
            lines.append(f" neighbor {a} timers {keepalive} {n.hold_time}")
            lines.append(f" neighbor {a} timers connect {n.connect_retry}")
            if n.bfd is not None:
                lines.append(f" neighbor {a} bfd profile P{index}")
            if n.graceful_restart:
                lines.append(f" neighbor {a} graceful-restart")
            if isinstance(n, FrrNeighbor) and not n.capability_negotiation:
                lines.append(f" neighbor {a} dont-capability-negotiate")
        for family in ("ipv4", "ipv6"):
            lines.append(f" address-family {family} unicast")
            for n in self.neighbors:
                if family in n.families:
                    lines.append(f"  neighbor {n.address} activate")
                    lines.append(f"  neighbor {n.address} route-map PERMIT_ALL in")
                    lines.append(f"  neighbor {n.address} route-map PERMIT_ALL out")
            for prefix, _route in self._advertised.items():
                if _family(prefix) == family:
                    lines.append(f"  network {prefix} route-map {self._route_maps[prefix]}")
            lines.append(" exit-address-family")
        lines.append("exit")
        return "\n".join(lines) + "\n"

    def _bfdd_conf(self) -> str:
        lines = [f"hostname {self.host.name}-bfdd", f"log file {self.dir}/bfdd.log informational", "bfd"]
        for index, n in enumerate(self.neighbors):
            if n.bfd is None:
                continue
            lines += [
                f" profile P{index}",
                f"  transmit-interval {n.bfd.min_tx_ms}",
                f"  receive-interval {n.bfd.min_rx_ms}",
                f"  detect-multiplier {n.bfd.multiplier}",
                " exit",
            ]
            peer = f" peer {n.address}"
            if n.bfd_multihop:
                peer += " multihop"
            if n.local_address:
                peer += f" local-address {n.local_address}"
            lines += [peer, f"  profile P{index}", " exit"]
        lines.append("exit")
        return "\n".join(lines) + "\n"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for daemon in DAEMONS:
            if not (FRR_DIR / daemon).exists():
                missing(f"FRR's {daemon} is not installed (Debian package frr)")
        self.dir.mkdir(parents=True, exist_ok=True)
        frr = pwd.getpwnam("frr")
        os.chown(self.dir, frr.pw_uid, frr.pw_gid)
        confs = {
            "zebra": f"hostname {self.host.name}-zebra\nlog file {self.dir}/zebra.log informational\n",
            "staticd": f"hostname {self.host.name}-staticd\n",
            "bfdd": self._bfdd_conf(),
            "bgpd": self._bgpd_conf(),
        }
        for daemon, text in confs.items():
            path = self.dir / f"{daemon}.conf"
            path.write_text(text)
            os.chown(path, frr.pw_uid, frr.pw_gid)
        zserv = self.dir / "zserv.api"
        for daemon in DAEMONS:
            argv = self._argv(daemon)
            self._procs.append(self.host.popen(argv, name=f"frr-{daemon}-{self.asn}"))
            if daemon == "zebra":
                self._wait_for(zserv.exists, "zebra's zserv socket")
        self._wait_for(self._bgpd_answers, "bgpd to answer vtysh")

    def _argv(self, daemon: str) -> list[str]:
        argv = [
            str(FRR_DIR / daemon),
            "-f",
            str(self.dir / f"{daemon}.conf"),
            "-i",
            str(self.dir / f"{daemon}.pid"),
            "-z",
            str(self.dir / "zserv.api"),
            "--vty_socket",
            str(self.dir),
            "-u",
            "frr",
            "-g",
            "frr",
            "-P",
            "0",
            "--log",
            f"file:{self.dir}/{daemon}.out",
        ]
        if daemon == "bgpd":
            argv += ["-p", str(self.listen_port)]
        if daemon == "bfdd":
            argv += ["--bfdctl", str(self.dir / "bfdd.sock")]
        return argv

    def _wait_for(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self._procs:
                if not proc.alive():
                    raise LabError(f"FRR {proc.name} exited: {proc.log_text()[-2000:]}")
            if predicate():
                return
            time.sleep(0.1)
        raise LabError(f"FRR: timed out waiting for {what}")

    def _bgpd_answers(self) -> bool:
        return bool(self.vtysh("show bgp summary json", check=False).returncode == 0)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def restart(self) -> None:
        """Stop and start again; with graceful restart configured, a graceful restart of bgpd only.

        FRR's bgpd sends Cease/Peer De-configured when stopped with SIGTERM, and a NOTIFICATION ends
        graceful restart for the peer (RFC 4724 §4.2; RFC 8538 makes that Cease a Hard Reset). A control
        plane restart is therefore modelled the way it happens: bgpd dies without a NOTIFICATION
        (SIGKILL; the kernel closes its TCP connections) while zebra keeps the forwarding state, and a
        new bgpd starts with the same configuration.
        """
        if self._procs and any(n.graceful_restart for n in self.neighbors):
            self.restart_bgpd()
            return
        self.stop()
        for leftover in ("zserv.api", "bgpd.vty", "zebra.vty", "bfdd.vty", "staticd.vty", "bfdd.sock"):
            (self.dir / leftover).unlink(missing_ok=True)
        self.start()

    def _bgpd(self) -> ManagedProcess:
        for proc in self._procs:
            if proc.name.startswith("frr-bgpd-"):
                return proc
        raise LabError("FRR bgpd is not running")

    def restart_bgpd(self, routes: Sequence[Route] | None = None) -> None:
        """Kill bgpd abruptly (no NOTIFICATION, connections closed by the kernel) and start it again.

        `routes`: what the new bgpd originates instead of the current set (a restart that changes the
        table, so a test can tell refreshed routes from stale ones).
        """
        self.graceful_stop()
        self._start_bgpd(routes)

    def graceful_stop(self) -> None:
        """SIGKILL bgpd: no NOTIFICATION (SIGTERM would send Cease), zebra keeps the forwarding state."""
        bgpd = self._bgpd()
        bgpd.signal(signal.SIGKILL)
        bgpd.wait(timeout=10)
        self._procs.remove(bgpd)
        (self.dir / "bgpd.vty").unlink(missing_ok=True)

    def graceful_start(self, routes: Sequence[Route]) -> None:
        self._start_bgpd(routes)

    def _start_bgpd(self, routes: Sequence[Route] | None) -> None:
        if routes is not None:
            self._advertised = {r.prefix: r for r in routes}
            self._route_maps.clear()
            conf = self.dir / "bgpd.conf"
            conf.write_text(self._bgpd_conf())
            frr = pwd.getpwnam("frr")
            os.chown(conf, frr.pw_uid, frr.pw_gid)
        self._procs.append(self.host.popen(self._argv("bgpd"), name=f"frr-bgpd-{self.asn}"))
        self._wait_for(self._bgpd_answers, "bgpd to answer vtysh after its restart")

    def pause(self) -> None:
        """SIGSTOP bgpd: it freezes with its TCP connections open (the neighbour's hold timer must fire)."""
        self._bgpd().signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._bgpd().signal(signal.SIGCONT)

    # -- control ------------------------------------------------------------------------------

    def vtysh(self, *commands: str, check: bool = True) -> Any:
        argv = ["vtysh", "--vty_socket", str(self.dir)]
        for command in commands:
            argv += ["-c", command]
        vtysh = shutil.which("vtysh") or "/usr/bin/vtysh"
        argv[0] = vtysh
        return self.host.run(*argv, check=check, timeout=20)

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command).stdout
        return json.loads(out) if out.strip() else {}

    def configure(self, lines: Sequence[str]) -> None:
        self.vtysh("configure terminal", *lines)

    def advertise(self, routes: Sequence[Route]) -> None:
        lines: list[str] = []
        for route in routes:
            self._advertised[route.prefix] = route
            index = len(self._route_maps) + 1000
            lines += self._route_map(route, index)
        lines.append(f"router bgp {self.asn}")
        for route in routes:
            lines += [
                f" address-family {_family(route.prefix)} unicast",
                f"  network {route.prefix} route-map {self._route_maps[route.prefix]}",
                " exit-address-family",
            ]
        self.configure(lines)

    def withdraw(self, prefixes: Sequence[str]) -> None:
        lines = [f"router bgp {self.asn}"]
        for prefix in prefixes:
            self._advertised.pop(prefix, None)
            lines += [
                f" address-family {_family(prefix)} unicast",
                f"  no network {prefix}",
                " exit-address-family",
            ]
        self.configure(lines)

    def session_state(self, neighbor_address: str) -> str:
        data = self.vtysh_json(f"show bgp neighbors {neighbor_address} json")
        state = data.get(neighbor_address, {}).get("bgpState", "Idle")
        return str(_BGP_STATE.get(state, state))

    def neighbor(self, neighbor_address: str) -> dict[str, Any]:
        """FRR's full `show bgp neighbors X json` view (messageStats, gracefulRestartInfo, ...)."""
        data: dict[str, Any] = self.vtysh_json(f"show bgp neighbors {neighbor_address} json")
        return dict(data.get(neighbor_address, {}))

    def message_stats(self, neighbor_address: str) -> dict[str, int]:
        """Messages exchanged: updatesSent/Recv, routeRefreshSent/Recv, notificationsSent/Recv, ..."""
        stats = self.neighbor(neighbor_address).get("messageStats", {})
        return {k: int(v) for k, v in stats.items()}

    def last_notification(self, neighbor_address: str) -> FrrNotification | None:
        """The last NOTIFICATION sent or received on this neighbour's session, if any."""
        view = self.neighbor(neighbor_address)
        code = view.get("lastErrorCodeSubcode")
        if not code:
            return None
        received = "received" in str(view.get("lastResetDueTo", "")).lower()
        text = str(view.get("lastNotificationReason", view.get("lastResetDueTo", "")))
        return FrrNotification(received, int(code[:2], 16), int(code[2:4], 16), text)

    def notifications(self, neighbor_address: str) -> list[FrrNotification]:
        """Every NOTIFICATION bgpd logged for this neighbour, oldest first (`bgp log-neighbor-changes`).

        Unlike `last_notification` this keeps history: a later exchange (FRR answering a NOTIFICATION
        received in OpenSent with an FSM error, RFC 4271 §8.2.2) does not hide an earlier one.
        """
        try:
            text = (self.dir / "bgpd.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        found = []
        for match in _NOTIFICATION_LOG.finditer(text):
            if match.group("peer") == neighbor_address:
                found.append(
                    FrrNotification(
                        match.group("dir") == "received from",
                        int(match.group("code")),
                        int(match.group("subcode")),
                        match.group("text"),
                    )
                )
        return found

    # -- InteropDaemon ------------------------------------------------------------------------

    def originated_as(self, route: Route) -> Route:
        """A `network` statement without a MED gets MED 0 from FRR."""
        return route if route.med is not None else replace(route, med=0)

    def advertised_to(self, neighbor_address: str) -> dict[str, RouteView]:
        """From `advertised-routes`: AS path and MED as FRR shows them (its own ASN added on the wire);
        its JSON has no communities, so those are the ones its route-maps set."""
        routes = {}
        for prefix, view in self.advertised_routes(neighbor_address).items():
            configured = self._advertised.get(prefix, Route(prefix))
            routes[prefix] = replace(
                view,
                as_path=(self.asn, *view.as_path),
                next_hop=view.next_hop or self.own_address(ipv6=":" in prefix),
                local_pref=None,
                communities=configured.communities,
                large_communities=configured.large_communities,
            )
        return routes

    def session_view(self, neighbor_address: str) -> SessionView:
        """Graceful restart counts only with FRR in Restart mode and the neighbour a helper or restarter."""
        view = self.neighbor(neighbor_address)
        caps = view.get("neighborCapabilities", {})
        gr = view.get("gracefulRestartInfo", {})
        return SessionView(
            peer_asn=view.get("remoteAs"),
            four_octet_as=caps.get("4byteAs") == "advertisedAndReceived",
            graceful_restart=caps.get("gracefulRestart") == "advertisedAndReceived"
            and gr.get("localGrMode") == "Restart"
            and gr.get("remoteGrMode") in ("Helper", "Restart"),
            enhanced_route_refresh=caps.get("enhancedRouteRefresh") == "advertisedAndReceived",
        )

    def received_notifications(self, neighbor_address: str) -> list[ReceivedNotification]:
        return [
            ReceivedNotification(n.code, n.subcode, n.text)
            for n in self.notifications(neighbor_address)
            if n.received
        ]

    def refresh_requests_received(self, neighbor_address: str) -> int:
        return self.message_stats(neighbor_address).get("routeRefreshRecv", 0)

    def updates_received_from(self, neighbor_address: str) -> int:
        return self.message_stats(neighbor_address).get("updatesRecv", 0)

    def request_refresh(self, neighbor_address: str) -> None:
        self.soft_clear_in(neighbor_address)

    def origins(self) -> dict[str, str]:
        return {
            prefix: str(path.get("origin", "")).lower()
            for prefix, path in self._rib_paths()
            if _route_view(prefix, path) is not None
        }

    def _rib_paths(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(prefix, path) of every path in FRR's RIB (`show bgp ... json detail`), both families."""
        for family in ("ipv4", "ipv6"):
            data = self.vtysh_json(f"show bgp {family} unicast json detail") or {}
            for prefix, entry in (data.get("routes") or {}).items():
                for path in entry.get("paths", entry) if isinstance(entry, dict) else entry:
                    yield prefix, path

    def soft_clear_in(self, neighbor_address: str) -> None:
        """`clear bgp X soft in`: ask the neighbour for its routes again (ROUTE-REFRESH, RFC 2918)."""
        self.vtysh(f"clear bgp {neighbor_address} soft in")

    def set_password(self, neighbor_address: str, password: str | None) -> None:
        """Change (or remove) the TCP-MD5 key of a neighbour at run time."""
        line = (
            f" neighbor {neighbor_address} password {password}"
            if password
            else (f" no neighbor {neighbor_address} password")
        )
        self.configure([f"router bgp {self.asn}", line])

    def advertised_routes(self, neighbor_address: str) -> dict[str, RouteView]:
        """FRR's Adj-RIB-Out towards a neighbour: MED and AS path (before FRR prepends its own ASN).

        Next hop None means "self" (FRR shows 0.0.0.0 / :: for what it originates).
        """
        routes: dict[str, RouteView] = {}
        for family in ("ipv4", "ipv6"):
            data = self.vtysh_json(
                f"show bgp {family} unicast neighbors {neighbor_address} advertised-routes json"
            )
            for prefix, entry in (data.get("advertisedRoutes") or {}).items():
                hop = entry.get("nextHop") or entry.get("nextHopGlobal")
                routes[prefix] = RouteView(
                    prefix=prefix,
                    next_hop=None if hop in (None, "0.0.0.0", "::") else str(hop),
                    as_path=tuple(int(x) for x in str(entry.get("path", "")).split() if x.isdigit()),
                    med=entry.get("metric"),
                    local_pref=entry.get("locPrf"),
                )
        return routes

    def received_routes(self) -> dict[str, RouteView]:
        """The best learned path per prefix (else the first learned one)."""
        routes: dict[str, RouteView] = {}
        best: set[str] = set()
        for prefix, path in self._rib_paths():
            view = _route_view(prefix, path)
            if view is None or prefix in best:
                continue
            if path.get("bestpath", {}).get("overall", True):
                routes[prefix] = view
                best.add(prefix)
            else:
                routes.setdefault(prefix, view)
        return routes

    def bfd_sessions(self) -> dict[str, BfdView]:
        sessions: dict[str, BfdView] = {}
        for peer in self.vtysh_json("show bfd peers json") or []:
            sessions[peer["peer"]] = BfdView(
                peer=peer["peer"],
                state=_BFD_STATE.get(peer.get("status", "down"), "Down"),
                remote_state=None,
                diagnostic=peer.get("diagnostic"),
                tx_interval_ms=peer.get("transmit-interval"),
                rx_interval_ms=peer.get("receive-interval"),
                detect_multiplier=peer.get("detect-multiplier"),
                extra={
                    "remote-transmit-interval": str(peer.get("remote-transmit-interval")),
                    "remote-receive-interval": str(peer.get("remote-receive-interval")),
                    "remote-detect-multiplier": str(peer.get("remote-detect-multiplier")),
                    "remote-diagnostic": str(peer.get("remote-diagnostic")),
                },
            )
        return sessions


def _route_view(prefix: str, path: dict[str, Any]) -> RouteView | None:
    """One FRR JSON path -> RouteView; None for paths we originate ourselves."""
    peer = path.get("peer", {})
    peer_id = peer.get("peerId") if isinstance(peer, dict) else path.get("peerId")
    if peer_id in (None, "(unspec)", "0.0.0.0", "::"):
        return None
    aspath = path.get("aspath", {})
    as_string = aspath.get("string", "") if isinstance(aspath, dict) else str(path.get("path", ""))
    as_path = tuple(int(x) for x in as_string.replace("{", " ").replace("}", " ").split() if x.isdigit())
    hops = [h for h in path.get("nexthops") or [] if h.get("scope", "global") == "global"]
    next_hop = hops[0].get("ip") if hops else None
    communities = (
        path.get("community", {}).get("string", "") if isinstance(path.get("community"), dict) else ""
    )
    large = (
        path.get("largeCommunity", {}).get("string", "")
        if isinstance(path.get("largeCommunity"), dict)
        else ""
    )
    return RouteView(
        prefix=prefix,
        next_hop=next_hop,
        as_path=as_path,
        med=path.get("med", path.get("metric")),
        local_pref=path.get("localpref", path.get("locPrf")),
        communities=tuple(communities.split()),
        large_communities=tuple(large.split()),
    )
