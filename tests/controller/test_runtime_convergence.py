"""Level-triggered convergence: failed peer and BFD requests are retried by themselves, with backoff.

A fault-injecting BFD service (tests/controller/fakes.py FakeBfd.failures) fails a request once, the
way bfd.service fails one (OSError from a socket bind, BfdServiceError from a stopped thread); BFD must
come up without any configuration change and without touching the BGP session.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from ipaddress import ip_address

import pytest

from bfd.codec import State as BfdState
from bfd.service import BfdServiceError
from bfd.session import TransitionReason as BfdReason
from controller.desired import SelectionSettings, SpeakerSettings
from controller.runtime import retry as retry_module
from controller.runtime import route_server as route_server_module
from controller.status import render, to_json
from tests.controller.builders import association, desired, peer, server
from tests.controller.fakes import FakeSpeaker
from tests.controller.test_runtime import ALLOW, Harness, harness, two_firewalls, until

__all__ = ["harness"]  # the shared fixture


@pytest.fixture
async def fast() -> AsyncIterator[Harness]:
    """A harness whose retries start at 20 ms (the production floor is 1 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retry_module, "RETRY_MIN", 0.02)
        h = Harness()
        await h.runtime.start()
        yield h
        await h.runtime.stop(keep_routes=True)


def _no_bgp_flap(h: Harness, name: str) -> None:
    speaker = h.speaker
    assert h.speaker.states[name].value == "Established"
    assert speaker.established_count[name] == 1
    assert not [c for c in speaker.calls if c[0] in ("peer_down", "update", "remove") and c[1] == name]


async def test_a_bfd_request_that_fails_once_is_retried_and_comes_up_without_a_bgp_flap(
    fast: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = fast
    caplog.set_level(logging.INFO, logger="controller.runtime")
    h.bfd.failures.append(OSError(errno.EADDRINUSE, "Address already in use"))
    await h.runtime.apply(two_firewalls())
    h.speaker.establish("fw-a")
    await until(lambda: any(getattr(r, "event", None) == "bfd_failed" for r in caplog.records))
    fw_a = next(p for p in h.runtime.status().route_servers[0].peers if p.name == "fw-a")
    assert fw_a.bfd is not None and fw_a.bfd.state == "Error"
    assert fw_a.bfd.error is not None and "Address already in use" in fw_a.bfd.error

    # No apply, no BGP event: the convergence loop asks again after the backoff.
    await until(lambda: len(h.bfd.subscribed("10.0.0.2")) == 1)
    assert h.bfd.requests == 2
    (handle,) = h.bfd.live("10.0.0.2")
    handle.emit(BfdState.DOWN, BfdState.UP, BfdReason.RECEIVED_INIT)
    await until(lambda: h.runtime.route_server("vip").peers["fw-a"].bfd_state is BfdState.UP)
    fw_a = next(p for p in h.runtime.status().route_servers[0].peers if p.name == "fw-a")
    assert fw_a.bfd is not None and fw_a.bfd.state == "Up" and fw_a.bfd.error is None
    _no_bgp_flap(h, "fw-a")
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.index("bfd_failed") < events.index("bfd_session_requested") < events.index("bfd_up")
    assert h.runtime.generation == 1  # one configuration, applied once


async def test_a_stopped_bfd_thread_is_retried_with_growing_backoff(fast: Harness) -> None:
    h = fast
    h.bfd.failures += [BfdServiceError("BFD service is not running")] * 3
    await h.runtime.apply(two_firewalls())
    h.speaker.establish("fw-a", local="10.0.0.1")
    await until(lambda: len(h.bfd.subscribed("10.0.0.2")) == 1, limit=5.0)
    peer_runtime = h.runtime.route_server("vip").peers["fw-a"]
    assert h.bfd.requests == 4 and peer_runtime.bfd_error is None
    assert peer_runtime.bfd_backoff.failures == 0  # reset by the success
    _no_bgp_flap(h, "fw-a")


async def test_backoff_doubles_up_to_the_maximum() -> None:
    backoff = retry_module.Backoff()
    waits = [backoff.failed(0.0) for _ in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.due(29.9) is False and backoff.due(30.0) is True
    backoff.succeeded()
    assert backoff.deadline() is None and backoff.failed(5.0) == 1.0


async def test_a_bfd_session_the_service_closed_is_requested_again(fast: Harness) -> None:
    h = fast
    await h.runtime.apply(two_firewalls())
    h.speaker.establish("fw-a")
    await until(lambda: len(h.bfd.subscribed("10.0.0.2")) == 1)
    first = h.bfd.live("10.0.0.2")[0]
    first.close_by_service()
    await until(lambda: len(h.bfd.subscribed("10.0.0.2")) == 1 and h.bfd.live("10.0.0.2")[0] is not first)
    _no_bgp_flap(h, "fw-a")


async def test_bfd_runs_from_the_local_address_of_the_established_event(harness: Harness) -> None:
    state = desired([server(**ALLOW)], [peer("fw", "10.0.0.2")], [association("t")])
    await harness.runtime.apply(state)
    harness.speaker.establish("fw", local="10.0.0.9")
    # Requested in the Established callback itself: no call_soon, no second look at the connection.
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    assert harness.bfd.live("10.0.0.2")[0].local == ip_address("10.0.0.9")


async def test_a_peer_the_speaker_refused_is_shown_and_added_later_by_itself(fast: Harness) -> None:
    h = fast
    state = two_firewalls()
    rs_speaker_failures = [ValueError("a peer with address 10.0.0.2 is already configured")]

    # The failure is injected into the speaker the route server is about to make.
    original = h.speakers.__call__

    def make(settings: SpeakerSettings, selection: SelectionSettings) -> FakeSpeaker:
        speaker = original(settings, selection)
        speaker.add_failures.extend(rs_speaker_failures)
        return speaker

    h.runtime.speaker_factory = make
    await h.runtime.apply(state)
    rs = h.runtime.route_server("vip")
    view = {p.name: p for p in h.runtime.status().route_servers[0].peers}
    assert view["fw-a"].config_error == "a peer with address 10.0.0.2 is already configured"
    assert "fw-a" not in h.speaker.peers and "fw-b" in h.speaker.peers
    await until(lambda: "fw-a" in h.speaker.peers)
    assert rs.peers["fw-a"].error is None
    assert [c for c in h.speaker.calls if c == ("add", "fw-a")] == [("add", "fw-a")] * 2
    assert h.runtime.generation == 1


async def test_an_unchanged_configuration_still_runs_the_convergence_pass(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route_server_module, "CONVERGE_INTERVAL", 3600.0)
    monkeypatch.setattr(retry_module, "RETRY_MIN", 3600.0)
    state = two_firewalls()
    original = harness.speakers.__call__

    def make(settings: SpeakerSettings, selection: SelectionSettings) -> FakeSpeaker:
        speaker = original(settings, selection)
        speaker.add_failures.append(ValueError("refused"))
        return speaker

    harness.runtime.speaker_factory = make
    await harness.runtime.apply(state)
    rs = harness.runtime.route_server("vip")
    assert "fw-a" not in harness.speaker.peers
    rs.peers["fw-a"].backoff.at = 0.0  # its backoff has passed (the loop itself waits an hour here)
    await harness.runtime.apply(state)  # the same configuration again (a reload, a resync of a source)
    assert "fw-a" in harness.speaker.peers and rs.peers["fw-a"].error is None


async def test_a_peer_the_speaker_lost_is_configured_again(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    del harness.speaker.peers["fw-b"]  # drift: the speaker no longer holds it
    await harness.runtime.route_server("vip").converge()
    assert "fw-b" in harness.speaker.peers
    assert [c for c in harness.speaker.calls if c == ("add", "fw-b")] == [("add", "fw-b")] * 2


async def test_unchanged_peers_are_not_touched_by_convergence_passes(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    harness.speaker.establish("fw-a")
    await until(lambda: len(harness.bfd.subscribed("10.0.0.2")) == 1)
    calls = list(harness.speaker.calls)
    rs = harness.runtime.route_server("vip")
    for _ in range(3):
        await rs.converge()
        await harness.runtime.apply(two_firewalls())
    await asyncio.sleep(0.01)
    assert harness.speaker.calls == calls
    assert len(harness.bfd.handles) == 1 and not harness.bfd.handles[0].released


async def test_errors_still_being_retried_are_rendered_in_routeserver_status(fast: Harness) -> None:
    h = fast
    h.bfd.failures.append(OSError(errno.EADDRINUSE, "Address already in use"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retry_module, "RETRY_MIN", 60.0)
        await h.runtime.apply(two_firewalls())
        h.speaker.establish("fw-a")
        await until(lambda: h.runtime.route_server("vip").peers["fw-a"].bfd_error is not None)
    text = render(to_json(h.runtime.status()))
    assert "peer fw-a: BFD: OSError: [Errno 98] Address already in use (retry in" in text
