"""Chronological train/validation/test splits and walk-forward folds with an embargo.

Rows are **decision rows** (one per bar of the feature frame). A model deciding at row ``t``
with a window of ``lookback`` bars and a label over ``horizon`` bars touches

- input bars  ``t - lookback + 1 .. t`` (the window of features ending at ``t``), and
- label bars  ``t + 1 .. t + 1 + horizon`` (entry at open[t+1], exit at open[t+1+horizon],
  see :mod:`tradezoo.data.labels`),

so row ``t`` touches the bar interval ``[t - lookback + 1, t + 1 + horizon]``.

**What the embargo guarantees.** Let ``a`` be the last row of one part and ``b`` the first row of
the next, with ``embargo`` rows skipped between them: ``b = a + 1 + embargo``. Every bar
touched by the earlier part is ``<= a + 1 + horizon``; every bar touched by the later part is
``>= b - lookback + 1 = a + 2 + embargo - lookback``. The two sets are disjoint iff
``a + 1 + horizon < a + 2 + embargo - lookback``, i.e. iff

    embargo >= lookback + horizon.

That is the default and the minimum accepted here: no bar used by one part's inputs or labels
appears in the next part's inputs or labels, so neither a label of the earlier part nor an
input window of the later part leaks across the boundary (in either direction).

Two limits of that guarantee, stated so nobody relies on more:

- It is about bars of the *feature rows*. Features computed from a rolling window of raw bars
  (e.g. a 20-bar volatility) reach further back than ``lookback``; add that look-back to
  ``lookback`` if raw-bar disjointness is wanted too. A label with ``threshold="vol"`` also
  reads ``vol_window`` closes before ``t``; those are past bars, never future ones.
- Parts are separated from the *next* part only; a later part is not hidden from an earlier
  one's distant past (time only runs forward, so that is not leakage).

**Where the gap comes from.** ``time_splits`` places the boundaries at the cumulative
fractions of the data and cuts the embargo from the **end of the earlier part**, so the test
rows do not depend on ``lookback`` or ``horizon``: models with different windows are scored on
the same rows. ``walk_forward`` does the same for each fold.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from tradezoo.data.checks import check_int

PartName = Literal["train", "val", "test"]
PART_NAMES: tuple[PartName, PartName, PartName] = ("train", "val", "test")

IndexLike = int | pd.Index | pd.DataFrame | pd.Series


def _resolve_index(index_or_length: object) -> tuple[int, pd.Index | None]:
    """``(n_rows, index or None)`` from a length, an Index, or a frame/series (its index)."""
    if isinstance(index_or_length, pd.DataFrame | pd.Series):
        index_or_length = index_or_length.index
    if isinstance(index_or_length, pd.Index):
        return len(index_or_length), index_or_length
    if isinstance(index_or_length, bool) or not isinstance(index_or_length, numbers.Integral):
        raise TypeError(
            "index_or_length must be a number of rows (int >= 0), a pandas Index, or a "
            f"DataFrame/Series whose index is used; got {type(index_or_length).__name__}"
        )
    if int(index_or_length) < 0:
        raise ValueError(f"index_or_length must be >= 0, got {index_or_length}")
    return int(index_or_length), None


def _resolve_embargo(embargo: object, lookback: int, horizon: int) -> int:
    minimum = lookback + horizon
    if embargo is None:
        return minimum
    embargo = check_int("embargo", embargo, 0)
    if embargo < minimum:
        raise ValueError(
            f"embargo must be >= lookback + horizon = {lookback} + {horizon} = {minimum} bars "
            f"(fewer lets the last rows' labels share bars with the next part's input "
            f"windows); got embargo={embargo}"
        )
    return embargo


def _as_positions(name: str, values: object) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        array = np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"Splits.{name} must be a 1-D array of integer row positions")
    array = np.array(array, dtype=np.int64)  # an owned copy that nobody else can write
    if array.size > 1 and not (np.diff(array) > 0).all():
        raise ValueError(f"Splits.{name} must be strictly increasing row positions")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Splits:
    """Row positions of the train, validation and test parts (chronological, disjoint).

    Attributes:
        train, val, test: read-only ``np.ndarray[int64]`` of row positions (``iloc``), in
            increasing order; ``val`` or ``test`` may be empty when not requested.
        embargo: rows skipped between consecutive non-empty parts (>= lookback + horizon,
            see the module docstring for what that guarantees).
        lookback: input window length (bars) the embargo was derived for.
        horizon: label horizon (bars) the embargo was derived for.
        n_rows: number of rows of the data that was split.
        index: the pandas Index the positions refer to, when one was given.
        fold: fold number for :func:`walk_forward`, else ``None``.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    embargo: int
    lookback: int = 1
    horizon: int = 1
    n_rows: int = 0
    index: pd.Index | None = field(default=None, repr=False)
    fold: int | None = None

    def __post_init__(self) -> None:
        for name in PART_NAMES:
            object.__setattr__(self, name, _as_positions(name, getattr(self, name)))
        if self.index is not None and len(self.index) != self.n_rows:
            raise ValueError(f"Splits.index has {len(self.index)} rows but n_rows is {self.n_rows}")
        for name in PART_NAMES:
            part = getattr(self, name)
            if part.size and (part[0] < 0 or part[-1] >= self.n_rows):
                raise ValueError(f"Splits.{name} has positions outside [0, {self.n_rows})")

    def part(self, name: PartName) -> np.ndarray:
        """Row positions of part ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in PART_NAMES:
            raise ValueError(f"part must be one of {PART_NAMES}, got {name!r}")
        return getattr(self, name)

    @property
    def parts(self) -> dict[PartName, np.ndarray]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {name: self.part(name) for name in PART_NAMES}

    def index_of(self, name: PartName) -> pd.Index:
        """The index labels (timestamps for a DatetimeIndex) of part ``name``'s rows.

        Raises:
            ValueError: the splits were built from a length, not from an index.
        """
        positions = self.part(name)
        if self.index is None:
            raise ValueError(
                "these splits were built from a length; pass the DatetimeIndex (or the frame) "
                "to time_splits/walk_forward to get timestamps"
            )
        return self.index[positions]

    @property
    def timestamps(self) -> dict[PartName, pd.Index]:
        """``{part: index labels of its rows}`` (see :meth:`index_of`)."""
        return {name: self.index_of(name) for name in PART_NAMES}

    def bars_touched(self, name: PartName) -> tuple[int, int] | None:
        """Inclusive ``(first, last)`` bar positions used by the part's inputs and labels.

        Row ``t`` uses bars ``t - lookback + 1 .. t + 1 + horizon``; ``None`` for an empty part.
        Bars before 0 or past the data are clipped (they do not exist).
        """
        positions = self.part(name)
        if positions.size == 0:
            return None
        first = max(int(positions[0]) - self.lookback + 1, 0)
        last = min(int(positions[-1]) + 1 + self.horizon, max(self.n_rows - 1, 0))
        return first, last

    def summary(self) -> pd.DataFrame:
        """One row per part: ``rows``, ``first``/``last`` position and, with an index, the
        ``start``/``end`` labels (timestamps)."""
        records = []
        for name in PART_NAMES:
            positions = self.part(name)
            record: dict[str, object] = {
                "part": name,
                "rows": int(positions.size),
                "first": int(positions[0]) if positions.size else None,
                "last": int(positions[-1]) if positions.size else None,
            }
            if self.index is not None:
                record["start"] = self.index[positions[0]] if positions.size else None
                record["end"] = self.index[positions[-1]] if positions.size else None
            records.append(record)
        return pd.DataFrame.from_records(records).set_index("part")

    def __str__(self) -> str:
        title = "Splits" if self.fold is None else f"Splits (fold {self.fold})"
        lines = [
            f"{title}: {self.n_rows} rows, embargo {self.embargo} bars "
            f"(lookback {self.lookback} + horizon {self.horizon} = "
            f"{self.lookback + self.horizon} minimum)"
        ]
        for name in PART_NAMES:
            positions = self.part(name)
            if positions.size == 0:
                lines.append(f"  {name:<5}      0 rows")
                continue
            span = f"[{positions[0]}, {positions[-1]}]"
            if self.index is not None:
                span += f"  {self.index[positions[0]]} -> {self.index[positions[-1]]}"
            lines.append(f"  {name:<5} {positions.size:>6} rows  {span}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={self.part(name).size}" for name in PART_NAMES)
        fold = "" if self.fold is None else f", fold={self.fold}"
        return f"Splits({sizes}, embargo={self.embargo}, n_rows={self.n_rows}{fold})"


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a fraction in [0, 1], got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return number


def time_splits(
    index_or_length: IndexLike,
    *,
    train: float = 0.7,
    val: float = 0.15,
    test: float = 0.15,
    lookback: int = 1,
    horizon: int = 1,
    embargo: int | None = None,
) -> Splits:
    """Split rows chronologically into train, validation and test with an embargo.

    Part ``k`` nominally covers rows ``[round(c[k-1] * n), round(c[k] * n))`` where ``c`` are
    the cumulative fractions; the last ``embargo`` rows of a part are dropped when a non-empty
    part follows it (so the test rows do not move with ``lookback``/``horizon``). When the
    fractions sum to less than 1, the rows after the test part are left unused.

    Args:
        index_or_length: number of rows, a pandas Index (a DatetimeIndex gives timestamps),
            or a DataFrame/Series whose index is used.
        train, val, test: fractions in [0, 1] summing to <= 1; ``train`` must be > 0.
        lookback: input window length in bars, >= 1.
        horizon: label horizon in bars, >= 1.
        embargo: rows skipped between parts; default and minimum ``lookback + horizon``.

    Returns:
        :class:`Splits`.

    Raises:
        TypeError, ValueError: a bad argument, fractions summing to more than 1, or a part
            that was asked for (non-zero fraction) but gets no rows.
    """
    n_rows, index = _resolve_index(index_or_length)
    lookback = check_int("lookback", lookback, 1)
    horizon = check_int("horizon", horizon, 1)
    embargo = _resolve_embargo(embargo, lookback, horizon)
    fractions = {
        "train": _check_fraction("train", train),
        "val": _check_fraction("val", val),
        "test": _check_fraction("test", test),
    }
    total = sum(fractions.values())
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"train + val + test must be <= 1, got {train} + {val} + {test} = {total:.6g}"
        )
    if fractions["train"] == 0:
        raise ValueError("train must be > 0: there is nothing to fit on otherwise")
    cumulative = np.cumsum([fractions[name] for name in PART_NAMES])
    bounds = [0, *(min(round(c * n_rows), n_rows) for c in cumulative)]
    spans = {name: [bounds[k], bounds[k + 1]] for k, name in enumerate(PART_NAMES)}
    requested = [name for name in PART_NAMES if fractions[name] > 0]
    for earlier in requested[:-1]:
        spans[earlier][1] -= embargo  # the gap comes out of the earlier part
    for k, name in enumerate(PART_NAMES):
        start, stop = spans[name]
        if fractions[name] > 0 and stop <= start:
            nominal = bounds[k + 1] - bounds[k]
            cut = f" minus the embargo of {embargo}" if name != requested[-1] else ""
            raise ValueError(
                f"split too small: part {name!r} gets no rows ({fractions[name]:g} of "
                f"{n_rows} rows = {nominal} rows{cut}); use more data, a larger fraction or "
                "a shorter lookback/horizon/embargo"
            )
    positions = {
        name: np.arange(max(start, 0), max(stop, 0), dtype=np.int64)
        for name, (start, stop) in spans.items()
    }
    return Splits(
        **positions,
        embargo=embargo,
        lookback=lookback,
        horizon=horizon,
        n_rows=n_rows,
        index=index,
    )


def walk_forward(
    index_or_length: IndexLike,
    *,
    n_folds: int,
    test_size: int,
    val_size: int = 0,
    train_size: int | None = None,
    lookback: int = 1,
    horizon: int = 1,
    embargo: int | None = None,
    step: int | None = None,
) -> list[Splits]:
    """Walk-forward folds: train (expanding or rolling), optional validation, then test.

    Test windows of ``test_size`` rows start ``step`` rows apart (default ``step =
    test_size``: consecutive, tiling the end of the data); the last one ends at the last row.
    Within each fold the parts are laid out backwards from the test window::

        [train_start, train_end) embargo [val_start, val_end) embargo [test_start, test_end)

    with the validation part and its embargo left out when ``val_size == 0``. The training
    window starts at row 0 (expanding) when ``train_size`` is None, else it holds the
    ``train_size`` rows before the gap (rolling).

    Args:
        index_or_length: number of rows, a pandas Index, or a DataFrame/Series.
        n_folds: number of folds, >= 1.
        test_size: rows per test window, >= 1.
        val_size: rows of validation per fold, >= 0.
        train_size: rows of training per fold (rolling), or None (expanding from row 0).
        lookback, horizon, embargo: as for :func:`time_splits`.
        step: rows between the starts of consecutive test windows, >= test_size so test
            windows never overlap; default ``test_size``.

    Returns:
        ``n_folds`` :class:`Splits` in chronological order (``fold`` = 0, 1, ...).

    Raises:
        TypeError, ValueError: a bad argument, or too few rows for the requested folds (the
            message gives the number needed).
    """
    n_rows, index = _resolve_index(index_or_length)
    n_folds = check_int("n_folds", n_folds, 1)
    test_size = check_int("test_size", test_size, 1)
    val_size = check_int("val_size", val_size, 0)
    if train_size is not None:
        train_size = check_int("train_size", train_size, 1)
    lookback = check_int("lookback", lookback, 1)
    horizon = check_int("horizon", horizon, 1)
    embargo = _resolve_embargo(embargo, lookback, horizon)
    if step is None:
        step = test_size
    else:
        step = check_int("step", step, 1)
        if step < test_size:
            raise ValueError(
                f"step must be >= test_size = {test_size} so test windows do not overlap; "
                f"got step={step}"
            )
    val_block = val_size + embargo if val_size else 0
    first_fold_train = train_size if train_size is not None else 1
    needed = first_fold_train + embargo + val_block + test_size + (n_folds - 1) * step
    if n_rows < needed:
        raise ValueError(
            f"too few rows for walk_forward: {n_folds} folds of test_size={test_size}, "
            f"step={step}, val_size={val_size}, train_size={train_size} and embargo={embargo} "
            f"need at least {needed} rows, got {n_rows}"
        )
    folds = []
    for fold in range(n_folds):
        test_stop = n_rows - (n_folds - 1 - fold) * step
        test_start = test_stop - test_size
        val_stop = test_start - embargo if val_size else test_start
        val_start = val_stop - val_size
        train_stop = val_start - embargo if val_size else test_start - embargo
        train_start = 0 if train_size is None else train_stop - train_size
        folds.append(
            Splits(
                train=np.arange(train_start, train_stop, dtype=np.int64),
                val=np.arange(val_start, val_stop, dtype=np.int64),
                test=np.arange(test_start, test_stop, dtype=np.int64),
                embargo=embargo,
                lookback=lookback,
                horizon=horizon,
                n_rows=n_rows,
                index=index,
                fold=fold,
            )
        )
    return folds
