"""Environment throughput harness: synthetic bars, the peer envs and one timed loop.

Every env replays the same seeded synthetic hourly OHLCV series (:func:`make_ohlcv`) and is
stepped with uniformly random actions drawn up front from a seeded generator, so sampling is
not timed. An env is reset whenever an episode ends; those resets are inside the timed loop.

Envs, by name (:data:`PEERS`), plus ``custom`` (``--custom module:factory``):

- ``anytrading``: ``gym_anytrading.envs.StocksEnv`` (no fees, no position in the observation);
- ``gte``: Gym-Trading-Env's ``TradingEnv`` with positions -1/0/1 and a 0.1 % fee;
- ``ref``: :class:`RefEnv`, a lean numpy env with next-open fills and a fee: a speed floor,
  not a peer;
- ``ref_vec64``: :class:`RefVecEnv`, the same dynamics batched over 64 envs, with autoreset.

A factory is ``factory(df, window) -> env``; ``df`` is :func:`make_ohlcv`'s frame. A batched
env (``--custom-batch N``) takes one action per sub-env in ``step()``, resets finished sub-envs
itself, and its throughput counts env-steps.

Reported per env (:func:`measure`): steps/s (median over repeats, wall clock and per
CPU-second, which is steadier on a shared machine), the wall time of ``reset()`` after
``reset_after`` random steps and at every episode end inside the timed loop, constructor time,
episodes per run and the observation shape.

Run one env in this process (the benchmarks call :func:`run_isolated` instead)::

    PYTHONPATH=benchmarks python -m harness.envs --worker ref --steps 5000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from harness import workers

FEATURES = ("feature_logret", "feature_open", "feature_high", "feature_low", "feature_volume")
"""The causal features of :func:`make_ohlcv`; the peers observe these."""

EnvFactory = Callable[[pd.DataFrame, int], Any]


# ---------------------------------------------------------------------------------- data --


def make_ohlcv(n_bars: int = 20_000, seed: int = 42) -> pd.DataFrame:
    """Seeded synthetic hourly OHLCV: a geometric random walk with AR(1) log-volatility.

    Annualised volatility 60 % around which the hourly log-volatility mean-reverts
    (``phi = 0.98``, shock 0.08), so volatility clusters; opens jitter around the previous
    close, wicks scale with the bar's volatility, volume is log-normal with a daily cycle and
    grows with the absolute return.

    Returns:
        ``n_bars`` rows: a tz-naive hourly DatetimeIndex (UTC wall time) named ``date`` from
        2022-01-01 on, float64 ``open high low close volume`` and the causal
        :data:`FEATURES` (bar t uses data up to bar t). 200 warm-up rows for the rolling
        volume feature are generated and dropped.
    """
    rng = np.random.default_rng(seed)
    n = n_bars + 200
    mu_log_sig = np.log(0.60 / np.sqrt(24 * 365))
    phi, eta = 0.98, 0.08
    log_sig = np.empty(n)
    log_sig[0] = mu_log_sig
    shocks = rng.standard_normal(n)
    for t in range(1, n):
        log_sig[t] = mu_log_sig + phi * (log_sig[t - 1] - mu_log_sig) + eta * shocks[t]
    sig = np.exp(log_sig)
    ret = sig * rng.standard_normal(n)
    close = 30_000.0 * np.exp(np.cumsum(ret))
    open_ = np.empty(n)
    open_[0] = 30_000.0
    open_[1:] = close[:-1] * np.exp(0.05 * sig[1:] * rng.standard_normal(n - 1))
    wick_hi = np.abs(rng.standard_normal(n)) * sig * 0.6
    wick_lo = np.abs(rng.standard_normal(n)) * sig * 0.6
    high = np.maximum(open_, close) * np.exp(wick_hi)
    low = np.minimum(open_, close) * np.exp(-wick_lo)
    hour = np.arange(n) % 24
    seasonal = 1.0 + 0.3 * np.sin(2 * np.pi * hour / 24)
    volume = rng.lognormal(mean=4.0, sigma=0.5, size=n) * seasonal * (1.0 + 40.0 * np.abs(ret))
    index = pd.date_range("2022-01-01", periods=n, freq="h", name="date")
    df = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
    df["feature_logret"] = np.log(df["close"]).diff()
    df["feature_open"] = df["open"] / df["close"] - 1.0
    df["feature_high"] = df["high"] / df["close"] - 1.0
    df["feature_low"] = df["low"] / df["close"] - 1.0
    df["feature_volume"] = df["volume"] / df["volume"].rolling(168, min_periods=24).mean() - 1.0
    return df.dropna().iloc[-n_bars:]


# --------------------------------------------------------------------------------- peers --


def anytrading_env(df: pd.DataFrame, window: int) -> gym.Env:
    """gym-anytrading's ``StocksEnv`` over every bar (observation: price and its diff)."""
    from gym_anytrading.envs import StocksEnv

    columns = ("open", "high", "low", "close", "volume")
    frame = df.rename(columns={c: c.capitalize() for c in columns})
    return StocksEnv(df=frame, window_size=window, frame_bound=(window, len(frame)))


def gym_trading_env(df: pd.DataFrame, window: int) -> gym.Env:
    """Gym-Trading-Env's ``TradingEnv``: positions -1/0/1, 0.1 % fee, hourly borrow rate."""
    saved = list(warnings.filters)
    from gym_trading_env.environments import TradingEnv  # installs filterwarnings("error")

    warnings.filters[:] = saved  # undo that global side effect for the rest of the worker
    return TradingEnv(
        df=df.copy(),
        positions=[-1, 0, 1],
        windows=window,
        trading_fees=0.001,
        borrow_interest_rate=0.0003 / 24,
        verbose=0,
    )


class RefEnv(gym.Env):
    """A lean numpy env: what a single env costs with nothing but the essentials.

    Action k in {0, 1, 2} sets the target position {-1, 0, 1}, filled at the next bar's open;
    the observation is the last ``window`` rows of the 5 :data:`FEATURES` plus the position
    (``[window, 6]`` float32); the reward is the log change of equity after the fee.
    """

    def __init__(self, df: pd.DataFrame, window: int, fee: float = 0.001) -> None:
        self.feat = np.ascontiguousarray(df[list(FEATURES)].to_numpy(np.float32))
        self.open = df["open"].to_numpy(np.float64)
        self.close = df["close"].to_numpy(np.float64)
        self.window, self.fee = window, fee
        self.levels = np.array([-1.0, 0.0, 1.0])
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (window, 6), np.float32)
        self._obs = np.zeros((window, 6), np.float32)

    def _get_obs(self) -> np.ndarray:
        t = self.t
        self._obs[:, :5] = self.feat[t - self.window + 1 : t + 1]
        self._obs[:, 5] = self.pos
        return self._obs.copy()

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t, self.pos, self.equity = self.window - 1, 0.0, 1.0
        return self._get_obs(), {}

    def step(self, action: int):
        t = self.t
        target = self.levels[int(action)]
        o, c_prev, c_next = self.open[t + 1], self.close[t], self.close[t + 1]
        eq0 = self.equity
        eq = eq0 * (1.0 + self.pos * (o / c_prev - 1.0))  # old position to the next open
        eq *= 1.0 - self.fee * abs(target - self.pos)
        eq *= 1.0 + target * (c_next / o - 1.0)  # new position to the next close
        self.pos, self.equity, self.t = target, eq, t + 1
        terminated = bool(eq <= 0.0)
        truncated = bool(self.t >= len(self.close) - 2)
        reward = float(np.log(max(eq, 1e-12) / eq0))
        return self._get_obs(), reward, terminated, truncated, {"equity": eq}


class RefVecEnv:
    """:class:`RefEnv`'s dynamics for ``n`` envs advanced by one numpy call per step.

    Sub-episodes are ``episode_length`` bars from seeded random starts; finished sub-envs are
    reset in place inside ``step()``.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        window: int,
        n: int = 64,
        fee: float = 0.001,
        seed: int = 0,
        episode_length: int = 4096,
    ) -> None:
        self.feat = np.ascontiguousarray(df[list(FEATURES)].to_numpy(np.float32))
        self.open = df["open"].to_numpy(np.float64)
        self.close = df["close"].to_numpy(np.float64)
        self.window, self.fee, self.n = window, fee, n
        self.levels = np.array([-1.0, 0.0, 1.0])
        self.single_action_space = gym.spaces.Discrete(3)
        self.action_space = gym.spaces.MultiDiscrete([3] * n)
        self.rng = np.random.default_rng(seed)
        self.offsets = np.arange(-window + 1, 1)
        self.episode_length = episode_length

    def _starts(self, k: int) -> np.ndarray:
        return self.rng.integers(self.window - 1, len(self.close) - self.episode_length - 2, k)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.t = self._starts(self.n)
        self.start = self.t.copy()
        self.pos = np.zeros(self.n)
        self.equity = np.ones(self.n)
        return self._get_obs(), {}

    def _get_obs(self) -> np.ndarray:
        idx = self.t[:, None] + self.offsets[None, :]
        obs = np.empty((self.n, self.window, 6), np.float32)
        obs[:, :, :5] = self.feat[idx]
        obs[:, :, 5] = self.pos[:, None]
        return obs

    def step(self, actions: np.ndarray):
        t = self.t
        target = self.levels[actions]
        o, c_prev, c_next = self.open[t + 1], self.close[t], self.close[t + 1]
        eq0 = self.equity
        eq = eq0 * (1.0 + self.pos * (o / c_prev - 1.0))
        eq = eq * (1.0 - self.fee * np.abs(target - self.pos))
        eq = eq * (1.0 + target * (c_next / o - 1.0))
        reward = np.log(np.maximum(eq, 1e-12) / eq0)
        self.pos, self.equity, self.t = target, eq, t + 1
        terminated = eq <= 0.0
        truncated = (self.t - self.start) >= self.episode_length
        done = terminated | truncated
        if done.any():
            self.t[done] = self._starts(int(done.sum()))
            self.start[done] = self.t[done]
            self.pos[done] = 0.0
            self.equity[done] = 1.0
        return self._get_obs(), reward, terminated, truncated, {}


def _ref_vec64(seed: int) -> EnvFactory:
    return lambda df, window: RefVecEnv(df, window, n=64, seed=seed)


# ------------------------------------------------------------------------------- measuring --


@dataclass(frozen=True)
class EnvCase:
    """What one measurement runs: the bars, the window and the timed loop's sizes.

    ``steps`` counts env-steps: a batched env of ``batch`` sub-envs gets ``steps // batch``
    ``step()`` calls per repeat.
    """

    bars: int = 20_000
    seed: int = 42
    window: int = 32
    steps: int = 20_000
    repeats: int = 3
    resets: int = 5
    reset_after: int = 256

    def to_argv(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(self).items()]


PEERS: dict[str, tuple[Callable[[int], EnvFactory], int]] = {
    "anytrading": (lambda seed: anytrading_env, 1),
    "gte": (lambda seed: gym_trading_env, 1),
    "ref": (lambda seed: RefEnv, 1),
    "ref_vec64": (_ref_vec64, 64),
}
"""Name -> (factory for a seed, sub-envs per ``step()``)."""


def _sample_actions(space: gym.Space, count: int, rng: np.random.Generator) -> list[Any]:
    if isinstance(space, gym.spaces.Discrete):
        return (space.start + rng.integers(0, space.n, count)).tolist()
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [rng.integers(0, space.nvec) for _ in range(count)]
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape)
        high = np.broadcast_to(space.high, space.shape)
        return [rng.uniform(low, high).astype(space.dtype) for _ in range(count)]
    raise TypeError(f"unsupported action space {space}")


def measure(make: EnvFactory, df: pd.DataFrame, case: EnvCase, batch: int) -> dict[str, Any]:
    """Time ``make``'s env on ``df``: ``case.repeats`` runs of ``case.steps`` env-steps.

    Each repeat builds a fresh env (timed: ``build_s``), resets it with seed
    ``case.seed + repeat`` and steps it through actions drawn up front; a single env is reset
    at each episode end inside the timed loop. Then ``case.resets`` resets are timed, each
    after ``case.reset_after`` random env-steps. Anything the env prints is swallowed.
    """
    sink = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        make(df, case.window)  # the first construction pays the imports; not reported as build
    first_build = time.perf_counter() - started
    rates, cpu_rates, builds, episodes, episode_end_resets = [], [], [], [], []
    obs_shape: list[int] = []
    for repeat in range(case.repeats):
        started = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            env = make(df, case.window)
        builds.append(time.perf_counter() - started)
        calls = case.steps // batch
        rng = np.random.default_rng(case.seed + repeat)
        actions = _sample_actions(env.action_space, calls, rng)
        with contextlib.redirect_stdout(sink):
            obs, _info = env.reset(seed=case.seed + repeat)
            obs_shape = list(np.asarray(obs).shape)
            n_episodes = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for action in actions:
                _obs, _reward, terminated, truncated, _info = env.step(action)
                if batch == 1 and (terminated or truncated):
                    n_episodes += 1
                    reset_start = time.perf_counter()
                    env.reset()
                    episode_end_resets.append(time.perf_counter() - reset_start)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rates.append(calls * batch / wall)
        cpu_rates.append(calls * batch / max(cpu, 1e-9))
        episodes.append(n_episodes)
    per_reset = max(1, case.reset_after // batch)
    actions = _sample_actions(
        env.action_space, per_reset * case.resets, np.random.default_rng(case.seed + 1000)
    )
    reset_times = []
    with contextlib.redirect_stdout(sink):
        env.reset(seed=case.seed)
        for r in range(case.resets):
            for action in actions[r * per_reset : (r + 1) * per_reset]:
                _obs, _reward, terminated, truncated, _info = env.step(action)
                if batch == 1 and (terminated or truncated):
                    env.reset()
            started = time.perf_counter()
            env.reset()
            reset_times.append(time.perf_counter() - started)
    return {
        "steps_per_s_median": statistics.median(rates),
        "steps_per_s_runs": rates,
        "steps_per_cpu_s_median": statistics.median(cpu_rates),
        "reset_ms_median": 1e3 * statistics.median(reset_times),
        "reset_after_steps": per_reset * batch,
        "reset_ms_episode_end": [1e3 * t for t in episode_end_resets],
        "build_s_median": statistics.median(builds),
        "first_build_incl_import_s": first_build,
        "episodes_per_run": episodes,
        "obs_shape": obs_shape,
        "action_space": str(env.action_space),
        "batch": batch,
    }


def resolve(name: str, seed: int, custom: str | None, custom_batch: int) -> tuple[EnvFactory, int]:
    """The factory and batch of a peer name, or of ``custom`` (``module:function``)."""
    if name == "custom":
        if not custom or ":" not in custom:
            raise ValueError("the 'custom' env needs --custom module:factory")
        module, function = custom.split(":", 1)
        return getattr(importlib.import_module(module), function), custom_batch
    if name not in PEERS:
        raise ValueError(f"unknown env {name!r}; valid: {[*PEERS, 'custom']}")
    make_for_seed, batch = PEERS[name]
    return make_for_seed(seed), batch


def run_isolated(
    name: str,
    case: EnvCase,
    *,
    custom: str | None = None,
    custom_batch: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`measure` one env in a fresh interpreter (this one's executable).

    Returns:
        The measurement with ``name`` under ``"env"``, or ``{"env": name, "skipped": why}``
        when the env could not be built or stepped (a peer not installed, a crash).
    """
    argv = ["--worker", name, *case.to_argv()]
    if custom is not None:
        argv += ["--custom", custom, "--custom-batch", str(custom_batch)]
    result = workers.run_worker("harness.envs", argv, env=env)
    if "error" in result:
        return {"env": name, "skipped": result["error"]}
    return result


PACKAGES = ("numpy", "pandas", "gymnasium", "gym-anytrading", "gym-trading-env", "numba")
"""Packages whose versions :func:`environment` records."""


def environment() -> dict[str, Any]:
    """Versions and machine of this interpreter (the workers run the same one)."""
    return workers.versions(PACKAGES)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", required=True, help=f"one of {[*PEERS, 'custom']}")
    p.add_argument("--custom", default=None, help="module:factory(df, window) -> env")
    p.add_argument("--custom-batch", type=int, default=1, help="sub-envs per step() of custom")
    for field, default in asdict(EnvCase()).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    case = EnvCase(**{k: getattr(args, k) for k in asdict(EnvCase())})
    try:
        make, batch = resolve(args.worker, case.seed, args.custom, args.custom_batch)
        df = make_ohlcv(case.bars, case.seed)
        result = {"env": args.worker, **measure(make, df, case, batch)}
    except Exception as exc:  # a peer that cannot run is reported as skipped, with the reason
        result = {"env": args.worker, "skipped": f"{type(exc).__name__}: {exc}"}
    workers.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
