"""Tests of ``tradezoo.backtest.simulation``: reconciliation on real bars, rebalance rules, fill
rules, buy-and-hold, trades, a hand-computed scenario, and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.simulation import (
    COST_COLUMNS,
    FILL_COLUMNS,
    TRADE_COLUMNS,
    BacktestResult,
    default_costs,
    simulate,
)
from tradezoo.data import load_dataset
from tradezoo.data.bars import bars_from_frame
from tradezoo.data.errors import DataError

N_BARS = 3000
REL = 1e-9


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    """A few thousand real BTCUSDT 1h bars, from the first funding stamp on."""
    bars = load_dataset("bybit-btcusdt-1h")
    start = int(np.flatnonzero(bars["funding_rate"].to_numpy() != 0)[0]) - 5
    return bars.iloc[start : start + N_BARS]


def discrete_positions(n: int, seed: int = 7) -> np.ndarray:
    """Targets in {-1, 0, 1} held for random stretches of 1 to 30 bars."""
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    t = 0
    while t < n:
        length = int(rng.integers(1, 31))
        out[t : t + length] = rng.choice([-1.0, 0.0, 1.0])
        t += length
    return out


def continuous_positions(n: int, seed: int = 11) -> np.ndarray:
    """Targets in [-2, 2] with 10 % NaN (keep the previous target)."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-2.0, 2.0, n)
    out[rng.random(n) < 0.1] = np.nan
    return out


def close_to(a: np.ndarray, b: np.ndarray, scale: float) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= REL * scale))


def hand_bars() -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    frame = pd.DataFrame(
        {
            "open": [100.0, 102.0, 104.0, 95.0],
            "high": [101.0, 106.0, 104.0, 99.0],
            "low": [99.0, 101.0, 95.0, 94.0],
            "close": [100.0, 105.0, 96.0, 98.0],
            "volume": [10.0, 10.0, 10.0, 10.0],
            "funding_rate": [0.0, 0.0, 0.001, 0.0],
        },
        index=index,
    )
    return bars_from_frame(frame, symbol="TEST", interval="1h", source="test")


# ----------------------------------------------------------------------- hand-computed


def test_hand_computed_fill_fee_funding_and_reversal() -> None:
    """Three steps: buy at open[1], reverse at open[2] across a funding stamp, hold (NaN)."""
    costs = CostModel(taker_fee_bps=10.0, half_spread_bps=0.0, slippage_bps=0.0, funding=True)
    result = simulate(
        hand_bars(), [1.0, -1.0, np.nan, 0.0], costs=costs, initial_equity=1000.0,
        periods_per_year=8760.0,
    )
    fee_rate = 0.001
    # Step 0: buy 1000 / 102 units at 102, fee 1, mark at 105.
    u1 = 1000.0 / 102.0
    e1 = 1000.0 + u1 * (105.0 - 102.0) - 1000.0 * fee_rate
    # Step 1: gap 105 -> 104 on the long, funding 0.001 * 104 * u1 paid by the long at the
    # stamp, then reverse to -equity_before_fill / 104 units, fee on the traded notional.
    gap = u1 * (104.0 - 105.0)
    funding = 0.001 * 104.0 * u1
    before_fill = e1 + gap - funding
    u2 = -before_fill / 104.0
    fee2 = (u1 - u2) * 104.0 * fee_rate
    e2 = e1 + gap + u2 * (96.0 - 104.0) - fee2 - funding
    # Step 2: NaN keeps the target -1: no trade, the short earns 96 -> 95 -> 98.
    e3 = e2 + u2 * (98.0 - 96.0)

    np.testing.assert_allclose(result.equity.to_numpy(), [1000.0, e1, e2, e3], rtol=1e-12)
    np.testing.assert_allclose(result.units.to_numpy(), [0.0, u1, u2, u2], rtol=1e-12)
    np.testing.assert_allclose(result.costs["fee"].to_numpy(), [0.0, 1.0, fee2, 0.0],
                               rtol=1e-12)
    np.testing.assert_allclose(result.costs["funding_paid"].to_numpy(), [0, 0, funding, 0],
                               rtol=1e-12)
    assert list(result.fills["side"]) == ["buy", "sell"]
    assert list(result.fills["timestamp"]) == list(result.equity.index[1:3])
    np.testing.assert_allclose(result.fills["fill_price"].to_numpy(), [102.0, 104.0])

    trades = result.trades
    assert list(trades["side"]) == ["long", "short"]
    assert list(trades["status"]) == ["closed", "open"]
    long_pnl = -1.0 + u1 * (105.0 - 102.0) + gap - funding - u1 * 104.0 * fee_rate
    short_pnl = u2 * 104.0 * fee_rate + u2 * (96.0 - 104.0) + u2 * (98.0 - 96.0)
    np.testing.assert_allclose(trades["pnl"].to_numpy(), [long_pnl, short_pnl], rtol=1e-12)
    np.testing.assert_allclose(trades["return"].to_numpy(),
                               [long_pnl / 1000.0, short_pnl / e1], rtol=1e-12)
    np.testing.assert_allclose(trades["entry_price"].to_numpy(), [102.0, 104.0])
    np.testing.assert_allclose(trades["exit_price"].to_numpy(), [104.0, 98.0])
    assert list(trades["bars_held"]) == [1, 2]
    assert trades["exit_time"].iloc[0] == trades["entry_time"].iloc[1]  # same reversal fill
    assert trades["exit_time"].iloc[1] == result.equity.index[-1]


# ---------------------------------------------------------------------- reconciliation


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("rebalance", ["on_change", "every_bar"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_every_bar_reconciles(btc: pd.DataFrame, fill: str, rebalance: str, kind: str) -> None:
    """equity[t+1] - equity[t] == position P&L - fee - spread - slippage - funding - borrow,
    with the P&L and the funding recomputed here from units and prices."""
    n = len(btc)
    positions = discrete_positions(n) if kind == "discrete" else continuous_positions(n)
    costs = CostModel.bybit_linear(borrow_rate_annual=0.05)  # exercise every cost line
    result = simulate(btc, positions, costs=costs, fill=fill, rebalance=rebalance,
                      initial_equity=10_000.0)
    equity = result.equity.to_numpy()
    units = result.units.to_numpy()
    opens, closes = btc["open"].to_numpy(), btc["close"].to_numpy()
    if fill == "next_open":
        pnl = units[:-1] * (opens[1:] - closes[:-1]) + units[1:] * (closes[1:] - opens[1:])
        expected_funding = btc["funding_rate"].to_numpy()[1:] * opens[1:] * units[:-1]
    else:
        pnl = units[1:] * (closes[1:] - closes[:-1])
        expected_funding = btc["funding_rate"].to_numpy()[1:] * opens[1:] * units[1:]
    costs_frame = result.costs
    assert list(costs_frame.columns) == list(COST_COLUMNS)
    assert (costs_frame.iloc[0] == 0).all()
    total_cost = costs_frame.iloc[1:].sum(axis=1).to_numpy()
    scale = np.abs(equity[:-1])
    assert close_to(np.diff(equity), pnl - total_cost, scale.max())
    assert close_to(result.position_pnl.to_numpy()[1:], pnl, scale.max())
    assert close_to(costs_frame["funding_paid"].to_numpy()[1:], expected_funding, scale.max())
    assert (costs_frame["funding_paid"] != 0).sum() > 50  # funding stamps were crossed
    assert (costs_frame["borrow_paid"] > 0).any() == (np.nanmin(positions) < 0)

    # Fees, spread and slippage of each fill from its traded notional.
    fills = result.fills
    reference = fills["fill_price"] / (1 + np.where(fills["side"] == "buy", 1, -1) * 1.5e-4)
    np.testing.assert_allclose(fills["fee"], fills["notional"] * 5.5e-4, rtol=1e-12)
    np.testing.assert_allclose(fills["spread"], fills["units"] * reference * 0.5e-4,
                               rtol=1e-9)
    np.testing.assert_allclose(fills["slippage"], fills["units"] * reference * 1e-4,
                               rtol=1e-9)
    assert costs_frame["fee"].sum() == pytest.approx(fills["fee"].sum(), rel=1e-12)

    # Cost columns sum to the metrics' cost fields (fractions of initial equity).
    metrics = result.metrics
    for column, key in zip(
        COST_COLUMNS,
        ("fees_paid", "spread_paid", "slippage_paid", "funding_paid", "borrow_paid"),
        strict=True,
    ):
        assert getattr(metrics, key) == pytest.approx(costs_frame[column].sum() / 10_000.0,
                                                      rel=1e-12, abs=1e-15)
    # Returns come from the equity curve; metrics from those returns.
    np.testing.assert_allclose(result.returns.to_numpy(), equity[1:] / equity[:-1] - 1,
                               rtol=1e-12)
    assert metrics.total_return == pytest.approx(equity[-1] / equity[0] - 1, rel=1e-9)
    assert metrics.n_periods == n - 1


def test_on_change_keeps_units_and_exposure_drifts(btc: pd.DataFrame) -> None:
    n = len(btc)
    positions = np.full(n, 0.5)
    positions[n // 2 :] = -1.0
    result = simulate(btc, positions, costs=CostModel.bybit_linear(), rebalance="on_change")
    units = result.units.to_numpy()
    assert len(result.fills) == 2  # enter at bar 1, reverse once
    assert np.all(units[1 : n // 2 + 1] == units[1])  # the target repeats: same units
    assert np.all(units[n // 2 + 1 :] == units[-1])
    held = result.positions.to_numpy()[1 : n // 2 + 1]
    assert held.std() > 1e-3 and np.abs(held - 0.5).max() > 0.01  # exposure drifted


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_every_bar_restores_exact_exposure(btc: pd.DataFrame, fill: str) -> None:
    """At every fill, units * reference == target * equity just before the fill."""
    n = len(btc)
    positions = continuous_positions(n)
    result = simulate(btc, positions, costs=CostModel.bybit_linear(), rebalance="every_bar",
                      fill=fill)
    equity, units = result.equity.to_numpy(), result.units.to_numpy()
    opens, closes = btc["open"].to_numpy(), btc["close"].to_numpy()
    targets = pd.Series(positions).ffill().fillna(0.0).to_numpy()[:-1]
    if fill == "next_open":
        funding = btc["funding_rate"].to_numpy()[1:] * opens[1:] * units[:-1]
        before_fill = equity[:-1] + units[:-1] * (opens[1:] - closes[:-1]) - funding
        exposure = units[1:] * opens[1:] / before_fill
    else:
        exposure = units[1:] * closes[:-1] / equity[:-1]
    np.testing.assert_allclose(exposure, targets, rtol=0, atol=1e-12)
    assert len(result.fills) > 0.9 * n  # traded nearly every bar
    # on_change, by contrast, leaves the exposure off target on held bars.
    drifting = simulate(btc, np.ones(n), costs=CostModel.bybit_linear())
    assert np.abs(drifting.positions.to_numpy()[2:] - 1.0).max() > 0.01


def test_zero_cost_constant_long_is_buy_and_hold(btc: pd.DataFrame) -> None:
    close = btc["close"].to_numpy()
    first_open = float(btc["open"].iloc[1])
    result = simulate(btc, np.ones(len(btc)), costs=CostModel.zero(), initial_equity=3.0)
    expected = 3.0 * close[1:] / first_open  # bought at open[1]
    np.testing.assert_allclose(result.equity.to_numpy()[1:], expected, rtol=1e-12)
    assert result.equity.iloc[0] == 3.0
    np.testing.assert_allclose(result.benchmark_equity, result.equity, rtol=1e-12)
    assert len(result.fills) == 1 and len(result.trades) == 1
    assert result.trades["status"].iloc[0] == "open"
    # The optimistic close fill buys at close[0] instead: the ratio of closes exactly.
    at_close = simulate(btc, np.ones(len(btc)), costs=CostModel.zero(), fill="close")
    np.testing.assert_allclose(at_close.equity.to_numpy(), close / close[0], rtol=1e-12)


def test_close_fill_differs_and_is_optimistic_on_timing(btc: pd.DataFrame) -> None:
    positions = discrete_positions(len(btc))
    costs = CostModel.bybit_linear()
    next_open = simulate(btc, positions, costs=costs)
    at_close = simulate(btc, positions, costs=costs, fill="close")
    assert not np.allclose(next_open.equity, at_close.equity)
    # Same decisions, fills one bar boundary earlier: each fill is stamped on its decision bar.
    assert list(at_close.fills["timestamp"]) == list(at_close.fills["decision_time"])
    assert (next_open.fills["timestamp"] > next_open.fills["decision_time"]).all()
    assert at_close.config["fill"] == "close"


def test_benchmark_pays_entry_cost_with_same_model(btc: pd.DataFrame) -> None:
    costs = CostModel.bybit_linear()
    result = simulate(btc, discrete_positions(len(btc)), costs=costs)
    long_only = simulate(btc, np.ones(len(btc)), costs=costs)
    np.testing.assert_allclose(result.benchmark_equity, long_only.equity, rtol=1e-12)
    entry_cost = long_only.costs.iloc[1][["fee", "spread_cost", "slippage_cost"]].sum()
    assert entry_cost == pytest.approx(1.0 * (5.5e-4 * (1 + 1.5e-4) + 1.5e-4), rel=1e-9)
    assert result.metrics.benchmark_total_return == pytest.approx(
        long_only.equity.iloc[-1] - 1.0, rel=1e-9
    )
    assert result.benchmark_metrics.total_return == pytest.approx(
        result.metrics.benchmark_total_return, rel=1e-12
    )


# ------------------------------------------------------------------------------ trades


@pytest.mark.parametrize("rebalance", ["on_change", "every_bar"])
@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_trades_partition_the_equity_change(btc: pd.DataFrame, rebalance: str,
                                            fill: str) -> None:
    positions = discrete_positions(len(btc), seed=3)
    positions[-40:] = 1.0  # end in an open long
    result = simulate(btc, positions, costs=CostModel.bybit_linear(borrow_rate_annual=0.03),
                      rebalance=rebalance, fill=fill, initial_equity=500.0)
    trades, fills = result.trades, result.fills
    assert list(trades.columns) == list(TRADE_COLUMNS)
    assert list(fills.columns) == list(FILL_COLUMNS)
    total = result.equity.iloc[-1] - result.equity.iloc[0]
    assert trades["pnl"].sum() == pytest.approx(total, rel=1e-9, abs=1e-9 * 500.0)
    assert (trades["status"] == "open").sum() == 1 and trades["status"].iloc[-1] == "open"
    assert trades["exit_time"].iloc[-1] == btc.index[-1]
    assert trades["exit_price"].iloc[-1] == btc["close"].iloc[-1]
    # Each trade starts at a fill with its entry price; each closed trade ends at a fill.
    by_time = fills.set_index("timestamp")
    np.testing.assert_allclose(trades["entry_price"],
                               by_time.loc[trades["entry_time"], "fill_price"], rtol=0)
    closed = trades[trades["status"] == "closed"]
    np.testing.assert_allclose(closed["exit_price"],
                               by_time.loc[closed["exit_time"], "fill_price"], rtol=0)
    # Trades alternate with flat periods or reversals: one trade per sign run of units.
    signs = np.sign(result.units.to_numpy())
    runs = np.sum((signs[1:] != signs[:-1]) & (signs[1:] != 0)) + (signs[0] != 0)
    assert len(trades) == runs
    assert (trades["entry_time"].iloc[1:].to_numpy()
            >= trades["exit_time"].iloc[:-1].to_numpy()).all()
    assert (trades["bars_held"] >= 1).all()
    assert result.metrics.n_trades == len(trades)
    if rebalance == "on_change":
        assert len(fills) == np.count_nonzero(np.diff(result.units.to_numpy()))


def test_no_trades_gives_empty_tables(btc: pd.DataFrame) -> None:
    result = simulate(btc, np.zeros(len(btc)), costs=CostModel.bybit_linear())
    assert result.trades.empty and result.fills.empty
    assert list(result.trades.columns) == list(TRADE_COLUMNS)
    assert (result.equity == 1.0).all()
    assert result.metrics.n_trades == 0 and result.metrics.exposure == 0.0


# ------------------------------------------------------------------------------ inputs


def test_series_array_and_list_agree_and_nan_keeps_target(btc: pd.DataFrame) -> None:
    bars = btc.iloc[:300]
    values = discrete_positions(300)
    with_nan = values.copy()
    repeats = np.flatnonzero(np.r_[False, values[1:] == values[:-1]])
    with_nan[repeats] = np.nan  # NaN where the target repeats: same decisions
    costs = CostModel.bybit_linear()
    base = simulate(bars, values, costs=costs)
    for variant in (
        list(values),
        pd.Series(values, index=bars.index),
        pd.Series(with_nan, index=bars.index, dtype="Float64"),
        with_nan,
    ):
        other = simulate(bars, variant, costs=costs)
        np.testing.assert_array_equal(other.equity.to_numpy(), base.equity.to_numpy())


def test_leading_nan_is_flat(btc: pd.DataFrame) -> None:
    positions = np.full(200, np.nan)
    positions[50] = 1.0
    result = simulate(btc.iloc[:200], positions, costs=CostModel.bybit_linear())
    assert (result.units.iloc[:51] == 0).all() and result.units.iloc[51] > 0  # fills at 51
    assert result.fills["decision_time"].tolist() == [btc.index[50]]


def test_default_costs_follow_the_source(btc: pd.DataFrame) -> None:
    positions = discrete_positions(500)
    assert default_costs(btc) == CostModel.bybit_linear()
    implicit = simulate(btc.iloc[:500], positions)
    explicit = simulate(btc.iloc[:500], positions, costs=CostModel.bybit_linear())
    np.testing.assert_array_equal(implicit.equity, explicit.equity)
    assert implicit.config["costs"] == CostModel.bybit_linear().to_dict()
    spy = load_dataset("yahoo-spy-1d").iloc[:300]
    assert default_costs(spy) == CostModel.equities()
    result = simulate(spy, -np.ones(300))
    assert result.config["periods_per_year"] == 252.0
    assert result.costs["borrow_paid"].sum() > 0  # the equities preset charges short borrow
    assert result.costs["funding_paid"].sum() == 0


def test_unvalidated_frame_goes_through_validation(btc: pd.DataFrame) -> None:
    bars = btc.iloc[:100].copy()
    bars.attrs = {key: value for key, value in bars.attrs.items() if key != "validated"}
    result = simulate(bars, np.ones(100), costs=CostModel.zero())
    assert len(result.equity) == 100
    assert result.config["symbol"] == "BTCUSDT" and result.config["source"] == "bybit-linear"


def test_volatility_slippage_uses_the_decision_bar(btc: pd.DataFrame) -> None:
    bars = btc.iloc[:400]
    costs = CostModel.bybit_linear(slippage="volatility", slippage_k=0.1, slippage_bps=0.0)
    result = simulate(bars, discrete_positions(400), costs=costs)
    fills = result.fills
    decision = bars.loc[fills["decision_time"]]
    range_frac = ((decision["high"] - decision["low"]) / decision["close"]).to_numpy()
    reference = bars.loc[fills["timestamp"], "open"].to_numpy()
    np.testing.assert_allclose(fills["slippage"], fills["units"] * reference * 0.1 * range_frac,
                               rtol=1e-12)


def test_bankruptcy_liquidates_and_stops_trading() -> None:
    index = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    price = np.array([100.0, 100.0, 40.0, 45.0, 60.0, 80.0])
    frame = pd.DataFrame(
        {"open": price, "high": price * 1.01, "low": price * 0.99, "close": price,
         "volume": 1.0},
        index=index,
    )
    bars = bars_from_frame(frame, symbol="X", interval="1d", source="test")
    result = simulate(bars, np.full(6, 3.0), costs=CostModel.zero(), periods_per_year=365.0)
    assert result.bankrupt_at == index[2]
    assert result.equity.iloc[2] < 0
    assert (result.units.iloc[3:] == 0).all()  # liquidated at the next fill, then flat
    assert (result.equity.iloc[3:] == result.equity.iloc[3]).all()
    assert np.isfinite(result.returns).all()
    assert "BANKRUPT" in result.summary()


@pytest.mark.parametrize(
    ("positions", "error", "match"),
    [
        (np.ones(99), ValueError, r"positions has length 99 but the bars have 100 rows"),
        (np.ones((100, 1)), ValueError, r"positions must be 1-D"),
        (np.r_[np.ones(50), np.inf, np.ones(49)], ValueError,
         r"positions must be finite or NaN.*first at"),
        (np.array(["long"] * 100), TypeError, r"positions must be numeric"),
        (pd.DataFrame({"a": np.ones(100)}), TypeError, r"got a DataFrame"),
    ],
)
def test_bad_positions(btc: pd.DataFrame, positions: object, error: type,
                       match: str) -> None:
    with pytest.raises(error, match=match):
        simulate(btc.iloc[:100], positions, costs=CostModel.zero())


def test_misaligned_positions_series(btc: pd.DataFrame) -> None:
    bars = btc.iloc[:100]
    shifted = pd.Series(np.ones(100), index=btc.index[1:101])
    with pytest.raises(ValueError, match=r"positions index must equal the bars index.*missing"):
        simulate(bars, shifted, costs=CostModel.zero())
    shorter = pd.Series(np.ones(99), index=bars.index[:99])
    with pytest.raises(ValueError, match=r"got 99 entries for 100 bars"):
        simulate(bars, shorter, costs=CostModel.zero())
    reversed_ = pd.Series(np.ones(100), index=bars.index[::-1])
    with pytest.raises(ValueError, match=r"different order"):
        simulate(bars, reversed_, costs=CostModel.zero())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fill": "open"}, ValueError, r"fill must be 'next_open' or 'close'"),
        ({"rebalance": "daily"}, ValueError, r"rebalance must be 'on_change' or 'every_bar'"),
        ({"initial_equity": 0.0}, ValueError, r"initial_equity must be a finite number > 0"),
        ({"initial_equity": float("nan")}, ValueError, r"initial_equity"),
        ({"periods_per_year": -1.0}, ValueError, r"periods_per_year must be a finite"),
        ({"risk_free": float("inf")}, ValueError, r"risk_free must be a finite"),
        ({"costs": {"taker_fee_bps": 1}}, TypeError, r"costs must be a CostModel"),
    ],
)
def test_bad_arguments(btc: pd.DataFrame, kwargs: dict, error: type, match: str) -> None:
    kwargs = {"costs": CostModel.zero(), **kwargs}
    with pytest.raises(error, match=match):
        simulate(btc.iloc[:100], np.ones(100), **kwargs)


def test_bad_bars(btc: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match=r"bars must be a bars DataFrame"):
        simulate(btc["close"], np.ones(len(btc)), costs=CostModel.zero())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"at least 2 rows"):
        simulate(btc.iloc[:1], [1.0], costs=CostModel.zero())
    broken = btc.iloc[:50].copy()
    broken.attrs = {}
    broken = broken.drop(columns="volume")
    with pytest.raises(DataError):
        simulate(broken, np.ones(50), costs=CostModel.zero())


def test_unknown_source_needs_explicit_costs() -> None:
    with pytest.raises(ValueError, match=r"bars source: no default cost model for 'test'"):
        simulate(hand_bars(), np.ones(4), periods_per_year=8760.0)


def test_result_summary_and_types(btc: pd.DataFrame) -> None:
    result = simulate(btc.iloc[:500], discrete_positions(500))
    assert isinstance(result, BacktestResult)
    text = result.summary()
    assert "BTCUSDT" in text and "fills" in text and "Sharpe" in text
    assert str(result) == text
    for series in (result.equity, result.positions, result.units, result.turnover,
                   result.benchmark_equity):
        assert series.index.equals(btc.index[:500])
    assert result.returns.index.equals(btc.index[1:500])
    assert set(result.cost_totals) == set(COST_COLUMNS)


def test_importing_backtest_is_cheap() -> None:
    code = (
        "import sys, tradezoo.backtest as b; "
        "assert b.CostModel and b.execute_step; "
        "bad = [m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
