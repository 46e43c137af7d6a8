"""NodeTableWriter.installed() and installed_route(): kept between scrapes, read afresh after every pass
and notification; one prefix read without building the mapping."""

from __future__ import annotations

import pytest

from controller.writers.netlink import NodeTableWriter
from tests.controller.writers.fake_kernel import FakeKernel
from tests.controller.writers.test_node_writer_plan import METRIC, TABLE, A, B, C, started, via, vips


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(reachable={A: 2, B: 3, C: 4})


async def test_installed_is_kept_until_a_pass_changes_the_table(kernel: FakeKernel) -> None:
    writer: NodeTableWriter = await started(kernel)
    prefixes = vips(3)
    await writer.apply(via(prefixes, A))
    first = writer.installed()
    assert dict(first) == dict.fromkeys(prefixes, (A,))
    assert writer.installed() is first  # nothing changed: no per-route copy
    with pytest.raises(TypeError):
        first[prefixes[0]] = (B,)  # type: ignore[index]  # read-only: it is shared by every caller

    await writer.apply({**via(prefixes[:1], B, C), prefixes[2]: None})
    assert dict(writer.installed()) == {prefixes[0]: (B, C), prefixes[1]: (A,)}
    assert dict(first) == dict.fromkeys(prefixes, (A,))  # an earlier answer is not changed under its reader


async def test_installed_follows_notifications(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(2)
    await writer.resync(via(prefixes, A))
    assert len(writer.installed()) == 2
    deleted = kernel.fib.pop((TABLE, prefixes[0], METRIC))  # deleted by hand
    writer._absorb([(False, deleted)])
    assert dict(writer.installed()) == {prefixes[1]: (A,)}


async def test_installed_route_reads_one_prefix_as_installed_does(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(3)
    await writer.apply({**via(prefixes[:1], B, C), **via(prefixes[1:2], A)})
    assert writer.installed_route(prefixes[0]) == (B, C)
    assert writer.installed_route(prefixes[1]) == (A,)
    assert writer.installed_route(prefixes[2]) is None  # not ours (not there at all)
    assert {p: writer.installed_route(p) for p in writer.installed()} == dict(writer.installed())


async def test_status_reads_count_list_and_compare_without_a_copy(kernel: FakeKernel) -> None:
    writer = await started(kernel)
    prefixes = vips(5)
    desired = via(prefixes, A)
    await writer.apply(desired)

    assert writer.installed_count() == 5
    assert writer.first_installed(2) == [(p, (A,)) for p in sorted(prefixes)[:2]]
    assert writer.first_installed(0) == []
    assert writer.matches(desired, version=1)
    assert writer._installed is None  # no mapping of every route was built, nor kept

    moved = {**desired, prefixes[3]: (B,)}  # the table wants a change the writer has not written yet
    assert not writer.matches(moved, version=2)
    assert not writer.matches({**desired, vips(6)[5]: (A,)}, version=3)  # one route more is wanted
    assert writer.matches(desired, version=1)  # another version: compared again, still in sync

    await writer.apply({prefixes[3]: (B,)})
    assert writer.matches(moved, version=2)  # the pass changed our routes: compared afresh
    deleted = kernel.fib.pop((TABLE, prefixes[0], METRIC))  # deleted by hand, and we are told
    writer._absorb([(False, deleted)])
    assert not writer.matches(moved, version=2)
