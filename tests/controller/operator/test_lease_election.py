"""The pure Lease election core on a virtual clock, against an in-memory store with optimistic
concurrency (a write with a stale resourceVersion is a conflict, as on the API server)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.operator.lease import (
    MAX_NAME_LENGTH,
    Action,
    LeaseElection,
    LeaseRecord,
    lease_body,
    lease_name,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class ConflictError(Exception):
    pass


@dataclass
class Store:
    """One Lease with a resourceVersion that changes on every write."""

    lease: LeaseRecord | None = None
    version: int = 100  # above every resourceVersion the tests seed

    def read(self) -> LeaseRecord | None:
        return self.lease

    def write(self, record: LeaseRecord, create: bool) -> LeaseRecord:
        if create and self.lease is not None:
            raise ConflictError
        if not create and (self.lease is None or record.resource_version != self.lease.resource_version):
            raise ConflictError
        self.version += 1
        self.lease = replace(record, resource_version=str(self.version))
        return self.lease


def elect(identity: str) -> LeaseElection:
    return LeaseElection(identity, duration=15.0, renew_deadline=10.0, retry_period=2.0)


def attempt(election: LeaseElection, store: Store, now: float, wall: datetime | None = None) -> Action:
    """One attempt as the elector runs it: read if needed, decide, write, report the outcome."""
    if election.needs_read(now):
        election.observe(store.read(), now)
    decision = election.decide(now, wall or T0 + timedelta(seconds=now))
    if decision.write is not None:
        try:
            written = store.write(decision.write, create=decision.action is Action.CREATE)
        except ConflictError:
            election.conflict(now)
        else:
            election.written(written, now)
    return decision.action


def test_a_missing_lease_is_created_naming_us_and_we_lead() -> None:
    store, a = Store(), elect("node-a")
    assert attempt(a, store, 0.0) is Action.CREATE
    assert a.is_leader(0.0) and a.holder == "node-a"
    assert store.lease is not None
    assert store.lease.holder == "node-a" and store.lease.duration_seconds == 15
    assert store.lease.transitions == 0 and store.lease.acquire_time == T0


def test_a_free_lease_is_acquired_and_counts_a_transition() -> None:
    store = Store(LeaseRecord(holder="", duration_seconds=1, transitions=4, resource_version="7"))
    a = elect("node-a")
    assert attempt(a, store, 100.0) is Action.ACQUIRE
    assert a.is_leader(100.0)
    assert store.lease is not None and store.lease.holder == "node-a" and store.lease.transitions == 5


def test_the_leader_renews_without_reading_and_keeps_its_term() -> None:
    store, a = Store(), elect("node-a")
    attempt(a, store, 0.0)
    reads = 0
    original_read = store.read

    def counting_read() -> LeaseRecord | None:
        nonlocal reads
        reads += 1
        return original_read()

    store.read = counting_read  # type: ignore[method-assign]
    # Renewing every retry period keeps the lead far beyond one duration.
    for now in range(2, 62, 2):
        assert attempt(a, store, float(now)) is Action.RENEW
        assert a.is_leader(float(now) + 1.0)
    assert reads == 0
    assert store.lease is not None
    assert store.lease.acquire_time == T0 and store.lease.transitions == 0
    assert store.lease.renew_time == T0 + timedelta(seconds=60)


def test_a_held_lease_makes_others_wait_until_it_expires_on_their_own_clock() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    attempt(a, store, 0.0)
    # b first sees a's lease at t=5: a stops renewing (crashed) right after t=0.
    assert attempt(b, store, 5.0) is Action.WAIT
    assert b.holder == "node-a" and not b.is_leader(5.0)
    for now in (7.0, 12.0, 19.0, 20.0):
        assert attempt(b, store, now) is Action.WAIT, now
    # Expired 15 s after b's first sight of it (t=5), not 15 s after a's renew (t=0).
    assert attempt(b, store, 20.01) is Action.ACQUIRE
    assert b.is_leader(20.01) and store.lease is not None and store.lease.holder == "node-b"
    assert store.lease.transitions == 1


def test_every_renewal_seen_restarts_the_wait() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    attempt(a, store, 0.0)
    attempt(b, store, 0.0)
    for now in range(2, 60, 2):
        attempt(a, store, float(now))
        assert attempt(b, store, float(now) + 1.0) is Action.WAIT
    assert not b.is_leader(60.0) and a.is_leader(60.0)


def test_the_wait_uses_the_holders_duration_not_ours() -> None:
    store = Store(LeaseRecord(holder="node-a", duration_seconds=40, renew_time=T0, resource_version="1"))
    b = elect("node-b")
    assert attempt(b, store, 0.0) is Action.WAIT
    assert attempt(b, store, 39.0) is Action.WAIT
    assert attempt(b, store, 40.5) is Action.ACQUIRE


@pytest.mark.parametrize("skew", [timedelta(hours=-5), timedelta(hours=7), timedelta(days=-400)])
def test_remote_clock_skew_of_hours_does_not_matter(skew: timedelta) -> None:
    """The holder stamps renewTime from a clock hours off: a live lease is not taken, and a dead
    one expires after exactly one duration of our monotonic time."""
    store, a, b = Store(), elect("node-a"), elect("node-b")
    skewed = T0 + skew
    attempt(a, store, 0.0, wall=skewed)
    attempt(b, store, 1.0)
    for now in range(2, 40, 2):
        attempt(a, store, float(now), wall=skewed + timedelta(seconds=now))
        assert attempt(b, store, float(now) + 1.0) is Action.WAIT, now
    assert a.is_leader(40.0)
    # a dies after its renew at t=38; b saw that renew at t=39.
    assert attempt(b, store, 53.9) is Action.WAIT
    assert attempt(b, store, 54.1) is Action.ACQUIRE


def test_an_unchanged_lease_read_again_does_not_restart_the_wait() -> None:
    store = Store(LeaseRecord(holder="node-a", duration_seconds=15, renew_time=T0, resource_version="3"))
    b = elect("node-b")
    for now in range(15):
        assert attempt(b, store, float(now)) is Action.WAIT
    assert b.expired(15.5)
    assert attempt(b, store, 15.5) is Action.ACQUIRE


def test_a_leader_that_cannot_renew_within_the_deadline_steps_down() -> None:
    store, a = Store(), elect("node-a")
    attempt(a, store, 0.0)
    assert a.leader_remaining(0.0) == pytest.approx(10.0)
    # Every renew from t=2 on fails (API server unreachable).
    for now in (2.0, 4.0, 6.0, 8.0):
        a.failed(now)
        assert a.is_leader(now)
    assert a.is_leader(10.0)
    assert not a.is_leader(10.01)
    assert a.leader_remaining(10.01) is None
    # Steps down before anyone else could take over (duration 15 s from their sight of t=0).
    assert a.renew_deadline < a.duration_seconds


def test_a_failed_write_is_followed_by_a_read_and_the_leader_renews_again() -> None:
    store, a = Store(), elect("node-a")
    attempt(a, store, 0.0)
    a.failed(2.0)
    assert a.needs_read(3.0)
    assert attempt(a, store, 3.0) is Action.RENEW
    assert a.is_leader(12.9) and not a.needs_read(4.0)


def test_a_leader_whose_lease_was_taken_learns_it_on_its_next_read() -> None:
    store, a = Store(), elect("node-a")
    attempt(a, store, 0.0)
    a.failed(2.0)  # a's renew timed out; meanwhile node-b, long out of touch, took the lease
    assert store.lease is not None
    store.lease = replace(store.lease, holder="node-b", resource_version="99")
    assert attempt(a, store, 4.0) is Action.WAIT
    assert not a.is_leader(4.0) and a.holder == "node-b"


def test_release_hands_the_lease_over_at_once() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    attempt(a, store, 0.0)
    attempt(b, store, 1.0)
    attempt(a, store, 2.0)
    a.resign()
    assert not a.is_leader(2.0)
    release = a.release(T0 + timedelta(seconds=2))
    assert release is not None
    assert release.holder == "" and release.duration_seconds == 1
    a.written(store.write(release, create=False), 2.0)
    assert a.holder is None and not a.is_leader(2.1)
    # b takes over at its next attempt, long before a's 15 s term would have run out.
    assert attempt(b, store, 3.0) is Action.ACQUIRE
    assert b.is_leader(3.0) and store.lease is not None and store.lease.holder == "node-b"
    assert store.lease.transitions == 1


def test_release_is_nothing_when_the_lease_is_not_ours() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    attempt(a, store, 0.0)
    attempt(b, store, 1.0)
    assert b.release(T0) is None


def test_two_candidates_racing_for_a_free_lease_yield_one_leader() -> None:
    store = Store(LeaseRecord(holder="", duration_seconds=1, resource_version="1"))
    a, b = elect("node-a"), elect("node-b")
    # Both read the same free lease before either writes.
    a.observe(store.read(), 0.0)
    b.observe(store.read(), 0.0)
    a_write, b_write = a.decide(0.0, T0).write, b.decide(0.0, T0).write
    assert a_write is not None and b_write is not None
    a.written(store.write(a_write, create=False), 0.0)
    with pytest.raises(ConflictError):
        store.write(b_write, create=False)
    b.conflict(0.0)
    assert a.is_leader(0.0) and not b.is_leader(0.0)
    assert b.needs_read(0.1)
    assert attempt(b, store, 0.1) is Action.WAIT and b.holder == "node-a"


def test_two_candidates_racing_to_create_yield_one_leader() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    a.observe(store.read(), 0.0)
    b.observe(store.read(), 0.0)
    a_create, b_create = a.decide(0.0, T0), b.decide(0.0, T0)
    assert a_create.action is b_create.action is Action.CREATE
    assert a_create.write is not None and b_create.write is not None
    a.written(store.write(a_create.write, create=True), 0.0)
    with pytest.raises(ConflictError):  # AlreadyExists
        store.write(b_create.write, create=True)
    b.conflict(0.0)
    assert a.is_leader(0.0) and not b.is_leader(0.0)
    assert attempt(b, store, 2.0) is Action.WAIT


def test_a_conflict_on_renew_steps_down_at_once() -> None:
    store, a = Store(), elect("node-a")
    attempt(a, store, 0.0)
    assert store.lease is not None
    store.lease = replace(store.lease, holder="node-b", resource_version="50")
    assert attempt(a, store, 2.0) is Action.RENEW  # with the stale resourceVersion: 409
    assert not a.is_leader(2.0)
    assert attempt(a, store, 4.0) is Action.WAIT and a.holder == "node-b"


def test_a_restarted_candidate_reclaims_a_lease_that_names_it_without_waiting() -> None:
    store = Store(LeaseRecord(holder="node-a", duration_seconds=15, transitions=3, resource_version="8"))
    a = elect("node-a")
    assert attempt(a, store, 0.0) is Action.ACQUIRE
    assert a.is_leader(0.0) and store.lease is not None and store.lease.transitions == 3


def test_next_wake_is_the_jittered_retry_or_the_holders_expiry() -> None:
    store, a, b = Store(), elect("node-a"), elect("node-b")
    attempt(a, store, 0.0)
    assert a.next_wake(0.0, jitter=0.0) == pytest.approx(2.0)
    assert a.next_wake(0.0, jitter=0.999) == pytest.approx(1.5, abs=0.01)
    attempt(b, store, 0.0)
    assert b.next_wake(14.0) == pytest.approx(1.01)
    assert b.next_wake(3.0) == pytest.approx(2.0)


def test_decide_before_any_read_is_refused() -> None:
    with pytest.raises(RuntimeError):
        elect("node-a").decide(0.0, T0)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 20, 2), (15, 10, 0)]
)
def test_timings_must_nest(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError):
        LeaseElection("node-a", duration=duration, renew_deadline=deadline, retry_period=retry)


def test_lease_body_carries_the_resource_version_and_micro_times() -> None:
    record = LeaseRecord(
        holder="node-a",
        duration_seconds=15,
        acquire_time=T0,
        renew_time=T0,
        transitions=2,
        resource_version="9",
    )
    body = lease_body("routeserver-rs1", "krs", record)
    assert body["metadata"] == {"name": "routeserver-rs1", "namespace": "krs", "resourceVersion": "9"}
    assert body["spec"]["renewTime"] == "2026-01-01T12:00:00.000000Z"
    assert body["spec"]["holderIdentity"] == "node-a" and body["spec"]["leaseTransitions"] == 2
    assert "resourceVersion" not in lease_body("n", "krs", replace(record, resource_version=None))["metadata"]


_SUBDOMAIN_LABEL = "abcdefghijklmnopqrstuvwxyz0123456789"


def _is_subdomain(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and all(label and label[0] != "-" and label[-1] != "-" for label in name.split("."))
        and all(ch in _SUBDOMAIN_LABEL + "-." for ch in name)
    )


def test_lease_names() -> None:
    assert lease_name("rs1") == "routeserver-rs1"
    assert lease_name("edge.example") == "routeserver-edge.example"
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    assert _is_subdomain(lease_name(long_a)) and _is_subdomain(lease_name(long_b))
    assert len(lease_name(long_a)) == MAX_NAME_LENGTH
    assert lease_name(long_a) != lease_name(long_b)
    dotted = "x" * 230 + "-." + "y" * 30
    assert _is_subdomain(lease_name(dotted))
    exactly = "r" * (MAX_NAME_LENGTH - len("routeserver-"))
    assert lease_name(exactly) == "routeserver-" + exactly
