"""Status rendering (`routeserver status`) and the structured log formats."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import pytest

from controller import logs
from controller.status import (
    AgentStatus,
    BfdView,
    ConfigView,
    PeerView,
    PersistView,
    RejectedRouteView,
    RouteServerView,
    RouteView,
    TableView,
    format_duration,
    render,
    table,
    to_json,
)

NOW = 1_700_000_000.0


def _peer(name: str, state: str, bfd: str | None, **extra: object) -> PeerView:
    values: dict[str, object] = {
        "name": name,
        "address": "10.0.0.2",
        "asn": 65001,
        "liveness": "BFD" if bfd else "BGPKeepalive",
        "bgp_state": state,
        "bfd": BfdView(state=bfd, down_count=1) if bfd else None,
        "uptime_seconds": 62.0 if state == "Established" else None,
        "established_at": None,
        "established_count": 1,
        "last_transition_reason": "KeepaliveReceived",
        "last_transition_detail": "",
        "last_transition_at": None,
        "last_error": None,
        "last_notification_sent": None,
        "last_notification_received": None,
        "prefixes_received": 3,
        "prefixes_accepted": 1,
        "prefixes_rejected": 2,
        "rejected_by_reason": {"NotAllowed": 2},
        "prefixes_stale": 0,
        "recent_rejections": (RejectedRouteView("198.51.100.0/24", "NotAllowed", peer=name),),
    }
    values.update(extra)
    return PeerView(**values)  # type: ignore[arg-type]


def sample() -> AgentStatus:
    route = RouteView("203.0.113.10/32", ("10.0.0.2",))
    return AgentStatus(
        node="node-a",
        version="0.1.0",
        started_at=NOW - 3700,
        healthy=False,
        config=ConfigView(generation=3, last_error="rs.yaml: document 1: spec.asn: bad"),
        route_servers=(
            RouteServerView(
                name="vip",
                asn=64512,
                router_id="10.0.0.1",
                listening=("0.0.0.0:179",),
                selection="ActivePassive",
                max_paths=1,
                persist=PersistView(True, 120, "Holding", 1, None),
                sessions_up=1,
                fib_routes=1,
                fib=(route,),
                peers=(
                    _peer("fw-a", "Established", "Up"),
                    _peer(
                        "fw-b",
                        "Active",
                        "Down",
                        last_transition_reason="BfdDown",
                        last_notification_sent="Cease/BFD Down",
                    ),
                ),
                tables=(
                    TableView(
                        name="vip-table-100",
                        target="table 100",
                        table_id=100,
                        routes_desired=1,
                        routes_installed=1,
                        routes_rejected=1,
                        rejected_by_reason={"UnreachableNextHop": 1},
                        in_sync=False,
                        installed=(route,),
                        rejected=(RejectedRouteView("203.0.113.11/32", "UnreachableNextHop", "no route"),),
                        last_sync_at=NOW - 5,
                        last_write_at=NOW - 5,
                        last_error=None,
                    ),
                ),
            ),
        ),
    )


def test_render_shows_peers_routes_tables_and_rejections() -> None:
    text = render(json.loads(json.dumps(to_json(sample()))), now=NOW)
    lines = text.splitlines()
    assert lines[0].startswith("node node-a  version 0.1.0  up 1h01m  config generation 3  UNHEALTHY")
    assert "last reload refused: rs.yaml: document 1: spec.asn: bad" in text
    assert "RouteServer vip  AS 64512  router-id 10.0.0.1  listening 0.0.0.0:179" in text
    assert "persist Holding (120s, 1 held)" in text and "sessions up 1/2" in text
    peer_a = next(line for line in lines if line.strip().startswith("fw-a"))
    assert peer_a.split() == [
        "fw-a",
        "10.0.0.2",
        "65001",
        "Established",
        "Up",
        "1m02s",
        "3",
        "1",
        "2",
        "KeepaliveReceived",
    ]
    peer_b = next(line for line in lines if line.strip().startswith("fw-b"))
    assert "BfdDown (Cease/BFD Down)" in peer_b
    assert any(line.split() == ["203.0.113.10/32", "10.0.0.2"] for line in lines)
    table_line = next(line for line in lines if line.strip().startswith("vip-table-100"))
    assert table_line.split()[:7] == ["vip-table-100", "table", "100", "1", "1", "no", "5.0s"]
    assert any(line.split()[:3] == ["fw-a", "198.51.100.0/24", "NotAllowed"] for line in lines)
    assert any(
        line.split()[:3] == ["vip-table-100", "203.0.113.11/32", "UnreachableNextHop"] for line in lines
    )


def test_render_of_a_peer_held_idle_by_max_prefix_says_why_and_until_when() -> None:
    held = {
        "bgp_state": "Idle",
        "last_transition_reason": "MaxPrefixes",
        "last_notification_sent": "Cease/Maximum Number of Prefixes Reached",
        "held_idle_reason": "MaxPrefixes",
    }
    peers = (
        _peer("fw-a", "Idle", None, **held),
        _peer("fw-b", "Idle", None, **{**held, "held_idle_until": NOW + 42}),
        _peer("fw-c", "Idle", None, last_transition_reason="MaxPrefixes"),  # restarted, not held
    )
    data = json.loads(json.dumps(to_json(sample())))
    data["route_servers"][0]["peers"] = [dataclasses.asdict(p) for p in peers]
    lines = render(data, now=NOW).splitlines()
    row = {line.split()[0]: line for line in lines if " Idle " in line}  # the peer table's rows
    assert row["fw-a"].endswith("MaxPrefixes (held Idle, until the spec changes)")
    assert row["fw-b"].endswith("MaxPrefixes (held Idle, restart in 42s)")
    assert row["fw-c"].split()[-1] == "MaxPrefixes"


def test_render_of_an_empty_agent() -> None:
    text = render({"node": "n", "version": "v", "started_at": NOW, "healthy": True, "config": {}}, now=NOW)
    assert "no route servers configured" in text and "UNHEALTHY" not in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (3.25, "3.2s"), (42, "42s"), (62, "1m02s"), (3700, "1h01m"), (90000, "1d01h")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_table_aligns_columns() -> None:
    assert table(("A", "BB"), [("xxx", None), ("y", 1)]).splitlines() == ["A    BB", "xxx  -", "y    1"]


def _record(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs.event(
        logger,
        logging.WARNING,
        "bfd_down",
        "BFD down",
        peer="fw-a",
        reasons={"x": 1},
        detail="a b",
        skip=None,
    )


def test_text_format_is_logfmt() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    _record(logging.getLogger("test.logs.text"), handler)
    line = stream.getvalue().strip()
    assert line.endswith('WARNING BFD down event=bfd_down peer=fw-a reasons="{\\"x\\": 1}" detail="a b"')
    assert "skip" not in line


def test_json_format_has_event_and_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    _record(logging.getLogger("test.logs.json"), handler)
    data = json.loads(stream.getvalue())
    assert data["event"] == "bfd_down" and data["peer"] == "fw-a" and data["reasons"] == {"x": 1}
    assert data["level"] == "WARNING" and data["message"] == "BFD down" and "skip" not in data


def test_plain_log_lines_name_their_logger() -> None:
    record = logging.LogRecord("bgp.speaker", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    assert logs.TextFormatter().format(record).endswith("INFO  hello x logger=bgp.speaker")
