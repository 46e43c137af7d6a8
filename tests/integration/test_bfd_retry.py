"""A BFD session that cannot be created at first comes up by itself: no reload, no BGP flap.

Topology: rs (`routeserver run`, table 100) with fw-a (FRR, AS 65001, 10.0.1.2), BGP + BFD 100 ms x 3.

The failure provoked is the most realistic one a BFD request meets on a node: another process holds
UDP 3784 in the route server's network namespace (another BFD daemon, a leftover agent) when the BGP
session comes up, so the BFD service cannot bind its single-hop receive socket (RFC 5881 §4) and the
request fails with EADDRINUSE. The test's own socket holds the port (opened from a thread inside the
namespace, closed by the test), so nothing but the port is faked. Before the runtime was
level-triggered, the request was never asked again while the BGP session stayed up: the appliance ran
on the hold timer (9 s here) instead of BFD (300 ms). Now the failure shows in /status and is retried
with backoff (1, 2, 4 s ...): once the port is free, BFD comes Up without any configuration change,
and the BGP session that came up first is never touched.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.daemons.base import Route
from tests.support.netns import Lab
from tests.support.route_server import NetnsThread, PeerSpec, RouteServerProcess, ServerSpec, appliance, star

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"
BFD_PORT = 3784  # RFC 5881 §4: single-hop control packets


def _hold_bfd_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", BFD_PORT))
    return sock


def test_a_bfd_session_that_failed_to_bind_comes_up_without_reload_or_bgp_flap(lab: Lab) -> None:
    rs = lab.host("rs")
    (a,) = star(rs, [lab.host("fw-a")])
    thread = NetnsThread(rs.netns)
    blocker: socket.socket | None = thread.call(_hold_bfd_port)
    server = RouteServerProcess(rs, ServerSpec((PeerSpec("fw-a", a.address, 65001),)))
    try:
        server.start()
        fw_a = appliance("frr", a, asn=65001, routes=[Route(VIP)])
        fw_a.start()
        server.wait_established(["fw-a"])
        server.wait_routes({VIP: {a.address}}, 20, "the VIP via fw-a")

        # The request failed on the taken port: shown in /status, retried, BGP unaffected.
        server.wait(
            lambda: "Address already in use" in ((server.peer("fw-a").get("bfd") or {}).get("error") or ""),
            20,
            "the BFD error in /status",
        )
        bfd = server.peer("fw-a")["bfd"]
        assert bfd["state"] == "Error", bfd
        time.sleep(2.0)  # at least one more failed attempt (backoff 1 s, then 2 s)
        assert server.log().count("event=bfd_failed") >= 2, server.log()
        before = server.peer("fw-a")
        assert before["bgp_state"] == "Established" and before["established_count"] == 1
        generation = server.status()["config"]["generation"]

        # The port is free again: BFD comes Up by itself within the backoff.
        assert blocker is not None
        blocker.close()
        blocker = None
        freed = time.monotonic()
        server.wait_bfd_up(["fw-a"], timeout=40)
        took = time.monotonic() - freed
        after = server.peer("fw-a")
        assert after["bfd"]["error"] is None
        assert after["bgp_state"] == "Established"
        assert after["established_count"] == 1  # no BGP flap
        assert after["established_at"] == before["established_at"]
        assert server.status()["config"]["generation"] == generation  # no reload
        log = server.log()
        assert "event=bgp_session_down" not in log
        assert (
            log.index("event=bfd_failed")
            < log.index("event=bfd_session_requested")
            < log.index("event=bfd_up")
        )
        print(f"BFD Up {took:.1f} s after the port was freed")

        # And it is real BFD now: when the link dies, BFD takes the session down well within the
        # 9 s hold timer (100 ms x 3 detection).
        rs.run("ip", "link", "set", a.ifname, "down")
        cut = time.monotonic()
        server.wait(
            lambda: server.peer("fw-a")["bgp_state"] != "Established", 5, "the session torn down by BFD"
        )
        assert time.monotonic() - cut < 5
        assert "event=bfd_down" in server.log()
    finally:
        if blocker is not None:
            blocker.close()
        thread.close()
        server.close()
