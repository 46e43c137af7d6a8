"""Our speaker against itself in network namespaces: transport, security, liveness and limits.

Each test runs KrsSpeaker processes (tests/support/daemons/krs.py) in lab hosts joined by veth
pairs and checks what each side reports through its status snapshot, event log and Loc-RIB.
"""

from __future__ import annotations

import time

import pytest

from tests.support.bgp_interop import assert_held_down
from tests.support.daemons.base import Neighbor, Route
from tests.support.daemons.krs import KrsNeighbor, KrsSpeaker
from tests.support.netns import Host, Lab

pytestmark = [pytest.mark.netns]

ASN_A, ASN_B = 4200000001, 4200000002
ROUTES_A = [
    Route(
        "203.0.113.10/32",
        med=50,
        communities=("65001:7",),
        as_path_prepend=2,
        large_communities=("4200000001:1:2",),
    ),
    Route("2001:db8:100::/48", med=20),
]
ROUTES_B = [Route("198.51.100.0/25", med=30, communities=("64512:9",)), Route("2001:db8:200::/48")]


def _hosts(lab: Lab) -> tuple[Host, Host]:
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, b, ["10.0.0.1/24", "2001:db8::1/64"], ["10.0.0.2/24", "2001:db8::2/64"])
    return a, b


def _wait_gone(speaker: KrsSpeaker, prefix: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while prefix in speaker.received_routes():
        assert time.monotonic() < deadline, f"{speaker.kind} still has {prefix}"
        time.sleep(0.05)


def _never_established(speaker: KrsSpeaker, peer: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert speaker.session_state(peer) != "Established"
        time.sleep(0.1)
    assert speaker.peer_status(peer)["established_count"] == 0


@pytest.mark.parametrize("transport", ["ipv4", "ipv6"])
def test_speakers_exchange_ipv4_and_ipv6_routes_with_exact_attributes(lab: Lab, transport: str) -> None:
    a, b = _hosts(lab)
    addr_a, addr_b = ("10.0.0.1", "10.0.0.2") if transport == "ipv4" else ("2001:db8::1", "2001:db8::2")
    sa = KrsSpeaker(a, asn=ASN_A, router_id="10.0.0.1", neighbors=[Neighbor(addr_b, ASN_B)], routes=ROUTES_A)
    sb = KrsSpeaker(b, asn=ASN_B, router_id="10.0.0.2", neighbors=[Neighbor(addr_a, ASN_A)], routes=ROUTES_B)
    sa.start()
    sb.start()
    sa.wait_session(addr_b, timeout=10)
    sb.wait_session(addr_a, timeout=10)

    got = sb.wait_routes(["203.0.113.10/32", "2001:db8:100::/48"], timeout=10)
    v4 = got["203.0.113.10/32"]
    assert v4.as_path == (ASN_A, ASN_A, ASN_A)
    assert v4.next_hop == "10.0.0.1"
    assert v4.med == 50
    assert v4.communities == ("65001:7",)
    assert v4.large_communities == ("4200000001:1:2",)
    assert v4.local_pref is None  # never sent to an external peer (RFC 4271 §5.1.5)
    assert got["2001:db8:100::/48"].next_hop == "2001:db8::1"
    assert got["2001:db8:100::/48"].as_path == (ASN_A,)
    got = sa.wait_routes(["198.51.100.0/25", "2001:db8:200::/48"], timeout=10)
    assert got["198.51.100.0/25"].as_path == (ASN_B,)
    assert got["198.51.100.0/25"].med == 30
    assert got["198.51.100.0/25"].communities == ("64512:9",)
    assert got["2001:db8:200::/48"].next_hop == "2001:db8::2"

    status = sa.peer_status(addr_b)
    assert status["negotiated"]["four_octet_as"] is True
    assert status["negotiated"]["peer_asn"] == ASN_B
    assert set(status["negotiated"]["families"]) == {"ipv4-unicast", "ipv6-unicast"}
    assert status["prefixes_accepted"] == 2

    sb.advertise([Route("198.51.100.128/25", med=7)])
    assert sa.wait_routes(["198.51.100.128/25"], timeout=10)["198.51.100.128/25"].med == 7
    sb.withdraw(["198.51.100.128/25", "2001:db8:200::/48"])
    _wait_gone(sa, "198.51.100.128/25")
    _wait_gone(sa, "2001:db8:200::/48")
    assert "198.51.100.0/25" in sa.received_routes()


def test_tcp_md5_match_establishes_and_mismatch_never_does(lab: Lab) -> None:
    a, b = _hosts(lab)
    c = lab.host("c")
    lab.link(a, c, ["10.0.1.1/24"], ["10.0.1.3/24"])
    sa = KrsSpeaker(
        a,
        asn=ASN_A,
        router_id="10.0.0.1",
        neighbors=[
            Neighbor("10.0.0.2", ASN_B, password="right-key"),
            Neighbor("10.0.1.3", 65003, password="a-key"),
        ],
    )
    sb = KrsSpeaker(
        b, asn=ASN_B, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", ASN_A, password="right-key")]
    )
    sc = KrsSpeaker(
        c, asn=65003, router_id="10.0.1.3", neighbors=[Neighbor("10.0.1.1", ASN_A, password="c-key")]
    )
    for speaker in (sa, sb, sc):
        speaker.start()
    sa.wait_session("10.0.0.2", timeout=10)
    sb.wait_session("10.0.0.1", timeout=10)

    _never_established(sa, "10.0.1.3", 3.0)
    for speaker, peer in ((sa, "10.0.1.3"), (sc, "10.0.1.1")):
        status = speaker.peer_status(peer)
        # The kernel drops the badly signed SYNs without a trace; the status says what that means.
        assert "timed out" in (status["last_error"] or "")
        assert "TCP-MD5" in status["last_error"]
        assert status["state"] in ("Connect", "Active")
        assert status["connect_attempts"] >= 2
    assert sa.status()["kernel_drops"]["TCPMD5Failure"] > 0  # the one trace a wrong key leaves
    for speaker in (sa, sb, sc):
        assert "right-key" not in speaker.log_text() and "c-key" not in speaker.log_text()


def test_gtsm_drops_a_peer_reaching_us_with_ttl_below_255(lab: Lab) -> None:
    a, b = _hosts(lab)
    sa = KrsSpeaker(
        a,
        asn=ASN_A,
        router_id="10.0.0.1",
        neighbors=[KrsNeighbor("10.0.0.2", ASN_B, passive=True, gtsm_hops=1)],
    )
    low_ttl = KrsSpeaker(
        b, asn=ASN_B, router_id="10.0.0.2", neighbors=[KrsNeighbor("10.0.0.1", ASN_A, multihop_ttl=64)]
    )
    sa.start()
    low_ttl.start()
    _never_established(sa, "10.0.0.2", 2.5)
    assert sa.status()["kernel_drops"]["TCPMinTTLDrop"] > 0  # the kernel dropped its SYNs (RFC 5082 §3)
    assert "timed out" in (low_ttl.peer_status("10.0.0.1")["last_error"] or "")
    low_ttl.stop()

    gtsm = KrsSpeaker(
        b, asn=ASN_B, router_id="10.0.0.2", neighbors=[KrsNeighbor("10.0.0.1", ASN_A, gtsm_hops=1)]
    )
    gtsm.start()
    sa.wait_session("10.0.0.2", timeout=10)


def test_unconfigured_address_is_refused_before_open(lab: Lab) -> None:
    a, b = _hosts(lab)
    sa = KrsSpeaker(a, asn=ASN_A, router_id="10.0.0.1", neighbors=[])
    stranger = KrsSpeaker(b, asn=ASN_B, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", ASN_A)])
    sa.start()
    stranger.start()
    event = sa.wait_event(lambda e: e["type"] == "refused", what="refusal")
    assert event["address"] == "10.0.0.2"
    assert sa.status()["refused_by_address"]["10.0.0.2"] >= 1
    status = stranger.peer_status("10.0.0.1")
    assert status["established_count"] == 0
    assert status["last_notification_received"] is None  # closed before any message, not even a Cease


def test_peer_down_tears_the_session_down_at_once_and_routes_vanish(lab: Lab) -> None:
    a, b = _hosts(lab)
    sa = KrsSpeaker(
        a, asn=ASN_A, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", ASN_B)], routes=ROUTES_A
    )
    sb = KrsSpeaker(
        b, asn=ASN_B, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", ASN_A)], routes=ROUTES_B
    )
    sa.start()
    sb.start()
    sa.wait_routes(["198.51.100.0/25"], timeout=10)
    sb.wait_routes(["203.0.113.10/32"], timeout=10)

    sa.peer_down("10.0.0.2")
    # Synchronous in the speaker: by the time the control request returns, B's routes are gone from A.
    assert "198.51.100.0/25" not in sa.received_routes()
    status = sa.peer_status("10.0.0.2")
    assert status["last_transition"] == "BfdDown"
    assert status["last_notification_sent"]["name"] == "Cease/BFD Down"
    event = sb.wait_event(
        lambda e: e["type"] == "state" and e["old"] == "Established" and e["notification"] is not None,
        what="session down on B",
    )
    assert event["notification"] == {"code": 6, "subcode": 10}
    _wait_gone(sb, "203.0.113.10/32", timeout=2)
    # The session comes back after the IdleHold time and the routes with it.
    sa.wait_routes(["198.51.100.0/25"], timeout=10)


def test_max_prefix_teardown_sends_cease_1_and_the_session_stays_idle(lab: Lab) -> None:
    a, b = _hosts(lab)
    sa = KrsSpeaker(
        a,
        asn=ASN_A,
        router_id="10.0.0.1",
        neighbors=[KrsNeighbor("10.0.0.2", ASN_B, max_prefix=2)],
    )
    routes = [Route(f"198.51.100.{i * 32}/27") for i in range(3)]
    sb = KrsSpeaker(
        b, asn=ASN_B, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", ASN_A)], routes=routes
    )
    sa.start()
    sb.start()
    limit = sa.wait_event(lambda e: e["type"] == "prefix_limit", what="max-prefix event")
    assert limit["event"] == "TEARDOWN" and limit["limit"] == 2
    down = sb.wait_event(
        lambda e: e["type"] == "state" and e["reason"] == "NotificationReceived", what="Cease on B"
    )
    assert down["notification"] == {"code": 6, "subcode": 1}
    received = sb.peer_status("10.0.0.1")["last_notification_received"]
    assert received["name"] == "Cease/Maximum Number of Prefixes Reached"
    assert sa.received_routes() == {}
    assert_held_down(sa, "10.0.0.2")  # B keeps connecting; A refuses it from Idle


def test_hold_timer_expires_when_the_peer_process_is_frozen(lab: Lab) -> None:
    a, b = _hosts(lab)
    sa = KrsSpeaker(a, asn=ASN_A, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", ASN_B, hold_time=3)])
    sb = KrsSpeaker(
        b,
        asn=ASN_B,
        router_id="10.0.0.2",
        neighbors=[Neighbor("10.0.0.1", ASN_A, hold_time=3)],
        routes=ROUTES_B,
    )
    sa.start()
    sb.start()
    sa.wait_routes(["198.51.100.0/25"], timeout=10)
    assert sa.peer_status("10.0.0.2")["negotiated"]["hold_time"] == 3
    sb.pause()
    try:
        # Bounded a few seconds over the negotiated 3 s; the default 90 s would fail here.
        event = sa.wait_event(
            lambda e: e["type"] == "state" and e["reason"] == "HoldTimerExpires",
            timeout=8,
            what="hold timer expiry",
        )
    finally:
        sb.resume()
    assert event["old"] == "Established"
    assert event["notification"] == {"code": 4, "subcode": 0}
    assert "198.51.100.0/25" not in sa.received_routes()
