"""The supervised training objective on each task's output, and what it needs from the data.

:class:`_Objective` is :attr:`SupervisedConfig.loss <tradezoo.agents.supervised.
SupervisedConfig>` on the model's task: the classification term (``direction``), its mean over
the horizon heads (``multi_horizon``) or the squared error of the log volatility
(``volatility``; :func:`_task_loss`), plus the Sharpe term of the expected positions;
:func:`_aux_loss` is the auxiliary heads' loss. Their inputs come from here too: the class
weights, a volatility model's output units (:func:`_log_volatility_scale`), the per-item
targets (:func:`_item_targets`: forward returns, consecutive decisions, label-horizon moves),
the Sharpe term's cost and the scale-aware term's unit. The loss primitives themselves
(Sharpe ratio, expected position, magnitude weights) are :mod:`tradezoo.agents.losses`';
:func:`check_loss_task` says which losses a task takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as functional
from torch import Tensor

from tradezoo.agents.data import PreparedData
from tradezoo.agents.losses import (
    classification_term,
    expected_position,
    has_sharpe_term,
    magnitude_weights,
    sharpe_loss,
)
from tradezoo.agents.supervised_inputs import _Batches
from tradezoo.agents.supervised_model import SupervisedModel
from tradezoo.agents.supervised_reports import VOL_FLOOR
from tradezoo.data.labels import forward_returns
from tradezoo.data.windows import WindowDataset
from tradezoo.errors import ConfigError

if TYPE_CHECKING:  # the training config's module imports this one
    from tradezoo.agents.supervised import SupervisedConfig

__all__ = ["check_loss_task"]


def _task_class_weights(counts: np.ndarray) -> np.ndarray:
    """:func:`_class_weights` of ``[3]`` counts, or of each horizon's row of ``[H, 3]``."""
    if counts.ndim == 2:
        return np.stack([_class_weights(row) for row in counts])
    return _class_weights(counts)


def _log_volatility_scale(volatility: np.ndarray) -> tuple[float, float]:
    """Mean and std (1 when degenerate) of ``log(max(volatility, VOL_FLOOR))`` over the train
    items: the units a ``volatility`` head learns in."""
    logs = np.log(np.maximum(np.asarray(volatility, dtype=np.float64), VOL_FLOOR))
    scale = float(logs.std())
    return float(logs.mean()), scale if math.isfinite(scale) and scale > 0 else 1.0


def _class_weights(counts: np.ndarray) -> np.ndarray:
    """``N / (K * N_c)`` (1 on average over items); 0 for a class absent from train."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = total / (present.sum() * counts[present])
    return weights


def _classification_loss(
    logits: Tensor, target: Tensor, weight: Tensor | None, config: SupervisedConfig,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Mean of the classification term of ``config.loss`` over the batch (weighted mean when
    class weights are on, as in ``F.cross_entropy``; ``scale_aware`` multiplies each item's
    weight by its ``sample_weight [B]``, :func:`~tradezoo.agents.losses.magnitude_weights`)."""
    logits = logits.float()
    term = classification_term(config.loss)
    if term in ("ce", "multi_horizon"):  # multi_horizon: cross-entropy per horizon head
        return functional.cross_entropy(
            logits, target, weight=weight, label_smoothing=config.label_smoothing
        )
    if term == "scale_aware":
        if sample_weight is None:
            raise ValueError("the scale-aware loss needs the items' sample weights")
        per_item = functional.cross_entropy(logits, target, reduction="none",
                                            label_smoothing=config.label_smoothing)  # [B]
        w = sample_weight if weight is None else sample_weight * weight[target]  # [B]
        return (w * per_item).sum() / w.sum().clamp_min(1e-12)
    # Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).
    log_p = functional.log_softmax(logits, dim=-1)  # [B, 3]
    log_pt = log_p.gather(1, target[:, None]).squeeze(1)  # [B]
    focal = -((1.0 - log_pt.exp()) ** config.focal_gamma) * log_pt  # [B]
    if weight is None:
        return focal.mean()
    w = weight[target]  # [B]
    return (w * focal).sum() / w.sum().clamp_min(1e-12)


def _task_loss(output: Tensor, target: Tensor, weight: Tensor | None, config: SupervisedConfig,
               model: SupervisedModel, sample_weight: Tensor | None = None) -> Tensor:
    """The loss of ``model.task``: the classification term of ``config.loss``
    (``direction``); its mean over the horizons, each with its own class weights
    ``weight [H, 3]`` and sample weights ``sample_weight [B, H]`` (``multi_horizon``); MSE of
    the log volatility in units of the train split's std (``volatility``; ``target`` [B] is
    the realised volatility per bar)."""
    if model.task == "direction":
        return _classification_loss(output, target, weight, config, sample_weight)
    if model.task == "multi_horizon":
        losses = [_classification_loss(output[:, k], target[:, k],
                                       None if weight is None else weight[k], config,
                                       None if sample_weight is None else sample_weight[:, k])
                  for k in range(output.shape[1])]
        return torch.stack(losses).mean()
    log_target = torch.log(target.float().clamp_min(VOL_FLOOR))
    error = (output.float() - log_target) / model.target_scale  # type: ignore[operator]
    return (error**2).mean()


def _n_correct(output: Tensor, target: Tensor, task: str) -> Tensor:
    """Correct predictions in a batch (``multi_horizon``: averaged over the horizons; 0 for
    ``volatility``, which has no classes)."""
    if task == "direction":
        return (output.argmax(-1) == target).sum()
    if task == "multi_horizon":
        return (output.argmax(-1) == target).float().mean(dim=1).sum()
    return torch.zeros((), device=output.device)


def check_loss_task(loss: str, task: str) -> None:
    """Whether ``SupervisedConfig.loss`` fits ``LabelSpec.task``: a ``volatility`` model
    trains on its own regression loss (``loss="ce"``, the default, stands for it), and the
    ``multi_horizon`` loss needs multi-horizon labels.

    Raises:
        ConfigError: another combination; the message names both settings and the rule.
    """
    if task == "volatility" and loss != "ce":
        raise ConfigError(f"SupervisedConfig.loss={loss!r} applies to the direction and "
                          "multi_horizon tasks; a volatility model trains on the squared error "
                          "of its log volatility (leave loss at 'ce')")
    if classification_term(loss) == "multi_horizon" and task != "multi_horizon":
        raise ConfigError(f"SupervisedConfig.loss={loss!r} averages the cross-entropy over the "
                          "horizon heads of multi-horizon labels; the labels' task is "
                          f"{task!r} (set LabelSpec.task='multi_horizon', e.g. --set "
                          "labels.task=multi_horizon)")


@dataclass(frozen=True)
class _Objective:
    """The training objective of a run (:attr:`SupervisedConfig.loss` on the model's task)
    with what it needs from the data.

    Attributes:
        config: the training config.
        model: the model trained (its task, and a volatility model's output units).
        class_weight: class weights ``[3]`` (``[H, 3]`` for ``multi_horizon``) or ``None``.
        cost: one-way cost of the Sharpe term's turnover, a fraction.
        magnitude_scale: the train split's mean absolute label-horizon return, ``[]`` (``[H]``
            for ``multi_horizon``): the scale-aware term's unit (1 without that term).
    """

    config: SupervisedConfig
    model: SupervisedModel
    class_weight: Tensor | None
    cost: float
    magnitude_scale: Tensor

    def __call__(self, output: Tensor, labels: Tensor, targets: Mapping[str, Tensor],
                 chunk: int) -> Tensor:
        """The loss of the task output (logits ``[B, 3]`` or ``[B, H, 3]``, log volatility
        ``[B]``), ``labels`` and the items' ``targets`` (:func:`_item_targets`), the batch
        being ``B / chunk`` runs of ``chunk`` consecutive items."""
        cfg = self.config
        loss: Tensor | None = None
        if classification_term(cfg.loss) is not None:
            sample_weight = None
            if "abs_move" in targets:
                sample_weight = magnitude_weights(targets["abs_move"], self.magnitude_scale,
                                                  cfg.scale_aware_cap)
            loss = _task_loss(output, labels, self.class_weight, cfg, self.model,
                              sample_weight)
        if has_sharpe_term(cfg.loss):
            position = expected_position(output)  # [B], or [B, H] per horizon
            if position.ndim == 2:  # the multi-horizon trading rule: the horizons' mean
                position = position.mean(dim=1)
            shape = (-1, chunk)
            sharpe = cfg.sharpe_weight * sharpe_loss(
                position.reshape(shape), targets["next_return"].reshape(shape),
                targets["follows"].reshape(shape), self.cost)
            loss = sharpe if loss is None else loss + sharpe
        assert loss is not None  # every loss has a classification or a Sharpe term
        return loss


def _aux_loss(aux: dict[str, Tensor], targets: Tensor, names: Sequence[str]) -> Tensor:
    """Auxiliary loss: MSE on standardised forward returns and BCE-with-logits on their sign.

    Args:
        aux: the heads' outputs: ``"regression"`` ``[B, H]`` and the direction logits, either
            ``"direction"`` ``[B, H]`` or one ``[B]`` entry per horizon name.
        targets: ``[B, H]`` standardised forward returns, NaN where the horizon runs past the
            data (masked out).
        names: the horizon names, in column order.
    """
    valid = torch.isfinite(targets)  # [B, H]
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    total = targets.new_zeros(())
    n = valid.sum().clamp_min(1)
    if "regression" in aux:
        err = (aux["regression"].float() - safe) ** 2  # [B, H]
        total = total + (err * valid).sum() / n
    direction = aux.get("direction")
    if direction is None and names and all(name in aux for name in names):
        direction = torch.stack([aux[name] for name in names], dim=1)  # [B, H]
    if direction is not None:
        bce = functional.binary_cross_entropy_with_logits(
            direction.float(), (safe > 0).float(), reduction="none"
        )  # [B, H]
        total = total + (bce * valid).sum() / n
    return total


def _item_targets(data: PreparedData, dataset: WindowDataset, cfg: SupervisedConfig,
                  aux: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-item targets ``cfg``'s objective needs (none for ``"ce"``/``"focal"`` without
    auxiliary heads):

    - ``"aux"`` ``[N, H]`` float32: the auxiliary heads' targets (given);
    - ``"next_return"`` ``[N]`` float32 (Sharpe term): ``open[t+2] / open[t+1] - 1``, the
      return the backtest books for the bar a decision at ``t`` holds;
    - ``"follows"`` ``[N]`` bool (Sharpe term): item ``i`` decides one bar after item
      ``i - 1`` (False for item 0);
    - ``"abs_move"`` ``[N]`` float32 (scale-aware term): ``|open[t+1+h] / open[t+1] - 1|``
      over the label horizon ``h`` (``[N, H]``, one column per horizon, for
      ``multi_horizon`` labels).
    """
    targets: dict[str, np.ndarray] = {}
    if aux is not None:
        targets["aux"] = aux
    rows = np.asarray(dataset.decision_rows)
    if has_sharpe_term(cfg.loss):
        targets["next_return"] = _aux_targets(data, dataset, (1,), None)[:, 0]
        follows = np.zeros(len(rows), dtype=np.bool_)
        follows[1:] = np.diff(rows) == 1
        targets["follows"] = follows
    if classification_term(cfg.loss) == "scale_aware":
        spec = data.label_spec
        horizons = spec.horizons if spec.task == "multi_horizon" else (spec.horizon,)
        move = np.abs(_aux_targets(data, dataset, horizons, None))  # [N, H]
        targets["abs_move"] = move if spec.task == "multi_horizon" else move[:, 0]
    return targets


def _aux_targets(data: PreparedData, dataset: WindowDataset, horizons: Sequence[int],
                 scale: np.ndarray | None) -> np.ndarray:
    """``[N, H]`` float32 forward returns of each item over each horizon / ``scale``."""
    columns = []
    for h in horizons:
        returns = forward_returns(data.bars, h).reindex(data.features.index).to_numpy()
        columns.append(returns[dataset.decision_rows])
    values = np.stack(columns, axis=1)  # [N, H]
    if scale is not None:
        values = values / scale
    return values.astype(np.float32)


def _sharpe_cost(parts: Sequence[PreparedData], cfg: SupervisedConfig) -> float:
    """The Sharpe term's one-way turnover cost, a fraction: ``cfg.sharpe_cost_bps``, else the
    labels' cost (which several datasets must share).

    Raises:
        ValueError: several datasets with different label costs and no ``sharpe_cost_bps``.
    """
    if cfg.sharpe_cost_bps is not None:
        return cfg.sharpe_cost_bps / 1e4
    costs = {float(p.label_spec.cost_bps or 0.0) for p in parts}
    if len(costs) > 1 and has_sharpe_term(cfg.loss):
        raise ValueError(f"the datasets' label costs differ ({sorted(costs)} bps); set "
                         "supervised.sharpe_cost_bps for the Sharpe term")
    return float(parts[0].label_spec.cost_bps or 0.0) / 1e4


def _magnitude_scale(batches: _Batches) -> Tensor:
    """Mean absolute label-horizon return of the train items, float32 ``[]`` (``[H]`` per
    horizon of ``multi_horizon`` labels): the scale-aware term's unit; 1 without that term.

    Raises:
        ValueError: a horizon whose train items have no finite non-zero move.
    """
    moves = batches.targets.get("abs_move")
    if moves is None:
        return torch.ones((), device=batches.device)
    moves = moves.double()
    finite = torch.isfinite(moves)
    scale = (torch.where(finite, moves, 0.0).sum(dim=0)
             / finite.sum(dim=0).clamp_min(1))  # [] or [H]
    if not bool(((scale > 0) & torch.isfinite(scale)).all()):
        raise ValueError("the scale-aware loss needs train items with non-zero forward returns "
                         "over the label horizon")
    return scale.float()
