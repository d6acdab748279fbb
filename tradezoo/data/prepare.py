"""The one data preparation: bars -> features -> splits -> fitted scaler.

Every consumer of a dataset prepares it with :func:`prepare`: the environments
(:func:`tradezoo.envs.market.prepare_market` builds its observation tables from the result),
the supervised and PPO trainers (:func:`tradezoo.agents.data.prepare_data` adds labels and
windows to it). A model trained on the result therefore sees the features the env later shows
it, bit for bit::

    bars     = load_bars(source)                         # validated (one validator)
    features = compute_features(bars, feature_spec)      # [T, F] causal, warm-up rows dropped
    splits   = time_splits(features.index, lookback=window, horizon=1)   # or one walk-forward
                                                         # fold: WalkForward(...).splits(fold=k)
    scaler   = FeatureScaler().fit(features[splits.train[0] : splits.train[-1] + 1])
    scaled   = scaler.transform(features)                # [T, F] float32

Splits. The feature rows are split with ``lookback=window`` and ``horizon=1`` (a decision at
row ``t`` fills on bar ``t + 1``), so the embargo of ``window + 1`` rows keeps every part's
input windows and fill bars apart from the next part's (:mod:`tradezoo.data.splits`). The
parts come either from ``split_fractions`` (:func:`~tradezoo.data.splits.time_splits`) or from
fold ``fold`` of a :class:`WalkForward` (:func:`~tradezoo.data.splits.walk_forward`). A
consumer that needs the same parts with another label horizon calls
:meth:`PreparedDataset.splits_for`, which applies the same scheme to the same rows (the test
rows do not move with the horizon).

Scaler rows. The scaler is fitted on the feature rows of the train part, ``train[0] ..
train[-1]``, and nothing else. With ``split_fractions`` or an expanding walk-forward fold the
train part starts at row 0; a rolling fold (``WalkForward.train_size``) starts later and its
scaler never sees the rows before it. A scaler passed in is used as given.

Coarser timeframes (the env's dict observation): bars are resampled on UTC bins anchored at
the Unix epoch (:func:`resample_bars`), featurised with the same spec, and scaled with a scaler
fitted on the bins that close by the close of the last train row (and, for a train part that
does not start at row 0, open at or after its first row). ``last_closed[t]`` is the last bin
closed at the close of base row ``t``. A window of ``w`` bars of a timeframe at decision ``t``
is its rows ``last_closed[t] - w + 1 .. last_closed[t]`` (:func:`closed_window_rows`), and the
first decision with such a window is :func:`first_full_window`: the env's dict observation and
the trainers' multi-timeframe inputs both index the features with these two functions.

Walk-forward folds for a later ``compare --folds K``::

    scheme = WalkForward(n_folds=K, test_size=500, val_size=250)
    for k in range(K):
        fold = prepare("bybit-btcusdt-1h", window=64, walk_forward=scheme, fold=k)
        # fold.splits: fold k's parts; fold.scaler: fitted on fold k's train part only
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tradezoo.data.checks import check_int
from tradezoo.data.elapsed import elapsed_seconds
from tradezoo.data.errors import DataError
from tradezoo.data.features import FeatureScaler, FeatureSpec, compute_features
from tradezoo.data.intervals import Interval, infer_interval, parse_interval
from tradezoo.data.splits import Splits, time_splits, walk_forward

__all__ = [
    "DEFAULT_SPLIT_FRACTIONS",
    "DataSource",
    "PreparedDataset",
    "PreparedTimeframe",
    "WalkForward",
    "check_split_fractions",
    "check_timeframes",
    "closed_window_rows",
    "dataset_name",
    "first_full_window",
    "interval_of",
    "load_source",
    "prepare",
    "prepare_loaded",
    "resample_bars",
]

DataSource = str | Path | pd.DataFrame
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
"""``(train, val, test)`` fractions of :func:`prepare` when neither fractions nor folds are
given."""


# --------------------------------------------------------------------------- split schemes


@dataclass(frozen=True)
class WalkForward:
    """Walk-forward folds of the feature rows (the arguments of
    :func:`~tradezoo.data.splits.walk_forward` that do not depend on the consumer).

    ``lookback``, ``horizon`` and ``embargo`` come from whoever asks for the splits (the env:
    ``window`` and 1; a trainer: ``window`` and its label horizon), so one scheme gives the
    same folds to every consumer.

    Attributes:
        n_folds: number of folds, >= 1.
        test_size: feature rows per test window, >= 1.
        val_size: feature rows of validation per fold, >= 0.
        train_size: feature rows of training per fold (rolling), or ``None`` (expanding from
            row 0).
        step: rows between the starts of consecutive test windows (>= ``test_size``);
            default ``test_size``.
    """

    n_folds: int
    test_size: int
    val_size: int = 0
    train_size: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        check_int("WalkForward.n_folds", self.n_folds, 1)
        check_int("WalkForward.test_size", self.test_size, 1)
        check_int("WalkForward.val_size", self.val_size, 0)
        if self.train_size is not None:
            check_int("WalkForward.train_size", self.train_size, 1)
        if self.step is not None:
            check_int("WalkForward.step", self.step, 1)

    def check_fold(self, fold: object) -> int:
        """``fold`` as an int in ``[0, n_folds)``."""
        if isinstance(fold, bool) or not isinstance(fold, numbers.Integral):
            raise TypeError(f"fold must be an integer in [0, {self.n_folds}), got {fold!r}")
        if not 0 <= int(fold) < self.n_folds:
            raise ValueError(f"fold must be an integer in [0, {self.n_folds}), got {fold!r}")
        return int(fold)

    def splits(
        self, index: pd.Index, *, fold: int, lookback: int, horizon: int,
        embargo: int | None = None,
    ) -> Splits:
        """Fold ``fold`` of :func:`~tradezoo.data.splits.walk_forward` over ``index``."""
        fold = self.check_fold(fold)
        return walk_forward(
            index,
            n_folds=self.n_folds,
            test_size=self.test_size,
            val_size=self.val_size,
            train_size=self.train_size,
            lookback=lookback,
            horizon=horizon,
            embargo=embargo,
            step=self.step,
        )[fold]


def check_split_fractions(value: object) -> tuple[float, float, float]:
    """``(train, val, test)`` as three floats (their ranges and sum are checked by
    :func:`~tradezoo.data.splits.time_splits`)."""
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3):
        raise ValueError(f"split_fractions must be (train, val, test), got {value!r}")
    if any(isinstance(item, bool) or not isinstance(item, numbers.Real) for item in value):
        raise ValueError(f"split_fractions must be three numbers in [0, 1], got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, eq=False)
class PreparedTimeframe:
    """The features of one timeframe of a prepared dataset (the base one or a coarser one).

    Attributes:
        interval: the timeframe (the base interval or a whole multiple of it).
        features: float32 ``[T_tf, F]`` scaled features of the timeframe's bars (for the base
            timeframe the dataset's ``scaled`` values).
        last_closed: int64 ``[T]``: for each base feature row, the row of ``features`` of the
            last bar of this timeframe closed at that row's close (``-1``: none yet).
        scaler: the scaler ``features`` were scaled with.
        index: open times of the rows of ``features`` ``[T_tf]`` (UTC).
        dt_seconds: float32 ``[T_tf]``: seconds from the previous bar's open to each bar's open
            (unscaled; :func:`tradezoo.data.elapsed.elapsed_seconds`).
    """

    interval: Interval
    features: np.ndarray = field(repr=False)
    last_closed: np.ndarray = field(repr=False)
    scaler: FeatureScaler = field(repr=False)
    index: pd.DatetimeIndex = field(repr=False)
    dt_seconds: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """One dataset prepared by :func:`prepare` (see the module docstring).

    Attributes:
        name: dataset name (bundled name, ``attrs["dataset"]``, the symbol, or the fallback).
        bars: the validated bars frame (all rows, the feature warm-up included).
        interval: the bars' interval.
        features: unscaled causal features ``[T, F]`` on ``bars.index[bar_offset:
            bar_offset + T]`` (float32 when computed here, float64 when given).
        scaled: ``scaler.transform(features)``, float32 ``[T, F]``, same index and columns.
        bar_offset: position in ``bars`` of feature row 0.
        window: the input window (bars) the splits' embargo was sized for.
        splits: the parts of the feature rows (``lookback=window``, ``horizon=1``).
        scaler: the base scaler (fitted on the train part, or the one given).
        fit_rows: ``(first, last)`` feature rows the base scaler was fitted on (inclusive),
            ``None`` for a scaler given.
        split_fractions: the ``(train, val, test)`` fractions, ``None`` for walk-forward.
        walk_forward, fold: the walk-forward scheme and fold, ``None`` for fractions.
        timeframes: the requested timeframes (base and coarser), in the order asked.
        feature_spec: the spec the features were computed with (and any timeframe's are).
    """

    name: str
    bars: pd.DataFrame = field(repr=False)
    interval: Interval
    features: pd.DataFrame = field(repr=False)
    scaled: pd.DataFrame = field(repr=False)
    bar_offset: int
    window: int
    splits: Splits = field(repr=False)
    scaler: FeatureScaler = field(repr=False)
    fit_rows: tuple[int, int] | None
    split_fractions: tuple[float, float, float] | None
    walk_forward: WalkForward | None
    fold: int | None
    timeframes: tuple[PreparedTimeframe, ...] = field(default=(), repr=False)
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec, repr=False)

    @property
    def index(self) -> pd.DatetimeIndex:
        """Open times of the feature rows ``[T]``."""
        return pd.DatetimeIndex(self.features.index)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(map(str, self.features.columns))

    @property
    def dt_seconds(self) -> np.ndarray:
        """float32 ``[T]``: seconds from the previous bar's open to each feature row's open,
        unscaled (the liquid networks' ``dt``; the bar before row 0 is in :attr:`bars` after a
        feature warm-up)."""
        return _base_dt(self.bars, self.bar_offset, self.index, self.interval)

    @property
    def scalers(self) -> dict[str, FeatureScaler]:
        """Timeframe name -> scaler (the base timeframe always included)."""
        out = {self.interval.name: self.scaler}
        out.update({tf.interval.name: tf.scaler for tf in self.timeframes})
        return out

    def with_timeframes(
        self,
        timeframes: Sequence[str | Interval],
        scaler: FeatureScaler | Mapping[str, FeatureScaler] | None = None,
    ) -> PreparedDataset:
        """This dataset with ``timeframes`` prepared as :func:`prepare` would (resampled,
        featurised, scaled; :attr:`timeframes` replaced), so the result equals
        ``prepare(..., timeframes=timeframes)`` of the same data and scheme.

        Args:
            timeframes: the base interval and/or coarser whole multiples of it, in order.
            scaler: scalers by timeframe (a :class:`FeatureScaler` is the base one); missing
                ones are fitted on the train part as :func:`prepare` fits them. A base scaler
                given rescales the base timeframe's features with it.
        """
        scalers = _scaler_map(scaler, self.interval)
        base_scaler = scalers.get(self.interval.name, self.scaler)
        base_values = (
            self.scaled.to_numpy(dtype=np.float32)
            if base_scaler is self.scaler
            else _fit_or_use(base_scaler, self.features, None, self.name, self.interval.name)[1]
        )
        train = self.splits.train
        fit_rows = (int(train[0]), int(train[-1])) if train.size else None
        prepared_tfs = _prepare_timeframes(
            self.bars, self.name, self.interval, self.index, self.feature_spec,
            timeframes, scalers, fit_rows,
            base=PreparedTimeframe(self.interval, base_values, _arange(len(self.index)),
                                   base_scaler, self.index, self.dt_seconds),
        )
        return replace(self, timeframes=prepared_tfs)

    def splits_for(self, *, horizon: int, embargo: int | None = None) -> Splits:
        """The parts of the same feature rows under the same scheme (fractions or fold), for a
        consumer whose rows reach ``horizon`` bars ahead (lookback ``window``; embargo
        default and minimum ``window + horizon``). The test rows are those of :attr:`splits`.
        """
        return _split(self.index, window=self.window, horizon=horizon, embargo=embargo,
                      split_fractions=self.split_fractions, walk_forward=self.walk_forward,
                      fold=self.fold)


# ------------------------------------------------------------------------------ loading


def dataset_name(source: DataSource, bars: pd.DataFrame, fallback: str = "data") -> str:
    """The name a dataset is reported by: a bundled dataset's name, else the bars' ``dataset``
    or ``symbol`` attribute, else ``fallback``."""
    if isinstance(source, str) and not Path(source).suffix:
        return source
    for key in ("dataset", "symbol"):
        value = bars.attrs.get(key)
        if value:
            return str(value)
    return fallback


def load_source(source: object, what: str = "data") -> pd.DataFrame:
    """The validated bars of ``source`` (:func:`tradezoo.data.datasets.load_bars`).

    Args:
        source: a bundled dataset name, a CSV/Parquet path or a bars frame.
        what: how errors name the argument (``"data"``, ``"data[1]"``).

    Raises:
        TypeError: another type.
        tradezoo.data.DataError: bars that fail validation, an unknown dataset.
    """
    from tradezoo.data.datasets import load_bars

    if not isinstance(source, str | Path | pd.DataFrame):
        raise TypeError(
            f"{what} must be a bundled dataset name, a CSV/Parquet path or a bars DataFrame, "
            f"got {type(source).__name__}"
        )
    bars, _report = load_bars(source)
    return bars


def interval_of(bars: pd.DataFrame, name: str) -> Interval:
    """The bars' interval: ``attrs["interval"]``, else inferred from the index."""
    raw = bars.attrs.get("interval")
    interval = parse_interval(str(raw)) if raw else infer_interval(bars.index)
    if interval is None:
        raise DataError(
            f"dataset {name!r}: cannot tell the bar interval; set "
            "bars.attrs['interval'] (e.g. '1h')"
        )
    return interval


def check_timeframes(
    timeframes: Sequence[str] | Mapping[str, int] | None,
    window: int,
    bases: Sequence[Interval],
    names: Sequence[str],
) -> list[tuple[Interval, int]]:
    """Dict-observation timeframes as ``(interval, window)``, checked against every dataset's
    base interval (each must be the base interval or a whole multiple of it).

    Args:
        timeframes: a list of intervals (each with ``window`` bars), a mapping interval ->
            window, or ``None`` (the base interval only, which must then be one interval).
        window: the base window.
        bases, names: each dataset's base interval and name.
    """
    if timeframes is None:
        if len({b.name for b in bases}) > 1:
            raise ValueError(
                "observation='dict' over datasets with different bar intervals "
                f"({sorted({b.name for b in bases})}) needs explicit timeframes=..."
            )
        items: list[tuple[str, int]] = [(bases[0].name, window)]
    elif isinstance(timeframes, Mapping):
        items = [(str(k), v) for k, v in timeframes.items()]
    elif isinstance(timeframes, str) or not isinstance(timeframes, Sequence):
        raise TypeError(
            "timeframes must be a sequence of intervals (e.g. ['1h', '4h', '1d']) or a mapping "
            f"interval -> window, got {timeframes!r}"
        )
    else:
        items = [(str(k), window) for k in timeframes]
    if not items:
        raise ValueError("timeframes must name at least one timeframe")
    out: list[tuple[Interval, int]] = []
    seen: set[str] = set()
    for raw, tf_window in items:
        try:
            interval = parse_interval(raw)
        except ValueError as exc:
            raise ValueError(f"unknown timeframe {raw!r} in timeframes: {exc}") from None
        check_int(f"timeframes[{raw!r}] window", tf_window, 1)
        if interval.name in seen:
            raise ValueError(f"timeframes repeats {interval.name!r}")
        seen.add(interval.name)
        if interval.minutes is None:
            raise ValueError(
                f"timeframe {raw!r}: calendar months are not supported for dict observations "
                "(use a fixed length such as '1w')"
            )
        for base, name in zip(bases, names, strict=True):
            if base.minutes is None or interval.minutes < base.minutes:
                raise ValueError(
                    f"timeframe {interval.name!r} is finer than the base bars of dataset "
                    f"{name!r} ({base.name}); dict timeframes must be the base interval or "
                    "coarser"
                )
            if interval.minutes % base.minutes:
                raise ValueError(
                    f"timeframe {interval.name!r} is not a whole multiple of the base bars of "
                    f"dataset {name!r} ({base.name})"
                )
        out.append((interval, int(tf_window)))
    return out


def resample_bars(bars: pd.DataFrame, interval: Interval) -> pd.DataFrame:
    """Bars of a coarser ``interval`` from base ``bars`` (bins ``[b, b + interval)`` anchored at
    the Unix epoch, UTC; open first, high max, low min, close last, volume, turnover and
    funding summed). Empty bins are dropped, and so is a leading bin the data starts inside
    (it would be built from part of its bars)."""
    assert interval.minutes is not None
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    for extra in ("turnover", "funding_rate"):
        if extra in bars.columns:
            agg[extra] = "sum"
    out = (
        bars[list(agg)]
        .resample(
            pd.Timedelta(minutes=interval.minutes), origin="epoch", label="left", closed="left"
        )
        .agg(agg)  # type: ignore[arg-type]
    )
    out = out[out["open"].notna()]
    if len(out) and bars.index[0] > out.index[0]:
        out = out.iloc[1:]
    out.attrs = {**bars.attrs, "interval": interval.name}
    return out


def closed_window_rows(last_closed: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """Rows of a timeframe's features that form the window of its last ``window`` closed bars
    at each decision row: int64 ``[N, window]``, oldest first, row ``i`` being
    ``last_closed[rows[i]] - window + 1 .. last_closed[rows[i]]``.

    This is the no-look-ahead rule of every multi-timeframe input (the env's dict
    observation, the supervised batches): a bar of a timeframe enters the window at ``t``
    only once it has closed by the close of base row ``t``.

    Args:
        last_closed: int64 ``[T]`` (:attr:`PreparedTimeframe.last_closed`).
        rows: int ``[N]`` decision rows, each at or after :func:`first_full_window`.
        window: bars per window, >= 1.
    """
    first = last_closed.take(rows) - (window - 1)  # [N]
    return first[:, None] + np.arange(window, dtype=np.int64)  # [N, window]


def first_full_window(last_closed: np.ndarray, window: int) -> int:
    """The first base row at which ``window`` bars of a timeframe have closed (``len``
    of ``last_closed`` when none has)."""
    return int(np.searchsorted(last_closed, window - 1, side="left"))


def _aligned_features(
    bars: pd.DataFrame, features: pd.DataFrame, name: str
) -> tuple[pd.DataFrame, int]:
    """Check user features: a frame on a contiguous run of the bars' timestamps, all finite."""
    if not isinstance(features, pd.DataFrame):
        raise TypeError(
            f"features for dataset {name!r} must be a DataFrame, got {type(features).__name__}"
        )
    if not isinstance(features.index, pd.DatetimeIndex) or len(features) == 0:
        raise ValueError(
            f"features for dataset {name!r} must have a non-empty DatetimeIndex of bar open times"
        )
    index = features.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    positions = bars.index.get_indexer(index)
    if (positions < 0).any():
        missing = index[positions < 0]
        raise ValueError(
            f"features for dataset {name!r}: {len(missing)} timestamp(s) are not bars of the "
            f"dataset (first {missing[0]})"
        )
    if not (np.diff(positions) == 1).all():
        raise ValueError(
            f"features for dataset {name!r} must cover consecutive bars (no gaps, sorted); "
            "the env steps from each row to the next bar"
        )
    values = features.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise DataError(
            f"features for dataset {name!r}: column {str(features.columns[column])!r} is NaN or "
            f"infinite at {index[row]} ({int((~finite).sum())} value(s) in all); observations "
            "must be finite, so fix or drop those rows before building the env"
        )
    frame = pd.DataFrame(values, index=index, columns=[str(c) for c in features.columns])
    return frame, int(positions[0])


# ------------------------------------------------------------------------------ preparing


def _split(
    index: pd.Index,
    *,
    window: int,
    horizon: int,
    embargo: int | None,
    split_fractions: tuple[float, float, float] | None,
    walk_forward: WalkForward | None,
    fold: int | None,
) -> Splits:
    if walk_forward is not None:
        assert fold is not None
        return walk_forward.splits(index, fold=fold, lookback=window, horizon=horizon,
                                   embargo=embargo)
    assert split_fractions is not None
    return time_splits(
        index,
        train=split_fractions[0],
        val=split_fractions[1],
        test=split_fractions[2],
        lookback=window,
        horizon=horizon,
        embargo=embargo,
    )


def _fit_or_use(
    scaler: FeatureScaler | None,
    frame: pd.DataFrame,
    rows: tuple[int, int] | None,
    name: str,
    tf: str,
) -> tuple[FeatureScaler, np.ndarray]:
    """The scaler (fitted on ``frame`` rows ``first .. last`` when none is given) and the
    scaled values float32 ``[T, F]`` (C-contiguous)."""
    if scaler is None:
        if rows is None or rows[1] < rows[0]:
            raise ValueError(
                f"dataset {name!r}: no {tf} feature rows fall in the train split to fit the "
                "scaler on; use more data or a larger train fraction"
            )
        scaler = FeatureScaler().fit(frame.iloc[rows[0] : rows[1] + 1])
    elif not isinstance(scaler, FeatureScaler):
        raise TypeError(f"scaler must be a FeatureScaler, got {type(scaler).__name__}")
    scaled = scaler.transform(frame.to_numpy(dtype=np.float64))
    return scaler, np.ascontiguousarray(scaled, dtype=np.float32)


def _scaler_map(
    scaler: FeatureScaler | Mapping[str, FeatureScaler] | None, base: Interval
) -> dict[str, FeatureScaler]:
    if scaler is None:
        return {}
    if isinstance(scaler, FeatureScaler):
        return {base.name: scaler}
    if isinstance(scaler, Mapping):
        return {parse_interval(str(k)).name: v for k, v in scaler.items()}
    raise TypeError(
        f"scaler must be a FeatureScaler, a mapping timeframe -> scaler, or "
        f"None, got {type(scaler).__name__}"
    )


def prepare(
    data: DataSource,
    *,
    window: int = 64,
    feature_spec: FeatureSpec | Mapping[str, object] | None = None,
    features: pd.DataFrame | None = None,
    split_fractions: Sequence[float] | None = None,
    walk_forward: WalkForward | None = None,
    fold: int | None = None,
    scaler: FeatureScaler | Mapping[str, FeatureScaler] | None = None,
    timeframes: Sequence[str | Interval] = (),
) -> PreparedDataset:
    """Load, featurise, split and scale one dataset (see the module docstring).

    Args:
        data: a bundled dataset name (``"bybit-btcusdt-1h"``), a CSV/Parquet path or a bars
            frame; everything goes through :func:`tradezoo.data.datasets.load_bars`.
        window: input window in bars, >= 1 (the embargo is ``window + 1`` rows).
        feature_spec: :class:`FeatureSpec` or its dict; default ``FeatureSpec()``.
        features: precomputed features instead of ``feature_spec`` (base timeframe only): a
            frame on a consecutive run of the bars' timestamps, all finite.
        split_fractions: ``(train, val, test)``; default :data:`DEFAULT_SPLIT_FRACTIONS`.
            Not together with ``walk_forward``.
        walk_forward, fold: prepare fold ``fold`` (``0 .. n_folds - 1``) of these folds.
        scaler: a fitted :class:`FeatureScaler` for the base features, or a mapping
            timeframe -> scaler; the missing ones are fitted on the train part.
        timeframes: coarser timeframes to prepare besides the base one (dict observations).

    Returns:
        :class:`PreparedDataset`.

    Raises:
        TypeError, ValueError: a bad argument (the message names it and the rule), too little
            data for the window and the splits.
        tradezoo.data.DataError: bars that fail validation, non-finite features.
    """
    window = check_int("window", window, 1)
    bars = load_source(data)
    name = dataset_name(data, bars)
    return prepare_loaded(
        bars, name, window=window, feature_spec=feature_spec, features=features,
        split_fractions=split_fractions, walk_forward=walk_forward, fold=fold, scaler=scaler,
        timeframes=timeframes,
    )


def prepare_loaded(
    bars: pd.DataFrame,
    name: str,
    *,
    window: int,
    feature_spec: FeatureSpec | Mapping[str, object] | None = None,
    features: pd.DataFrame | None = None,
    split_fractions: Sequence[float] | None = None,
    walk_forward: WalkForward | None = None,
    fold: int | None = None,
    scaler: FeatureScaler | Mapping[str, FeatureScaler] | None = None,
    timeframes: Sequence[str | Interval] = (),
    zero_funding: bool = False,
) -> PreparedDataset:
    """:func:`prepare` for bars already validated (:func:`load_source`) and named.

    Args:
        zero_funding: compute features as if the bars had a ``funding_rate`` column of zeros
            when they have none (an instrument without funding pays none), so datasets of
            one env share their feature columns.
        Others: as for :func:`prepare`.
    """
    window = check_int("window", window, 1)
    fractions, walk_forward, fold = _check_scheme(split_fractions, walk_forward, fold)
    spec = FeatureSpec.coerce(feature_spec)
    interval = interval_of(bars, name)
    scalers = _scaler_map(scaler, interval)
    feature_bars = bars
    if zero_funding and "funding_rate" not in bars.columns:
        # An instrument without funding (equities) pays none: 0 is the truth, and it keeps the
        # feature columns of every dataset of the env identical.
        feature_bars = bars.assign(funding_rate=0.0)
        feature_bars.attrs = dict(bars.attrs)
    if features is not None:
        frame, bar_offset = _aligned_features(bars, features, name)
    else:
        frame = compute_features(feature_bars, spec)  # [T, F] float32, warm-up rows dropped
        bar_offset = len(bars) - len(frame)
    index = pd.DatetimeIndex(frame.index)
    length = len(index)
    if length < 2:
        raise ValueError(
            f"dataset {name!r}: {length} feature row(s); at least 2 are needed "
            "(a decision and a bar to fill on)"
        )
    try:
        splits = _split(index, window=window, horizon=1, embargo=None,
                        split_fractions=fractions, walk_forward=walk_forward, fold=fold)
    except ValueError as exc:
        raise ValueError(
            f"dataset {name!r}: cannot split its {length} feature rows with window={window} "
            f"(the parts are separated by an embargo of window + 1 = {window + 1} rows): {exc}"
        ) from None
    train = splits.train
    fit_rows = (int(train[0]), int(train[-1])) if train.size else None
    given = scalers.get(interval.name)
    base_scaler, scaled = _fit_or_use(given, frame, fit_rows, name, interval.name)
    prepared_tfs = _prepare_timeframes(
        feature_bars, name, interval, index, spec, timeframes, scalers, fit_rows,
        base=PreparedTimeframe(interval, scaled, _arange(length), base_scaler, index,
                               _base_dt(bars, bar_offset, index, interval)),
    )
    return PreparedDataset(
        name=name,
        bars=bars,
        interval=interval,
        features=frame,
        scaled=pd.DataFrame(scaled, index=frame.index, columns=frame.columns, copy=False),
        bar_offset=bar_offset,
        window=window,
        splits=splits,
        scaler=base_scaler,
        fit_rows=fit_rows if given is None else None,
        split_fractions=fractions,
        walk_forward=walk_forward,
        fold=fold,
        timeframes=prepared_tfs,
        feature_spec=spec,
    )


def _check_scheme(
    split_fractions: Sequence[float] | None, scheme: WalkForward | None, fold: object
) -> tuple[tuple[float, float, float] | None, WalkForward | None, int | None]:
    if scheme is None:
        if fold is not None:
            raise ValueError(f"fold={fold!r} needs walk_forward=WalkForward(...) (the folds)")
        fractions = DEFAULT_SPLIT_FRACTIONS if split_fractions is None else split_fractions
        return check_split_fractions(fractions), None, None
    if not isinstance(scheme, WalkForward):
        raise TypeError(f"walk_forward must be a WalkForward or None, got {scheme!r}")
    if split_fractions is not None:
        raise ValueError(
            "give split_fractions or walk_forward, not both (the folds define the parts)"
        )
    if fold is None:
        raise ValueError(f"walk_forward needs fold= (an integer in [0, {scheme.n_folds}))")
    return None, scheme, scheme.check_fold(fold)


def _arange(length: int) -> np.ndarray:
    rows = np.arange(length, dtype=np.int64)
    rows.setflags(write=False)
    return rows


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _base_dt(bars: pd.DataFrame, bar_offset: int, index: pd.DatetimeIndex,
             interval: Interval) -> np.ndarray:
    """Elapsed seconds of the base feature rows (``PreparedDataset.dt_seconds``)."""
    previous = bars.index[bar_offset - 1] if bar_offset > 0 else None
    return _read_only(elapsed_seconds(index, interval, previous))


def _prepare_timeframes(
    feature_bars: pd.DataFrame,
    name: str,
    interval: Interval,
    index: pd.DatetimeIndex,
    spec: FeatureSpec,
    timeframes: Sequence[str | Interval],
    scalers: Mapping[str, FeatureScaler],
    fit_rows: tuple[int, int] | None,
    *,
    base: PreparedTimeframe,
) -> tuple[PreparedTimeframe, ...]:
    """Each requested timeframe: resampled, featurised, scaled (module docstring)."""
    if not timeframes:
        return ()
    step_ns = pd.Timedelta(minutes=interval.minutes or 0).value
    open_time = index.as_unit("ns").asi8
    close_time = open_time + step_ns
    train_close = close_time[fit_rows[1]] if fit_rows else None
    # A train part that starts at row 0 owns the feature warm-up before it; a later one (a
    # rolling fold) owns only the bins that open inside it.
    train_open = open_time[fit_rows[0]] if fit_rows and fit_rows[0] > 0 else None
    out: list[PreparedTimeframe] = []
    for item in timeframes:
        tf = item if isinstance(item, Interval) else parse_interval(item)
        if tf.minutes == interval.minutes:
            out.append(base)
            continue
        tf_bars = resample_bars(feature_bars, tf)
        try:
            tf_frame = compute_features(tf_bars, spec)
        except DataError as exc:
            raise DataError(f"dataset {name!r}, timeframe {tf.name}: {exc}") from None
        bin_open = pd.DatetimeIndex(tf_frame.index).as_unit("ns").asi8
        bin_end = bin_open + pd.Timedelta(minutes=tf.minutes or 0).value
        tf_rows = None
        if train_close is not None:
            stop = int(np.searchsorted(bin_end, train_close, side="right"))
            start = 0 if train_open is None else int(np.searchsorted(bin_open, train_open))
            tf_rows = (start, stop - 1)
        tf_scaler, tf_feats = _fit_or_use(scalers.get(tf.name), tf_frame, tf_rows, name,
                                          tf.name)
        last_closed = np.searchsorted(bin_end, close_time, side="right").astype(np.int64) - 1
        last_closed.setflags(write=False)
        tf_index = pd.DatetimeIndex(tf_frame.index)
        earlier = tf_bars.index[tf_bars.index < tf_index[0]] if len(tf_index) else tf_bars.index
        dt_seconds = _read_only(elapsed_seconds(
            tf_index, tf, earlier[-1] if len(earlier) else None))
        out.append(PreparedTimeframe(tf, tf_feats, last_closed, tf_scaler, tf_index,
                                     dt_seconds))
    return tuple(out)
