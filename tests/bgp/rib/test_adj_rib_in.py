"""Adj-RIB-In: policy on intake, counters and samples, max-prefix, graceful restart, policy change."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.rib import (
    ALLOW_ALL,
    AdjRibIn,
    ImportPolicy,
    LocRib,
    MaxPrefix,
    MaxPrefixAction,
    MaxPrefixEvent,
    PrefixRule,
    Rejection,
    RejectReason,
    RouteBatch,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, PathAttributes
from tests.bgp.rib.helpers import LOCAL_ASN, attrs, key, peer

PEER = peer(1, 65001)
GOOD = attrs(65001)
OTHER = attrs(65001, 65001)
V4 = [key(f"203.0.113.{n}/32") for n in range(256)]
V6 = [key(f"2001:db8::{n:x}/128") for n in range(1, 64)]
ONLY_203 = ImportPolicy((PrefixRule(IPv4Network("203.0.113.0/24"), le=32),))


def announced(batches: list[RouteBatch]) -> list[int]:
    return [prefix for batch in batches if batch.path is not None for prefix in batch.prefixes]


def withdrawn(batches: list[RouteBatch]) -> list[int]:
    return [prefix for batch in batches if batch.path is None for prefix in batch.prefixes]


def test_accepted_prefixes_come_back_as_one_batch_with_one_path() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    result = rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    assert len(result.changes) == 1
    batch = result.changes[0]
    assert (batch.peer, batch.prefixes, batch.path_id) == (PEER, V4[:3], 0)
    assert batch.path is not None and batch.path.attributes is GOOD
    assert (result.accepted, result.rejected, result.max_prefix) == (3, 0, None)
    assert len(rib) == 3 and rib.get(V4[0]) is batch.path
    assert (rib.counters.received, rib.counters.accepted, rib.counters.rejected_total) == (3, 3, 0)


def test_identical_reannouncement_is_no_change() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    again = rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    assert again.changes == [] and again.accepted == 3
    # A new but equal attributes object (e.g. a fresh codec cache) is no change either.
    assert rib.announce(IPV4_UNICAST, V4[:3], replace(GOOD)).changes == []
    assert rib.counters.accepted == 9


def test_changed_attributes_replace_without_withdraw() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    first = rib.announce(IPV4_UNICAST, V4[:2], GOOD).changes[0].path
    result = rib.announce(IPV4_UNICAST, V4[:2], OTHER)
    assert withdrawn(result.changes) == []
    assert announced(result.changes) == V4[:2]
    assert result.changes[0].path is not first
    assert rib.get(V4[1]) is result.changes[0].path


def test_paths_are_interned_per_attribute_object() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    a = rib.announce(IPV4_UNICAST, V4[:2], GOOD).changes[0].path
    b = rib.announce(IPV4_UNICAST, V4[2:4], GOOD).changes[0].path
    assert a is b


def test_prefixes_outside_the_policy_are_rejected_counted_and_sampled() -> None:
    rib = AdjRibIn(PEER, ONLY_203, rejection_samples=3)
    outside = [key(f"198.51.100.{n}/32") for n in range(10)]
    result = rib.announce(IPV4_UNICAST, [V4[0], *outside, V4[1]], GOOD)
    assert announced(result.changes) == [V4[0], V4[1]]
    assert (result.accepted, result.rejected) == (2, 10)
    assert rib.counters.rejected == {RejectReason.NOT_ALLOWED: 10}
    assert list(rib.recent_rejections) == [Rejection(k, 0, RejectReason.NOT_ALLOWED) for k in outside[-3:]]
    assert len(rib) == 2


def test_whole_update_rejected_for_its_attributes() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, rejection_samples=2)
    result = rib.announce(IPV4_UNICAST, V4[:5], attrs(65001, LOCAL_ASN))
    assert (result.changes, result.accepted, result.rejected) == ([], 0, 5)
    assert rib.counters.rejected == {RejectReason.AS_LOOP: 5}
    assert list(rib.recent_rejections) == [Rejection(k, 0, RejectReason.AS_LOOP) for k in V4[3:5]]
    bad_nh = rib.announce(IPV4_UNICAST, V4[:1], attrs(65001, next_hop="127.0.0.1"))
    assert bad_nh.rejected == 1 and rib.counters.rejected[RejectReason.BAD_NEXT_HOP] == 1


def test_rejected_reannouncement_withdraws_the_held_path_rfc4271_9() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    result = rib.announce(IPV4_UNICAST, V4[1:5], attrs(65001, next_hop="0.0.0.0"))
    assert withdrawn(result.changes) == V4[1:3]
    assert announced(result.changes) == []
    assert len(rib) == 1 and rib.get(V4[1]) is None


def test_withdraw_removes_only_held_paths() -> None:
    rib = AdjRibIn(PEER, ONLY_203)
    rib.announce(IPV4_UNICAST, [V4[0], V4[1], key("198.51.100.0/24")], GOOD)
    result = rib.withdraw(IPV4_UNICAST, [V4[1], V4[7], key("198.51.100.0/24")])
    assert [(b.path, b.prefixes) for b in result.changes] == [(None, [V4[1]])]
    assert rib.withdraw(IPV4_UNICAST, [V4[1]]).changes == []
    assert (len(rib), rib.counters.withdrawn) == (1, 4)


def test_add_path_ids_are_kept_apart_and_batched_per_id() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    result = rib.announce(IPV4_UNICAST, [V4[0], V4[0], V4[1]], GOOD, path_ids=[1, 2, 1])
    by_id = {b.path_id: b for b in result.changes}
    assert set(by_id) == {1, 2}
    assert by_id[1].prefixes == [V4[0], V4[1]] and by_id[2].prefixes == [V4[0]]
    assert by_id[1].path is not None and by_id[1].path.path_id == 1
    assert len(rib) == 3
    gone = rib.withdraw(IPV4_UNICAST, [V4[0]], path_ids=[2])
    assert [(b.path_id, b.prefixes) for b in gone.changes] == [(2, [V4[0]])]
    assert rib.get(V4[0], 1) is not None and rib.get(V4[0], 2) is None
    with pytest.raises(ValueError, match="parallel"):
        rib.announce(IPV4_UNICAST, V4[:2], GOOD, path_ids=[1])


def test_families_are_held_separately() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    v6 = attrs(65001, next_hop="2001:db8::1")
    rib.announce(IPV6_UNICAST, V6[:4], v6)
    rib.announce(IPV4_UNICAST, V4[:2], GOOD)
    assert (rib.count(IPV4_UNICAST), rib.count(IPV6_UNICAST), rib.count()) == (2, 4, 6)
    assert sorted(k for k, _ in rib.items(IPV6_UNICAST)) == sorted(V6[:4])


# -- max-prefix -----------------------------------------------------------------------------------


def test_max_prefix_warn_fires_once_per_crossing_and_keeps_accepting() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(10, MaxPrefixAction.WARN, warn_threshold_percent=50))
    assert rib.announce(IPV4_UNICAST, V4[0:4], GOOD).max_prefix is None
    assert rib.announce(IPV4_UNICAST, V4[4:5], GOOD).max_prefix is MaxPrefixEvent.THRESHOLD
    assert rib.announce(IPV4_UNICAST, V4[5:10], GOOD).max_prefix is None
    over = rib.announce(IPV4_UNICAST, V4[10:11], GOOD)
    assert (over.max_prefix, over.accepted, len(rib)) == (MaxPrefixEvent.EXCEEDED, 1, 11)
    assert rib.announce(IPV4_UNICAST, V4[11:15], GOOD).max_prefix is None  # warned once
    rib.withdraw(IPV4_UNICAST, V4[4:15])  # back to 4: both warnings re-armed
    assert rib.announce(IPV4_UNICAST, V4[4:5], GOOD).max_prefix is MaxPrefixEvent.THRESHOLD
    assert rib.announce(IPV4_UNICAST, V4[5:20], GOOD).max_prefix is MaxPrefixEvent.EXCEEDED


def test_max_prefix_teardown_refuses_the_excess() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(5, MaxPrefixAction.TEARDOWN, warn_threshold_percent=100))
    result = rib.announce(IPV4_UNICAST, V4[:8], GOOD)
    assert result.max_prefix is MaxPrefixEvent.TEARDOWN
    assert announced(result.changes) == V4[:5]
    assert (result.accepted, result.rejected, len(rib)) == (5, 3, 5)
    assert rib.counters.rejected == {RejectReason.MAX_PREFIX: 3}
    # Replacing held paths at the limit adds nothing: allowed.
    assert rib.announce(IPV4_UNICAST, V4[:5], OTHER).max_prefix is None
    assert rib.announce(IPV4_UNICAST, V4[5:6], GOOD).max_prefix is MaxPrefixEvent.TEARDOWN
    rib.clear()
    assert len(rib) == 0
    assert rib.announce(IPV4_UNICAST, V4[:5], GOOD).max_prefix is MaxPrefixEvent.THRESHOLD


def test_max_prefix_teardown_threshold_warning_comes_first() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(4))  # 75 %: 3
    assert rib.announce(IPV4_UNICAST, V4[:3], GOOD).max_prefix is MaxPrefixEvent.THRESHOLD
    assert rib.announce(IPV4_UNICAST, V4[3:4], GOOD).max_prefix is None
    assert rib.announce(IPV4_UNICAST, V4[4:5], GOOD).max_prefix is MaxPrefixEvent.TEARDOWN


def test_max_prefix_reject_accepts_up_to_the_limit_and_refuses_the_rest_without_storing_them() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(100, MaxPrefixAction.REJECT))
    result = rib.announce(IPV4_UNICAST, V4[:150], GOOD)
    assert result.max_prefix is MaxPrefixEvent.REJECTED
    assert announced(result.changes) == V4[:100]
    assert (result.accepted, result.rejected, len(rib)) == (100, 50, 100)
    assert rib.counters.rejected == {RejectReason.MAX_PREFIX: 50}
    assert rib.get(V4[120]) is None and rib.refused_since_clear == 50
    assert {r.reason for r in rib.recent_rejections} == {RejectReason.MAX_PREFIX}


def test_max_prefix_reject_at_the_limit_still_takes_replacements_and_reports_once() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(5, MaxPrefixAction.REJECT, warn_threshold_percent=100))
    assert rib.announce(IPV4_UNICAST, V4[:5], GOOD).max_prefix is MaxPrefixEvent.THRESHOLD
    assert rib.announce(IPV4_UNICAST, V4[5:6], GOOD).max_prefix is MaxPrefixEvent.REJECTED
    again = rib.announce(IPV4_UNICAST, V4[6:9], GOOD)
    assert (again.max_prefix, again.rejected, len(rib)) == (None, 3, 5)  # reported once per crossing
    replaced = rib.announce(IPV4_UNICAST, V4[:5], OTHER)
    assert (replaced.max_prefix, replaced.rejected, announced(replaced.changes)) == (None, 0, V4[:5])


def test_max_prefix_reject_withdrawal_frees_room_for_the_next_new_announcement() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(5, MaxPrefixAction.REJECT, warn_threshold_percent=100))
    rib.announce(IPV4_UNICAST, V4[:8], GOOD)  # 5 held, 3 refused and forgotten
    assert withdrawn(rib.withdraw(IPV4_UNICAST, V4[:2]).changes) == V4[:2]
    assert len(rib) == 3  # the refused ones do not move in by themselves (like BIRD's `block`)
    later = rib.announce(IPV4_UNICAST, V4[5:9], GOOD)  # the peer re-announces 4 of them
    assert announced(later.changes) == V4[5:7]
    assert (later.rejected, later.max_prefix, len(rib)) == (2, MaxPrefixEvent.REJECTED, 5)  # re-armed


def test_lowered_reject_limit_withdraws_the_newest_paths_as_max_prefix_rejections() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(10, MaxPrefixAction.REJECT))
    rib.announce(IPV4_UNICAST, V4[:10], GOOD)
    result = rib.set_max_prefix(MaxPrefix(6, MaxPrefixAction.REJECT))
    assert sorted(withdrawn(result.changes)) == V4[6:10]
    assert (result.rejected, result.max_prefix, len(rib)) == (4, MaxPrefixEvent.REJECTED, 6)
    assert rib.counters.rejected == {RejectReason.MAX_PREFIX: 4}
    assert rib.get(V4[5]) is not None and rib.get(V4[6]) is None
    assert rib.announce(IPV4_UNICAST, V4[20:21], GOOD).rejected == 1  # the new limit holds


def test_lowered_limit_reports_teardown_or_exceeded_per_action_and_raised_one_rearms() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(10, MaxPrefixAction.TEARDOWN))
    rib.announce(IPV4_UNICAST, V4[:8], GOOD)
    assert rib.set_max_prefix(MaxPrefix(7)).max_prefix is MaxPrefixEvent.TEARDOWN
    assert len(rib) == 8  # the caller closes the session, which clears the table
    assert rib.set_max_prefix(MaxPrefix(7, MaxPrefixAction.WARN)).max_prefix is MaxPrefixEvent.EXCEEDED
    assert rib.set_max_prefix(MaxPrefix(100, MaxPrefixAction.WARN, 5)).max_prefix is MaxPrefixEvent.THRESHOLD
    assert rib.set_max_prefix(None).max_prefix is None
    assert rib.announce(IPV4_UNICAST, V4[8:200], GOOD).rejected == 0


def test_clear_forgets_refused_paths() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(1, MaxPrefixAction.REJECT))
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    assert rib.refused_since_clear == 2
    rib.clear()
    assert rib.refused_since_clear == 0


def test_max_prefix_counts_accepted_paths_only() -> None:
    rib = AdjRibIn(PEER, ONLY_203, MaxPrefix(2))
    result = rib.announce(IPV4_UNICAST, [key(f"198.51.100.{n}/32") for n in range(50)] + V4[:2], GOOD)
    assert (result.max_prefix, len(rib)) == (MaxPrefixEvent.THRESHOLD, 2)


# -- graceful restart -----------------------------------------------------------------------------


def test_graceful_restart_refresh_without_gap_then_flush_on_end_of_rib() -> None:
    rib, loc = AdjRibIn(PEER, ALLOW_ALL), LocRib()
    for batch in rib.announce(IPV4_UNICAST, V4[:4], GOOD).changes:
        loc.apply(batch)
    assert rib.mark_stale([IPV4_UNICAST]) == 4
    assert rib.stale_count() == 4 and rib.is_stale(V4[0]) and rib.stale_families() == [IPV4_UNICAST]
    assert len(rib) == 4  # still held, still used
    # Same attributes again: nothing to do; changed attributes: a replacement, never a withdraw.
    same = rib.announce(IPV4_UNICAST, V4[:1], GOOD)
    changed = rib.announce(IPV4_UNICAST, V4[1:2], OTHER)
    assert same.changes == []
    assert withdrawn(changed.changes) == [] and announced(changed.changes) == V4[1:2]
    rib_changes = [c for b in changed.changes for c in loc.apply(b)]
    assert all(c.new_best is not None for c in rib_changes)
    assert not rib.is_stale(V4[0]) and not rib.is_stale(V4[1]) and rib.is_stale(V4[2])
    assert rib.get(V4[0]) is not None and rib.get(V4[1]) is not None
    flushed = rib.flush_stale(IPV4_UNICAST)
    assert [(b.path, sorted(b.prefixes)) for b in flushed] == [(None, sorted(V4[2:4]))]
    assert rib.flush_stale(IPV4_UNICAST) == []
    assert (len(rib), rib.stale_count(), rib.stale_families()) == (2, 0, [])
    for batch in flushed:
        loc.apply(batch)
    assert len(loc) == 2 and loc.best(V4[1]) is rib.get(V4[1])


def test_mark_stale_only_touches_the_given_families() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:2], GOOD)
    rib.announce(IPV6_UNICAST, V6[:3], attrs(65001, next_hop="2001:db8::1"))
    assert rib.mark_stale([IPV6_UNICAST]) == 3
    assert (rib.stale_count(IPV4_UNICAST), rib.stale_count(IPV6_UNICAST)) == (0, 3)
    assert rib.flush_stale(IPV4_UNICAST) == []


def test_second_restart_before_end_of_rib_keeps_everything_stale() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:4], GOOD)
    rib.mark_stale()
    rib.announce(IPV4_UNICAST, V4[:1], GOOD)  # refreshed, then the session drops again
    assert rib.mark_stale() == 1
    assert (rib.stale_count(), len(rib)) == (4, 4)
    assert sorted(p for b in rib.flush_stale(IPV4_UNICAST) for p in b.prefixes) == sorted(V4[:4])
    assert len(rib) == 0


def test_stale_paths_can_be_withdrawn_or_rejected() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    rib.mark_stale()
    assert withdrawn(rib.withdraw(IPV4_UNICAST, V4[:1]).changes) == V4[:1]
    assert withdrawn(rib.announce(IPV4_UNICAST, V4[1:2], attrs(65001, LOCAL_ASN)).changes) == V4[1:2]
    assert (len(rib), rib.stale_count()) == (1, 1)


def test_stale_refresh_does_not_count_against_max_prefix() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL, MaxPrefix(3, warn_threshold_percent=100))
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    rib.mark_stale()
    result = rib.announce(IPV4_UNICAST, V4[:3], OTHER)
    assert result.max_prefix is None and announced(result.changes) == V4[:3]
    assert rib.stale_count() == 0


def test_clear_forgets_everything() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, V4[:3], GOOD)
    rib.mark_stale()
    rib.announce(IPV4_UNICAST, V4[3:5], GOOD)
    assert rib.clear() == 5
    assert (len(rib), rib.stale_count(), rib.get(V4[0])) == (0, 0, None)
    assert rib.counters.received == 5  # cumulative counters survive sessions


# -- reconfiguration ------------------------------------------------------------------------------


def test_narrower_policy_withdraws_what_it_now_rejects() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    rib.announce(IPV4_UNICAST, [V4[0], key("198.51.100.0/24")], GOOD)
    rib.announce(IPV6_UNICAST, V6[:1], attrs(65001, next_hop="2001:db8::1"))
    rib.announce(IPV4_UNICAST, V4[1:2], attrs(65001, next_hop="198.51.100.9"))
    rib.mark_stale([IPV6_UNICAST])
    narrower = ImportPolicy(
        (PrefixRule(IPv4Network("0.0.0.0/0"), le=32), PrefixRule(IPv6Network("::/0"), le=128)),
        forbidden=(PrefixRule.or_longer(IPv4Network("198.51.100.0/24")),),
        forbidden_next_hops=frozenset({ip_address("198.51.100.9")}),
    )
    result = rib.set_policy(narrower)
    assert sorted(withdrawn(result.changes)) == sorted([key("198.51.100.0/24"), V4[1]])
    assert rib.counters.rejected == {RejectReason.FORBIDDEN_PREFIX: 1, RejectReason.BAD_NEXT_HOP: 1}
    assert len(rib) == 2 and rib.policy is narrower
    assert rib.set_policy(ImportPolicy()).rejected == 2  # deny-all empties the table
    assert len(rib) == 0


def test_new_peer_parameters_reach_new_paths_only() -> None:
    rib = AdjRibIn(PEER, ALLOW_ALL)
    old = rib.announce(IPV4_UNICAST, V4[:1], GOOD).changes[0].path
    restarted = replace(PEER, router_id=peer(7).router_id)
    rib.set_peer(restarted)
    new = rib.announce(IPV4_UNICAST, V4[1:2], GOOD).changes[0].path
    assert old is not None and new is not None
    assert (old.peer, new.peer) == (PEER, restarted)
    with pytest.raises(ValueError, match="one peer id"):
        rib.set_peer(peer(2))


# -- property: the returned batches are a faithful change stream -----------------------------------

POOL = [attrs(65001), attrs(65001, 65001), attrs(65001, next_hop="198.51.100.7"), attrs(65001, LOCAL_ASN)]
KEYS = [*V4[:4], key("198.51.100.0/24"), key("198.51.100.128/25")]

intake_ops: st.SearchStrategy[tuple[str, list[int], int, int]] = st.one_of(
    st.tuples(
        st.just("announce"),
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
        st.integers(0, len(POOL) - 1),
        st.sampled_from((0, 0, 1)),
    ),
    st.tuples(
        st.just("withdraw"),
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
        st.just(0),
        st.sampled_from((0, 1)),
    ),
    st.tuples(st.just("stale"), st.just([]), st.just(0), st.just(0)),
    st.tuples(st.just("flush"), st.just([]), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(intake_ops, max_size=40), st.none() | st.integers(0, 6))
def test_batches_mirror_the_table_and_stale_refresh_never_withdraws(
    ops: list[tuple[str, list[int], int, int]], limit: int | None
) -> None:
    rib = AdjRibIn(PEER, ONLY_203, None if limit is None else MaxPrefix(limit))
    mirror: dict[tuple[int, int], PathAttributes] = {}
    for op, prefixes, attr_index, path_id in ops:
        ids = [path_id] * len(prefixes) if path_id else []
        if op == "announce":
            stale_before = {k for k in mirror if rib.is_stale(*k)}
            result = rib.announce(IPV4_UNICAST, prefixes, POOL[attr_index], ids)
            batches = result.changes
            acceptable = POOL[attr_index] is not POOL[3]
            for prefix in withdrawn(batches):
                # Only rejections withdraw on announce, in particular never a refreshed stale path.
                assert not acceptable or ONLY_203.check_prefix(prefix) is not None
            for prefix in prefixes:
                if acceptable and (prefix, path_id) in stale_before and ONLY_203.check_prefix(prefix) is None:
                    assert not rib.is_stale(prefix, path_id)
                    assert rib.get(prefix, path_id) is not None
        elif op == "withdraw":
            batches = rib.withdraw(IPV4_UNICAST, prefixes, ids).changes
            assert announced(batches) == []
        elif op == "stale":
            rib.mark_stale()
            batches = []
        else:
            batches = rib.flush_stale(IPV4_UNICAST)
        for batch in batches:
            for prefix in batch.prefixes:
                if batch.path is None:
                    assert (prefix, batch.path_id) in mirror
                    del mirror[(prefix, batch.path_id)]
                else:
                    assert mirror.get((prefix, batch.path_id)) != batch.path.attributes
                    mirror[(prefix, batch.path_id)] = batch.path.attributes
        held = {(prefix, p.path_id): p.attributes for prefix, p in rib.items(IPV4_UNICAST)}
        assert held == mirror
        assert len(rib) == len(held)
        if limit is not None:
            assert len(rib) <= limit
        for (prefix, _), attributes in held.items():
            assert ONLY_203.check(prefix, attributes, PEER) is None
