"""Execution and accounting shared by the envs and the backtester; metrics; reports.

- :mod:`~tradezoo.backtest.costs`: :class:`CostModel` and its presets.
- :mod:`~tradezoo.backtest.execution`: :func:`execute_step`, the one execution and accounting
  function (scalar and batched), and :func:`execution_rates`.
- :mod:`~tradezoo.backtest.simulation`: :func:`simulate` -> :class:`BacktestResult`;
  :func:`simulate_equity` (its equity path alone, for many replays).
- :mod:`~tradezoo.backtest.baselines`: rule baselines (``buy_and_hold``, ``flat``,
  ``sma_cross``, ``momentum``): :func:`baseline_targets`, :func:`baseline_backtest`.
- :mod:`~tradezoo.backtest.diagnostics`: degenerate-policy flags and the break-even trading
  cost of a backtest: :func:`diagnose`, :func:`policy_flags`, :func:`break_even_cost_bps`.
- :mod:`~tradezoo.backtest.metrics`: :func:`compute_metrics`, :class:`Metrics`,
  :func:`periods_per_year_for`; :func:`compute_metrics_batch` (many equal-length series at
  once, each result equal to ``compute_metrics`` of that series to the bit).
- :mod:`~tradezoo.backtest.stats`: statistics that survive many trials (docs/evaluation.md):
  :func:`probabilistic_sharpe_ratio`, :func:`deflated_sharpe_ratio`,
  :func:`expected_max_sharpe`, :func:`sharpe_confidence_interval` and
  :func:`sharpe_difference_pvalue` (stationary bootstrap, :func:`stationary_block_length`)
  and :func:`pooled_sharpe_difference_pvalue` (over runs and bars),
  :func:`probability_of_backtest_overfitting` (CSCV), :func:`iqm`.
- :mod:`~tradezoo.backtest.report` and :mod:`~tradezoo.backtest.plots`: rich table, JSON, PNG,
  quantstats tearsheet; matplotlib is imported only when a figure is drawn.

Names are imported lazily on first use, so ``import tradezoo.backtest`` never imports
matplotlib or torch. :func:`simulate` is the exception, imported with the package: its
submodule has the same name, and once anything imported ``tradezoo.backtest.simulation`` the
import system would bind the module over a lazily resolved function.

Example::

    from tradezoo.backtest import simulate
    from tradezoo.data import load_dataset

    bars = load_dataset("bybit-btcusdt-1h")
    result = simulate(bars, positions)      # positions: target exposure decided at each close
    print(result.summary())
"""

from __future__ import annotations

from tradezoo._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CostModel": "costs",
    "execute_step": "execution",
    "execution_rates": "execution",
    "ExecutionRates": "execution",
    "StepFill": "execution",
    "simulate": "simulation",
    "BacktestResult": "simulation",
    "simulate_equity": "simulation",
    "BASELINES": "baselines",
    "baseline_targets": "baselines",
    "baseline_backtest": "baselines",
    "diagnose": "diagnostics",
    "PolicyDiagnostics": "diagnostics",
    "policy_flags": "diagnostics",
    "break_even_cost_bps": "diagnostics",
    "compute_metrics": "metrics",
    "compute_metrics_batch": "metrics",
    "Metrics": "metrics",
    "periods_per_year_for": "metrics",
    "probabilistic_sharpe_ratio": "stats",
    "expected_max_sharpe": "stats",
    "deflated_sharpe_ratio": "stats",
    "sharpe_confidence_interval": "stats",
    "sharpe_difference_pvalue": "stats",
    "pooled_sharpe_difference_pvalue": "stats",
    "stationary_block_length": "stats",
    "SharpeInterval": "stats",
    "probability_of_backtest_overfitting": "stats",
    "iqm": "stats",
    "metrics_table": "report",
    "print_report": "report",
    "to_json": "report",
    "save_png": "report",
    "quantstats_html": "report",
    "figure_backtest": "plots",
    "figure_to_rgb": "plots",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
