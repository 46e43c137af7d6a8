"""The operator's source of desired state: the API server's objects -> translate -> `Agent.submit`.

Owns: the agent's view of the cluster -- the RouteServers, RouteServerPeers and
RouteTableAssociations (kopf watches, embedded in the agent's loop), this node's Node object (its
labels select route servers), the Secrets the peers reference (by name, nothing else), the
periodic full listing that is the source of truth, turning all of it into a `DesiredState` off the
loop, and the freshness of what it has seen (`/healthz` fails when no watch has spoken for
`stale_after` seconds).

May not touch: the runtime, the tables, the BGP/BFD sessions (the agent and the runtime own them),
or anything in our objects: kopf runs with only low-level `on.event` handlers, posting disabled,
no finalizers, no progress storage and no peering, so it never writes to the API server. Status,
Events and Leases are written by other operator modules.

How state flows (level-triggered, DESIGN §7.6):

- A periodic full pass (`resync_interval`, and once before the first submit) LISTs the three kinds
  and replaces the store with what exists; kopf's watch events update it in between. An event
  newer than the listing that started before it wins over that listing (a key changed or deleted
  while the LIST was in flight keeps the event's version). kopf LISTs on its own before it watches,
  so each start of kopf's watches is followed by two more listings of ours (an object deleted
  between our listing and kopf's is in neither kopf's listing nor its events).
- Every change marks the store dirty; one submitter task debounces (`debounce` s), translates off
  the loop and submits. The agent coalesces, and the runtime leaves unchanged sessions alone, so a
  burst of 1,000 object changes costs a few translations and touches nothing that did not change.
- Nothing is submitted before the first full listing, the Node and the referenced Secrets are
  read: an agent that starts must never submit a partial state (it would withdraw routes that the
  previous agent left for it to adopt).
- Secrets are read by name (GET, never LIST) when a reference appears and every
  `secret_interval` s; a rotation re-keys the session on the next read. A Secret or key that goes
  missing keeps the last key seen in use (the session stays keyed, never silently unkeyed) and is
  reported as a problem (reason SecretNotFound, message naming the Secret and key); one never
  seen drops the peer with the same problem (translate). Secret values never reach a log line.
- The Node object is watched by name on a thread (bookmarks on); its label changes re-select the
  route servers at once.

Problems (objects that fail validation, references that do not resolve) are never a refusal here:
the rest is applied, and the problems are in the desired state's `problems` (status and
conditions report them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any

import kopf
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import logs
from controller.agent import Agent, ApplyError, cancel_and_wait
from controller.desired import DesiredState, NodeContext, Problem, ProblemReason, SecretKey
from controller.events import Event, LogSink, ObjectProblem
from controller.models.resources import (
    Resource,
    RouteServer,
    RouteServerPeer,
    RouteTableAssociation,
    parse_resource,
)
from controller.node import discover
from controller.operator.kube import (
    ASSOCIATIONS,
    GROUP,
    KIND_OF_PLURAL,
    PEERS,
    ROUTE_SERVERS,
    VERSION,
    Kube,
)
from controller.translate import translate

log = logging.getLogger(__name__)

WATCHED = (ROUTE_SERVERS, PEERS, ASSOCIATIONS)
PLURAL_OF_KIND = {KIND_OF_PLURAL[p]: p for p in WATCHED}
RESYNC_INTERVAL = 60.0  # the full listing, the source of truth
SECRET_INTERVAL = 10.0  # referenced Secrets are read again this often
DEBOUNCE = 0.05  # changes within this window become one translation
STALE_AFTER = 180.0  # /healthz fails when no watch has produced anything for this long
NODE_WATCH_TIMEOUT = 50  # seconds; the server ends each node watch after this (then it is renewed)
WATCH_CONNECT_TIMEOUT = 5.0
WATCH_SERVER_TIMEOUT = 300  # an integer: the API server refuses "300.0"
WATCH_CLIENT_TIMEOUT = 330.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
# After kopf's watches start, wait this long, then LIST; then this long again (_relist_after_kopf_listed).
KOPF_LISTING_RELISTS = (2.0, 10.0)
KOPF_STOP_TIMEOUT = 10.0
MAX_PAUSE = 2.0  # the longest wait between two translations during a burst
RELEASE_CHECK_TIMEOUT = 3.0  # seconds; within the pod's termination grace
MAX_PROBLEMS_LOGGED = 20


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    node_name: str
    namespace: str  # the release namespace: Leases, and Secret references that name none
    router_id: IPv4Address | None = None
    resync_interval: float = RESYNC_INTERVAL
    secret_interval: float = SECRET_INTERVAL
    debounce: float = DEBOUNCE
    stale_after: float = STALE_AFTER
    # The DaemonSet running the agents (the chart sets it): on SIGTERM, a DaemonSet that is gone (or
    # our rights on it, with the release's RBAC) means `helm uninstall`: withdraw instead of keeping.
    daemonset: str | None = None


@dataclass
class _Entry:
    body: Mapping[str, Any] | None  # None: deleted (a tombstone, until the next full listing)
    at: float  # monotonic time of the event or listing that produced it


@dataclass
class Store:
    """What the agent knows of the cluster: raw objects by plural and name, Node labels, Secrets."""

    objects: dict[str, dict[str, _Entry]] = field(default_factory=lambda: {p: {} for p in WATCHED})
    node_labels: dict[str, str] = field(default_factory=dict)
    node_seen: bool = False
    secrets: dict[SecretKey, dict[str, bytes]] = field(default_factory=dict)
    missing_secrets: dict[SecretKey, str] = field(default_factory=dict)  # key -> why

    def live(self, plural: str) -> list[Mapping[str, Any]]:
        return [e.body for e in self.objects[plural].values() if e.body is not None]

    def apply_event(self, plural: str, kind: str | None, body: Mapping[str, Any], now: float) -> bool:
        """One watch event; True when the store changed."""
        name = str(body.get("metadata", {}).get("name", ""))
        if not name:
            return False
        objects = self.objects[plural]
        before = objects.get(name)
        if kind == "DELETED":
            objects[name] = _Entry(None, now)
            return before is not None and before.body is not None
        if before is not None and before.body is not None and _same(before.body, body):
            before.at = now
            return False
        objects[name] = _Entry(dict(body), now)
        return True

    def apply_listing(self, plural: str, items: Iterable[Mapping[str, Any]], started: float) -> bool:
        """A full listing sent at `started`; entries changed by events after that are kept."""
        objects = self.objects[plural]
        listed = {str(i["metadata"]["name"]): i for i in items}
        changed = False
        result: dict[str, _Entry] = {}
        for name, entry in objects.items():
            if entry.at > started:
                result[name] = entry  # an event newer than the listing
        for name, body in listed.items():
            if name in result:
                continue
            before = objects.get(name)
            if before is None or before.body is None or not _same(before.body, body):
                changed = True
                result[name] = _Entry(dict(body), started)
            else:
                result[name] = _Entry(before.body, started)  # the same body: its parse stays cached
        for name, entry in objects.items():
            if name not in result and entry.body is not None:
                changed = True  # gone, and no newer event says otherwise
        self.objects[plural] = result
        return changed


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal for translation: spec, labels and uid (status and resourceVersion churn is ignored)."""
    ma, mb = a.get("metadata", {}), b.get("metadata", {})
    return (
        a.get("spec") == b.get("spec")
        and ma.get("labels") == mb.get("labels")
        and ma.get("uid") == mb.get("uid")
        and ma.get("generation") == mb.get("generation")
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    route_servers: tuple[RouteServer, ...]
    peers: tuple[RouteServerPeer, ...]
    associations: tuple[RouteTableAssociation, ...]
    problems: tuple[Problem, ...]


class ParseCache:
    """Parsed objects by (plural, name), reused while the store holds the same body object (the
    store replaces a body only when its spec, labels, uid or generation changed), so a burst of
    changes to a few of 1,000 objects re-validates those few, not all 1,000."""

    def __init__(self) -> None:
        self._parsed: dict[
            tuple[str, str], tuple[Mapping[str, Any], Resource | None, tuple[Problem, ...]]
        ] = {}

    def parse(self, objects: Mapping[str, Iterable[Mapping[str, Any]]]) -> Parsed:
        """Validate every object; one that fails is a problem naming its field, the others go on."""
        route_servers: list[RouteServer] = []
        peers: list[RouteServerPeer] = []
        associations: list[RouteTableAssociation] = []
        problems: list[Problem] = []
        seen: dict[tuple[str, str], tuple[Mapping[str, Any], Resource | None, tuple[Problem, ...]]] = {}
        for plural, bodies in objects.items():
            for body in bodies:
                key = (plural, str(body.get("metadata", {}).get("name", "")))
                cached = self._parsed.get(key)
                if cached is None or cached[0] is not body:
                    cached = (body, *_parse_one(plural, body))
                seen[key] = cached
                _, resource, found = cached
                problems.extend(found)
                if isinstance(resource, RouteServer):
                    route_servers.append(resource)
                elif isinstance(resource, RouteServerPeer):
                    peers.append(resource)
                elif isinstance(resource, RouteTableAssociation):
                    associations.append(resource)
        self._parsed = seen  # objects gone from the store leave the cache
        return Parsed(tuple(route_servers), tuple(peers), tuple(associations), tuple(problems))


def _parse_one(plural: str, body: Mapping[str, Any]) -> tuple[Resource | None, tuple[Problem, ...]]:
    kind = KIND_OF_PLURAL[plural]
    name = str(body.get("metadata", {}).get("name", ""))
    clean = {k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "spec")}
    clean.setdefault("kind", kind)
    try:
        return parse_resource(clean), ()
    except ValidationError as exc:
        return None, tuple(
            Problem(kind, name, _field(error["loc"]), ProblemReason.INVALID, error["msg"])
            for error in exc.errors()
        )


def _field(loc: Iterable[int | str]) -> str:
    parts = [p for p in loc if p not in KIND_OF_PLURAL.values()]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def referenced_secrets(
    peers: Iterable[RouteServerPeer], namespace: str
) -> dict[SecretKey, list[tuple[str, str, str]]]:
    """(namespace, name) -> [(peer, field, key)] for every Secret the peers reference."""
    refs: dict[SecretKey, list[tuple[str, str, str]]] = {}
    for peer in peers:
        spec = peer.spec
        uses = []
        if spec.auth_secret_ref is not None:
            uses.append(("spec.authSecretRef", spec.auth_secret_ref))
        if spec.bfd is not None and spec.bfd.auth is not None:
            uses.append(("spec.bfd.auth.secretRef", spec.bfd.auth.secret_ref))
        for path, ref in uses:
            key = (ref.namespace or namespace, ref.name)
            refs.setdefault(key, []).append((peer.metadata.name, path, ref.key))
    return refs


def build_desired(
    store_objects: Mapping[str, list[Mapping[str, Any]]],
    node: NodeContext,
    secrets: Mapping[SecretKey, Mapping[str, bytes]],
    missing: Mapping[SecretKey, str],
    cache: ParseCache | None = None,
) -> tuple[DesiredState, dict[SecretKey, list[tuple[str, str, str]]]]:
    """Parse, translate and add the problems of Secrets that went missing (pure; runs off the loop)."""
    parsed = (cache or ParseCache()).parse(store_objects)
    desired = translate(parsed.route_servers, parsed.peers, parsed.associations, node=node, secrets=secrets)
    refs = referenced_secrets(parsed.peers, node.namespace)
    problems = list(parsed.problems) + [_with_cause(p, missing) for p in desired.problems]
    for key, why in sorted(missing.items()):
        for peer, path, secret_key in refs.get(key, ()):
            if key in secrets and secret_key in secrets[key]:
                problems.append(
                    Problem(
                        "RouteServerPeer",
                        peer,
                        path,
                        ProblemReason.MISSING_SECRET,
                        f"{why}; the last key seen ({secret_key!r}) stays in use",
                    )
                )
    return replace(desired, problems=tuple(problems)), refs


def _with_cause(problem: Problem, missing: Mapping[SecretKey, str]) -> Problem:
    """A Secret never read: translate says "not found"; say why it could not be read (403 or 404)."""
    if problem.reason is not ProblemReason.MISSING_SECRET:
        return problem
    for (namespace, name), why in missing.items():
        if problem.message.startswith(f"Secret {namespace}/{name} not found"):
            return replace(problem, message=why)
    return problem


class OperatorSource:
    """The agent's `Source` in operator mode; see the module docstring."""

    def __init__(self, kube: Kube, options: OperatorOptions) -> None:
        self.kube = kube
        self.options = options
        self.store = Store()
        self.agent: Agent | None = None
        self.references: dict[SecretKey, list[tuple[str, str, str]]] = {}
        self.last_watch_event = time.monotonic()
        self.problems: tuple[Problem, ...] = ()
        self._dirty = asyncio.Event()
        self._listing = asyncio.Lock()  # full listings never overlap (_list_all)
        self._stopping = threading.Event()
        self._kopf_stop: asyncio.Event | None = None
        self._kopf_ready: asyncio.Event | None = None
        self._kopf_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._node_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listed_problems: frozenset[str] = frozenset()
        self._listeners: list[Callable[[DesiredState], None]] = []
        self._cache = ParseCache()  # used by one worker thread at a time (translations never overlap)
        # Where the source's own events go: the runtime's sinks (log line, metric, Kubernetes Event).
        self.emit: Callable[[Event], None] = LogSink(log).emit

    # -- what the status sinks read ----------------------------------------------------------------

    def on_desired(self, listener: Callable[[DesiredState], None]) -> None:
        """Call `listener(desired)` (on the loop, cheap) with every state submitted."""
        self._listeners.append(listener)

    def uid_of(self, kind: str, name: str) -> str | None:
        """The uid of a watched object (for ownerReferences and Events), None if unknown."""
        plural = PLURAL_OF_KIND.get(kind)
        entry = self.store.objects[plural].get(name) if plural is not None else None
        if entry is None or entry.body is None:
            return None
        uid = entry.body.get("metadata", {}).get("uid")
        return str(uid) if uid else None

    def objects(self) -> dict[str, list[Mapping[str, Any]]]:
        """plural -> the live objects of the cache (do not modify them)."""
        return {plural: self.store.live(plural) for plural in WATCHED}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, agent: Agent) -> None:
        """Read everything once, submit it (awaited), then start the watches and the loops."""
        self.agent = agent
        self._loop = loop = asyncio.get_running_loop()
        agent.add_health_check(self.fresh)
        await self._until_done(self._read_node, self._node_read_failed)
        await self._until_done(self._list_all, self._list_failed)
        objects = {p: self.store.live(p) for p in WATCHED}
        self.references = await asyncio.to_thread(self._references_of, objects)
        await self._read_secrets(set(self.references))
        with contextlib.suppress(ApplyError):  # logged and retried by the agent
            await self._submit()
        self._kopf_stop, self._kopf_ready = asyncio.Event(), asyncio.Event()
        self._kopf_task = loop.create_task(self._run_kopf(), name="kopf")
        self._node_thread = threading.Thread(target=self._watch_node, name="node-watch", daemon=True)
        self._node_thread.start()
        self._tasks = [
            loop.create_task(self._submitter(), name="operator-submitter"),
            loop.create_task(self._resyncer(), name="operator-resync"),
            loop.create_task(self._secret_reader(), name="operator-secrets"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kopf_ready.wait(), 30.0)
        # kopf installs its own SIGINT/SIGTERM handlers when it starts: take them back.
        if agent.options.handle_signals:
            agent.install_signal_handlers()

    async def stop(self) -> None:
        if self.agent is not None and await self.release_removed():
            logs.event(log, logging.WARNING, "release_removed",
                       "the agents' DaemonSet is gone (helm uninstall): withdrawing the routes",
                       daemonset=f"{self.options.namespace}/{self.options.daemonset}")  # fmt: skip
            self.agent.request_stop(keep_routes=False)
        self._stopping.set()
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self._kopf_task is not None and self._kopf_stop is not None:
            self._kopf_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._kopf_task), 10.0)
            except (TimeoutError, asyncio.CancelledError):
                await cancel_and_wait([self._kopf_task])
            except Exception:
                log.exception("kopf ended with an error")
            self._kopf_task = None
        if self._node_thread is not None:
            await asyncio.to_thread(self._node_thread.join, 2.0)  # a daemon thread: may outlive this

    async def release_removed(self) -> bool:
        """True when our DaemonSet is deleted or being deleted, or we may no longer read it (the
        release's RBAC went with it). Unreachable API: False (keeping the routes is the safe side)."""
        name = self.options.daemonset
        if not name:
            return False
        try:
            daemonset: Any = await self.kube.call(
                "release", self.kube.apps.read_namespaced_daemon_set, name, self.options.namespace,
                _request_timeout=RELEASE_CHECK_TIMEOUT,
            )  # fmt: skip
        except ApiException as exc:
            return exc.status in (401, 403, 404)
        except Exception:
            return False
        return bool(daemonset.metadata and daemonset.metadata.deletion_timestamp)

    def fresh(self) -> bool:
        """False when no watch has produced an event (or a renewed stream) for `stale_after` s."""
        return self.watch_age() <= self.options.stale_after

    def watch_age(self) -> float:
        return time.monotonic() - self.last_watch_event

    # -- reading ---------------------------------------------------------------------------------

    async def _until_done(self, step: Callable[[], Awaitable[object]], failed: Callable[..., None]) -> None:
        """Run `step` until it succeeds, backing off 1 s doubling to 30 s (the start-up reads)."""
        delay = RETRY_MIN
        while True:
            try:
                await step()
                return
            except Exception as exc:
                failed(exc, retry_seconds=delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _node_read_failed(self, exc: BaseException, retry_seconds: float | None = None) -> None:
        logs.event(log, logging.WARNING, "node_read_failed", "cannot read the Node; retrying",
                   node=self.options.node_name, error=_brief(exc), retry_seconds=retry_seconds)  # fmt: skip

    def _list_failed(self, exc: BaseException, retry_seconds: float | None = None) -> None:
        logs.event(log, logging.WARNING, "list_failed", "cannot list the route server objects; retrying",
                   error=_brief(exc), retry_seconds=retry_seconds)  # fmt: skip

    async def _read_node(self) -> None:
        try:
            node = await self.kube.call("node", self.kube.core.read_node, self.options.node_name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            logs.event(
                log,
                logging.WARNING,
                "node_not_found",
                "no Node object of this name: no labels, so only route servers without a "
                "nodeSelector select this node",
                node=self.options.node_name,
            )
            self._set_node_labels({})
            return
        self._set_node_labels(dict((node.metadata and node.metadata.labels) or {}))

    def _set_node_labels(self, labels: dict[str, str]) -> bool:
        changed = not self.store.node_seen or labels != self.store.node_labels
        self.store.node_labels = labels
        self.store.node_seen = True
        return changed

    async def _list_all(self) -> bool:
        changed = False
        # One listing at a time: an older listing applied after a newer one would bring back what
        # the newer one found deleted (the periodic pass and the passes after kopf's start may meet).
        async with self._listing:
            for plural in WATCHED:
                started = time.monotonic()
                listing: Any = await self.kube.call(
                    "list", self.kube.custom.list_cluster_custom_object, GROUP, VERSION, plural
                )
                changed |= self.store.apply_listing(plural, listing.get("items", []), started)
        self.last_watch_event = max(self.last_watch_event, time.monotonic())
        return changed

    def _references_of(
        self, objects: Mapping[str, list[Mapping[str, Any]]]
    ) -> dict[SecretKey, list[tuple[str, str, str]]]:
        """The Secrets the peers reference (blocking: parses; run it off the loop)."""
        return referenced_secrets(self._cache.parse(objects).peers, self.options.namespace)

    async def _read_secrets(self, keys: Iterable[SecretKey]) -> bool:
        """GET each Secret; True when what translation sees changed (values are never logged)."""
        changed = False
        for key in sorted(keys):
            namespace, name = key
            try:
                secret = await self.kube.call(
                    "secret", self.kube.core.read_namespaced_secret, name, namespace
                )
            except ApiException as exc:
                if exc.status in (403, 404):
                    why = (
                        f"Secret {namespace}/{name} not found"
                        if exc.status == 404
                        else f"Secret {namespace}/{name} may not be read (RBAC: 403)"
                    )
                    if self.store.missing_secrets.get(key) != why:
                        self.store.missing_secrets[key] = why
                        changed = True
                        logs.event(log, logging.WARNING, "secret_missing", why, secret=f"{namespace}/{name}")
                    continue
                logs.event(
                    log,
                    logging.WARNING,
                    "secret_read_failed",
                    "cannot read a Secret; retrying",
                    secret=f"{namespace}/{name}",
                    error=f"HTTP {exc.status}",
                )
                continue
            except Exception as exc:
                logs.event(
                    log,
                    logging.WARNING,
                    "secret_read_failed",
                    "cannot read a Secret; retrying",
                    secret=f"{namespace}/{name}",
                    error=type(exc).__name__,
                )
                continue
            values = _secret_values(secret)
            if self.store.missing_secrets.pop(key, None) is not None:
                changed = True
            if self.store.secrets.get(key) != values:
                self.store.secrets[key] = values
                changed = True
        for key in list(self.store.secrets):
            if key not in self.references:
                del self.store.secrets[key]  # no longer referenced: not kept in memory
                self.store.missing_secrets.pop(key, None)
        return changed

    # -- kopf ------------------------------------------------------------------------------------

    def _registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        for plural in WATCHED:
            kopf.on.event(GROUP, VERSION, plural, registry=registry)(self._kopf_handler(plural))
        kopf.on.login(registry=registry)(self._kopf_login)
        return registry

    def _kopf_handler(self, plural: str) -> Callable[..., Any]:
        async def on_event(event: Mapping[str, Any], **_: Any) -> None:
            self._on_watch_event(plural, event.get("type"), event.get("object") or {})

        on_event.__name__ = f"on_{plural}"
        return on_event

    def _kopf_login(self, **_: Any) -> kopf.ConnectionInfo:
        return connection_info(self.kube)

    def _settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # our Events come from controller/operator/kube_events.py
        settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
        settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
        settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
        settings.networking.request_timeout = 30.0
        settings.networking.connect_timeout = WATCH_CONNECT_TIMEOUT
        return settings

    async def _run_kopf(self) -> None:
        """kopf's tasks, spawned and stopped by us: never `kopf.operator()`, which on exit cancels
        every task created in the loop after it started -- the runtime's included."""
        assert self._kopf_stop is not None and self._kopf_ready is not None
        delay = RETRY_MIN
        while not self._stopping.is_set():
            roots: list[asyncio.Task[Any]] = []
            try:
                roots = list(
                    await kopf.spawn_tasks(
                        registry=self._registry(),
                        settings=self._settings(),
                        standalone=True,
                        clusterwide=True,
                        stop_flag=self._kopf_stop,
                        ready_flag=self._kopf_ready,
                    )
                )
                relists = asyncio.get_running_loop().create_task(
                    self._relist_after_kopf_listed(), name="operator-relist-after-kopf"
                )
                try:
                    done, _ = await asyncio.wait(roots, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait([relists])
                for task in done:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
            except asyncio.CancelledError:
                await _stop_tasks(roots)
                raise
            except Exception as exc:
                logs.event(
                    log,
                    logging.ERROR,
                    "watch_failed",
                    "the kopf watches ended; restarting them",
                    error=_brief(exc),
                    retry_seconds=delay,
                )
            await _stop_tasks(roots)
            if self._stopping.is_set() or self._kopf_stop.is_set():
                return
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _on_watch_event(self, plural: str, kind: str | None, body: Mapping[str, Any]) -> None:
        now = time.monotonic()
        self.last_watch_event = now
        if self.store.apply_event(plural, kind, body, now):
            self._dirty.set()

    # -- the node watch (a thread: the kubernetes client's watch blocks) --------------------------

    def _watch_node(self) -> None:
        delay = RETRY_MIN
        selector = f"metadata.name={self.options.node_name}"
        while not self._stopping.is_set():
            watcher = watch.Watch()
            try:
                for event in watcher.stream(
                    self.kube.core.list_node,
                    field_selector=selector,
                    timeout_seconds=NODE_WATCH_TIMEOUT,
                    allow_watch_bookmarks=True,
                    _request_timeout=(WATCH_CONNECT_TIMEOUT, NODE_WATCH_TIMEOUT + 15),
                ):
                    if self._stopping.is_set():
                        watcher.stop()
                        return
                    self._from_thread(self._on_node_event, event.get("type"), event.get("object"))
                delay = RETRY_MIN
                self._from_thread(self._on_node_event, "RENEWED", None)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                self._from_thread(_log_node_watch_failure, _brief(exc), delay)
                self._stopping.wait(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _from_thread(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _on_node_event(self, kind: str | None, node: Any) -> None:
        self.last_watch_event = time.monotonic()
        if kind in ("RENEWED", "BOOKMARK", "ERROR") or node is None:
            return
        labels = {} if kind == "DELETED" else dict(getattr(node.metadata, "labels", None) or {})
        if self._set_node_labels(labels):
            logs.event(
                log,
                logging.INFO,
                "node_labels_changed",
                "the Node's labels changed; re-selecting",
                node=self.options.node_name,
            )
            self._dirty.set()

    # -- loops -----------------------------------------------------------------------------------

    async def _submitter(self) -> None:
        """One translation at a time, off the loop. After a translation that took T seconds the next
        waits at least T: during a burst of object changes translation uses at most about half a
        core, and the loop and the BFD thread keep theirs (a burst must never cost a BFD session)."""
        pause = self.options.debounce
        while True:
            await self._dirty.wait()
            await asyncio.sleep(pause)
            self._dirty.clear()
            started = time.monotonic()
            with contextlib.suppress(ApplyError):  # logged and retried by the agent
                await self._submit()
            pause = max(self.options.debounce, min(MAX_PAUSE, time.monotonic() - started))

    async def _resyncer(self) -> None:
        """The full listing every resync_interval, and sooner when the watches have been quiet for a
        third of the staleness bound (an idle cluster sends no events): a listing that succeeds is
        contact with the API server too, so `/healthz` recovers soon after the API does."""
        last_list = time.monotonic()
        while True:
            probe = max(1.0, self.options.stale_after / 3)
            await asyncio.sleep(min(self.options.resync_interval, probe))
            due = time.monotonic() - last_list >= self.options.resync_interval
            if not due and self.watch_age() < probe:
                continue
            last_list = time.monotonic()
            await self._relist(retry_seconds=self.options.resync_interval)
            try:
                await self._read_node()
                self._dirty.set()  # cheap: an unchanged state is a no-op in the runtime
            except Exception as exc:
                self._node_read_failed(exc)

    async def _relist_after_kopf_listed(self) -> None:
        """kopf LISTs each kind itself before it watches, and reports only what changes after its own
        listing: an object deleted between our first listing and kopf's is neither in kopf's listing
        nor in its events, and would stay in the store (its routes installed) until the next full
        pass. A listing of ours after kopf's closes that window: one a few seconds after kopf's
        watches start, and a later one in case kopf's first LIST was slow."""
        for delay in KOPF_LISTING_RELISTS:
            await asyncio.sleep(delay)
            await self._relist(retry_seconds=None)

    async def _relist(self, retry_seconds: float | None) -> None:
        """One full listing; what it finds that the watches had not delivered is translated."""
        try:
            if await self._list_all():
                logs.event(
                    log,
                    logging.INFO,
                    "resync_changed",
                    "the full listing found changes the watches had not delivered",
                )
                self._dirty.set()
        except Exception as exc:
            self._list_failed(exc, retry_seconds=retry_seconds)

    async def _secret_reader(self) -> None:
        while True:
            await asyncio.sleep(self.options.secret_interval)
            if await self._read_secrets(set(self.references)):  # as of the last translation
                self._dirty.set()

    async def _submit(self) -> None:
        agent = self.agent
        assert agent is not None
        node = await discover(
            self.options.node_name, self.store.node_labels, self.options.router_id, self.options.namespace
        )
        objects = {p: self.store.live(p) for p in WATCHED}
        desired, self.references = await asyncio.to_thread(
            build_desired,
            objects,
            node,
            dict(self.store.secrets),
            dict(self.store.missing_secrets),
            self._cache,
        )
        new = set(self.references) - set(self.store.secrets) - set(self.store.missing_secrets)
        if new:  # a Secret referenced for the first time: read it, then translate with it
            await self._read_secrets(new)
            desired, self.references = await asyncio.to_thread(
                build_desired, objects, node, dict(self.store.secrets), dict(self.store.missing_secrets),
                self._cache,
            )  # fmt: skip
        self.problems = desired.problems
        self._report_problems(desired)
        sources = tuple(f"{KIND_OF_PLURAL[p]}/{b['metadata']['name']}" for p in WATCHED for b in objects[p])
        for listener in list(self._listeners):
            try:
                listener(desired)
            except Exception:
                log.exception("desired-state listener failed")
        await agent.submit(desired, sources=sources)

    def _report_problems(self, desired: DesiredState) -> None:
        """One ObjectProblem event (log line, metric, Kubernetes Event) per problem as it appears."""
        current = {str(p): p for p in desired.problems}
        for text in sorted(set(current) - self._listed_problems)[:MAX_PROBLEMS_LOGGED]:
            p = current[text]
            self.emit(ObjectProblem(p.kind, p.name, p.field, p.reason.value, p.message))
        self._listed_problems = frozenset(current)


async def _stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel kopf's root tasks (their sub-tasks end with them) and wait, bounded."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=KOPF_STOP_TIMEOUT)


def _log_node_watch_failure(error: str, delay: float) -> None:
    logs.event(
        log,
        logging.WARNING,
        "node_watch_failed",
        "the Node watch failed; retrying",
        error=error,
        retry_seconds=delay,
    )


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _secret_values(secret: Any) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for key, value in (secret.data or {}).items():
        values[str(key)] = base64.b64decode(value or "")
    return values


def connection_info(kube: Kube) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration (token, or client certificate)."""
    cfg = kube.configuration
    token = scheme = None
    # kubeconfig and in-cluster loading store "Bearer <token>" under BearerToken (or authorization);
    # get_api_key_with_prefix also runs the in-cluster refresh hook, so a rotated token is used.
    auth = cfg.get_api_key_with_prefix("BearerToken", alias="authorization") if cfg.api_key else None
    if auth:
        scheme, _, token = auth.partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        default_namespace=None,
    )


__all__ = [
    "OperatorOptions",
    "OperatorSource",
    "ParseCache",
    "Parsed",
    "Store",
    "build_desired",
    "connection_info",
    "referenced_secrets",
]
