"""rtnetlink encoders and decoders against golden bytes.

Encoder vectors are written out field by field from the wire formats in rtnl.py's docstring
(include/uapi/linux/rtnetlink.h, nexthop.h); decoder inputs were captured from a 6.x kernel in a
lab namespace (`ip route` / `ip nexthop` dumps and error answers). Netlink is host byte order:
these vectors are little-endian.
"""

from __future__ import annotations

import errno
import socket
import sys
from ipaddress import ip_address, ip_network

import pytest

from bgp.types import PrefixKey, prefix_key
from controller.writers import rtnl
from controller.writers.rtnl import NextHop, RouteEncoder, RouteSpec


def K(text: str) -> PrefixKey:
    return prefix_key(ip_network(text))


pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="golden vectors are little-endian")

CREATE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL  # 0x0601
REPLACE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE  # 0x0501
HOP_A = NextHop(ip_address("10.0.1.2"), 3)


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# -- encoders -------------------------------------------------------------------------------------

V4_ROUTE = h(
    "44000000", "1800", "0106", "07000000", "00000000",  # nlmsghdr: 68 bytes, RTM_NEWROUTE, CREATE|EXCL
    "02", "20", "00", "00", "64", "f5", "00", "01", "00000000",  # rtmsg: INET /32 table 100 proto 245
    "0800", "0100", "cb00710a",  # RTA_DST 203.0.113.10
    "0800", "0f00", "64000000",  # RTA_TABLE 100
    "0800", "0600", "32000000",  # RTA_PRIORITY 50
    "0800", "0500", "0a000102",  # RTA_GATEWAY 10.0.1.2
    "0800", "0400", "03000000",  # RTA_OIF 3
)  # fmt: skip

V6_MULTIPATH = h(
    "74000000", "1800", "0105", "09000000", "00000000",  # 116 bytes, RTM_NEWROUTE, CREATE|REPLACE
    "0a", "40", "00", "00", "00", "f5", "00", "01", "00000000",  # INET6 /64, table byte 0 (>= 256)
    "1400", "0100", "20010db800ee00000000000000000000",  # RTA_DST 2001:db8:ee::
    "0800", "0f00", "e8030000",  # RTA_TABLE 1000
    "3c00", "0900",  # RTA_MULTIPATH, two rtnexthop entries
    "1c00", "00", "00", "02000000", "1400", "0500", "20010db8000100000000000000000002",
    "1c00", "00", "00", "03000000", "1400", "0500", "20010db8000200000000000000000002",
)  # fmt: skip

V4_VIA_GROUP = h(
    "34000000", "1800", "0105", "0a000000", "00000000",  # 52 bytes
    "02", "18", "00", "00", "64", "f5", "00", "01", "00000000",  # INET /24 table 100, no metric
    "0800", "0100", "c6336400",  # RTA_DST 198.51.100.0
    "0800", "0f00", "64000000",
    "0800", "1e00", "02006480",  # RTA_NH_ID 0x80640002
)  # fmt: skip

V4_DELETE = h(
    "34000000", "1900", "0100", "0b000000", "00000000",  # 52 bytes, RTM_DELROUTE, REQUEST only
    "02", "20", "00", "00", "64", "f5", "00", "01", "00000000",
    "0800", "0100", "cb00710a",
    "0800", "0f00", "64000000",
    "0800", "0600", "32000000",
)  # fmt: skip

V4_VIA_V6 = h(
    "4c000000", "1800", "0106", "0c000000", "00000000",  # 76 bytes
    "02", "20", "00", "00", "64", "f5", "00", "01", "00000000",
    "0800", "0100", "cb00710a",
    "0800", "0f00", "64000000",
    "1600", "1200", "0a00", "20010db8000100000000000000000002", "0000",  # RTA_VIA AF_INET6 + pad
    "0800", "0400", "02000000",
)  # fmt: skip


def test_encode_route_ipv4_single_gateway_with_metric() -> None:
    spec = RouteSpec(ip_network("203.0.113.10/32"), 100, 245, 50, nexthops=(HOP_A,))
    assert rtnl.encode_route(rtnl.RTM_NEWROUTE, CREATE, 7, spec) == V4_ROUTE


def test_encode_route_ipv6_multipath_in_table_above_255() -> None:
    hops = (NextHop(ip_address("2001:db8:1::2"), 2), NextHop(ip_address("2001:db8:2::2"), 3))
    spec = RouteSpec(ip_network("2001:db8:ee::/64"), 1000, 245, None, nexthops=hops)
    assert rtnl.encode_route(rtnl.RTM_NEWROUTE, REPLACE, 9, spec) == V6_MULTIPATH


def test_encode_route_via_nexthop_object() -> None:
    spec = RouteSpec(ip_network("198.51.100.0/24"), 100, 245, None, nh_id=0x80640002)
    assert rtnl.encode_route(rtnl.RTM_NEWROUTE, REPLACE, 10, spec) == V4_VIA_GROUP


def test_encode_delete_names_protocol_and_metric_but_no_next_hop() -> None:
    spec = RouteSpec(ip_network("203.0.113.10/32"), 100, 245, 50, nexthops=(HOP_A,))
    assert rtnl.encode_route(rtnl.RTM_DELROUTE, rtnl.NLM_F_REQUEST, 11, spec) == V4_DELETE


def test_encode_ipv4_route_with_ipv6_gateway_uses_rta_via() -> None:
    hop = NextHop(ip_address("2001:db8:1::2"), 2)
    spec = RouteSpec(ip_network("203.0.113.10/32"), 100, 245, None, nexthops=(hop,))
    assert rtnl.encode_route(rtnl.RTM_NEWROUTE, CREATE, 12, spec) == V4_VIA_V6


def test_route_encoder_matches_encode_route() -> None:
    v4 = RouteEncoder(100, 245, 50)
    assert v4.new(CREATE, 7, K("203.0.113.10/32"), None, (HOP_A,)) == V4_ROUTE
    assert v4.delete(11, K("203.0.113.10/32"), 50) == V4_DELETE
    assert RouteEncoder(100, 245, None).new(REPLACE, 10, K("198.51.100.0/24"), 0x80640002) == (V4_VIA_GROUP)
    hops = (NextHop(ip_address("2001:db8:1::2"), 2), NextHop(ip_address("2001:db8:2::2"), 3))
    v6 = RouteEncoder(1000, 245, None)
    assert v6.new(REPLACE, 9, K("2001:db8:ee::/64"), None, hops) == V6_MULTIPATH
    # A stale route at another metric is deleted with that metric.
    assert v4.delete(11, K("203.0.113.10/32"), None) == rtnl.encode_route(
        rtnl.RTM_DELROUTE, rtnl.NLM_F_REQUEST, 11, RouteSpec(ip_network("203.0.113.10/32"), 100, 245, None)
    )


def test_encode_nexthop_object() -> None:
    assert rtnl.encode_nexthop(CREATE, 3, 0x80640001, 245, NextHop(ip_address("10.0.1.2"), 2)) == h(
        "30000000", "6800", "0106", "03000000", "00000000",  # 48 bytes, RTM_NEWNEXTHOP
        "02", "00", "f5", "00", "00000000",  # nhmsg: INET, scope 0, proto 245
        "0800", "0100", "01006480",  # NHA_ID
        "0800", "0500", "02000000",  # NHA_OIF
        "0800", "0600", "0a000102",  # NHA_GATEWAY
    )  # fmt: skip


def test_encode_group_is_unspec_family_with_weight_zero_entries() -> None:
    assert rtnl.encode_group(REPLACE, 4, 0x80640003, 245, [0x80640001, 0x80640002]) == h(
        "34000000", "6800", "0105", "04000000", "00000000",
        "00", "00", "f5", "00", "00000000",
        "0800", "0100", "03006480",
        "1400", "0200", "01006480", "00", "00", "0000", "02006480", "00", "00", "0000",  # NHA_GROUP
    )  # fmt: skip


def test_encode_delete_nexthop() -> None:
    assert rtnl.encode_del_nexthop(5, 0x80640003) == h(
        "20000000", "6900", "0100", "05000000", "00000000", "00", "00", "00", "00", "00000000",
        "0800", "0100", "03006480",
    )  # fmt: skip


def test_encode_route_dump_filtered_by_table() -> None:
    assert rtnl.encode_dump(rtnl.RTM_GETROUTE, 6, socket.AF_INET, 100) == h(
        "24000000", "1a00", "0103", "06000000", "00000000",  # RTM_GETROUTE, REQUEST|DUMP
        "02", "00", "00", "00", "00", "00", "00", "00", "00000000",
        "0800", "0f00", "64000000",
    )  # fmt: skip
    assert rtnl.encode_dump(rtnl.RTM_GETNEXTHOP, 2) == h(
        "18000000", "6a00", "0103", "02000000", "00000000", "00", "00", "00", "00", "00000000"
    )  # fmt: skip


def test_encode_route_get_and_noop_barrier() -> None:
    assert rtnl.encode_route_get(8, ip_address("10.0.1.2")) == h(
        "24000000", "1a00", "0100", "08000000", "00000000",
        "02", "20", "00", "00", "00", "00", "00", "00", "00000000",
        "0800", "0100", "0a000102",
    )  # fmt: skip
    assert rtnl.encode_noop_ack(11) == h("10000000", "0100", "0500", "0b000000", "00000000")


# -- decoders (bytes from the kernel) -------------------------------------------------------------

KERNEL_V4_VIA_GROUP = h(
    "0220000064f500010000000008000f0064000000080001000a40000008001e0002006480080005000a0001020800040002000000"
)
KERNEL_V4_ROUTE = h(
    "0220000064f500010000000008000f006400000008000100cb00710a0800060032000000080005000a0001020800040002000000"
)
KERNEL_V6_MULTIPATH = h(
    "0a40000064f500010000000008000f00640000001400010020010db800ee00000000000000000000"
    "08000600320000003c0009001c000000020000001400050020010db80001000000000000000000021c00"
    "0000030000001400050020010db800020000000000000000000224000c00000000000000000000000000"
    "00000000000000000000000000000000000000000500140000000000"
)
KERNEL_HOP = h("02fdf5000000000008000100070000000800050002000000080006000a000102")
KERNEL_GROUP = h(
    "0000f5000000000008000100090000000600030000000000140002000700000000000000080000000000000008000e0000000080"
)
KERNEL_ERROR = h(
    "3c00000002000003060000003a420000eaffffff2c00000068000106060000000000000017000100496e76"
    "616c6964206e657874686f702069640000"
)
KERNEL_ACK = h("2400000002000001070000003a4200000000000010000000010005000700000000000000")
KERNEL_DONE_MISSING_TABLE = h(
    "feffffff23000100697076343a20464942207461626c6520646f6573206e6f742065786973740000"
)


def test_decode_route_via_nexthop_object_in_compat_mode() -> None:
    # The compat-mode copies of the object's gateway (after RTA_NH_ID) are not decoded: a route via
    # an object is read by its id.
    route = rtnl.decode_route(memoryview(KERNEL_V4_VIA_GROUP))
    assert route == rtnl.KernelRoute(
        family=socket.AF_INET,
        key=K("10.64.0.0/32"),
        table=100,
        protocol=245,
        rtype=rtnl.RTN_UNICAST,
        metric=None,
        nh_id=0x80640002,
        nexthops=(),
        oif=None,
    )


def test_decode_route_clears_host_bits_into_the_key() -> None:
    # A dump reports the destination in full; the key keeps only the prefix's bits, like the codec.
    raw = bytearray(KERNEL_V4_ROUTE)
    route = rtnl.decode_route(memoryview(raw))
    assert route is not None and rtnl.key_destination(route.key) == bytes([203, 0, 113, 10])
    assert rtnl.key_destination(K("2001:db8:ee::/64")) == bytes.fromhex("20010db800ee" + "00" * 10)
    assert rtnl.key_family(K("2001:db8:ee::/64")) == socket.AF_INET6


def test_decode_route_with_gateway_and_metric() -> None:
    route = rtnl.decode_route(memoryview(KERNEL_V4_ROUTE))
    assert route is not None
    assert (route.key, route.metric, route.nh_id) == (K("203.0.113.10/32"), 50, None)
    assert route.nexthops == (NextHop(ip_address("10.0.1.2"), 2),)


def test_decode_ipv6_multipath_route() -> None:
    route = rtnl.decode_route(memoryview(KERNEL_V6_MULTIPATH))
    assert route is not None
    assert (route.family, route.key, route.table, route.metric) == (
        socket.AF_INET6,
        K("2001:db8:ee::/64"),
        100,
        50,
    )
    assert route.nexthops == (
        NextHop(ip_address("2001:db8:1::2"), 2),
        NextHop(ip_address("2001:db8:2::2"), 3),
    )


def test_decode_nexthop_object_and_group() -> None:
    assert rtnl.decode_nexthop(memoryview(KERNEL_HOP)) == rtnl.KernelNexthop(
        nh_id=7, protocol=245, gateway=ip_address("10.0.1.2"), ifindex=2
    )
    assert rtnl.decode_nexthop(memoryview(KERNEL_GROUP)) == rtnl.KernelNexthop(
        nh_id=9, protocol=245, members=(7, 8)
    )


def test_decode_error_reads_capped_extack_message() -> None:
    messages = list(rtnl.iter_messages(KERNEL_ERROR))
    assert len(messages) == 1
    kind, flags, seq, pid, payload = messages[0]
    assert (kind, flags & rtnl.NLM_F_CAPPED, flags & rtnl.NLM_F_ACK_TLVS, seq, pid) == (
        rtnl.NLMSG_ERROR,
        rtnl.NLM_F_CAPPED,
        rtnl.NLM_F_ACK_TLVS,
        6,
        0x423A,
    )
    assert rtnl.decode_error(flags, payload) == (errno.EINVAL, "Invalid nexthop id")
    ((_kind, flags, _seq, _pid, payload),) = rtnl.iter_messages(KERNEL_ACK)
    assert rtnl.decode_error(flags, payload) == (0, "")


def test_decode_done_of_a_dump_of_a_missing_table() -> None:
    flags = rtnl.NLM_F_MULTI | rtnl.NLM_F_ACK_TLVS
    assert rtnl.decode_done(flags, memoryview(KERNEL_DONE_MISSING_TABLE)) == (
        errno.ENOENT,
        "ipv4: FIB table does not exist",
    )
    assert rtnl.decode_done(rtnl.NLM_F_MULTI, memoryview(h("00000000"))) == (0, "")


@pytest.mark.parametrize("cut", [0, 5, 11])
def test_message_shorter_than_its_header_decodes_to_none(cut: int) -> None:
    assert rtnl.decode_route(memoryview(KERNEL_V4_ROUTE[:cut])) is None
    assert rtnl.decode_nexthop(memoryview(KERNEL_HOP[:cut])) is None
    assert list(rtnl.iter_messages(V4_ROUTE[:cut])) == []


@pytest.mark.parametrize("cut", [14, 22, 30, 45])
def test_attribute_cut_short_is_dropped_not_raised(cut: int) -> None:
    route = rtnl.decode_route(memoryview(KERNEL_V4_ROUTE[:cut]))
    assert route is not None
    assert route.nexthops == ()  # the gateway/oif pair sits at the end: never half-read
    assert list(rtnl.iter_messages(V4_ROUTE[:cut])) == []  # the header says 68 bytes


def test_iter_messages_splits_a_datagram_and_stops_at_a_bad_length() -> None:
    datagram = KERNEL_ERROR + KERNEL_ACK
    assert [(k, s) for k, _f, s, _p, _b in rtnl.iter_messages(datagram)] == [(2, 6), (2, 7)]
    broken = KERNEL_ACK[:0] + h("08000000") + KERNEL_ACK[4:]  # length below the header size
    assert list(rtnl.iter_messages(broken)) == []


def test_canonical_hop_sets_ignore_order_and_duplicates() -> None:
    b = NextHop(ip_address("10.0.2.2"), 4)
    assert rtnl.canonical([b, HOP_A, b]) == (HOP_A, b)
    assert hash(NextHop(ip_address("10.0.1.2"), 3)) == hash(HOP_A)


# -- the monitor's socket filter ------------------------------------------------------------------


def run_bpf(program: bytes, packet: bytes) -> int:
    """A classic BPF interpreter for the instructions monitor_filter uses (loads are big-endian)."""
    insns = [rtnl._SOCK_FILTER.unpack_from(program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code in (0x20, 0x28, 0x30):  # ld/ldh/ldb [k]
            width = {0x20: 4, 0x28: 2, 0x30: 1}[code]
            acc = int.from_bytes(packet[k : k + width], "big")
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:  # ret #k
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def notification(kind: int, pid: int, table: int) -> bytes:
    body = bytes([2, 32, 0, 0, table, 245, 0, 1]) + b"\0" * 4
    return rtnl._NLMSGHDR.pack(16 + len(body), kind, 0, 1, pid) + body


@pytest.mark.parametrize(
    ("message", "passes"),
    [
        (notification(rtnl.RTM_NEWROUTE, 777, 100), False),  # our own write
        (notification(rtnl.RTM_NEWROUTE, 0, 100), True),  # the kernel's
        (notification(rtnl.RTM_DELROUTE, 31337, 100), True),  # someone's `ip route del`
        (notification(rtnl.RTM_NEWROUTE, 31337, 254), False),  # another table (main)
        (notification(rtnl.RTM_DELNEXTHOP, 31337, 0), True),  # nexthop changes all pass
        (notification(rtnl.RTM_NEWNEXTHOP, 777, 0), False),
    ],
)
def test_monitor_filter_drops_our_own_and_other_tables(message: bytes, passes: bool) -> None:
    assert (run_bpf(rtnl.monitor_filter(777, 100), message) != 0) is passes


def test_monitor_filter_for_a_large_table_matches_the_compat_byte() -> None:
    program = rtnl.monitor_filter(777, 1000)
    assert run_bpf(program, notification(rtnl.RTM_NEWROUTE, 1, 252)) != 0
    assert run_bpf(program, notification(rtnl.RTM_NEWROUTE, 1, 100)) == 0
