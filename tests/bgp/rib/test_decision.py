"""The decision process: every step in isolation with its recorded reason, MED rules, ECMP sets."""

from __future__ import annotations

import itertools

import pytest

from bgp.rib import DecisionOptions, DecisionReason, Path, select
from bgp.types import Origin
from tests.bgp.rib.helpers import attrs, ibgp_peer, path, peer

DEFAULT = DecisionOptions()


def winner(paths: list[Path], options: DecisionOptions = DEFAULT) -> tuple[Path, DecisionReason]:
    """Best path and reason; asserts the result does not depend on the input order."""
    results = {
        (id(select(list(order), options).best), select(list(order), options).reason)
        for order in itertools.permutations(paths)
    }
    assert len(results) == 1, "decision depends on input order"
    selection = select(paths, options)
    return selection.best, selection.reason


def test_single_path_is_best_with_reason_only_path() -> None:
    only = path(peer(1))
    selection = select([only], DEFAULT)
    assert (selection.best, selection.ecmp, selection.reason) == (only, (only,), DecisionReason.ONLY_PATH)


def test_no_path_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one path"):
        select([], DEFAULT)
    with pytest.raises(ValueError, match="max_paths"):
        DecisionOptions(max_paths=0)


def test_highest_local_pref_wins_among_ibgp_paths() -> None:
    high = path(ibgp_peer(1), attrs(65009, 65008, local_pref=200))  # longer AS path, still wins
    low = path(ibgp_peer(2), attrs(65009, local_pref=100))
    assert winner([high, low]) == (high, DecisionReason.LOCAL_PREF)


def test_missing_ibgp_local_pref_counts_as_the_default() -> None:
    missing = path(ibgp_peer(1), attrs(65009))
    below = path(ibgp_peer(2), attrs(65009, local_pref=99))
    assert winner([missing, below]) == (missing, DecisionReason.LOCAL_PREF)
    assert winner([missing, below], DecisionOptions(default_local_pref=50)) == (
        below,
        DecisionReason.LOCAL_PREF,
    )


def test_ebgp_local_pref_is_ignored_rfc4271_5_1_5() -> None:
    claims_high = path(peer(1), attrs(65001, 65005, local_pref=1000))
    shorter = path(peer(2), attrs(65002))
    assert winner([claims_high, shorter]) == (shorter, DecisionReason.AS_PATH_LENGTH)
    # An iBGP path below the default loses to an eBGP path at the preference step.
    ibgp_low = path(ibgp_peer(3), attrs(local_pref=50))
    assert winner([ibgp_low, shorter]) == (shorter, DecisionReason.LOCAL_PREF)


def test_shortest_as_path_wins() -> None:
    short = path(peer(2, router_id="203.0.113.200"), attrs(65002))
    long = path(peer(1), attrs(65001, 65001))  # prepended standby
    assert winner([short, long]) == (short, DecisionReason.AS_PATH_LENGTH)


def test_as_set_counts_one_and_confederation_segments_do_not_count() -> None:
    with_set = path(peer(1, router_id="203.0.113.200"), attrs(65001, as_set=(1, 2, 3, 4)))  # length 2
    three = path(peer(2), attrs(65002, 7, 8))
    assert winner([with_set, three]) == (with_set, DecisionReason.AS_PATH_LENGTH)
    confed = path(peer(3, router_id="203.0.113.201"), attrs(65003, confed=(1, 2, 3, 4, 5)))  # length 1
    two = path(peer(4), attrs(65004, 9))
    assert winner([confed, two]) == (confed, DecisionReason.AS_PATH_LENGTH)


def test_lowest_origin_wins() -> None:
    igp = path(peer(1, router_id="203.0.113.200"), attrs(65001, origin=Origin.IGP))
    egp = path(peer(2), attrs(65002, origin=Origin.EGP))
    incomplete = path(peer(3), attrs(65003, origin=Origin.INCOMPLETE))
    assert winner([igp, egp, incomplete]) == (igp, DecisionReason.ORIGIN)
    assert winner([egp, incomplete]) == (egp, DecisionReason.ORIGIN)


def test_lower_med_wins_between_paths_from_the_same_neighbour_as() -> None:
    a = peer(1, 65001, router_id="203.0.113.200")
    b = peer(2, 65001)
    low = path(a, attrs(65001, med=10))
    high = path(b, attrs(65001, med=20))
    assert winner([low, high]) == (low, DecisionReason.MED)


def test_med_is_not_compared_across_neighbour_ases_by_default() -> None:
    low_med = path(peer(1, router_id="203.0.113.200"), attrs(65001, med=10))
    high_med = path(peer(2, router_id="203.0.113.100"), attrs(65002, med=500))
    assert winner([low_med, high_med]) == (high_med, DecisionReason.ROUTER_ID)
    always = DecisionOptions(always_compare_med=True)
    assert winner([low_med, high_med], always) == (low_med, DecisionReason.MED)


def test_missing_med_is_zero_unless_treated_as_worst() -> None:
    missing = path(peer(1, 65001, router_id="203.0.113.200"), attrs(65001))
    ten = path(peer(2, 65001), attrs(65001, med=10))
    assert winner([missing, ten]) == (missing, DecisionReason.MED)
    assert winner([missing, ten], DecisionOptions(missing_med_worst=True)) == (ten, DecisionReason.MED)


def test_med_eliminates_per_neighbour_as_rfc4271_9_1_2_2_c() -> None:
    # AS 65001 has MEDs 10 and 5: the 10 is removed; AS 65002's path survives with MED 50 and
    # then wins on router id. Pairwise comparison would depend on order; elimination does not.
    a10 = path(peer(1, 65001, router_id="203.0.113.1"), attrs(65001, med=10))
    a5 = path(peer(2, 65001, router_id="203.0.113.3"), attrs(65001, med=5))
    b50 = path(peer(3, 65002, router_id="203.0.113.2"), attrs(65002, med=50))
    best, reason = winner([a10, a5, b50], DecisionOptions(max_paths=4))
    assert (best, reason) == (b50, DecisionReason.ROUTER_ID)
    assert select([a10, a5, b50], DecisionOptions(max_paths=4)).ecmp == (b50, a5)


def test_neighbour_as_of_an_empty_ibgp_path_is_our_own_as() -> None:
    a = path(ibgp_peer(1, router_id="203.0.113.200"), attrs(med=1))
    b = path(ibgp_peer(2), attrs(med=2))
    assert winner([a, b]) == (a, DecisionReason.MED)


def test_ebgp_wins_over_ibgp() -> None:
    internal = path(ibgp_peer(1, router_id="203.0.113.1"), attrs(65009))
    external = path(peer(2, router_id="203.0.113.200"), attrs(65002))
    assert winner([internal, external]) == (external, DecisionReason.EBGP_OVER_IBGP)


def test_lowest_router_id_wins() -> None:
    a = path(peer(1, router_id="203.0.113.9"), attrs(65001))
    b = path(peer(2, router_id="203.0.113.10"), attrs(65002))
    assert winner([a, b]) == (a, DecisionReason.ROUTER_ID)


def test_originator_id_replaces_the_router_id_rfc4456_9() -> None:
    reflected = path(ibgp_peer(1, router_id="203.0.113.250"), attrs(65009, originator_id="203.0.113.5"))
    direct = path(ibgp_peer(2, router_id="203.0.113.6"), attrs(65009))
    assert winner([reflected, direct]) == (reflected, DecisionReason.ROUTER_ID)


def test_shorter_cluster_list_wins() -> None:
    one = path(ibgp_peer(1), attrs(65009, originator_id="203.0.113.5", cluster_list=("10.0.0.1",)))
    two = path(ibgp_peer(2), attrs(65009, originator_id="203.0.113.5", cluster_list=("10.0.0.2", "10.0.0.1")))
    assert winner([one, two]) == (one, DecisionReason.CLUSTER_LIST)


def test_lowest_peer_address_wins_for_the_same_router() -> None:
    a = path(peer(1, 65001, router_id="203.0.113.1", address="198.51.100.20"), attrs(65001))
    b = path(peer(2, 65001, router_id="203.0.113.1", address="198.51.100.3"), attrs(65001))
    assert winner([a, b]) == (b, DecisionReason.PEER_ADDRESS)
    v6 = path(peer(3, 65001, router_id="203.0.113.1", address="2001:db8::1"), attrs(65001))
    assert winner([a, v6]) == (a, DecisionReason.PEER_ADDRESS)  # IPv4 sorts before IPv6


def test_lowest_path_id_breaks_ties_within_one_peer() -> None:
    p = peer(1)
    first = path(p, attrs(65001, next_hop="198.51.100.10"), 7)
    second = path(p, attrs(65001, next_hop="198.51.100.11"), 3)
    assert winner([first, second]) == (second, DecisionReason.PATH_ID)


def test_ecmp_set_holds_paths_equal_through_ebgp_step_ordered_by_router_id() -> None:
    options = DecisionOptions(max_paths=8)
    a = path(peer(1, router_id="203.0.113.30"), attrs(65001, next_hop="198.51.100.1"))
    b = path(peer(2, router_id="203.0.113.10"), attrs(65002, next_hop="198.51.100.2"))
    c = path(
        peer(3, router_id="203.0.113.20"), attrs(65003, next_hop="198.51.100.3", med=99)
    )  # other AS: MED moot
    prepended = path(peer(4, router_id="203.0.113.1"), attrs(65004, 65004))
    incomplete = path(peer(5, router_id="203.0.113.2"), attrs(65005, origin=Origin.INCOMPLETE))
    internal = path(ibgp_peer(6, router_id="203.0.113.3"), attrs(65009))
    selection = select([a, b, c, prepended, incomplete, internal], options)
    assert selection.ecmp == (b, c, a)
    assert selection.reason is DecisionReason.ROUTER_ID
    assert set(map(id, selection.ranked)) == set(map(id, [a, b, c, prepended, incomplete, internal]))


def test_ecmp_set_is_capped_at_max_paths_keeping_the_lowest_tie_breaks() -> None:
    paths = [path(peer(n, router_id=f"203.0.113.{50 - n}"), attrs(65000 + n)) for n in range(1, 6)]
    assert select(paths, DecisionOptions(max_paths=2)).ecmp == (paths[4], paths[3])
    assert select(paths, DecisionOptions(max_paths=1)).ecmp == (paths[4],)
    assert len(select(paths, DecisionOptions(max_paths=16)).ecmp) == 5
    two = paths[:2]
    assert select(two, DecisionOptions(max_paths=2)).ecmp == (paths[1], paths[0])
    assert select(two, DecisionOptions(max_paths=1)).ecmp == (paths[1],)


def test_ibgp_paths_form_an_ecmp_set_when_no_ebgp_path_exists() -> None:
    a = path(ibgp_peer(1), attrs(local_pref=100))
    b = path(ibgp_peer(2), attrs())
    assert select([a, b], DecisionOptions(max_paths=2)).ecmp == (a, b)


def test_a_path_losing_on_med_is_left_out_of_the_ecmp_set() -> None:
    low = path(peer(1, 65001, router_id="203.0.113.9"), attrs(65001, med=0))
    high = path(peer(2, 65001, router_id="203.0.113.1"), attrs(65001, med=1))
    other_as = path(peer(3, 65003, router_id="203.0.113.5"), attrs(65003, med=1))
    selection = select([low, high, other_as], DecisionOptions(max_paths=4))
    assert selection.ecmp == (other_as, low)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_two_path_fast_path_agrees_with_the_general_steps(n: int) -> None:
    # Same candidates padded with far-worse paths must keep the same winner and reason.
    options = DecisionOptions(max_paths=4)
    a = path(peer(1, 65001, router_id="203.0.113.9"), attrs(65001, med=3))
    b = path(peer(2, 65001, router_id="203.0.113.1"), attrs(65001, med=3))
    worse = [path(peer(10 + i), attrs(65010 + i, 1, 2, 3)) for i in range(n - 2)]
    assert (
        select([a, b], options).reason is select([a, b, *worse], options).reason is DecisionReason.ROUTER_ID
    )
    assert select([a, b], options).ecmp == select([a, b, *worse], options).ecmp == (b, a)
