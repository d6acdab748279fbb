"""One or more prepared datasets laid out as aligned numpy arrays, shared by every tradezoo env.

:class:`Market` is the part of an environment that does not change between episodes. Each
dataset is prepared by :func:`tradezoo.data.prepare.prepare_loaded`, the one data preparation
the trainers use too (validated bars, causal features, train/val/test splits, a
:class:`FeatureScaler` fitted on the **train split of that dataset only**); the market takes
the decision rows of the selected split and lays out the scaled features and the price
columns :func:`~tradezoo.backtest.execution.execute_step` reads. The single env
(:class:`~tradezoo.envs.trading_env.TradingEnv`, Python floats) and the batched envs
(:class:`~tradezoo.envs.vector_env.TradingVectorEnv` and the SB3 ``VecEnv``, arrays ``[N]``)
read the same arrays and build observations with the same :class:`Market` methods. Cost
models per dataset are resolved in :mod:`tradezoo.envs.costs`.

Rows. Every dataset contributes its feature rows (bars after the feature warm-up) to one
concatenated table of ``R`` rows; a dataset's rows are ``offset .. offset + length - 1`` and
"row" below means a global row of that table. A decision at row ``t`` sees features of rows
``<= t`` only (data known at the close of bar ``t``); its order fills at ``open[t+1]`` (or
``close[t]`` with ``fill="close"``) and is marked at ``close[t+1]`` (docs/design.md, "Time and
execution").

Splits. Each dataset's feature rows are split by the data preparation with
``lookback=window`` and ``horizon=1`` (one bar to fill and mark), so the embargo of
``window + 1`` rows keeps every part's inputs and fill bars apart from the next part's. The
rows of the selected part (or of an explicit ``(start, end)`` range of timestamps, inclusive)
are the decision rows, further limited so that a full window exists before the first one
(``t >= window - 1``; for ``observation="dict"`` also a full window of closed bars of every
timeframe) and a bar exists after the last one (``t <= length - 2``; :func:`decision_rows`).
An input window may reach back before the first decision row of a part (into the embargo gap):
those bars are in the past, which the embargo was sized for.

Observations (float32, fresh arrays):

- ``"box"``: ``[window, F + 2]``; row ``j`` holds the scaled features of bar ``t - window + 1 + j``
  and two account columns for that bar: the exposure held over it (``units * close / equity``
  at its close, signed fraction of equity) and its equity log-return ``ln(E_bar / E_prev)``.
  Both are 0 for bars at or before the episode's first decision (the account is flat then).
- ``"dict"``: one ``[window_tf, F]`` array per timeframe (``"1h"``, ``"4h"``, ``"1d"`` ...:
  bars resampled from the base bars on UTC bins anchored at the Unix epoch) holding the scaled
  features of the last ``window_tf`` **closed** bars of that timeframe: a bin ``[b, b + tf)`` is
  visible at decision ``t`` only when ``b + tf <= open_time[t] + base_interval``, the close of
  bar ``t`` (a 4h bar appears once its last 1h bar has closed). Plus ``"account"``: ``[4]`` =
  (exposure, unrealised P&L of the open trade as a fraction of the equity at its entry, bars in
  the position scaled as ``ln(1 + bars) / ln(1 + window)``, drawdown ``equity / peak - 1``).

Elapsed time (``include_dt=True``; :mod:`tradezoo.data.elapsed`): every window comes with its
per-bar elapsed time, float32 seconds from the previous bar's open, unscaled, under its own key.
The ``"box"`` observation becomes a ``Dict`` of ``"window"`` (the box layout above, unchanged)
and ``"dt"`` ``[window]``; the ``"dict"`` observation gains ``"dt_<tf>"`` ``[window_tf]``
beside each timeframe ``"<tf>"`` (the elapsed times of that timeframe's closed bars). Off by
default: the observation is then exactly the one above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from gymnasium import spaces

from tradezoo.backtest.execution import MIN_BAR_NOTIONAL
from tradezoo.data.checks import check_int
from tradezoo.data.elapsed import DT_KEY, WINDOW_KEY, dt_key, nominal_seconds
from tradezoo.data.features import FeatureScaler, FeatureSpec
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.data.prepare import (
    DataSource,
    PreparedDataset,
    check_split_fractions,
    check_timeframes,
    closed_window_rows,
    dataset_name,
    first_full_window,
    interval_of,
    load_source,
    prepare_loaded,
)
from tradezoo.data.splits import PART_NAMES, Splits
from tradezoo.envs.layout import ACCOUNT_KEY, N_ACCOUNT_COLUMNS, N_ACCOUNT_FEATURES

__all__ = [
    "DataSource",
    "Market",
    "MarketDataset",
    "ObservationMode",
    "SplitSpec",
    "Timeframe",
    "account_scale",
    "decision_rows",
    "get_market",
    "prepare_market",
]

ObservationMode = Literal["box", "dict"]
SplitSpec = str | tuple[Any, Any]


_STEP_COLUMNS = ("close", "open_next", "close_next", "funding_next", "range_frac", "notional",
                 "high_next", "low_next")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Timeframe:
    """The features of one timeframe of a dict observation, concatenated over datasets.

    Attributes:
        name: canonical interval, e.g. ``"4h"``; the observation key.
        window: bars of this timeframe per observation.
        features: float32 ``[R_tf, F]`` scaled features (read-only).
        last_closed: int64 ``[R]``: for each base row, the row of ``features`` of the last
            bar of this timeframe that is closed at that decision (``-1``: none yet).
        dt_seconds: float32 ``[R_tf]`` elapsed seconds of each bar of this timeframe
            (read-only).
    """

    name: str
    window: int
    features: np.ndarray
    last_closed: np.ndarray
    dt_seconds: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class MarketDataset:
    """One prepared dataset inside a :class:`Market`.

    Attributes:
        name: dataset name (bundled name, ``attrs["dataset"]``, the symbol, or ``data{i}``).
        symbol, interval, source: from the bars' ``attrs``.
        bars: the validated bars frame (all rows, including the feature warm-up).
        index: open times of this dataset's rows in the market (``bars.index[bar_offset:]``).
        offset: global row of this dataset's first row.
        length: number of rows.
        bar_offset: position of the first row in ``bars`` (the feature warm-up).
        first_decision, last_decision: global rows of the first and last decision of the
            selected split (inclusive).
        splits: the train/val/test splits of this dataset's rows.
        scalers: timeframe name -> the scaler its features were scaled with.
        periods_per_year: bars per year (metrics, borrow).
        has_funding: whether the bars carry a ``funding_rate`` column.
    """

    name: str
    symbol: str
    interval: str
    source: str
    bars: pd.DataFrame = field(repr=False)
    index: pd.DatetimeIndex = field(repr=False)
    offset: int
    length: int
    bar_offset: int
    first_decision: int
    last_decision: int
    splits: Splits = field(repr=False)
    scalers: dict[str, FeatureScaler] = field(repr=False)
    periods_per_year: float
    has_funding: bool

    @property
    def n_decisions(self) -> int:
        """Decision rows in the selected split."""
        return self.last_decision - self.first_decision + 1

    def local(self, row: int) -> int:
        """Position of global ``row`` in this dataset's ``index``."""
        return row - self.offset


@dataclass(frozen=True)
class Market:
    """Prepared datasets as one table of aligned arrays (see the module docstring).

    Build it with :func:`prepare_market`. All arrays are read-only and shared by every env
    that uses the market (markets are cached by configuration).

    Attributes:
        datasets: the prepared datasets, in the order given.
        feature_names: feature columns ``F`` (the same for every dataset).
        window: base-timeframe window (box observation rows).
        observation: ``"box"`` or ``"dict"``.
        timeframes: dict observation timeframes (empty for box).
        close, open, funding_rate, range_frac, notional: float64 ``[R]``: close and open
            prices, funding rate stamped at each bar's open, the decision bar's
            ``(high - low) / close`` and ``max(volume * close, MIN_BAR_NOTIONAL)``.
        step_table: float64 ``[8, R]``: per decision row ``t`` the inputs of
            ``execute_step``: ``close[t], open[t+1], close[t+1], funding[t+1], range_frac[t],
            notional[t], high[t+1], low[t+1]`` (the last row of a dataset repeats its own bar:
            never a decision).
        step_rows: the same table row-major, float64 ``[R, 8]`` (one gather per batch step).
        lists: the same columns as Python lists (the single env's float fast path):
            ``close, open, high, low, funding_rate, range_frac, notional``.
        features: float32 ``[R, F]`` scaled base features.
        box_table: float32 ``[R, F + 2]``: features plus two zero account columns (box).
        include_dt: whether observations carry elapsed times (the module docstring).
        dt_seconds: float32 ``[R]`` elapsed seconds of each base row, unscaled.
        window_offsets: ``arange(-window + 1, 1)``, the row offsets of a base window.
    """

    datasets: tuple[MarketDataset, ...]
    feature_names: tuple[str, ...]
    window: int
    observation: ObservationMode
    timeframes: tuple[Timeframe, ...]
    close: np.ndarray = field(repr=False)
    open: np.ndarray = field(repr=False)
    funding_rate: np.ndarray = field(repr=False)
    range_frac: np.ndarray = field(repr=False)
    notional: np.ndarray = field(repr=False)
    step_table: np.ndarray = field(repr=False)
    step_rows: np.ndarray = field(repr=False)
    lists: dict[str, list[float]] = field(repr=False)
    features: np.ndarray = field(repr=False)
    box_table: np.ndarray | None = field(repr=False)
    include_dt: bool = False
    dt_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    window_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64),
                                       repr=False)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def bar_seconds(self) -> float:
        """Nominal bar length of the base interval, seconds (the liquid networks'
        ``time_unit``); a ``ValueError`` when the datasets' intervals differ."""
        intervals = {d.interval for d in self.datasets}
        if len(intervals) != 1:
            raise ValueError(f"the datasets have different bar intervals {sorted(intervals)}")
        return nominal_seconds(parse_interval(intervals.pop()))

    @property
    def max_decisions(self) -> int:
        """The most decision rows of any dataset's split (bounds an episode's length)."""
        return max(d.n_decisions for d in self.datasets)

    # -- spaces --------------------------------------------------------------------------

    def observation_space(self) -> spaces.Space:
        """The observation space (float32; features within the scalers' clip when all clip)."""
        feature_bound = self._feature_bound()
        if self.observation == "box":
            low = np.full((self.window, self.n_features + N_ACCOUNT_COLUMNS), -np.inf, np.float32)
            low[:, : self.n_features] = -feature_bound
            box = spaces.Box(low=low, high=-low, dtype=np.float32)
            if not self.include_dt:
                return box
            return spaces.Dict({WINDOW_KEY: box, DT_KEY: _dt_space(self.window)})
        parts: dict[str, spaces.Space] = {}
        for tf in self.timeframes:
            parts[tf.name] = spaces.Box(
                -feature_bound, feature_bound, (tf.window, self.n_features), np.float32
            )
            if self.include_dt:
                parts[dt_key(tf.name)] = _dt_space(tf.window)
        parts[ACCOUNT_KEY] = spaces.Box(-np.inf, np.inf, (N_ACCOUNT_FEATURES,), np.float32)
        return spaces.Dict(parts)

    def _feature_bound(self) -> float:
        clips = [s.clip for d in self.datasets for s in d.scalers.values()]
        if clips and all(c is not None for c in clips):
            return float(max(c for c in clips if c is not None))
        return float("inf")

    # -- observations (the one builder both env kinds use) -------------------------------
    #
    # Box observations come from a per-account ring of 2 * window rows of ``F + 2`` floats,
    # driven by a clock that advances one tick per step: the row of the bar reached at clock
    # c (its scaled features and its two account values) is written at slots c % window and
    # c % window + window, so the last ``window`` bars are always the contiguous block
    # ``ring[s : s + window]`` with ``s = (c + 1) % window``. One row is written per step, an
    # observation is one copy, and starting an episode writes O(window) rows. The single env
    # uses its step count as the clock; the batched envs share one clock for all accounts, so
    # their writes and reads are plain slices, not per-account gathers.

    def box_ring(self) -> np.ndarray:
        """A zeroed float32 ring ``[2 * window, F + 2]`` for one account."""
        return np.zeros((2 * self.window, self.n_features + N_ACCOUNT_COLUMNS), np.float32)

    def box_begin(self, ring: np.ndarray, row: int, clock: int = 0) -> None:
        """Fill ``ring`` for an episode whose first decision is ``row`` at ``clock``: bars
        ``row - window + 1 .. row`` with their features and zero account columns."""
        window = self.window
        table = self.box_table
        assert table is not None
        # Bar row - j belongs at slot (clock - j) % window: the oldest bar (j = window - 1)
        # goes to slot s = (clock + 1) % window, the next ones follow, wrapping at window.
        shift = (clock + 1) % window
        first = row - window + 1
        ring[shift:window] = table[first : first + window - shift]
        ring[:shift] = table[first + window - shift : row + 1]
        ring[window:] = ring[:window]

    def box_push(
        self, ring: np.ndarray, clock: int, row: int, position: float, log_return: float
    ) -> None:
        """Write bar ``row`` (reached at ``clock``) with its account values into ``ring``."""
        slot = clock % self.window
        line = ring[slot]
        line[:] = self.box_table[row]  # type: ignore[index]
        line[-2] = position
        line[-1] = log_return
        ring[slot + self.window] = line

    def box_observation(self, ring: np.ndarray, clock: int) -> np.ndarray:
        """Box observation ``[window, F + 2]`` (a fresh array) at ``clock``."""
        slot = (clock + 1) % self.window
        return ring[slot : slot + self.window].copy()

    def box_rings(self, n: int) -> np.ndarray:
        """Zeroed rings ``[n, 2 * window, F + 2]`` for ``n`` accounts."""
        return np.zeros((n, 2 * self.window, self.n_features + N_ACCOUNT_COLUMNS), np.float32)

    def box_push_all(
        self,
        rings: np.ndarray,
        clock: int,
        rows: np.ndarray,
        position: np.ndarray,
        log_return: np.ndarray,
    ) -> None:
        """:meth:`box_push` for every account at the shared ``clock`` (``rows``, values
        ``[N]``)."""
        slot = clock % self.window
        lines = self.box_table.take(rows, axis=0)  # type: ignore[union-attr]  # fresh [N, F+2]
        lines[:, -2] = position
        lines[:, -1] = log_return
        rings[:, slot] = lines
        rings[:, slot + self.window] = lines

    def box_observations(
        self, rings: np.ndarray, clock: int, idx: np.ndarray | None = None
    ) -> np.ndarray:
        """Box observations ``[N, window, F + 2]`` (fresh) of every account, or of ``idx``."""
        slot = (clock + 1) % self.window
        if idx is None:
            return rings[:, slot : slot + self.window].copy()
        return rings[idx, slot : slot + self.window]

    def with_dt(self, box: np.ndarray, row: int) -> dict[str, np.ndarray]:
        """The ``include_dt`` box observation: ``box`` ``[window, F + 2]`` and the elapsed
        seconds ``[window]`` of the window ending at decision ``row``."""
        return {WINDOW_KEY: box, DT_KEY: self.dt_seconds[row - self.window + 1 : row + 1].copy()}

    def with_dts(self, boxes: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`with_dt` of a batch: ``boxes`` ``[N, window, F + 2]``, ``rows`` ``[N]``."""
        return {WINDOW_KEY: boxes,
                DT_KEY: self.dt_seconds.take(rows[:, None] + self.window_offsets)}

    def dict_observation(self, row: int, account: np.ndarray) -> dict[str, np.ndarray]:
        """Dict observation of one account at decision ``row``; ``account`` float32 ``[4]``."""
        out: dict[str, np.ndarray] = {}
        at = np.array([row], dtype=np.int64)
        for tf in self.timeframes:
            window_rows = closed_window_rows(tf.last_closed, at, tf.window)[0]  # [window]
            out[tf.name] = tf.features.take(window_rows, axis=0)
            if self.include_dt:
                out[dt_key(tf.name)] = tf.dt_seconds.take(window_rows)
        out[ACCOUNT_KEY] = account
        return out

    def dict_observations(self, rows: np.ndarray, account: np.ndarray) -> dict[str, np.ndarray]:
        """Dict observations of accounts at decision ``rows`` [N]; ``account`` ``[N, 4]``."""
        out: dict[str, np.ndarray] = {}
        for tf in self.timeframes:
            # One take() of [N, window] row numbers from the contiguous table (take() on the
            # strided window view would first copy the whole view).
            window_rows = closed_window_rows(tf.last_closed, rows, tf.window)  # [N, window]
            out[tf.name] = tf.features.take(window_rows, axis=0)
            if self.include_dt:
                out[dt_key(tf.name)] = tf.dt_seconds.take(window_rows)
        out[ACCOUNT_KEY] = account
        return out

    def dataset_of_row(self, row: int) -> MarketDataset:
        for dataset in self.datasets:
            if dataset.offset <= row < dataset.offset + dataset.length:
                return dataset
        raise IndexError(f"row {row} is outside the market's {len(self.close)} rows")


# ----------------------------------------------------------------------------------- build
#
# Loading, features, splits and scalers come from tradezoo.data.prepare (the one data
# preparation the trainers use too); this section picks each dataset's decision rows and
# lays the prepared datasets out as the market's tables.


def _dt_space(window: int) -> spaces.Box:
    """Space of one window's elapsed seconds ``[window]`` (unscaled, > 0)."""
    return spaces.Box(0.0, np.inf, (window,), np.float32)


def _resolve_rows(
    split: SplitSpec, splits: Splits, index: pd.DatetimeIndex, name: str
) -> tuple[int, int]:
    """First and last (local, inclusive) row of the requested split."""
    if isinstance(split, str):
        if split not in PART_NAMES:
            raise ValueError(
                f"split must be 'train', 'val', 'test' or a (start, end) pair of timestamps, "
                f"got {split!r}"
            )
        part = splits.part(split)  # type: ignore[arg-type]
        if part.size == 0:
            raise ValueError(
                f"dataset {name!r}: the {split!r} split is empty (split_fractions gives it no rows)"
            )
        return int(part[0]), int(part[-1])
    if not (isinstance(split, tuple) and len(split) == 2):
        raise ValueError(
            f"split must be 'train', 'val', 'test' or a (start, end) pair of timestamps, "
            f"got {split!r}"
        )

    def stamp(value: Any) -> pd.Timestamp | None:
        if value is None:
            return None
        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"split: cannot read {value!r} as a timestamp ({exc})") from None
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    start, end = stamp(split[0]), stamp(split[1])
    first = 0 if start is None else int(index.searchsorted(start, side="left"))
    last = len(index) - 1 if end is None else int(index.searchsorted(end, side="right")) - 1
    if last < first:
        raise ValueError(
            f"dataset {name!r}: split {split!r} holds no feature rows (the data covers "
            f"{index[0]} .. {index[-1]} after the feature warm-up)"
        )
    return first, last


def decision_rows(
    prepared: PreparedDataset,
    split: SplitSpec,
    tf_windows: Sequence[int] = (),
) -> tuple[int, int]:
    """First and last (local, inclusive) decision row of ``prepared`` in ``split``: the
    split's rows with a full window before the first (``t >= window - 1``; with
    ``tf_windows``, one per prepared timeframe, a full window of closed bars of every
    timeframe) and a bar after the last (``t <= T - 2``)."""
    name, window, index = prepared.name, prepared.window, prepared.index
    first, last = _resolve_rows(split, prepared.splits, index, name)
    n_split = last - first + 1
    if window > n_split:
        raise ValueError(
            f"window={window} bars is longer than the {split!r} split of dataset {name!r} "
            f"({n_split} rows); use a shorter window, a larger split or more data"
        )
    first = max(first, window - 1)
    last = min(last, len(index) - 2)
    for tf, tf_window in zip(prepared.timeframes, tf_windows, strict=True):
        # First decision with a full window of closed bars of this timeframe.
        first = max(first, first_full_window(tf.last_closed, tf_window))
    if last < first:
        raise ValueError(
            f"dataset {name!r}: the {split!r} split has no decision rows once the window "
            f"({window}) and the bar to fill on are accounted for; use more data or a shorter "
            "window"
        )
    return first, last


def prepare_market(
    data: DataSource | Sequence[DataSource],
    *,
    features: pd.DataFrame | Sequence[pd.DataFrame | None] | None = None,
    feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
    scaler: FeatureScaler | Mapping[str, FeatureScaler] | None = None,
    window: int = 64,
    split: SplitSpec = "train",
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    observation: ObservationMode = "box",
    timeframes: Sequence[str] | Mapping[str, int] | None = None,
    include_dt: bool = False,
) -> Market:
    """Prepare one or more datasets (:func:`tradezoo.data.prepare.prepare_loaded`) and lay
    them out as a :class:`Market`.

    Args:
        data: a bundled dataset name, a CSV/Parquet path or a bars frame, or a list of them
            (every episode then samples one). Everything goes through
            :func:`tradezoo.data.datasets.load_bars` (validation).
        features: precomputed features per dataset (box observation only): a frame indexed
            by a consecutive run of the bars' timestamps; ``None`` computes them with
            ``feature_spec``.
        feature_spec: :class:`FeatureSpec` (or its dict); default ``FeatureSpec()``.
        scaler: a fitted :class:`FeatureScaler` applied to the base features of every dataset,
            or a mapping timeframe -> scaler; missing ones are fitted on each dataset's train
            split.
        window: base-timeframe window, >= 1.
        split: ``"train"``, ``"val"``, ``"test"`` or ``(start, end)`` timestamps (inclusive;
            ``None`` for an open end).
        split_fractions: ``(train, val, test)`` fractions for :func:`time_splits`.
        observation: ``"box"`` or ``"dict"``.
        timeframes: dict observation timeframes, a list (each with ``window`` bars) or a
            mapping timeframe -> window; default the base interval only.
        include_dt: observations carry each window's elapsed seconds (module docstring).

    Raises:
        ValueError, TypeError: a bad argument (the message names it and the rule).
        tradezoo.data.DataError: bars that fail validation, non-finite features.
    """
    window = check_int("window", window, 1)
    if not isinstance(include_dt, bool | np.bool_):
        raise TypeError(f"include_dt must be True or False, got {include_dt!r}")
    if observation not in ("box", "dict"):
        raise ValueError(f"observation must be 'box' or 'dict', got {observation!r}")
    fractions = check_split_fractions(split_fractions)
    sources: list[DataSource] = (
        list(data) if isinstance(data, list | tuple) else [data]  # type: ignore[arg-type]
    )
    if not sources:
        raise ValueError("data must name at least one dataset")
    if features is None:
        feature_list: list[pd.DataFrame | None] = [None] * len(sources)
    elif isinstance(features, pd.DataFrame):
        feature_list = [features]
    else:
        feature_list = list(features)
    if len(feature_list) != len(sources):
        raise ValueError(
            f"features: got {len(feature_list)} frame(s) for {len(sources)} dataset(s)"
        )
    if observation == "dict" and any(f is not None for f in feature_list):
        raise ValueError(
            "features= (precomputed) is supported for observation='box' only; "
            "dict observations compute every timeframe with feature_spec"
        )
    spec = FeatureSpec.coerce(feature_spec)
    if scaler is not None and not isinstance(scaler, FeatureScaler | Mapping):
        raise TypeError(
            f"scaler must be a FeatureScaler, a mapping timeframe -> scaler, or "
            f"None, got {type(scaler).__name__}"
        )

    loaded = [load_source(s, f"data[{i}]") for i, s in enumerate(sources)]
    names = [dataset_name(s, b, f"data{i}")
             for i, (s, b) in enumerate(zip(sources, loaded, strict=True))]
    bases = [interval_of(b, n) for b, n in zip(loaded, names, strict=True)]
    tf_list = check_timeframes(timeframes, window, bases, names) if observation == "dict" else []
    zero_funding = (
        spec.include_funding
        and any(f is None for f in feature_list)
        and any("funding_rate" in b.columns for b in loaded)
    )
    prepared: list[tuple[PreparedDataset, int, int]] = []
    for bars, name, user_features in zip(loaded, names, feature_list, strict=True):
        item = prepare_loaded(
            bars,
            name,
            window=window,
            feature_spec=spec,
            features=user_features,
            split_fractions=fractions,
            scaler=scaler,
            timeframes=[tf for tf, _ in tf_list],
            zero_funding=zero_funding,
        )
        first, last = decision_rows(item, split, [w for _, w in tf_list])
        prepared.append((item, first, last))
    columns = prepared[0][0].feature_names
    for item, _, _ in prepared[1:]:
        if item.feature_names != columns:
            missing = [c for c in columns if c not in item.feature_names]
            extra = [c for c in item.feature_names if c not in columns]
            raise ValueError(
                f"datasets of one env must have the same feature columns; {item.name!r} differs "
                f"from {prepared[0][0].name!r}: missing {missing}, extra {extra}"
            )
    return _assemble(prepared, window=window, observation=observation, tf_list=tf_list,
                     include_dt=bool(include_dt))


def _assemble(
    prepared: list[tuple[PreparedDataset, int, int]],
    *,
    window: int,
    observation: ObservationMode,
    tf_list: list[tuple[Interval, int]],
    include_dt: bool = False,
) -> Market:
    """The market's tables from prepared datasets and their (local) first and last decision
    rows, concatenated in order."""
    from tradezoo.backtest.metrics import periods_per_year_for

    n_features = len(prepared[0][0].feature_names)
    datasets: list[MarketDataset] = []
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("close", "open", "high", "low", "funding_rate", "range_frac", "notional",
                        *_STEP_COLUMNS)
    }
    feature_blocks: list[np.ndarray] = []
    dt_blocks: list[np.ndarray] = []
    tf_dt_blocks: dict[str, list[np.ndarray]] = {}
    tf_blocks: dict[str, list[np.ndarray]] = {}
    tf_last: dict[str, list[np.ndarray]] = {}
    tf_offsets: dict[str, int] = {}
    offset = 0
    for item, first, last in prepared:
        index = item.index
        bars = item.bars.iloc[item.bar_offset : item.bar_offset + len(index)]
        close = bars["close"].to_numpy(dtype=np.float64)
        open_ = bars["open"].to_numpy(dtype=np.float64)
        high = bars["high"].to_numpy(dtype=np.float64)
        low = bars["low"].to_numpy(dtype=np.float64)
        volume = bars["volume"].to_numpy(dtype=np.float64)
        has_funding = "funding_rate" in bars.columns
        funding = (
            np.nan_to_num(bars["funding_rate"].to_numpy(dtype=np.float64), nan=0.0)
            if has_funding
            else np.zeros(len(bars))
        )
        range_frac = (high - low) / close
        notional = np.maximum(volume * close, MIN_BAR_NOTIONAL)
        columns["close"].append(close)
        columns["open"].append(open_)
        columns["high"].append(high)
        columns["low"].append(low)
        columns["funding_rate"].append(funding)
        columns["range_frac"].append(range_frac)
        columns["notional"].append(notional)
        # Inputs of the step decided at each row; the last row repeats itself (never decided).
        columns["open_next"].append(np.append(open_[1:], open_[-1]))
        columns["close_next"].append(np.append(close[1:], close[-1]))
        columns["funding_next"].append(np.append(funding[1:], 0.0))
        columns["high_next"].append(np.append(high[1:], high[-1]))
        columns["low_next"].append(np.append(low[1:], low[-1]))
        feature_blocks.append(item.scaled.to_numpy(dtype=np.float32))
        dt_blocks.append(item.dt_seconds)
        for tf in item.timeframes:
            tf_name, tf_feats, last_closed = tf.interval.name, tf.features, tf.last_closed
            base_offset = tf_offsets.get(tf_name, 0)
            tf_blocks.setdefault(tf_name, []).append(tf_feats)
            tf_dt_blocks.setdefault(tf_name, []).append(tf.dt_seconds)
            tf_last.setdefault(tf_name, []).append(
                np.where(last_closed >= 0, last_closed + base_offset, -1)
            )
            tf_offsets[tf_name] = base_offset + len(tf_feats)
        try:
            ppy = float(periods_per_year_for(item.bars))
        except ValueError:
            ppy = 8760.0 if str(item.bars.attrs.get("source", "")).startswith("bybit") else 252.0
        datasets.append(
            MarketDataset(
                name=item.name,
                symbol=str(item.bars.attrs.get("symbol") or item.name),
                interval=item.interval.name,
                source=str(item.bars.attrs.get("source") or "frame"),
                bars=item.bars,
                index=index,
                offset=offset,
                length=len(index),
                bar_offset=item.bar_offset,
                first_decision=offset + first,
                last_decision=offset + last,
                splits=item.splits,
                scalers=item.scalers,
                periods_per_year=ppy,
                has_funding=has_funding,
            )
        )
        offset += len(index)

    flat = {k: np.concatenate(v) for k, v in columns.items()}
    step_table = np.ascontiguousarray(
        np.stack(
            [
                flat["close"],
                flat["open_next"],
                flat["close_next"],
                flat["funding_next"],
                flat["range_frac"],
                flat["notional"],
                flat["high_next"],
                flat["low_next"],
            ]
        )
    )
    features = np.ascontiguousarray(np.concatenate(feature_blocks), dtype=np.float32)
    box_table = None
    if observation == "box":
        box_table = np.zeros((len(features), n_features + N_ACCOUNT_COLUMNS), np.float32)
        box_table[:, :n_features] = features
        _read_only(box_table)
    timeframes: list[Timeframe] = []
    for tf, tf_window in tf_list:
        tf_feats = _read_only(
            np.ascontiguousarray(np.concatenate(tf_blocks[tf.name]), dtype=np.float32)
        )
        timeframes.append(
            Timeframe(
                name=tf.name,
                window=tf_window,
                features=tf_feats,
                last_closed=_read_only(np.concatenate(tf_last[tf.name]).astype(np.int64)),
                dt_seconds=_read_only(np.concatenate(tf_dt_blocks[tf.name])),
            )
        )
    lists = {
        k: flat[k].tolist()
        for k in ("close", "open", "high", "low", "funding_rate", "range_frac", "notional")
    }
    return Market(
        datasets=tuple(datasets),
        feature_names=prepared[0][0].feature_names,
        window=window,
        observation=observation,
        timeframes=tuple(timeframes),
        close=_read_only(flat["close"]),
        open=_read_only(flat["open"]),
        funding_rate=_read_only(flat["funding_rate"]),
        range_frac=_read_only(flat["range_frac"]),
        notional=_read_only(flat["notional"]),
        step_table=_read_only(step_table),
        step_rows=_read_only(np.ascontiguousarray(step_table.T)),
        lists=lists,
        features=_read_only(features),
        box_table=box_table,
        include_dt=include_dt,
        dt_seconds=_read_only(np.concatenate(dt_blocks)),
        window_offsets=_read_only(np.arange(-window + 1, 1, dtype=np.int64)),
    )


# -------------------------------------------------------------------------------- caching

_CACHE: dict[Any, Market] = {}
_CACHE_SIZE = 8


def _cache_key(data: Any, kwargs: dict[str, Any]) -> Any | None:
    """A hashable key for bundled-name markets (frames and files are not cached)."""
    sources = data if isinstance(data, list | tuple) else (data,)
    if not all(isinstance(s, str) and not Path(s).suffix for s in sources):
        return None
    if kwargs.get("features") is not None or kwargs.get("scaler") is not None:
        return None
    spec = kwargs.get("feature_spec")
    if isinstance(spec, Mapping):
        spec = FeatureSpec.from_dict(spec)
    timeframes = kwargs.get("timeframes")
    if isinstance(timeframes, Mapping):
        timeframes = tuple(timeframes.items())
    elif timeframes is not None and not isinstance(timeframes, str):
        timeframes = tuple(timeframes)
    split = kwargs.get("split", "train")
    try:
        key = (
            tuple(sources),
            spec,
            kwargs.get("window", 64),
            split if isinstance(split, str) else tuple(str(s) for s in split),
            tuple(kwargs.get("split_fractions", (0.7, 0.15, 0.15))),
            kwargs.get("observation", "box"),
            timeframes,
            bool(kwargs.get("include_dt", False)),
        )
        hash(key)
    except TypeError:
        return None
    return key


def get_market(data: DataSource | Sequence[DataSource], **kwargs: Any) -> Market:
    """:func:`prepare_market`, memoised for bundled dataset names (markets are read-only, so
    envs built with the same data settings share one; frames and paths are always rebuilt)."""
    key = _cache_key(data, kwargs)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    market = prepare_market(data, **kwargs)
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = market
    return market


def account_scale(window: int) -> float:
    """Divisor of ``ln(1 + bars in position)`` in the dict account vector: ``ln(1 + window)``,
    so a position held for one window reads 1."""
    return math.log1p(window)
