"""Supervised training of any zoo architecture on the labels of a task, warm-startable into SB3
PPO: :func:`train_supervised`, its :class:`SupervisedConfig`, results and failures.

The parts it trains with live in their own modules (this one re-exports their public names):

- :mod:`tradezoo.agents.supervised_model`: :class:`SupervisedModel` (extractor + task head,
  auxiliary heads) and :func:`model_from_checkpoint`;
- :mod:`tradezoo.agents.supervised_inputs`: :class:`ModelInputs`, the model's observations at
  decision rows (Box or multi-timeframe windows, elapsed times), and the training batches;
- :mod:`tradezoo.agents.supervised_objective`: the loss of each task and its targets;
- :mod:`tradezoo.agents.supervised_reports`: the reports of each task's predictions;
- :mod:`tradezoo.agents.supervised_evaluation`: :func:`evaluate_supervised` (predictions,
  trading rules, backtest);
- :mod:`tradezoo.agents.devices`: :func:`resolve_device` and the autocast dtype.

Training (:func:`train_supervised`): cross-entropy with class weights ``N / (3 N_c)`` from the
train split (or focal loss, Lin et al. 2017, ``-w_y (1 - p_y)^gamma log p_y``; or another
objective of :mod:`tradezoo.agents.losses`: scale-aware cross-entropy, the negative Sharpe
ratio of the expected position ``P(buy) - P(sell)`` net of turnover costs, or a sum, with
batches of consecutive decisions for the Sharpe term, ``SupervisedConfig.chunk_bars``),
AdamW with no weight decay on the backbone's ``no_weight_decay()`` parameters, biases and
norms, a cosine schedule with linear warm-up (per optimiser step), gradient clipping,
validation every epoch, early stopping on the validation loss, the best checkpoint kept
(``best.pt``), the last one (``last.pt``) resumable, autocast (``SupervisedConfig.amp``: bf16
on CUDA by default), TensorBoard logs (:mod:`tradezoo.agents.tensorboard`), seeded and
bit-deterministic on CPU. The loop reads nothing back from the device between logging steps
(``log_every``): a non-finite loss or gradient norm is found at the next logging step or the
epoch's end, and the optimiser skips such steps' updates on the device in the meantime.

Failures: a non-finite loss or gradient norm stops with :class:`NonFiniteLossError` naming
the step, the architecture and the last finite loss. Whatever stops the loop (Ctrl-C, a
callback's exception, a write that fails, a non-finite loss) first writes ``interrupted.pt``
(resumable with ``resume_from=``) in the run directory, or, when that cannot be written, in a
new private folder of the system temp dir (:func:`~tradezoo.agents.rundir.save_where_possible`),
and says where: Ctrl-C (``KeyboardInterrupt``, also when raised by a callback) raises
:class:`TrainingInterrupted`, any other exception is re-raised with its ``checkpoint``
attribute and a note naming the file.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tradezoo.agents.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    checkpoint_dataset_names,
    data_payload,
    input_timeframes,
    load_checkpoint,
    save_checkpoint,
    versions,
)
from tradezoo.agents.data import PreparedData
from tradezoo.agents.determinism import determinism_scope, use_deterministic
from tradezoo.agents.devices import autocast_dtype, resolve_device
from tradezoo.agents.losses import LOSSES, has_sharpe_term
from tradezoo.agents.multi import MultiData, as_datasets, epoch_order
from tradezoo.agents.rundir import save_where_possible
from tradezoo.agents.supervised_evaluation import (
    SupervisedEvaluation,
    evaluate_supervised,
    mean_expected_position,
    model_predictions,
    rebalance_within_band,
    signals_to_positions,
    volatility_target_positions,
)
from tradezoo.agents.supervised_inputs import ModelInputs, _Batches
from tradezoo.agents.supervised_model import (
    AuxHeads,
    SupervisedModel,
    model_from_checkpoint,
)
from tradezoo.agents.supervised_objective import (
    _aux_loss,
    _aux_targets,
    _item_targets,
    _log_volatility_scale,
    _magnitude_scale,
    _n_correct,
    _Objective,
    _sharpe_cost,
    _task_class_weights,
    check_loss_task,
)
from tradezoo.agents.supervised_reports import (
    ClassificationReport,
    MultiHorizonReport,
    TaskReport,
    VolatilityReport,
    classification_report,
    multi_horizon_report,
    volatility_report,
)
from tradezoo.agents.tensorboard import TBLogger, print_tensorboard_hint
from tradezoo.agents.validation import coerce_config, from_known_keys
from tradezoo.data.checks import FieldChecks
from tradezoo.data.labels import CLASS_NAMES
from tradezoo.errors import TradezooError
from tradezoo.policies.registry import (
    AUX_HEADS,
    get_architecture,
    portable_config,
    with_time_unit,
)

__all__ = [
    "AUX_HEADS",
    "AuxHeads",
    "ClassificationReport",
    "ModelInputs",
    "MultiHorizonReport",
    "NonFiniteLossError",
    "SupervisedConfig",
    "SupervisedEvaluation",
    "SupervisedModel",
    "SupervisedResult",
    "TrainState",
    "TrainingInterrupted",
    "VolatilityReport",
    "classification_report",
    "evaluate_supervised",
    "mean_expected_position",
    "model_from_checkpoint",
    "model_predictions",
    "multi_horizon_report",
    "rebalance_within_band",
    "resolve_device",
    "signals_to_positions",
    "train_supervised",
    "volatility_report",
    "volatility_target_positions",
]


#: Valid values of :attr:`SupervisedConfig.amp`.
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")

#: Chunk length of the training batches with a Sharpe term when ``chunk_bars`` is not set.
SHARPE_CHUNK_BARS = 32


# ------------------------------------------------------------------------------ config


@dataclass
class SupervisedConfig:
    """Training settings of :func:`train_supervised`.

    Attributes:
        epochs: passes over the train split, >= 1.
        batch_size: items per optimiser step, >= 1.
        lr: peak learning rate of AdamW, > 0.
        weight_decay: AdamW decoupled weight decay, >= 0 (not on biases, norms and the
            backbone's ``no_weight_decay`` parameters).
        warmup_fraction: share of the optimiser steps with a linear warm-up, in [0, 1).
        grad_clip: max global gradient norm (``None``: no clipping).
        patience: epochs without a lower validation loss before stopping (``None``: never).
        loss: the training objective, one of :data:`~tradezoo.agents.losses.LOSSES`
            (docs/training.md, "Losses"): ``"ce"`` (cross-entropy), ``"focal"``,
            ``"scale_aware"`` (cross-entropy weighted by the size of the move each label
            judges), ``"multi_horizon"`` (cross-entropy averaged over the horizon heads;
            needs ``LabelSpec.task="multi_horizon"``), ``"sharpe"`` (negative Sharpe ratio of
            the expected positions' net returns), or a classification term plus the Sharpe
            term (``"ce+sharpe"``, ...). A ``volatility`` model trains on its regression loss
            and takes ``"ce"`` only.
            The validation loss that picks the best checkpoint is the same objective.
        focal_gamma: focusing parameter of the focal loss, >= 0.
        sharpe_weight: weight of the Sharpe term, > 0 (the term alone with ``"sharpe"``).
        sharpe_cost_bps: one-way cost (bps) charged on the turnover of the expected position
            in the Sharpe term, >= 0; ``None``: the labels' cost (``LabelSpec.cost_bps``,
            resolved from the dataset's cost model).
        chunk_bars: consecutive decisions per chunk of a training batch; a batch is
            ``batch_size / chunk_bars`` chunks drawn in random order (``batch_size`` must be a
            multiple). ``None``: 32 with a Sharpe term (the turnover needs consecutive
            positions), 1 otherwise (independent items). At least 2 with a Sharpe term.
        scale_aware_cap: largest sample weight of the scale-aware term, > 0.
        class_weights: weight classes by ``N / (3 N_c)`` from the train split.
        label_smoothing: cross-entropy label smoothing in [0, 1) (off by default).
        features_dim: extractor output width (and the PPO policy's).
        aux_horizons: horizons (bars) of the auxiliary heads (mambats/msa); ``()``: off.
        aux_weight: weight of the auxiliary losses, >= 0.
        max_train_batches: optimiser steps per epoch cap (tiny budgets, tests).
        max_eval_batches: evaluation batches cap per validation pass.
        eval_batch_size: items per evaluation batch.
        num_workers: ``0`` gathers batches in-process with one vectorised index on the
            training device (fastest: the windows are views of a small in-memory matrix);
            ``> 0`` uses a ``torch.utils.data.DataLoader`` with that many workers.
        log_every: optimiser steps between TensorBoard step scalars, progress-bar loss
            updates and the finiteness checks of the loss and gradient norm (the steps that
            wait for the device; the others queue work without reading a value back).
        progress: show a progress bar (tqdm).
        tensorboard: write TensorBoard logs.
        amp: autocast of the forward passes: ``"auto"`` (bf16 on CUDA where the GPU supports
            it, else fp16 on CUDA; off on the CPU), ``"off"``, ``"bf16"`` or ``"fp16"`` (with
            a ``torch.amp.GradScaler``), on any device.
        deterministic: deterministic algorithms and cuDNN settings for the run, restored after
            it (:mod:`tradezoo.agents.determinism`).
        sampling: how training windows are drawn from several datasets:
            ``"proportional"`` (to each dataset's size) or ``"balanced"`` (equal shares);
            :mod:`tradezoo.agents.multi`. No effect with one dataset.
        asset_embedding: learn one vector per training dataset, added to the feature columns
            of every row of the extractor's input, so a model shared by several assets can
            tell them apart (off by default; docs/multi-asset.md).
    """

    epochs: int = 8
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float | None = 1.0
    patience: int | None = 3
    loss: str = "ce"
    focal_gamma: float = 2.0
    sharpe_weight: float = 1.0
    sharpe_cost_bps: float | None = None
    chunk_bars: int | None = None
    scale_aware_cap: float = 10.0
    class_weights: bool = True
    label_smoothing: float = 0.0
    features_dim: int = 64
    aux_horizons: tuple[int, ...] = ()
    aux_weight: float = 0.1
    max_train_batches: int | None = None
    max_eval_batches: int | None = None
    eval_batch_size: int = 1024
    num_workers: int = 0
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    deterministic: bool = False
    sampling: Literal["proportional", "balanced"] = "proportional"
    asset_embedding: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.integer("epochs", 1)
        check.integer("batch_size", 1)
        check.number("lr", 0.0, open_low=True)
        check.number("weight_decay", 0.0)
        check.number("warmup_fraction", 0.0, 1.0, open_high=True)
        check.number("grad_clip", 0.0, open_low=True, optional=True)
        check.integer("patience", 1, optional=True)
        check.choice("loss", LOSSES)
        check.number("focal_gamma", 0.0)
        check.number("sharpe_weight", 0.0, open_low=True)
        check.number("sharpe_cost_bps", 0.0, optional=True)
        check.integer("chunk_bars", 1, optional=True)
        check.number("scale_aware_cap", 0.0, open_low=True)
        check.require(not has_sharpe_term(self.loss) or self.chunk_length >= 2,
                      f"chunk_bars must be >= 2 with a Sharpe term (loss={self.loss!r}): the "
                      f"turnover needs consecutive positions, got {self.chunk_bars}")
        check.require(self.batch_size % self.chunk_length == 0,
                      f"batch_size must be a multiple of chunk_bars ({self.chunk_length}"
                      f"{' by default with a Sharpe term' if self.chunk_bars is None else ''}), "
                      f"got batch_size={self.batch_size}")
        check.boolean("class_weights")
        check.number("label_smoothing", 0.0, 1.0, open_high=True)
        check.integer("features_dim", 1)
        check.widths("aux_horizons", "a list of horizons (bars) >= 1")
        check.number("aux_weight", 0.0)
        check.integer("max_train_batches", 1, optional=True)
        check.integer("max_eval_batches", 1, optional=True)
        check.integer("eval_batch_size", 1)
        check.integer("num_workers", 0)
        check.integer("log_every", 1)
        check.choice("amp", AMP_MODES)
        check.boolean("deterministic")
        check.choice("sampling", ("proportional", "balanced"))
        check.boolean("asset_embedding")

    @property
    def chunk_length(self) -> int:
        """Consecutive decisions per chunk of a training batch (:attr:`chunk_bars` resolved:
        32 with a Sharpe term, 1 otherwise)."""
        if self.chunk_bars is not None:
            return self.chunk_bars
        return SHARPE_CHUNK_BARS if has_sharpe_term(self.loss) else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints, JSON and YAML."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisedConfig:
        """Build from a dict; unknown keys are a ``ValueError`` listing the valid ones."""
        return from_known_keys(cls, data, "supervised training")


# ------------------------------------------------------------------------------ training


class NonFiniteLossError(TradezooError, RuntimeError):
    """Training produced a NaN/inf loss or gradient norm (the message names step, arch and
    the last finite loss)."""

    exit_code = 1


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a resumable checkpoint was written to :attr:`checkpoint`
    (``None`` when no place could be written)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def stop_training(exc: BaseException, what: str, where: str, saved: Path | None,
                  failures: Sequence[str], resume_call: str) -> BaseException:
    """Report a training loop that stopped on ``exc`` after its ``interrupted`` checkpoint
    was saved (or could not be): print one message to stderr and return the exception to
    raise.

    Ctrl-C (``KeyboardInterrupt``) becomes :class:`TrainingInterrupted`; any other exception
    is returned itself (raise it unchanged) with ``checkpoint`` set to ``saved`` and the
    message added as a note, so the CLI and tracebacks say where the checkpoint is.

    Args:
        exc: what stopped the loop.
        what: e.g. ``"training of 'gru'"``.
        where: the progress, e.g. ``"epoch 2, step 40"``.
        saved: the checkpoint written, or ``None``.
        failures: one line per place that could not be written.
        resume_call: the function to resume with, e.g. ``"train_supervised"``.
    """
    interrupted = isinstance(exc, KeyboardInterrupt)
    cause = "interrupted" if interrupted else f"failed ({type(exc).__name__}: {exc})"
    if saved is not None:
        tail = (f"a resumable checkpoint was saved to {saved} (continue with "
                f"{resume_call}(..., resume_from={str(saved)!r}))")
    else:
        tail = "no checkpoint could be saved (" + "; ".join(failures) + ")"
    if saved is not None and failures:
        tail += f"; the run directory could not be written ({failures[0]})"
    message = f"{what} {cause} at {where}; {tail}"
    print(message, file=sys.stderr)
    if interrupted:
        return TrainingInterrupted(message, saved)
    exc.checkpoint = saved  # type: ignore[attr-defined]
    exc.add_note(message)
    return exc


@dataclass
class TrainState:
    """What callbacks see after every optimiser step.

    The loss and gradient norm stay on the training device: reading :attr:`loss` or
    :attr:`grad_norm` waits for the device (a host sync), so a callback that reads them at
    every step slows GPU training down.

    Attributes:
        model: the model being trained (train mode).
        epoch: 0-based epoch in progress.
        step: optimiser steps done so far (global).
        batch: optimiser steps done in this epoch.
        lr: learning rate used for this step.
        loss_tensor: this step's training loss, 0-dim, detached, on the training device.
        grad_norm_tensor: the global gradient norm before clipping, likewise.
    """

    model: SupervisedModel
    epoch: int
    step: int
    batch: int
    lr: float
    loss_tensor: Tensor
    grad_norm_tensor: Tensor

    @property
    def loss(self) -> float:
        """This step's training loss (waits for the device)."""
        return float(self.loss_tensor)

    @property
    def grad_norm(self) -> float:
        """The global gradient norm before clipping (waits for the device)."""
        return float(self.grad_norm_tensor)


Callback = Callable[[TrainState], None]


@dataclass
class SupervisedResult:
    """What :func:`train_supervised` returns.

    Attributes:
        model: the model with the **best** weights (lowest validation loss), eval mode.
        arch: architecture name.
        best_checkpoint: ``out_dir/best.pt``.
        last_checkpoint: ``out_dir/last.pt`` (resumable).
        log_dir: TensorBoard directory (``None`` when disabled).
        history: one dict per epoch (train loss/accuracy, val metrics, lr, seconds).
        best_epoch: 0-based epoch of the best checkpoint.
        best_val_loss: its validation loss (train loss when there is no validation split).
        best_metrics: its validation metrics (the task's report, flat).
        steps: optimiser steps done.
        stopped_early: early stopping ended training.
        device: the device used.
        train_seconds: wall time of the training loop.
        n_parameters: trainable parameters of the model.
        config: the training config.
    """

    model: SupervisedModel
    arch: str
    best_checkpoint: Path
    last_checkpoint: Path
    log_dir: Path | None
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    best_metrics: dict[str, Any]
    steps: int
    stopped_early: bool
    device: str
    train_seconds: float
    n_parameters: int
    config: SupervisedConfig


def _seed_everything(seed: int) -> None:
    # numpy's global RNG is not used here (shuffling draws from seeded torch generators).
    random.seed(seed)
    torch.manual_seed(seed)


def _param_groups(model: SupervisedModel, weight_decay: float) -> list[dict[str, Any]]:
    no_decay = model.no_weight_decay()
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (keep if name in no_decay else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def _adamw(groups: list[dict[str, Any]], lr: float, device: torch.device
           ) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused on the CPU and CUDA (one kernel per step, and it can skip a
    non-finite step on the device: :meth:`_SupervisedRun.step_optimizer`)."""
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda") or None)


def _lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Linear warm-up over ``ceil(warmup_fraction * total)`` steps, then cosine to 0."""
    warmup = math.ceil(warmup_fraction * total_steps) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _loader_batches(batches: _Batches, order: Tensor, batch_size: int, num_workers: int,
                    skip: int, limit: int) -> Any:
    """Yield index tensors of the epoch's batches (``skip`` first ones left out)."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)][:limit]
    if num_workers == 0:
        yield from chunks[skip:]
        return
    # Worker processes only slice index lists here; the windows are gathered on the
    # training device (the matrix is small and already there).
    loader = torch.utils.data.DataLoader(chunks[skip:], batch_size=None,
                                         num_workers=num_workers)
    yield from loader


def _evaluate(
    model: SupervisedModel,
    batches: _Batches,
    objective: _Objective,
    amp_dtype: torch.dtype | None,
) -> tuple[float, TaskReport, np.ndarray]:
    """Validation loss (the training objective, weighted like training, over the evaluated
    items in time order as one run: a Sharpe term is the split's Sharpe), the task's report and
    its predictions: probabilities ``[N, 3]`` (``[N, H, 3]`` for ``multi_horizon``) or
    volatilities ``[N]``."""
    return _scored(model, *_predict(model, batches, objective.config, amp_dtype), objective)


def _predict(model: SupervisedModel, batches: _Batches, config: SupervisedConfig,
             amp_dtype: torch.dtype | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Outputs (float32), labels and targets of the first items of ``batches`` (at most
    ``max_eval_batches`` evaluation batches), in time order, in eval mode."""
    model.eval()
    n = len(batches)
    limit = n
    if config.max_eval_batches is not None:
        limit = config.max_eval_batches * config.eval_batch_size
    order = torch.arange(min(n, limit))
    logits_all = []
    labels_all = []
    targets_all: dict[str, list[Tensor]] = {}
    with torch.no_grad(), torch.autocast(batches.device.type,
                                         dtype=amp_dtype or torch.bfloat16,
                                         enabled=amp_dtype is not None):
        for start in range(0, len(order), config.eval_batch_size):
            obs, labels, targets = batches.get(order[start : start + config.eval_batch_size])
            logits_all.append(model(obs, targets.get("asset")).float())
            labels_all.append(labels)
            for name, values in targets.items():
                targets_all.setdefault(name, []).append(values)
    model.train()
    joined = {name: torch.cat(values) for name, values in targets_all.items()}
    return torch.cat(logits_all), torch.cat(labels_all), joined


def _scored(model: SupervisedModel, logits: Tensor, labels: Tensor,
            targets: Mapping[str, Tensor], objective: _Objective
            ) -> tuple[float, TaskReport, np.ndarray]:
    """:func:`_evaluate`'s loss, report and predictions from the model's outputs (the items
    as one run)."""
    loss = float(objective(logits, labels, targets, len(labels)))
    if model.task == "volatility":
        forecast = torch.exp(logits).cpu().numpy()
        return loss, volatility_report(labels.cpu().numpy(), forecast), forecast
    predicted = logits.argmax(dim=-1).cpu().numpy()
    report: TaskReport = (
        classification_report(labels.cpu().numpy(), predicted) if model.task == "direction"
        else multi_horizon_report(labels.cpu().numpy(), predicted, model.horizon_names))
    return loss, report, torch.softmax(logits, dim=-1).cpu().numpy()


def _rng_state() -> dict[str, Any]:
    """The torch RNG states: ``"torch"`` (CPU) and, where CUDA is available, ``"cuda"`` (one
    state per GPU)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the RNG states :func:`_rng_state` saved. The CUDA states are restored where this
    machine has CUDA (on as many GPUs as both machines have); a checkpoint from a CPU machine
    leaves the CUDA RNG as seeding set it."""
    torch.set_rng_state(state["torch"].cpu())
    saved_cuda = state.get("cuda")
    if saved_cuda and torch.cuda.is_available():
        states = [s.cpu() for s in saved_cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def _payload(
    model: SupervisedModel,
    data: PreparedData | Sequence[PreparedData],
    config: SupervisedConfig,
    *,
    epoch: int,
    step: int,
    metrics: Mapping[str, Any],
    seed: int,
    resume: dict[str, Any] | None,
    best: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict (plain types; see :mod:`tradezoo.agents.checkpoint`); ``best`` is
    :func:`best_record`'s."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "kind": "supervised",
        "arch": model.arch,
        "arch_config": model.backbone_config(),
        "features_dim": model.features_dim,
        "aux_horizons": list(model.aux_horizons),
        "task": model.task,
        "include_dt": bool(model.include_dt),
        "asset_embedding": model.assets is not None,
        "state_dict": state,
        **data_payload(data),
        "class_names": list(CLASS_NAMES),
        "label_spec": as_datasets(data)[0].label_spec.to_dict(),
        "training": config.to_dict(),
        "seed": int(seed),
        "epoch": int(epoch),
        "step": int(step),
        "metrics": {k: v for k, v in metrics.items()},
        "best": dict(best),
        "resume": resume,
        "versions": versions(),
    }


def best_record(metric: str, score: float, step: int | None, epoch: int) -> dict[str, Any]:
    """The ``best`` field of a supervised checkpoint: the lowest ``metric`` (``"val_loss"``, or
    ``"train_loss"`` without a validation split) so far, the step and the 0-based epoch it was
    reached at (``score``/``step`` ``None`` and ``epoch`` -1 before the first epoch ended)."""
    return {"metric": metric, "mode": "min",
            "score": float(score) if math.isfinite(score) else None,
            "step": None if step is None else int(step), "epoch": int(epoch)}


def _check_resume(ckpt: Mapping[str, Any], data: PreparedData, path: Path) -> dict[str, Any]:
    if ckpt.get("resume") is None:
        raise ValueError(f"checkpoint {path} holds no optimiser state to resume from (a best.pt "
                         "is weights only; resume from last.pt or interrupted.pt)")
    for key, have in (("window", data.window), ("n_features", data.n_features)):
        if int(ckpt[key]) != have:
            raise ValueError(f"checkpoint {path}: {key} {ckpt[key]} differs from the data's {have}")
    if input_timeframes(ckpt) != data.timeframe_windows:
        raise ValueError(f"checkpoint {path}: timeframes {input_timeframes(ckpt)} differ from "
                         f"this run's {data.timeframe_windows}")
    return dict(ckpt["resume"])


def train_supervised(
    data: PreparedData | MultiData | Sequence[PreparedData],
    arch: str,
    *,
    config: SupervisedConfig | Mapping[str, Any] | None = None,
    arch_config: Mapping[str, Any] | None = None,
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "auto",
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = True,
) -> SupervisedResult:
    """Train ``arch`` on ``data``'s buy/hold/sell labels (see the module docstring).

    Args:
        data: from :func:`tradezoo.agents.data.prepare_data`, or several datasets
            (:func:`tradezoo.agents.multi.prepare_datasets`): the training windows are drawn
            from all of them by ``config.sampling``, validation is reported per dataset and
            pooled, and the best checkpoint is chosen on the pooled validation loss.
        arch: a registry name.
        config: :class:`SupervisedConfig` or its dict (unknown keys rejected).
        arch_config: the architecture's config fields (``d_model``, ...).
        out_dir: run directory: ``best.pt``, ``last.pt``, ``interrupted.pt``, ``tb/``.
        seed: seeds Python and torch; the shuffling of epoch ``e`` depends only on
            ``(seed, e)``, so a resumed run sees the batches it would have seen.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        resume_from: a ``last.pt`` or ``interrupted.pt`` of the same arch and data to continue.
        callbacks: called with a :class:`TrainState` after every optimiser step (a callback
            may raise ``KeyboardInterrupt`` to stop as Ctrl-C does).
        verbose: print the log directory, the TensorBoard command and a line per epoch.

    Returns:
        :class:`SupervisedResult` (the model holds the best weights).

    Raises:
        ValueError: a bad argument, unknown config keys, an unusable resume checkpoint.
        NonFiniteLossError: a NaN/inf loss or gradient norm.
        TrainingInterrupted: Ctrl-C; ``interrupted.pt`` was written.
        Exception: any other error in the loop is re-raised after ``interrupted.pt`` was
            written where it could be (its ``checkpoint`` attribute names it).
    """
    parts = as_datasets(data)  # TypeError for anything else
    get_architecture(arch)  # ValueError listing the valid names
    cfg = coerce_config(SupervisedConfig, config, "config") or SupervisedConfig()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    # multi-timeframe inputs where the model takes them
    parts = tuple(p.for_model(arch, arch_config) for p in parts)
    if len(parts) > 1 and any(p.timeframe_windows for p in parts):
        raise ValueError("multi-timeframe inputs (msa's timeframes) take one dataset; train "
                         "msa across several datasets with its Box window "
                         "(docs/multi-asset.md)")
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # denormals slow recurrent CPU kernels down ~10x
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:  # the checkpoint's backend may not run here
        arch_config = portable_config(arch, arch_config or {}, dev,
                                      what=f"checkpoint {resume_from}")
    with determinism_scope():
        use_deterministic(cfg.deterministic)
        run = _SupervisedRun(parts, arch, cfg, arch_config, out, seed, dev, verbose)
        if resume_from is not None:
            run.resume(Path(resume_from))
        train_seconds = run.fit(callbacks)
        return run.result(train_seconds)


@dataclass
class _Progress:
    """Where a supervised run stands (what ``last.pt`` and ``interrupted.pt`` record).

    Attributes:
        epoch: the 0-based epoch in progress; batch: optimiser steps done in it.
        step: optimiser steps done in all.
        history: one record per finished epoch.
        best_loss, best_epoch, best_step, best_metrics: the best epoch so far (lowest
            validation loss; ``inf``, -1, ``None``, ``{}`` before the first).
        bad_epochs: epochs since the best one.
        last_finite: ``(loss, step)`` of the last finite training loss.
        stopped_early: early stopping ended the run.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = -1
    best_step: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    last_finite: tuple[float, int] | None = None
    stopped_early: bool = False

    @classmethod
    def resumed(cls, resume: Mapping[str, Any], step: int) -> _Progress:
        """The progress a checkpoint's ``resume`` record (and its ``step``) saved."""
        return cls(epoch=int(resume["epoch"]), batch=int(resume["batch"]), step=step,
                   history=[dict(h) for h in resume.get("history", [])],
                   best_loss=float(resume.get("best_val_loss", math.inf)),
                   best_epoch=int(resume.get("best_epoch", -1)),
                   best_step=resume.get("best_step"),
                   best_metrics=dict(resume.get("best_metrics", {})),
                   bad_epochs=int(resume.get("bad_epochs", 0)))


class _FiniteWatch:
    """The training losses and gradient norms since the last check, kept on the device and
    read back together by :meth:`check` (one host sync per ``log_every`` steps).

    A non-finite loss, or gradient norm (except with fp16 loss scaling, whose
    ``GradScaler`` skips such steps and lowers the scale), raises
    :class:`NonFiniteLossError` naming the first such step; the optimiser has skipped that
    step's update on the device (:meth:`_SupervisedRun.step_optimizer`).
    """

    def __init__(self, state: _Progress, arch: str, cfg: SupervisedConfig, *,
                 scaled: bool) -> None:
        self.state, self.arch, self.cfg, self.scaled = state, arch, cfg, scaled
        self.pending: list[tuple[int, int, Tensor, Tensor]] = []  # (step, batch, loss, norm)

    def record(self, step: int, batch: int, loss: Tensor, grad_norm: Tensor) -> None:
        """Keep a step's 0-dim ``loss`` and ``grad_norm`` (``step``, ``batch``: done before)."""
        self.pending.append((step, batch, loss, grad_norm))

    def check(self) -> tuple[float, float]:
        """Read the pending values back (one sync) and check them; returns the last step's
        ``(loss, grad_norm)`` (NaN when nothing is pending).

        Raises:
            NonFiniteLossError: at the first non-finite value.
        """
        if not self.pending:
            return math.nan, math.nan
        pending, self.pending = self.pending, []
        values = torch.stack([torch.stack([p[2] for p in pending]).float(),
                              torch.stack([p[3] for p in pending]).float()], dim=1)  # [K, 2]
        state = self.state
        for (step, batch, _, _), (loss, norm) in zip(pending, values.tolist(), strict=True):
            bad = ("loss", loss) if not math.isfinite(loss) else (
                ("gradient norm", norm) if not (self.scaled or math.isfinite(norm)) else None)
            if bad is not None:
                raise NonFiniteLossError(_nonfinite_message(
                    bad[0], bad[1], self.arch, state.epoch, batch, step, state.last_finite,
                    self.cfg))
            state.last_finite = (loss, step + 1)
        return loss, norm


class _SupervisedRun:
    """One run of :func:`train_supervised`: the model, its optimiser and schedule, the
    batches, the TensorBoard logger and the :class:`_Progress`, with one method per stage."""

    def __init__(self, parts: PreparedData | Sequence[PreparedData], arch: str,
                 cfg: SupervisedConfig, arch_config: Mapping[str, Any] | None, out: Path,
                 seed: int, device: torch.device, verbose: bool) -> None:
        parts = as_datasets(parts)
        data = parts[0]  # the datasets share window, feature spec and columns
        self.parts, self.data, self.arch, self.cfg, self.out = parts, data, arch, cfg, out
        self.seed, self.device, self.verbose = seed, device, verbose
        self.amp_dtype = autocast_dtype(cfg.amp, device)
        # fp16 needs loss scaling (PyTorch AMP); bf16 and float32 do not.
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=self.amp_dtype == torch.float16)
        _seed_everything(seed)
        spec = data.label_spec
        self.model = SupervisedModel(
            arch, data.n_features, data.window, features_dim=cfg.features_dim,
            clip=data.scaler.clip, aux_horizons=cfg.aux_horizons, task=spec.task,
            horizons=spec.horizons if spec.task == "multi_horizon" else (),
            asset_names=[p.name for p in parts], asset_embedding=cfg.asset_embedding,
            arch_config=with_time_unit(arch, arch_config or {}, data.bar_seconds),
            timeframes=data.timeframe_windows,
        ).to(device)
        if spec.task == "volatility":
            self.model.set_target_scale(*_log_volatility_scale(  # pooled train labels
                np.concatenate([p.train.labels.numpy() for p in parts])))
        self.n_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        check_loss_task(cfg.loss, spec.task)
        weight = (torch.tensor(
            _task_class_weights(np.sum([p.train.class_counts() for p in parts], axis=0)),
            dtype=torch.float32, device=device)  # from the pooled train labels
            if cfg.class_weights and spec.task != "volatility" else None)
        self.train_batches, self.val_parts = _split_batches(
            parts, self.model.aux_horizons, cfg, device, include_dt=self.model.include_dt)
        self.val_batches = self.val_parts[0][1] if len(parts) == 1 and self.val_parts else None
        self.objective = _Objective(cfg, self.model, weight, _sharpe_cost(parts, cfg),
                                    _magnitude_scale(self.train_batches))
        self.chunk = cfg.chunk_length
        if self.chunk > 1 and len(parts) > 1 and cfg.sampling == "balanced":
            raise ValueError("sampling='balanced' draws single windows; with runs of "
                             f"consecutive decisions (chunk_bars={self.chunk}, a Sharpe loss) "
                             "use sampling='proportional'")
        epoch_items = len(self.train_batches)
        if self.chunk > 1:
            epoch_items = self.chunk * _n_chunks(epoch_items, self.chunk)
            if epoch_items == 0:
                raise ValueError(f"the train split has {len(self.train_batches)} labelled "
                                 f"decisions, fewer than 2 * chunk_bars - 1 = "
                                 f"{2 * self.chunk - 1} (lower SupervisedConfig.chunk_bars)")
        self.per_epoch = math.ceil(epoch_items / cfg.batch_size)
        if cfg.max_train_batches is not None:
            self.per_epoch = min(self.per_epoch, cfg.max_train_batches)
        self.total_steps = self.per_epoch * cfg.epochs
        self.optimizer = _adamw(_param_groups(self.model, cfg.weight_decay), cfg.lr, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.total_steps, cfg.warmup_fraction))
        self.state = _Progress()
        self.watch = _FiniteWatch(self.state, arch, cfg, scaled=self.scaler.is_enabled())
        self.best_metric = "val_loss" if self.val_parts else "train_loss"
        self.best_path, self.last_path = out / "best.pt", out / "last.pt"
        self.tb = TBLogger(out / "tb", enabled=False)  # a no-op until fit() opens the log

    # -- checkpoints -------------------------------------------------------------------

    def resume(self, path: Path) -> None:
        """Continue from a ``last.pt``/``interrupted.pt``: weights, optimiser, schedule,
        loss scale, progress and the torch RNGs (CPU, and CUDA where both runs have it).

        The file is read onto the CPU: ``load_state_dict`` copies the weights to the model's
        device, and the optimiser puts each state tensor where its policy wants it (AdamW's
        ``step`` counters stay on the CPU unless the optimiser is fused: a GPU ``step`` of a
        non-fused AdamW costs host syncs at every step)."""
        ckpt = load_checkpoint(path, expect_arch=self.arch,
                               expect_feature_spec=self.data.feature_spec,
                               expect_kind="supervised", map_location="cpu")
        resume = _check_resume(ckpt, self.data, path)
        names = checkpoint_dataset_names(ckpt)
        if (len(names) > 1 or len(self.parts) > 1) and names != tuple(
                p.name for p in self.parts):
            raise ValueError(f"checkpoint {path} was trained on datasets "
                             f"{list(names)}, this run has "
                             f"{[p.name for p in self.parts]}")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(resume["scaler"])
        self.state = _Progress.resumed(resume, int(ckpt["step"]))
        self.watch.state = self.state
        if "rng" in resume:
            _restore_rng_state(resume["rng"])

    def resume_record(self, epoch: int, batch: int) -> dict[str, Any]:
        """The ``resume`` field of a checkpoint that continues at ``(epoch, batch)``."""
        state = self.state
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "history": state.history,
            "best_val_loss": state.best_loss,
            "best_epoch": state.best_epoch,
            "best_step": state.best_step,
            "best_metrics": state.best_metrics,
            "bad_epochs": state.bad_epochs,
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
        }

    def save(self, path: Path, *, epoch: int, metrics: Mapping[str, Any],
             resume: dict[str, Any] | None) -> Path:
        """Write a checkpoint of the model now (``epoch``: epochs done)."""
        state = self.state
        best = best_record(self.best_metric, state.best_loss, state.best_step, state.best_epoch)
        return save_checkpoint(_payload(self.model, self.parts, self.cfg, epoch=epoch,
                                        step=state.step, metrics=metrics, seed=self.seed,
                                        resume=resume, best=best), path)

    def save_interrupted(self, stem: Path) -> Path:
        """``<stem>.pt``: a checkpoint that resumes where the run stopped."""
        state = self.state
        return self.save(stem.parent / f"{stem.name}.pt", epoch=state.epoch, metrics={},
                         resume=self.resume_record(state.epoch, state.batch))

    # -- training ----------------------------------------------------------------------

    def fit(self, callbacks: Sequence[Callback]) -> float:
        """Run the remaining epochs; returns the loop's wall time (seconds). Any failure
        saves ``interrupted.pt`` where it can and is re-raised (:func:`stop_training`)."""
        self.tb = TBLogger(self.out / "tb", enabled=self.cfg.tensorboard)
        if self.verbose and self.cfg.tensorboard:
            print_tensorboard_hint(self.tb.log_dir)
        progress = None
        if self.cfg.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=self.total_steps, initial=self.state.step,
                            desc=f"supervised {self.arch}", unit="step", leave=False)
        self.model.train()
        state = self.state
        first_epoch, skip = state.epoch, state.batch
        started = time.perf_counter()
        try:
            for epoch in range(first_epoch, self.cfg.epochs):
                state.epoch, state.batch = epoch, skip if epoch == first_epoch else 0
                epoch_started = time.perf_counter()
                record = self.train_epoch(callbacks, progress)
                if self.end_epoch(record, epoch_started):
                    break
        except (KeyboardInterrupt, Exception) as exc:  # any failure: save what can be saved
            if isinstance(exc, TrainingInterrupted):
                raise
            saved, failures = save_where_possible(self.save_interrupted, self.out)
            stopped = stop_training(exc, f"training of {self.arch!r}",
                                    f"epoch {state.epoch + 1}, step {state.step}", saved,
                                    failures, "train_supervised")
            if stopped is exc:
                raise
            raise stopped from exc
        finally:
            if progress is not None:
                progress.close()
            self.tb.flush()
        return time.perf_counter() - started

    def train_epoch(self, callbacks: Sequence[Callback], progress: Any) -> dict[str, Any]:
        """The optimiser steps of epoch ``state.epoch`` from batch ``state.batch`` on;
        returns the epoch's record (train loss and accuracy, lr).

        Nothing is read back from the device between logging steps: the batch order moves
        to the device once, the running sums stay there, and the loss and gradient norm are
        checked every ``log_every`` steps and at the epoch's end (:class:`_FiniteWatch`)."""
        state, cfg = self.state, self.cfg
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + state.epoch)
        order = (_epoch_order(len(self.train_batches), self.chunk, generator) if self.chunk > 1
                 else epoch_order(self.train_batches.sizes, cfg.sampling, generator))
        if cfg.num_workers == 0:  # batches slice the order where they are gathered
            order = order.to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        task = self.model.task
        correct = torch.zeros((), dtype=torch.int64 if task == "direction" else torch.float32,
                              device=self.device)
        seen = 0
        window_started, window_items = time.perf_counter(), 0
        for index in _loader_batches(self.train_batches, order, cfg.batch_size,
                                     cfg.num_workers, state.batch, self.per_epoch):
            obs, labels, targets = self.train_batches.get(index)
            loss, lr, grad_norm, logits = self.train_step(obs, labels, targets)
            n_items = int(labels.shape[0])
            loss_sum += loss.float() * n_items
            correct += _n_correct(logits.detach(), labels, task)
            seen += n_items
            window_items += n_items
            if state.step % cfg.log_every == 0:
                loss_value, norm_value = self.watch.check()  # the step's one host sync
                elapsed = time.perf_counter() - window_started
                self.tb.scalars({"loss": loss_value, "lr": lr, "grad_norm": norm_value,
                                 "samples_per_s": window_items / max(elapsed, 1e-9)},
                                state.step, prefix="train")
                window_started, window_items = time.perf_counter(), 0
                if progress is not None:
                    progress.set_postfix(epoch=state.epoch, loss=f"{loss_value:.4f}",
                                         refresh=False)
            if progress is not None:
                progress.update(1)
            step_state = TrainState(self.model, state.epoch, state.step, state.batch, lr,
                                    loss, grad_norm)
            for callback in callbacks:
                callback(step_state)
        self.watch.check()  # the steps since the last logging step, before validation
        loss_total, correct_total = torch.stack([loss_sum, correct.float()]).tolist()
        return {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": loss_total / seen if seen else math.nan,
            "train_accuracy": (correct_total / seen if seen and task != "volatility"
                               else math.nan),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    def train_step(self, obs: Tensor | dict[str, Tensor], labels: Tensor,
                   targets: Mapping[str, Tensor]
                   ) -> tuple[Tensor, float, Tensor, Tensor]:
        """One optimiser step, queued on the device without reading anything back; returns
        ``(loss, lr used, gradient norm, task output)`` (0-dim detached tensors for the
        loss and the norm, which :attr:`watch` checks later)."""
        state, cfg, model = self.state, self.cfg, self.model
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None):
            logits, aux = model.forward_all(obs, targets.get("asset"))
        loss = self.objective(logits, labels, targets, self.chunk)
        if aux and "aux" in targets and cfg.aux_weight > 0:
            loss = loss + cfg.aux_weight * _aux_loss(aux, targets["aux"], model.aux_names)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (no-op without fp16)
        clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).detach()
        loss = loss.detach()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.step_optimizer(loss, grad_norm)
        self.scheduler.step()
        self.watch.record(state.step, state.batch, loss, grad_norm)
        state.step += 1
        state.batch += 1
        return loss, lr, grad_norm, logits

    def step_optimizer(self, loss: Tensor, grad_norm: Tensor) -> None:
        """The optimiser step, skipped on the device when ``loss`` or ``grad_norm`` is not
        finite, as ``torch.amp.GradScaler`` skips steps: a fused optimiser takes the flag
        ``found_inf`` and leaves weights, moments and step count alone, with no host sync.
        With fp16 the scaler does it; a non-fused optimiser (an older checkpoint's) steps."""
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if not self.optimizer.param_groups[0].get("fused"):
            self.optimizer.step()
            return
        found_inf = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
        self.optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf  # type: ignore[attr-defined]

    def end_epoch(self, record: dict[str, Any], epoch_started: float) -> bool:
        """Validate, log, keep the best checkpoint, write ``last.pt``; returns whether early
        stopping ends the run."""
        state, cfg = self.state, self.cfg
        metrics, score = self.validate(record)
        self.tb.scalars({"epoch_loss": record["train_loss"],
                         "accuracy": record["train_accuracy"]}, state.step, prefix="train")
        record["seconds"] = time.perf_counter() - epoch_started
        state.history.append(record)
        epochs_done = state.epoch + 1
        if score < state.best_loss:
            state.best_loss, state.best_epoch, state.best_metrics = score, state.epoch, metrics
            state.bad_epochs, state.best_step = 0, state.step
            self.save(self.best_path, epoch=epochs_done, metrics=metrics, resume=None)
        else:
            state.bad_epochs += 1
        self.save(self.last_path, epoch=epochs_done, metrics=metrics,
                  resume=self.resume_record(epochs_done, 0))
        if self.verbose:
            val_text = (f", val loss {record['val_loss']:.4f}" if "val_loss" in record else "")
            if "val_macro_f1" in record:
                val_text += (f", acc {record['val_accuracy']:.3f}, macro-F1 "
                             f"{record['val_macro_f1']:.3f}")
            elif "val_rmse" in record:
                val_text += f", MAE {record['val_mae']:.6f}, QLIKE {record['val_qlike']:.4f}"
            print(f"[{self.arch}] epoch {epochs_done}/{cfg.epochs}: train loss "
                  f"{record['train_loss']:.4f}{val_text}", file=sys.stderr)
        self.tb.flush()
        if cfg.patience is not None and state.bad_epochs >= cfg.patience:
            state.stopped_early = epochs_done < cfg.epochs
            return True
        return False

    def validate(self, record: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """Validation metrics into ``record`` and TensorBoard; returns ``(metrics, score)``,
        the score being the validation loss (the train loss without a validation split).

        With several datasets the metrics are pooled over the validation items of all of
        them (the score: the pooled loss), and ``metrics["datasets"]`` (``record
        ["val_datasets"]``) holds each dataset's loss and report numbers."""
        if not self.val_parts:
            return {"loss": record["train_loss"]}, record["train_loss"]
        step = self.state.step
        if self.val_batches is None:
            val_loss, report, per_dataset = self.validate_datasets()
        else:
            val_loss, report, _ = _evaluate(self.model, self.val_batches, self.objective,
                                            self.amp_dtype)
            per_dataset = None
        metrics = {"loss": val_loss, **{k: v for k, v in report.to_dict().items()
                                        if not k.startswith("confusion")}}
        record.update({f"val_{k}": v for k, v in metrics.items()})
        if per_dataset is not None:
            record["val_datasets"] = per_dataset
            for name, values in per_dataset.items():
                self.tb.scalars(values, step, prefix=f"val/{name}")
        if not isinstance(report, ClassificationReport):
            self.tb.scalars({k: v for k, v in metrics.items() if k != "n"}, step, prefix="val")
            if per_dataset is not None:
                metrics["datasets"] = per_dataset
            return metrics, val_loss
        record["val_confusion"] = [list(r) for r in report.confusion]
        if per_dataset is not None:
            metrics["datasets"] = per_dataset
        self.tb.scalars({"loss": val_loss, "accuracy": report.accuracy,
                         "macro_f1": report.macro_f1,
                         **{f"recall_{n}": report.recall[k] for k, n in enumerate(CLASS_NAMES)}},
                        step, prefix="val")
        self.tb.confusion_matrix("val/confusion_matrix", report.confusion, step)
        return metrics, val_loss

    def validate_datasets(self) -> tuple[float, TaskReport, dict[str, Any]]:
        """Pooled validation loss and report over every dataset's validation items (each
        capped by ``max_eval_batches``), and each dataset's loss and report numbers
        (accuracy, macro-F1, ... of the task) with its item count."""
        logits_all, labels_all, targets_all, per_dataset = [], [], [], {}
        for name, batches in self.val_parts:
            logits, labels, targets = _predict(self.model, batches, self.cfg, self.amp_dtype)
            loss, report, _ = _scored(self.model, logits, labels, targets, self.objective)
            per_dataset[name] = {
                "loss": loss,
                **{k: v for k, v in report.to_dict().items()
                   if isinstance(v, int | float) and not isinstance(v, bool)},
                "items": int(labels.shape[0])}
            logits_all.append(logits)
            labels_all.append(labels)
            targets_all.append(targets)
        pooled = {name: torch.cat([t[name] for t in targets_all]) for name in targets_all[0]}
        loss, report, _ = _scored(self.model, torch.cat(logits_all), torch.cat(labels_all),
                                  pooled, self.objective)
        return loss, report, per_dataset

    def result(self, train_seconds: float) -> SupervisedResult:
        """Load the best weights, log the hyperparameters, close the logger."""
        state, cfg, model = self.state, self.cfg, self.model
        if state.best_epoch >= 0:
            best = load_checkpoint(self.best_path, map_location=self.device)
            model.load_state_dict(best["state_dict"])
        model.eval()
        hparams = {"arch": self.arch, "seed": self.seed, "window": self.data.window,
                   **cfg.to_dict(),
                   **{f"arch.{k}": v for k, v in model.backbone_config().items()}}
        best_f1 = float(state.best_metrics.get("macro_f1", math.nan))
        self.tb.hparams(hparams, {"hparams/best_val_loss": state.best_loss,
                                  "hparams/best_val_macro_f1": best_f1})
        self.tb.close()
        return SupervisedResult(
            model=model, arch=self.arch, best_checkpoint=self.best_path,
            last_checkpoint=self.last_path,
            log_dir=self.tb.log_dir if cfg.tensorboard else None, history=state.history,
            best_epoch=state.best_epoch, best_val_loss=state.best_loss,
            best_metrics=state.best_metrics, steps=state.step,
            stopped_early=state.stopped_early, device=str(self.device),
            train_seconds=train_seconds, n_parameters=self.n_parameters, config=cfg,
        )


def _split_batches(parts: Sequence[PreparedData], aux_horizons: Sequence[int],
                   cfg: SupervisedConfig, device: torch.device, *, include_dt: bool = False
                   ) -> tuple[_Batches, list[tuple[str, _Batches]]]:
    """The train :class:`_Batches` of all datasets and the validation ones of each dataset
    with a validation part (``(name, batches)``; with elapsed times for ``include_dt``), with
    the targets of :func:`_item_targets`: the auxiliary targets (forward returns over
    ``aux_horizons`` in units of each dataset's train-split std) when there are horizons, and
    what ``cfg``'s objective needs."""
    train_targets: list[dict[str, np.ndarray]] = []
    val: list[tuple[str, _Batches]] = []
    for k, data in enumerate(parts):
        aux_train = aux_val = None
        if aux_horizons:
            raw = _aux_targets(data, data.train, aux_horizons, None)
            scale = np.nanstd(raw, axis=0)
            scale[~(np.isfinite(scale) & (scale > 0))] = 1.0
            aux_train = raw / scale
            if data.val is not None:
                aux_val = _aux_targets(data, data.val, aux_horizons, scale)
        train_targets.append(_item_targets(data, data.train, cfg, aux_train))
        if data.val is not None:
            val.append((data.name, _Batches(data, data.val, device,
                                            _item_targets(data, data.val, cfg, aux_val),
                                            include_dt, asset_ids=[k])))
    return (_Batches(parts, [p.train for p in parts], device, train_targets, include_dt),
            val)


def _epoch_order(n_items: int, chunk: int, generator: torch.Generator) -> Tensor:
    """The items of one epoch in training order: a permutation of all items (``chunk == 1``),
    or :func:`_n_chunks` runs of ``chunk`` consecutive items in random order, the runs tiling
    the items from a random offset in ``[0, chunk)`` so that their boundaries move from epoch
    to epoch. Seeded by ``generator`` only."""
    if chunk == 1:
        return torch.randperm(n_items, generator=generator)
    offset = int(torch.randint(chunk, (1,), generator=generator))
    starts = offset + chunk * torch.randperm(_n_chunks(n_items, chunk), generator=generator)
    return (starts[:, None] + torch.arange(chunk)).reshape(-1)


def _n_chunks(n_items: int, chunk: int) -> int:
    """Runs of ``chunk`` consecutive items per epoch: as many as fit after any offset in
    ``[0, chunk)``, so every epoch has the same number of steps."""
    return (n_items - chunk + 1) // chunk


def _nonfinite_message(what: str, value: float, arch: str, epoch: int, batch: int, step: int,
                       last_finite: tuple[float, int] | None, cfg: SupervisedConfig) -> str:
    last = (f"last finite loss {last_finite[0]:.6g} at step {last_finite[1]}"
            if last_finite is not None else "no finite loss before it")
    return (f"non-finite training {what} ({value}) at step {step + 1} (epoch {epoch + 1}, batch "
            f"{batch + 1}) for architecture {arch!r}; {last}. Training stopped: try a lower lr "
            f"(now {cfg.lr:g}), gradient clipping (grad_clip={cfg.grad_clip}) or check the "
            "features for extreme values")
