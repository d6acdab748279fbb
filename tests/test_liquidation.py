"""Bounded leverage and liquidation: the cost model's limits, the engine's liquidation (hand-made
bars, long and short, one bar crossing and one not, gaps, random accounts against an independent
cash ledger, floats against arrays, compiled against Python), and the env, vector env,
``simulate`` and the PPO trainer refusing too much leverage and agreeing on liquidations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import StepFill, execute_step, execution_rates
from tradezoo.backtest.simulation import LIQUIDATION_COLUMNS, simulate
from tradezoo.data.bars import bars_from_frame
from tradezoo.envs import batch_kernel
from tradezoo.envs.trading_env import TradingEnv
from tradezoo.envs.vector_env import TradingVectorEnv

BTC = "bybit-btcusdt-1h"
SPY = "yahoo-spy-1d"

# Taker fee 10 bps, no spread or slippage, no funding; 10x at most, 5 % maintenance margin.
HAND = CostModel(taker_fee_bps=10.0, maker_fee_bps=10.0, funding=False, max_leverage=10.0,
                 maintenance_margin=0.05)


def identity_gap(step: StepFill, equity: float) -> float:
    booked = (step.position_pnl - step.fee - step.spread_cost - step.slippage_cost
              - step.funding_paid - step.borrow_paid)
    return (step.equity - equity) - booked


# ----------------------------------------------------------------------- hand-made bars


@pytest.mark.parametrize(("target", "crossing", "missing"), [
    (10.0, (101.0, 94.0), (101.0, 95.0)),  # long: the low decides
    (-10.0, (105.0, 99.0), (104.5, 99.0)),  # short: the high decides
])
def test_liquidation_price_by_hand(target: float, crossing: tuple, missing: tuple) -> None:
    """Equity 1000 at close 100, target +-10x filled at open 100 (next bar: the extremes
    given). Units 100, fee 100 * 100 * 10 bps = 10, equity at the fill 990. Liquidation price
    ``(u * 100 - 990) / (u * (1 - side * 0.05))``: 9010 / 95 = 94.842 (long) and
    10990 / 105 = 104.667 (short)."""
    rates = execution_rates(HAND)
    side = math.copysign(1.0, target)
    units = side * 100.0
    liq = (units * 100.0 - 990.0) / (units * (1 - side * 0.05))
    assert liq == pytest.approx(94.84210526315789 if side > 0 else 104.66666666666667)

    high, low = missing  # the adverse extreme stops short of the liquidation price
    kept = execute_step(0.0, 1000.0, target, True, 100.0, 100.0, 100.0, 0.0, 0.0, 1e12, rates,
                        None, high, low)
    assert (kept.units, kept.equity, kept.fee) == (units, 990.0, 10.0)
    assert (kept.liquidated_units, kept.liquidation_price, kept.liquidation_fee) == (0, 0, 0)

    high, low = crossing
    step = execute_step(0.0, 1000.0, target, True, 100.0, 100.0, 100.0, 0.0, 0.0, 1e12, rates,
                        None, high, low)
    liq_fee = 100.0 * liq * 10e-4
    assert step.units == 0.0 and math.copysign(1.0, step.units) == 1.0
    assert step.liquidated_units == -units
    assert step.liquidation_price == pytest.approx(liq, rel=1e-14)
    assert step.liquidation_fee == pytest.approx(liq_fee, rel=1e-14)
    assert step.fee == pytest.approx(10.0 + liq_fee, rel=1e-14)
    # Equity at the liquidation price is the maintenance margin; the taker fee leaves it.
    assert step.equity == pytest.approx(0.05 * 100.0 * liq - liq_fee, rel=1e-12)
    assert step.position_pnl == pytest.approx(units * (liq - 100.0), rel=1e-12)
    assert abs(identity_gap(step, 1000.0)) <= 1e-9 * 1000.0
    assert (step.traded_units, step.fill_price) == (units, 100.0)  # the order's own fill


def test_spread_and_slippage_move_the_liquidation_fill() -> None:
    costs = CostModel(taker_fee_bps=10.0, half_spread_bps=5.0, slippage_bps=20.0, funding=False,
                      max_leverage=10.0, maintenance_margin=0.05)
    step = execute_step(0.0, 1000.0, 10.0, True, 100.0, 100.0, 100.0, 0.0, 0.0, 1e12,
                        execution_rates(costs), None, 101.0, 90.0)
    units = 1000.0 / 100.0 * 10.0
    entry_costs = units * 100.0 * (1 + 25e-4) * 10e-4 + units * 100.0 * 25e-4
    liq = (units * 100.0 - (1000.0 - entry_costs)) / (units * 0.95)
    assert step.liquidation_price == pytest.approx(liq * (1 - 25e-4), rel=1e-12)  # a sell
    assert step.liquidation_spread_cost == pytest.approx(units * liq * 5e-4, rel=1e-12)
    assert step.liquidation_slippage_cost == pytest.approx(units * liq * 20e-4, rel=1e-12)
    assert abs(identity_gap(step, 1000.0)) <= 1e-9 * 1000.0


def test_gap_beyond_the_bankruptcy_price_closes_there_and_equity_is_zero() -> None:
    """A long of 100 units with equity 990 at close 100 (bankruptcy price about 90.1 with the
    exit fee); the next bar opens at 85. The order does not fill (the position is at or beyond
    its liquidation price at the open), and the position closes at the bankruptcy price: the
    trader loses the equity, no more."""
    rates = execution_rates(HAND)
    step = execute_step(100.0, 990.0, 10.0, True, 100.0, 85.0, 88.0, 0.0, 0.0, 1e12, rates,
                        None, 86.0, 80.0)
    bankrupt = (100.0 * 100.0 - 990.0) / (100.0 * (1 - 10e-4))
    assert step.traded_units == 0.0  # the order did not fill
    assert step.liquidated_units == -100.0
    assert step.liquidation_price == pytest.approx(bankrupt, rel=1e-14)
    assert step.equity == 0.0
    assert abs(identity_gap(step, 990.0)) <= 1e-9 * 990.0
    # The same account with a gap to 95 (past the liquidation price 94.8 is not reached, the
    # bar's low is): liquidated at the liquidation price, not the open.
    later = execute_step(100.0, 990.0, 10.0, False, 100.0, 95.0, 96.0, 0.0, 0.0, 1e12, rates,
                         None, 97.0, 94.0)
    assert later.liquidation_price == pytest.approx(9010.0 / 95.0, rel=1e-14)
    assert later.equity > 0


def test_close_fill_gap_at_the_open_fills_at_the_open() -> None:
    """fill="close": the order fills at close[t] = 100; bar t+1 opens at 92, beyond the
    liquidation price 94.84 but above the bankruptcy price 90.19: liquidated at the open."""
    rates = execution_rates(HAND, fill="close")
    step = execute_step(0.0, 1000.0, 10.0, True, 100.0, 92.0, 99.0, 0.0, 0.0, 1e12, rates,
                        None, 100.0, 91.0)
    assert step.liquidation_price == 92.0
    assert step.equity == pytest.approx(990.0 - 800.0 - 92.0 * 100.0 * 10e-4, rel=1e-12)
    assert abs(identity_gap(step, 1000.0)) <= 1e-9 * 1000.0


def test_zero_maintenance_margin_never_liquidates() -> None:
    rates = execution_rates(CostModel.zero())
    step = execute_step(0.0, 1000.0, 10.0, True, 100.0, 100.0, 50.0, 0.0, 0.0, 1e12, rates,
                        None, 100.0, 40.0)
    assert step.liquidated_units == 0.0 and step.equity == 1000.0 + 100.0 * -50.0


# -------------------------------------------------------------------- random accounts


MODELS = {
    "fixed": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage_bps=1.0, funding=True,
                       borrow_rate_annual=0.05, max_leverage=50.0, maintenance_margin=0.01),
    "volatility": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volatility",
                            slippage_bps=1.0, slippage_k=0.1, funding=True,
                            max_leverage=20.0, maintenance_margin=0.05),
    "volume": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volume",
                        slippage_bps=1.0, slippage_k=0.05, max_participation=0.2,
                        borrow_rate_annual=0.3, max_leverage=4.0, maintenance_margin=0.25),
}


def leveraged_market(seed: int, n: int = 400) -> dict[str, np.ndarray]:
    """Accounts holding up to 30x, targets up to 30x, bars with ranges up to 20 %."""
    rng = np.random.default_rng(seed)
    close_prev = 100.0 * np.exp(rng.normal(0, 0.2, n))
    open_next = close_prev * np.exp(rng.normal(0, 0.01, n))
    close_next = open_next * np.exp(rng.normal(0, 0.03, n))
    equity = np.exp(rng.normal(np.log(1e4), 1.0, n))
    return {
        "units": rng.uniform(-30, 30, n) * equity / close_prev * (rng.random(n) < 0.7),
        "equity": equity,
        "target_exposure": rng.uniform(-30, 30, n) * (rng.random(n) < 0.9),
        "trade": rng.random(n) < 0.7,
        "close_prev": close_prev,
        "open_next": open_next,
        "close_next": close_next,
        "funding_rate": rng.normal(0, 3e-4, n) * (rng.random(n) < 0.5),
        "range_frac": rng.uniform(0, 0.05, n),
        "bar_notional": np.exp(rng.uniform(np.log(1e2), np.log(1e9), n)),
        "high_next": np.maximum(open_next, close_next) * np.exp(rng.uniform(0, 0.1, n)),
        "low_next": np.minimum(open_next, close_next) * np.exp(-rng.uniform(0, 0.1, n)),
    }


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("model", list(MODELS))
def test_random_liquidations_reconcile_and_match_the_float_path(model: str, fill: str) -> None:
    market = leveraged_market(list(MODELS).index(model) * 2 + (fill == "close"))
    rates = execution_rates(MODELS[model], fill=fill)  # type: ignore[arg-type]
    step = execute_step(**market, rates=rates)
    hit = step.liquidated_units != 0
    assert 20 <= np.count_nonzero(hit) < len(hit)  # both kinds of account
    equity = market["equity"]
    scale = np.maximum(np.abs(equity), np.abs(step.equity))
    assert np.all(np.abs(identity_gap(step, equity)) <= 1e-9 * scale)
    # An independent cash ledger: both fills leave the cash at their prices.
    cash = (equity - market["units"] * market["close_prev"]
            - step.traded_units * step.fill_price - step.liquidated_units * step.liquidation_price
            - step.fee - step.funding_paid - step.borrow_paid)
    assert np.all(np.abs(cash + step.units * market["close_next"] - step.equity) <= 1e-9 * scale)
    assert np.all(step.units[hit] == 0) and np.all(step.equity[hit] >= 0)
    # A liquidation's fill lies between the bar's adverse extreme (or the bankruptcy price
    # past a gap) and the reference price, less spread and slippage.
    for name in ("liquidation_fee", "liquidation_spread_cost", "liquidation_slippage_cost"):
        assert np.all(getattr(step, name)[~hit] == 0) and np.all(getattr(step, name) >= 0)
    for i in range(len(equity)):
        scalars = {name: value[i].item() for name, value in market.items()}
        single = execute_step(**scalars, rates=rates)
        compiled = batch_kernel._execute_step(
            *(scalars[k] for k in ("units", "equity", "target_exposure", "trade", "close_prev",
                                   "open_next", "close_next", "funding_rate", "range_frac",
                                   "bar_notional")),
            rates, None, scalars["high_next"], scalars["low_next"])
        for name, a, b in zip(StepFill._fields, single, compiled, strict=True):
            got = getattr(step, name)[i]
            assert type(a) is float and a == got, (model, fill, i, name, a, got)
            assert np.float64(a).tobytes() == np.float64(b).tobytes(), (i, name, a, b)


# -------------------------------------------------------------------------- cost model


def test_presets_limits_and_validation() -> None:
    assert (CostModel.bybit_linear().max_leverage,
            CostModel.bybit_linear().maintenance_margin) == (100.0, 0.005)
    assert (CostModel.equities().max_leverage, CostModel.equities().maintenance_margin) == (
        4.0, 0.25)
    assert CostModel.zero().maintenance_margin == 0.0
    assert CostModel.zero(max_leverage=1e6).max_leverage == 1e6
    assert CostModel.bybit_linear(max_leverage=20.0).max_leverage == 20.0
    for kwargs, match in [
        ({"max_leverage": 0.0}, r"max_leverage must be a finite number > 0"),
        ({"max_leverage": math.inf}, r"max_leverage must be a finite number"),
        ({"maintenance_margin": 1.0}, r"maintenance_margin must be a fraction.*\[0, 1\)"),
        ({"maintenance_margin": -0.1}, r"maintenance_margin must be a finite number >= 0"),
        ({"max_leverage": 300.0}, r"maintenance_margin \* max_leverage must be at most 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            CostModel.bybit_linear(**kwargs)


def test_to_dict_from_dict_and_old_dicts() -> None:
    for model in (CostModel.bybit_linear(), CostModel.equities(), CostModel.zero()):
        assert CostModel.from_dict(model.to_dict()) == model
    old = {k: v for k, v in CostModel.equities().to_dict().items()
           if k not in ("max_leverage", "maintenance_margin")}
    loaded = CostModel.from_dict(old)  # saved before the fields existed: class defaults
    assert (loaded.max_leverage, loaded.maintenance_margin) == (100.0, 0.005)
    assert loaded.borrow_rate_annual == 0.02
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['leverage'\]; valid fields"):
        CostModel.from_dict({"leverage": 5})
    with pytest.raises(TypeError, match="expected a mapping"):
        CostModel.from_dict([("taker_fee_bps", 1.0)])  # type: ignore[arg-type]


# ------------------------------------------------------------- refusing large exposures


def test_env_vector_env_and_simulate_refuse_leverage_above_the_cost_model() -> None:
    match = r"max_leverage \(dataset 'bybit-btcusdt-1h'\) = 1000000000.0 exceeds the cost " \
            r"model's max_leverage = 100.0"
    with pytest.raises(ValueError, match=match):
        TradingEnv(BTC, window=8, max_leverage=1e9)
    with pytest.raises(ValueError, match=match):
        TradingVectorEnv(2, data=BTC, window=8, max_leverage=1e9)
    with pytest.raises(ValueError, match=r"dataset 'yahoo-spy-1d'\) = 5.0 exceeds .* = 4.0"):
        TradingEnv([BTC, SPY], window=8, max_leverage=5.0,
                   feature_spec={"include_funding": False})
    TradingEnv(BTC, window=8, max_leverage=100.0)  # the limit itself is allowed
    bars = hand_frame([100.0] * 4, [100.0] * 4)
    positions = np.array([1.0, np.nan, -11.0, 0.0])
    with pytest.raises(ValueError, match=r"simulate: positions at 2024-01-03.*row 2.*= -11.0 "
                                         r"exceeds the cost model's max_leverage = 10.0"):
        simulate(bars, positions, costs=HAND, periods_per_year=365.0)


def test_ppo_trainer_refuses_leverage_above_the_cost_model(tmp_path) -> None:
    from tradezoo.agents.data import prepare_data
    from tradezoo.agents.ppo import train_ppo

    data = prepare_data(SPY, window=8)
    with pytest.raises(ValueError, match=r"PPO config max_leverage = 8.0 exceeds the cost "
                                         r"model's max_leverage = 4.0"):
        train_ppo(data, "gru", config={"max_leverage": 8.0}, out_dir=tmp_path / "run",
                  progress=False, verbose=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ------------------------------------------------------------------------- simulate


def hand_frame(close: list[float], low: list[float], high: list[float] | None = None
               ) -> pd.DataFrame:
    n = len(close)
    index = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    close_a = np.array(close)
    frame = pd.DataFrame({"open": close_a, "high": np.array(high) if high else close_a * 1.001,
                          "low": np.array(low), "close": close_a, "volume": 1.0}, index=index)
    return bars_from_frame(frame, symbol="X", interval="1d", source="test")


def test_simulate_records_liquidations_long_and_short() -> None:
    # Long 10x from open[1] = 100; bar 1's low 95 stays above 94.84, bar 2's low 94 crosses.
    bars = hand_frame([100.0, 100.0, 100.0, 100.0, 100.0], [99.0, 95.0, 94.0, 99.0, 99.0])
    result = simulate(bars, np.full(5, 10.0), costs=HAND, initial_equity=1000.0,
                      periods_per_year=365.0)
    liq = result.liquidations
    assert list(liq.columns) == list(LIQUIDATION_COLUMNS) and len(liq) == 1
    first = liq.iloc[0]
    assert first["timestamp"] == bars.index[2] and first["side"] == "long"
    assert first["units"] == pytest.approx(100.0)
    assert first["price"] == pytest.approx(9010.0 / 95.0, rel=1e-12)
    assert first["equity_after"] == pytest.approx(result.equity.iloc[2])
    assert first["fee"] == pytest.approx(first["price"] * 100.0 * 10e-4, rel=1e-12)
    # Flat after it, then re-opened at the next fill (the target 10 still stands).
    assert result.units.iloc[2] == 0 and result.units.iloc[3] > 0
    trades = result.trades
    assert trades["status"].tolist()[0] == "liquidated"
    assert trades["exit_price"].iloc[0] == pytest.approx(first["price"])
    np.testing.assert_allclose(trades["pnl"].sum(), result.equity.iloc[-1] - 1000.0, atol=1e-9)
    assert "LIQUIDATED" in result.summary()

    # Short 10x: bar 1's high 104.5 stays below 104.67, bar 2's high 105 crosses.
    bars = hand_frame([100.0] * 4, [99.0] * 4, [101.0, 104.5, 105.0, 101.0])
    result = simulate(bars, np.array([-10.0, -10.0, 0.0, 0.0]), costs=HAND,
                      initial_equity=1000.0, periods_per_year=365.0)
    assert len(result.liquidations) == 1
    row = result.liquidations.iloc[0]
    assert (row["timestamp"], row["side"]) == (bars.index[2], "short")
    assert row["price"] == pytest.approx(10990.0 / 105.0, rel=1e-12)
    assert len(result.fills) == 1  # the order; the liquidation is not a fill
    assert result.fills["fee"].iloc[0] == pytest.approx(10.0)
    assert result.costs["fee"].sum() == pytest.approx(10.0 + row["fee"])


def test_env_liquidates_terminates_and_equals_simulate() -> None:
    env = TradingEnv(BTC, window=8, max_leverage=60.0, random_start=False,
                     min_equity_fraction=0.0, split="val")
    _, info = env.reset(seed=0)
    infos, actions = [info], []
    for t in range(5000):
        action = 2 if (t // 7) % 2 == 0 else 0
        actions.append(action)
        _, _, terminated, truncated, info = env.step(action)
        infos.append(info)
        assert ("liquidated" in info) == terminated
        if terminated or truncated:
            break
    last = infos[-1]
    assert terminated and last["liquidated"] is True and last["equity"] >= 0
    assert last["units"] == 0.0 and last["position"] == 0.0
    assert last["trade"]["exit_price"] > 0 and last["trade"]["closed_at"] == last["bar"] - 1
    dataset = env.dataset
    start, steps = infos[0]["bar"], len(actions)
    bars = dataset.bars.iloc[dataset.bar_offset + start: dataset.bar_offset + start + steps + 1]
    targets = [info["target"] for info in infos[1:]] + [float("nan")]
    result = simulate(bars, np.array(targets), costs=env.config.costs[0],
                      periods_per_year=dataset.periods_per_year)
    np.testing.assert_array_equal(result.equity.to_numpy(), [i["equity"] for i in infos])
    assert len(result.liquidations) == 1
    assert result.liquidations["price"].iloc[0] == last["trade"]["exit_price"]
    env_trades = [i["trade"]["pnl"] for i in infos[1:] if "trade" in i]
    np.testing.assert_allclose(env_trades, result.trades["pnl"].to_numpy(), rtol=1e-9,
                               atol=1e-12)
    assert last["metrics"]["n_trades"] == len(result.trades)
