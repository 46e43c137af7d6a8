"""UPDATE messages (RFC 4271 §4.3, RFC 4760, RFC 7911, RFC 4724 End-of-RIB), decode and encode.

Body (after the 19-octet header)::

    | Withdrawn Routes Length (2) | Withdrawn Routes (IPv4 NLRI) |
    | Total Path Attribute Length (2) | Path Attributes (bgp.codec.attributes) |
    | NLRI (IPv4, up to the end of the message) |

Other families travel in the MP_REACH_NLRI / MP_UNREACH_NLRI attributes. With ADD-PATH (RFC 7911)
every prefix is preceded by a 4-octet Path Identifier. End-of-RIB (RFC 4724 §2) is an UPDATE with no
withdrawn routes, attributes nor NLRI for IPv4 unicast, and an UPDATE whose only attribute is an empty
MP_UNREACH_NLRI for any other family.

Decoding is the intake hot path: prefixes are ints straight from bytes (bgp.codec.nlri), and identical
attribute blocks are interned through a per-session `cache` (raw bytes -> the same PathAttributes object,
DESIGN §8), so a feed that repeats a few attribute sets decodes its attributes once per set.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address

from bgp.codec.attributes import (
    OPTIONAL_NON_TRANSITIVE,
    AttrType,
    decode_attributes,
    encode_attribute,
    encode_attributes,
    encode_mp_reach,
    encode_mp_unreach,
)
from bgp.codec.errors import (
    BgpError,
    ErrorAction,
    HeaderSubcode,
    UpdateSubcode,
    header_error,
    update_error,
)
from bgp.codec.messages import HEADER_SIZE, CodecContext, MessageType, header
from bgp.codec.nlri import decode_prefixes, encode_prefix
from bgp.types import AFI, IPV4_UNICAST, Family, PathAttributes, PrefixKey, key_is_ipv6


@dataclass(frozen=True, slots=True)
class Reach:
    """Announced prefixes of one family sharing one attribute set."""

    family: Family
    attributes: PathAttributes  # next_hop is this family's next hop (NEXT_HOP or the MP_REACH one)
    prefixes: tuple[PrefixKey, ...]
    path_ids: tuple[int, ...] = ()  # parallel to prefixes when ADD-PATH receive is negotiated


@dataclass(frozen=True, slots=True)
class Unreach:
    family: Family
    prefixes: tuple[PrefixKey, ...]
    path_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    """A decoded UPDATE. When an RFC 7606 treat-as-withdraw error applies, the announced prefixes are in
    `unreach`, `reach` is empty and `errors` says why; `errors` also lists discarded attributes."""

    reach: tuple[Reach, ...] = ()
    unreach: tuple[Unreach, ...] = ()
    end_of_rib: Family | None = None  # RFC 4724 §2 End-of-RIB marker
    errors: tuple[BgpError, ...] = ()


# Interned attribute sets per cache before it is flushed: bounds what a peer can make us hold (DESIGN §9).
CACHE_LIMIT = 65536

_EOR_IPV4 = Update(end_of_rib=IPV4_UNICAST)
_U16 = struct.Struct(">H")
_WELL_KNOWN_IPV4 = (AttrType.ORIGIN, AttrType.AS_PATH, AttrType.NEXT_HOP)
_WELL_KNOWN_MP = (AttrType.ORIGIN, AttrType.AS_PATH)  # RFC 4760 §3: no NEXT_HOP for MP_REACH routes
# The context flags that change how the same attribute bytes decode, as key prefixes: one cache may
# then be shared safely, and a session whose context changes cannot read stale entries.
_TAGS = tuple(bytes([tag]) for tag in range(4))
_MP_TAGS = tuple(bytes([0x80 | tag]) for tag in range(4))


def _tag(ctx: CodecContext) -> int:
    return (1 if ctx.four_octet_as else 0) | (2 if ctx.external else 0)


def _intern(cache: dict[bytes, PathAttributes], key: bytes, attrs: PathAttributes) -> PathAttributes:
    found = cache.get(key)
    if found is not None:
        return found
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = attrs
    return attrs


def _missing(type_code: int) -> BgpError:
    # RFC 7606 §3 d: a missing well-known mandatory attribute is treat-as-withdraw; data = the type code.
    return update_error(
        UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE,
        f"missing well-known attribute {type_code}",
        bytes([type_code]),
        ErrorAction.TREAT_AS_WITHDRAW,
    )


def decode_update(body: bytes, ctx: CodecContext, cache: dict[bytes, PathAttributes] | None = None) -> Update:
    """UPDATE body -> Update.

    Raises BgpError only for errors whose action is SESSION_RESET: lengths that do not add up (RFC 4271
    §6.3 Malformed Attribute List), an NLRI field that cannot be parsed (RFC 7606 §5.3), a bad MP
    attribute (§7.11), an unrecognized well-known attribute. `cache` interns attribute sets.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    n = len(body)
    if n < 4:
        raise header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH, "UPDATE shorter than 23 octets", _U16.pack(n + HEADER_SIZE)
        )
    alen_pos = 2 + ((body[0] << 8) | body[1])
    if alen_pos + 2 > n:
        raise update_error(
            UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "Withdrawn Routes Length overruns the UPDATE"
        )
    astart = alen_pos + 2
    aend = astart + ((body[alen_pos] << 8) | body[alen_pos + 1])
    if aend > n:
        # RFC 4271 §6.3 / RFC 7606 §4: the NLRI cannot be located: session reset.
        raise update_error(
            UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "Total Path Attribute Length overruns the UPDATE"
        )
    if n == 4:
        return _EOR_IPV4
    add_path = ctx.add_path_receive
    v4_add_path = bool(add_path) and IPV4_UNICAST in add_path
    unreach: list[Unreach] = []
    if alen_pos > 2:
        keys, ids = decode_prefixes(body, 2, alen_pos, ipv6=False, add_path=v4_add_path)
        unreach.append(Unreach(IPV4_UNICAST, tuple(keys), tuple(ids)))
    has_nlri = aend < n
    tag = _tag(ctx)
    key: bytes | None = None
    if has_nlri and cache is not None and aend > astart:
        # Fast path: a clean IPv4 attribute block seen before decodes to the same object.
        key = _TAGS[tag] + body[astart:aend]
        cached = cache.get(key)
        if cached is not None:
            keys, ids = decode_prefixes(body, aend, n, ipv6=False, add_path=v4_add_path)
            hit = Reach(IPV4_UNICAST, cached, tuple(keys), tuple(ids))
            return Update(reach=(hit,), unreach=tuple(unreach))

    decoded = decode_attributes(body, astart, aend, ctx, ignore_next_hop=not has_nlri)
    errors = decoded.errors
    present = decoded.present
    missing: set[int] = set()
    v4_keys: list[PrefixKey] = []
    v4_ids: list[int] = []
    if has_nlri:
        v4_keys, v4_ids = decode_prefixes(body, aend, n, ipv6=False, add_path=v4_add_path)
        missing.update(t for t in _WELL_KNOWN_IPV4 if t not in present)
    mp = decoded.mp_reach
    mp_keys: list[PrefixKey] = []
    mp_ids: list[int] = []
    if mp is not None:
        mp_keys, mp_ids = decode_prefixes(
            body,
            mp.nlri_start,
            mp.nlri_end,
            ipv6=mp.family.afi is AFI.IPV6,
            add_path=mp.family in add_path,
        )
        if mp_keys:
            missing.update(t for t in _WELL_KNOWN_MP if t not in present)
    errors.extend(_missing(t) for t in sorted(missing))
    mpu = decoded.mp_unreach
    if mpu is not None:
        u_keys, u_ids = decode_prefixes(
            body,
            mpu.nlri_start,
            mpu.nlri_end,
            ipv6=mpu.family.afi is AFI.IPV6,
            add_path=mpu.family in add_path,
        )
        if u_keys:
            unreach.append(Unreach(mpu.family, tuple(u_keys), tuple(u_ids)))
        elif alen_pos == 2 and not has_nlri and decoded.mp_spans == [(astart, aend)]:
            return Update(end_of_rib=mpu.family)  # RFC 4724 §2: the lone empty MP_UNREACH_NLRI

    if decoded.treat_as_withdraw:
        # RFC 7606 §2: the announced routes are handled as if withdrawn.
        if v4_keys:
            unreach.append(Unreach(IPV4_UNICAST, tuple(v4_keys), tuple(v4_ids)))
        if mp is not None and mp_keys:
            unreach.append(Unreach(mp.family, tuple(mp_keys), tuple(mp_ids)))
        return Update(unreach=tuple(unreach), errors=tuple(errors))

    base = decoded.attributes
    reach: list[Reach] = []
    if v4_keys:
        attrs = base
        if cache is not None and not errors and not decoded.mp_spans:
            attrs = _intern(cache, key if key is not None else _TAGS[tag] + body[astart:aend], base)
        reach.append(Reach(IPV4_UNICAST, attrs, tuple(v4_keys), tuple(v4_ids)))
    if mp is not None and mp_keys:
        attrs = replace(base, next_hop=mp.next_hop, link_local_next_hop=mp.link_local)
        if cache is not None and not errors:
            attrs = _intern(
                cache, _mp_key(body, astart, aend, decoded.mp_spans, _MP_TAGS[tag] + mp.header), attrs
            )
        reach.append(Reach(mp.family, attrs, tuple(mp_keys), tuple(mp_ids)))
    return Update(tuple(reach), tuple(unreach), None, tuple(errors))


def _mp_key(body: bytes, start: int, end: int, spans: list[tuple[int, int]], prefix: bytes) -> bytes:
    """Interning key of an MP route set: the MP_REACH header (family, next hop) and every attribute
    except the MP ones, whose NLRI differ from message to message."""
    parts = [prefix]
    pos = start
    for s, e in sorted(spans):
        parts.append(body[pos:s])
        pos = e
    parts.append(body[pos:end])
    return b"".join(parts)


# -- Encoding -----------------------------------------------------------------------------------


def _encoded_prefixes(
    family: Family, prefixes: Sequence[PrefixKey], path_ids: Sequence[int] | None, ctx: CodecContext
) -> list[bytes]:
    """Each prefix in wire form; with ADD-PATH send negotiated (RFC 7911) each carries its path id."""
    ipv6 = family.afi is AFI.IPV6
    for k in prefixes:
        if key_is_ipv6(k) != ipv6:
            raise ValueError(f"prefix key {k:#x} is not {family}")
    if family in ctx.add_path_send:
        ids = list(path_ids) if path_ids else [0] * len(prefixes)
        if len(ids) != len(prefixes):
            raise ValueError("path_ids must be parallel to prefixes")
        return [encode_prefix(k, i) for k, i in zip(prefixes, ids, strict=True)]
    return [encode_prefix(k) for k in prefixes]


def _mp_next_hop(family: Family, attrs: PathAttributes, ctx: CodecContext) -> bytes:
    """The MP_REACH_NLRI value without NLRI, after checking the next hop suits the family."""
    nh = attrs.next_hop
    if nh is None:
        raise ValueError(f"{family} routes need a next hop")
    if isinstance(nh, IPv6Address):
        if family.afi is not AFI.IPV6 and family not in ctx.extended_next_hop:
            raise ValueError(
                f"an IPv6 next hop for {family} needs the extended next hop capability (RFC 8950)"
            )
    elif family.afi is AFI.IPV6:
        raise ValueError("IPv6 routes need an IPv6 next hop")
    elif attrs.link_local_next_hop is not None:
        raise ValueError("a link-local next hop goes with an IPv6 next hop")
    return encode_mp_reach(family, nh, attrs.link_local_next_hop, b"")


def _is_classic(family: Family, attrs: PathAttributes) -> bool:
    """IPv4 unicast with an IPv4 next hop travels in the plain NLRI field with NEXT_HOP."""
    return family == IPV4_UNICAST and isinstance(attrs.next_hop, IPv4Address)


def _without_next_hop(attrs: PathAttributes) -> PathAttributes:
    return replace(attrs, next_hop=None, link_local_next_hop=None)


def _message(body: bytes, ctx: CodecContext) -> bytes:
    if HEADER_SIZE + len(body) > ctx.max_message:
        raise ValueError(f"UPDATE of {HEADER_SIZE + len(body)} octets exceeds {ctx.max_message}")
    return header(MessageType.UPDATE, len(body)) + body


def encode_update(update: Update, ctx: CodecContext) -> bytes:
    """One full UPDATE message (header included) for `update`.

    One message carries one attribute set, at most one MP_REACH_NLRI and one MP_UNREACH_NLRI (RFC 4760
    §3-4): IPv4 unreach go to Withdrawn Routes, IPv4 reach with an IPv4 next hop to the NLRI field, the
    rest to the MP attributes. ValueError when the update does not fit one message.
    """
    if update.end_of_rib is not None:
        if update.reach or update.unreach:
            raise ValueError("an End-of-RIB UPDATE carries nothing else")
        return encode_end_of_rib(update.end_of_rib)
    withdrawn = b""
    mp_unreach_family: Family | None = None
    mp_unreach_nlri = b""
    for u in update.unreach:
        if not u.prefixes:
            continue
        nlri = b"".join(_encoded_prefixes(u.family, u.prefixes, u.path_ids, ctx))
        if u.family == IPV4_UNICAST:
            withdrawn += nlri
        elif mp_unreach_family in (None, u.family):
            mp_unreach_family = u.family
            mp_unreach_nlri += nlri
        else:
            raise ValueError("one MP_UNREACH_NLRI family per UPDATE")
    classic: Reach | None = None
    mp: Reach | None = None
    for r in update.reach:
        if not r.prefixes:
            continue
        if _is_classic(r.family, r.attributes) and classic is None:
            classic = r
        elif not _is_classic(r.family, r.attributes) and mp is None:
            mp = r
        else:
            raise ValueError("more route sets than one UPDATE can carry")
    mp_unreach = None if mp_unreach_family is None else encode_mp_unreach(mp_unreach_family, mp_unreach_nlri)
    nlri = b""
    if classic is not None or mp is not None:
        if (
            classic is not None
            and mp is not None
            and _without_next_hop(classic.attributes) != _without_next_hop(mp.attributes)
        ):
            raise ValueError("one UPDATE carries one attribute set")
        mp_reach = None
        if mp is not None:
            mp_reach = _mp_next_hop(mp.family, mp.attributes, ctx) + b"".join(
                _encoded_prefixes(mp.family, mp.prefixes, mp.path_ids, ctx)
            )
        if classic is not None:
            nlri = b"".join(_encoded_prefixes(IPV4_UNICAST, classic.prefixes, classic.path_ids, ctx))
            base = classic.attributes
        else:
            assert mp is not None
            base = mp.attributes
        block = encode_attributes(
            base, ctx, next_hop=classic is not None, mp_reach=mp_reach, mp_unreach=mp_unreach
        )
    elif mp_unreach is not None:
        block = encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MP_UNREACH_NLRI, mp_unreach)
    else:
        block = b""
    body = _U16.pack(len(withdrawn)) + withdrawn + _U16.pack(len(block)) + block + nlri
    return _message(body, ctx)


def _pack(encoded: list[bytes], budget: int) -> list[bytes]:
    """Greedy packing of encoded prefixes into chunks of at most `budget` octets, order kept."""
    if encoded and budget < max(len(e) for e in encoded):
        raise ValueError("the attributes leave no room for a prefix in one message")
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for e in encoded:
        if size + len(e) > budget:
            chunks.append(b"".join(current))
            current = []
            size = 0
        current.append(e)
        size += len(e)
    if current:
        chunks.append(b"".join(current))
    return chunks


def build_updates(
    family: Family,
    attributes: PathAttributes,
    prefixes: Sequence[PrefixKey],
    ctx: CodecContext,
    path_ids: Sequence[int] | None = None,
) -> list[bytes]:
    """Full UPDATE messages announcing `prefixes` with `attributes`, packed under ctx.max_message.

    `path_ids` (parallel to prefixes) are used when ADD-PATH send is negotiated for the family (0 if
    not given).
    """
    encoded = _encoded_prefixes(family, prefixes, path_ids, ctx)
    if not encoded:
        return []
    max_body = ctx.max_message - HEADER_SIZE
    if _is_classic(family, attributes):
        block = encode_attributes(attributes, ctx, next_hop=True)
        head = b"\x00\x00" + _U16.pack(len(block)) + block
        return [_message(head + chunk, ctx) for chunk in _pack(encoded, max_body - len(head))]
    mp_head = _mp_next_hop(family, attributes, ctx)
    other = encode_attributes(attributes, ctx, next_hop=False)
    # 2 + 2 length fields, a 4-octet (extended length) MP_REACH_NLRI header, its fixed part, the rest
    budget = max_body - 4 - 4 - len(mp_head) - len(other)
    messages = []
    for chunk in _pack(encoded, budget):
        block = encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MP_REACH_NLRI, mp_head + chunk) + other
        messages.append(_message(b"\x00\x00" + _U16.pack(len(block)) + block, ctx))
    return messages


def build_withdrawals(
    family: Family,
    prefixes: Sequence[PrefixKey],
    ctx: CodecContext,
    path_ids: Sequence[int] | None = None,
) -> list[bytes]:
    """Full UPDATE messages withdrawing `prefixes`: Withdrawn Routes for IPv4, MP_UNREACH_NLRI otherwise."""
    encoded = _encoded_prefixes(family, prefixes, path_ids, ctx)
    if not encoded:
        return []
    max_body = ctx.max_message - HEADER_SIZE
    if family == IPV4_UNICAST:
        return [_message(_U16.pack(len(c)) + c + b"\x00\x00", ctx) for c in _pack(encoded, max_body - 4)]
    fixed = encode_mp_unreach(family, b"")
    messages = []
    for chunk in _pack(encoded, max_body - 4 - 4 - len(fixed)):
        block = encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MP_UNREACH_NLRI, fixed + chunk)
        messages.append(_message(b"\x00\x00" + _U16.pack(len(block)) + block, ctx))
    return messages


def encode_end_of_rib(family: Family) -> bytes:
    """RFC 4724 §2: an empty UPDATE for IPv4 unicast; a lone empty MP_UNREACH_NLRI for other families."""
    if family == IPV4_UNICAST:
        return header(MessageType.UPDATE, 4) + b"\x00\x00\x00\x00"
    block = encode_attribute(
        OPTIONAL_NON_TRANSITIVE, AttrType.MP_UNREACH_NLRI, encode_mp_unreach(family, b"")
    )
    body = b"\x00\x00" + _U16.pack(len(block)) + block
    return header(MessageType.UPDATE, len(body)) + body
