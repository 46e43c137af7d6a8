"""The runtime's route path kept cheap: table status without per-route copies, the collector's threshold."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_address

import pytest

from bgp.api import RoutesChanged
from bgp.fsm.events import TransitionReason
from bgp.rib.path import Path
from bgp.types import PathAttributes
from controller.runtime import GC_YOUNG_THRESHOLD
from controller.runtime.route_server import BULK_REMOVAL
from tests.controller.builders import association, desired, peer, server
from tests.controller.test_runtime import ALLOW, SVC, VIP, A, Harness

B = ip_address("10.0.0.3")


@pytest.fixture
def gc_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.fixture
async def harness(gc_threshold: None) -> AsyncIterator[Harness]:
    h = Harness()
    await h.runtime.start()
    yield h
    await h.runtime.stop(keep_routes=True)


async def test_in_sync_compares_next_hops_not_only_counts(harness: Harness) -> None:
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    await harness.settle()
    writer = harness.table()
    assert writer.routes == {VIP: (A,)}
    assert harness.runtime.status().route_servers[0].tables[0].in_sync
    writer.routes[VIP] = (B,)  # changed behind our back: same count, other next hop
    view = harness.runtime.status(max_routes=0).route_servers[0].tables[0]
    assert (view.routes_desired, view.routes_installed) == (1, 1)
    assert not view.in_sync and view.installed == ()


async def test_routes_are_keyed_by_ints_and_share_one_next_hop_tuple(harness: Harness) -> None:
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    harness.speaker.announce("a", "203.0.113.20/32")
    await harness.settle()
    writer = harness.table()
    assert writer.routes == {VIP: (A,), SVC: (A,)}
    assert all(type(key) is int for key in writer.routes)  # the Loc-RIB's keys, no ipaddress objects
    # One tuple per next-hop set: the FIB and the table hold a pointer per route, not a tuple each.
    fib = harness.runtime.route_servers["vip"].fib_entries()
    assert writer.routes[VIP] is writer.routes[SVC] is fib[VIP] is fib[SVC]


async def test_in_sync_with_a_prefix_filter_counts_only_what_passes(harness: Harness) -> None:
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    only_vip = [{"prefix": "203.0.113.10/32"}]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t", prefixFilter=only_vip)]))
    harness.speaker.establish("a")
    harness.speaker.announce("a", "203.0.113.10/32")
    harness.speaker.announce("a", "203.0.113.20/32")
    await harness.settle()
    writer = harness.table()
    assert writer.routes == {VIP: (A,)}
    view = harness.runtime.status().route_servers[0].tables[0]
    assert view.routes_desired == 1 and view.in_sync
    writer.routes[SVC] = (A,)  # a route the filter keeps out
    assert not harness.runtime.status().route_servers[0].tables[0].in_sync


async def test_start_raises_the_young_generation_threshold(gc_threshold: None) -> None:
    gc.set_threshold(700, 10, 10)
    h = Harness()
    await h.runtime.start()
    try:
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    finally:
        await h.runtime.stop(keep_routes=True)


async def test_start_leaves_a_disabled_threshold_alone(gc_threshold: None) -> None:
    gc.set_threshold(0, 10, 10)
    h = Harness()
    await h.runtime.start()
    try:
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        await h.runtime.stop(keep_routes=True)


async def test_a_peer_going_down_with_a_large_table_is_removed_in_bulk(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # More prefixes than BULK_REMOVAL, all behind the one peer that goes down: the bulk path
    # (InstalledCounts.apply_removals, Fib.remove_many) must give what the per-prefix path gives.
    spec = {**ALLOW, "importPolicy": {"allowedPrefixes": [{"prefix": "10.0.0.0/8", "le": 32}]}}
    peers = [peer("a", "10.0.0.2", liveness="BGPKeepalive")]
    await harness.runtime.apply(desired([server(**spec)], peers, [association("t")]))
    speaker = harness.speaker
    speaker.establish("a")
    count = BULK_REMOVAL + 5
    info = speaker._info("a")
    path = Path(info, PathAttributes(next_hop=info.address))
    keys = [((0x0A400000 + i) << 8) | 32 for i in range(count)]
    speaker.publish(RoutesChanged("a", tuple(speaker.loc_rib.update_many(info, keys, path))))
    await harness.settle()
    assert len(harness.table().routes) == count
    rs = harness.runtime.route_servers["vip"]
    assert rs.installed.get("a") == count
    caplog.set_level(logging.INFO, logger="controller")

    speaker._down("a", TransitionReason.HOLD_TIMER_EXPIRED)
    await harness.settle()

    assert harness.table().routes == {} and rs.fib_entries() == {}
    assert rs.installed.get("a") == 0
    lost = [getattr(r, "fields", {}) for r in caplog.records if getattr(r, "event", "") == "routes_lost"]
    assert [(f["prefixes"], f["example"]) for f in lost] == [(count, "10.64.0.0/32")]
