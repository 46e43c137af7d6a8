"""The /routes page builder (controller/runtime/routes.py) over a runtime with a fake speaker and writers.

Paths, best path and decision step, FIB, per-table state, paging by `after` across inserts and
deletes, the prefix filter, limit bounds, the index rebuilt in the background for a large table,
and `/routes` plus `routeserver routes` over HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

import pytest

from bgp.fsm.events import TransitionReason
from bgp.rib.adj_rib_in import AdjRibIn
from bgp.rib.path import PeerInfo
from bgp.rib.policy import ImportPolicy
from bgp.types import IPV4_UNICAST, PathAttributes, prefix_key
from controller import cli
from controller.admin import admin_server
from controller.metrics import Metrics
from controller.runtime import routes as routes_module
from controller.runtime.routes import MAX_LIMIT, RoutesQuery, key_range
from controller.status import AgentStatus, ConfigView
from tests.controller.builders import association, desired, peer, server
from tests.controller.test_runtime import ALLOW, Harness

VIP = "203.0.113.10/32"
A, B = "10.0.0.2", "10.0.0.3"


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.runtime.start()
    yield h
    await h.runtime.stop(keep_routes=True)


async def two_appliances(
    harness: Harness, server_spec: dict[str, Any] | None = None, **table_spec: Any
) -> None:
    peers = [
        peer("fw-a", A, liveness="BGPKeepalive"),
        peer("fw-b", B, liveness="BGPKeepalive"),
    ]
    tables = [association("t"), association("t2", target={"node": {"table": 101}}, **table_spec)]
    await harness.runtime.apply(desired([server(**ALLOW, **(server_spec or {}))], peers, tables))
    await harness.settle()  # the tables' writers are open
    harness.speaker.establish("fw-a")
    harness.speaker.establish("fw-b")


async def page(harness: Harness, **params: str) -> dict[str, Any]:
    query = RoutesQuery.parse({"routeServer": "vip", **params})
    return (await harness.runtime.routes(query)).to_json()


async def test_a_route_lists_every_path_the_best_one_its_fib_and_table_state(harness: Harness) -> None:
    await two_appliances(harness)
    speaker = harness.speaker
    harness.table("t").unreachable.add(ip_address(A))  # t's writer refuses the route
    speaker.announce("fw-a", VIP, path_length=1)
    speaker.announce("fw-b", VIP, path_length=3)  # the standby prepends
    await harness.settle()

    result = await page(harness)
    assert result["routeServer"] == "vip" and result["total"] == 1 and result["next"] is None
    (route,) = result["routes"]
    assert route["prefix"] == VIP
    first, second = route["rib"]
    assert (first["peer"], first["best"], first["asPath"], first["nextHop"]) == (
        "fw-a",
        True,
        "65001",
        "10.0.0.2",
    )
    assert (second["peer"], second["best"], second["asPath"]) == ("fw-b", False, "65001 65001 65001")
    assert first["status"] == second["status"] == "Accepted" and first["origin"] == "INCOMPLETE"
    assert route["best"] == {"peers": ["fw-a"], "reason": "AsPathLength"}
    assert route["fib"] == {"nextHops": ["10.0.0.2"], "held": False}
    by_table = {t["table"]: t for t in route["tables"]}
    assert by_table["t"]["state"] == "Rejected" and by_table["t"]["reason"] == "UnreachableNextHop"
    assert by_table["t2"] == {"table": "t2", "state": "Installed", "nextHops": ["10.0.0.2"], "inSync": True}

    speaker.withdraw("fw-a", VIP)  # failover: the standby wins as the only path
    await harness.settle()
    (route,) = (await page(harness))["routes"]
    assert [p["peer"] for p in route["rib"]] == ["fw-b"] and route["rib"][0]["best"]
    assert route["best"] == {"peers": ["fw-b"], "reason": "OnlyPath"}
    assert {t["table"]: t["state"] for t in route["tables"]} == {"t": "Installed", "t2": "Installed"}


async def test_filtered_table_and_sampled_import_rejections(harness: Harness) -> None:
    await two_appliances(harness, prefixFilter=[{"prefix": "203.0.113.20/32"}])
    speaker = harness.speaker
    speaker.announce("fw-a", VIP)
    # fw-b's import policy rejected its path for the VIP: only the Adj-RIB-In's sample knows.
    info = PeerInfo("fw-b", ip_address("10.0.0.3"), 65001, IPv4Address("10.0.0.3"), 64512)
    adj = AdjRibIn(info, ImportPolicy())
    adj.announce(IPV4_UNICAST, [prefix_key(ip_network(VIP))], PathAttributes(next_hop=ip_address("10.0.0.3")))
    speaker.adj_rib_in = lambda peer_id: adj if peer_id == "fw-b" else None  # type: ignore[method-assign]
    await harness.settle()

    (route,) = (await page(harness))["routes"]
    accepted, rejected = route["rib"]
    assert accepted["peer"] == "fw-a" and accepted["best"]
    assert rejected == {
        "peer": "fw-b",
        "peerAddress": "10.0.0.3",
        "pathId": 0,
        "status": "Rejected",
        "reason": "FirstAsMismatch",  # an eBGP AS_PATH must start with the peer's AS
    }
    assert {t["table"]: t["state"] for t in route["tables"]} == {"t": "Installed", "t2": "Filtered"}


async def test_a_route_held_by_persist_routes_has_no_path_but_its_fib_entry(harness: Harness) -> None:
    await two_appliances(harness, {"persistRoutes": {"enabled": True, "durationSeconds": 60}})
    speaker = harness.speaker
    speaker.announce("fw-a", VIP)
    await harness.settle()
    for name in ("fw-a", "fw-b"):
        speaker._down(name, TransitionReason.HOLD_TIMER_EXPIRED)  # every session down: the FIB is held
    await harness.settle()
    (route,) = (await page(harness))["routes"]
    assert route["rib"] == [] and route["best"] == {"peers": [], "reason": None}
    assert route["fib"] == {"nextHops": [A], "held": True}
    assert {t["table"]: t["state"] for t in route["tables"]} == {"t": "Installed", "t2": "Installed"}


def prefixes_of(result: dict[str, Any]) -> list[str]:
    return [r["prefix"] for r in result["routes"]]


async def test_paging_by_after_is_stable_across_inserts_and_deletes(harness: Harness) -> None:
    await two_appliances(harness)
    speaker = harness.speaker
    names = [f"203.0.113.{i}/32" for i in range(0, 40, 2)]
    for name in names:
        speaker.announce("fw-a", name)
    first = await page(harness, limit="7")
    assert prefixes_of(first) == names[:7] and first["next"] == names[6] and first["total"] == 20
    # Between pages: one prefix before the cursor appears, one after it leaves, one after it appears.
    speaker.announce("fw-a", "203.0.113.1/32")
    speaker.withdraw("fw-a", names[10])
    speaker.announce("fw-a", "203.0.113.13/32")
    seen = prefixes_of(first)
    cursor = first["next"]
    while cursor is not None:
        result = await page(harness, limit="7", after=cursor)
        seen += prefixes_of(result)
        cursor = result["next"]
    expected_after = sorted(
        [*names[7:10], "203.0.113.13/32", *names[11:]], key=lambda p: int(ip_network(p).network_address)
    )
    assert seen == names[:7] + expected_after  # nothing twice, nothing that stayed is skipped
    # IPv4 sorts before IPv6, each in address order.
    speaker.announce("fw-a", "2001:db8::/64")
    last = await page(harness, after="203.0.113.38/32")
    assert prefixes_of(last) == ["2001:db8::/64"] and last["next"] is None


async def test_prefix_filter_returns_the_routes_within_it(harness: Harness) -> None:
    await two_appliances(harness)
    speaker = harness.speaker
    for name in ("203.0.113.0/24", "203.0.113.0/28", "203.0.113.0/30", "203.0.113.5/32", "203.0.113.16/32"):
        speaker.announce("fw-a", name)
    result = await page(harness, prefix="203.0.113.0/28")
    assert prefixes_of(result) == ["203.0.113.0/28", "203.0.113.0/30", "203.0.113.5/32"]
    assert result["total"] == 3
    paged = await page(harness, prefix="203.0.113.0/28", limit="1", after="203.0.113.0/28")
    assert prefixes_of(paged) == ["203.0.113.0/30"] and paged["next"] == "203.0.113.0/30"
    assert (await page(harness, prefix="198.51.100.0/24"))["routes"] == []


def test_key_range_holds_exactly_the_prefixes_within() -> None:
    low, high = key_range(ip_network("10.1.0.0/16"))
    inside = ["10.1.0.0/16", "10.1.0.0/32", "10.1.255.255/32", "10.1.128.0/17"]
    outside = ["10.0.0.0/8", "10.0.0.0/15", "10.2.0.0/16", "10.0.255.255/32", "2001:db8::/32"]
    assert all(low <= prefix_key(ip_network(p)) <= high for p in inside)
    assert not any(low <= prefix_key(ip_network(p)) <= high for p in outside)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "routeServer is required"),
        ({"routeServer": "vip", "limit": "0"}, "limit must be within"),
        ({"routeServer": "vip", "limit": str(MAX_LIMIT + 1)}, "limit must be within"),
        ({"routeServer": "vip", "limit": "many"}, "not a number"),
        ({"routeServer": "vip", "after": "nope"}, "after"),
        ({"routeServer": "vip", "prefix": "10.0.0.1/8"}, "host bits"),
    ],
)
def test_query_bounds(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutesQuery.parse(params)


def test_query_defaults() -> None:
    query = RoutesQuery.parse({"routeServer": "vip", "limit": str(MAX_LIMIT)})
    assert query.limit == MAX_LIMIT and query.after is None and query.within is None
    assert RoutesQuery.parse({"routeServer": "vip"}).limit == 500


async def test_a_large_stale_index_serves_while_it_is_rebuilt_in_the_background(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_module, "SYNC_KEYS", 2)
    monkeypatch.setattr(routes_module, "REBUILD_SECONDS", 0.0)
    monkeypatch.setattr(routes_module, "SORT_RUN", 2)  # several runs: the merge is exercised
    monkeypatch.setattr(routes_module, "MERGE_SLICE", 3)
    await two_appliances(harness)
    speaker = harness.speaker
    for i in (9, 3, 7, 1, 5):
        speaker.announce("fw-a", f"203.0.113.{i}/32")
    built = await page(harness)  # never built: awaited
    assert prefixes_of(built) == [f"203.0.113.{i}/32" for i in (1, 3, 5, 7, 9)]
    speaker.announce("fw-a", "203.0.113.4/32")
    speaker.withdraw("fw-a", "203.0.113.5/32")
    stale = await page(harness)  # the old index, the vanished prefix skipped; a rebuild starts
    assert prefixes_of(stale) == [f"203.0.113.{i}/32" for i in (1, 3, 7, 9)]
    rs = harness.runtime.route_server("vip")
    for _ in range(100):
        if rs.route_index.current(rs):
            break
        await asyncio.sleep(0)
    fresh = await page(harness)
    assert prefixes_of(fresh) == [f"203.0.113.{i}/32" for i in (1, 3, 4, 7, 9)] and fresh["total"] == 5


async def test_routes_over_http_and_the_routes_command(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    await two_appliances(harness)
    for i in range(5):
        harness.speaker.announce("fw-a", f"203.0.113.{i}/32")
    harness.speaker.announce("fw-b", "203.0.113.0/32", path_length=2)
    await harness.settle()

    def status() -> AgentStatus:
        return AgentStatus("n", "", 0.0, True, ConfigView())

    srv = admin_server(
        "127.0.0.1", 0, metrics=Metrics(), status=status, healthy=lambda: True, routes=harness.runtime.routes
    )
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /routes?routeServer=vip&limit=2&after=203.0.113.0/32 HTTP/1.1\r\n\r\n")
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head
        result = json.loads(body)
        assert (
            prefixes_of(result) == ["203.0.113.1/32", "203.0.113.2/32"] and result["next"] == "203.0.113.2/32"
        )

        for target, code in (
            (b"/routes?routeServer=nope", b"404"),
            (b"/routes?routeServer=vip&limit=0", b"400"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET " + target + b" HTTP/1.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 " + code)
            writer.close()

        address = f"127.0.0.1:{srv.port}"
        argv = ["routes", "--admin-address", address, "--route-server", "vip", "--all", "--page-size", "2"]
        assert await asyncio.to_thread(cli.main, argv) == 0
        out = capsys.readouterr().out
        rows = [line for line in out.splitlines() if line.startswith("203.0.113.")]
        assert [r.split()[0] for r in rows] == [f"203.0.113.{i}/32" for i in range(5)]
        assert "fw-a*" in rows[0] and "fw-b" in rows[0] and "t2=Installed" in rows[0]
        argv = ["routes", "--admin-address", address, "--route-server", "vip", "--prefix", "203.0.113.4/32"]
        assert await asyncio.to_thread(cli.main, argv) == 0
        out = capsys.readouterr().out
        assert [line.split()[0] for line in out.splitlines() if line.startswith("203.")] == ["203.0.113.4/32"]
        argv = ["routes", "--admin-address", address, "--route-server", "nope"]
        assert await asyncio.to_thread(cli.main, argv) == 1
        assert "no route server" in capsys.readouterr().err
    finally:
        await srv.close()
