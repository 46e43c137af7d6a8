"""InstalledCounts: counting the Loc-RIB's changes gives the same counts as a recount of the RIB."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

from hypothesis import given
from hypothesis import strategies as st

from bgp.rib.loc_rib import LocRib
from bgp.rib.path import Path, PeerInfo
from bgp.types import AsPath, AsPathSegment, PathAttributes, SegmentType, prefix_key
from controller.desired import SelectionMode, SelectionSettings
from controller.runtime.installed import InstalledCounts
from controller.runtime.route_server import hops_function

PEERS = [
    PeerInfo(f"p{n}", ip_address(f"10.0.0.{n + 1}"), 65001 + n, IPv4Address(f"10.0.0.{n + 1}"), 64512)
    for n in range(4)
]
PREFIXES = [prefix_key(ip_network(f"203.0.113.{n * 16}/28")) for n in range(4)]
# (peer, prefixes as a bit mask (one UPDATE), None: withdraw | (AS path length, next hop index:
# 0-1 shared by peers, 2 the peer's own))
Step = tuple[int, int, tuple[int, int] | None]
steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(1, 15),
        st.none() | st.tuples(st.integers(1, 2), st.integers(0, 2)),
    ),
    max_size=40,
)


def _path(peer: PeerInfo, length: int, hop: int) -> Path:
    next_hop = ip_address(f"10.9.0.{hop}") if hop < 2 else peer.address
    as_path = AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (peer.asn,) * length),))
    return Path(peer, PathAttributes(as_path=as_path, next_hop=next_hop))


def _run(mode: SelectionMode, max_paths: int, script: list[Step]) -> None:
    selection = SelectionSettings(mode=mode, max_paths=max_paths)
    rib = LocRib(max_paths=selection.rib_max_paths)
    counts = InstalledCounts(mode, hops_function(selection))
    for peer_index, mask, announce in script:
        peer = PEERS[peer_index]
        path = None if announce is None else _path(peer, *announce)
        prefixes = [p for i, p in enumerate(PREFIXES) if mask >> i & 1]
        changes = rib.update_many(peer, prefixes, path)
        if changes and all(c.new_best is None for c in changes):
            counts.apply_removals(changes)  # the runtime's bulk path for a peer that went down
        else:
            counts.apply(changes)
    recounted = InstalledCounts(mode, hops_function(selection))
    recounted.recount((ecmp[0] if ecmp else None, ecmp) for _, ecmp in rib.selected())
    assert {p.peer_id: counts.get(p.peer_id) for p in PEERS} == {
        p.peer_id: recounted.get(p.peer_id) for p in PEERS
    }


@given(steps)
def test_active_passive(script: list[Step]) -> None:
    _run(SelectionMode.ACTIVE_PASSIVE, 1, script)


@given(steps, st.integers(1, 3))
def test_ecmp(script: list[Step], max_paths: int) -> None:
    _run(SelectionMode.ECMP, max_paths, script)


def test_ecmp_counts_each_peer_of_the_installed_set() -> None:
    selection = SelectionSettings(mode=SelectionMode.ECMP, max_paths=2)
    rib = LocRib(max_paths=selection.rib_max_paths)
    counts = InstalledCounts(SelectionMode.ECMP, hops_function(selection))
    for peer in PEERS[:3]:
        counts.apply(rib.update_many(peer, PREFIXES, _path(peer, 1, 2)))
    assert sorted(counts.get(p.peer_id) for p in PEERS) == [0, 0, 4, 4]


def test_a_large_batch_is_counted_per_distinct_path_with_the_same_result() -> None:
    """From BULK changes on, ActivePassive counts per distinct Path (in C): same counts as a recount."""
    selection = SelectionSettings(mode=SelectionMode.ACTIVE_PASSIVE)
    rib = LocRib(max_paths=selection.rib_max_paths)
    counts = InstalledCounts(selection.mode, hops_function(selection))
    many = [prefix_key(ip_network(f"10.64.{n // 256}.{n % 256}/32")) for n in range(500)]
    script = [
        (PEERS[0], many, _path(PEERS[0], 2, 2)),  # 500 new prefixes
        (PEERS[1], many[:300], _path(PEERS[1], 1, 2)),  # a shorter path: 300 move to p1
        (PEERS[1], many[:300], _path(PEERS[1], 1, 2)),  # the same again: nothing moves
        (PEERS[0], many[100:], None),  # p0 withdraws 400: 200 of them are gone
    ]
    for peer, prefixes, path in script:
        changes = rib.update_many(peer, prefixes, path)
        assert not changes or len(changes) >= 64
        counts.apply(changes)
        recounted = InstalledCounts(selection.mode, hops_function(selection))
        recounted.recount((ecmp[0] if ecmp else None, ecmp) for _, ecmp in rib.selected())
        assert [counts.get(p.peer_id) for p in PEERS] == [recounted.get(p.peer_id) for p in PEERS]
    assert [counts.get(p.peer_id) for p in PEERS[:2]] == [0, 300]
