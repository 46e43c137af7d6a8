"""controller.prefixes: route-path prefixes behave exactly like ipaddress networks."""

from __future__ import annotations

import copy
import pickle
from ipaddress import ip_network

import pytest

from bgp.types import key_to_prefix, prefix_key
from controller.desired import Prefix
from controller.prefixes import HashedIPv4Network, HashedIPv6Network, prefix_from_key

CASES = [
    "10.0.0.0/8",
    "10.1.2.3/32",
    "10.0.0.0/31",
    "10.0.0.0/30",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8::1/128",
    "2001:db8::/127",
    "::/0",
]


@pytest.mark.parametrize("text", CASES)
def test_equal_to_and_hashes_like_the_plain_network(text: str) -> None:
    plain = ip_network(text)
    fast = prefix_from_key(prefix_key(plain))
    assert isinstance(fast, HashedIPv4Network | HashedIPv6Network)
    assert fast == plain and plain == fast
    assert hash(fast) == hash(plain)
    by_plain: dict[Prefix, int] = {plain: 1}
    by_fast: dict[Prefix, int] = {fast: 1}
    assert by_plain[fast] == 1 and by_fast[plain] == 1
    assert str(fast) == str(plain) and repr(fast) == repr(plain)
    assert fast == key_to_prefix(prefix_key(plain))
    assert prefix_key(fast) == prefix_key(plain)
    assert (fast.version, fast.prefixlen, fast.netmask) == (plain.version, plain.prefixlen, plain.netmask)
    assert fast.num_addresses == plain.num_addresses
    assert not fast < plain and not plain < fast  # type: ignore[operator]  # same family here


@pytest.mark.parametrize(
    "text",
    [c for c in CASES if int(c.split("/")[1]) >= 30 and ":" not in c]
    + [
        "2001:db8::1/128",
        "2001:db8::/127",
    ],
)
def test_hosts_as_ipaddress_gives_them(text: str) -> None:
    plain = ip_network(text)
    assert list(prefix_from_key(prefix_key(plain)).hosts()) == list(plain.hosts())


@pytest.mark.parametrize("text", ["10.0.0.0/24", "2001:db8::/64"])
def test_derived_networks_keep_a_correct_hash(text: str) -> None:
    """ipaddress builds supernets/subnets through the constructor: the hash must be set there too."""
    plain = ip_network(text)
    fast = prefix_from_key(prefix_key(plain))
    assert hash(fast.supernet()) == hash(plain.supernet())
    assert [hash(n) for n in fast.subnets()] == [hash(n) for n in plain.subnets()]
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert clone == plain and hash(clone) == hash(plain)
