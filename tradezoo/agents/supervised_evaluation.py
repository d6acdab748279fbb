"""Evaluation of a supervised model on a split: its predictions, the trading rule of its task
and a backtest of the positions against buy-and-hold.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tradezoo.agents.checkpoint import load_checkpoint, timeframe_scalers_from_checkpoint
from tradezoo.agents.data import PreparedData
from tradezoo.agents.devices import resolve_device
from tradezoo.agents.multi import check_known_asset, checkpoint_scaler
from tradezoo.agents.supervised_inputs import ModelInputs
from tradezoo.agents.supervised_model import SupervisedModel, model_from_checkpoint
from tradezoo.agents.supervised_reports import (
    VOL_FLOOR,
    TaskReport,
    classification_report,
    multi_horizon_report,
    volatility_report,
)
from tradezoo.backtest.costs import CostModel
from tradezoo.data.checks import check_number
from tradezoo.data.labels import CLASS_NAMES, trailing_volatility
from tradezoo.errors import ConfigError

__all__ = [
    "SupervisedEvaluation",
    "evaluate_supervised",
    "mean_expected_position",
    "model_predictions",
    "rebalance_within_band",
    "signals_to_positions",
    "volatility_target_positions",
]


@dataclass
class SupervisedEvaluation:
    """What :func:`evaluate_supervised` returns.

    Attributes:
        split: the split evaluated.
        rule: ``"argmax"`` or ``"threshold"`` (with :attr:`threshold`); the trading rule of
            another task: ``"volatility_target"`` or ``"mean_expected_position"``.
        report: the task's report on the split's labelled decision rows: a
            :class:`~tradezoo.agents.supervised_reports.ClassificationReport`,
            :class:`~tradezoo.agents.supervised_reports.VolatilityReport` (with the naive
            forecast's errors) or
            :class:`~tradezoo.agents.supervised_reports.MultiHorizonReport`.
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
