"""Supervised buy/hold/sell training of any zoo architecture, warm-startable into SB3 PPO.

Model (:class:`SupervisedModel`)::

    obs [B, window, F + 2]  -> SequenceExtractor(Box(window, F + 2), arch, features_dim, **cfg)
                            -> [B, features_dim] -> head = Linear(features_dim, 3) -> logits

The input is the env's Box observation layout (:mod:`tradezoo.envs.market`): the scaled
features plus the two account columns (position held, equity log-return), which are **0** in
training (a flat account: the observation the env shows at an episode's first decision;
:func:`~tradezoo.agents.data.flat_account_observation`). The classes are 0 sell, 1 hold, 2 buy:
the env's action order. So the classifier runs unchanged on env observations, and its weights
map one to one onto an SB3 ``ActorCriticPolicy`` built with ``features_extractor_class=
SequenceExtractor`` (same ``arch``, ``features_dim`` and config, ``share_features_extractor=
True``) and ``net_arch=dict(pi=[], vf=[64])``::

    policy.features_extractor.load_state_dict(model.extractor.state_dict())
    policy.action_net.load_state_dict(model.head.state_dict())     # Linear(features_dim, 3)

after which the policy's deterministic action is the classifier's argmax on every
observation (the PPO trainer tests this). A model whose backbone takes timeframes as its
scales (``msa`` on intraday bars) takes the env's dict observation instead: the last
``window`` closed bars of each timeframe and a zero account vector ``[4]``
(:meth:`~tradezoo.agents.data.PreparedData.for_model`, cut by the env's own rule), and its
policy is built on the dict env of the same timeframes. During PPO the account values are no
longer 0; the classifier never saw them, which is what fine-tuning is for.

Elapsed time: for an architecture whose backbone uses ``dt`` (``ltc``, ``cfc``;
:func:`~tradezoo.policies.registry.uses_dt`) the observation is the env's ``include_dt=True``
one, a Dict of ``"window"`` ``[B, window, F + 2]`` and ``"dt"`` ``[B, window]`` (seconds since
the previous bar's open, unscaled, :attr:`PreparedData.dt_seconds`), and the extractor hands
``dt`` to the backbone; ``time_unit`` defaults to the data's bar interval
(:func:`~tradezoo.policies.registry.with_time_unit`, saved in the checkpoint's
``arch_config``). Batches get them beside each window, as the env does, from
:class:`ModelInputs`, the one builder of supervised observations (multi-timeframe windows too).
The checkpoint records ``include_dt`` (absent: ``False``, a model that never saw ``dt``).

Tasks (:attr:`~tradezoo.agents.data.LabelSpec.task`, docs/tasks.md): every architecture
learns every task through the same extractor and a task head on its ``[B, features_dim]``
output: ``direction`` (the classifier above), ``volatility`` (one output, the log realised
volatility per bar in units of the train split's mean and std; MSE on the log) and
``multi_horizon`` (one 3-class head per horizon, output ``[B, H, 3]``; the horizons' losses,
each the direction loss, averaged). Only a ``direction`` model maps onto a PPO policy.

Auxiliary heads (every architecture): when ``SupervisedConfig.aux_horizons`` is set, the model
adds ``aux = Heads(d_model, horizons)`` on the backbone output ``[B, d_model]``, ``Heads``
being the class the architecture's registry entry names (its ``aux_heads``, listed in
:data:`AUX_HEADS`: ``MambaTSHeads``, ``MSAHeads``) or :class:`AuxHeads`, built as
``Heads(d_model, horizons=("h4", "h24", ...), regression=True)``
(the interface of :class:`tradezoo.policies.msa.MSAHeads`); its ``forward`` returns a dict
with ``"regression"`` ``[B, H]`` (trained on the forward returns over each horizon, in units of
their train-split std: MSE) and the direction logits of "the price rises over the horizon"
(one ``[B]`` entry per horizon name, or ``"direction"`` ``[B, H]``; BCE with logits). Other
outputs (the heads' own class logits) are not trained: :attr:`SupervisedModel.head` is the
task head. Their loss is added with weight ``aux_weight``. A registered class with another
constructor trains without them and a warning says so. The auxiliary heads are not part of
the PPO policy.

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

Evaluation (:func:`evaluate_supervised`): a classification report on the labelled rows of a
split, and a backtest of the classifier's signals through :func:`tradezoo.backtest.simulate`
with the dataset's costs against buy-and-hold. Signals become target positions as in the
env's ``signal`` scheme: buy -> +1 (long), sell -> -1 (short; 0 = flat with
``allow_short=False``), hold -> keep the previous target (flat before the first signal).
:func:`model_predictions` gives the predictions it backtests (class probabilities, or
volatility forecasts) at any decision rows, on the model's own inputs.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from tradezoo.agents.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    check_payload,
    checkpoint_dataset_names,
    data_payload,
    input_timeframes,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    timeframe_scalers_from_checkpoint,
    versions,
)
from tradezoo.agents.data import (
    TASKS,
    LabelSpec,
    PreparedData,
    flat_account_observation,
    flat_account_vector,
    observation_space,
    with_dt_space,
)
from tradezoo.agents.determinism import determinism_scope, use_deterministic
from tradezoo.agents.losses import (
    LOSSES,
    classification_term,
    expected_position,
    has_sharpe_term,
    magnitude_weights,
    sharpe_loss,
)
from tradezoo.agents.multi import (
    MultiData,
    as_datasets,
    check_known_asset,
    checkpoint_scaler,
    epoch_order,
)
from tradezoo.agents.rundir import save_where_possible
from tradezoo.agents.tensorboard import TBLogger, print_tensorboard_hint
from tradezoo.agents.validation import coerce_config, from_known_keys
from tradezoo.backtest.costs import CostModel
from tradezoo.data.checks import FieldChecks, check_choice, check_number
from tradezoo.data.elapsed import DT_KEY, WINDOW_KEY, dt_key
from tradezoo.data.labels import CLASS_NAMES, forward_returns, trailing_volatility
from tradezoo.data.prepare import closed_window_rows
from tradezoo.data.windows import WindowDataset
from tradezoo.envs.layout import ACCOUNT_KEY
from tradezoo.errors import ConfigError, TradezooError
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.registry import (
    AUX_HEADS,
    get_architecture,
    portable_config,
    uses_dt,
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
    "model_predictions",
    "multi_horizon_report",
    "rebalance_within_band",
    "resolve_device",
    "signals_to_positions",
    "train_supervised",
    "volatility_report",
    "volatility_target_positions",
]

N_CLASSES = 3

#: Valid values of :attr:`SupervisedConfig.amp`.
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")

#: Chunk length of the training batches with a Sharpe term when ``chunk_bars`` is not set.
SHARPE_CHUNK_BARS = 32


# --------------------------------------------------------------------------------- model


class AuxHeads(nn.Module):
    """The auxiliary heads of an architecture whose registry entry names none: per horizon,
    a linear forward-return regression and a linear "the price rises" logit on the backbone
    output.

    ``AuxHeads(d_model, horizons=("h4", "h24"), regression=True)``; ``forward(z [B, d_model])``
    returns ``{"regression": [B, H], "direction": [B, H]}`` (module docstring).
    """

    def __init__(self, d_model: int, horizons: Sequence[str], regression: bool = True) -> None:
        super().__init__()
        self.horizons = tuple(horizons)
        self.direction = nn.Linear(d_model, len(self.horizons))
        self.regressor = nn.Linear(d_model, len(self.horizons)) if regression else None

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """``z [B, d_model]`` -> ``{"direction": [B, H], "regression": [B, H]}`` (logits and
        standardised forward returns)."""
        out = {"direction": self.direction(z)}
        if self.regressor is not None:
            out["regression"] = self.regressor(z)
        return out


def aux_heads_class(arch: str) -> type[nn.Module]:
    """The auxiliary-heads class of ``arch``: its registry entry's (``MambaTSHeads``,
    ``MSAHeads``) or :class:`AuxHeads` (see the module docstring)."""
    return get_architecture(arch).aux_heads_cls or AuxHeads


def task_output_width(task: str, n_horizons: int) -> int:
    """Outputs of the task head: 3 class logits (``direction``), 1 log-volatility
    (``volatility``), 3 logits per horizon (``multi_horizon``)."""
    return {"direction": N_CLASSES, "volatility": 1,
            "multi_horizon": N_CLASSES * n_horizons}[task]


class SupervisedModel(nn.Module):
    """Zoo backbone + task head on the env's Box observation (see the module docstring).

    Args:
        arch: a registry name (:data:`~tradezoo.policies.registry.ARCHITECTURES`).
        n_features: ``F``, scaled feature columns (the observation has ``F + 2``).
        window: bars per observation.
        features_dim: extractor output width (the PPO policy's ``features_dim``).
        clip: the scaler's clip (bounds of the observation space, as the env's).
        aux_horizons: horizons of the optional auxiliary heads (``()``: none).
        task: what the head predicts (:attr:`~tradezoo.agents.data.LabelSpec.task`).
        horizons: the horizons (bars) of a ``multi_horizon`` head, one 3-class head each.
        asset_names: the datasets the model is trained on (its assets, in order).
        asset_embedding: learn a vector ``[F]`` per asset of ``asset_names``, added to the
            feature columns of every row of the input (:meth:`forward`'s ``asset``).
        arch_config: the architecture's config fields as a dict (use it for a field whose
            name clashes with an argument here, e.g. ``mlp``'s ``window``).
        timeframes: timeframe name -> bars per window of a multi-timeframe model (it then
            takes the env's dict observation; :func:`~tradezoo.agents.data.model_timeframes`);
            ``None`` or empty: the Box observation.
        include_dt: the observation carries each window's elapsed seconds (the envs'
            ``include_dt=True``; module docstring); ``None``: whether the architecture uses
            ``dt``.
        **cfg: more config fields (``d_model``, ``n_layers``, ...); they override
            ``arch_config``.

    Attributes:
        extractor: the :class:`~tradezoo.policies.extractor.SequenceExtractor`.
        head: the task head: ``Linear(features_dim, 3)``, logits of sell, hold, buy
            (``direction``); ``Linear(features_dim, 1)``, the standardised log volatility
            (``volatility``); ``Linear(features_dim, 3 H)``, the ``H`` heads' logits
            (``multi_horizon``).
        target_loc, target_scale: buffers of a ``volatility`` model: the train split's mean
            and std of the log realised volatility the head's output is in units of.
        aux: the auxiliary heads or ``None``.
        assets: ``Embedding(len(asset_names), F)`` (zero-initialised) or ``None``.
    """

    def __init__(
        self,
        arch: str,
        n_features: int,
        window: int,
        *,
        features_dim: int = 64,
        clip: float | None = 5.0,
        aux_horizons: Sequence[int] = (),
        task: str = "direction",
        horizons: Sequence[int] = (),
        asset_names: Sequence[str] = (),
        asset_embedding: bool = False,
        arch_config: Mapping[str, Any] | None = None,
        timeframes: Mapping[str, int] | None = None,
        include_dt: bool | None = None,
        **cfg: Any,
    ) -> None:
        super().__init__()
        self.task = check_choice("task", task, TASKS)
        self.horizons: tuple[int, ...] = tuple(int(h) for h in horizons)
        if task == "multi_horizon" and not self.horizons:
            raise ConfigError("horizons must name the horizons of a multi_horizon model, got ()")
        cfg = {**dict(arch_config or {}), **cfg}
        self.arch = arch
        self.n_features = int(n_features)
        self.window = int(window)
        self.features_dim = int(features_dim)
        self.timeframes: dict[str, int] = {str(k): int(v) for k, v in (timeframes or {}).items()}
        space = observation_space(self.window, self.n_features, clip, self.timeframes)
        self.include_dt = uses_dt(arch) if include_dt is None else bool(include_dt)
        if self.include_dt:
            space = with_dt_space(space)
        self.observation_space = space
        self.extractor = SequenceExtractor(space, arch=arch, features_dim=features_dim, **cfg)
        self.head = nn.Linear(self.features_dim, task_output_width(task, len(self.horizons)))
        if task == "volatility":
            self.register_buffer("target_loc", torch.zeros(()))
            self.register_buffer("target_scale", torch.ones(()))
        self.asset_names: tuple[str, ...] = tuple(str(n) for n in asset_names)
        self.assets: nn.Embedding | None = None
        if asset_embedding:
            if not self.asset_names:
                raise ValueError("asset_embedding needs the asset names (asset_names)")
            # Zero at the start: the shared model first sees every asset alike and the
            # vectors move apart only as far as the loss asks.
            self.assets = nn.Embedding(len(self.asset_names), self.n_features)
            nn.init.zeros_(self.assets.weight)
        self.aux_horizons: tuple[int, ...] = tuple(int(h) for h in aux_horizons)
        self.aux: nn.Module | None = None
        if self.aux_horizons:
            heads_cls = aux_heads_class(arch)
            try:
                self.aux = heads_cls(
                    self.backbone.d_model, horizons=self.aux_names, regression=True
                )
            except TypeError as exc:
                warnings.warn(
                    f"{heads_cls.__name__} of architecture {arch!r} does not take "
                    f"(d_model, horizons=..., regression=True) ({exc}); aux_horizons "
                    "ignored",
                    stacklevel=2,
                )
                self.aux_horizons = ()

    @property
    def aux_names(self) -> tuple[str, ...]:
        """Names of the auxiliary horizons: ``"h<bars>"``."""
        return tuple(f"h{h}" for h in self.aux_horizons)

    @property
    def backbone(self) -> nn.Module:
        assert self.extractor.backbone is not None
        return self.extractor.backbone

    def backbone_config(self) -> dict[str, Any]:
        """The backbone's full config as constructor keywords (``init`` fields only)."""
        config = self.extractor.backbone.config  # type: ignore[union-attr]
        return {f.name: getattr(config, f.name) for f in fields(config) if f.init}

    @property
    def horizon_names(self) -> tuple[str, ...]:
        """Names of a ``multi_horizon`` model's heads: ``"h<bars>"``."""
        return tuple(f"h{h}" for h in self.horizons)

    def set_target_scale(self, loc: float, scale: float) -> None:
        """Set a ``volatility`` model's output units: log volatility = ``loc + scale * head``."""
        self.target_loc.fill_(float(loc))  # type: ignore[operator]
        self.target_scale.fill_(float(scale))  # type: ignore[operator]

    def _task_output(self, features: Tensor) -> Tensor:
        """Extractor output ``[B, features_dim]`` -> the task's output (:meth:`forward`)."""
        out = self.head(features)
        if self.task == "volatility":
            return self.target_loc + self.target_scale * out[:, 0]  # [B] log volatility
        if self.task == "multi_horizon":
            return out.reshape(out.shape[0], len(self.horizons), N_CLASSES)  # [B, H, 3]
        return out  # [B, 3]

    def with_asset(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None
                   ) -> Tensor | Mapping[str, Tensor]:
        """``obs [B, window, F + 2]`` (or its dict with elapsed times, the window under
        ``"window"``) plus the asset vectors of ``asset [B]`` (int64 ids into
        :attr:`asset_names`) on the feature columns; ``obs`` itself without an embedding.

        Raises:
            ValueError: an embedding and no ``asset``, or a multi-timeframe observation.
        """
        if self.assets is None:
            return obs
        box = obs.get(WINDOW_KEY) if isinstance(obs, Mapping) else obs
        if asset is None or not isinstance(box, Tensor):
            raise ValueError(f"this model has an asset embedding: pass the asset ids of the "
                             f"batch with Box observations (assets {list(self.asset_names)})")
        vectors = functional.pad(self.assets(asset), (0, box.shape[-1] - self.n_features))
        moved = box + vectors[:, None, :].to(box.dtype)  # [B, 1, F + 2] over the window
        return {**obs, WINDOW_KEY: moved} if isinstance(obs, Mapping) else moved

    def forward_all(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None = None
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``obs`` (as :meth:`forward`) -> ``(task output (see forward), aux outputs)``."""
        encoded = self.extractor.encode(self.with_asset(obs, asset))  # [B, d_model]
        output = self._task_output(self.extractor.head(encoded))
        aux: dict[str, Tensor] = self.aux(encoded) if self.aux is not None else {}
        return output, aux

    def forward(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None = None
                ) -> Tensor:
        """The env's observation (Box ``[B, window, F + 2]``, or the dict of timeframe
        windows ``[B, window_tf, F]`` and ``"account"`` ``[B, 4]``; ``asset [B]``: ids, with
        an asset embedding) -> ``direction``: logits ``[B, 3]`` (sell, hold, buy);
        ``volatility``: log volatility per bar ``[B]``; ``multi_horizon``: logits
        ``[B, H, 3]``."""
        return self._task_output(self.extractor(self.with_asset(obs, asset)))

    def forward_features(self, x: Tensor | Mapping[str, Tensor],
                         dt: Tensor | Mapping[str, Tensor] | None = None,
                         asset: Tensor | None = None) -> Tensor:
        """Scaled features of a flat account (``[B, window, F]``, or timeframe name ->
        ``[B, window_tf, F]`` for a multi-timeframe model) and, for a model with
        :attr:`include_dt`, their elapsed seconds (``[B, window]``, or timeframe name ->
        ``[B, window_tf]``; ``None``: regular bars) -> :meth:`forward`'s output (``asset``:
        ids, with an asset embedding)."""
        return self(with_dt_observation(flat_observation(x), dt) if self.include_dt
                    else flat_observation(x), asset)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this model) AdamW must not decay: the backbone's
        ``no_weight_decay()``, every bias and every parameter with fewer than 2 dimensions
        (norm scales, per-channel gains)."""
        prefix = "extractor.backbone."
        names = {prefix + n for n in self.backbone.no_weight_decay()}  # type: ignore[operator]
        for name, param in self.named_parameters():
            if param.ndim < 2 or name.endswith(".bias"):
                names.add(name)
        return names


def flat_observation(x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """Scaled feature windows -> the env's observation of a flat account: a Box window
    ``[B, L, F]`` gets its two zero account columns, a dict of timeframe windows gets the zero
    account vector ``[B, 4]``."""
    if isinstance(x, Tensor):
        return flat_account_observation(x)  # [B, L, F + 2]
    windows = dict(x)
    windows[ACCOUNT_KEY] = flat_account_vector(next(iter(windows.values())))  # [B, 4]
    return windows


def with_dt_observation(obs: Tensor | dict[str, Tensor],
                        dt: Tensor | Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """``obs`` as the envs' ``include_dt=True`` gives it (:mod:`tradezoo.data.elapsed`): a Box
    window becomes ``{"window": obs}`` plus ``"dt"``; a dict of timeframe windows gains
    ``"dt_<tf>"`` from ``dt[tf]``. ``dt=None`` leaves the elapsed times out (regular bars)."""
    if isinstance(obs, Tensor):
        return {WINDOW_KEY: obs} if dt is None else {WINDOW_KEY: obs, DT_KEY: dt}
    out = dict(obs)
    if isinstance(dt, Mapping):
        out.update({dt_key(name): value for name, value in dt.items()})
    return out


def model_from_checkpoint(
    checkpoint: Mapping[str, Any] | str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
) -> SupervisedModel:
    """Rebuild the :class:`SupervisedModel` of a ``"supervised"`` checkpoint, in eval mode,
    with its weights loaded (strictly: every tensor must fit).

    A dict is checked as a loaded file is
    (:func:`~tradezoo.agents.checkpoint.check_payload`: fields, size bound) before anything is
    built. A backend saved in the config that cannot run on ``map_location`` here (a CUDA
    ``mamba_ssm`` scan on the CPU or without the package, a ``"native"`` CPU kernel on CUDA or
    where it does not build) becomes ``"auto"`` with a warning
    (:func:`~tradezoo.policies.registry.portable_config`); the weights do not depend on it.

    Raises:
        CheckpointError: another kind of checkpoint, a malformed one, a model above the size
            bound, or weights that do not fit the model (the message names the missing/
            unexpected keys).
    """
    ckpt = (
        checkpoint
        if isinstance(checkpoint, Mapping)
        else load_checkpoint(checkpoint, map_location=map_location)
    )
    where = str(ckpt.get("path", "<in memory>"))
    if ckpt.get("kind") != "supervised":
        raise CheckpointError(
            f"checkpoint {where}: kind {ckpt.get('kind')!r}; model_from_checkpoint rebuilds "
            "'supervised' checkpoints"
        )
    check_payload(ckpt, where)
    scaler = ckpt["scaler"]
    spec = LabelSpec.from_dict(ckpt.get("label_spec") or {})
    model = SupervisedModel(
        ckpt["arch"],
        n_features=int(ckpt["n_features"]),
        window=int(ckpt["window"]),
        features_dim=int(ckpt.get("features_dim", 64)),
        clip=scaler.get("clip"),
        aux_horizons=tuple(ckpt.get("aux_horizons", ()) or ()),
        task=spec.task,
        horizons=spec.horizons if spec.task == "multi_horizon" else (),
        asset_names=checkpoint_dataset_names(ckpt),
        asset_embedding=bool(ckpt.get("asset_embedding", False)),
        arch_config=portable_config(ckpt["arch"], ckpt["arch_config"],
                                    torch.device(map_location), what=f"checkpoint {where}"),
        timeframes=input_timeframes(ckpt),
        include_dt=bool(ckpt.get("include_dt", False)),
    )
    load_weights(model, ckpt["state_dict"], where=where, what=f"architecture {ckpt['arch']!r}")
    model.to(map_location)
    model.eval()
    return model


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


# ------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class precision, recall, F1 and support, the confusion matrix, accuracy, macro-F1.

    ``confusion[i][j]`` counts items of true class ``i`` predicted as ``j`` (0 sell, 1 hold,
    2 buy). Precision of a class never predicted, and recall of a class absent, are 0.
    """

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]
    accuracy: float
    macro_f1: float

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly dict: ``accuracy``, ``macro_f1``, ``precision_sell``, ...,
        ``confusion`` (list of lists)."""
        out: dict[str, Any] = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        for k, name in enumerate(CLASS_NAMES):
            out[f"precision_{name}"] = self.precision[k]
            out[f"recall_{name}"] = self.recall[k]
            out[f"f1_{name}"] = self.f1[k]
            out[f"support_{name}"] = self.support[k]
        out["confusion"] = [list(row) for row in self.confusion]
        return out

    def __str__(self) -> str:
        lines = [f"{'class':<6} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
        for k, name in enumerate(CLASS_NAMES):
            lines.append(f"{name:<6} {self.precision[k]:>9.3f} {self.recall[k]:>7.3f} "
                         f"{self.f1[k]:>7.3f} {self.support[k]:>8d}")
        lines.append(f"accuracy {self.accuracy:.3f}, macro-F1 {self.macro_f1:.3f}")
        lines.append("confusion (rows true, columns predicted; sell hold buy):")
        lines.extend("  " + " ".join(f"{v:>6d}" for v in row) for row in self.confusion)
        return "\n".join(lines)


def classification_report(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]
) -> ClassificationReport:
    """:class:`ClassificationReport` of integer labels in ``{0, 1, 2}`` (both ``[N]``)."""
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} vs {pred.size}")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.size and (values.min() < 0 or values.max() >= N_CLASSES):
            raise ValueError(f"{name} must hold classes 0 (sell), 1 (hold), 2 (buy)")
    confusion = np.bincount(true * N_CLASSES + pred, minlength=N_CLASSES**2).reshape(
        N_CLASSES, N_CLASSES
    )
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(N_CLASSES), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(N_CLASSES), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(N_CLASSES),
                   where=denominator > 0)
    accuracy = float(tp.sum() / true.size) if true.size else 0.0
    return ClassificationReport(
        precision=tuple(float(v) for v in precision),
        recall=tuple(float(v) for v in recall),
        f1=tuple(float(v) for v in f1),
        support=tuple(int(v) for v in support),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        accuracy=accuracy,
        macro_f1=float(f1.mean()),
    )


def _volatility_errors(actual: np.ndarray, forecast: np.ndarray) -> tuple[float, float, float]:
    """``(MAE, RMSE, QLIKE)`` of volatility forecasts (module function
    :func:`volatility_report`)."""
    error = forecast - actual
    ratio = np.maximum(actual, VOL_FLOOR) ** 2 / np.maximum(forecast, VOL_FLOOR) ** 2
    return (float(np.abs(error).mean()), float(np.sqrt((error**2).mean())),
            float((ratio - np.log(ratio) - 1.0).mean()))


@dataclass(frozen=True)
class VolatilityReport:
    """Errors of a volatility forecaster, and of the naive forecast on the same rows.

    MAE and RMSE are in volatility per bar (a fraction); QLIKE is Patton's (2011) loss on the
    variances, ``mean(s / f - log(s / f) - 1)`` with ``s = actual**2`` and ``f = forecast**2``
    (0 for a perfect forecast; it penalises forecasting too low more than too high, and ranks
    forecasts as their expected variance errors do even when the actual volatility is a noisy
    proxy). Volatilities below ``VOL_FLOOR`` count as ``VOL_FLOOR`` in QLIKE. Lower is better
    for all three.

    Attributes:
        n: rows scored.
        mae, rmse, qlike: the model's.
        naive_mae, naive_rmse, naive_qlike: the naive forecast's (trailing realised
            volatility over the same horizon, :func:`~tradezoo.data.labels.
            trailing_volatility`); ``None`` when no naive forecast was given.
    """

    n: int
    mae: float
    rmse: float
    qlike: float
    naive_mae: float | None = None
    naive_rmse: float | None = None
    naive_qlike: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly dict of the fields (the naive ones when present)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        lines = [f"{'forecast':<8} {'MAE':>10} {'RMSE':>10} {'QLIKE':>8}",
                 f"{'model':<8} {self.mae:>10.6f} {self.rmse:>10.6f} {self.qlike:>8.4f}"]
        if self.naive_mae is not None:
            lines.append(f"{'naive':<8} {self.naive_mae:>10.6f} {self.naive_rmse:>10.6f} "
                         f"{self.naive_qlike:>8.4f}")
        lines.append(f"{self.n} rows; volatility per bar; lower is better; naive = trailing "
                     "realised volatility over the same horizon")
        return "\n".join(lines)


def volatility_report(actual: np.ndarray | Sequence[float],
                      forecast: np.ndarray | Sequence[float],
                      naive: np.ndarray | Sequence[float] | None = None) -> VolatilityReport:
    """:class:`VolatilityReport` of ``forecast`` (and ``naive``) against ``actual``, all ``[N]``
    volatilities per bar (rows with a non-finite value in any of them are left out)."""
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (actual, forecast)]
    if naive is not None:
        arrays.append(np.asarray(naive, dtype=np.float64).ravel())
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"actual, forecast and naive differ in length: {[a.size for a in arrays]}")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    if not keep.any():
        raise ValueError("no row with a finite actual, forecast and naive volatility to score")
    arrays = [a[keep] for a in arrays]
    mae, rmse, qlike = _volatility_errors(arrays[0], arrays[1])
    naive_errors = _volatility_errors(arrays[0], arrays[2]) if naive is not None else (
        None, None, None)
    return VolatilityReport(int(keep.sum()), mae, rmse, qlike, *naive_errors)


@dataclass(frozen=True)
class MultiHorizonReport:
    """One :class:`ClassificationReport` per horizon of a ``multi_horizon`` model.

    Attributes:
        reports: horizon name (``"h6"``) -> its report, in horizon order.
        accuracy, macro_f1: their means over the horizons.
    """

    reports: dict[str, ClassificationReport]
    accuracy: float
    macro_f1: float

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: ``accuracy``, ``macro_f1`` (means) and, per horizon ``h``,
        ``accuracy_h``, ``macro_f1_h`` and ``confusion_h``."""
        out: dict[str, Any] = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        for name, report in self.reports.items():
            out[f"accuracy_{name}"] = report.accuracy
            out[f"macro_f1_{name}"] = report.macro_f1
        for name, report in self.reports.items():
            out[f"confusion_{name}"] = [list(row) for row in report.confusion]
        return out

    def __str__(self) -> str:
        lines = [f"{'horizon':<8} {'accuracy':>8} {'macro-F1':>8} {'support':>8}"]
        for name, report in self.reports.items():
            lines.append(f"{name:<8} {report.accuracy:>8.3f} {report.macro_f1:>8.3f} "
                         f"{sum(report.support):>8d}")
        lines.append(f"mean over horizons: accuracy {self.accuracy:.3f}, macro-F1 "
                     f"{self.macro_f1:.3f}")
        return "\n".join(lines)


def multi_horizon_report(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]
                         ) -> MultiHorizonReport:
    """:class:`MultiHorizonReport` of classes ``[N, H]`` (column ``k`` is horizon
    ``names[k]``)."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.ndim != 2 or true.shape != pred.shape or true.shape[1] != len(names):
        raise ValueError(f"y_true and y_pred must both be [N, {len(names)}], got {true.shape} "
                         f"and {pred.shape}")
    reports = {name: classification_report(true[:, k], pred[:, k])
               for k, name in enumerate(names)}
    return MultiHorizonReport(
        reports, float(np.mean([r.accuracy for r in reports.values()])),
        float(np.mean([r.macro_f1 for r in reports.values()])))


TaskReport = ClassificationReport | VolatilityReport | MultiHorizonReport


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked.

    Raises:
        ValueError: an unknown device string, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available here; use "
                         "device='auto' or 'cpu'")
    return resolved


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype :attr:`SupervisedConfig.amp` stands for on ``device`` (``None``:
    float32, no autocast). ``"auto"`` follows PyTorch AMP's advice: bf16 on a CUDA device that
    supports it (no loss scaling needed), else fp16 on CUDA (with loss scaling), and float32
    on the CPU (``"bf16"`` opts in there)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _seed_everything(seed: int) -> None:
    # numpy's global RNG is not used here (shuffling draws from seeded torch generators).
    random.seed(seed)
    torch.manual_seed(seed)


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


VOL_FLOOR = 1e-8
"""Smallest volatility per bar a log or a ratio is taken of (a flat stretch of bars has a
realised volatility of 0)."""


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


class ModelInputs:
    """The model's observations (flat account) at decision rows ``[N]``, gathered on
    ``device`` by one index operation per timeframe.

    ``ModelInputs(data, rows, device, include_dt=model.include_dt).get(index [B])`` gives
    the observations :meth:`SupervisedModel.forward` takes, for ``data`` prepared with the
    model's inputs (:meth:`PreparedData.for_model`): the trainer's batches, the evaluation
    and :func:`model_predictions` all gather them here.

    Box: ``features[rows[:, None] + offsets]`` ``[B, L, F]`` padded to ``[B, L, F + 2]``.
    Multi-timeframe (``data.timeframes``): each timeframe's window rows come from
    :func:`~tradezoo.data.prepare.closed_window_rows`, the env's rule (index ``[N, L_tf]``
    built once on the host), plus the zero account vector: the env's dict observation.
    With ``include_dt`` (a model whose backbone takes elapsed time) each window's elapsed
    seconds, unscaled, come with it, gathered by the same index from the bars' open times
    (:attr:`PreparedData.dt_seconds`, each timeframe's ``dt_seconds``): ``"dt"`` beside the
    Box window (then under ``"window"``), ``"dt_<tf>"`` beside each timeframe, the envs'
    ``include_dt=True`` observation. This is the one place a supervised observation is
    built: another per-window input is one more table gathered here.
    """

    def __init__(self, data: PreparedData, rows: np.ndarray, device: torch.device, *,
                 features: Tensor | None = None, include_dt: bool = False,
                 dt: Tensor | None = None) -> None:
        """``rows``: decision rows of ``data`` ``[N]``; ``features``: the Box features
        ``[T, F]`` to gather instead of ``data.scaled``, with ``dt`` ``[T]`` their elapsed
        seconds (default ``data.elapsed()``); ``include_dt``: add the elapsed times (a model
        whose backbone takes them)."""
        self.device = device
        self.include_dt = include_dt
        rows = np.asarray(rows, dtype=np.int64)
        self.n = len(rows)
        self.tables: dict[str, Tensor] = {}
        self.dt_tables: dict[str, Tensor] = {}
        self.windows: dict[str, Tensor] = {}
        for tf in data.timeframes:
            name, window = tf.interval.name, data.timeframe_windows[tf.interval.name]
            self.tables[name] = torch.tensor(tf.features, device=device)  # [T_tf, F]
            self.dt_tables[name] = torch.tensor(tf.dt_seconds, device=device)  # [T_tf]
            self.windows[name] = torch.from_numpy(
                closed_window_rows(tf.last_closed, rows, window)).to(device)  # [N, L_tf]
        if not self.tables:
            if features is None:
                features = torch.tensor(data.scaled.to_numpy(dtype=np.float32))
            self.features = features.to(device)  # [T, F]
            self.dt = (torch.tensor(data.elapsed(), device=device) if dt is None
                       else dt.to(device))  # [T] seconds (``dt``: with ``features``)
            self.rows = torch.from_numpy(rows).to(device)  # [N]
            self.offsets = torch.arange(-data.window + 1, 1, device=device)  # [L]

    def __len__(self) -> int:
        return self.n

    def get(self, index: Tensor) -> Tensor | dict[str, Tensor]:
        """Observations of items ``index`` ``[B]``."""
        if not self.tables:
            at = self.rows[index][:, None] + self.offsets  # [B, L]
            box = flat_account_observation(self.features[at])  # [B, L, F + 2]
            return {WINDOW_KEY: box, DT_KEY: self.dt[at]} if self.include_dt else box
        obs = flat_observation({name: table[self.windows[name][index]]  # [B, L_tf, F]
                                for name, table in self.tables.items()})
        if self.include_dt:
            obs.update({dt_key(name): table[self.windows[name][index]]  # [B, L_tf]
                        for name, table in self.dt_tables.items()})
        return obs


class _Batches:
    """Batches of one or more :class:`WindowDataset`: their items' observations
    (:class:`ModelInputs` at their decision rows), labels and per-item ``targets`` (arrays
    ``[N, ...]``, :func:`_item_targets`), gathered on ``device`` with the same index.

    Several datasets (Box inputs) are laid end to end: features ``[sum T_k, F]``, rows shifted
    by the rows before them (a window never crosses datasets: every row has a full window of
    its own dataset), targets concatenated; the ``"asset"`` target ``[N]`` int64 holds each
    item's dataset position (the asset embedding's id).
    """

    def __init__(self, data: PreparedData | Sequence[PreparedData],
                 dataset: WindowDataset | Sequence[WindowDataset], device: torch.device,
                 targets: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]
                 | None = None, include_dt: bool = False,
                 asset_ids: Sequence[int] | None = None) -> None:
        datas = [data] if isinstance(data, PreparedData) else list(data)
        parts = [dataset] if isinstance(dataset, WindowDataset) else list(dataset)
        given = ([targets or {}] if targets is None or isinstance(targets, Mapping)
                 else list(targets))
        self.device = device
        self.sizes = [len(p) for p in parts]
        if len(parts) == 1:
            self.inputs = ModelInputs(datas[0], np.array(parts[0].decision_rows), device,
                                  features=parts[0].features, include_dt=include_dt)
            joined = dict(given[0])
        else:
            starts = np.cumsum([0] + [len(p.features) for p in parts[:-1]])
            rows = np.concatenate([np.asarray(p.decision_rows) + int(start)
                                   for p, start in zip(parts, starts, strict=True)])
            self.inputs = ModelInputs(datas[0], rows, device,
                                  features=torch.cat([p.features for p in parts]),
                                  include_dt=include_dt,
                                  dt=torch.cat([torch.as_tensor(d.elapsed()) for d in datas]))
            joined = {name: np.concatenate([t[name] for t in given]) for name in given[0]}
        self.labels = torch.cat([p.labels for p in parts]).to(device)  # [N]
        ids = list(range(len(parts))) if asset_ids is None else list(asset_ids)
        joined["asset"] = np.repeat(np.asarray(ids, dtype=np.int64), self.sizes)
        self.targets = {name: torch.from_numpy(values).to(device)
                        for name, values in joined.items()}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def get(self, index: Tensor
            ) -> tuple[Tensor | dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """``(observations (:meth:`ModelInputs.get`), labels [B], {target name: [B, ...]})`` of
        items ``index``."""
        index = index.to(self.device)
        targets = {name: values[index] for name, values in self.targets.items()}
        return self.inputs.get(index), self.labels[index], targets


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


# ---------------------------------------------------------------------------- evaluation


@dataclass
class SupervisedEvaluation:
    """What :func:`evaluate_supervised` returns.

    Attributes:
        split: the split evaluated.
        rule: ``"argmax"`` or ``"threshold"`` (with :attr:`threshold`); the trading rule of
            another task: ``"volatility_target"`` or ``"mean_expected_position"``.
        report: the task's report on the split's labelled decision rows: a
            :class:`ClassificationReport`, :class:`VolatilityReport` (with the naive
            forecast's errors) or :class:`MultiHorizonReport`.
        probabilities: ``[N, 3]`` DataFrame (sell, hold, buy) on the decision timestamps;
            ``multi_horizon``: ``[N, 3 H]`` (columns ``h6_buy``, ...); ``volatility``: the
            forecast and the naive forecast per bar, ``[N, 2]``.
        signals: int Series ``[N]`` of the classes the rule picks (0 sell, 1 hold, 2 buy);
            another task: the rule's exposure at each decision (before the rebalancing band).
        positions: the target positions given to ``simulate`` (bars of the backtest; NaN =
            keep the previous target).
        backtest: the :class:`~tradezoo.backtest.simulation.BacktestResult` (its
            ``benchmark_*`` fields are buy-and-hold on the same bars and costs).
        metrics: flat dict: classification metrics, ``backtest/<metric>`` and
            ``buy_and_hold/<metric>``.
    """

    split: str
    rule: str
    threshold: float | None
    report: TaskReport
    probabilities: pd.DataFrame
    signals: pd.Series
    positions: pd.Series
    backtest: Any
    metrics: dict[str, Any] = field(default_factory=dict)


def signals_to_positions(signals: np.ndarray, *, allow_short: bool = True) -> np.ndarray:
    """Classes -> target exposures for ``simulate``: buy (2) -> +1, sell (0) -> -1 (0 without
    shorting), hold (1) -> NaN (``simulate`` keeps the previous target; flat before the
    first signal)."""
    signals = np.asarray(signals)
    positions = np.full(signals.shape, np.nan)
    positions[signals == 2] = 1.0
    positions[signals == 0] = -1.0 if allow_short else 0.0
    return positions


def volatility_target_positions(forecast: np.ndarray, target_volatility: float, *,
                                max_leverage: float) -> np.ndarray:
    """Volatility targeting: ``exposure = min(target_volatility / forecast, max_leverage)``,
    long only (docs/tasks.md).

    Args:
        forecast: ``[N]`` forecast volatility per bar (a forecast below ``VOL_FLOOR`` counts as
            ``VOL_FLOOR``).
        target_volatility: the volatility per bar the position aims at, > 0.
        max_leverage: the cost model's cap on the exposure.

    Returns:
        ``[N]`` float64 exposures in ``(0, max_leverage]``.
    """
    forecast = np.maximum(np.asarray(forecast, dtype=np.float64), VOL_FLOOR)
    return np.minimum(float(target_volatility) / forecast, float(max_leverage))


def rebalance_within_band(exposures: np.ndarray, band: float) -> np.ndarray:
    """Targets for ``simulate`` that trade a continuous exposure only when it has moved by at
    least ``band`` from the exposure held (docs/tasks.md).

    Args:
        exposures: ``[N]`` the rule's target exposure at each decision.
        band: exposure units (0.1 = 10 % of equity), >= 0; 0 trades every change.

    Returns:
        ``[N]`` float64: the exposure where a trade is due (always at the first decision,
        from flat), NaN (keep the position) elsewhere.
    """
    band = check_number("rebalance_band", band, 0.0)
    exposures = np.asarray(exposures, dtype=np.float64)
    targets = np.full(exposures.shape, np.nan)
    held = math.nan
    for i, exposure in enumerate(exposures.tolist()):
        if not abs(exposure - held) < band:  # the first decision (held NaN) always trades
            targets[i] = held = exposure
    return targets


def mean_expected_position(probabilities: np.ndarray, *, allow_short: bool = True
                           ) -> np.ndarray:
    """The multi-horizon rule: each horizon's expected position ``P(buy) - P(sell)``, averaged
    over the horizons (docs/tasks.md).

    Args:
        probabilities: ``[N, H, 3]`` class probabilities (sell, hold, buy) per horizon.
        allow_short: else negative exposures become 0 (flat).

    Returns:
        ``[N]`` float64 exposures in ``[-1, 1]`` (``[0, 1]`` without shorting).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    exposure = (probabilities[..., 2] - probabilities[..., 0]).mean(axis=1)
    return exposure if allow_short else np.maximum(exposure, 0.0)


def _apply_rule(probabilities: np.ndarray, rule: str, threshold: float) -> np.ndarray:
    if rule == "argmax":
        return probabilities.argmax(axis=1)
    # The threshold rule: act on a side only when its probability clears the threshold;
    # when both do (threshold < 0.5), the more probable side wins.
    sell, buy = probabilities[:, 0], probabilities[:, 2]
    signals = np.full(len(probabilities), 1, dtype=np.int64)
    buy_ok, sell_ok = buy > threshold, sell > threshold
    signals[buy_ok & (~sell_ok | (buy >= sell))] = 2
    signals[sell_ok & (~buy_ok | (sell > buy))] = 0
    return signals


def model_predictions(model: SupervisedModel, data: PreparedData, rows: np.ndarray, *,
                      batch_size: int = 1024, device: str | torch.device | None = None,
                      features: Tensor | None = None, asset_id: int = -1) -> np.ndarray:
    """The model's predictions at decision ``rows`` of ``data``, float64, on the inputs the
    trainer and :func:`evaluate_supervised` give it (timeframe windows, elapsed times).

    Args:
        model: a trained :class:`SupervisedModel`.
        data: prepared data with the model's inputs (:meth:`PreparedData.for_model`).
        rows: ``[N]`` decision rows of ``data`` (:meth:`PreparedData.decision_rows`).
        batch_size: items per forward pass.
        device: where to run the model; ``None``: its own device. The model's device and
            train/eval mode are restored afterwards.
        features: the Box features ``[T, F]`` to use instead of ``data.scaled`` (a
            checkpoint's own scaling).
        asset_id: the data's asset id (a model with an asset embedding).

    Returns:
        ``[N, 3]`` class probabilities (sell, hold, buy) for ``direction``; ``[N, H, 3]`` for
        ``multi_horizon``; the per-bar volatility forecasts ``[N]`` for ``volatility``.
    """
    home = next(model.parameters()).device
    dev = home if device is None else resolve_device(device)
    inputs = ModelInputs(data, rows, dev, features=features, include_dt=model.include_dt)
    was_training = model.training
    model.to(dev).eval()
    try:
        chunks = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                items = torch.arange(start, min(start + batch_size, len(inputs)), device=dev)
                asset = (None if model.assets is None else
                         torch.full((len(items),), asset_id, dtype=torch.int64, device=dev))
                output = model(inputs.get(items), asset).float()
                chunks.append(torch.exp(output) if model.task == "volatility"
                              else torch.softmax(output, dim=-1))
        return torch.cat(chunks).cpu().numpy().astype(np.float64)
    finally:
        model.to(home).train(was_training)


def evaluate_supervised(
    model_or_checkpoint: SupervisedModel | str | Path | Mapping[str, Any],
    data: PreparedData,
    split: Literal["train", "val", "test"] = "test",
    *,
    rule: Literal["argmax", "threshold"] = "argmax",
    threshold: float = 0.5,
    allow_short: bool = True,
    costs: CostModel | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    target_volatility: float | None = None,
    rebalance_band: float = 0.1,
) -> SupervisedEvaluation:
    """Classification report and backtest of a classifier on a split (module docstring).

    The model decides at every decision row of the split that the env would decide at
    (:meth:`PreparedData.decision_rows`: a full window before, a bar after), so the backtest
    spans the same bars as a ``TradingEnv(split=...)`` episode; the classification report uses
    the labelled ones among them. A checkpoint's own scaler scales ``data.features`` (so other
    data than the training data is scaled as in training); its architecture-independent
    inputs must match: feature spec, window and feature count. A multi-dataset checkpoint
    scales each of its datasets with that dataset's own training scaler, and another dataset
    with the data's own (fitted on its train part, as each training dataset's was). A dataset
    the model was not trained on is evaluated with a warning, or refused when the model has
    an asset embedding (:func:`tradezoo.agents.multi.check_known_asset`).

    Args:
        model_or_checkpoint: a :class:`SupervisedModel`, a checkpoint path or loaded dict.
        data: prepared data (same feature spec and window as the model).
        split: ``"train"``, ``"val"`` or ``"test"``.
        rule: ``"argmax"`` or ``"threshold"`` (buy when P(buy) > threshold, sell when
            P(sell) > threshold, hold otherwise).
        threshold: probability in [0, 1) for ``rule="threshold"``.
        allow_short: sell opens a short (else it goes flat).
        costs: cost model of the backtest; default the data's (the dataset's default costs).
        batch_size: items per forward pass.
        device: where to run the model; ``None``: a model's own device (a checkpoint: the
            CPU). A model evaluated elsewhere is moved back to its device, and to its
            train/eval mode, afterwards.
        target_volatility: a ``volatility`` model's target, annualised (0.5 = 50 % a year,
            with the bars' periods per year); ``None``: the median realised volatility of
            the data's train split (exposure 1 at the asset's typical volatility).
        rebalance_band: the continuous exposures of the ``volatility`` and ``multi_horizon``
            rules are traded only when they move at least this far (exposure units) from the
            position held (:func:`rebalance_within_band`).

    Other tasks than ``direction`` report as their :class:`SupervisedEvaluation.report`
    says and trade by their rule (docs/tasks.md): ``volatility`` by
    :func:`volatility_target_positions` capped by the costs' ``max_leverage``, long only;
    ``multi_horizon`` by :func:`mean_expected_position`. ``rule`` applies to ``direction``.

    Raises:
        ValueError: a bad argument, or a model/checkpoint that does not fit ``data``.
        tradezoo.agents.checkpoint.CheckpointError: an unreadable or mismatched checkpoint.
    """
    from tradezoo.backtest.simulation import simulate

    if rule not in ("argmax", "threshold"):
        raise ValueError(f"rule must be 'argmax' or 'threshold', got {rule!r}")
    if rule == "threshold" and not (
        isinstance(threshold, int | float) and not isinstance(threshold, bool)
        and 0.0 <= float(threshold) < 1.0
    ):
        raise ValueError(f"threshold must be a probability in [0, 1), got {threshold!r}")
    features = None
    if isinstance(model_or_checkpoint, SupervisedModel):
        model = model_or_checkpoint
        data = data.with_timeframes(model.timeframes)
    else:
        ckpt = (
            model_or_checkpoint
            if isinstance(model_or_checkpoint, Mapping)
            else load_checkpoint(model_or_checkpoint, expect_feature_spec=data.feature_spec,
                                 expect_kind="supervised")
        )
        model = model_from_checkpoint(ckpt)
        # The checkpoint's own scalers scale every timeframe's features, as in training (a
        # multi-dataset checkpoint: each of its datasets' own; checkpoint_scaler).
        features = torch.tensor(np.asarray(checkpoint_scaler(ckpt, data).transform(
            data.features), dtype=np.float32))
        data = data.with_timeframes(model.timeframes, timeframe_scalers_from_checkpoint(ckpt))
    asset_id = check_known_asset(data.name, model.asset_names,
                                 embedding=model.assets is not None,
                                 where=f"{model.arch!r} model")
    if model.window != data.window or model.n_features != data.n_features:
        raise ValueError(
            f"the model takes windows of {model.window} bars x {model.n_features} features, the "
            f"data has window={data.window} and {data.n_features} features"
        )
    if model.task != data.label_spec.task:
        raise ConfigError(f"the model's task is {model.task!r}, the data's labels are for "
                          f"{data.label_spec.task!r}; prepare the data with the model's "
                          "label spec (label_spec_from_checkpoint)")
    if model.task != "direction":
        return _evaluate_task(model, data, split, features, allow_short=allow_short,
                              costs=costs or data.costs, batch_size=batch_size, device=device,
                              target_volatility=target_volatility, rule=rule,
                              rebalance_band=rebalance_band, asset_id=asset_id)
    rows = data.decision_rows(split)
    probabilities = model_predictions(model, data, rows, batch_size=batch_size, device=device,
                                      features=features, asset_id=asset_id)  # [N, 3]
    signals = _apply_rule(probabilities, rule, float(threshold))
    index = data.features.index[rows]

    labels = data.labels.to_numpy()[rows]
    labelled = np.isfinite(labels)
    if not labelled.any():
        raise ValueError(f"the {split!r} split has no labelled decision row to score")
    report = classification_report(labels[labelled].astype(np.int64), signals[labelled])

    # Bars of the backtest: the first decision bar .. the bar after the last decision.
    offset = data.bar_offset
    bars = data.bars.iloc[offset + int(rows[0]) : offset + int(rows[-1]) + 2]
    positions = np.full(len(bars), np.nan)
    positions[: len(rows)] = signals_to_positions(signals, allow_short=allow_short)
    position_series = pd.Series(positions, index=bars.index, name="target")
    result = simulate(bars, position_series, costs=costs or data.costs)

    metrics: dict[str, Any] = {k: v for k, v in report.to_dict().items() if k != "confusion"}
    metrics.update({f"backtest/{k}": v for k, v in result.metrics.to_dict().items()})
    metrics.update({f"buy_and_hold/{k}": v for k, v in result.benchmark_metrics.to_dict().items()})
    return SupervisedEvaluation(
        split=split,
        rule=rule,
        threshold=float(threshold) if rule == "threshold" else None,
        report=report,
        probabilities=pd.DataFrame(probabilities, index=index, columns=list(CLASS_NAMES)),
        signals=pd.Series(signals, index=index, name="signal"),
        positions=position_series,
        backtest=result,
        metrics=metrics,
    )


def _backtest(data: PreparedData, rows: np.ndarray, exposures: np.ndarray, costs: CostModel
              ) -> tuple[pd.Series, Any]:
    """Simulate target ``exposures`` decided at feature ``rows`` (the first decision bar ..
    the bar after the last one); returns ``(targets on the bars, BacktestResult)``."""
    from tradezoo.backtest.simulation import simulate

    offset = data.bar_offset
    bars = data.bars.iloc[offset + int(rows[0]) : offset + int(rows[-1]) + 2]
    positions = np.full(len(bars), np.nan)
    positions[: len(rows)] = exposures
    series = pd.Series(positions, index=bars.index, name="target")
    return series, simulate(bars, series, costs=costs)


def _bars_volatility_target(data: PreparedData, target_volatility: float | None) -> float:
    """Per-bar volatility target: the annualised ``target_volatility`` over the square root of
    the bars' periods per year, or the median realised volatility of the train split."""
    from tradezoo.backtest.metrics import periods_per_year_for

    if target_volatility is None:
        return float(np.median(data.train.labels.numpy()))
    annual = check_number("target_volatility", target_volatility, 0.0, open_low=True)
    return float(annual) / math.sqrt(periods_per_year_for(data.bars))


def _evaluate_task(model: SupervisedModel, data: PreparedData, split: str,
                   features: Tensor | None, *, allow_short: bool, costs: CostModel,
                   batch_size: int, device: str | torch.device | None,
                   target_volatility: float | None, rule: str, rebalance_band: float,
                   asset_id: int = -1) -> SupervisedEvaluation:
    """:func:`evaluate_supervised` of a ``volatility`` or ``multi_horizon`` model."""
    if rule != "argmax":
        raise ConfigError(f"rule={rule!r} applies to direction models; a {model.task} model "
                          "trades by its own rule (docs/tasks.md)")
    rows = data.decision_rows(split)  # type: ignore[arg-type]
    predictions = model_predictions(model, data, rows, batch_size=batch_size, device=device,
                                    features=features, asset_id=asset_id)
    index = data.features.index[rows]
    labels = data.labels.to_numpy()[rows]
    if model.task == "volatility":
        h = data.label_spec.horizon
        naive = trailing_volatility(data.bars, h).reindex(data.features.index).to_numpy()[rows]
        labelled = np.isfinite(labels)
        if not labelled.any():
            raise ValueError(f"the {split!r} split has no labelled decision row to score")
        report: TaskReport = volatility_report(labels[labelled], predictions[labelled],
                                               naive[labelled])
        exposures = volatility_target_positions(
            predictions, _bars_volatility_target(data, target_volatility),
            max_leverage=costs.max_leverage)
        table = pd.DataFrame({"forecast": predictions, "naive": naive}, index=index)
        trading_rule = "volatility_target"
    else:
        labelled = np.isfinite(labels).all(axis=1)
        if not labelled.any():
            raise ValueError(f"the {split!r} split has no labelled decision row to score")
        report = multi_horizon_report(labels[labelled].astype(np.int64),
                                      predictions[labelled].argmax(-1), model.horizon_names)
        exposures = mean_expected_position(predictions, allow_short=allow_short)
        table = pd.DataFrame(predictions.reshape(len(rows), -1), index=index,
                             columns=[f"{h}_{c}" for h in model.horizon_names
                                      for c in CLASS_NAMES])
        trading_rule = "mean_expected_position"
    positions, result = _backtest(data, rows, rebalance_within_band(exposures, rebalance_band),
                                  costs)
    metrics: dict[str, Any] = {k: v for k, v in report.to_dict().items()
                               if not k.startswith("confusion")}
    metrics.update({f"backtest/{k}": v for k, v in result.metrics.to_dict().items()})
    metrics.update({f"buy_and_hold/{k}": v for k, v in result.benchmark_metrics.to_dict().items()})
    return SupervisedEvaluation(
        split=split, rule=trading_rule, threshold=None, report=report, probabilities=table,
        signals=pd.Series(exposures, index=index, name="exposure"), positions=positions,
        backtest=result, metrics=metrics)
