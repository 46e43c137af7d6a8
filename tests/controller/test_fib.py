"""FIB selection modes and persist-routes timing on an explicit clock."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from controller.fib import Fib, PersistConfig, PersistState, SelectionMode, select_next_hops
from controller.writers.base import FibEntry

A = ip_address("10.0.0.2")
B = ip_address("10.0.0.3")
C = ip_address("10.0.0.4")
VIP = ip_network("203.0.113.10/32")
SVC = ip_network("203.0.113.20/32")


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
    assert fib.update(VIP, (A,)) == {VIP: FibEntry(VIP, (A,))}
    assert fib.update(VIP, (A,)) == {}
    assert fib.update(VIP, (B,)) == {VIP: FibEntry(VIP, (B,))}
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
    assert fib.update(VIP, (B,)) == {VIP: FibEntry(VIP, (B,))}
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
    assert fib.update(VIP, (B,)) == {VIP: FibEntry(VIP, (B,))}
    assert fib.update(VIP, ()) == {VIP: None}
