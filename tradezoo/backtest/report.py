"""Reports of a backtest: a rich metrics table, JSON, a PNG figure, a quantstats tearsheet.

Nothing here computes a metric: every number comes from
:func:`~tradezoo.backtest.metrics.compute_metrics` (through :class:`BacktestResult`) or from
the result's cost lines. matplotlib, rich and quantstats are imported inside the functions so
that importing :mod:`tradezoo.backtest` stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradezoo.backtest.formatting import format_metric, json_safe

if TYPE_CHECKING:
    from rich.table import Table

    from tradezoo.backtest.diagnostics import PolicyDiagnostics
    from tradezoo.backtest.simulation import BacktestResult

def _metrics_dict(source: Any, *, json_safe: bool = False) -> dict[str, Any]:
    if hasattr(source, "metrics") and hasattr(source, "equity"):  # a BacktestResult
        source = source.metrics
    if hasattr(source, "to_dict"):
        try:
            return dict(source.to_dict(json_safe=json_safe))
        except TypeError:  # a to_dict() without the keyword
            return dict(source.to_dict())
    if isinstance(source, Mapping):
        return dict(source)
    raise TypeError(
        "metrics_table: expected a BacktestResult, a Metrics or a mapping of metric names to "
        f"values, got {type(source).__name__}"
    )


def metrics_table(result_or_metrics: Any, *, title: str | None = None) -> Table:
    """A :class:`rich.table.Table` with one row per metric.

    Args:
        result_or_metrics: a :class:`BacktestResult` (adds a buy-and-hold column), a
            :class:`~tradezoo.backtest.metrics.Metrics`, or a mapping name -> value.
        title: table title; default names the symbol and interval when known.

    Returns:
        The table; values as :func:`~tradezoo.backtest.formatting.format_metric` shows them
        (fractions as percentages, missing values as ``n/a``).
    """
    from rich.table import Table

    metrics = _metrics_dict(result_or_metrics)
    benchmark: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    if hasattr(result_or_metrics, "benchmark_metrics") and hasattr(result_or_metrics, "config"):
        benchmark = _metrics_dict(result_or_metrics.benchmark_metrics)
        config = dict(result_or_metrics.config)
    if title is None:
        title = "backtest"
        if config.get("symbol"):
            title = f"{config['symbol']} {config.get('interval') or ''}".strip()
    table = Table(title=title)
    table.add_column("metric", style="bold")
    table.add_column("strategy", justify="right")
    if benchmark is not None:
        table.add_column("buy & hold", justify="right")
    for name, value in metrics.items():
        row = [name, format_metric(name, value)]
        if benchmark is not None:
            row.append(format_metric(name, benchmark.get(name)))
        table.add_row(*row)
    return table


def print_report(result: BacktestResult, *, console: Any = None,
                 diagnostics: PolicyDiagnostics | None = None) -> None:
    """Print the result's summary, its policy checks (when given) and its metrics table with
    rich.

    Args:
        result: a :class:`BacktestResult`.
        console: a :class:`rich.console.Console`; default a new one on stdout.
        diagnostics: the policy's flags and break-even cost
            (:func:`tradezoo.backtest.diagnostics.diagnose`), printed as one line.
    """
    from rich.console import Console

    console = console or Console()
    console.print(result.summary())
    if diagnostics is not None:
        console.print(diagnostics.summary(), markup=False)
    console.print(metrics_table(result))


def report_dict(result: BacktestResult,
                diagnostics: PolicyDiagnostics | None = None) -> dict[str, Any]:
    """The JSON report as a dict: config, metrics, benchmark metrics, cost totals, counts,
    and, when given, ``diagnostics`` (``{"flags": [...], "break_even_cost_bps": ...}``).

    ``costs`` holds each cost line's total in quote currency and as a fraction of the
    initial equity; non-finite numbers are ``None`` (so ``diagnostics`` also states the
    break-even cost as text, ``break_even``, which tells "none" from "above the ceiling").
    """
    initial = float(result.config.get("initial_equity", result.equity.iloc[0]))
    totals = result.cost_totals
    extra = {} if diagnostics is None else {"diagnostics": diagnostics.to_dict()}
    return json_safe(
        {
            "config": result.config,
            "metrics": _metrics_dict(result.metrics, json_safe=True),
            "benchmark_metrics": _metrics_dict(result.benchmark_metrics, json_safe=True),
            "costs": {
                "total": totals,
                "fraction_of_initial_equity": {
                    name: value / initial for name, value in totals.items()
                },
            },
            "final_equity": float(result.equity.iloc[-1]),
            "benchmark_final_equity": float(result.benchmark_equity.iloc[-1]),
            "fills": len(result.fills),
            "trades": len(result.trades),
            "bankrupt_at": result.bankrupt_at,
            **extra,
        }
    )


def to_json(result: BacktestResult, path: str | Path | None = None, *, indent: int = 2) -> str:
    """The report as strict JSON (no NaN tokens), optionally written to ``path`` (UTF-8).

    Returns:
        The JSON text (see :func:`report_dict` for its fields).
    """
    text = json.dumps(report_dict(result), indent=indent, allow_nan=False)
    if path is not None:
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def figure(result: BacktestResult, title: str | None = None) -> Any:
    """:func:`~tradezoo.backtest.plots.figure_backtest` of a result (price, equity, drawdown)."""
    from tradezoo.backtest.plots import figure_backtest

    if title is None:
        cfg = result.config
        title = " ".join(str(cfg[k]) for k in ("symbol", "interval") if cfg.get(k)) or None
    return figure_backtest(
        result.equity.index,
        result.close,
        result.positions,
        result.equity,
        benchmark_equity=result.benchmark_equity,
        title=title,
    )


def save_png(result: BacktestResult, path: str | Path, *, dpi: int = 100) -> Path:
    """Write the backtest figure as a PNG file and return its path."""
    path = Path(path)
    fig = figure(result)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def quantstats_html(
    result: BacktestResult, path: str | Path, *, title: str | None = None
) -> Path:
    """Write a quantstats HTML tearsheet of the strategy against buy-and-hold.

    quantstats is optional (not a dependency of tradezoo); it is imported here. Its figures
    follow quantstats' own conventions (some aggregate intraday returns by day), so the
    tearsheet can differ from :func:`metrics_table` in details; the table is authoritative.

    Raises:
        ImportError: quantstats is not installed; the message says to ``pip install
            quantstats``.
    """
    try:
        import quantstats
    except ImportError as error:
        raise ImportError(
            "quantstats_html needs the optional package quantstats: pip install quantstats"
        ) from error
    path = Path(path)
    # quantstats works on tz-naive daily-or-finer indexes.
    returns = result.returns.copy()
    returns.index = returns.index.tz_convert(None)
    benchmark = result.benchmark_returns.copy()
    benchmark.index = benchmark.index.tz_convert(None)
    benchmark.name = "buy & hold"
    cfg = result.config
    quantstats.reports.html(
        returns,
        benchmark=benchmark,
        output=str(path),
        title=title or " ".join(str(cfg[k]) for k in ("symbol", "interval") if cfg.get(k))
        or "tradezoo backtest",
        rf=float(cfg.get("risk_free", 0.0)),
        periods_per_year=round(float(cfg.get("periods_per_year", 252))),
    )
    return path
