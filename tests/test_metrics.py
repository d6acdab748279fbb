"""Metrics: agreement with empyrical-reloaded and quantstats to 1e-9, hand-computed figures,
the conventions of docs/design.md (starting equity is a peak, Sortino over all periods, annual
risk-free rate converted per period), edge cases without warnings, periods per year, and every
bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from tradezoo.backtest.metrics import (
    COST_KEYS,
    Metrics,
    compute_metrics,
    compute_metrics_batch,
    drawdown_series,
    equity_curve,
    periods_per_year_for,
    periods_per_year_for_interval,
)

BUNDLED = Path(__file__).resolve().parents[1] / "tradezoo" / "data" / "bundled"
REL = 1e-9

# --------------------------------------------------------------------------- oracles


@pytest.fixture(scope="module")
def ep() -> ModuleType:
    return pytest.importorskip("empyrical")


@pytest.fixture(scope="module")
def qs() -> ModuleType:
    return pytest.importorskip("quantstats")


# (periods per year, pandas frequency, bars, per-period mean, per-period std)
ORACLE_CASES = {
    "equities-1d": (252, "B", 1500, 4e-4, 0.012),
    "crypto-1h": (8760, "h", 6000, 3e-5, 0.006),
}


def seeded_returns(case: str, seed: int = 7) -> pd.Series:
    """Seeded returns on a UTC DatetimeIndex; the first bar loses, so the drawdown from the
    starting equity matters (both libraries anchor the running peak at the start too)."""
    _, freq, n, drift, vol = ORACLE_CASES[case]
    rng = np.random.default_rng(seed)
    values = rng.normal(drift, vol, n)
    values[0] = -abs(values[0]) - 0.01
    index = pd.date_range("2021-01-04", periods=n, freq=freq, tz="UTC")
    return pd.Series(values, index=index, name="returns")


def assert_close(ours: float, reference: float, what: str) -> None:
    assert math.isfinite(ours), what
    assert ours == pytest.approx(float(reference), rel=REL, abs=0.0), what


@pytest.mark.parametrize("risk_free", [0.0, 0.04])
@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_matches_empyrical(ep: ModuleType, case: str, risk_free: float) -> None:
    returns = seeded_returns(case)
    ppy = ORACLE_CASES[case][0]
    metrics = compute_metrics(returns, periods_per_year=ppy, risk_free=risk_free)
    # empyrical's risk_free / required_return are per period; ours is annual, converted
    # geometrically: rf_p = (1 + rf) ** (1 / ppy) - 1. `annualization=ppy` overrides its
    # 'daily' = 252 default. Its Sortino averages min(r - rf_p, 0)^2 over all periods (the
    # docs/design.md definition), its CAGR counts years as n / ppy, its max drawdown anchors the
    # running peak at a starting value of 100 (the starting equity counts as a peak), and
    # its Calmar is annual_return / |max_drawdown|: all four coincide with ours exactly.
    rf_per_period = (1.0 + risk_free) ** (1.0 / ppy) - 1.0
    expected = {
        "sharpe": ep.sharpe_ratio(returns, risk_free=rf_per_period, annualization=ppy),
        "sortino": ep.sortino_ratio(returns, required_return=rf_per_period, annualization=ppy),
        "max_drawdown": ep.max_drawdown(returns),
        "cagr": ep.cagr(returns, annualization=ppy),
        "calmar": ep.calmar_ratio(returns, annualization=ppy),
        "annual_volatility": ep.annual_volatility(returns, annualization=ppy),
        "total_return": ep.cum_returns_final(returns),
    }
    for name, value in expected.items():
        assert_close(getattr(metrics, name), value, f"{case} rf={risk_free} {name}")
    # The risk-free rate moves Sharpe and Sortino, and only them.
    if risk_free:
        plain = compute_metrics(returns, periods_per_year=ppy)
        assert metrics.sharpe < plain.sharpe
        assert metrics.sortino < plain.sortino
        assert metrics.cagr == plain.cagr


@pytest.mark.parametrize("risk_free", [0.0, 0.04])
@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_matches_quantstats(qs: ModuleType, case: str, risk_free: float) -> None:
    returns = seeded_returns(case)
    ppy = ORACLE_CASES[case][0]
    metrics = compute_metrics(returns, periods_per_year=ppy, risk_free=risk_free)
    # quantstats takes `rf` annual and de-annualises it as (1 + rf) ** (1 / periods) - 1,
    # our convention, so the same annual rate goes in. `periods=ppy` everywhere (its default
    # is 252). Its sortino divides the sum of squared negative excess returns by the count of
    # ALL returns (all-period downside deviation); its volatility is pandas' std (ddof=1);
    # its max_drawdown adds a phantom baseline of 1.0 before the first return (the starting
    # equity counts as a peak). Its cagr (as installed, 0.0.86; older releases counted
    # calendar days) counts years as count / periods, our n / ppy, and ignores rf, as ours
    # does; calmar is that cagr over |max_drawdown|.
    expected = {
        "sharpe": qs.stats.sharpe(returns, rf=risk_free, periods=ppy),
        "sortino": qs.stats.sortino(returns, rf=risk_free, periods=ppy),
        "max_drawdown": qs.stats.max_drawdown(returns),
        "cagr": qs.stats.cagr(returns, rf=risk_free, periods=ppy),
        "calmar": qs.stats.calmar(returns, periods=ppy),
        "annual_volatility": qs.stats.volatility(returns, periods=ppy),
        "total_return": qs.stats.comp(returns),
    }
    for name, value in expected.items():
        assert_close(getattr(metrics, name), value, f"{case} rf={risk_free} {name}")


def test_series_that_only_falls_matches_both_libraries(ep: ModuleType, qs: ModuleType) -> None:
    index = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    returns = pd.Series([-0.1, -0.1, -0.05, -0.02], index=index)
    ours = compute_metrics(returns, periods_per_year=365).max_drawdown
    by_hand = 0.9 * 0.9 * 0.95 * 0.98 - 1.0  # the peak is the starting equity 1.0
    assert ours == pytest.approx(by_hand, rel=1e-12)
    assert ours == pytest.approx(ep.max_drawdown(returns), rel=REL)
    assert ours == pytest.approx(qs.stats.max_drawdown(returns), rel=REL)


def test_array_and_series_inputs_agree() -> None:
    returns = seeded_returns("equities-1d")
    from_series = compute_metrics(returns, periods_per_year=252, risk_free=0.02)
    from_array = compute_metrics(returns.to_numpy(), periods_per_year=252, risk_free=0.02)
    from_list = compute_metrics(returns.tolist(), periods_per_year=252, risk_free=0.02)
    assert from_series.to_dict() == from_array.to_dict() == from_list.to_dict()


# --------------------------------------------------------------------- hand-computed


def test_total_return_and_cagr_by_hand() -> None:
    metrics = compute_metrics([0.1, -0.05, 0.02], periods_per_year=252)
    growth = 1.1 * 0.95 * 1.02  # 1.0659
    assert metrics.total_return == pytest.approx(growth - 1.0, rel=1e-12)
    assert metrics.cagr == pytest.approx(growth ** (252 / 3) - 1.0, rel=1e-12)
    assert metrics.n_periods == 3
    assert metrics.periods_per_year == 252.0


def test_sharpe_and_volatility_by_hand_ddof_1() -> None:
    # mean 0.02, sample std sqrt(((-0.01)^2 + 0.01^2) / (2 - 1)) = 0.01 * sqrt(2), ppy 4.
    metrics = compute_metrics([0.01, 0.03], periods_per_year=4)
    assert metrics.annual_volatility == pytest.approx(0.01 * math.sqrt(2) * 2, rel=1e-12)
    assert metrics.sharpe == pytest.approx(0.02 / (0.01 * math.sqrt(2)) * 2, rel=1e-12)


def test_risk_free_is_annual_and_converted_geometrically() -> None:
    # (1 + 0.21) ** (1 / 2) - 1 = 0.1 per period; excess returns [0.1, 0.0, 0.2] have mean 0.1
    # and sample std 0.1, so Sharpe = 1 * sqrt(2). rf / ppy = 0.105 would give 0.95 * sqrt(2).
    metrics = compute_metrics([0.2, 0.1, 0.3], periods_per_year=2, risk_free=0.21)
    assert metrics.sharpe == pytest.approx(math.sqrt(2), rel=1e-12)
    assert metrics.risk_free == 0.21


def test_sortino_downside_over_all_periods_by_hand() -> None:
    returns = [0.03, -0.01, 0.02, -0.02]
    # mean 0.005; downside sqrt((0 + 0.01^2 + 0 + 0.02^2) / 4) = sqrt(0.000125) over ALL four
    # periods (over the two losing periods only it would be sqrt(0.00025)).
    metrics = compute_metrics(returns, periods_per_year=4)
    assert metrics.sortino == pytest.approx(0.005 / math.sqrt(0.000125) * 2, rel=1e-12)
    assert metrics.sortino == pytest.approx(2 / math.sqrt(5), rel=1e-12)


def test_max_drawdown_counts_the_starting_equity_as_a_peak() -> None:
    falls = compute_metrics([-0.1, -0.1], periods_per_year=252)
    assert falls.max_drawdown == pytest.approx(0.9 * 0.9 - 1.0, rel=1e-12)  # -0.19, not -0.1
    # Equity 1.1, 0.88, 0.924: the peak 1.1 is reached on bar 0; drawdown 0.88 / 1.1 - 1.
    mixed = compute_metrics([0.1, -0.2, 0.05], periods_per_year=252)
    assert mixed.max_drawdown == pytest.approx(-0.2, rel=1e-12)
    assert mixed.calmar == pytest.approx(mixed.cagr / 0.2, rel=1e-12)
    rising = compute_metrics([0.01, 0.02, 0.0], periods_per_year=252)
    assert rising.max_drawdown == 0.0
    assert math.isnan(rising.calmar)  # CAGR / 0 is undefined


def test_equity_curve_and_drawdown_series() -> None:
    np.testing.assert_allclose(equity_curve([0.1, -0.5], initial=2.0), [2.2, 1.1], rtol=1e-15)
    np.testing.assert_allclose(
        drawdown_series([1.0, 0.9, 1.2, 0.6]), [0.0, -0.1, 0.0, -0.5], rtol=1e-15, atol=1e-16
    )
    # An initial equity above the curve is the first peak.
    np.testing.assert_allclose(
        drawdown_series(pd.Series([1.0, 0.9, 1.2, 0.6]), initial=2.0),
        [-0.5, -0.55, -0.4, -0.7],
        rtol=1e-15,
    )
    assert drawdown_series([]).shape == (0,)


def test_hit_rate_counts_bars_with_a_non_zero_return() -> None:
    metrics = compute_metrics([0.01, 0.0, -0.02, 0.03, 0.0], periods_per_year=252)
    assert metrics.hit_rate == pytest.approx(2 / 3, rel=1e-15)
    assert math.isnan(compute_metrics([0.0, 0.0], periods_per_year=252).hit_rate)


def test_trade_figures_by_hand() -> None:
    trades = pd.DataFrame(
        {"pnl": [10.0, -5.0, 0.0, 20.0, -15.0], "return": [0.01, -0.005, 0.0, 0.02, -0.015]}
    )
    metrics = compute_metrics([0.01, -0.01], periods_per_year=252, trades=trades)
    assert metrics.n_trades == 5
    assert metrics.win_rate == pytest.approx(2 / 5, rel=1e-15)  # a zero-pnl trade is no win
    assert metrics.profit_factor == pytest.approx(30.0 / 20.0, rel=1e-15)
    assert metrics.avg_trade_return == pytest.approx(0.002, rel=1e-12)


@pytest.mark.parametrize(
    ("pnl", "win_rate", "profit_factor"),
    [
        ([1.0, 2.0], 1.0, math.inf),  # winners and no loser
        ([0.0, 0.0], 0.0, math.nan),  # no profit, no loss
        ([-1.0], 0.0, 0.0),
        ([], math.nan, math.nan),  # no trades
    ],
)
def test_trade_edge_cases(pnl: list[float], win_rate: float, profit_factor: float) -> None:
    trades = pd.DataFrame({"pnl": pnl}, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics([0.01, -0.01], periods_per_year=252, trades=trades)
    assert metrics.n_trades == len(pnl)
    np.testing.assert_equal(metrics.win_rate, win_rate)
    np.testing.assert_equal(metrics.profit_factor, profit_factor)
    assert math.isnan(metrics.avg_trade_return)  # no 'return' column


def test_without_trades_the_trade_figures_are_nan() -> None:
    metrics = compute_metrics([0.01, -0.01], periods_per_year=252)
    assert metrics.n_trades == 0
    assert math.isnan(metrics.win_rate)
    assert math.isnan(metrics.profit_factor)


def test_turnover_exposure_and_leverage_by_hand() -> None:
    metrics = compute_metrics(
        [0.0, 0.01, -0.02, 0.0],
        periods_per_year=252,
        turnover=[0.0, 1.0, 0.0, 0.5],
        positions=[0.0, 1.0, -0.5, 0.0],
    )
    assert metrics.turnover == pytest.approx((1.5 / 4) * 252, rel=1e-15)  # 94.5 per year
    assert metrics.exposure == 0.5  # two of four bars hold a position
    assert metrics.avg_leverage == pytest.approx((1.0 + 0.5) / 4, rel=1e-15)
    bare = compute_metrics([0.0, 0.01], periods_per_year=252)
    assert math.isnan(bare.turnover)
    assert math.isnan(bare.exposure)
    assert math.isnan(bare.avg_leverage)


def test_cost_fields_pass_through_and_sum() -> None:
    costs = {
        "fees_paid": 0.004,
        "spread_paid": 0.001,
        "slippage_paid": 0.002,
        "funding_paid": -0.0005,  # received
        "borrow_paid": 0.0,
    }
    metrics = compute_metrics([0.01, -0.01], periods_per_year=252, costs=costs)
    for key, value in costs.items():
        assert getattr(metrics, key) == value
    assert metrics.total_costs == pytest.approx(0.0065, rel=1e-12)
    bare = compute_metrics([0.01], periods_per_year=252)
    assert all(math.isnan(getattr(bare, key)) for key in (*COST_KEYS, "total_costs"))


def test_benchmark_figures_use_the_same_definitions() -> None:
    returns = seeded_returns("crypto-1h")
    benchmark = seeded_returns("crypto-1h", seed=11)
    metrics = compute_metrics(
        returns, periods_per_year=8760, risk_free=0.03, benchmark_returns=benchmark
    )
    alone = compute_metrics(benchmark, periods_per_year=8760, risk_free=0.03)
    assert metrics.benchmark_total_return == alone.total_return
    assert metrics.benchmark_cagr == alone.cagr
    assert metrics.benchmark_sharpe == alone.sharpe
    assert metrics.benchmark_max_drawdown == alone.max_drawdown
    assert metrics.sharpe != alone.sharpe
    assert math.isnan(alone.benchmark_sharpe)


def test_to_dict_is_strict_json_and_keeps_raw_floats_on_request() -> None:
    metrics = compute_metrics(
        np.array([0.01, 0.02]), periods_per_year=np.float64(252.0),
        trades=pd.DataFrame({"pnl": [1.0]}),
    )
    safe = metrics.to_dict()
    assert list(safe) == [name for name in Metrics.__dataclass_fields__]
    assert safe["profit_factor"] is None  # inf
    assert safe["calmar"] is None  # NaN: no drawdown
    assert type(safe["n_trades"]) is int
    assert all(value is None or type(value) in (int, float) for value in safe.values())
    json.dumps(safe, allow_nan=False)
    raw = metrics.to_dict(json_safe=False)
    assert raw["profit_factor"] == math.inf
    assert math.isnan(raw["calmar"])
    with pytest.raises(AttributeError):
        metrics.sharpe = 1.0  # type: ignore[misc]  # frozen


# ------------------------------------------------------------------------ edge cases


def test_zero_volatility_gives_nan_ratios_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = compute_metrics([0.1] * 50, periods_per_year=252, risk_free=0.01)
        zeros = compute_metrics(np.zeros(10), periods_per_year=252)
    # np.std of fifty 0.1s is 2.8e-17 (the float mean differs from 0.1 in the last bit), which
    # would give a Sharpe of ~3.6e16; the dispersion is tested exactly instead.
    assert np.std(np.full(50, 0.1), ddof=1) > 0.0
    assert flat.annual_volatility == 0.0
    assert math.isnan(flat.sharpe)
    assert math.isnan(flat.sortino)  # never below the risk-free rate: no downside
    assert zeros.total_return == 0.0
    assert zeros.max_drawdown == 0.0
    assert math.isnan(zeros.sharpe)


def test_single_period_has_no_dispersion_figures() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics([0.01], periods_per_year=252)
    assert metrics.total_return == pytest.approx(0.01, rel=1e-15)
    assert metrics.cagr == pytest.approx(1.01**252 - 1.0, rel=1e-12)
    for name in ("annual_volatility", "sharpe", "sortino"):
        assert math.isnan(getattr(metrics, name)), name


def test_wiped_out_account() -> None:
    # A leveraged account marked below zero: equity 1.5, -0.75, -0.75.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics([0.5, -1.5, 0.0], periods_per_year=252)
    assert metrics.total_return == pytest.approx(-1.75, rel=1e-15)
    assert metrics.cagr == -1.0
    assert metrics.max_drawdown == pytest.approx(-0.75 / 1.5 - 1.0, rel=1e-15)
    assert metrics.calmar == pytest.approx(-1.0 / 1.5, rel=1e-15)


def test_cagr_overflow_is_inf_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics([1.0, 1.0], periods_per_year=35040)
    assert metrics.cagr == math.inf


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ([], "at least one period"),
        ([0.01, float("nan"), 0.02], r"returns must be finite.*position 1"),
        ([0.01, float("inf")], r"returns must be finite.*position 1"),
        ([[0.01, 0.02], [0.0, 0.1]], "returns must be 1-D"),
        (pd.DataFrame({"a": [0.01]}), "returns must be 1-D"),
        (["a", "b"], "returns must be numeric"),
    ],
)
def test_bad_returns(returns: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(returns, periods_per_year=252)


@pytest.mark.parametrize("ppy", [0, -252, float("nan"), float("inf")])
def test_bad_periods_per_year_value(ppy: float) -> None:
    with pytest.raises(ValueError, match="periods_per_year must be a finite number > 0"):
        compute_metrics([0.01], periods_per_year=ppy)


@pytest.mark.parametrize("ppy", [True, "252", None])
def test_bad_periods_per_year_type(ppy: object) -> None:
    with pytest.raises(TypeError, match="periods_per_year must be a finite number > 0"):
        compute_metrics([0.01], periods_per_year=ppy)  # type: ignore[arg-type]


@pytest.mark.parametrize("risk_free", [-1.0, float("nan"), float("inf")])
def test_bad_risk_free_value(risk_free: float) -> None:
    with pytest.raises(ValueError, match="risk_free must be a finite annual rate > -1"):
        compute_metrics([0.01], periods_per_year=252, risk_free=risk_free)


def test_bad_risk_free_type() -> None:
    with pytest.raises(TypeError, match="risk_free must be an annual rate"):
        compute_metrics([0.01], periods_per_year=252, risk_free="4%")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["positions", "turnover", "benchmark_returns"])
def test_bar_series_must_match_returns(name: str) -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    returns = pd.Series([0.01, 0.0, -0.01], index=index)
    with pytest.raises(ValueError, match=rf"{name} must have one value per return \(3\), got 2"):
        compute_metrics(returns, periods_per_year=365, **{name: [0.0, 0.0]})
    shifted = pd.Series([0.0, 0.0, 0.0], index=index + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match=f"{name} must have the same index as returns"):
        compute_metrics(returns, periods_per_year=365, **{name: shifted})
    with pytest.raises(ValueError, match=rf"{name} must be finite.*position 2"):
        compute_metrics(returns, periods_per_year=365, **{name: [0.0, 0.0, float("nan")]})


def test_negative_turnover_is_rejected() -> None:
    with pytest.raises(ValueError, match="turnover must be >= 0"):
        compute_metrics([0.01, 0.0], periods_per_year=252, turnover=[0.5, -0.1])


def test_bad_trades() -> None:
    with pytest.raises(TypeError, match="trades must be a DataFrame"):
        compute_metrics([0.01], periods_per_year=252, trades=[1.0, -1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trades must have a 'pnl' column"):
        compute_metrics([0.01], periods_per_year=252, trades=pd.DataFrame({"profit": [1.0]}))
    with pytest.raises(ValueError, match=r"trades\['pnl'\] must be finite"):
        compute_metrics(
            [0.01], periods_per_year=252, trades=pd.DataFrame({"pnl": [1.0, float("nan")]})
        )


def test_bad_costs() -> None:
    good = dict.fromkeys(COST_KEYS, 0.0)
    with pytest.raises(TypeError, match="costs must be a mapping"):
        compute_metrics([0.01], periods_per_year=252, costs=[0.0] * 5)  # type: ignore[arg-type]
    missing = {key: 0.0 for key in COST_KEYS if key != "borrow_paid"}
    with pytest.raises(ValueError, match=r"missing \['borrow_paid'\], unknown \[\]"):
        compute_metrics([0.01], periods_per_year=252, costs=missing)
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['fee'\]"):
        compute_metrics([0.01], periods_per_year=252, costs={**good, "fee": 0.0})
    with pytest.raises(ValueError, match=r"costs\['fees_paid'\] must be a finite number"):
        compute_metrics([0.01], periods_per_year=252, costs={**good, "fees_paid": math.nan})


def test_bad_helper_input() -> None:
    with pytest.raises(ValueError, match=r"equity\[0\] must be > 0"):
        drawdown_series([0.0, 1.0])
    with pytest.raises(ValueError, match="initial must be a finite number > 0"):
        drawdown_series([1.0], initial=-1.0)
    with pytest.raises(ValueError, match="returns must be finite"):
        equity_curve([0.1, math.nan])
    with pytest.raises(ValueError, match="initial must be a finite number > 0"):
        equity_curve([0.1], initial=0.0)


# ------------------------------------------------------------------- batched entry point


def assert_same_bits(got: Metrics, expected: Metrics, label: object = "") -> None:
    """Every field equal to the bit (NaN included) and of the same Python type."""
    for item in Metrics.__dataclass_fields__:
        a, b = getattr(got, item), getattr(expected, item)
        assert type(a) is type(b), (label, item, type(a), type(b))
        assert np.float64(a).tobytes() == np.float64(b).tobytes(), (label, item, a, b)


def batch_cases(n: int, seed: int) -> np.ndarray:
    """Rows that reach every branch: random, constant (zero volatility), all zero (no hit
    rate, NaN ratios), never below the risk-free rate (no downside), a wiped-out account
    (equity below zero: CAGR -1), a first bar that falls (drawdown from the start) and
    +100 % bars whose CAGR overflows to inf on 15-minute bars."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(2e-4, 0.01, n), np.full(n, 0.003), np.zeros(n),
            np.abs(rng.normal(0.01, 0.001, n)) + 0.01, rng.normal(0.0, 0.02, n),
            rng.normal(0.0, 0.02, n), np.full(n, 1.0)]
    rows[4][0] = -1.5  # equity -0.5 after the first bar
    rows[5][0] = -0.2
    return np.stack(rows)


@pytest.mark.parametrize("n", [1, 2, 3, 50, 700])
def test_batch_equals_compute_metrics_row_by_row_to_the_bit(n: int) -> None:
    returns = batch_cases(n, seed=n)
    m = len(returns)
    rng = np.random.default_rng(100 + n)
    ppy = [252.0, 8760.0, 35040.0, 365.0, 1638.0, 52.0, 35040.0]
    trades: list[dict[str, np.ndarray] | pd.DataFrame | None] = [
        None,
        {"pnl": np.zeros(0), "return": np.zeros(0)},  # no trades
        pd.DataFrame({"pnl": [1.0, 2.0]}),  # winners only: profit factor inf
        {"pnl": np.zeros(3), "return": np.zeros(3)},  # every pnl 0: profit factor NaN
        {"pnl": rng.normal(0, 1, 40), "return": rng.normal(0, 0.01, 40)},
        {"pnl": np.array([-1.0]), "return": np.array([-0.01])},
        None,
    ]
    costs = [None if i % 3 == 0 else dict(zip(COST_KEYS, rng.normal(0, 0.01, 5).tolist(),
                                               strict=True)) for i in range(m)]
    positions = rng.choice([-1.0, 0.0, 0.5, 2.0], (m, n))
    positions[2] = 0.0
    turnover = np.abs(rng.normal(0, 0.3, (m, n)))
    benchmark = rng.normal(0, 0.01, (m, n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as compute_metrics: no numpy warnings
        batch = compute_metrics_batch(
            returns, periods_per_year=ppy, risk_free=0.03, trades=trades, positions=positions,
            turnover=turnover, costs=costs, benchmark_returns=benchmark)
        plain = compute_metrics_batch(returns, periods_per_year=8760)
        for i in range(m):
            assert_same_bits(batch[i], compute_metrics(
                returns[i], periods_per_year=ppy[i], risk_free=0.03, trades=trades[i],
                positions=positions[i], turnover=turnover[i], costs=costs[i],
                benchmark_returns=benchmark[i]), (n, i))
            assert_same_bits(plain[i], compute_metrics(returns[i], periods_per_year=8760),
                             (n, i, "plain"))
    # The rows reach the branches they were built for.
    assert batch[1].annual_volatility == 0.0 or n == 1
    assert math.isnan(batch[2].sharpe) and math.isnan(batch[2].hit_rate)
    assert batch[4].cagr == -1.0
    assert batch[6].cagr == math.inf
    assert batch[0].n_trades == batch[1].n_trades == 0
    assert batch[2].profit_factor == math.inf and math.isnan(batch[3].profit_factor)


def test_batch_takes_any_float_layout_and_one_row() -> None:
    returns = batch_cases(64, seed=3)
    fortran = np.asfortranarray(returns)
    for got, row in zip(compute_metrics_batch(fortran, periods_per_year=252), returns,
                        strict=True):
        assert_same_bits(got, compute_metrics(row, periods_per_year=252))
    (one,) = compute_metrics_batch(returns[:1].tolist(), periods_per_year=[252])
    assert_same_bits(one, compute_metrics(returns[0], periods_per_year=252))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"returns": [0.01, 0.02]}, ValueError, r"returns must be 2-D \[M series, n periods\]"),
        ({"returns": np.zeros((2, 0))}, ValueError, "with M, n >= 1"),
        ({"returns": [["a"]]}, ValueError, "returns must be numeric"),
        ({"returns": [[0.0, 0.1], [0.2, math.nan]]}, ValueError,
         r"returns\[1\] must be finite.*position 1"),
        ({"periods_per_year": [252]}, ValueError,
         r"periods_per_year must have one entry per series \(2\), got 1"),
        ({"periods_per_year": [252, -1]}, ValueError,
         r"periods_per_year\[1\] must be a finite number > 0"),
        ({"periods_per_year": 0}, ValueError, "periods_per_year must be a finite number > 0"),
        ({"risk_free": -2.0}, ValueError, "risk_free must be a finite annual rate > -1"),
        ({"positions": np.zeros((2, 2))}, ValueError,
         r"positions must have the shape of returns \(2, 3\), got \(2, 2\)"),
        ({"turnover": [[0.1, 0.0, 0.0], [0.0, -0.1, 0.0]]}, ValueError, "turnover must be >= 0"),
        ({"benchmark_returns": [[0.0] * 3, [0.0, math.inf, 0.0]]}, ValueError,
         r"benchmark_returns\[1\] must be finite"),
        ({"trades": {"pnl": [1.0]}}, TypeError, "trades must be a sequence with one entry"),
        ({"trades": [None]}, ValueError, r"trades must have one entry per series \(2\)"),
        ({"trades": [None, {"profit": [1.0]}]}, ValueError,
         "series 1: trades must have a 'pnl' column"),
        ({"costs": [None, {"fees_paid": 0.0}]}, ValueError, "series 1: costs must have"),
    ],
)
def test_batch_bad_input(kwargs: dict[str, object], error: type, message: str) -> None:
    arguments: dict[str, object] = {
        "returns": [[0.01, 0.0, -0.01], [0.0, 0.02, 0.0]], "periods_per_year": 252, **kwargs}
    with pytest.raises(error, match=message):
        compute_metrics_batch(**arguments)  # type: ignore[arg-type]


# ------------------------------------------------------------------ periods per year


def utc_range(start: str, periods: int, freq: str) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq=freq, tz="UTC")


def session_hours(days: int) -> pd.DatetimeIndex:
    """Hourly bars of the NYSE regular session (14:30-20:30 UTC in winter), weekdays only."""
    stamps = [
        day + pd.Timedelta(hours=14, minutes=30) + pd.Timedelta(hours=h)
        for day in pd.bdate_range("2024-01-08", periods=days, tz="UTC")
        for h in range(7)
    ]
    return pd.DatetimeIndex(stamps)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (utc_range("2024-01-01", 24 * 30, "h"), 8760.0),  # 24/7 hourly
        (utc_range("2024-01-01", 4 * 24 * 30, "15min"), 35040.0),
        (utc_range("2024-01-01", 200, "D"), 365.0),  # crypto daily
        (pd.bdate_range("2024-01-01", periods=200, tz="UTC"), 252.0),  # weekdays only
        (session_hours(15), 252 * 6.5),  # regular-session hours
        (utc_range("2024-01-01", 60, "W-MON"), 52.0),
        (utc_range("2020-01-01", 48, "MS"), 12.0),
        (utc_range("2010-01-01", 20, "QS"), 4.0),
        (utc_range("2024-01-01", 5, "h"), 8760.0),  # short, continuous: 24/7 by default
        # Daily bars of an Asian exchange open at 15:00 UTC Sunday..Thursday: 5 weekdays.
        (pd.bdate_range("2024-01-08", periods=60, tz="Asia/Tokyo").tz_convert("UTC"), 252.0),
    ],
)
def test_periods_per_year_auto(index: pd.DatetimeIndex, expected: float) -> None:
    assert periods_per_year_for(index) == expected


def test_periods_per_year_short_index_with_a_session_break_is_exchange() -> None:
    assert periods_per_year_for(session_hours(2)) == 252 * 6.5


def test_periods_per_year_explicit_calendar_and_attrs() -> None:
    hourly = utc_range("2024-01-01", 24 * 30, "h")
    weekdays = pd.bdate_range("2024-01-01", periods=200, tz="UTC")
    assert periods_per_year_for(hourly, calendar="exchange") == 1638.0
    assert periods_per_year_for(weekdays, calendar="24/7") == 365.0
    frame = pd.DataFrame({"close": np.ones(len(weekdays))}, index=weekdays)
    assert periods_per_year_for(frame) == 252.0
    frame.attrs["source"] = "bybit-linear"
    assert periods_per_year_for(frame) == 365.0
    frame.attrs["calendar"] = "exchange"
    assert periods_per_year_for(frame["close"]) == 252.0


def test_periods_per_year_of_bundled_data() -> None:
    from tradezoo.data.bars import read_bars

    btc = read_bars(BUNDLED / "bybit_linear_BTCUSDT_1h.csv.gz")
    assert periods_per_year_for(btc.index) == 8760.0
    spy_files = sorted(BUNDLED.glob("*SPY*1d*.csv.gz"))
    assert spy_files, "bundled SPY daily bars are missing"
    spy = read_bars(spy_files[0])
    assert periods_per_year_for(spy.index) == 252.0


def test_periods_per_year_bad_input() -> None:
    with pytest.raises(TypeError, match="index must be a DatetimeIndex"):
        periods_per_year_for(pd.RangeIndex(10))
    with pytest.raises(ValueError, match="at least 2 timestamps"):
        periods_per_year_for(utc_range("2024-01-01", 1, "h"))
    shuffled = utc_range("2024-01-01", 5, "h")[[0, 1, 3, 2, 4]]
    with pytest.raises(ValueError, match="strictly increasing; position 3"):
        periods_per_year_for(shuffled)
    with pytest.raises(ValueError, match="calendar must be one of"):
        periods_per_year_for(utc_range("2024-01-01", 5, "h"), calendar="nyse")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("interval", "calendar", "expected"),
    [
        ("1h", "24/7", 8760.0),
        ("60", "24/7", 8760.0),
        ("15m", "24/7", 35040.0),
        ("1d", "24/7", 365.0),
        ("D", "exchange", 252.0),
        ("1h", "exchange", 1638.0),
        ("30m", "exchange", 252 * 13.0),
        ("1w", "exchange", 52.0),
        ("1w", "24/7", 52.0),
        ("1M", "24/7", 12.0),
        ("1mo", "exchange", 12.0),
    ],
)
def test_periods_per_year_for_interval(interval: str, calendar: str, expected: float) -> None:
    assert periods_per_year_for_interval(interval, calendar) == expected  # type: ignore[arg-type]


def test_periods_per_year_for_interval_bad_input() -> None:
    with pytest.raises(ValueError, match="calendar must be one of"):
        periods_per_year_for_interval("1h", "auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot parse interval"):
        periods_per_year_for_interval("hourly!", "24/7")
