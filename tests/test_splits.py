"""Splits: disjoint chronological parts, the embargo and the no-shared-bar property it buys,
fractions, walk-forward folds, errors, and the scaler fitted on the train part only."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradezoo.data.bars import read_bars
from tradezoo.data.features import FeatureScaler, compute_features
from tradezoo.data.splits import PART_NAMES, Splits, time_splits, walk_forward

BUNDLED_BTC = (
    Path(__file__).resolve().parents[1]
    / "tradezoo"
    / "data"
    / "bundled"
    / "bybit_linear_BTCUSDT_1h.csv.gz"
)


def bars_touched(rows: np.ndarray, lookback: int, horizon: int) -> set[int]:
    """Every bar a set of decision rows reads, computed row by row (independently of
    ``Splits.bars_touched``): input bars t-lookback+1..t and label bars t+1..t+1+horizon."""
    touched: set[int] = set()
    for t in rows.tolist():
        touched.update(range(t - lookback + 1, t + 2 + horizon))
    return touched


def non_empty_parts(splits: Splits) -> list[np.ndarray]:
    return [part for part in (splits.train, splits.val, splits.test) if part.size]


def assert_embargo_properties(splits: Splits) -> None:
    """Chronological, disjoint, contiguous parts with gaps of exactly ``embargo`` rows and no
    bar shared between consecutive parts' inputs and labels."""
    parts = non_empty_parts(splits)
    for part in parts:
        assert part.dtype == np.int64
        assert not part.flags.writeable
        np.testing.assert_array_equal(part, np.arange(part[0], part[-1] + 1))  # contiguous
        assert 0 <= part[0] <= part[-1] < splits.n_rows
    for earlier, later in pairwise(parts):
        assert later[0] - earlier[-1] - 1 == splits.embargo  # rows strictly between
        shared = bars_touched(earlier, splits.lookback, splits.horizon) & bars_touched(
            later, splits.lookback, splits.horizon
        )
        assert not shared, f"bars {sorted(shared)[:5]} are used by two parts"
    all_rows = np.concatenate(parts)
    assert len(np.unique(all_rows)) == len(all_rows)  # no row in two parts


# ---------------------------------------------------------------- time_splits


def test_default_fractions_and_embargo() -> None:
    splits = time_splits(1000)
    assert splits.embargo == 2  # lookback 1 + horizon 1
    # Boundaries at 700 and 850; the gap is cut from the end of the earlier part.
    np.testing.assert_array_equal(splits.train, np.arange(0, 698))
    np.testing.assert_array_equal(splits.val, np.arange(700, 848))
    np.testing.assert_array_equal(splits.test, np.arange(850, 1000))
    assert_embargo_properties(splits)


@pytest.mark.parametrize(
    ("n_rows", "lookback", "horizon", "fractions"),
    [
        (1000, 1, 1, (0.7, 0.15, 0.15)),
        (5000, 64, 4, (0.6, 0.2, 0.2)),
        (19162, 256, 24, (0.7, 0.15, 0.15)),
        (500, 10, 3, (0.5, 0.0, 0.3)),
        (500, 7, 2, (0.8, 0.2, 0.0)),
        (300, 5, 5, (0.9, 0.0, 0.0)),
    ],
)
def test_parts_are_disjoint_and_embargoed(
    n_rows: int, lookback: int, horizon: int, fractions: tuple[float, float, float]
) -> None:
    train, val, test = fractions
    splits = time_splits(
        n_rows, train=train, val=val, test=test, lookback=lookback, horizon=horizon
    )
    assert splits.embargo == lookback + horizon
    assert_embargo_properties(splits)
    for name, fraction in zip(PART_NAMES, fractions, strict=True):
        assert (splits.part(name).size > 0) == (fraction > 0)


def test_the_minimum_embargo_is_tight() -> None:
    # The derivation says embargo >= lookback + horizon; one row less makes the last label
    # of the earlier part share a bar with the first window of the next part.
    lookback, horizon = 16, 4
    earlier = np.arange(0, 100)
    for gap, expect_shared in [(lookback + horizon, False), (lookback + horizon - 1, True)]:
        later = np.arange(100 + gap, 200)
        shared = bars_touched(earlier, lookback, horizon) & bars_touched(later, lookback, horizon)
        assert bool(shared) == expect_shared


def test_bars_touched_helper_matches_row_by_row() -> None:
    splits = time_splits(2000, lookback=32, horizon=6)
    for name in PART_NAMES:
        first, last = splits.bars_touched(name)  # type: ignore[misc]
        touched = bars_touched(splits.part(name), 32, 6)
        clipped = {b for b in touched if 0 <= b < 2000}
        assert (first, last) == (min(clipped), max(clipped))


def test_larger_embargo_is_the_gap() -> None:
    splits = time_splits(1000, lookback=10, horizon=2, embargo=40)
    assert splits.embargo == 40
    assert splits.val[0] - splits.train[-1] - 1 == 40
    assert splits.test[0] - splits.val[-1] - 1 == 40
    assert_embargo_properties(splits)


def test_test_rows_do_not_depend_on_lookback() -> None:
    # Models with different windows are scored on the same rows.
    short = time_splits(3000, lookback=8, horizon=1)
    long = time_splits(3000, lookback=256, horizon=24)
    np.testing.assert_array_equal(short.test, long.test)
    assert long.train.size < short.train.size


def test_fractions_below_one_leave_the_tail_unused() -> None:
    splits = time_splits(1000, train=0.5, val=0.1, test=0.1)
    assert splits.test[-1] == 699  # round(0.7 * 1000) - 1
    assert_embargo_properties(splits)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    n_rows=st.integers(0, 3000),
    train=st.floats(0.05, 0.9),
    val=st.floats(0.0, 0.3),
    test=st.floats(0.0, 0.3),
    lookback=st.integers(1, 128),
    horizon=st.integers(1, 24),
    extra=st.integers(0, 50),
)
def test_time_splits_properties(
    n_rows: int, train: float, val: float, test: float, lookback: int, horizon: int, extra: int
) -> None:
    embargo = lookback + horizon + extra
    try:
        splits = time_splits(
            n_rows,
            train=train,
            val=val,
            test=test,
            lookback=lookback,
            horizon=horizon,
            embargo=embargo,
        )
    except ValueError as error:
        message = str(error)
        assert "split too small" in message or "must be <= 1" in message
        return
    assert train + val + test <= 1 + 1e-9
    assert splits.embargo == embargo
    assert_embargo_properties(splits)
    for name, fraction in zip(PART_NAMES, (train, val, test), strict=True):
        size = splits.part(name).size
        assert (size > 0) == (fraction > 0)
        assert size <= round(fraction * n_rows) + 1  # never more than its share


def test_from_datetime_index_gives_timestamps() -> None:
    index = pd.date_range("2024-01-01", periods=500, freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame({"a": np.arange(500.0)}, index=index)
    splits = time_splits(frame, lookback=5, horizon=1)
    assert splits.index is frame.index
    assert splits.index_of("val").equals(index[splits.val])
    stamps = splits.timestamps
    assert set(stamps) == set(PART_NAMES)
    assert stamps["test"][-1] == index[-1]
    summary = splits.summary()
    assert list(summary.index) == list(PART_NAMES)
    assert summary.loc["train", "rows"] == splits.train.size
    assert summary.loc["test", "end"] == index[-1]
    text = str(splits)
    assert "embargo 6 bars" in text
    assert "2024-01-01 00:00:00+00:00" in text
    assert repr(splits).startswith("Splits(train=")


def test_from_length_has_no_timestamps() -> None:
    splits = time_splits(100)
    with pytest.raises(ValueError, match="built from a length"):
        splits.index_of("train")
    assert "start" not in splits.summary().columns
    assert "train" in str(splits)


def test_part_name_is_checked() -> None:
    with pytest.raises(ValueError, match="part must be one of"):
        time_splits(100).part("validation")  # type: ignore[arg-type]


def test_splits_are_immutable() -> None:
    splits = time_splits(100)
    with pytest.raises(ValueError, match="read-only"):
        splits.train[0] = 5
    with pytest.raises(AttributeError):
        splits.embargo = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train": 0.7, "val": 0.2, "test": 0.2}, ValueError, r"must be <= 1.*1\.1"),
        ({"train": -0.1}, ValueError, "train must be a fraction"),
        ({"val": 1.5}, ValueError, "val must be a fraction"),
        ({"test": "0.1"}, TypeError, "test must be a fraction"),
        ({"train": 0.0}, ValueError, "train must be > 0"),
        ({"lookback": 0}, ValueError, "lookback"),
        ({"horizon": 0}, ValueError, "horizon"),
        ({"horizon": 2.0}, TypeError, "horizon"),
        ({"lookback": 10, "horizon": 2, "embargo": 11}, ValueError, r"10 \+ 2 = 12.*11"),
        ({"embargo": -1}, ValueError, "embargo"),
    ],
)
def test_time_splits_argument_errors(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        time_splits(1000, **kwargs)  # type: ignore[arg-type]


def test_split_too_small() -> None:
    # 100 rows: val nominally 5 rows, minus an embargo of 11 -> nothing left.
    with pytest.raises(ValueError, match=r"split too small: part 'val'.*minus the embargo"):
        time_splits(100, train=0.7, val=0.05, test=0.25, lookback=10, horizon=1)
    with pytest.raises(ValueError, match=r"split too small: part 'train'"):
        time_splits(40, lookback=32, horizon=1)
    with pytest.raises(ValueError, match=r"split too small: part 'train'"):
        time_splits(0)
    with pytest.raises(ValueError, match=r"split too small: part 'test'"):
        time_splits(3, train=0.9, val=0.0, test=0.1, lookback=1, horizon=1)


def test_index_or_length_is_checked() -> None:
    with pytest.raises(TypeError, match="index_or_length"):
        time_splits(12.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index_or_length"):
        time_splits(-3)


# ---------------------------------------------------------------- walk_forward


def test_walk_forward_expanding() -> None:
    folds = walk_forward(1000, n_folds=4, test_size=100, val_size=50, lookback=10, horizon=2)
    assert [f.fold for f in folds] == [0, 1, 2, 3]
    assert folds[-1].test[-1] == 999  # the last test window ends at the end of the data
    for fold in folds:
        assert fold.test.size == 100
        assert fold.val.size == 50
        assert fold.train[0] == 0  # expanding from the start
        assert fold.embargo == 12
        assert_embargo_properties(fold)
    for earlier, later in pairwise(folds):
        assert later.test[0] == earlier.test[-1] + 1  # consecutive, non-overlapping
        assert later.train.size == earlier.train.size + 100
    tested = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(tested, np.arange(600, 1000))


def test_walk_forward_rolling_without_validation() -> None:
    folds = walk_forward(2000, n_folds=5, test_size=200, train_size=500, lookback=30, horizon=5)
    for fold in folds:
        assert fold.train.size == 500
        assert fold.val.size == 0
        assert fold.test[0] - fold.train[-1] - 1 == 35
        assert_embargo_properties(fold)
    starts = [int(f.train[0]) for f in folds]
    assert np.diff(starts).tolist() == [200] * 4


def test_walk_forward_step_larger_than_test() -> None:
    folds = walk_forward(1000, n_folds=3, test_size=50, step=120)
    assert [int(f.test[0]) for f in folds] == [710, 830, 950]
    assert folds[-1].test[-1] == 999
    for earlier, later in pairwise(folds):
        assert later.test[0] > earlier.test[-1]


def test_walk_forward_with_index() -> None:
    index = pd.date_range("2024-01-01", periods=800, freq="D", tz="UTC")
    folds = walk_forward(index, n_folds=2, test_size=100)
    assert folds[1].index_of("test")[-1] == index[-1]
    assert "fold 1" in str(folds[1])


def test_walk_forward_minimum_length_is_exact() -> None:
    # needed = 1 train row + embargo (2) + val (10) + embargo (2) + test (20) + 2 * step (20)
    kwargs: dict[str, int] = {"n_folds": 3, "test_size": 20, "val_size": 10}
    folds = walk_forward(75, **kwargs)
    assert folds[0].train.size == 1
    with pytest.raises(ValueError, match="need at least 75 rows, got 74"):
        walk_forward(74, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_folds": 0, "test_size": 10}, ValueError, "n_folds"),
        ({"n_folds": 2, "test_size": 0}, ValueError, "test_size"),
        ({"n_folds": 2, "test_size": 10, "val_size": -1}, ValueError, "val_size"),
        ({"n_folds": 2, "test_size": 10, "train_size": 0}, ValueError, "train_size"),
        ({"n_folds": 2, "test_size": 10, "step": 5}, ValueError, "step must be >= test_size"),
        ({"n_folds": 2, "test_size": 10, "embargo": 1}, ValueError, r"1 \+ 1 = 2"),
        ({"n_folds": 20, "test_size": 10}, ValueError, "too few rows for walk_forward"),
        ({"n_folds": 2, "test_size": 50, "train_size": 100}, ValueError, "need at least"),
    ],
)
def test_walk_forward_errors(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        walk_forward(150, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- scaler acceptance


@pytest.fixture(scope="module")
def btc_bars() -> pd.DataFrame:
    return read_bars(BUNDLED_BTC)


def test_scaler_fitted_on_train_ignores_val_and_test(btc_bars: pd.DataFrame) -> None:
    features = compute_features(btc_bars)
    splits = time_splits(features.index, lookback=64, horizon=4)
    scaler = FeatureScaler(clip=5.0).fit(features.iloc[splits.train])
    mean, std = scaler.mean.copy(), scaler.std.copy()

    # 1. Change every value of the validation and test rows (and the embargo rows between).
    changed = features.copy()
    rng = np.random.default_rng(7)
    after_train = slice(int(splits.train[-1]) + 1, None)
    noise = rng.normal(50.0, 10.0, size=changed.iloc[after_train].shape).astype(np.float32)
    changed.iloc[after_train] = noise
    refit = FeatureScaler(clip=5.0).fit(changed.iloc[splits.train])
    assert refit.mean.tobytes() == mean.tobytes()
    assert refit.std.tobytes() == std.tobytes()

    # 2. End to end: change the raw bars after the last train row's bar, recompute the
    # (causal) features and refit: still bit-identical statistics.
    last_train_bar = btc_bars.index.get_loc(features.index[splits.train[-1]])
    perturbed = btc_bars.copy()
    prices = ["open", "high", "low", "close"]
    factors = np.exp(rng.normal(0.0, 0.03, size=(len(btc_bars) - last_train_bar - 1, 1)))
    perturbed.iloc[last_train_bar + 1 :, [btc_bars.columns.get_loc(c) for c in prices]] = (
        btc_bars[prices].to_numpy()[last_train_bar + 1 :] * factors
    )
    refeatured = compute_features(perturbed)
    assert refeatured.index.equals(features.index)
    refit_bars = FeatureScaler(clip=5.0).fit(refeatured.iloc[splits.train])
    assert refit_bars.mean.tobytes() == mean.tobytes()
    assert refit_bars.std.tobytes() == std.tobytes()

    # The check can fail: statistics fitted on all rows do move with val/test.
    leaky = FeatureScaler(clip=5.0).fit(features)
    leaky_changed = FeatureScaler(clip=5.0).fit(changed)
    assert not np.array_equal(leaky.mean, leaky_changed.mean)

    # Transforming the train rows therefore gives the same values either way.
    np.testing.assert_array_equal(
        scaler.transform(features.iloc[splits.train]).to_numpy(),
        refit.transform(changed.iloc[splits.train]).to_numpy(),
    )
