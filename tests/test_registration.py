"""Registration: ids, idempotence, cheap import, fresh interpreters, gymnasium's env checker."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import tradezoo
from tradezoo.envs.registration import ENV_IDS, register_envs
from tradezoo.envs.trading_env import TradingEnv
from tradezoo.envs.vector_env import TradingVectorEnv

ROOT = Path(__file__).resolve().parents[1]
IDS = sorted(ENV_IDS)
# The account columns (exposure, equity log-return, drawdown...) are unbounded by nature, so
# their Box bounds are +-inf; gymnasium's checker flags that as "probably too low/high".
pytestmark = pytest.mark.filterwarnings("ignore:.*Box observation space m(in|ax)imum value")


def test_every_id_is_registered_with_both_entry_points() -> None:
    assert IDS == ["tradezoo/BTCUSDT-1h-v0", "tradezoo/BTCUSDT-MTF-v0", "tradezoo/SPY-1d-v0",
                   "tradezoo/Trading-v0"]
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "tradezoo.envs.trading_env:TradingEnv"
        assert spec.vector_entry_point == "tradezoo.envs.vector_env:TradingVectorEnv"


def test_registration_is_idempotent() -> None:
    before = {env_id: gym.spec(env_id) for env_id in IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-registering would warn "Overriding environment"
        register_envs()
        register_envs()
    assert {env_id: gym.spec(env_id) for env_id in IDS} == before
    assert tradezoo.__version__


def test_registered_ids_build_what_they_promise() -> None:
    btc = gym.make("tradezoo/BTCUSDT-1h-v0").unwrapped
    assert isinstance(btc, TradingEnv)
    assert btc.dataset.symbol == "BTCUSDT" and btc.market.datasets[0].has_funding
    assert btc.config.costs[0].funding and btc.config.costs[0].taker_fee_bps == 5.5
    spy = gym.make("tradezoo/SPY-1d-v0").unwrapped
    assert spy.dataset.symbol == "SPY" and spy.config.costs[0].borrow_rate_annual > 0
    mtf = gym.make("tradezoo/BTCUSDT-MTF-v0").unwrapped
    assert set(mtf.observation_space.spaces) == {"1h", "4h", "1d", "account"}
    vector = gym.make_vec("tradezoo/BTCUSDT-MTF-v0", num_envs=2)
    assert isinstance(vector.unwrapped, TradingVectorEnv)


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def test_import_tradezoo_registers_without_heavy_imports() -> None:
    code = (
        "import json, sys, gymnasium as gym\n"
        "import tradezoo\n"
        "ids = sorted(k for k in gym.registry if k.startswith('tradezoo/'))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'stable_baselines3', 'matplotlib', 'pandas', 'numba'))\n"
        "envs = sorted(m for m in sys.modules if m.startswith('tradezoo.envs.'))\n"
        "print(json.dumps([ids, heavy, envs]))\n"
    )
    ids, heavy, envs = json.loads(_fresh_python(code))
    assert ids == IDS
    assert heavy == []
    assert envs == ["tradezoo.envs.registration"]


def test_module_qualified_id_works_in_a_fresh_interpreter() -> None:
    code = (
        "import json, gymnasium as gym\n"
        "env = gym.make('tradezoo:tradezoo/BTCUSDT-1h-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "obs, reward, terminated, truncated, info = env.step(2)\n"
        "print(json.dumps([list(obs.shape), type(reward).__name__, info['equity'] > 0]))\n"
    )
    shape, reward_type, positive = json.loads(_fresh_python(code))
    assert shape[0] == 64 and reward_type == "float" and positive


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker_passes_for_every_registered_id(env_id: str) -> None:
    # With a spec, check_env also re-makes the env in every declared render mode and renders.
    env = gym.make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("observation", ["box", "dict"])
@pytest.mark.parametrize("scheme", ["target", "signal", "continuous"])
def test_gymnasium_env_checker_passes_for_every_scheme_and_observation(
    scheme: str, observation: str
) -> None:
    extra = {"timeframes": {"1h": 8, "4h": 4}} if observation == "dict" else {}
    env = gym.make("tradezoo/Trading-v0", action_scheme=scheme, observation=observation,
                   window=8, episode_length=30, render_mode="ansi", **extra)
    check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        obs, _reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            break
    assert truncated
    env.close()


def test_checker_sees_no_nan_in_a_long_random_episode() -> None:
    env = gym.make("tradezoo/BTCUSDT-1h-v0", max_leverage=3.0)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    for _ in range(720):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(reward)
        if terminated or truncated:
            break
