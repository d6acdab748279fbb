"""Rule baselines: known targets, no look-ahead, and the same engine, bars and costs as models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradezoo.backtest import baselines as bl
from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.simulation import simulate
from tradezoo.data import load_dataset
from tradezoo.data.datasets import load_bars

COSTS = CostModel.bybit_linear()


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("synthetic-regime").iloc[:700]


def _bars_from_close(close: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=close.size, freq="1h", tz="UTC")
    frame = pd.DataFrame({"open": close, "high": close * 1.001, "low": close * 0.999,
                          "close": close, "volume": 1000.0}, index=index)
    return load_bars(frame, symbol="T", interval="1h")[0]


def test_constant_baselines() -> None:
    frame = _bars_from_close(np.linspace(100.0, 110.0, 30))
    assert (bl.buy_and_hold_targets(frame) == 1.0).all()
    assert (bl.flat_targets(frame) == 0.0).all()
    assert bl.baseline_targets("flat", frame).index.equals(frame.index)


def test_sma_cross_by_hand() -> None:
    # rises for 8 bars, then falls: fast (2) above slow (4) while rising, below once falling
    close = np.array([10, 11, 12, 13, 14, 15, 16, 17, 12, 8, 5, 3], dtype=float)
    targets = bl.sma_cross_targets(_bars_from_close(close), fast=2, slow=4).to_numpy()
    fast = pd.Series(close).rolling(2).mean().to_numpy()
    slow = pd.Series(close).rolling(4).mean().to_numpy()
    expected = np.where(np.arange(12) < 3, 0.0, np.sign(fast - slow))
    np.testing.assert_array_equal(targets, expected)
    assert targets[:3].tolist() == [0.0, 0.0, 0.0]  # warm-up: fewer than `slow` closes
    assert targets[3] == 1.0 and targets[-1] == -1.0


def test_momentum_by_hand() -> None:
    close = np.array([10, 12, 11, 9, 9, 14], dtype=float)
    targets = bl.momentum_targets(_bars_from_close(close), lookback=2).to_numpy()
    # close[t] / close[t-2] - 1: -, -, 11/10, 9/12, 9/11, 14/9
    assert targets.tolist() == [0.0, 0.0, 1.0, -1.0, -1.0, 1.0]
    flat = bl.momentum_targets(_bars_from_close(np.full(5, 7.0)), lookback=1)
    assert (flat == 0.0).all()  # a zero trailing return is flat


def test_documented_windows() -> None:
    assert (bl.SMA_FAST, bl.SMA_SLOW, bl.MOMENTUM_BARS) == (24, 96, 48)
    assert set(bl.BASELINES) == {"buy_and_hold", "flat", "sma_cross", "momentum"}


@pytest.mark.parametrize("name", ["sma_cross", "momentum"])
def test_decisions_use_only_past_bars(bars: pd.DataFrame, name: str) -> None:
    reference = bl.baseline_targets(name, bars).to_numpy()
    rng = np.random.default_rng(5)
    for t in (100, 250, 499):
        perturbed = bars.copy()
        scale = np.exp(rng.normal(0.0, 0.05, len(bars) - t - 1))
        for column in ("open", "high", "low", "close"):
            perturbed.iloc[t + 1 :, perturbed.columns.get_loc(column)] *= scale
        perturbed.iloc[t + 1 :, perturbed.columns.get_loc("volume")] = 1.0
        changed = bl.baseline_targets(name, perturbed).to_numpy()
        np.testing.assert_array_equal(changed[: t + 1], reference[: t + 1])
        assert not np.array_equal(changed[t + 1 :], reference[t + 1 :])  # the test can fail


def test_baseline_backtest_uses_history_and_the_engine(bars: pd.DataFrame) -> None:
    start, end = bars.index[300], bars.index[600]
    result, targets = bl.baseline_backtest("sma_cross", bars, start, end, costs=COSTS)
    full = bl.sma_cross_targets(bars)
    assert targets.index.equals(bars.loc[start:end].index)
    np.testing.assert_array_equal(targets.to_numpy(), full.loc[start:end].to_numpy())
    assert targets.iloc[0] != 0.0  # warm at the first bar of the span (history before it)
    again = simulate(bars.loc[start:end], targets, costs=COSTS)
    np.testing.assert_array_equal(result.equity.to_numpy(), again.equity.to_numpy())
    hold, _ = bl.baseline_backtest("buy_and_hold", bars, start, end, costs=COSTS)
    np.testing.assert_array_equal(hold.returns.to_numpy(), hold.benchmark_returns.to_numpy())
    flat, _ = bl.baseline_backtest("flat", bars, start, end, costs=COSTS)
    assert (flat.returns == 0.0).all()


def test_bad_arguments(bars: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown baseline 'sma'"):
        bl.baseline_targets("sma", bars)
    with pytest.raises(ValueError, match="fast must be shorter than slow"):
        bl.sma_cross_targets(bars, fast=96, slow=24)
    with pytest.raises(ValueError, match="lookback must be a whole number"):
        bl.momentum_targets(bars, lookback=0)
    with pytest.raises(ValueError, match="at least 2"):
        bl.baseline_backtest("flat", bars, bars.index[5], bars.index[5], costs=COSTS)
