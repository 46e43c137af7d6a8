"""Runtime wiring with fake speaker, writers and BFD: routes -> FIB -> tables, liveness, reconcile, stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from bfd.codec import Diag
from bfd.codec import State as BfdState
from bfd.session import StateChange
from bfd.session import TransitionReason as BfdReason
from bgp.api import ConnectionRefused, EndOfRib, PrefixLimit
from bgp.fsm.events import DownReason, TransitionReason
from bgp.rib.policy import MaxPrefixEvent
from bgp.types import IPV4_UNICAST, prefix_key
from controller.desired import Backed, DesiredState
from controller.fib import PersistConfig, PersistState
from controller.runtime import RestartDeferral, Runtime
from controller.runtime import retry as retry_module
from controller.runtime import route_server as route_server_module
from controller.status import render, to_json
from tests.controller.builders import association, desired, peer, server
from tests.controller.fakes import FakeBfd, FakeSpeaker, FakeWriter, SpeakerFactory, WriterFactory

VIP = prefix_key(ip_network("203.0.113.10/32"))
SVC = prefix_key(ip_network("203.0.113.20/32"))
A, B, C = ip_address("10.0.0.2"), ip_address("10.0.0.3"), ip_address("10.0.0.4")
A_B = Backed((A,), (B,))  # via A, and B takes over if A fails (the standby's path is in the RIB)
ALLOW: dict[str, Any] = {"importPolicy": {"allowedPrefixes": [{"prefix": "203.0.113.0/24", "le": 32}]}}


class Harness:
    def __init__(self) -> None:
        self.speakers = SpeakerFactory()
        self.writers = WriterFactory()
        self.bfd = FakeBfd()
        self.runtime = Runtime(
            bfd=self.bfd,
            speaker_factory=self.speakers,
            writer_factory=self.writers,
            resync_interval=3600.0,
            observe_interval=3600.0,
        )

    @property
    def speaker(self) -> FakeSpeaker:
        return self.speakers.last

    def table(self, name: str = "t") -> FakeWriter:
        return self.writers.writers[name]

    async def settle(self) -> None:
        """Let every table task write what is pending (and the BFD deliveries run)."""
        loop = asyncio.get_running_loop()
        for _ in range(50):
            await asyncio.sleep(0)
            busy = [
                t
                for rs in self.runtime.route_servers.values()
                for t in rs.tables.values()
                if t._pending
                or t.writer is None
                or (t._resync_at is not None and t._resync_at <= loop.time())
            ]
            if not busy:
                await asyncio.sleep(0)
                return
        raise AssertionError("tables did not settle")


async def until(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.runtime.start()
    yield h
    await h.runtime.stop(keep_routes=True)


def two_firewalls(**server_spec: object) -> DesiredState:
    return desired(
        [server(**{**ALLOW, **server_spec})],
        [
            peer("fw-a", "10.0.0.2", localAddress="10.0.0.1"),
            peer("fw-b", "10.0.0.3", localAddress="10.0.0.1"),
        ],
        [association("t")],
    )


async def test_best_path_goes_to_the_table_and_fails_over_on_withdraw(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    speaker = harness.speaker
    assert sorted(c[1] for c in speaker.calls if c[0] == "add") == ["fw-a", "fw-b"]
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)  # the standby prepends
    speaker.announce("fw-a", "203.0.113.20/32")
    await harness.settle()
    writer = harness.table()
    assert writer.routes == {VIP: A_B, SVC: (A,)}

    writer.applies.clear()
    speaker.withdraw("fw-a", "203.0.113.10/32")
    await harness.settle()
    assert writer.routes == {VIP: (B,), SVC: (A,)}
    assert writer.applies == [{VIP: (B,)}]  # only the prefix that changed
    assert harness.runtime.metrics.failovers.labels("vip")._value.get() == 1


async def test_bfd_session_is_requested_when_bgp_is_established(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    assert harness.bfd.handles == []  # nothing before the session is up
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    (handle,) = harness.bfd.live("10.0.0.2")
    assert handle.local == ip_address("10.0.0.1")  # the session's local address (configured here)
    assert (handle.profile.min_tx_us, handle.profile.min_rx_us, handle.profile.multiplier) == (
        300_000,
        300_000,
        3,
    )
    assert not handle.profile.multihop
    # A BGP flap keeps the same BFD session.
    harness.speaker._down("fw-a", TransitionReason.HOLD_TIMER_EXPIRED)
    harness.speaker.establish("fw-a")
    await asyncio.sleep(0.01)
    assert harness.bfd.handles == [handle] and not handle.released


async def test_bfd_down_tears_bgp_down_and_moves_the_fib_in_the_same_step(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    speaker = harness.speaker
    for name in ("fw-a", "fw-b"):
        speaker.establish(name)
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    await harness.settle()
    handle = harness.bfd.live("10.0.0.2")[0]
    rs = harness.runtime.route_server("vip")
    writer = harness.table()
    assert writer.routes[VIP] == A_B  # via A, grouped with its backup B
    callback = handle.callback
    assert callback is not None
    callback(StateChange(BfdState.DOWN, BfdState.UP, Diag.NO_DIAGNOSTIC, BfdReason.RECEIVED_INIT, 0.0))
    assert speaker.calls[-1][0] != "peer_down"
    # Delivered on the loop: within this one call the session goes down and the FIB moves.
    callback(
        StateChange(
            BfdState.UP,
            BfdState.DOWN,
            Diag.CONTROL_DETECTION_TIME_EXPIRED,
            BfdReason.DETECTION_TIME_EXPIRED,
            0.0,
        )
    )
    assert ("peer_down", "fw-a", DownReason.BFD_DOWN) in speaker.calls
    # The table moved off A before the RIB's work (the writer's group rewrite), in the same call.
    assert writer.failovers == [{A}] and writer.routes[VIP] == (B,)
    assert rs.fib.entries()[VIP] == (B,)
    assert rs.tables["t"]._pending == {VIP: (B,)}
    await harness.settle()
    assert harness.table().routes[VIP] == (B,)
    metrics = harness.runtime.metrics
    assert metrics.bfd_failures.labels("vip", "fw-a")._value.get() == 1
    status = harness.runtime.status()
    fw_a = next(p for p in status.route_servers[0].peers if p.name == "fw-a")
    assert fw_a.bfd is not None and fw_a.bfd.state == "Down" and fw_a.bfd.down_count == 1
    assert fw_a.bfd.diagnostic == "ControlDetectionTimeExpired"


async def test_peer_admin_down_is_not_a_failure(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    handle = harness.bfd.live("10.0.0.2")[0]
    handle.emit(BfdState.DOWN, BfdState.UP, BfdReason.RECEIVED_INIT)
    handle.emit(
        BfdState.UP, BfdState.DOWN, BfdReason.RECEIVED_ADMIN_DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    )
    await asyncio.sleep(0.01)
    assert not any(c[0] == "peer_down" for c in harness.speaker.calls)
    assert harness.runtime.route_server("vip").peers["fw-a"].bfd_state is BfdState.DOWN


async def test_bgp_keepalive_liveness_requests_no_bfd(harness: Harness) -> None:
    state = desired([server(**ALLOW)], [peer("fw", "10.0.0.2", liveness="BGPKeepalive")], [association("t")])
    await harness.runtime.apply(state)
    harness.speaker.establish("fw")
    await asyncio.sleep(0.01)
    assert harness.bfd.handles == []
    assert harness.runtime.status().route_servers[0].peers[0].bfd is None


async def test_ecmp_installs_the_equal_cost_set_up_to_max_paths(harness: Harness) -> None:
    state = desired(
        [server(**ALLOW, routeSelection={"mode": "ECMP", "maxPaths": 2})],
        [
            peer(n, a, liveness="BGPKeepalive")
            for n, a in (("a", "10.0.0.2"), ("b", "10.0.0.3"), ("c", "10.0.0.4"))
        ],
        [association("t")],
    )
    await harness.runtime.apply(state)
    for name in ("a", "b", "c"):
        harness.speaker.establish(name)
        harness.speaker.announce(name, "203.0.113.10/32")
    await harness.settle()
    hops = harness.table().routes[VIP]
    assert len(hops) == 2 and set(hops) <= {A, B, C}


async def test_selection_change_recomputes_the_fib_without_touching_sessions(harness: Harness) -> None:
    peers = [peer(n, a, liveness="BGPKeepalive") for n, a in (("a", "10.0.0.2"), ("b", "10.0.0.3"))]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    speaker = harness.speaker
    for name in ("a", "b"):
        speaker.establish(name)
        speaker.announce(name, "203.0.113.10/32")
    await harness.settle()
    assert len(harness.table().routes[VIP]) == 1
    calls = list(speaker.calls)
    ecmp = desired(
        [server(**ALLOW, routeSelection={"mode": "ECMP", "maxPaths": 4})], peers, [association("t")]
    )
    await harness.runtime.apply(ecmp)
    await harness.settle()
    assert set(harness.table().routes[VIP]) == {A, B}
    assert harness.speakers.made == [speaker]  # the same speaker
    assert speaker.calls[len(calls) :] == [("selection", 4)]  # no peer was added, updated or removed


async def test_reconcile_touches_only_what_changed(harness: Harness) -> None:
    base = [peer("a", "10.0.0.2"), peer("b", "10.0.0.3"), peer("c", "10.0.0.4")]
    await harness.runtime.apply(desired([server(**ALLOW)], base, [association("t")]))
    speaker = harness.speaker
    speaker.calls.clear()
    changed = [peer("a", "10.0.0.2"), peer("b", "10.0.0.3", port=1179), peer("d", "10.0.0.5")]
    await harness.runtime.apply(desired([server(**ALLOW)], changed, [association("t")]))
    # remove -> update -> create; "a" is not touched.
    assert speaker.calls == [("remove", "c"), ("update", "b"), ("add", "d")]
    assert harness.speakers.made == [speaker]
    assert sorted(harness.runtime.route_server("vip").peers) == ["a", "b", "d"]


async def test_speaker_identity_change_restarts_the_speaker(harness: Harness) -> None:
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    old = harness.speaker
    old.establish("a")
    old.announce("a", "203.0.113.10/32")
    await harness.settle()
    await harness.runtime.apply(desired([server(**ALLOW, routerID="10.9.9.9")], peers, [association("t")]))
    await harness.settle()
    assert old.stopped and harness.speaker is not old
    assert harness.speaker.settings.router_id == ip_address("10.9.9.9")
    assert [c[1] for c in harness.speaker.calls if c[0] == "add"] == ["a"]
    assert harness.table().routes == {}  # the old sessions' routes left with them
    assert harness.writers.writers["t"] is harness.table()  # the table was kept


async def test_table_prefix_filter_and_filter_change(harness: Harness) -> None:
    only_vip = [{"prefix": "203.0.113.10/32"}]
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t", prefixFilter=only_vip)]))
    speaker = harness.speaker
    speaker.establish("a")
    speaker.announce("a", "203.0.113.10/32")
    speaker.announce("a", "203.0.113.20/32")
    await harness.settle()
    writer = harness.table()
    assert writer.routes == {VIP: (A,)}
    # What the writer follows when it repairs (no copy of its own): the FIB through the filter.
    wanted = writer.wanted
    assert wanted is harness.runtime.route_server("vip").tables["t"]
    assert (wanted.get(VIP), wanted.get(SVC), dict(wanted.snapshot())) == ((A,), None, {VIP: (A,)})
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))  # filter removed
    await harness.settle()
    assert writer.routes == {VIP: (A,), SVC: (A,)}
    assert harness.writers.writers["t"] is writer  # same target: same writer, resynchronised


async def test_table_target_change_withdraws_from_the_old_table(harness: Harness) -> None:
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    await harness.settle()
    old = harness.table()
    moved = association("t", target={"node": {"table": 101}})
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [moved]))
    await harness.settle()
    assert old.withdrawn == 1 and old.closed
    assert harness.table() is not old and harness.table().routes == {VIP: (A,)}


async def test_persist_holds_routes_while_every_session_is_down(harness: Harness) -> None:
    state = desired(
        [server(**ALLOW, persistRoutes={"enabled": True, "durationSeconds": 60})],
        [peer("a", "10.0.0.2", liveness="BGPKeepalive")],
        [association("t")],
    )
    await harness.runtime.apply(state)
    speaker = harness.speaker
    speaker.establish("a")
    speaker.announce("a", "203.0.113.10/32")
    await harness.settle()
    speaker._down("a", TransitionReason.HOLD_TIMER_EXPIRED)
    await harness.settle()
    rs = harness.runtime.route_server("vip")
    assert rs.fib.state is PersistState.HOLDING
    assert harness.table().routes == {VIP: (A,)}  # held, not withdrawn
    status = harness.runtime.status().route_servers[0]
    assert (status.persist.state, status.persist.persisted_routes) == ("Holding", 1)
    # Back: the window starts and its timer is armed.
    speaker.establish("a")
    assert rs.fib.state.value == "Recovering" and rs._persist_timer is not None


async def test_stop_withdraws_routes_unless_persist_is_enabled() -> None:
    for persist, withdrawn in ((False, 1), (True, 0)):
        h = Harness()
        await h.runtime.start()
        state = desired(
            [server(**ALLOW, persistRoutes={"enabled": persist})],
            [peer("a", "10.0.0.2", liveness="BGPKeepalive")],
            [association("t")],
        )
        await h.runtime.apply(state)
        h.speaker.establish("a")
        h.speaker.announce("a", "203.0.113.10/32")
        await h.settle()
        await h.runtime.stop()
        writer = h.table()
        assert writer.withdrawn == withdrawn
        assert writer.closed
        assert h.speaker.stopped
        assert (writer.routes == {VIP: (A,)}) is persist


async def test_adopted_routes_are_kept_for_the_persist_window_after_a_restart(harness: Harness) -> None:
    harness.writers.preload["t"] = {VIP: (A,)}
    state = desired(
        [server(**ALLOW, persistRoutes={"enabled": True, "durationSeconds": 120})],
        [peer("a", "10.0.0.2", liveness="BGPKeepalive")],
        [association("t")],
    )
    await harness.runtime.apply(state)
    table = harness.runtime.route_server("vip").tables["t"]
    await until(lambda: table.writer is not None)
    loop = asyncio.get_running_loop()
    assert table._resync_at is not None and table._resync_at - loop.time() > 100
    assert harness.table().resyncs == [] and harness.table().routes == {VIP: (A,)}


async def test_without_persist_leftover_routes_are_removed_at_start(harness: Harness) -> None:
    harness.writers.preload["t"] = {VIP: (A,)}
    await harness.runtime.apply(desired([server(**ALLOW)], [], [association("t")]))
    await harness.settle()
    assert harness.table().resyncs == [{}] and harness.table().routes == {}


async def test_write_failure_is_reported_and_recovered_by_resync(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry_module, "RETRY_MIN", 0.01)
    await harness.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], [association("t")]))
    await harness.settle()
    writer = harness.table()
    writer.fail = 1
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    table = harness.runtime.route_server("vip").tables["t"]
    await until(lambda: table.last_error is not None)
    assert not harness.runtime.healthy()
    assert "No buffer space" in (table.last_error or "")
    await until(lambda: writer.routes == {VIP: (A,)})  # the resync after the backoff
    assert table.last_error is None and harness.runtime.healthy()
    assert harness.runtime.metrics.table_write_errors.labels("vip", "t")._value.get() == 1


async def test_rejected_routes_are_listed_per_table(harness: Harness) -> None:
    await harness.runtime.apply(
        desired([server(**ALLOW)], [peer("a", "10.0.0.2", liveness="BGPKeepalive")], [association("t")])
    )
    await harness.settle()
    harness.table().unreachable.add(A)
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    await harness.settle()
    view = harness.runtime.status().route_servers[0].tables[0]
    assert view.routes_rejected == 1 and view.rejected_by_reason == {"UnreachableNextHop": 1}
    assert view.rejected[0].prefix == "203.0.113.10/32"
    assert not view.in_sync


async def test_speaker_that_cannot_listen_is_unhealthy_and_retried(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route_server_module, "SPEAKER_RETRY", 0.0)
    harness.speakers.fail_next = True
    await harness.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], []))
    rs = harness.runtime.route_server("vip")
    assert rs.speaker is None and rs.error is not None and "Address already in use" in rs.error
    assert not harness.runtime.healthy()
    await harness.runtime.observe_once()
    assert rs.speaker is harness.speakers.last and rs.error is None
    assert [c for c in rs.speaker.calls if c[0] == "add"] == [("add", "a")]
    assert harness.runtime.healthy()


async def test_removing_a_route_server_withdraws_and_stops_it(harness: Harness) -> None:
    await harness.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], [association("t")]))
    await harness.settle()
    speaker, writer = harness.speaker, harness.table()
    await harness.runtime.apply(desired([], [], []))
    assert harness.runtime.route_servers == {}
    assert speaker.stopped and writer.withdrawn == 1 and writer.closed


async def test_removing_a_peer_releases_its_bfd_session(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    handle = harness.bfd.live("10.0.0.2")[0]
    state = desired(
        [server(**ALLOW)], [peer("fw-b", "10.0.0.3", localAddress="10.0.0.1")], [association("t")]
    )
    await harness.runtime.apply(state)
    await until(lambda: handle.released)


async def test_changed_bfd_settings_replace_the_bfd_session(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    first = harness.bfd.live("10.0.0.2")[0]
    faster = desired(
        [server(**ALLOW)],
        [
            peer("fw-a", "10.0.0.2", localAddress="10.0.0.1", bfd={"minTxIntervalMilliseconds": 50}),
            peer("fw-b", "10.0.0.3", localAddress="10.0.0.1"),
        ],
        [association("t")],
    )
    await harness.runtime.apply(faster)
    await until(lambda: first.released and len(harness.bfd.live("10.0.0.2")) == 1)
    assert harness.bfd.live("10.0.0.2")[0].profile.min_tx_us == 50_000
    assert ("update", "fw-a") not in harness.speaker.calls  # BGP settings did not change


async def test_status_json_metrics_and_rendering(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.announce("fw-a", "203.0.113.10/32")
    await harness.settle()
    status = harness.runtime.status()
    data = json.loads(json.dumps(to_json(status)))
    (rs,) = data["route_servers"]
    assert rs["name"] == "vip" and rs["asn"] == 64512 and rs["fib_routes"] == 1
    assert rs["fib"] == [{"prefix": "203.0.113.10/32", "nexthops": ["10.0.0.2"]}]
    assert {p["name"]: p["bgp_state"] for p in rs["peers"]} == {"fw-a": "Established", "fw-b": "Idle"}
    assert rs["tables"][0]["installed"] == [{"prefix": "203.0.113.10/32", "nexthops": ["10.0.0.2"]}]
    assert rs["tables"][0]["in_sync"] is True
    text = render(data)
    assert "fw-a" in text and "Established" in text and "203.0.113.10/32" in text
    exposition = harness.runtime.metrics.exposition().decode()
    assert 'routeserver_bgp_session_up{peer="fw-a",route_server="vip"} 1.0' in exposition
    assert 'routeserver_bgp_session_state{peer="fw-b",route_server="vip",state="Idle"} 1.0' in exposition
    assert 'routeserver_table_routes_installed{route_server="vip",table="t"} 1.0' in exposition
    assert (
        'routeserver_bgp_session_transitions_total{peer="fw-a",reason="KeepaliveReceived",'
        'route_server="vip",state="Established"} 1.0'
    ) in exposition


async def test_removed_peers_leave_no_metric_series(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await harness.runtime.apply(
        desired([server(**ALLOW)], [peer("fw-b", "10.0.0.3", localAddress="10.0.0.1")], [association("t")])
    )
    assert 'peer="fw-a"' not in harness.runtime.metrics.exposition().decode()


async def test_periodic_resync_rewrites_the_table() -> None:
    h = Harness()
    h.runtime.resync_interval = 0.01
    await h.runtime.start()
    await h.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], [association("t")]))
    await h.settle()
    await until(lambda: len(h.table().resyncs) >= 3)
    drift = prefix_key(ip_network("203.0.113.99/32"))
    h.table().routes[drift] = (A,)  # drift: a route we own but do not want
    await until(lambda: drift not in h.table().routes)
    await h.runtime.stop()


async def test_a_slow_resync_spaces_the_next_ones_by_twenty_times_its_duration() -> None:
    h = Harness()
    h.runtime.resync_interval = 0.01
    await h.runtime.start()
    await h.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], [association("t")]))
    await h.settle()
    writer = h.table()
    writer.resync_seconds = 0.05  # a big table: each full pass takes 50 ms
    await until(lambda: len(writer.resyncs) >= 2)
    count = len(writer.resyncs)
    await asyncio.sleep(0.5)  # at a 10 ms interval that would be dozens more; 20 x 50 ms = 1 s apart
    assert len(writer.resyncs) <= count + 1
    await h.runtime.stop()


async def test_persist_window_end_removes_what_was_not_readvertised(harness: Harness) -> None:
    state = desired(
        [server(**ALLOW, persistRoutes={"enabled": True, "durationSeconds": 60})],
        [peer("a", "10.0.0.2", liveness="BGPKeepalive")],
        [association("t")],
    )
    await harness.runtime.apply(state)
    rs = harness.runtime.route_server("vip")
    rs.fib.persist = PersistConfig(enabled=True, duration_seconds=0)  # a window that ends at once
    speaker = harness.speaker
    speaker.establish("a")
    speaker.announce("a", "203.0.113.10/32")
    speaker.announce("a", "203.0.113.20/32")
    await harness.settle()
    speaker._down("a", TransitionReason.HOLD_TIMER_EXPIRED)
    await harness.settle()
    assert harness.table().routes == {VIP: (A,), SVC: (A,)}
    speaker.establish("a")
    speaker.announce("a", "203.0.113.10/32", next_hop="10.0.0.3")  # only the VIP comes back
    await until(lambda: rs.fib.state is PersistState.LIVE)
    await harness.settle()
    assert harness.table().routes == {VIP: (B,)}


async def test_max_prefix_and_refused_connections_are_counted(harness: Harness) -> None:
    await harness.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], []))
    harness.speaker.publish(PrefixLimit("a", MaxPrefixEvent.TEARDOWN, 11, 10))
    harness.speaker.publish(ConnectionRefused(ip_address("10.9.9.9"), 40000))
    metrics = harness.runtime.metrics
    assert metrics.max_prefix.labels("vip", "a", "teardown")._value.get() == 1
    assert metrics.connections_refused.labels("vip")._value.get() == 1
    assert harness.runtime.status().route_servers[0].connections_refused == 1


async def test_peer_held_idle_by_max_prefix_shows_in_status_and_metrics(harness: Harness) -> None:
    await harness.runtime.apply(
        desired([server(**ALLOW)], [peer("a", "10.0.0.2"), peer("b", "10.0.0.3")], [])
    )
    harness.speaker.held = {"a": ("MaxPrefixes", None), "b": ("MaxPrefixes", 1_700_000_300.0)}
    views = {p.name: p for p in harness.runtime.status().route_servers[0].peers}
    assert (views["a"].held_idle_reason, views["a"].held_idle_until) == ("MaxPrefixes", None)
    assert views["b"].held_idle_until == 1_700_000_300.0
    exposition = harness.runtime.metrics.exposition().decode()
    for name in ("a", "b"):
        line = (
            f'routeserver_bgp_session_held_idle{{peer="{name}",reason="MaxPrefixes",route_server="vip"}} 1.0'
        )
        assert line in exposition
    assert (
        'routeserver_bgp_session_held_idle_until_timestamp_seconds{peer="b",route_server="vip"} 1.7000003e+09'
        in (exposition)
    )
    assert 'held_idle_until_timestamp_seconds{peer="a"' not in exposition  # held until the spec changes


async def test_rejected_routes_are_logged_once_per_increase(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.runtime.apply(desired([server(**ALLOW)], [peer("a", "10.0.0.2")], []))
    caplog.set_level(logging.INFO, logger="controller.runtime")
    harness.speaker.rejected["a"] = {"NotAllowed": 2}
    await harness.runtime.observe_once()
    await harness.runtime.observe_once()  # nothing new
    harness.speaker.rejected["a"] = {"NotAllowed": 2, "BadNextHop": 1}
    await harness.runtime.observe_once()
    fields = [
        getattr(r, "fields", {}) for r in caplog.records if getattr(r, "event", "") == "routes_rejected"
    ]
    events = [(f["routes"], f["reasons"]) for f in fields]
    assert events == [(2, {"NotAllowed": 2}), (1, {"BadNextHop": 1})]


async def test_a_new_peer_address_replaces_the_bfd_session(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    old = harness.bfd.live("10.0.0.2")[0]
    moved = desired(
        [server(**ALLOW)],
        [
            peer("fw-a", "10.0.0.9", localAddress="10.0.0.1"),
            peer("fw-b", "10.0.0.3", localAddress="10.0.0.1"),
        ],
        [association("t")],
    )
    await harness.runtime.apply(moved)
    assert ("update", "fw-a") in harness.speaker.calls
    await until(lambda: old.released)
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.9")) == 1)


async def test_a_change_delivered_before_subscribe_returns_wins_over_the_snapshot(harness: Harness) -> None:
    harness.bfd.change_on_subscribe = StateChange(
        BfdState.DOWN, BfdState.UP, Diag.NO_DIAGNOSTIC, BfdReason.RECEIVED_INIT, 0.0
    )
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    peer_runtime = harness.runtime.route_server("vip").peers["fw-a"]
    await until(lambda: not peer_runtime.bfd_pending and peer_runtime.bfd_last is not None)
    await asyncio.sleep(0.01)
    assert peer_runtime.bfd_state is BfdState.UP  # not the stale Down snapshot


# -- persist grace and the restart deferral ------------------------------------------------------------


def persist_two_firewalls(**persist: object) -> DesiredState:
    return two_firewalls(persistRoutes={"enabled": True, "durationSeconds": 60, **persist})


async def test_a_session_going_down_first_keeps_its_prefixes_until_every_session_is_down(
    harness: Harness,
) -> None:
    await harness.runtime.apply(persist_two_firewalls())
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    speaker.announce("fw-a", "203.0.113.10/32")
    speaker.announce("fw-b", "203.0.113.20/32")
    await harness.settle()
    rs = harness.runtime.route_server("vip")
    speaker._down("fw-a", TransitionReason.BFD_DOWN)
    await harness.settle()
    assert harness.table().routes == {VIP: (A,), SVC: (B,)}  # in its grace
    assert rs._persist_timer is not None and rs.fib.state is PersistState.LIVE
    speaker._down("fw-b", TransitionReason.BFD_DOWN)
    await harness.settle()
    assert rs.fib.state.value == "Holding" and dict(rs.fib.persisted()) == {VIP: (A,), SVC: (B,)}
    assert harness.table().routes == {VIP: (A,), SVC: (B,)}


async def test_the_grace_ends_and_removes_the_prefix_while_another_session_is_up(harness: Harness) -> None:
    await harness.runtime.apply(persist_two_firewalls())
    rs = harness.runtime.route_server("vip")
    rs.fib.persist = PersistConfig(enabled=True, duration_seconds=60, grace_seconds=0.02)
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    speaker.announce("fw-a", "203.0.113.10/32")
    speaker.announce("fw-b", "203.0.113.20/32")
    await harness.settle()
    speaker._down("fw-a", TransitionReason.HOLD_TIMER_EXPIRED)
    await harness.settle()
    assert VIP in harness.table().routes
    await until(lambda: harness.table().routes == {SVC: (B,)})
    assert rs._persist_timer is None and rs.fib.state is PersistState.LIVE


async def test_a_withdrawal_by_update_is_not_held(harness: Harness) -> None:
    await harness.runtime.apply(persist_two_firewalls())
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    speaker.announce("fw-a", "203.0.113.10/32")
    await harness.settle()
    speaker.withdraw("fw-a", "203.0.113.10/32")
    await harness.settle()
    assert harness.table().routes == {}
    assert harness.runtime.route_server("vip")._persist_timer is None


async def test_the_grace_covers_two_detection_times_of_the_slowest_bfd_peer(harness: Harness) -> None:
    state = desired(
        [server(**ALLOW, persistRoutes={"enabled": True})],
        [
            peer("fast", "10.0.0.2"),
            peer("slow", "10.0.0.3", bfd={"minTxIntervalMilliseconds": 1000, "detectMultiplier": 5}),
        ],
        [association("t")],
    )
    await harness.runtime.apply(state)
    assert harness.runtime.route_server("vip").fib.persist.grace_seconds == 10.0  # 2 x 5 x 1 s
    await harness.runtime.apply(persist_two_firewalls())  # default BFD: 2 x 0.9 s < the 2 s floor
    assert harness.runtime.route_server("vip").fib.persist.grace_seconds == 2.0


async def adopted_start(harness: Harness, **deferral: float) -> tuple[FakeSpeaker, FakeWriter]:
    """A restart: table "t" holds VIP via A from the previous run; persist on; both firewalls configured."""
    if deferral:
        harness.runtime.restart_deferral = RestartDeferral(**deferral)
    harness.writers.preload["t"] = {VIP: (A,)}
    await harness.runtime.apply(persist_two_firewalls())
    table = harness.runtime.route_server("vip").tables["t"]
    await until(lambda: table.writer is not None)
    return harness.speaker, harness.table()


def announce_vip(speaker: FakeSpeaker) -> None:
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)  # the standby's table arrives first
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)


async def test_restart_defers_adopted_prefixes_until_every_peer_sent_end_of_rib(harness: Harness) -> None:
    speaker, writer = await adopted_start(harness)
    rs = harness.runtime.route_server("vip")
    assert rs.deferring
    speaker.establish("fw-b")
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)
    speaker.announce("fw-b", "203.0.113.20/32")  # not adopted: written at once
    await harness.settle()
    assert writer.routes == {VIP: (A,), SVC: (B,)}
    # A repair meanwhile keeps the adopted route as installed, not the FIB's (via B) yet.
    assert writer.wanted is not None
    assert (writer.wanted.get(VIP), writer.wanted.get(SVC)) == ((A,), (B,))
    assert dict(writer.wanted.snapshot()) == {VIP: (A,), SVC: (B,)}
    speaker.publish(EndOfRib("fw-b", IPV4_UNICAST))
    speaker.establish("fw-a")
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    await harness.settle()
    assert rs.deferring and rs.fib.entries()[VIP] == A_B
    speaker.publish(EndOfRib("fw-a", IPV4_UNICAST))
    assert not rs.deferring
    await harness.settle()
    assert writer.routes == {VIP: A_B, SVC: (B,)}
    vip_writes = [batch[VIP] for batch in writer.applies if VIP in batch]
    assert vip_writes == [A_B]  # one write, of the converged FIB: never via B


async def test_a_session_going_down_during_the_deferral_ends_it_at_once(harness: Harness) -> None:
    speaker, writer = await adopted_start(harness)
    rs = harness.runtime.route_server("vip")
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    announce_vip(speaker)
    await harness.settle()
    assert rs.deferring
    speaker._down("fw-a", TransitionReason.BFD_DOWN)  # the active one fails: fail over now
    assert not rs.deferring
    await harness.settle()
    assert writer.routes == {VIP: (B,)}


async def test_peers_not_established_after_the_establish_wait_are_not_awaited(harness: Harness) -> None:
    speaker, writer = await adopted_start(harness, max_seconds=30.0, establish_wait_seconds=0.02)
    rs = harness.runtime.route_server("vip")
    speaker.establish("fw-b")
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)
    speaker.publish(EndOfRib("fw-b", IPV4_UNICAST))
    await harness.settle()
    assert rs.deferring and writer.routes == {VIP: (A,)}
    await until(lambda: not rs.deferring)  # fw-a is not coming: B's converged table is written
    await harness.settle()
    assert writer.routes == {VIP: (B,)}


async def test_the_deferral_timer_bounds_a_peer_that_never_sends_end_of_rib(harness: Harness) -> None:
    speaker, writer = await adopted_start(harness, max_seconds=0.05, establish_wait_seconds=0.02)
    rs = harness.runtime.route_server("vip")
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    announce_vip(speaker)
    speaker.publish(EndOfRib("fw-b", IPV4_UNICAST))
    await harness.settle()
    assert rs.deferring
    await until(lambda: not rs.deferring)
    await harness.settle()
    assert writer.routes == {VIP: A_B}
    assert [batch[VIP] for batch in writer.applies if VIP in batch] == [A_B]


async def test_no_deferral_without_adopted_routes(harness: Harness) -> None:
    await harness.runtime.apply(persist_two_firewalls())
    rs = harness.runtime.route_server("vip")
    await until(lambda: rs.tables["t"].writer is not None)
    assert not rs.deferring
    harness.speaker.establish("fw-b")
    harness.speaker.announce("fw-b", "203.0.113.10/32")
    await harness.settle()
    assert harness.table().routes == {VIP: (B,)}


async def test_a_table_opening_before_the_peers_are_configured_does_not_end_the_deferral(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = FakeSpeaker.start

    async def slow_start(self: FakeSpeaker) -> None:
        await asyncio.sleep(0.01)  # the table task opens (and adopts) while the speaker starts
        await real_start(self)

    monkeypatch.setattr(FakeSpeaker, "start", slow_start)
    speaker, _ = await adopted_start(harness)
    assert harness.runtime.route_server("vip").deferring
    assert [c[1] for c in speaker.calls if c[0] == "add"] == ["fw-a", "fw-b"]


async def test_a_resync_during_the_deferral_keeps_adopted_routes_as_installed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry_module, "RETRY_MIN", 0.01)
    speaker, writer = await adopted_start(harness)
    rs = harness.runtime.route_server("vip")
    writer.fail = 1  # the next write fails: the table recovers with a full resync
    speaker.establish("fw-b")
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)
    speaker.announce("fw-b", "203.0.113.20/32")
    await until(lambda: len(writer.resyncs) == 1)
    assert writer.routes == {VIP: (A,), SVC: (B,)}  # the FIB says B for the VIP: not yet
    speaker.publish(EndOfRib("fw-b", IPV4_UNICAST))
    speaker.establish("fw-a")
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    speaker.publish(EndOfRib("fw-a", IPV4_UNICAST))
    assert not rs.deferring
    await harness.settle()
    assert writer.routes == {VIP: A_B, SVC: (B,)}
    assert [batch[VIP] for batch in writer.applies if VIP in batch] == [A_B]


# -- a restart without persistRoutes (a SIGTERM that kept the routes, or a crash) -------------------


async def test_without_persist_adopted_routes_are_held_through_the_deferral_then_stale_ones_go(
    harness: Harness,
) -> None:
    harness.writers.preload["t"] = {VIP: (A,), SVC: (A,)}  # the previous run's routes
    await harness.runtime.apply(two_firewalls())  # persistRoutes off (the default)
    rs = harness.runtime.route_server("vip")
    await until(lambda: rs.tables["t"].writer is not None)
    writer = harness.table()
    assert rs.deferring  # a restart never flaps a route, with persistRoutes off too
    speaker = harness.speaker
    speaker.establish("fw-b")
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)  # the standby's table first
    speaker.publish(EndOfRib("fw-b", IPV4_UNICAST))
    await harness.settle()
    assert writer.routes == {VIP: (A,), SVC: (A,)}  # held as installed
    speaker.establish("fw-a")
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    speaker.publish(EndOfRib("fw-a", IPV4_UNICAST))
    assert not rs.deferring
    # Converged: the VIP stays via A (never via B); SVC, which nobody announces now, is removed.
    await until(lambda: writer.routes == {VIP: A_B})
    written = [b[VIP] for b in writer.applies if VIP in b] + [r[VIP] for r in writer.resyncs if VIP in r]
    assert written and {tuple(hops) for hops in written} == {(A,)}


async def test_each_table_gets_its_own_pending_batch_and_the_last_keeps_the_fibs(harness: Harness) -> None:
    peers = [peer("fw-a", "10.0.0.2", localAddress="10.0.0.1")]
    tables = [association("t"), association("u", target={"node": {"table": 101}})]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, tables))
    await harness.settle()
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.announce("fw-a", "203.0.113.10/32")
    first, second = harness.runtime.route_servers["vip"].tables.values()
    assert first._pending == second._pending == {VIP: (A,)}
    assert first._pending is not second._pending  # handed over to one table only, copied for the other
    speaker.announce("fw-a", "203.0.113.20/32")  # into a batch already pending: merged, not replaced
    assert first._pending == second._pending == {VIP: (A,), SVC: (A,)}
    await harness.settle()
    assert harness.table("t").routes == harness.table("u").routes == {VIP: (A,), SVC: (A,)}
