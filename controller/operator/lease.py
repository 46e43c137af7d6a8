"""Leader election with coordination.k8s.io/v1 Leases: one Lease per RouteServer, one writer each.

Owns: the Lease that elects which agent (of a RouteServer's endpoint nodes) writes its summary
status and cloud routes -- the pure election core (`LeaseElection`: observed Lease + local
monotonic `now` in, what to write out), the asyncio elector for one Lease (`LeaseElector`), the
set of electors an agent keeps for the RouteServers it serves (`LeaseSet`), and the Lease names.

May not touch: the runtime, the agent, kopf, any other object than Leases. `LeaseElection` does no
I/O and reads no clock: the caller passes `now` (monotonic seconds) and `wall` (a UTC datetime,
only stamped into the Lease for humans).

Semantics (those of client-go's leaderelection, written from its documented behaviour):
- Expiry is judged on the local monotonic clock only: the time we last saw the Lease's
  (holder, renewTime, resourceVersion) change, plus the holder's leaseDurationSeconds. The remote
  renewTime is never compared with our clock, so clock skew between nodes does not matter.
- A free Lease (holderIdentity empty, e.g. released), an expired one, or one that names us is
  acquired; one we hold is renewed; otherwise we wait. Every write carries the resourceVersion we
  observed, so of two candidates only one wins; the other gets 409 Conflict and re-reads.
- A leader that has not renewed successfully within `renew_deadline` (counted from the start of
  its last successful write) stops believing it leads. renew_deadline < duration, so it stops
  before any other candidate may take over.
- Release on shutdown writes holderIdentity "" and leaseDurationSeconds 1: others take over at
  their next retry instead of waiting for the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.operator.kube import DEFAULT_REQUEST_TIMEOUT, Kube

log = logging.getLogger(__name__)

DEFAULT_DURATION = 15.0  # seconds: leaseDurationSeconds we write
DEFAULT_RENEW_DEADLINE = 10.0  # seconds: a leader that cannot renew for this long steps down
DEFAULT_RETRY_PERIOD = 2.0  # seconds between attempts (jittered down by up to RETRY_JITTER)
RETRY_JITTER = 0.25  # fraction of the retry period an attempt may come early
RELEASED_DURATION_SECONDS = 1
EXPIRY_MARGIN = 0.01  # seconds past a judged expiry before the elector looks again
LEASE_NAME_PREFIX = "routeserver-"
MAX_NAME_LENGTH = 253
NAME_HASH_LENGTH = 10

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

OnChange = Callable[[str, bool], None]


def lease_name(route_server: str) -> str:
    """The Lease for `route_server`: "routeserver-<name>", a valid DNS subdomain of <= 253 chars.

    A name that would be too long (or is not a valid subdomain) is cut and suffixed with a short
    hash of the full RouteServer name, so distinct RouteServers keep distinct Leases.
    """
    wanted = LEASE_NAME_PREFIX + route_server
    if len(wanted) <= MAX_NAME_LENGTH and _SUBDOMAIN.match(wanted):
        return wanted
    digest = hashlib.sha256(route_server.encode()).hexdigest()[:NAME_HASH_LENGTH]
    labels = re.sub(r"[^a-z0-9.-]", "-", wanted.lower()).split(".")
    cleaned = ".".join(label.strip("-") for label in labels if label.strip("-"))
    head = cleaned[: MAX_NAME_LENGTH - NAME_HASH_LENGTH - 1].rstrip("-.")
    return f"{head}-{digest}"


# -- the pure core ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease the election reads and writes (resource_version: the object's)."""

    holder: str | None = None
    duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None


class Action(enum.Enum):
    CREATE = "create"  # no Lease exists: create it naming us
    ACQUIRE = "acquire"  # free, expired, or already naming us: take it (a new term)
    RENEW = "renew"  # we lead: refresh renewTime
    WAIT = "wait"  # someone else holds a live Lease


@dataclass(frozen=True)
class Decision:
    action: Action
    write: LeaseRecord | None  # what to write, with the resourceVersion to write against (WAIT: None)


class LeaseElection:
    """One candidate's view of one Lease. Feed it reads and write results; ask it what to do.

    Protocol per attempt: if `needs_read`, read the Lease and `observe` it (None when 404); then
    `decide`; perform the write it asks for and report `written` (the Lease the server returned,
    plus the monotonic time the attempt started), `conflict` (409) or `failed` (anything else).
    """

    def __init__(
        self,
        identity: str,
        *,
        duration: float = DEFAULT_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
    ) -> None:
        if not identity:
            raise ValueError("a candidate needs a non-empty identity")
        if not 0 < retry_period < renew_deadline < duration:
            raise ValueError(
                f"need 0 < retry_period ({retry_period}) < renew_deadline ({renew_deadline})"
                f" < duration ({duration})"
            )
        self.identity = identity
        self.duration_seconds = max(1, math.ceil(duration))
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: LeaseRecord | None = None  # last Lease seen (read or written)
        self._known = False  # _observed reflects the server (False: read before deciding)
        self._observed_key: tuple[object, ...] | None = None
        self._observed_at: float | None = None  # monotonic time _observed_key last changed
        self._renewed_at: float | None = None  # start of our last successful write; None: not leader

    # -- state -------------------------------------------------------------------------------

    def is_leader(self, now: float) -> bool:
        """We hold the Lease and our last successful write started at most renew_deadline ago."""
        return (
            self._renewed_at is not None
            and self._observed is not None
            and self._observed.holder == self.identity
            and now - self._renewed_at <= self.renew_deadline
        )

    @property
    def holder(self) -> str | None:
        """The holder named by the last Lease seen (None: free, released or not seen yet)."""
        if self._observed is None or not self._observed.holder:
            return None
        return self._observed.holder

    @property
    def observed(self) -> LeaseRecord | None:
        return self._observed

    @property
    def current(self) -> bool:
        """The view reflects the server's last answer (False after an error: read first)."""
        return self._known

    def needs_read(self, now: float) -> bool:
        """Read before deciding? Not while we lead with the Lease as we last wrote it."""
        return not self._known or not self.is_leader(now)

    def expired(self, now: float) -> bool:
        """The observed holder's term is over on our clock (True also for a free Lease)."""
        record = self._observed
        if record is None or not record.holder:
            return True
        assert self._observed_at is not None
        return now > self._observed_at + self._holder_duration(record)

    def leader_remaining(self, now: float) -> float | None:
        """Seconds until we step down unless a renew succeeds first (None: not leader)."""
        if not self.is_leader(now):
            return None
        assert self._renewed_at is not None
        return self._renewed_at + self.renew_deadline - now

    def next_wake(self, now: float, jitter: float = 0.0) -> float:
        """Seconds until the next attempt: the retry period, cut short by up to RETRY_JITTER
        (`jitter` in [0, 1) from the caller's RNG), or sooner when a holder's term ends first."""
        delay = self.retry_period * (1.0 - RETRY_JITTER * min(max(jitter, 0.0), 1.0))
        record = self._observed
        if self._known and record is not None and record.holder and record.holder != self.identity:
            assert self._observed_at is not None
            until_expiry = self._observed_at + self._holder_duration(record) - now + EXPIRY_MARGIN
            delay = min(delay, max(until_expiry, 0.0))
        return delay

    def _holder_duration(self, record: LeaseRecord) -> float:
        if record.duration_seconds is not None and record.duration_seconds > 0:
            return float(record.duration_seconds)
        return float(self.duration_seconds)

    # -- inputs ------------------------------------------------------------------------------

    def observe(self, record: LeaseRecord | None, now: float) -> None:
        """A read: the Lease as the server has it, or None when it does not exist."""
        self._remember(record, now)
        self._known = True
        if record is None or record.holder != self.identity:
            self._renewed_at = None  # not (or no longer) ours

    def written(self, record: LeaseRecord, started: float) -> None:
        """A write succeeded: `record` is the Lease returned, `started` when the attempt began."""
        self._remember(record, started)
        self._known = True
        self._renewed_at = started if record.holder == self.identity else None

    def conflict(self, now: float) -> None:
        """409 on a write: someone else wrote first. Step down at once and re-read."""
        self._known = False
        self._renewed_at = None

    def failed(self, now: float) -> None:
        """Any other error (timeout, 5xx, ...): the write may or may not have landed. Re-read;
        a leader keeps leading until its renew deadline."""
        self._known = False

    def resign(self) -> None:
        """Stop leading now (before a release, or when shutting down without one)."""
        self._renewed_at = None

    def _remember(self, record: LeaseRecord | None, now: float) -> None:
        key = None if record is None else (record.holder, record.renew_time, record.resource_version)
        if key != self._observed_key or self._observed_at is None:
            self._observed_key = key
            self._observed_at = now
        self._observed = record

    # -- decisions ---------------------------------------------------------------------------

    def decide(self, now: float, wall: datetime) -> Decision:
        """What to do now, after `observe` (or a write) made the view current."""
        if not self._known:
            raise RuntimeError("decide() needs a current view: read the Lease and observe() it first")
        record = self._observed
        if record is None:
            return Decision(Action.CREATE, self._term(wall, transitions=0, resource_version=None))
        if self.is_leader(now):
            renewal = replace(record, renew_time=wall, duration_seconds=self.duration_seconds)
            return Decision(Action.RENEW, renewal)
        if record.holder == self.identity or self.expired(now):  # expired: also free
            changed_hands = record.holder != self.identity
            transitions = record.transitions + 1 if changed_hands else record.transitions
            return Decision(
                Action.ACQUIRE, self._term(wall, transitions, resource_version=record.resource_version)
            )
        return Decision(Action.WAIT, None)

    def release(self, wall: datetime) -> LeaseRecord | None:
        """The write that hands the Lease back (None: the Lease we last saw is not ours)."""
        record = self._observed
        if record is None or record.holder != self.identity or record.resource_version is None:
            return None
        return replace(record, holder="", duration_seconds=RELEASED_DURATION_SECONDS, renew_time=wall)

    def _term(self, wall: datetime, transitions: int, resource_version: str | None) -> LeaseRecord:
        return LeaseRecord(
            holder=self.identity,
            duration_seconds=self.duration_seconds,
            acquire_time=wall,
            renew_time=wall,
            transitions=transitions,
            resource_version=resource_version,
        )


# -- the Kubernetes adapter ------------------------------------------------------------------------


def _micro_time(value: datetime | None) -> str | None:
    """RFC 3339 with exactly six fractional digits: the API server's MicroTime format."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(name: str, namespace: str, record: LeaseRecord) -> dict[str, Any]:
    """A Lease manifest for create/replace (a dict: the client's datetime encoding drops the
    fraction when it is zero, which MicroTime rejects)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version is not None:
        metadata["resourceVersion"] = record.resource_version
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": _micro_time(record.acquire_time),
        "renewTime": _micro_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {key: value for key, value in spec.items() if value is not None},
    }


def record_of(lease: Any) -> LeaseRecord:
    """A kubernetes.client V1Lease as the election sees it."""
    spec = lease.spec
    return LeaseRecord(
        holder=spec.holder_identity if spec is not None else None,
        duration_seconds=spec.lease_duration_seconds if spec is not None else None,
        acquire_time=spec.acquire_time if spec is not None else None,
        renew_time=spec.renew_time if spec is not None else None,
        transitions=(spec.lease_transitions or 0) if spec is not None else 0,
        resource_version=lease.metadata.resource_version,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """Runs a `LeaseElection` for one Lease every retry period (jittered) until stopped.

    `is_leader` and `holder` are read at any time (leadership is judged against the monotonic
    clock at the moment of asking). `on_change(name, is_leader)` runs on the loop at each
    transition, including the step-down when a renew deadline passes between attempts.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: float = DEFAULT_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        on_change: OnChange | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.election = LeaseElection(
            identity, duration=duration, renew_deadline=renew_deadline, retry_period=retry_period
        )
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._request_timeout = min(DEFAULT_REQUEST_TIMEOUT, renew_deadline)
        self._reported = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._step_down: asyncio.TimerHandle | None = None

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader(time.monotonic())

    @property
    def holder(self) -> str | None:
        return self.election.holder

    def start(self, after: Awaitable[object] | None = None) -> None:
        """Begin electing (after `after` finishes: a previous elector's release of this Lease)."""
        if self._task is not None:
            raise RuntimeError(f"elector for lease {self.name} already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(after), name=f"lease:{self.namespace}/{self.name}"
        )

    async def stop(self, release: bool = True) -> None:
        """Stop electing. release=True: finish the attempt in flight, step down, hand the Lease
        back. release=False: abandon it at once like a crashed agent (others wait out the term)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            if not release:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cancel_step_down()
        self.election.resign()
        self._report()
        if release:
            await self._release()

    async def _run(self, after: Awaitable[object] | None) -> None:
        if after is not None:
            with contextlib.suppress(Exception):
                await after
        try:
            while not self._stopping.is_set():
                await self._attempt()
                self._report()
                delay = self.election.next_wake(time.monotonic(), self._rng.random())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._cancel_step_down()

    async def _attempt(self) -> None:
        election = self.election
        started = time.monotonic()
        if election.needs_read(started) and not await self._read():
            return
        decision = election.decide(time.monotonic(), _utc_now())
        if decision.write is None:
            return
        started = time.monotonic()
        try:
            body = lease_body(self.name, self.namespace, decision.write)
            if decision.action is Action.CREATE:
                lease = await self.kube.call(
                    "lease",
                    self.kube.coordination.create_namespaced_lease,
                    self.namespace,
                    body,
                    _request_timeout=self._request_timeout,
                )
            else:
                lease = await self.kube.call(
                    "lease",
                    self.kube.coordination.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    body,
                    _request_timeout=self._request_timeout,
                )
        except ApiException as error:
            if error.status == 409:
                log.debug(
                    "lease %s/%s: %s lost a race, re-reading",
                    self.namespace,
                    self.name,
                    decision.action.value,
                )
                election.conflict(time.monotonic())
            else:
                log.warning(
                    "lease %s/%s: %s failed: %s",
                    self.namespace,
                    self.name,
                    decision.action.value,
                    error.reason,
                )
                election.failed(time.monotonic())
            return
        except Exception as error:
            log.warning("lease %s/%s: %s failed: %r", self.namespace, self.name, decision.action.value, error)
            election.failed(time.monotonic())
            return
        election.written(record_of(lease), started)

    async def _read(self) -> bool:
        try:
            lease = await self.kube.call(
                "lease",
                self.kube.coordination.read_namespaced_lease,
                self.name,
                self.namespace,
                _request_timeout=self._request_timeout,
            )
        except ApiException as error:
            if error.status == 404:
                self.election.observe(None, time.monotonic())
                return True
            log.warning("lease %s/%s: read failed: %s", self.namespace, self.name, error.reason)
            self.election.failed(time.monotonic())
            return False
        except Exception as error:
            log.warning("lease %s/%s: read failed: %r", self.namespace, self.name, error)
            self.election.failed(time.monotonic())
            return False
        self.election.observe(record_of(lease), time.monotonic())
        return True

    async def _release(self) -> None:
        """Hand the Lease back if the last Lease seen is ours; one re-read on a conflict."""
        election = self.election
        for attempt in range(2):
            if (attempt or not election.current) and not await self._read():
                return
            write = election.release(_utc_now())
            if write is None:
                return
            try:
                lease = await self.kube.call(
                    "lease",
                    self.kube.coordination.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    lease_body(self.name, self.namespace, write),
                    _request_timeout=self._request_timeout,
                )
            except ApiException as error:
                if error.status == 409:
                    continue
                log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, error.reason)
                return
            except Exception as error:
                log.warning("lease %s/%s: release failed: %r", self.namespace, self.name, error)
                return
            election.written(record_of(lease), time.monotonic())
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
            return

    def _report(self) -> None:
        """Tell on_change about a transition; arm the step-down timer while we lead."""
        now = time.monotonic()
        leading = self.election.is_leader(now)
        self._cancel_step_down()
        remaining = self.election.leader_remaining(now)
        if remaining is not None and not self._stopping.is_set():
            self._step_down = asyncio.get_running_loop().call_later(remaining + EXPIRY_MARGIN, self._report)
        if leading == self._reported:
            return
        self._reported = leading
        log.info(
            "lease %s/%s: %s %s leader",
            self.namespace,
            self.name,
            self.identity,
            "became" if leading else "is no longer",
        )
        if self._on_change is not None:
            try:
                self._on_change(self.name, leading)
            except Exception:
                log.exception("lease %s/%s: on_change callback failed", self.namespace, self.name)

    def _cancel_step_down(self) -> None:
        if self._step_down is not None:
            self._step_down.cancel()
            self._step_down = None


class LeaseSet:
    """The electors an agent runs: one per RouteServer it serves, all with the same identity."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        identity: str,
        *,
        duration: float = DEFAULT_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        on_change: OnChange | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # Fail here, not in a background task, on an empty identity or timings that do not nest.
        LeaseElection(identity, duration=duration, renew_deadline=renew_deadline, retry_period=retry_period)
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self._timing = {"duration": duration, "renew_deadline": renew_deadline, "retry_period": retry_period}
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._electors: dict[str, LeaseElector] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}

    def ensure(self, route_servers: Iterable[str]) -> None:
        """Elect for exactly these RouteServers: start new electors, stop (releasing) the rest.

        Must run on the event loop. A RouteServer removed and re-added waits for its old
        elector's release before the new one starts."""
        wanted = set(route_servers)
        for route_server in sorted(set(self._electors) - wanted):
            elector = self._electors.pop(route_server)
            task = asyncio.get_running_loop().create_task(elector.stop(release=True))
            self._stopping[route_server] = task
            task.add_done_callback(functools.partial(self._forget_stop, route_server))
        for route_server in sorted(wanted - set(self._electors)):
            elector = LeaseElector(
                self.kube,
                self.namespace,
                lease_name(route_server),
                self.identity,
                on_change=self._callback_for(route_server),
                rng=random.Random(self._rng.random()),
                **self._timing,
            )
            self._electors[route_server] = elector
            elector.start(after=self._stopping.get(route_server))

    def is_leader(self, route_server: str) -> bool:
        elector = self._electors.get(route_server)
        return elector is not None and elector.is_leader

    def holder(self, route_server: str) -> str | None:
        elector = self._electors.get(route_server)
        return elector.holder if elector is not None else None

    def leaders(self) -> set[str]:
        """The RouteServers this agent leads right now."""
        return {rs for rs, elector in self._electors.items() if elector.is_leader}

    def route_servers(self) -> set[str]:
        return set(self._electors)

    async def stop(self, release: bool = True) -> None:
        """Stop every elector (release=True: hand every Lease we hold back)."""
        electors, self._electors = list(self._electors.values()), {}
        await asyncio.gather(*(elector.stop(release=release) for elector in electors))
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    def _callback_for(self, route_server: str) -> OnChange | None:
        on_change = self._on_change
        if on_change is None:
            return None

        def forward(_lease: str, leading: bool) -> None:
            on_change(route_server, leading)

        return forward

    def _forget_stop(self, route_server: str, task: asyncio.Task[None]) -> None:
        if self._stopping.get(route_server) is task:
            del self._stopping[route_server]
        if not task.cancelled() and task.exception() is not None:
            log.error("lease for %s: stop failed", route_server, exc_info=task.exception())


__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_RENEW_DEADLINE",
    "DEFAULT_RETRY_PERIOD",
    "Action",
    "Decision",
    "LeaseElection",
    "LeaseElector",
    "LeaseRecord",
    "LeaseSet",
    "lease_body",
    "lease_name",
    "record_of",
]
