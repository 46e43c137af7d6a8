"""Discriminator allocation and demultiplexing of received packets (RFC 5880 §6.3, §6.8.6 steps 7, 9)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bfd.codec import DropReason
from bfd.registry import DiscriminatorRegistry, PathKey
from tests.bfd.support import StubRng

PEER = ipaddress.ip_address("198.51.100.2")
LOCAL = ipaddress.ip_address("198.51.100.1")
PEER6 = ipaddress.ip_address("2001:db8::2")


def test_discriminators_are_random_non_zero_and_unique() -> None:
    registry: DiscriminatorRegistry[str] = DiscriminatorRegistry(random.Random(5))
    values = [
        int(registry.add(PathKey(ipaddress.ip_address(f"10.0.{i // 250}.{i % 250 + 1}")), str))
        for i in range(500)
    ]
    assert 0 not in values
    assert len(set(values)) == 500
    assert max(values) > 1 << 24  # drawn from the whole 32-bit space, not counted up


def test_allocation_skips_zero_and_values_in_use_even_if_the_rng_repeats() -> None:
    registry: DiscriminatorRegistry[int] = DiscriminatorRegistry(StubRng(bits=(0, 7)))
    first = registry.add(PathKey(PEER), lambda d: d)
    second = registry.add(PathKey(PEER6), lambda d: d)
    third = registry.add(PathKey(LOCAL), lambda d: d)
    assert first == 7
    assert len({first, second, third}) == 3
    assert 0 not in (second, third)


def test_demux_by_your_discriminator() -> None:
    registry: DiscriminatorRegistry[int] = DiscriminatorRegistry(random.Random(1))
    discr = registry.add(PathKey(PEER, LOCAL, "eth1"), lambda d: d)
    assert registry.demux(discr, PathKey(PEER, LOCAL, "eth1")) == discr
    assert registry.demux(discr ^ 1, PathKey(PEER, LOCAL, "eth1")) is DropReason.UNKNOWN_YOUR_DISCRIMINATOR


@pytest.mark.parametrize(
    "received",
    [
        PathKey(ipaddress.ip_address("198.51.100.9"), LOCAL, "eth1"),
        PathKey(PEER, ipaddress.ip_address("198.51.100.7"), "eth1"),
        PathKey(PEER, LOCAL, "eth2"),
        PathKey(PEER, LOCAL, "eth1", multihop=True),
    ],
)
def test_discriminator_from_another_path_is_refused(received: PathKey) -> None:
    registry: DiscriminatorRegistry[int] = DiscriminatorRegistry(random.Random(1))
    discr = registry.add(PathKey(PEER, LOCAL, "eth1"), lambda d: d)
    assert registry.demux(discr, received) is DropReason.ADDRESS_MISMATCH


def test_demux_by_path_when_your_discriminator_is_zero() -> None:
    registry: DiscriminatorRegistry[str] = DiscriminatorRegistry(random.Random(1))
    registry.add(PathKey(PEER, LOCAL, "eth1"), lambda _: "exact")
    registry.add(PathKey(PEER, None, "eth2"), lambda _: "any-local")
    registry.add(PathKey(PEER6, None, None, multihop=True), lambda _: "multihop")
    assert registry.demux(0, PathKey(PEER, LOCAL, "eth1")) == "exact"
    assert registry.demux(0, PathKey(PEER, ipaddress.ip_address("198.51.100.5"), "eth2")) == "any-local"
    assert registry.demux(0, PathKey(PEER6, ipaddress.ip_address("2001:db8::1"), None, True)) == "multihop"
    assert registry.demux(0, PathKey(PEER6, None, None, multihop=False)) is DropReason.NO_SESSION_FOR_ADDRESS
    assert registry.demux(0, PathKey(PEER, LOCAL, "eth3")) is DropReason.NO_SESSION_FOR_ADDRESS


def test_most_specific_registration_wins() -> None:
    registry: DiscriminatorRegistry[str] = DiscriminatorRegistry(random.Random(1))
    registry.add(PathKey(PEER, None, None), lambda _: "wildcard")
    registry.add(PathKey(PEER, LOCAL, "eth1"), lambda _: "exact")
    assert registry.demux(0, PathKey(PEER, LOCAL, "eth1")) == "exact"
    assert registry.demux(0, PathKey(PEER, LOCAL, "eth9")) == "wildcard"


def test_one_session_per_path_and_remove_frees_it() -> None:
    registry: DiscriminatorRegistry[int] = DiscriminatorRegistry(random.Random(1))
    key = PathKey(PEER, LOCAL, "eth1")
    discr = registry.add(key, lambda d: d)
    with pytest.raises(ValueError):
        registry.add(key, lambda d: d)
    assert registry.get(discr) == discr
    assert registry.find(key) == discr
    assert list(registry) == [(discr, discr)]
    assert registry.remove(discr) == discr
    assert registry.remove(discr) is None
    assert len(registry) == 0
    assert registry.demux(discr, key) is DropReason.UNKNOWN_YOUR_DISCRIMINATOR
    assert registry.demux(0, key) is DropReason.NO_SESSION_FOR_ADDRESS
    assert registry.add(key, lambda d: d) != 0
