"""A Stable-Baselines3 ``VecEnv`` on the batched trading core (imports Stable-Baselines3).

Build it with :func:`make_sb3_vec_env`. It is not a ``DummyVecEnv``
of Python envs: one numpy call advances all accounts (:class:`~tradezoo.envs.vector_env.
BatchCore`). SB3 conventions: a finished episode is reset in the same step (the returned
observation is the new episode's first one), its info carries ``"terminal_observation"`` and
``"TimeLimit.truncated"`` (truncated and not terminated), plus this package's ``"metrics"`` and,
when a trade closed, ``"trade"``; rewards are float32. It works behind ``VecMonitor``
(``info_keywords=("metrics",)`` puts the episode metrics into ``model.ep_info_buffer``) and
``VecNormalize``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from tradezoo.envs.core import STEP_INFO_KEYS, TRADE_KEYS, EnvConfig, build_config
from tradezoo.envs.vector_env import BatchCore

__all__ = ["TradingSB3VecEnv", "make_sb3_vec_env"]


class TradingSB3VecEnv(VecEnv):
    """``n_envs`` trading accounts as one SB3 ``VecEnv`` (see the module docstring).

    Args:
        config: validated env settings (:func:`~tradezoo.envs.core.build_config`).
        n_envs: number of accounts.
    """

    def __init__(self, config: EnvConfig, n_envs: int) -> None:
        self.core = BatchCore(config, n_envs)
        self.config = config
        self.render_mode = config.render_mode
        self._actions: np.ndarray | None = None
        super().__init__(self.core.num_envs, config.market.observation_space(),
                         config.action_space())

    # -- VecEnv API ----------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        self.core.seed(self._seeds)
        options = self._options[0] if self._options else {}
        self.core.begin(self.core._all, options)
        self._reset_seeds()
        self._reset_options()
        values = self.core.reset_values()
        columns = [values[key].tolist() for key in values]
        self.reset_infos = [dict(zip(values, row, strict=True)) for row in zip(*columns,
                                                                                strict=True)]
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        core = self.core
        if not core.started.all():
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = self._actions
        if self.core._scheme != 2:
            actions = np.asarray(actions).reshape(self.num_envs)
            if actions.dtype.kind == "f":  # SB3 may hand over float arrays of integers
                actions = actions.astype(np.int64)
        result = core.advance(actions)
        done = result.done
        values = result.values
        columns = [values[key].tolist() for key in STEP_INFO_KEYS]
        infos: list[dict[str, Any]] = [
            dict(zip(STEP_INFO_KEYS, row, strict=True)) for row in zip(*columns, strict=True)
        ]
        if result.trades is not None and np.count_nonzero(result.closed):
            for i in result.closed.nonzero()[0].tolist():
                infos[i]["trade"] = {key: result.trades[key][i].item() for key in TRADE_KEYS}
        if result.liquidated is not None:
            for i in result.liquidated.nonzero()[0].tolist():
                infos[i]["liquidated"] = True
        if np.count_nonzero(done):
            done_idx = done.nonzero()[0]
            terminal = core.observe(done_idx)
            truncated = result.truncated & ~result.terminated
            for j, i in enumerate(done_idx.tolist()):
                info = infos[i]
                if isinstance(terminal, dict):
                    info["terminal_observation"] = {k: v[j] for k, v in terminal.items()}
                else:
                    info["terminal_observation"] = terminal[j]
                info["TimeLimit.truncated"] = bool(truncated[i])
                if i in result.metrics:
                    info["metrics"] = result.metrics[i]
            core.begin(done_idx)
            reset_values = core.reset_values()
            for i in done_idx.tolist():
                self.reset_infos[i] = {key: reset_values[key][i].item() for key in reset_values}
        return core.observe(), result.reward.astype(np.float32), done, infos

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes shared by every account (``render_mode``, ``config``, spaces...)."""
        count = len(list(self._get_indices(indices)))
        if attr_name == "render_mode":
            return [self.config.render_mode] * count
        for owner in (self, self.config):
            if hasattr(owner, attr_name):
                return [getattr(owner, attr_name)] * count
        raise AttributeError(f"TradingSB3VecEnv has no attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"TradingSB3VecEnv.set_attr({attr_name!r}): the accounts share one validated "
            "configuration; build a new env with other settings instead"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Only ``"render"`` is supported (one frame per account)."""
        if method_name != "render":
            raise AttributeError(f"TradingSB3VecEnv.env_method supports 'render' only, got "
                                 f"{method_name!r}")
        return [self.core.render_one(i) for i in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.config.render_mode != "rgb_array":
            return [None] * self.num_envs
        return [self.core.render_one(i) for i in range(self.num_envs)]  # type: ignore[misc]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def make_sb3_vec_env(
    env_id: str | None = None,
    *,
    n_envs: int = 8,
    seed: int | None = None,
    **kwargs: Any,
) -> TradingSB3VecEnv:
    """A Stable-Baselines3 ``VecEnv`` of ``n_envs`` accounts on the batched core.

    Args:
        env_id: a registered id (``"tradezoo/BTCUSDT-1h-v0"``...; its kwargs are the
            defaults) or ``None`` (``kwargs`` must then hold ``data=``).
        n_envs: number of accounts.
        seed: seeds the accounts ``seed, seed + 1, ...`` at the first reset.
        **kwargs: :class:`~tradezoo.envs.trading_env.TradingEnv` arguments.

    Returns:
        :class:`TradingSB3VecEnv`. Works behind ``VecMonitor`` and ``VecNormalize``; infos carry
        ``"terminal_observation"`` and ``"TimeLimit.truncated"`` at episode ends.
    """
    if env_id is not None:
        spec = gym.spec(env_id.split(":", 1)[-1] if ":" in env_id else env_id)
        kwargs = {**spec.kwargs, **kwargs}
    if "data" not in kwargs:
        raise TypeError("make_sb3_vec_env needs an env_id or data= (dataset name, path, frame)")
    data = kwargs.pop("data")
    config = build_config(data, **kwargs)
    venv = TradingSB3VecEnv(config, n_envs)
    if seed is not None:
        venv.seed(seed)
    return venv

