"""Standalone mode: `routeserver run -f PATH`, the agent fed from YAML files instead of the API server.

Owns: the file source -- loading and validating the YAML files (`load`, `desired_state`,
`validate`, every error message naming file, document and field), watching them, and `FileSource`,
the agent `Source` that submits their desired state to controller/agent.py; and `run()`, the
`routeserver run` entry point. May not touch: the runtime, the BFD service, the admin server or
signals (the agent hosts those), Kubernetes (there is none here).

The files hold the same documents as the cluster (RouteServer, RouteServerPeer,
RouteTableAssociation; crds/ is the schema) plus `kind: Secret` documents (v1, `stringData` or
base64 `data`) for TCP-MD5 and BFD keys. A path is a file or a directory of *.yaml/*.yml files
(like `kubectl apply -f`: not recursive unless asked). Everything is validated before anything
runs: a bad document stops the start with a message naming the file, the document (1-based index
and name) and the field, and so do references that cannot be resolved (a missing route server or
Secret).

Reload: SIGHUP, or a change of any file's mtime/size (or a directory's listing) seen by polling,
loads and validates everything again. A configuration that fails is refused as a whole and the
running one stays (the refusal is logged and shown in `/status`); a good one is submitted to the
agent and applied by the runtime's reconcile, so sessions whose settings did not change are not
touched.

Stop: SIGTERM or SIGINT. Route servers with persistRoutes enabled leave their routes in the tables
(a restart adopts them for the persist window); the others withdraw them; then every BGP session is
closed with Cease/Administrative Shutdown (see controller/runtime).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller import logs
from controller.agent import REAPPLY_INTERVAL, Agent, AgentOptions, ApplyError, cancel_and_wait
from controller.desired import DesiredState, NodeContext, Problem, SecretKey
from controller.models.resources import (
    RouteServer,
    RouteServerPeer,
    RouteServerSession,
    RouteTableAssociation,
    parse_resource,
)
from controller.node import DEFAULT_NAMESPACE, node_context
from controller.runtime import RESYNC_INTERVAL
from controller.translate import translate
from controller.writers.factory import DEFAULT_PROTOCOL

log = logging.getLogger(__name__)

KINDS = ("RouteServer", "RouteServerPeer", "RouteTableAssociation", "Secret")
SUFFIXES = (".yaml", ".yml")
WATCH_INTERVAL = 2.0


class ConfigError(Exception):
    """The configuration cannot be used; `messages` name file, document and field each."""

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = list(messages)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a document came from, for messages: `file.yaml: document 2 (RouteServerPeer fw-a)`."""

    file: str
    index: int  # 1-based position in the file
    kind: str = ""
    name: str = ""

    def __str__(self) -> str:
        what = " ".join(p for p in (self.kind, self.name) if p)
        return f"{self.file}: document {self.index}" + (f" ({what})" if what else "")


@dataclass
class Config:
    route_servers: list[RouteServer] = field(default_factory=list)
    peers: list[RouteServerPeer] = field(default_factory=list)
    associations: list[RouteTableAssociation] = field(default_factory=list)
    secrets: dict[SecretKey, dict[str, bytes]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)  # (kind, name) -> where

    def where(self, kind: str, name: str) -> str:
        origin = self.origins.get((kind, name))
        return str(origin) if origin is not None else f"{kind} {name}"

    def describe(self, problem: Problem) -> str:
        return f"{self.where(problem.kind, problem.name)}: {problem.field}: {problem.message}"


# -- loading -----------------------------------------------------------------------------------


def config_files(paths: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The YAML files named by the -f arguments, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError([f"{path}: no such file or directory"])
    return found


def load(
    paths: Iterable[str | Path], *, recursive: bool = False, namespace: str = DEFAULT_NAMESPACE
) -> Config:
    """Parse and validate every document; raise ConfigError listing every problem found."""
    config = Config()
    errors: list[str] = []
    for path in config_files(paths, recursive):
        config.files.append(str(path))
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: cannot read: {exc}")
            continue
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            errors.append(f"{path}:{where}: invalid YAML: {problem}")
            continue
        for index, document in enumerate(documents, start=1):
            if document is None:
                continue  # an empty document (a trailing ---)
            _add_document(config, errors, Origin(str(path), index), document, namespace)
    if errors:
        raise ConfigError(errors)
    return config


def _add_document(
    config: Config, errors: list[str], origin: Origin, document: object, namespace: str
) -> None:
    if not isinstance(document, dict):
        errors.append(f"{origin}: expected a mapping with apiVersion, kind and metadata")
        return
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    origin = Origin(origin.file, origin.index, str(kind or ""), str(name or ""))
    if kind not in KINDS:
        hint = " (written by agents, not read from files)" if kind == RouteServerSession.__name__ else ""
        errors.append(f"{origin}: kind: unsupported kind {kind!r}{hint}; expected one of {', '.join(KINDS)}")
        return
    if not isinstance(name, str) or not name:
        errors.append(f"{origin}: metadata.name: required")
        return
    if kind == "Secret":
        secret = _secret(document, origin, errors)
        if secret is None:
            return
        ns = metadata.get("namespace") if isinstance(metadata, dict) else None
        key = (ns if isinstance(ns, str) and ns else namespace, name)
        if not _unique(config, errors, "Secret", f"{key[0]}/{name}", origin):
            return
        config.secrets[key] = secret
        return
    try:
        resource = parse_resource(document)
    except ValidationError as exc:
        errors.extend(f"{origin}: {_field(e['loc'])}: {e['msg']}" for e in exc.errors())
        return
    if not _unique(config, errors, kind, name, origin):
        return
    if isinstance(resource, RouteServer):
        config.route_servers.append(resource)
    elif isinstance(resource, RouteServerPeer):
        config.peers.append(resource)
    elif isinstance(resource, RouteTableAssociation):
        config.associations.append(resource)


def _unique(config: Config, errors: list[str], kind: str, name: str, origin: Origin) -> bool:
    first = config.origins.get((kind, name))
    if first is not None:
        errors.append(f"{origin}: metadata.name: {kind} {name!r} is already defined in {first}")
        return False
    config.origins[(kind, name)] = origin
    return True


def _field(loc: Sequence[int | str]) -> str:
    """A pydantic location in API notation (spec.timers.holdTimeSeconds, spec.allowedPrefixes[0].le)."""
    parts = list(loc)
    if parts and parts[0] in KINDS:
        parts = parts[1:]  # the discriminated union names the kind first
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _secret(document: Mapping[str, Any], origin: Origin, errors: list[str]) -> dict[str, bytes] | None:
    """A v1 Secret's keys: base64 `data`, overlaid by plain `stringData` (as the API server does)."""
    if document.get("apiVersion") != "v1":
        errors.append(f"{origin}: apiVersion: a Secret must be apiVersion v1")
        return None
    values: dict[str, bytes] = {}
    data = document.get("data") or {}
    string_data = document.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        errors.append(f"{origin}: data: data and stringData must be mappings of key to value")
        return None
    for key, value in data.items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            errors.append(f"{origin}: data.{key}: not valid base64")
            return None
    for key, value in string_data.items():
        values[str(key)] = str(value).encode()
    return values


def desired_state(config: Config, node: NodeContext) -> DesiredState:
    """Translate; any problem is a ConfigError here (standalone has no status objects to report it)."""
    desired = translate(
        config.route_servers, config.peers, config.associations, node=node, secrets=config.secrets
    )
    if desired.problems:
        raise ConfigError([config.describe(p) for p in desired.problems])
    return desired


# -- running -------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    paths: list[str]
    recursive: bool = False
    admin_address: str = "127.0.0.1:9179"
    node_name: str | None = None
    node_labels: dict[str, str] = field(default_factory=dict)
    router_id: IPv4Address | None = None
    namespace: str = DEFAULT_NAMESPACE
    watch_interval: float = WATCH_INTERVAL  # 0: reload on SIGHUP only
    resync_interval: float = RESYNC_INTERVAL
    reapply_interval: float = REAPPLY_INTERVAL
    bfd: bool = True
    version: str = ""
    route_protocol: int = DEFAULT_PROTOCOL

    def agent_options(self, node_name: str) -> AgentOptions:
        return AgentOptions(
            admin_address=self.admin_address,
            bfd=self.bfd,
            node_name=node_name,
            version=self.version,
            resync_interval=self.resync_interval,
            reapply_interval=self.reapply_interval,
            route_protocol=self.route_protocol,
        )


def fingerprint(paths: Iterable[str], recursive: bool) -> tuple[tuple[str, int, int], ...]:
    """What the watcher compares: every config file's (path, mtime_ns, size), and the file list."""
    try:
        files = config_files(paths, recursive)
    except ConfigError:
        return ()
    result = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        result.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class FileSource:
    """The agent's source in standalone mode: the files' desired state -> `Agent.submit`.

    `load()` reads and validates (blocking; raises ConfigError). `start(agent)` submits the first
    state (loaded earlier by `run`, or now) and awaits it, then reloads on SIGHUP (`agent.on_reload`)
    and on file changes (polled every `watch_interval` s).
    """

    def __init__(self, options: RunOptions, node: NodeContext | None = None) -> None:
        self.options = options
        self.node = node or node_context(
            options.node_name, options.node_labels, options.router_id, options.namespace
        )
        self.agent: Agent | None = None
        self.first: tuple[DesiredState, tuple[str, ...]] | None = None
        self._reload = asyncio.Event()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._unregister: list[Callable[[], None]] = []

    def load(self) -> tuple[DesiredState, tuple[str, ...]]:
        """The files' desired state and the files read; ConfigError if they cannot be used (blocking)."""
        config = load(self.options.paths, recursive=self.options.recursive, namespace=self.options.namespace)
        desired = desired_state(config, self.node)
        for skipped in desired.skipped:
            logs.event(
                log,
                logging.WARNING,
                "config_skipped",
                "object not applied on this node",
                object=f"{config.where(skipped.kind, skipped.name)}",
                reason=f"{skipped.field} {skipped.message}",
            )
        return desired, tuple(config.files)

    def load_first(self) -> DesiredState:
        """Load what `start` will submit; raises ConfigError (the run does not start)."""
        self._fingerprint = fingerprint(self.options.paths, self.options.recursive)
        self.first = self.load()
        return self.first[0]

    async def start(self, agent: Agent) -> None:
        self.agent = agent
        loop = asyncio.get_running_loop()
        if self.first is None:
            await asyncio.to_thread(self.load_first)
        assert self.first is not None
        desired, files = self.first
        self.first = None
        with contextlib.suppress(ApplyError):  # logged by the agent, which retries it
            await agent.submit(desired, sources=files)
        self._unregister.append(agent.on_reload(self._reload.set))
        self._tasks = [
            loop.create_task(self._reloader(), name="config-reloader"),
            loop.create_task(self._watch(), name="config-watcher"),
        ]

    async def stop(self) -> None:
        for unregister in self._unregister:
            unregister()
        self._unregister = []
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def request_reload(self) -> None:
        self._reload.set()

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Load and submit the files again; a refused configuration leaves the running one alone."""
        agent = self.agent
        assert agent is not None, "reload before start"
        self._fingerprint = await asyncio.to_thread(fingerprint, self.options.paths, self.options.recursive)
        try:
            desired, files = await asyncio.to_thread(self.load)
        except ConfigError as exc:
            agent.refuse("; ".join(exc.messages))
            logs.event(
                log,
                logging.ERROR,
                "config_refused",
                "configuration refused; the running one stays",
                errors=exc.messages,
            )
            return False
        try:
            generation = await agent.submit(desired, sources=files)
        except ApplyError:
            return False  # logged by the agent, which retries it
        logs.event(
            log,
            logging.INFO,
            "config_applied",
            "configuration applied",
            generation=generation,
            route_servers=len(desired.route_servers),
        )
        return True

    async def _watch(self) -> None:
        interval = self.options.watch_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(fingerprint, self.options.paths, self.options.recursive)
            if current != self._fingerprint:
                logs.event(log, logging.INFO, "config_changed", "configuration files changed")
                self._reload.set()


def run(options: RunOptions) -> int:
    """`routeserver run`: validate, then run until stopped. Exit codes: 0 stopped, 2 bad config, 1 error."""
    try:
        source = FileSource(options)
        source.load_first()
        agent = Agent(options.agent_options(source.node.name))
    except ConfigError as exc:
        for message in exc.messages:
            log.error("%s", message)
        log.error("configuration invalid; not starting")
        return 2
    except ValueError as exc:  # the admin address
        log.error("%s", exc)
        return 2
    return asyncio.run(agent.run(source))


def validate(
    paths: Sequence[str], *, recursive: bool = False, namespace: str = DEFAULT_NAMESPACE
) -> list[str]:
    """The problems of a configuration, without running anything (empty: valid).

    Validated against a node with no labels and a placeholder router ID, so only the files matter.
    """
    try:
        config = load(paths, recursive=recursive, namespace=namespace)
        desired_state(config, NodeContext.of("validate", router_id=IPv4Address("0.0.0.1")))
    except ConfigError as exc:
        return exc.messages
    return []
