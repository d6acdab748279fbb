"""Causal features of a bars frame and the z-score scaler fitted on the train split.

``compute_features(bars, spec)`` turns a bars frame (docs/design.md, "Data model") into a float32
feature frame ``[T - W, F]``, where ``W = spec.warmup_rows`` is the number of leading bars
on which some feature is not yet defined. Every feature at bar ``t`` uses bars ``<= t`` only
(known at the close of bar ``t``): trailing windows, recursive EMAs started at the first bar,
no centred windows, no backward fill, no normalisation over the whole series. The scaler that
does normalise (:class:`FeatureScaler`) is fitted on the train split only.

Columns, in this order (defaults in brackets; ``n`` is a window in bars, all on ``close``
unless said otherwise):

| column | definition | first defined at row |
|---|---|---|
| ``ret_n`` [1 5 10 20 60] | ``close_t / close_{t-n} - 1`` (simple return) | ``n`` |
| ``logret_n`` [1 5 10 20 60] | ``ln(close_t / close_{t-n})`` | ``n`` |
| ``close_sma_n`` [5 10 20 50 100] | ``close_t / SMA_n(close)_t - 1`` (bars t-n+1..t) | ``n - 1`` |
| ``vol_n`` [5 10 20 50] | sample std (ddof=1) of the last ``n`` one-bar log returns | ``n`` |
| ``vol_ratio_s_l`` [20 60] | ``vol_s / vol_l``; 1.0 when ``vol_l == 0`` (flat) | ``max(s, l)`` |
| ``rsi_n`` [14] | Wilder RSI scaled to [0, 1] (see below) | ``n`` |
| ``macd`` [12 26 9] | ``(EMA_fast - EMA_slow) / close_t`` (fraction of price) | ``slow - 1`` |
| ``macd_signal`` | ``EMA_signal(macd)`` | ``slow + signal - 2`` |
| ``volume_ratio_n`` [20] | ``volume_t / mean(volume_{t-n+1..t})``; 1.0 if that is 0 | ``n - 1`` |
| ``range_hl`` | ``(high_t - low_t) / close_t`` | 0 |
| ``close_pos`` | ``(close_t - low_t) / (high_t - low_t)``; 0.5 when ``high_t == low_t`` | 0 |
| ``dt`` | seconds from the previous bar's open to this bar's open | 1 |
| ``wav_*`` [off] | causal wavelet bands, energy shares (:class:`WaveletSpec`) | ``window - 1`` |
| ``vmd_*`` [off] | causal VMD modes, shares, centre freqs (:class:`VmdSpec`) | ``window - 1`` |
| ``funding_rate`` | the bars' ``funding_rate`` column, passed through (known at the open) | 0 |

Definitions:

- EMA with span ``s``: ``ewm(span=s, adjust=False, min_periods=s)``, i.e.
  ``y_t = (1 - a) y_{t-1} + a x_t`` with ``a = 2 / (s + 1)``, started at ``y_0 = x_0``; the
  first ``s - 1`` values count as warm-up (``min_periods = span``).
- RSI (Wilder 1978, "New Concepts in Technical Trading Systems"): gains ``max(d_t, 0)`` and
  losses ``max(-d_t, 0)`` of ``d_t = close_t - close_{t-1}`` are smoothed with
  ``ewm(alpha=1/n, adjust=False, min_periods=n)``; ``rsi = G / (G + L)``, which equals the
  textbook ``1 - 1 / (1 + G/L)`` divided by 100. It is **scaled to [0, 1]** (not 0-100) so it
  sits on the same scale as the other features; a bar with ``G = L = 0`` (no movement over
  the whole smoothing memory) gets 0.5. A rising series gives exactly 1, a falling one 0.
- MACD (Appel) is divided by the close of the same bar so it is scale free (a fraction of the
  price, comparable across assets and decades); the signal line is the EMA of that ratio.
- ``dt`` exposes irregular sampling and gaps (weekends, exchange outages) to the liquid
  networks (CfC/LTC), which integrate their state over it.

The warm-up is the largest "first defined at row" over the selected columns (99 for the
defaults, set by ``close_sma_100``); those rows are dropped and their number is stored in
``features.attrs["warmup_rows"]``. After the warm-up no value may be NaN or inf: a zero or
negative price, a NaN in the bars or a negative volume raises :class:`DataError` naming the
column and the first timestamps instead of leaking a non-finite value into a model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd

from tradezoo._fs import atomic_file
from tradezoo.data.decompositions import VmdSpec, WaveletSpec, decomposition_columns
from tradezoo.data.errors import DataError

__all__ = [
    "FeatureScaler",
    "FeatureSpec",
    "compute_features",
    "describe_features",
    "feature_names",
]

_SCALER_FORMAT = "tradezoo.FeatureScaler"
_SCALER_VERSION = 1
_EXAMPLES = 3


def _window_tuple(name: str, value: Iterable[int], *, minimum: int) -> tuple[int, ...]:
    """Validate a group of window sizes: integers >= ``minimum``, no repeats."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"FeatureSpec.{name} must be a tuple of window sizes, got {value!r}")
    windows = tuple(_window(name, v, minimum=minimum) for v in value)
    if len(set(windows)) != len(windows):
        raise ValueError(f"FeatureSpec.{name} repeats a window (would repeat a column): {windows}")
    return windows


def _window(name: str, value: object, *, minimum: int) -> int:
    """Validate one window size: an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"FeatureSpec.{name}: window sizes must be integers, got {value!r}")
    if value < minimum:
        rule = "positive" if minimum == 1 else f">= {minimum}"
        why = "" if minimum == 1 else " (a sample std with ddof=1 needs two returns)"
        raise ValueError(f"FeatureSpec.{name}: window sizes must be {rule}{why}, got {value}")
    return int(value)


@dataclass(frozen=True)
class FeatureSpec:
    """Which causal features :func:`compute_features` computes (defaults: the multiscale set).

    Windows are in bars. An empty tuple or ``None`` switches a group off. Window sizes are
    validated at construction (``ValueError`` for non-positive sizes, repeats, a volatility
    window below 2, or ``macd`` with ``fast >= slow``). See the module docstring for the
    formula, column name and warm-up of every feature.

    Attributes:
        return_windows: horizons ``n`` of the close-to-close returns ``ret_n``/``logret_n``.
        simple_returns: emit ``ret_n = close_t / close_{t-n} - 1``.
        log_returns: emit ``logret_n = ln(close_t / close_{t-n})``.
        sma_windows: windows of ``close_sma_n = close / SMA_n(close) - 1``.
        vol_windows: windows of ``vol_n``, the ddof=1 std of one-bar log returns (each >= 2).
        vol_ratio: ``(short, long)`` for ``vol_ratio_short_long = vol_short / vol_long``.
        rsi_window: Wilder RSI period (``rsi_n``, scaled to [0, 1]).
        macd: ``(fast, slow, signal)`` EMA spans of ``macd`` and ``macd_signal``; the column
            names do not carry the spans.
        volume_window: window of ``volume_ratio_n = volume / mean(volume over n bars incl. t)``.
        include_range: emit ``range_hl = (high - low) / close``.
        include_close_pos: emit ``close_pos = (close - low) / (high - low)`` (0.5 if equal).
        include_dt: emit ``dt``, seconds since the previous bar's open.
        include_funding: pass the bars' ``funding_rate`` column through (last column) when the
            bars have one.
        wavelet: causal stationary wavelet columns ``wav_*`` (:class:`WaveletSpec`; a dict
            of its fields, ``True`` for the defaults ``db4``/4 levels/256 bars); off by default.
        vmd: causal VMD columns ``vmd_*`` (:class:`VmdSpec`; a dict of its fields, ``True``
            for the defaults 4 modes/alpha 2000/256 bars); off by default. Both groups need
            the ``tradezoo[decomp]`` extra (tradezoo.data.decompositions).
    """

    return_windows: tuple[int, ...] = (1, 5, 10, 20, 60)
    simple_returns: bool = True
    log_returns: bool = True
    sma_windows: tuple[int, ...] = (5, 10, 20, 50, 100)
    vol_windows: tuple[int, ...] = (5, 10, 20, 50)
    vol_ratio: tuple[int, int] | None = (20, 60)
    rsi_window: int | None = 14
    macd: tuple[int, int, int] | None = (12, 26, 9)
    volume_window: int | None = 20
    include_range: bool = True
    include_close_pos: bool = True
    include_dt: bool = True
    include_funding: bool = True
    wavelet: WaveletSpec | None = None
    vmd: VmdSpec | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise lists (e.g. from JSON) to tuples through object.__setattr__.
        set_ = object.__setattr__
        set_(self, "wavelet", WaveletSpec.coerce(self.wavelet))
        set_(self, "vmd", VmdSpec.coerce(self.vmd))
        set_(self, "return_windows", _window_tuple("return_windows", self.return_windows,
                                                   minimum=1))
        set_(self, "sma_windows", _window_tuple("sma_windows", self.sma_windows, minimum=1))
        set_(self, "vol_windows", _window_tuple("vol_windows", self.vol_windows, minimum=2))
        if self.vol_ratio is not None:
            ratio = _window_tuple("vol_ratio", self.vol_ratio, minimum=2)
            if len(ratio) != 2:
                raise ValueError(f"FeatureSpec.vol_ratio must be (short, long), got {ratio}")
            set_(self, "vol_ratio", ratio)
        if self.rsi_window is not None:
            set_(self, "rsi_window", _window("rsi_window", self.rsi_window, minimum=1))
        if self.macd is not None:
            if isinstance(self.macd, (str, bytes)) or not isinstance(self.macd, Iterable):
                raise ValueError(f"FeatureSpec.macd must be (fast, slow, signal), got "
                                 f"{self.macd!r}")
            # Not _window_tuple: a signal span may equal the fast one, e.g. (9, 26, 9).
            macd = tuple(_window("macd", v, minimum=1) for v in self.macd)
            if len(macd) != 3:
                raise ValueError(f"FeatureSpec.macd must be (fast, slow, signal), got {macd}")
            if macd[0] >= macd[1]:
                raise ValueError(f"FeatureSpec.macd needs fast < slow, got {macd}")
            set_(self, "macd", macd)
        if self.volume_window is not None:
            set_(self, "volume_window", _window("volume_window", self.volume_window, minimum=1))
        for flag in ("simple_returns", "log_returns", "include_range", "include_close_pos",
                     "include_dt", "include_funding"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"FeatureSpec.{flag} must be a bool, got {getattr(self, flag)!r}")
        if not self.column_warmups(funding=False):
            raise ValueError("FeatureSpec selects no features (every group is switched off)")

    def column_warmups(self, *, funding: bool = False) -> dict[str, int]:
        """Column name -> index of the first bar on which it is defined, in column order.

        Args:
            funding: the bars have a ``funding_rate`` column (it is appended when
                ``include_funding`` is set).
        """
        out: dict[str, int] = {}
        if self.simple_returns:
            out.update({f"ret_{n}": n for n in self.return_windows})
        if self.log_returns:
            out.update({f"logret_{n}": n for n in self.return_windows})
        out.update({f"close_sma_{n}": n - 1 for n in self.sma_windows})
        # One-bar log returns start at row 1, so n of them are first available at row n.
        out.update({f"vol_{n}": n for n in self.vol_windows})
        if self.vol_ratio is not None:
            short, long = self.vol_ratio
            out[f"vol_ratio_{short}_{long}"] = max(short, long)
        if self.rsi_window is not None:
            out[f"rsi_{self.rsi_window}"] = self.rsi_window
        if self.macd is not None:
            _, slow, signal = self.macd
            out["macd"] = slow - 1
            # The signal EMA starts at the first defined MACD value (row slow - 1).
            out["macd_signal"] = slow - 1 + signal - 1
        if self.volume_window is not None:
            out[f"volume_ratio_{self.volume_window}"] = self.volume_window - 1
        if self.include_range:
            out["range_hl"] = 0
        if self.include_close_pos:
            out["close_pos"] = 0
        if self.include_dt:
            out["dt"] = 1
        for group in (self.wavelet, self.vmd):
            if group is not None:
                out.update(dict.fromkeys(group.columns(), group.window - 1))
        if funding and self.include_funding:
            out["funding_rate"] = 0
        return out

    def columns(self, *, funding: bool = False) -> tuple[str, ...]:
        """The feature column names, in output order, without computing anything.

        Args:
            funding: the bars have a ``funding_rate`` column (appended last when
                ``include_funding`` is set).
        """
        return tuple(self.column_warmups(funding=funding))

    @property
    def warmup_rows(self) -> int:
        """Leading bars dropped by :func:`compute_features`: ``max`` of :meth:`column_warmups`.

        With the defaults: ``max(60 returns, 100 - 1 SMA, 50 vol, 60 vol ratio, 14 RSI,
        26 - 1 MACD, 26 + 9 - 2 signal, 20 - 1 volume, 1 dt) = 99``.
        """
        return max(self.column_warmups(funding=False).values())

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Bars columns the selected features read."""
        needed = ["close"]
        if self.include_range or self.include_close_pos:
            needed = ["high", "low", "close"]
        if self.volume_window is not None:
            needed.append("volume")
        return tuple(needed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples as lists, a decomposition group as the dict of its
        settings); :meth:`from_dict` restores an equal spec."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for group in ("wavelet", "vmd"):
            out[group] = None if out[group] is None else out[group].to_dict()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec from :meth:`to_dict`'s output. Unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"FeatureSpec.from_dict: unknown field(s) {unknown}")
        return cls(**dict(data))

    @classmethod
    def coerce(cls, value: FeatureSpec | Mapping[str, Any] | None) -> FeatureSpec:
        """``value`` as a spec: ``None`` -> the default spec, a dict -> :meth:`from_dict`."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(
            f"feature_spec must be a FeatureSpec or a dict, got {type(value).__name__}"
        )


def feature_names(spec: FeatureSpec | None = None, *, funding: bool = False) -> tuple[str, ...]:
    """Column names :func:`compute_features` returns for ``spec`` (default spec), in order.

    Args:
        spec: the feature spec; ``None`` means ``FeatureSpec()``.
        funding: the bars have a ``funding_rate`` column.
    """
    return (spec or FeatureSpec()).columns(funding=funding)


def _check_bars(bars: pd.DataFrame, spec: FeatureSpec) -> str:
    """Check the input rules of :func:`compute_features`; return a name for error messages."""
    if not isinstance(bars, pd.DataFrame):
        raise DataError(f"compute_features: bars must be a pandas DataFrame, got "
                        f"{type(bars).__name__}")
    name = str(bars.attrs.get("path") or bars.attrs.get("symbol") or "bars")
    missing = [c for c in spec.required_columns if c not in bars.columns]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {missing} needed by the feature spec "
            f"(found {list(map(str, bars.columns))})"
        )
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise DataError(f"{name}: the index must be a DatetimeIndex of bar open times, "
                        f"got {type(bars.index).__name__}")
    if not (bars.index.is_monotonic_increasing and bars.index.is_unique):
        raise DataError(f"{name}: the index must be strictly increasing (sorted bar open "
                        "times, no duplicates); run validate_bars first")
    needed = spec.warmup_rows + 1
    if len(bars) < needed:
        raise DataError(
            f"{name}: {len(bars)} bars are too few for the feature warm-up; at least {needed} "
            f"are needed ({spec.warmup_rows} warm-up rows + 1 output row)"
        )
    return name


def _ema(values: pd.Series, span: int) -> pd.Series:
    """Causal EMA with an explicit warm-up (``min_periods = span``); leading NaN are skipped."""
    return values.ewm(span=span, adjust=False, min_periods=span).mean()


def _raw_features(bars: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """All selected features in float64 over every bar, NaN during each column's warm-up."""
    close = bars["close"].astype(np.float64)
    out: dict[str, pd.Series | np.ndarray] = {}
    # Zero or negative prices give inf/NaN here on purpose; compute_features reports them.
    with np.errstate(divide="ignore", invalid="ignore"):
        if spec.simple_returns:
            for n in spec.return_windows:
                out[f"ret_{n}"] = close / close.shift(n) - 1.0
        if spec.log_returns:
            for n in spec.return_windows:
                out[f"logret_{n}"] = np.log(close / close.shift(n))
        for n in spec.sma_windows:
            out[f"close_sma_{n}"] = close / close.rolling(n, min_periods=n).mean() - 1.0
        if spec.vol_windows or spec.vol_ratio is not None:
            logret_1 = np.log(close / close.shift(1))
            vols = {n: logret_1.rolling(n, min_periods=n).std(ddof=1)
                    for n in {*spec.vol_windows, *(spec.vol_ratio or ())}}
            for n in spec.vol_windows:
                out[f"vol_{n}"] = vols[n]
            if spec.vol_ratio is not None:
                short, long = spec.vol_ratio
                ratio = vols[short] / vols[long]
                # A flat price window (vol_long == 0) has no relative volatility: call it 1.
                out[f"vol_ratio_{short}_{long}"] = ratio.mask(vols[long] == 0.0, 1.0)
        if spec.rsi_window is not None:
            n = spec.rsi_window
            change = close.diff()
            gain = change.clip(lower=0.0).ewm(alpha=1.0 / n, adjust=False, min_periods=n).mean()
            loss = (-change).clip(lower=0.0).ewm(alpha=1.0 / n, adjust=False,
                                                 min_periods=n).mean()
            total = gain + loss
            out[f"rsi_{n}"] = (gain / total).mask(total == 0.0, 0.5)
        if spec.macd is not None:
            fast, slow, signal = spec.macd
            macd = (_ema(close, fast) - _ema(close, slow)) / close
            out["macd"] = macd
            out["macd_signal"] = _ema(macd, signal)
        if spec.volume_window is not None:
            n = spec.volume_window
            volume = bars["volume"].astype(np.float64)
            mean = volume.rolling(n, min_periods=n).mean()
            # Count the non-zero volumes exactly (integer sums) instead of testing the
            # rolling mean against 0, which an add/subtract rolling sum may miss by an ulp.
            active = (volume != 0.0).astype(np.float64).rolling(n, min_periods=n).sum()
            out[f"volume_ratio_{n}"] = (volume / mean).mask(active == 0.0, 1.0)
        if spec.include_range or spec.include_close_pos:
            high = bars["high"].astype(np.float64)
            low = bars["low"].astype(np.float64)
            if spec.include_range:
                out["range_hl"] = (high - low) / close
            if spec.include_close_pos:
                span = high - low
                out["close_pos"] = ((close - low) / span).mask(span == 0.0, 0.5)
        if spec.include_dt:
            # TimedeltaIndex.total_seconds works for any index resolution (s, ms, us, ns);
            # the first bar has no predecessor (NaT -> NaN, part of the warm-up).
            out["dt"] = bars.index.diff().total_seconds()
        if spec.include_funding and "funding_rate" in bars.columns:
            out["funding_rate"] = bars["funding_rate"].astype(np.float64)
    decompositions: dict[str, np.ndarray] = {}
    for group in (spec.wavelet, spec.vmd):
        if group is not None:
            decompositions.update(decomposition_columns(
                close.to_numpy(), group, name=str(bars.attrs.get("path")
                                                  or bars.attrs.get("symbol") or "bars")))
    if "funding_rate" in out:  # the funding rate stays the last column
        out = {**{k: v for k, v in out.items() if k != "funding_rate"}, **decompositions,
               "funding_rate": out["funding_rate"]}
    else:
        out.update(decompositions)
    frame = pd.DataFrame(
        {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, index=bars.index
    )
    return frame


def compute_features(bars: pd.DataFrame, spec: FeatureSpec | None = None) -> pd.DataFrame:
    """Compute the causal features of ``bars`` (see the module docstring for each column).

    Args:
        bars: a bars frame (docs/design.md, "Data model"), ideally from ``validate_bars``: a
            strictly increasing ``DatetimeIndex`` of bar open times and at least the columns
            in ``spec.required_columns`` (``high low close volume`` for the defaults), plus
            an optional ``funding_rate``.
        spec: which features; ``None`` means ``FeatureSpec()`` (27 columns, 28 with funding).

    Returns:
        float32 DataFrame ``[len(bars) - spec.warmup_rows, F]`` indexed by
        ``bars.index[spec.warmup_rows:]``, columns ``spec.columns(funding=...)``, no NaN or
        inf. ``attrs``: the bars' attrs plus ``warmup_rows`` (rows dropped at the start) and
        ``feature_spec`` (``spec.to_dict()``). Row ``t`` depends on bars ``<= t`` only.
        Computed in float64 and cast to float32 at the end.

    Raises:
        DataError: ``bars`` lacks a needed column, has no sorted ``DatetimeIndex``, has fewer
            than ``spec.warmup_rows + 1`` rows, or yields a non-finite feature after the
            warm-up (zero/negative price, NaN, negative volume); the message names the column
            and its first timestamps.
    """
    spec = spec or FeatureSpec()
    name = _check_bars(bars, spec)
    raw = _raw_features(bars, spec)
    warmup = spec.warmup_rows
    values = raw.to_numpy()[warmup:]
    finite = np.isfinite(values)
    if not finite.all():
        # Name the column(s) broken at the earliest bad bar: that bar points at the cause.
        rows = np.flatnonzero(~finite.all(axis=1))
        columns = [str(c) for c in raw.columns[~finite[rows[0]]]]
        stamps = [str(s) for s in raw.index[warmup + rows[:_EXAMPLES]]]
        raise DataError(
            f"{name}: feature {columns[0]!r} is not finite after the warm-up at {stamps} "
            f"({len(rows)} row(s) in all; at the first one also {columns[1:]}); features need "
            "positive finite prices and finite non-negative volumes (run validate_bars)"
        )
    features = pd.DataFrame(
        values.astype(np.float32), index=raw.index[warmup:], columns=raw.columns
    )
    features.attrs = {**bars.attrs, "warmup_rows": warmup, "feature_spec": spec.to_dict()}
    return features


def describe_features(features: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """Per-column summary for the CLI: ``count mean std min max`` (std with ddof=1).

    Args:
        features: ``[T, F]`` feature frame (or array; its columns are then ``0..F-1``).

    Returns:
        float64 DataFrame indexed by feature name with columns ``count mean std min max``.
    """
    frame = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features)
    values = frame.to_numpy(dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"describe_features: expected a [T, F] table, got shape {values.shape}")
    count = len(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        summary = {
            "count": np.full(values.shape[1], float(count)),
            "mean": values.mean(axis=0) if count else np.full(values.shape[1], np.nan),
            "std": values.std(axis=0, ddof=1) if count > 1 else np.full(values.shape[1], np.nan),
            "min": values.min(axis=0) if count else np.full(values.shape[1], np.nan),
            "max": values.max(axis=0) if count else np.full(values.shape[1], np.nan),
        }
    return pd.DataFrame(summary, index=pd.Index(map(str, frame.columns), name="feature"))


class FeatureScaler:
    """Per-column z-score with clipping: ``z = clip((x - mean) / std, -clip, clip)``, float32.

    Fit it on the **train split only** (``Splits.train``) and apply the fitted statistics to
    validation and test: statistics of later data would leak the future into training.

    - ``std`` is the population std (ddof=0, as scikit-learn's ``StandardScaler``).
    - A constant column (``max == min`` on the fitted data) gets ``std = 1`` and ``mean``
      equal to its value, so it maps to exactly 0 (no division by zero, no blown-up noise).
    - Statistics are computed and stored in float64; outputs are float32.
    - A scaler fitted on a DataFrame remembers its column names and order; transforming a
      frame with other columns raises ``ValueError`` naming the difference. Arrays are
      matched by their last dimension's size only.

    Args:
        clip: bound on ``|z|`` after scaling (``None`` switches clipping off); > 0.
    """

    def __init__(self, clip: float | None = 5.0) -> None:
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating))
            or not math.isfinite(clip) or clip <= 0
        ):
            raise ValueError(f"FeatureScaler: clip must be a finite number > 0 or None, "
                             f"got {clip!r}")
        self.clip: float | None = None if clip is None else float(clip)
        self._columns: tuple[str, ...] | None = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_dict`/:meth:`load`) has set the statistics."""
        return self._mean is not None

    @property
    def columns(self) -> tuple[str, ...] | None:
        """Fitted column names in order, or ``None`` when fitted on an array."""
        return self._columns

    @property
    def mean(self) -> np.ndarray:
        """Fitted per-column mean ``[F]`` (float64 copy)."""
        return self._require_fitted("mean")[0].copy()

    @property
    def std(self) -> np.ndarray:
        """Fitted per-column std ``[F]`` (float64 copy; 1 for constant columns)."""
        return self._require_fitted("std")[1].copy()

    @property
    def n_features(self) -> int:
        """Number of fitted columns ``F``."""
        return len(self._require_fitted("n_features")[0])

    def _require_fitted(self, action: str) -> tuple[np.ndarray, np.ndarray]:
        if self._mean is None or self._std is None:
            raise RuntimeError(f"FeatureScaler.{action}: the scaler is not fitted; call fit() "
                               "on the train split first")
        return self._mean, self._std

    def __repr__(self) -> str:
        state = f"{len(self._mean)} features" if self._mean is not None else "not fitted"
        return f"FeatureScaler(clip={self.clip}, {state})"

    # -- fitting and transforming ----------------------------------------------------------

    def fit(self, features: pd.DataFrame | np.ndarray) -> FeatureScaler:
        """Learn per-column mean and std from ``features`` ``[T, F]`` (the train split).

        Raises:
            DataError: no rows, or a NaN/inf value (named by column).
            ValueError: not two-dimensional.
        """
        values, columns = self._as_array(features, "fit")
        if values.ndim != 2:
            raise ValueError(f"FeatureScaler.fit: features must be [T, F], got shape "
                             f"{values.shape}")
        if values.shape[0] == 0:
            raise DataError("FeatureScaler.fit: features have no rows")
        self._check_finite(values, columns, "fit")
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=0)
        constant = values.min(axis=0) == values.max(axis=0)
        # Exact for constant columns: the float mean of n equal values may differ from the
        # value by an ulp, and dividing that residue by a ~1e-17 std would give noise, not 0.
        mean[constant] = values[0, constant]
        std[constant] = 1.0
        self._columns, self._mean, self._std = columns, mean, std
        return self

    @overload
    def transform(self, features: pd.DataFrame) -> pd.DataFrame: ...
    @overload
    def transform(self, features: np.ndarray) -> np.ndarray: ...

    def transform(self, features: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
        """Scale ``features`` ``[..., F]`` with the fitted statistics and clip; float32.

        Returns the same type: a DataFrame keeps its index and columns; an array keeps its
        shape (any leading dimensions, e.g. ``[B, L, F]`` windows).

        Raises:
            RuntimeError: not fitted yet.
            ValueError: the columns (names and order) or the feature count differ from fit.
            DataError: a NaN/inf value.
        """
        mean, std = self._require_fitted("transform")
        values, columns = self._checked_input(features, "transform")
        self._check_finite(values, columns, "transform")
        scaled = (values - mean) / std
        if self.clip is not None:
            np.clip(scaled, -self.clip, self.clip, out=scaled)
        return self._wrap(features, scaled.astype(np.float32))

    @overload
    def fit_transform(self, features: pd.DataFrame) -> pd.DataFrame: ...
    @overload
    def fit_transform(self, features: np.ndarray) -> np.ndarray: ...

    def fit_transform(self, features: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
        """``fit(features).transform(features)``."""
        return self.fit(features).transform(features)

    @overload
    def inverse_transform(self, scaled: pd.DataFrame) -> pd.DataFrame: ...
    @overload
    def inverse_transform(self, scaled: np.ndarray) -> np.ndarray: ...

    def inverse_transform(self, scaled: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
        """Map z-scores back: ``x = z * std + mean`` (float32). Exact only for unclipped z."""
        mean, std = self._require_fitted("inverse_transform")
        values, _ = self._checked_input(scaled, "inverse_transform")
        return self._wrap(scaled, (values * std + mean).astype(np.float32))

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _as_array(
        features: pd.DataFrame | np.ndarray, action: str
    ) -> tuple[np.ndarray, tuple[str, ...] | None]:
        if isinstance(features, pd.DataFrame):
            return features.to_numpy(dtype=np.float64), tuple(map(str, features.columns))
        if isinstance(features, np.ndarray):
            if features.ndim == 0:
                raise ValueError(f"FeatureScaler.{action}: expected [..., F] values, got a "
                                 "scalar")
            return features.astype(np.float64, copy=False), None
        raise TypeError(f"FeatureScaler.{action}: expected a DataFrame or ndarray, got "
                        f"{type(features).__name__}")

    def _checked_input(
        self, features: pd.DataFrame | np.ndarray, action: str
    ) -> tuple[np.ndarray, tuple[str, ...] | None]:
        values, columns = self._as_array(features, action)
        n_fitted = len(self._require_fitted(action)[0])
        if columns is not None and self._columns is not None and columns != self._columns:
            missing = [c for c in self._columns if c not in columns]
            extra = [c for c in columns if c not in self._columns]
            detail = (f"missing {missing}, unexpected {extra}" if missing or extra
                      else "same names in another order")
            raise ValueError(
                f"FeatureScaler.{action}: columns do not match the fitted columns ({detail}); "
                f"fitted {list(self._columns)}, got {list(columns)}"
            )
        if values.shape[-1] != n_fitted:
            raise ValueError(f"FeatureScaler.{action}: {values.shape[-1]} features, the scaler "
                             f"was fitted on {n_fitted}")
        return values, columns

    @staticmethod
    def _check_finite(values: np.ndarray, columns: tuple[str, ...] | None, action: str) -> None:
        finite = np.isfinite(values)
        if not finite.all():
            flat = finite.reshape(-1, values.shape[-1]).all(axis=0)
            index = int(np.flatnonzero(~flat)[0])
            label = repr(columns[index]) if columns is not None else f"#{index}"
            raise DataError(f"FeatureScaler.{action}: column {label} holds NaN or inf")

    @staticmethod
    def _wrap(like: pd.DataFrame | np.ndarray, values: np.ndarray) -> pd.DataFrame | np.ndarray:
        if isinstance(like, pd.DataFrame):
            return pd.DataFrame(values, index=like.index, columns=like.columns)
        return values

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state: ``format, version, columns, mean, std, clip`` (exact floats)."""
        mean, std = self._require_fitted("to_dict")
        return {
            "format": _SCALER_FORMAT,
            "version": _SCALER_VERSION,
            "columns": None if self._columns is None else list(self._columns),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureScaler:
        """Rebuild a fitted scaler from :meth:`to_dict`'s output.

        Raises:
            ValueError: a key is missing, lengths differ, or a std is not finite and > 0.
        """
        missing = [k for k in ("columns", "mean", "std", "clip") if k not in data]
        if missing:
            raise ValueError(f"FeatureScaler.from_dict: missing key(s) {missing}")
        if data.get("format", _SCALER_FORMAT) != _SCALER_FORMAT:
            raise ValueError(f"FeatureScaler.from_dict: not a scaler (format "
                             f"{data.get('format')!r})")
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
        columns = None if data["columns"] is None else tuple(map(str, data["columns"]))
        if mean.ndim != 1 or std.shape != mean.shape or (
            columns is not None and len(columns) != len(mean)
        ):
            raise ValueError("FeatureScaler.from_dict: columns, mean and std must be lists of "
                             "equal length")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("FeatureScaler.from_dict: mean must be finite and std finite > 0")
        scaler = cls(clip=data["clip"])
        scaler._columns, scaler._mean, scaler._std = columns, mean, std
        return scaler

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically: temp file + rename)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            handle.write(text.encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureScaler:
        """Read a scaler written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not valid JSON or not a scaler's state.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a FeatureScaler JSON file ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a FeatureScaler JSON file (top level is not an "
                             "object)")
        return cls.from_dict(data)
