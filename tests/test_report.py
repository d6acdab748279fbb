"""Tests of the backtest reports: rich table, JSON, PNG, the figure's pixels, quantstats."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.metrics import Metrics, compute_metrics
from tradezoo.backtest.plots import figure_backtest, figure_to_rgb
from tradezoo.backtest.report import (
    metrics_table,
    print_report,
    quantstats_html,
    report_dict,
    save_png,
    to_json,
)
from tradezoo.backtest.simulation import BacktestResult, simulate
from tradezoo.data import load_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    bars = load_dataset("bybit-btcusdt-1h").iloc[400:1400]
    rng = np.random.default_rng(5)
    positions = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=100), 10)
    return simulate(bars, positions)


def render(table: object) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_metrics_table_renders_every_metric(result: BacktestResult) -> None:
    text = render(metrics_table(result))
    for item in fields(Metrics):
        assert item.name in text, item.name
    assert "buy & hold" in text and "BTCUSDT 1h" in text
    total = result.metrics.total_return
    assert f"{total:.2%}" in text  # fractions shown as percentages


def test_metrics_table_from_metrics_and_mapping(result: BacktestResult) -> None:
    text = render(metrics_table(result.metrics, title="only metrics"))
    assert "only metrics" in text and "buy & hold" not in text
    assert "sharpe" in text
    text = render(metrics_table({"sharpe": float("nan"), "n_trades": 3, "cagr": 0.25}))
    assert "n/a" in text and "25.00%" in text
    with pytest.raises(TypeError, match=r"metrics_table: expected a BacktestResult"):
        metrics_table(42)


def test_print_report(result: BacktestResult) -> None:
    buffer = io.StringIO()
    print_report(result, console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "total return" in text and "sharpe" in text and "fills" in text


def test_json_round_trips_and_is_strict(result: BacktestResult, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    text = to_json(result, path)

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    loaded = json.loads(text, parse_constant=reject)
    assert json.loads(path.read_text(encoding="utf-8")) == loaded
    assert loaded["metrics"] == result.metrics.to_dict()
    assert loaded["benchmark_metrics"] == result.benchmark_metrics.to_dict()
    assert loaded["config"]["symbol"] == "BTCUSDT"
    assert loaded["config"]["costs"] == CostModel.bybit_linear().to_dict()
    assert loaded["fills"] == len(result.fills) and loaded["trades"] == len(result.trades)
    totals = loaded["costs"]["total"]
    assert totals["fee"] == pytest.approx(result.costs["fee"].sum(), rel=1e-12)
    assert loaded["costs"]["fraction_of_initial_equity"]["fee"] == pytest.approx(
        result.metrics.fees_paid, rel=1e-12
    )
    assert loaded["final_equity"] == pytest.approx(result.equity.iloc[-1], rel=1e-15)
    assert report_dict(result) == loaded


def test_json_maps_nan_to_null() -> None:
    """A flat run has undefined Sharpe and trade figures: null in JSON, not NaN."""
    bars = load_dataset("bybit-btcusdt-1h").iloc[:200]
    flat = simulate(bars, np.zeros(200))
    loaded = json.loads(to_json(flat))
    assert loaded["metrics"]["sharpe"] is None
    assert loaded["metrics"]["win_rate"] is None
    assert loaded["bankrupt_at"] is None


def test_png_written_and_readable(result: BacktestResult, tmp_path: Path) -> None:
    path = save_png(result, tmp_path / "backtest.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (640, 480)
    assert len(data) > 10_000  # three panels of lines, not a blank image


def test_figure_to_rgb_returns_uint8_pixels(result: BacktestResult) -> None:
    figure = figure_backtest(result.equity.index, result.close, result.positions,
                             result.equity, result.benchmark_equity, title="test")
    pixels = figure_to_rgb(figure)
    assert pixels.dtype == np.uint8 and pixels.shape == (480, 640, 3)
    assert pixels.flags.c_contiguous and pixels.flags.writeable
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something was drawn
    # Long (green) and short (red) shading are present.
    assert np.any((pixels[..., 1] > pixels[..., 0] + 15) & (pixels[..., 1] > pixels[..., 2]))
    assert np.any((pixels[..., 0] > pixels[..., 1] + 15) & (pixels[..., 0] > pixels[..., 2]))
    small = figure_to_rgb(
        figure_backtest(np.arange(5), [1, 2, 3, 2, 1], [0, 1, 1, -1, 0], [1, 1.1, 1.2, 1, 1]),
        dpi=50,
    )
    assert small.shape == (240, 320, 3) and small.dtype == np.uint8


def test_figure_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"figure_backtest: positions has length 2, expected 3"):
        figure_backtest(np.arange(3), [1.0, 2.0, 3.0], [0.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"need at least 2 bars"):
        figure_backtest(np.arange(1), [1.0], [0.0], [1.0])


def test_figure_handles_tz_aware_index_and_no_benchmark() -> None:
    index = pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC")
    close = np.linspace(100, 120, 50)
    pixels = figure_to_rgb(figure_backtest(index, close, np.ones(50), close / 100))
    assert pixels.shape == (480, 640, 3)


def test_quantstats_missing_gives_install_hint(
    result: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "quantstats", None)  # import quantstats -> ImportError
    with pytest.raises(ImportError, match=r"pip install quantstats"):
        quantstats_html(result, tmp_path / "tearsheet.html")


def test_metrics_from_compute_metrics_match_the_table(result: BacktestResult) -> None:
    """The result's metrics are compute_metrics of its own series, nothing recomputed."""
    again = compute_metrics(
        result.returns,
        periods_per_year=result.config["periods_per_year"],
        trades=result.trades,
        positions=result.positions.iloc[1:],
        turnover=result.turnover.iloc[1:],
        costs={
            "fees_paid": result.costs["fee"].sum(),
            "spread_paid": result.costs["spread_cost"].sum(),
            "slippage_paid": result.costs["slippage_cost"].sum(),
            "funding_paid": result.costs["funding_paid"].sum(),
            "borrow_paid": result.costs["borrow_paid"].sum(),
        },
        benchmark_returns=result.benchmark_returns,
    )
    assert again.to_dict() == result.metrics.to_dict()


def test_reports_do_not_import_matplotlib_until_drawing() -> None:
    code = (
        "import sys, tradezoo.backtest.report, tradezoo.backtest.plots; "
        "assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quantstats_html_writes_a_tearsheet_with_the_strategy_figures(
    result: BacktestResult, tmp_path: Path
) -> None:
    """The real quantstats path (a test extra): the page exists and names the benchmark, and
    quantstats' total return and CAGR of the same returns are the ones our metrics report
    (same convention, see the quantstats pin in pyproject)."""
    pytest.importorskip("quantstats")
    import quantstats

    path = quantstats_html(result, tmp_path / "tearsheet.html", title="SPY test tearsheet")
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 10_000
    assert "SPY test tearsheet" in html
    assert "buy &amp; hold" in html or "buy & hold" in html
    returns = result.returns.copy()
    returns.index = returns.index.tz_convert(None)
    ppy = float(result.config["periods_per_year"])
    assert float(quantstats.stats.comp(returns)) == pytest.approx(
        result.metrics.total_return, rel=1e-9)
    assert float(quantstats.stats.cagr(returns, periods=ppy)) == pytest.approx(
        result.metrics.cagr, rel=1e-9)
