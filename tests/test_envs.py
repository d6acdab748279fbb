"""TradingEnv: observations, actions, rewards, accounting, replay through simulate, causality,
bad input."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.error import ResetNeeded

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import execute_step
from tradezoo.backtest.metrics import compute_metrics
from tradezoo.backtest.simulation import simulate
from tradezoo.data import DataError, FeatureSpec, load_dataset
from tradezoo.data.intervals import parse_interval
from tradezoo.data.prepare import resample_bars
from tradezoo.envs.core import STEP_INFO_KEYS, TRADE_KEYS
from tradezoo.envs.trading_env import TradingEnv

BTC = "bybit-btcusdt-1h"
SPY = "yahoo-spy-1d"


def _costs_identity(info: dict) -> float:
    return (info["position_pnl"] - info["fee"] - info["spread_cost"] - info["slippage_cost"]
            - info["funding_paid"] - info["borrow_paid"])


def _run(env: TradingEnv, actions: list, seed: int = 0, **reset_kwargs) -> dict:
    """Step ``actions`` from a seeded reset (stops at the episode end)."""
    obs, info = env.reset(seed=seed, **reset_kwargs)
    out = {"obs": [obs], "rewards": [], "infos": [info], "flags": []}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out["obs"].append(obs)
        out["rewards"].append(reward)
        out["infos"].append(info)
        out["flags"].append((terminated, truncated))
        if terminated or truncated:
            break
    return out


@pytest.fixture(scope="module")
def btc_bars() -> pd.DataFrame:
    return load_dataset(BTC)


# ------------------------------------------------------------------------- observations


def test_box_observation_holds_scaled_features_and_account_columns() -> None:
    env = TradingEnv(BTC, window=16, episode_length=50)
    market = env.market
    obs, info = env.reset(seed=3)
    row = market.datasets[0].offset + info["bar"]
    assert obs.dtype == np.float32 and obs.shape == (16, market.n_features + 2)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:, :-2], market.features[row - 15 : row + 1])
    assert not obs[:, -2:].any()  # flat before and at the episode start
    previous, equity = obs, info["equity"]
    for action in (2, 2, 0, 1):
        obs, _, _, _, info = env.step(action)
        row += 1
        np.testing.assert_array_equal(obs[:, :-2], market.features[row - 15 : row + 1])
        assert obs[-1, -2] == np.float32(info["position"])
        assert obs[-1, -1] == np.float32(math.log(info["equity"] / equity))
        np.testing.assert_array_equal(obs[:-1, -2:], previous[1:, -2:])  # history shifts up
        assert not np.shares_memory(obs, previous)
        previous, equity = obs, info["equity"]
    obs[:] = 99.0  # a fresh array: writing to it changes nothing inside the env
    assert env.step(1)[0].max() < 99.0


def test_account_columns_are_exposure_and_equity_log_return() -> None:
    env = TradingEnv(BTC, window=8, episode_length=30, max_leverage=2.0)
    env.reset(seed=1)
    equities = [env.equity]
    for action in (2, 2, 2, 0, 0, 1, 2):
        obs, _, _, _, info = env.step(action)
        equities.append(info["equity"])
        assert info["position"] == pytest.approx(info["units"] * env.market.close[
            env.dataset.offset + info["bar"]] / info["equity"], rel=1e-12)
    expected = np.log(np.array(equities[1:]) / np.array(equities[:-1])).astype(np.float32)
    np.testing.assert_array_equal(obs[-7:, -1], expected)


def test_dict_observation_layout_and_account_vector() -> None:
    env = TradingEnv(BTC, observation="dict", timeframes={"1h": 12, "4h": 6, "1d": 3},
                     episode_length=40)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"1h", "4h", "1d", "account"}
    assert obs["1h"].shape == (12, env.market.n_features)
    assert obs["4h"].shape == (6, env.market.n_features)
    assert obs["1d"].shape == (3, env.market.n_features)
    assert obs["account"].dtype == np.float32 and not obs["account"].any()
    assert env.observation_space.contains(obs)
    env.step(2)
    obs, _, _, _, info = env.step(2)
    position, unrealised, held, drawdown = obs["account"].tolist()
    assert position == pytest.approx(info["position"], rel=1e-6)
    history = env.episode_history()["equity"]
    assert drawdown == pytest.approx(history[-1] / history.max() - 1.0, abs=1e-7)
    assert held == pytest.approx(math.log1p(2) / math.log1p(env.market.window), rel=1e-6)
    assert unrealised == pytest.approx((history[-1] - history[0]) / history[0], abs=1e-6)


def test_higher_timeframe_bars_are_visible_only_once_closed() -> None:
    env = TradingEnv(BTC, observation="dict", timeframes={"1h": 4, "4h": 4, "1d": 2},
                     split=("2024-06-01", "2024-06-05"))
    market = env.market
    dataset = market.datasets[0]
    for tf in market.timeframes[1:]:
        length = parse_interval(tf.name).timedelta
        bins = _bin_starts(dataset.bars, length)
        for row in range(dataset.first_decision, dataset.last_decision + 1):
            decided_at = dataset.index[row] + pd.Timedelta("1h")  # close of the bar
            last = int(tf.last_closed[row])
            assert bins[last] + length <= decided_at  # closed
            if last + 1 < len(bins):
                assert bins[last + 1] + length > decided_at  # the next one is not


def _bin_starts(bars: pd.DataFrame, length: pd.Timedelta) -> pd.DatetimeIndex:
    """Open times of the feature rows of the resampled bars (after the feature warm-up)."""
    resampled = resample_bars(bars, parse_interval(f"{int(length / pd.Timedelta('1h'))}h"))
    return resampled.index[FeatureSpec().warmup_rows :]


# ------------------------------------------------------------------------------ actions


@pytest.mark.parametrize(
    ("scheme", "allow_short", "actions", "targets"),
    [
        ("target", True, [0, 1, 2, 2, 0], [-2.0, 0.0, 2.0, 2.0, -2.0]),
        ("target", False, [0, 1, 2, 0], [0.0, 0.0, 2.0, 0.0]),
        ("signal", True, [2, 1, 1, 0, 1, 2], [2.0, 2.0, 2.0, -2.0, -2.0, 2.0]),
        ("signal", False, [2, 1, 0, 1, 0], [2.0, 2.0, 0.0, 0.0, 0.0]),
        ("continuous", True, [[0.5], [-1.0], [0.25]], [1.0, -2.0, 0.5]),
        ("continuous", False, [[0.5], [-1.0], [1.0]], [1.0, 0.0, 2.0]),
    ],
)
def test_action_schemes_map_to_target_exposures(
    scheme: str, allow_short: bool, actions: list, targets: list[float]
) -> None:
    env = TradingEnv(BTC, window=8, episode_length=20, action_scheme=scheme,
                     allow_short=allow_short, max_leverage=2.0)
    env.reset(seed=0)
    for action, expected in zip(actions, targets, strict=True):
        if scheme == "continuous":
            action = np.array(action, np.float32)
        info = env.step(action)[4]
        assert info["target"] == expected
        sign = (info["units"] > 0) - (info["units"] < 0)
        assert sign == (expected > 0) - (expected < 0)


def test_rebalance_on_change_keeps_units_and_every_bar_restores_exposure() -> None:
    held = TradingEnv(BTC, window=8, episode_length=20, costs=CostModel.zero())
    restored = TradingEnv(BTC, window=8, episode_length=20, costs=CostModel.zero(),
                          rebalance="every_bar")
    held.reset(seed=2)
    restored.reset(seed=2)
    first = held.step(2)[4]
    restored.step(2)
    for _ in range(5):
        info = held.step(2)[4]
        assert info["units"] == first["units"] and info["fee"] == 0.0
        assert info["fill_price"] == held.market.open[held.dataset.offset + info["bar"]]
        info = restored.step(2)[4]
        # Rebalanced at the open to exactly 1x of the equity then.
        open_price = restored.market.open[restored.dataset.offset + info["bar"]]
        equity_at_open = info["equity"] - info["units"] * (
            restored.market.close[restored.dataset.offset + info["bar"]] - open_price)
        assert info["units"] * open_price == pytest.approx(equity_at_open, rel=1e-12)


# ------------------------------------------------------------------------------ rewards


def test_log_return_and_pnl_rewards() -> None:
    actions = [2, 2, 0, 1, 0, 2, 2, 1]
    log_env = TradingEnv(BTC, window=8, episode_length=20)
    pnl_env = TradingEnv(BTC, window=8, episode_length=20, reward="pnl", initial_equity=1000.0)
    a = _run(log_env, actions)
    b = _run(pnl_env, actions)
    equity_a = [i["equity"] for i in a["infos"]]
    equity_b = [i["equity"] for i in b["infos"]]
    for k, reward in enumerate(a["rewards"]):
        assert type(reward) is float
        assert reward == math.log(equity_a[k + 1] / equity_a[k])
    for k, reward in enumerate(b["rewards"]):
        assert reward == pytest.approx((equity_b[k + 1] - equity_b[k]) / 1000.0, rel=1e-12)
    # The equity paths agree up to the initial-equity scale.
    np.testing.assert_allclose(np.array(equity_b) / 1000.0, equity_a, rtol=1e-12)


def test_differential_sharpe_reward_follows_moody_saffell() -> None:
    eta = 0.05
    env = TradingEnv(BTC, window=8, episode_length=40, reward="differential_sharpe",
                     dsr_eta=eta)
    actions = [2, 2, 0, 0, 2, 1, 0, 2, 2, 2, 0, 1, 2]
    run = _run(env, actions)
    equity = [i["equity"] for i in run["infos"]]
    a = b = 0.0
    for k, reward in enumerate(run["rewards"]):
        r = equity[k + 1] / equity[k] - 1.0
        d_a, d_b = r - a, r * r - b
        variance = b - a * a
        expected = (b * d_a - 0.5 * a * d_b) / variance**1.5 if variance > 1e-12 else 0.0
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-15)
        a, b = a + eta * d_a, b + eta * d_b
    assert any(reward != 0.0 for reward in run["rewards"])


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": BTC},
        {"data": BTC, "action_scheme": "continuous", "rebalance": "every_bar",
         "max_leverage": 3.0, "costs": CostModel.bybit_linear(slippage="volatility",
                                                             slippage_k=0.05)},
        {"data": SPY, "action_scheme": "signal", "window": 16},
        {"data": BTC, "fill": "close", "costs": CostModel.bybit_linear(
            slippage="volume", slippage_k=0.1, borrow_rate_annual=0.1)},
    ],
)
def test_equity_change_reconciles_with_every_cost_line(kwargs: dict) -> None:
    env = TradingEnv(episode_length=300, min_equity_fraction=0.0, **kwargs)
    rng = np.random.default_rng(7)
    env.reset(seed=11)
    equity = env.equity
    seen = {"fee": 0.0, "funding_paid": 0.0, "borrow_paid": 0.0}
    for _ in range(300):
        action = env.action_space.sample() if kwargs.get("action_scheme") == "continuous" \
            else int(rng.choice(3, p=[0.3, 0.3, 0.4]))
        _, _, terminated, truncated, info = env.step(action)
        change = info["equity"] - equity
        assert change == pytest.approx(_costs_identity(info), rel=1e-9, abs=1e-12)
        for key in seen:
            seen[key] += abs(info[key])
        equity = info["equity"]
        if terminated or truncated:
            break
    assert seen["fee"] > 0
    if kwargs["data"] == BTC and kwargs.get("fill") != "close":
        assert seen["funding_paid"] > 0
    if kwargs["data"] == SPY:
        assert seen["borrow_paid"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": BTC},
        {"data": BTC, "action_scheme": "continuous", "rebalance": "every_bar",
         "max_leverage": 2.0},
        {"data": SPY, "action_scheme": "signal", "window": 16, "split": "val",
         "episode_length": 300},
        {"data": BTC, "fill": "close", "allow_short": False, "split": "test"},
    ],
)
def test_episode_replayed_through_simulate_gives_the_same_equity(kwargs: dict) -> None:
    kwargs = {"episode_length": 400, **kwargs}
    env = TradingEnv(min_equity_fraction=0.0, **kwargs)
    run = _run(env, _actions(env, 400), seed=5)
    infos = run["infos"]
    dataset = env.dataset
    start = infos[0]["bar"]
    steps = len(run["rewards"])
    bars = dataset.bars.iloc[dataset.bar_offset + start : dataset.bar_offset + start + steps + 1]
    targets = [info["target"] for info in infos[1:]] + [float("nan")]
    result = simulate(
        bars, np.array(targets), costs=env.config.costs[0], fill=env.config.fill,
        rebalance=env.config.rebalance, initial_equity=env.config.initial_equity,
        periods_per_year=dataset.periods_per_year,
    )
    env_equity = np.array([info["equity"] for info in infos])
    np.testing.assert_allclose(result.equity.to_numpy(), env_equity, rtol=1e-9, atol=0)
    metrics = infos[-1]["metrics"]
    assert metrics["n_trades"] == len(result.trades)
    closed = [info["trade"]["pnl"] for info in infos[1:] if "trade" in info]
    np.testing.assert_allclose(closed, result.trades["pnl"].to_numpy()[: len(closed)],
                               rtol=1e-6, atol=1e-12)
    assert metrics["total_return"] == pytest.approx(result.metrics.total_return, rel=1e-9)


def _actions(env: TradingEnv, n: int) -> list:
    rng = np.random.default_rng(3)
    if env.config.action_scheme == "continuous":
        return [rng.uniform(-1, 1, 1).astype(np.float32) for _ in range(n)]
    # Runs of repeated actions, so positions are held for a while between trades.
    return [int(a) for a in np.repeat(rng.integers(0, 3, n // 4 + 1), 4)[:n]]


def test_info_has_python_types_trades_and_episode_metrics() -> None:
    env = TradingEnv(BTC, window=8, episode_length=60)
    run = _run(env, _actions(env, 60), seed=4)
    for info, (terminated, truncated) in zip(run["infos"][1:], run["flags"], strict=True):
        assert type(terminated) is bool and type(truncated) is bool
        assert set(STEP_INFO_KEYS) <= set(info)
        assert all(type(info[k]) is float for k in STEP_INFO_KEYS if k not in ("bar", "dataset"))
        if "trade" in info:
            assert set(info["trade"]) == set(TRADE_KEYS)
            assert info["trade"]["bars"] == info["trade"]["closed_at"] - info["trade"][
                "opened_at"] > 0
    assert run["flags"][-1] == (False, True)
    assert "metrics" in run["infos"][-1]
    assert all("metrics" not in info for info in run["infos"][:-1])
    trades = [info for info in run["infos"] if "trade" in info]
    assert trades, "the action pattern closes trades"
    history = env.episode_history()
    equity = history["equity"]
    metrics = run["infos"][-1]["metrics"]
    expected = compute_metrics(equity[1:] / equity[:-1] - 1.0, periods_per_year=8760.0)
    assert metrics["sharpe"] == expected.sharpe
    assert metrics["max_drawdown"] == expected.max_drawdown
    fees = sum(info["fee"] for info in run["infos"][1:])
    assert metrics["fees_paid"] == pytest.approx(fees, rel=1e-12)


def test_truncation_at_episode_length_and_end_of_split() -> None:
    env = TradingEnv(BTC, window=8, episode_length=25)
    run = _run(env, [1] * 100)
    assert len(run["rewards"]) == 25 and run["flags"][-1] == (False, True)
    full = TradingEnv(BTC, window=8, split=("2025-01-01", "2025-01-03"))
    run = _run(full, [2] * 100)
    dataset = full.dataset
    assert run["infos"][0]["bar"] == dataset.local(dataset.first_decision)
    assert run["infos"][-1]["bar"] == dataset.local(dataset.last_decision) + 1
    assert run["flags"][-1] == (False, True)
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        full.step(1)


def test_bankruptcy_terminates() -> None:
    env = TradingEnv(BTC, window=8, episode_length=2000, max_leverage=20.0,
                     min_equity_fraction=0.5)
    run = _run(env, [0, 2] * 1000, seed=1)
    assert run["flags"][-1] == (True, False)
    assert run["infos"][-1]["equity"] <= 0.5
    assert "metrics" in run["infos"][-1]


def test_same_seed_same_trajectory_and_different_seed_differs() -> None:
    def trajectory(seed: int) -> dict:
        env = TradingEnv([BTC, SPY], window=8, episode_length=30,
                         feature_spec={"include_funding": False})
        rng = np.random.default_rng(0)
        return _run(env, [int(a) for a in rng.integers(0, 3, 30)], seed=seed)

    a, b, c = trajectory(5), trajectory(5), trajectory(6)
    for x, y in zip(a["obs"], b["obs"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a["rewards"] == b["rewards"] and a["infos"] == b["infos"]
    assert a["infos"][0] != c["infos"][0]


def test_several_datasets_keep_their_own_costs_and_periods() -> None:
    env = TradingEnv([BTC, SPY], window=16, episode_length=20)
    assert env.config.costs == (CostModel.bybit_linear(), CostModel.equities())
    assert [d.periods_per_year for d in env.market.datasets] == [8760.0, 252.0]
    assert "funding_rate" in env.market.feature_names  # SPY gets a zero funding column
    seen = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        seen.add(info["dataset"])
        step_info = env.step(2)[4]
        notional = abs(step_info["units"]) * step_info["fill_price"]
        fee_bps = step_info["fee"] / notional * 1e4
        assert fee_bps == pytest.approx(5.5 if info["dataset"] == 0 else 1.0, rel=1e-9)
    assert seen == {0, 1}


def test_reset_options_pin_the_dataset_and_the_first_bar() -> None:
    env = TradingEnv([BTC, SPY], window=8, episode_length=10)
    spy = env.market.datasets[1]
    first = spy.local(spy.first_decision)
    _, info = env.reset(seed=0, options={"dataset": 1, "start": first + 5})
    assert (info["dataset"], info["bar"]) == (1, first + 5)
    with pytest.raises(ValueError, match=r"options\['start'\] must be a decision row"):
        env.reset(options={"dataset": 1, "start": spy.local(spy.last_decision)})
    with pytest.raises(ValueError, match=r"options\['dataset'\] must be in \[0, 2\)"):
        env.reset(options={"dataset": 2})


def test_dict_observation_over_datasets_with_different_intervals() -> None:
    with pytest.raises(ValueError, match="needs explicit timeframes"):
        TradingEnv([BTC, SPY], observation="dict")
    env = TradingEnv([BTC, SPY], observation="dict", timeframes={"1d": 4}, episode_length=10)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        assert obs["1d"].shape == (4, env.market.n_features)


# ------------------------------------------------------------------------ causality


def _perturbed_after(bars: pd.DataFrame, when: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """Every bar after ``when`` scaled by a random factor (OHLC together, so still valid)."""
    out = bars.copy()
    later = out.index > when
    rng = np.random.default_rng(seed)
    factor = rng.uniform(0.7, 1.4, int(later.sum()))
    for column in ("open", "high", "low", "close"):
        out.loc[later, column] = out.loc[later, column].to_numpy() * factor
    out.loc[later, "volume"] = out.loc[later, "volume"].to_numpy() * rng.uniform(
        0.1, 3.0, int(later.sum()))
    if "funding_rate" in out:
        out.loc[later, "funding_rate"] = -3.0 * out.loc[later, "funding_rate"].to_numpy()
    out.attrs = dict(bars.attrs)
    return out


def _compare_until(env_a: TradingEnv, env_b: TradingEnv, steps: int, decision: int) -> None:
    """Step both envs with the same actions; observations must match bit for bit up to the
    decision at row ``decision`` and differ at the next one."""
    obs_a, info_a = env_a.reset(seed=0)
    obs_b, _ = env_b.reset(seed=0)
    actions = [2, 2, 0, 1, 0, 2] * (steps // 6 + 1)
    row = info_a["bar"]
    for k in range(steps + 1):
        if row <= decision:
            if isinstance(obs_a, dict):
                for key in obs_a:
                    np.testing.assert_array_equal(obs_a[key], obs_b[key], err_msg=key)
            else:
                np.testing.assert_array_equal(obs_a, obs_b)
        else:
            differs = (any(not np.array_equal(obs_a[k2], obs_b[k2]) for k2 in obs_a)
                       if isinstance(obs_a, dict) else not np.array_equal(obs_a, obs_b))
            assert differs, "the perturbation is visible after the decision bar"
            return
        obs_a, _, _, _, info_a = env_a.step(actions[k])
        obs_b, _, _, _, _ = env_b.step(actions[k])
        row = info_a["bar"]
    raise AssertionError("the episode never passed the decision bar")


def test_future_perturbation_box_in_the_test_split(btc_bars: pd.DataFrame) -> None:
    # The test split: the scaler is fitted on the train split, which the perturbation leaves
    # alone, so everything the env shows up to the decision must be bit-identical.
    kwargs = {"window": 16, "split": "test", "episode_length": 80, "random_start": False}
    env_a = TradingEnv(btc_bars, **kwargs)
    dataset = env_a.market.datasets[0]
    decision = dataset.local(dataset.first_decision) + 40
    when = dataset.index[decision]
    env_b = TradingEnv(_perturbed_after(btc_bars, when), **kwargs)
    _compare_until(env_a, env_b, 80, decision)


def test_future_perturbation_dict_with_a_fixed_scaler(btc_bars: pd.DataFrame) -> None:
    # Inside the train split the fitted scaler would see the perturbed bars, so both envs get
    # the same (already fitted) scalers: the test is then about the env alone.
    kwargs = {"observation": "dict", "timeframes": {"1h": 8, "4h": 6, "1d": 3},
              "episode_length": 60, "random_start": False,
              "split": ("2024-07-01 00:00", "2024-07-20 00:00")}
    env_a = TradingEnv(btc_bars, **kwargs)
    scalers = env_a.market.datasets[0].scalers
    dataset = env_a.market.datasets[0]
    first = dataset.local(dataset.first_decision)
    # A decision in the middle of a 4h and of a daily bar: their open bins hold later bars.
    decision = next(r for r in range(first + 30, first + 50) if dataset.index[r].hour % 4 == 1)
    env_a = TradingEnv(btc_bars, scaler=scalers, **kwargs)
    env_b = TradingEnv(_perturbed_after(btc_bars, dataset.index[decision]), scaler=scalers,
                       **kwargs)
    _compare_until(env_a, env_b, 60, decision)


# ----------------------------------------------------------------------------- render


def test_render_modes() -> None:
    assert TradingEnv.metadata["render_modes"] == ["ansi", "rgb_array"]
    assert isinstance(TradingEnv.metadata["render_fps"], int)
    env = TradingEnv(BTC, window=8, episode_length=10, render_mode="ansi")
    env.reset(seed=0)
    env.step(2)
    line = env.render()
    assert isinstance(line, str) and "\n" not in line and "BTCUSDT" in line
    env = TradingEnv(BTC, window=8, episode_length=10, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()  # right after reset: one bar of episode
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.step(2)
    env.step(0)
    assert env.render().shape == frame.shape
    assert TradingEnv(BTC, window=8, episode_length=10).render() is None


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("action", [3, -1, 1.5, "2", None, np.array([1, 2])])
def test_discrete_action_outside_the_space_is_rejected(action: object) -> None:
    env = TradingEnv(BTC, window=8, episode_length=10)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


@pytest.mark.parametrize("action", [np.array([1.5]), np.array([np.nan]), np.array([0.1, 0.2]),
                                    0.5, "x"])
def test_continuous_action_outside_the_space_is_rejected(action: object) -> None:
    env = TradingEnv(BTC, window=8, episode_length=10, action_scheme="continuous")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


@pytest.mark.parametrize("action", [True, False, np.True_, 1 + 0j, np.complex128(2)])
def test_bool_and_complex_discrete_actions_are_rejected(action: object) -> None:
    env = TradingEnv(BTC, window=8, episode_length=10)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


@pytest.mark.parametrize("action", [[True], np.array([False]), np.array([0.5 + 0j]),
                                    np.array([0.5 + 1j], np.complex64), ["0.5"]])
def test_bool_complex_and_text_continuous_actions_are_rejected(action: object) -> None:
    env = TradingEnv(BTC, window=8, episode_length=10, action_scheme="continuous")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


@pytest.mark.parametrize(("options", "match"), [
    ({"start_row": 5}, r"unknown key\(s\) \['start_row'\]; allowed keys: \['dataset', 'start'\]"),
    ({"dataset": 0, "seed": 1}, r"unknown key\(s\) \['seed'\]"),
    (["dataset"], r"must be a mapping .* keys among \['dataset', 'start'\]"),
    ("start", r"must be a mapping"),
])
def test_reset_options_are_checked(options: object, match: str) -> None:
    env = TradingEnv(BTC, window=8, episode_length=10)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)  # type: ignore[arg-type]
    env.reset(seed=0, options={"dataset": 0})  # the allowed keys still work


def test_step_before_reset() -> None:
    env = TradingEnv(BTC, window=8, episode_length=10)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(1)


def test_window_longer_than_the_split() -> None:
    with pytest.raises(ValueError, match=r"window=64 bars is longer than the .* split"):
        TradingEnv(BTC, window=64, split=("2025-01-01 00:00", "2025-01-02 00:00"))
    with pytest.raises(ValueError, match="window=5000"):
        TradingEnv(BTC, window=5000, split="val")


def test_split_too_short_for_one_episode() -> None:
    with pytest.raises(ValueError, match="too short for one episode"):
        TradingEnv(BTC, window=8, split=("2025-01-01", "2025-01-03"), episode_length=500)


def test_non_finite_features_are_rejected(btc_bars: pd.DataFrame) -> None:
    bars = btc_bars.iloc[:2000]
    features = pd.DataFrame({"ret": np.log(bars["close"]).diff(),
                             "range": (bars["high"] - bars["low"]) / bars["close"]},
                            index=bars.index).iloc[1:]
    broken = features.copy()
    broken.iloc[500, 1] = np.inf
    with pytest.raises(DataError, match=r"column 'range' is NaN or infinite at 2023-12-"):
        TradingEnv(bars, features=broken, window=8)
    broken = features.copy()
    broken.iloc[700, 0] = np.nan
    with pytest.raises(DataError, match="column 'ret' is NaN or infinite"):
        TradingEnv(bars, features=broken, window=8)
    env = TradingEnv(bars, features=features, window=8, episode_length=50)  # finite: fine
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8, 4) and np.isfinite(obs).all()
    nan_bars = bars.copy()
    nan_bars.iloc[300, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        TradingEnv(nan_bars, window=8)


def test_negative_costs_and_bad_cost_arguments() -> None:
    with pytest.raises(ValueError, match="taker_fee_bps must be a finite number >= 0"):
        TradingEnv(BTC, costs=CostModel(taker_fee_bps=-1.0))
    with pytest.raises(TypeError, match="costs must be a CostModel"):
        TradingEnv(BTC, costs={"taker_fee_bps": 1.0})
    with pytest.raises(ValueError, match="2 cost model"):
        TradingEnv(BTC, costs=[CostModel.zero(), CostModel.zero()])


def test_unknown_dataset_and_timeframe() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'no-such-data'.*bybit-btcusdt-1h"):
        TradingEnv("no-such-data")
    with pytest.raises(ValueError, match="unknown timeframe '7x'"):
        TradingEnv(BTC, observation="dict", timeframes=["1h", "7x"])


def test_dict_timeframes_finer_than_the_base_bars() -> None:
    with pytest.raises(ValueError, match=r"timeframe '1h' is finer than the base bars of "
                                         r"dataset 'yahoo-spy-1d' \(1d\)"):
        TradingEnv(SPY, observation="dict", timeframes=["1h", "1d"])
    with pytest.raises(ValueError, match="not a whole multiple"):
        TradingEnv(BTC, observation="dict", timeframes=["90m"])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"action_scheme": "discrete"}, ValueError, "action_scheme must be one of"),
        ({"reward": "sharpe"}, ValueError, "reward must be one of"),
        ({"fill": "mid"}, ValueError, "fill must be one of"),
        ({"render_mode": "human"}, ValueError, "render_mode must be one of"),
        ({"max_leverage": 0}, ValueError, "max_leverage must be a finite number > 0"),
        ({"min_equity_fraction": 1.0}, ValueError, r"min_equity_fraction must be in \[0, 1\)"),
        ({"episode_length": 0}, ValueError, "episode_length must be >= 1"),
        ({"window": 0}, ValueError, "window must be an integer >= 1"),
        ({"split": "holdout"}, ValueError, "split must be 'train', 'val', 'test'"),
        ({"observation": "image"}, ValueError, "observation must be 'box' or 'dict'"),
        ({"dsr_eta": 1.5}, ValueError, r"dsr_eta must be in \(0, 1\)"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_rule(
    kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        TradingEnv(BTC, **kwargs)


def test_default_costs_need_a_known_source(btc_bars: pd.DataFrame) -> None:
    bars = btc_bars.iloc[:1500].copy()
    bars.attrs = {**bars.attrs, "source": "my-broker"}
    with pytest.raises(ValueError, match="source: no default cost model for 'my-broker'"):
        TradingEnv(bars, window=8)
    env = TradingEnv(bars, window=8, costs=CostModel.zero(), episode_length=20)
    assert env.config.costs == (CostModel.zero(),)


def test_execute_step_is_the_engine_the_env_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args: object) -> object:
        calls.append(args)
        return execute_step(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("tradezoo.envs.account.execute_step", spy)  # the account step's engine
    env = TradingEnv(BTC, window=8, episode_length=5)
    env.reset(seed=0)
    env.step(2)
    assert len(calls) == 1 and all(type(a) in (float, bool) for a in calls[0][:10])


def test_gymnasium_make_passes_kwargs() -> None:
    env = gym.make("tradezoo/Trading-v0", data=SPY, window=8, episode_length=12)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8, env.unwrapped.market.n_features + 2)
    assert env.unwrapped.dataset.symbol == "SPY"
    env.close()
