"""The agent's status snapshot: one data model for `/status` (JSON), `routeserver status` and metrics.

The runtime builds an `AgentStatus` from its live state (controller/runtime/views.py); `to_json` makes
the JSON the admin server returns, and `render` turns that JSON back into the tables `routeserver
status` prints, so the CLI needs nothing but the HTTP answer. Times are wall-clock seconds (Unix time)
or durations in seconds.

Owns: the view types, their JSON and their rendering. Must not touch: live runtime objects (views are
frozen values built elsewhere) or the network.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_LISTED_REJECTIONS = 32  # per peer and per table, newest first


@dataclass(frozen=True, slots=True)
class RejectedRouteView:
    prefix: str
    reason: str  # a RejectReason value (bgp.rib.policy or controller.writers.base)
    message: str = ""
    peer: str = ""


@dataclass(frozen=True, slots=True)
class BfdView:
    state: str  # RFC 5880 name: AdminDown, Down, Init, Up
    local_address: str | None = None
    interface: str | None = None
    remote_state: str | None = None
    diagnostic: str | None = None
    last_change_reason: str | None = None
    last_change_at: float | None = None
    down_count: int = 0  # Up -> Down liveness failures (each tore the BGP session down)
    min_tx_ms: int = 0
    min_rx_ms: int = 0
    detect_multiplier: int = 0
    detection_time_ms: float | None = None  # RFC 5880 §6.8.4, once the peer has been heard
    error: str | None = None  # the last failed BFD request, until a request succeeds (it is retried)
    retry_in_seconds: float | None = None  # when the failed request is tried again
    tx_interval_ms: float | None = None  # the negotiated transmit interval before jitter (RFC 5880 §6.8.7)


@dataclass(frozen=True, slots=True)
class NegotiatedView:
    """What both sides agreed on in the OPENs of the current session (bgp.api.NegotiatedInfo)."""

    hold_time: int
    keepalive_time: int
    peer_router_id: str
    four_octet_asn: bool
    families: tuple[str, ...]  # bgp.types.Family names: "ipv4-unicast", "ipv6-unicast"
    graceful_restart: bool
    add_path_receive: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerView:
    name: str
    address: str
    asn: int
    liveness: str  # BFD | BGPKeepalive
    bgp_state: str  # RFC 4271 name
    bfd: BfdView | None
    uptime_seconds: float | None
    established_at: float | None
    established_count: int
    last_transition_reason: str | None
    last_transition_detail: str
    last_transition_at: float | None
    last_error: str | None
    last_notification_sent: str | None
    last_notification_received: str | None
    prefixes_received: int
    prefixes_accepted: int
    prefixes_rejected: int
    rejected_by_reason: dict[str, int]
    prefixes_stale: int
    recent_rejections: tuple[RejectedRouteView, ...] = ()
    # Held Idle with automatic start off (a max-prefix Teardown): why ("MaxPrefixes") and until
    # when (wall clock; None while held: until the peer's spec changes).
    held_idle_reason: str | None = None
    held_idle_until: float | None = None
    config_error: str | None = None  # the speaker refused the peer's configuration (retried)
    negotiated: NegotiatedView | None = None  # while a session is Established
    prefixes_installed: int | None = None  # accepted prefixes whose path from this peer is in the FIB

    @property
    def bfd_state(self) -> str | None:
        return None if self.bfd is None else self.bfd.state


@dataclass(frozen=True, slots=True)
class RouteView:
    prefix: str
    nexthops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableView:
    name: str
    target: str  # "table 100", "table 100 metric 10", "aws rtb-..."
    table_id: int | None
    routes_desired: int
    routes_installed: int
    routes_rejected: int
    rejected_by_reason: dict[str, int]
    in_sync: bool
    installed: tuple[RouteView, ...]
    rejected: tuple[RejectedRouteView, ...]  # the first MAX_LISTED_REJECTIONS
    last_sync_at: float | None
    last_write_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PersistView:
    enabled: bool
    duration_seconds: int
    state: str  # Live | Holding | Recovering
    persisted_routes: int
    window_remaining_seconds: float | None


@dataclass(frozen=True, slots=True)
class RouteServerView:
    name: str
    asn: int
    router_id: str
    listening: tuple[str, ...]
    selection: str  # ActivePassive | ECMP
    max_paths: int
    persist: PersistView
    sessions_up: int
    fib_routes: int
    fib: tuple[RouteView, ...]
    peers: tuple[PeerView, ...]
    tables: tuple[TableView, ...]
    connections_refused: int = 0
    error: str | None = None  # the speaker could not start (e.g. the port is taken)


@dataclass(frozen=True, slots=True)
class ConfigView:
    sources: tuple[str, ...] = ()
    generation: int = 0  # how many configurations were applied
    loaded_at: float | None = None
    last_error: str | None = None  # the last reload that was refused (the previous one still runs)
    problems: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentStatus:
    node: str
    version: str
    started_at: float
    healthy: bool
    config: ConfigView = field(default_factory=ConfigView)
    route_servers: tuple[RouteServerView, ...] = ()
    bfd_running: bool = False


def to_json(status: AgentStatus) -> dict[str, Any]:
    return dataclasses.asdict(status)


# -- rendering ------------------------------------------------------------------------------------


def format_address(host: object, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def format_duration(seconds: float | None) -> str:
    """Compact durations like `2d03h`, `4h05m`, `1m02s`, `3.2s`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _ago(at: float | None, now: float) -> str:
    return "-" if at is None else f"{format_duration(max(0.0, now - at))} ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned text table (two spaces between columns)."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _bfd_cell(peer: Mapping[str, Any]) -> str:
    bfd = peer.get("bfd")
    if bfd is None:
        return "-" if peer.get("liveness") == "BFD" else "off"
    return str(bfd.get("state", "-"))


def _last(peer: Mapping[str, Any], now: float) -> str:
    held = peer.get("held_idle_reason")
    if held:
        until = peer.get("held_idle_until")
        end = "until the spec changes"
        if until is not None:
            end = f"restart in {format_duration(max(0.0, until - now))}"
        return f"{held} (held Idle, {end})"
    reason = peer.get("last_transition_reason")
    if not reason:
        return "-"
    detail = peer.get("last_notification_received") or peer.get("last_notification_sent") or ""
    return f"{reason} ({detail})" if detail and reason in ("NotificationReceived", "BfdDown") else str(reason)


def render(data: Mapping[str, Any], now: float | None = None) -> str:
    """The `/status` JSON as text tables: route servers, their peers, FIB, tables and rejections."""
    now = time.time() if now is None else now
    out: list[str] = []
    config = data.get("config") or {}
    head = f"node {data.get('node', '?')}  version {data.get('version', '?')}"
    head += f"  up {format_duration(now - data['started_at']) if data.get('started_at') else '-'}"
    head += f"  config generation {config.get('generation', 0)}"
    if not data.get("healthy", True):
        head += "  UNHEALTHY"
    out.append(head)
    if config.get("last_error"):
        out.append(f"last reload refused: {config['last_error']}")
    for problem in config.get("problems") or ():
        out.append(f"problem: {problem}")
    for skipped in config.get("skipped") or ():
        out.append(f"skipped: {skipped}")
    servers = data.get("route_servers") or ()
    if not servers:
        out.append("no route servers configured")
    for rs in servers:
        out.append("")
        out.append(_render_route_server(rs, now))
    return "\n".join(out) + "\n"


def _render_route_server(rs: Mapping[str, Any], now: float) -> str:
    persist = rs.get("persist") or {}
    persist_text = "off"
    if persist.get("enabled"):
        persist_text = f"{persist.get('state')} ({persist.get('duration_seconds')}s"
        if persist.get("persisted_routes"):
            persist_text += f", {persist['persisted_routes']} held"
        if persist.get("window_remaining_seconds") is not None:
            persist_text += f", {format_duration(persist['window_remaining_seconds'])} left"
        persist_text += ")"
    selection = str(rs.get("selection"))
    if selection == "ECMP":
        selection += f" (max {rs.get('max_paths')})"
    lines = [
        f"RouteServer {rs['name']}  AS {rs.get('asn')}  router-id {rs.get('router_id')}"
        f"  listening {', '.join(rs.get('listening') or ()) or '-'}",
        f"  selection {selection}  persist {persist_text}  sessions up {rs.get('sessions_up', 0)}"
        f"/{len(rs.get('peers') or ())}  routes {rs.get('fib_routes', 0)}",
    ]
    if rs.get("error"):
        lines.append(f"  ERROR: {rs['error']}")
    peers = rs.get("peers") or ()
    if peers:
        peer_rows: list[tuple[object, ...]] = [
            (
                p["name"],
                p["address"],
                p["asn"],
                p["bgp_state"],
                _bfd_cell(p),
                format_duration(p.get("uptime_seconds")),
                p.get("prefixes_received", 0),
                p.get("prefixes_accepted", 0),
                p.get("prefixes_rejected", 0),
                _last(p, now),
            )
            for p in peers
        ]
        peer_headers = (
            "PEER",
            "ADDRESS",
            "ASN",
            "BGP",
            "BFD",
            "UPTIME",
            "RCVD",
            "ACCEPTED",
            "REJECTED",
            "LAST",
        )
        lines.append(_indent(table(peer_headers, peer_rows)))
        for p in peers:  # errors still being retried (level-triggered runtime)
            if p.get("config_error"):
                lines.append(f"  peer {p['name']}: not configured: {p['config_error']} (retrying)")
            bfd = p.get("bfd") or {}
            if bfd.get("error"):
                retry = bfd.get("retry_in_seconds")
                when = f" (retry in {retry:.0f} s)" if isinstance(retry, (int, float)) else ""
                lines.append(f"  peer {p['name']}: BFD: {bfd['error']}{when}")
    fib = rs.get("fib") or ()
    if fib:
        lines.append("")
        fib_rows = [(r["prefix"], ", ".join(r["nexthops"])) for r in fib]
        lines.append(_indent(table(("PREFIX", "NEXT HOPS"), fib_rows)))
    tables = rs.get("tables") or ()
    if tables:
        lines.append("")
        table_rows = [
            (
                t["name"],
                t["target"],
                t.get("routes_installed", 0),
                t.get("routes_rejected", 0),
                "yes" if t.get("in_sync") else "no",
                _ago(t.get("last_sync_at"), now),
                t.get("last_error") or "",
            )
            for t in tables
        ]
        table_headers = ("TABLE", "TARGET", "INSTALLED", "REJECTED", "IN SYNC", "LAST SYNC", "ERROR")
        lines.append(_indent(table(table_headers, table_rows)))
    rejected = [
        (r.get("peer") or p["name"], r["prefix"], r["reason"], "")
        for p in peers
        for r in p.get("recent_rejections") or ()
    ]
    rejected += [
        (t["name"], r["prefix"], r["reason"], r.get("message", ""))
        for t in tables
        for r in t.get("rejected") or ()
    ]
    if rejected:
        lines.append("")
        lines.append(_indent(table(("REJECTED BY", "PREFIX", "REASON", "MESSAGE"), rejected)))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())
