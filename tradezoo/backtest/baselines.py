"""Rule baselines every leaderboard row must beat: target positions computed from the bars.

Each baseline maps a bars frame to target exposures decided at each bar's close
(:func:`~tradezoo.backtest.simulation.simulate`'s ``positions``: decided at the close of bar t
from bars ``<= t`` only, filled at the open of bar t+1; docs/design.md, "Time and
execution"). Windows count bars, whatever the interval:

- ``buy_and_hold``: 1 on every bar (the engine's buy-and-hold benchmark).
- ``flat``: 0 on every bar (cash).
- ``sma_cross``: long 1 while the :data:`SMA_FAST`-bar simple moving average of the close is
  above the :data:`SMA_SLOW`-bar one, short -1 while below, flat while equal or before
  :data:`SMA_SLOW` closes exist.
- ``momentum``: the sign of the trailing :data:`MOMENTUM_BARS`-bar return
  ``close[t] / close[t - N] - 1`` (long 1, short -1, flat when 0 or before N + 1 closes).

:func:`baseline_backtest` computes the targets on a dataset's full bars, so the moving
averages are warm at the first bar of a test part, and replays the test part's bars through
``simulate`` with the dataset's cost model: the same bars, costs and fills as the models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tradezoo.backtest.costs import CostModel
    from tradezoo.backtest.simulation import BacktestResult

__all__ = [
    "BASELINES",
    "MOMENTUM_BARS",
    "SMA_FAST",
    "SMA_SLOW",
    "baseline_backtest",
    "baseline_targets",
    "buy_and_hold_targets",
    "flat_targets",
    "momentum_targets",
    "sma_cross_targets",
]

SMA_FAST = 24
"""Bars of ``sma_cross``'s fast moving average (a day of hourly bars)."""
SMA_SLOW = 96
"""Bars of ``sma_cross``'s slow moving average (four days of hourly bars)."""
MOMENTUM_BARS = 48
"""Bars of ``momentum``'s trailing return (two days of hourly bars)."""


def _close(bars: pd.DataFrame) -> pd.Series:
    if not isinstance(bars, pd.DataFrame) or "close" not in bars.columns:
        raise TypeError("bars must be a bars DataFrame with a 'close' column (see "
                        f"tradezoo.data.load_bars), got {type(bars).__name__}")
    return bars["close"].astype(np.float64)


def _series(values: np.ndarray, bars: pd.DataFrame) -> pd.Series:
    return pd.Series(values, index=bars.index, name="target", dtype=np.float64)


def buy_and_hold_targets(bars: pd.DataFrame) -> pd.Series:
    """1.0 on every bar of ``bars`` (float64 Series named ``target`` on ``bars.index``)."""
    return _series(np.ones(len(_close(bars))), bars)


def flat_targets(bars: pd.DataFrame) -> pd.Series:
    """0.0 on every bar of ``bars``."""
    return _series(np.zeros(len(_close(bars))), bars)


def sma_cross_targets(bars: pd.DataFrame, fast: int = SMA_FAST,
                      slow: int = SMA_SLOW) -> pd.Series:
    """``sign(SMA_fast(close) - SMA_slow(close))`` at each close; 0 before ``slow`` closes.

    Args:
        bars: a bars frame; fast, slow: window lengths in bars, ``1 <= fast < slow``.
    """
    _check_window("fast", fast)
    _check_window("slow", slow)
    if fast >= slow:
        raise ValueError(f"sma_cross: fast must be shorter than slow, got fast={fast}, "
                         f"slow={slow}")
    close = _close(bars)
    spread = (close.rolling(fast, min_periods=fast).mean()
              - close.rolling(slow, min_periods=slow).mean())
    return _series(np.nan_to_num(np.sign(spread.to_numpy()), nan=0.0), bars)


def momentum_targets(bars: pd.DataFrame, lookback: int = MOMENTUM_BARS) -> pd.Series:
    """``sign(close[t] / close[t - lookback] - 1)`` at each close; 0 before ``lookback + 1``
    closes.

    Args:
        bars: a bars frame; lookback: N, bars of the trailing return (>= 1).
    """
    _check_window("lookback", lookback)
    close = _close(bars)
    trailing = close / close.shift(lookback) - 1.0
    return _series(np.nan_to_num(np.sign(trailing.to_numpy()), nan=0.0), bars)


def _check_window(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a whole number of bars >= 1, got {value!r}")


BASELINES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "buy_and_hold": buy_and_hold_targets,
    "flat": flat_targets,
    "sma_cross": sma_cross_targets,
    "momentum": momentum_targets,
}
"""Baseline name -> function of the bars giving its targets (default windows)."""


def baseline_targets(name: str, bars: pd.DataFrame) -> pd.Series:
    """The targets of baseline ``name`` (one of :data:`BASELINES`) on ``bars``."""
    try:
        rule = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; baselines: {sorted(BASELINES)}") from None
    return rule(bars)


def baseline_backtest(
    name: str,
    bars: pd.DataFrame,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    *,
    costs: CostModel,
    periods_per_year: float | None = None,
    fill: str = "next_open",
    rebalance: str = "on_change",
    initial_equity: float = 1.0,
) -> tuple[BacktestResult, pd.Series]:
    """Baseline ``name`` replayed on the bars ``start .. end`` (inclusive) of ``bars``.

    Args:
        name: one of :data:`BASELINES`.
        bars: the dataset's full bars (history before ``start`` warms up the windows).
        start, end: the first and last bar of the backtest (a fold's test part: the bars a
            model's test backtest spans).
        costs, periods_per_year, fill, rebalance, initial_equity: as for ``simulate``.

    Returns:
        ``(result, targets)``: the backtest and the targets it was simulated with (on the
        span's bars).
    """
    from tradezoo.backtest.simulation import simulate

    targets = baseline_targets(name, bars)
    span = bars.loc[start:end]
    if len(span) < 2:
        raise ValueError(f"baseline_backtest: the span {start} .. {end} holds {len(span)} "
                         "bar(s) of the data; a backtest needs at least 2")
    targets = targets.loc[span.index]
    result = simulate(span, targets, costs=costs, fill=fill,  # type: ignore[arg-type]
                      rebalance=rebalance,  # type: ignore[arg-type]
                      initial_equity=initial_equity, periods_per_year=periods_per_year)
    return result, targets
