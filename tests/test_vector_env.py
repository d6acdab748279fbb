"""TradingVectorEnv: the batched core equals a SyncVectorEnv of single envs, step by step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import tradezoo  # noqa: F401  (registers the envs)
from tradezoo.backtest.costs import CostModel
from tradezoo.envs import vector_env
from tradezoo.envs.trading_env import TradingEnv
from tradezoo.envs.vector_env import TradingVectorEnv

BTC = "bybit-btcusdt-1h"
SPY = "yahoo-spy-1d"


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact, recursive equality of observations and gymnasium vector infos."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x is None:
                assert y is None, f"{path}[{i}]"
            else:
                assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), (path, type(b))
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape,
                                                           b.shape)
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, (path, a, b)


def _actions(space: gym.Space, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(space, gym.spaces.Box):
        return rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    return rng.integers(0, 3, n)


def _compare(mode: AutoresetMode, n: int, steps: int, seed: int, **kwargs: Any) -> dict:
    data = kwargs.pop("data", BTC)
    vector = TradingVectorEnv(n, autoreset_mode=mode, data=data, **kwargs)
    sync = SyncVectorEnv([lambda: TradingEnv(data, **kwargs) for _ in range(n)],
                         autoreset_mode=mode)
    assert vector.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == mode
    assert vector.single_observation_space == sync.single_observation_space
    assert vector.observation_space == sync.observation_space
    assert vector.action_space == sync.action_space
    obs_v, info_v = vector.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    assert_same(obs_v, obs_s, "reset obs")
    assert_same(info_v, info_s, "reset info")
    rng = np.random.default_rng(seed)
    counts = {"done": 0, "terminated": 0, "trades": 0, "liquidated": 0}
    for step in range(steps):
        actions = _actions(vector.single_action_space, rng, n)
        out_v = vector.step(actions)
        out_s = sync.step(actions)
        for name, x, y in zip(("obs", "reward", "terminated", "truncated", "info"), out_v, out_s,
                              strict=True):
            assert_same(x, y, f"step {step} {name}")
        counts["done"] += int((out_v[2] | out_v[3]).sum())
        counts["terminated"] += int(out_v[2].sum())
        counts["trades"] += int(out_v[4].get("_trade", np.zeros(n, bool)).sum())
        for info in (out_v[4], out_v[4].get("final_info", {})):
            counts["liquidated"] += int(info.get("_liquidated", np.zeros(n, bool)).sum())
    return counts


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_equals_sync_vector_env_box_target(mode: AutoresetMode) -> None:
    counts = _compare(mode, 4, 90, 3, window=16, episode_length=20)
    assert counts["done"] >= 8 and counts["trades"] > 20  # autoresets and trades happened


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_equals_sync_vector_env_dict_signal_dsr(mode: AutoresetMode) -> None:
    counts = _compare(mode, 3, 60, 5, observation="dict",
                      timeframes={"1h": 8, "4h": 4, "1d": 2}, action_scheme="signal",
                      reward="differential_sharpe", episode_length=25)
    assert counts["done"] >= 3


def test_equals_sync_vector_env_continuous_with_bankruptcies() -> None:
    counts = _compare(AutoresetMode.SAME_STEP, 4, 80, 7, window=8, action_scheme="continuous",
                      reward="pnl", max_leverage=5.0, min_equity_fraction=0.97,
                      rebalance="every_bar", fill="close", episode_length=30,
                      costs=CostModel.bybit_linear(slippage="volatility", slippage_k=0.1))
    assert counts["terminated"] >= 2


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_equals_sync_vector_env_with_liquidations(mode: AutoresetMode) -> None:
    # 80x on hourly BTC: liquidations end episodes, some on the step of a reversal.
    counts = _compare(mode, 6, 150, 21, window=8, episode_length=40, max_leverage=80.0,
                      min_equity_fraction=0.0, action_scheme="signal")
    assert counts["liquidated"] >= 3


def test_equals_sync_vector_env_with_volume_slippage() -> None:
    # The volume model takes a square root: the float and array paths must round alike.
    counts = _compare(AutoresetMode.SAME_STEP, 4, 60, 2, window=8, action_scheme="continuous",
                      rebalance="every_bar", episode_length=20,
                      costs=CostModel.bybit_linear(slippage="volume", slippage_k=0.2))
    assert counts["trades"] > 10


def test_equals_sync_vector_env_two_datasets_with_their_own_costs() -> None:
    costs = [CostModel.bybit_linear(funding=False), CostModel.equities(borrow_rate_annual=0.5)]
    counts = _compare(AutoresetMode.NEXT_STEP, 6, 70, 11, data=[BTC, SPY], window=8,
                      episode_length=15, costs=costs, allow_short=True)
    assert counts["done"] >= 12


def test_equals_sync_vector_env_two_datasets_with_other_slippage_models() -> None:
    # Each account runs its own dataset's cost model, its slippage model included.
    costs = [CostModel.bybit_linear(slippage="volume", slippage_k=0.2),
             CostModel(taker_fee_bps=1.0, slippage="volatility", slippage_k=0.1)]
    counts = _compare(AutoresetMode.SAME_STEP, 6, 70, 13, data=[BTC, SPY], window=8,
                      episode_length=15, costs=costs, action_scheme="continuous")
    assert counts["done"] >= 12 and counts["trades"] > 10


def test_equals_sync_vector_env_full_pass_without_random_start() -> None:
    _compare(AutoresetMode.NEXT_STEP, 2, 40, 0, window=8, random_start=False,
             split=("2025-03-01", "2025-03-02"))


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_episode_metrics_in_small_batches_equal_sync_vector_env(
    mode: AutoresetMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The episodes that end on one step are batched by start tick, at most _METRICS_BATCH
    # accounts per compute_metrics_batch call; with 2, five accounts ending together take
    # three calls, and bankruptcies (different start ticks) leave non-consecutive groups.
    # 100 steps of 12-step episodes also wrap the circular histories.
    monkeypatch.setattr(vector_env, "_METRICS_BATCH", 2)
    counts = _compare(mode, 5, 100, 21, window=8, action_scheme="continuous",
                      max_leverage=5.0, min_equity_fraction=0.97, episode_length=12)
    assert counts["terminated"] >= 2 and counts["done"] >= 25


def test_disabled_autoreset_needs_a_masked_reset() -> None:
    env = TradingVectorEnv(3, autoreset_mode="Disabled", data=BTC, window=8,
                           episode_length=3)
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(np.array([2, 0, 1]))
    assert truncated.all() and not terminated.any()
    with pytest.raises(ResetNeeded, match="reset_mask"):
        env.step(np.array([1, 1, 1]))
    mask = np.array([True, False, True])
    _, info = env.reset(seed=[10, None, 12], options={"reset_mask": mask})
    np.testing.assert_array_equal(info["_equity"], mask)
    single = TradingEnv(BTC, window=8, episode_length=3)
    assert info["bar"][0] == single.reset(seed=10)[1]["bar"]
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(3, bool)})


def test_same_seed_same_trajectory_and_seed_lists() -> None:
    def run(seed: Any) -> list:
        env = TradingVectorEnv(4, data=BTC, window=8, episode_length=12)
        out = [env.reset(seed=seed)]
        rng = np.random.default_rng(1)
        out += [env.step(rng.integers(0, 3, 4)) for _ in range(30)]
        return out

    first, second = run(42), run([42, 43, 44, 45])
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    other = run(7)
    assert not np.array_equal(first[0][1]["bar"], other[0][1]["bar"])


def test_make_vec_uses_the_vector_entry_point() -> None:
    env = gym.make_vec("tradezoo/BTCUSDT-1h-v0", num_envs=5, window=8)
    assert isinstance(env.unwrapped, TradingVectorEnv) and env.num_envs == 5
    obs, info = env.reset(seed=0)
    assert obs.shape == (5, 8, env.unwrapped.config.market.n_features + 2)
    obs, reward, terminated, _truncated, info = env.step(np.array([0, 1, 2, 2, 1]))
    assert reward.dtype == np.float64 and terminated.dtype == np.bool_
    assert info["_equity"].all() and info["fee"].shape == (5,)
    env.close()
    same_step = gym.make_vec("tradezoo/SPY-1d-v0", num_envs=2,
                             autoreset_mode=AutoresetMode.SAME_STEP)
    assert same_step.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP


def test_bad_batched_actions_and_step_before_reset() -> None:
    env = TradingVectorEnv(3, data=BTC, window=8, episode_length=10)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(np.array([1, 1, 1]))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([1, 3, 1]))
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([1, -1, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.array([1, 1]))
    with pytest.raises(ValueError, match="integer array"):
        env.step(np.array([1.0, 1.0, 1.0]))
    continuous = TradingVectorEnv(2, data=BTC, window=8, episode_length=10,
                                  action_scheme="continuous")
    continuous.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        continuous.step(np.array([[0.5], [1.5]], np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        continuous.step(np.zeros((2, 2), np.float32))


def test_bool_and_complex_batched_actions_are_rejected() -> None:
    env = TradingVectorEnv(2, data=BTC, window=8, episode_length=10)
    env.reset(seed=0)
    for actions in (np.array([True, False]), [True, True], np.array([1 + 0j, 2 + 0j])):
        with pytest.raises(ValueError, match="integer array"):
            env.step(actions)
    continuous = TradingVectorEnv(2, data=BTC, window=8, episode_length=10,
                                  action_scheme="continuous")
    continuous.reset(seed=0)
    for actions in (np.array([[True], [False]]), np.array([[0.5 + 0j], [0.1 + 1j]])):
        with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
            continuous.step(actions)


def test_reset_options_are_checked() -> None:
    env = TradingVectorEnv(2, data=BTC, window=8, episode_length=10)
    allowed = r"allowed keys: \['dataset', 'start', 'reset_mask'\]"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['mask'\]; " + allowed):
        env.reset(seed=0, options={"mask": np.ones(2, bool)})
    with pytest.raises(ValueError, match=r"must be a mapping"):
        env.reset(seed=0, options=[("dataset", 0)])  # type: ignore[arg-type]
    env.reset(seed=0, options={"dataset": 0, "reset_mask": np.ones(2, bool)})


def test_render_one_frame_per_sub_env() -> None:
    env = TradingVectorEnv(2, data=BTC, window=8, episode_length=10, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.array([2, 0]))
    frames = env.render()
    assert len(frames) == 2 and all(isinstance(f, str) and "BTCUSDT" in f for f in frames)


def test_observations_are_fresh_arrays() -> None:
    env = TradingVectorEnv(2, data=BTC, window=8, episode_length=10)
    obs, _info = env.reset(seed=0)
    obs2, _, _, _, info2 = env.step(np.array([2, 2]))
    assert not np.shares_memory(obs, obs2)
    kept = info2["equity"].copy()
    obs2[:] = 7.0
    info2["equity"][:] = -1.0
    env.step(np.array([2, 2]))
    obs3, _, _, _, info3 = env.step(np.array([2, 2]))
    assert obs3.max() < 7.0 and (info3["equity"] > 0).all() and (kept > 0).all()
