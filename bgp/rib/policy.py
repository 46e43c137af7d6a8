"""Import policy: prefix allow-lists, never-accept ranges, next-hop sanity, AS loops, max-prefix.

Nothing is accepted from a peer unless an allow rule covers the prefix (RFC 8212 §2: deny by
default). Prefix matching runs once per received prefix, so rules are compiled per family into
"levels": for every distinct rule prefix length L, a dict from the L leading bits of the network
to a bitmask of the route lengths allowed there. Checking a prefix key is integer shifts and at
most one dict lookup per level, with no ipaddress object per prefix; the common single rule
`0.0.0.0/0 le 32` costs one shift and one lookup.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from bgp.rib.path import PeerInfo
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    Family,
    IPAddress,
    PathAttributes,
    Prefix,
    PrefixKey,
    key_family,
    prefix_key,
)


class RejectReason(enum.Enum):
    """Why a received route was not accepted (bounded: usable as a metric label)."""

    NOT_ALLOWED = "NotAllowed"  # no allow rule covers the prefix (RFC 8212)
    FORBIDDEN_PREFIX = "ForbiddenPrefix"  # inside a never-accept range (cluster-internal, our own)
    MAX_PREFIX = "MaxPrefix"  # over the peer's limit (action Reject, or the UPDATE that tripped Teardown)
    BAD_NEXT_HOP = "BadNextHop"  # missing, unusable or one of our own addresses
    AS_LOOP = "AsLoop"  # our ASN in AS_PATH (RFC 4271 §9.1.2)
    FIRST_AS_MISMATCH = "FirstAsMismatch"  # eBGP AS_PATH does not start with the peer's AS (§6.3)


class MaxPrefixAction(enum.Enum):
    """What happens when a peer sends more new prefixes than its limit.

    The three user-facing behaviours of FRR and BIRD: FRR `maximum-prefix N warning-only` and BIRD
    `receive limit N action warn` (WARN); BIRD `action block` (REJECT); FRR `maximum-prefix N
    [restart M]` and BIRD `action disable` (TEARDOWN, optionally restarted after a fixed time).
    """

    WARN = "Warn"  # keep accepting everything, report once per crossing
    REJECT = "Reject"  # accept up to the limit, refuse the rest (RejectReason.MAX_PREFIX), keep the session
    TEARDOWN = "Teardown"  # close with Cease/1 (RFC 4486 §4) and keep the session Idle (RFC 4271 §8.1.1)


class MaxPrefixEvent(enum.IntEnum):
    """What an intake step reports about the peer's prefix count; higher is more severe."""

    THRESHOLD = 1  # reached warn_threshold_percent of the limit
    EXCEEDED = 2  # over the limit, action WARN: routes still accepted
    REJECTED = 3  # at the limit, action REJECT: new prefixes refused (once per crossing)
    TEARDOWN = 4  # over the limit, action TEARDOWN: excess refused, the caller closes the session


@dataclass(frozen=True, slots=True)
class MaxPrefix:
    """Per-peer limit on accepted paths (counted after import policy, like FRR's default).

    `restart_after` (seconds, TEARDOWN only): the session starts again on its own once this long
    after the teardown (FRR's `restart`); None keeps it Idle until the configuration changes.
    """

    limit: int
    action: MaxPrefixAction = MaxPrefixAction.TEARDOWN
    warn_threshold_percent: int = 75
    restart_after: float | None = None

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("max-prefix limit must not be negative")
        if not 1 <= self.warn_threshold_percent <= 100:
            raise ValueError("warn_threshold_percent must be within 1..100")
        if self.restart_after is not None:
            if self.action is not MaxPrefixAction.TEARDOWN:
                raise ValueError("a max-prefix restart interval needs the TEARDOWN action")
            if self.restart_after <= 0:
                raise ValueError("max-prefix restart_after must be positive")

    @property
    def threshold(self) -> int:
        """The count at which the one-time warning fires (rounded up)."""
        return -(-self.limit * self.warn_threshold_percent // 100)

    @property
    def capacity(self) -> int | None:
        """How many paths may be held: the limit where it caps intake (REJECT, TEARDOWN), else None."""
        return None if self.action is MaxPrefixAction.WARN else self.limit


_BITS = {4: 32, 6: 128}


@dataclass(frozen=True, slots=True)
class PrefixRule:
    """A prefix-list entry: routes inside `prefix` whose length lies in [min_length, max_length].

    Without ge/le only `prefix` itself matches; `ge` alone extends up to the family's maximum
    length; `le` alone starts at the prefix's own length (the usual prefix-list semantics).
    """

    prefix: Prefix
    ge: int | None = None
    le: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, IPv4Network | IPv6Network):
            raise TypeError(f"prefix must be an IPv4Network or IPv6Network, not {self.prefix!r}")
        bits = _BITS[self.prefix.version]
        length = self.prefix.prefixlen
        lo, hi = self.min_length, self.max_length
        if not length <= lo <= hi <= bits:
            raise ValueError(f"need {length} <= ge <= le <= {bits} for {self.prefix}, got ge {lo} le {hi}")

    @classmethod
    def or_longer(cls, prefix: Prefix) -> PrefixRule:
        """The prefix and everything inside it (for never-accept ranges)."""
        return cls(prefix, le=_BITS[prefix.version])

    @property
    def family(self) -> Family:
        return IPV4_UNICAST if self.prefix.version == 4 else IPV6_UNICAST

    @property
    def min_length(self) -> int:
        return self.ge if self.ge is not None else self.prefix.prefixlen

    @property
    def max_length(self) -> int:
        if self.le is not None:
            return self.le
        return _BITS[self.prefix.version] if self.ge is not None else self.prefix.prefixlen

    def matches(self, key: PrefixKey) -> bool:
        """Whether one prefix key falls under this rule (the compiled policy does this in bulk)."""
        return _Levels((self,), _BITS[self.prefix.version]).matches(key)

    def __str__(self) -> str:
        text = str(self.prefix)
        if self.ge is not None:
            text += f" ge {self.ge}"
        if self.le is not None:
            text += f" le {self.le}"
        return text


class _Levels:
    """Rules of one family compiled for integer matching on prefix keys.

    A key is (address << 8) | length (IPv6 keys carry a flag bit above the address, which the
    shift keeps on both sides, so no masking is needed). For a rule of length L the network is
    the key's address shifted right by (bits - L).
    """

    __slots__ = ("everything", "lengths", "levels")

    def __init__(self, rules: Iterable[PrefixRule], bits: int) -> None:
        by_length: dict[int, dict[int, int]] = {}
        lengths = 0
        for rule in rules:
            plen = rule.prefix.prefixlen
            mask = ((1 << (rule.max_length + 1)) - 1) ^ ((1 << rule.min_length) - 1)
            net = (prefix_key(rule.prefix) >> 8) >> (bits - plen)
            nets = by_length.setdefault(plen, {})
            nets[net] = nets.get(net, 0) | mask
            lengths |= mask
        self.levels: tuple[tuple[int, int, dict[int, int]], ...] = tuple(
            (plen, bits - plen, by_length[plen]) for plen in sorted(by_length)
        )
        self.lengths = lengths
        all_lengths = (1 << (bits + 1)) - 1
        self.everything = 0 in by_length and all(m == all_lengths for m in by_length[0].values())

    def matches(self, key: PrefixKey) -> bool:
        length = key & 0xFF
        if not (self.lengths >> length) & 1:
            return False
        address = key >> 8
        for plen, shift, nets in self.levels:
            if plen > length:
                return False
            mask = nets.get(address >> shift)
            if mask is not None and (mask >> length) & 1:
                return True
        return False


PrefixCheck = Callable[[PrefixKey], "RejectReason | None"]


def _compile_check(allow: _Levels, forbid: _Levels) -> PrefixCheck:
    """One closure per family so the per-prefix cost is a single call (the hot path of intake)."""
    allow_levels, allow_lengths = allow.levels, allow.lengths
    forbid_levels, forbid_lengths = forbid.levels, forbid.lengths
    not_allowed, forbidden = RejectReason.NOT_ALLOWED, RejectReason.FORBIDDEN_PREFIX

    def check(key: PrefixKey) -> RejectReason | None:
        length = key & 0xFF
        address = key >> 8
        if (forbid_lengths >> length) & 1:
            for plen, shift, nets in forbid_levels:
                if plen > length:
                    break
                mask = nets.get(address >> shift)
                if mask is not None and (mask >> length) & 1:
                    return forbidden
        if (allow_lengths >> length) & 1:
            for plen, shift, nets in allow_levels:
                if plen > length:
                    break
                mask = nets.get(address >> shift)
                if mask is not None and (mask >> length) & 1:
                    return None
        return not_allowed

    return check


def next_hop_usable(address: IPAddress) -> bool:
    """Whether an address can be a next hop at all (before our own addresses are excluded).

    Unspecified, loopback and multicast never forward; IPv4 link-local (169.254/16, RFC 3927),
    "this network" (0/8) and the limited broadcast are not unicast next hops. IPv6 link-local
    stays usable: unnumbered IPv6 peering sends fe80:: next hops (RFC 2545 §3); IPv4-mapped IPv6
    addresses (RFC 4291 §2.5.5.2) are not routable next hops here.
    """
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        return False
    if isinstance(address, IPv4Address):
        value = int(address)
        return not (address.is_link_local or value >> 24 == 0 or value == 0xFFFFFFFF)
    return not (isinstance(address, IPv6Address) and address.ipv4_mapped is not None)


_FAMILY_BITS = {IPV4_UNICAST: 32, IPV6_UNICAST: 128}


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    """What a peer may announce to us. Compares by configuration, so the controller can diff it.

    `forbidden` wins over `allowed`: it lists ranges never accepted (cluster pod/service CIDRs,
    the endpoint's own addresses); leave a range out of it to allow it explicitly.
    """

    allowed: tuple[PrefixRule, ...] = ()
    forbidden: tuple[PrefixRule, ...] = ()
    forbidden_next_hops: frozenset[IPAddress] = frozenset()
    enforce_first_as: bool = True
    allow_own_as: int = 0  # occurrences of our ASN tolerated in AS_PATH ("allowas-in")
    _checks: dict[Family, PrefixCheck | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", tuple(self.allowed))
        object.__setattr__(self, "forbidden", tuple(self.forbidden))
        object.__setattr__(self, "forbidden_next_hops", frozenset(self.forbidden_next_hops))
        checks: dict[Family, PrefixCheck | None] = {}
        for family, bits in _FAMILY_BITS.items():
            allow = _Levels((r for r in self.allowed if r.family == family), bits)
            forbid = _Levels((r for r in self.forbidden if r.family == family), bits)
            # None means "every prefix of the family passes": the intake loop skips the call.
            checks[family] = None if allow.everything and not forbid.levels else _compile_check(allow, forbid)
        object.__setattr__(self, "_checks", checks)

    def prefix_check(self, family: Family) -> PrefixCheck | None:
        """The per-prefix verdict function for `family`, or None when everything is allowed."""
        try:
            return self._checks[family]
        except KeyError:
            raise ValueError(f"unsupported family {family}") from None

    def check_prefix(self, key: PrefixKey) -> RejectReason | None:
        check = self._checks[key_family(key)]
        return None if check is None else check(key)

    def check_attributes(self, attributes: PathAttributes, peer: PeerInfo) -> RejectReason | None:
        """Checks that depend only on the attributes (run once per UPDATE, not per prefix)."""
        as_path = attributes.as_path
        if as_path.segments and as_path.asns().count(peer.local_asn) > self.allow_own_as:
            return RejectReason.AS_LOOP
        if self.enforce_first_as and peer.asn != peer.local_asn and as_path.first_asn() != peer.asn:
            return RejectReason.FIRST_AS_MISMATCH
        next_hop = attributes.next_hop
        if next_hop is None or not next_hop_usable(next_hop) or next_hop in self.forbidden_next_hops:
            return RejectReason.BAD_NEXT_HOP
        return None

    def check(self, key: PrefixKey, attributes: PathAttributes, peer: PeerInfo) -> RejectReason | None:
        """The full verdict for one route (status pages, tests); intake uses the split checks."""
        return self.check_attributes(attributes, peer) or self.check_prefix(key)


ALLOW_ALL = ImportPolicy(
    allowed=(PrefixRule(IPv4Network("0.0.0.0/0"), le=32), PrefixRule(IPv6Network("::/0"), le=128))
)
"""Accept every prefix (still with next-hop and AS-loop checks); for tests and explicit opt-in."""
