"""BIRD 2 as a lab appliance/peer: bgp, static origination, bfd, controlled with birdc.

Traps: `rs` is a reserved word in BIRD's config language (protocols here are named peer_N);
BIRD 2.0.12 as a feeder can hold its last UPDATE for up to its ~3 s poll interval unless something
wakes it, so tests that time intake should not start the clock at `birdc configure`.
Origination uses blackhole static routes with per-prefix attributes set in each BGP export filter;
runtime advertise/withdraw rewrite the config and run `birdc configure` (sessions stay up).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from tests.support.prereq import require_binary

_BIRD_AUTH = {
    "simple": "simple",
    "md5": "keyed md5",
    "meticulous-md5": "meticulous keyed md5",
    "sha1": "keyed sha1",
    "meticulous-sha1": "meticulous keyed sha1",
}
_STATES = {
    "Idle": "Idle",
    "Connect": "Connect",
    "Active": "Active",
    "OpenSent": "OpenSent",
    "OpenConfirm": "OpenConfirm",
    "Established": "Established",
    "Close": "Idle",
    "Down": "Idle",
}


def _community(text: str) -> str:
    return "(" + text.replace(":", ",") + ")"


# BIRD's wording of the NOTIFICATIONs the interop tests provoke (RFC 4271 §4.5, RFC 4486).
BIRD_NOTIFICATIONS: dict[tuple[int, int], str] = {
    (2, 2): "Bad peer AS",
    (4, 0): "Hold timer expired",
    (6, 1): "Maximum number of prefixes reached",
    (6, 5): "Connection rejected",
}
_BIRD_NOTIFICATION_CODES = {text: code for code, text in BIRD_NOTIFICATIONS.items()}


@dataclass(frozen=True)
class BirdNeighbor(Neighbor):
    """A neighbour with BIRD-only options."""

    as4: bool = True  # False: `enable as4 off`, no 4-octet AS capability (2-octet AS_PATH, RFC 6793)


class BirdDaemon(InteropDaemon):
    kind = "bird"
    capabilities = frozenset(
        {
            Capability.SENDS_ROUTE_REFRESH,
            Capability.OLD_SPEAKER,
            Capability.NOTIFICATION_CODE_BEFORE_ESTABLISHED,
            Capability.ENHANCED_ROUTE_REFRESH,
        }
    )
    notification_texts = BIRD_NOTIFICATIONS

    def __init__(self, host: Host, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.dir = host.workdir / f"bird-{self.asn}-{id(self) % 10000}"
        self.ctl = self.dir / "bird.ctl"
        self.conf = self.dir / "bird.conf"
        self._proc: ManagedProcess | None = None
        self._advertised: dict[str, Route] = {r.prefix: r for r in self.routes}
        self.kernel_export = False
        self._recovery = False  # the next start is a graceful restart recovery (`bird -R`)

    # -- configuration ------------------------------------------------------------------------

    def _next_hop_v6(self) -> str | None:
        for cidr in self.host.addresses():
            if ":" in cidr and not cidr.startswith("fe80"):
                return cidr.split("/")[0]
        return None

    def _export_filter(self, name: str) -> list[str]:
        lines = [f"filter {name} {{", "  if source != RTS_STATIC then reject;"]
        for route in self._advertised.values():
            actions = []
            if route.as_path_prepend:
                actions += [f"bgp_path.prepend({self.asn});"] * route.as_path_prepend
            if route.med is not None:
                actions.append(f"bgp_med = {route.med};")
            for community in route.communities:
                actions.append(f"bgp_community.add({_community(community)});")
            for large in route.large_communities:
                actions.append(f"bgp_large_community.add({_community(large)});")
            if route.next_hop:
                actions.append(f"bgp_next_hop = {route.next_hop};")
            if actions:
                lines.append(f"  if net = {route.prefix} then {{ {' '.join(actions)} }}")
        lines += ["  accept;", "}"]
        return lines

    def render(self) -> str:
        lines = [
            f'log "{self.dir}/bird.log" all;',
            f"router id {self.router_id};",
            "protocol device { scan time 10; }",
            "protocol direct { ipv4; ipv6; }",
            "protocol kernel kern4 { ipv4 { import none; export "
            + ("where source = RTS_BGP" if self.kernel_export else "none")
            + "; }; learn off; }",
            "protocol kernel kern6 { ipv6 { import none; export "
            + ("where source = RTS_BGP" if self.kernel_export else "none")
            + "; }; learn off; }",
        ]
        v4 = [r for r in self._advertised if ":" not in r]
        v6 = [r for r in self._advertised if ":" in r]
        lines.append("protocol static orig4 { ipv4; " + " ".join(f"route {p} blackhole;" for p in v4) + " }")
        lines.append("protocol static orig6 { ipv6; " + " ".join(f"route {p} blackhole;" for p in v6) + " }")
        bfd_neighbors = [n for n in self.neighbors if n.bfd is not None]
        if bfd_neighbors:
            lines += self._bfd_protocol(bfd_neighbors)
        for index, n in enumerate(self.neighbors):
            lines += self._export_filter(f"out_{index}")
            lines += self._bgp_protocol(index, n)
        return "\n".join(lines) + "\n"

    def _bfd_options(self, n: Neighbor) -> list[str]:
        assert n.bfd is not None
        opts = [
            f"    min rx interval {n.bfd.min_rx_ms} ms;",
            f"    min tx interval {n.bfd.min_tx_ms} ms;",
            "    idle tx interval 1000 ms;",
            f"    multiplier {n.bfd.multiplier};",
        ]
        if n.bfd_auth is not None:
            opts.append(f"    authentication {_BIRD_AUTH[n.bfd_auth.type]};")
            opts.append(f'    password "{n.bfd_auth.secret}" {{ id {n.bfd_auth.key_id}; }};')
        return opts

    def _bfd_protocol(self, neighbors: Sequence[Neighbor]) -> list[str]:
        single = [n for n in neighbors if not n.bfd_multihop]
        multi = [n for n in neighbors if n.bfd_multihop]
        lines = ["protocol bfd bfd1 {"]
        if single:
            lines += ['  interface "*" {', *self._bfd_options(single[0]), "  };"]
        if multi:
            lines += ["  multihop {", *self._bfd_options(multi[0]), "  };"]
        for n in neighbors:
            entry = f"  neighbor {n.address}"
            if n.local_address:
                entry += f" local {n.local_address}"
            if n.bfd_multihop:
                entry += " multihop on"
            lines.append(entry + ";")
        lines.append("}")
        return lines

    def _bgp_protocol(self, index: int, n: Neighbor) -> list[str]:
        local = "local"
        if n.local_address:
            local += f" {n.local_address}"
        if self.listen_port != 179:
            local += f" port {self.listen_port}"
        local += f" as {self.asn};"
        lines = [
            f"protocol bgp peer_{index} {{",
            f"  {local}",
            f"  neighbor {n.address} port {n.port} as {n.asn};",
            f"  hold time {n.hold_time};" if n.hold_time else "  hold time 0;",
            f"  connect retry time {n.connect_retry};",
            "  connect delay time 1;",
            "  error wait time 1, 10;",
            "  debug { packets };",  # logs "Got ROUTE-REFRESH" (refresh_requests_received)
        ]
        if n.passive:
            lines.append("  passive on;")
        if n.password:
            lines.append(f'  password "{n.password}";')
        if n.multihop_ttl:
            lines.append(f"  multihop {n.multihop_ttl};")
        if n.graceful_restart:
            lines.append("  graceful restart on;")
        if n.bfd is not None:
            lines.append("  bfd on;")
        if isinstance(n, BirdNeighbor) and not n.as4:
            lines.append("  enable as4 off;")
        ipv4_transport = ":" not in n.address
        for family in ("ipv4", "ipv6"):
            if family not in n.families:
                continue
            channel = [f"  {family} {{", "    import all;", f"    export filter out_{index};"]
            if family == "ipv6" and ipv4_transport:
                hop = self._next_hop_v6()
                if hop:
                    channel.append(f"    next hop address {hop};")
            if family == "ipv4" and not ipv4_transport:
                channel.append("    extended next hop on;")
            if n.graceful_restart:
                channel.append("    graceful restart on;")
            lines += [*channel, "  };"]
        lines.append("}")
        return [line for line in lines if line]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        bird = require_binary("bird")
        require_binary("birdc")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render())
        argv = [bird, "-f", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.dir / "bird.pid")]
        if self._recovery:
            argv.append("-R")
            self._recovery = False
        self._proc = self.host.popen(argv, name=f"bird-{self.asn}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise LabError(f"bird exited: {self._proc.log_text()[-2000:]}")
            if self.ctl.exists() and self.birdc("show status", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise LabError("bird did not open its control socket")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        self.ctl.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start again; with graceful restart configured, a graceful restart (RFC 4724 §4.1)."""
        if self._proc is not None and any(n.graceful_restart for n in self.neighbors):
            self.graceful_restart()
            return
        self.stop()
        self.start()

    def graceful_restart(self, routes: Sequence[Route] | None = None) -> None:
        """`birdc graceful restart` (BIRD closes its sessions without a NOTIFICATION and exits), then
        `bird -R`: recovery mode, so its new OPEN has the Restart and Forwarding State bits set and it
        sends End-of-RIB after its table. `routes`: originate these instead of the current set."""
        self.graceful_stop()
        self.graceful_start(list(self._advertised.values()) if routes is None else routes)

    def graceful_stop(self) -> None:
        assert self._proc is not None
        self.birdc("graceful restart", check=False)
        try:
            self._proc.wait(timeout=10)
        finally:
            self.stop()

    def graceful_start(self, routes: Sequence[Route]) -> None:
        self._advertised = {r.prefix: r for r in routes}
        self._recovery = True
        self.start()

    def pause(self) -> None:
        """SIGSTOP: BIRD freezes with its TCP connections open (the neighbour's hold timer must fire)."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)

    def set_password(self, neighbor_address: str, password: str | None) -> None:
        """Change a neighbour's TCP-MD5 key and apply it with `birdc configure`."""
        self.neighbors = [
            replace(n, password=password) if n.address == neighbor_address else n for n in self.neighbors
        ]
        self.reconfigure()

    def reload_in(self, neighbor_address: str) -> None:
        """`birdc reload in`: BIRD asks the neighbour for its routes again (ROUTE-REFRESH, RFC 2918)."""
        out = self.birdc(f"reload in {self._protocol_name(neighbor_address)}").stdout
        if "reload" not in out.lower():
            raise LabError(f"birdc reload in: {out}")

    def protocol_text(self, neighbor_address: str) -> str:
        """`birdc show protocols all` for the neighbour's BGP protocol, as BIRD prints it."""
        return str(
            self.birdc(f"show protocols all {self._protocol_name(neighbor_address)}", check=False).stdout
        )

    def last_error(self, neighbor_address: str) -> str | None:
        """BIRD's "Last error" of the session, e.g. "Received: Bad peer AS" or "Hold timer expired"."""
        match = re.search(r"Last error:\s+(.+)", self.protocol_text(neighbor_address))
        return match.group(1).strip() if match else None

    def route_stats(self, neighbor_address: str) -> dict[str, dict[str, dict[str, int | None]]]:
        """Per channel ("ipv4", "ipv6"): the "Route change stats" rows, e.g. stats["ipv4"]["Import updates"]
        ["received"]; "---" cells are None."""
        stats: dict[str, dict[str, dict[str, int | None]]] = {}
        channel = None
        columns: list[str] = []
        for line in self.protocol_text(neighbor_address).splitlines():
            stripped = line.strip()
            if stripped.startswith("Channel "):
                channel = stripped.split()[1]
                stats[channel] = {}
            elif stripped.startswith("Route change stats:"):
                columns = stripped.split(":", 1)[1].split()
            elif (
                channel is not None
                and columns
                and re.match(r"^(Import|Export) (updates|withdraws):", stripped)
            ):
                name, values = stripped.split(":", 1)
                cells = [None if v == "---" else int(v) for v in values.split()]
                stats[channel][name] = dict(zip(columns, cells, strict=True))
        return stats

    def exported_routes(self, neighbor_address: str) -> dict[str, RouteView]:
        """What BIRD exports to a neighbour after its export filter (`show route all export`).

        The AS path holds the filter's prepends only (BIRD adds its own ASN when it encodes the
        UPDATE); next hop None means "self".
        """
        name = self._protocol_name(neighbor_address)
        routes: dict[str, RouteView] = {}
        for table in ("master4", "master6"):
            out = self.birdc(f"show route all table {table} export {name}", check=False).stdout
            routes.update(parse_routes(out, learned_only=False))
        return routes

    def notifications_received(self, neighbor_address: str) -> list[tuple[int, int, str]]:
        """NOTIFICATIONs BIRD logged as received from a neighbour, oldest first: (code, subcode, text).

        BIRD logs only its own wording ("Received: Bad peer AS"); codes come from BIRD_NOTIFICATIONS,
        (-1, -1) for wording not listed there.
        """
        name = self._protocol_name(neighbor_address)
        found = []
        for line in self.log_lines():
            match = re.search(rf"\b{name}: Received: (.+)$", line)
            if match:
                text = match.group(1).strip()
                code, subcode = _BIRD_NOTIFICATION_CODES.get(text.split(" (")[0], (-1, -1))
                found.append((code, subcode, text))
        return found

    # -- InteropDaemon ------------------------------------------------------------------------

    def advertised_to(self, neighbor_address: str) -> dict[str, RouteView]:
        return {
            prefix: replace(
                view,
                as_path=(self.asn, *view.as_path),
                next_hop=view.next_hop or self.own_address(ipv6=":" in prefix),
                local_pref=None,
            )
            for prefix, view in self.exported_routes(neighbor_address).items()
        }

    def session_view(self, neighbor_address: str) -> SessionView:
        text = self.protocol_text(neighbor_address)
        asn = re.search(r"Neighbor AS:\s+(\d+)", text)
        local, _, remote = text.partition("Neighbor capabilities")
        return SessionView(
            peer_asn=int(asn.group(1)) if asn else None,
            four_octet_as=re.search(r"Session:\s+external AS4\b", text) is not None,
            graceful_restart="Graceful restart" in local and "Graceful restart" in remote,
            enhanced_route_refresh="Enhanced refresh" in local and "Enhanced refresh" in remote,
        )

    def received_notifications(self, neighbor_address: str) -> list[ReceivedNotification]:
        return [ReceivedNotification(c, s, t) for c, s, t in self.notifications_received(neighbor_address)]

    def refresh_requests_received(self, neighbor_address: str) -> int:
        name = self._protocol_name(neighbor_address)
        return sum(1 for line in self.log_lines() if re.search(rf"\b{name}: Got ROUTE-REFRESH$", line))

    def updates_received_from(self, neighbor_address: str) -> int:
        stats = self.route_stats(neighbor_address)
        return sum(int(channel["Import updates"]["received"] or 0) for channel in stats.values())

    def request_refresh(self, neighbor_address: str) -> None:
        self.reload_in(neighbor_address)

    def origins(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for table in ("master4", "master6"):
            prefix: str | None = None
            learned = False
            for line in self.birdc(f"show route all table {table}", check=False).stdout.splitlines():
                match = _ROUTE_LINE.match(line)
                if match:
                    prefix = match.group("prefix") or prefix
                    learned = match.group("proto").startswith("peer_")
                elif learned and prefix and line.strip().startswith("BGP.origin:"):
                    found.setdefault(prefix, line.split(":", 1)[1].strip().lower())
        return found

    def log_lines(self) -> list[str]:
        """BIRD's own log (`log ... all`)."""
        try:
            return (self.dir / "bird.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def birdc(self, command: str, check: bool = True) -> Any:
        return self.host.run("birdc", "-s", str(self.ctl), *command.split(), check=check, timeout=20)

    def reconfigure(self) -> None:
        self.conf.write_text(self.render())
        out = self.birdc("configure").stdout
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out and "unchanged" not in out:
            raise LabError(f"birdc configure: {out}")

    def advertise(self, routes: Sequence[Route]) -> None:
        for route in routes:
            self._advertised[route.prefix] = route
        self.reconfigure()

    def withdraw(self, prefixes: Sequence[str]) -> None:
        for prefix in prefixes:
            self._advertised.pop(prefix, None)
        self.reconfigure()

    def _protocol_name(self, neighbor_address: str) -> str:
        for index, n in enumerate(self.neighbors):
            if n.address == neighbor_address:
                return f"peer_{index}"
        raise KeyError(neighbor_address)

    def session_state(self, neighbor_address: str) -> str:
        out = self.birdc(f"show protocols all {self._protocol_name(neighbor_address)}", check=False).stdout
        match = re.search(r"BGP state:\s+(\w+)", out)
        return _STATES.get(match.group(1), "Idle") if match else "Idle"

    def received_routes(self) -> dict[str, RouteView]:
        routes: dict[str, RouteView] = {}
        for table in ("master4", "master6"):
            out = self.birdc(f"show route all table {table}", check=False).stdout
            routes.update(parse_routes(out))
        return routes

    def bfd_sessions(self) -> dict[str, BfdView]:
        out = self.birdc("show bfd sessions", check=False).stdout
        sessions: dict[str, BfdView] = {}
        for line in out.splitlines():
            fields = line.split()
            if (
                len(fields) >= 6
                and (":" in fields[0] or fields[0].count(".") == 3)
                and fields[2] in ("Up", "Down", "Init", "AdminDown")
            ):
                interval = float(fields[-2]) if re.match(r"^[\d.]+$", fields[-2]) else None
                timeout = float(fields[-1]) if re.match(r"^[\d.]+$", fields[-1]) else None
                sessions[fields[0]] = BfdView(
                    peer=fields[0],
                    state=fields[2],
                    tx_interval_ms=round(interval * 1000) if interval is not None else None,
                    extra={"detection_time_ms": str(round(timeout * 1000)) if timeout is not None else ""},
                )
        return sessions


_ROUTE_LINE = re.compile(r"^(?P<prefix>\S+/\d+)?\s+\S+\s+\[(?P<proto>\S+)\s")


def parse_routes(text: str, learned_only: bool = True) -> dict[str, RouteView]:
    """Parse `birdc show route all` into RouteViews (learned BGP routes only, best path first).

    `learned_only=False` keeps routes of every protocol (for `show route export`, whose routes are
    BIRD's own static ones).
    """
    routes: dict[str, RouteView] = {}
    prefix: str | None = None
    current: dict[str, Any] | None = None

    def flush() -> None:
        if (
            current is not None
            and (current["proto"].startswith("peer_") or not learned_only)
            and current["prefix"] not in routes
        ):
            routes[current["prefix"]] = RouteView(
                prefix=current["prefix"],
                next_hop=current.get("next_hop"),
                as_path=current.get("as_path", ()),
                med=current.get("med"),
                local_pref=current.get("local_pref"),
                communities=current.get("communities", ()),
                large_communities=current.get("large", ()),
            )

    for line in text.splitlines():
        match = _ROUTE_LINE.match(line)
        if match and ("unicast" in line or "blackhole" in line or "unreachable" in line):
            flush()
            if match.group("prefix"):
                prefix = match.group("prefix")
            current = {"prefix": prefix, "proto": match.group("proto")}
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("BGP.as_path:"):
            current["as_path"] = tuple(int(x) for x in re.findall(r"\d+", stripped.split(":", 1)[1]))
        elif stripped.startswith("BGP.next_hop:"):
            current["next_hop"] = stripped.split(":", 1)[1].split()[0]
        elif stripped.startswith("BGP.med:"):
            current["med"] = int(stripped.split(":", 1)[1])
        elif stripped.startswith("BGP.local_pref:"):
            current["local_pref"] = int(stripped.split(":", 1)[1])
        elif stripped.startswith("BGP.community:"):
            pairs = re.findall(r"\((\d+),\s*(\d+)\)", stripped)
            current["communities"] = tuple(f"{a}:{b}" for a, b in pairs)
        elif stripped.startswith("BGP.large_community:"):
            triples = re.findall(r"\((\d+),\s*(\d+),\s*(\d+)\)", stripped)
            current["large"] = tuple(f"{a}:{b}:{c}" for a, b, c in triples)
    flush()
    return routes
