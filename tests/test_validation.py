"""``validate_bars``: every rule, under both repair policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradezoo.data import DataError, validate_bars
from tradezoo.data.datasets import load_bars


def _bars(n: int = 6, freq: str = "1h", start: str = "2024-01-01", **attrs: object) -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp")
    close = 100.0 + np.arange(n, dtype=float)
    frame = pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 10.0),
        },
        index=index,
    )
    frame.attrs = {"symbol": "TEST", "interval": freq, "source": "test", **attrs}
    return frame


def test_clean_frame_passes_unchanged() -> None:
    bars = _bars()
    out, report = validate_bars(bars, repair="none")
    pd.testing.assert_frame_equal(out, bars)
    assert report.ok and report.rows_in == report.rows_out == 6
    assert out.attrs["validated"] is True
    assert "all checks passed" in str(report)


def test_input_is_not_modified() -> None:
    bars = _bars()
    bars.iloc[2, bars.columns.get_loc("high")] = 50.0
    before = bars.copy()
    validate_bars(bars)
    pd.testing.assert_frame_equal(bars, before)


def test_identical_duplicates_dropped_and_reported() -> None:
    bars = _bars()
    doubled = pd.concat([bars.iloc[:3], bars.iloc[2:3], bars.iloc[3:]])
    doubled.attrs = bars.attrs
    out, report = validate_bars(doubled)
    pd.testing.assert_frame_equal(out, bars, check_freq=False)
    finding = report.by_rule("duplicates")
    assert finding.severity == "repaired" and finding.count == 1
    assert finding.examples == (bars.index[2],)
    with pytest.raises(DataError, match=r"'duplicates'.*repair='none'"):
        validate_bars(doubled, repair="none")


def test_differing_duplicates_are_an_error_naming_the_stamp() -> None:
    bars = _bars()
    other = bars.iloc[2:3].copy()
    other["close"] += 1.0
    doubled = pd.concat([bars.iloc[:3], other, bars.iloc[3:]])
    with pytest.raises(DataError, match=r"rule 'duplicates'.*different values.*2024-01-01 02:00"):
        validate_bars(doubled)


def test_unsorted_index_is_an_error() -> None:
    bars = _bars().iloc[[0, 2, 1, 3, 4, 5]]
    with pytest.raises(DataError, match=r"rule 'increasing'.*not sorted.*2024-01-01 01:00"):
        validate_bars(bars)


@pytest.mark.parametrize("column", ["open", "close", "volume"])
def test_nan_is_an_error(column: str) -> None:
    bars = _bars()
    bars.iloc[3, bars.columns.get_loc(column)] = np.nan
    with pytest.raises(DataError, match=rf"rule 'nan'.*\['{column}'\].*2024-01-01 03:00"):
        validate_bars(bars)


def test_infinite_funding_rate_is_an_error() -> None:
    bars = _bars()
    bars["funding_rate"] = 0.0
    bars.iloc[1, bars.columns.get_loc("funding_rate")] = np.inf
    with pytest.raises(DataError, match=r"'nan'.*funding_rate"):
        validate_bars(bars)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_price_is_an_error(value: float) -> None:
    bars = _bars()
    bars.iloc[4, bars.columns.get_loc("low")] = value
    with pytest.raises(DataError, match=r"rule 'non_positive_price'.*2024-01-01 04:00"):
        validate_bars(bars)


def test_negative_volume_is_an_error() -> None:
    bars = _bars()
    bars.iloc[1, bars.columns.get_loc("volume")] = -5.0
    with pytest.raises(DataError, match="negative_volume"):
        validate_bars(bars)


def test_high_and_low_inconsistencies_are_clipped_and_reported() -> None:
    bars = _bars()
    bars.iloc[1, bars.columns.get_loc("high")] = bars["close"].iloc[1] - 0.1  # high < close
    bars.iloc[3, bars.columns.get_loc("low")] = bars["open"].iloc[3] + 0.1  # low > open
    out, report = validate_bars(bars)
    assert out["high"].iloc[1] == bars["close"].iloc[1]
    assert out["low"].iloc[3] == bars["open"].iloc[3]
    assert report.by_rule("high_below_open_close").examples == (bars.index[1],)
    assert report.by_rule("low_above_open_close").examples == (bars.index[3],)
    untouched = out.drop(index=bars.index[[1, 3]])
    pd.testing.assert_frame_equal(untouched, bars.drop(index=bars.index[[1, 3]]))
    with pytest.raises(DataError, match="high_below_open_close"):
        validate_bars(bars, repair="none")


def test_zero_volume_reported_not_changed() -> None:
    bars = _bars()
    bars.iloc[2, bars.columns.get_loc("volume")] = 0.0
    out, report = validate_bars(bars)
    assert out["volume"].iloc[2] == 0.0
    assert report.by_rule("zero_volume").severity == "warning"
    with pytest.raises(DataError, match="zero_volume"):
        validate_bars(bars, repair="none")


def test_gaps_reported_never_filled() -> None:
    bars = _bars(10).drop(index=pd.date_range("2024-01-01 03:00", periods=3, freq="1h", tz="UTC"))
    out, report = validate_bars(bars)
    assert len(out) == 7
    gaps = report.by_rule("gaps")
    assert gaps.count == 3 and gaps.examples == (pd.Timestamp("2024-01-01 06:00", tz="UTC"),)
    with pytest.raises(DataError, match="'gaps'"):
        validate_bars(bars, repair="none")


def test_exchange_calendar_skips_weekends_but_reports_weekday_gaps() -> None:
    days = pd.bdate_range("2024-01-01", "2024-01-31", tz="America/New_York").tz_convert("UTC")
    bars = _bars(len(days), freq="1D", source="yahoo").set_axis(days.rename("timestamp"))
    bars.attrs = {"symbol": "X", "interval": "1d", "source": "yahoo"}
    _, report = validate_bars(bars)
    assert report.calendar == "exchange" and report.by_rule("gaps") is None
    _, report = validate_bars(bars.drop(index=bars.index[10]))
    assert report.by_rule("gaps").count == 1


def test_other_time_zone_is_converted_and_reported() -> None:
    bars = _bars()
    local = bars.tz_convert("Europe/Berlin")
    out, report = validate_bars(local)
    assert out.index.equals(bars.index)
    assert report.by_rule("index_tz").severity == "repaired"


def test_structural_errors() -> None:
    bars = _bars()
    with pytest.raises(DataError, match="no rows"):
        validate_bars(bars.iloc[:0])
    with pytest.raises(DataError, match=r"index_tz.*naive"):
        validate_bars(bars.tz_localize(None))
    with pytest.raises(DataError, match="index_type"):
        validate_bars(bars.reset_index())
    with pytest.raises(DataError, match=r"missing_columns.*\['volume'\]"):
        validate_bars(bars.drop(columns="volume"))


def test_message_names_the_source() -> None:
    bars = _bars()
    bars.attrs["path"] = "/data/mybars.csv"
    bars.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match=r"^/data/mybars.csv: rule 'nan'"):
        validate_bars(bars)


def test_report_serialises() -> None:
    bars = _bars()
    bars.iloc[2, bars.columns.get_loc("volume")] = 0.0
    _, report = validate_bars(bars)
    as_dict = report.to_dict()
    assert as_dict["findings"][0]["rule"] == "zero_volume"
    assert as_dict["findings"][0]["examples"] == ["2024-01-01T02:00:00+00:00"]
    assert "zero_volume" in str(report)


def _walk(n: int = 200, seed: int = 3) -> pd.DataFrame:
    """Hourly bars of a random walk (0.5 % hourly moves), open = previous close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.005, n)))
    bars = _bars(n)
    opens = np.concatenate([[close[0]], close[:-1]])
    bars["open"], bars["close"] = opens, close
    bars["high"] = np.maximum(opens, close) * 1.001
    bars["low"] = np.minimum(opens, close) * 0.999
    return bars


def test_bar_off_the_interval_grid_is_reported_never_moved() -> None:
    bars = _bars(10)
    moved = bars.index.tolist()
    moved[5] = moved[5] - pd.Timedelta(seconds=59)  # 04:59:01 instead of 05:00:00
    bars.index = pd.DatetimeIndex(moved, name="timestamp")
    out, report = validate_bars(bars)
    finding = report.by_rule("off_grid")
    assert finding.severity == "warning" and finding.count == 1
    assert finding.examples == (moved[5],)
    pd.testing.assert_frame_equal(out, bars, check_freq=False)  # nothing moved
    with pytest.raises(DataError, match=r"'off_grid'.*repair='none'.*04:59:01"):
        validate_bars(bars, repair="none")
    # The grid's phase is the one most bars share: Yahoo's hourly bars open at half past,
    # and daily exchange bars at New York midnight stay on it across DST changes.
    half_past = _bars(10, start="2024-06-03 13:30")
    assert validate_bars(half_past, repair="none")[1].by_rule("off_grid") is None
    local_midnights = pd.date_range("2024-03-01", periods=30, freq="D", tz="America/New_York")
    daily = _bars(30)
    daily.index = local_midnights.tz_convert("UTC").rename("timestamp")
    daily.attrs["interval"] = "1d"
    assert validate_bars(daily, calendar="exchange")[1].by_rule("off_grid") is None
    # In UTC the ten winter-time days (05:00 UTC, to 10 March) are off the summer-time grid.
    assert validate_bars(daily, calendar="24/7")[1].by_rule("off_grid").count == 10
    # A file read with tz= is judged in that zone's wall time, whatever the calendar.
    daily.attrs["timezone"] = "America/New_York"
    assert validate_bars(daily, calendar="24/7")[1].by_rule("off_grid") is None


def test_a_close_spike_that_reverts_is_reported_never_changed() -> None:
    bars = _walk()
    bars.iloc[100, bars.columns.get_loc("close")] *= 1000.0
    bars.iloc[100, bars.columns.get_loc("high")] = bars["close"].iloc[100]
    out, report = validate_bars(bars)
    finding = report.by_rule("spike")
    assert finding.severity == "warning" and finding.count == 1
    assert finding.examples == (bars.index[100],)
    pd.testing.assert_frame_equal(out, bars)  # nothing changed
    with pytest.raises(DataError, match=r"'spike'.*repair='none'"):
        validate_bars(bars, repair="none")
    # A downward spike is one too; a level shift (no reversion) and a long wick are not.
    down = _walk()
    down.iloc[50, down.columns.get_loc("close")] /= 50.0
    down.iloc[50, down.columns.get_loc("low")] = down["close"].iloc[50]
    assert validate_bars(down)[1].by_rule("spike").examples == (down.index[50],)
    shifted = _walk()
    for column in ("open", "high", "low", "close"):
        shifted.iloc[101:, shifted.columns.get_loc(column)] *= 3.0
    shifted.iloc[100, shifted.columns.get_loc("close")] *= 3.0
    shifted.iloc[100, shifted.columns.get_loc("high")] *= 3.0
    assert validate_bars(shifted)[1].by_rule("spike") is None
    wick = _walk()
    wick.iloc[100, wick.columns.get_loc("high")] *= 5.0
    assert validate_bars(wick, repair="none")[1].by_rule("spike") is None
    # Real data: the bundled BTCUSDT hours (largest reverting move 12.5 MADs) and SPY days
    # (6.7 MADs) hold no spike and no bar off the grid.
    for name in ("bybit-btcusdt-1h", "yahoo-spy-1d"):
        report = load_bars(name)[1]
        assert report.by_rule("spike") is None and report.by_rule("off_grid") is None, name


def test_times_outside_1970_to_2100_are_an_error() -> None:
    with pytest.raises(DataError, match=r"'time_range'.*row 1 .*1960-01-01.*1970 to 2100"):
        validate_bars(_bars(start="1960-01-01"))
    with pytest.raises(DataError, match=r"'time_range'.*row 6 .*2101-01-01"):
        validate_bars(_bars(start="2100-12-31 19:00"))
    assert validate_bars(_bars(start="2100-12-31 18:00"), repair="none")[1].ok
