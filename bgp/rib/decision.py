"""The BGP decision process (RFC 4271 §9.1.2.2 with RFC 4456 §9 and common practice).

Steps, in order; each one removes candidates and the step that leaves a single candidate is the
recorded `DecisionReason`:

1. highest degree of preference: LOCAL_PREF for iBGP paths (default when absent); eBGP paths
   always get the default, because LOCAL_PREF from an external peer is ignored (RFC 4271 §5.1.5);
2. shortest AS_PATH (an AS_SET counts 1, confederation segments 0; RFC 4271 §9.1.2.2 a, RFC 5065);
3. lowest ORIGIN (IGP < EGP < INCOMPLETE; §9.1.2.2 b);
4. MED (§9.1.2.2 c): among paths from the same neighbouring AS (leftmost AS of AS_PATH) drop
   those above that AS's lowest MED; across ASes only with `always_compare_med`. A missing MED is
   0 (RFC 4271) or, with `missing_med_worst`, the highest value;
5. eBGP over iBGP (§9.1.2.2 d). Step e (IGP cost to the next hop) does not apply: a route
   server has no IGP, every next hop is equally close;
6. lowest BGP identifier, ORIGINATOR_ID when present (§9.1.2.2 f, RFC 4456 §9);
7. shortest CLUSTER_LIST (RFC 4456 §9);
8. lowest peer address (§9.1.2.2 g), then peer id for peers sharing an address;
9. lowest ADD-PATH path identifier (RFC 7911), so two paths of one peer are ordered too.

Multipath: the paths left after step 5 are equal for forwarding. They form the ECMP set, ordered by
steps 6-9 (best first) and cut at `max_paths`: router id, cluster list, peer address and path id
order the set and decide who is left out when it is full, but never exclude a path on their own.
Equal AS_PATH *length* suffices (no same-neighbour-AS requirement, like FRR's
"as-path multipath-relax"), so N appliances in different ASes can share an anycast prefix.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bgp.rib.path import Path

MED_WORST = 0xFFFFFFFF


class DecisionReason(enum.Enum):
    """The decision step that separated the best path from the runner-up."""

    ONLY_PATH = "OnlyPath"
    LOCAL_PREF = "LocalPref"
    AS_PATH_LENGTH = "AsPathLength"
    ORIGIN = "Origin"
    MED = "Med"
    EBGP_OVER_IBGP = "EbgpOverIbgp"
    ROUTER_ID = "RouterId"
    CLUSTER_LIST = "ClusterListLength"
    PEER_ADDRESS = "PeerAddress"
    PATH_ID = "PathId"


@dataclass(frozen=True, slots=True)
class DecisionOptions:
    max_paths: int = 1  # 1: active/passive (one best path); more: ECMP set up to this size
    always_compare_med: bool = False
    missing_med_worst: bool = False
    default_local_pref: int = 100

    def __post_init__(self) -> None:
        if self.max_paths < 1:
            raise ValueError("max_paths must be at least 1")


class Selection(NamedTuple):
    """`ranked` holds every candidate with the ECMP set first (best at index 0)."""

    ranked: tuple[Path, ...]
    ecmp_count: int
    reason: DecisionReason

    @property
    def best(self) -> Path:
        return self.ranked[0]

    @property
    def ecmp(self) -> tuple[Path, ...]:
        return self.ranked[: self.ecmp_count]


def local_pref(path: Path, default: int) -> int:
    """Degree of preference (RFC 4271 §9.1.1): LOCAL_PREF only counts on iBGP paths."""
    value = path.attributes.local_pref
    return value if path.ibgp and value is not None else default


def tie_break_key(path: Path) -> tuple[int, int, int, int, str, int]:
    """Steps 6-9 as one sort key: they are a plain lexicographic order."""
    address = path.peer.address
    return (
        path.router_id,
        len(path.attributes.cluster_list),
        address.version,
        int(address),
        path.peer.peer_id,
        path.path_id,
    )


_TIE_REASONS = (
    DecisionReason.ROUTER_ID,
    DecisionReason.CLUSTER_LIST,
    DecisionReason.PEER_ADDRESS,
    DecisionReason.PEER_ADDRESS,
    DecisionReason.PEER_ADDRESS,
    DecisionReason.PATH_ID,
)


def select(paths: Sequence[Path], options: DecisionOptions) -> Selection:
    """Run the decision process over every candidate path of one prefix (at least one)."""
    if len(paths) == 1:
        return Selection(tuple(paths), 1, DecisionReason.ONLY_PATH)
    if len(paths) == 2:
        return _select_two(paths[0], paths[1], options)
    if not paths:
        raise ValueError("the decision process needs at least one path")
    default = options.default_local_pref
    # 1. Degree of preference.
    prefs = [local_pref(p, default) for p in paths]
    top = max(prefs)
    cands = [p for p, pref in zip(paths, prefs, strict=True) if pref == top]
    if len(cands) == 1:
        return _single(paths, cands[0], DecisionReason.LOCAL_PREF)
    # 2. AS_PATH length.
    shortest = min(p.as_path_length for p in cands)
    cands = [p for p in cands if p.as_path_length == shortest]
    if len(cands) == 1:
        return _single(paths, cands[0], DecisionReason.AS_PATH_LENGTH)
    # 3. ORIGIN.
    lowest_origin = min(p.attributes.origin for p in cands)
    cands = [p for p in cands if p.attributes.origin == lowest_origin]
    if len(cands) == 1:
        return _single(paths, cands[0], DecisionReason.ORIGIN)
    # 4. MED, per neighbouring AS unless always compared.
    missing = MED_WORST if options.missing_med_worst else 0
    meds = [missing if p.attributes.med is None else p.attributes.med for p in cands]
    if options.always_compare_med:
        lowest_med = min(meds)
        cands = [p for p, med in zip(cands, meds, strict=True) if med == lowest_med]
    else:
        lowest_by_as: dict[int, int] = {}
        for p, med in zip(cands, meds, strict=True):
            known = lowest_by_as.get(p.neighbor_as)
            if known is None or med < known:
                lowest_by_as[p.neighbor_as] = med
        cands = [p for p, med in zip(cands, meds, strict=True) if med == lowest_by_as[p.neighbor_as]]
    if len(cands) == 1:
        return _single(paths, cands[0], DecisionReason.MED)
    # 5. eBGP over iBGP.
    if any(not p.ibgp for p in cands) and any(p.ibgp for p in cands):
        cands = [p for p in cands if not p.ibgp]
        if len(cands) == 1:
            return _single(paths, cands[0], DecisionReason.EBGP_OVER_IBGP)
    # 6-9. Lexicographic tie-breaks; the candidates left are the multipath set.
    cands.sort(key=tie_break_key)
    reason = _tie_reason(tie_break_key(cands[0]), tie_break_key(cands[1]))
    count = min(len(cands), options.max_paths)
    chosen = tuple(cands[:count])
    chosen_ids = {id(p) for p in chosen}
    return Selection(chosen + tuple(p for p in paths if id(p) not in chosen_ids), count, reason)


def _single(paths: Sequence[Path], winner: Path, reason: DecisionReason) -> Selection:
    return Selection((winner, *(p for p in paths if p is not winner)), 1, reason)


def _tie_reason(
    first: tuple[int, int, int, int, str, int], second: tuple[int, int, int, int, str, int]
) -> DecisionReason:
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        if a != b:
            return _TIE_REASONS[index]
    return DecisionReason.PATH_ID


def _select_two(a: Path, b: Path, options: DecisionOptions) -> Selection:
    """The same steps as `select`, as one pairwise comparison (the common active/standby case)."""
    x, y = a.attributes, b.attributes
    default = options.default_local_pref
    pref_a = x.local_pref if a.ibgp and x.local_pref is not None else default
    pref_b = y.local_pref if b.ibgp and y.local_pref is not None else default
    if pref_a != pref_b:
        return Selection((a, b) if pref_a > pref_b else (b, a), 1, DecisionReason.LOCAL_PREF)
    if a.as_path_length != b.as_path_length:
        return Selection(
            (a, b) if a.as_path_length < b.as_path_length else (b, a), 1, DecisionReason.AS_PATH_LENGTH
        )
    if x.origin != y.origin:
        return Selection((a, b) if x.origin < y.origin else (b, a), 1, DecisionReason.ORIGIN)
    if options.always_compare_med or a.neighbor_as == b.neighbor_as:
        missing = MED_WORST if options.missing_med_worst else 0
        med_a = missing if x.med is None else x.med
        med_b = missing if y.med is None else y.med
        if med_a != med_b:
            return Selection((a, b) if med_a < med_b else (b, a), 1, DecisionReason.MED)
    if a.ibgp != b.ibgp:
        return Selection((b, a) if a.ibgp else (a, b), 1, DecisionReason.EBGP_OVER_IBGP)
    key_a, key_b = tie_break_key(a), tie_break_key(b)
    if key_b < key_a:
        a, b, key_a, key_b = b, a, key_b, key_a
    return Selection((a, b), 2 if options.max_paths >= 2 else 1, _tie_reason(key_a, key_b))
