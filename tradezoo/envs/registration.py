"""Gymnasium registration of the tradezoo envs (run by ``import tradezoo``; idempotent).

Importing this module imports gymnasium only: entry points are strings, so no env module,
pandas, torch or Stable-Baselines3 is loaded until an env is made.

========================  ======================================================================
id                        what it is
========================  ======================================================================
tradezoo/Trading-v0       the generic :class:`~tradezoo.envs.trading_env.TradingEnv`: every
                          keyword argument is passed through; ``data`` defaults to the bundled
                          ``"bybit-btcusdt-1h"``.
tradezoo/BTCUSDT-1h-v0    bundled Bybit BTCUSDT perpetual, 1h, with its 8-hourly funding and
                          Bybit linear costs (taker 5.5 bps, half spread 0.5 bp, slippage 1 bp);
                          720-bar (30-day) episodes from seeded random starts in the train split.
tradezoo/SPY-1d-v0        bundled SPY daily bars (dividend and split adjusted) with equity
                          costs (1 bp fee, 0.5 bp half spread, 1 bp slippage, 2 % annual borrow
                          on shorts); 252-bar (one-year) episodes, window 32.
tradezoo/BTCUSDT-MTF-v0   BTCUSDT with a dict observation: the last 64 closed 1h bars, 32 closed
                          4h bars and 16 closed daily bars, plus the account vector.
========================  ======================================================================

Each id also has a ``vector_entry_point`` (:class:`~tradezoo.envs.vector_env.TradingVectorEnv`),
so ``gymnasium.make_vec(id, num_envs=N)`` steps N accounts in one numpy call. From a fresh
interpreter or a ``SubprocVecEnv(start_method="spawn")`` worker, use the module-qualified id,
``gymnasium.make("tradezoo:tradezoo/BTCUSDT-1h-v0")``, which imports tradezoo (and so registers
the envs) first.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

ENTRY_POINT = "tradezoo.envs.trading_env:TradingEnv"
VECTOR_ENTRY_POINT = "tradezoo.envs.vector_env:TradingVectorEnv"

ENV_IDS: dict[str, dict[str, Any]] = {
    "tradezoo/Trading-v0": {"data": "bybit-btcusdt-1h"},
    "tradezoo/BTCUSDT-1h-v0": {
        "data": "bybit-btcusdt-1h",
        "window": 64,
        "episode_length": 720,
    },
    "tradezoo/SPY-1d-v0": {
        "data": "yahoo-spy-1d",
        "window": 32,
        "episode_length": 252,
    },
    "tradezoo/BTCUSDT-MTF-v0": {
        "data": "bybit-btcusdt-1h",
        "observation": "dict",
        "timeframes": {"1h": 64, "4h": 32, "1d": 16},
        "episode_length": 720,
    },
}
"""Registered ids and their default keyword arguments (``gymnasium.make`` kwargs override)."""


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS` that is not registered yet (safe to call again)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs=dict(kwargs),
        )
