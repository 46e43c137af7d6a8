"""The BFD service on loopback: sessions between two services, sharing, profiles, drops, auth, shutdown.

Real sockets and real time, but no timing assertions: tests wait for states and read counters.
"""

from __future__ import annotations

import asyncio
import threading
from ipaddress import IPv4Address

import pytest

from bfd.auth import AuthConfig
from bfd.codec import AuthType, Diag, State
from bfd.service import (
    BfdProfile,
    BfdService,
    BfdServiceError,
    SessionHandle,
    SessionStatus,
    merge_profiles,
)
from bfd.session import SessionConfig, StateChange, TransitionReason
from bfd.transport import SOURCE_PORT_MAX, SOURCE_PORT_MIN, Ports
from tests.bfd.service_support import (
    LO,
    LO6,
    Recorder,
    ScriptedPeer,
    down_packet,
    eventually,
    free_port,
    send_raw,
    service_pair,
)
from tests.support.prereq import missing, require_root

FAST = BfdProfile.from_ms(20, 20, 3)


def _up(*handles: SessionHandle, timeout: float = 5.0) -> None:
    for handle in handles:
        eventually(lambda h=handle: h.status().state is State.UP, timeout, f"{handle!r} Up")  # type: ignore[misc]


def _session(service: BfdService) -> SessionStatus:
    (session,) = service.status().sessions
    return session


# ---- merging profiles (pure) ---------------------------------------------------------------------


def test_merged_profile_takes_the_fastest_timers_and_strictest_ttl() -> None:
    slow = BfdProfile.from_ms(300, 300, 5, passive=True, min_ttl=250)
    fast = BfdProfile.from_ms(100, 200, 3, passive=False, min_ttl=254)
    merged = merge_profiles([slow, fast])
    assert (merged.min_tx_us, merged.min_rx_us, merged.multiplier) == (100_000, 200_000, 3)
    assert merged.min_ttl == 254
    assert merged.passive is False
    assert merge_profiles([slow, slow]).passive is True


def test_merging_different_authentication_is_refused() -> None:
    key = AuthConfig(AuthType.KEYED_SHA1, 1, b"k")
    with pytest.raises(ValueError, match="authentication"):
        merge_profiles([BfdProfile(auth=key), BfdProfile()])


def test_profile_with_out_of_range_values_is_refused_in_the_callers_thread() -> None:
    with pytest.raises(ValueError):
        BfdProfile(multiplier=0)
    with pytest.raises(ValueError):
        BfdProfile(min_ttl=256)


# ---- sessions between two services ---------------------------------------------------------------


def test_two_services_come_up_with_asymmetric_timers_negotiated() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=BfdProfile.from_ms(20, 30, 4))
        hb = b.request(LO, local=LO, profile=BfdProfile.from_ms(40, 25, 3))
        _up(ha, hb)
        # Until both are Up each advertises at least 1 s TX (§6.8.3): wait for the Up-time values.
        eventually(lambda: ha.status().detection_time_us == 3 * 40_000, what="A's detection time")
        eventually(lambda: hb.status().detection_time_us == 4 * 25_000, what="B's detection time")
        sa, sb = ha.status(), hb.status()
        # RFC 5880 §6.8.7: TX = max(own Desired Min TX, remote Required Min RX)
        assert sa.tx_interval_us == 25_000
        assert sb.tx_interval_us == 40_000
        # §6.8.4: detection = remote Detect Mult x max(own Required Min RX, remote Desired Min TX)
        assert sa.detection_time_us == 3 * max(30_000, 40_000)
        assert sb.detection_time_us == 4 * max(25_000, 20_000)
        assert sa.rx_interval_us == 40_000
        assert (sa.remote_discr, sb.remote_discr) == (sb.local_discr, sa.local_discr)
        assert sa.rx_packets > 0 and sa.tx_packets > 0
        assert not a.status().drops


def test_ipv6_sessions_come_up_with_hop_limit_255() -> None:
    with service_pair() as (a, b):
        try:
            ha = a.request(LO6, local=LO6, profile=FAST)
        except OSError as exc:
            missing(f"no IPv6 loopback: {exc}")
        hb = b.request(LO6, local=LO6, profile=FAST)
        _up(ha, hb)
        assert "ipv6/single_hop" in a.status().listening
        assert not a.status().drops


def test_multihop_sessions_come_up_on_their_own_port() -> None:
    multihop = BfdProfile.from_ms(20, 20, 3, multihop=True)
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=multihop)
        hb = b.request(LO, local=LO, profile=multihop)
        _up(ha, hb)
        assert ha.key.multihop
        assert set(a.status().listening) == {"ipv4/multihop"}


def test_sessions_get_distinct_source_ports_from_the_dynamic_range() -> None:
    with service_pair() as (a, _):
        first = a.request(IPv4Address("127.0.0.2"), profile=FAST).status()
        second = a.request(IPv4Address("127.0.0.3"), profile=FAST).status()
        assert first.source_port != second.source_port
        for port in (first.source_port, second.source_port):
            assert SOURCE_PORT_MIN <= port <= SOURCE_PORT_MAX
        assert first.local_discr != second.local_discr


def test_interface_bound_session_hears_packets_from_that_interface() -> None:
    require_root()  # SO_BINDTODEVICE needs CAP_NET_RAW
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, interface="lo", profile=FAST)
        hb = b.request(LO, local=LO, interface="lo", profile=FAST)
        _up(ha, hb)
        assert ha.key.interface == "lo"


# ---- sharing and profiles ------------------------------------------------------------------------


def test_requests_for_one_path_share_one_session() -> None:
    with service_pair() as (a, b):
        first = a.request(LO, local=LO, profile=FAST)
        second = a.request(LO, local=LO, profile=FAST)
        hb = b.request(LO, local=LO, profile=FAST)
        _up(first, hb)
        assert first.status().local_discr == second.status().local_discr
        assert first.status().clients == 2
        first.release()
        assert second.status().clients == 1
        assert second.status().state is State.UP


def test_last_release_sends_admin_down_which_the_peer_does_not_take_as_failure() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=FAST)
        hb = b.request(LO, local=LO, profile=FAST)
        _up(ha, hb)
        seen = Recorder()
        hb.subscribe(seen)
        ha.release()
        eventually(lambda: State.DOWN in seen.states(), what="peer Down")
        down = seen.changes[-1]
        assert down.reason is TransitionReason.RECEIVED_ADMIN_DOWN
        assert down.diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
        assert not down.failure
        eventually(lambda: not a.status().sessions, what="released session removed")
        with pytest.raises(ValueError, match="released"):
            ha.update(FAST)
        ha.release()  # idempotent


def test_shared_session_runs_the_fastest_profile_and_slows_back_without_flap() -> None:
    slow = BfdProfile.from_ms(60, 60, 3)
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=slow)
        hb = b.request(LO, local=LO, profile=BfdProfile.from_ms(10, 10, 3))
        _up(ha, hb)
        a_seen, b_seen = Recorder(), Recorder()
        ha.subscribe(a_seen)
        hb.subscribe(b_seen)
        fast = a.request(LO, local=LO, profile=BfdProfile.from_ms(20, 20, 3))
        eventually(lambda: hb.status().detection_time_us == 3 * 20_000, what="peer detection at 60 ms")
        assert ha.status().profile.min_rx_us == 20_000
        fast.release()
        eventually(lambda: hb.status().detection_time_us == 3 * 60_000, what="peer detection back at 180 ms")
        eventually(lambda: not ha.status().poll_active, what="Poll Sequence done")
        assert ha.status().clients == 1
        assert a_seen.changes == [] and b_seen.changes == []


def test_profile_update_uses_a_poll_sequence_and_nothing_flaps() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=BfdProfile.from_ms(20, 20, 3))
        hb = b.request(LO, local=LO, profile=BfdProfile.from_ms(20, 20, 3))
        _up(ha, hb)
        a_seen, b_seen = Recorder(), Recorder()
        ha.subscribe(a_seen)
        hb.subscribe(b_seen)
        ha.update(BfdProfile.from_ms(50, 40, 5))
        eventually(lambda: hb.status().detection_time_us == 5 * 50_000, what="peer sees the new timers")
        eventually(lambda: not ha.status().poll_active, what="Poll Sequence done")
        status = ha.status()
        assert status.tx_interval_us == 50_000
        assert status.detection_time_us == 3 * 40_000
        assert a_seen.changes == [] and b_seen.changes == []


def test_conflicting_authentication_on_one_path_is_refused() -> None:
    key = AuthConfig(AuthType.KEYED_SHA1, 3, b"secret")
    with service_pair() as (a, _):
        handle = a.request(LO, local=LO, profile=BfdProfile(auth=key))
        with pytest.raises(ValueError, match="authentication"):
            a.request(LO, local=LO, profile=BfdProfile())
        with pytest.raises(ValueError, match="authentication"):
            handle.update(BfdProfile(auth=AuthConfig(AuthType.KEYED_SHA1, 3, b"other")))
        assert handle.status().clients == 1


def test_request_while_winding_down_revives_the_same_session() -> None:
    slow = BfdProfile.from_ms(200, 200, 3)
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=slow)
        hb = b.request(LO, local=LO, profile=slow)
        _up(ha, hb)
        discr = ha.status().local_discr
        ha.release()
        assert _session(a).releasing
        again = a.request(LO, local=LO, profile=slow)
        assert again.status().local_discr == discr
        assert not again.status().releasing
        _up(again, hb)


# ---- subscriptions -------------------------------------------------------------------------------


async def test_subscription_with_a_loop_delivers_in_that_loops_thread() -> None:
    loop = asyncio.get_running_loop()
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=FAST)
        threads: list[int] = []
        got = asyncio.Event()

        def on_change(change: StateChange) -> None:
            threads.append(threading.get_ident())
            if change.new is State.UP:
                got.set()

        subscription = ha.subscribe(on_change, loop=loop)
        assert subscription.initial is not None
        assert subscription.initial.state is State.DOWN
        b.request(LO, local=LO, profile=FAST)
        await asyncio.wait_for(got.wait(), 5)
        assert set(threads) == {threading.get_ident()}
        subscription.cancel()


async def test_event_stream_yields_changes_and_ends_on_release() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=FAST)
        stream = ha.events()
        b.request(LO, local=LO, profile=FAST)

        async def collect() -> list[State]:
            states = []
            async for change in stream:
                states.append(change.new)
                if change.new is State.UP:
                    ha.release()
            return states

        states = await asyncio.wait_for(collect(), 5)
        assert states[-1] is State.UP


# ---- failures and drops --------------------------------------------------------------------------


def test_silent_peer_is_detected_as_failure_after_detection_time() -> None:
    listen, service_port = free_port(), free_port()
    service = BfdService(ports=Ports(single_hop=service_port, peer_single_hop=listen))
    service.start()
    peer = ScriptedPeer(
        listen, service_port, SessionConfig(local_discr=0x0BADCAFE, min_tx_us=20_000, min_rx_us=20_000)
    )
    try:
        handle = service.request(LO, local=LO, profile=FAST)
        seen = Recorder()
        handle.subscribe(seen)
        _up(handle)
        peer.silence()
        eventually(lambda: State.DOWN in seen.states(), what="Down")
        down = seen.changes[-1]
        assert down.reason is TransitionReason.DETECTION_TIME_EXPIRED
        assert down.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
        assert down.failure
        status = handle.status()
        assert status.last_rx is not None
        assert status.last_rx < down.at
        assert status.remote_discr == 0  # §6.8.1: forgotten after a detection time of silence
    finally:
        peer.close()
        service.stop()


def test_every_discarded_datagram_is_counted_by_reason() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=FAST)
        hb = b.request(LO, local=LO, profile=FAST)
        _up(ha, hb)
        port = a.ports.single_hop
        discr = ha.status().local_discr
        send_raw(b"\x00" * 24, port)  # version 0
        send_raw(down_packet(), port, ttl=254)  # RFC 5881 §5: single hop needs 255
        send_raw(down_packet(your_discr=discr ^ 0xFFFF), port)  # step 7: nobody has it
        send_raw(down_packet(), port, source="127.0.0.2")  # step 9: no session for that path
        send_raw(b"\x20" + b"\x00" * 599, port)  # larger than any BFD packet
        expected = {
            "bad_version": 1,
            "bad_ttl": 1,
            "unknown_your_discriminator": 1,
            "no_session_for_address": 1,
            "oversized": 1,
        }
        eventually(lambda: dict(a.status().drops) == expected, what=f"drops {expected}")
        assert ha.status().drops == {"bad_ttl": 1}  # the one a session could be blamed for
        assert ha.status().state is State.UP


def test_multihop_packets_below_the_minimum_ttl_are_dropped() -> None:
    with service_pair() as (a, _):
        handle = a.request(LO, local=LO, profile=BfdProfile(multihop=True, min_ttl=250))
        port = a.ports.multihop
        send_raw(down_packet(), port, ttl=249)
        eventually(lambda: handle.status().drops.get("bad_ttl") == 1, what="bad_ttl counted")
        send_raw(down_packet(), port, ttl=250)
        eventually(lambda: handle.status().state is State.INIT, what="Init from an acceptable packet")


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_authenticated_sessions_come_up(auth_type: AuthType) -> None:
    key = AuthConfig(auth_type, 7, b"sixteen-byte-key")
    profile = BfdProfile.from_ms(20, 20, 3, auth=key)
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=profile)
        hb = b.request(LO, local=LO, profile=profile)
        _up(ha, hb)
        assert not a.status().drops


@pytest.mark.parametrize(
    ("auth_type", "reason"),
    [(AuthType.SIMPLE_PASSWORD, "auth_bad_password"), (AuthType.METICULOUS_KEYED_SHA1, "auth_bad_digest")],
)
def test_wrong_key_keeps_the_session_down_and_counts_the_drop(auth_type: AuthType, reason: str) -> None:
    with service_pair() as (a, b):
        ha = a.request(
            LO, local=LO, profile=BfdProfile.from_ms(20, 20, 3, auth=AuthConfig(auth_type, 1, b"right"))
        )
        b.request(
            LO, local=LO, profile=BfdProfile.from_ms(20, 20, 3, auth=AuthConfig(auth_type, 1, b"wrong"))
        )
        eventually(lambda: ha.status().drops.get(reason, 0) >= 2, what=f"{reason} drops")
        assert ha.status().state is State.DOWN
        assert a.status().drops[reason] == ha.status().drops[reason]


# ---- lifecycle -----------------------------------------------------------------------------------


def test_stop_sends_admin_down_and_refuses_later_calls() -> None:
    with service_pair() as (a, b):
        ha = a.request(LO, local=LO, profile=FAST)
        hb = b.request(LO, local=LO, profile=FAST)
        _up(ha, hb)
        seen = Recorder()
        ha.subscribe(seen, on_close=seen.close)
        b.stop()
        eventually(lambda: State.DOWN in seen.states(), what="Down")
        assert seen.changes[-1].reason is TransitionReason.RECEIVED_ADMIN_DOWN
        with pytest.raises(BfdServiceError):
            b.request(LO, profile=FAST)
        with pytest.raises(BfdServiceError):
            hb.status()
        hb.release()  # nothing left to release: no error
        a.stop()
        assert seen.closed


def test_service_cannot_start_twice() -> None:
    service = BfdService(ports=Ports(single_hop=free_port()))
    service.start()
    try:
        with pytest.raises(BfdServiceError):
            service.start()
    finally:
        service.stop()
