"""Two Speakers over loopback (127.0.0.1 and 127.0.0.2, no netns): the glue of codec, FSM and RIB."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network

import pytest

from bgp.api import (
    ConnectionRefused,
    EndOfRib,
    PeerConfig,
    PeerStateChanged,
    PrefixLimit,
    RoutesChanged,
    SpeakerEvent,
    notification_name,
)
from bgp.codec.errors import CeaseSubcode, NotificationCode
from bgp.fsm.events import DownReason, State, TransitionReason
from bgp.rib.policy import ALLOW_ALL, ImportPolicy, MaxPrefix, MaxPrefixAction, MaxPrefixEvent, PrefixRule
from bgp.speaker import Speaker, Subscription, to_key, transport_config
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    AsPath,
    AsPathSegment,
    LargeCommunity,
    Origin,
    PathAttributes,
    SegmentType,
)

ASN_A, ASN_B = 4200000001, 4200000002
ADDR_A, ADDR_B = IPv4Address("127.0.0.1"), IPv4Address("127.0.0.2")
ATTRS = PathAttributes(
    origin=Origin.IGP,
    next_hop=IPv4Address("198.51.100.7"),
    med=50,
    communities=((65001 << 16) | 7,),
    large_communities=(LargeCommunity(65001, 1, 2),),
)
ATTRS_V6 = PathAttributes(origin=Origin.IGP, next_hop=IPv6Address("2001:db8::7"), med=20)


@dataclass
class Pair:
    a: Speaker
    b: Speaker
    events_a: Subscription
    events_b: Subscription
    config_a: PeerConfig  # A's view of B
    config_b: PeerConfig  # B's view of A


async def _wait(
    sub: Subscription, predicate: Callable[[SpeakerEvent], bool], within: float = 10
) -> SpeakerEvent:
    async def scan() -> SpeakerEvent:
        async for event in sub:
            if predicate(event):
                return event
        raise AssertionError("subscription closed")

    return await asyncio.wait_for(scan(), within)


def _state(peer_id: str, state: State) -> Callable[[SpeakerEvent], bool]:
    return lambda e: isinstance(e, PeerStateChanged) and e.peer_id == peer_id and e.new is state


async def _pair(a_overrides: dict[str, object] | None = None, **overrides_b: object) -> Pair:
    a = Speaker(ASN_A, "10.0.0.1", [str(ADDR_A)], 0)
    b = Speaker(ASN_B, "10.0.0.2", [str(ADDR_B)], 0)
    await a.start()
    await b.start()
    events_a, events_b = a.subscribe(), b.subscribe()
    common = {"import_policy": ALLOW_ALL, "connect_retry_time": 1.0, "hold_time": 9, "idle_hold_time": 0.2}
    config_a = PeerConfig(ADDR_B, ASN_B, port=b.listening()[0][1], local_address=ADDR_A, **common)  # type: ignore[arg-type]
    config_b = PeerConfig(ADDR_A, ASN_A, port=a.listening()[0][1], local_address=ADDR_B, **common)  # type: ignore[arg-type]
    config_a = replace(config_a, **(a_overrides or {}))  # type: ignore[arg-type]
    config_b = replace(config_b, **overrides_b)  # type: ignore[arg-type]
    await a.add_peer(config_a)
    await b.add_peer(config_b)
    await _wait(events_a, _state(str(ADDR_B), State.ESTABLISHED))
    await _wait(events_b, _state(str(ADDR_A), State.ESTABLISHED))
    return Pair(a, b, events_a, events_b, config_a, config_b)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = await _pair()
    yield p
    await p.a.stop()
    await p.b.stop()


async def test_routes_arrive_with_exact_attributes_and_four_octet_as_path(pair: Pair) -> None:
    await pair.a.advertise(
        ["203.0.113.10/32"],
        replace(ATTRS, as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (ASN_A,)),))),
    )
    await pair.a.advertise([ip_network("2001:db8:100::/48")], ATTRS_V6)
    seen: set[int] = set()
    while len(seen) < 2:
        event = await _wait(pair.events_b, lambda e: isinstance(e, RoutesChanged))
        assert isinstance(event, RoutesChanged)
        seen |= {c.prefix for c in event.changes if c.new_best is not None}
    best = pair.b.loc_rib.best(to_key("203.0.113.10/32"))
    assert best is not None
    attrs = best.attributes
    assert attrs.as_path.asns() == (ASN_A, ASN_A)  # one prepend of ours, one by eBGP export
    assert attrs.next_hop == IPv4Address("198.51.100.7")
    assert attrs.med == 50
    assert attrs.communities == ((65001 << 16) | 7,)
    assert attrs.large_communities == (LargeCommunity(65001, 1, 2),)
    assert attrs.local_pref is None
    best6 = pair.b.loc_rib.best(to_key("2001:db8:100::/48"))
    assert best6 is not None and best6.attributes.next_hop == IPv6Address("2001:db8::7")
    status = pair.b.status(str(ADDR_A))
    assert status.state == "Established"
    assert status.prefixes_accepted == 2
    assert status.negotiated is not None and status.negotiated.four_octet_as
    assert status.negotiated.peer_asn == ASN_A
    assert status.negotiated.hold_time == 9

    await pair.a.withdraw(["203.0.113.10/32"])
    event = await _wait(pair.events_b, lambda e: isinstance(e, RoutesChanged))
    assert isinstance(event, RoutesChanged)
    assert [c.new_best for c in event.changes] == [None]
    assert pair.b.loc_rib.best(to_key("203.0.113.10/32")) is None


async def test_table_and_end_of_rib_go_to_a_peer_that_comes_up_later() -> None:
    a = Speaker(ASN_A, "10.0.0.1", [str(ADDR_A)], 0)
    b = Speaker(ASN_B, "10.0.0.2", [str(ADDR_B)], 0)
    await a.start()
    await b.start()
    await a.advertise(["198.51.100.0/25", "198.51.100.128/25"], ATTRS)
    events_b = b.subscribe()
    try:
        await a.add_peer(
            PeerConfig(ADDR_B, ASN_B, port=b.listening()[0][1], local_address=ADDR_A, passive=True)
        )
        await b.add_peer(
            PeerConfig(ADDR_A, ASN_A, port=a.listening()[0][1], local_address=ADDR_B, import_policy=ALLOW_ALL)
        )
        eor = await _wait(events_b, lambda e: isinstance(e, EndOfRib) and e.family == IPV4_UNICAST)
        assert isinstance(eor, EndOfRib)
        assert len(b.loc_rib) == 2  # the table came before its End-of-RIB
    finally:
        await a.stop()
        await b.stop()


async def test_peer_down_tears_down_at_once_with_cease_bfd_down_and_routes_vanish(pair: Pair) -> None:
    await pair.b.advertise(["203.0.113.10/32"], ATTRS)
    await _wait(pair.events_a, lambda e: isinstance(e, RoutesChanged))
    assert to_key("203.0.113.10/32") in pair.a.loc_rib

    pair.a.peer_down(str(ADDR_B), DownReason.BFD_DOWN)
    # Synchronous: state and routes change before peer_down returns.
    assert to_key("203.0.113.10/32") not in pair.a.loc_rib
    status = pair.a.status(str(ADDR_B))
    assert status.state == "Idle"
    assert status.last_transition == TransitionReason.BFD_DOWN.value
    assert status.last_notification_sent is not None
    assert (status.last_notification_sent.code, status.last_notification_sent.subcode) == (6, 10)
    event = await _wait(pair.events_b, _state(str(ADDR_A), State.IDLE))
    assert isinstance(event, PeerStateChanged) and event.notification is not None
    assert (event.notification.code, event.notification.subcode) == (
        NotificationCode.CEASE,
        CeaseSubcode.BFD_DOWN,
    )
    # And it comes back by itself after the IdleHold time.
    await _wait(pair.events_a, _state(str(ADDR_B), State.ESTABLISHED))


async def test_peer_down_withdraws_every_path_the_adj_rib_in_lists_and_a_new_session_is_listed_again(
    pair: Pair,
) -> None:
    peer_id = str(ADDR_B)
    keys = sorted(to_key(p) for p in ("203.0.113.10/32", "203.0.113.11/32", "203.0.113.12/32"))

    async def table_complete() -> None:
        while pair.a.loc_rib.peer_path_count(peer_id) < len(keys):
            await _wait(pair.events_a, lambda e: isinstance(e, RoutesChanged))

    await pair.b.advertise(["203.0.113.10/32", "203.0.113.11/32", "203.0.113.12/32"], ATTRS)
    await table_complete()
    adj = pair.a.adj_rib_in(peer_id)
    assert adj is not None and len(adj) == len(keys)
    pair.a.peer_down(peer_id, DownReason.BFD_DOWN)
    assert [k for k in keys if k in pair.a.loc_rib] == []
    assert (pair.a.loc_rib.peer_path_count(peer_id), len(adj)) == (0, 0)
    # The next session feeds the same Adj-RIB-In, which again lists the peer's paths.
    await _wait(pair.events_a, _state(peer_id, State.ESTABLISHED))
    await table_complete()
    assert sorted(prefix for prefix, _ in pair.a.loc_rib.peer_paths(peer_id)) == keys
    await pair.a.remove_peer(peer_id)
    assert len(pair.a.loc_rib) == 0 and list(pair.a.loc_rib.peer_paths(peer_id)) == []


async def test_peer_down_graceful_keeps_routes_stale_until_the_peer_is_back() -> None:
    p = await _pair()
    prefix = to_key("203.0.113.10/32")
    try:
        await p.b.advertise(["203.0.113.10/32"], ATTRS)
        await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged))
        p.a.peer_down(str(ADDR_B), graceful=True)
        assert prefix in p.a.loc_rib
        assert p.a.status(str(ADDR_B)).prefixes_stale == 1
        # Back again: our peer keeps no forwarding state (F bit clear), so its stale routes go at once
        # (RFC 4724 §4.2) and come back fresh with its table.
        await _wait(p.events_a, _state(str(ADDR_B), State.ESTABLISHED))
        await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged) and e.changes[0].new_best is not None)
        assert prefix in p.a.loc_rib
        assert p.a.status(str(ADDR_B)).prefixes_stale == 0
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_stale_routes_are_flushed_when_the_restart_timer_expires() -> None:
    # A stays Idle for a long time after the teardown, so B cannot come back within its 1 s restart time.
    p = await _pair({"idle_hold_time": 30.0}, graceful_restart_time=1)
    prefix = to_key("203.0.113.10/32")
    try:
        await p.b.advertise(["203.0.113.10/32"], ATTRS)
        await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged))
        p.a.peer_down(str(ADDR_B), graceful=True)
        assert prefix in p.a.loc_rib
        event = await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged))
        assert isinstance(event, RoutesChanged) and [c.new_best for c in event.changes] == [None]
        assert prefix not in p.a.loc_rib
        assert p.a.status(str(ADDR_B)).state == "Idle"
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_listener_callbacks_see_events_synchronously(pair: Pair) -> None:
    seen: list[SpeakerEvent] = []
    remove = pair.a.add_listener(seen.append)
    pair.a.peer_down(str(ADDR_B))
    assert any(isinstance(e, PeerStateChanged) and e.new is State.IDLE for e in seen)
    remove()
    count = len(seen)
    await _wait(pair.events_a, _state(str(ADDR_B), State.ESTABLISHED))
    assert len(seen) == count


async def test_max_prefix_teardown_sends_cease_1() -> None:
    p = await _pair(max_prefix=MaxPrefix(2, MaxPrefixAction.TEARDOWN))
    try:
        await p.a.advertise(["198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26"], ATTRS)
        limit = await _wait(p.events_b, lambda e: isinstance(e, PrefixLimit))
        assert isinstance(limit, PrefixLimit) and limit.event is MaxPrefixEvent.TEARDOWN
        event = await _wait(p.events_a, _state(str(ADDR_B), State.IDLE))
        assert isinstance(event, PeerStateChanged)
        assert event.reason is TransitionReason.NOTIFICATION_RECEIVED
        assert event.notification is not None
        assert (event.notification.code, event.notification.subcode) == (6, 1)
        received = p.a.status(str(ADDR_B)).last_notification_received
        assert received is not None and received.name == "Cease/Maximum Number of Prefixes Reached"
        assert len(p.b.loc_rib) == 0  # nothing of the peer is kept after the teardown
    finally:
        await p.a.stop()
        await p.b.stop()


# A only listens (as BIRD and FRR appliances in Active accept a connection at any time): two of our
# speakers both connecting would refuse each other from Idle (RFC 4271 §8.2.2) after the hold. Without
# the hold, B would be back within its 0.2 s IdleHold.
PASSIVE_A: dict[str, object] = {"passive": True}


async def _until(predicate: Callable[[], bool], within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_max_prefix_teardown_holds_the_session_idle_until_update_peer_changes_the_limit() -> None:
    p = await _pair(PASSIVE_A, max_prefix=MaxPrefix(2, MaxPrefixAction.TEARDOWN))
    try:
        await p.a.advertise(["198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26"], ATTRS)
        await _wait(p.events_b, _state(str(ADDR_A), State.IDLE))
        # IdleHold is 0.2 s: without the hold B would have reconnected to A (listening) by now.
        await asyncio.sleep(2.5)
        status = p.b.status(str(ADDR_A))
        assert (status.state, status.established_count) == ("Idle", 1)
        assert (status.held_idle_reason, status.held_idle_until) == ("MaxPrefixes", None)
        assert status.last_transition == "MaxPrefixes"

        await p.b.update_peer(replace(p.config_b, max_prefix=MaxPrefix(10, MaxPrefixAction.TEARDOWN)))
        await _wait(p.events_b, _state(str(ADDR_A), State.ESTABLISHED))
        await _until(lambda: len(p.b.loc_rib) == 3)
        status = p.b.status(str(ADDR_A))
        assert (status.established_count, status.held_idle_reason) == (2, None)
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_max_prefix_teardown_with_restart_after_starts_again_once_when_it_elapses() -> None:
    p = await _pair(PASSIVE_A, max_prefix=MaxPrefix(2, MaxPrefixAction.TEARDOWN, restart_after=1.5))
    try:
        loop = asyncio.get_running_loop()
        await p.a.advertise(["198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26"], ATTRS)
        await _wait(p.events_b, _state(str(ADDR_A), State.IDLE))
        down_at = loop.time()
        status = p.b.status(str(ADDR_A))
        assert status.held_idle_reason == "MaxPrefixes" and status.held_idle_until is not None
        assert 1.0 < status.held_idle_until - time.time() <= 1.5
        await p.a.withdraw(["198.51.100.128/26"])  # the appliance is fixed meanwhile
        await _wait(p.events_b, _state(str(ADDR_A), State.ESTABLISHED))
        assert loop.time() - down_at >= 1.4
        await _until(lambda: len(p.b.loc_rib) == 2)
        status = p.b.status(str(ADDR_A))
        assert (status.state, status.established_count, status.held_idle_reason) == ("Established", 2, None)
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_max_prefix_reject_keeps_the_session_and_a_raised_limit_refreshes_the_rest() -> None:
    p = await _pair(max_prefix=MaxPrefix(2, MaxPrefixAction.REJECT))
    try:
        prefixes = ["198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26", "198.51.100.192/26"]
        await p.a.advertise(prefixes, ATTRS)
        limit = await _wait(p.events_b, lambda e: isinstance(e, PrefixLimit))
        assert isinstance(limit, PrefixLimit) and (limit.event, limit.count) == (MaxPrefixEvent.REJECTED, 2)
        status = p.b.status(str(ADDR_A))
        assert (status.state, status.prefixes_accepted) == ("Established", 2)
        assert status.rejected_by_reason == {"MaxPrefix": 2}
        assert len(p.b.loc_rib) == 2

        # A roomier limit: B asks for the table again (ROUTE-REFRESH, RFC 2918) and takes the rest.
        await p.b.update_peer(replace(p.config_b, max_prefix=MaxPrefix(10, MaxPrefixAction.REJECT)))
        await _until(lambda: len(p.b.loc_rib) == 4)
        status = p.b.status(str(ADDR_A))
        assert (status.state, status.established_count, status.prefixes_accepted) == ("Established", 1, 4)
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_max_prefix_lowered_reject_limit_withdraws_the_excess_without_a_new_session() -> None:
    p = await _pair(max_prefix=MaxPrefix(10, MaxPrefixAction.REJECT))
    try:
        await p.a.advertise(["198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26"], ATTRS)
        await _until(lambda: len(p.b.loc_rib) == 3)
        await p.b.update_peer(replace(p.config_b, max_prefix=MaxPrefix(1, MaxPrefixAction.REJECT)))
        assert len(p.b.loc_rib) == 1
        status = p.b.status(str(ADDR_A))
        assert (status.state, status.prefixes_accepted, status.rejected_by_reason) == (
            "Established",
            1,
            {"MaxPrefix": 2},
        )
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_max_prefix_warn_keeps_session_and_routes() -> None:
    p = await _pair(max_prefix=MaxPrefix(1, MaxPrefixAction.WARN))
    try:
        await p.a.advertise(["198.51.100.0/26", "198.51.100.64/26"], ATTRS)
        limit = await _wait(
            p.events_b, lambda e: isinstance(e, PrefixLimit) and e.event is MaxPrefixEvent.EXCEEDED
        )
        assert isinstance(limit, PrefixLimit) and limit.limit == 1
        assert p.b.status(str(ADDR_A)).state == "Established"
        assert len(p.b.loc_rib) == 2
    finally:
        await p.a.stop()
        await p.b.stop()


async def test_import_policy_rejects_and_counts_then_update_peer_narrows(pair: Pair) -> None:
    narrow = ImportPolicy(allowed=(PrefixRule(IPv4Network("198.51.100.0/24"), le=32),))
    await pair.b.update_peer(replace(pair.config_b, import_policy=narrow))
    await pair.a.advertise(["198.51.100.0/25", "203.0.113.0/24"], ATTRS)
    await _wait(pair.events_b, lambda e: isinstance(e, RoutesChanged))
    assert to_key("198.51.100.0/25") in pair.b.loc_rib
    assert to_key("203.0.113.0/24") not in pair.b.loc_rib
    status = pair.b.status(str(ADDR_A))
    # The refresh asked for by update_peer may resend the table: the rejection is counted per announcement.
    assert status.prefixes_rejected >= 1
    assert set(status.rejected_by_reason) == {"NotAllowed"}
    assert status.state == "Established"  # a policy change needs no new session

    await pair.b.update_peer(replace(pair.config_b, import_policy=ImportPolicy()))
    assert len(pair.b.loc_rib) == 0  # RFC 8212: an empty policy accepts nothing


async def test_remove_peer_sends_cease_peer_deconfigured(pair: Pair) -> None:
    await pair.b.advertise(["203.0.113.10/32"], ATTRS)
    await _wait(pair.events_a, lambda e: isinstance(e, RoutesChanged))
    await pair.a.remove_peer(str(ADDR_B))
    assert len(pair.a.loc_rib) == 0
    assert pair.a.peers() == []
    event = await _wait(pair.events_b, _state(str(ADDR_A), State.IDLE))
    assert isinstance(event, PeerStateChanged) and event.notification is not None
    assert (event.notification.code, event.notification.subcode) == (6, 3)


async def test_switching_to_ecmp_publishes_the_wider_set() -> None:
    c = Speaker(65003, "10.0.0.3", ["127.0.0.3"], 0)
    p = await _pair()
    await c.start()
    try:
        # A learns the same prefix from B and from C with equal AS path length.
        events_c = c.subscribe()
        port_a = p.a.listening()[0][1]
        await p.a.add_peer(
            replace(
                p.config_a,
                peer_address=IPv4Address("127.0.0.3"),
                peer_id="",
                peer_asn=65003,
                port=c.listening()[0][1],
            )
        )
        await c.add_peer(
            replace(p.config_b, peer_asn=ASN_A, port=port_a, local_address=IPv4Address("127.0.0.3"))
        )
        await _wait(events_c, _state(str(ADDR_A), State.ESTABLISHED))
        await p.b.advertise(["203.0.113.0/24"], ATTRS)
        await c.advertise(["203.0.113.0/24"], replace(ATTRS, next_hop=IPv4Address("198.51.100.8")))
        key = to_key("203.0.113.0/24")
        while len(p.a.loc_rib.candidates(key)) < 2:
            await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged))
        assert len(p.a.loc_rib.ecmp(key)) == 1
        p.a.set_route_selection(max_paths=4)
        event = await _wait(p.events_a, lambda e: isinstance(e, RoutesChanged) and e.peer_id == "")
        assert isinstance(event, RoutesChanged)
        assert len(event.changes[0].new_ecmp) == 2
    finally:
        await c.stop()
        await p.a.stop()
        await p.b.stop()


async def test_route_refresh_request_is_sent_for_negotiated_families(pair: Pair) -> None:
    assert pair.b.request_refresh(str(ADDR_A)) == [IPV4_UNICAST, IPV6_UNICAST]


async def test_unconfigured_address_is_refused_and_published(pair: Pair) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind(("127.0.0.3", 0))
    await loop.sock_connect(sock, ("127.0.0.1", pair.a.listening()[0][1]))
    assert await asyncio.wait_for(loop.sock_recv(sock, 100), 5) == b""
    sock.close()
    event = await _wait(pair.events_a, lambda e: isinstance(e, ConnectionRefused))
    assert isinstance(event, ConnectionRefused) and event.address == IPv4Address("127.0.0.3")
    assert pair.a.statuses().refused_by_address == {"127.0.0.3": 1}


async def test_duplicate_peer_address_is_refused(pair: Pair) -> None:
    with pytest.raises(ValueError, match="already configured"):
        await pair.a.add_peer(replace(pair.config_a, peer_id="other"))


def test_peer_config_never_shows_its_password() -> None:
    config = PeerConfig(ADDR_B, ASN_B, password="hunter2")
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(transport_config(config))


def test_peer_config_refuses_gtsm_with_multihop() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        PeerConfig(ADDR_B, ASN_B, ttl_security_hops=1, multihop_ttl=5)


def test_notification_names() -> None:
    assert notification_name(6, 1) == "Cease/Maximum Number of Prefixes Reached"
    assert notification_name(4, 0) == "Hold Timer Expired"
    assert notification_name(2, 2) == "OPEN Message Error/Bad Peer AS"
    assert notification_name(3, 42) == "UPDATE Message Error/42"


async def test_established_event_and_status_carry_the_connections_local_address() -> None:
    # Without local_address configured: the kernel picks the source, and the event must still name it
    # (single-hop BFD runs from there, RFC 5881 §4), in the same event that says Established.
    a = Speaker(ASN_A, "10.0.0.1", [str(ADDR_A)], 0)
    b = Speaker(ASN_B, "10.0.0.2", [str(ADDR_B)], 0)
    await a.start()
    await b.start()
    try:
        events_b = b.subscribe()
        common = {"import_policy": ALLOW_ALL, "connect_retry_time": 1.0, "hold_time": 9}
        # B is passive and has no local address configured: its end of the connection is whatever
        # address A connected to.
        await a.add_peer(PeerConfig(ADDR_B, ASN_B, port=b.listening()[0][1], local_address=ADDR_A, **common))  # type: ignore[arg-type]
        await b.add_peer(PeerConfig(ADDR_A, ASN_A, port=a.listening()[0][1], passive=True, **common))  # type: ignore[arg-type]
        event = await _wait(events_b, _state(str(ADDR_A), State.ESTABLISHED))
        assert isinstance(event, PeerStateChanged)
        assert event.local_address == ADDR_B
        assert b.status(str(ADDR_A)).local_address == str(event.local_address)
    finally:
        await a.stop()
        await b.stop()
