"""Adj-RIB-In with import policy, Loc-RIB with the decision process, diffs for the FIB.

Pure: no I/O, no clocks. The speaker feeds each peer's `AdjRibIn` from decoded UPDATEs
(`announce` per Reach, `withdraw` per Unreach) and hands the returned batches to the shared
`LocRib`, whose `RibChange`s drive the FIB writers. Each AdjRibIn is also the Loc-RIB's
`PeerSource` for its peer (`LocRib.attach`): the Loc-RIB keeps no per-peer copy of the keys.
"""

from bgp.rib.adj_rib_in import AdjRibIn, IntakeCounters, IntakeResult, Rejection
from bgp.rib.decision import DecisionOptions, DecisionReason, Selection, select
from bgp.rib.loc_rib import LocRib, PeerSource, RibChange
from bgp.rib.path import Path, PeerInfo, RouteBatch
from bgp.rib.policy import (
    ALLOW_ALL,
    ImportPolicy,
    MaxPrefix,
    MaxPrefixAction,
    MaxPrefixEvent,
    PrefixRule,
    RejectReason,
    next_hop_usable,
)

__all__ = [
    "ALLOW_ALL",
    "AdjRibIn",
    "DecisionOptions",
    "DecisionReason",
    "ImportPolicy",
    "IntakeCounters",
    "IntakeResult",
    "LocRib",
    "MaxPrefix",
    "MaxPrefixAction",
    "MaxPrefixEvent",
    "Path",
    "PeerInfo",
    "PeerSource",
    "PrefixRule",
    "RejectReason",
    "Rejection",
    "RibChange",
    "RouteBatch",
    "Selection",
    "next_hop_usable",
    "select",
]
