"""Causal wavelet and VMD features: the reference transforms, the cache, the worker pool, the
missing-extra error, and the leak of the whole-series form the chapters use.

The future-perturbation test that guards every feature covers both groups in
tests/test_features.py (``test_future_perturbation_decompositions``).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import pywt
from vmdpy import VMD

from tradezoo.agents.config import resolve_options
from tradezoo.data.cache import CacheCorruptWarning
from tradezoo.data.decompositions import (
    DECOMP_EXTRA,
    VmdSpec,
    WaveletSpec,
    band_columns,
    cache_dir,
    decomposition_columns,
)
from tradezoo.data.errors import DataError
from tradezoo.data.features import FeatureSpec, compute_features

SMALL_VMD = {"modes": 3, "window": 16}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))


def random_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))


def as_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack(list(columns.values()), axis=1)


# -- the transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize(("wavelet", "levels"), [("db4", 3), ("haar", 4), ("sym3", 2)])
def test_wavelet_bands_are_pywt_swt_without_its_circular_boundary(wavelet: str,
                                                                  levels: int) -> None:
    """d_j[t] equals pywt.swt(norm=True)'s detail j at t - (L/2)(2^j - 1) (its alignment),
    wherever swt's circular wrap does not reach."""
    close = random_walk(512)
    spec = WaveletSpec(wavelet=wavelet, levels=levels, window=200)
    values = decomposition_columns(close, spec, use_cache=False)
    swt = pywt.swt(close, wavelet, level=levels, norm=True, trim_approx=False)
    half = pywt.Wavelet(wavelet).dec_len // 2
    rows = np.arange(spec.window - 1, 512)
    for j in range(1, levels + 1):
        approx_ref, detail_ref = swt[levels - j]
        shift = half * (2 ** j - 1)
        np.testing.assert_allclose(values[f"wav_d{j}"][rows] * close[rows],
                                   detail_ref[rows - shift], rtol=1e-9, atol=1e-9)
        if j == levels:
            np.testing.assert_allclose((values[f"wav_a{j}"][rows] + 1.0) * close[rows],
                                       approx_ref[rows - shift], rtol=1e-12)


def test_wavelet_value_at_t_uses_exactly_the_window() -> None:
    """Computed on the window alone, the last row is bit-identical to the whole-series one."""
    close = random_walk(400)
    spec = WaveletSpec(levels=2, window=40)
    whole = as_matrix(decomposition_columns(close, spec, use_cache=False))
    for t in (39, 150, 399):
        alone = as_matrix(decomposition_columns(close[t - 39: t + 1], spec, use_cache=False))
        assert np.array_equal(alone[-1], whole[t])
        assert np.isnan(alone[-2]).all()  # one bar fewer is not a full window


def test_vmd_row_is_vmdpy_on_the_trailing_window_modes_sorted_by_frequency() -> None:
    close = random_walk(60)
    spec = VmdSpec(**SMALL_VMD)
    values = as_matrix(decomposition_columns(close, spec, use_cache=False))
    assert np.isnan(values[:15]).all() and np.isfinite(values[15:]).all()
    for t in (15, 37, 59):
        window = close[t - 15: t + 1]
        u, _, omega = VMD(window / window[-1] - 1.0, 2000.0, 0.0, 3, 0, 1, 1e-7)
        order = np.argsort(omega[-1])
        modes = u[order]
        energy = ((modes - modes.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        expected = np.concatenate([modes[:, -1], energy / energy.sum(), omega[-1][order]])
        assert np.array_equal(values[t], expected)
    freqs = values[15:, 6:]
    assert (np.diff(freqs, axis=1) >= 0).all() and (freqs >= 0).all() and (freqs <= 0.5).all()


@pytest.mark.parametrize("group", ["wavelet", "vmd"])
def test_energy_shares_sum_to_one_and_flat_windows_share_equally(group: str) -> None:
    close = np.concatenate([random_walk(80), np.full(60, 50.0), random_walk(40, seed=1)])
    spec = WaveletSpec(wavelet="haar", levels=2, window=8) if group == "wavelet" else VmdSpec(
        **SMALL_VMD)
    columns = decomposition_columns(close, spec, use_cache=False)
    prefix = "wav_e_" if group == "wavelet" else "vmd_e"
    shares = np.stack([v for k, v in columns.items() if k.startswith(prefix)], axis=1)
    rows = np.arange(spec.window - 1, len(close))
    np.testing.assert_allclose(shares[rows].sum(axis=1), 1.0, rtol=1e-12)
    flat = np.arange(80 + spec.window - 1, 140)  # windows inside the flat stretch
    assert np.array_equal(shares[flat], np.full((len(flat), shares.shape[1]),
                                                1.0 / shares.shape[1]))
    values = as_matrix(columns)
    assert np.isfinite(values[rows]).all()


def test_bad_close_is_a_data_error_naming_the_column() -> None:
    close = random_walk(50)
    close[30] = 0.0
    with pytest.raises(DataError, match=r"'close' must be finite and > 0.*row 30"):
        decomposition_columns(close, WaveletSpec(wavelet="haar", levels=1, window=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wavelet": {"wavelet": "morl"}}, "discrete PyWavelets wavelet"),
        ({"wavelet": {"levels": 0}}, "levels must be >= 1"),
        ({"wavelet": {"window": 106}}, "must exceed the filters' support .* = 106"),
        ({"wavelet": {"depth": 3}}, r"unknown setting\(s\) \['depth'\]"),
        ({"wavelet": "db4"}, "null/false .* true .* or a mapping"),
        ({"vmd": {"window": 31}}, "window must be even"),
        ({"vmd": {"alpha": -1}}, "alpha must be finite and > 0"),
        ({"vmd": {"tol": float("nan")}}, "tol must be finite and > 0"),
        ({"vmd": {"modes": 0}}, "modes must be >= 1"),
        ({"vmd": {"workers": 0}}, "workers must be a positive integer or -1"),
    ],
)
def test_bad_settings_name_the_field_and_the_rule(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSpec(**kwargs)


# -- FeatureSpec, config -------------------------------------------------------------------------


def test_groups_are_off_by_default_and_round_trip_without_execution_settings() -> None:
    assert FeatureSpec().wavelet is None and FeatureSpec().vmd is None
    assert not any(c.startswith(("wav_", "vmd_")) for c in FeatureSpec().columns())
    spec = FeatureSpec(wavelet=True, vmd={"modes": 2, "workers": 2})
    assert spec.wavelet == WaveletSpec() and spec.vmd == VmdSpec(modes=2)
    saved = spec.to_dict()
    assert saved["wavelet"] == {"wavelet": "db4", "levels": 4, "window": 256}
    assert saved["vmd"] == {"modes": 2, "alpha": 2000.0, "tol": 1e-7, "window": 256}
    assert FeatureSpec.from_dict(saved) == spec
    assert FeatureSpec.coerce({"vmd": True}).vmd == VmdSpec()
    assert spec.columns(funding=True)[-1] == "funding_rate"
    assert spec.warmup_rows == 255
    assert spec.columns()[-17:] == (
        "dt", "wav_d1", "wav_d2", "wav_d3", "wav_d4", "wav_a4",
        "wav_e_d1", "wav_e_d2", "wav_e_d3", "wav_e_d4", "wav_e_a4",
        "vmd_m1", "vmd_m2", "vmd_e1", "vmd_e2", "vmd_f1", "vmd_f2",
    )


def test_enabled_through_yaml_and_set_like_every_featurespec_field(tmp_path: object) -> None:
    config = tmp_path / "run.yaml"  # type: ignore[operator]
    config.write_text("features:\n  wavelet: {levels: 3}\n  vmd: true\n")
    options = resolve_options("train-supervised", config_path=config,
                              assignments=["features.wavelet.window=128",
                                           "features.vmd.workers=2"])
    spec = FeatureSpec.coerce(options["features"])
    assert spec.wavelet == WaveletSpec(levels=3, window=128)
    assert spec.vmd == VmdSpec() and spec.vmd.workers == 2


def test_band_columns_group_each_level_and_mode() -> None:
    names = FeatureSpec(wavelet={"levels": 2}, vmd={"modes": 2}).columns()
    bands = band_columns(names)
    assert list(bands) == ["wav_d1", "wav_d2", "wav_a2", "vmd_1", "vmd_2"]
    assert [names[i] for i in bands["wav_d2"]] == ["wav_d2", "wav_e_d2"]
    assert [names[i] for i in bands["vmd_2"]] == ["vmd_m2", "vmd_e2", "vmd_f2"]


# -- cache and workers ---------------------------------------------------------------------------


def test_cache_is_private_keyed_by_content_and_settings_and_hit_bit_for_bit() -> None:
    close = random_walk(300)
    spec = WaveletSpec(levels=2, window=40)
    first = as_matrix(decomposition_columns(close, spec))
    folder = cache_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert len(files) == 1 and files[0].name.startswith("wavelet-")
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    mtime = files[0].stat().st_mtime_ns
    again = as_matrix(decomposition_columns(close, spec))
    assert np.array_equal(first, again, equal_nan=True)
    assert files[0].stat().st_mtime_ns == mtime  # read, not rewritten
    changed = close.copy()
    changed[-1] *= 1.0 + 1e-12
    decomposition_columns(changed, spec)  # other content: another key
    decomposition_columns(close, WaveletSpec(levels=3, window=80))  # other settings
    decomposition_columns(close, VmdSpec(modes=2, window=16, workers=1))
    decomposition_columns(close, VmdSpec(modes=2, window=16, workers=2))  # same key
    assert len(list(folder.iterdir())) == 4


def test_cache_dir_is_made_private_again() -> None:
    folder = cache_dir()
    folder.chmod(0o755)
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_cache_file_is_reported_and_recomputed(damage: str) -> None:
    close = random_walk(200)
    spec = WaveletSpec(wavelet="haar", levels=2, window=16)
    expected = as_matrix(decomposition_columns(close, spec))
    (path,) = cache_dir().iterdir()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # a bit flipped inside the values: only the checksum can tell
        values_at = data.index(np.float64(expected[100, 0]).tobytes())
        path.write_bytes(data[:values_at] + bytes([data[values_at] ^ 1])
                         + data[values_at + 1:])
    with pytest.warns(CacheCorruptWarning, match="corrupt"):
        recomputed = as_matrix(decomposition_columns(close, spec))
    assert np.array_equal(recomputed, expected, equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(as_matrix(decomposition_columns(close, spec)), expected,
                              equal_nan=True)


def test_worker_pool_gives_the_same_bits_as_one_process() -> None:
    close = random_walk(140)
    one = as_matrix(decomposition_columns(close, VmdSpec(**SMALL_VMD), use_cache=False))
    two = as_matrix(decomposition_columns(close, VmdSpec(**SMALL_VMD, workers=2),
                                          use_cache=False))
    assert np.array_equal(one, two, equal_nan=True)


def test_missing_extra_is_an_error_naming_it() -> None:
    """Each group without its package (import blocked in a fresh interpreter)."""
    code = (
        "import sys\n"
        "sys.modules['pywt'] = sys.modules['vmdpy'] = None\n"
        "from tradezoo.data.features import FeatureSpec\n"
        "FeatureSpec()  # the default spec needs neither\n"
        "for group in ('wavelet', 'vmd'):\n"
        "    try:\n"
        "        FeatureSpec(**{group: True})\n"
        "    except ImportError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ})
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, group, package in zip(lines, ("wavelet", "vmd"), ("PyWavelets", "vmdpy"),
                                    strict=True):
        assert line.startswith(f"MissingExtraError FeatureSpec.{group} needs the {package}")
        assert f"pip install '{DECOMP_EXTRA}'" in line


# -- the leak of the whole-series form ------------------------------------------------------------


def _whole_series_wavelet(close: np.ndarray) -> np.ndarray:
    """The chapters' form: db4, 4 levels over the whole series, each level reconstructed to
    the series' length (pywt.wavedec + waverec of one band at a time)."""
    coeffs = pywt.wavedec(close, "db4", level=4)
    bands = []
    for keep in range(len(coeffs)):
        only = [c if i == keep else np.zeros_like(c) for i, c in enumerate(coeffs)]
        bands.append(pywt.waverec(only, "db4")[: len(close)])
    return np.stack(bands, axis=1)


def _whole_series_vmd(close: np.ndarray) -> np.ndarray:
    """The chapters' form: vmdpy (4 modes, alpha 2000) over the whole series."""
    u, _, _ = VMD(close, 2000.0, 0.0, 4, 0, 1, 1e-7)
    return u.T


def test_whole_series_form_leaks_the_future_and_the_causal_form_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Change every bar after t: the whole-series decompositions change BEFORE t; the causal
    columns do not change at or before t. Prints the size of the leak (docs/data.md)."""
    close = random_walk(300, seed=3)
    t = 240
    future = close.copy()
    future[t + 1:] = close[t] * np.exp(np.cumsum(np.random.default_rng(4).normal(
        0.0, 0.02, len(close) - t - 1)))
    lines = []
    for name, transform in (("wavelet db4/4 (wavedec)", _whole_series_wavelet),
                            ("VMD 4 modes (vmdpy)", _whole_series_vmd)):
        before, after = transform(close), transform(future)
        past = slice(0, t + 1)
        changed = np.abs(after[past] - before[past]) > 1e-9 * np.abs(before[past]).max()
        assert changed.any(), name
        rows = np.flatnonzero(changed.any(axis=1))
        lines.append(f"{name}: {len(rows)} of {t + 1} rows at or before t changed, earliest "
                     f"{t - rows[0]} bars before t; max |change| at t "
                     f"{np.abs(after[t] - before[t]).max() / close[t]:.2e} of the price")
        assert changed[t].any() and changed[t - 20].any(), name  # well before t
    for spec, start in ((WaveletSpec(levels=4, window=128), 0), (VmdSpec(modes=4, window=16),
                                                                  t - 60)):
        causal_before = as_matrix(decomposition_columns(close[start: t + 20], spec))
        causal_after = as_matrix(decomposition_columns(future[start: t + 20], spec))
        t_row = t - start
        assert np.array_equal(causal_before[: t_row + 1], causal_after[: t_row + 1],
                              equal_nan=True)
        assert not np.array_equal(causal_before[t_row + 1:], causal_after[t_row + 1:])
        lines.append(f"causal {spec.group}: 0 rows at or before t changed")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_features_frame_with_both_groups() -> None:
    index = pd.date_range("2024-01-01", periods=150, freq="1h", tz="UTC", name="timestamp")
    close = random_walk(150)
    bars = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": np.ones(150)}, index=index)
    spec = FeatureSpec(wavelet={"wavelet": "haar", "levels": 3, "window": 24},
                       vmd={"modes": 2, "window": 32})
    features = compute_features(bars, spec)
    assert features.attrs["warmup_rows"] == 99 == spec.warmup_rows
    assert features.dtypes.eq(np.float32).all() and np.isfinite(features.to_numpy()).all()
    assert [c for c in features.columns if c.startswith(("wav_", "vmd_"))] == [
        *spec.wavelet.columns(), *spec.vmd.columns()]
