"""Rendering of one account's episode: ``"ansi"`` (a one-line status) and ``"rgb_array"``
(the backtest report figure of the episode so far, via
:func:`tradezoo.backtest.plots.figure_backtest`; matplotlib is imported only here, lazily)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradezoo.envs.market import MarketDataset


def ansi_status(
    dataset: MarketDataset,
    row: int,
    step: int,
    equity: float,
    initial_equity: float,
    position: float,
    fees: float,
) -> str:
    """One line: symbol, bar time, step, exposure, equity and return, close, fees paid.

    Args:
        row: global row of the current decision bar.
        fees: fees, spread and slippage paid so far (quote currency).
    """
    local = dataset.local(row)
    stamp = dataset.index[local]
    close = float(dataset.bars["close"].iat[dataset.bar_offset + local])
    change = equity / initial_equity - 1.0
    return (
        f"{dataset.symbol} {dataset.interval} {stamp:%Y-%m-%d %H:%M} step {step:>6} | "
        f"position {position:+.3f} | equity {equity:.6g} ({change:+.2%}) | close {close:.6g} | "
        f"costs {fees:.4g}"
    )


def rgb_frame(
    dataset: MarketDataset,
    start: int,
    row: int,
    positions: np.ndarray,
    equity: np.ndarray,
) -> np.ndarray:
    """uint8 ``[H, W, 3]`` figure of the episode from decision ``start`` to ``row`` (global).

    Args:
        positions: exposure held over each bar ``start .. row`` (0 at ``start``), ``[n]``.
        equity: equity marked at each of those bars, ``[n]``.

    The figure needs two bars; right after ``reset`` the bar before the start is shown flat
    (or, at the very first bar of the data, the first bar is repeated).
    """
    from tradezoo.backtest.plots import figure_backtest, figure_to_rgb

    lo, hi = dataset.local(start), dataset.local(row)
    index = dataset.index[lo : hi + 1]
    close = dataset.bars["close"].to_numpy()[dataset.bar_offset + lo : dataset.bar_offset + hi + 1]
    positions = np.asarray(positions, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    if len(index) < 2:
        if lo > 0:
            index = dataset.index[lo - 1 : lo + 1]
            close = dataset.bars["close"].to_numpy()[dataset.bar_offset + lo - 1:
                                                     dataset.bar_offset + lo + 1]
        else:
            index = pd.DatetimeIndex([index[0] - pd.Timedelta(seconds=1), index[0]])
            close = np.repeat(close, 2)
        positions = np.concatenate([[0.0], positions])
        equity = np.concatenate([[equity[0]], equity])
    title = f"{dataset.symbol} {dataset.interval}: episode so far"
    return figure_to_rgb(figure_backtest(index, close, positions, equity, title=title))
