"""Stable-Baselines3 callbacks of the PPO trainer (:mod:`tradezoo.agents.ppo`).

=============================  ==============================================================
callback                       what it does
=============================  ==============================================================
:class:`TradingMetricsCallback`  per-episode trading metrics of the training envs to
                               TensorBoard (``trading/*``, mean over the episodes that ended
                               since the last dump) and the hyperparameters (HParams tab)
:class:`TradingEvalCallback`   every ``eval_freq`` timesteps: deterministic episodes on the
                               validation env, ``eval/*`` scalars, an equity-curve figure,
                               best model kept (by mean episode reward)
:class:`PeriodicCheckpointCallback`  every ``save_freq`` timesteps: a checkpoint
:class:`FreezeBackboneCallback`  the features extractor frozen for the first ``k`` PPO
                               updates, then trainable
:class:`NonFiniteGuardCallback`  stops training with
                               :class:`~tradezoo.agents.supervised.NonFiniteLossError` when a
                               PPO update produced a non-finite loss
=============================  ==============================================================

Trading metrics. The env computes each finished episode's
:func:`~tradezoo.backtest.metrics.compute_metrics` (``Metrics.to_dict(json_safe=False)``, every
value a float) and puts it into the last step's ``info["metrics"]`` (the SB3 VecEnv keeps it
in the info of the step that ended the episode, next to ``"terminal_observation"``).
:data:`TRADING_TAGS` maps the TensorBoard tags to those keys. Undefined figures (NaN: the
Sharpe ratio of an episode spent flat) are left out of the mean rather than logged as NaN.

SB3 writes what callbacks record at its next ``logger.dump`` (after each rollout, before the
update), so ``trading/*`` appear at the same steps as ``rollout/ep_rew_mean``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Figure, HParam

from tradezoo.agents.rollout import acting_policy
from tradezoo.agents.tensorboard import hparam_value

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "EXCLUDE_TEXT_OUTPUTS",
    "TRADING_TAGS",
    "EpisodeRecord",
    "FreezeBackboneCallback",
    "NonFiniteGuardCallback",
    "PeriodicCheckpointCallback",
    "TradingEvalCallback",
    "TradingMetricsCallback",
    "run_episodes",
]

TRADING_TAGS: dict[str, str] = {
    "trading/return": "total_return",
    "trading/sharpe": "sharpe",
    "trading/max_drawdown": "max_drawdown",
    "trading/turnover": "turnover",
    "trading/fees": "fees_paid",
    "trading/funding": "funding_paid",
    "trading/n_trades": "n_trades",
    "trading/total_costs": "total_costs",
    "trading/exposure": "exposure",
}
"""TensorBoard tag -> key of the env's ``info["metrics"]`` (:class:`~tradezoo.backtest.metrics.
Metrics` field). ``return`` is the episode's total return (fraction), ``sharpe`` annualised,
``max_drawdown`` a negative fraction, ``turnover`` annualised, ``fees``/``funding``/
``total_costs`` fractions of the initial equity (funding negative when received)."""

EXCLUDE_TEXT_OUTPUTS: tuple[str, ...] = ("stdout", "log", "json", "csv")
"""Outputs that cannot show figures and HParams (SB3 raises for them otherwise)."""

SaveFunction = Callable[["BaseAlgorithm", Path], Any]
"""``save(model, stem)`` writes ``stem.zip`` and its sidecar (:func:`tradezoo.agents.ppo.
save_ppo`)."""


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class TradingMetricsCallback(BaseCallback):
    """Trading metrics of every finished training episode, and the run's hyperparameters.

    Args:
        hparams: hyperparameters shown in TensorBoard's HParams tab (values that are not
            bool/int/float/str are written as strings); ``None``: none written.
        hparam_metrics: scalar tags the HParams table shows next to them (they must be
            logged by someone: SB3's ``rollout/ep_rew_mean``, ``train/value_loss``,
            ``eval/mean_reward``...).

    Attributes:
        episodes: number of finished episodes seen.
        last_metrics: the ``info["metrics"]`` dict of the latest finished episode.
    """

    def __init__(
        self,
        hparams: Mapping[str, Any] | None = None,
        hparam_metrics: Sequence[str] = ("rollout/ep_rew_mean", "train/value_loss",
                                         "eval/mean_reward", "trading/return"),
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.hparams = dict(hparams) if hparams is not None else None
        self.hparam_metrics = tuple(hparam_metrics)
        self.episodes = 0
        self.last_metrics: dict[str, float] | None = None

    def _on_training_start(self) -> None:
        if self.hparams is None or not self.hparam_metrics:
            return
        clean = {str(k): hparam_value(v) for k, v in self.hparams.items()}
        # The metric values are placeholders: TensorBoard reads the real ones from the
        # scalars of the same tags in this run directory.
        metrics = {tag: 0.0 for tag in self.hparam_metrics}
        self.logger.record("hparams", HParam(clean, metrics), exclude=EXCLUDE_TEXT_OUTPUTS)

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        infos = self.locals.get("infos")
        if dones is None or infos is None:
            return True
        for i in np.flatnonzero(dones).tolist():
            metrics = infos[i].get("metrics")
            if not isinstance(metrics, Mapping):
                continue  # episode_metrics=False in the env
            self.episodes += 1
            self.last_metrics = dict(metrics)
            for tag, key in TRADING_TAGS.items():
                value = _finite(metrics.get(key))
                if value is not None:
                    self.logger.record_mean(tag, value)
        return True


class EpisodeRecord(dict[str, Any]):
    """One deterministic evaluation episode: ``reward`` (sum), ``length``, ``metrics`` (the
    env's ``info["metrics"]``), ``bars`` ``[k + 1]`` (dataset rows: the first decision bar,
    then the bar of each step), ``equity`` ``[k + 1]``, ``targets`` ``[k]``, ``dataset``."""


def run_episodes(
    model: BaseAlgorithm | Any,
    venv: VecEnv,
    *,
    deterministic: bool = True,
    max_steps: int | None = None,
    seed: int | None = None,
) -> list[EpisodeRecord]:
    """Run one episode in each of ``venv``'s envs with ``model.predict`` (from a reset).

    Each env's first episode is recorded; an env that finishes early keeps stepping (its
    auto-reset next episode is ignored) until every env has finished one.

    Args:
        model: anything with SB3's ``predict(obs, deterministic=)`` (an algorithm or policy).
        venv: a tradezoo SB3 VecEnv (infos with ``equity``, ``target``, ``bar``, ``dataset``).
        deterministic: greedy actions.
        max_steps: safety cap on steps (``None``: no cap).
        seed: reseed ``venv`` before the reset (the same random episode starts every call).

    Returns:
        One :class:`EpisodeRecord` per env, in env order.
    """
    if seed is not None:
        venv.seed(seed)
    obs = venv.reset()
    n = venv.num_envs
    reset_infos = getattr(venv, "reset_infos", [{} for _ in range(n)])
    records = [
        EpisodeRecord(reward=0.0, length=0, metrics=None,
                      bars=[int(reset_infos[i].get("bar", -1))],
                      equity=[float(reset_infos[i].get("equity", 1.0))], targets=[],
                      dataset=int(reset_infos[i].get("dataset", 0)))
        for i in range(n)
    ]
    finished = np.zeros(n, dtype=bool)
    steps = 0
    while not finished.all():
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        for i in np.flatnonzero(~finished).tolist():
            record, info = records[i], infos[i]
            record["reward"] += float(rewards[i])
            record["length"] += 1
            record["bars"].append(int(info["bar"]))  # the step's info, before any reset
            record["equity"].append(float(info["equity"]))
            record["targets"].append(float(info["target"]))
            if dones[i]:
                record["metrics"] = info.get("metrics")
                finished[i] = True
        steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    for record in records:
        for key in ("bars", "equity", "targets"):
            record[key] = np.asarray(record[key])
    return records


class TradingEvalCallback(BaseCallback):
    """Deterministic evaluation on a validation VecEnv every ``eval_freq`` timesteps.

    Each evaluation runs :func:`run_episodes` (one episode per env of ``eval_env``) with the
    model's acting policy (:func:`~tradezoo.agents.rollout.acting_policy`: the rollout copy of
    a :class:`~tradezoo.agents.rollout.SplitDevicePPO`, on the rollout device), records
    ``eval/mean_reward``, ``eval/mean_ep_length``, the mean trading metrics
    ``eval/<tag>`` (same names as :data:`TRADING_TAGS`, e.g. ``eval/return``,
    ``eval/sharpe``), ``eval/best_mean_reward``, and the figure ``eval/equity_curve`` of the
    first episode (price with positions, equity against a frictionless buy-and-hold of the
    same bars, drawdown: :func:`tradezoo.backtest.plots.figure_backtest`). A new best mean
    reward saves the model with ``save(model, best_stem)``.

    Args:
        eval_env: the validation env (a tradezoo SB3 VecEnv: its ``config.market`` gives the
            bars for the figure), or one per dataset by name: each is evaluated, its mean
            reward logged as ``eval/<name>/mean_reward``, and ``eval/mean_reward`` is the mean
            over all their episodes (the pooled score the best model is chosen on).
        eval_freq: timesteps (over all training envs) between evaluations; 0 disables the
            periodic ones (:meth:`evaluate` can still be called).
        save: ``save(model, stem)``; ``None``: the best model is not saved.
        best_stem: path stem of the best model (``best_model`` -> ``best_model.zip``).
        figure: log the equity-curve figure.
        eval_seed: reseed the eval env before every evaluation (random-start episodes: the
            same episodes each time, so evaluations are comparable); ``None``: no reseed.
        best_mean_reward: the best mean reward so far (a resumed run passes its checkpoint's,
            so only a better evaluation replaces the best model); ``-inf``: none yet.
        best_timestep: the timestep ``best_mean_reward`` was reached at (``None``: none yet).

    Attributes:
        best_mean_reward, best_timestep: the best evaluation so far and its timestep.
    """

    def __init__(
        self,
        eval_env: VecEnv | Mapping[str, VecEnv],
        *,
        eval_freq: int,
        save: SaveFunction | None = None,
        best_stem: Path | None = None,
        figure: bool = True,
        eval_seed: int | None = None,
        best_mean_reward: float = -math.inf,
        best_timestep: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.eval_env = eval_env
        self.eval_seed = eval_seed
        self.eval_freq = int(eval_freq)
        self.save = save
        self.best_stem = best_stem
        self.figure = figure
        self.best_mean_reward = float(best_mean_reward)
        self.best_timestep = None if best_timestep is None else int(best_timestep)
        self.last_eval_timestep = -1
        self.evaluations: list[dict[str, Any]] = []
        self._next_eval = 0

    def _init_callback(self) -> None:
        if self.eval_freq > 0:
            done = self.model.num_timesteps
            self._next_eval = (done // self.eval_freq + 1) * self.eval_freq

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self._next_eval:
            self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        """Run the evaluation now (also used after training); returns its summary dict."""
        model = self.model
        policy = acting_policy(model)  # a SplitDevicePPO's rollout copy, synced
        was_training = policy.training
        policy.set_training_mode(False)
        envs = self.eval_env if isinstance(self.eval_env, Mapping) else {"": self.eval_env}
        per_dataset: dict[str, float] = {}
        records: list[EpisodeRecord] = []
        try:
            for name, env in envs.items():
                own = run_episodes(policy, env, deterministic=True, seed=self.eval_seed)
                per_dataset[name] = float(np.mean([r["reward"] for r in own]))
                records.extend(own)
        finally:
            policy.set_training_mode(was_training)
        rewards = [r["reward"] for r in records]
        mean_reward = float(np.mean(rewards))  # pooled over the datasets' episodes
        summary: dict[str, Any] = {
            "timesteps": int(model.num_timesteps),
            "mean_reward": mean_reward,
            "mean_ep_length": float(np.mean([r["length"] for r in records])),
        }
        if len(envs) > 1:
            summary["datasets"] = per_dataset
            for name, value in per_dataset.items():
                self.logger.record(f"eval/{name}/mean_reward", value)
        for tag, key in TRADING_TAGS.items():
            values = [v for r in records if r["metrics"] is not None
                      if (v := _finite(r["metrics"].get(key))) is not None]
            if values:
                summary[tag.split("/", 1)[1]] = float(np.mean(values))
        logger = self.logger
        for key, value in summary.items():
            if key not in ("timesteps", "datasets"):
                logger.record(f"eval/{key}", value)
        is_best = mean_reward > self.best_mean_reward
        if is_best:
            self.best_mean_reward = mean_reward
            self.best_timestep = int(model.num_timesteps)
            if self.save is not None and self.best_stem is not None:
                self.save(model, self.best_stem)
        summary["best"] = is_best
        logger.record("eval/best_mean_reward", self.best_mean_reward)
        if self.figure:
            figure = self._equity_figure(records[0])
            if figure is not None:
                logger.record("eval/equity_curve", Figure(figure, close=True),
                              exclude=EXCLUDE_TEXT_OUTPUTS)
        self.last_eval_timestep = int(model.num_timesteps)
        self.evaluations.append(summary)
        if self.verbose:
            print(f"eval @ {model.num_timesteps}: mean reward {mean_reward:.5f}"
                  f"{' (new best)' if is_best else ''}")
        return summary

    def _equity_figure(self, record: EpisodeRecord) -> Any:
        from tradezoo.backtest.plots import figure_backtest

        env = (next(iter(self.eval_env.values())) if isinstance(self.eval_env, Mapping)
               else self.eval_env)
        market = getattr(getattr(env, "config", None), "market", None)
        if market is None or len(record["bars"]) < 2:
            return None
        dataset = market.datasets[record["dataset"]]
        rows = record["bars"]
        close = dataset.bars["close"].to_numpy(dtype=np.float64)[dataset.bar_offset + rows]
        positions = np.concatenate([record["targets"], [np.nan]])
        benchmark = close / close[0]  # frictionless buy-and-hold, rebased to 1
        return figure_backtest(dataset.index[rows], close, positions, record["equity"],
                               benchmark_equity=benchmark,
                               title=f"validation episode @ {self.model.num_timesteps} steps")


class PeriodicCheckpointCallback(BaseCallback):
    """``save(model, folder / f"{prefix}_{timesteps}_steps")`` every ``save_freq`` timesteps.

    Args:
        save_freq: timesteps (over all envs) between checkpoints, > 0.
        folder: where checkpoints go (created).
        save: ``save(model, stem)``.
        prefix: file name prefix.

    Attributes:
        saved: stems written, in order.
    """

    def __init__(self, save_freq: int, folder: Path, save: SaveFunction, *,
                 prefix: str = "ppo", verbose: int = 0) -> None:
        super().__init__(verbose)
        if save_freq <= 0:
            raise ValueError(f"save_freq must be > 0, got {save_freq!r}")
        self.save_freq = int(save_freq)
        self.folder = Path(folder)
        self.save = save
        self.prefix = prefix
        self.saved: list[Path] = []
        self._next = 0

    def _init_callback(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._next = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
            stem = self.folder / f"{self.prefix}_{self.num_timesteps}_steps"
            self.save(self.model, stem)
            self.saved.append(stem)
        return True


class FreezeBackboneCallback(BaseCallback):
    """Keep the policy's features extractor frozen for the first ``k`` PPO updates.

    An update is one call of ``PPO.train()`` (``n_epochs`` passes over a rollout). The
    extractor's parameters get ``requires_grad=False`` when training starts; the rollout that
    ends before update ``k + 1`` makes them trainable again. Frozen parameters get no gradient,
    and Adam skips parameters without a gradient, so they do not move (no moment estimates
    accumulate either). ``k = 0`` does nothing.

    Attributes:
        frozen: whether the extractor is frozen now.
        updates_seen: rollouts finished (= updates started) since training started.
    """

    def __init__(self, k: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"freeze_backbone_updates must be an integer >= 0, got {k!r}")
        self.k = k
        self.frozen = False
        self.updates_seen = 0

    def _extractor_parameters(self) -> list[Any]:
        policy = self.model.policy
        seen: dict[int, Any] = {}
        for name in ("features_extractor", "pi_features_extractor", "vf_features_extractor"):
            module = getattr(policy, name, None)
            if module is not None:
                for param in module.parameters():
                    seen[id(param)] = param
        return list(seen.values())

    def _set(self, trainable: bool) -> None:
        for param in self._extractor_parameters():
            param.requires_grad_(trainable)
        self.frozen = not trainable

    def _on_training_start(self) -> None:
        if self.k > 0:
            self._set(False)
            if self.verbose:
                print(f"backbone frozen for the first {self.k} PPO update(s)")

    def _on_rollout_end(self) -> None:
        self.updates_seen += 1
        if self.frozen and self.updates_seen > self.k:
            self._set(True)
            if self.verbose:
                print(f"backbone unfrozen before PPO update {self.updates_seen}")

    def _on_training_end(self) -> None:
        if self.frozen:  # leave the policy trainable for a later learn() or fine-tuning
            self._set(True)

    def _on_step(self) -> bool:
        return True


class NonFiniteGuardCallback(BaseCallback):
    """Stop with :class:`~tradezoo.agents.supervised.NonFiniteLossError` after a PPO update
    whose loss (``train/loss``) or value loss is NaN/inf, or whose policy parameters are no
    longer finite, instead of letting the next rollout sample from NaN logits.

    Checked at the start of every rollout (right after the previous update) and at the end
    of training. The message names the update, the timestep, the architecture and the last
    finite loss.
    """

    KEYS: tuple[str, ...] = ("train/loss", "train/value_loss", "train/policy_gradient_loss")

    def __init__(self, arch: str, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.arch = arch
        self.last_finite: tuple[float, int] | None = None
        self.updates = 0

    def _check(self) -> None:
        from tradezoo.agents.supervised import NonFiniteLossError

        values = self.logger.name_to_value
        if "train/loss" not in values:
            return
        self.updates += 1
        bad = {key: float(values[key]) for key in self.KEYS
               if key in values and not math.isfinite(float(values[key]))}
        if not bad:
            params_ok = all(bool(p.detach().isfinite().all())
                            for p in self.model.policy.parameters())
            if params_ok:
                self.last_finite = (float(values["train/loss"]), int(self.num_timesteps))
                return
            bad = {"policy parameters": math.nan}
        last = (f"last finite loss {self.last_finite[0]:.6g} at timestep {self.last_finite[1]}"
                if self.last_finite is not None else "no finite loss before it")
        what = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"non-finite PPO update ({what}) at update {self.updates}, timestep "
            f"{self.num_timesteps}, for architecture {self.arch!r}; {last}. Training stopped: "
            "try a lower learning rate, a smaller max_grad_norm or check the features"
        )

    def _on_rollout_start(self) -> None:
        self._check()

    def _on_training_end(self) -> None:
        self._check()

    def _on_step(self) -> bool:
        return True
