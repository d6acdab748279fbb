"""Synthetic calibration markets: deterministic, valid bars; oracles with (and without) an edge."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pandas as pd
import pytest

from tradezoo.agents import calibration
from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.simulation import simulate
from tradezoo.data import DataError, list_datasets, load_dataset
from tradezoo.data import synthetic as syn
from tradezoo.data.datasets import load_bars

NAMES = list(syn.MARKETS)
IRREGULAR_MARKETS = (syn.IRREGULAR, syn.CYCLE)
HOUR_S = 3600.0


def _fresh(name: str, seed: int | None = None) -> syn.SyntheticSeries:
    """Generate ``name`` anew (bypassing the module's cache), optionally with another seed."""
    spec = syn.MARKETS[name]
    if seed is not None:
        spec = dataclasses.replace(spec, seed=seed)
    return syn._GENERATORS[name](spec, np.random.default_rng(spec.seed))


def _per_bar_sharpe_z(returns: pd.Series) -> float:
    """``mean / std * sqrt(n)``: the t-statistic of a zero-mean return series."""
    values = returns.to_numpy()
    return float(values.mean() / values.std(ddof=1) * np.sqrt(len(values)))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_other_seed_other_bars(name: str) -> None:
    first, second = _fresh(name), _fresh(name)
    assert first.bars.to_numpy().tobytes() == second.bars.to_numpy().tobytes()
    assert first.bars.index.equals(second.bars.index)
    assert first.hidden.to_numpy().tobytes() == second.hidden.to_numpy().tobytes()
    loaded = load_dataset(name)
    assert loaded[list(first.bars.columns)].to_numpy().tobytes() == first.bars.to_numpy().tobytes()
    other = _fresh(name, seed=syn.MARKETS[name].seed + 1)
    assert not np.array_equal(other.bars["close"].to_numpy()[:100],
                              first.bars["close"].to_numpy()[:100])


@pytest.mark.parametrize("name", NAMES)
def test_loads_through_the_public_path_and_validates_clean(name: str) -> None:
    spec = syn.MARKETS[name]
    assert name in {info.name for info in list_datasets()}
    bars, report = load_dataset(name, return_report=True)
    same, _ = load_bars(name)
    pd.testing.assert_frame_equal(bars, same)
    expected_rules = {"gaps"} if name in IRREGULAR_MARKETS else set()
    assert {finding.rule for finding in report.findings} == expected_rules, str(report)
    assert all(finding.severity == "warning" for finding in report.findings)
    assert len(bars) == report.rows_in == report.rows_out == spec.n_bars
    assert bars.attrs["source"] == "synthetic" and bars.attrs["interval"] == "1h"
    assert bars.attrs["symbol"] == spec.symbol and bars.attrs["seed"] == spec.seed
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert str(bars.index.tz) == "UTC" and bars.index.is_monotonic_increasing
    assert (bars.index == bars.index.floor("h")).all()  # on the 1h grid
    o, h, lo, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    assert (h > np.maximum(o, c)).mean() > 0.99  # real wicks, not bodies clipped to the range
    assert (v > 0).all()
    # Every bar has a range; 1h ranges of a 0.5 %/h diffusion (median about 0.8 %).
    assert 0.004 < float(np.median((h - lo) / c)) < 0.015
    # repair="none" turns every finding into an error: only the irregular market's gaps.
    expect = pytest.raises(DataError, match="gaps") if expected_rules else contextlib.nullcontext()
    with expect:
        load_dataset(name, repair="none")


def test_synthetic_source_costs_like_a_bybit_perpetual() -> None:
    assert CostModel.for_source("synthetic", what="x") == CostModel.bybit_linear()


def test_env_builds_on_a_synthetic_market() -> None:
    from tradezoo.envs.trading_env import TradingEnv

    env = TradingEnv("synthetic-regime", window=16, split="test")
    observation, _ = env.reset(seed=0)
    assert np.isfinite(observation).all()
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)
    assert env.market.datasets[0].source == "synthetic"
    assert env.market.datasets[0].periods_per_year == 8760.0


def test_hidden_state_drives_the_bars() -> None:
    regime = syn.generate("synthetic-regime")
    log_returns = np.log(regime.bars["close"]).diff().iloc[1:]
    s = regime.hidden["regime"].iloc[1:]
    assert set(np.unique(s)) == {-1.0, 1.0}
    gap = log_returns[s > 0].mean() - log_returns[s < 0].mean()
    assert gap == pytest.approx(2 * syn.MARKETS["synthetic-regime"].param("mu"), rel=0.2)

    meanrevert = syn.generate("synthetic-meanrevert")
    rebuilt = meanrevert.hidden["level"] + meanrevert.hidden["deviation"] + np.log(100.0)
    np.testing.assert_allclose(np.log(meanrevert.bars["close"]), rebuilt, rtol=0, atol=1e-9)

    for name in IRREGULAR_MARKETS:
        irregular = syn.generate(name)
        hours = irregular.bars.index.to_series().diff().dt.total_seconds().to_numpy()[1:] / HOUR_S
        np.testing.assert_array_equal(irregular.hidden["hours_to_next"].to_numpy()[:-1], hours)


def test_irregular_signal_decays_with_real_time() -> None:
    """Autocorrelation of the hidden signal between consecutive bars is exp(-hours / tau)."""
    hidden = syn.hidden_state(syn.IRREGULAR)
    tau = syn.MARKETS[syn.IRREGULAR].param("tau_hours")
    signal = hidden["signal"].to_numpy()
    hours = hidden["hours_to_next"].to_numpy()[:-1]
    pairs = np.stack([signal[:-1], signal[1:]])
    adjacent = np.corrcoef(pairs[:, hours == 1])[0, 1]
    after_outage = np.corrcoef(pairs[:, hours >= 4 * tau])[0, 1]
    assert adjacent == pytest.approx(np.exp(-1 / tau), abs=0.02)
    assert abs(after_outage) < 0.1
    assert (hours == 1).mean() > 0.5  # the median step is the interval: 1h bars, missing hours


def test_cycle_signal_decays_and_turns_with_real_time() -> None:
    """Autocorrelation of the drift between consecutive bars k hours apart is
    exp(-k / tau) cos(2 pi k / period): positive a few hours on, negative half a cycle on."""
    spec = syn.MARKETS[syn.CYCLE]
    tau, period = spec.param("tau_hours"), spec.param("period_hours")
    hidden = syn.hidden_state(syn.CYCLE)
    signal = hidden["signal"].to_numpy()
    hours = hidden["hours_to_next"].to_numpy()[:-1]
    pairs = np.stack([signal[:-1], signal[1:]])
    for k in (1, 2, 4, 8):
        observed = np.corrcoef(pairs[:, hours == k])[0, 1]
        expected = np.exp(-k / tau) * np.cos(2 * np.pi * k / period)
        assert observed == pytest.approx(expected, abs=0.05), k
    assert (hours == 1).mean() == pytest.approx(1 / spec.param("mean_step_hours"), abs=0.02)
    assert hours.mean() == pytest.approx(spec.param("mean_step_hours"), rel=0.05)


def test_cycle_oracle_signal_is_the_drift_expected_over_the_next_bar() -> None:
    """The closed form (I - (1 - p) M)^{-1} against the sum over the law of the next step."""
    spec = syn.MARKETS[syn.CYCLE]
    p = 1 / spec.param("mean_step_hours")
    hidden = syn.hidden_state(syn.CYCLE).iloc[:50]
    state = hidden[["signal", "quadrature"]].to_numpy().T  # [2, 50]
    expected = np.zeros(state.shape[1])
    for k in range(1, 400):  # P(K = k) = (1 - p)^(k - 1) p; the tail beyond 400 is < 1e-70
        drift = sum(syn._cycle_transition(spec, j) for j in range(k)) @ state
        expected += (1 - p) ** (k - 1) * p * drift[0]
    np.testing.assert_allclose(hidden["oracle_signal"].to_numpy(), expected, rtol=1e-9, atol=1e-9)
    a, sigma = spec.param("a"), spec.param("sigma")
    np.testing.assert_allclose(hidden["expected_return"],
                               a * expected - sigma**2 / (2 * p), rtol=1e-9, atol=1e-12)


def test_irregular_gaps_survive_data_preparation() -> None:
    from tradezoo.agents.data import prepare_data
    from tradezoo.envs.trading_env import TradingEnv

    bars = load_dataset(syn.IRREGULAR)
    true_gaps = bars.index.to_series().diff().dt.total_seconds()
    data = prepare_data(syn.IRREGULAR, window=16)
    assert len(data.bars) == len(bars)  # no bar filled in
    dt = data.features["dt"]
    np.testing.assert_array_equal(dt.to_numpy(), true_gaps.loc[dt.index].to_numpy())
    assert (dt > HOUR_S).mean() > 0.1 and dt.max() >= 24 * HOUR_S
    env = TradingEnv(syn.IRREGULAR, window=16)
    assert env.market.datasets[0].bars.index.equals(bars.index)


@pytest.mark.parametrize("name", ["synthetic-regime", "synthetic-meanrevert"])
def test_oracle_beats_buy_and_hold_after_costs_on_the_test_part(name: str) -> None:
    start, end = calibration.part_span(name, "test")
    result = calibration.oracle_backtest(name, start, end)
    assert result.cost_totals["fee"] > 0 and result.metrics.n_trades >= 5  # costs are paid
    assert result.metrics.sharpe > result.benchmark_metrics.sharpe + 2.0
    assert result.metrics.total_return > max(result.benchmark_metrics.total_return, 0.0)
    assert calibration.oracle_sharpe(name, "test") == result.metrics.sharpe


def test_noise_has_no_edge_for_the_oracle_or_momentum() -> None:
    name = "synthetic-noise"
    assert (syn.oracle_positions(name) == 0.0).all()
    assert calibration.oracle_sharpe(name, "test") == 0.0
    zero = CostModel.zero()
    for market in (name, "synthetic-regime"):
        bars = load_dataset(market)
        log_close = np.log(bars["close"])
        momentum = np.sign(log_close - log_close.shift(48)).fillna(0.0)
        z = _per_bar_sharpe_z(simulate(bars, momentum, costs=zero).returns)
        if market == name:
            assert abs(z) < 3.0  # no edge: within 3 standard errors of 0
        else:
            assert z > 3.0  # the same rule does find the trends (the check can fail)


@pytest.mark.parametrize("name", IRREGULAR_MARKETS)
def test_filter_with_dt_beats_the_same_filter_without(name: str) -> None:
    with_dt = calibration.backtest_positions(name, syn.filter_positions(name, use_dt=True))
    without = calibration.backtest_positions(name, syn.filter_positions(name, use_dt=False))
    assert with_dt.metrics.sharpe > without.metrics.sharpe + 1.0
    oracle = calibration.oracle_backtest(name)
    assert oracle.metrics.sharpe > with_dt.metrics.sharpe > without.metrics.sharpe > 0.0
    truth = syn.hidden_state(name)["oracle_signal"]
    fit = {dt: np.corrcoef(syn.filtered_signal(name, use_dt=dt), truth)[0, 1]
           for dt in (True, False)}
    assert fit[True] > fit[False]


def test_filter_of_a_market_without_one_is_an_error() -> None:
    with pytest.raises(KeyError, match="synthetic-cycle"):
        syn.filtered_signal("synthetic-regime")


def test_unknown_market_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="synthetic-regime"):
        syn.market("synthetic-nope")
