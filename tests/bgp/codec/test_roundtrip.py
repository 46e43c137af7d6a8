"""Hypothesis round-trips: model -> wire -> model is the identity for canonical models."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.codec.attributes import decode_attributes, encode_attributes
from bgp.codec.capabilities import Capability, decode_capability, encode_capability
from bgp.codec.messages import CodecContext, Open, decode_open, encode_open
from bgp.codec.update import Update, decode_update, encode_update
from bgp.types import PathAttributes
from tests.bgp.codec import strategies as s

SETTINGS = settings(max_examples=300, deadline=None)


@st.composite
def attributes_with_context(draw: st.DrawFn) -> tuple[CodecContext, PathAttributes]:
    ctx = draw(s.CONTEXTS)
    return ctx, draw(s.path_attributes(ctx))


@SETTINGS
@given(attributes_with_context())
def test_path_attributes_round_trip(case: tuple[CodecContext, PathAttributes]) -> None:
    ctx, attrs = case
    wire = encode_attributes(attrs, ctx, next_hop=True)
    decoded = decode_attributes(wire, 0, len(wire), ctx)
    assert decoded.errors == []
    assert decoded.attributes == attrs


@st.composite
def updates_with_context(draw: st.DrawFn) -> tuple[CodecContext, Update]:
    ctx = draw(s.update_contexts())
    return ctx, draw(s.updates(ctx))


@SETTINGS
@given(updates_with_context())
def test_update_round_trip(case: tuple[CodecContext, Update]) -> None:
    ctx, update = case
    wire = encode_update(update, ctx)
    assert len(wire) <= ctx.max_message
    cache: dict[bytes, PathAttributes] = {}
    assert decode_update(wire[19:], ctx) == update
    assert decode_update(wire[19:], ctx, cache) == update
    assert decode_update(wire[19:], ctx, cache) == update  # from the interning cache


@SETTINGS
@given(s.opens())
def test_open_round_trip(message: Open) -> None:
    assert decode_open(encode_open(message)[19:]) == message


@SETTINGS
@given(s.CAPABILITIES)
def test_capability_round_trip(cap: Capability) -> None:
    wire = encode_capability(cap)
    assert wire[1] == len(wire) - 2
    assert decode_capability(wire[0], wire[2:]) == cap
