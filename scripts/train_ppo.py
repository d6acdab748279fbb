"""PPO on the bundled BTCUSDT 1h env with a tradezoo policy: plain gymnasium + Stable-Baselines3.

    python scripts/train_ppo.py                          # GRU policy, 50k timesteps (CPU minutes)
    python scripts/train_ppo.py --policy cfc --timesteps 500000 --device cuda
    python scripts/train_ppo.py --quick                  # 1k timesteps: checks that it all runs

The env trains on 720-bar (30-day) episodes from random starts in the train split (the first
70 % of the bars) and is then walked once, deterministically, over the whole test split (the
last 15 %, never seen in training). Fills at the next bar's open, with Bybit's fees, spread,
slippage and funding. `tradezoo train ppo` adds validation, best-model selection, checkpoints
and a warm start from a supervised classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import tradezoo  # noqa: F401  (registers the tradezoo/... env ids)
from tradezoo.backtest import simulate
from tradezoo.policies import POLICY_CLASSES  # GRUPolicy, CfCPolicy, MambaPolicy, ...
from tradezoo.policies.registry import uses_dt, with_time_unit

ENV_ID = "tradezoo/BTCUSDT-1h-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="gru", choices=sorted(POLICY_CLASSES))
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=32, help="backbone width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for small models on small CPUs)")
    parser.add_argument("--out", default="runs/scripts/train_ppo")
    parser.add_argument("--quick", action="store_true", help="1,024 timesteps, 2 envs")
    args = parser.parse_args()
    if args.quick:
        args.timesteps, args.n_envs = 1_024, 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    # Training envs: gymnasium.make(ENV_ID) per account, stepped by SB3's DummyVecEnv. The
    # liquid networks (cfc, ltc) take each bar's elapsed seconds: the env adds them to the
    # observation ("window" + "dt") and time_unit is the bar interval (a regular bar = 1).
    env_kwargs = {"include_dt": uses_dt(args.policy)}
    train_env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=args.seed, env_kwargs=env_kwargs)
    extractor_kwargs = with_time_unit(args.policy, {"d_model": args.d_model},
                                      train_env.envs[0].unwrapped.market.bar_seconds)
    model = PPO(
        POLICY_CLASSES[args.policy],  # the backbone is the policy's features extractor
        train_env,
        n_steps=256,
        batch_size=256,
        learning_rate=3e-4,
        ent_coef=0.01,
        policy_kwargs={"features_extractor_kwargs": extractor_kwargs},
        tensorboard_log=str(out / "tb"),
        seed=args.seed,
        device=args.device,
    )
    print(f"TensorBoard: tensorboard --logdir {out / 'tb'}")
    model.learn(total_timesteps=args.timesteps, progress_bar=not args.quick)
    model.save(out / f"ppo_{args.policy}")

    # Test: one deterministic pass over the whole test split.
    env = gym.make(ENV_ID, split="test", episode_length=None, random_start=False, **env_kwargs)
    obs, info = env.reset(seed=args.seed)
    first_bar, steps, done = info["bar"], 0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _reward, terminated, truncated, info = env.step(int(action))
        steps += 1
        done = terminated or truncated
    metrics = info["metrics"]  # compute_metrics of the episode

    # Buy-and-hold on the same bars, through the same execution engine and costs.
    dataset = env.unwrapped.dataset
    start = dataset.bar_offset + first_bar
    bars = dataset.bars.iloc[start : start + steps + 1]
    hold = simulate(bars, np.ones(len(bars))).metrics
    print(f"test split, {args.policy} PPO ({args.timesteps:,} timesteps): total return "
          f"{metrics['total_return']:+.2%} (buy & hold {hold.total_return:+.2%}), Sharpe "
          f"{metrics['sharpe']:.2f} ({hold.sharpe:.2f}), max drawdown "
          f"{metrics['max_drawdown']:.2%} ({hold.max_drawdown:.2%}), "
          f"{int(metrics['n_trades'])} trades")
    print(f"model: {out / f'ppo_{args.policy}.zip'}")


if __name__ == "__main__":
    main()
