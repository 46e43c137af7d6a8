"""Restarting `routeserver run` does not flap the routes it installed.

Topology: rs (table 100) with fw-a (FRR, AS 65001, 10.0.1.2, active) and fw-b (BIRD, AS 65002,
10.0.2.2, standby: prepends), both advertising the VIP; BGP + BFD 100 ms x 3; persistRoutes
enabled (60 s). The route server is stopped (SIGTERM: persistRoutes leaves the routes in the
table; or SIGKILL: nothing is withdrawn at all) and started again with the same configuration. A
netlink monitor in rs (`ip -ts monitor route nexthop`) records the whole time: the VIP route must
never be deleted (no delete/re-add), and the nexthop object it points at is not deleted either.

Across the restart the appliances' sessions come back in whatever order they connect, and the
standby's table may arrive first (FRR sends its own about a second after Established). The restarted
route server defers the adopted prefixes until every peer has sent End-of-RIB, or until its deferral
timer (controller/runtime/deferral.py), so the VIP never visits the standby: the monitor
shows no notification for the VIP route nor for its nexthop object at all. Both with graceful restart
negotiated (End-of-RIB from both) and without (FRR then sends none: the timer ends the deferral).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.daemons.base import Route
from tests.support.netns import Lab
from tests.support.route_server import (
    PeerSpec,
    RouteMonitor,
    RouteServerProcess,
    ServerSpec,
    appliance,
    route_details,
    star,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.parametrize("graceful_restart", [True, False], ids=["gr", "no-gr"])
def test_restart_keeps_the_vip_route_without_delete_and_readd(
    lab: Lab, stop: str, graceful_restart: bool
) -> None:
    rs = lab.host("rs")
    a, b = star(rs, [lab.host("fw-a"), lab.host("fw-b")])
    peers = (
        PeerSpec("fw-a", a.address, 65001, graceful_restart=graceful_restart),
        PeerSpec("fw-b", b.address, 65002, graceful_restart=graceful_restart),
    )
    spec = ServerSpec(peers, persist_seconds=60)
    server = RouteServerProcess(rs, spec, resync_interval=2)
    server.start()
    try:
        appliance("frr", a, asn=65001, routes=[Route(VIP)]).start()
        appliance("bird", b, asn=65002, routes=[Route(VIP, as_path_prepend=2)]).start()
        server.wait_established(["fw-a", "fw-b"])
        server.wait_routes({VIP: {a.address}}, 40, "the VIP via the active appliance")
        server.wait(lambda: server.table()["in_sync"], 10, "the table in sync")
        (before,) = route_details(rs, 100, VIP)

        monitor = RouteMonitor(rs)
        monitor.start()
        stopped_at = time.time()
        if stop == "sigterm":
            assert server.terminate() == 0, server.log()
            assert "routes_kept=true" in server.log(), server.log()
        else:
            server.kill()
        assert server.routes() == {VIP: {a.address}}  # left in place

        server.start()
        server.wait_established(["fw-a", "fw-b"], 40)
        server.wait_routes({VIP: {a.address}}, 10, "the VIP via the active appliance after the restart")
        server.wait(
            lambda: "route_selection_deferral_ended" in server.log(tail=1_000_000),
            15,
            "the restart deferral ended",
        )
        # Adopted routes make the table "not in sync" until the first full resync, which persistRoutes
        # defers to the end of the window (stale adopted routes are removed only then).
        server.wait(
            lambda: server.table()["installed"] == server.route_server()["fib"], 10, "the FIB installed"
        )
        (after,) = route_details(rs, 100, VIP)
        time.sleep(2.5)  # a resync interval after the sessions returned
        monitor.stop()

        events = [e for e in monitor.events() if e.at >= stopped_at]
        # The VIP's next hop never changed: no notification for its route (no delete, no replace via
        # the standby and back) and none for the nexthop object it points at (no move of the object).
        assert monitor.route_events(VIP, 100) == [], (events, server.log())
        assert after["nhid"] == before["nhid"]  # the adopted route kept its nexthop object
        nexthop_events = [e for e in events if e.kind == "nexthop"]
        assert not [e for e in nexthop_events if e.text.split()[1] == str(before["nhid"])], events
        # With graceful restart every peer sends End-of-RIB. Without it FRR sends none (only to
        # GR-capable neighbours), so the deferral runs to its timer; the VIP stays put either way.
        (ended,) = [line for line in server.log(tail=1_000_000).splitlines() if "deferral_ended" in line]
        assert ("reason=Converged" if graceful_restart else "reason=TimerExpired") in ended, ended
        print(f"{stop}: notifications after the stop: {events}")
        assert server.route_server()["persist"]["state"] in ("Live", "Recovering")
    finally:
        server.close()


def test_sigterm_without_persist_withdraws_and_a_restart_installs_again(lab: Lab) -> None:
    """The contrast: without persistRoutes, SIGTERM withdraws (the documented behaviour)."""
    rs = lab.host("rs")
    (a,) = star(rs, [lab.host("fw-a")])
    server = RouteServerProcess(rs, ServerSpec((PeerSpec("fw-a", a.address, 65001),)))
    server.start()
    try:
        appliance("frr", a, asn=65001, routes=[Route(VIP)]).start()
        server.wait_routes({VIP: {a.address}}, 40, "the VIP installed")
        server.signal(signal.SIGTERM)
        assert server.proc is not None and server.proc.wait(timeout=20) == 0
        assert VIP not in server.routes()
        server.start()
        server.wait_routes({VIP: {a.address}}, 40, "the VIP installed again")
    finally:
        server.close()
