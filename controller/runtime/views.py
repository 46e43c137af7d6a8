"""Status views of the runtime's live state (controller/status.py types), for /status and metrics.

Owns: turning a route server, its peers, BFD sessions and tables into `RouteServerView`, `PeerView`,
`BfdView` and `TableView`. This runs on the loop at every scrape, so nothing per route is built
beyond the `max_routes` listed (a copy of a 100k-route table would block the loop for a long time).

Must not touch: anything; it reads. Errors that are still being retried (a peer the speaker refused,
a BFD request that failed) are shown until they are fixed.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bfd.service import SessionStatus
from bgp.api import PeerStatus
from bgp.rib.adj_rib_in import AdjRibIn
from bgp.types import key_str
from controller.desired import Hops, RouteKey, SelectionMode
from controller.runtime.liveness import BFD_STATE_NAMES, diag_name
from controller.runtime.peers import PeerRuntime
from controller.status import (
    MAX_LISTED_REJECTIONS,
    BfdView,
    NegotiatedView,
    PeerView,
    PersistView,
    RejectedRouteView,
    RouteServerView,
    RouteView,
    TableView,
    format_address,
)

if TYPE_CHECKING:
    from controller.runtime.route_server import RouteServerRuntime
    from controller.runtime.tables import TableRuntime

MAX_STATUS_ROUTES = 1000  # FIB and installed routes listed per route server / table in status
BfdSessions = Mapping[tuple[str, str | None], SessionStatus]  # (peer, local) -> the service's session


def _wall(monotonic_at: float) -> float:
    """A time.monotonic() instant as wall-clock time (for status)."""
    return time.time() - (time.monotonic() - monotonic_at)


def first_routes(routes: Mapping[RouteKey, Hops], limit: int) -> list[tuple[RouteKey, Hops]]:
    """The first `limit` routes in address order (keys sort by family, address, length), without
    sorting a full table: the keys are ints, so the selection runs in C."""
    if limit <= 0:
        return []
    keys = sorted(routes) if len(routes) <= limit else heapq.nsmallest(limit, routes)
    return [(key, routes[key]) for key in keys]


def table_view(table: TableRuntime, max_routes: int = MAX_STATUS_ROUTES) -> TableView:
    """A table's status; up to `max_routes` installed routes listed (0: counts only)."""
    writer = table.writer
    desired = table.desired_hops()
    table_id = getattr(writer, "table", None)
    reasons: dict[str, int] = {}
    for r in table.rejected.values():
        reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
    # Counts, and the writer's in-place comparison (kept until something changes): nothing per
    # route is built here.
    installed_count = writer.installed_count() if writer is not None else 0
    in_sync = (
        writer is not None
        and table.synced
        and table.last_error is None
        and not table._pending
        and installed_count == len(desired)
        and writer.matches(desired, table.desired_version)
    )
    return TableView(
        name=table.name,
        target=str(table.desired.target),
        table_id=table_id if isinstance(table_id, int) else None,
        routes_desired=len(desired),
        routes_installed=installed_count,
        routes_rejected=len(table.rejected),
        rejected_by_reason=reasons,
        in_sync=in_sync,
        installed=tuple(
            RouteView(key_str(p), tuple(str(h) for h in hops))
            for p, hops in (writer.first_installed(max_routes) if writer is not None else ())
        ),
        rejected=tuple(
            RejectedRouteView(key_str(r.prefix), r.reason.value, r.message)
            for r in list(table.rejected.values())[:MAX_LISTED_REJECTIONS]
        ),
        last_sync_at=table.last_sync_at,
        last_write_at=table.last_write_at,
        last_error=table.last_error,
    )


def route_server_view(
    rs: RouteServerRuntime, bfd_sessions: BfdSessions, max_routes: int = MAX_STATUS_ROUTES
) -> RouteServerView:
    desired = rs.desired
    speaker = rs.speaker
    fib_entries = rs.fib_entries()
    deadline = rs.fib.recovery_deadline
    remaining = None
    if deadline is not None:
        remaining = max(0.0, deadline - time.monotonic())  # the loop's clock is time.monotonic()
    return RouteServerView(
        name=rs.name,
        asn=desired.speaker.asn,
        router_id=str(desired.speaker.router_id),
        listening=tuple(format_address(a, p) for a, p in speaker.listening()) if speaker is not None else (),
        selection=desired.selection.mode.value,
        max_paths=desired.selection.max_paths if desired.selection.mode is SelectionMode.ECMP else 1,
        persist=PersistView(
            enabled=desired.persist.enabled,
            duration_seconds=desired.persist.duration_seconds,
            state=rs.fib.state.value,
            persisted_routes=len(rs.fib.persisted()),
            window_remaining_seconds=remaining,
        ),
        sessions_up=rs.sessions_up,
        fib_routes=len(fib_entries),
        fib=tuple(
            RouteView(key_str(p), tuple(str(h) for h in hops))
            for p, hops in first_routes(fib_entries, max_routes)
        ),
        peers=tuple(peer_view(rs, p, bfd_sessions) for p in rs.peers.values()),
        tables=tuple(table_view(t, max_routes) for t in rs.tables.values()),
        connections_refused=rs.refused,
        error=rs.error,
    )


def peer_view(rs: RouteServerRuntime, peer: PeerRuntime, bfd_sessions: BfdSessions) -> PeerView:
    config = peer.desired.config
    status: PeerStatus | None = None
    adj: AdjRibIn | None = None
    if rs.speaker is not None and peer.applied is not None:
        with contextlib.suppress(KeyError):
            status = rs.speaker.status(peer.name)
            adj = rs.speaker.adj_rib_in(peer.name)
    rejections: tuple[RejectedRouteView, ...] = ()
    if adj is not None:
        rejections = tuple(
            RejectedRouteView(key_str(r.prefix), r.reason.value, peer=peer.name)
            for r in reversed(list(adj.recent_rejections)[-MAX_LISTED_REJECTIONS:])
        )
    sent = status.last_notification_sent if status is not None else None
    received = status.last_notification_received if status is not None else None
    return PeerView(
        name=peer.name,
        address=str(config.peer_address),
        asn=config.peer_asn,
        liveness=peer.desired.liveness.value,
        bgp_state=status.state if status is not None else peer.bgp_state.value,
        bfd=bfd_view(peer, bfd_sessions) if peer.desired.bfd is not None else None,
        uptime_seconds=status.uptime if status is not None else None,
        established_at=status.established_at if status is not None else None,
        established_count=status.established_count if status is not None else 0,
        last_transition_reason=status.last_transition if status is not None else None,
        last_transition_detail=status.last_transition_detail if status is not None else "",
        last_transition_at=status.last_transition_at if status is not None else None,
        last_error=status.last_error if status is not None else None,
        last_notification_sent=sent.name if sent is not None else None,
        last_notification_received=received.name if received is not None else None,
        prefixes_received=status.prefixes_received if status is not None else 0,
        prefixes_accepted=status.prefixes_accepted if status is not None else 0,
        prefixes_rejected=status.prefixes_rejected if status is not None else 0,
        rejected_by_reason=dict(status.rejected_by_reason) if status is not None else {},
        prefixes_stale=status.prefixes_stale if status is not None else 0,
        recent_rejections=rejections,
        held_idle_reason=status.held_idle_reason if status is not None else None,
        held_idle_until=status.held_idle_until if status is not None else None,
        config_error=peer.error,
        negotiated=negotiated_view(status),
        prefixes_installed=rs.installed.get(peer.name) if status is not None else None,
    )


def negotiated_view(status: PeerStatus | None) -> NegotiatedView | None:
    info = status.negotiated if status is not None else None
    if info is None:
        return None
    return NegotiatedView(
        hold_time=info.hold_time,
        keepalive_time=info.keepalive_time,
        peer_router_id=info.peer_router_id,
        four_octet_asn=info.four_octet_as,
        families=info.families,
        graceful_restart=info.graceful_restart,
        add_path_receive=info.add_path_receive,
    )


def bfd_view(peer: PeerRuntime, sessions: BfdSessions) -> BfdView:
    settings = peer.desired.bfd
    assert settings is not None
    local = peer.bfd_path[1] if peer.bfd_path is not None else None
    live = sessions.get((str(peer.desired.config.peer_address), str(local) if local else None))
    last = peer.bfd_last
    state = peer.bfd_state
    if state is None:
        state_name = "Down" if peer.bfd_pending else "-"
    else:
        state_name = BFD_STATE_NAMES[state]
    return BfdView(
        state=state_name if peer.bfd_error is None or state is not None else "Error",
        local_address=str(local) if local is not None else None,
        interface=None,
        remote_state=BFD_STATE_NAMES[live.remote_state] if live is not None else None,
        diagnostic=diag_name(last.diag) if last is not None else None,
        last_change_reason=last.reason.value if last is not None else peer.bfd_error,
        last_change_at=_wall(last.at) if last is not None else None,
        down_count=peer.bfd_failures,
        min_tx_ms=settings.min_tx_ms,
        min_rx_ms=settings.min_rx_ms,
        detect_multiplier=settings.detect_multiplier,
        detection_time_ms=(
            live.detection_time_us / 1000.0
            if live is not None and live.detection_time_us is not None
            else None
        ),
        error=peer.bfd_error,
        retry_in_seconds=_retry_in(peer.bfd_backoff.deadline()) if peer.bfd_error else None,
        tx_interval_ms=live.tx_interval_us / 1000.0 if live is not None else None,
    )


def _retry_in(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return round(max(0.0, deadline - time.monotonic()), 3)
