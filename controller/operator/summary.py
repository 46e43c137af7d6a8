"""The summary status of one RouteServer, its RouteServerPeers and its RouteTableAssociations.

Owns: `summarize`, a pure function from what the Lease holder knows (the raw objects, every
endpoint node's RouteServerSession objects, the translation's Problems, its own runtime view of
the route server) to the status body of each object, in the API's camelCase form with
metav1.Condition semantics; and `STATUS_FIELDS`, the status keys this module owns per kind (the
writer clears those it no longer produces).

May not touch: the API server, the clock (`now` comes in), the runtime. It never reads a Secret;
messages come from Problems (which name Secrets and keys, never their values), session reasons and
counts.

Where each part comes from:

* Sessions (every node): a RouteServerSession per endpoint node x peer, written by that node's
  agent. The route server's endpoints are the distinct nodes of its session objects; every peer
  is expected to have a session on every endpoint, and a missing one counts as not Established.
* `local` (the Lease holder's own node only): FIB routes, persist state and route tables. Node
  route tables are per node, so a RouteTableAssociation's counts, rejected routes and sync time
  are those of the Lease holder's node (for an aws target, the one table, which only the Lease
  holder writes); the session objects report every node's BGP side.

Conditions (type: reasons):

* RouteServer Ready: AllSessionsEstablished (every endpoint has every peer Established),
  EndpointsServing (some endpoint has every peer Established, others do not), SessionsDown (no
  endpoint has), NoEndpoints (no session objects), or a Problem's reason (the route server cannot
  be configured). Degraded: SessionsNotEstablished (the message names up to
  MAX_LISTED_PAIRS node/peer pairs), AllSessionsEstablished, NoEndpoints. PersistingRoutes:
  Holding, Recovering (True), Live, Disabled (False), NoLocalStatus (Unknown).
* RouteServerPeer Ready: AllSessionsEstablished (Established on every endpoint), SessionsDown,
  NoSessions, AuthSecretMissing (a Problem MISSING_SECRET), or another Problem's reason value; the
  message names the field. Degraded: SessionsNotEstablished, AllSessionsEstablished, NoEndpoints.
  MaxPrefixesReached: MaxPrefixes (a session's last transition was the max-prefix teardown),
  WithinLimit. AuthSecretMissing: SecretNotFound (True, the Problem's message), SecretsPresent.
* RouteTableAssociation Ready: InSync, OutOfSync, a Problem's reason, NoLocalStatus or
  NotWrittenHere (Unknown: the Lease holder does not write this table). Degraded: RoutesRejected,
  NoRoutesRejected, or Unknown as Ready.

Fields follow the CRD descriptions: RouteServer peersUp counts peers with at least one
Established session whose liveness check is up (BFD Up for liveness BFD); RouteServerPeer
prefixesAccepted is the highest count over its sessions (every endpoint receives the same routes).

lastTransitionTime moves only when a condition's status changes (`previous` holds each object's
current status); times are RFC 3339 in UTC with second precision, as metav1.Time is stored.
Every list and string is kept within the CRD's maxItems / maxLength.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bgp.fsm.events import TransitionReason
from controller.desired import Problem, ProblemReason
from controller.operator.sessions import NODE_LABEL, PEER_LABEL
from controller.status import RouteServerView, TableView

ROUTE_SERVER = "RouteServer"
PEER = "RouteServerPeer"
ASSOCIATION = "RouteTableAssociation"

MAX_LISTED_PAIRS = 5  # node/peer pairs named in a Degraded message
MAX_MESSAGE = 1024  # characters of a condition message (the CRD allows 32768; status stays small)
MAX_REJECTED_ROUTES = 64  # rejectedRoutes maxItems
MAX_PREFIX_LENGTH = 43
MAX_REJECTED_MESSAGE = 1024
MAX_REASON = 64  # rejectedRoutes[].reason maxLength
MAX_NAME = 253
ESTABLISHED = "Established"
BFD_UP = "Up"
PERSIST_STATES = ("Live", "Holding", "Recovering")
MAX_PREFIXES_REASON = TransitionReason.MAX_PREFIXES.value
AUTH_SECRET_MISSING = "AuthSecretMissing"

_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# The status keys summarize owns, per kind: the writer sets those it did not produce to null.
STATUS_FIELDS: dict[str, tuple[str, ...]] = {
    ROUTE_SERVER: (
        "observedGeneration",
        "conditions",
        "endpoints",
        "peers",
        "peersUp",
        "routes",
        "persistState",
        "leaseHolder",
    ),
    PEER: (
        "observedGeneration",
        "conditions",
        "sessions",
        "sessionsEstablished",
        "bfdSessionsUp",
        "prefixesAccepted",
    ),
    ASSOCIATION: (
        "observedGeneration",
        "conditions",
        "targets",
        "targetsInSync",
        "routesDesired",
        "routesInstalled",
        "routesRejected",
        "rejectedRoutes",
        "lastSyncTime",
    ),
}

Key = tuple[str, str]  # (kind, name)


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC, whole seconds (metav1.Time); a naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, marked with "..." when shortened."""
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


@dataclass(frozen=True, slots=True)
class SessionState:
    """The parts of one RouteServerSession the summary reads."""

    node: str
    peer: str
    bgp_state: str
    bfd_state: str | None
    reason: str | None
    message: str
    accepted: int

    @property
    def established(self) -> bool:
        return self.bgp_state == ESTABLISHED


def session_state(obj: Mapping[str, Any]) -> SessionState | None:
    """A session object's node, peer and state (spec first, labels as fallback); None if unnamed."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    node = spec.get("node") or labels.get(NODE_LABEL)
    peer = (spec.get("peerRef") or {}).get("name") or labels.get(PEER_LABEL)
    if not node or not peer:
        return None
    accepted = status.get("prefixesAccepted")
    return SessionState(
        node=str(node),
        peer=str(peer),
        bgp_state=str(status.get("bgpState") or "Unknown"),
        bfd_state=None if status.get("bfdState") is None else str(status["bfdState"]),
        reason=None if status.get("lastTransitionReason") is None else str(status["lastTransitionReason"]),
        message=str(status.get("lastTransitionMessage") or ""),
        accepted=accepted if isinstance(accepted, int) and accepted >= 0 else 0,
    )


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _generation(obj: Mapping[str, Any]) -> int | None:
    generation = (obj.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) and generation >= 0 else None


class _Conditions:
    """Builds one object's conditions, keeping lastTransitionTime of those whose status is unchanged."""

    def __init__(self, generation: int | None, previous: Mapping[str, Any] | None, now: str) -> None:
        self.generation = generation
        self.now = now
        self.before: dict[str, Mapping[str, Any]] = {}
        for condition in (previous or {}).get("conditions") or ():
            if isinstance(condition, Mapping) and isinstance(condition.get("type"), str):
                self.before[condition["type"]] = condition
        self.items: list[dict[str, Any]] = []

    def add(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        text = "Unknown" if status is None else ("True" if status else "False")
        before = self.before.get(type_)
        since = self.now
        if before is not None and before.get("status") == text and before.get("lastTransitionTime"):
            since = str(before["lastTransitionTime"])
        condition: dict[str, Any] = {
            "type": type_,
            "status": text,
            "lastTransitionTime": since,
            "reason": reason,
            "message": cut(message, MAX_MESSAGE),
        }
        if self.generation is not None:
            condition["observedGeneration"] = self.generation
        self.items.append(condition)


def _problem_text(problems: Iterable[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in problems)


def _pair_list(pairs: Sequence[tuple[str, str, SessionState | None]], with_peer: bool) -> str:
    shown = []
    for node, peer, session in pairs[:MAX_LISTED_PAIRS]:
        where = f"{node}/{peer}" if with_peer else node
        if session is None:
            state = "no session"
        elif session.reason:
            state = f"{session.bgp_state}, {session.reason}"
        else:
            state = session.bgp_state
        shown.append(f"{where} ({state})")
    text = ", ".join(shown)
    if len(pairs) > MAX_LISTED_PAIRS:
        text += f" and {len(pairs) - MAX_LISTED_PAIRS} more"
    return text


def summarize(
    route_server: Mapping[str, Any],
    peers: Sequence[Mapping[str, Any]],
    associations: Sequence[Mapping[str, Any]],
    sessions: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
    local: RouteServerView | None,
    holder: str,
    now: datetime,
    previous: Mapping[Key, Mapping[str, Any]],
) -> dict[Key, dict[str, Any]]:
    """The status body of the route server, each of its peers and associations, by (kind, name).

    Node tables are per node: association fields come from `local`, the Lease holder's own view
    (its node's tables, or the aws table it alone writes); sessions report every node's BGP state.
    """
    stamp = format_time(now)
    rs_name = _name(route_server)
    peer_names = sorted({_name(p) for p in peers if _name(p)})
    liveness = {_name(p): str((p.get("spec") or {}).get("liveness") or "BFD") for p in peers}
    states = [s for s in (session_state(o) for o in sessions) if s is not None]
    endpoints = sorted({s.node for s in states})
    by_pair: dict[tuple[str, str], SessionState] = {}
    for state in states:
        by_pair[(state.node, state.peer)] = state
    down: list[tuple[str, str, SessionState | None]] = []
    for node in endpoints:
        for peer in peer_names:
            session = by_pair.get((node, peer))
            if session is None or not session.established:
                down.append((node, peer, session))

    out: dict[Key, dict[str, Any]] = {}
    out[(ROUTE_SERVER, rs_name)] = _route_server_status(
        route_server, peer_names, liveness, endpoints, by_pair, down, problems, local, holder, stamp, previous
    )
    by_peer: dict[str, list[SessionState]] = {}
    for (_, peer), state in sorted(by_pair.items()):
        by_peer.setdefault(peer, []).append(state)
    for peer_obj in peers:
        name = _name(peer_obj)
        if name:
            out[(PEER, name)] = _peer_status(
                peer_obj, endpoints, by_pair, by_peer.get(name, []), problems, stamp, previous
            )
    tables = {} if local is None else {t.name: t for t in local.tables}
    for association in associations:
        name = _name(association)
        if name:
            out[(ASSOCIATION, name)] = _association_status(
                association, tables.get(name), local is not None, problems, holder, stamp, previous
            )
    return out


def _of(problems: Sequence[Problem], kind: str, name: str) -> list[Problem]:
    return [p for p in problems if p.kind == kind and p.name == name]


def _route_server_status(
    obj: Mapping[str, Any],
    peer_names: Sequence[str],
    liveness: Mapping[str, str],
    endpoints: Sequence[str],
    by_pair: Mapping[tuple[str, str], SessionState],
    down: Sequence[tuple[str, str, SessionState | None]],
    problems: Sequence[Problem],
    local: RouteServerView | None,
    holder: str,
    stamp: str,
    previous: Mapping[Key, Mapping[str, Any]],
) -> dict[str, Any]:
    name = _name(obj)
    generation = _generation(obj)
    conditions = _Conditions(generation, previous.get((ROUTE_SERVER, name)), stamp)
    own = _of(problems, ROUTE_SERVER, name)
    down_nodes = {node for node, _, _ in down}
    serving = [node for node in endpoints if node not in down_nodes]
    total = len(endpoints) * len(peer_names)

    if own:
        conditions.add("Ready", False, own[0].reason.value, _problem_text(own))
    elif not endpoints:
        conditions.add("Ready", False, "NoEndpoints", "no endpoint node reports a RouteServerSession")
    elif serving:
        reason = "AllSessionsEstablished" if not down else "EndpointsServing"
        conditions.add(
            "Ready", True, reason, f"{len(serving)} of {len(endpoints)} endpoints have every peer Established"
        )
    else:
        conditions.add(
            "Ready",
            False,
            "SessionsDown",
            f"no endpoint has every peer Established ({total - len(down)} of {total} sessions Established)",
        )

    if not endpoints:
        conditions.add("Degraded", False, "NoEndpoints", "no endpoint node reports a RouteServerSession")
    elif down:
        conditions.add(
            "Degraded",
            True,
            "SessionsNotEstablished",
            f"{len(down)} of {total} sessions not Established: {_pair_list(down, with_peer=True)}",
        )
    else:
        conditions.add("Degraded", False, "AllSessionsEstablished", f"{total} sessions Established")

    if local is None:
        conditions.add(
            "PersistingRoutes", None, "NoLocalStatus", f"the Lease holder {holder} does not run it (yet)"
        )
    elif not local.persist.enabled:
        conditions.add("PersistingRoutes", False, "Disabled", "spec.persistRoutes.enabled is false")
    elif local.persist.state == "Holding":
        conditions.add(
            "PersistingRoutes",
            True,
            "Holding",
            f"every session is down; {local.persist.persisted_routes} routes are kept",
        )
    elif local.persist.state == "Recovering":
        remaining = local.persist.window_remaining_seconds
        left = "" if remaining is None else f", {remaining:.0f} s of the window left"
        conditions.add(
            "PersistingRoutes",
            True,
            "Recovering",
            f"{local.persist.persisted_routes} kept routes not yet re-advertised{left}",
        )
    else:
        conditions.add("PersistingRoutes", False, "Live", "routes follow the sessions")

    def up(peer: str) -> bool:
        for node in endpoints:
            session = by_pair.get((node, peer))
            if session is None or not session.established:
                continue
            if liveness.get(peer, "BFD") != "BFD" or session.bfd_state == BFD_UP:
                return True
        return False

    status: dict[str, Any] = {
        "conditions": conditions.items,
        "endpoints": len(endpoints),
        "peers": len(peer_names),
        "peersUp": sum(1 for peer in peer_names if up(peer)),
        "leaseHolder": cut(holder, MAX_NAME),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if local is not None:
        status["routes"] = max(0, local.fib_routes)
        if local.persist.state in PERSIST_STATES:
            status["persistState"] = local.persist.state
    return status


def _peer_status(
    obj: Mapping[str, Any],
    endpoints: Sequence[str],
    by_pair: Mapping[tuple[str, str], SessionState],
    mine: Sequence[SessionState],
    problems: Sequence[Problem],
    stamp: str,
    previous: Mapping[Key, Mapping[str, Any]],
) -> dict[str, Any]:
    name = _name(obj)
    generation = _generation(obj)
    conditions = _Conditions(generation, previous.get((PEER, name)), stamp)
    own = _of(problems, PEER, name)
    missing_secret = [p for p in own if p.reason is ProblemReason.MISSING_SECRET]
    down = [(node, name, by_pair.get((node, name))) for node in endpoints]
    down = [pair for pair in down if pair[2] is None or not pair[2].established]

    if own:
        first = own[0]
        reason = AUTH_SECRET_MISSING if first.reason is ProblemReason.MISSING_SECRET else first.reason.value
        conditions.add("Ready", False, reason, _problem_text(own))
    elif not mine:
        conditions.add("Ready", False, "NoSessions", "no endpoint node reports a session with this peer")
    elif down:
        conditions.add(
            "Ready", False, "SessionsDown", f"not Established on {_pair_list(down, with_peer=False)}"
        )
    else:
        conditions.add(
            "Ready", True, "AllSessionsEstablished", f"Established on all {len(endpoints)} endpoints"
        )

    if not endpoints:
        conditions.add("Degraded", False, "NoEndpoints", "no endpoint node reports a RouteServerSession")
    elif down:
        conditions.add(
            "Degraded",
            True,
            "SessionsNotEstablished",
            f"{len(down)} of {len(endpoints)} sessions not Established: {_pair_list(down, with_peer=False)}",
        )
    else:
        conditions.add("Degraded", False, "AllSessionsEstablished", f"{len(endpoints)} sessions Established")

    held = [s for s in mine if s.reason == MAX_PREFIXES_REASON]
    if held:
        detail = ", ".join(
            f"{s.node}" + (f": {s.message}" if s.message else "") for s in held[:MAX_LISTED_PAIRS]
        )
        more = f" and {len(held) - MAX_LISTED_PAIRS} more" if len(held) > MAX_LISTED_PAIRS else ""
        conditions.add("MaxPrefixesReached", True, MAX_PREFIXES_REASON, f"max-prefix limit on {detail}{more}")
    else:
        conditions.add("MaxPrefixesReached", False, "WithinLimit", "")

    if missing_secret:
        conditions.add(
            AUTH_SECRET_MISSING, True, ProblemReason.MISSING_SECRET.value, _problem_text(missing_secret)
        )
    else:
        conditions.add(AUTH_SECRET_MISSING, False, "SecretsPresent", "")

    status: dict[str, Any] = {
        "conditions": conditions.items,
        "sessions": len(mine),
        "sessionsEstablished": sum(1 for s in mine if s.established),
        "bfdSessionsUp": sum(1 for s in mine if s.bfd_state == BFD_UP),
        "prefixesAccepted": max((s.accepted for s in mine), default=0),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def _reason(value: str) -> str:
    """A rejected route's reason as the CRD accepts it (CamelCase, <= 64 characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9]", "", value)[:MAX_REASON]
    if cleaned and not cleaned[0].isupper():
        cleaned = cleaned[0].upper() + cleaned[1:]
    return cleaned if _REASON.match(cleaned) else "Unknown"


def _association_status(
    obj: Mapping[str, Any],
    table: TableView | None,
    have_local: bool,
    problems: Sequence[Problem],
    holder: str,
    stamp: str,
    previous: Mapping[Key, Mapping[str, Any]],
) -> dict[str, Any]:
    name = _name(obj)
    generation = _generation(obj)
    conditions = _Conditions(generation, previous.get((ASSOCIATION, name)), stamp)
    own = _of(problems, ASSOCIATION, name)
    status: dict[str, Any] = {"conditions": conditions.items}
    if generation is not None:
        status["observedGeneration"] = generation

    if own:
        conditions.add("Ready", False, own[0].reason.value, _problem_text(own))
    elif not have_local:
        conditions.add(
            "Ready", None, "NoLocalStatus", f"the Lease holder {holder} does not run the route server (yet)"
        )
    elif table is None:
        conditions.add(
            "Ready",
            None,
            "NotWrittenHere",
            f"the Lease holder {holder} does not write this table;"
            " each node's `routeserver status` shows its own",
        )
    elif table.in_sync:
        conditions.add(
            "Ready",
            True,
            "InSync",
            f"{table.routes_installed} of {table.routes_desired} routes in {table.target}",
        )
    else:
        detail = f": {table.last_error}" if table.last_error else ""
        conditions.add(
            "Ready",
            False,
            "OutOfSync",
            f"{table.routes_installed} of {table.routes_desired} routes in {table.target}{detail}",
        )

    if table is None:
        conditions.add("Degraded", None, "NoLocalStatus", "no table status on the Lease holder")
        return status
    if table.routes_rejected:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(table.rejected_by_reason.items()))
        conditions.add(
            "Degraded", True, "RoutesRejected", f"{table.routes_rejected} routes rejected ({reasons})"
        )
    else:
        conditions.add("Degraded", False, "NoRoutesRejected", "")

    node = None if table.target.startswith("aws ") else cut(holder, MAX_NAME)
    rejected: list[dict[str, Any]] = []
    for route in sorted(table.rejected, key=lambda r: r.prefix)[:MAX_REJECTED_ROUTES]:
        entry: dict[str, Any] = {
            "prefix": cut(route.prefix, MAX_PREFIX_LENGTH),
            "reason": _reason(route.reason),
        }
        if node:
            entry["node"] = node
        if route.message:
            entry["message"] = cut(route.message, MAX_REJECTED_MESSAGE)
        rejected.append(entry)
    status.update(
        {
            "targets": 1,
            "targetsInSync": 1 if table.in_sync else 0,
            "routesDesired": max(0, table.routes_desired),
            "routesInstalled": max(0, table.routes_installed),
            "routesRejected": max(0, table.routes_rejected),
        }
    )
    if rejected:
        status["rejectedRoutes"] = rejected
    if table.last_sync_at is not None:
        status["lastSyncTime"] = format_time(datetime.fromtimestamp(table.last_sync_at, UTC))
    return status


__all__ = [
    "ASSOCIATION",
    "MAX_LISTED_PAIRS",
    "MAX_MESSAGE",
    "MAX_REJECTED_ROUTES",
    "PEER",
    "ROUTE_SERVER",
    "STATUS_FIELDS",
    "SessionState",
    "cut",
    "format_time",
    "session_state",
    "summarize",
]
