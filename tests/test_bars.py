"""``read_bars`` on every layout users have, and its errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradezoo.data import DataError, read_bars
from tradezoo.data.bars import bars_from_frame, merge_funding
from tradezoo.data.datasets import bundled_path

SPY = bundled_path("yahoo_SPY_1d_2007-12-31_2017-12-29.csv.gz")
BTC = bundled_path("bybit_linear_BTCUSDT_1h.csv.gz")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _assert_bars_frame(frame: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == "timestamp"
    assert list(frame.columns[:5]) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in frame.dtypes)


def test_bybit_layout_ms_timestamps() -> None:
    frame = read_bars(BTC, symbol="BTCUSDT")
    _assert_bars_frame(frame)
    assert len(frame) == 19261
    assert frame.index[0] == pd.Timestamp("2023-11-29 00:00", tz="UTC")
    assert frame.attrs["layout"] == "bybit" and frame.attrs["interval"] == "1h"
    assert frame.iloc[0]["open"] == 37820.0 and frame.iloc[1]["volume"] == 6562.831


def test_bybit_layout_with_turnover(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "k.csv",
        "timestamp,open,high,low,close,volume,turnover\n"
        "1704067200000,42283.6,42554.4,42261.0,42475.2,1000.5,42400000.25\n"
        "1704070800000,42475.2,42600.0,42400.0,42500.0,800.0,34000000.0\n",
    )
    frame = read_bars(path)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "turnover"]
    assert frame.index[1] == pd.Timestamp("2024-01-01 01:00", tz="UTC")
    assert frame.attrs["symbol"] == "k"


def test_yahoo_csv_dates_are_new_york_midnight() -> None:
    frame = read_bars(SPY)
    _assert_bars_frame(frame)
    assert frame.attrs["layout"] == "yahoo"
    # 2007-12-31 is winter time (UTC-5); 2015-03-30 is summer time (UTC-4).
    assert frame.index[0] == pd.Timestamp("2007-12-31 05:00", tz="UTC")
    assert pd.Timestamp("2015-03-30 04:00", tz="UTC") in frame.index
    assert frame["adj_close"].iloc[0] == pytest.approx(118.624741)
    assert frame["close"].iloc[0] == pytest.approx(146.210007)


def test_yahoo_adjust_scales_prices_by_adj_close_ratio() -> None:
    raw = read_bars(SPY)
    adjusted = read_bars(SPY, adjust=True)
    assert "adj_close" not in adjusted
    factor = raw["adj_close"] / raw["close"]
    np.testing.assert_allclose(adjusted["close"], raw["adj_close"], rtol=1e-12)
    np.testing.assert_allclose(adjusted["open"], raw["open"] * factor, rtol=1e-12)
    np.testing.assert_array_equal(adjusted["volume"], raw["volume"])
    assert adjusted.attrs["adjusted"] is True and raw.attrs["adjusted"] is False


def test_yfinance_history_to_csv(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "spy.csv",
        "Date,Open,High,Low,Close,Volume,Dividends,Stock Splits,Capital Gains\n"
        "2017-12-01 00:00:00-05:00,263.41,263.96,259.43,263.11,164390900,0.0,0.0,0.0\n"
        "2017-12-04 00:00:00-05:00,264.95,265.44,262.73,262.79,94040600,0.0,0.0,0.0\n",
    )
    frame = read_bars(path, symbol="SPY")
    _assert_bars_frame(frame)
    assert frame.attrs["layout"] == "yfinance"
    assert frame.index[0] == pd.Timestamp("2017-12-01 05:00", tz="UTC")
    assert {"dividends", "stock_splits", "capital_gains"} <= set(frame.columns)


def test_yfinance_intraday_datetime_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "spy_1h.csv",
        "Datetime,Open,High,Low,Close,Volume,Dividends,Stock Splits\n"
        "2024-06-03 09:30:00-04:00,529.0,530.0,528.0,529.5,100,0.0,0.0\n"
        "2024-06-03 10:30:00-04:00,529.5,531.0,529.0,530.5,120,0.0,0.0\n",
    )
    frame = read_bars(path)
    assert frame.index[0] == pd.Timestamp("2024-06-03 13:30", tz="UTC")
    assert frame.attrs["interval"] == "1h"


def test_yf_download_multiindex_csv(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dl.csv",
        "Price,Close,High,Low,Open,Volume\n"
        "Ticker,SPY,SPY,SPY,SPY,SPY\n"
        "Date,,,,,\n"
        "2017-12-01,263.115082,263.96076629674326,259.4339172214175,263.41357525596686,164390900\n"
        "2017-12-04,262.796753,265.4431989293215,262.73703026738383,264.9557007325698,94040600\n",
    )
    frame = read_bars(path)
    _assert_bars_frame(frame)
    assert frame.index[1] == pd.Timestamp("2017-12-04 05:00", tz="UTC")
    assert frame["open"].iloc[0] == pytest.approx(263.41357525596686)


def test_yf_download_several_tickers_is_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dl2.csv",
        "Price,Close,Close\nTicker,SPY,AAPL\nDate,,\n2017-12-01,1,2\n",
    )
    with pytest.raises(DataError, match="several tickers"):
        read_bars(path)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("1704067200", "2024-01-01 00:00"),
        ("1704067200000", "2024-01-01 00:00"),
        ("2024-01-01T00:00:00Z", "2024-01-01 00:00"),
        ("2024-01-01 00:00:00", "2024-01-01 00:00"),
        ("2024-01-01 02:00:00+02:00", "2024-01-01 00:00"),
    ],
)
def test_generic_layout_time_formats(tmp_path: Path, stamp: str, expected: str) -> None:
    path = _write(
        tmp_path, "g.csv", f"timestamp,open,high,low,close,volume\n{stamp},1,2,0.5,1.5,10\n"
    )
    frame = read_bars(path, interval="1h")
    assert frame.index[0] == pd.Timestamp(expected, tz="UTC")


def test_generic_naive_times_in_given_zone(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "g.csv", "time,Open,High,Low,Close,Volume\n2024-07-01 09:30,1,2,0.5,1.5,10\n"
    )
    frame = read_bars(path, tz="America/New_York", interval="1h")
    assert frame.index[0] == pd.Timestamp("2024-07-01 13:30", tz="UTC")


def test_parquet_round_trip(tmp_path: Path) -> None:
    frame = read_bars(BTC).iloc[:100]
    path = tmp_path / "btc.parquet"
    frame.to_parquet(path)
    back = read_bars(path, symbol="BTCUSDT")
    pd.testing.assert_frame_equal(back, frame, check_freq=False)


def test_gzip_csv_reads_like_plain(tmp_path: Path) -> None:
    plain = tmp_path / "spy.csv"
    with gzip.open(SPY, "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    pd.testing.assert_frame_equal(read_bars(plain, symbol="x"), read_bars(SPY, symbol="x"))


def test_missing_columns_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.csv", "timestamp,open,high,close\n1704067200000,1,2,1.5\n")
    with pytest.raises(DataError, match=r"missing required column\(s\) \['low', 'volume'\]"):
        read_bars(path)


def test_no_time_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.csv", "open,high,low,close,volume\n1,2,0.5,1.5,10\n")
    with pytest.raises(DataError, match="no time column"):
        read_bars(path)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = _write(tmp_path, "e.csv", "")
    with pytest.raises(DataError, match="empty"):
        read_bars(empty)
    header = _write(tmp_path, "h.csv", "timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no rows"):
        read_bars(header)


def test_unparseable_times_and_values(tmp_path: Path) -> None:
    bad_time = _write(
        tmp_path, "t.csv", "timestamp,open,high,low,close,volume\nyesterday,1,2,0.5,1.5,1\n"
    )
    with pytest.raises(DataError, match="cannot parse the time column"):
        read_bars(bad_time)
    bad_value = _write(
        tmp_path, "v.csv", "timestamp,open,high,low,close,volume\n1704067200000,1,2,abc,1.5,1\n"
    )
    with pytest.raises(DataError, match="'low' is not numeric"):
        read_bars(bad_value)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="no such bars file"):
        read_bars("/nonexistent/bars.csv")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_bars(path)


def test_bars_from_frame_accepts_naive_index_and_capitalised_columns() -> None:
    raw = pd.DataFrame(
        {
            "Open": [1.0, 2.0],
            "High": [2.0, 3.0],
            "Low": [0.5, 1.5],
            "Close": [1.5, 2.5],
            "Volume": [1, 2],
        },
        index=pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00"]),
    )
    frame = bars_from_frame(raw, symbol="X")
    _assert_bars_frame(frame)
    assert frame.attrs["interval"] == "1h"
    with pytest.raises(DataError, match="empty"):
        bars_from_frame(raw.iloc[:0])


def test_merge_funding_at_stamps_and_gap_moves_to_next_bar() -> None:
    index = pd.date_range("2024-01-01", periods=10, freq="1h", tz="UTC").delete(8)
    bars = pd.DataFrame(
        {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}, index=index
    )
    bars.attrs = {"symbol": "X", "interval": "1h", "source": "test"}
    funding = pd.Series(
        [0.0001, -0.0002, 0.0003, 0.5],
        index=pd.DatetimeIndex(
            ["2024-01-01 00:00", "2024-01-01 04:00", "2024-01-01 08:00", "2024-01-02 00:00"],
            tz="UTC",
        ),
    )
    with pytest.warns(UserWarning, match="1 funding stamp"):
        merged = merge_funding(bars, funding)
    expected = np.zeros(9)
    expected[[0, 4, 8]] = [0.0001, -0.0002, 0.0003]  # 08:00 is missing: charged at 09:00
    np.testing.assert_array_equal(merged["funding_rate"].to_numpy(), expected)
    assert merged.attrs["funding_end"] == "2024-01-01T08:00:00+00:00"


# --------------------------------------------------------------------------------------------
# epoch units, ranges and source labels
# --------------------------------------------------------------------------------------------

HOUR_S = 1704067200  # 2024-01-01 00:00 UTC in epoch seconds


def _epoch_csv(tmp_path: Path, name: str, stamps: list[int], header: str = "") -> Path:
    header = header or "timestamp,open,high,low,close,volume"
    extra = ",100.0" * (len(header.split(",")) - 6)
    rows = "".join(f"{t},1,2,0.5,1.5,10{extra}\n" for t in stamps)
    return _write(tmp_path, name, f"{header}\n{rows}")


def test_epoch_integers_are_read_in_the_unit_their_magnitude_implies(tmp_path: Path) -> None:
    expected = pd.date_range("2024-01-01", periods=4, freq="1h", tz="UTC", name="timestamp")
    for unit, factor in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        stamps = [(HOUR_S + 3600 * i) * factor for i in range(4)]
        frame = read_bars(_epoch_csv(tmp_path, f"{unit}.csv", stamps))
        assert frame.index.equals(expected), unit
        assert frame.attrs["interval"] == "1h"
        # Parquet and in-memory frames with a numeric time column follow the same rule.
        table = pd.DataFrame({"timestamp": stamps, "open": 1.0, "high": 2.0, "low": 0.5,
                              "close": 1.5, "volume": 10.0})
        table.to_parquet(tmp_path / f"{unit}.parquet", index=False)
        assert read_bars(tmp_path / f"{unit}.parquet").index.equals(expected), unit
        assert bars_from_frame(table).index.equals(expected), unit


def test_ambiguous_epoch_times_are_an_error_and_time_unit_overrides(tmp_path: Path) -> None:
    # Seconds before 2001 are below the seconds band: no unit is implied.
    path = _epoch_csv(tmp_path, "old.csv", [599_616_000, 599_619_600])
    with pytest.raises(DataError, match=r"old.csv: row 1 .*599616000.*ambiguous.*time_unit"):
        read_bars(path)
    frame = read_bars(path, time_unit="s")
    assert frame.index[0] == pd.Timestamp("1989-01-01", tz="UTC")
    # The override also beats a magnitude that implies another unit.
    ms = _epoch_csv(tmp_path, "ms.csv", [HOUR_S * 1000, (HOUR_S + 3600) * 1000])
    assert read_bars(ms, time_unit="ms").index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    with pytest.raises(ValueError, match=r"time_unit must be one of \['s', 'ms', 'us', 'ns'\]"):
        read_bars(ms, time_unit="minutes")  # type: ignore[arg-type]


def test_mixed_epoch_units_are_an_error_naming_the_first_row_of_each(tmp_path: Path) -> None:
    # The first half in seconds, the second in milliseconds.
    stamps = [HOUR_S + 3600 * i for i in range(3)] + [
        (HOUR_S + 3600 * i) * 1000 for i in range(3, 6)
    ]
    path = _epoch_csv(tmp_path, "mixed.csv", stamps)
    with pytest.raises(
        DataError,
        match=r"mixes epoch units: seconds from row 1 \(1704067200\), milliseconds from row 4 "
        r"\(1704078000000\)",
    ):
        read_bars(path)


def test_times_outside_1970_to_2100_are_an_error(tmp_path: Path) -> None:
    micros = _epoch_csv(tmp_path, "us.csv", [HOUR_S * 10**6, (HOUR_S + 3600) * 10**6])
    # Microseconds read as milliseconds would be the year 55,969.
    with pytest.raises(DataError, match=r"row 1 .*in milliseconds lies outside the years 1970"):
        read_bars(micros, time_unit="ms")
    late = _write(
        tmp_path, "late.csv",
        "timestamp,open,high,low,close,volume\n2100-12-31,1,2,0.5,1.5,1\n2101-01-01,1,2,0.5,1.5,1\n",
    )
    with pytest.raises(DataError, match=r"late.csv: row 2 has time 2101-01-01.*1970 to 2100"):
        read_bars(late)
    early = pd.DataFrame({"open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5],
                          "volume": [1.0]}, index=pd.DatetimeIndex(["1969-12-31"]))
    with pytest.raises(DataError, match=r"row 1 has time 1969-12-31"):
        bars_from_frame(early)


def test_only_bybit_kline_shape_is_labelled_bybit(tmp_path: Path) -> None:
    stamps = [(HOUR_S + 3600 * i) * 1000 for i in range(3)]
    generic = read_bars(_epoch_csv(tmp_path, "generic.csv", stamps))
    assert generic.attrs["source"] == "file"  # millisecond times alone say nothing
    assert read_bars(BTC).attrs["source"] == "file"  # no turnover: not Bybit's shape
    for header in (
        "startTime,openPrice,highPrice,lowPrice,closePrice,volume,turnover",
        "timestamp,open,high,low,close,volume,turnover",
        "timestamp,open,high,low,close,volume,turnover,funding_rate",
    ):
        frame = read_bars(_epoch_csv(tmp_path, "k.csv", stamps, header))
        assert frame.attrs["source"] == "bybit", header
        assert list(frame.columns[:6]) == ["open", "high", "low", "close", "volume", "turnover"]
    for header in (
        "timestamp,open,high,low,close,volume,turnover,vwap",  # an extra column
        "timestamp,open,high,low,close,turnover,volume",  # another order
    ):
        frame = read_bars(_epoch_csv(tmp_path, "k.csv", stamps, header))
        assert frame.attrs["source"] == "file", header
    seconds = [HOUR_S + 3600 * i for i in range(3)]
    shaped = _epoch_csv(tmp_path, "s.csv", seconds, "timestamp,open,high,low,close,volume,turnover")
    assert read_bars(shaped).attrs["source"] == "file"  # Bybit sends milliseconds
    assert read_bars(SPY).attrs["source"] == "yahoo"


def test_env_and_trainer_refuse_a_file_source_without_costs(tmp_path: Path) -> None:
    from tradezoo.agents.data import prepare_data
    from tradezoo.backtest.costs import CostModel
    from tradezoo.envs.trading_env import TradingEnv

    path = tmp_path / "bars.csv"
    bars = read_bars(BTC).iloc[:400]
    table = bars.reset_index()
    table["timestamp"] = table["timestamp"].astype("int64") // 10**3  # us -> epoch ms
    table.to_csv(path, index=False)
    rule = r"source: no default cost model for 'file'.*pass costs=CostModel"
    with pytest.raises(ValueError, match=rule):
        TradingEnv(str(path), window=8)
    with pytest.raises(ValueError, match=rule):
        prepare_data(str(path), window=8)
    env = TradingEnv(str(path), window=8, costs=CostModel.bybit_linear(), episode_length=20)
    assert env.config.costs == (CostModel.bybit_linear(),)


def test_cli_data_info_reads_microsecond_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradezoo.cli import main

    stamps = [(HOUR_S + 3600 * i) * 10**6 for i in range(120)]
    assert main(["data", "info", str(_epoch_csv(tmp_path, "us.csv", stamps))]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "from file: 120 bars, 2024-01-01 00:00:00+00:00 to 2024-01-05 23:00:00+00:00" in out
