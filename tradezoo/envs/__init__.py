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

# name -> module of tradezoo.envs, or a full module path (a name the data layer owns).
_EXPORTS: dict[str, str] = {
    "TradingEnv": "trading_env",
    "TradingVectorEnv": "vector_env",
    "make_sb3_vec_env": "sb3_vec_env",
    "Market": "market",
    "MarketDataset": "market",
    "prepare_market": "market",
    "resample_bars": "tradezoo.data.prepare",
    "EnvConfig": "core",
    "build_config": "core",
    "register_envs": "registration",
    "ENV_IDS": "registration",
}

_IMPORTED_ON_CALL: frozenset[str] = frozenset({"make_sb3_vec_env"})
"""Names whose module imports Stable-Baselines3 at import time: the package hands out a
function that imports the module on its first call, so importing the name stays cheap."""

__all__ = sorted(_EXPORTS)


def _module_of(name: str) -> Any:
    module_name = _EXPORTS[name]
    if "." not in module_name:
        module_name = f"tradezoo.envs.{module_name}"
    return importlib.import_module(module_name)


def _imported_on_call(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_module_of(name), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = (f"``tradezoo.envs.{_EXPORTS[name]}.{name}`` (the module is imported on the "
                    "first call; see its documentation).")
    return call


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tradezoo.envs' has no attribute {name!r}")
    value = _imported_on_call(name) if name in _IMPORTED_ON_CALL else getattr(
        _module_of(name), name
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
