"""RFC 7606 revised UPDATE error handling: every treat-as-withdraw, attribute-discard and session-reset
case, with the NOTIFICATION code/subcode each error carries (RFC 4271 §6.3)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Network

import pytest

from bgp.codec.errors import BgpError, ErrorAction
from bgp.codec.messages import CodecContext
from bgp.codec.update import Unreach, Update, decode_update
from bgp.types import AS_TRANS, IPV4_UNICAST, IPV6_UNICAST, PathAttributes, prefix_key
from tests.bgp.codec.test_messages import h

EBGP4 = CodecContext()
IBGP4 = CodecContext(external=False)
EBGP2 = CodecContext(four_octet_as=False)

ORIGIN = "40 01 01 00"
AS_PATH = "40 02 06 02 01 0000fde9"
AS_PATH2 = "40 02 04 02 01 fde9"  # the same path for a 2-octet AS peer
NEXT_HOP = "40 03 04 c6336401"
NLRI = "20 cb00710a"  # 203.0.113.10/32
PREFIX = 0xCB00710A << 8 | 32
MP_NH = "20010db8000000000000000000000001"
MP_REACH = f"80 0e 1c 0002 01 10 {MP_NH} 00 30 20010db80001"  # 2001:db8:1::/48
MP_PREFIX = prefix_key(IPv6Network("2001:db8:1::/48"))

TAW = ErrorAction.TREAT_AS_WITHDRAW
DISCARD = ErrorAction.ATTRIBUTE_DISCARD


def body(attrs: str, nlri: str = NLRI, withdrawn: str = "") -> bytes:
    a, n, w = h(attrs), h(nlri), h(withdrawn)
    return len(w).to_bytes(2, "big") + w + len(a).to_bytes(2, "big") + a + n


def codes(update: Update) -> list[tuple[int, int, ErrorAction]]:
    return [(e.code, e.subcode, e.action) for e in update.errors]


# -- treat-as-withdraw --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "subcode", "ctx"),
    [
        pytest.param(f"40 01 02 0000 {AS_PATH} {NEXT_HOP}", 5, EBGP4, id="origin-length-7.1"),
        pytest.param(f"40 01 01 03 {AS_PATH} {NEXT_HOP}", 6, EBGP4, id="origin-value-7.1"),
        pytest.param(f"c0 01 01 00 {AS_PATH} {NEXT_HOP}", 4, EBGP4, id="origin-flags-3c"),
        pytest.param(
            f"{ORIGIN} 40 02 06 02 02 0000fde9 {NEXT_HOP}", 11, EBGP4, id="as-path-segment-overrun-7.2"
        ),
        pytest.param(f"{ORIGIN} 40 02 02 02 00 {NEXT_HOP}", 11, EBGP4, id="as-path-empty-segment-7.2"),
        pytest.param(
            f"{ORIGIN} 40 02 06 05 01 0000fde9 {NEXT_HOP}", 11, EBGP4, id="as-path-segment-type-7.2"
        ),
        pytest.param(
            f"{ORIGIN} 40 02 07 02 01 0000fde9 02 {NEXT_HOP}", 11, EBGP4, id="as-path-lone-octet-7.2"
        ),
        pytest.param(f"{ORIGIN} 40 02 06 02 01 00000000 {NEXT_HOP}", 11, EBGP4, id="as-path-as0-rfc7607"),
        pytest.param(
            f"{ORIGIN} 40 02 06 03 01 0000fde9 {NEXT_HOP}", 11, EBGP4, id="as-path-confed-from-ebgp"
        ),
        pytest.param(f"{ORIGIN} 80 02 06 02 01 0000fde9 {NEXT_HOP}", 4, EBGP4, id="as-path-flags-3c"),
        pytest.param(f"{ORIGIN} {AS_PATH} 40 03 05 c633640101", 5, EBGP4, id="next-hop-length-7.3"),
        pytest.param(f"{ORIGIN} {AS_PATH} 40 03 04 00000000", 8, EBGP4, id="next-hop-zero"),
        pytest.param(f"{ORIGIN} {AS_PATH} 40 03 04 7f000001", 8, EBGP4, id="next-hop-loopback"),
        pytest.param(f"{ORIGIN} {AS_PATH} 40 03 04 e0000001", 8, EBGP4, id="next-hop-multicast"),
        pytest.param(f"{ORIGIN} {AS_PATH} 40 03 04 ffffffff", 8, EBGP4, id="next-hop-broadcast"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 04 03 000064", 5, EBGP4, id="med-length-7.4"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 40 04 04 00000064", 4, EBGP4, id="med-flags-3c"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 40 05 03 000064", 5, IBGP4, id="local-pref-length-7.5"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 05 04 00000064", 4, IBGP4, id="local-pref-flags-3c"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 06 000000000000", 9, EBGP4, id="communities-7.8"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 00", 9, EBGP4, id="communities-empty-7.8"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 09 03 0a0000", 5, IBGP4, id="originator-id-7.9"),
        pytest.param(
            f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 0a 06 0a0000010a00", 5, IBGP4, id="cluster-list-7.10"
        ),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 0a 00", 5, IBGP4, id="cluster-list-empty-7.10"),
        pytest.param(
            f"{ORIGIN} {AS_PATH} {NEXT_HOP} c0 10 07 00000000000000", 9, EBGP4, id="ext-communities-7.14"
        ),
        pytest.param(
            f"{ORIGIN} {AS_PATH} {NEXT_HOP} c0 20 0d {'00' * 13}", 9, EBGP4, id="large-communities-8092"
        ),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 04 08 00000064", 5, EBGP4, id="attribute-overrun-4"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 04", 1, EBGP4, id="attribute-header-truncated-4"),
        pytest.param(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 90 04 00", 1, EBGP4, id="extended-header-truncated-4"),
    ],
)
def test_treat_as_withdraw(attrs: str, subcode: int, ctx: CodecContext) -> None:
    update = decode_update(body(attrs), ctx)
    assert update.reach == ()
    assert update.unreach == (Unreach(IPV4_UNICAST, (PREFIX,)),)
    assert (3, subcode, TAW) in codes(update)
    assert all(e.action in (TAW, DISCARD) for e in update.errors)


@pytest.mark.parametrize(
    ("attrs", "missing"),
    [
        pytest.param(f"{AS_PATH} {NEXT_HOP}", [1], id="origin"),
        pytest.param(f"{ORIGIN} {NEXT_HOP}", [2], id="as-path"),
        pytest.param(f"{ORIGIN} {AS_PATH}", [3], id="next-hop"),
        pytest.param("", [1, 2, 3], id="no-attributes-at-all"),
    ],
)
def test_missing_well_known_attribute_is_treat_as_withdraw(attrs: str, missing: list[int]) -> None:
    # RFC 7606 §3 d; the NOTIFICATION data would be the missing type code (RFC 4271 §6.3).
    update = decode_update(body(attrs), EBGP4)
    assert update.reach == ()
    assert update.unreach == (Unreach(IPV4_UNICAST, (PREFIX,)),)
    assert [(e.subcode, e.data, e.action) for e in update.errors] == [(3, bytes([t]), TAW) for t in missing]


def test_mp_reach_needs_no_next_hop_attribute() -> None:
    update = decode_update(body(f"{MP_REACH} {ORIGIN} {AS_PATH}", nlri=""), EBGP4)
    assert update.errors == ()
    assert update.reach[0].prefixes == (MP_PREFIX,)


def test_next_hop_attribute_is_ignored_when_only_mp_reach_carries_routes() -> None:
    # RFC 4760 §3: a receiver SHOULD ignore NEXT_HOP then, so even a malformed one withdraws nothing.
    update = decode_update(body(f"{MP_REACH} {ORIGIN} {AS_PATH} 40 03 04 00000000", nlri=""), EBGP4)
    assert update.errors == ()
    assert update.reach[0].prefixes == (MP_PREFIX,)


def test_mp_reach_without_origin_is_withdrawn() -> None:
    update = decode_update(body(f"{MP_REACH} {AS_PATH}", nlri=""), EBGP4)
    assert update.unreach == (Unreach(IPV6_UNICAST, (MP_PREFIX,)),)
    assert codes(update) == [(3, 3, TAW)]


def test_mp_reach_with_wrong_flags_withdraws_its_prefixes() -> None:
    update = decode_update(body(f"c{MP_REACH[1:]} {ORIGIN} {AS_PATH}", nlri=""), EBGP4)
    assert update.reach == ()
    assert update.unreach == (Unreach(IPV6_UNICAST, (MP_PREFIX,)),)
    assert codes(update) == [(3, 4, TAW)]


def test_treat_as_withdraw_withdraws_both_families_and_keeps_explicit_withdrawals() -> None:
    update = decode_update(
        body(f"{MP_REACH} 40 01 01 07 {AS_PATH} {NEXT_HOP}", withdrawn="10 0a01"),
        EBGP4,
    )
    assert update.reach == ()
    assert update.unreach == (
        Unreach(IPV4_UNICAST, (0x0A010000 << 8 | 16,)),
        Unreach(IPV4_UNICAST, (PREFIX,)),
        Unreach(IPV6_UNICAST, (MP_PREFIX,)),
    )


def test_malformed_attribute_in_an_update_without_nlri_only_reports() -> None:
    update = decode_update(body("40 01 01 07", nlri="", withdrawn="10 0a01"), EBGP4)
    assert update.reach == ()
    assert update.unreach == (Unreach(IPV4_UNICAST, (0x0A010000 << 8 | 16,)),)
    assert codes(update) == [(3, 6, TAW)]


def test_strongest_action_wins_and_every_error_is_reported() -> None:
    # RFC 7606 §3 h: attribute-discard (AGGREGATOR) plus treat-as-withdraw (MED) -> treat-as-withdraw.
    update = decode_update(body(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 80 04 01 00 c0 07 01 00"), EBGP4)
    assert update.reach == ()
    assert codes(update) == [(3, 5, TAW), (3, 5, DISCARD)]


# -- attribute discard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "subcode", "ctx", "field", "kept"),
    [
        pytest.param("40 06 01 00", 5, EBGP4, "atomic_aggregate", False, id="atomic-aggregate-length-7.6"),
        pytest.param("c0 06 00", 4, EBGP4, "atomic_aggregate", False, id="atomic-aggregate-flags"),
        pytest.param("c0 07 07 0000fde9 c63364", 5, EBGP4, "aggregator", None, id="aggregator-length-7.7"),
        pytest.param(
            "c0 07 08 0000fde9 c6336401", 5, EBGP2, "aggregator", None, id="aggregator-8-to-2-octet"
        ),
        pytest.param("80 07 08 0000fde9 c6336401", 4, EBGP4, "aggregator", None, id="aggregator-flags"),
        pytest.param("40 05 04 00000064", 1, EBGP4, "local_pref", None, id="local-pref-from-ebgp-7.5"),
        pytest.param("80 04 04 00000001 80 04 04 00000002", 1, EBGP4, "med", 1, id="repeated-attribute-3g"),
        pytest.param(
            "c0 11 06 02 01 00030d40", 9, EBGP4, "as_path", None, id="as4-path-between-new-speakers"
        ),
        pytest.param(
            "c0 12 08 00030d40 c6336401", 9, EBGP4, "aggregator", None, id="as4-aggregator-new-speakers"
        ),
        pytest.param("c0 11 05 02 01 000300", 9, EBGP2, "as_path", None, id="as4-path-malformed-6793"),
        pytest.param("c0 11 00", 9, EBGP2, "as_path", None, id="as4-path-empty-6793"),
        pytest.param("c0 11 06 02 01 00000000", 9, EBGP2, "as_path", None, id="as4-path-as0"),
        pytest.param("c0 12 06 0003 c6336401", 9, EBGP2, "aggregator", None, id="as4-aggregator-length-6793"),
        pytest.param("80 11 06 02 01 00030d40", 4, EBGP2, "as_path", None, id="as4-path-flags"),
        pytest.param("80 0e 05 0019 46 00 00", 9, EBGP4, "next_hop", None, id="mp-reach-foreign-family"),
        pytest.param("80 0f 03 0019 46", 9, EBGP4, "next_hop", None, id="mp-unreach-foreign-family"),
    ],
)
def test_attribute_discard(attrs: str, subcode: int, ctx: CodecContext, field: str, kept: object) -> None:
    as_path = AS_PATH if ctx.four_octet_as else AS_PATH2
    update = decode_update(body(f"{ORIGIN} {as_path} {NEXT_HOP} {attrs}"), ctx)
    assert codes(update) == [(3, subcode, DISCARD)]
    (reach,) = update.reach
    assert reach.prefixes == (PREFIX,)
    value = getattr(reach.attributes, field)
    if field == "as_path":
        assert value.asns() == (65001,)
    elif field == "next_hop":
        assert value == IPv4Address("198.51.100.1")
    else:
        assert value == kept


# -- session reset ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "subcode"),
    [
        pytest.param(h("0000 00ff 40 01 01 00"), 1, id="total-attribute-length-overruns"),
        pytest.param(h("00ff 0000"), 1, id="withdrawn-length-overruns"),
        pytest.param(h("0002 100a"), 1, id="no-room-for-attribute-length"),
        pytest.param(body(f"{ORIGIN} {AS_PATH} {NEXT_HOP}", nlri="21 cb00710a00"), 10, id="nlri-length-33"),
        pytest.param(body(f"{ORIGIN} {AS_PATH} {NEXT_HOP}", nlri="20 cb0071"), 10, id="nlri-truncated"),
        pytest.param(body("", nlri="", withdrawn="21 0a000000 00"), 10, id="withdrawn-malformed"),
        pytest.param(
            body(f"{MP_REACH} {MP_REACH} {ORIGIN} {AS_PATH}", nlri=""), 1, id="repeated-mp-reach-3g"
        ),
        pytest.param(body("80 0f 03 000201 80 0f 03 000201", nlri=""), 1, id="repeated-mp-unreach-3g"),
        pytest.param(
            body(f"80 0e 18 0002 01 0c {'00' * 12} 00 30 20010db80001 {ORIGIN} {AS_PATH}", nlri=""),
            9,
            id="mp-next-hop-length-7.11",
        ),
        pytest.param(
            body(f"80 0e 0c 0001 01 04 c6336401 00 20 cb0071 {ORIGIN} {AS_PATH}", nlri=""),
            10,
            id="mp-nlri-truncated",
        ),
        pytest.param(
            body(f"80 0e 0b 0002 01 10 {MP_NH[:8]} 00 81 00 {ORIGIN} {AS_PATH}", nlri=""),
            9,
            id="mp-next-hop-overruns",
        ),
        pytest.param(body(f"80 0e 04 0002 0100 {ORIGIN} {AS_PATH}", nlri=""), 9, id="mp-reach-too-short"),
        pytest.param(body("80 0f 02 0002", nlri=""), 9, id="mp-unreach-too-short"),
        pytest.param(body("80 0f 05 0002 01 81 00", nlri=""), 10, id="mp-unreach-prefix-length-129"),
        pytest.param(
            body(f"{ORIGIN} {AS_PATH} 80 0e 30 0002 01 10", nlri=""), 5, id="mp-reach-overruns-block"
        ),
        pytest.param(body(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 40 63 01 00"), 2, id="unrecognized-well-known"),
    ],
)
def test_session_reset(wire: bytes, subcode: int) -> None:
    with pytest.raises(BgpError) as info:
        decode_update(wire, EBGP4)
    assert (info.value.code, info.value.subcode, info.value.action) == (3, subcode, ErrorAction.SESSION_RESET)


def test_unrecognized_well_known_attribute_carries_the_attribute_as_data() -> None:
    with pytest.raises(BgpError) as info:
        decode_update(body(f"{ORIGIN} {AS_PATH} {NEXT_HOP} 40 63 02 abcd"), EBGP4)
    assert info.value.data == h("40 63 02 abcd")


def test_as_trans_path_without_as4_path_stays_as_trans() -> None:
    update = decode_update(body(f"{ORIGIN} 40 02 04 02 01 5ba0 {NEXT_HOP}"), EBGP2)
    attrs: PathAttributes = update.reach[0].attributes
    assert attrs.as_path.asns() == (AS_TRANS,)
