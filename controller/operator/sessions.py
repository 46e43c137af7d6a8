"""RouteServerSession objects: one per (this node, peer), written by this node's agent only.

`SessionWriter` is a status sink of the agent (controller/agent.py `StatusSink`): every snapshot
(`AgentStatus`, about every 10 s and after every apply) is turned into the desired status of each
peer's session object (`session_status`), and the writer makes the API server match it:

- create on first sight (name `<peer>.<node>`, `session_name`; labels for the node, peer and route
  server; an ownerReference to the RouteServerPeer, so garbage collection removes the object with
  the peer); an object that already exists (409) is adopted: read, then its status patched;
- the status through the status subresource, as a JSON merge patch of only what changed since the
  last write (`merge_patch`), with `lastUpdateTime`; nothing is written when nothing changed
  (`lastUpdateTime` itself is not a change);
- at most one status write per object per `min_interval`: a change inside the interval is written
  when the interval ends (a deferred write of the then latest status), never dropped;
- a 404 on a status patch (deleted by hand): created again, then patched;
- objects of this node whose peer left the snapshot are deleted (the first publish lists them by
  the label `routeserver.dev/node`, so objects left by a previous run are found too);
  `remove_all()` deletes every object of this node (the node left every route server).

A peer whose RouteServerPeer uid is not known yet (`peer_uid` returns None) is skipped this round:
its object needs the uid for its ownerReference. API errors are logged once per distinct error and
object and retried at the next publish; nothing is raised into the agent. `writes` counts the
writes by kind (create, patch, delete).

Owns: the session objects' names, labels, bodies and write scheduling. Must not touch: the runtime
or agent (it only reads the snapshot), other kinds' objects. Every kubernetes-client call goes
through `Kube.call` (off the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from controller.logs import event
from controller.operator.kube import API_VERSION, GROUP, KIND_OF_PLURAL, PEERS, SESSIONS, VERSION, Kube
from controller.status import AgentStatus, PeerView

log = logging.getLogger(__name__)

NODE_LABEL = f"{GROUP}/node"
PEER_LABEL = f"{GROUP}/peer"
ROUTE_SERVER_LABEL = f"{GROUP}/route-server"
MAX_NAME = 253  # a DNS subdomain (metadata.name)
MAX_LABEL_VALUE = 63
HASH_CHARS = 10
MAX_MESSAGE = 1024  # lastTransitionMessage, as in the CRD
MAX_REASON = 64
RELIST_INTERVAL = 300.0  # seconds: this node's objects are listed again (objects we did not see go)

BGP_STATES = frozenset({"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"})
BFD_STATES = frozenset({"AdminDown", "Down", "Init", "Up"})
FAMILY_NAMES = {"ipv4-unicast": "IPv4Unicast", "ipv6-unicast": "IPv6Unicast"}  # bgp.types.Family
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

Json = dict[str, Any]


# -- names and bodies (pure) ----------------------------------------------------------------------


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _shortened(text: str, limit: int) -> str:
    """`text` if it fits; else a prefix ending in an alphanumeric, '-', and a hash of all of it."""
    if len(text) <= limit:
        return text
    head = text[: limit - HASH_CHARS - 1].rstrip("-._")
    return f"{head}-{_hash(text)}"


def session_name(peer: str, node: str) -> str:
    """`<peer>.<node>` (both DNS subdomains already), truncated with a hash past 253 characters."""
    return _shortened(f"{peer}.{node}", MAX_NAME)


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 characters; truncated with a hash beyond)."""
    value = _shortened(text, MAX_LABEL_VALUE)
    return value if _LABEL_VALUE.match(value) else _hash(text)


def _timestamp(at: float | None) -> str | None:
    """Wall-clock seconds as RFC 3339 (whole seconds, so an unchanged instant never looks changed)."""
    if at is None:
        return None
    return datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_status(peer: PeerView) -> Json:
    """The status of a peer's session object, without `lastUpdateTime`; absent values left out.

    Values the CRD would refuse (a state outside its enums, a reason not in CamelCase) are left out
    rather than failing the whole write.
    """
    status: Json = {}
    if peer.bgp_state in BGP_STATES:
        status["bgpState"] = peer.bgp_state
    bfd = peer.bfd
    if bfd is not None and bfd.state in BFD_STATES:
        status["bfdState"] = bfd.state
    if peer.bgp_state == "Established" and peer.established_at is not None:
        status["establishedTime"] = _timestamp(peer.established_at)
    if peer.last_transition_at is not None:
        status["lastTransitionTime"] = _timestamp(peer.last_transition_at)
    reason = peer.last_transition_reason
    if reason and len(reason) <= MAX_REASON and _REASON.match(reason):
        status["lastTransitionReason"] = reason
    message = peer.last_transition_detail
    if peer.held_idle_reason:
        message = f"held Idle ({peer.held_idle_reason}){': ' + message if message else ''}"
    if message:
        status["lastTransitionMessage"] = message[:MAX_MESSAGE]
    status["establishedTransitions"] = peer.established_count
    negotiated = _negotiated(peer)
    if negotiated:
        status["negotiated"] = negotiated
    status["prefixesReceived"] = peer.prefixes_received
    status["prefixesAccepted"] = peer.prefixes_accepted
    status["prefixesRejected"] = peer.prefixes_rejected
    if peer.prefixes_installed is not None:
        status["prefixesInstalled"] = peer.prefixes_installed
    return status


def _negotiated(peer: PeerView) -> Json:
    out: Json = {}
    info = peer.negotiated
    if info is not None and peer.bgp_state == "Established":
        out["holdTimeSeconds"] = info.hold_time
        out["keepaliveTimeSeconds"] = info.keepalive_time
        out["peerRouterID"] = info.peer_router_id
        out["fourOctetASN"] = info.four_octet_asn
        out["addressFamilies"] = sorted(FAMILY_NAMES[f] for f in info.families if f in FAMILY_NAMES)
        out["addPathReceive"] = bool(info.add_path_receive)
        out["gracefulRestart"] = info.graceful_restart
    bfd = peer.bfd
    if bfd is not None and bfd.state == "Up":
        if bfd.tx_interval_ms is not None:
            out["bfdTransmitIntervalMilliseconds"] = round(bfd.tx_interval_ms)
        if bfd.detection_time_ms is not None:
            out["bfdDetectionTimeMilliseconds"] = round(bfd.detection_time_ms)
    return out


def session_object(name: str, node: str, peer: str, route_server: str, peer_uid: str) -> Json:
    """The object to create (the status goes separately, through the subresource)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_OF_PLURAL[SESSIONS],
        "metadata": {
            "name": name,
            "labels": {
                NODE_LABEL: label_value(node),
                PEER_LABEL: label_value(peer),
                ROUTE_SERVER_LABEL: label_value(route_server),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND_OF_PLURAL[PEERS],
                    "name": peer,
                    "uid": peer_uid,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {"node": node, "peerRef": {"name": peer}},
    }


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Json:
    """The RFC 7386 merge patch that turns `old` into `new` (None values delete; lists replace)."""
    old = old or {}
    patch: Json = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = value
    return patch


def _without_update_time(status: Mapping[str, Any] | None) -> Json:
    return {k: v for k, v in (status or {}).items() if k != "lastUpdateTime"}


# -- the writer ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    name: str
    peer: str
    route_server: str
    desired: Json = field(default_factory=dict)
    written: Json | None = None  # the status the object has as far as we know; None: no object known
    last_write: float | None = None  # monotonic time of the last status write
    deferred: asyncio.Task[None] | None = None


class SessionWriter:
    """The RouteServerSession objects of one node, kept equal to the agent's status snapshots."""

    def __init__(
        self,
        kube: Kube,
        node_name: str,
        peer_uid: Callable[[str], str | None],
        *,
        min_interval: float = 1.0,
        relist_interval: float = RELIST_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.node = node_name
        self.peer_uid = peer_uid
        self.min_interval = min_interval
        self.relist_interval = relist_interval
        self.clock = clock
        self.writes: Counter[str] = Counter()
        self._sessions: dict[str, _Session] = {}
        self._listed_at: float | None = None
        self._lock = asyncio.Lock()
        self._errors: dict[str, str] = {}  # object name (or "" for the list) -> the error last logged

    @property
    def selector(self) -> str:
        return f"{NODE_LABEL}={label_value(self.node)}"

    async def publish(self, status: AgentStatus) -> None:
        """Make this node's session objects match `status`. Never raises (errors are logged)."""
        wanted: dict[str, tuple[str, PeerView]] = {}
        for rs in status.route_servers:
            for peer in rs.peers:
                wanted[session_name(peer.name, self.node)] = (rs.name, peer)
        async with self._lock:
            await self._list_if_due()
            for name in [n for n in self._sessions if n not in wanted]:
                await self._delete(self._sessions[name])
            for name, (route_server, peer) in wanted.items():
                session = self._sessions.get(name)
                if session is None:
                    session = self._sessions[name] = _Session(name, peer.name, route_server)
                session.route_server = route_server
                session.desired = session_status(peer)
                await self._sync(session)

    async def remove_all(self) -> None:
        """Delete every session object of this node (listed by label, and those we know)."""
        async with self._lock:
            for session in self._sessions.values():
                _cancel(session)
            self._listed_at = None
            try:
                listed = await self._list()
            except Exception as exc:  # logged; what is known is still deleted
                self._failed("", "list", exc)
                listed = {}
            names = {name: peer for name, (peer, _) in listed.items()}
            names.update({name: s.peer for name, s in self._sessions.items()})
            self._sessions.clear()
            for name, peer in names.items():
                await self._delete(_Session(name, peer, ""))
            self._sessions.clear()

    async def close(self) -> None:
        """Stop the deferred writes (nothing is written after this)."""
        async with self._lock:
            for session in self._sessions.values():
                _cancel(session)

    # -- internals ---------------------------------------------------------------------------------

    async def _list(self) -> dict[str, tuple[str, Json]]:
        """This node's objects: name -> (peer, status without lastUpdateTime)."""
        result = await self.kube.call(
            "sessions",
            self.kube.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            SESSIONS,
            label_selector=self.selector,
        )
        found: dict[str, tuple[str, Json]] = {}
        for item in cast(Json, result).get("items", ()):
            spec = item.get("spec") or {}
            if spec.get("node") == self.node:
                peer = (spec.get("peerRef") or {}).get("name", "")
                found[item["metadata"]["name"]] = (peer, _without_update_time(item.get("status")))
        return found

    async def _list_if_due(self) -> None:
        """Learn objects left by a previous run (first publish, then every relist_interval)."""
        now = self.clock()
        if self._listed_at is not None and now - self._listed_at < self.relist_interval:
            return
        try:
            listed = await self._list()
        except Exception as exc:  # logged; listed again at the next publish
            self._failed("", "list", exc)
            return
        self._recovered("")
        self._listed_at = now
        for name, (peer, written) in listed.items():
            if name not in self._sessions:
                self._sessions[name] = _Session(name, peer, "", written=written)
        for name, session in list(self._sessions.items()):
            if name not in listed and session.written is not None:
                session.written = None  # gone behind our back: created again when wanted

    async def _delete(self, session: _Session) -> None:
        _cancel(session)
        try:
            await self.kube.call(
                "sessions",
                self.kube.custom.delete_cluster_custom_object,
                GROUP,
                VERSION,
                SESSIONS,
                session.name,
            )
            self.writes["delete"] += 1
        except ApiException as exc:
            if exc.status != 404:
                self._failed(session.name, "delete", exc)
                return
        except Exception as exc:  # logged; deleted at the next publish
            self._failed(session.name, "delete", exc)
            return
        self._recovered(session.name)
        self._sessions.pop(session.name, None)
        self._errors.pop(session.name, None)
        event(log, logging.DEBUG, "session_object_deleted", "session object deleted", session=session.name)

    async def _sync(self, session: _Session) -> None:
        """Create the object if needed; write its status now, or defer it to the interval's end."""
        if session.written is not None and session.desired == session.written:
            return
        if session.deferred is not None:
            return  # the deferred write takes the latest desired status
        if session.last_write is not None:
            wait = session.last_write + self.min_interval - self.clock()
            if wait > 0:
                session.deferred = asyncio.create_task(self._write_later(session, wait))
                return
        await self._write(session)

    async def _write_later(self, session: _Session, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if session.deferred is not asyncio.current_task():
                return
            session.deferred = None
            if self._sessions.get(session.name) is session:
                await self._sync(session)

    async def _write(self, session: _Session) -> None:
        try:
            if session.written is None and not await self._create(session):
                return
            await self._patch_status(session)
        except Exception as exc:  # logged; retried at the next publish
            self._failed(session.name, "write", exc)
            return
        self._recovered(session.name)

    async def _create(self, session: _Session) -> bool:
        """Create (or adopt) the object; False: the peer's uid is not known yet."""
        uid = self.peer_uid(session.peer)
        if uid is None:
            return False
        body = session_object(session.name, self.node, session.peer, session.route_server, uid)
        try:
            await self.kube.call(
                "sessions",
                self.kube.custom.create_cluster_custom_object,
                GROUP,
                VERSION,
                SESSIONS,
                body,
            )
            self.writes["create"] += 1
            session.written = {}
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = await self.kube.call(
                "sessions",
                self.kube.custom.get_cluster_custom_object,
                GROUP,
                VERSION,
                SESSIONS,
                session.name,
            )
            session.written = _without_update_time(cast(Json, existing).get("status"))
        return True

    async def _patch_status(self, session: _Session) -> None:
        desired = session.desired
        patch = merge_patch(session.written, desired)
        if not patch:
            return
        patch["lastUpdateTime"] = _timestamp(time.time())
        try:
            await self._call_patch(session.name, patch)
        except ApiException as exc:
            if exc.status != 404:
                raise
            session.written = None  # deleted by hand: create it again, with the whole status
            if not await self._create(session):
                return
            patch = merge_patch(session.written, desired)
            patch["lastUpdateTime"] = _timestamp(time.time())
            await self._call_patch(session.name, patch)
        session.written = desired
        session.last_write = self.clock()

    async def _call_patch(self, name: str, patch: Json) -> None:
        await self.kube.call(
            "sessions",
            self.kube.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            SESSIONS,
            name,
            {"status": patch},
        )
        self.writes["patch"] += 1

    def _failed(self, name: str, what: str, exc: Exception) -> None:
        text = f"{what}: {_describe(exc)}"
        if self._errors.get(name) == text:
            return
        self._errors[name] = text
        event(
            log,
            logging.WARNING,
            "session_write_failed",
            "session object write failed (retried at the next publish)",
            session=name or None,
            node=self.node,
            error=text,
        )

    def _recovered(self, name: str) -> None:
        if self._errors.pop(name, None) is not None:
            event(log, logging.INFO, "session_write_recovered", "session object written", session=name)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _cancel(session: _Session) -> None:
    task, session.deferred = session.deferred, None
    if task is not None and task is not _current_task():
        task.cancel()


def _current_task() -> asyncio.Task[Any] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None


__all__ = [
    "NODE_LABEL",
    "PEER_LABEL",
    "ROUTE_SERVER_LABEL",
    "SessionWriter",
    "label_value",
    "merge_patch",
    "session_name",
    "session_object",
    "session_status",
]
