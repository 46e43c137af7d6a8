"""Loc-RIB: changes only when best/ECMP change, withdraw/replace, remove_peer, next-hop index."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.rib import DecisionOptions, DecisionReason, LocRib, Path, PeerInfo, RibChange, RouteBatch
from bgp.types import Origin, PathAttributes
from tests.bgp.rib.helpers import LOCAL_ASN, attrs, ibgp_peer, key, path, peer

P1, P2, P3 = key("203.0.113.10/32"), key("203.0.113.20/32"), key("2001:db8::/48")


def test_first_path_is_reported_as_new_best() -> None:
    rib = LocRib()
    a = path(peer(1))
    change = rib.update(a.peer, P1, a)
    assert change == RibChange(P1, None, a, (), (a,), DecisionReason.ONLY_PATH)
    assert (rib.best(P1), rib.ecmp(P1), rib.reason(P1), len(rib)) == (a, (a,), DecisionReason.ONLY_PATH, 1)
    assert P1 in rib and P2 not in rib


def test_worse_path_is_no_change_and_better_path_is() -> None:
    rib = LocRib()
    active = path(peer(1), attrs(65001))
    standby = path(peer(2), attrs(65002, 65002))
    rib.update(active.peer, P1, active)
    assert rib.update(standby.peer, P1, standby) is None
    assert rib.best(P1) is active
    assert rib.reason(P1) is DecisionReason.AS_PATH_LENGTH
    assert rib.candidates(P1) == (active, standby)
    better = path(peer(3, router_id="203.0.113.0"), attrs(65003))
    change = rib.update(better.peer, P1, better)
    assert change == RibChange(P1, active, better, (active,), (better,), DecisionReason.ROUTER_ID)


def test_withdrawing_the_best_promotes_the_standby() -> None:
    rib = LocRib()
    active = path(peer(1), attrs(65001))
    standby = path(peer(2), attrs(65002, 65002))
    rib.update(active.peer, P1, active)
    rib.update(standby.peer, P1, standby)
    change = rib.update(active.peer, P1, None)
    assert change == RibChange(P1, active, standby, (active,), (standby,), DecisionReason.ONLY_PATH)
    assert rib.update(active.peer, P1, None) is None  # already gone
    last = rib.update(standby.peer, P1, None)
    assert last == RibChange(P1, standby, None, (standby,), (), None)
    assert (rib.best(P1), rib.ecmp(P1), rib.reason(P1), len(rib)) == (None, (), None, 0)


def test_withdrawing_a_standby_is_no_change() -> None:
    rib = LocRib()
    active, standby = path(peer(1), attrs(65001)), path(peer(2), attrs(65002, 65002))
    rib.update(active.peer, P1, active)
    rib.update(standby.peer, P1, standby)
    assert rib.update(standby.peer, P1, None) is None
    assert rib.candidates(P1) == (active,)


def test_withdraw_from_an_unknown_peer_is_no_change() -> None:
    rib = LocRib()
    assert rib.update(peer(9), P1, None) is None
    assert rib.update_many(peer(9), [P1, P2], None) == []


def test_replacing_a_path_reports_old_and_new() -> None:
    rib = LocRib()
    p = peer(1)
    first = path(p, attrs(65001, next_hop="198.51.100.1"))
    rib.update(p, P1, first)
    assert rib.update(p, P1, first) is None  # same Path: no-op
    moved = path(p, attrs(65001, next_hop="198.51.100.9"))
    assert rib.update(p, P1, moved) == RibChange(
        P1, first, moved, (first,), (moved,), DecisionReason.ONLY_PATH
    )
    assert rib.peer_path_count("p1") == 1


def test_replacing_the_best_with_a_worse_path_hands_over() -> None:
    rib = LocRib()
    a, b = path(peer(1), attrs(65001)), path(peer(2), attrs(65002, 65002))
    rib.update(a.peer, P1, a)
    rib.update(b.peer, P1, b)
    worse = path(a.peer, attrs(65001, 65001, 65001))
    change = rib.update(a.peer, P1, worse)
    assert change == RibChange(P1, a, b, (a,), (b,), DecisionReason.AS_PATH_LENGTH)
    assert rib.candidates(P1) == (b, worse)


def test_ecmp_membership_change_is_reported_even_when_best_stays() -> None:
    rib = LocRib(max_paths=2)
    a = path(peer(1, router_id="203.0.113.1"), attrs(65001, next_hop="198.51.100.1"))
    b = path(peer(2, router_id="203.0.113.2"), attrs(65002, next_hop="198.51.100.2"))
    c = path(peer(3, router_id="203.0.113.3"), attrs(65003, next_hop="198.51.100.3"))
    rib.update(a.peer, P1, a)
    assert rib.update(b.peer, P1, b) == RibChange(P1, a, a, (a,), (a, b), DecisionReason.ROUTER_ID)
    assert rib.update(c.peer, P1, c) is None  # the set is full and c sorts last
    assert rib.update(b.peer, P1, None) == RibChange(P1, a, a, (a, b), (a, c), DecisionReason.ROUTER_ID)


def test_update_rejects_a_path_of_another_peer_or_path_id() -> None:
    rib = LocRib()
    with pytest.raises(ValueError, match="another peer"):
        rib.update(peer(2), P1, path(peer(1)))
    with pytest.raises(ValueError, match="another peer"):
        rib.update(peer(1), P1, path(peer(1)), path_id=4)


def test_add_path_ids_are_separate_candidates() -> None:
    rib = LocRib(max_paths=2)
    p = peer(1)
    first = path(p, attrs(65001, next_hop="198.51.100.1"), 1)
    second = path(p, attrs(65001, next_hop="198.51.100.2"), 2)
    rib.update(p, P1, first, 1)
    change = rib.update(p, P1, second, 2)
    assert change is not None
    assert change.new_ecmp == (first, second)
    assert rib.reason(P1) is DecisionReason.PATH_ID
    assert rib.update(p, P1, None, 1) == RibChange(
        P1, first, second, (first, second), (second,), DecisionReason.ONLY_PATH
    )
    assert rib.peer_path_count("p1") == 1
    assert list(rib.peer_paths("p1")) == [(P1, second)]


def test_remove_peer_touches_only_its_own_paths() -> None:
    rib = LocRib()
    a, b, c = peer(1), peer(2), peer(3)
    a_path, b_path, c_path = path(a, attrs(65001)), path(b, attrs(65002, 65002)), path(c, attrs(65003))
    rib.update(a, P1, a_path)  # a best, b standby
    rib.update(b, P1, b_path)
    rib.update(a, P2, a_path)  # a only
    rib.update(b, P3, b_path)  # b only
    rib.update(c, P3, c_path)  # c best over b
    changes = rib.remove_peer("p1")
    assert sorted(changes) == sorted(
        [
            RibChange(P1, a_path, b_path, (a_path,), (b_path,), DecisionReason.ONLY_PATH),
            RibChange(P2, a_path, None, (a_path,), (), None),
        ]
    )
    assert (rib.best(P1), rib.best(P2), rib.best(P3)) == (b_path, None, c_path)
    assert rib.candidates(P3) == (c_path, b_path)
    assert rib.peer_path_count("p1") == 0
    assert rib.remove_peer("p1") == []
    assert rib.remove_peer("p9") == []
    assert sorted(rib.selected()) == sorted([(P1, (b_path,)), (P3, (c_path,))])


def test_remove_peer_with_standby_only_paths_reports_nothing() -> None:
    rib = LocRib()
    active, standby = path(peer(1), attrs(65001)), path(peer(2), attrs(65002, 65002))
    for prefix in (P1, P2):
        rib.update(active.peer, prefix, active)
        rib.update(standby.peer, prefix, standby)
    assert rib.remove_peer("p2") == []
    assert rib.ecmp(P1) == rib.ecmp(P2) == (active,)


def test_paths_by_next_hop_follows_announcements_withdrawals_and_peer_removal() -> None:
    rib = LocRib()
    a, b = peer(1), peer(2)
    nh1, nh2, nh3 = ip_address("198.51.100.1"), ip_address("198.51.100.2"), ip_address("198.51.100.3")
    a_via_1 = path(a, attrs(65001, next_hop=str(nh1)))
    a_via_3 = path(a, attrs(65001, next_hop=str(nh3)))  # third-party next hop
    b_via_2 = path(b, attrs(65002, next_hop=str(nh2)))
    b_via_3 = path(b, attrs(65002, next_hop=str(nh3)))
    rib.update_many(a, [P1, P2], a_via_1)
    rib.update(a, P3, a_via_3)
    rib.update(b, P1, b_via_2)
    rib.update(b, P2, b_via_3)
    assert sorted(rib.paths_by_next_hop(nh1)) == sorted([(P1, a_via_1), (P2, a_via_1)])
    assert sorted(rib.paths_by_next_hop(nh3), key=lambda item: item[0]) == sorted(
        [(P3, a_via_3), (P2, b_via_3)], key=lambda item: item[0]
    )
    assert rib.paths_by_next_hop(ip_address("198.51.100.99")) == []
    rib.update(a, P2, a_via_3)  # replace: P2 from a moves from nh1 to nh3
    assert rib.paths_by_next_hop(nh1) == [(P1, a_via_1)]
    rib.update(a, P1, None)
    assert rib.paths_by_next_hop(nh1) == []
    assert nh1 not in set(rib.next_hops())
    rib.remove_peer("p2")
    assert sorted(rib.paths_by_next_hop(nh3)) == sorted([(P2, a_via_3), (P3, a_via_3)])
    assert set(rib.next_hops()) == {nh3}


def test_update_many_equals_one_update_per_prefix() -> None:
    prefixes = [key(f"203.0.113.{n}/32") for n in range(20)]
    bulk, single = LocRib(max_paths=2), LocRib(max_paths=2)
    a = path(peer(1, router_id="203.0.113.1"))
    b = path(peer(2, router_id="203.0.113.2"))
    for rib_path, subset in ((a, prefixes[:15]), (b, prefixes[5:])):
        expected = [c for p in subset if (c := single.update(rib_path.peer, p, rib_path)) is not None]
        assert bulk.update_many(rib_path.peer, subset, rib_path) == expected
    expected = [c for p in prefixes[::2] if (c := single.update(a.peer, p, None)) is not None]
    assert bulk.apply(RouteBatch(a.peer, None, prefixes[::2])) == expected
    assert list(bulk.selected()) == list(single.selected())


def test_reconfigure_recomputes_multi_path_prefixes() -> None:
    rib = LocRib(max_paths=1)
    a = path(peer(1, router_id="203.0.113.1"))
    b = path(peer(2, router_id="203.0.113.2"))
    rib.update(a.peer, P1, a)
    rib.update(b.peer, P1, b)
    rib.update(a.peer, P2, a)
    changes = rib.reconfigure(DecisionOptions(max_paths=2))
    assert changes == [RibChange(P1, a, a, (a,), (a, b), DecisionReason.ROUTER_ID)]
    assert rib.reconfigure(DecisionOptions(max_paths=2)) == []


# -- property: the Loc-RIB equals a brute-force decision over all current paths --------------------


def reference_decision(
    paths: list[Path], options: DecisionOptions
) -> tuple[Path, tuple[Path, ...], DecisionReason]:
    """RFC 4271 §9.1.2.2 as literal elimination, computed from raw attributes (no Path fields)."""

    def pref(p: Path) -> int:
        ibgp = p.peer.asn == p.peer.local_asn
        lp = p.attributes.local_pref
        return lp if ibgp and lp is not None else options.default_local_pref

    def neighbour(p: Path) -> int:
        first = p.attributes.as_path.first_asn()
        if first is not None:
            return first
        return p.peer.local_asn if p.peer.asn == p.peer.local_asn else p.peer.asn

    def med(p: Path) -> int:
        if p.attributes.med is None:
            return 0xFFFFFFFF if options.missing_med_worst else 0
        return p.attributes.med

    def tie(p: Path) -> tuple[int, int, tuple[int, int, str], int]:
        rid = p.attributes.originator_id or p.peer.router_id
        return (
            int(rid),
            len(p.attributes.cluster_list),
            (p.peer.address.version, int(p.peer.address), p.peer.peer_id),
            p.path_id,
        )

    if len(paths) == 1:
        return paths[0], (paths[0],), DecisionReason.ONLY_PATH
    cands = list(paths)
    steps: list[tuple[DecisionReason, Callable[[list[Path]], list[Path]]]] = [
        (DecisionReason.LOCAL_PREF, lambda c: [p for p in c if pref(p) == max(map(pref, c))]),
        (
            DecisionReason.AS_PATH_LENGTH,
            lambda c: [
                p for p in c if p.attributes.as_path.length() == min(q.attributes.as_path.length() for q in c)
            ],
        ),
        (
            DecisionReason.ORIGIN,
            lambda c: [p for p in c if p.attributes.origin == min(q.attributes.origin for q in c)],
        ),
        (
            DecisionReason.MED,
            lambda c: [
                p
                for p in c
                if med(p)
                == min(med(q) for q in c if options.always_compare_med or neighbour(q) == neighbour(p))
            ],
        ),
        (
            DecisionReason.EBGP_OVER_IBGP,
            lambda c: [p for p in c if p.peer.asn != p.peer.local_asn] or c,
        ),
    ]
    for reason, step in steps:
        cands = step(cands)
        if len(cands) == 1:
            return cands[0], (cands[0],), reason
    cands.sort(key=tie)
    first, second = tie(cands[0]), tie(cands[1])
    names = (
        DecisionReason.ROUTER_ID,
        DecisionReason.CLUSTER_LIST,
        DecisionReason.PEER_ADDRESS,
        DecisionReason.PATH_ID,
    )
    reason = next(name for name, x, y in zip(names, first, second, strict=True) if x != y)
    return cands[0], tuple(cands[: options.max_paths]), reason


PEERS = [
    peer(1, 65001, router_id="203.0.113.5"),
    peer(2, 65001, router_id="203.0.113.5", address="198.51.100.20"),  # same router, another session
    peer(3, 65003, router_id="203.0.113.1"),
    ibgp_peer(4, router_id="203.0.113.2"),
    ibgp_peer(5, router_id="203.0.113.9", address="2001:db8::5"),
]
PREFIXES = [key("203.0.113.10/32"), key("203.0.113.0/24"), key("2001:db8:1::/48")]


@st.composite
def attribute_sets(draw: st.DrawFn) -> PathAttributes:
    return PathAttributes(
        origin=draw(st.sampled_from(Origin)),
        as_path=attrs(*draw(st.lists(st.sampled_from((65001, 65003, 65007)), max_size=3))).as_path,
        next_hop=IPv4Address(f"198.51.100.{draw(st.integers(1, 3))}"),
        med=draw(st.none() | st.integers(0, 2)),
        local_pref=draw(st.none() | st.sampled_from((50, 100, 200))),
        originator_id=draw(
            st.none() | st.sampled_from((IPv4Address("203.0.113.3"), IPv4Address("203.0.113.7")))
        ),
        cluster_list=draw(st.sampled_from(((), (IPv4Address("10.0.0.1"),)))),
    )


operations: st.SearchStrategy[tuple[str, int, list[int], int, int]] = st.one_of(
    st.tuples(
        st.just("announce"),
        st.integers(0, len(PEERS) - 1),
        st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3),
        st.integers(0, 5),
        st.sampled_from((0, 0, 1)),
    ),
    st.tuples(
        st.just("withdraw"),
        st.integers(0, len(PEERS) - 1),
        st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3),
        st.just(0),
        st.sampled_from((0, 1)),
    ),
    st.tuples(st.just("remove_peer"), st.integers(0, len(PEERS) - 1), st.just([]), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(attribute_sets(), min_size=6, max_size=6),
    st.builds(
        DecisionOptions,
        max_paths=st.integers(1, 3),
        always_compare_med=st.booleans(),
        missing_med_worst=st.booleans(),
    ),
    st.lists(operations, max_size=40),
    st.booleans(),
)
def test_loc_rib_always_equals_a_brute_force_decision(
    attribute_pool: list[PathAttributes],
    options: DecisionOptions,
    ops: list[tuple[str, int, list[int], int, int]],
    track_backups: bool,
) -> None:
    rib = LocRib(
        max_paths=options.max_paths,
        always_compare_med=options.always_compare_med,
        missing_med_worst=options.missing_med_worst,
    )
    rib.track_backups = track_backups
    backups: dict[int, Path | None] = dict.fromkeys(PREFIXES)  # as a consumer last looked them up
    model: dict[tuple[str, int, int], Path] = {}
    interned: dict[tuple[int, int, int], Path] = {}
    seen: dict[int, tuple[Path | None, tuple[Path, ...]]] = dict.fromkeys(PREFIXES, (None, ()))
    for op, peer_index, prefixes, attr_index, path_id in ops:
        p: PeerInfo = PEERS[peer_index]
        if op == "announce":
            rib_path = interned.setdefault(
                (peer_index, attr_index, path_id), Path(p, attribute_pool[attr_index], path_id)
            )
            changes = rib.update_many(p, prefixes, rib_path, path_id)
            for prefix in prefixes:
                model[(p.peer_id, prefix, path_id)] = rib_path
        elif op == "withdraw":
            changes = rib.update_many(p, prefixes, None, path_id)
            for prefix in prefixes:
                model.pop((p.peer_id, prefix, path_id), None)
        else:
            changes = rib.remove_peer(p.peer_id)
            for k in [k for k in model if k[0] == p.peer_id]:
                del model[k]
        # The reported changes turn the previous state into the current one, and only real changes
        # (with track_backups, a change of the backup alone is one).
        for change in changes:
            assert seen[change.prefix] == (change.old_best, change.old_ecmp)
            # Paths compare by identity in the Loc-RIB (the Adj-RIB-In interns them).
            same = [id(p) for p in (change.old_best, *change.old_ecmp)] == [
                id(p) for p in (change.new_best, *change.new_ecmp)
            ]
            assert not same or (track_backups and rib.backup(change.prefix) is not backups[change.prefix])
            seen[change.prefix] = (change.new_best, change.new_ecmp)
        reported = {change.prefix for change in changes}
        for prefix in PREFIXES:
            backup = rib.backup(prefix)
            if track_backups and backup is not backups[prefix]:
                assert prefix in reported  # a consumer that looks the backup up never misses one
            if prefix in reported:
                backups[prefix] = backup
            # The backup runs through a next hop outside the ECMP set, and exists when one does.
            hops = {p.attributes.next_hop for p in rib.ecmp(prefix)}
            outside = [p for p in rib.candidates(prefix) if p.attributes.next_hop not in hops]
            assert (backup is None) == (not outside)
            assert backup is None or backup in outside
        for prefix in PREFIXES:
            current = [rp for (_, pfx, _), rp in model.items() if pfx == prefix]
            if not current:
                assert (rib.best(prefix), rib.ecmp(prefix), rib.reason(prefix)) == (None, (), None)
                assert seen[prefix] == (None, ())
                continue
            best, ecmp, reason = reference_decision(current, options)
            assert rib.best(prefix) is best
            assert rib.ecmp(prefix) == ecmp
            assert rib.reason(prefix) is reason
            assert seen[prefix] == (best, ecmp)
            assert sorted(map(id, rib.candidates(prefix))) == sorted(map(id, current))
        for next_hop in {IPv4Address(f"198.51.100.{n}") for n in (1, 2, 3)}:
            expected = sorted(
                (pfx, id(rp)) for (_, pfx, _), rp in model.items() if rp.attributes.next_hop == next_hop
            )
            assert sorted((pfx, id(rp)) for pfx, rp in rib.paths_by_next_hop(next_hop)) == expected
    assert PEERS[3].local_asn == LOCAL_ASN


def test_a_backup_change_is_reported_when_tracked() -> None:
    rib = LocRib()
    rib.track_backups = True
    active = path(peer(1), attrs(65001, next_hop="198.51.100.1"))
    standby = path(peer(2), attrs(65002, 65002, next_hop="198.51.100.2"))
    rib.update(active.peer, P1, active)
    rib.update(active.peer, P2, active)
    assert rib.backup(P1) is None
    # The standby arriving after the active changes no best path, but it is the backup now.
    assert rib.update_many(standby.peer, [P1, P2], standby) == [
        RibChange(P1, active, active, (active,), (active,), DecisionReason.AS_PATH_LENGTH),
        RibChange(P2, active, active, (active,), (active,), DecisionReason.AS_PATH_LENGTH),
    ]
    assert rib.backup(P1) is standby and rib.sole_next_hops("p1") == [ip_address("198.51.100.1")]
    # A standby through the active's own next hop is no backup.
    same_hop = path(peer(3), attrs(65003, 65003, 65003, next_hop="198.51.100.1"))
    assert rib.update(same_hop.peer, P1, same_hop) is None
    assert rib.backup(P1) is standby and rib.sole_next_hops("p1") == []  # p3 uses it too
    # Withdrawn, the standby is reported again (the prefix has no backup left).
    assert rib.update(standby.peer, P2, None) == RibChange(
        P2, active, active, (active,), (active,), DecisionReason.ONLY_PATH
    )
    assert rib.backup(P2) is None
    assert rib.remove_peer("p2") == [  # p3's path (via the active's next hop) is left
        RibChange(P1, active, active, (active,), (active,), DecisionReason.AS_PATH_LENGTH)
    ]
    assert rib.backup(P1) is None and rib.best(P1) is active


def test_untracked_backups_stay_silent() -> None:
    rib = LocRib()
    active = path(peer(1), attrs(65001, next_hop="198.51.100.1"))
    standby = path(peer(2), attrs(65002, 65002, next_hop="198.51.100.2"))
    rib.update(active.peer, P1, active)
    assert rib.update(standby.peer, P1, standby) is None
    assert rib.backup(P1) is standby  # there to look up, but no change is reported for it
    assert rib.remove_peer("p2") == []


def test_removing_the_standby_peer_reports_each_prefix_it_backed() -> None:
    rib = LocRib()
    rib.track_backups = True
    active = path(peer(1), attrs(65001, next_hop="198.51.100.1"))
    standby = path(peer(2), attrs(65002, 65002, next_hop="198.51.100.2"))
    for prefix in (P1, P2):
        rib.update(active.peer, prefix, active)
        rib.update(standby.peer, prefix, standby)
    changes = rib.remove_peer("p2")
    assert sorted(changes) == sorted(
        RibChange(prefix, active, active, (active,), (active,), DecisionReason.ONLY_PATH)
        for prefix in (P1, P2)
    )
    assert rib.backup(P1) is rib.backup(P2) is None
    assert rib.peer_path_count("p2") == 0
