"""FIB selection modes and persist-routes timing on an explicit clock."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from bgp.types import prefix_key
from controller.desired import Hops, PersistConfig, RouteKey, SelectionMode
from controller.fib import Fib, MoveTally, PersistState, select_next_hops

A = ip_address("10.0.0.2")
B = ip_address("10.0.0.3")
C = ip_address("10.0.0.4")
VIP = prefix_key(ip_network("203.0.113.10/32"))
SVC = prefix_key(ip_network("203.0.113.20/32"))


def test_active_passive_installs_only_the_best_next_hop() -> None:
    assert select_next_hops(SelectionMode.ACTIVE_PASSIVE, A, [A, B], 8) == (A,)


def test_ecmp_installs_the_equal_cost_set_capped_by_max_paths() -> None:
    assert select_next_hops(SelectionMode.ECMP, A, [A, B, C], 8) == (A, B, C)
    assert select_next_hops(SelectionMode.ECMP, A, [A, B, C], 2) == (A, B)
    assert select_next_hops(SelectionMode.ECMP, A, [], 4) == (A,)
    assert select_next_hops(SelectionMode.ECMP, A, [A, A, B], 4) == (A, B)


def test_no_best_path_means_no_route() -> None:
    assert select_next_hops(SelectionMode.ECMP, None, [], 4) == ()


def test_update_emits_only_real_changes() -> None:
    fib = Fib()
    assert fib.update(VIP, (A,)) == {VIP: (A,)}
    assert fib.update(VIP, (A,)) == {}
    assert fib.update(VIP, (B,)) == {VIP: (B,)}
    assert fib.update(VIP, ()) == {VIP: None}
    assert fib.entries() == {}


def test_without_persist_all_sessions_down_empties_the_fib() -> None:
    fib = Fib(PersistConfig(enabled=False))
    fib.sessions_changed(1, now=0.0)
    fib.update(VIP, (A,))
    fib.sessions_changed(0, now=1.0)
    assert fib.update(VIP, ()) == {VIP: None}


def test_persist_holds_the_last_fib_while_every_session_is_down() -> None:
    fib = Fib(PersistConfig(enabled=True, duration_seconds=60))
    fib.sessions_changed(2, now=0.0)
    fib.update_many([(VIP, (A,)), (SVC, (B,))])
    fib.sessions_changed(0, now=10.0)
    assert fib.state is PersistState.HOLDING
    assert fib.update_many([(VIP, ()), (SVC, ())]) == {}
    assert fib.entries() == {VIP: (A,), SVC: (B,)}
    assert fib.next_deadline() is None
    assert fib.handle_timer(now=10_000.0) == {}  # held for as long as every session stays down


def test_persist_window_keeps_unreadvertised_routes_until_it_ends() -> None:
    fib = Fib(PersistConfig(enabled=True, duration_seconds=60))
    fib.sessions_changed(1, now=0.0)
    fib.update_many([(VIP, (A,)), (SVC, (A,))])
    fib.sessions_changed(0, now=5.0)
    fib.update_many([(VIP, ()), (SVC, ())])
    fib.sessions_changed(1, now=100.0)
    assert fib.state is PersistState.RECOVERING
    assert fib.next_deadline() == 160.0
    # VIP is re-advertised through another next hop: the live path replaces the persisted one at once.
    assert fib.update(VIP, (B,)) == {VIP: (B,)}
    assert fib.handle_timer(now=159.9) == {}
    assert fib.handle_timer(now=160.0) == {SVC: None}
    assert fib.entries() == {VIP: (B,)}
    assert fib.state.value == PersistState.LIVE.value
    assert fib.next_deadline() is None


def test_reset_drops_persisted_routes_immediately() -> None:
    fib = Fib(PersistConfig(enabled=True, duration_seconds=300))
    fib.sessions_changed(1, now=0.0)
    fib.update(VIP, (A,))
    fib.sessions_changed(0, now=1.0)
    fib.update(VIP, ())
    assert fib.reset() == {VIP: None}
    assert fib.entries() == {}


def test_one_session_down_of_two_does_not_persist() -> None:
    fib = Fib(PersistConfig(enabled=True))
    fib.sessions_changed(2, now=0.0)
    fib.update(VIP, (A,))
    fib.sessions_changed(1, now=1.0)
    assert fib.state is PersistState.LIVE
    assert fib.update(VIP, (B,)) == {VIP: (B,)}
    assert fib.update(VIP, ()) == {VIP: None}


# -- persist grace: sessions that fail one after another ------------------------------------------


def graced_fib(grace: float = 2.0) -> Fib:
    """Two sessions up: VIP only via A, SVC only via B, both with persist and `grace` seconds."""
    fib = Fib(PersistConfig(enabled=True, duration_seconds=60, grace_seconds=grace))
    fib.sessions_changed(2, now=0.0)
    fib.update_many([(VIP, (A,)), (SVC, (B,))])
    return fib


def test_prefix_of_a_session_that_went_down_is_held_for_the_grace_then_removed() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    assert fib.update(VIP, (), session_down_at=10.0) == {}  # held, not removed
    assert fib.entries() == {VIP: (A,), SVC: (B,)}
    assert fib.state is PersistState.LIVE and fib.next_deadline() == 12.0
    assert fib.handle_timer(now=11.9) == {}
    assert fib.handle_timer(now=12.0) == {VIP: None}  # B's session stayed up: A's prefix goes
    assert fib.entries() == {SVC: (B,)} and dict(fib.persisted()) == {}
    assert fib.next_deadline() is None


def test_every_session_down_within_the_grace_persists_the_earlier_sessions_prefixes() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    fib.update(VIP, (), session_down_at=10.0)
    fib.sessions_changed(0, now=10.3)  # the other session fails 300 ms later
    assert fib.update(SVC, (), session_down_at=10.3) == {}
    assert fib.state is PersistState.HOLDING
    assert dict(fib.persisted()) == {VIP: (A,), SVC: (B,)}
    assert fib.next_deadline() is None  # the grace is over: both are held like any persisted route
    assert fib.handle_timer(now=1000.0) == {}
    # Back: the window treats both alike; only the re-advertised SVC survives it.
    fib.sessions_changed(1, now=2000.0)
    assert fib.update(SVC, (B,)) == {}
    assert fib.handle_timer(now=2060.0) == {VIP: None}
    assert fib.entries() == {SVC: (B,)}


def test_every_session_down_after_the_grace_holds_only_the_last_sessions_prefixes() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    fib.update(VIP, (), session_down_at=10.0)
    assert fib.handle_timer(now=12.0) == {VIP: None}
    fib.sessions_changed(0, now=15.0)
    fib.update(SVC, (), session_down_at=15.0)
    assert dict(fib.persisted()) == {SVC: (B,)}


def test_readvertised_within_the_grace_the_live_path_wins_and_stays() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    fib.update(VIP, (), session_down_at=10.0)
    assert fib.update(VIP, (C,)) == {VIP: (C,)}  # another appliance takes it over
    assert fib.handle_timer(now=12.0) == {}
    assert fib.entries() == {VIP: (C,), SVC: (B,)}


def test_a_newer_grace_is_not_cut_short_by_an_older_one() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    fib.update(VIP, (), session_down_at=10.0)
    fib.sessions_changed(2, now=10.5)
    fib.update(VIP, (A,))  # A is back
    fib.sessions_changed(1, now=11.5)
    fib.update(VIP, (), session_down_at=11.5)  # and gone again: its grace ends at 13.5
    assert fib.handle_timer(now=12.0) == {}
    assert fib.entries()[VIP] == (A,)
    assert fib.handle_timer(now=13.5) == {VIP: None}


def test_withdrawal_by_update_is_immediate_with_persist() -> None:
    fib = graced_fib()
    assert fib.update(VIP, ()) == {VIP: None}  # the session is up: the appliance withdrew it
    assert fib.next_deadline() is None and dict(fib.persisted()) == {}


def test_a_prefix_with_another_path_moves_at_once_when_a_session_goes_down() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    assert fib.update(VIP, (B,), session_down_at=10.0) == {VIP: (B,)}
    assert fib.next_deadline() is None


def test_without_persist_a_session_going_down_removes_its_prefixes_at_once() -> None:
    fib = Fib(PersistConfig(enabled=False))
    fib.sessions_changed(2, now=0.0)
    fib.update(VIP, (A,))
    fib.sessions_changed(1, now=10.0)
    assert fib.update(VIP, (), session_down_at=10.0) == {VIP: None}
    assert fib.next_deadline() is None


def test_window_end_keeps_prefixes_still_in_their_grace() -> None:
    fib = graced_fib()
    fib.sessions_changed(0, now=10.0)
    fib.update_many([(VIP, ()), (SVC, ())], session_down_at=10.0)
    fib.sessions_changed(1, now=20.0)  # window until 80
    fib.update(SVC, (B,))
    fib.sessions_changed(2, now=21.0)
    fib.update(VIP, (A,))
    fib.sessions_changed(1, now=79.0)  # A fails again one second before the window ends
    fib.update(VIP, (), session_down_at=79.0)
    assert fib.next_deadline() == 80.0
    assert fib.handle_timer(now=80.0) == {}  # VIP is in its grace (until 81), not window-persisted
    assert fib.state is PersistState.LIVE and fib.recovery_deadline is None
    assert fib.next_deadline() == 81.0
    assert fib.handle_timer(now=81.0) == {VIP: None}
    assert fib.entries() == {SVC: (B,)}


def test_reset_drops_prefixes_in_their_grace_too() -> None:
    fib = graced_fib()
    fib.sessions_changed(1, now=10.0)
    fib.update(VIP, (), session_down_at=10.0)
    assert fib.reset() == {VIP: None}
    assert fib.next_deadline() is None and fib.handle_timer(now=12.0) == {}


def test_the_tally_counts_additions_moves_and_losses_by_next_hop_set() -> None:
    fib = Fib()
    one_a, one_b = (A,), (B,)  # the runtime interns these: every prefix shares one tuple per set
    tally = MoveTally()
    fib.update_many([(VIP, one_a), (SVC, one_a)], tally=tally)
    assert (tally.added, tally.moves) == (2, {})
    tally = MoveTally()
    fib.update_many([(VIP, one_b), (SVC, one_b)], tally=tally)
    ((move,),) = [list(tally.moves.values())]
    assert (move.old, move.new, move.count, move.first) == (one_a, one_b, 2, VIP)
    tally = MoveTally()
    fib.update_many([(VIP, ()), (SVC, one_b)], tally=tally)  # SVC unchanged: not counted
    assert [(m.old, m.new, m.count) for m in tally.moves.values()] == [(one_b, (), 1)]


def _host(n: int) -> int:
    return prefix_key(ip_network(f"10.1.0.{n}/32"))


def _removal_twins(persist: PersistConfig | None = None) -> tuple[Fib, Fib]:
    twins = Fib(persist), Fib(persist)
    for fib in twins:
        fib.update_many([(VIP, (A,)), (SVC, (A,))] + [(_host(n), (B,)) for n in range(5)])
        fib.sessions_changed(2, 0.0)
    return twins


def _report(tally: MoveTally) -> list[tuple[object, object, int]]:
    return sorted((m.old, m.new, m.count) for m in tally.moves.values())


def test_remove_many_matches_update_many_for_the_whole_fib_and_a_part() -> None:
    everything = [VIP, SVC] + [_host(n) for n in range(5)]
    unknown = prefix_key(ip_network("203.0.113.99/32"))
    for prefixes in (everything, [VIP, _host(3), unknown]):
        bulk, plain = _removal_twins()
        bulk_tally, plain_tally = MoveTally(), MoveTally()
        assert bulk.remove_many(prefixes, tally=bulk_tally) == plain.update_many(
            [(p, ()) for p in prefixes], tally=plain_tally
        )
        assert bulk.entries() == plain.entries()
        assert _report(bulk_tally) == _report(plain_tally)
        assert all(m.first in prefixes for m in bulk_tally.moves.values())


def test_remove_many_holds_routes_like_update_many_when_persisting() -> None:
    persist = PersistConfig(enabled=True, duration_seconds=60)
    bulk, plain = _removal_twins(persist)
    for fib in (bulk, plain):
        fib.sessions_changed(0, 1.0)  # every session down: Holding
    assert bulk.remove_many([VIP, SVC], 1.0) == plain.update_many([(VIP, ()), (SVC, ())], 1.0) == {}
    assert bulk.entries() == plain.entries() and VIP in bulk.entries()


def test_a_bulk_feed_of_new_prefixes_matches_the_per_prefix_pass() -> None:
    """update_many takes a batch of only new prefixes with next hops in bulk; anything else (a known
    prefix, a removal, a repeated key, a generator) goes through the per-prefix pass, same result."""
    known: list[tuple[RouteKey, Hops]] = [(VIP, (A,))]
    batches: list[list[tuple[RouteKey, Hops]]] = [
        [(_host(n), (B,)) for n in range(5)],  # all new: the bulk path
        [(_host(0), (B,)), (VIP, (C,))],  # one known prefix moves
        [(_host(1), (B,)), (_host(2), ())],  # one without next hops
        [(_host(3), (B,)), (_host(3), (C,))],  # the same key twice: the last wins
    ]
    for batch in batches:
        bulk, plain = Fib(), Fib()
        bulk.update_many(known)
        plain.update_many(iter(known))
        bulk_tally, plain_tally = MoveTally(), MoveTally()
        assert bulk.update_many(list(batch), tally=bulk_tally) == plain.update_many(
            iter(batch), tally=plain_tally
        )
        assert bulk.entries() == plain.entries()
        assert (bulk_tally.added, _report(bulk_tally)) == (plain_tally.added, _report(plain_tally))
