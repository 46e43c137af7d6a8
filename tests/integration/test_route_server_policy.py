"""Import policy through `routeserver run`: deny-by-default and max-prefix, visible in /status.

Topology: rs (table 100), no route-server-wide importPolicy, and three appliances:
- fw-a (FRR, AS 65001): its own allowedPrefixes 203.0.113.0/24 ge 32; advertises the VIP (allowed),
  203.0.113.0/24 and 198.51.100.0/24 (both not allowed);
- fw-b (BIRD, AS 65002): no allow-list at all, so nothing it sends is accepted (RFC 8212);
- fw-c (FRR, AS 65003): allowed 203.0.113.0/24 ge 32 but maxPrefixes 3 (Teardown); advertises
  five /32s, so the route server closes the session with Cease/Maximum Number of Prefixes Reached
  (6/1, RFC 4486).
/status must give the counts, the reasons and the recent rejected prefixes per peer; only the VIP
reaches the kernel table.
"""

from __future__ import annotations

import pytest

from tests.support.daemons.base import Route
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Lab
from tests.support.route_server import Allow, PeerSpec, RouteServerProcess, ServerSpec, appliance, star

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"
NOT_ALLOWED = ("203.0.113.0/24", "198.51.100.0/24")
FW_B_PREFIX = "203.0.113.30/32"
FW_C_PREFIXES = tuple(f"203.0.113.{40 + i}/32" for i in range(5))
HOSTS = Allow("203.0.113.0/24", 32, 32)


def test_deny_by_default_and_max_prefix_teardown_are_reported(lab: Lab) -> None:
    rs = lab.host("rs")
    a, b, c = star(rs, [lab.host("fw-a"), lab.host("fw-b"), lab.host("fw-c")])
    spec = ServerSpec(
        (
            PeerSpec("fw-a", a.address, 65001, allowed=(HOSTS,)),
            PeerSpec("fw-b", b.address, 65002),
            PeerSpec("fw-c", c.address, 65003, allowed=(HOSTS,), max_prefixes=3),
        ),
        allowed=None,
    )
    server = RouteServerProcess(rs, spec)
    server.start()
    try:
        appliance("frr", a, asn=65001, routes=[Route(VIP), *(Route(p) for p in NOT_ALLOWED)]).start()
        appliance("bird", b, asn=65002, routes=[Route(FW_B_PREFIX)]).start()
        fw_c = appliance("frr", c, asn=65003, routes=[Route(p) for p in FW_C_PREFIXES])
        assert isinstance(fw_c, FrrDaemon)
        fw_c.start()

        server.wait_established(["fw-a", "fw-b"])
        server.wait(
            lambda: (
                server.peer("fw-a")["prefixes_rejected"] == 2
                and server.peer("fw-b")["prefixes_rejected"] == 1
            ),
            20,
            "fw-a's and fw-b's rejections counted",
        )
        server.wait(
            lambda: server.peer("fw-c")["last_transition_reason"] == "MaxPrefixes", 20, "fw-c torn down"
        )

        peers = server.peers()
        fw_a = peers["fw-a"]
        assert fw_a["prefixes_received"] == 3 and fw_a["prefixes_accepted"] == 1
        assert fw_a["rejected_by_reason"] == {"NotAllowed": 2}
        assert {(r["prefix"], r["reason"]) for r in fw_a["recent_rejections"]} == {
            (p, "NotAllowed") for p in NOT_ALLOWED
        }
        fw_b = peers["fw-b"]
        assert fw_b["prefixes_accepted"] == 0 and fw_b["rejected_by_reason"] == {"NotAllowed": 1}
        assert [(r["prefix"], r["reason"]) for r in fw_b["recent_rejections"]] == [
            (FW_B_PREFIX, "NotAllowed")
        ]
        assert fw_b["bgp_state"] == "Established"  # rejected routes do not cost the session

        fw_c_view = peers["fw-c"]
        assert fw_c_view["last_notification_sent"] == "Cease/Maximum Number of Prefixes Reached", fw_c_view
        server.wait(
            lambda: (
                (6, 1) in {(n.code, n.subcode) for n in fw_c.notifications(c.server_address) if n.received}
            ),
            10,
            "FRR logging the Cease 6/1 it received",
        )

        # Only the allowed VIP reaches the kernel; fw-c's accepted part left with its session.
        server.wait(lambda: server.routes() == {VIP: {a.address}}, 10, "only the VIP in the table")
        assert server.route_server()["fib"] == [{"prefix": VIP, "nexthops": [a.address]}]

        metrics = server.metrics()
        assert (
            'routeserver_bgp_prefixes_rejected_total{peer="fw-a",reason="NotAllowed",route_server="vip"} 2.0'
            in (metrics)
        ), [line for line in metrics.splitlines() if "rejected" in line]
        teardowns = [
            line
            for line in metrics.splitlines()
            if line.startswith("routeserver_bgp_max_prefix_events_total{") and 'peer="fw-c"' in line
        ]
        assert any('event="teardown"' in line and not line.endswith(" 0.0") for line in teardowns), teardowns

        # The CLI's table shows the same.
        rendered = server.host.run(
            *server.argv()[:3], "status", "--admin-address", f"127.0.0.1:{server.admin_port}"
        )
        assert "NotAllowed" in rendered.stdout and FW_B_PREFIX in rendered.stdout, rendered.stdout
    finally:
        server.close()
