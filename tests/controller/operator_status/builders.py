"""Status snapshots for the session writer's tests: PeerViews with every field the status uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.status import AgentStatus, BfdView, NegotiatedView, PeerView, PersistView, RouteServerView

ESTABLISHED_AT = 1_700_000_000.0


def peer_view(name: str, **overrides: Any) -> PeerView:
    """An Established BFD peer with negotiated values; `overrides` replace any field."""
    values: dict[str, Any] = {
        "name": name,
        "address": "10.0.0.2",
        "asn": 65001,
        "liveness": "BFD",
        "bgp_state": "Established",
        "bfd": BfdView(state="Up", min_tx_ms=300, detection_time_ms=900.0, tx_interval_ms=300.0),
        "uptime_seconds": 62.0,
        "established_at": ESTABLISHED_AT,
        "established_count": 2,
        "last_transition_reason": "KeepaliveReceived",
        "last_transition_detail": "",
        "last_transition_at": ESTABLISHED_AT,
        "last_error": None,
        "last_notification_sent": None,
        "last_notification_received": None,
        "prefixes_received": 5,
        "prefixes_accepted": 3,
        "prefixes_rejected": 2,
        "rejected_by_reason": {"NotAllowed": 2},
        "prefixes_stale": 0,
        "negotiated": NegotiatedView(
            hold_time=90,
            keepalive_time=30,
            peer_router_id="10.0.0.2",
            four_octet_asn=True,
            families=("ipv4-unicast", "ipv6-unicast"),
            graceful_restart=False,
        ),
        "prefixes_installed": 3,
    }
    values.update(overrides)
    return PeerView(**values)


def agent_status(node: str, peers: Mapping[str, Sequence[PeerView]]) -> AgentStatus:
    """A snapshot of `node` with route servers (name -> its peers)."""
    servers = tuple(
        RouteServerView(
            name=rs,
            asn=64512,
            router_id="10.0.0.1",
            listening=("0.0.0.0:179",),
            selection="ActivePassive",
            max_paths=1,
            persist=PersistView(False, 0, "Live", 0, None),
            sessions_up=len(rs_peers),
            fib_routes=0,
            fib=(),
            peers=tuple(rs_peers),
            tables=(),
        )
        for rs, rs_peers in peers.items()
    )
    return AgentStatus(
        node=node, version="test", started_at=ESTABLISHED_AT, healthy=True, route_servers=servers
    )
