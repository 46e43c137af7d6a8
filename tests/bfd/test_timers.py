"""BFD timer arithmetic: jitter bounds, negotiation, detection time and the §6.8.3 change rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfd.timers import (
    SLOW_TX_US,
    LocalTimers,
    advertised_min_tx_us,
    detection_time_us,
    jitter_factor,
    jittered_interval_s,
    tx_interval_us,
)
from tests.bfd.support import StubRng

UNIT = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(UNIT, st.integers(2, 255))
def test_jitter_is_75_to_100_percent(value: float, mult: int) -> None:
    factor = jitter_factor(StubRng(value), mult)
    assert 0.75 <= factor <= 1.0


@given(UNIT)
def test_jitter_is_75_to_90_percent_with_multiplier_1(value: float) -> None:
    factor = jitter_factor(StubRng(value), 1)
    assert 0.75 <= factor <= 0.90


def test_jitter_spans_its_whole_range() -> None:
    """A real RNG reaches both ends, so packets are actually spread (not a constant 75 %)."""
    rng = random.Random(3)
    factors = [jitter_factor(rng, 3) for _ in range(2000)]
    assert min(factors) < 0.76
    assert max(factors) > 0.99
    single = [jitter_factor(rng, 1) for _ in range(2000)]
    assert min(single) < 0.76
    assert 0.89 < max(single) <= 0.90


def test_jittered_interval_is_in_seconds() -> None:
    assert jittered_interval_s(300_000, 3, StubRng(0.0)) == pytest.approx(0.225)
    assert jittered_interval_s(300_000, 1, StubRng(0.999999)) == pytest.approx(0.27, abs=1e-6)


def test_tx_interval_honours_the_slower_side() -> None:
    assert tx_interval_us(100_000, 300_000) == 300_000  # the peer cannot receive faster
    assert tx_interval_us(500_000, 300_000) == 500_000  # we do not want to send faster


def test_detection_time_uses_remote_multiplier_and_the_slower_interval() -> None:
    assert detection_time_us(5, 100_000, 300_000) == 1_500_000  # the peer sends every 300 ms
    assert detection_time_us(3, 300_000, 100_000) == 900_000  # we do not accept faster than 300 ms


def test_one_second_floor_while_not_up() -> None:
    assert advertised_min_tx_us(100_000, up=False) == SLOW_TX_US
    assert advertised_min_tx_us(2_000_000, up=False) == 2_000_000
    assert advertised_min_tx_us(100_000, up=True) == 100_000


def _up_timers(tx: int = 300_000, rx: int = 300_000) -> LocalTimers:
    timers = LocalTimers.initial(tx, rx)
    timers.update(tx, rx, up=True)
    timers.poll_terminated()
    return timers


def test_initial_timers_are_slow() -> None:
    timers = LocalTimers.initial(300_000, 200_000)
    assert (timers.advertised_tx_us, timers.effective_tx_us) == (SLOW_TX_US, SLOW_TX_US)
    assert (timers.advertised_rx_us, timers.effective_rx_us) == (200_000, 200_000)
    assert not timers.deferred


def test_raising_tx_while_up_waits_for_poll() -> None:
    timers = _up_timers()
    assert timers.update(600_000, 300_000, up=True)
    assert timers.advertised_tx_us == 600_000
    assert timers.effective_tx_us == 300_000
    assert timers.deferred
    timers.poll_terminated()
    assert timers.effective_tx_us == 600_000
    assert not timers.deferred


def test_lowering_tx_while_up_applies_at_once() -> None:
    timers = _up_timers()
    assert timers.update(100_000, 300_000, up=True)
    assert timers.effective_tx_us == 100_000


def test_lowering_rx_while_up_waits_for_poll() -> None:
    timers = _up_timers()
    assert timers.update(300_000, 50_000, up=True)
    assert (timers.advertised_rx_us, timers.effective_rx_us) == (50_000, 300_000)
    timers.poll_terminated()
    assert timers.effective_rx_us == 50_000


def test_raising_rx_while_up_applies_at_once() -> None:
    timers = _up_timers()
    assert timers.update(300_000, 900_000, up=True)
    assert timers.effective_rx_us == 900_000


def test_changes_apply_at_once_when_not_up() -> None:
    timers = LocalTimers.initial(300_000, 300_000)
    assert timers.update(3_000_000, 50_000, up=False)
    assert (timers.effective_tx_us, timers.effective_rx_us) == (3_000_000, 50_000)


def test_unchanged_values_start_no_poll() -> None:
    timers = _up_timers()
    assert not timers.update(300_000, 300_000, up=True)
    down = LocalTimers.initial(300_000, 300_000)
    assert not down.update(500_000, 300_000, up=False)  # still advertises the 1 s floor


def test_leaving_up_restores_the_floor_at_once() -> None:
    timers = _up_timers(tx=100_000)
    assert timers.update(100_000, 300_000, up=False)
    assert timers.advertised_tx_us == timers.effective_tx_us == SLOW_TX_US
