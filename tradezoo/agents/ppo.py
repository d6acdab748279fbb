"""PPO fine-tuning of any zoo architecture on the trading env, warm-startable from a classifier.

Training (:func:`train_ppo`)::

    train env  = VecMonitor(make_sb3_vec_env(data=bars, split="train", n_envs=N,
                            episode_length=..., feature_spec=data.feature_spec,
                            scaler=data.scaler, window=data.window, costs=data.costs))
    policy     = POLICY_CLASSES[arch] with policy_kwargs_for(arch, features_dim,
                            net_arch=dict(pi=pi_layers, vf=vf_layers), **arch_config)
    model      = stable_baselines3.PPO(policy, train env, seed=seed, ...)
    model.learn(timesteps, callbacks=[trading metrics + hparams, validation eval (best model),
                                      periodic checkpoints, backbone freeze, non-finite guard])

The env gets the :class:`~tradezoo.agents.data.PreparedData`'s bars, feature spec, **scaler**
and window, so its observations are bit-identical to the supervised trainer's inputs (the
account columns aside). For an architecture that uses ``dt`` (``ltc``, ``cfc``) the envs are
built with ``include_dt=True`` (observations: ``"window"`` and ``"dt"``, the elapsed seconds per
bar, unscaled) and the backbone's ``time_unit`` defaults to the data's bar interval
(:func:`~tradezoo.policies.registry.with_time_unit`); rollouts and updates both feed the
extractor that Dict, which hands ``dt`` to the backbone. The sidecar's ``env`` records
``include_dt`` (absent: ``False``); a warm start takes the classifier checkpoint's.
The policy's action head reads the extractor output directly
(``pi_layers=()`` by default): ``action_net = Linear(features_dim, 3)``, the shape of the
supervised classifier's head.

Warm start (``init_from=<supervised checkpoint>``): the checkpoint's architecture, feature
spec, window, feature count and scaler must match the data (a mismatch is a
:class:`~tradezoo.agents.checkpoint.CheckpointError` naming it); the policy is built with the
checkpoint's backbone config and ``features_dim`` and gets::

    policy.features_extractor <- checkpoint["state_dict"]["extractor.*"]
    policy.action_net         <- checkpoint["state_dict"]["head.*"]   (class order = actions)

so before any update ``argmax`` of the policy's logits, the deterministic action, equals the
classifier's prediction on every observation (tested). The value head starts fresh.
``freeze_backbone_updates=k`` keeps the extractor frozen for the first ``k`` updates
(:class:`~tradezoo.agents.callbacks.FreezeBackboneCallback`), so the fresh value head does not
push large gradients through the pretrained backbone at the start.

Run directory (``out_dir``)::

    tb/                       TensorBoard (SB3 rollout/ and train/ scalars, trading/*, eval/*,
                              eval/equity_curve figure, HParams)
    best_model.zip + .pt      best deterministic validation mean reward
    final_model.zip + .pt     the model at the end of training
    checkpoints/ppo_<t>_steps.zip + .pt   every checkpoint_freq timesteps
    interrupted.zip + .pt     written when training stops early: Ctrl-C or any error
                              (resume with resume_from=; module supervised)

PPO checkpoints. Every ``X.zip`` (SB3's own format: weights, optimiser state, hyperparameters,
``num_timesteps``; still loadable by SB3's ``PPO.load`` for those who trust the file) has a
sidecar ``X.pt``: a tradezoo checkpoint (:mod:`tradezoo.agents.checkpoint`) of ``kind="ppo"``
holding the policy's ``state_dict`` plus everything needed to rebuild the policy, the PPO
model and the env on any split without unpickling code (``torch.load(weights_only=True)``):
``arch``, ``arch_config``, ``features_dim``, ``net_arch``, ``feature_spec``, ``scaler``,
``window``, ``splits``, ``dataset``, ``costs``, ``env`` (action scheme, leverage, shorting,
reward, rebalance, fill, episode length, split fractions), ``action_scheme``, ``training``
(:class:`PPOConfig`: every PPO hyperparameter), ``seed``, ``num_timesteps`` (the zip's step),
``sb3_zip``, ``sb3_zip_sha256`` (the zip's content hash), ``sb3_state`` (SB3's update and
episode counters and recent episodes), ``best`` (the best validation mean reward so far and
its timestep), ``init_from``. :func:`save_ppo` writes the pair atomically; every reader
verifies it (:func:`~tradezoo.agents.checkpoint.verify_sb3_pair`).

Nothing reads a zip with SB3's ``PPO.load``, which unpickles the zip's ``data`` record: a
resume (:func:`train_ppo` with ``resume_from=``) builds the model from the sidecar's plain
data and loads the zip's ``policy.pth`` and ``policy.optimizer.pth`` with
``torch.load(weights_only=True)``, then restores ``num_timesteps``, SB3's counters and the
best score, and reseeds with ``seed + num_timesteps`` (the optimiser state, step and RNG
seeding equal a ``PPO.load`` resume). :func:`load_ppo_policy` rebuilds the policy from either
file; :func:`evaluate_ppo` backtests it.

Evaluation (:func:`evaluate_ppo`): the deterministic policy walks one full sequential pass of
``TradingEnv(split=...)`` (the split's every decision bar, as the supervised evaluation), and
its target positions are replayed through :func:`tradezoo.backtest.simulate`, the same
execution engine: the replay's equity equals the env's (to 1e-9, tested), and the result
carries the metrics and the buy-and-hold benchmark on the same bars and costs.

Determinism: ``seed`` seeds Python, numpy, torch (SB3's ``set_random_seed``), the action space
and the env accounts; on CPU the same seed gives the same first update (tested) and the same
run.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch

from tradezoo.agents.callbacks import (
    FreezeBackboneCallback,
    NonFiniteGuardCallback,
    PeriodicCheckpointCallback,
    TradingEvalCallback,
    TradingMetricsCallback,
)
from tradezoo.agents.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    check_feature_spec,
    check_payload,
    checkpoint_dataset_names,
    data_payload,
    input_timeframes,
    label_spec_from_checkpoint,
    load_checkpoint,
    load_weights,
    saved_arch_config,
    sb3_zip_tensors,
    serialize_checkpoint,
    timeframe_scalers_from_checkpoint,
    verify_sb3_pair,
    versions,
    write_files_atomically,
)
from tradezoo.agents.data import (
    PreparedData,
    check_warm_start_task,
    observation_space,
    with_dt_space,
)
from tradezoo.agents.determinism import determinism_scope, use_deterministic
from tradezoo.agents.devices import resolve_device
from tradezoo.agents.multi import MultiData, as_datasets, check_known_asset, checkpoint_scaler
from tradezoo.agents.rollout import acting_policy, choose_rollout_device
from tradezoo.agents.rundir import save_where_possible
from tradezoo.agents.supervised import TrainingInterrupted, stop_training
from tradezoo.agents.tensorboard import print_tensorboard_hint
from tradezoo.agents.validation import coerce_config, from_known_keys
from tradezoo.backtest.costs import CostModel
from tradezoo.data.checks import FieldChecks
from tradezoo.data.elapsed import is_dt_key
from tradezoo.data.features import FeatureScaler
from tradezoo.policies.registry import get_architecture, portable_config, uses_dt, with_time_unit

if TYPE_CHECKING:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "RESUME_FIXED_KEYS",
    "LoadedPPOPolicy",
    "PPOConfig",
    "PPOEvaluation",
    "PPOResult",
    "env_kwargs",
    "evaluate_ppo",
    "load_ppo_policy",
    "make_eval_env",
    "make_ppo",
    "make_train_env",
    "policy_includes_dt",
    "save_ppo",
    "train_ppo",
    "warm_start_policy",
]

ActionSchemeName = Literal["target", "signal", "continuous"]
PPO_KIND = "ppo"
FILL = "next_open"
INITIAL_EQUITY = 1.0


# ------------------------------------------------------------------------------ config


@dataclass
class PPOConfig:
    """Settings of :func:`train_ppo` (SB3 PPO hyperparameters, env, policy, monitoring).

    Attributes:
        timesteps: total env steps to train for (over all envs; rounded up by SB3 to whole
            rollouts of ``n_envs * n_steps``), >= 1. On resume, the total including the
            steps already done.
        n_envs: parallel training accounts (one batched VecEnv), >= 1.
        n_steps: steps per env per rollout, >= 1.
        batch_size: minibatch size, 2 <= batch_size <= ``n_envs * n_steps``.
        n_epochs: passes over each rollout per update, >= 1.
        lr: Adam learning rate, > 0.
        gamma: discount in [0, 1]; gae_lambda: GAE lambda in [0, 1].
        clip_range: PPO clip range, > 0.
        ent_coef, vf_coef: entropy and value loss weights, >= 0.
        max_grad_norm: gradient clipping norm, > 0.
        target_kl: early stop of an update's epochs above this KL (``None``: off).
        episode_length: steps per training episode (random starts in the train split), >= 2.
        window: bars per observation; ``None`` takes the data's window (another value is an
            error: the data was prepared for one window).
        features_dim: extractor output width; ``None``: 64, or the warm-start checkpoint's.
        arch_config: the architecture's config fields (``d_model``, ...); with ``init_from``
            they must agree with the checkpoint's.
        pi_layers: hidden layers of the policy head (``()``: the action head reads the
            extractor output, as the supervised classifier's head; required for warm start).
        vf_layers: hidden layers of the value head.
        action_scheme: ``"target"`` (0 short, 1 flat, 2 long), ``"signal"`` (1 keeps the
            position) or ``"continuous"`` (no warm start).
        max_leverage: exposure of a full position, > 0; allow_short: actions may go short.
        reward: the env's reward (``"log_return"``, ``"pnl"``, ``"differential_sharpe"``).
        rebalance: ``"on_change"`` or ``"every_bar"``.
        eval_freq: timesteps between validation evaluations; the final weights are evaluated
            too (0: no evaluation at all, no best model).
        eval_episodes: validation episodes per evaluation (run in parallel), >= 1.
        eval_episode_length: steps per validation episode (seeded random starts, the same
            episodes at every evaluation); ``None``: one full pass of the validation split
            (``eval_episodes`` must then be 1).
        checkpoint_freq: timesteps between checkpoints (0: none).
        freeze_backbone_updates: PPO updates with the features extractor frozen, >= 0 (the
            first updates of a run; a resumed run does not freeze again).
        log_interval: rollouts between SB3 log dumps, >= 1.
        tensorboard: write TensorBoard logs under ``out_dir/tb``.
        eval_figure: log the validation equity-curve figure at each evaluation.
        deterministic: deterministic algorithms and cuDNN settings for the run; every run
            restores the process's flags when it ends, also those SB3's seeding sets
            (:mod:`tradezoo.agents.determinism`).
    """

    timesteps: int = 100_352  # 49 rollouts of 8 envs x 256 steps: the main job's budget
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 4
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    episode_length: int = 720
    window: int | None = None
    features_dim: int | None = None
    arch_config: dict[str, Any] = field(default_factory=dict)
    pi_layers: tuple[int, ...] = ()
    vf_layers: tuple[int, ...] = (64,)
    action_scheme: ActionSchemeName = "target"
    max_leverage: float = 1.0
    allow_short: bool = True
    reward: str = "log_return"
    rebalance: str = "on_change"
    eval_freq: int = 20_480  # every 10 rollouts
    eval_episodes: int = 1
    eval_episode_length: int | None = None
    checkpoint_freq: int = 51_200  # every 25 rollouts
    freeze_backbone_updates: int = 0
    log_interval: int = 1
    tensorboard: bool = True
    eval_figure: bool = True
    deterministic: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.integer("timesteps", 1)
        check.integer("n_envs", 1)
        check.integer("n_steps", 1)
        check.integer("batch_size", 2)
        check.integer("n_epochs", 1)
        check.number("lr", 0.0, open_low=True)
        check.number("gamma", 0.0, 1.0)
        check.number("gae_lambda", 0.0, 1.0)
        check.number("clip_range", 0.0, open_low=True)
        check.number("ent_coef", 0.0)
        check.number("vf_coef", 0.0)
        check.number("max_grad_norm", 0.0, open_low=True)
        check.number("target_kl", 0.0, open_low=True, optional=True)
        check.integer("episode_length", 2)
        check.integer("window", 1, optional=True)
        check.integer("features_dim", 1, optional=True)
        check.require(isinstance(self.arch_config, Mapping), f"arch_config must be a mapping "
                      f"of the architecture's config fields, got {self.arch_config!r}")
        self.arch_config = dict(self.arch_config)
        check.widths("pi_layers")
        check.widths("vf_layers")
        check.choice("action_scheme", ("target", "signal", "continuous"))
        check.number("max_leverage", 0.0, open_low=True)
        check.boolean("allow_short")
        check.choice("reward", ("log_return", "pnl", "differential_sharpe"))
        check.choice("rebalance", ("on_change", "every_bar"))
        check.integer("eval_freq", 0)
        check.integer("eval_episodes", 1)
        check.integer("eval_episode_length", 2, optional=True)
        check.integer("checkpoint_freq", 0)
        check.integer("freeze_backbone_updates", 0)
        check.integer("log_interval", 1)
        check.boolean("tensorboard")
        check.boolean("eval_figure")
        check.boolean("deterministic")
        check.require(self.batch_size <= self.rollout_size,
                      f"batch_size ({self.batch_size}) must be <= n_envs * n_steps "
                      f"({self.n_envs} * {self.n_steps} = {self.rollout_size}), the rollout size")
        check.require(self.eval_episode_length is not None or self.eval_episodes == 1,
                      f"eval_episodes={self.eval_episodes} needs eval_episode_length: without it "
                      "an evaluation is one deterministic full pass of the validation split")

    @property
    def rollout_size(self) -> int:
        """Timesteps per rollout (and per update): ``n_envs * n_steps``."""
        return self.n_envs * self.n_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints, JSON and YAML."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PPOConfig:
        """Build from a dict; unknown keys are a ``ValueError`` listing the valid ones."""
        return from_known_keys(cls, data, "PPO training")


RESUME_FIXED_KEYS: tuple[str, ...] = (
    "n_steps", "batch_size", "n_epochs", "lr", "gamma", "gae_lambda", "clip_range", "ent_coef",
    "vf_coef", "max_grad_norm", "target_kl", "features_dim", "arch_config", "pi_layers",
    "vf_layers", "action_scheme", "max_leverage", "allow_short", "reward", "rebalance",
)
"""Config keys a resumed run must share with its checkpoint: SB3 restores the saved
hyperparameters and weights, so a different value would be silently ignored or not fit."""



# ------------------------------------------------------------------------------- envs


def env_kwargs(data: PreparedData | MultiData | Sequence[PreparedData], config: PPOConfig,
               split: str = "train", *, costs: CostModel | None = None,
               include_dt: bool = False) -> dict[str, Any]:
    """``TradingEnv``/``make_sb3_vec_env`` keyword arguments for ``data`` and ``config``.

    The env sees ``data``'s validated bars, feature spec, fitted scaler, window, split
    fractions and cost model, so its feature columns equal ``data.scaled`` bit for bit. Data
    with multi-timeframe inputs (:meth:`PreparedData.for_model`) gives the dict observation of
    its timeframes, scaled by the data's scaler of each, so they equal the supervised inputs.
    ``include_dt``: observations carry each window's elapsed seconds (the policies of the
    liquid networks; :func:`policy_includes_dt`). ``episode_length`` is left to the caller.
    Several datasets make one env over all of them (each episode draws one, uniformly), each
    with its own bars, cost model and a scaler the env fits on that dataset's train split
    (the same rows, so the same scaler, as its preparation's).
    """
    parts = as_datasets(data)
    if len(parts) > 1:
        first = parts[0]
        if any(p.timeframe_windows for p in parts):
            raise ValueError("multi-timeframe inputs (msa's timeframes) take one dataset; "
                             "train msa across several datasets with its Box window "
                             "(docs/multi-asset.md)")
        return {
            "include_dt": bool(include_dt),
            "data": [p.bars for p in parts],
            "feature_spec": first.feature_spec,
            "scaler": None,
            "window": first.window,
            "split": split,
            "split_fractions": first.split_fractions,
            "costs": costs if costs is not None else [p.costs for p in parts],
            **_env_rules(config),
        }
    data = parts[0]
    inputs: dict[str, Any] = {"scaler": data.scaler}
    if data.timeframe_windows:
        inputs = {"scaler": data.timeframe_scalers(), "observation": "dict",
                  "timeframes": dict(data.timeframe_windows)}
    return {
        "include_dt": bool(include_dt),
        "data": data.bars,
        "feature_spec": data.feature_spec,
        **inputs,
        "window": data.window,
        "split": data.env_split(split),  # type: ignore[arg-type]
        "split_fractions": data.split_fractions,
        "costs": costs if costs is not None else data.costs,
        **_env_rules(config),
    }


def _env_rules(config: PPOConfig) -> dict[str, Any]:
    """The trading rules every env of a run is built with (also recorded in the sidecar)."""
    return {
        "action_scheme": config.action_scheme,
        "max_leverage": config.max_leverage,
        "allow_short": config.allow_short,
        "reward": config.reward,
        "rebalance": config.rebalance,
        "fill": FILL,
        "initial_equity": INITIAL_EQUITY,
    }


def make_train_env(data: PreparedData | Sequence[PreparedData], config: PPOConfig,
                   seed: int, *, include_dt: bool = False) -> VecEnv:
    """``VecMonitor`` over ``config.n_envs`` training accounts on the train split (random
    episode starts, ``config.episode_length`` steps), seeded ``seed, seed + 1, ...``;
    ``include_dt`` as in :func:`env_kwargs`."""
    from stable_baselines3.common.vec_env import VecMonitor

    from tradezoo.envs.sb3_vec_env import make_sb3_vec_env

    venv = make_sb3_vec_env(n_envs=config.n_envs, seed=seed,
                            episode_length=config.episode_length,
                            **env_kwargs(data, config, include_dt=include_dt))
    return VecMonitor(venv)


def make_eval_env(data: PreparedData | Sequence[PreparedData], config: PPOConfig,
                  split: str = "val", *, include_dt: bool = False
                  ) -> VecEnv | dict[str, VecEnv]:
    """The evaluation VecEnv on ``split``: one account walking the whole split
    (``eval_episode_length=None``) or ``eval_episodes`` accounts with random starts;
    ``include_dt`` as in :func:`env_kwargs`; for several datasets, one such env per dataset
    (by name), which the evaluation pools."""
    from tradezoo.envs.sb3_vec_env import make_sb3_vec_env

    parts = as_datasets(data)
    if len(parts) > 1:
        return {p.name: make_eval_env(p, config, split, include_dt=include_dt)  # type: ignore[misc]
                for p in parts}
    data = parts[0]
    kwargs = env_kwargs(data, config, split, include_dt=include_dt)
    if config.eval_episode_length is None:
        return make_sb3_vec_env(n_envs=1, episode_length=None, random_start=False, **kwargs)
    return make_sb3_vec_env(n_envs=config.eval_episodes,
                            episode_length=config.eval_episode_length, random_start=True,
                            **kwargs)


def policy_includes_dt(space: Any) -> bool:
    """Whether a policy with observation space ``space`` takes the env's ``include_dt=True``
    observation (a Dict with elapsed-time keys, :mod:`tradezoo.data.elapsed`)."""
    from gymnasium import spaces

    return isinstance(space, spaces.Dict) and any(is_dt_key(k) for k in space.spaces)


# ---------------------------------------------------------------------- model building


def _check_data(data: Any) -> PreparedData:
    if not isinstance(data, PreparedData):
        raise TypeError(f"data must be a PreparedData (see prepare_data), got "
                        f"{type(data).__name__}")
    return data


def _scalers_equal(a: FeatureScaler, b: FeatureScaler) -> bool:
    """Exact equality of two scalers' ``to_dict()`` (numbers compared as float64 arrays)."""
    left, right = a.to_dict(), b.to_dict()
    if set(left) != set(right):
        return False
    for key in left:
        x, y = left[key], right[key]
        try:
            xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):  # names and other non-numeric entries
            if x != y:
                return False
            continue
        if xs.shape != ys.shape or not np.array_equal(xs, ys, equal_nan=True):
            return False
    return True


def _check_checkpoint_fits(ckpt: Mapping[str, Any],
                           data: PreparedData | MultiData | Sequence[PreparedData]) -> None:
    """Window, feature count, input timeframes and scalers of a checkpoint against the data
    (names the field); a multi-dataset checkpoint against the same datasets, each with its
    own scaler."""
    where = ckpt.get("path", "<in memory>")
    parts = as_datasets(data)
    names = checkpoint_dataset_names(ckpt)
    if ckpt.get("asset_embedding"):
        raise CheckpointError(
            f"checkpoint {where}: its model has an asset embedding, which a PPO policy cannot "
            "use (the env's observation carries no asset id); warm-start from a model "
            "trained without supervised.asset_embedding")
    if len(parts) > 1 or len(names) > 1:
        if tuple(p.name for p in parts) != names:
            raise CheckpointError(f"checkpoint {where}: trained on datasets {list(names)}, the "
                                  f"data is {[p.name for p in parts]}")
        for part in parts:
            _check_checkpoint_fits({**ckpt, "datasets": None,
                                    "scaler": checkpoint_scaler(ckpt, part).to_dict()}, part)
        return
    data = parts[0]
    for key, have in (("window", data.window), ("n_features", data.n_features)):
        if int(ckpt[key]) != have:
            raise CheckpointError(f"checkpoint {where}: {key} mismatch: the checkpoint has "
                                  f"{ckpt[key]}, the data has {have}")
    saved_tfs = input_timeframes(ckpt)
    if saved_tfs != data.timeframe_windows:
        def describe(tfs: Mapping[str, int]) -> str:
            return f"timeframes {dict(tfs)}" if tfs else "Box windows (no timeframes)"

        raise CheckpointError(
            f"checkpoint {where}: input mismatch: the checkpoint's {ckpt['arch']!r} model takes "
            f"{describe(saved_tfs)}, this run gives it {describe(data.timeframe_windows)} "
            "(a checkpoint without recorded timeframes was trained on Box windows; retrain "
            "it with this version)"
        )
    scalers = {"base": (FeatureScaler.from_dict(ckpt["scaler"]), data.scaler)}
    data_tf_scalers = data.timeframe_scalers()
    for name, saved in timeframe_scalers_from_checkpoint(ckpt).items():
        scalers[name] = (saved, data_tf_scalers[name])
    for name, (saved, have) in scalers.items():
        if not _scalers_equal(saved, have):
            what = "feature scaler" if name == "base" else f"{name} feature scaler"
            raise CheckpointError(
                f"checkpoint {where}: scaler mismatch: its {what} differs from the data's "
                "(fitted on other data or other split fractions); prepare the data as for the "
                "checkpoint"
            )


def _policy_kwargs(arch: str, features_dim: int, arch_config: Mapping[str, Any],
                   pi_layers: Any, vf_layers: Any) -> dict[str, Any]:
    from tradezoo.policies.sb3 import policy_kwargs_for

    return policy_kwargs_for(arch, features_dim,
                             net_arch={"pi": list(pi_layers), "vf": list(vf_layers)},
                             **dict(arch_config))


def _warm_start_settings(
    init_from: str | Path, arch: str, data: PreparedData | Sequence[PreparedData],
    config: PPOConfig
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Check a supervised checkpoint against ``arch``, ``data`` and ``config``.

    Returns:
        ``(arch_config, features_dim, checkpoint)``.
    """
    ckpt = load_checkpoint(init_from, expect_arch=arch,
                           expect_feature_spec=as_datasets(data)[0].feature_spec,
                           expect_kind="supervised")
    where = ckpt["path"]
    check_warm_start_task(label_spec_from_checkpoint(ckpt).task, f"init_from {where}")
    saved_cfg = dict(ckpt["arch_config"])
    _check_checkpoint_fits(ckpt, tuple(p.for_model(arch, saved_cfg) for p in as_datasets(data)))
    clashes = [f"{k}: checkpoint {saved_cfg.get(k, '<absent>')!r} vs config {v!r}"
               for k, v in config.arch_config.items()
               if k not in saved_cfg or saved_cfg[k] != v]
    if clashes:
        raise CheckpointError(f"checkpoint {where}: architecture config mismatch "
                              f"({'; '.join(clashes)})")
    features_dim = int(ckpt.get("features_dim", 64))
    if config.features_dim is not None and config.features_dim != features_dim:
        raise CheckpointError(f"checkpoint {where}: features_dim mismatch: the checkpoint has "
                              f"{features_dim}, the config asks for {config.features_dim}")
    if config.pi_layers:
        raise ValueError(
            f"warm start needs pi_layers=() (the action head must be the classifier's "
            f"Linear(features_dim, 3)), got pi_layers={list(config.pi_layers)}"
        )
    if config.action_scheme == "continuous":
        raise ValueError("warm start needs a discrete action scheme ('target' or 'signal'): the "
                         "classifier's classes are the actions sell, hold, buy")
    return saved_cfg, features_dim, ckpt


def warm_start_policy(policy: ActorCriticPolicy, checkpoint: Mapping[str, Any]) -> None:
    """Copy a supervised checkpoint's extractor into ``policy.features_extractor`` and its
    head into ``policy.action_net`` (strictly: every tensor must fit).

    Raises:
        CheckpointError: the weights do not fit the policy (names the part and the keys).
    """
    state = checkpoint["state_dict"]
    where = checkpoint.get("path", "<in memory>")
    parts = {"extractor.": policy.features_extractor, "head.": policy.action_net}
    for prefix, module in parts.items():
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            target = "features extractor" if prefix == "extractor." else "action head"
            raise CheckpointError(
                f"checkpoint {where}: its {prefix[:-1]} weights do not fit the policy's "
                f"{target}: {str(exc).splitlines()[0]}"
            ) from exc


def make_ppo(
    data: PreparedData | MultiData | Sequence[PreparedData],
    arch: str,
    *,
    config: PPOConfig | Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    init_from: str | Path | None = None,
    env: VecEnv | None = None,
) -> PPO:
    """Build (do not train) the SB3 PPO model :func:`train_ppo` trains.

    Args:
        data: prepared data (its train split feeds the env), or several datasets (one env
            over all of them).
        arch: a registry name.
        config: :class:`PPOConfig` or its dict.
        seed: seeds Python, numpy, torch, the action space and the env accounts.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        init_from: a supervised checkpoint to warm-start from (module docstring).
        env: the training VecEnv (default :func:`make_train_env`).

    Returns:
        The PPO model; ``model.tradezoo`` holds ``{"arch", "arch_config", "features_dim",
        "init_from"}`` (what the checkpoints record).
    """
    parts = as_datasets(data)
    data = parts[0]  # the datasets share window, feature spec and columns
    get_architecture(arch)  # ValueError listing the valid names
    cfg = coerce_config(PPOConfig, config, "config") or PPOConfig()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if cfg.window is not None and cfg.window != data.window:
        raise ValueError(f"PPOConfig.window={cfg.window} differs from the data's window "
                         f"{data.window}; prepare the data with window={cfg.window}")
    dev = resolve_device(device)
    checkpoint = None
    arch_config: dict[str, Any] = with_time_unit(arch, cfg.arch_config, data.bar_seconds)
    features_dim = cfg.features_dim or 64
    include_dt = uses_dt(arch)
    if init_from is not None:
        arch_config, features_dim, checkpoint = _warm_start_settings(init_from, arch, parts,
                                                                     cfg)
        arch_config = portable_config(arch, arch_config, dev, what=f"checkpoint {init_from}")
        include_dt = bool(checkpoint.get("include_dt", False))  # what the classifier saw
    # multi-timeframe inputs where the model takes them
    parts = tuple(p.for_model(arch, arch_config) for p in parts)
    policy_kwargs = _policy_kwargs(arch, features_dim, arch_config, cfg.pi_layers,
                                   cfg.vf_layers)
    venv = env if env is not None else make_train_env(parts, cfg, seed, include_dt=include_dt)
    model = _new_ppo(venv, arch, cfg, policy_kwargs, seed, dev)
    if checkpoint is not None:
        warm_start_policy(model.policy, checkpoint)
    model.tradezoo = {  # type: ignore[attr-defined]
        "arch": arch,
        "arch_config": _backbone_config(model.policy),
        "features_dim": features_dim,
        "init_from": str(init_from) if init_from is not None else None,
        "include_dt": policy_includes_dt(model.observation_space),
    }
    return model


def _new_ppo(venv: VecEnv, arch: str, cfg: PPOConfig, policy_kwargs: Mapping[str, Any],
             seed: int, device: torch.device) -> PPO:
    """The SB3 PPO of ``arch`` with ``cfg``'s hyperparameters (the one constructor call of
    :func:`make_ppo` and of a resume): a :class:`~tradezoo.agents.rollout.SplitDevicePPO`,
    whose rollouts run where :func:`~tradezoo.agents.rollout.choose_rollout_device` says."""
    from tradezoo.agents.rollout import SplitDevicePPO
    from tradezoo.policies.sb3 import POLICY_CLASSES

    return SplitDevicePPO(
        POLICY_CLASSES[arch],
        venv,
        learning_rate=cfg.lr,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        target_kl=cfg.target_kl,
        policy_kwargs=dict(policy_kwargs),
        seed=seed,
        device=device,
        verbose=0,
    )


def _backbone_config(policy: ActorCriticPolicy) -> dict[str, Any]:
    """The extractor backbone's full config as constructor keywords (``init`` fields)."""
    backbone = policy.features_extractor.backbone  # type: ignore[union-attr]
    config = backbone.config
    return {f.name: getattr(config, f.name) for f in fields(config) if f.init}


# --------------------------------------------------------------------------- checkpoints


def _base_payload(data: PreparedData | Sequence[PreparedData], config: PPOConfig,
                  seed: int) -> dict[str, Any]:
    """The parts of a PPO sidecar that do not change during a run."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "kind": PPO_KIND,
        **data_payload(data),
        "env": {
            **_env_rules(config),
            "episode_length": config.episode_length,
            "split_fractions": list(as_datasets(data)[0].split_fractions),
        },
        "action_scheme": config.action_scheme,
        "training": config.to_dict(),
        "seed": int(seed),
        "versions": versions(),
    }


BEST_METRIC = "eval/mean_reward"
"""What a PPO run's best model is chosen by (higher is better)."""


def best_record(score: float | None = None, step: int | None = None) -> dict[str, Any]:
    """The ``best`` field of a PPO sidecar: the best validation mean reward so far and the
    timestep it was reached at (``None`` before the first evaluation)."""
    return {"metric": BEST_METRIC, "mode": "max",
            "score": None if score is None or not math.isfinite(score) else float(score),
            "step": None if step is None else int(step)}


def _sb3_state(model: PPO) -> dict[str, Any]:
    """The progress counters SB3 keeps outside the weights, as plain data (a resume restores
    them): updates done, episodes seen, and the recent episodes' rewards and lengths."""
    episodes = [{"r": float(e["r"]), "l": int(e["l"]), "t": float(e.get("t", 0.0))}
                for e in (model.ep_info_buffer or [])]
    return {"n_updates": int(model._n_updates), "episode_num": int(model._episode_num),
            "ep_info_buffer": episodes}


def save_ppo(model: PPO, stem: str | Path, *, base: Mapping[str, Any],
             best: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``stem.zip`` (SB3) and its sidecar ``stem.pt`` (tradezoo, ``kind="ppo"``) as a
    verified pair: the zip is serialised in memory, its SHA-256 and step go into the sidecar,
    then both are written to temporary names, fsynced and renamed
    (:func:`~tradezoo.agents.checkpoint.write_files_atomically`).

    Args:
        model: a model from :func:`make_ppo` (``model.tradezoo`` set).
        stem: path without suffix.
        base: the run's constant sidecar fields (data, config, seed).
        best: the run's best evaluation so far (:func:`best_record`); default none yet.

    Returns:
        ``(zip path, sidecar path)``.
    """
    import io

    stem = Path(stem)
    zip_path = stem.parent / f"{stem.name}.zip"
    buffer = io.BytesIO()
    model.save(buffer)
    zip_bytes = buffer.getvalue()
    meta = model.tradezoo  # type: ignore[attr-defined]
    policy = model.policy
    net_arch = policy.net_arch
    payload = {
        **base,
        "arch": meta["arch"],
        "arch_config": dict(meta["arch_config"]),
        "features_dim": int(meta["features_dim"]),
        "net_arch": {"pi": list(net_arch["pi"]), "vf": list(net_arch["vf"])}  # type: ignore[index,call-overload]
        if isinstance(net_arch, dict) else {"pi": list(net_arch), "vf": list(net_arch)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()},
        "num_timesteps": int(model.num_timesteps),
        "step": int(model.num_timesteps),
        "epoch": 0,
        "sb3_zip": zip_path.name,
        "sb3_zip_sha256": hashlib.sha256(zip_bytes).hexdigest(),
        "sb3_state": _sb3_state(model),
        "best": dict(best) if best is not None else best_record(),
        "init_from": meta["init_from"],
        "env": {**base.get("env", {}), "include_dt": bool(meta.get("include_dt", False))},
    }
    pt_path = stem.parent / f"{stem.name}.pt"
    write_files_atomically([(zip_path, zip_bytes), (pt_path, serialize_checkpoint(payload))])
    return zip_path, pt_path


def _ppo_paths(path: str | Path) -> tuple[Path, Path]:
    """``(zip, sidecar)`` for a path to either one (the other is found by the stem)."""
    path = Path(path)
    if path.suffix == ".zip":
        return path, path.with_suffix(".pt")
    if path.suffix == ".pt":
        return path.with_suffix(".zip"), path
    return path.parent / f"{path.name}.zip", path.parent / f"{path.name}.pt"


def _checkpoint_spaces(ckpt: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(observation space, action space)`` of a PPO sidecar's policy, from its plain data."""
    from gymnasium import spaces

    obs_space = observation_space(int(ckpt["window"]), int(ckpt["n_features"]),
                                  ckpt["scaler"].get("clip"), input_timeframes(ckpt))
    if ckpt["env"].get("include_dt", False):  # absent: a policy that never saw dt
        obs_space = with_dt_space(obs_space)
    action_space = (spaces.Box(-1.0, 1.0, (1,), np.float32)
                    if ckpt["env"]["action_scheme"] == "continuous" else spaces.Discrete(3))
    return obs_space, action_space


def _checkpoint_policy_kwargs(ckpt: Mapping[str, Any], device: torch.device
                              ) -> dict[str, Any]:
    """The policy's keyword arguments recorded in a PPO sidecar (architecture, its full config,
    ``features_dim``, ``net_arch``), for a policy on ``device``: a saved backend that cannot run
    there becomes ``"auto"`` with a warning (:func:`~tradezoo.policies.registry.
    portable_config`)."""
    arch_config = portable_config(ckpt["arch"], saved_arch_config(ckpt), device,
                                  what=f"checkpoint {ckpt.get('path', '<in memory>')}")
    return _policy_kwargs(ckpt["arch"], int(ckpt["features_dim"]), arch_config,
                          ckpt["net_arch"]["pi"], ckpt["net_arch"]["vf"])


def _resume_model(resume_from: str | Path, meta: Mapping[str, Any], cfg: PPOConfig,
                  venv: VecEnv, seed: int, device: torch.device) -> PPO:
    """The PPO model a sidecar and its verified zip describe, on ``venv``, without unpickling.

    Built from the sidecar's plain data (architecture, full backbone config, ``features_dim``,
    ``net_arch``; hyperparameters from ``cfg``, whose model settings equal the sidecar's), then
    given the zip's ``policy`` and ``policy.optimizer`` state dicts (read with
    ``weights_only=True``), the step and SB3's progress counters (``sb3_state``).

    Raises:
        CheckpointError: a mismatched or corrupt pair, or state that does not fit the policy.
    """
    zip_path, sidecar = _ppo_paths(resume_from)
    content = verify_sb3_pair(zip_path, meta, sidecar)
    # Read onto the CPU: load_state_dict copies the weights to the policy's device and the
    # optimiser places each state tensor by its own policy (Adam's step counters stay on the
    # CPU; GPU ones cost host syncs at every step).
    tensors = sb3_zip_tensors(content, zip_path, map_location="cpu")
    model = _new_ppo(venv, str(meta["arch"]), cfg, _checkpoint_policy_kwargs(meta, device), seed,
                     device)
    try:
        model.policy.load_state_dict(tensors["policy"], strict=True)
        model.policy.optimizer.load_state_dict(tensors["policy.optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"SB3 zip {zip_path}: its weights or optimiser state do not fit the "
            f"{meta['arch']!r} policy its sidecar {sidecar} describes: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    model.num_timesteps = int(meta["num_timesteps"])
    state = meta.get("sb3_state") or {}
    model._n_updates = int(state.get("n_updates", 0))
    model._episode_num = int(state.get("episode_num", 0))
    model.ep_info_buffer = deque(
        ({"r": float(e["r"]), "l": int(e["l"]), "t": float(e["t"])}
         for e in state.get("ep_info_buffer", [])),
        maxlen=model._stats_window_size,
    )
    model.ep_success_buffer = deque(maxlen=model._stats_window_size)  # no success signal
    return model


class LoadedPPOPolicy(NamedTuple):
    """What :func:`load_ppo_policy` returns (unpacks as ``policy, checkpoint``).

    Attributes:
        policy: the SB3 policy, eval mode.
        checkpoint: its sidecar dict (the env rules it trained with, its scaler, ...).
    """

    policy: ActorCriticPolicy
    checkpoint: dict[str, Any]


def load_ppo_policy(
    path_or_checkpoint: str | Path | Mapping[str, Any],
    *,
    device: str | torch.device = "cpu",
) -> LoadedPPOPolicy:
    """Rebuild a PPO policy (eval mode) from a ``kind="ppo"`` sidecar, a path to it or to its
    ``.zip`` (the counterpart of SB3's ``PPO.load``; :func:`evaluate_ppo` backtests what it
    returns). The policy is built from the sidecar's plain data and weights; when the zip is
    next to it, the pair is verified first
    (:func:`~tradezoo.agents.checkpoint.verify_sb3_pair`). Nothing is unpickled.

    Returns:
        :class:`LoadedPPOPolicy` ``(policy, checkpoint dict)``.

    Raises:
        FileNotFoundError: no sidecar.
        CheckpointError: not a PPO checkpoint, a malformed or mismatched one, a model above
            the size bound, or weights that do not fit.
    """
    from tradezoo.policies.sb3 import POLICY_CLASSES

    if isinstance(path_or_checkpoint, Mapping):
        ckpt = dict(path_or_checkpoint)
        if ckpt.get("kind") != PPO_KIND:
            raise CheckpointError(f"checkpoint {ckpt.get('path', '<in memory>')}: kind "
                                  f"{ckpt.get('kind')!r}, expected {PPO_KIND!r}")
        check_payload(ckpt, str(ckpt.get("path", "<in memory>")))
    else:
        zip_path, sidecar = _ppo_paths(path_or_checkpoint)
        if not sidecar.exists():
            raise FileNotFoundError(
                f"PPO checkpoint {path_or_checkpoint}: no sidecar {sidecar} (the tradezoo "
                f"metadata written next to {zip_path.name} by train_ppo)"
            )
        ckpt = load_checkpoint(sidecar, expect_kind=PPO_KIND)
    where = ckpt.get("path", "<in memory>")
    obs_space, action_space = _checkpoint_spaces(ckpt)
    target = resolve_device(device)
    policy = POLICY_CLASSES[ckpt["arch"]](obs_space, action_space, lambda _: 0.0,
                                          **_checkpoint_policy_kwargs(ckpt, target))
    load_weights(policy, ckpt["state_dict"], where=where, what=f"a {ckpt['arch']!r} policy")
    policy = policy.to(target)
    policy.set_training_mode(False)
    return LoadedPPOPolicy(policy, ckpt)


# ------------------------------------------------------------------------------ training


@dataclass
class PPOResult:
    """What :func:`train_ppo` returns.

    Attributes:
        model: the trained SB3 PPO model (final weights).
        arch: architecture name.
        out_dir: the run directory.
        final_model: ``out_dir/final_model.zip`` (sidecar ``.pt`` next to it).
        best_model: ``out_dir/best_model.zip`` (best validation mean reward) or ``None``
            without evaluation.
        checkpoints: periodic checkpoint zips written.
        log_dir: TensorBoard directory (``None`` when disabled).
        num_timesteps: total timesteps trained (resumed runs included).
        evaluations: one summary dict per validation evaluation (``timesteps``,
            ``mean_reward``, trading metrics, ``best``).
        best_mean_reward: best validation mean episode reward (-inf without evaluation).
        train_seconds: wall time of ``learn``.
        n_parameters: trainable policy parameters.
        device: the update device.
        config: the training config.
        seed: the seed.
        init_from: the warm-start checkpoint, if any.
        rollout_device: where rollouts and validation episodes ran.
    """

    model: PPO
    arch: str
    out_dir: Path
    final_model: Path
    best_model: Path | None
    checkpoints: list[Path]
    log_dir: Path | None
    num_timesteps: int
    evaluations: list[dict[str, Any]]
    best_mean_reward: float
    train_seconds: float
    n_parameters: int
    device: str
    config: PPOConfig
    seed: int
    init_from: str | None = None
    rollout_device: str = "cpu"


def _resume_config(given: PPOConfig | None, saved: Mapping[str, Any], where: str) -> PPOConfig:
    saved_cfg = PPOConfig.from_dict(saved)
    if given is None:
        return saved_cfg
    a, b = given.to_dict(), saved_cfg.to_dict()
    differences = [f"{k}: checkpoint {b[k]!r} vs config {a[k]!r}" for k in RESUME_FIXED_KEYS
                   if a[k] != b[k] and not (k == "features_dim" and a[k] is None)]
    if differences:
        raise ValueError(
            f"cannot resume from {where} with a different model or PPO setting "
            f"({'; '.join(differences)}); only timesteps, n_envs, episode length, evaluation, "
            "checkpoint and logging settings may change"
        )
    return given


def _sb3_logger(log_dir: Path | None) -> Any:
    from stable_baselines3.common.logger import Logger, configure

    if log_dir is None:
        return Logger(folder=None, output_formats=[])
    return configure(str(log_dir), ["tensorboard"])


@determinism_scope()  # SB3's seeding and ``deterministic`` change process-wide flags
def train_ppo(
    data: PreparedData | MultiData | Sequence[PreparedData],
    arch: str,
    *,
    config: PPOConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "auto",
    rollout_device: str | torch.device = "auto",
    init_from: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    verbose: bool = True,
    callbacks: Sequence[BaseCallback] = (),
) -> PPOResult:
    """Train ``arch`` with PPO on ``data``'s train split (see the module docstring).

    Args:
        data: from :func:`tradezoo.agents.data.prepare_data`, or several datasets
            (:func:`tradezoo.agents.multi.prepare_datasets`): the env draws each episode's
            dataset uniformly, the validation runs on each dataset and the best model is
            chosen on the reward pooled over them.
        arch: a registry name.
        config: :class:`PPOConfig` or its dict (unknown keys rejected); on resume ``None``
            takes the checkpoint's, and a given one may change only the timesteps, envs,
            evaluation, checkpoint and logging settings (:data:`RESUME_FIXED_KEYS`).
        out_dir: run directory (module docstring).
        seed: the seed (a resumed run reseeds with ``seed + timesteps done``).
        device: the update device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        rollout_device: where rollouts and validation episodes run: ``"auto"`` (the CPU when
            updates run on a GPU and ``n_envs`` is small,
            :func:`~tradezoo.agents.rollout.choose_rollout_device`), ``"update"`` (the update
            device) or a device.
        init_from: a supervised checkpoint to warm-start from.
        resume_from: a PPO checkpoint (``.zip`` or its ``.pt`` sidecar) to continue: weights,
            optimiser and ``num_timesteps`` continue (the envs restart their episodes).
        progress: show SB3's progress bar (rich/tqdm).
        verbose: print the log directory, the TensorBoard command and a closing line.
        callbacks: more SB3 callbacks, run after the trainer's own (one may raise
            ``KeyboardInterrupt`` to stop as Ctrl-C does).

    Returns:
        :class:`PPOResult`.

    Raises:
        ValueError, TypeError: bad arguments or config.
        CheckpointError: a warm-start or resume checkpoint that does not fit.
        NonFiniteLossError: a PPO update with a non-finite loss.
        TrainingInterrupted: Ctrl-C; ``interrupted.zip`` (+ ``.pt``) was written.
        Exception: any other error in the loop is re-raised after ``interrupted.*`` was
            written where it could be (its ``checkpoint`` attribute names the ``.zip``).
    """
    parts = as_datasets(data)
    get_architecture(arch)
    cfg = coerce_config(PPOConfig, config, "config")
    if cfg is not None:  # before anything is written (a resume checks the saved config)
        for part in parts:
            part.costs.check_exposure(cfg.max_leverage, what="PPO config max_leverage")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if init_from is not None and resume_from is not None:
        raise ValueError("give init_from (start from a supervised model) or resume_from "
                         "(continue a PPO run), not both")
    dev = resolve_device(device)
    choose_rollout_device(dev, 1, rollout_device)  # a bad value fails before anything is written
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # denormals slow recurrent CPU kernels down ~10x
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        run = _PPORun.resumed(parts, arch, cfg, resume_from, seed, dev, out)
    else:
        model = make_ppo(parts, arch, config=cfg or PPOConfig(), seed=seed, device=dev,
                         init_from=init_from)
        # the run's records describe the inputs the policy takes
        parts = tuple(p.with_timeframes(_policy_timeframes(model.policy)) for p in parts)
        run = _PPORun(model, parts, cfg or PPOConfig(), seed, out, dev, resuming=False)
    use_deterministic(run.cfg.deterministic)  # determinism_scope restores the flags
    run.model.set_rollout_device(rollout_device)
    own = run.callbacks(callbacks, verbose)
    train_seconds = run.learn(own, progress)
    return run.result(train_seconds, verbose)


class _PPORun:
    """One run of :func:`train_ppo`: the SB3 model (``model.tradezoo`` set), its config, the
    run directory, the best score so far (restored on resume) and the trainer's callbacks."""

    def __init__(self, model: PPO, parts: tuple[PreparedData, ...], cfg: PPOConfig, seed: int,
                 out: Path, device: torch.device, *, resuming: bool,
                 restored_best: Mapping[str, Any] | None = None) -> None:
        self.parts, self.data = parts, parts[0]
        self.model, self.cfg, self.seed, self.out = model, cfg, seed, out
        self.device = device
        self.arch = str(model.tradezoo["arch"])  # type: ignore[attr-defined]
        self.include_dt = bool(model.tradezoo.get("include_dt", False))  # type: ignore[attr-defined]
        self.resuming = resuming
        self.restored_best = dict(restored_best or best_record())
        self.base = _base_payload(parts, cfg, seed)
        self.eval_callback: TradingEvalCallback | None = None
        self.checkpoint_callback: PeriodicCheckpointCallback | None = None
        self.log_dir = out / "tb" if cfg.tensorboard else None

    @classmethod
    def resumed(cls, parts: tuple[PreparedData, ...], arch: str, given: PPOConfig | None,
                resume_from: str | Path, seed: int, device: torch.device, out: Path) -> _PPORun:
        """The run a PPO checkpoint continues: its config (``given`` may change only what
        :data:`RESUME_FIXED_KEYS` leaves free), weights, optimiser, counters and best score;
        reseeded with ``seed + timesteps done``."""
        zip_path, sidecar = _ppo_paths(resume_from)
        for path in (zip_path, sidecar):
            if not path.exists():
                raise FileNotFoundError(f"resume_from {resume_from}: no such file {path}")
        meta = load_checkpoint(sidecar, expect_arch=arch,
                               expect_feature_spec=parts[0].feature_spec, expect_kind=PPO_KIND)
        parts = tuple(p.for_model(arch, meta["arch_config"]) for p in parts)
        _check_checkpoint_fits(meta, parts)
        cfg = _resume_config(given, meta["training"], str(sidecar))
        done = int(meta["num_timesteps"])
        include_dt = bool(meta["env"].get("include_dt", False))
        venv = make_train_env(parts, cfg, seed + done, include_dt=include_dt)
        model = _resume_model(resume_from, meta, cfg, venv, seed, device)
        model.set_random_seed(seed + done)
        model.tradezoo = {  # type: ignore[attr-defined]
            "arch": arch, "arch_config": dict(meta["arch_config"]),
            "features_dim": int(meta["features_dim"]), "init_from": meta.get("init_from"),
            "include_dt": include_dt,
        }
        return cls(model, parts, cfg, seed, out, device, resuming=True,
                   restored_best=meta.get("best"))

    @property
    def init_label(self) -> str | None:
        """The warm-start checkpoint the run started from, if any."""
        return self.model.tradezoo["init_from"]  # type: ignore[attr-defined, no-any-return]

    def save(self, algorithm: Any, stem: Path) -> tuple[Path, Path]:
        """:func:`save_ppo` with the run's constant fields and its best score so far."""
        evaluation = self.eval_callback
        best = self.restored_best if evaluation is None else best_record(
            evaluation.best_mean_reward, evaluation.best_timestep)
        return save_ppo(algorithm, stem, base=self.base, best=best)

    def callbacks(self, extra: Sequence[BaseCallback], verbose: bool) -> list[BaseCallback]:
        """Set the SB3 logger and build the trainer's callbacks, then ``extra``: trading
        metrics and hparams, validation evaluation (best model), periodic checkpoints,
        backbone freeze, the non-finite guard."""
        cfg, data, model = self.cfg, self.data, self.model
        model.set_logger(_sb3_logger(self.log_dir))
        if verbose and self.log_dir is not None:
            print_tensorboard_hint(self.log_dir)
        hparams = {"arch": self.arch, "seed": self.seed, "window": data.window,
                   "dataset": ",".join(p.name for p in self.parts),
                   "init_from": self.init_label or "none",
                   **{k: v for k, v in cfg.to_dict().items() if k != "arch_config"},
                   **{f"arch.{k}": v for k, v in model.tradezoo["arch_config"].items()}}  # type: ignore[attr-defined]
        own: list[BaseCallback] = [TradingMetricsCallback(hparams=hparams)]
        if cfg.eval_freq > 0:
            if data.splits.part("val").size == 0:
                warnings.warn("the data has no validation split: no evaluation, no best model",
                              stacklevel=3)
            else:
                best = self.restored_best
                self.eval_callback = TradingEvalCallback(
                    make_eval_env(self.parts, cfg, "val", include_dt=self.include_dt),
                    eval_freq=cfg.eval_freq, save=self.save,
                    best_stem=self.out / "best_model", figure=cfg.eval_figure,
                    # the same validation episodes at every evaluation
                    eval_seed=self.seed + 10_007 if cfg.eval_episode_length is not None
                    else None,
                    best_mean_reward=-math.inf if best["score"] is None else float(best["score"]),
                    best_timestep=best["step"],
                )
                own.append(self.eval_callback)
        if cfg.checkpoint_freq > 0:
            self.checkpoint_callback = PeriodicCheckpointCallback(
                cfg.checkpoint_freq, self.out / "checkpoints", self.save)
            own.append(self.checkpoint_callback)
        if cfg.freeze_backbone_updates > 0 and not self.resuming:
            own.append(FreezeBackboneCallback(cfg.freeze_backbone_updates))
        own.append(NonFiniteGuardCallback(self.arch))
        own.extend(extra)
        return own

    def learn(self, callbacks: list[BaseCallback], progress: bool) -> float:
        """Train up to ``cfg.timesteps`` and evaluate the final weights; returns the wall time
        (seconds). Any failure saves ``interrupted.*`` where it can and is re-raised."""
        from stable_baselines3.common.callbacks import CallbackList

        model, evaluation = self.model, self.eval_callback
        remaining = self.cfg.timesteps - int(model.num_timesteps)
        started = time.perf_counter()
        finished = False
        try:
            if remaining > 0:
                model.learn(total_timesteps=remaining, callback=CallbackList(callbacks),
                            log_interval=self.cfg.log_interval,
                            reset_num_timesteps=not self.resuming, progress_bar=progress)
            if evaluation is not None and evaluation.last_eval_timestep != model.num_timesteps:
                if remaining <= 0:  # learn() did not run, so it did not set the callback up
                    evaluation.init_callback(model)
                evaluation.evaluate()  # the final weights are always evaluated
            finished = True
        except (KeyboardInterrupt, Exception) as exc:  # any failure: save what can be saved
            if isinstance(exc, TrainingInterrupted):
                raise
            saved, failures = save_where_possible(lambda stem: self.save(model, stem)[0],
                                                  self.out)
            stopped = stop_training(exc, f"PPO training of {self.arch!r}",
                                    f"timestep {model.num_timesteps}", saved, failures,
                                    "train_ppo")
            if stopped is exc:
                raise
            raise stopped from exc
        finally:
            try:
                model.logger.dump(model.num_timesteps)  # the last update's train/* and trading/*
                if not finished:
                    model.logger.close()
            except Exception:
                if finished:
                    raise  # a failed run reports its own error, not a log write's
        return time.perf_counter() - started

    def result(self, train_seconds: float, verbose: bool) -> PPOResult:
        """Save ``final_model``, close the logger and collect the :class:`PPOResult`."""
        model, evaluation = self.model, self.eval_callback
        final_zip, _ = self.save(model, self.out / "final_model")
        model.logger.close()
        best = self.out / "best_model.zip"
        if verbose:
            best_text = (f", best validation mean reward {evaluation.best_mean_reward:.5f}"
                         if evaluation is not None else "")
            print(f"[{self.arch}] PPO: {model.num_timesteps} timesteps in {train_seconds:.1f} s"
                  f"{best_text}; final model {final_zip}", file=sys.stderr)
        saved = self.checkpoint_callback.saved if self.checkpoint_callback else []
        return PPOResult(
            model=model,
            arch=self.arch,
            out_dir=self.out,
            final_model=final_zip,
            best_model=best if best.exists() and evaluation is not None else None,
            checkpoints=[Path(f"{stem}.zip") for stem in saved],
            log_dir=self.log_dir,
            num_timesteps=int(model.num_timesteps),
            evaluations=list(evaluation.evaluations) if evaluation is not None else [],
            best_mean_reward=evaluation.best_mean_reward if evaluation is not None else -math.inf,
            train_seconds=train_seconds,
            n_parameters=sum(p.numel() for p in model.policy.parameters() if p.requires_grad),
            device=str(self.device),
            config=self.cfg,
            seed=self.seed,
            init_from=self.init_label,
            rollout_device=str(model.rollout_device),
        )


# ---------------------------------------------------------------------------- evaluation


@dataclass
class PPOEvaluation:
    """What :func:`evaluate_ppo` returns.

    Attributes:
        split: the split walked.
        actions: ``[k]`` actions the policy took (ints, or floats for ``"continuous"``).
        targets: target exposure of each decision, on the decision bars' timestamps.
        env_equity: the env's equity ``[k + 1]`` on the bars (first decision bar .. the bar
            after the last decision).
        backtest: :func:`~tradezoo.backtest.simulate` of ``targets`` on the same bars and
            costs (its ``benchmark_*`` fields: buy-and-hold).
        episode_metrics: the env's own ``info["metrics"]`` of the pass.
        max_equity_difference: ``max |backtest.equity - env_equity|`` (0 up to rounding).
        metrics: flat dict ``backtest/<metric>``, ``buy_and_hold/<metric>``.
    """

    split: str
    actions: np.ndarray
    targets: pd.Series
    env_equity: pd.Series
    backtest: Any
    episode_metrics: dict[str, float]
    max_equity_difference: float
    metrics: dict[str, Any] = field(default_factory=dict)


def evaluate_ppo(
    model_or_path: Any,
    data: PreparedData,
    split: Literal["train", "val", "test"] = "test",
    *,
    config: PPOConfig | Mapping[str, Any] | None = None,
    costs: CostModel | None = None,
    device: str | torch.device = "cpu",
) -> PPOEvaluation:
    """Backtest a PPO policy on one full sequential pass of ``split`` (module docstring).

    Args:
        model_or_path: the policy: a :class:`LoadedPPOPolicy` (:func:`load_ppo_policy`), a
            :class:`PPOResult`, an SB3 algorithm or an ``ActorCriticPolicy``; a PPO checkpoint
            (``.zip``, its ``.pt`` sidecar or a loaded sidecar dict) is first loaded with
            :func:`load_ppo_policy`.
        data: prepared data; a checkpoint's feature spec, window and feature count must match
            it, and the checkpoint's scaler scales its features.
        split: ``"train"``, ``"val"`` or ``"test"``.
        config: env settings (action scheme, leverage, shorting, rebalance) for a model or
            policy object; default a :class:`PPOResult`'s config or ``PPOConfig()``. Ignored
            for checkpoints (their ``env`` record is used).
        costs: cost model of the env and the replay; default the data's.
        device: where a checkpoint's policy is loaded to run (CPU by default: one env steps
            at a time, which a GPU's launch overhead makes slower). A model or policy object
            acts where it is; a ``SplitDevicePPO`` acts with its rollout copy.

    Raises:
        ValueError: a bad split or a model that does not fit the data.
        CheckpointError, FileNotFoundError: an unreadable or mismatched checkpoint.
    """
    data = _check_data(data)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if isinstance(model_or_path, str | Path | Mapping):
        model_or_path = load_ppo_policy(model_or_path, device=device)
    policy, data, cfg, scaler = _acting_policy(model_or_path, data,
                                               coerce_config(PPOConfig, config, "config"))
    return _walk_split(policy, data, split, cfg, scaler, costs)


def _policy_timeframes(policy: Any) -> dict[str, int]:
    """Timeframe name -> window of a policy's multi-timeframe extractor (empty: Box)."""
    extractor = getattr(policy, "features_extractor", None)
    if extractor is None or not getattr(extractor, "timeframes", None):
        return {}
    return dict(extractor.windows)


ScalerArg = FeatureScaler | dict[str, FeatureScaler]


def _acting_policy(model: Any, data: PreparedData, config: PPOConfig | None
                   ) -> tuple[Any, PreparedData, PPOConfig, ScalerArg]:
    """``(SB3 policy, the data with the policy's inputs, its env settings, the env's scaler
    argument)`` of what :func:`evaluate_ppo` evaluates; a loaded checkpoint is checked
    against ``data`` and its own scalers scale the data's features."""
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import BasePolicy

    if isinstance(model, LoadedPPOPolicy):
        ckpt = model.checkpoint
        where = ckpt.get("path", "<in memory>")
        check_feature_spec(ckpt, data.feature_spec, where)
        for key, have in (("window", data.window), ("n_features", data.n_features)):
            if int(ckpt[key]) != have:
                raise ValueError(f"checkpoint {where}: {key} {ckpt[key]} differs from the "
                                 f"data's {have}")
        rules = ckpt["env"]
        check_known_asset(data.name, checkpoint_dataset_names(ckpt), embedding=False,
                          where=f"PPO checkpoint {where}")
        tf_scalers = timeframe_scalers_from_checkpoint(ckpt)
        scored = data.with_timeframes(input_timeframes(ckpt), tf_scalers)
        return model.policy, scored, PPOConfig(
            action_scheme=rules["action_scheme"], max_leverage=rules["max_leverage"],
            allow_short=rules["allow_short"], rebalance=rules["rebalance"],
        ), tf_scalers or checkpoint_scaler(ckpt, data)
    if isinstance(model, PPOResult | BaseAlgorithm | BasePolicy):
        policy = acting_policy(model.model if isinstance(model, PPOResult) else model)
        scored = data.with_timeframes(_policy_timeframes(policy))
        default = model.config if isinstance(model, PPOResult) else PPOConfig()
        return policy, scored, config or default, scored.timeframe_scalers() or scored.scaler
    raise TypeError(
        "model_or_path must be a LoadedPPOPolicy, a PPOResult, an SB3 algorithm or policy, or "
        f"a PPO checkpoint path or dict, got {type(model).__name__}"
    )


def _space_shapes(space: Any) -> Any:
    """A space's shape, or ``{key: shape}`` of a dict space (what a policy must match)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return {key: tuple(sub.shape) for key, sub in space.spaces.items()}
    return tuple(space.shape)


def _walk_split(policy: Any, data: PreparedData, split: str, cfg: PPOConfig,
                scaler: ScalerArg, costs: CostModel | None) -> PPOEvaluation:
    """The deterministic pass of :func:`evaluate_ppo` and its replay through ``simulate``."""
    from tradezoo.backtest.simulation import simulate
    from tradezoo.envs import TradingEnv

    kwargs = env_kwargs(data, cfg, split, costs=costs,
                        include_dt=policy_includes_dt(policy.observation_space))
    kwargs["scaler"] = scaler
    env = TradingEnv(episode_length=None, random_start=False, **kwargs)
    wanted, given = _space_shapes(policy.observation_space), _space_shapes(env.observation_space)
    if wanted != given:
        raise ValueError(f"the policy takes observations of shape {wanted}, the env on this "
                         f"data gives {given}")
    was_training = policy.training
    policy.set_training_mode(False)
    obs, info = env.reset()
    first_bar = int(info["bar"])
    actions: list[Any] = []
    targets: list[float] = []
    episode_metrics: dict[str, float] = {}
    try:
        while True:
            action, _ = policy.predict(obs, deterministic=True)
            step_action = int(action) if cfg.action_scheme != "continuous" else action
            obs, _reward, terminated, truncated, info = env.step(step_action)
            actions.append(step_action)
            targets.append(float(info["target"]))
            if terminated or truncated:
                episode_metrics = dict(info.get("metrics") or {})
                break
    finally:
        policy.set_training_mode(was_training)
    history = env.episode_history()
    dataset = env.dataset
    k = len(targets)
    start = dataset.bar_offset + first_bar
    bars = dataset.bars.iloc[start : start + k + 1]
    positions = np.append(np.asarray(targets, dtype=np.float64), np.nan)
    result = simulate(bars, pd.Series(positions, index=bars.index, name="target"),
                      costs=costs if costs is not None else data.costs, fill=FILL,
                      initial_equity=INITIAL_EQUITY, rebalance=cfg.rebalance,  # type: ignore[arg-type]
                      periods_per_year=float(dataset.periods_per_year))
    env_equity = pd.Series(history["equity"], index=bars.index, name="env_equity")
    difference = float(np.max(np.abs(result.equity.to_numpy() - env_equity.to_numpy())))
    metrics: dict[str, Any] = {f"backtest/{k}": v for k, v in result.metrics.to_dict().items()}
    metrics.update({f"buy_and_hold/{k}": v for k, v in result.benchmark_metrics.to_dict().items()})
    action_array = (np.asarray(actions, dtype=np.int64) if cfg.action_scheme != "continuous"
                    else np.asarray(actions, dtype=np.float64).reshape(k, -1))
    return PPOEvaluation(
        split=split,
        actions=action_array,
        targets=pd.Series(targets, index=bars.index[:k], name="target"),
        env_equity=env_equity,
        backtest=result,
        episode_metrics=episode_metrics,
        max_equity_difference=difference,
        metrics=metrics,
    )
