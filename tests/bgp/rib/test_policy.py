"""Import policy: prefix rules (ge/le), deny by default, never-accept ranges, next hops, AS loops."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.rib import (
    ALLOW_ALL,
    ImportPolicy,
    MaxPrefix,
    MaxPrefixAction,
    PrefixRule,
    RejectReason,
    next_hop_usable,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, Prefix, key_to_prefix, prefix_key
from tests.bgp.rib.helpers import LOCAL_ASN, attrs, ibgp_peer, key, peer


def rule(text: str, ge: int | None = None, le: int | None = None) -> PrefixRule:
    return PrefixRule(ip_network(text), ge, le)


@pytest.mark.parametrize(
    ("prefix", "ge", "le", "route", "expected"),
    [
        # exact match when neither ge nor le is given
        ("10.0.0.0/8", None, None, "10.0.0.0/8", True),
        ("10.0.0.0/8", None, None, "10.1.0.0/16", False),
        ("10.0.0.0/8", None, None, "11.0.0.0/8", False),
        ("10.0.0.0/8", None, None, "0.0.0.0/0", False),
        # ge alone: up to /32
        ("10.0.0.0/8", 16, None, "10.0.0.0/8", False),
        ("10.0.0.0/8", 16, None, "10.0.0.0/15", False),
        ("10.0.0.0/8", 16, None, "10.1.0.0/16", True),
        ("10.0.0.0/8", 16, None, "10.255.255.255/32", True),
        ("10.0.0.0/8", 16, None, "11.1.0.0/16", False),
        # le alone: from the rule's own length
        ("10.0.0.0/8", None, 24, "10.0.0.0/8", True),
        ("10.0.0.0/8", None, 24, "10.9.9.0/24", True),
        ("10.0.0.0/8", None, 24, "10.9.9.0/25", False),
        ("10.0.0.0/8", None, 24, "10.0.0.0/7", False),
        # both
        ("10.0.0.0/8", 16, 24, "10.0.0.0/15", False),
        ("10.0.0.0/8", 16, 24, "10.2.0.0/16", True),
        ("10.0.0.0/8", 16, 24, "10.2.3.0/24", True),
        ("10.0.0.0/8", 16, 24, "10.2.3.128/25", False),
        ("10.0.0.0/8", 16, 16, "10.2.0.0/16", True),
        ("10.0.0.0/8", 16, 16, "10.2.0.0/17", False),
        # default-route rules
        ("0.0.0.0/0", None, None, "0.0.0.0/0", True),
        ("0.0.0.0/0", None, None, "10.0.0.0/8", False),
        ("0.0.0.0/0", None, 32, "0.0.0.0/0", True),
        ("0.0.0.0/0", None, 32, "203.0.113.10/32", True),
        ("0.0.0.0/0", 32, None, "203.0.113.10/32", True),
        ("0.0.0.0/0", 32, None, "203.0.113.0/31", False),
        ("203.0.113.10/32", None, None, "203.0.113.10/32", True),
        ("203.0.113.10/32", None, None, "203.0.113.11/32", False),
        # non-octet boundaries
        ("198.51.100.0/22", None, 24, "198.51.103.0/24", True),
        ("198.51.100.0/22", None, 24, "198.51.104.0/24", False),
        ("198.51.100.0/22", 23, 23, "198.51.102.0/23", True),
        # IPv6
        ("2001:db8::/32", None, None, "2001:db8::/32", True),
        ("2001:db8::/32", None, 48, "2001:db8:1::/48", True),
        ("2001:db8::/32", None, 48, "2001:db8:1::/49", False),
        ("2001:db8::/32", None, 48, "2001:db9::/48", False),
        ("2001:db8::/32", 128, None, "2001:db8::10/128", True),
        ("2001:db8::/32", 128, None, "2001:db8::10/127", False),
        ("2001:db8::/33", None, 64, "2001:db8:8000::/64", False),
        ("2001:db8::/33", None, 64, "2001:db8:7fff::/64", True),
        ("::/0", None, None, "::/0", True),
        ("::/0", None, None, "2001:db8::/32", False),
        ("::/0", None, 128, "2001:db8::1/128", True),
        ("::/0", None, 128, "::/0", True),
    ],
)
def test_prefix_rule_ge_le_semantics(
    prefix: str, ge: int | None, le: int | None, route: str, expected: bool
) -> None:
    r = rule(prefix, ge, le)
    assert r.matches(key(route)) is expected
    assert (ImportPolicy((r,)).check_prefix(key(route)) is None) is expected


def test_ipv4_rule_never_matches_ipv6_route_and_vice_versa() -> None:
    v4_all = ImportPolicy((rule("0.0.0.0/0", le=32),))
    v6_all = ImportPolicy((rule("::/0", le=128),))
    assert v4_all.check_prefix(key("::/0")) is RejectReason.NOT_ALLOWED
    assert v4_all.check_prefix(key("2001:db8::/32")) is RejectReason.NOT_ALLOWED
    assert v6_all.check_prefix(key("0.0.0.0/0")) is RejectReason.NOT_ALLOWED
    assert v6_all.check_prefix(key("2001:db8::/32")) is None


@pytest.mark.parametrize(
    ("prefix", "ge", "le"),
    [
        ("10.0.0.0/8", 7, None),  # ge below the prefix length
        ("10.0.0.0/8", None, 7),  # le below the prefix length
        ("10.0.0.0/8", 24, 16),  # ge above le
        ("10.0.0.0/8", 33, None),
        ("10.0.0.0/8", None, 33),
        ("2001:db8::/32", None, 129),
        ("2001:db8::/32", 16, None),
    ],
)
def test_prefix_rule_rejects_impossible_ranges(prefix: str, ge: int | None, le: int | None) -> None:
    with pytest.raises(ValueError, match="ge <= le"):
        rule(prefix, ge, le)


def test_prefix_rule_requires_a_network() -> None:
    with pytest.raises(TypeError):
        PrefixRule("10.0.0.0/8")  # type: ignore[arg-type]


def test_prefix_rule_lengths_and_text() -> None:
    assert (rule("10.0.0.0/8").min_length, rule("10.0.0.0/8").max_length) == (8, 8)
    assert (rule("10.0.0.0/8", ge=20).min_length, rule("10.0.0.0/8", ge=20).max_length) == (20, 32)
    assert (rule("2001:db8::/32", ge=40).max_length, rule("2001:db8::/32", le=40).min_length) == (128, 32)
    assert str(rule("10.0.0.0/8", 16, 24)) == "10.0.0.0/8 ge 16 le 24"
    assert PrefixRule.or_longer(IPv6Network("2001:db8::/32")) == rule("2001:db8::/32", le=128)


def test_empty_policy_denies_everything_rfc8212() -> None:
    policy = ImportPolicy()
    for route in ("0.0.0.0/0", "203.0.113.10/32", "::/0", "2001:db8::/48"):
        assert policy.check_prefix(key(route)) is RejectReason.NOT_ALLOWED
    assert policy.prefix_check(IPV4_UNICAST) is not None


def test_unmatched_prefix_is_not_allowed_with_several_rules() -> None:
    policy = ImportPolicy(
        (rule("203.0.113.0/24", le=32), rule("198.51.100.0/24"), rule("2001:db8:1::/48", ge=64))
    )
    assert policy.check_prefix(key("203.0.113.10/32")) is None
    assert policy.check_prefix(key("198.51.100.0/24")) is None
    assert policy.check_prefix(key("198.51.100.0/25")) is RejectReason.NOT_ALLOWED
    assert policy.check_prefix(key("2001:db8:1:2::/64")) is None
    assert policy.check_prefix(key("2001:db8:1::/48")) is RejectReason.NOT_ALLOWED
    assert policy.check_prefix(key("10.0.0.0/8")) is RejectReason.NOT_ALLOWED


def test_single_catch_all_rule_needs_no_per_prefix_check() -> None:
    assert ImportPolicy((rule("0.0.0.0/0", le=32),)).prefix_check(IPV4_UNICAST) is None
    assert ALLOW_ALL.prefix_check(IPV6_UNICAST) is None
    # Not everything: the check must run.
    assert ImportPolicy((rule("0.0.0.0/0", le=24),)).prefix_check(IPV4_UNICAST) is not None
    with_forbidden = ImportPolicy((rule("0.0.0.0/0", le=32),), forbidden=(rule("10.0.0.0/8", le=32),))
    assert with_forbidden.prefix_check(IPV4_UNICAST) is not None


def test_forbidden_ranges_win_over_allowed_but_not_covering_prefixes() -> None:
    policy = ImportPolicy(
        ALLOW_ALL.allowed,
        forbidden=(
            PrefixRule.or_longer(IPv4Network("10.96.0.0/12")),  # service CIDR
            PrefixRule.or_longer(IPv6Network("2001:db8:42::/56")),
        ),
    )
    assert policy.check_prefix(key("10.96.0.0/12")) is RejectReason.FORBIDDEN_PREFIX
    assert policy.check_prefix(key("10.96.0.1/32")) is RejectReason.FORBIDDEN_PREFIX
    assert policy.check_prefix(key("10.111.255.0/24")) is RejectReason.FORBIDDEN_PREFIX
    assert policy.check_prefix(key("10.112.0.0/12")) is None
    assert policy.check_prefix(key("10.0.0.0/8")) is None  # covers the range but is not inside it
    assert policy.check_prefix(key("2001:db8:42:ff::/64")) is RejectReason.FORBIDDEN_PREFIX
    assert policy.check_prefix(key("2001:db8:43::/64")) is None


def test_policy_equality_follows_configuration() -> None:
    a = ImportPolicy([rule("10.0.0.0/8", le=24)], forbidden_next_hops=[ip_address("198.51.100.1")])  # type: ignore[arg-type]
    b = ImportPolicy(
        (rule("10.0.0.0/8", le=24),), forbidden_next_hops=frozenset({ip_address("198.51.100.1")})
    )
    assert a == b
    assert hash(a) == hash(b)
    assert a != ImportPolicy((rule("10.0.0.0/8", le=25),))
    assert a.allowed == (rule("10.0.0.0/8", le=24),)


# -- property: compiled matching equals the naive definition ---------------------------------------


@st.composite
def prefixes(draw: st.DrawFn, version: int) -> Prefix:
    bits = 32 if version == 4 else 128
    # Few distinct leading bits so that routes often fall inside rules.
    length = draw(st.integers(0, bits))
    top = draw(st.integers(0, 7))
    rest = draw(st.integers(0, (1 << (bits - 3)) - 1))
    address = ((top << (bits - 3)) | rest) & ~((1 << (bits - length)) - 1)
    if version == 4:
        return IPv4Network((address, length))
    return IPv6Network((address, length))


@st.composite
def rules(draw: st.DrawFn) -> PrefixRule:
    version = draw(st.sampled_from((4, 6)))
    net = draw(prefixes(version))
    bits = 32 if version == 4 else 128
    ge = draw(st.none() | st.integers(net.prefixlen, bits))
    low = net.prefixlen if ge is None else ge
    le = draw(st.none() | st.integers(low, bits))
    return PrefixRule(net, ge, le)


def naive_match(r: PrefixRule, route: Prefix) -> bool:
    if route.version != r.prefix.version:
        return False
    return route.subnet_of(r.prefix) and r.min_length <= route.prefixlen <= r.max_length  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rules(), max_size=8),
    st.lists(rules(), max_size=3),
    st.lists(st.sampled_from((4, 6)).flatmap(prefixes), min_size=1, max_size=20),
)
def test_compiled_matching_equals_naive_definition(
    allowed: list[PrefixRule], forbidden: list[PrefixRule], routes: list[Prefix]
) -> None:
    policy = ImportPolicy(tuple(allowed), forbidden=tuple(forbidden))
    for route in routes:
        k = prefix_key(route)
        assert key_to_prefix(k) == route
        if any(naive_match(r, route) for r in forbidden):
            expected: RejectReason | None = RejectReason.FORBIDDEN_PREFIX
        elif any(naive_match(r, route) for r in allowed):
            expected = None
        else:
            expected = RejectReason.NOT_ALLOWED
        assert policy.check_prefix(k) is expected, (route, allowed, forbidden)
        for r in allowed:
            assert r.matches(k) is naive_match(r, route)


# -- attributes: next hops, AS loops, first AS ----------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "127.9.9.9",
        "224.0.0.5",
        "239.1.1.1",
        "169.254.10.1",
        "255.255.255.255",
        "::",
        "::1",
        "ff02::1",
        "::ffff:198.51.100.1",
    ],
)
def test_unusable_next_hops_are_rejected(address: str) -> None:
    assert not next_hop_usable(ip_address(address))
    a = attrs(65001, next_hop=address)
    assert ALLOW_ALL.check_attributes(a, peer(1, 65001)) is RejectReason.BAD_NEXT_HOP


@pytest.mark.parametrize("address", ["198.51.100.7", "10.0.0.1", "203.0.113.1", "2001:db8::1", "fe80::1"])
def test_usable_next_hops_pass(address: str) -> None:
    assert next_hop_usable(ip_address(address))
    assert ALLOW_ALL.check_attributes(attrs(65001, next_hop=address), peer(1, 65001)) is None


def test_missing_next_hop_is_bad() -> None:
    assert (
        ALLOW_ALL.check_attributes(attrs(65001, next_hop=None), peer(1, 65001)) is RejectReason.BAD_NEXT_HOP
    )


def test_our_own_addresses_are_forbidden_next_hops() -> None:
    policy = ImportPolicy(ALLOW_ALL.allowed, forbidden_next_hops=frozenset({ip_address("198.51.100.250")}))
    assert (
        policy.check_attributes(attrs(65001, next_hop="198.51.100.250"), peer(1, 65001))
        is RejectReason.BAD_NEXT_HOP
    )
    assert policy.check_attributes(attrs(65001, next_hop="198.51.100.251"), peer(1, 65001)) is None


def test_our_asn_in_as_path_is_a_loop() -> None:
    p = peer(1, 65001)
    assert ALLOW_ALL.check_attributes(attrs(65001, 65002, LOCAL_ASN, 65003), p) is RejectReason.AS_LOOP
    assert ALLOW_ALL.check_attributes(attrs(65001, as_set=(7, LOCAL_ASN)), p) is RejectReason.AS_LOOP
    assert ALLOW_ALL.check_attributes(attrs(65001, 65002), p) is None


def test_allow_own_as_tolerates_that_many_occurrences() -> None:
    policy = ImportPolicy(ALLOW_ALL.allowed, allow_own_as=1)
    p = peer(1, 65001)
    assert policy.check_attributes(attrs(65001, LOCAL_ASN), p) is None
    assert policy.check_attributes(attrs(65001, LOCAL_ASN, LOCAL_ASN), p) is RejectReason.AS_LOOP


def test_ebgp_as_path_must_start_with_the_peer_as() -> None:
    p = peer(1, 65001)
    assert ALLOW_ALL.check_attributes(attrs(65009, 65001), p) is RejectReason.FIRST_AS_MISMATCH
    assert ALLOW_ALL.check_attributes(attrs(), p) is RejectReason.FIRST_AS_MISMATCH
    lenient = ImportPolicy(ALLOW_ALL.allowed, enforce_first_as=False)
    assert lenient.check_attributes(attrs(65009, 65001), p) is None
    # iBGP paths carry no peer AS in front.
    assert ALLOW_ALL.check_attributes(attrs(65009), ibgp_peer(2)) is None


def test_full_check_combines_attributes_and_prefix() -> None:
    policy = ImportPolicy((rule("203.0.113.0/24", le=32),))
    p = peer(1, 65001)
    assert policy.check(key("203.0.113.10/32"), attrs(65001), p) is None
    assert policy.check(key("198.51.100.0/24"), attrs(65001), p) is RejectReason.NOT_ALLOWED
    assert policy.check(key("203.0.113.10/32"), attrs(65001, LOCAL_ASN), p) is RejectReason.AS_LOOP


def test_max_prefix_threshold_and_validation() -> None:
    assert MaxPrefix(10, warn_threshold_percent=75).threshold == 8  # rounded up
    assert MaxPrefix(100).threshold == 75
    assert MaxPrefix(1000, MaxPrefixAction.WARN, 100).threshold == 1000
    with pytest.raises(ValueError, match="negative"):
        MaxPrefix(-1)
    with pytest.raises(ValueError, match="warn_threshold_percent"):
        MaxPrefix(10, warn_threshold_percent=0)
    with pytest.raises(ValueError, match="TEARDOWN"):
        MaxPrefix(10, MaxPrefixAction.REJECT, restart_after=60)
    with pytest.raises(ValueError, match="positive"):
        MaxPrefix(10, restart_after=0)
    assert MaxPrefix(10, restart_after=5).restart_after == 5
    assert [MaxPrefix(10, a).capacity for a in MaxPrefixAction] == [None, 10, 10]
