"""The Kubernetes Event of each user-visible event: the object it is about, reason, type, note, body.

Pure: no API server. The sink's writes are tested against a real one in
tests/integration/operator_status/test_kube_events.py.
"""

from __future__ import annotations

import inspect
import re
import time
from datetime import UTC, datetime
from typing import cast

import pytest

from controller import events as ev
from controller.operator.kube import Kube
from controller.operator.kube_events import (
    MAPPED_EVENTS,
    NOTE_LIMIT,
    REPORTING_CONTROLLER,
    KubeEventSink,
    KubeEventSpec,
    describe,
    event_body,
    event_name,
    micro_time,
    series_patch,
)

CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MOMENT = datetime(2026, 12, 3, 13, 0, 0, tzinfo=UTC)  # microsecond 0: the fraction is still written

RS, PEER, TABLE = "rs-a", "peer-a", "assoc-a"
PEER_KIND, SERVER_KIND, TABLE_KIND = "RouteServerPeer", "RouteServer", "RouteTableAssociation"

# (event, regarding kind, regarding name, reason, type, words the note must contain)
CASES: list[tuple[ev.Event, str, str, str, str, tuple[str, ...]]] = [
    (
        ev.BgpSessionUp(RS, PEER, "198.51.100.10"),
        PEER_KIND,
        PEER,
        "BGPSessionUp",
        "Normal",
        ("198.51.100.10",),
    ),
    (
        ev.BgpSessionDown(RS, PEER, "198.51.100.10", "Established", "HoldTimerExpired", "4/0", "hold timer"),
        PEER_KIND,
        PEER,
        "BGPSessionDown",
        "Warning",
        ("198.51.100.10", "HoldTimerExpired", "4/0", "Established"),
    ),
    (
        ev.BgpSessionDown(RS, PEER, "198.51.100.10", "Established", "AdminShutdown", expected=True),
        PEER_KIND,
        PEER,
        "BGPSessionDown",
        "Normal",
        ("AdminShutdown",),
    ),
    (ev.BfdUp(RS, PEER, "198.51.100.10"), PEER_KIND, PEER, "BFDUp", "Normal", ("198.51.100.10",)),
    (
        ev.BfdDown(RS, PEER, "198.51.100.10", "Timeout", "ControlDetectionTimeExpired", established=True),
        PEER_KIND,
        PEER,
        "BFDDown",
        "Warning",
        ("Timeout", "ControlDetectionTimeExpired", "RFC 5882"),
    ),
    (ev.BfdFailed(RS, PEER, "no route", 4.0), PEER_KIND, PEER, "BFDFailed", "Warning", ("no route", "4s")),
    (ev.BfdUnavailable(RS, PEER), PEER_KIND, PEER, "BFDUnavailable", "Warning", ("BFD",)),
    (
        ev.MaxPrefix(RS, PEER, "rejected", 100, 100),
        PEER_KIND,
        PEER,
        "MaxPrefixesReached",
        "Warning",
        ("100",),
    ),
    (
        ev.MaxPrefix(RS, PEER, "teardown", 101, 100),
        PEER_KIND,
        PEER,
        "MaxPrefixesReached",
        "Warning",
        ("101",),
    ),
    (
        ev.MaxPrefix(RS, PEER, "threshold", 80, 100),
        PEER_KIND,
        PEER,
        "MaxPrefixesThreshold",
        "Warning",
        ("80",),
    ),
    (
        ev.RoutesRejected(RS, PEER, 7, {"NotAllowed": 5, "Martian": 2}, ["203.0.113.0/24", "10.0.0.0/8"]),
        PEER_KIND,
        PEER,
        "RoutesRejected",
        "Warning",
        ("7 routes", "NotAllowed=5", "Martian=2", "203.0.113.0/24"),
    ),
    (ev.PeerFailed(RS, PEER, "bad family", 8.0), PEER_KIND, PEER, "PeerFailed", "Warning", ("bad family",)),
    (ev.PeerConfigured(RS, PEER, 3), PEER_KIND, PEER, "PeerConfigured", "Normal", ("3 attempts",)),
    (
        ev.RouteServerStarted(RS, 64512, "198.51.100.1", ["198.51.100.1:179"], 2, 1),
        SERVER_KIND,
        RS,
        "Started",
        "Normal",
        ("64512", "198.51.100.1:179"),
    ),
    (ev.RouteServerStopped(RS, True), SERVER_KIND, RS, "Stopped", "Normal", ("kept",)),
    (ev.RouteServerRestart(RS), SERVER_KIND, RS, "SpeakerRestart", "Normal", ("restarting",)),
    (
        ev.SpeakerFailed(RS, "address in use", 2.0),
        SERVER_KIND,
        RS,
        "SpeakerFailed",
        "Warning",
        ("address in use",),
    ),
    (
        ev.Failover(RS, PEER, ["198.51.100.10", "198.51.100.11"], ["198.51.100.11"], 40, "203.0.113.0/24"),
        SERVER_KIND,
        RS,
        "Failover",
        "Normal",
        ("40 prefixes", "from [198.51.100.10, 198.51.100.11] to [198.51.100.11]", PEER, "203.0.113.0/24"),
    ),
    (
        ev.RoutesLost(RS, PEER, ["198.51.100.10"], [], 12, "203.0.113.0/24"),
        SERVER_KIND,
        RS,
        "RoutesLost",
        "Warning",
        ("12 prefixes", "198.51.100.10"),
    ),
    (ev.MoreFailovers(RS, 9, 300), SERVER_KIND, RS, "Failover", "Normal", ("9 more", "300 prefixes")),
    (ev.PersistStateChanged(RS, "Holding", 50), SERVER_KIND, RS, "PersistHolding", "Warning", ("50 routes",)),
    (ev.PersistStateChanged(RS, "Live", 0), SERVER_KIND, RS, "PersistLive", "Normal", ("live",)),
    (ev.PersistWindowEnded(RS, 4), SERVER_KIND, RS, "PersistWindowEnded", "Normal", ("4 persisted",)),
    (ev.PersistGraceEnded(RS, 5), SERVER_KIND, RS, "PersistGraceEnded", "Normal", ("5 routes",)),
    (
        ev.DeferralEnded(RS, "TimerExpired", None, 120.0, 30, ["peer-b"]),
        SERVER_KIND,
        RS,
        "DeferralEnded",
        "Warning",
        ("TimerExpired", "peer-b", "30 adopted"),
    ),
    (
        ev.TableWriteFailed(RS, TABLE, "EPERM", "resync"),
        TABLE_KIND,
        TABLE,
        "TableWriteFailed",
        "Warning",
        ("resync failed", "EPERM"),
    ),
    (ev.TableRecovered(RS, TABLE), TABLE_KIND, TABLE, "TableRecovered", "Normal", ("work again",)),
    (
        ev.TableRoutesRejected(RS, TABLE, 3, {"NoRoute": 3}, "203.0.113.0/24: unreachable"),
        TABLE_KIND,
        TABLE,
        "TableRoutesRejected",
        "Warning",
        ("3 routes", "NoRoute=3", "unreachable"),
    ),
    (
        ev.RoutesAdopted(RS, TABLE, 10, 300),
        TABLE_KIND,
        TABLE,
        "RoutesAdopted",
        "Normal",
        ("10 routes", "300s"),
    ),
    (ev.RoutesWithdrawn(RS, TABLE, 6), TABLE_KIND, TABLE, "RoutesWithdrawn", "Normal", ("6 routes",)),
    (
        ev.ObjectProblem(PEER_KIND, PEER, "spec.authSecretRef", "SecretNotFound", "Secret krs/md5 not found"),
        PEER_KIND,
        PEER,
        "AuthSecretMissing",
        "Warning",
        ("spec.authSecretRef", "krs/md5"),
    ),
    (
        ev.ObjectProblem(PEER_KIND, PEER, "spec.routeServerRef.name", "RouteServerNotFound", "no such"),
        PEER_KIND,
        PEER,
        "RouteServerNotFound",
        "Warning",
        ("spec.routeServerRef.name",),
    ),
]

CASE_IDS = [f"{type(case[0]).__name__}-{case[3]}-{case[4]}" for case in CASES]

# Deliberately not Kubernetes Events (kube_events.py's docstring says why).
UNMAPPED: list[ev.Event] = [
    ev.FibChanged(RS, 1, 0, 0, 0),
    ev.ConfigRefused("bad yaml"),
    ev.ConfigApplied(3),
    ev.BgpTransition(RS, PEER, "OpenSent", "Connected"),
    ev.BfdStateChanged(RS, PEER, "Init", "Received"),
    ev.EndOfRibReceived(RS, PEER, "ipv4-unicast"),
    ev.TableWritten(RS, TABLE, "apply", 1, 0, 1),
    ev.BfdRequested(RS, PEER, "198.51.100.10", None, 300, 300, 3),
    ev.PeerRemoved(RS, PEER),
    ev.ConnectionRefusedEvent(RS, "198.51.100.99"),
]


@pytest.mark.parametrize(("event", "kind", "name", "reason", "type_", "words"), CASES, ids=CASE_IDS)
def test_each_mapped_event_describes_its_object_reason_type_and_note(
    event: ev.Event, kind: str, name: str, reason: str, type_: str, words: tuple[str, ...]
) -> None:
    spec = describe(event)
    assert spec is not None
    assert (spec.kind, spec.name, spec.reason, spec.type) == (kind, name, reason, type_)
    assert CAMEL.match(spec.reason) and CAMEL.match(spec.action)
    for word in words:
        assert word in spec.note, (word, spec.note)
    assert len(spec.note.encode()) <= NOTE_LIMIT


@pytest.mark.parametrize(("event", "kind", "name", "reason", "type_", "words"), CASES, ids=CASE_IDS)
def test_each_mapped_event_has_a_valid_events_k8s_io_body(
    event: ev.Event, kind: str, name: str, reason: str, type_: str, words: tuple[str, ...]
) -> None:
    spec = describe(event)
    assert spec is not None
    body = event_body(spec, node_name="node-a", namespace="default", moment=MOMENT, uid="u-1")
    assert body["apiVersion"] == "events.k8s.io/v1" and body["kind"] == "Event"
    assert body["metadata"] == {"name": f"{name}.{int(MOMENT.timestamp() * 10**9):x}", "namespace": "default"}
    assert body["regarding"] == {
        "apiVersion": "routeserver.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": "u-1",
    }
    assert body["reportingController"] == REPORTING_CONTROLLER == "routeserver.dev/agent"
    assert body["reportingInstance"] == "node-a"
    assert body["reason"] == reason and body["type"] == type_ and body["action"] == spec.action
    assert MICRO_TIME.match(body["eventTime"]), body["eventTime"]
    assert body["note"] == spec.note
    assert "series" not in body


def test_every_event_class_is_either_mapped_or_deliberately_left_out() -> None:
    classes = {
        cls
        for _, cls in inspect.getmembers(ev, inspect.isclass)
        if issubclass(cls, ev.Event) and cls.name  # the bases have no name
    }
    covered = {type(case[0]) for case in CASES}
    left_out = {type(e) for e in UNMAPPED}
    assert covered == set(MAPPED_EVENTS)
    assert classes == covered | left_out
    assert not covered & left_out


@pytest.mark.parametrize("event", UNMAPPED, ids=lambda e: type(e).__name__)
def test_unmapped_events_have_no_kubernetes_event(event: ev.Event) -> None:
    assert describe(event) is None


def test_unmapped_events_take_no_room_in_the_queue() -> None:
    sink = KubeEventSink(cast(Kube, None), "node-a", queue_size=1)
    for event in UNMAPPED:
        sink.emit(event)
    assert sink.dropped == 0
    sink.emit(ev.BgpSessionUp(RS, PEER, "198.51.100.10"))
    assert sink.dropped == 0
    sink.emit(ev.BgpSessionUp(RS, PEER, "198.51.100.10"))
    assert sink.dropped == 1  # the queue of one is full now


def test_long_notes_are_cut_to_one_kilobyte_of_utf8() -> None:
    error = "écriture refusée " * 400
    spec = describe(ev.TableWriteFailed(RS, TABLE, error))
    assert spec is not None
    assert len(spec.note.encode()) <= NOTE_LIMIT and spec.note.endswith("...")
    reasons = {f"Reason{i}": i for i in range(500)}
    rejected = describe(ev.RoutesRejected(RS, PEER, 100_000, reasons, [f"10.{i}.0.0/16" for i in range(200)]))
    assert rejected is not None
    assert len(rejected.note.encode()) <= NOTE_LIMIT
    assert rejected.note.count("10.") <= 3  # a few examples, never one line per prefix


def test_names_fit_the_name_limit_and_series_patch_is_count_and_time() -> None:
    long_name = "p" * 253
    name = event_name(long_name, time.time_ns())
    assert len(name) <= 253 and re.match(r"^p+\.[0-9a-f]+$", name)
    assert series_patch(5, MOMENT) == {
        "series": {"count": 5, "lastObservedTime": "2026-12-03T13:00:00.000000Z"}
    }
    assert micro_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"


def test_body_without_uid_leaves_uid_out_and_the_key_groups_repeats() -> None:
    spec = KubeEventSpec(PEER_KIND, PEER, "BgpSessionDown", "BGPSessionDown", "Warning", "down")
    body = event_body(spec, node_name="node-a", namespace="default", moment=MOMENT)
    assert "uid" not in body["regarding"]
    again = describe(ev.BgpSessionDown(RS, PEER, "198.51.100.10", "Established", "HoldTimerExpired"))
    same = describe(ev.BgpSessionDown(RS, PEER, "198.51.100.10", "Established", "HoldTimerExpired"))
    other = describe(ev.BgpSessionDown(RS, PEER, "198.51.100.10", "Established", "PeerDeconfigured"))
    assert again is not None and same is not None and other is not None
    assert again.key == same.key != other.key


def test_namespaces_the_api_server_refuses_for_cluster_scoped_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="default or kube-system"):
        KubeEventSink(cast(Kube, None), "node-a", namespace="krs-system")
    assert KubeEventSink(cast(Kube, None), "node-a", namespace="kube-system").namespace == "kube-system"
