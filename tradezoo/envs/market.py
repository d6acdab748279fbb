"""One or more datasets prepared once as aligned numpy arrays, shared by every tradezoo env.

:class:`Market` is the part of an environment that does not change between episodes: the
validated bars of each dataset, their causal features scaled with a :class:`FeatureScaler`
fitted on the **train split of that dataset only**, the decision rows of the selected split,
and the price columns :func:`~tradezoo.backtest.execution.execute_step` reads. The single env
(:class:`~tradezoo.envs.trading_env.TradingEnv`, Python floats) and the batched envs
(:class:`~tradezoo.envs.vector_env.TradingVectorEnv` and the SB3 ``VecEnv``, arrays ``[N]``)
read the same arrays and build observations with the same :class:`Market` methods.

Rows. Every dataset contributes its feature rows (bars after the feature warm-up) to one
concatenated table of ``R`` rows; a dataset's rows are ``offset .. offset + length - 1`` and
"row" below means a global row of that table. A decision at row ``t`` sees features of rows
``<= t`` only (data known at the close of bar ``t``); its order fills at ``open[t+1]`` (or
``close[t]`` with ``fill="close"``) and is marked at ``close[t+1]`` (docs/design.md, "Time and
execution").

Splits. Each dataset is split by :func:`~tradezoo.data.splits.time_splits` on its feature rows
with ``lookback=window`` and ``horizon=1`` (one bar to fill and mark), so the embargo of
``window + 1`` rows keeps every part's inputs and fill bars apart from the next part's. The rows
of the selected part (or of an explicit ``(start, end)`` range of timestamps, inclusive) are the
decision rows, further limited so that a full window exists before the first one
(``t >= window - 1``; for ``observation="dict"`` also a full window of closed bars of every
timeframe) and a bar exists after the last one (``t <= length - 2``). An input window may reach
back before the first decision row of a part (into the embargo gap): those bars are in the
past, which the embargo was sized for.

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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from gymnasium import spaces

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import MIN_BAR_NOTIONAL, ExecutionRates, execution_rates
from tradezoo.data.checks import check_int
from tradezoo.data.errors import DataError
from tradezoo.data.features import FeatureScaler, FeatureSpec, compute_features
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.data.splits import PART_NAMES, Splits, time_splits

ObservationMode = Literal["box", "dict"]
DataSource = str | Path | pd.DataFrame
SplitSpec = str | tuple[Any, Any]

N_ACCOUNT_COLUMNS = 2
"""Account columns appended to every row of a box observation: exposure, equity log-return."""
N_ACCOUNT_FEATURES = 4
"""Length of the dict observation's ``"account"`` vector."""
ACCOUNT_KEY = "account"

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
        offsets: ``arange(window)``, the row offsets of a window.
    """

    name: str
    window: int
    features: np.ndarray
    last_closed: np.ndarray
    offsets: np.ndarray = field(repr=False)


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

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

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
            return spaces.Box(low=low, high=-low, dtype=np.float32)
        parts: dict[str, spaces.Space] = {
            tf.name: spaces.Box(
                -feature_bound, feature_bound, (tf.window, self.n_features), np.float32
            )
            for tf in self.timeframes
        }
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

    def dict_observation(self, row: int, account: np.ndarray) -> dict[str, np.ndarray]:
        """Dict observation of one account at decision ``row``; ``account`` float32 ``[4]``."""
        out: dict[str, np.ndarray] = {}
        for tf in self.timeframes:
            last = int(tf.last_closed[row])
            out[tf.name] = tf.features[last - tf.window + 1 : last + 1].copy()
        out[ACCOUNT_KEY] = account
        return out

    def dict_observations(self, rows: np.ndarray, account: np.ndarray) -> dict[str, np.ndarray]:
        """Dict observations of accounts at decision ``rows`` [N]; ``account`` ``[N, 4]``."""
        out: dict[str, np.ndarray] = {}
        for tf in self.timeframes:
            # One take() of [N, window] row numbers from the contiguous table (take() on the
            # strided window view would first copy the whole view).
            first = tf.last_closed.take(rows) - (tf.window - 1)
            out[tf.name] = tf.features.take(first[:, None] + tf.offsets, axis=0)
        out[ACCOUNT_KEY] = account
        return out

    def dataset_of_row(self, row: int) -> MarketDataset:
        for dataset in self.datasets:
            if dataset.offset <= row < dataset.offset + dataset.length:
                return dataset
        raise IndexError(f"row {row} is outside the market's {len(self.close)} rows")


# ----------------------------------------------------------------------------------- build


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


def _load(source: DataSource, position: int) -> pd.DataFrame:
    from tradezoo.data.datasets import load_bars

    if not isinstance(source, str | Path | pd.DataFrame):
        raise TypeError(
            f"data[{position}] must be a bundled dataset name, a CSV/Parquet path or a bars "
            f"DataFrame, got {type(source).__name__}"
        )
    bars, _report = load_bars(source)
    return bars


def _interval_of(bars: pd.DataFrame, name: str) -> Interval:
    from tradezoo.data.intervals import infer_interval

    raw = bars.attrs.get("interval")
    interval = parse_interval(str(raw)) if raw else infer_interval(bars.index)
    if interval is None:
        raise DataError(
            f"dataset {name!r}: cannot tell the bar interval; set "
            "bars.attrs['interval'] (e.g. '1h')"
        )
    return interval


def _parse_timeframes(
    timeframes: Sequence[str] | Mapping[str, int] | None,
    window: int,
    bases: list[Interval],
    names: list[str],
) -> list[tuple[Interval, int]]:
    """Validate dict-observation timeframes against every dataset's base interval."""
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


@dataclass
class _Prepared:
    """Per-dataset intermediate results before concatenation."""

    name: str
    bars: pd.DataFrame
    interval: Interval
    index: pd.DatetimeIndex
    bar_offset: int
    features: np.ndarray
    columns: tuple[str, ...]
    splits: Splits
    first: int
    last: int
    scalers: dict[str, FeatureScaler]
    timeframes: list[tuple[str, int, np.ndarray, np.ndarray]]  # name, window, feats, last


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


def _fit_or_use(
    scaler: FeatureScaler | None, frame: pd.DataFrame, fit_rows: int, name: str, tf: str
) -> tuple[FeatureScaler, np.ndarray]:
    if scaler is None:
        if fit_rows < 1:
            raise ValueError(
                f"dataset {name!r}: no {tf} feature rows fall in the train split to fit the "
                "scaler on; use more data or a larger train fraction"
            )
        scaler = FeatureScaler().fit(frame.iloc[:fit_rows])
    elif not isinstance(scaler, FeatureScaler):
        raise TypeError(f"scaler must be a FeatureScaler, got {type(scaler).__name__}")
    scaled = scaler.transform(frame.to_numpy(dtype=np.float64))
    return scaler, np.ascontiguousarray(scaled, dtype=np.float32)


def _prepare_one(
    bars: pd.DataFrame,
    name: str,
    interval: Interval,
    user_features: pd.DataFrame | None,
    *,
    spec: FeatureSpec,
    scalers: Mapping[str, FeatureScaler],
    window: int,
    split: SplitSpec,
    split_fractions: tuple[float, float, float],
    observation: ObservationMode,
    timeframes: list[tuple[Interval, int]] | None,
    add_zero_funding: bool,
) -> _Prepared:
    feature_bars = bars
    if add_zero_funding and "funding_rate" not in bars.columns:
        # An instrument without funding (equities) pays none: 0 is the truth, and it keeps the
        # feature columns of every dataset of the env identical.
        feature_bars = bars.assign(funding_rate=0.0)
        feature_bars.attrs = dict(bars.attrs)
    if user_features is not None:
        frame, bar_offset = _aligned_features(bars, user_features, name)
    else:
        frame = compute_features(feature_bars, spec).astype(np.float64)
        bar_offset = len(bars) - len(frame)
    index = pd.DatetimeIndex(frame.index)
    length = len(index)
    if length < 2:
        raise ValueError(
            f"dataset {name!r}: {length} feature row(s); at least 2 are needed "
            "(a decision and a bar to fill on)"
        )
    try:
        splits = env_time_splits(index, window, split_fractions)
    except ValueError as exc:
        raise ValueError(
            f"dataset {name!r}: cannot split its {length} feature rows with window={window} "
            f"(the parts are separated by an embargo of window + 1 = {window + 1} rows): {exc}"
        ) from None
    first, last = _resolve_rows(split, splits, index, name)
    n_split = last - first + 1
    if window > n_split:
        raise ValueError(
            f"window={window} bars is longer than the {split!r} split of dataset {name!r} "
            f"({n_split} rows); use a shorter window, a larger split or more data"
        )
    train_rows = splits.train
    fit_rows = int(train_rows[-1]) + 1 if train_rows.size else 0
    base_scaler, scaled = _fit_or_use(
        scalers.get(interval.name), frame, fit_rows, name, interval.name
    )
    used_scalers = {interval.name: base_scaler}
    first = max(first, window - 1)
    last = min(last, length - 2)
    tf_parts: list[tuple[str, int, np.ndarray, np.ndarray]] = []
    if observation == "dict":
        assert timeframes is not None
        close_time = index.as_unit("ns").asi8 + pd.Timedelta(minutes=interval.minutes or 0).value
        train_close = close_time[fit_rows - 1] if fit_rows else None
        for tf, tf_window in timeframes:
            if tf.minutes == interval.minutes:
                tf_feats = scaled
                last_closed = np.arange(length, dtype=np.int64)
            else:
                tf_bars = resample_bars(feature_bars, tf)
                try:
                    tf_frame = compute_features(tf_bars, spec).astype(np.float64)
                except DataError as exc:
                    raise DataError(f"dataset {name!r}, timeframe {tf.name}: {exc}") from None
                bin_end = (
                    pd.DatetimeIndex(tf_frame.index).as_unit("ns").asi8
                    + pd.Timedelta(minutes=tf.minutes or 0).value
                )
                tf_fit = (
                    int(np.searchsorted(bin_end, train_close, side="right"))
                    if train_close is not None
                    else 0
                )
                tf_scaler, tf_feats = _fit_or_use(
                    scalers.get(tf.name), tf_frame, tf_fit, name, tf.name
                )
                used_scalers[tf.name] = tf_scaler
                last_closed = (
                    np.searchsorted(bin_end, close_time, side="right").astype(np.int64) - 1
                )
            # First decision with a full window of closed bars of this timeframe.
            first = max(first, int(np.searchsorted(last_closed, tf_window - 1, side="left")))
            tf_parts.append((tf.name, tf_window, tf_feats, last_closed))
    if last < first:
        raise ValueError(
            f"dataset {name!r}: the {split!r} split has no decision rows once the window "
            f"({window}) and the bar to fill on are accounted for; use more data or a shorter "
            "window"
        )
    return _Prepared(
        name=name,
        bars=bars,
        interval=interval,
        index=index,
        bar_offset=bar_offset,
        features=scaled,
        columns=tuple(frame.columns),
        splits=splits,
        first=first,
        last=last,
        scalers=used_scalers,
        timeframes=tf_parts,
    )


def env_time_splits(
    index: pd.Index, window: int, split_fractions: tuple[float, float, float]
) -> Splits:
    """The env's train/val/test parts of a feature index: chronological, embargo of
    ``window + 1`` rows (lookback ``window``, horizon 1: a decision fills on the next bar).
    The feature scaler is fitted on rows ``0 .. splits.train[-1]``; the trainers' data
    preparation calls this too, so both fit on exactly the same rows."""
    return time_splits(
        index,
        train=split_fractions[0],
        val=split_fractions[1],
        test=split_fractions[2],
        lookback=window,
        horizon=1,
    )


def check_split_fractions(value: object) -> tuple[float, float, float]:
    """``(train, val, test)`` as three floats (their ranges and sum are checked by
    :func:`~tradezoo.data.splits.time_splits`)."""
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3):
        raise ValueError(f"split_fractions must be (train, val, test), got {value!r}")
    if any(isinstance(item, bool) or not isinstance(item, numbers.Real) for item in value):
        raise ValueError(f"split_fractions must be three numbers in [0, 1], got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


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
) -> Market:
    """Load, validate, featurise, scale and split one or more datasets into a :class:`Market`.

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

    Raises:
        ValueError, TypeError: a bad argument (the message names it and the rule).
        tradezoo.data.DataError: bars that fail validation, non-finite features.
    """
    window = check_int("window", window, 1)
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
    if scaler is None:
        scaler_map: dict[str, FeatureScaler] = {}
    elif isinstance(scaler, FeatureScaler):
        scaler_map = {"__base__": scaler}
    elif isinstance(scaler, Mapping):
        scaler_map = {parse_interval(str(k)).name: v for k, v in scaler.items()}
    else:
        raise TypeError(
            f"scaler must be a FeatureScaler, a mapping timeframe -> scaler, or "
            f"None, got {type(scaler).__name__}"
        )

    loaded = [_load(s, i) for i, s in enumerate(sources)]
    names = [dataset_name(s, b, f"data{i}")
             for i, (s, b) in enumerate(zip(sources, loaded, strict=True))]
    bases = [_interval_of(b, n) for b, n in zip(loaded, names, strict=True)]
    tf_list = _parse_timeframes(timeframes, window, bases, names) if observation == "dict" else None
    add_zero_funding = (
        spec.include_funding
        and any(f is None for f in feature_list)
        and any("funding_rate" in b.columns for b in loaded)
    )
    prepared: list[_Prepared] = []
    for i, (bars, name, base) in enumerate(zip(loaded, names, bases, strict=True)):
        per_dataset = dict(scaler_map)
        if "__base__" in per_dataset:
            per_dataset[base.name] = per_dataset.pop("__base__")
        prepared.append(
            _prepare_one(
                bars,
                name,
                base,
                feature_list[i],
                spec=spec,
                scalers=per_dataset,
                window=window,
                split=split,
                split_fractions=fractions,
                observation=observation,
                timeframes=tf_list,
                add_zero_funding=add_zero_funding,
            )
        )
    columns = prepared[0].columns
    for item in prepared[1:]:
        if item.columns != columns:
            missing = [c for c in columns if c not in item.columns]
            extra = [c for c in item.columns if c not in columns]
            raise ValueError(
                f"datasets of one env must have the same feature columns; {item.name!r} differs "
                f"from {prepared[0].name!r}: missing {missing}, extra {extra}"
            )
    return _assemble(prepared, window=window, observation=observation, tf_list=tf_list)


def _assemble(
    prepared: list[_Prepared],
    *,
    window: int,
    observation: ObservationMode,
    tf_list: list[tuple[Interval, int]] | None,
) -> Market:
    from tradezoo.backtest.metrics import periods_per_year_for

    n_features = len(prepared[0].columns)
    datasets: list[MarketDataset] = []
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("close", "open", "high", "low", "funding_rate", "range_frac", "notional",
                        *_STEP_COLUMNS)
    }
    feature_blocks: list[np.ndarray] = []
    tf_blocks: dict[str, list[np.ndarray]] = {}
    tf_last: dict[str, list[np.ndarray]] = {}
    tf_offsets: dict[str, int] = {}
    offset = 0
    for item in prepared:
        bars = item.bars.iloc[item.bar_offset : item.bar_offset + len(item.index)]
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
        feature_blocks.append(item.features)
        for tf_name, _tf_window, tf_feats, last_closed in item.timeframes:
            base_offset = tf_offsets.get(tf_name, 0)
            tf_blocks.setdefault(tf_name, []).append(tf_feats)
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
                index=item.index,
                offset=offset,
                length=len(item.index),
                bar_offset=item.bar_offset,
                first_decision=offset + item.first,
                last_decision=offset + item.last,
                splits=item.splits,
                scalers=item.scalers,
                periods_per_year=ppy,
                has_funding=has_funding,
            )
        )
        offset += len(item.index)

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
    for tf, tf_window in tf_list or []:
        tf_feats = _read_only(
            np.ascontiguousarray(np.concatenate(tf_blocks[tf.name]), dtype=np.float32)
        )
        timeframes.append(
            Timeframe(
                name=tf.name,
                window=tf_window,
                features=tf_feats,
                last_closed=_read_only(np.concatenate(tf_last[tf.name]).astype(np.int64)),
                offsets=_read_only(np.arange(tf_window, dtype=np.int64)),
            )
        )
    lists = {
        k: flat[k].tolist()
        for k in ("close", "open", "high", "low", "funding_rate", "range_frac", "notional")
    }
    return Market(
        datasets=tuple(datasets),
        feature_names=prepared[0].columns,
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
    )


# --------------------------------------------------------------------------- cost models


def default_costs(bars: pd.DataFrame, name: str) -> CostModel:
    """The cost model for a dataset's ``attrs["source"]``: :meth:`CostModel.bybit_linear` for
    ``bybit*``, :meth:`CostModel.equities` for ``yahoo*``; anything else must be given."""
    return CostModel.for_source(bars.attrs.get("source"), what=f"dataset {name!r}: source")


def resolve_costs(
    market: Market, costs: CostModel | Sequence[CostModel | None] | None, fill: str
) -> tuple[tuple[CostModel, ...], tuple[ExecutionRates, ...]]:
    """One :class:`CostModel` and :class:`ExecutionRates` per dataset of ``market``.

    Args:
        costs: ``None`` (default by source), one model for every dataset, or one per dataset
            (``None`` entries take the default).
        fill: ``"next_open"`` or ``"close"``.
    """
    n = len(market.datasets)
    if costs is None or isinstance(costs, CostModel):
        given: list[CostModel | None] = [costs] * n
    elif isinstance(costs, Sequence) and not isinstance(costs, str):
        given = list(costs)
        if len(given) != n:
            raise ValueError(f"costs: got {len(given)} cost model(s) for {n} dataset(s)")
    else:
        raise TypeError(
            f"costs must be a CostModel, a list of them, or None, got {type(costs).__name__}"
        )
    models: list[CostModel] = []
    for dataset, model in zip(market.datasets, given, strict=True):
        if model is None:
            model = default_costs(dataset.bars, dataset.name)
        elif not isinstance(model, CostModel):
            raise TypeError(
                f"costs for dataset {dataset.name!r} must be a CostModel, got "
                f"{type(model).__name__}"
            )
        models.append(model)
    rates = tuple(
        execution_rates(model, fill=fill, periods_per_year=d.periods_per_year)  # type: ignore[arg-type]
        for model, d in zip(models, market.datasets, strict=True)
    )
    return tuple(models), rates


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
