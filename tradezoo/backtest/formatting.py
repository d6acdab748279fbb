"""How reports show metrics and write JSON: one unit per metric, one formatter, one JSON rule.

Every report uses this module: the rich table of ``tradezoo backtest``
(:func:`tradezoo.backtest.report.metrics_table`), the JSON reports
(:func:`tradezoo.backtest.report.report_dict`, ``config.json``), the Markdown tables of
``report.md`` (:func:`tradezoo.agents.run.markdown_metrics_table`) and the ``compare``
leaderboard. TensorBoard scalars (``trading/*``, ``eval/*``) hold the raw values, so a fraction
is a fraction there too (0.05, shown here as ``5.00%``).

Units (:data:`METRIC_UNITS`):

- ``"fraction"``: a share of equity, of bars, of trades or of labels (returns, drawdown,
  exposure, win rate, costs as a share of the initial equity, accuracy); shown as a percentage
  with two decimals;
- ``"count"``: a number of things (trades, bars; a mean over seeds may be fractional); shown
  with thousands separators;
- ``"number"``: everything else (ratios such as Sharpe, turnover in multiples of equity per
  year, leverage); shown with three decimals.

Missing values (``None``, NaN) are ``n/a``; infinities are ``inf`` and ``-inf`` (a profit factor
with no losing trade is ``inf``). Nothing here imports more than numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "METRIC_UNITS",
    "PERCENT_METRICS",
    "format_metric",
    "json_safe",
    "metric_unit",
]

Unit = Literal["fraction", "count", "number"]

METRIC_UNITS: dict[str, Unit] = {
    # tradezoo.backtest.metrics.Metrics
    "n_periods": "count",
    "periods_per_year": "count",
    "risk_free": "fraction",
    "total_return": "fraction",
    "cagr": "fraction",
    "annual_volatility": "fraction",
    "sharpe": "number",
    "sortino": "number",
    "max_drawdown": "fraction",
    "calmar": "number",
    "hit_rate": "fraction",
    "n_trades": "count",
    "win_rate": "fraction",
    "profit_factor": "number",
    "avg_trade_return": "fraction",
    "turnover": "number",
    "exposure": "fraction",
    "avg_leverage": "number",
    "fees_paid": "fraction",
    "spread_paid": "fraction",
    "slippage_paid": "fraction",
    "funding_paid": "fraction",
    "borrow_paid": "fraction",
    "total_costs": "fraction",
    "benchmark_total_return": "fraction",
    "benchmark_cagr": "fraction",
    "benchmark_sharpe": "number",
    "benchmark_max_drawdown": "fraction",
    # classification reports of the supervised trainer
    "accuracy": "fraction",
    "macro_f1": "fraction",
    # the sweep leaderboard (tradezoo.agents.leaderboard)
    "n_cells": "count",
    "total_return_mean": "fraction",
    "max_drawdown_mean": "fraction",
    "oracle_fraction": "fraction",
}
"""The unit of every metric a report shows (module docstring); other names are numbers."""

PERCENT_METRICS: frozenset[str] = frozenset(
    name for name, unit in METRIC_UNITS.items() if unit == "fraction")
"""Metrics shown as percentages: those of unit ``"fraction"``."""

NUMBER_DECIMALS = 3
"""Decimals of a metric of unit ``"number"``."""


def metric_unit(name: str) -> Unit:
    """The unit of metric ``name`` (``"number"`` for a name not in :data:`METRIC_UNITS`)."""
    return METRIC_UNITS.get(name, "number")


def _real(value: Any) -> float | None:
    """``value`` as a float, ``None`` when missing or not a real number."""
    if value is None or isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return None


def format_metric(name: str, value: Any) -> str:
    """``value`` of metric ``name`` as shown in every report (module docstring): ``12.34%``,
    ``1,234``, ``1.500``, ``n/a``, ``inf``; a value that is not a number as ``str(value)``."""
    number = _real(value)
    if number is None:
        return "n/a" if value is None else str(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    unit = metric_unit(name)
    if unit == "fraction":
        return f"{number:.2%}"
    if unit == "count":
        return f"{int(number):,}" if number.is_integer() else f"{number:,.1f}"
    return f"{number:,.{NUMBER_DECIMALS}f}"


def json_safe(value: Any) -> Any:
    """``value`` as plain, strict JSON types, recursively: mappings become dicts with string
    keys, sequences and arrays lists, numpy scalars Python ones, NaN and infinities ``None``
    (strict JSON has neither), timestamps ISO 8601 text, anything else ``str(value)`` (paths
    included)."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return [json_safe(item) for item in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "isoformat"):  # Timestamp, datetime, date
        return value.isoformat()
    return str(value)
