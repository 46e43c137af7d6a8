"""UPDATE golden vectors (IPv4, MP-BGP IPv6, End-of-RIB, ADD-PATH, RFC 8950), builders and interning."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

import bgp.codec.update as update_module
from bgp.codec.dispatch import decode_message
from bgp.codec.errors import BgpError, ErrorAction
from bgp.codec.messages import MAX_EXTENDED_MESSAGE, CodecContext, Framer
from bgp.codec.update import (
    Reach,
    Unreach,
    Update,
    build_updates,
    build_withdrawals,
    decode_update,
    encode_end_of_rib,
    encode_update,
)
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    AsPath,
    AsPathSegment,
    Family,
    Origin,
    PathAttributes,
    PrefixKey,
    SegmentType,
    prefix_key,
)
from tests.bgp.codec.test_messages import MARKER, body_of, h

CTX = CodecContext()  # eBGP, 4-octet ASNs, 4096-octet messages
NH = IPv4Address("198.51.100.1")
NH6 = IPv6Address("2001:db8::1")
LL6 = IPv6Address("fe80::1")
ATTRS = PathAttributes(
    origin=Origin.IGP, as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (65001,)),)), next_hop=NH, med=0
)


def k4(text: str) -> PrefixKey:
    return prefix_key(IPv4Network(text))


def k6(text: str) -> PrefixKey:
    return prefix_key(IPv6Network(text))


def golden(wire: bytes, model: Update, ctx: CodecContext = CTX) -> None:
    msg_type, body = body_of(wire)
    assert msg_type == 2
    assert decode_update(body, ctx) == model
    assert encode_update(model, ctx) == wire


def test_ipv4_update_golden() -> None:
    wire = h(f"""
        {MARKER} 003e 02
        0003 10 0a01                # withdrawn routes length 3: 10.1.0.0/16
        001b                        # total path attribute length 27
        40 01 01 00                 # ORIGIN IGP
        40 02 06 02 01 0000fde9     # AS_PATH 65001
        40 03 04 c6336401           # NEXT_HOP 198.51.100.1
        80 04 04 00000000           # MED 0
        18 cb0071                   # NLRI 203.0.113.0/24
        20 cb00710a                 # NLRI 203.0.113.10/32
    """)
    golden(
        wire,
        Update(
            reach=(Reach(IPV4_UNICAST, ATTRS, (k4("203.0.113.0/24"), k4("203.0.113.10/32"))),),
            unreach=(Unreach(IPV4_UNICAST, (k4("10.1.0.0/16"),)),),
        ),
    )


def test_ipv6_mp_reach_with_link_local_next_hop_golden() -> None:
    wire = h(f"""
        {MARKER} 0053 02
        0000 003c
        80 0e 2c 0002 01            # MP_REACH_NLRI, 44 octets: AFI 2, SAFI 1
        20                          # next hop length 32: global + link-local (RFC 2545)
        20010db8000000000000000000000001 fe800000000000000000000000000001
        00                          # reserved
        30 20010db80001             # 2001:db8:1::/48
        40 01 01 00
        40 02 06 02 01 0000fde9
    """)
    attrs = replace(ATTRS, next_hop=NH6, link_local_next_hop=LL6, med=None)
    golden(wire, Update(reach=(Reach(IPV6_UNICAST, attrs, (k6("2001:db8:1::/48"),)),)))


def test_ipv6_mp_unreach_golden() -> None:
    wire = h(f"{MARKER} 0024 02 0000 000d  80 0f 0a 0002 01 30 20010db80001")
    golden(wire, Update(unreach=(Unreach(IPV6_UNICAST, (k6("2001:db8:1::/48"),)),)))


def test_ipv4_and_ipv6_reach_and_ipv6_unreach_in_one_update_golden() -> None:
    wire = h(f"""
        {MARKER} 005c 02
        0000 0040
        80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001  # MP first (RFC 7606 §5.1)
        80 0f 0a 0002 01 30 20010db80002
        40 01 01 00
        40 02 06 02 01 0000fde9
        40 03 04 c6336401
        20 cb00710a
    """)
    attrs = replace(ATTRS, med=None)
    golden(
        wire,
        Update(
            reach=(
                Reach(IPV4_UNICAST, attrs, (k4("203.0.113.10/32"),)),
                Reach(IPV6_UNICAST, replace(attrs, next_hop=NH6), (k6("2001:db8:1::/48"),)),
            ),
            unreach=(Unreach(IPV6_UNICAST, (k6("2001:db8:2::/48"),)),),
        ),
    )


def test_end_of_rib_golden_ipv4_is_an_empty_update() -> None:
    wire = h(f"{MARKER} 0017 02 0000 0000")
    assert encode_end_of_rib(IPV4_UNICAST) == wire
    golden(wire, Update(end_of_rib=IPV4_UNICAST))


def test_end_of_rib_golden_ipv6_is_a_lone_empty_mp_unreach() -> None:
    wire = h(f"{MARKER} 001d 02 0000 0006 80 0f 03 0002 01")
    assert encode_end_of_rib(IPV6_UNICAST) == wire
    golden(wire, Update(end_of_rib=IPV6_UNICAST))


def test_end_of_rib_ipv4_sent_as_empty_mp_unreach_is_recognized() -> None:
    assert decode_update(h("0000 0006 80 0f 03 0001 01"), CTX) == Update(end_of_rib=IPV4_UNICAST)


def test_empty_mp_unreach_with_other_attributes_is_not_end_of_rib() -> None:
    update = decode_update(h("0000 000a 80 0f 03 0002 01  40 01 01 00"), CTX)
    assert update == Update()


def test_add_path_golden() -> None:
    ctx = CodecContext(add_path_receive=frozenset({IPV4_UNICAST}), add_path_send=frozenset({IPV4_UNICAST}))
    wire = h(f"""
        {MARKER} 004b 02
        0007 00000007 10 0a01       # path id 7: 10.1.0.0/16
        001b
        40 01 01 00
        40 02 06 02 01 0000fde9
        40 03 04 c6336401
        80 04 04 00000000
        00000001 20 cb00710a        # path id 1: 203.0.113.10/32
        00000002 20 cb00710a        # path id 2: the same prefix, another path
    """)
    prefix = k4("203.0.113.10/32")
    golden(
        wire,
        Update(
            reach=(Reach(IPV4_UNICAST, ATTRS, (prefix, prefix), (1, 2)),),
            unreach=(Unreach(IPV4_UNICAST, (k4("10.1.0.0/16"),), (7,)),),
        ),
        ctx,
    )


RFC8950 = h(f"""
    {MARKER} 0041 02
    0000 002a
    80 0e 1a 0001 01 10 20010db8000000000000000000000001 00 20 cb00710a  # IPv4 NLRI, IPv6 next hop
    40 01 01 00
    40 02 06 02 01 0000fde9
""")


def test_rfc8950_ipv4_routes_with_an_ipv6_next_hop_golden() -> None:
    ctx = CodecContext(extended_next_hop=frozenset({IPV4_UNICAST}))
    attrs = replace(ATTRS, next_hop=NH6, med=None)
    golden(RFC8950, Update(reach=(Reach(IPV4_UNICAST, attrs, (k4("203.0.113.10/32"),)),)), ctx)


def test_rfc8950_next_hop_without_the_capability_is_a_session_reset() -> None:
    with pytest.raises(BgpError) as info:
        decode_update(body_of(RFC8950)[1], CTX)
    assert (info.value.code, info.value.subcode, info.value.action) == (3, 9, ErrorAction.SESSION_RESET)
    with pytest.raises(ValueError, match="RFC 8950"):
        build_updates(IPV4_UNICAST, replace(ATTRS, next_hop=NH6), [k4("203.0.113.10/32")], CTX)


def test_decode_message_dispatches_update_with_cache() -> None:
    msg_type, body = body_of(
        encode_update(Update(reach=(Reach(IPV4_UNICAST, ATTRS, (k4("10.0.0.0/8"),)),)), CTX)
    )
    cache: dict[bytes, PathAttributes] = {}
    first = decode_message(msg_type, body, CTX, cache)
    second = decode_message(msg_type, body, CTX, cache)
    assert isinstance(first, Update)
    assert isinstance(second, Update)
    assert first.reach[0].attributes is second.reach[0].attributes


# -- Builders -----------------------------------------------------------------------------------


def decode_all(
    messages: list[bytes], ctx: CodecContext, cache: dict[bytes, PathAttributes] | None = None
) -> list[Update]:
    framer = Framer(ctx.max_message)
    framer.feed(b"".join(messages))
    out = []
    while (message := framer.next_message()) is not None:
        assert message[0] == 2
        out.append(decode_update(message[1], ctx, cache))
    return out


def test_build_updates_packs_ipv4_prefixes_and_interns_the_attributes() -> None:
    keys = [(int(IPv4Address("10.0.0.0")) + i) << 8 | 32 for i in range(2000)]
    messages = build_updates(IPV4_UNICAST, ATTRS, keys, CTX)
    assert len(messages) == 3  # (4096 - 19 - 4 - 27) // 5 = 809 per message
    assert all(len(m) <= 4096 for m in messages)
    cache: dict[bytes, PathAttributes] = {}
    updates = decode_all(messages, CTX, cache)
    assert [p for u in updates for p in u.reach[0].prefixes] == keys
    assert all(u.reach[0].attributes is updates[0].reach[0].attributes for u in updates)
    assert updates[0].reach[0].attributes == ATTRS
    assert len(cache) == 1


def test_build_updates_ipv6_uses_extended_length_mp_reach_and_interns() -> None:
    attrs = replace(ATTRS, next_hop=NH6)
    keys = [k6(f"2001:db8:{i:x}::/48") for i in range(1000)]
    messages = build_updates(IPV6_UNICAST, attrs, keys, CTX)
    assert len(messages) == 2
    assert messages[0][23] & 0x10  # MP_REACH_NLRI flags: Extended Length
    cache: dict[bytes, PathAttributes] = {}
    updates = decode_all(messages, CTX, cache)
    assert [p for u in updates for p in u.reach[0].prefixes] == keys
    assert updates[0].reach[0].attributes == attrs
    assert updates[1].reach[0].attributes is updates[0].reach[0].attributes


def test_build_updates_with_extended_messages_fills_65535_octets() -> None:
    ctx = CodecContext(extended_message=True)
    keys = [(int(IPv4Address("10.0.0.0")) + i) << 8 | 32 for i in range(20000)]
    messages = build_updates(IPV4_UNICAST, ATTRS, keys, ctx)
    assert len(messages) == 2
    assert 4096 < len(messages[0]) <= MAX_EXTENDED_MESSAGE
    assert [p for u in decode_all(messages, ctx) for p in u.reach[0].prefixes] == keys


def test_build_updates_with_add_path_send() -> None:
    ctx = CodecContext(add_path_receive=frozenset({IPV6_UNICAST}), add_path_send=frozenset({IPV6_UNICAST}))
    attrs = replace(ATTRS, next_hop=NH6)
    keys = [k6("2001:db8::/32")] * 3
    (message,) = build_updates(IPV6_UNICAST, attrs, keys, ctx, path_ids=[1, 2, 3])
    (update,) = decode_all([message], ctx)
    assert update.reach == (Reach(IPV6_UNICAST, attrs, tuple(keys), (1, 2, 3)),)


@pytest.mark.parametrize(
    ("family", "keys", "count"),
    [
        pytest.param(IPV4_UNICAST, [(0x0A000000 + i) << 8 | 32 for i in range(1500)], 2, id="ipv4"),
        pytest.param(IPV6_UNICAST, [k6(f"2001:db8:{i:x}::/48") for i in range(1500)], 3, id="ipv6"),
    ],
)
def test_build_withdrawals(family: Family, keys: list[PrefixKey], count: int) -> None:
    messages = build_withdrawals(family, keys, CTX)
    assert len(messages) == count
    assert all(len(m) <= 4096 for m in messages)
    updates = decode_all(messages, CTX)
    assert all(not u.reach and len(u.unreach) == 1 and u.unreach[0].family == family for u in updates)
    assert [p for u in updates for p in u.unreach[0].prefixes] == keys


def test_builders_with_no_prefixes_build_nothing() -> None:
    assert build_updates(IPV4_UNICAST, ATTRS, [], CTX) == []
    assert build_withdrawals(IPV6_UNICAST, [], CTX) == []


@pytest.mark.parametrize(
    ("update", "match"),
    [
        pytest.param(
            Update(reach=(Reach(IPV4_UNICAST, ATTRS, (k4("10.0.0.0/8"),)),) * 2),
            "more route sets",
            id="two-ipv4-route-sets",
        ),
        pytest.param(
            Update(
                reach=(
                    Reach(IPV4_UNICAST, ATTRS, (k4("10.0.0.0/8"),)),
                    Reach(IPV6_UNICAST, replace(ATTRS, next_hop=NH6, med=5), (k6("2001:db8::/32"),)),
                )
            ),
            "one attribute set",
            id="two-attribute-sets",
        ),
        pytest.param(
            Update(reach=(Reach(IPV4_UNICAST, ATTRS, (k6("2001:db8::/32"),)),)), "is not", id="wrong-family"
        ),
        pytest.param(
            Update(reach=(Reach(IPV6_UNICAST, ATTRS, (k6("2001:db8::/32"),)),)), "IPv6 next hop", id="v4-nh"
        ),
        pytest.param(
            Update(reach=(Reach(IPV4_UNICAST, ATTRS, tuple(k4("10.0.0.1/32") for _ in range(1000))),)),
            "exceeds",
            id="too-big",
        ),
        pytest.param(
            Update(unreach=(Unreach(IPV4_UNICAST, (k4("10.0.0.0/8"),)),), end_of_rib=IPV4_UNICAST),
            "End-of-RIB",
            id="end-of-rib-with-routes",
        ),
    ],
)
def test_encode_update_refuses_what_one_message_cannot_say(update: Update, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_update(update, CTX)


# -- Interning ----------------------------------------------------------------------------------


def test_cache_key_covers_the_context() -> None:
    """The same attribute bytes decode differently for iBGP and eBGP peers (LOCAL_PREF); one shared
    cache must not hand the iBGP result to the eBGP session."""
    ibgp = CodecContext(external=False)
    attrs = replace(ATTRS, local_pref=100)
    (message,) = build_updates(IPV4_UNICAST, attrs, [k4("10.0.0.0/8")], ibgp)
    body = body_of(message)[1]
    cache: dict[bytes, PathAttributes] = {}
    assert decode_update(body, ibgp, cache).reach[0].attributes.local_pref == 100
    external = decode_update(body, CTX, cache)
    assert external.reach[0].attributes.local_pref is None
    assert [e.action for e in external.errors] == [ErrorAction.ATTRIBUTE_DISCARD]


def test_attributes_with_errors_are_not_interned() -> None:
    body = h("0000 0018  40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c6336401  40 06 01 00  08 0a")
    cache: dict[bytes, PathAttributes] = {}
    for _ in range(2):
        update = decode_update(body, CTX, cache)
        assert [e.action for e in update.errors] == [ErrorAction.ATTRIBUTE_DISCARD]
    assert cache == {}


def test_cache_is_flushed_at_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(update_module, "CACHE_LIMIT", 4)
    cache: dict[bytes, PathAttributes] = {}
    for med in range(10):
        (message,) = build_updates(IPV4_UNICAST, replace(ATTRS, med=med), [k4("10.0.0.0/8")], CTX)
        assert decode_update(body_of(message)[1], CTX, cache).reach[0].attributes.med == med
        assert len(cache) <= 4
