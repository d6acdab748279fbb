"""Supervised and PPO trainers, callbacks, the command jobs (run, compare) and their options.

Nothing is imported eagerly (torch and Stable-Baselines3 are heavy); the names below load
their module on first access::

    from tradezoo.agents import prepare_data, train_supervised, train_ppo, run_main_job
"""

from __future__ import annotations

from tradezoo._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # data preparation
    "LabelSpec": "data",
    "PreparedData": "data",
    "prepare_data": "data",
    # supervised
    "SupervisedConfig": "supervised",
    "SupervisedModel": "supervised_model",
    "NonFiniteLossError": "supervised",
    "TrainingInterrupted": "supervised",
    "train_supervised": "supervised",
    "evaluate_supervised": "supervised_evaluation",
    "model_from_checkpoint": "supervised_model",
    # PPO
    "PPOConfig": "ppo",
    "train_ppo": "ppo",
    "evaluate_ppo": "ppo",
    "load_ppo_policy": "ppo",
    "LoadedPPOPolicy": "ppo",
    # checkpoints
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    # command options and jobs
    "BUDGETS": "config",
    "ConfigError": "config",
    "read_config_file": "config",
    "resolve_options": "config",
    "TrainingOptions": "config",
    "training_options": "config",
    "backtest_checkpoint": "run",
    "run_main_job": "run",
    "run_compare": "compare",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
