"""The summary status writer: the Lease holder of a RouteServer writes its status and its peers' and
associations' (conditions, counts), from every node's RouteServerSession objects.

`SummaryWriter` is a status sink of the agent (controller/agent.py `StatusSink`). At every snapshot
(`AgentStatus`, every 10 s, after every apply and after every event), for each RouteServer in the operator's
cache that `is_leader` says this agent leads:

- its session objects are listed by the label `routeserver.dev/route-server` (one list call per
  route server and pass);
- `summarize` (controller/operator/summary.py) makes the status body of the route server, its
  peers and its associations from them, the translation's Problems and this agent's own view;
- each body is compared with what the object has: what we last wrote, while the cached object is
  the one we wrote against (the operator's cache ignores status-only changes, so its copy of the
  status is stale once we have written), else the cached object's status. Only a difference is
  written: a JSON merge patch of the status subresource carrying every key summarize owns (keys it
  no longer produces are set to null; the conditions list is replaced whole);
- at most one pass (the listing, summarize, the writes) per `min_interval`, so no object is written
  more often: a publish inside the interval (the agent publishes after every state change) only
  keeps its snapshot, and one pass runs with the latest snapshot when the interval ends -- a
  change inside the interval is written then, not dropped, and a burst of publishes costs one
  listing per route server.

Route servers we stop leading are not written (a deferred pass asks `is_leader` again before each
write) and their last-written memory is cleared: the next leader may write in between. API errors
-- 404 (the object is gone), 409, any other -- are logged once per object and state, counted in
`failures`, and the write is tried again at the next pass; nothing is raised into the agent.
`writes` counts successful writes by kind, `passes` the passes run.

Owns: the scheduling and the writes of summary status. Must not touch: the runtime or agent (it
reads the snapshot only), spec or metadata of any object, session objects (it only lists them).
Every kubernetes-client call goes through `Kube.call` (off the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.desired import Problem
from controller.logs import event
from controller.operator.kube import (
    ASSOCIATIONS,
    GROUP,
    KIND_OF_PLURAL,
    PEERS,
    ROUTE_SERVERS,
    SESSIONS,
    VERSION,
    Kube,
)
from controller.operator.sessions import ROUTE_SERVER_LABEL, label_value
from controller.operator.summary import STATUS_FIELDS, Key, summarize
from controller.status import AgentStatus

log = logging.getLogger(__name__)

PURPOSE = "summary"  # Kube.call's request counter
NODE_CHECK_INTERVAL = 60.0  # seconds between lookups of one node (sessions of deleted nodes go)
MERGE_PATCH = "application/merge-patch+json"
PLURAL_OF_KIND = {kind: plural for plural, kind in KIND_OF_PLURAL.items()}

Json = dict[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


def _route_server_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("spec") or {}).get("routeServerRef") or {}).get("name", ""))


def owned(kind: str, status: Mapping[str, Any] | None) -> Json:
    """The keys of `status` that summarize owns for `kind`, without nulls."""
    fields = STATUS_FIELDS[kind]
    return {k: v for k, v in (status or {}).items() if k in fields and v is not None}


def merge_patch(kind: str, body: Mapping[str, Any]) -> Json:
    """The status merge patch that makes the owned keys equal `body` (absent ones null)."""
    return {"status": {k: body.get(k) for k in STATUS_FIELDS[kind]}}


@dataclass(slots=True)
class _Written:
    body: Json
    seen_version: str | None  # the cached object's resourceVersion when we wrote


class SummaryWriter:
    """Writes the summary status of the RouteServers this agent leads (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        node_name: str,
        is_leader: Callable[[str], bool],
        objects: Callable[[], Mapping[str, Sequence[Mapping[str, Any]]]],
        problems: Callable[[], Sequence[Problem]],
        *,
        min_interval: float = 1.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.kube = kube
        self.node = node_name
        self._is_leader = is_leader
        self._objects = objects
        self._problems = problems
        self.min_interval = min_interval
        self._clock = clock
        self.writes: Counter[str] = Counter()  # successful status writes by kind
        self.failures: Counter[str] = Counter()  # failed calls by kind ("RouteServerSession": list)
        self.passes = 0  # summarize passes run (each lists the sessions of every route server we lead)
        self._written: dict[Key, _Written] = {}
        self._errors: dict[Key, str] = {}  # the state last logged per object
        self._latest: AgentStatus | None = None
        self._last_pass = -math.inf  # monotonic start of the last pass
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._node_checked: dict[str, tuple[float, bool]] = {}  # node -> (when looked up, exists)

    # -- the sink --------------------------------------------------------------------------------

    async def publish(self, status: AgentStatus) -> None:
        """Summarize every route server we lead and write what changed (never raises ApiException).

        Within `min_interval` of the last pass, the snapshot is kept and one pass runs with the
        latest snapshot when the interval ends.
        """
        self._latest = status
        wait = self._last_pass + self.min_interval - time.monotonic()
        if wait > 0:
            if self._timer is None or self._timer.done():
                self._timer = asyncio.get_running_loop().create_task(self._pass_later(wait))
            return
        await self._pass()

    async def close(self) -> None:
        """Stop a deferred pass (its writes are left to the next publish or the next leader)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    @property
    def deferred(self) -> bool:
        """A pass is waiting for the end of the interval."""
        return self._timer is not None and not self._timer.done()

    # -- one pass --------------------------------------------------------------------------------

    async def _pass_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._pass()

    async def _pass(self) -> None:
        async with self._lock:
            status = self._latest
            if status is None:
                return
            self._last_pass = time.monotonic()
            self.passes += 1
            objects = self._objects()
            problems = list(self._problems())
            views = {view.name: view for view in status.route_servers}
            peers = list(objects.get(PEERS, ()))
            associations = list(objects.get(ASSOCIATIONS, ()))
            led: set[str] = set()
            for server in objects.get(ROUTE_SERVERS, ()):
                name = _name(server)
                if not name or not self._is_leader(name):
                    continue
                led.add(name)
                sessions = await self._list_sessions(name)
                if sessions is None:
                    continue  # logged; tried again at the next publish
                sessions = await self._without_gone_nodes(name, sessions)
                mine = [p for p in peers if _route_server_of(p) == name]
                tables = [a for a in associations if _route_server_of(a) == name]
                cached: dict[Key, Mapping[str, Any]] = {("RouteServer", name): server}
                cached.update({("RouteServerPeer", _name(p)): p for p in mine})
                cached.update({("RouteTableAssociation", _name(a)): a for a in tables})
                previous = {key: self._believed(key, obj) for key, obj in cached.items()}
                now = self._clock()
                bodies = summarize(
                    server, mine, tables, sessions, problems, views.get(name), self.node, now, previous
                )
                for key, body in bodies.items():
                    if previous[key] != body and self._is_leader(name):
                        await self._write(key, body, _version(cached[key]))
            self._forget(led, objects)

    def _believed(self, key: Key, obj: Mapping[str, Any]) -> Json:
        """The status we believe `obj` has: what we wrote while the cache still holds that version."""
        written = self._written.get(key)
        if written is not None and written.seen_version == _version(obj):
            return written.body
        return owned(key[0], obj.get("status"))

    def _forget(self, led: set[str], objects: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Drop what we keep for route servers we no longer lead and for objects that are gone."""
        leading = self._keys_of(led, objects)
        for key in [k for k in self._written if k not in leading]:
            del self._written[key]
        present = {
            (KIND_OF_PLURAL[plural], _name(obj))
            for plural in (ROUTE_SERVERS, PEERS, ASSOCIATIONS)
            for obj in objects.get(plural, ())
        }
        present |= {("RouteServerSession", _name(obj)) for obj in objects.get(ROUTE_SERVERS, ())}
        for key in [k for k in self._errors if k not in present]:
            del self._errors[key]

    @staticmethod
    def _keys_of(led: set[str], objects: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[Key]:
        keys = {("RouteServer", name) for name in led}
        for plural in (PEERS, ASSOCIATIONS):
            for obj in objects.get(plural, ()):
                if _route_server_of(obj) in led:
                    keys.add((KIND_OF_PLURAL[plural], _name(obj)))
        return keys

    # -- calls -----------------------------------------------------------------------------------

    async def _write(self, key: Key, body: Json, seen_version: str | None) -> None:
        kind, name = key
        try:
            await self.kube.call(
                PURPOSE,
                self.kube.custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                PLURAL_OF_KIND[kind],
                name,
                merge_patch(kind, body),
                _content_type=MERGE_PATCH,
            )
        except Exception as exc:  # every failure is logged and retried, never raised
            self.failures[kind] += 1
            self._written.pop(key, None)
            self._failed(key, exc)
            return
        self._written[key] = _Written(body, seen_version)
        self.writes[kind] += 1
        if self._errors.pop(key, None) is not None:
            event(
                log, logging.INFO, "summary_write_recovered", "summary status written", kind=kind, object=name
            )

    async def _without_gone_nodes(
        self, route_server: str, sessions: list[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """Delete the session objects of nodes that no longer exist (their agent cannot: it is gone
        with its node); the rest are returned. A node is looked up at most every NODE_CHECK_INTERVAL."""
        nodes = {str(s.get("spec", {}).get("node", "")) for s in sessions} - {"", self.node}
        now = time.monotonic()
        gone: set[str] = set()
        for node in sorted(nodes):
            checked = self._node_checked.get(node)
            if checked is not None and now - checked[0] < NODE_CHECK_INTERVAL:
                if not checked[1]:
                    gone.add(node)
                continue
            try:
                await self.kube.call(PURPOSE, self.kube.core.read_node, node)
                exists = True
            except ApiException as exc:
                if exc.status != 404:
                    continue  # not known: keep its sessions
                exists = False
            except Exception:
                continue
            self._node_checked[node] = (now, exists)
            if not exists:
                gone.add(node)
        if not gone:
            return sessions
        kept = []
        for session in sessions:
            node = str(session.get("spec", {}).get("node", ""))
            if node not in gone:
                kept.append(session)
                continue
            name = _name(session)
            try:
                await self.kube.call(PURPOSE, self.kube.custom.delete_cluster_custom_object, GROUP, VERSION,
                                     SESSIONS, name)  # fmt: skip
            except ApiException as exc:
                if exc.status != 404:
                    kept.append(session)
                    continue
            self.writes["RouteServerSessionDeleted"] += 1
            event(log, logging.INFO, "session_of_gone_node_deleted",
                  "deleted the session object of a node that no longer exists",
                  route_server=route_server, node=node, session=name)  # fmt: skip
        return kept

    async def _list_sessions(self, route_server: str) -> list[Mapping[str, Any]] | None:
        key = ("RouteServerSession", route_server)
        try:
            listed = await self.kube.call(
                PURPOSE,
                self.kube.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                SESSIONS,
                label_selector=f"{ROUTE_SERVER_LABEL}={label_value(route_server)}",
            )
        except Exception as exc:  # logged, tried again at the next publish
            self.failures["RouteServerSession"] += 1
            self._failed(key, exc)
            return None
        if self._errors.pop(key, None) is not None:
            event(
                log,
                logging.INFO,
                "summary_list_recovered",
                "session objects listed",
                route_server=route_server,
            )
        items = listed.get("items") if isinstance(listed, Mapping) else None
        return [item for item in items or () if isinstance(item, Mapping)]

    def _failed(self, key: Key, exc: Exception) -> None:
        state = _state(exc)
        if self._errors.get(key) == state:
            return
        self._errors[key] = state
        kind, name = key
        if isinstance(exc, ApiException) and exc.status == 404:
            event(
                log,
                logging.INFO,
                "summary_object_gone",
                "object gone before its summary status was written",
                kind=kind,
                object=name,
            )
            return
        event(
            log,
            logging.WARNING,
            "summary_write_failed",
            "summary status call failed (tried again at the next publish)",
            kind=kind,
            object=name,
            node=self.node,
            error=state,
        )


def _state(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["MERGE_PATCH", "PURPOSE", "SummaryWriter", "merge_patch", "owned"]
