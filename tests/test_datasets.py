"""Bundled datasets: the acceptance figures of the data layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradezoo.data import DataError, list_datasets, load_dataset
from tradezoo.data.datasets import load_bars


def test_list_datasets() -> None:
    names = [info.name for info in list_datasets()]
    assert {"bybit-btcusdt-1h", "yahoo-spy-1d"} <= set(names)
    assert all(info.attribution for info in list_datasets())


def test_btcusdt_rows_range_and_funding() -> None:
    bars, report = load_dataset("bybit-btcusdt-1h", return_report=True)
    assert len(bars) == 19261 and report.ok
    assert bars.index[0] == pd.Timestamp("2023-11-29 00:00", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2026-02-08 12:00", tz="UTC")
    assert bars.index.is_monotonic_increasing and not bars.index.has_duplicates
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "funding_rate"]
    stamps = bars.index[bars["funding_rate"].to_numpy() != 0]
    assert len(stamps) == 2348  # 2,349 BTCUSDT stamps in the file, one of them a real 0.0
    assert set(stamps.hour) == {0, 8, 16} and (stamps.minute == 0).all()
    assert stamps[0] == pd.Timestamp("2023-12-18 08:00", tz="UTC")
    assert bars.loc["2023-12-18 16:00", "funding_rate"] == pytest.approx(0.00010731)
    assert bars.attrs["symbol"] == "BTCUSDT" and bars.attrs["interval"] == "1h"
    assert bars.attrs["validated"] is True and "Bybit" in bars.attrs["attribution"]


def test_spy_rows_and_report_names_low_above_open_rows() -> None:
    bars, report = load_dataset("yahoo-spy-1d", return_report=True)
    assert len(bars) == 2519
    finding = report.by_rule("low_above_open_close")
    assert finding.count == 2
    assert [t.tz_convert("America/New_York").date().isoformat() for t in finding.examples] == [
        "2015-03-05",
        "2015-03-30",
    ]
    text = str(report)
    assert "low_above_open_close" in text and "2015-03-05" in text and "2015-03-30" in text
    # Dividend adjusted: the last close equals the raw close (the ratio is 1 at the end).
    raw = load_dataset("yahoo-spy-1d-raw")
    assert bars["close"].iloc[-1] == pytest.approx(raw["close"].iloc[-1])
    np.testing.assert_allclose(bars["close"], raw["adj_close"], rtol=1e-12)


def test_unknown_dataset_lists_available() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'btc'.*bybit-btcusdt-1h"):
        load_dataset("btc")
    with pytest.raises(DataError, match="unknown dataset"):
        load_bars("btc")


def test_callers_cannot_corrupt_the_cached_copy() -> None:
    first = load_dataset("bybit-btcusdt-1h")
    first.iloc[0, 0] = -1.0
    assert load_dataset("bybit-btcusdt-1h").iloc[0, 0] == 37820.0


def test_load_bars_from_frame_and_path(tmp_path) -> None:
    bars = load_dataset("bybit-btcusdt-1h").iloc[:50]
    again, _ = load_bars(bars)
    pd.testing.assert_frame_equal(again, bars)
    path = tmp_path / "b.csv"
    out = bars[["open", "high", "low", "close", "volume"]].copy()
    out.index = out.index.as_unit("ms").asi8
    out.rename_axis("timestamp").to_csv(path)
    from_file, _ = load_bars(path, symbol="BTCUSDT")
    np.testing.assert_array_equal(from_file["close"], bars["close"])


def test_load_bars_keeps_the_frames_attrs() -> None:
    bars = load_dataset("bybit-btcusdt-1h").iloc[:50]
    plain = pd.DataFrame(bars.to_dict("series"), index=bars.index)  # drops "validated"
    plain.attrs = {"symbol": "BTCUSDT", "source": "bybit-linear", "interval": "1h", "note": "x"}
    again, _ = load_bars(plain)
    assert again.attrs["symbol"] == "BTCUSDT"
    assert again.attrs["source"] == "bybit-linear"
    assert again.attrs["note"] == "x"
