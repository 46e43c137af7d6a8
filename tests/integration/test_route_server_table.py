"""Table ownership through `routeserver run`: foreign routes are left alone, our deleted routes return.

Topology: rs (table 100) with fw-a (FRR, AS 65001, 10.0.1.2) and fw-b (BIRD, AS 65002, 10.0.2.2),
BGP + BFD 100 ms x 3. Routes "added by hand" are `ip route ... table 100 proto static` inside rs:
another owner's routes in the very table the route server writes (DESIGN.md §7.8: we touch only
routes carrying our own protocol number).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.daemons.base import Route, RoutingDaemon
from tests.support.netns import Host, Lab
from tests.support.route_server import (
    PeerSpec,
    RouteServerProcess,
    ServerSpec,
    Spoke,
    appliance,
    route_details,
    star,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"
CONFLICT = "203.0.113.20/32"  # we want it; a foreign route already holds it at our metric
OTHER_METRIC = "203.0.113.21/32"  # we want it; a foreign route holds it at another metric
UNWANTED = "10.99.0.0/16"  # not ours at all
FOREIGN_REASON = "ConflictsWithForeignRoute"


@dataclass
class Setup:
    rs: Host
    a: Spoke
    b: Spoke
    server: RouteServerProcess
    fw_a: RoutingDaemon

    def ip(self, *args: str) -> None:
        self.rs.run("ip", *args)

    def routes_of(self, prefix: str) -> list[tuple[str, str | None, int]]:
        """(protocol, gateway, metric) of each route for the prefix in table 100."""
        return sorted(
            (str(r.get("protocol")), r.get("gateway"), int(r.get("metric", 0)))
            for r in route_details(self.rs, 100, prefix)
        )

    def rejected(self) -> dict[str, str]:
        return {r["prefix"]: r["reason"] for r in self.server.table()["rejected"]}


def _setup(lab: Lab, resync_interval: float, foreign: list[list[str]]) -> Iterator[Setup]:
    rs = lab.host("rs")
    a, b = star(rs, [lab.host("fw-a"), lab.host("fw-b")])
    for args in foreign:
        rs.run("ip", "route", "add", *args, "table", "100", "proto", "static")
    spec = ServerSpec((PeerSpec("fw-a", a.address, 65001), PeerSpec("fw-b", b.address, 65002)))
    server = RouteServerProcess(rs, spec, resync_interval=resync_interval)
    server.start()
    fw_a = appliance("frr", a, asn=65001, routes=[Route(VIP), Route(CONFLICT), Route(OTHER_METRIC)])
    fw_b = appliance("bird", b, asn=65002, routes=[Route(VIP, as_path_prepend=2)])
    fw_a.start()
    fw_b.start()
    try:
        yield Setup(rs, a, b, server, fw_a)
    finally:
        server.close()


@pytest.fixture
def foreign(lab: Lab) -> Iterator[Setup]:
    """Three foreign routes in table 100 before the route server starts; resync every second."""
    yield from _setup(
        lab,
        1.0,
        [
            [CONFLICT, "via", "10.0.2.2"],
            [OTHER_METRIC, "via", "10.0.2.2", "metric", "50"],
            [UNWANTED, "via", "10.0.1.2"],
        ],
    )


@pytest.fixture
def plain(lab: Lab) -> Iterator[Setup]:
    """No foreign routes; the periodic resync (30 s) far away, so repairs are the watcher's."""
    yield from _setup(lab, 30.0, [])


def test_foreign_routes_in_our_table_are_left_untouched_and_the_conflict_is_reported(foreign: Setup) -> None:
    s = foreign
    a, b = s.a.address, s.b.address
    s.server.wait_routes({VIP: {a}}, 40, "the VIP via fw-a")
    s.server.wait(lambda: CONFLICT in s.rejected(), 10, "the conflict reported in /status")
    ours = s.routes_of(VIP)[0][0]
    assert ours != "static"

    # Several resyncs later nothing foreign was touched; we hold OTHER_METRIC at our metric beside theirs.
    time.sleep(3)
    assert s.routes_of(CONFLICT) == [("static", b, 0)]
    assert s.routes_of(UNWANTED) == [("static", a, 0)]
    assert s.routes_of(OTHER_METRIC) == [(ours, a, 0), ("static", b, 50)]
    table = s.server.table()
    assert s.rejected() == {CONFLICT: FOREIGN_REASON}
    assert table["rejected_by_reason"] == {FOREIGN_REASON: 1}
    (rejection,) = table["rejected"]
    assert "do not own" in rejection["message"]
    assert table["routes_installed"] == 2 and table["routes_desired"] == 3 and not table["in_sync"]
    assert {r["prefix"] for r in table["installed"]} == {VIP, OTHER_METRIC}
    metrics = s.server.metrics()
    labels = f'reason="{FOREIGN_REASON}",route_server="vip",table="vip-table"'
    assert f"routeserver_table_routes_rejected{{{labels}}} 1.0" in metrics, [
        line for line in metrics.splitlines() if "rejected" in line
    ]

    # The owner removes its route: ours takes the prefix, the conflict clears.
    s.ip("route", "del", CONFLICT, "table", "100", "proto", "static")
    s.server.wait(lambda: s.routes_of(CONFLICT) == [(ours, a, 0)], 10, "our route for the freed prefix")
    s.server.wait(lambda: not s.rejected(), 10, "the conflict cleared from /status")
    s.server.wait(lambda: s.server.table()["in_sync"], 10, "the table in sync")

    # Someone replaces our VIP route with theirs: it is theirs now; we do not fight over it.
    s.ip("route", "replace", VIP, "via", b, "table", "100", "proto", "static")
    s.server.wait(lambda: s.rejected() == {VIP: FOREIGN_REASON}, 10, "the taken-over VIP reported")
    time.sleep(2.5)
    assert s.routes_of(VIP) == [("static", b, 0)]
    assert s.routes_of(UNWANTED) == [("static", a, 0)]


def test_routes_deleted_by_hand_are_restored_by_the_watcher(plain: Setup) -> None:
    s = plain
    a = s.a.address
    s.server.wait_routes({VIP: {a}, CONFLICT: {a}, OTHER_METRIC: {a}}, 40, "three routes via fw-a")
    s.server.wait(lambda: s.server.table()["in_sync"], 10, "the table in sync")
    (route,) = route_details(s.rs, 100, VIP)
    protocol = str(route["protocol"])

    # A route deleted by hand comes back (the periodic resync is 30 s away: this is the watcher).
    started = time.monotonic()
    s.ip("route", "del", VIP, "table", "100")
    s.server.wait(lambda: s.routes_of(VIP) == [(protocol, a, 0)], 5, "the deleted VIP restored")
    restored_after = time.monotonic() - started
    assert restored_after < 5

    # Its nexthop group deleted by hand (which takes every route using it along): all restored.
    (route,) = route_details(s.rs, 100, VIP)
    s.ip("nexthop", "del", "id", str(route["nhid"]))
    s.server.wait(
        lambda: all(s.routes_of(p) == [(protocol, a, 0)] for p in (VIP, CONFLICT, OTHER_METRIC)),
        5,
        "every route of the deleted group restored",
    )
    # A route changed by hand (pointed at the standby, still with our protocol) is set right.
    s.ip("route", "replace", VIP, "via", s.b.address, "table", "100", "proto", protocol)
    s.server.wait(lambda: s.routes_of(VIP) == [(protocol, a, 0)], 5, "the changed VIP set right")
    s.server.wait(lambda: s.server.table()["in_sync"], 10, "the table in sync again")
    assert s.server.peer("fw-a")["established_count"] == 1  # no session was disturbed
