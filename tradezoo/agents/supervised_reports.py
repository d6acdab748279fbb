"""Reports of a supervised model's predictions against its labels, one kind per task:
:class:`ClassificationReport` (``direction``: per-class precision, recall, F1, the confusion
matrix), :class:`VolatilityReport` (``volatility``: MAE, RMSE and QLIKE of the forecast, and of
a naive one) and :class:`MultiHorizonReport` (``multi_horizon``: a classification report per
horizon). The trainer's validation and
:func:`~tradezoo.agents.supervised_evaluation.evaluate_supervised` build them; numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tradezoo.data.labels import CLASS_NAMES

__all__ = [
    "N_CLASSES",
    "VOL_FLOOR",
    "ClassificationReport",
    "MultiHorizonReport",
    "TaskReport",
    "VolatilityReport",
    "classification_report",
    "multi_horizon_report",
    "volatility_report",
]


N_CLASSES = 3

VOL_FLOOR = 1e-8
"""Smallest volatility per bar a log or a ratio is taken of (a flat stretch of bars has a
realised volatility of 0)."""


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
