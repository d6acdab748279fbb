"""Stable-Baselines3: env checker, the batched SB3 VecEnv, VecMonitor/VecNormalize, PPO,
make_vec_env and SubprocVecEnv workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecMonitor,
    VecNormalize,
)

import tradezoo  # noqa: F401  (registers the envs)
from tradezoo.envs.registration import ENV_IDS
from tradezoo.envs.sb3_vec_env import make_sb3_vec_env
from tradezoo.envs.vector_env import TradingVectorEnv

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:Your observation")  # SB3: 2-D Box is fine


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_sb3_env_checker_passes_for_every_registered_id(env_id: str) -> None:
    check_env(gym.make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("observation", ["box", "dict"])
@pytest.mark.parametrize("scheme", ["target", "signal", "continuous"])
def test_sb3_env_checker_passes_for_every_scheme_and_observation(
    scheme: str, observation: str
) -> None:
    extra = {"timeframes": ["1h", "4h"]} if observation == "dict" else {}
    env = gym.make("tradezoo/Trading-v0", action_scheme=scheme, observation=observation,
                   window=8, episode_length=30, **extra)
    check_env(env.unwrapped, warn=True)


def test_sb3_vec_env_is_batched_and_reports_episode_ends() -> None:
    venv = make_sb3_vec_env("tradezoo/BTCUSDT-1h-v0", n_envs=4, seed=3, window=8,
                            episode_length=12, min_equity_fraction=0.0)
    assert isinstance(venv, VecEnv) and not isinstance(venv, DummyVecEnv)
    reference = TradingVectorEnv(4, autoreset_mode="SameStep", data="bybit-btcusdt-1h",
                                 window=8, episode_length=12, min_equity_fraction=0.0)
    obs = venv.reset()
    ref_obs, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(30):
        actions = rng.integers(0, 3, 4)
        obs, rewards, dones, infos = venv.step(actions)
        ref_obs, ref_rewards, terminated, truncated, ref_info = reference.step(actions)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(rewards, ref_rewards.astype(np.float32))
        np.testing.assert_array_equal(dones, terminated | truncated)
        assert rewards.dtype == np.float32 and len(infos) == 4
        for i, info in enumerate(infos):
            assert info["equity"] > 0
            if dones[i]:
                ends += 1
                np.testing.assert_array_equal(info["terminal_observation"],
                                              ref_info["final_obs"][i])
                assert info["TimeLimit.truncated"] is True
                assert "sharpe" in info["metrics"]
                assert venv.reset_infos[i]["equity"] == 1.0
    assert ends == 8  # two full episodes per account


def test_sb3_vec_env_behind_vec_monitor_and_vec_normalize() -> None:
    venv = make_sb3_vec_env(data="yahoo-spy-1d", n_envs=3, seed=0, window=8, episode_length=10,
                            observation="dict", timeframes={"1d": 8, "1w": 2})
    venv = VecNormalize(VecMonitor(venv, info_keywords=("metrics",)))
    obs = venv.reset()
    assert set(obs) == {"1d", "1w", "account"}
    assert obs["1d"].shape == (3, *venv.observation_space["1d"].shape)
    episodes = []
    for _ in range(25):
        obs, _rewards, _dones, infos = venv.step(np.array([2, 0, 1]))
        episodes += [info["episode"] for info in infos if "episode" in info]
        assert all(np.isfinite(v).all() for v in obs.values())
    assert len(episodes) == 6
    assert episodes[0]["l"] == 10 and "total_return" in episodes[0]["metrics"]


@pytest.mark.parametrize(
    ("env_id", "policy", "kwargs"),
    [
        ("tradezoo/BTCUSDT-1h-v0", "MlpPolicy", {"window": 16, "episode_length": 128}),
        ("tradezoo/BTCUSDT-MTF-v0", "MultiInputPolicy",
         {"timeframes": {"1h": 16, "4h": 8, "1d": 4}, "episode_length": 128}),
    ],
)
def test_ppo_trains_on_the_sb3_vec_env_and_logs_episode_metrics(
    env_id: str, policy: str, kwargs: dict
) -> None:
    venv = VecMonitor(make_sb3_vec_env(env_id, n_envs=4, seed=0, **kwargs),
                      info_keywords=("metrics",))
    model = PPO(policy, venv, n_steps=512, batch_size=512, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=2048)
    assert model.num_timesteps == 2048
    assert len(model.ep_info_buffer) == 2048 // 128
    info = model.ep_info_buffer[-1]
    assert info["l"] == 128 and np.isfinite(info["r"])
    assert np.isfinite(info["metrics"]["max_drawdown"])


def test_registered_ids_work_through_make_vec_env() -> None:
    venv = make_vec_env("tradezoo/SPY-1d-v0", n_envs=2, seed=0, env_kwargs={"window": 8})
    assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]  # injected by SB3
    venv.reset()
    obs, _rewards, _dones, infos = venv.step(np.array([2, 0]))
    assert obs.shape[:2] == (2, 8) and infos[0]["fee"] > 0
    frame = venv.env_method("render", indices=[0])[0]
    assert frame.dtype == np.uint8 and frame.shape[2] == 3
    venv.close()


def test_module_qualified_id_in_spawned_subprocess_workers() -> None:
    # One worker is enough to show a spawned interpreter can build the env (each worker
    # imports torch through SB3, which is what makes this test slow).
    venv = make_vec_env("tradezoo:tradezoo/BTCUSDT-1h-v0", n_envs=1, seed=0,
                        vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "spawn"},
                        env_kwargs={"window": 8, "episode_length": 5})
    try:
        obs = venv.reset()
        assert obs.shape[:2] == (1, 8)
        for _ in range(5):
            obs, _rewards, dones, infos = venv.step(np.array([2]))
        assert dones.all() and "metrics" in infos[0] and "terminal_observation" in infos[0]
    finally:
        venv.close()


def test_sb3_and_torch_are_imported_lazily() -> None:
    code = (
        "import json, sys\n"
        "import tradezoo.envs\n"
        "from tradezoo.envs import TradingEnv, TradingVectorEnv, make_sb3_vec_env\n"
        "env = TradingVectorEnv(2, data='bybit-btcusdt-1h', window=8, episode_length=5)\n"
        "env.reset(seed=0)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'stable_baselines3'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
