"""Trading environments: ``TradingEnv``, the batched vector env, the SB3 VecEnv, registration.

Names are imported lazily on first use, so ``import tradezoo.envs`` (and the registration that
``import tradezoo`` runs) stays cheap: no pandas, torch, Stable-Baselines3 or matplotlib until
an env is built. Stable-Baselines3 is imported only by :func:`make_sb3_vec_env`, numba only
by the batched envs (:mod:`tradezoo.envs.batch_kernel`).

Registered ids (``gymnasium.make``, ``gymnasium.make_vec``): ``tradezoo/Trading-v0``,
``tradezoo/BTCUSDT-1h-v0``, ``tradezoo/SPY-1d-v0``, ``tradezoo/BTCUSDT-MTF-v0``
(see :mod:`tradezoo.envs.registration`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "TradingEnv": "trading_env",
    "TradingVectorEnv": "vector_env",
    "make_sb3_vec_env": "vector_env",
    "Market": "market",
    "MarketDataset": "market",
    "prepare_market": "market",
    "resample_bars": "market",
    "EnvConfig": "core",
    "build_config": "core",
    "register_envs": "registration",
    "ENV_IDS": "registration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tradezoo.envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tradezoo.envs.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
