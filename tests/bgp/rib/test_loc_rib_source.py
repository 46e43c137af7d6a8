"""Loc-RIB with each peer's Adj-RIB-In as its PeerSource, the way the speaker wires them.

The Loc-RIB keeps no per-peer table: a peer's keys come from its Adj-RIB-In. These tests drive
both through graceful restart, ADD-PATH, policy and max-prefix changes and check that
`remove_peer`, `peer_paths`, `peer_path_count` and `paths_by_next_hop` see what the Loc-RIB holds.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.rib import (
    ALLOW_ALL,
    AdjRibIn,
    DecisionReason,
    ImportPolicy,
    LocRib,
    MaxPrefix,
    MaxPrefixAction,
    Path,
    PrefixRule,
    RibChange,
    RouteBatch,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, PathAttributes, PrefixKey
from tests.bgp.rib.helpers import attrs, key, peer

A, B, C = key("203.0.113.10/32"), key("203.0.113.20/32"), key("203.0.113.0/24")
V6 = key("2001:db8:1::/48")
PEER1, PEER2 = peer(1), peer(2)


def wired(*adjs: AdjRibIn, max_paths: int = 1) -> LocRib:
    rib = LocRib(max_paths=max_paths)
    for adj in adjs:
        rib.attach(adj.peer.peer_id, adj)
    return rib


def apply(rib: LocRib, batches: Sequence[RouteBatch]) -> list[RibChange]:
    changes: list[RibChange] = []
    for batch in batches:
        changes += rib.apply(batch)
    return changes


def test_remove_peer_lists_the_paths_from_the_adj_rib_in_and_promotes_the_standby() -> None:
    adj1, adj2 = AdjRibIn(PEER1, ALLOW_ALL), AdjRibIn(PEER2, ALLOW_ALL)
    rib = wired(adj1, adj2)
    apply(rib, adj1.announce(IPV4_UNICAST, [A, B], attrs(65001)).changes)
    apply(rib, adj2.announce(IPV4_UNICAST, [B], attrs(65002, 65002, next_hop="198.51.100.2")).changes)
    standby = rib.candidates(B)[1]
    assert rib.peer_path_count("p1") == 2 and rib.peer_path_count("p2") == 1
    changes = rib.remove_peer("p1")
    adj1.clear()
    old_a, old_b = adj1_path = (changes[0].old_best, changes[1].old_best)
    assert old_a is old_b and old_a is not None and old_a.peer is PEER1, adj1_path
    assert [(c.prefix, c.new_best) for c in changes] == [(A, None), (B, standby)]
    assert changes[1].reason is DecisionReason.ONLY_PATH
    assert (rib.peer_path_count("p1"), list(rib.peer_paths("p1")), A in rib) == (0, [], False)
    assert rib.remove_peer("p1") == []
    assert list(rib.peer_paths("p2")) == [(B, standby)]


@pytest.mark.parametrize("leaving", ["p1", "p2"])
def test_remove_peer_of_one_of_two_ecmp_paths_reports_the_narrower_set(leaving: str) -> None:
    adj1, adj2 = AdjRibIn(PEER1, ALLOW_ALL), AdjRibIn(PEER2, ALLOW_ALL)
    rib = wired(adj1, adj2, max_paths=2)
    apply(rib, adj1.announce(IPV4_UNICAST, [A], attrs(65001)).changes)
    apply(rib, adj2.announce(IPV4_UNICAST, [A], attrs(65002, next_hop="198.51.100.2")).changes)
    before = rib.ecmp(A)
    assert len(before) == 2
    staying = next(p for p in before if p.peer.peer_id != leaving)
    changes = rib.remove_peer(leaving)
    assert changes == [RibChange(A, before[0], staying, before, (staying,), DecisionReason.ONLY_PATH)]
    assert rib.ecmp(A) == (staying,)


def test_remove_peer_after_graceful_restart_marking_drops_fresh_and_stale_paths() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    apply(rib, adj.announce(IPV4_UNICAST, [A, B, C], attrs(65001)).changes)
    apply(rib, adj.announce(IPV6_UNICAST, [V6], attrs(65001, next_hop="2001:db8::1")).changes)
    assert adj.mark_stale() == 4
    # The peer is back and re-announces A with other attributes and B unchanged; C and V6 stay stale.
    apply(rib, adj.announce(IPV4_UNICAST, [A], attrs(65001, 65009)).changes)
    assert apply(rib, adj.announce(IPV4_UNICAST, [B], attrs(65001)).changes) == []
    assert adj.stale_count() == 2
    assert sorted(p for p, _ in rib.peer_paths("p1")) == sorted([A, B, C, V6])
    assert rib.peer_path_count("p1") == 4
    changes = rib.remove_peer("p1")
    adj.clear()
    assert sorted(c.prefix for c in changes) == sorted([A, B, C, V6])
    assert all(c.new_best is None for c in changes)
    assert len(rib) == 0 and rib.peer_path_count("p1") == 0 and list(rib.next_hops()) == []


def test_flush_stale_withdraws_only_what_was_not_refreshed() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    apply(rib, adj.announce(IPV4_UNICAST, [A, B, C], attrs(65001)).changes)
    adj.mark_stale((IPV4_UNICAST,))
    apply(rib, adj.announce(IPV4_UNICAST, [B], attrs(65001)).changes)
    changes = apply(rib, adj.flush_stale(IPV4_UNICAST))
    assert sorted(c.prefix for c in changes) == sorted([A, C])
    assert [p for p, _ in rib.peer_paths("p1")] == [B] and rib.peer_path_count("p1") == 1


def test_add_path_ids_are_separate_keys_of_the_source() -> None:
    adj1, adj2 = AdjRibIn(PEER1, ALLOW_ALL), AdjRibIn(PEER2, ALLOW_ALL)
    rib = wired(adj1, adj2, max_paths=4)
    apply(rib, adj1.announce(IPV4_UNICAST, [A, A, B], attrs(65001), path_ids=[0, 7, 7]).changes)
    apply(rib, adj2.announce(IPV4_UNICAST, [A], attrs(65002, next_hop="198.51.100.2")).changes)
    assert len(rib.candidates(A)) == 3
    assert sorted((p, path.path_id) for p, path in rib.peer_paths("p1")) == [(A, 0), (A, 7), (B, 7)]
    assert rib.peer_path_count("p1") == 3
    hop1 = ip_address("198.51.100.1")
    assert sorted((p, path.path_id) for p, path in rib.paths_by_next_hop(hop1)) == [(A, 0), (A, 7), (B, 7)]
    # Withdrawing path id 7 of A leaves path id 0 of the same peer in place.
    apply(rib, adj1.withdraw(IPV4_UNICAST, [A], path_ids=[7]).changes)
    assert sorted((p.peer.peer_id, p.path_id) for p in rib.candidates(A)) == [("p1", 0), ("p2", 0)]
    changes = rib.remove_peer("p1")
    adj1.clear()
    assert sorted(c.prefix for c in changes) == sorted([A, B])
    assert [p.peer.peer_id for p in rib.candidates(A)] == ["p2"] and B not in rib


def test_set_policy_withdrawals_leave_the_source_and_the_loc_rib_together() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    apply(rib, adj.announce(IPV4_UNICAST, [A, B, C], attrs(65001)).changes)
    adj.mark_stale()  # the re-check covers stale paths too
    narrowed = ImportPolicy((PrefixRule(IPv4Network("203.0.113.0/24")),))  # only C's exact /24
    changes = apply(rib, adj.set_policy(narrowed).changes)
    assert sorted(c.prefix for c in changes) == sorted([A, B])
    assert [p for p, _ in rib.peer_paths("p1")] == [C] and rib.peer_path_count("p1") == 1
    assert [c.prefix for c in rib.remove_peer("p1")] == [C]


def test_max_prefix_refusals_are_in_neither_table() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL, MaxPrefix(2, MaxPrefixAction.REJECT))
    rib = wired(adj)
    result = adj.announce(IPV4_UNICAST, [A, B, C], attrs(65001))
    apply(rib, result.changes)
    assert result.rejected == 1 and len(adj) == 2 == len(rib) == rib.peer_path_count("p1")
    apply(rib, adj.set_max_prefix(MaxPrefix(1, MaxPrefixAction.REJECT)).changes)
    assert len(adj) == 1 == len(rib) == rib.peer_path_count("p1")
    assert [p for p, _ in rib.peer_paths("p1")] == [p for p, _ in adj.items(IPV4_UNICAST)]


def test_batches_not_yet_applied_are_skipped_and_the_loc_ribs_own_path_is_removed() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    apply(rib, adj.announce(IPV4_UNICAST, [A], attrs(65001)).changes)
    held = rib.best(A)
    assert held is not None
    # The Adj-RIB-In runs ahead: a replacement of A and a new B, neither applied to the Loc-RIB.
    pending = adj.announce(IPV4_UNICAST, [A, B], attrs(65001, 65005)).changes
    assert pending and adj.get(A) is not held
    assert list(rib.peer_paths("p1")) == [(A, held)]
    changes = rib.remove_peer("p1")
    assert changes == [RibChange(A, held, None, (held,), (), None)]
    assert len(rib) == 0


def test_a_source_that_lost_its_keys_still_has_every_path_removed() -> None:
    adj1, adj2 = AdjRibIn(PEER1, ALLOW_ALL), AdjRibIn(PEER2, ALLOW_ALL)
    rib = wired(adj1, adj2)
    apply(rib, adj1.announce(IPV4_UNICAST, [A, B], attrs(65001)).changes)
    apply(rib, adj2.announce(IPV4_UNICAST, [B], attrs(65002, 65002, next_hop="198.51.100.2")).changes)
    adj1.clear()  # the wrong order: the Loc-RIB can no longer list p1's prefixes from it
    changes = rib.remove_peer("p1")
    assert sorted(c.prefix for c in changes) == sorted([A, B])
    assert rib.peer_path_count("p1") == 0 and [p.peer.peer_id for p in rib.candidates(B)] == ["p2"]


def test_attach_is_idempotent_and_refused_while_the_peer_has_paths_elsewhere() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = LocRib()
    rib.update(PEER1, A, Path(PEER1, attrs(65001)))  # fed without a source: the Loc-RIB keeps the key
    with pytest.raises(ValueError, match="already has paths"):
        rib.attach("p1", adj)
    assert [c.prefix for c in rib.remove_peer("p1")] == [A]
    rib.attach("p1", adj)
    rib.attach("p1", adj)
    apply(rib, adj.announce(IPV4_UNICAST, [B], attrs(65001)).changes)
    with pytest.raises(ValueError, match="already has paths"):
        rib.attach("p1", AdjRibIn(PEER1, ALLOW_ALL))
    assert [c.prefix for c in rib.detach("p1")] == [B]
    assert list(rib.peer_paths("p1")) == [] and len(rib) == 0
    rib.attach("p1", AdjRibIn(PEER1, ALLOW_ALL))  # a new session's Adj-RIB-In after removal


def test_remove_peer_reports_one_shared_old_ecmp_tuple_per_path() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    apply(rib, adj.announce(IPV4_UNICAST, [A, B, C], attrs(65001)).changes)
    changes = rib.remove_peer("p1")
    assert [type(c) for c in changes] == [RibChange] * 3
    assert changes[0].old_ecmp is changes[1].old_ecmp is changes[2].old_ecmp
    old = changes[0].old_best
    assert old is not None and changes[0] == RibChange(A, old, None, (old,), (), None)


# -- model check: random intake, graceful restart, policy and peer-down against the Adj-RIB-Ins ------

PREFIXES = [A, B, C, V6]
FAMILY = {A: IPV4_UNICAST, B: IPV4_UNICAST, C: IPV4_UNICAST, V6: IPV6_UNICAST}
ATTRIBUTES = [attrs(65001), attrs(65001, 65002), attrs(65003, next_hop="198.51.100.3")]
V6_ATTRIBUTES = [attrs(65001, next_hop="2001:db8::1"), attrs(65001, 65002, next_hop="2001:db8::2")]
POLICIES = [ALLOW_ALL, ImportPolicy((PrefixRule(IPv4Network("203.0.113.0/24"), le=32),))]

Op = tuple[str, int, list[PrefixKey], int, list[int]]
ops_strategy: st.SearchStrategy[Op] = st.tuples(
    st.sampled_from(["announce", "announce", "withdraw", "stale", "flush", "policy", "down"]),
    st.integers(0, 1),
    st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
    st.integers(0, 2),
    st.lists(st.sampled_from([0, 0, 3]), min_size=3, max_size=3),
)


def _expected(adjs: list[AdjRibIn]) -> dict[PrefixKey, set[int]]:
    held: dict[PrefixKey, set[int]] = {}
    for adj in adjs:
        for family in (IPV4_UNICAST, IPV6_UNICAST):
            for prefix, held_path in adj.items(family):
                held.setdefault(prefix, set()).add(id(held_path))
    return held


@settings(max_examples=200, deadline=None)
@given(st.lists(ops_strategy, max_size=30), st.integers(1, 3))
def test_loc_rib_always_holds_exactly_the_adj_rib_ins_paths(ops: list[Op], max_paths: int) -> None:
    adjs = [AdjRibIn(PEER1, ALLOW_ALL), AdjRibIn(PEER2, ALLOW_ALL)]
    rib = wired(*adjs, max_paths=max_paths)
    seen: dict[PrefixKey, tuple[Path | None, tuple[Path, ...]]] = {}
    for op, index, prefixes, attr_index, path_ids in ops:
        adj = adjs[index]
        ids = path_ids[: len(prefixes)]
        batches: list[RouteBatch] = []
        for family in (IPV4_UNICAST, IPV6_UNICAST):
            group = [p for p in prefixes if FAMILY[p] is family]
            group_ids = [i for p, i in zip(prefixes, ids, strict=True) if FAMILY[p] is family]
            if not group:
                continue
            if op == "announce":
                pool = ATTRIBUTES if family is IPV4_UNICAST else V6_ATTRIBUTES
                chosen: PathAttributes = pool[attr_index % len(pool)]
                batches += adj.announce(family, group, chosen, group_ids).changes
            elif op == "withdraw":
                batches += adj.withdraw(family, group, group_ids).changes
        if op == "stale":
            adj.mark_stale()
        elif op == "flush":
            for family in adj.stale_families():
                batches += adj.flush_stale(family)
        elif op == "policy":
            batches += adj.set_policy(POLICIES[attr_index % len(POLICIES)]).changes
        changes = apply(rib, batches)
        if op == "down":
            changes += rib.remove_peer(adj.peer.peer_id)
            adj.clear()
        for change in changes:  # the changes turn the last reported state into the current one
            assert seen.get(change.prefix, (None, ())) == (change.old_best, change.old_ecmp)
            seen[change.prefix] = (change.new_best, change.new_ecmp)
        for prefix in PREFIXES:
            assert seen.get(prefix, (None, ())) == (rib.best(prefix), rib.ecmp(prefix))
        expected = _expected(adjs)
        assert {prefix: {id(p) for p in rib.candidates(prefix)} for prefix in rib.prefixes()} == expected
        for each in adjs:
            peer_id = each.peer.peer_id
            assert rib.peer_path_count(peer_id) == len(each)
            listed = sorted((prefix, id(p)) for prefix, p in rib.peer_paths(peer_id))
            held = sorted(
                (prefix, id(p)) for family in (IPV4_UNICAST, IPV6_UNICAST) for prefix, p in each.items(family)
            )
            assert listed == held
        for next_hop in {IPv4Address("198.51.100.1"), IPv4Address("198.51.100.3"), ip_address("2001:db8::1")}:
            by_hop = sorted((prefix, id(p)) for prefix, p in rib.paths_by_next_hop(next_hop))
            assert by_hop == sorted(
                (prefix, path_id)
                for prefix, ids_of in expected.items()
                for path_id in ids_of
                for p in rib.candidates(prefix)
                if id(p) == path_id and p.attributes.next_hop == next_hop
            )


def test_a_large_remove_peer_leaves_the_garbage_collector_as_it_found_it() -> None:
    adj = AdjRibIn(PEER1, ALLOW_ALL)
    rib = wired(adj)
    many = [((0x0A000000 + index) << 8) | 32 for index in range(20_000)]
    apply(rib, adj.announce(IPV4_UNICAST, many, attrs(65001)).changes)
    assert gc.isenabled()
    assert len(rib.remove_peer("p1")) == len(many)
    assert gc.isenabled()
    adj.clear()
    apply(rib, adj.announce(IPV4_UNICAST, many, attrs(65001)).changes)
    gc.disable()
    try:
        assert len(rib.remove_peer("p1")) == len(many)
        assert not gc.isenabled()
    finally:
        gc.enable()
