"""One formatting and JSON module: every report shows a metric the same way."""

from __future__ import annotations

import io
import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from tradezoo.agents.compare import (
    LEADERBOARD_METRICS,
    RunRecord,
    leaderboard_frame,
    leaderboard_markdown,
)
from tradezoo.agents.run import REPORT_METRICS, markdown_metrics_table, write_json
from tradezoo.backtest.formatting import (
    METRIC_UNITS,
    PERCENT_METRICS,
    format_mean_std,
    format_metric,
    json_safe,
)
from tradezoo.backtest.metrics import Metrics
from tradezoo.backtest.report import metrics_table

# One value per metric: fractions, ratios and counts, with digits past the shown precision.
VALUES = {"total_return": 0.123456, "cagr": 0.0456, "sharpe": 1.23456, "sortino": 2.5,
          "max_drawdown": -0.0789, "calmar": 0.987654, "win_rate": 0.5, "n_trades": 12,
          "profit_factor": math.inf, "exposure": 0.4321, "turnover": 3.14159,
          "fees_paid": 0.0012, "funding_paid": -0.0003, "accuracy": 0.61, "macro_f1": 0.42}


def _rich_cells(values: dict[str, object]) -> dict[str, str]:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(metrics_table(values))
    cells = {}
    for line in console.export_text().splitlines():
        parts = [p.strip() for p in line.replace("│", "|").split("|") if p.strip()]
        if len(parts) == 2 and parts[0] in values:
            cells[parts[0]] = parts[1]
    return cells


def _markdown_cells(values: dict[str, object]) -> dict[str, str]:
    table = markdown_metrics_table({"model": values}, metrics=tuple(values))
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {name.strip(): cell.strip() for name, cell in rows}


def _leaderboard_cells(values: dict[str, float]) -> dict[str, str]:
    index = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
    curve = pd.Series([1.0, 1.01, 1.02], index=index)
    record = RunRecord(arch="gru", mode="supervised", seed=0,
                       metrics={m: float(values[m]) for m in LEADERBOARD_METRICS},
                       train_seconds=1.0, n_parameters=10, equity=curve,
                       benchmark_equity=curve, benchmark_metrics={})
    text = leaderboard_markdown(leaderboard_frame([record]))
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    row = next(line for line in text.splitlines() if "| gru |" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    return dict(zip(names, cells, strict=True))


def test_every_metric_a_report_or_tensorboard_shows_has_one_unit() -> None:
    from tradezoo.agents.callbacks import TRADING_TAGS

    shown = ({f.name for f in fields(Metrics)} | set(REPORT_METRICS) | set(LEADERBOARD_METRICS)
             | set(TRADING_TAGS.values()))
    assert shown <= set(METRIC_UNITS), sorted(shown - set(METRIC_UNITS))
    assert {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "fees_paid",
            "funding_paid", "accuracy", "macro_f1", "hit_rate"} <= PERCENT_METRICS
    assert not {"sharpe", "sortino", "calmar", "turnover", "n_trades",
                "profit_factor"} & PERCENT_METRICS


def test_report_md_leaderboard_and_backtest_table_show_the_same_text() -> None:
    expected = {name: format_metric(name, value) for name, value in VALUES.items()}
    assert expected["exposure"] == "43.21%" and expected["total_return"] == "12.35%"
    assert expected["sharpe"] == "1.235" and expected["n_trades"] == "12"
    assert expected["profit_factor"] == "inf"
    assert _markdown_cells(VALUES) == expected
    assert _rich_cells(VALUES) == expected
    board = _leaderboard_cells(VALUES)
    assert {m: board[m] for m in LEADERBOARD_METRICS} == {m: expected[m]
                                                          for m in LEADERBOARD_METRICS}


def test_missing_values_means_and_spreads() -> None:
    assert format_metric("sharpe", None) == "n/a" and format_metric("cagr", math.nan) == "n/a"
    assert format_metric("max_drawdown", -math.inf) == "-inf"
    assert format_metric("n_trades", np.int64(1234)) == "1,234"
    assert format_metric("n_trades", 2.5) == "2.5"  # a mean over seeds
    assert format_mean_std("total_return", 0.2, 0.1414) == "20.00% ± 14.14%"
    assert format_mean_std("sharpe", 2.0, math.nan) == "2.000"
    assert format_mean_std("sharpe", math.nan, 1.0) == "n/a"


def test_json_safe_is_strict_plain_json(tmp_path: Path) -> None:
    value = {"a": np.float32(0.5), "b": [math.nan, np.inf, np.int64(3)], 1: np.bool_(True),
             "t": pd.Timestamp("2024-01-01", tz="UTC"), "p": Path("x/y"),
             "arr": np.array([1.0, np.nan])}
    assert json_safe(value) == {"a": 0.5, "b": [None, None, 3], "1": True,
                                "t": "2024-01-01T00:00:00+00:00", "p": "x/y",
                                "arr": [1.0, None]}
    written = write_json(tmp_path / "out.json", value)
    assert json.loads(written.read_text()) == json_safe(value)
    assert "NaN" not in written.read_text()


@pytest.mark.parametrize("name", sorted(PERCENT_METRICS))
def test_fractions_are_percentages_everywhere(name: str) -> None:
    assert format_metric(name, 0.05) == "5.00%"
