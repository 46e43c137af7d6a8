"""Fuzzing every decoder: bytes from the network never raise anything but BgpError (DESIGN §7.4).

Three generators: random bytes, UPDATE bodies assembled from random attributes (so the attribute code
is reached past the length checks), and mutations (flips, inserts, deletes, truncations) of valid
messages of every type. Examples are bounded so the whole file runs in seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp.codec.attributes import EXPECTED_FLAGS
from bgp.codec.capabilities import decode_capability
from bgp.codec.dispatch import decode_message
from bgp.codec.errors import BgpError, ErrorAction
from bgp.codec.messages import (
    MAX_EXTENDED_MESSAGE,
    CodecContext,
    Framer,
    IgnoredRouteRefresh,
    Keepalive,
    Notification,
    Open,
    RouteRefresh,
)
from bgp.codec.update import Reach, Unreach, Update, decode_update, encode_end_of_rib
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, PathAttributes
from tests.bgp.codec import test_attributes, test_messages, test_update
from tests.bgp.codec.test_messages import body_of, h

FUZZ = settings(
    max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

ALL_FAMILIES = frozenset({IPV4_UNICAST, IPV6_UNICAST})
CONTEXTS = st.builds(
    CodecContext,
    four_octet_as=st.booleans(),
    extended_message=st.booleans(),
    add_path_receive=st.sampled_from([frozenset(), ALL_FAMILIES, frozenset({IPV4_UNICAST})]),
    extended_next_hop=st.sampled_from([frozenset(), frozenset({IPV4_UNICAST})]),
    external=st.booleans(),
)


def _wrap_attrs(attrs: bytes) -> bytes:
    return b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs


def _update(body: bytes) -> bytes:
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + b"\x02" + body


_NEW = CodecContext(extended_next_hop=frozenset({IPV4_UNICAST}))
_OLD = CodecContext(four_octet_as=False)
_ADD_PATH = CodecContext(add_path_receive=frozenset({IPV4_UNICAST}))

# Valid messages of every type (full messages, header included) with a context they decode cleanly in;
# the fuzzers mutate them.
CORPUS_WITH_CONTEXT: list[tuple[bytes, CodecContext]] = [
    (test_messages.OPEN_FULL, _NEW),
    (test_messages.OPEN_AS4, _NEW),
    (test_messages.KEEPALIVE, _NEW),
    (test_messages.NOTIFICATION_SHUTDOWN, _NEW),
    (test_messages.NOTIFICATION_HOLD, _NEW),
    (h(f"{test_messages.MARKER} 0017 05 0002 01 01"), _NEW),
    (test_update.RFC8950, _NEW),
    (encode_end_of_rib(IPV4_UNICAST), _NEW),
    (encode_end_of_rib(IPV6_UNICAST), _NEW),
    (
        _update(_wrap_attrs(test_attributes.ALL_ATTRIBUTES) + h("18 cb0071 20 cb00710a")),
        CodecContext(external=False),
    ),
    (
        _update(
            _wrap_attrs(
                h("""
                    40 01 01 00  40 02 0a 02 04 fde9 5ba0 5ba0 fdea  c0 07 06 5ba0 c6336401
                    c0 11 12 02 04 0000fde9 00030d40 000493e0 0000fdea  c0 12 08 00030d40 c6336401
                    40 03 04 c6336401
                """)
            )
            + h("20 cb00710a")
        ),
        _OLD,
    ),
    (
        _update(h("0007 00000007 10 0a01 000e 40010100 400200 400304c6336401 00000001 20 cb00710a")),
        _ADD_PATH,
    ),
    (
        _update(
            _wrap_attrs(
                h("""
                    80 0e 2c 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00
                    30 20010db80001
                    80 0f 0a 0002 01 30 20010db80002
                    40 01 01 00  40 02 06 02 01 0000fde9
                """)
            )
        ),
        _NEW,
    ),
]
CORPUS = [message for message, _ in CORPUS_WITH_CONTEXT]


def check_update(update: Update) -> None:
    """What a decoded UPDATE promises its consumers, whatever the input."""
    parts: list[Reach | Unreach] = [*update.reach, *update.unreach]
    for part in parts:
        assert len(part.path_ids) in (0, len(part.prefixes))
        assert all(isinstance(p, int) for p in part.prefixes)
    for reach in update.reach:
        assert reach.attributes.next_hop is not None
    for error in update.errors:
        assert error.action in (ErrorAction.TREAT_AS_WITHDRAW, ErrorAction.ATTRIBUTE_DISCARD)
    if any(e.action is ErrorAction.TREAT_AS_WITHDRAW for e in update.errors):
        assert update.reach == ()


def decode_any(msg_type: int, body: bytes, ctx: CodecContext) -> None:
    try:
        message = decode_message(msg_type, body, ctx, {})
    except BgpError as error:
        assert 1 <= error.code <= 7
        return
    assert isinstance(message, Open | Update | Notification | Keepalive | RouteRefresh | IgnoredRouteRefresh)
    if isinstance(message, Update):
        check_update(message)
        # Interning never changes the result: decode again through a warm cache.
        cache: dict[bytes, PathAttributes] = {}
        decode_update(body, ctx, cache)
        again = decode_update(body, ctx, cache)
        assert (again.reach, again.unreach, again.end_of_rib) == (
            message.reach,
            message.unreach,
            message.end_of_rib,
        )


@FUZZ
@given(st.integers(0, 6), st.binary(max_size=600), CONTEXTS)
def test_random_bodies_of_every_type(msg_type: int, body: bytes, ctx: CodecContext) -> None:
    decode_any(msg_type, body, ctx)


def _attribute(flags: int, type_code: int, value: bytes) -> bytes:
    length = len(value).to_bytes(2, "big") if flags & 0x10 else bytes([len(value) & 0xFF])
    return bytes([flags, type_code]) + length + value


_KNOWN_TYPES = sorted(EXPECTED_FLAGS)
_FLAGS = st.sampled_from([0x00, 0x40, 0x50, 0x80, 0x90, 0xC0, 0xD0, 0xE0])
_SMALL_VALUE = st.binary(max_size=12) | st.binary(max_size=48)


def _nlri(max_length: int) -> st.SearchStrategy[bytes]:
    """Mostly valid NLRI fields (sometimes with a bad length or a truncated prefix)."""
    prefix = st.tuples(
        st.integers(0, max_length) | st.integers(0, 255), st.binary(min_size=17, max_size=17)
    ).map(lambda p: bytes([p[0]]) + p[1][: (p[0] + 7) // 8])
    return st.lists(prefix, max_size=4).map(b"".join) | st.binary(max_size=12)


_V4_NLRI = _nlri(32)
_NLRI = _V4_NLRI | _nlri(128)
_MP_REACH_VALUE = st.builds(
    lambda afi, nh_len, nh, nlri, tail: afi + bytes([nh_len]) + nh[:nh_len] + b"\x00" + nlri + tail,
    st.sampled_from([b"\x00\x01\x01", b"\x00\x02\x01", b"\x00\x19\x46", b"\x00\x01\x02"]),
    st.sampled_from([4, 16, 32, 0, 12]) | st.integers(0, 255),
    st.binary(min_size=32, max_size=32),
    _NLRI,
    st.binary(max_size=2),
)
_MP_UNREACH_VALUE = st.builds(
    lambda afi, nlri, tail: afi + nlri + tail,
    st.sampled_from([b"\x00\x01\x01", b"\x00\x02\x01", b"\x00\x19\x46"]),
    _NLRI,
    st.binary(max_size=2),
)
_SEGMENT = st.builds(
    lambda seg_type, count, asn_size, asns, extra: (
        bytes([seg_type, count]) + asns[: count * asn_size] + extra
    ),
    st.integers(1, 4) | st.integers(0, 255),
    st.integers(1, 6) | st.integers(0, 255),
    st.sampled_from([2, 4]),
    st.binary(min_size=24, max_size=24),
    st.just(b"") | st.binary(max_size=1),
)
_AS_PATH_VALUE = st.lists(_SEGMENT, max_size=3).map(b"".join)
_VALUES = {14: _MP_REACH_VALUE, 15: _MP_UNREACH_VALUE, 2: _AS_PATH_VALUE, 17: _AS_PATH_VALUE}
# Mostly well-formed-looking attributes (a known type with its proper flags), so that decoding gets past
# the first check and reaches each attribute's value parser; sometimes anything at all.
ATTRIBUTE = st.one_of(
    st.sampled_from(_KNOWN_TYPES).flatmap(
        lambda t: st.builds(
            _attribute,
            st.just(EXPECTED_FLAGS[t]) | st.just(EXPECTED_FLAGS[t] | 0x10) | _FLAGS,
            st.just(t),
            _VALUES.get(t, _SMALL_VALUE),
        )
    ),
    st.builds(_attribute, _FLAGS, st.integers(0, 255), _SMALL_VALUE),
)


@FUZZ
@given(
    st.just(b"") | _V4_NLRI,
    st.lists(ATTRIBUTE, max_size=6),
    st.just(b"") | st.binary(max_size=4),
    _V4_NLRI,
    CONTEXTS,
)
def test_updates_assembled_from_random_attributes(
    withdrawn: bytes, attrs: list[bytes], attr_tail: bytes, nlri: bytes, ctx: CodecContext
) -> None:
    block = b"".join(attrs) + attr_tail
    body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(block).to_bytes(2, "big") + block + nlri
    decode_any(2, body, ctx)


MUTATION = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def mutate(message: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    data = bytearray(message)
    for op, where, arg in mutations:
        at = where % (len(data) + 1)
        if op == "set" and at < len(data):
            assert isinstance(arg, int)
            data[at] = arg
        elif op == "insert":
            assert isinstance(arg, bytes)
            data[at:at] = arg
        elif op == "delete":
            assert isinstance(arg, int)
            del data[at : at + arg]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@FUZZ
@given(st.sampled_from(CORPUS), st.lists(MUTATION, min_size=1, max_size=4), CONTEXTS)
def test_mutated_valid_messages(
    message: bytes, mutations: list[tuple[str, int, object]], ctx: CodecContext
) -> None:
    mutated = mutate(message, mutations)
    msg_type, body = mutated[18] if len(mutated) > 18 else 0, mutated[19:]
    decode_any(msg_type, body, ctx)


@FUZZ
@given(
    st.lists(st.sampled_from(CORPUS), min_size=1, max_size=4),
    st.lists(MUTATION, max_size=3),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
    CONTEXTS,
)
def test_framer_on_mutated_streams(
    messages: list[bytes], mutations: list[tuple[str, int, object]], chunks: list[int], ctx: CodecContext
) -> None:
    stream = mutate(b"".join(messages), mutations)
    framer = Framer(MAX_EXTENDED_MESSAGE if ctx.extended_message else 4096)
    pos = 0
    i = 0
    try:
        while pos < len(stream):
            size = chunks[i % len(chunks)]
            framer.feed(stream[pos : pos + size])
            pos += size
            i += 1
            while (message := framer.next_message()) is not None:
                assert len(message[1]) + 19 <= framer.max_message
                decode_any(message[0], message[1], ctx)
    except BgpError as error:
        assert error.code == 1  # the framer only raises header errors


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=64))
def test_random_capabilities(code: int, value: bytes) -> None:
    try:
        decode_capability(code, value)
    except BgpError as error:
        assert (error.code, error.subcode) == (2, 7)


def test_corpus_is_valid() -> None:
    """The mutation corpus starts from messages that decode cleanly."""
    for message, ctx in CORPUS_WITH_CONTEXT:
        msg_type, body = body_of(message)
        decoded = decode_message(msg_type, body, ctx)
        if isinstance(decoded, Update):
            assert decoded.errors == ()
            assert decoded.reach or decoded.unreach or decoded.end_of_rib
