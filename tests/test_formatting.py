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

from tradezoo.agents import leaderboard as lb
from tradezoo.agents.run import REPORT_METRICS, markdown_metrics_table, write_json
from tradezoo.backtest.formatting import (
    METRIC_UNITS,
    PERCENT_METRICS,
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


# One value per leaderboard column, with digits past the shown precision.
BOARD = {"n_cells": 4, "sharpe_mean": 1.23456, "sharpe_iqm": 1.1111, "sharpe_ci_low": -0.5,
         "sharpe_ci_high": 2.75, "psr": 0.91234, "dsr": 0.5, "p_vs_buy_and_hold": 0.0321,
         "total_return_mean": 0.123456, "max_drawdown_mean": -0.0789, "turnover_mean": 3.14159,
         "break_even_cost_bps": math.inf, "flags": "never_trades (1/2 seeds)",
         "oracle_fraction": 0.4321}


def _leaderboard_cells(values: dict[str, object]) -> dict[str, str]:
    row = {"dataset": "d", "arch": "gru", "mode": "supervised", **values, "n_seeds": 2,
           "n_folds": 2, "n_failed": 0, "n_trials": 1, "oracle_sharpe": 2.0}
    text = lb.leaderboard_markdown(pd.DataFrame([row]))
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    body = next(line for line in text.splitlines() if "| gru |" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in body.strip("|").split("|")]
    return dict(zip(names, cells, strict=True))


def test_every_metric_a_report_or_tensorboard_shows_has_one_unit() -> None:
    from tradezoo.agents.callbacks import TRADING_TAGS

    shown = ({f.name for f in fields(Metrics)} | set(REPORT_METRICS)
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
    board = _leaderboard_cells(BOARD)
    assert {c: board[c] for c in lb.COLUMNS} == {
        c: BOARD[c] if c == "flags" else format_metric(c, BOARD[c]) for c in lb.COLUMNS}
    assert board["total_return_mean"] == "12.35%" and board["max_drawdown_mean"] == "-7.89%"
    assert board["oracle_fraction"] == "43.21%" and board["sharpe_mean"] == "1.235"
    assert board["n_cells"] == "4" and board["break_even_cost_bps"] == "inf"


def test_missing_values_and_means() -> None:
    assert format_metric("sharpe", None) == "n/a" and format_metric("cagr", math.nan) == "n/a"
    assert format_metric("max_drawdown", -math.inf) == "-inf"
    assert format_metric("n_trades", np.int64(1234)) == "1,234"
    assert format_metric("n_trades", 2.5) == "2.5"  # a mean over seeds


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
