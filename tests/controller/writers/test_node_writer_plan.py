"""NodeTableWriter planning and failure handling against an in-memory kernel (fake_kernel.py).

What a real kernel does is covered in tests/integration/test_node_writer.py; here the batches are
inspected message by message, and the kernel refuses on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from bgp.types import prefix_key
from controller.desired import Address, Backed, Hops, RouteKey
from controller.writers import rtnl
from controller.writers.base import RejectReason
from controller.writers.netlink import NodeTableWriter
from tests.controller.writers.fake_kernel import FakeKernel

TABLE = 100
METRIC = 50
A, B, C = IPv4Address("10.0.1.2"), IPv4Address("10.0.2.2"), IPv4Address("10.0.3.2")


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(reachable={A: 2, B: 3, C: 4})


async def started(
    kernel: FakeKernel, *, objects: bool = True, metric: int | None = METRIC
) -> NodeTableWriter:
    writer = NodeTableWriter(
        TABLE,
        metric=metric,
        use_nexthop_objects=objects,
        watch=False,
        channel=kernel,
    )
    await writer.start()
    return writer


def vips(count: int, first: str = "10.64.0.0") -> list[RouteKey]:
    base = int(IPv4Address(first))
    return [prefix_key(ip_network((base + i, 32))) for i in range(count)]


def via(prefixes: Iterable[RouteKey], *gateways: Address) -> dict[RouteKey, Hops]:
    return dict.fromkeys(prefixes, gateways)


@pytest.mark.parametrize("count", [1, 10, 5000])
async def test_failover_of_a_whole_group_is_three_messages_whatever_the_count(
    kernel: FakeKernel, count: int
) -> None:
    writer = await started(kernel)
    prefixes = vips(count)
    await writer.apply(via(prefixes, A))
    kernel.messages.clear()

    report = await writer.apply(via(prefixes, B))

    assert report.installed == count
    assert report.netlink_messages == 3
    assert kernel.messages == [rtnl.RTM_NEWNEXTHOP, rtnl.RTM_NEWNEXTHOP, rtnl.RTM_DELNEXTHOP]
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(B),)}
    assert set(writer.installed().values()) == {(B,)}


async def test_split_failover_rewrites_the_group_for_the_majority(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(1000)
    await writer.apply(via(prefixes, A))
    kernel.messages.clear()
    changes = via(prefixes[:900], B) | via(prefixes[900:], C)

    report = await writer.apply(changes)

    assert report.installed == 1000
    # hop B, group rewrite, hop C, group C, 100 route replaces; then hop A is collected.
    assert kernel.count(rtnl.RTM_NEWROUTE) == 100
    assert report.netlink_messages == 105
    assert {p: kernel.gateways(TABLE, p, METRIC) for p in prefixes} == {
        p: [str(B) if i < 900 else str(C)] for i, p in enumerate(prefixes)
    }


async def test_group_is_not_rewritten_while_some_of_its_routes_stay(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(10)
    await writer.apply(via(prefixes, A))
    kernel.messages.clear()

    report = await writer.apply(via(prefixes[:5], B))

    assert report.installed == 5
    assert kernel.count(rtnl.RTM_NEWROUTE) == 5
    assert [kernel.gateways(TABLE, p, METRIC) for p in prefixes] == [[str(B)]] * 5 + [[str(A)]] * 5


async def test_swapping_two_groups_in_one_apply(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    left, right = vips(5), vips(5, "10.65.0.0")
    await writer.apply(via(left, A) | via(right, B))
    kernel.messages.clear()

    report = await writer.apply(via(left, B) | via(right, A))

    assert report.netlink_messages == 2  # two group rewrites, nothing else
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in left} == {(str(B),)}
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in right} == {(str(A),)}
    # The hop sets are tracked right: a new prefix on A joins the group that now holds A.
    await writer.apply(via(vips(1, "10.66.0.0"), A))
    assert len({r.nh_id for r in kernel.fib.values()}) == 2


async def test_ecmp_member_leaving_rewrites_the_set(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(20)
    await writer.apply(via(prefixes, C, A, B))  # order does not matter: one canonical set
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(A), str(B), str(C))}
    kernel.messages.clear()

    report = await writer.apply(via(prefixes, B, C))

    assert report.netlink_messages == 2  # the rewrite, then hop A collected
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(B), str(C))}


async def test_kernel_refusing_a_nexthop_rejects_its_routes_and_installs_the_rest(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    kernel.refuse_hops.add(C)
    good, bad = vips(3), vips(2, "10.65.0.0")

    report = await writer.apply(via(good, A) | via(bad, C))

    assert report.installed == 3
    assert {r.prefix: r.reason for r in report.rejected} == dict.fromkeys(
        bad, RejectReason.UNREACHABLE_NEXT_HOP
    )
    assert all("Nexthop has invalid gateway" in r.message for r in report.rejected)
    assert set(writer.installed()) == set(good)
    assert {k[1] for k in kernel.fib} == set(good)

    kernel.refuse_hops.clear()  # the gateway becomes usable: the next pass installs them
    report = await writer.resync(via(good, A) | via(bad, C))
    assert report.installed == 2
    assert report.rejected == []
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in bad} == {(str(C),)}


async def test_kernel_refusing_a_group_rewrite_keeps_routes_where_they_were(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(4)
    await writer.apply(via(prefixes, A))
    group = next(iter(kernel.fib.values())).nh_id
    assert group is not None
    kernel.refuse_groups.add(group)

    report = await writer.apply(via(prefixes, B))

    assert report.installed == 0
    assert {r.reason for r in report.rejected} == {RejectReason.KERNEL_REFUSED}
    assert set(writer.installed().values()) == {(A,)}
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(A),)}


async def test_kernel_refusing_one_route_does_not_stop_the_others(kernel: FakeKernel) -> None:
    for objects in (True, False):
        kernel = FakeKernel(reachable={A: 2, B: 3})
        writer = await started(kernel, objects=objects)
        prefixes = vips(5)
        kernel.refuse_routes.add(prefixes[2])

        report = await writer.apply(via(prefixes, A))

        assert report.installed == 4
        assert [(r.prefix, r.reason) for r in report.rejected] == [(prefixes[2], RejectReason.KERNEL_REFUSED)]
        assert prefixes[2] not in writer.installed()


async def test_unreachable_gateway_is_rejected_before_anything_is_sent(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    lost = ip_address("10.99.0.1")
    await writer.apply(via(vips(1), A))
    kernel.messages.clear()

    report = await writer.apply(via(vips(1), lost) | via(vips(1, "10.65.0.0"), lost, B))

    # The first route loses its only next hop: removed, not left pointing at a dead one.
    assert [(r.prefix, r.reason) for r in report.rejected] == [
        (vips(1)[0], RejectReason.UNREACHABLE_NEXT_HOP)
    ]
    assert report.removed == 1
    assert kernel.gateways(TABLE, vips(1, "10.65.0.0")[0], METRIC) == [str(B)]


async def test_lost_error_reports_are_settled_by_reading_the_table_back(kernel: FakeKernel) -> None:
    writer = await started(kernel, objects=False)
    prefixes = vips(3)
    kernel.refuse_routes.add(prefixes[0])
    kernel.lose_errors = True

    report = await writer.apply(via(prefixes, A))

    assert report.installed == 2
    assert [(r.prefix, r.reason) for r in report.rejected] == [(prefixes[0], RejectReason.KERNEL_REFUSED)]
    assert set(writer.installed()) == set(prefixes[1:])


async def test_exclusive_create_over_an_unseen_foreign_route_reports_it(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefix = vips(1)[0]
    kernel.add_foreign(TABLE, prefix, METRIC, A)  # after start: the writer has not seen it

    report = await writer.apply(via([prefix], B))

    assert [(r.prefix, r.reason) for r in report.rejected] == [(prefix, RejectReason.FOREIGN_ROUTE)]
    assert kernel.fib[(TABLE, prefix, METRIC)].protocol == 3
    assert prefix in writer.foreign()
    assert (await writer.apply({prefix: None})).removed == 0  # and it is not ours to remove
    assert (TABLE, prefix, METRIC) in kernel.fib


async def test_restart_adopts_and_only_resync_removes_stale(kernel: FakeKernel) -> None:
    first = await started(kernel)
    prefixes = vips(10)
    await first.apply(via(prefixes, A))
    before = dict(kernel.fib)
    kernel.messages.clear()

    second = await started(kernel)
    assert set(second.installed()) == set(prefixes)
    assert (await second.apply(via(prefixes[:3], A))).netlink_messages == 0  # already right
    report = await second.resync(via(prefixes[:8], A))

    assert (report.installed, report.removed) == (0, 2)
    assert kernel.messages == [rtnl.RTM_DELROUTE, rtnl.RTM_DELROUTE]
    assert kernel.fib == {k: v for k, v in before.items() if k[1] in prefixes[:8]}


async def test_route_at_an_old_metric_is_kept_until_the_first_resync(kernel: FakeKernel) -> None:
    old = await started(kernel, metric=60)
    prefixes = vips(2)
    await old.apply(via(prefixes, A))

    writer = await started(kernel, metric=METRIC)  # the configured metric changed across a restart
    await writer.apply(via(vips(1, "10.65.0.0"), B))  # unrelated work collects nothing of the old
    assert {(k[1], k[2]) for k in kernel.fib} >= {(p, 60) for p in prefixes}
    assert all(r.nh_id in kernel.objects for r in kernel.fib.values())

    report = await writer.resync(via(prefixes, A) | via(vips(1, "10.65.0.0"), B))

    assert report.installed == 2
    assert report.removed == 2
    assert {(k[1], k[2]) for k in kernel.fib} == {(p, METRIC) for p in [*prefixes, *vips(1, "10.65.0.0")]}


async def test_missing_table_rejects_only_its_family(kernel: FakeKernel) -> None:
    kernel.tables.add((2, TABLE))  # IPv4 table exists; IPv6 does not
    writer = NodeTableWriter(
        TABLE,
        metric=METRIC,
        watch=False,
        require_table=True,
        channel=kernel,
    )
    await writer.start()
    v6 = prefix_key(ip_network("2001:db8:ff::1/128"))
    gateway6 = ip_address("2001:db8:1::2")
    kernel.reachable[gateway6] = 2

    report = await writer.apply(via(vips(2), A) | {v6: (gateway6,)})

    assert report.installed == 2
    assert [(r.prefix, r.reason) for r in report.rejected] == [(v6, RejectReason.TABLE_MISSING)]


async def test_withdraw_all_leaves_nothing_of_ours_and_everything_else(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    await writer.apply(via(vips(5), A) | via(vips(5, "10.65.0.0"), A, B))
    foreign = vips(1, "10.70.0.0")[0]
    kernel.add_foreign(TABLE, foreign, METRIC, A)

    report = await writer.withdraw_all()

    assert report.removed == 10
    assert list(kernel.fib) == [(TABLE, foreign, METRIC)]
    assert kernel.objects == {}


async def test_watcher_events_restore_ours_and_yield_to_theirs(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(3)
    await writer.resync(via(prefixes, A))
    deleted = kernel.fib.pop((TABLE, prefixes[0], METRIC))
    kernel.add_foreign(TABLE, prefixes[1], METRIC, B)  # `ip route replace`: ours is gone, theirs is there
    theirs = kernel.fib[(TABLE, prefixes[1], METRIC)]
    writer._events = [(False, deleted), (True, theirs)]

    report = await writer._repair(full=False)

    assert report is not None
    assert report.installed == 1
    assert [(r.prefix, r.reason) for r in report.rejected] == [(prefixes[1], RejectReason.FOREIGN_ROUTE)]
    assert kernel.gateways(TABLE, prefixes[0], METRIC) == [str(A)]
    assert kernel.fib[(TABLE, prefixes[1], METRIC)].protocol == 3

    # Their route goes away: the prefix is ours to program again.
    kernel.fib.pop((TABLE, prefixes[1], METRIC))
    writer._events = [(False, theirs)]
    report = await writer._repair(full=False)
    assert report is not None
    assert report.installed == 1
    assert kernel.gateways(TABLE, prefixes[1], METRIC) == [str(A)]


@pytest.mark.parametrize("count", [64, 5000])
async def test_withdrawing_every_route_of_a_group_deletes_the_group_in_one_message(
    kernel: FakeKernel, count: int
) -> None:
    writer = await started(kernel)
    leaving, staying = vips(count), vips(70, "10.66.0.0")
    await writer.apply(via(leaving, A) | via(staying, B))
    kernel.messages.clear()

    report = await writer.apply(dict.fromkeys(leaving))

    # One RTM_DELNEXTHOP for the group (the kernel drops its routes), then the unused hop object.
    assert report.removed == count and not report.rejected
    assert kernel.messages == [rtnl.RTM_DELNEXTHOP, rtnl.RTM_DELNEXTHOP]
    assert {p for (_table, p, _metric) in kernel.fib} == set(staying)
    assert set(writer.installed()) == set(staying)
    # The writer's picture matches the kernel's: a later route via A gets a fresh group.
    again = await writer.apply(via(leaving[:1], A))
    assert again.installed == 1 and kernel.gateways(TABLE, leaving[0], METRIC) == [str(A)]


async def test_a_group_that_keeps_a_route_is_not_deleted(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(100)
    await writer.apply(via(prefixes, A))
    kernel.messages.clear()

    report = await writer.apply(dict.fromkeys(prefixes[1:]))

    assert report.removed == 99
    assert kernel.messages == [rtnl.RTM_DELROUTE] * 99
    assert list(writer.installed()) == [prefixes[0]]


# 100: a group deleted inside a batch (_plan_flushes); 25,000: removing everything (_remove_everything).
@pytest.mark.parametrize("count", [100, 25_000])
async def test_a_refused_group_delete_keeps_its_routes_and_reports_them(
    kernel: FakeKernel, count: int
) -> None:
    writer = await started(kernel)
    prefixes = vips(count)
    await writer.apply(via(prefixes, A))
    kernel.refuse_nexthop_deletes = True

    report = await writer.apply(dict.fromkeys(prefixes))

    assert report.removed == 0 and len(report.rejected) == count
    assert {r.reason for r in report.rejected} == {RejectReason.KERNEL_REFUSED}
    assert set(writer.installed()) == set(prefixes) == {p for (_t, p, _m) in kernel.fib}


async def test_a_bulk_feed_is_written_in_chunks_with_one_group(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(45_000)  # three chunks of new routes (controller/writers/netlink.py _CHUNK)
    kernel.refuse_routes.add(prefixes[30_000])

    report = await writer.apply(via(prefixes, A))

    assert report.installed == 44_999 and [r.prefix for r in report.rejected] == [prefixes[30_000]]
    assert kernel.messages.count(rtnl.RTM_NEWNEXTHOP) == 2  # one hop object and one group, not per chunk
    assert len(writer.installed()) == 44_999 == len(kernel.fib)
    # A whole-group failover afterwards is still one rewrite (plus the refused route's new attempt).
    kernel.messages.clear()
    moved = await writer.apply(via(prefixes, B))
    assert moved.installed == 44_999 and moved.netlink_messages <= 5
    assert kernel.messages.count(rtnl.RTM_NEWROUTE) == 1


async def test_withdraw_all_deletes_groups_before_reading_the_table_back(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    await writer.apply(via(vips(500), A) | via(vips(500, "10.65.0.0"), B))
    kernel.messages.clear()

    report = await writer.withdraw_all()

    # Two group deletes remove the thousand routes; then the unused hop objects; no route delete.
    assert report.removed == 1000 and not report.rejected
    assert rtnl.RTM_DELROUTE not in kernel.messages
    assert kernel.fib == {} and kernel.objects == {}


async def test_removing_everything_deletes_each_group_and_nothing_per_route(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    on_a, on_ab = vips(15_000), vips(15_000, "10.65.0.0")
    await writer.apply(via(on_a, A) | via(on_ab, A, B))
    kernel.messages.clear()

    report = await writer.apply(dict.fromkeys(on_a + on_ab))

    assert report.removed == 30_000 and not report.rejected
    assert rtnl.RTM_DELROUTE not in kernel.messages and kernel.fib == {}
    assert writer.installed() == {} and kernel.objects == {}
    again = await writer.apply(via(on_a[:1], B))  # the writer's picture is the kernel's
    assert again.installed == 1 and kernel.gateways(TABLE, on_a[0], METRIC) == [str(B)]


async def test_a_resync_keeps_the_key_objects_and_restores_what_vanished(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(50)
    await writer.apply(via(prefixes, A))
    gone = prefixes[7]
    del kernel.fib[(TABLE, gone, METRIC)]  # removed behind our back, and we were not told

    report = await writer.resync(via(prefixes, A))

    assert report.installed == 1 and kernel.gateways(TABLE, gone, METRIC) == [str(A)]
    # The records are keyed by the objects we were given, not by the ints decoded from the dump.
    by_value = {key: key for key in writer._routes}
    assert all(by_value[p] is p for p in prefixes)


async def test_a_resync_keeps_a_record_whose_key_also_has_a_stale_route(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(3)
    await writer.apply(via(prefixes, A))
    twin = prefixes[0]  # ours at our metric, and (behind our back) ours at another metric too
    kernel.fib[(TABLE, twin, METRIC + 1)] = replace(kernel.fib[(TABLE, twin, METRIC)], metric=METRIC + 1)
    del kernel.fib[(TABLE, prefixes[2], METRIC)]  # and one route gone: the unconfirmed-records pass runs

    report = await writer.resync(via(prefixes, A))

    # The twin's record stands (no create over it, which the kernel would refuse as someone
    # else's); its stale copy is removed and the vanished route written again.
    assert not report.rejected and report.installed == 1
    assert {(p, m) for (_t, p, m) in kernel.fib} == {(p, METRIC) for p in prefixes}


class Owner:
    """What a following writer reads (controller/writers/base.py WantedRoutes): a plain FIB dict."""

    def __init__(self, routes: dict[RouteKey, Hops]) -> None:
        self.routes = routes

    def get(self, prefix: RouteKey) -> Hops | None:
        return self.routes.get(prefix)

    def snapshot(self) -> dict[RouteKey, Hops]:
        return dict(self.routes)


async def test_a_following_writer_keeps_no_copy_and_repairs_from_its_owner(kernel: FakeKernel) -> None:
    prefixes = vips(3)
    owner = Owner(via(prefixes, A))
    writer = await started(kernel)
    writer.follow(owner)
    await writer.resync(owner.routes)
    await writer.apply(via(vips(2, "10.65.0.0"), B))
    assert writer._desired == {}  # the owner has it all

    # The owner moved on (a change not yet applied); someone deletes our route: the repair writes
    # what the owner wants now. A route of ours the owner no longer wants goes.
    owner.routes[prefixes[0]] = (C,)
    del owner.routes[prefixes[1]]
    deleted = kernel.fib.pop((TABLE, prefixes[0], METRIC))
    kernel.add_foreign(TABLE, prefixes[1], METRIC, C)  # `ip route replace ... proto <ours>` by hand
    changed = kernel.fib[(TABLE, prefixes[1], METRIC)] = replace(
        kernel.fib[(TABLE, prefixes[1], METRIC)], protocol=writer.protocol
    )
    writer._events = [(False, deleted), (True, changed)]
    report = await writer._repair(full=False)
    assert report is not None
    assert kernel.gateways(TABLE, prefixes[0], METRIC) == [str(C)]
    assert (TABLE, prefixes[1], METRIC) not in kernel.fib

    # A full pass (lost notifications) takes the owner's whole snapshot: what it never wanted goes.
    report = await writer._repair(full=True)
    assert report is not None
    assert set(writer.installed()) == set(owner.routes)
    assert kernel.gateways(TABLE, prefixes[2], METRIC) == [str(A)]

    # withdraw_all stops following: nothing is wanted any more, whatever the owner still holds.
    await writer.withdraw_all()
    kernel.add_foreign(TABLE, prefixes[2], METRIC, B)
    theirs = kernel.fib.pop((TABLE, prefixes[2], METRIC))
    writer._events = [(False, theirs)]
    assert await writer._repair(full=False) is None
    assert kernel.fib == {}


def backed(
    prefixes: Iterable[RouteKey], hops: tuple[Address, ...], backup: tuple[Address, ...]
) -> dict[RouteKey, Hops]:
    return dict.fromkeys(prefixes, Backed(hops, backup))


async def test_fail_over_rewrites_each_group_to_its_backup_or_remaining_members(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    one, ecmp, alone = vips(50), vips(3, "10.65.0.0"), vips(2, "10.66.0.0")
    await writer.apply(backed(one, (A,), (C,)) | via(ecmp, A, B) | via(alone, A))
    kernel.messages.clear()

    report = writer.fail_over([A])  # no pass holds the socket: done now, in this call

    assert report is not None and report.netlink_messages == 2 and report.installed == 53
    assert kernel.messages == [rtnl.RTM_NEWNEXTHOP, rtnl.RTM_NEWNEXTHOP]  # two group rewrites, no route
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in one} == {(str(C),)}
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in ecmp} == {(str(B),)}
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in alone} == {(str(A),)}  # nowhere to go
    assert {writer.installed()[p] for p in one + ecmp} == {(C,), (B,)}
    # The RIB's changes confirm it: nothing left to send for the routes that moved.
    kernel.messages.clear()
    confirm = await writer.apply(via(one, C) | via(ecmp, B) | dict.fromkeys(alone))
    assert confirm.rejected == [] and rtnl.RTM_NEWROUTE not in kernel.messages


async def test_fail_over_while_a_pass_runs_is_queued_ahead_of_the_next(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(10)
    await writer.apply(backed(prefixes, (A,), (B,)))
    async with writer._lock:  # a pass in flight holds the socket
        assert writer.fail_over([A]) is None
        await asyncio.sleep(0)  # the queued fail-over now waits for the lock
        assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(A),)}
    # The next pass (the RIB's changes, here none) waits behind it: the lock is FIFO.
    kernel.messages.clear()
    await writer.apply({})
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(B),)}
    assert rtnl.RTM_NEWROUTE not in kernel.messages  # moved by the group rewrite alone


async def test_a_refused_fail_over_leaves_routes_for_the_rib_to_move(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(4)
    await writer.apply(backed(prefixes, (A,), (B,)))
    group = next(iter(kernel.fib.values())).nh_id
    assert group is not None
    kernel.refuse_groups.add(group)

    report = writer.fail_over([A])

    assert report is not None and report.installed == 0
    assert set(writer.installed().values()) == {Backed((A,), (B,))}
    kernel.refuse_groups.clear()
    moved = await writer.apply(via(prefixes, B))  # the RIB's changes still move them
    assert moved.installed == 4
    assert {tuple(kernel.gateways(TABLE, p, METRIC)) for p in prefixes} == {(str(B),)}


async def test_without_nexthop_objects_fail_over_leaves_it_to_the_rib(kernel: FakeKernel) -> None:
    writer = await started(kernel, objects=False)
    await writer.apply(backed(vips(3), (A,), (B,)))
    assert writer.fail_over([A]) is None


async def test_lost_error_reports_with_backed_hops_count_what_the_kernel_forwards(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(3)
    kernel.refuse_routes.add(prefixes[0])
    kernel.lose_errors = True

    report = await writer.apply(backed(prefixes, (A,), (B,)))  # read back: plain groups, no backup

    assert report.installed == 2
    assert [(r.prefix, r.reason) for r in report.rejected] == [(prefixes[0], RejectReason.KERNEL_REFUSED)]
