"""Sliding windows over a feature matrix as a torch ``Dataset``, without copying the windows.

Item ``i`` of a :class:`WindowDataset` is the decision at row ``t = decision_rows[i]``:

    x  = features[t - L + 1 : t + 1]   # [L, F] float32, the L most recent feature rows
    dt = dt[t - L + 1 : t + 1]         # [L]    float32, seconds since the previous bar
    y  = labels[t]                     # []     int64, 0 sell / 1 hold / 2 buy

so the model sees rows ``<= t`` only (docs/design.md, no-look-ahead contract) and the label is the
one :func:`tradezoo.data.labels.make_labels` gives to the decision at ``t``.

The features live in **one** contiguous float32 tensor ``[T, F]`` (``torch.from_numpy``:
zero-copy when the input is already a float32 C-contiguous array); ``x`` and ``dt`` are
slices of it, i.e. views sharing its storage. Memory is ``O(T * F)``, not ``O(T * L * F)``:
all windows of 19k hourly bars x 27 features at ``L = 256`` would take ~530 MB, the matrix
2 MB. A ``DataLoader`` batch is the only copy (``torch.stack`` of ``B`` views).

This is the only module of :mod:`tradezoo.data` that imports torch; ``tradezoo.data`` loads it
lazily so ``import tradezoo.data`` stays torch-free.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

__all__ = ["WindowDataset"]

ArrayLike = np.ndarray | pd.Series | Sequence[float]

_FINITE_CHECK_ROWS = 2048  # rows per block when scanning for NaN/inf (bounds the bool mask)


def _tensor_from_array(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` that also accepts read-only arrays (pandas copy-on-write views).

    Torch warns because writing through the tensor would write into read-only memory; this
    module never writes to the tensor, so sharing the memory is safe and avoids a copy.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(array)


def _describe_row(position: int, index: pd.Index | None) -> str:
    return f"row {position}" + (f" ({index[position]})" if index is not None else "")


def _features_array(
    features: pd.DataFrame | np.ndarray,
) -> tuple[np.ndarray, pd.Index | None, tuple[str, ...] | None]:
    """``(float32 C-contiguous [T, F] array, index or None, column names or None)``."""
    if isinstance(features, pd.DataFrame):
        for column, dtype in features.dtypes.items():
            if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
                raise TypeError(
                    f"features: column {column!r} has non-numeric dtype {dtype}; "
                    "features must be numeric"
                )
        values = features.to_numpy(dtype=np.float32)
        index: pd.Index | None = features.index
        if isinstance(index, pd.DatetimeIndex) and not (
            index.is_monotonic_increasing and index.is_unique
        ):
            raise ValueError(
                "features: the DatetimeIndex must be strictly increasing (a window is a run of "
                "consecutive bars in time order)"
            )
        names: tuple[str, ...] | None = tuple(map(str, features.columns))
    elif isinstance(features, np.ndarray):
        if not (np.issubdtype(features.dtype, np.number) or features.dtype == np.bool_):
            raise TypeError(f"features: array dtype {features.dtype} is not numeric")
        values, index, names = features, None, None
    else:
        raise TypeError(
            f"features must be a DataFrame or a numpy array [T, F], got {type(features).__name__}"
        )
    if values.ndim != 2:
        raise ValueError(f"features must be two-dimensional [T, F], got shape {values.shape}")
    # No copy when already float32 and C-contiguous (the zero-copy path); else exactly one.
    return np.ascontiguousarray(values, dtype=np.float32), index, names


def _check_finite_features(
    values: np.ndarray, index: pd.Index | None, names: tuple[str, ...] | None
) -> None:
    # Block-wise so the temporary boolean mask stays small next to the matrix itself.
    for start in range(0, len(values), _FINITE_CHECK_ROWS):
        block = values[start : start + _FINITE_CHECK_ROWS]
        finite = np.isfinite(block)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            label = names[column] if names is not None else f"#{column}"
            raise ValueError(
                f"features: NaN or inf at {_describe_row(start + int(row), index)}, column "
                f"{label!r}; features must be finite (drop the warm-up rows, see "
                "compute_features)"
            )


def _labels_array(labels: ArrayLike | pd.DataFrame, n_rows: int, index: pd.Index | None,
                  target: str = "class") -> np.ndarray:
    """``[T]`` or ``[T, H]`` float64 labels, checked: classes 0, 1, 2 or NaN for
    ``target="class"``, finite numbers or NaN for ``"regression"``."""
    if isinstance(labels, pd.Series | pd.DataFrame) and index is not None and not (
            labels.index.equals(index)):
        raise ValueError(
            "labels: its index differs from the features index; build the dataset with "
            "WindowDataset.from_frames(features, labels, ...) to align them by timestamp"
        )
    try:
        values = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"labels must be numeric (0, 1, 2 or NaN): {exc}") from exc
    if values.ndim not in ((1, 2) if target == "class" else (1,)):
        shapes = "[T] or [T, H]" if target == "class" else "[T]"
        raise ValueError(f"labels must be {shapes}, got shape {values.shape}")
    if len(values) != n_rows:
        raise ValueError(
            f"labels have {len(values)} rows but features have {n_rows}; they must be aligned "
            "row by row (or use WindowDataset.from_frames to align by index)"
        )
    if np.isinf(values).any():
        raise ValueError("labels must be finite or NaN; found inf")
    if target == "regression":
        return values
    finite = np.isfinite(values)
    bad = finite & ~np.isin(values, (0.0, 1.0, 2.0))
    if bad.any():
        position = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"labels must be 0 (sell), 1 (hold), 2 (buy) or NaN; found "
            f"{values[bad][0]} at {_describe_row(position, index)}"
        )
    return values


def _dt_array(
    dt: ArrayLike | None,
    features: pd.DataFrame | np.ndarray,
    n_rows: int,
    index: pd.Index | None,
    source: str = "dt",
) -> np.ndarray:
    """Validated ``[T]`` float32 seconds since the previous bar (see ``WindowDataset``)."""
    if dt is None:
        if isinstance(features, pd.DataFrame) and "dt" in features.columns:
            dt, source = features["dt"], "the features' 'dt' column"
        else:
            return np.ones(n_rows, dtype=np.float32)
    values = np.ascontiguousarray(np.asarray(dt, dtype=np.float64)).astype(np.float32)
    if values.ndim != 1 or len(values) != n_rows:
        raise ValueError(
            f"{source} must be one value per feature row [{n_rows}], got shape {values.shape}"
        )
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source} must be finite seconds > 0 since the previous bar; found "
            f"{values[position]} at {_describe_row(position, index)} (a scaled 'dt' column is "
            "not seconds: pass dt=<unscaled features['dt']>)"
        )
    return values


def _allowed_rows(indices: object, n_rows: int) -> np.ndarray:
    """``[T]`` bool mask of the rows allowed as decision rows (all when ``indices`` is None)."""
    if indices is None:
        return np.ones(n_rows, dtype=np.bool_)
    positions = np.asarray(indices)
    if positions.ndim != 1 or not (
        np.issubdtype(positions.dtype, np.integer) or positions.size == 0
    ):
        raise TypeError(
            "indices must be a 1-D array of integer row positions (e.g. Splits.train), got "
            f"dtype {positions.dtype} and shape {positions.shape}"
        )
    positions = positions.astype(np.int64, copy=False)
    outside = (positions < 0) | (positions >= n_rows)
    if outside.any():
        raise ValueError(
            f"indices must be row positions in [0, {n_rows}); found {positions[outside][:3]}"
        )
    allowed = np.zeros(n_rows, dtype=np.bool_)
    allowed[positions] = True  # duplicates collapse; order does not matter
    return allowed


class WindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Windows of the last ``window`` feature rows ending at each labelled decision row.

    Args:
        features: ``[T, F]`` float32 DataFrame (e.g. ``compute_features`` output, scaled) or
            array; other numeric dtypes are converted (one copy). Must be finite.
        labels: ``[T]`` labels aligned row by row with ``features`` (0 sell, 1 hold, 2 buy,
            NaN = unlabelled, skipped); ``[T, H]`` for one class per horizon (a row with a
            NaN in any column is skipped); with ``target="regression"``, ``[T]`` finite
            numbers or NaN. A Series must carry the same index as ``features``;
            use :meth:`from_frames` to align by index instead.
        window: ``L``, the number of rows per window, >= 1 and <= T.
        dt: ``[T]`` seconds since the previous bar (finite, > 0). Default: the ``dt`` column
            of a features DataFrame if it has one (``compute_features`` writes it), else ones
            (regular sampling in units of one bar). If the features were scaled, their ``dt``
            column is no longer in seconds: pass the unscaled one here.
        indices: row positions allowed as decision rows (e.g. ``splits.train``); None = all.
            Order and duplicates do not matter: items follow row order, each row once. A
            window may reach back before the first allowed row: that is history the model
            may see (the embargo of ``time_splits`` covers it).
        target: ``"class"`` (labels are classes) or ``"regression"`` (real numbers).

    Valid decision rows ``t``: ``t >= L - 1`` (a full window), ``labels[t]`` finite, and
    ``t`` in ``indices`` when given. Items are ``(x [L, F] float32, dt [L] float32, y int64)``.

    Notes:
        When ``features`` is a float32 C-contiguous array, the dataset shares its memory
        (zero-copy); changing the array afterwards changes the items. The dataset never
        writes to it.

    Raises:
        TypeError, ValueError: window < 1 or longer than the data, a length mismatch between
            features, labels and dt, NaN/inf features, bad label values, bad ``indices``,
            or no valid decision row.
    """

    def __init__(
        self,
        features: pd.DataFrame | np.ndarray,
        labels: ArrayLike,
        *,
        window: int,
        dt: ArrayLike | None = None,
        indices: np.ndarray | Sequence[int] | None = None,
        target: Literal["class", "regression"] = "class",
    ) -> None:
        if target not in ("class", "regression"):
            raise ValueError(f"target must be 'class' or 'regression', got {target!r}")
        if isinstance(window, bool) or not isinstance(window, numbers.Integral):
            raise TypeError(f"window must be an integer >= 1, got {window!r}")
        window = int(window)
        if window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window}")
        values, index, names = _features_array(features)
        n_rows = len(values)
        if window > n_rows:
            raise ValueError(f"window={window} is longer than the data ({n_rows} feature rows)")
        if values.shape[1] == 0:
            raise ValueError("features have no columns")
        _check_finite_features(values, index, names)
        label_values = _labels_array(labels, n_rows, index, target)
        dt_values = _dt_array(dt, features, n_rows, index)

        # Boolean masks over the rows (1 byte per row) rather than index arrays, so the
        # bookkeeping stays small next to the [T, F] matrix.
        allowed = _allowed_rows(indices, n_rows)
        n_allowed = int(allowed.sum())
        n_short = int(allowed[: window - 1].sum())
        allowed[: window - 1] = False  # rows without a full window
        labelled = np.isfinite(label_values)
        if labelled.ndim == 2:  # several horizons: a row needs every one of its labels
            labelled = labelled.all(axis=1)
        n_unlabelled = int((allowed & ~labelled).sum())
        allowed &= labelled
        valid = np.flatnonzero(allowed).astype(np.int64, copy=False)
        if valid.size == 0:
            raise ValueError(
                f"no valid decision rows: of {n_allowed} candidate rows, {n_short} lack a full "
                f"window of {window} rows (t < {window - 1}) and {n_unlabelled} more have NaN "
                "labels"
            )
        valid.setflags(write=False)

        self._window = window
        self._index = index
        self._feature_names = names
        self._decision_rows = valid
        self._features = _tensor_from_array(values)  # [T, F] float32, the only big buffer
        self._dt = torch.from_numpy(dt_values)  # [T] float32
        self._target = target
        self._labels = torch.from_numpy(  # [N] or [N, H] int64; [N] float32 for regression
            label_values[valid].astype(np.int64 if target == "class" else np.float32))

    @classmethod
    def from_frames(
        cls,
        features_df: pd.DataFrame,
        labels_series: pd.Series,
        *,
        window: int,
        indices: np.ndarray | Sequence[int] | None = None,
        dt_column: str | None = "dt",
        dt: pd.Series | np.ndarray | None = None,
    ) -> WindowDataset:
        """Build from a feature frame and a label series aligned by index (``reindex``).

        ``compute_features`` drops warm-up rows, so its index starts later than the bars'
        and ``make_labels``'s: labels are reindexed to ``features_df.index`` (timestamps the
        labels lack become NaN, i.e. unlabelled).

        Args:
            features_df: ``[T, F]`` feature frame.
            labels_series: labels indexed like the bars (unique index).
            window, indices: as for the constructor (``indices`` are positions in
                ``features_df``).
            dt_column: column of ``features_df`` holding seconds since the previous bar;
                if ``"dt"`` is absent, ones are used; ``None`` means ones.
            dt: explicit seconds since the previous bar, overriding ``dt_column``; a Series
                is reindexed to ``features_df.index`` (e.g. the unscaled features' ``dt``).

        Raises:
            TypeError: the inputs are not a DataFrame and a Series.
            ValueError: a duplicated label index, labels sharing no row with the features,
                a missing non-default ``dt_column``, or any constructor error.
        """
        if not isinstance(features_df, pd.DataFrame):
            raise TypeError(f"features_df must be a DataFrame, got {type(features_df).__name__}")
        if not isinstance(labels_series, pd.Series):
            raise TypeError(
                f"labels_series must be a pandas Series, got {type(labels_series).__name__}"
            )
        if not labels_series.index.is_unique:
            raise ValueError("labels_series: its index has duplicates; cannot align by index")
        if len(labels_series) and not labels_series.index.isin(features_df.index).any():
            raise ValueError(
                "labels_series shares no index value with features_df (check the time zone and "
                "that both come from the same bars)"
            )
        labels = labels_series.reindex(features_df.index)
        if dt is not None:
            dt_values: pd.Series | np.ndarray | None = (
                dt.reindex(features_df.index) if isinstance(dt, pd.Series) else dt
            )
        elif dt_column is None:
            dt_values = np.ones(len(features_df), dtype=np.float32)
        elif dt_column in features_df.columns:
            # Validated here so an error names the column the values came from.
            dt_values = _dt_array(
                features_df[dt_column],
                features_df,
                len(features_df),
                features_df.index,
                source=f"features_df[{dt_column!r}]",
            )
        elif dt_column == "dt":
            dt_values = np.ones(len(features_df), dtype=np.float32)
        else:
            raise ValueError(
                f"dt_column {dt_column!r} is not a column of features_df "
                f"(columns: {list(map(str, features_df.columns))})"
            )
        return cls(features_df, labels, window=window, dt=dt_values, indices=indices)

    # -- torch Dataset protocol ----------------------------------------------------------

    def __len__(self) -> int:
        return int(self._decision_rows.size)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x [L, F] float32, dt [L] float32, y [] int64)``; x and dt are views."""
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"WindowDataset index must be an integer, got {type(item).__name__}")
        i = int(item)
        n_items = len(self)
        if not -n_items <= i < n_items:
            raise IndexError(f"WindowDataset index {i} out of range for {n_items} items")
        if i < 0:
            i += n_items
        row = int(self._decision_rows[i])
        start = row - self._window + 1
        return self._features[start : row + 1], self._dt[start : row + 1], self._labels[i]

    # -- description ---------------------------------------------------------------------

    @property
    def window(self) -> int:
        """``L``, rows per window."""
        return self._window

    @property
    def n_features(self) -> int:
        """``F``, features per row."""
        return int(self._features.shape[1])

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """Column names when built from a DataFrame, else None."""
        return self._feature_names

    @property
    def features(self) -> torch.Tensor:
        """The base ``[T, F]`` float32 tensor every ``x`` is a view of (do not modify)."""
        return self._features

    @property
    def dt(self) -> torch.Tensor:
        """The ``[T]`` float32 seconds-since-previous-bar tensor every item's ``dt`` views."""
        return self._dt

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the items, in item order: ``[N]`` int64 classes, ``[N, H]`` int64 with
        one class per horizon, or ``[N]`` float32 with ``target="regression"``."""
        return self._labels

    @property
    def target(self) -> str:
        """``"class"`` or ``"regression"``."""
        return self._target

    @property
    def decision_rows(self) -> np.ndarray:
        """``[N]`` int64 row positions ``t`` of the items (read-only)."""
        return self._decision_rows

    @property
    def decision_index(self) -> pd.Index | np.ndarray:
        """Timestamps (the features' index labels) of each item's decision row when built
        from a DataFrame; else the row positions (:attr:`decision_rows`)."""
        if self._index is None:
            return self._decision_rows
        return self._index[self._decision_rows]

    def class_counts(self) -> np.ndarray:
        """``[3]`` int64 item counts of sell, hold, buy (e.g. for class weights); ``[H, 3]``
        with one class per horizon; ``[0]`` for regression targets (no classes)."""
        if self._target == "regression":
            return np.zeros(0, dtype=np.int64)
        labels = self._labels.numpy()
        if labels.ndim == 2:
            return np.stack([np.bincount(column, minlength=3) for column in labels.T]
                            ).astype(np.int64)
        return np.bincount(labels, minlength=3).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"WindowDataset({len(self)} items, window={self._window}, "
            f"features={tuple(self._features.shape)}, classes={self.class_counts().tolist()})"
        )
