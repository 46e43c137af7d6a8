"""Golden vectors for every path attribute, and the RFC 6793 4-octet AS transition (AS4_PATH merge)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from bgp.codec.attributes import (
    AttrType,
    decode_attributes,
    encode_attributes,
    merge_as4_path,
)
from bgp.codec.messages import CodecContext
from bgp.types import (
    AS_TRANS,
    NO_EXPORT,
    Aggregator,
    AsPath,
    AsPathSegment,
    LargeCommunity,
    Origin,
    PathAttributes,
    SegmentType,
    UnknownAttribute,
)
from tests.bgp.codec.test_messages import h

IBGP4 = CodecContext(four_octet_as=True, external=False)
EBGP4 = CodecContext(four_octet_as=True, external=True)
IBGP2 = CodecContext(four_octet_as=False, external=False)
EBGP2 = CodecContext(four_octet_as=False, external=True)

SEQ = SegmentType.AS_SEQUENCE
SET = SegmentType.AS_SET
CONFED_SEQ = SegmentType.AS_CONFED_SEQUENCE
CONFED_SET = SegmentType.AS_CONFED_SET
NH = IPv4Address("198.51.100.1")

BASE_HEX = "40 01 01 00  40 02 00"  # ORIGIN IGP, empty AS_PATH
BASE = PathAttributes(origin=Origin.IGP)


def path(*segments: tuple[SegmentType, tuple[int, ...]]) -> AsPath:
    return AsPath(tuple(AsPathSegment(t, asns) for t, asns in segments))


def round_trip(wire: bytes, ctx: CodecContext, *, next_hop: bool = False) -> PathAttributes:
    """Decode an attribute block cleanly and check it encodes back to the same bytes."""
    decoded = decode_attributes(wire, 0, len(wire), ctx)
    assert decoded.errors == []
    assert encode_attributes(decoded.attributes, ctx, next_hop=next_hop) == wire
    return decoded.attributes


@pytest.mark.parametrize(
    ("attr_hex", "ctx", "expected"),
    [
        pytest.param("40 03 04 c6336401", EBGP4, replace(BASE, next_hop=NH), id="NEXT_HOP"),
        pytest.param("80 04 04 00000064", EBGP4, replace(BASE, med=100), id="MULTI_EXIT_DISC"),
        pytest.param("40 05 04 000000c8", IBGP4, replace(BASE, local_pref=200), id="LOCAL_PREF"),
        pytest.param("40 06 00", EBGP4, replace(BASE, atomic_aggregate=True), id="ATOMIC_AGGREGATE"),
        pytest.param(
            "c0 07 08 0000fde9 c6336401",
            EBGP4,
            replace(BASE, aggregator=Aggregator(65001, NH)),
            id="AGGREGATOR-4",
        ),
        pytest.param(
            "c0 07 06 fde9 c6336401",
            EBGP2,
            replace(BASE, aggregator=Aggregator(65001, NH)),
            id="AGGREGATOR-2",
        ),
        pytest.param(
            "c0 08 08 fde80064 ffffff01",
            EBGP4,
            replace(BASE, communities=(0xFDE80064, NO_EXPORT)),
            id="COMMUNITIES",
        ),
        pytest.param(
            "80 09 04 0a000001",
            IBGP4,
            replace(BASE, originator_id=IPv4Address("10.0.0.1")),
            id="ORIGINATOR_ID",
        ),
        pytest.param(
            "80 0a 08 0a000001 0a000002",
            IBGP4,
            replace(BASE, cluster_list=(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))),
            id="CLUSTER_LIST",
        ),
        pytest.param(
            "c0 10 10 0002fde900000064 0102c633640100c8",  # RT 65001:100, RT 198.51.100.1:200 (RFC 4360)
            EBGP4,
            replace(
                BASE,
                extended_communities=(h("0002fde900000064"), h("0102c633640100c8")),
            ),
            id="EXTENDED_COMMUNITIES",
        ),
        pytest.param(
            "c0 20 0c 0000fde9 00000001 00000002",
            EBGP4,
            replace(BASE, large_communities=(LargeCommunity(65001, 1, 2),)),
            id="LARGE_COMMUNITIES",
        ),
        pytest.param(
            "e0 63 03 010203",  # type 99, optional transitive, Partial already set
            EBGP4,
            replace(BASE, unknown=(UnknownAttribute(0xE0, 99, b"\x01\x02\x03"),)),
            id="unknown-optional-transitive",
        ),
        pytest.param(
            "d0 20 0108" + " 0000fde9 00000001 00000002" * 22,  # 264 octets: Extended Length flag (0x10)
            EBGP4,
            replace(BASE, large_communities=(LargeCommunity(65001, 1, 2),) * 22),
            id="extended-length",
        ),
    ],
)
def test_attribute_golden(attr_hex: str, ctx: CodecContext, expected: PathAttributes) -> None:
    wire = h(BASE_HEX + attr_hex)
    assert round_trip(wire, ctx, next_hop=expected.next_hop is not None) == expected


@pytest.mark.parametrize(
    ("attr_hex", "ctx", "expected"),
    [
        pytest.param("40 01 01 01  40 02 00", EBGP4, PathAttributes(origin=Origin.EGP), id="ORIGIN-EGP"),
        pytest.param(
            "40 01 01 02  40 02 00", EBGP4, PathAttributes(origin=Origin.INCOMPLETE), id="ORIGIN-INCOMPLETE"
        ),
        pytest.param(
            "40 01 01 00  40 02 18  02 03 0000fde9 0000fdea 00030d40  01 02 00000064 000000c8",
            EBGP4,
            replace(BASE, as_path=path((SEQ, (65001, 65002, 200000)), (SET, (100, 200)))),
            id="AS_PATH-4-octet",
        ),
        pytest.param(
            "40 01 01 00  40 02 06  02 02 fde9 fdea",
            EBGP2,
            replace(BASE, as_path=path((SEQ, (65001, 65002)))),
            id="AS_PATH-2-octet",
        ),
        pytest.param(
            "40 01 01 00  40 02 16  03 01 0000fc00  04 02 0000fc01 0000fc02  02 01 0000fde9",
            IBGP4,
            replace(
                BASE, as_path=path((CONFED_SEQ, (64512,)), (CONFED_SET, (64513, 64514)), (SEQ, (65001,)))
            ),
            id="AS_PATH-confederation",
        ),
    ],
)
def test_origin_and_as_path_golden(attr_hex: str, ctx: CodecContext, expected: PathAttributes) -> None:
    assert round_trip(h(attr_hex), ctx) == expected


ALL_ATTRIBUTES = h("""
    40 01 01 00                               # ORIGIN IGP
    40 02 0e 02 03 0000fde9 0000fdea 00030d40 # AS_PATH 65001 65002 200000
    40 03 04 c6336401                         # NEXT_HOP 198.51.100.1
    80 04 04 00000064                         # MED 100
    40 05 04 000000c8                         # LOCAL_PREF 200
    40 06 00                                  # ATOMIC_AGGREGATE
    c0 07 08 0000fde9 c6336401                # AGGREGATOR 65001 198.51.100.1
    c0 08 04 ffffff01                         # COMMUNITIES NO_EXPORT
    80 09 04 0a000001                         # ORIGINATOR_ID 10.0.0.1
    80 0a 04 0a000002                         # CLUSTER_LIST 10.0.0.2
    c0 10 08 0002fde900000064                 # EXTENDED_COMMUNITIES RT 65001:100
    c0 20 0c 0000fde9 00000001 00000002       # LARGE_COMMUNITIES 65001:1:2
    e0 63 03 010203                           # unknown type 99
""")


def test_all_attributes_in_one_block_in_type_code_order() -> None:
    attrs = round_trip(ALL_ATTRIBUTES, IBGP4, next_hop=True)
    assert attrs == PathAttributes(
        origin=Origin.IGP,
        as_path=path((SEQ, (65001, 65002, 200000))),
        next_hop=NH,
        med=100,
        local_pref=200,
        atomic_aggregate=True,
        aggregator=Aggregator(65001, NH),
        communities=(NO_EXPORT,),
        originator_id=IPv4Address("10.0.0.1"),
        cluster_list=(IPv4Address("10.0.0.2"),),
        extended_communities=(h("0002fde900000064"),),
        large_communities=(LargeCommunity(65001, 1, 2),),
        unknown=(UnknownAttribute(0xE0, 99, b"\x01\x02\x03"),),
    )


def test_unknown_optional_transitive_gets_the_partial_bit() -> None:
    wire = h(BASE_HEX + "c0 63 01 aa")  # Partial clear on receipt
    decoded = decode_attributes(wire, 0, len(wire), EBGP4)
    assert decoded.attributes.unknown == (UnknownAttribute(0xE0, 99, b"\xaa"),)
    assert encode_attributes(decoded.attributes, EBGP4, next_hop=False) == h(BASE_HEX + "e0 63 01 aa")


def test_unknown_optional_non_transitive_is_quietly_dropped() -> None:
    wire = h(BASE_HEX + "80 63 01 aa")
    decoded = decode_attributes(wire, 0, len(wire), EBGP4)
    assert decoded.attributes == BASE
    assert decoded.errors == []


def test_extended_length_flag_on_a_short_attribute_is_accepted() -> None:
    wire = h("50 01 0001 00  50 02 0000")  # ORIGIN and AS_PATH with needless 2-octet lengths
    decoded = decode_attributes(wire, 0, len(wire), EBGP4)
    assert decoded.errors == []
    assert decoded.attributes == BASE
    assert decoded.present == {AttrType.ORIGIN, AttrType.AS_PATH}


def test_local_pref_is_not_sent_to_external_peers() -> None:
    attrs = replace(BASE, local_pref=100)
    assert encode_attributes(attrs, EBGP4, next_hop=False) == h(BASE_HEX)
    assert encode_attributes(attrs, IBGP4, next_hop=False) == h(BASE_HEX + "40 05 04 00000064")


def test_long_as_sequence_is_split_into_255_asn_segments() -> None:
    attrs = replace(BASE, as_path=path((SEQ, tuple(range(1, 301)))))
    wire = encode_attributes(attrs, EBGP4, next_hop=False)
    # AS_PATH: extended length 2 + 255*4 + 2 + 45*4 = 1204 octets
    assert wire[4:8] == h("50 02 04b4")
    assert wire[8:10] == h("02 ff")
    decoded = decode_attributes(wire, 0, len(wire), EBGP4).attributes
    assert decoded.as_path == path((SEQ, tuple(range(1, 256))), (SEQ, tuple(range(256, 301))))


def test_encoding_a_recognized_type_as_unknown_is_refused() -> None:
    with pytest.raises(ValueError, match="recognized type code"):
        encode_attributes(
            replace(BASE, unknown=(UnknownAttribute(0xC0, 8, b"\0\0\0\0"),)), EBGP4, next_hop=False
        )


# -- RFC 6793: 4-octet ASNs through 2-octet (OLD) speakers --------------------------------------


def test_as4_path_round_trip_golden_towards_a_two_octet_peer() -> None:
    wire = h("""
        40 01 01 00
        40 02 0a 02 04 fde9 5ba0 5ba0 fdea               # AS_PATH 65001 AS_TRANS AS_TRANS 65002
        c0 11 12 02 04 0000fde9 00030d40 000493e0 0000fdea  # AS4_PATH 65001 200000 300000 65002
    """)
    attrs = round_trip(wire, EBGP2)
    assert attrs.as_path == path((SEQ, (65001, 200000, 300000, 65002)))


def test_as4_path_shorter_than_as_path_keeps_the_leading_asns_an_old_speaker_added() -> None:
    wire = h("""
        40 01 01 00
        40 02 0a 02 04 fde9 5ba0 5ba0 fdea    # an OLD AS 65001 prepended itself after AS4_PATH was made
        c0 11 0e 02 03 00030d40 000493e0 0000fdea
    """)
    decoded = decode_attributes(wire, 0, len(wire), EBGP2)
    assert decoded.errors == []
    assert decoded.attributes.as_path == path((SEQ, (65001, 200000, 300000, 65002)))


def test_as4_aggregator_replaces_an_as_trans_aggregator_golden() -> None:
    wire = h("""
        40 01 01 00
        40 02 04 02 01 5ba0                 # AS_PATH AS_TRANS
        c0 07 06 5ba0 c6336401              # AGGREGATOR AS_TRANS 198.51.100.1
        c0 11 06 02 01 00030d40             # AS4_PATH 200000
        c0 12 08 00030d40 c6336401          # AS4_AGGREGATOR 200000 198.51.100.1
    """)
    attrs = round_trip(wire, EBGP2)
    assert attrs.as_path == path((SEQ, (200000,)))
    assert attrs.aggregator == Aggregator(200000, NH)


def test_aggregator_not_as_trans_makes_the_as4_attributes_stale() -> None:
    # RFC 6793 §4.2.3: an OLD speaker aggregated after the AS4 information was attached.
    wire = h("""
        40 01 01 00
        40 02 04 02 01 5ba0
        c0 07 06 fde9 c6336401
        c0 11 06 02 01 00030d40
        c0 12 08 00030d40 c6336401
    """)
    attrs = decode_attributes(wire, 0, len(wire), EBGP2).attributes
    assert attrs.as_path == path((SEQ, (AS_TRANS,)))
    assert attrs.aggregator == Aggregator(65001, NH)


def test_as4_path_confederation_segments_are_dropped_and_the_rest_used() -> None:
    wire = h("""
        40 01 01 00
        40 02 04 02 01 5ba0
        c0 11 0c 03 01 0000fc00 02 01 00030d40   # AS4_PATH (64512) 200000
    """)
    decoded = decode_attributes(wire, 0, len(wire), IBGP2)
    assert decoded.attributes.as_path == path((SEQ, (200000,)))
    assert [(e.subcode, e.action.value) for e in decoded.errors] == [(9, "attribute-discard")]


def test_all_two_octet_path_sends_no_as4_path() -> None:
    attrs = replace(BASE, as_path=path((SEQ, (65001, 65002))))
    assert encode_attributes(attrs, EBGP2, next_hop=False) == h("40 01 01 00  40 02 06 02 02 fde9 fdea")


def test_confederation_segments_stay_out_of_as4_path() -> None:
    attrs = replace(BASE, as_path=path((CONFED_SEQ, (64512,)), (SEQ, (200000,))))
    assert encode_attributes(attrs, IBGP2, next_hop=False) == h("""
        40 01 01 00
        40 02 08 03 01 fc00 02 01 5ba0
        c0 11 06 02 01 00030d40
    """)


@pytest.mark.parametrize(
    ("as_path", "as4_path", "merged"),
    [
        pytest.param(
            path((SEQ, (65001, AS_TRANS, AS_TRANS, 65002))),
            path((SEQ, (200000, 300000, 65002))),
            path((SEQ, (65001, 200000, 300000, 65002))),
            id="cut-inside-a-sequence",
        ),
        pytest.param(
            path((SEQ, (AS_TRANS,))),
            path((SEQ, (200000, 300000))),
            path((SEQ, (AS_TRANS,))),
            id="as4-longer-is-ignored",
        ),
        pytest.param(
            path((SEQ, (1, AS_TRANS)), (SET, (3, 4))),
            path((SEQ, (200000,)), (SET, (3, 4))),
            path((SEQ, (1, 200000)), (SET, (3, 4))),
            id="as-set-counts-one",
        ),
        pytest.param(
            path((SET, (1, 2)), (SEQ, (AS_TRANS,))),
            path((SEQ, (200000,))),
            path((SET, (1, 2)), (SEQ, (200000,))),
            id="leading-set-kept-whole",
        ),
        pytest.param(
            path((CONFED_SEQ, (64512,)), (SEQ, (AS_TRANS, 1))),
            path((SEQ, (200000, 1))),
            path((CONFED_SEQ, (64512,)), (SEQ, (200000, 1))),
            id="leading-confederation-kept",
        ),
        pytest.param(path(), path(), path(), id="empty"),
    ],
)
def test_merge_as4_path(as_path: AsPath, as4_path: AsPath, merged: AsPath) -> None:
    assert merge_as4_path(as_path, as4_path) == merged
