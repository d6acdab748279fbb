"""The calibration markets' oracle and reference policies replayed through the one engine.

The markets themselves (bars, hidden state, oracle targets) are data and live in
:mod:`tradezoo.data.synthetic`; replaying targets needs the backtest engine and the trainers'
split of a dataset, so these functions sit in the agents layer (``docs/design.md``, layering).
Run ``python -m tradezoo.agents.calibration`` to print the tables of ``docs/calibration.md``.

Example::

    from tradezoo.agents.calibration import oracle_sharpe

    print(oracle_sharpe("synthetic-regime", "test"))
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tradezoo.agents.data import prepare_data
from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.simulation import BacktestResult, simulate
from tradezoo.data.datasets import load_dataset
from tradezoo.data.synthetic import (
    BLIND_STEP_HOURS,
    FILTER_BANDS,
    MARKETS,
    filter_positions,
    oracle_positions,
)

__all__ = ["backtest_positions", "oracle_backtest", "oracle_sharpe", "part_span"]


def oracle_backtest(
    name: str, start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None
) -> BacktestResult:
    """The oracle replayed through :func:`~tradezoo.backtest.simulation.simulate` on the bars
    ``start .. end`` (inclusive; default all), with the dataset's cost model, fills at the next
    open. The result's benchmark is buy-and-hold on the same bars and costs."""
    return backtest_positions(name, oracle_positions(name), start, end)


def backtest_positions(
    name: str,
    positions: pd.Series,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
) -> BacktestResult:
    """Replay ``positions`` (targets on the dataset's full index) on the bars ``start .. end``
    of dataset ``name`` through ``simulate``, with its default cost model."""
    bars = load_dataset(name).loc[start:end]
    costs = CostModel.for_source(bars.attrs.get("source"), what=f"dataset {name!r}: source")
    return simulate(bars, positions.loc[bars.index], costs=costs)


def part_span(
    name: str,
    part: str = "test",
    *,
    window: int = 64,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last bar a backtest of ``part`` trades on, as the trainers' evaluation does
    (:meth:`~tradezoo.agents.data.PreparedData.decision_rows`: the first decision bar .. the
    bar after the last decision), with the default features and the given window/fractions."""
    data = prepare_data(name, window=window, split_fractions=split_fractions)
    rows = data.decision_rows(part)  # type: ignore[arg-type]
    first = data.bar_offset + int(rows[0])
    last = data.bar_offset + int(rows[-1]) + 1
    return data.bars.index[first], data.bars.index[last]


def oracle_sharpe(
    name: str,
    part: str = "test",
    *,
    window: int = 64,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> float:
    """The oracle's annualised Sharpe on ``part`` (see :func:`part_span`), through the engine.

    An oracle that never holds a position (``synthetic-noise``) earns exactly 0 on every bar;
    its Sharpe is reported as 0.0 (the metrics leave a constant series' Sharpe undefined).
    """
    start, end = part_span(name, part, window=window, split_fractions=split_fractions)
    result = oracle_backtest(name, start, end)
    if not (result.returns != 0.0).any():
        return 0.0
    return float(result.metrics.sharpe)


def main() -> None:
    """Print each market's oracle and buy-and-hold Sharpe per part, and the irregular
    markets' filter policies with and without ``dt`` (the tables of docs/calibration.md)."""
    print("| dataset | part | bars | oracle Sharpe | oracle total return | buy & hold Sharpe |")
    print("|---|---|---|---|---|---|")
    spans = {}
    for name in MARKETS:
        for part in ("train", "val", "test"):
            spans[name, part] = start, end = part_span(name, part)
            result = oracle_backtest(name, start, end)
            sharpe = oracle_sharpe(name, part)
            print(
                f"| {name} | {part} | {len(result.equity)} | {sharpe:.2f} | "
                f"{result.metrics.total_return:+.1%} | {result.benchmark_metrics.sharpe:.2f} |"
            )
    for name in FILTER_BANDS:
        print()
        print(f"| {name} policy | train | val | test |")
        print("|---|---|---|---|")
        blind = f"Kalman filter, dt = {BLIND_STEP_HOURS[name]} h"
        for label, use_dt in (("Kalman filter with dt", True), (blind, False)):
            positions = filter_positions(name, use_dt=use_dt)
            figures = [
                backtest_positions(name, positions, *spans[name, part]).metrics.sharpe
                for part in ("train", "val", "test")
            ]
            print(f"| {label} | " + " | ".join(f"{value:.2f}" for value in figures) + " |")

if __name__ == "__main__":
    main()
