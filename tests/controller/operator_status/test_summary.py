"""summarize: the summary status of a RouteServer, its peers and associations, from session objects,
Problems and the Lease holder's own view. Pure; every body is validated with the pydantic status models.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.desired import Problem, ProblemReason
from controller.models.common import StatusModel
from controller.models.resources import RouteServerPeerStatus, RouteServerStatus, RouteTableAssociationStatus
from controller.operator.summary import (
    ASSOCIATION,
    MAX_MESSAGE,
    MAX_REJECTED_ROUTES,
    PEER,
    ROUTE_SERVER,
    STATUS_FIELDS,
    summarize,
)
from controller.status import PersistView, RejectedRouteView, RouteServerView, TableView

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
MODELS: dict[str, type[StatusModel]] = {
    ROUTE_SERVER: RouteServerStatus,
    PEER: RouteServerPeerStatus,
    ASSOCIATION: RouteTableAssociationStatus,
}


def route_server(name: str = "rs1", generation: int = 3) -> dict[str, Any]:
    return {
        "kind": "RouteServer",
        "metadata": {"name": name, "generation": generation},
        "spec": {"asn": 64512},
    }


def peer(name: str, liveness: str = "BFD", generation: int = 1) -> dict[str, Any]:
    spec = {
        "routeServerRef": {"name": "rs1"},
        "peerAddress": "198.51.100.1",
        "peerASN": 65001,
        "liveness": liveness,
    }
    return {"kind": "RouteServerPeer", "metadata": {"name": name, "generation": generation}, "spec": spec}


def association(name: str = "table100", generation: int = 2) -> dict[str, Any]:
    spec = {"routeServerRef": {"name": "rs1"}, "target": {"node": {"table": 100}}}
    return {
        "kind": "RouteTableAssociation",
        "metadata": {"name": name, "generation": generation},
        "spec": spec,
    }


def session(
    node: str,
    peer_name: str,
    bgp: str = "Established",
    bfd: str | None = "Up",
    reason: str | None = None,
    accepted: int = 10,
    message: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {"bgpState": bgp, "prefixesAccepted": accepted, "prefixesReceived": accepted}
    if bfd is not None:
        status["bfdState"] = bfd
    if reason is not None:
        status["lastTransitionReason"] = reason
    if message:
        status["lastTransitionMessage"] = message
    return {
        "kind": "RouteServerSession",
        "metadata": {
            "name": f"{peer_name}.{node}",
            "labels": {
                "routeserver.dev/node": node,
                "routeserver.dev/peer": peer_name,
                "routeserver.dev/route-server": "rs1",
            },
        },
        "spec": {"node": node, "peerRef": {"name": peer_name}},
        "status": status,
    }


def table_view(
    name: str = "table100",
    in_sync: bool = True,
    rejected: tuple[RejectedRouteView, ...] = (),
    error: str | None = None,
    target: str = "table 100",
) -> TableView:
    reasons: dict[str, int] = {}
    for route in rejected:
        reasons[route.reason] = reasons.get(route.reason, 0) + 1
    return TableView(
        name=name,
        target=target,
        table_id=100,
        routes_desired=5 + len(rejected),
        routes_installed=5,
        routes_rejected=len(rejected),
        rejected_by_reason=reasons,
        in_sync=in_sync,
        installed=(),
        rejected=rejected,
        last_sync_at=NOW.timestamp() - 30,
        last_write_at=None,
        last_error=error,
    )


def local_view(
    state: str = "Live", tables: tuple[TableView, ...] = (), enabled: bool = True
) -> RouteServerView:
    return RouteServerView(
        name="rs1",
        asn=64512,
        router_id="10.0.0.1",
        listening=("0.0.0.0:179",),
        selection="ActivePassive",
        max_paths=8,
        persist=PersistView(
            enabled, 120, state, 7 if state != "Live" else 0, 30.0 if state == "Recovering" else None
        ),
        sessions_up=2,
        fib_routes=5,
        fib=(),
        peers=(),
        tables=tables,
    )


def run(
    sessions: list[dict[str, Any]],
    *,
    peers: list[dict[str, Any]] | None = None,
    associations: list[dict[str, Any]] | None = None,
    problems: list[Problem] | None = None,
    local: RouteServerView | None = None,
    no_local: bool = False,
    now: datetime = NOW,
    previous: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    server: dict[str, Any] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    result = summarize(
        server or route_server(),
        [peer("p1"), peer("p2")] if peers is None else peers,
        [association()] if associations is None else associations,
        sessions,
        problems or [],
        None if no_local else local or local_view(tables=(table_view(),)),
        "node-a",
        now,
        previous or {},
    )
    for (kind, _name), body in result.items():
        MODELS[kind].model_validate(body)  # within the CRD's types and limits
        assert set(body) <= set(STATUS_FIELDS[kind])
    return result


def condition(body: Mapping[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [c for c in body["conditions"] if c["type"] == type_]
    return dict(found)


ALL_UP = [session(n, p) for n in ("node-a", "node-b") for p in ("p1", "p2")]


def test_all_up_is_ready_and_not_degraded() -> None:
    result = run(ALL_UP)
    rs = result[(ROUTE_SERVER, "rs1")]
    assert condition(rs, "Ready")["status"] == "True"
    assert condition(rs, "Ready")["reason"] == "AllSessionsEstablished"
    assert condition(rs, "Degraded")["status"] == "False"
    assert condition(rs, "PersistingRoutes")["status"] == "False"
    assert {k: rs[k] for k in ("endpoints", "peers", "peersUp", "routes", "persistState", "leaseHolder")} == {
        "endpoints": 2,
        "peers": 2,
        "peersUp": 2,
        "routes": 5,
        "persistState": "Live",
        "leaseHolder": "node-a",
    }
    p1 = result[(PEER, "p1")]
    assert condition(p1, "Ready")["status"] == "True"
    assert [condition(p1, t)["status"] for t in ("Degraded", "MaxPrefixesReached", "AuthSecretMissing")] == [
        "False"
    ] * 3
    assert (p1["sessions"], p1["sessionsEstablished"], p1["bfdSessionsUp"], p1["prefixesAccepted"]) == (
        2,
        2,
        2,
        10,
    )
    table = result[(ASSOCIATION, "table100")]
    assert condition(table, "Ready")["status"] == "True" and condition(table, "Ready")["reason"] == "InSync"
    assert (table["targets"], table["targetsInSync"], table["routesInstalled"], table["routesRejected"]) == (
        1,
        1,
        5,
        0,
    )
    assert table["lastSyncTime"] == "2026-12-03T11:59:30Z"
    assert all(c["lastTransitionTime"] == "2026-12-03T12:00:00Z" for c in rs["conditions"])


def test_one_node_down_is_degraded_naming_the_pairs_and_still_ready() -> None:
    sessions = [
        session("node-a", "p1"),
        session("node-a", "p2"),
        session("node-b", "p1", bgp="Idle", bfd="Down", reason="BfdDown"),
        session("node-b", "p2", bgp="Active", bfd="Down"),
    ]
    result = run(sessions)
    rs = result[(ROUTE_SERVER, "rs1")]
    ready, degraded = condition(rs, "Ready"), condition(rs, "Degraded")
    assert (ready["status"], ready["reason"]) == ("True", "EndpointsServing")
    assert "1 of 2 endpoints" in ready["message"]
    assert (degraded["status"], degraded["reason"]) == ("True", "SessionsNotEstablished")
    assert degraded["message"] == (
        "2 of 4 sessions not Established: node-b/p1 (Idle, BfdDown), node-b/p2 (Active)"
    )
    assert rs["peersUp"] == 2  # each peer is still up on node-a
    p1 = result[(PEER, "p1")]
    assert (condition(p1, "Ready")["status"], condition(p1, "Ready")["reason"]) == ("False", "SessionsDown")
    assert condition(p1, "Degraded")["message"] == "1 of 2 sessions not Established: node-b (Idle, BfdDown)"
    assert (p1["sessions"], p1["sessionsEstablished"], p1["bfdSessionsUp"]) == (2, 1, 1)


def test_every_node_missing_a_peer_is_not_ready() -> None:
    sessions = [
        session("node-a", "p1"),
        session("node-b", "p2"),
        session("node-b", "p1", bgp="Connect", bfd=None),
    ]
    rs = run(sessions)[(ROUTE_SERVER, "rs1")]
    assert (condition(rs, "Ready")["status"], condition(rs, "Ready")["reason"]) == ("False", "SessionsDown")
    assert "node-a/p2 (no session)" in condition(rs, "Degraded")["message"]


def test_degraded_names_at_most_five_pairs() -> None:
    nodes = [f"node-{i}" for i in range(4)]
    sessions = [session(n, p, bgp="Active") for n in nodes for p in ("p1", "p2")] + [session("node-z", "p1")]
    degraded = condition(run(sessions)[(ROUTE_SERVER, "rs1")], "Degraded")
    assert degraded["message"].count("(Active)") == 5
    assert degraded["message"].endswith("and 4 more")  # 8 Active + node-z/p2 missing, 5 shown


def test_no_endpoints() -> None:
    result = run([], no_local=True)
    rs = result[(ROUTE_SERVER, "rs1")]
    assert (condition(rs, "Ready")["status"], condition(rs, "Ready")["reason"]) == ("False", "NoEndpoints")
    assert (condition(rs, "Degraded")["status"], condition(rs, "Degraded")["reason"]) == (
        "False",
        "NoEndpoints",
    )
    assert condition(rs, "PersistingRoutes")["status"] == "Unknown"
    assert rs["endpoints"] == 0 and "routes" not in rs and "persistState" not in rs
    p1 = result[(PEER, "p1")]
    assert (condition(p1, "Ready")["status"], condition(p1, "Ready")["reason"]) == ("False", "NoSessions")
    assert p1["sessions"] == 0 and p1["prefixesAccepted"] == 0
    table = result[(ASSOCIATION, "table100")]
    assert condition(table, "Ready")["status"] == "Unknown" and "routesInstalled" not in table


def test_peers_up_needs_bfd_up_for_bfd_liveness_only() -> None:
    peers = [peer("p1"), peer("p2", liveness="BGPKeepalive")]
    sessions = [session("node-a", "p1", bfd="Down"), session("node-a", "p2", bfd=None)]
    rs = run(sessions, peers=peers)[(ROUTE_SERVER, "rs1")]
    assert rs["peersUp"] == 1


def test_prefixes_accepted_is_the_highest_over_sessions() -> None:
    sessions = [session("node-a", "p1", accepted=7), session("node-b", "p1", accepted=9)]
    assert run(sessions, peers=[peer("p1")])[(PEER, "p1")]["prefixesAccepted"] == 9


def test_max_prefixes() -> None:
    sessions = [
        session("node-a", "p1", bgp="Idle", bfd="Up", reason="MaxPrefixes", message="limit 100 exceeded"),
        session("node-b", "p1"),
    ]
    p1 = run(sessions, peers=[peer("p1")])[(PEER, "p1")]
    held = condition(p1, "MaxPrefixesReached")
    assert (held["status"], held["reason"]) == ("True", "MaxPrefixes")
    assert held["message"] == "max-prefix limit on node-a: limit 100 exceeded"
    assert condition(p1, "Ready")["status"] == "False"


def test_auth_secret_missing_and_other_problems() -> None:
    problems = [
        Problem(
            PEER, "p1", "spec.authSecretRef", ProblemReason.MISSING_SECRET, "Secret default/md5 not found"
        ),
        Problem(PEER, "p2", "spec", ProblemReason.INVALID, "localAddress is not usable"),
        Problem(
            ASSOCIATION, "table100", "spec.target.node.table", ProblemReason.TABLE_CONFLICT, "t2 writes it"
        ),
        Problem(ROUTE_SERVER, "rs1", "spec.routerID", ProblemReason.NO_ROUTER_ID, "no IPv4 address"),
    ]
    result = run(ALL_UP, problems=problems)
    p1 = result[(PEER, "p1")]
    missing, ready = condition(p1, "AuthSecretMissing"), condition(p1, "Ready")
    assert (missing["status"], missing["reason"]) == ("True", "SecretNotFound")
    assert missing["message"] == "spec.authSecretRef: Secret default/md5 not found"
    assert (ready["status"], ready["reason"]) == ("False", "AuthSecretMissing")
    p2 = result[(PEER, "p2")]
    assert (condition(p2, "Ready")["reason"], condition(p2, "Ready")["message"]) == (
        "Invalid",
        "spec: localAddress is not usable",
    )
    assert condition(p2, "AuthSecretMissing")["status"] == "False"
    table = condition(result[(ASSOCIATION, "table100")], "Ready")
    assert (table["status"], table["reason"]) == ("False", "TableConflict")
    assert table["message"].startswith("spec.target.node.table: ")
    rs = condition(result[(ROUTE_SERVER, "rs1")], "Ready")
    assert (rs["status"], rs["reason"]) == ("False", "NoRouterID")


def test_persisting_routes() -> None:
    holding = run([], local=local_view("Holding"))[(ROUTE_SERVER, "rs1")]
    assert (condition(holding, "PersistingRoutes")["status"], holding["persistState"]) == ("True", "Holding")
    recovering = condition(
        run(ALL_UP, local=local_view("Recovering"))[(ROUTE_SERVER, "rs1")], "PersistingRoutes"
    )
    assert (recovering["status"], recovering["reason"]) == ("True", "Recovering")
    assert "30 s" in recovering["message"]
    disabled = condition(
        run(ALL_UP, local=local_view(enabled=False))[(ROUTE_SERVER, "rs1")], "PersistingRoutes"
    )
    assert (disabled["status"], disabled["reason"]) == ("False", "Disabled")


def test_last_transition_time_kept_when_unchanged_and_moved_when_changed() -> None:
    first = run(ALL_UP)
    previous = dict(first)
    down = [s for s in ALL_UP if s["spec"]["node"] == "node-a"]
    down += [session("node-b", "p1", bgp="Idle"), session("node-b", "p2")]
    second = run(down, now=LATER, previous=previous)
    rs = second[(ROUTE_SERVER, "rs1")]
    assert condition(rs, "Ready")["lastTransitionTime"] == "2026-12-03T12:00:00Z"  # still True
    assert condition(rs, "Ready")["reason"] == "EndpointsServing"  # reason changed, status did not
    assert condition(rs, "Degraded")["lastTransitionTime"] == "2026-12-03T12:05:00Z"  # False -> True
    assert condition(second[(PEER, "p2")], "Ready")["lastTransitionTime"] == "2026-12-03T12:00:00Z"
    assert condition(second[(PEER, "p1")], "Ready")["lastTransitionTime"] == "2026-12-03T12:05:00Z"
    unchanged = run(ALL_UP, now=LATER, previous=previous)
    assert unchanged == first


def test_observed_generation() -> None:
    result = run(ALL_UP, server=route_server(generation=7))
    rs = result[(ROUTE_SERVER, "rs1")]
    assert rs["observedGeneration"] == 7 and {c["observedGeneration"] for c in rs["conditions"]} == {7}
    assert result[(PEER, "p1")]["observedGeneration"] == 1
    table = result[(ASSOCIATION, "table100")]
    assert {c["observedGeneration"] for c in table["conditions"]} == {2}


def test_rejected_routes_are_capped_sorted_and_within_limits() -> None:
    rejected = tuple(
        RejectedRouteView(f"10.{i // 256}.{i % 256}.0/24", "UnreachableNextHop", "x" * 2000)
        for i in range(100)
    )
    local = local_view(tables=(table_view(in_sync=False, rejected=rejected, error="EINVAL " * 400),))
    table = run(ALL_UP, local=local)[(ASSOCIATION, "table100")]
    assert len(table["rejectedRoutes"]) == MAX_REJECTED_ROUTES
    prefixes = [r["prefix"] for r in table["rejectedRoutes"]]
    assert prefixes == sorted(prefixes)
    assert {r["node"] for r in table["rejectedRoutes"]} == {"node-a"}
    assert all(len(r["message"]) <= 1024 for r in table["rejectedRoutes"])
    ready, degraded = condition(table, "Ready"), condition(table, "Degraded")
    assert (ready["status"], ready["reason"]) == ("False", "OutOfSync") and len(
        ready["message"]
    ) <= MAX_MESSAGE
    assert (degraded["status"], degraded["message"]) == (
        "True",
        "100 routes rejected (100 UnreachableNextHop)",
    )
    assert table["targetsInSync"] == 0 and table["routesRejected"] == 100


def test_aws_rejections_name_no_node_and_odd_reasons_still_validate() -> None:
    rejected = (RejectedRouteView("203.0.113.0/24", "some-odd reason"),)
    local = local_view(tables=(table_view(rejected=rejected, target="aws rtb-0123456789abcdef0"),))
    (entry,) = run(ALL_UP, local=local)[(ASSOCIATION, "table100")]["rejectedRoutes"]
    assert entry == {"prefix": "203.0.113.0/24", "reason": "Someoddreason"}


def test_long_names_and_messages_stay_within_limits() -> None:
    nodes = ["n" * 250 + str(i) for i in range(3)]
    sessions = [session(n, "p1", bgp="Active", reason="TcpConnectionFails") for n in nodes]
    problems = [Problem(PEER, "p1", "spec", ProblemReason.INVALID, "y" * 40000)]
    result = summarize(route_server(), [peer("p1")], [], sessions, problems, None, "h" * 300, NOW, {})
    rs, p1 = result[(ROUTE_SERVER, "rs1")], result[(PEER, "p1")]
    RouteServerStatus.model_validate(rs)
    RouteServerPeerStatus.model_validate(p1)
    assert len(rs["leaseHolder"]) == 253
    assert all(len(c["message"]) <= MAX_MESSAGE for c in rs["conditions"] + p1["conditions"])


@pytest.mark.parametrize("state", ["Live", "Holding", "Recovering"])
def test_persist_state_is_a_crd_enum_value(state: str) -> None:
    assert run(ALL_UP, local=local_view(state))[(ROUTE_SERVER, "rs1")]["persistState"] == state
