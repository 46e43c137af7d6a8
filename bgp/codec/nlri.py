"""NLRI prefixes (RFC 4271 §4.3, RFC 4760 §5) as compact prefix keys (bgp.types.PrefixKey).

One prefix on the wire::

    [Path Identifier (4 octets), only with ADD-PATH, RFC 7911]
    | Length in bits (1 octet) | Prefix (ceil(length/8) octets, trailing bits ignored) |

The decoder is the hot path of intake: it builds one int per prefix (no ipaddress objects). A feeder
packs prefixes of one length together (a table of /32 VIPs, a run of /24s), so when every prefix in a
field has the same length the records sit at a fixed stride and are unpacked by one precompiled
struct in C; mixed fields take a table-driven loop.
"""

from __future__ import annotations

import struct

from bgp.codec.errors import BgpError, ErrorAction, UpdateSubcode, update_error
from bgp.types import PrefixKey

_V6_FLAG = 1 << 136
_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_STRUCT_CACHE_LIMIT = 512
_structs: dict[tuple[str, int], struct.Struct] = {}


def _struct(record: str, count: int) -> struct.Struct:
    """A compiled '>' + record * count, cached: fields repeat the same few counts."""
    key = (record, count)
    compiled = _structs.get(key)
    if compiled is None:
        if len(_structs) >= _STRUCT_CACHE_LIMIT:
            _structs.clear()
        compiled = _structs[key] = struct.Struct(">" + record * count)
    return compiled


def _host_mask(length: int, nbytes: int) -> int:
    """Mask clearing the bits after `length` in an nbytes-wide value (RFC 4271 §4.3: they are irrelevant)."""
    return ~((1 << (nbytes * 8 - length)) - 1) & ((1 << (nbytes * 8)) - 1)


def _uniform(data: bytes, pos: int, end: int, length: int, width: int, flag: int) -> list[PrefixKey] | None:
    """Keys of a field whose prefixes all have `length`, or None when it is not such a field."""
    nbytes = (length + 7) >> 3
    stride = nbytes + 1
    span = end - pos
    if span % stride:
        return None
    count = span // stride
    if data[pos:end:stride].count(length) != count:
        return None
    shift = (width - nbytes) * 8 + 8
    low = flag | length
    if nbytes == 0:
        return [low] * count
    mask = _host_mask(length, nbytes) if length & 7 else 0
    code = _CODES.get(nbytes)
    if code is not None:
        values = _struct("x" + code, count).unpack_from(data, pos)
    elif nbytes == 3:
        pairs = _struct("xHB", count).unpack_from(data, pos)
        values = tuple((hi << 8) | lo for hi, lo in zip(pairs[0::2], pairs[1::2], strict=True))
    elif nbytes == 16:
        pairs = _struct("xQQ", count).unpack_from(data, pos)
        values = tuple((hi << 64) | lo for hi, lo in zip(pairs[0::2], pairs[1::2], strict=True))
    else:
        from_bytes = int.from_bytes
        values = tuple(from_bytes(data[p + 1 : p + stride], "big") for p in range(pos, end, stride))
    if mask:
        return [((v & mask) << shift) | low for v in values]
    return [(v << shift) | low for v in values]


# Per family: for each prefix length, (octets on the wire, shift into place, host-bit mask).
def _layout(width: int) -> tuple[tuple[int, int, int], ...]:
    rows = []
    for length in range(width * 8 + 1):
        nbytes = (length + 7) >> 3
        rows.append((nbytes, (width - nbytes) * 8 + 8, _host_mask(length, nbytes)))
    return tuple(rows)


_LAYOUT4 = _layout(4)
_LAYOUT6 = _layout(16)


def decode_prefixes(
    data: bytes, start: int, end: int, *, ipv6: bool, add_path: bool = False
) -> tuple[list[PrefixKey], list[int]]:
    """Prefixes in data[start:end] -> (keys, path ids); BgpError (session reset) when malformed."""
    flag = _V6_FLAG if ipv6 else 0
    if start >= end:
        return [], []
    if not add_path and data[start] <= (128 if ipv6 else 32):
        keys = _uniform(data, start, end, data[start], 16 if ipv6 else 4, flag)
        if keys is not None:
            return keys, []
    layout = _LAYOUT6 if ipv6 else _LAYOUT4
    max_len = len(layout) - 1
    keys = []
    path_ids: list[int] = []
    from_bytes = int.from_bytes
    append = keys.append
    pos = start
    while pos < end:
        if add_path:
            if pos + 5 > end:
                raise _invalid("truncated ADD-PATH identifier or prefix")
            path_ids.append(from_bytes(data[pos : pos + 4], "big"))
            pos += 4
        length = data[pos]
        if length > max_len:
            raise _invalid(f"prefix length {length} > {max_len}")
        nbytes, shift, mask = layout[length]
        nxt = pos + 1 + nbytes
        if nxt > end:
            raise _invalid("prefix overruns the NLRI field")
        append(flag | ((from_bytes(data[pos + 1 : nxt], "big") & mask) << shift) | length)
        pos = nxt
    return keys, path_ids


def _invalid(message: str) -> BgpError:
    # RFC 7606 §5.3: a syntactically incorrect NLRI field cannot be parsed reliably, so treat-as-withdraw
    # is impossible: session reset.
    return update_error(UpdateSubcode.INVALID_NETWORK_FIELD, message, action=ErrorAction.SESSION_RESET)


def encode_prefix(key: PrefixKey, path_id: int | None = None) -> bytes:
    """One prefix in wire form (with its path identifier when given)."""
    length = key & 0xFF
    ipv6 = key >= _V6_FLAG
    width = 16 if ipv6 else 4
    value = ((key ^ _V6_FLAG) if ipv6 else key) >> 8
    nbytes = (length + 7) >> 3
    raw = value.to_bytes(width, "big")[:nbytes]
    prefix = bytes([length]) + raw
    return prefix if path_id is None else path_id.to_bytes(4, "big") + prefix
