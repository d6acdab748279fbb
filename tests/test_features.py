"""Tests of tradezoo.data.features: causality, hand-computed values, the scaler, bad input."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradezoo.data.bars import read_bars
from tradezoo.data.errors import DataError
from tradezoo.data.features import (
    FeatureScaler,
    FeatureSpec,
    _raw_features,
    compute_features,
    describe_features,
    feature_names,
)

BUNDLED_BTC = (
    Path(__file__).resolve().parents[1]
    / "tradezoo" / "data" / "bundled" / "bybit_linear_BTCUSDT_1h.csv.gz"
)

DEFAULT_COLUMNS = (
    "ret_1", "ret_5", "ret_10", "ret_20", "ret_60",
    "logret_1", "logret_5", "logret_10", "logret_20", "logret_60",
    "close_sma_5", "close_sma_10", "close_sma_20", "close_sma_50", "close_sma_100",
    "vol_5", "vol_10", "vol_20", "vol_50", "vol_ratio_20_60",
    "rsi_14", "macd", "macd_signal", "volume_ratio_20", "range_hl", "close_pos", "dt",
)

# Only the feature named: the other groups switched off, for hand-computed checks.
NOTHING = {
    "return_windows": (), "sma_windows": (), "vol_windows": (), "vol_ratio": None,
    "rsi_window": None, "macd": None, "volume_window": None,
    "include_range": False, "include_close_pos": False, "include_dt": False,
}

PROPERTY_SETTINGS = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _btc_bars() -> pd.DataFrame:
    return read_bars(BUNDLED_BTC)


def btc_bars() -> pd.DataFrame:
    """The bundled BTCUSDT 1h bars (a fresh copy: tests may modify it)."""
    return _btc_bars().copy()


def ohlcv_from_close(
    close: np.ndarray, rng: np.random.Generator, index: pd.DatetimeIndex
) -> pd.DataFrame:
    """Valid OHLCV bars around ``close``: open = previous close, wicks above/below, volume."""
    close = np.asarray(close, dtype=np.float64)
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.004, len(close))))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.004, len(close))))
    volume = rng.lognormal(3.0, 1.0, len(close))
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
    )


def random_walk_bars(n: int, seed: int, *, funding: bool = False) -> pd.DataFrame:
    """Synthetic hourly bars: a geometric random walk, zero-volume bars, a few gaps."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    steps = np.where(rng.random(n) < 0.02, 3, 1)  # irregular sampling: some 3-hour gaps
    index = pd.DatetimeIndex(
        pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="h"),
        name="timestamp",
    )
    bars = ohlcv_from_close(close, rng, index)
    bars.loc[rng.random(n) < 0.03, "volume"] = 0.0
    if funding:
        rate = rng.normal(1e-4, 1e-4, n)
        bars["funding_rate"] = np.where(index.hour % 8 == 0, rate, 0.0)
    return bars


def hand_bars(close: list[float], *, volume: list[float] | None = None) -> pd.DataFrame:
    """Hourly bars with the given closes (open = close, 1 % wicks) and volumes."""
    close_arr = np.asarray(close, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(close), freq="1h", tz="UTC",
                          name="timestamp")
    return pd.DataFrame(
        {
            "open": close_arr,
            "high": close_arr * 1.01,
            "low": close_arr * 0.99,
            "close": close_arr,
            "volume": np.ones(len(close)) if volume is None else np.asarray(volume, float),
        },
        index=index,
    )


def perturb_after(bars: pd.DataFrame, t: int, seed: int, *, move_times: bool) -> pd.DataFrame:
    """Replace every bar after position ``t`` with random but valid values.

    All OHLCV columns (and funding) change, on a random price scale; with ``move_times``
    the later timestamps move too (still increasing, random gaps).
    """
    rng = np.random.default_rng(seed)
    out = bars.copy()
    n_future = len(bars) - t - 1
    if n_future <= 0:
        return out
    scale = float(np.exp(rng.uniform(-3.0, 3.0)))
    close = scale * bars["close"].iloc[t] * np.exp(np.cumsum(rng.normal(0.0, 0.05, n_future)))
    index = bars.index
    if move_times:
        gaps = pd.to_timedelta(rng.integers(1, 5, n_future) * 30, unit="min")
        index = index[: t + 1].append(pd.DatetimeIndex(index[t] + np.cumsum(gaps)))
        out.index = index.rename("timestamp")
    future = ohlcv_from_close(close, rng, out.index[t + 1:])
    future.loc[rng.random(n_future) < 0.1, "volume"] = 0.0
    for column in ("open", "high", "low", "close", "volume"):
        out.iloc[t + 1:, out.columns.get_loc(column)] = future[column].to_numpy()
    if "funding_rate" in out.columns:
        out.iloc[t + 1:, out.columns.get_loc("funding_rate")] = rng.normal(0.0, 1e-3, n_future)
    return out


def assert_causal(bars: pd.DataFrame, t: int, seed: int, spec: FeatureSpec | None = None,
                  *, move_times: bool = False) -> None:
    """Features up to bar ``t`` are bit-identical after every later bar is replaced."""
    spec = spec or FeatureSpec()
    before = compute_features(bars, spec)
    after = compute_features(perturb_after(bars, t, seed, move_times=move_times), spec)
    rows = int(np.searchsorted(before.index, bars.index[t], side="right"))
    assert rows >= 1  # t is past the warm-up: there is something to compare
    assert before.index[:rows].equals(after.index[:rows])
    assert np.array_equal(before.to_numpy()[:rows], after.to_numpy()[:rows])
    # The perturbation is real: some later row must change (else the test proves nothing).
    if rows < len(before):
        assert not np.array_equal(before.to_numpy()[rows:], after.to_numpy()[rows:])


def ema_loop(values: list[float], span: int) -> list[float]:
    """y_0 = x_0, y_t = (1 - a) y_{t-1} + a x_t with a = 2 / (span + 1)."""
    alpha = 2.0 / (span + 1.0)
    out = [values[0]]
    for x in values[1:]:
        out.append((1.0 - alpha) * out[-1] + alpha * x)
    return out


def reference_features(bars: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Plain-Python loop implementation of every feature (an oracle independent of pandas)."""
    c = bars["close"].tolist()
    h = bars["high"].tolist()
    lo = bars["low"].tolist()
    v = bars["volume"].tolist()
    n_bars = len(c)
    lr = [math.nan] + [math.log(c[i] / c[i - 1]) for i in range(1, n_bars)]
    cols: dict[str, list[float]] = {}
    nan = [math.nan]
    for n in spec.return_windows:
        cols[f"ret_{n}"] = nan * n + [c[i] / c[i - n] - 1.0 for i in range(n, n_bars)]
    for n in spec.return_windows:
        cols[f"logret_{n}"] = nan * n + [math.log(c[i] / c[i - n]) for i in range(n, n_bars)]
    for n in spec.sma_windows:
        cols[f"close_sma_{n}"] = nan * (n - 1) + [
            c[i] / (sum(c[i - n + 1: i + 1]) / n) - 1.0 for i in range(n - 1, n_bars)
        ]

    def vol(n: int) -> list[float]:
        return nan * n + [statistics.stdev(lr[i - n + 1: i + 1]) for i in range(n, n_bars)]

    for n in spec.vol_windows:
        cols[f"vol_{n}"] = vol(n)
    if spec.vol_ratio is not None:
        s, lg = spec.vol_ratio
        vs, vl = vol(s), vol(lg)
        cols[f"vol_ratio_{s}_{lg}"] = [
            math.nan if i < max(s, lg) else (1.0 if vl[i] == 0 else vs[i] / vl[i])
            for i in range(n_bars)
        ]
    if spec.rsi_window is not None:
        n = spec.rsi_window
        gain = loss = 0.0
        rsi = [math.nan]
        for i in range(1, n_bars):
            d = c[i] - c[i - 1]
            if i == 1:
                gain, loss = max(d, 0.0), max(-d, 0.0)
            else:
                gain = (1 - 1 / n) * gain + (1 / n) * max(d, 0.0)
                loss = (1 - 1 / n) * loss + (1 / n) * max(-d, 0.0)
            value = 0.5 if gain + loss == 0 else gain / (gain + loss)
            rsi.append(value if i >= n else math.nan)
        cols[f"rsi_{n}"] = rsi
    if spec.macd is not None:
        fast, slow, signal = spec.macd
        ef, es = ema_loop(c, fast), ema_loop(c, slow)
        macd = [(ef[i] - es[i]) / c[i] for i in range(n_bars)]
        sig = ema_loop(macd[slow - 1:], signal)
        cols["macd"] = nan * (slow - 1) + macd[slow - 1:]
        cols["macd_signal"] = nan * (slow + signal - 2) + sig[signal - 1:]
    if spec.volume_window is not None:
        n = spec.volume_window
        ratio = []
        for i in range(n - 1, n_bars):
            mean = sum(v[i - n + 1: i + 1]) / n
            ratio.append(1.0 if mean == 0 else v[i] / mean)
        cols[f"volume_ratio_{n}"] = nan * (n - 1) + ratio
    if spec.include_range:
        cols["range_hl"] = [(h[i] - lo[i]) / c[i] for i in range(n_bars)]
    if spec.include_close_pos:
        cols["close_pos"] = [0.5 if h[i] == lo[i] else (c[i] - lo[i]) / (h[i] - lo[i])
                             for i in range(n_bars)]
    if spec.include_dt:
        stamps = bars.index
        cols["dt"] = nan + [(stamps[i] - stamps[i - 1]).total_seconds()
                            for i in range(1, n_bars)]
    if spec.include_funding and "funding_rate" in bars.columns:
        cols["funding_rate"] = bars["funding_rate"].tolist()
    return pd.DataFrame(cols, index=bars.index)


# -- names, shapes, dtype, warm-up -----------------------------------------------------------


def test_default_column_names_are_stable_and_ordered() -> None:
    assert FeatureSpec().columns() == DEFAULT_COLUMNS
    assert feature_names() == DEFAULT_COLUMNS
    assert feature_names(FeatureSpec(), funding=True) == (*DEFAULT_COLUMNS, "funding_rate")
    assert FeatureSpec(include_funding=False).columns(funding=True) == DEFAULT_COLUMNS
    custom = FeatureSpec(return_windows=(3,), simple_returns=False, sma_windows=(7,),
                         vol_windows=(4,), vol_ratio=(4, 8), rsi_window=9, volume_window=5)
    assert custom.columns() == (
        "logret_3", "close_sma_7", "vol_4", "vol_ratio_4_8", "rsi_9", "macd", "macd_signal",
        "volume_ratio_5", "range_hl", "close_pos", "dt",
    )


def test_bundled_btc_features_float32_finite_with_documented_warmup() -> None:
    bars = btc_bars()
    features = compute_features(bars)
    # Documented formula: max(60 returns, 100 - 1 SMA, 50 vol, 60 ratio, 14 RSI,
    # 26 - 1 MACD, 26 + 9 - 2 signal, 20 - 1 volume, 1 dt).
    warmup = max(60, 100 - 1, 50, max(20, 60), 14, 26 - 1, 26 + 9 - 2, 20 - 1, 1)
    assert warmup == 99 == FeatureSpec().warmup_rows
    assert features.attrs["warmup_rows"] == warmup
    assert features.shape == (len(bars) - warmup, len(DEFAULT_COLUMNS))
    assert tuple(features.columns) == DEFAULT_COLUMNS
    assert features.index.equals(bars.index[warmup:])
    assert (features.dtypes == np.float32).all()
    assert np.isfinite(features.to_numpy()).all()
    assert features.attrs["feature_spec"] == FeatureSpec().to_dict()
    assert features.attrs["symbol"] == bars.attrs["symbol"]
    assert (features["dt"] == 3600.0).all()  # the bundled series has no gaps
    assert features["rsi_14"].between(0.0, 1.0).all()
    assert features["close_pos"].between(0.0, 1.0).all()


@pytest.mark.parametrize(
    "spec",
    [
        FeatureSpec(),
        FeatureSpec(return_windows=(2, 3), sma_windows=(4,), vol_windows=(3,), vol_ratio=(3, 6),
                    rsi_window=5, macd=(3, 7, 4), volume_window=6),
        FeatureSpec(**{**NOTHING, "macd": (5, 40, 30)}),  # the signal line sets the warm-up
    ],
)
def test_warmup_is_the_first_row_where_every_feature_is_defined(spec: FeatureSpec) -> None:
    bars = random_walk_bars(300, seed=1)
    raw = _raw_features(bars, spec)
    first_defined = {c: int(np.flatnonzero(raw[c].notna().to_numpy())[0]) for c in raw}
    assert first_defined == spec.column_warmups()
    assert spec.warmup_rows == max(first_defined.values())
    # Minimal: the row before the warm-up ends still has an undefined feature.
    assert raw.iloc[spec.warmup_rows - 1].isna().any()
    assert compute_features(bars, spec).attrs["warmup_rows"] == spec.warmup_rows


@pytest.mark.parametrize(
    "spec",
    [
        FeatureSpec(),
        FeatureSpec(return_windows=(1, 2, 7), sma_windows=(2, 9), vol_windows=(2, 5),
                    vol_ratio=(5, 2), rsi_window=3, macd=(4, 9, 4), volume_window=4),
    ],
)
def test_matches_plain_loop_reference(spec: FeatureSpec) -> None:
    bars = random_walk_bars(400, seed=7, funding=True)
    features = compute_features(bars, spec)
    expected = reference_features(bars, spec).iloc[spec.warmup_rows:]
    assert tuple(features.columns) == tuple(expected.columns) == spec.columns(funding=True)
    np.testing.assert_allclose(features.to_numpy(), expected.to_numpy(dtype=np.float32),
                               rtol=2e-6, atol=1e-9)


def test_funding_rate_passed_through_last() -> None:
    bars = random_walk_bars(200, seed=3, funding=True)
    features = compute_features(bars)
    assert features.columns[-1] == "funding_rate"
    np.testing.assert_array_equal(
        features["funding_rate"].to_numpy(),
        bars["funding_rate"].to_numpy()[99:].astype(np.float32),
    )
    without = compute_features(bars, FeatureSpec(include_funding=False))
    assert "funding_rate" not in without.columns


def test_open_column_is_not_needed() -> None:
    bars = random_walk_bars(150, seed=4)
    features = compute_features(bars.drop(columns=["open"]))
    pd.testing.assert_frame_equal(features, compute_features(bars))


# -- hand-computed values --------------------------------------------------------------------


def test_returns_hand_computed() -> None:
    bars = hand_bars([100.0, 110.0, 99.0, 99.0, 198.0])
    spec = FeatureSpec(**{**NOTHING, "return_windows": (1, 2)})
    features = compute_features(bars, spec)
    assert features.attrs["warmup_rows"] == 2
    np.testing.assert_allclose(features["ret_1"], [99 / 110 - 1, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(features["ret_2"], [-0.01, 99 / 110 - 1, 1.0], rtol=1e-6)
    np.testing.assert_allclose(features["logret_1"], np.log([99 / 110, 1.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(features["logret_2"], np.log([0.99, 99 / 110, 2.0]), rtol=1e-6)


def test_close_sma_ratio_hand_computed() -> None:
    bars = hand_bars([1.0, 2.0, 3.0, 4.0, 8.0])
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "sma_windows": (3,)}))
    # SMA_3 over bars t-2..t (t included): 2, 3, 5.
    np.testing.assert_allclose(features["close_sma_3"], [3 / 2 - 1, 4 / 3 - 1, 8 / 5 - 1],
                               rtol=1e-6)


def test_volatility_is_sample_std_of_log_returns() -> None:
    close = [100.0, 101.0, 99.5, 102.0, 101.0, 103.5]
    bars = hand_bars(close)
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "vol_windows": (3,)}))
    log_returns = [math.log(close[i] / close[i - 1]) for i in range(1, len(close))]
    expected = [statistics.stdev(log_returns[i - 3:i]) for i in range(3, len(log_returns) + 1)]
    assert features.attrs["warmup_rows"] == 3
    np.testing.assert_allclose(features["vol_3"], expected, rtol=1e-6)
    # ddof=1, not 0: the population std would be smaller by sqrt(2/3).
    assert not np.allclose(features["vol_3"], np.asarray(expected) * math.sqrt(2 / 3))


def test_vol_ratio_is_one_on_flat_prices() -> None:
    bars = hand_bars([50.0] * 10 + [51.0, 50.5])
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "vol_ratio": (2, 4)}))
    ratio = features["vol_ratio_2_4"].to_numpy()
    np.testing.assert_array_equal(ratio[:-2], 1.0)  # vol_4 == 0: defined as 1
    assert np.isfinite(ratio).all()
    assert ratio[-1] != 1.0


def test_rsi_hand_computed_sequence() -> None:
    # Changes +1, -0.5, +1, -0.5, +1; Wilder alpha = 1/2:
    # G = 1, .5, .75, .375, .6875 and L = 0, .25, .125, .3125, .15625.
    bars = hand_bars([10.0, 11.0, 10.5, 11.5, 11.0, 12.0])
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "rsi_window": 2}))
    assert features.attrs["warmup_rows"] == 2
    np.testing.assert_allclose(features["rsi_2"], [2 / 3, 6 / 7, 6 / 11, 22 / 27], rtol=1e-6)


@pytest.mark.parametrize(
    ("close", "expected"),
    [
        (100.0 + np.arange(40.0), 1.0),  # only gains: RSI at its maximum
        (200.0 - np.arange(40.0), 0.0),  # only losses: RSI at its minimum
        (np.full(40, 100.0), 0.5),  # no movement at all: neutral by definition
    ],
)
def test_rsi_monotone_and_flat(close: np.ndarray, expected: float) -> None:
    spec = FeatureSpec(**{**NOTHING, "rsi_window": 14})
    features = compute_features(hand_bars(list(close)), spec)
    np.testing.assert_array_equal(features["rsi_14"].to_numpy(), np.float32(expected))
    assert len(features) == 40 - 14


def test_macd_zero_on_flat_prices_and_scale_free() -> None:
    spec = FeatureSpec(**{**NOTHING, "macd": (3, 6, 3)})
    flat = compute_features(hand_bars([20.0] * 12), spec)
    np.testing.assert_array_equal(flat[["macd", "macd_signal"]].to_numpy(), 0.0)
    bars = random_walk_bars(60, seed=5)
    scaled = bars.copy()
    scaled[["open", "high", "low", "close"]] *= 1000.0
    np.testing.assert_allclose(compute_features(scaled, spec), compute_features(bars, spec),
                               rtol=1e-5, atol=1e-8)


def test_volume_ratio_with_zero_volume() -> None:
    bars = hand_bars([1.0] * 7, volume=[0.0, 0.0, 0.0, 6.0, 3.0, 0.0, 0.0])
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "volume_window": 3}))
    # Means over 3 bars incl. t: 0 (-> ratio 1.0 by definition), 2, 3, 3, 1.
    np.testing.assert_allclose(features["volume_ratio_3"], [1.0, 3.0, 1.0, 0.0, 0.0])
    # After non-zero volumes leave the window the mean is 0 again: still 1.0, never inf.
    tail = hand_bars([1.0] * 6, volume=[1e-3, 7.0, 0.1, 0.0, 0.0, 0.0])
    ratio = compute_features(tail, FeatureSpec(**{**NOTHING, "volume_window": 3}))
    np.testing.assert_allclose(ratio["volume_ratio_3"], [0.1 / (7.101 / 3), 0.0, 0.0, 1.0])


def test_range_and_close_position_with_high_equal_low() -> None:
    bars = hand_bars([10.0, 10.0, 10.0])
    bars["high"] = [12.0, 10.0, 11.0]
    bars["low"] = [8.0, 10.0, 10.0]
    spec = FeatureSpec(**{**NOTHING, "include_range": True, "include_close_pos": True})
    features = compute_features(bars, spec)
    assert features.attrs["warmup_rows"] == 0
    np.testing.assert_allclose(features["range_hl"], [0.4, 0.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(features["close_pos"], [0.5, 0.5, 0.0])


def test_dt_shows_gaps_in_seconds() -> None:
    bars = hand_bars([1.0, 2.0, 3.0, 4.0])
    bars.index = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 04:00", "2024-01-01 04:30"],
        tz="UTC", name="timestamp",
    ).as_unit("ms")  # another index resolution must give the same seconds
    features = compute_features(bars, FeatureSpec(**{**NOTHING, "include_dt": True}))
    assert features.attrs["warmup_rows"] == 1
    np.testing.assert_array_equal(features["dt"], np.float32([3600.0, 10800.0, 1800.0]))


# -- causality -------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_future_perturbation_btc_bundled(fraction: float, seed: int) -> None:
    bars = _btc_bars()
    warmup = FeatureSpec().warmup_rows
    t = warmup + round(fraction * (len(bars) - 2 - warmup))
    assert_causal(bars, t, seed)


@PROPERTY_SETTINGS
@given(
    t=st.integers(0, 499),
    seed=st.integers(0, 2**32 - 1),
    move_times=st.booleans(),
)
def test_future_perturbation_random_walk(t: int, seed: int, move_times: bool) -> None:
    bars = random_walk_bars(600, seed=11, funding=True)
    spec = FeatureSpec(return_windows=(1, 3), sma_windows=(2, 8), vol_windows=(2, 6),
                       vol_ratio=(3, 9), rsi_window=4, macd=(3, 8, 5), volume_window=4)
    assert_causal(bars, spec.warmup_rows + t, seed, spec, move_times=move_times)


def test_future_perturbation_seeded_default_spec() -> None:
    rng = np.random.default_rng(2024)
    bars = random_walk_bars(1500, seed=12, funding=True)
    for t in rng.integers(FeatureSpec().warmup_rows, len(bars) - 1, size=8):
        assert_causal(bars, int(t), seed=int(t), move_times=bool(t % 2))


@pytest.mark.parametrize(("t", "seed", "move_times"), [(0, 1, False), (41, 2, True),
                                                       (97, 3, False)])
def test_future_perturbation_decompositions(
    t: int, seed: int, move_times: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wavelet (db4, all 4 levels) and VMD (all 4 modes) groups beside the other
    features; the decomposition cache is private to the test."""
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))
    bars = random_walk_bars(240, seed=13, funding=True)
    spec = FeatureSpec(return_windows=(1, 3), sma_windows=(2,), vol_windows=(2,),
                       vol_ratio=None, rsi_window=4, macd=None, volume_window=4,
                       wavelet={"levels": 4, "window": 128}, vmd={"modes": 4, "window": 16})
    t += spec.warmup_rows
    assert_causal(bars, t, seed, spec, move_times=move_times)
    # Every decomposition column reacts to the perturbation after t (cache hits here).
    before = compute_features(bars, spec)
    after = compute_features(perturb_after(bars, t, seed, move_times=move_times), spec)
    later = slice(t - spec.warmup_rows + 1, None)
    for column in (*spec.wavelet.columns(), *spec.vmd.columns()):
        assert not np.array_equal(before[column].to_numpy()[later],
                                  after[column].to_numpy()[later]), column


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["high", "low", "close", "volume"])
def test_missing_column_raises(column: str) -> None:
    bars = random_walk_bars(200, seed=0).drop(columns=[column])
    with pytest.raises(DataError, match=rf"missing column\(s\) \['{column}'\]"):
        compute_features(bars)


def test_too_few_rows_says_how_many_are_needed() -> None:
    bars = random_walk_bars(99, seed=0)
    with pytest.raises(DataError, match=r"99 bars are too few.*at least 100 are needed"):
        compute_features(bars)
    assert len(compute_features(random_walk_bars(100, seed=0))) == 1


@pytest.mark.parametrize(
    ("column", "value", "feature"),
    [
        ("close", 0.0, "logret_1"),
        ("close", -3.0, "logret_1"),
        ("close", np.nan, "ret_1"),
        ("high", np.nan, "range_hl"),
        ("volume", np.inf, "volume_ratio_20"),
    ],
)
def test_non_finite_feature_raises_naming_column_and_timestamp(
    column: str, value: float, feature: str
) -> None:
    bars = random_walk_bars(300, seed=0)
    bars.iloc[250, bars.columns.get_loc(column)] = value
    stamp = str(bars.index[250])
    with pytest.raises(DataError, match=rf"feature '{feature}' is not finite after the warm-up "
                                        rf"at \['{re.escape(stamp)}'"):
        compute_features(bars)


def test_index_must_be_sorted_datetime() -> None:
    bars = random_walk_bars(200, seed=0)
    with pytest.raises(DataError, match="DatetimeIndex"):
        compute_features(bars.reset_index(drop=True))
    with pytest.raises(DataError, match="strictly increasing"):
        compute_features(bars.iloc[::-1])
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        compute_features(bars.to_numpy())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"return_windows": (0, 5)}, r"return_windows: window sizes must be positive, got 0"),
        ({"sma_windows": (5, -1)}, r"sma_windows: window sizes must be positive, got -1"),
        ({"vol_windows": (0,)}, r"vol_windows: window sizes must be >= 2"),
        ({"vol_windows": (1,)}, r"vol_windows: window sizes must be >= 2"),
        ({"vol_ratio": (20, 0)}, r"vol_ratio: window sizes must be >= 2"),
        ({"vol_ratio": (20,)}, r"vol_ratio must be \(short, long\)"),
        ({"rsi_window": 0}, r"rsi_window: window sizes must be positive"),
        ({"macd": (12, 26, 0)}, r"macd: window sizes must be positive"),
        ({"macd": (26, 12, 9)}, r"macd needs fast < slow"),
        ({"macd": 12}, r"macd must be \(fast, slow, signal\)"),
        ({"volume_window": -20}, r"volume_window: window sizes must be positive"),
        ({"sma_windows": (5, 5)}, r"repeats a window"),
        ({"return_windows": (1.5,)}, r"must be integers"),
        ({"rsi_window": True}, r"must be integers"),
        ({"include_dt": 1}, r"include_dt must be a bool"),
        (NOTHING, r"selects no features"),
    ],
)
def test_bad_feature_spec_raises_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSpec(**kwargs)


def test_feature_spec_round_trips_through_json() -> None:
    spec = FeatureSpec(return_windows=(2, 4), macd=(9, 26, 9), include_funding=False)
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert isinstance(again.return_windows, tuple)
    assert hash(again) == hash(spec)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lookback'\]"):
        FeatureSpec.from_dict({"lookback": 3})


def test_describe_features_summary() -> None:
    features = compute_features(random_walk_bars(300, seed=2))
    summary = describe_features(features)
    assert list(summary.columns) == ["count", "mean", "std", "min", "max"]
    assert tuple(summary.index) == DEFAULT_COLUMNS
    expected = features.astype(np.float64).describe().T[["count", "mean", "std", "min", "max"]]
    np.testing.assert_allclose(summary.to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_importing_features_does_not_import_torch() -> None:
    code = ("import sys, tradezoo.data.features, tradezoo.data; "
            "tradezoo.data.compute_features; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- scaler ----------------------------------------------------------------------------------


def train_frame(seed: int = 0, rows: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(3.0, 2.0, rows),
            "b": rng.lognormal(0.0, 1.0, rows),
            "c": rng.normal(-1e-4, 1e-5, rows),
        },
        index=pd.date_range("2024-01-01", periods=rows, freq="1h", tz="UTC"),
    )


def test_scaler_fit_statistics_and_transform() -> None:
    frame = train_frame()
    scaler = FeatureScaler(clip=5.0)
    assert not scaler.is_fitted
    assert scaler.fit(frame) is scaler
    assert scaler.is_fitted and scaler.columns == ("a", "b", "c") and scaler.n_features == 3
    values = frame.to_numpy()
    np.testing.assert_allclose(scaler.mean, values.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.std, values.std(axis=0, ddof=0), rtol=1e-12)  # ddof=0
    scaled = scaler.transform(frame)
    assert isinstance(scaled, pd.DataFrame)
    assert scaled.index.equals(frame.index) and list(scaled.columns) == ["a", "b", "c"]
    assert (scaled.dtypes == np.float32).all()
    expected = np.clip((values - values.mean(axis=0)) / values.std(axis=0), -5, 5)
    np.testing.assert_allclose(scaled.to_numpy(), expected, rtol=1e-6, atol=1e-6)
    unclipped = FeatureScaler(clip=None).fit_transform(frame).to_numpy(dtype=np.float64)
    np.testing.assert_allclose(unclipped.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(unclipped.std(axis=0), 1.0, rtol=1e-6)


def test_scaler_clips_at_the_bound() -> None:
    frame = train_frame()
    scaler = FeatureScaler(clip=2.5).fit(frame)
    far = frame.iloc[:2].copy()
    far.iloc[0] = scaler.mean + 100.0 * scaler.std
    far.iloc[1] = scaler.mean - 100.0 * scaler.std
    scaled = scaler.transform(far).to_numpy()
    np.testing.assert_array_equal(scaled, np.float32([[2.5] * 3, [-2.5] * 3]))
    assert np.abs(scaler.transform(frame).to_numpy()).max() <= 2.5


def test_scaler_arrays_and_windows_and_inverse() -> None:
    values = train_frame().to_numpy()
    scaler = FeatureScaler(clip=None).fit(values)
    assert scaler.columns is None
    scaled = scaler.transform(values)
    assert isinstance(scaled, np.ndarray) and scaled.dtype == np.float32
    windows = values[:480].reshape(10, 48, 3)  # [B, L, F]
    np.testing.assert_array_equal(scaler.transform(windows), scaled[:480].reshape(10, 48, 3))
    restored = scaler.inverse_transform(scaled)
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, values, rtol=1e-5, atol=1e-9)
    frame_restored = FeatureScaler(clip=None).fit(train_frame())
    back = frame_restored.inverse_transform(frame_restored.transform(train_frame()))
    np.testing.assert_allclose(back.to_numpy(), train_frame().to_numpy(), rtol=1e-5, atol=1e-9)


def test_scaler_zero_variance_column_maps_to_zero() -> None:
    frame = train_frame()
    frame["const"] = 0.1  # n equal floats: their float mean may be off by an ulp
    scaler = FeatureScaler().fit(frame)
    assert scaler.std[-1] == 1.0 and scaler.mean[-1] == 0.1
    scaled = scaler.transform(frame)
    np.testing.assert_array_equal(scaled["const"].to_numpy(), 0.0)
    assert np.isfinite(scaled.to_numpy()).all()


def test_scaler_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    frame = train_frame(seed=3)
    scaler = FeatureScaler(clip=4.0).fit(frame)
    path = scaler.save(tmp_path / "sub" / "scaler.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"columns", "mean", "std", "clip"}
    assert data["columns"] == ["a", "b", "c"] and data["clip"] == 4.0
    loaded = FeatureScaler.load(path)
    assert loaded.is_fitted and loaded.clip == 4.0 and loaded.columns == scaler.columns
    assert np.array_equal(loaded.mean, scaler.mean) and np.array_equal(loaded.std, scaler.std)
    assert loaded.mean.tobytes() == scaler.mean.tobytes()  # bit-exact floats
    pd.testing.assert_frame_equal(loaded.transform(frame), scaler.transform(frame))
    again = FeatureScaler.from_dict(scaler.to_dict())
    assert again.std.tobytes() == scaler.std.tobytes()
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_scaler_column_mismatch_raises() -> None:
    frame = train_frame()
    scaler = FeatureScaler().fit(frame)
    with pytest.raises(ValueError, match="same names in another order"):
        scaler.transform(frame[["b", "a", "c"]])
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['d'\]"):
        scaler.transform(frame.rename(columns={"c": "d"}))
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        scaler.inverse_transform(frame[["a", "b"]])
    with pytest.raises(ValueError, match="2 features, the scaler was fitted on 3"):
        scaler.transform(frame.to_numpy()[:, :2])


def test_scaler_use_before_fit_raises(tmp_path: Path) -> None:
    scaler = FeatureScaler()
    frame = train_frame()
    for call in (
        lambda: scaler.transform(frame),
        lambda: scaler.inverse_transform(frame),
        scaler.to_dict,
        lambda: scaler.save(tmp_path / "s.json"),
    ):
        with pytest.raises(RuntimeError, match="not fitted; call fit"):
            call()
    assert not (tmp_path / "s.json").exists()


def test_scaler_bad_input() -> None:
    frame = train_frame()
    with pytest.raises(ValueError, match="clip must be a finite number > 0"):
        FeatureScaler(clip=0.0)
    with pytest.raises(ValueError, match="clip must be a finite number > 0"):
        FeatureScaler(clip=float("inf"))
    broken = frame.copy()
    broken.iloc[3, 1] = np.inf
    with pytest.raises(DataError, match="fit: column 'b' holds NaN or inf"):
        FeatureScaler().fit(broken)
    with pytest.raises(DataError, match="transform: column 'b' holds NaN or inf"):
        FeatureScaler().fit(frame).transform(broken)
    with pytest.raises(DataError, match="no rows"):
        FeatureScaler().fit(frame.iloc[:0])
    with pytest.raises(ValueError, match=r"must be \[T, F\]"):
        FeatureScaler().fit(np.zeros(5))
    state = FeatureScaler().fit(frame).to_dict()
    with pytest.raises(ValueError, match="std finite > 0"):
        FeatureScaler.from_dict({**state, "std": [1.0, 0.0, 1.0]})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['mean'\]"):
        FeatureScaler.from_dict({k: v for k, v in state.items() if k != "mean"})


def test_scaler_load_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "scaler.json"
    path.write_text("not json")
    with pytest.raises(ValueError, match="not a FeatureScaler JSON file"):
        FeatureScaler.load(path)
