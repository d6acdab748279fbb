"""WindowDataset: items are views of one float32 matrix, valid rows, alignment, errors, and
the memory bound over the bundled BTCUSDT features."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from tradezoo.data.bars import read_bars
from tradezoo.data.features import FeatureScaler, compute_features
from tradezoo.data.labels import make_labels
from tradezoo.data.splits import time_splits
from tradezoo.data.windows import WindowDataset

BUNDLED_BTC = (
    Path(__file__).resolve().parents[1]
    / "tradezoo"
    / "data"
    / "bundled"
    / "bybit_linear_BTCUSDT_1h.csv.gz"
)


def matrix(n_rows: int = 50, n_features: int = 3) -> np.ndarray:
    """float32 C-contiguous ``[T, F]`` with distinct values (row * 10 + column)."""
    rows = np.arange(n_rows, dtype=np.float32)[:, None] * 10
    return np.ascontiguousarray(rows + np.arange(n_features, dtype=np.float32))


def cycling_labels(n_rows: int) -> np.ndarray:
    return (np.arange(n_rows) % 3).astype(np.float64)


def hourly_frame(values: np.ndarray, *, dt: np.ndarray | None = None) -> pd.DataFrame:
    index = pd.date_range("2024-03-01", periods=len(values), freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(values, index=index, columns=[f"f{k}" for k in range(values.shape[1])])
    if dt is not None:
        frame["dt"] = dt.astype(np.float32)
    return frame


def same_storage(view: torch.Tensor, base: torch.Tensor) -> bool:
    return view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()


# ---------------------------------------------------------------- items


def test_items_are_slices_of_the_matrix() -> None:
    features = matrix(50, 3)
    labels = cycling_labels(50)
    dataset = WindowDataset(features, labels, window=5)
    assert len(dataset) == 46  # t = 4 .. 49
    assert dataset.n_features == 3
    assert dataset.window == 5
    np.testing.assert_array_equal(dataset.decision_rows, np.arange(4, 50))
    for i in (0, 1, 17, 45, -1):
        x, dt, y = dataset[i]
        t = int(dataset.decision_rows[i])
        assert x.shape == (5, 3)
        assert x.dtype == torch.float32
        assert dt.shape == (5,)
        assert dt.dtype == torch.float32
        assert y.dtype == torch.int64
        assert y.shape == ()
        np.testing.assert_array_equal(x.numpy(), features[t - 4 : t + 1])
        np.testing.assert_array_equal(dt.numpy(), np.ones(5, dtype=np.float32))
        assert int(y) == int(labels[t])
    # The window ends at the decision row: the last row of x is row t itself.
    x, _, _ = dataset[0]
    np.testing.assert_array_equal(x[-1].numpy(), features[4])


def test_window_of_one_and_window_equal_to_the_data() -> None:
    features = matrix(10, 2)
    one = WindowDataset(features, cycling_labels(10), window=1)
    assert len(one) == 10
    np.testing.assert_array_equal(one[3][0].numpy(), features[3:4])
    whole = WindowDataset(features, cycling_labels(10), window=10)
    assert len(whole) == 1
    np.testing.assert_array_equal(whole[0][0].numpy(), features)


def test_items_share_storage_with_the_base_tensor() -> None:
    features = matrix(40, 4)
    dataset = WindowDataset(features, cycling_labels(40), window=8)
    # Zero-copy: the base tensor is the caller's float32 C-contiguous array.
    assert np.shares_memory(dataset.features.numpy(), features)
    x, dt, _ = dataset[10]
    assert same_storage(x, dataset.features)
    assert same_storage(dt, dataset.dt)
    t = int(dataset.decision_rows[10])
    assert x.data_ptr() == dataset.features.data_ptr() + (t - 7) * 4 * 4  # row offset, bytes
    assert x.is_contiguous()


def test_read_only_array_is_shared_without_a_warning() -> None:
    # pandas copy-on-write hands out read-only arrays; torch warns on those, the dataset
    # (which never writes) shares them silently instead of copying.
    features = matrix(20, 2)
    features.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = WindowDataset(features, cycling_labels(20), window=3)
    assert np.shares_memory(dataset.features.numpy(), features)


def test_other_dtypes_and_layouts_are_copied_once_to_float32() -> None:
    features64 = matrix(30, 3).astype(np.float64)
    fortran = np.asfortranarray(matrix(30, 3))
    for features in (features64, fortran):
        dataset = WindowDataset(features, cycling_labels(30), window=4)
        assert dataset.features.dtype == torch.float32
        assert dataset.features.is_contiguous()
        assert not np.shares_memory(dataset.features.numpy(), features)
        np.testing.assert_array_equal(dataset[2][0].numpy(), matrix(30, 3)[2:6])


def test_nan_labels_are_skipped() -> None:
    labels = cycling_labels(30)
    labels[[5, 6, 20, 29]] = np.nan
    dataset = WindowDataset(matrix(30, 2), labels, window=3)
    expected = [t for t in range(2, 30) if t not in (5, 6, 20, 29)]
    np.testing.assert_array_equal(dataset.decision_rows, expected)
    np.testing.assert_array_equal(dataset.labels.numpy(), labels[expected].astype(np.int64))
    np.testing.assert_array_equal(dataset.class_counts(), np.bincount(labels[expected].astype(int)))


def test_indices_restrict_the_decision_rows() -> None:
    n_rows = 200
    splits = time_splits(n_rows, lookback=16, horizon=1)
    labels = cycling_labels(n_rows)
    labels[150] = np.nan
    train = WindowDataset(matrix(n_rows, 2), labels, window=16, indices=splits.train)
    np.testing.assert_array_equal(train.decision_rows, splits.train[splits.train >= 15])
    val = WindowDataset(matrix(n_rows, 2), labels, window=16, indices=splits.val)
    np.testing.assert_array_equal(val.decision_rows, splits.val[splits.val != 150])
    # Order and duplicates of indices do not matter.
    shuffled = np.array([30, 20, 30, 25], dtype=np.int32)
    subset = WindowDataset(matrix(n_rows, 2), labels, window=16, indices=shuffled)
    np.testing.assert_array_equal(subset.decision_rows, [20, 25, 30])


def test_dt_is_used_and_viewed() -> None:
    dt = np.arange(1, 41, dtype=np.float64) * 60.0
    dataset = WindowDataset(matrix(40, 2), cycling_labels(40), window=6, dt=dt)
    _, dt_item, _ = dataset[0]
    np.testing.assert_array_equal(dt_item.numpy(), dt[0:6].astype(np.float32))
    assert same_storage(dt_item, dataset.dt)


def test_dataframe_uses_its_dt_column_and_index() -> None:
    dt = np.full(30, 3600.0)
    dt[10] = 7200.0  # a gap of one bar
    frame = hourly_frame(matrix(30, 2), dt=dt)
    dataset = WindowDataset(frame, cycling_labels(30), window=4)
    assert dataset.n_features == 3  # x keeps every column of the frame, dt included
    assert dataset.feature_names == ("f0", "f1", "dt")
    assert isinstance(dataset.decision_index, pd.DatetimeIndex)
    assert dataset.decision_index[0] == frame.index[3]
    _, dt_item, _ = dataset[7]  # t = 10
    np.testing.assert_array_equal(dt_item.numpy(), [3600.0, 3600.0, 3600.0, 7200.0])
    # Without a dt column the default is ones; an array gives positions as decision_index.
    no_dt = WindowDataset(hourly_frame(matrix(30, 2)), cycling_labels(30), window=4)
    np.testing.assert_array_equal(no_dt[0][1].numpy(), np.ones(4, dtype=np.float32))
    array_dataset = WindowDataset(matrix(30, 2), cycling_labels(30), window=4)
    np.testing.assert_array_equal(array_dataset.decision_index, np.arange(3, 30))


def test_from_frames_aligns_labels_by_timestamp() -> None:
    bars_index = pd.date_range("2024-03-01", periods=60, freq="h", tz="UTC", name="timestamp")
    labels = pd.Series((np.arange(60) % 3).astype(np.float64), index=bars_index, name="label")
    labels.iloc[-2:] = np.nan
    # Features start 10 bars later (their warm-up was dropped).
    frame = pd.DataFrame(matrix(50, 3), index=bars_index[10:], columns=["a", "b", "c"])
    dataset = WindowDataset.from_frames(frame, labels, window=5)
    assert dataset.decision_index[0] == bars_index[14]
    assert dataset.decision_index[-1] == bars_index[57]  # the last 2 labels are NaN
    for i in range(len(dataset)):
        stamp = dataset.decision_index[i]
        assert int(dataset[i][2]) == int(labels[stamp])
    # A labels Series on another index is refused by the constructor.
    with pytest.raises(ValueError, match="from_frames"):
        WindowDataset(frame, labels, window=5)


def test_from_frames_dt_options() -> None:
    dt = np.full(30, 60.0)
    frame = hourly_frame(matrix(30, 2), dt=dt)
    labels = pd.Series(cycling_labels(30), index=frame.index)
    assert float(WindowDataset.from_frames(frame, labels, window=3)[0][1][0]) == 60.0
    ones = WindowDataset.from_frames(frame, labels, window=3, dt_column=None)
    assert float(ones[0][1][0]) == 1.0
    # A scaled frame's dt column is not seconds: pass the raw one explicitly.
    scaled = FeatureScaler().fit(frame).transform(frame)
    with pytest.raises(ValueError, match=r"features_df\['dt'\] must be finite seconds > 0.*scaled"):
        WindowDataset.from_frames(scaled, labels, window=3)
    explicit = WindowDataset.from_frames(scaled, labels, window=3, dt=frame["dt"])
    assert float(explicit[0][1][0]) == 60.0
    with pytest.raises(ValueError, match="dt_column 'seconds' is not a column"):
        WindowDataset.from_frames(frame, labels, window=3, dt_column="seconds")


def test_dataloader_batches() -> None:
    features = matrix(100, 3)
    labels = cycling_labels(100)
    dataset = WindowDataset(features, labels, window=10)
    loader = DataLoader(
        dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    x, dt, y = next(iter(loader))
    assert x.shape == (16, 10, 3)
    assert dt.shape == (16, 10)
    assert y.shape == (16,)
    assert y.dtype == torch.int64
    for b in range(16):
        t = int(x[b, -1, 0].item()) // 10  # row value = t * 10 in column 0
        np.testing.assert_array_equal(x[b].numpy(), features[t - 9 : t + 1])
        assert int(y[b]) == int(labels[t])


def test_index_errors() -> None:
    dataset = WindowDataset(matrix(10, 2), cycling_labels(10), window=3)
    with pytest.raises(IndexError, match="out of range"):
        dataset[8]
    with pytest.raises(IndexError, match="out of range"):
        dataset[-9]
    with pytest.raises(TypeError, match="integer"):
        dataset[1.0]  # type: ignore[index]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ValueError, "window must be an integer >= 1"),
        ({"window": 2.5}, TypeError, "window must be an integer"),
        ({"window": 21}, ValueError, r"window=21 is longer than the data \(20"),
        ({"labels": np.zeros(19)}, ValueError, "labels have 19 rows but features have 20"),
        ({"labels": np.full(20, 3.0)}, ValueError, r"0 \(sell\), 1 \(hold\), 2 \(buy\)"),
        ({"labels": np.full(20, np.inf)}, ValueError, "found inf"),
        ({"labels": np.full(20, np.nan)}, ValueError, "no valid decision rows.*18 more have NaN"),
        ({"indices": [0, 1]}, ValueError, "no valid decision rows.*2 lack a full window"),
        ({"indices": [5, 20]}, ValueError, r"indices must be row positions in \[0, 20\)"),
        ({"indices": [-1]}, ValueError, "indices must be row positions"),
        ({"indices": np.array([5.0])}, TypeError, "integer row positions"),
        ({"dt": np.zeros(20)}, ValueError, "dt must be finite seconds > 0"),
        ({"dt": np.ones(19)}, ValueError, r"one value per feature row \[20\]"),
        ({"features": np.ones(20, dtype=np.float32)}, ValueError, "two-dimensional"),
        ({"features": np.zeros((20, 0), dtype=np.float32)}, ValueError, "no columns"),
        ({"features": np.array([["a"] * 2] * 20)}, TypeError, "not numeric"),
        ({"features": [[1.0, 2.0]] * 20}, TypeError, "DataFrame or a numpy array"),
    ],
)
def test_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    arguments: dict[str, object] = {
        "features": matrix(20, 2),
        "labels": cycling_labels(20),
        "window": 3,
    }
    arguments.update(kwargs)
    features = arguments.pop("features")
    labels = arguments.pop("labels")
    with pytest.raises(error, match=match):
        WindowDataset(features, labels, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_row_and_column(bad: float) -> None:
    features = matrix(20, 3)
    features[12, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or inf at row 12, column '#1'"):
        WindowDataset(features, cycling_labels(20), window=3)
    frame = hourly_frame(features)
    with pytest.raises(ValueError, match=r"row 12 \(2024-03-01 12:00:00\+00:00\), column 'f1'"):
        WindowDataset(frame, cycling_labels(20), window=3)


def test_frame_errors() -> None:
    frame = hourly_frame(matrix(20, 2))
    labels = pd.Series(cycling_labels(20), index=frame.index)
    with pytest.raises(TypeError, match="column 'name' has non-numeric dtype"):
        WindowDataset(frame.assign(name="x"), labels, window=3)
    with pytest.raises(ValueError, match="strictly increasing"):
        WindowDataset(frame.iloc[::-1], labels.to_numpy(), window=3)
    with pytest.raises(TypeError, match="labels_series must be a pandas Series"):
        WindowDataset.from_frames(frame, labels.to_numpy(), window=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="features_df must be a DataFrame"):
        WindowDataset.from_frames(frame.to_numpy(), labels, window=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicates"):
        WindowDataset.from_frames(frame, pd.concat([labels, labels]), window=3)
    naive = labels.copy()
    naive.index = naive.index.tz_localize(None)
    with pytest.raises(ValueError, match="shares no index value"):
        WindowDataset.from_frames(frame, naive, window=3)


# ---------------------------------------------------------------- real data and memory


@pytest.fixture(scope="module")
def btc_features_and_labels() -> tuple[pd.DataFrame, pd.Series]:
    bars = read_bars(BUNDLED_BTC)
    return compute_features(bars), make_labels(bars, horizon=4, threshold=0.005, cost_bps=5.5)


def test_bundled_pipeline(btc_features_and_labels: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = btc_features_and_labels
    splits = time_splits(features.index, lookback=64, horizon=4)
    scaler = FeatureScaler(clip=5.0).fit(features.iloc[splits.train])
    scaled = scaler.transform(features)
    train = WindowDataset.from_frames(
        scaled, labels, window=64, indices=splits.train, dt=features["dt"]
    )
    test = WindowDataset.from_frames(
        scaled, labels, window=64, indices=splits.test, dt=features["dt"]
    )
    assert train.decision_index[-1] < test.decision_index[0]
    assert len(test) == splits.test.size - 5  # the last 1 + horizon rows have no label
    x, dt, y = test[len(test) - 1]
    t = int(test.decision_rows[-1])
    np.testing.assert_array_equal(x.numpy(), scaled.to_numpy()[t - 63 : t + 1])
    np.testing.assert_array_equal(dt.numpy(), np.full(64, 3600.0, dtype=np.float32))
    assert int(y) == int(labels[scaled.index[t]])


def test_memory_stays_near_one_feature_matrix(
    btc_features_and_labels: tuple[pd.DataFrame, pd.Series],
) -> None:
    features, labels = btc_features_and_labels
    window = 256
    matrix_bytes = features.shape[0] * features.shape[1] * 4  # float32 [T, F]
    assert features.shape[0] > 19_000
    assert features.shape[1] >= 20

    # Warm up imports and one-time caches on a tiny dataset, so that tracemalloc measures
    # the dataset, not module loading.
    tiny = WindowDataset.from_frames(features.iloc[:300], labels, window=8)
    next(iter(DataLoader(tiny, batch_size=4)))

    # Why two checks: tracemalloc sees Python and numpy allocations (numpy reports its data
    # buffers to it) but NOT torch's own CPU allocator. A dataset that materialised every
    # window with numpy (sliding_window_view(...).copy(): ~T*L*F*4 = 500 MB) fails the
    # tracemalloc bound; one that did it in torch (unfold(...).contiguous(), torch.stack of
    # all windows) would be invisible to tracemalloc, so the items must also be proven views
    # of the one base tensor.
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        dataset = WindowDataset.from_frames(features, labels, window=window)
        loader = DataLoader(
            dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        x, _, _ = next(iter(loader))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (64, window, features.shape[1])
    assert peak < 2 * matrix_bytes, f"peak {peak / matrix_bytes:.2f}x the feature matrix"

    # The view check: every item (sampled) lies inside the single base tensor's storage.
    base = dataset.features
    assert base.shape == features.shape
    assert base.dtype == torch.float32
    assert base.is_contiguous()
    row_bytes = features.shape[1] * 4
    for i in np.random.default_rng(0).integers(0, len(dataset), size=32).tolist():
        item_x, item_dt, _ = dataset[i]
        t = int(dataset.decision_rows[i])
        assert item_x._base is base
        assert same_storage(item_x, base)
        assert item_x.data_ptr() == base.data_ptr() + (t - window + 1) * row_bytes
        assert same_storage(item_dt, dataset.dt)


def test_import_tradezoo_data_does_not_import_torch() -> None:
    code = (
        "import sys, tradezoo, tradezoo.data, tradezoo.data.labels, tradezoo.data.splits\n"
        "from tradezoo.data import make_labels, time_splits, walk_forward, label_balance\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_lazy_export() -> None:
    from tradezoo.data import WindowDataset as exported

    assert exported is WindowDataset
