"""Tests of the Bybit v5 client against a real HTTP server on 127.0.0.1 (tests/bybit_server.py).

The fake serves the bundled real BTCUSDT 1h bars and funding history with Bybit's paging
semantics, a still-open last candle, and injectable faults. Parsers are also run on the
recorded and documented response bodies copied into tests/fixtures/bybit.
"""

from __future__ import annotations

import json
import random
import socket
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bybit_server import (
    FIXTURES,
    FUNDING,
    KLINE,
    TIME,
    FakeBybit,
    Fault,
    bundled_klines,
    fixture_json,
    fixture_text,
    funding_series,
)

from tradezoo.data.bybit import (
    BybitClient,
    FundingAlignmentWarning,
    bybit_interval,
    fetch_bybit,
    kline_windows,
    parse_envelope,
    parse_funding,
    parse_instrument,
    parse_klines,
    parse_server_time,
)
from tradezoo.data.cache import BarCache, CacheCorruptWarning, CacheKey
from tradezoo.data.errors import BybitAPIError, DataError, RateLimitedError, SourceError

OHLCV = ["open", "high", "low", "close", "volume"]
COLUMNS = [*OHLCV, "turnover"]
HOUR_MS = 3_600_000
START = pd.Timestamp("2024-01-01", tz="UTC")
END_3000 = START + pd.Timedelta(hours=2999)  # 3,000 hourly bars
# Backoff small enough that a real sleep would be harmless; the tests inject a recorder anyway.
BASE, CAP, RETRIES = 0.01, 0.05, 3


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def server():
    with FakeBybit() as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the client asked to sleep, in order (nothing really sleeps)."""
    return []


def make_client(server: FakeBybit, sleeps: list[float], **overrides) -> BybitClient:
    options = {
        "timeout": 2.0,
        "max_retries": RETRIES,
        "backoff_base": BASE,
        "backoff_max": CAP,
        "sleep": sleeps.append,
        "clock": lambda: server.now,
        "rng": random.Random(7),
    }
    options.update(overrides)
    return BybitClient(server.url, **options)


@pytest.fixture
def client(server: FakeBybit, sleeps: list[float]):
    with make_client(server, sleeps) as bybit:
        yield bybit


def expected_bars(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return bundled_klines().loc[start:end, COLUMNS]


def assert_bars_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        actual[COLUMNS], expected[COLUMNS], check_freq=False, check_index_type=False
    )
    assert actual.index.equals(expected.index)


def ms(stamp: pd.Timestamp | str) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)


def kline_params(server: FakeBybit) -> list[dict[str, str]]:
    return [r.params for r in server.requests_to(KLINE)]


def assert_backoff_delays(delays: list[float], base: float = BASE, cap: float = CAP) -> None:
    """Each delay k (1-based) lies in [d/2, d] with d = min(cap, base * 2**(k-1))."""
    for k, delay in enumerate(delays, start=1):
        ceiling = min(cap, base * 2 ** (k - 1))
        assert ceiling / 2 <= delay <= ceiling, (k, delay, ceiling)


# --------------------------------------------------------------------------------------------
# parsers on recorded and documented bodies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_parse_recorded_testnet_klines_without_retextinfo(category: str) -> None:
    name = f"recorded_kline_{category}_BTCUSDT_D_testnet.json"
    body = (FIXTURES / name).read_bytes()
    envelope = parse_envelope(body, endpoint=KLINE, params={"category": category})
    assert "retExtInfo" not in envelope
    frame = parse_klines(envelope["result"])
    raw = json.loads(body)["result"]["list"]
    assert list(frame.index) == [pd.Timestamp(int(r[0]), unit="ms", tz="UTC") for r in raw]
    assert frame.index[0] == pd.Timestamp("2023-09-14", tz="UTC")  # newest first as sent
    assert frame.to_numpy().tolist() == [[float(x) for x in r[1:]] for r in raw]
    assert list(frame.columns) == COLUMNS and (frame.dtypes == np.float64).all()


def test_parse_docs_inverse_kline_example() -> None:
    envelope = parse_envelope(fixture_text("kline_inverse_BTCUSD_60.json"), endpoint=KLINE)
    frame = parse_klines(envelope["result"]).sort_index()
    assert frame.index[0] == pd.Timestamp(1670601600000, unit="ms", tz="UTC")
    assert frame.iloc[0].tolist() == [17086.5, 17088.0, 16978.0, 17071.5, 6356.0, 0.37288112]


def test_parse_pagination_scenario_pages_rebuild_the_bundled_bars() -> None:
    pages = [
        parse_klines(fixture_json(f"pagination_linear_BTCUSDT_60_page{i}.json")["result"])
        for i in range(3)
    ]
    assert [len(p) for p in pages] == [5, 5, 2]
    frame = pd.concat(pages).sort_index()
    expected = expected_bars(START, START + pd.Timedelta(hours=11))
    pd.testing.assert_frame_equal(
        frame[OHLCV], expected[OHLCV], check_freq=False, check_index_type=False
    )
    # The fixtures derive turnover the same way as the fake server (volume x mean OHLC).
    # Both are rounded to 4 decimals, so they may differ by one unit in the last place.
    np.testing.assert_allclose(frame["turnover"], expected["turnover"], rtol=0, atol=1.01e-4)


def test_parse_empty_list_before_listing_is_not_an_error() -> None:
    envelope = parse_envelope(fixture_text("kline_empty_before_listing.json"), endpoint=KLINE)
    frame = parse_klines(envelope["result"])
    assert frame.empty and list(frame.columns) == COLUMNS


def test_parse_mark_price_kline_rows_are_rejected_as_wrong_shape() -> None:
    body = fixture_json("mark_price_kline_linear_BTCUSDT.json")
    with pytest.raises(SourceError, match=r"GET /v5/market/kline .*BTCUSDT.*array of 7 strings"):
        parse_klines(body["result"], params={"symbol": "BTCUSDT"})


def test_parse_funding_docs_example_and_symbol_check() -> None:
    result = fixture_json("funding_history_linear_ETHPERP.json")["result"]
    funding = parse_funding(result, symbol="ETHPERP")
    assert funding.name == "funding_rate"
    assert funding.to_dict() == {pd.Timestamp("2022-12-26 08:00", tz="UTC"): 0.0001}
    with pytest.raises(SourceError, match="'ETHPERP', asked 'BTCUSDT'"):
        parse_funding(result, symbol="BTCUSDT")


def test_parse_instruments_linear_spot_prelisting_option() -> None:
    linear = parse_instrument(fixture_json("instruments_info_linear_BTCUSDT.json")["result"],
                              "BTCUSDT")
    assert linear["tickSize"] == 0.1 and linear["qtyStep"] == 0.001
    assert linear["minOrderQty"] == 0.001 and linear["fundingInterval"] == 480
    assert linear["status"] == "Trading" and linear["deliveryTime"] is None
    assert linear["launchTime"] == pd.Timestamp("2020-03-30", tz="UTC")
    assert linear["maxLeverage"] == 100.0 and linear["raw"]["symbolId"] == 5

    spot = parse_instrument(fixture_json("instruments_info_spot_BTCUSDT.json")["result"],
                            "BTCUSDT")
    assert spot["qtyStep"] == 0.000001  # basePrecision: spot has no qtyStep
    assert spot["fundingInterval"] is None and spot["launchTime"] is None
    assert spot["minNotionalValue"] == 5.0

    pre = parse_instrument(
        fixture_json("instruments_info_linear_prelisting_BIOUSDT.json")["result"], "BIOUSDT"
    )
    assert pre["status"] == "PreLaunch" and pre["tickSize"] == 0.0001 and pre["qtyStep"] == 1.0

    option_name = "BTC-27MAR26-70000-P-USDT"
    option = parse_instrument(fixture_json("instruments_info_option.json")["result"], option_name)
    assert option["tickSize"] == 5.0
    assert option["deliveryTime"] == pd.Timestamp(1774598400000, unit="ms", tz="UTC")

    with pytest.raises(SourceError, match=r"no instrument 'ETHUSDT'.*\['BTCUSDT'\]"):
        parse_instrument(fixture_json("instruments_info_linear_BTCUSDT.json")["result"],
                         "ETHUSDT")


def test_parse_server_time_docs_example() -> None:
    result = fixture_json("server_time.json")["result"]
    assert parse_server_time(result) == pd.Timestamp(1688639403423213947, unit="ns", tz="UTC")
    assert parse_server_time({"timeSecond": "1688639403"}) == pd.Timestamp(
        "2023-07-06 10:30:03", tz="UTC"
    )
    with pytest.raises(SourceError, match="no integer timeNano/timeSecond"):
        parse_server_time({"timeSecond": "soon"})


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("error_10006_too_many_visits.json", 10006),
        ("error_10001_not_supported_symbols.json", 10001),
    ],
)
def test_error_fixtures_parse_as_envelopes(name: str, code: int) -> None:
    envelope = parse_envelope(fixture_text(name), endpoint=KLINE)
    assert envelope["retCode"] == code and envelope["result"] == {}


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "not JSON"),
        ('{"retCode": 0, "retMsg": "OK", "result": {"list": [["17', "not JSON"),
        ('{"retMsg": "OK", "result": {}}', "'retCode' is missing"),
        ('{"retCode": "0", "result": {}}', "'retCode' is not an integer"),
        ('[{"retCode": 0}]', "got a JSON list"),
        ('{"retCode": 0, "retMsg": "OK"}', "'result' is not an object"),
    ],
)
def test_parse_envelope_rejects_malformed_bodies(body: str, rule: str) -> None:
    params = {"symbol": "BTCUSDT", "interval": "60"}
    with pytest.raises(SourceError, match=rf"GET /v5/market/kline with params .*BTCUSDT.*{rule}"):
        parse_envelope(body.encode(), endpoint=KLINE, params=params)


@pytest.mark.parametrize(
    ("result", "rule"),
    [
        ({}, "result.list must be a JSON array, got nothing"),
        ({"list": {"a": 1}}, "result.list must be a JSON array, got dict"),
        ({"list": [{"startTime": "1"}]}, "array of 7 strings"),
        ({"list": [["1", "2", "3", "4", "5", "6", "x"]]}, "'turnover' is 'x', not a number"),
        ({"list": [["t", "2", "3", "4", "5", "6", "7"]]}, "'startTime' is 't'"),
    ],
)
def test_parse_klines_rejects_wrong_shapes(result: dict, rule: str) -> None:
    with pytest.raises(SourceError, match=rule):
        parse_klines(result)


# --------------------------------------------------------------------------------------------
# kline paging
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("long_range", ["newest", "oldest"])
@pytest.mark.parametrize("limit", [1000, 200])
def test_multi_page_klines_equal_the_bundled_bars(
    server: FakeBybit, client: BybitClient, limit: int, long_range: str
) -> None:
    server.long_range = long_range
    bars = client.get_klines("BTCUSDT", "1h", START, END_3000, limit=limit)
    assert len(bars) == 3000
    assert_bars_equal(bars, expected_bars(START, END_3000))
    assert bars.attrs["source"] == "bybit-linear" and bars.attrs["interval"] == "1h"
    params = kline_params(server)
    assert len(params) == 3000 // limit
    previous_end = None
    for p in params:
        start, end = int(p["start"]), int(p["end"])
        assert int(p["limit"]) == limit and p["interval"] == "60" and p["category"] == "linear"
        assert end - start < limit * HOUR_MS  # never more than `limit` candles per window
        if previous_end is not None:
            assert start == previous_end + 1  # contiguous: no candle between two windows
        previous_end = end
    assert int(params[0]["start"]) == ms(START) and previous_end == ms(END_3000)


def test_unaligned_start_loses_no_bar(server: FakeBybit, client: BybitClient) -> None:
    start = START + pd.Timedelta(minutes=30)
    end = START + pd.Timedelta(hours=450, minutes=15)
    bars = client.get_klines("BTCUSDT", "60", start, end, limit=200)
    expected = expected_bars(START + pd.Timedelta(hours=1), START + pd.Timedelta(hours=450))
    assert_bars_equal(bars, expected)
    assert len(kline_params(server)) == 3


def test_kline_windows_months_and_bounds() -> None:
    month = bybit_interval("M")
    windows = kline_windows(
        pd.Timestamp("2020-01-31", tz="UTC"), pd.Timestamp("2020-06-01", tz="UTC"), month, 2
    )
    one_ms = pd.Timedelta("1ms")
    assert windows[0] == (
        pd.Timestamp("2020-01-31", tz="UTC"), pd.Timestamp("2020-03-31", tz="UTC") - one_ms
    )
    assert [w[0] for w in windows[1:]] == [
        pd.Timestamp("2020-03-31", tz="UTC"), pd.Timestamp("2020-05-31", tz="UTC")
    ]
    assert windows[-1][1] == pd.Timestamp("2020-06-01", tz="UTC")
    assert kline_windows(START, START - pd.Timedelta("1h"), bybit_interval("1h"), 10) == []


def test_still_open_candle_is_dropped(server: FakeBybit, client: BybitClient) -> None:
    server.now = pd.Timestamp("2024-03-01 10:25", tz="UTC")
    end = pd.Timestamp("2024-03-01 12:00", tz="UTC")
    bars = client.get_klines("BTCUSDT", "1h", "2024-03-01", end)
    assert bars.index[-1] == pd.Timestamp("2024-03-01 09:00", tz="UTC")
    assert_bars_equal(bars, expected_bars(pd.Timestamp("2024-03-01", tz="UTC"), bars.index[-1]))
    # The client asked up to "now", so the server did send the partial 10:00 candle.
    assert int(kline_params(server)[-1]["end"]) == ms(server.now)


def test_still_open_candle_uses_the_earlier_of_server_and_local_clock(
    server: FakeBybit, sleeps: list[float]
) -> None:
    server.now = pd.Timestamp("2024-03-01 10:25", tz="UTC")
    ahead = make_client(server, sleeps, clock=lambda: server.now + pd.Timedelta(hours=2))
    bars = ahead.get_klines("BTCUSDT", "1h", "2024-03-01", "2024-03-01 12:00")
    assert bars.index[-1] == pd.Timestamp("2024-03-01 09:00", tz="UTC")  # server says 10:00 open
    behind = make_client(server, sleeps)
    bars = behind.get_klines(
        "BTCUSDT", "1h", "2024-03-01", "2024-03-01 12:00", now="2024-03-01 08:30"
    )
    assert bars.index[-1] == pd.Timestamp("2024-03-01 07:00", tz="UTC")


def test_empty_window_before_listing_is_not_an_error(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    bars = client.get_klines("BTCUSDT", "1h", "2021-01-01", "2021-01-05")
    assert bars.empty and list(bars.columns) == COLUMNS
    assert bars.attrs["source"] == "bybit-linear"
    assert len(kline_params(server)) == 1 and sleeps == []


@pytest.mark.parametrize("long_range", ["newest", "oldest"])
def test_pre_listing_windows_are_skipped_by_bisection(
    server: FakeBybit, client: BybitClient, long_range: str
) -> None:
    server.long_range = long_range
    first = bundled_klines().index[0]  # 2023-11-29 00:00, the first bar the server has
    end = first + pd.Timedelta(days=10)
    bars = client.get_klines("BTCUSDT", "1h", "2021-01-01", end, limit=200)
    assert_bars_equal(bars, expected_bars(first, end))
    hourly = bybit_interval("1h")
    assert len(kline_windows(pd.Timestamp("2021-01-01", tz="UTC"), end, hourly, 200)) > 120
    params = kline_params(server)
    assert len(params) < 20  # 1 + ~8 probes + the 3 windows holding data
    probes = [p for p in params if p["limit"] == "1"]
    assert probes and all(int(p["start"]) == ms("2021-01-01") + 200 * HOUR_MS for p in probes)


def test_funding_history_pages_backwards_with_start_and_end_time(
    server: FakeBybit, client: BybitClient
) -> None:
    funding = client.get_funding_history("BTCUSDT", START, END_3000)
    expected = funding_series("BTCUSDT").loc[START:END_3000]
    assert len(expected) == 375
    pd.testing.assert_series_equal(funding, expected, check_index_type=False, check_freq=False)
    params = [r.params for r in server.requests_to(FUNDING)]
    assert len(params) == 2  # 200, then 175 reaching startTime (a funding stamp): done
    assert all("start" not in p and "end" not in p for p in params)
    assert all(int(p["limit"]) <= 200 and p["startTime"] == str(ms(START)) for p in params)
    end_times = [int(p["endTime"]) for p in params]
    assert end_times[0] == ms(END_3000) and end_times == sorted(end_times, reverse=True)


def test_rows_outside_the_window_or_repeated_are_clipped_and_deduplicated(
    server: FakeBybit, client: BybitClient
) -> None:
    # Both windows are answered with the same 00:00-04:00 page (the pagination fixture).
    page0 = fixture_text("pagination_linear_BTCUSDT_60_page0.json")
    server.add_fault(Fault(KLINE, body=page0, times=None))
    bars = client.get_klines("BTCUSDT", "1h", START, START + pd.Timedelta(hours=5), limit=3)
    assert len(kline_params(server)) == 2
    assert_bars_equal(bars, expected_bars(START, START + pd.Timedelta(hours=4)))
    clipped = client.get_klines(
        "BTCUSDT", "1h", START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=3)
    )
    assert_bars_equal(
        clipped, expected_bars(START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=3))
    )


def test_funding_server_ignoring_end_time_is_detected(
    server: FakeBybit, client: BybitClient
) -> None:
    stamp = ms(START + pd.Timedelta(days=10))
    row = {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": str(stamp)}
    server.add_fault(Fault(FUNDING, body=server.envelope({"list": [row]}), times=None))
    with pytest.raises(SourceError, match=r"newer than endTime.*cannot page backwards"):
        client.get_funding_history("BTCUSDT", START, START + pd.Timedelta(days=20))
    assert len(server.requests_to(FUNDING)) == 2


def test_server_time_and_instrument_info_over_http(
    server: FakeBybit, client: BybitClient
) -> None:
    assert client.server_time() == server.now
    info = client.get_instrument_info("BTCUSDT")
    assert (info["tickSize"], info["qtyStep"], info["fundingInterval"]) == (0.1, 0.001, 480)
    spot = client.get_instrument_info("BTCUSDT", category="spot")
    assert spot["minOrderQty"] == 0.000011
    with pytest.raises(SourceError, match="no instrument 'NOSUCHUSDT'"):
        client.get_instrument_info("NOSUCHUSDT")


def test_documented_rate_limit_headers_on_success_cause_no_wait(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    headers = next(
        m["headers"] for m in fixture_json("manifest.json")
        if m["file"] == "ok_with_rate_limit_headers.json"
    )
    headers = {k: v for k, v in headers.items() if k.startswith("X-")}
    server.add_fault(Fault(TIME, body=fixture_text("ok_with_rate_limit_headers.json"),
                           headers=headers))
    assert client.server_time() == pd.Timestamp(1688639403423213947, unit="ns", tz="UTC")
    assert sleeps == []


# --------------------------------------------------------------------------------------------
# fetch_bybit
# --------------------------------------------------------------------------------------------


def test_fetch_bybit_merges_funding_at_bar_opens(server: FakeBybit, client: BybitClient) -> None:
    bars = fetch_bybit("BTCUSDT", "1h", START, END_3000, client=client, cache=False,
                       now=server.now)
    assert list(bars.columns) == [*COLUMNS, "funding_rate"]
    assert_bars_equal(bars, expected_bars(START, END_3000))
    expected = funding_series("BTCUSDT").loc[START:END_3000]
    np.testing.assert_array_equal(bars.loc[expected.index, "funding_rate"], expected.to_numpy())
    elsewhere = bars["funding_rate"].drop(expected.index)
    assert len(elsewhere) == 3000 - 375 and (elsewhere == 0.0).all()
    assert bars.attrs["validated"] is True and bars.attrs["source"] == "bybit-linear"


def test_fetch_bybit_spot_has_no_funding(sleeps: list[float]) -> None:
    with FakeBybit(klines={("spot", "BTCUSDT", "60"): bundled_klines()}) as fake:
        bybit = make_client(fake, sleeps)
        bars = fetch_bybit("BTCUSDT", "60", START, START + pd.Timedelta(hours=47), "spot",
                           client=bybit, cache=False, now=fake.now)
        assert "funding_rate" not in bars.columns and bars.attrs["source"] == "bybit-spot"
        assert len(bars) == 48 and fake.requests_to(FUNDING) == []


def test_funding_stamp_on_no_bar_is_charged_at_the_next_bar_or_raises(
    sleeps: list[float],
) -> None:
    missing = pd.Timestamp("2024-01-02 08:00", tz="UTC")  # a funding time
    with_gap = bundled_klines().drop(missing)
    with FakeBybit(klines={("linear", "BTCUSDT", "60"): with_gap}) as fake:
        bybit = make_client(fake, sleeps)
        end = START + pd.Timedelta(days=3)
        with pytest.warns(FundingAlignmentWarning, match=r"1 funding stamp.*2024-01-02 08:00"):
            bars = fetch_bybit("BTCUSDT", "1h", START, end, client=bybit, cache=False,
                               now=fake.now)
        assert missing not in bars.index and len(bars) == 72
        rate = funding_series("BTCUSDT").loc[missing]
        assert bars.loc[missing + pd.Timedelta(hours=1), "funding_rate"] == rate
        assert bars["funding_rate"].sum() == pytest.approx(
            funding_series("BTCUSDT").loc[START:bars.index[-1]].sum(), rel=1e-12
        )
        with pytest.raises(DataError, match=r"fall on no bar open.*2024-01-02 08:00"):
            fetch_bybit("BTCUSDT", "1h", START, end, client=bybit, cache=False, now=fake.now,
                        unmatched_funding="error")


def test_daily_bars_charge_intraday_funding_at_the_next_open(sleeps: list[float]) -> None:
    hourly = bundled_klines()
    daily = hourly.resample("1D").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
         "turnover": "sum"}
    )
    with FakeBybit(klines={("linear", "BTCUSDT", "D"): daily}) as fake:
        bybit = make_client(fake, sleeps)
        end = START + pd.Timedelta(days=9)
        with pytest.warns(FundingAlignmentWarning, match=r"18 funding stamp\(s\) fall on no bar"):
            bars = fetch_bybit("BTCUSDT", "D", START, end, client=bybit, cache=False,
                               now=fake.now)
    assert bars.attrs["interval"] == "1d" and len(bars) == 10
    assert [p["interval"] for p in kline_params(fake)] == ["D"]
    # Each daily open is charged its own midnight stamp plus the previous day's 08:00 and
    # 16:00 stamps, which a position held through that day paid.
    rates = funding_series("BTCUSDT").loc[START:bars.index[-1]]
    expected = rates.groupby(rates.index.ceil("1D")).sum().reindex(bars.index, fill_value=0.0)
    np.testing.assert_allclose(bars["funding_rate"].to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_fetch_bybit_accepts_str_datetime_and_timestamps(
    server: FakeBybit, client: BybitClient
) -> None:
    end = START + pd.Timedelta(hours=30)
    variants = [
        ("2024-01-01", "2024-01-02 06:00"),
        (datetime(2024, 1, 1), datetime(2024, 1, 2, 6)),
        (START.tz_convert("Asia/Tokyo"), end.tz_convert("America/New_York")),
    ]
    frames = [
        fetch_bybit("BTCUSDT", "1h", a, b, client=client, cache=False, now=server.now)
        for a, b in variants
    ]
    for frame in frames:
        assert_bars_equal(frame, expected_bars(START, end))
        pd.testing.assert_frame_equal(frame, frames[0])


def test_fetch_bybit_range_before_listing_raises(server: FakeBybit, client: BybitClient) -> None:
    with pytest.raises(DataError, match=r"no bars with open time in \[2021-01-01"):
        fetch_bybit("BTCUSDT", "1h", "2021-01-01", "2021-01-03", client=client, cache=False,
                    now=server.now)


def test_fetch_bybit_refuses_a_bar_bybit_says_is_open(
    server: FakeBybit, client: BybitClient, tmp_path: Path
) -> None:
    # The local clock is an hour ahead: it believes the 12:00 bar has closed; Bybit does not.
    with pytest.raises(SourceError, match="local clock is ahead of Bybit's"):
        fetch_bybit("BTCUSDT", "1h", "2026-02-08", "2026-02-09", client=client,
                    cache=BarCache(tmp_path), now=server.now + pd.Timedelta(hours=1))
    assert list(tmp_path.rglob("*")) == []  # nothing cached


def test_progress_bar_goes_to_stderr(
    server: FakeBybit, client: BybitClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client.get_klines("BTCUSDT", "1h", START, END_3000, progress=False)
    assert capsys.readouterr().err == ""
    client.get_klines("BTCUSDT", "1h", START, END_3000, progress=True)
    captured = capsys.readouterr()
    assert "Bybit linear BTCUSDT 1h" in captured.err and "3/3" in captured.err
    assert captured.out == ""


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["7m", "2d", "foo", "90m"])
def test_unknown_interval_lists_bybit_intervals(client: BybitClient, interval: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown Bybit kline interval '{interval}'.*1 3 5 15"):
        client.get_klines("BTCUSDT", interval, START, END_3000)
    with pytest.raises(ValueError, match=r"1m 3m 5m .* 1d 1w 1M"):
        fetch_bybit("BTCUSDT", interval, START, END_3000, client=client, cache=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"category": "option"}, ValueError, r"category='option' is not valid for Bybit klines"),
        ({"limit": 0}, ValueError, r"limit=0 must be an integer in 1\.\.1000"),
        ({"limit": 1001}, ValueError, r"limit=1001 must be an integer in 1\.\.1000"),
        ({"limit": True}, ValueError, r"limit=True must be an integer"),
        ({"start": "2024-02-01", "end": "2024-01-01"}, ValueError, "is after end"),
        ({"start": 1704067200000}, TypeError, r"start=1704067200000: .*not a number"),
        ({"end": "next tuesday"}, ValueError, "end='next tuesday' is not a date/time"),
        ({"end": [2024]}, TypeError, r"end=\[2024\]: expected a date/time"),
        ({"symbol": ""}, ValueError, "symbol='' must be a non-empty string"),
        ({"symbol": " BTCUSDT"}, ValueError, "symbol=' BTCUSDT' must be a non-empty string"),
    ],
)
def test_get_klines_bad_input(client: BybitClient, kwargs: dict, error: type, message: str) -> None:
    call = {"symbol": "BTCUSDT", "interval": "1h", "start": START, "end": END_3000, **kwargs}
    with pytest.raises(error, match=message):
        client.get_klines(**call)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache": "yes"}, r"cache='yes' must be True, False, None or a BarCache"),
        ({"unmatched_funding": "ignore"},
         r"unmatched_funding='ignore' must be 'next_bar' or 'error'"),
        ({"category": "futures"}, r"category='futures' is not valid"),
        ({"end": "2023-01-01"}, "is after end"),
    ],
)
def test_fetch_bybit_bad_input(client: BybitClient, kwargs: dict, message: str) -> None:
    call = {"symbol": "BTCUSDT", "interval": "1h", "start": START, "end": END_3000,
            "client": client, "cache": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        fetch_bybit(**call)


def test_funding_and_instrument_bad_categories(client: BybitClient) -> None:
    with pytest.raises(ValueError, match="category='spot' is not valid for Bybit funding"):
        client.get_funding_history("BTCUSDT", START, END_3000, category="spot")
    with pytest.raises(ValueError, match="category='perp' is not valid for Bybit instruments"):
        client.get_instrument_info("BTCUSDT", category="perp")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout=0 must be > 0"),
        ({"max_retries": -1}, "max_retries=-1 must be an integer >= 0"),
        ({"backoff_base": -0.1}, "backoff_base=-0.1 must be >= 0"),
        ({"backoff_base": 2.0, "backoff_max": 1.0}, "backoff_max=1.0 must be >= backoff_base"),
    ],
)
def test_client_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BybitClient("http://127.0.0.1:9", **kwargs)


# --------------------------------------------------------------------------------------------
# faults: errors and retries
# --------------------------------------------------------------------------------------------

DAY = {"symbol": "BTCUSDT", "interval": "1h", "start": START, "end": START + pd.Timedelta(hours=23)}


def test_unknown_symbol_raises_bybit_api_error(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    with pytest.raises(BybitAPIError, match=r"retCode 10001 .*Not supported symbols") as info:
        client.get_klines(**{**DAY, "symbol": "NOSUCHUSDT"})
    assert info.value.code == 10001 and info.value.endpoint == KLINE
    assert info.value.params["symbol"] == "NOSUCHUSDT"
    assert len(server.requests) == 1 and sleeps == []


def test_10006_is_retried_with_jittered_exponential_backoff(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault(KLINE, body=fixture_text("error_10006_too_many_visits.json"), times=2))
    bars = client.get_klines(**DAY)
    assert len(bars) == 24 and len(server.requests) == 3
    assert len(sleeps) == 2
    assert_backoff_delays(sleeps)


def test_10006_honours_the_documented_reset_timestamp(
    server: FakeBybit, sleeps: list[float]
) -> None:
    manifest = {m["file"]: m for m in fixture_json("manifest.json")}
    headers = manifest["error_10006_too_many_visits.json"]["headers"]
    server.add_fault(Fault(KLINE, body=fixture_text("error_10006_too_many_visits.json"),
                           headers=headers))
    bybit = make_client(server, sleeps, backoff_max=5.0)
    bybit.get_klines(**DAY)
    # Reset 1672738135824 minus the body's server time 1672738134824: exactly one second.
    assert sleeps == [1.0] and len(server.requests) == 2


def test_reset_timestamp_wait_is_bounded_and_ignored_when_past(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    body = server.envelope({}, 10006, "Too many visits!")
    far = {"X-Bapi-Limit-Reset-Timestamp": str(server.now_ms + 600_000)}
    past = {"X-Bapi-Limit-Reset-Timestamp": str(server.now_ms - 5_000)}
    server.add_fault(Fault(KLINE, body=body, headers=far))
    server.add_fault(Fault(KLINE, body=body, headers=past))
    client.get_klines(**DAY)
    assert len(server.requests) == 3
    assert sleeps[0] == CAP  # ten minutes away, capped at backoff_max
    assert_backoff_delays(sleeps[1:], base=2 * BASE)  # past reset: ordinary backoff (retry 2)


def test_10006_forever_raises_rate_limited_naming_attempts(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault(KLINE, body=server.envelope({}, 10006, "Too many visits!"), times=None))
    with pytest.raises(RateLimitedError, match=r"after 4 attempts .*retCode 10006"):
        client.get_klines(**DAY)
    assert len(server.requests) == 4 and len(sleeps) == 3
    assert_backoff_delays(sleeps)


def test_http_403_raises_ip_ban_at_once(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault("*", status=403, body=fixture_text("http_403_ip_rate_limit.txt")))
    with pytest.raises(RateLimitedError, match=r"HTTP 403.*IP address is banned for at least 10 "
                                               r"minutes.*403, access too frequent"):
        client.get_klines(**DAY)
    assert len(server.requests) == 1 and sleeps == []


def test_http_429_is_retried_then_raises_rate_limited(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault(KLINE, status=429, body="Too Many Requests", times=2))
    assert len(client.get_klines(**DAY)) == 24
    assert len(server.requests) == 3
    assert_backoff_delays(sleeps)
    server.add_fault(Fault(KLINE, status=429, body="Too Many Requests", times=None))
    with pytest.raises(RateLimitedError, match=r"after 4 attempts.*HTTP 429"):
        client.get_klines(**DAY)


def test_http_429_reset_header_measured_against_the_clock(
    server: FakeBybit, sleeps: list[float]
) -> None:
    # No JSON body, so no server time: the reset is measured against the client's clock.
    reset = {"X-Bapi-Limit-Reset-Timestamp": str(server.now_ms + 800)}
    server.add_fault(Fault(KLINE, status=429, body="Too Many Requests", headers=reset))
    make_client(server, sleeps, backoff_max=5.0).get_klines(**DAY)
    assert sleeps == [0.8]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_then_raises_source_error(
    server: FakeBybit, client: BybitClient, sleeps: list[float], status: int
) -> None:
    server.add_fault(Fault(KLINE, status=status, body="upstream error"))
    assert len(client.get_klines(**DAY)) == 24
    assert len(server.requests) == 2 and len(sleeps) == 1
    server.add_fault(Fault(KLINE, status=status, body="upstream error", times=None))
    with pytest.raises(SourceError, match=rf"after 4 attempts.*HTTP {status}") as info:
        client.get_klines(**DAY)
    assert not isinstance(info.value, RateLimitedError)
    assert_backoff_delays(sleeps[1:])


def test_timeout_is_retried_then_raises_source_error(
    server: FakeBybit, sleeps: list[float]
) -> None:
    bybit = make_client(server, sleeps, timeout=0.2, max_retries=1)
    server.add_fault(Fault(KLINE, delay_s=0.5))
    assert len(bybit.get_klines(**DAY)) == 24
    assert len(server.requests) == 2 and len(sleeps) == 1
    server.add_fault(Fault(KLINE, delay_s=0.5, times=None))
    with pytest.raises(SourceError, match=r"after 2 attempts.*(Timeout|timed out)"):
        bybit.get_klines(**DAY)
    assert len(server.requests) == 4


def test_connection_refused_is_retried_then_raises(sleeps: list[float]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bybit = BybitClient(f"http://127.0.0.1:{port}", max_retries=2, backoff_base=BASE,
                        backoff_max=CAP, sleep=sleeps.append)
    with pytest.raises(SourceError, match=r"after 3 attempts.*ConnectionError"):
        bybit.server_time()
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ("<!DOCTYPE html><html><title>Maintenance</title></html>", "not JSON"),
        ('{"retCode": 0, "retMsg": "OK", "result": {"list": [["17', "not JSON"),
        ('{"retMsg": "OK", "result": {"list": []}}', "'retCode' is missing"),
        ('{"retCode": 0, "result": {"list": [{"open": "1"}]}}', "array of 7 strings"),
        ('{"retCode": 0, "result": {"list": "none"}}', "must be a JSON array"),
    ],
)
def test_malformed_body_raises_source_error_without_retry(
    server: FakeBybit, client: BybitClient, sleeps: list[float], body: str, rule: str
) -> None:
    server.add_fault(Fault(KLINE, body=body))
    with pytest.raises(SourceError, match=rf"GET /v5/market/kline with params .*BTCUSDT.*{rule}"):
        client.get_klines(**DAY)
    assert len(server.requests) == 1 and sleeps == []


def test_other_http_error_is_not_retried(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault(KLINE, status=404, body="404 page not found"))
    with pytest.raises(SourceError, match=r"HTTP 404 to GET /v5/market/kline.*404 page not found"):
        client.get_klines(**DAY)
    server.add_fault(Fault(KLINE, status=400, body={"retCode": 10001, "retMsg": "params error"}))
    with pytest.raises(BybitAPIError, match="retCode 10001"):
        client.get_klines(**DAY)
    assert len(server.requests) == 2 and sleeps == []


def test_failure_mid_pagination_recovers_or_raises(
    server: FakeBybit, client: BybitClient, sleeps: list[float]
) -> None:
    server.add_fault(Fault(KLINE, status=502, body="bad gateway", after=2, times=1))
    bars = client.get_klines("BTCUSDT", "1h", START, END_3000, limit=500)
    assert_bars_equal(bars, expected_bars(START, END_3000))
    assert len(kline_params(server)) == 7 and len(sleeps) == 1
    server.clear()
    server.add_fault(Fault(KLINE, status=500, body="boom", after=2, times=None))
    with pytest.raises(SourceError, match="after 4 attempts"):
        client.get_klines("BTCUSDT", "1h", START, END_3000, limit=500)
    # Two good pages, then page 3 tried 4 times; paging stops there.
    assert len(kline_params(server)) == 6


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------


def test_repeat_fetch_is_served_from_the_cache(
    server: FakeBybit, client: BybitClient, tmp_path: Path
) -> None:
    cache = BarCache(tmp_path)
    first = fetch_bybit("BTCUSDT", "1h", START, END_3000, client=client, cache=cache,
                        now=server.now)
    assert len(kline_params(server)) == 3
    server.clear()
    again = fetch_bybit("BTCUSDT", "1h", START, END_3000, client=client, cache=cache,
                        now=server.now)
    assert server.requests == []
    pd.testing.assert_frame_equal(again, first, check_index_type=False)
    assert_bars_equal(again, expected_bars(START, END_3000))


def test_cache_true_uses_tradezoo_data_dir(
    server: FakeBybit, client: BybitClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))
    fetch_bybit("BTCUSDT", "60", START, START + pd.Timedelta(days=2), client=client,
                now=server.now)
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")] == [
        Path("bybit-linear") / "BTCUSDT_1h.parquet"
    ]
    for off in (False, None):
        other = tmp_path / "other"
        monkeypatch.setenv("TRADEZOO_DATA_DIR", str(other))
        fetch_bybit("BTCUSDT", "60", START, START + pd.Timedelta(days=2), client=client,
                    cache=off, now=server.now)
        assert not other.exists()


def test_extended_range_downloads_only_the_missing_part(
    server: FakeBybit, client: BybitClient, tmp_path: Path
) -> None:
    cache = BarCache(tmp_path)
    middle_end = START + pd.Timedelta(hours=999)
    fetch_bybit("BTCUSDT", "1h", START, middle_end, client=client, cache=cache, now=server.now)
    server.clear()
    later = fetch_bybit("BTCUSDT", "1h", START, END_3000, client=client, cache=cache,
                        now=server.now)
    klines = kline_params(server)
    assert len(klines) == 2 and all(int(p["start"]) > ms(middle_end) for p in klines)
    assert all(int(p["startTime"]) > ms(middle_end) for p in
               (r.params for r in server.requests_to(FUNDING)))
    server.clear()
    earlier_start = START - pd.Timedelta(hours=100)
    full = fetch_bybit("BTCUSDT", "1h", earlier_start, END_3000, client=client, cache=cache,
                       now=server.now)
    klines = kline_params(server)
    assert len(klines) == 1 and int(klines[0]["end"]) < ms(START)
    fresh = fetch_bybit("BTCUSDT", "1h", earlier_start, END_3000, client=client, cache=False,
                        now=server.now)
    pd.testing.assert_frame_equal(full, fresh, check_index_type=False)
    pd.testing.assert_frame_equal(later, fresh.loc[START:], check_index_type=False)


def test_failure_mid_download_leaves_the_cache_file_byte_identical(
    server: FakeBybit, client: BybitClient, sleeps: list[float], tmp_path: Path
) -> None:
    cache = BarCache(tmp_path)
    fetch_bybit("BTCUSDT", "1h", START, START + pd.Timedelta(hours=99), client=client,
                cache=cache, now=server.now)
    path = cache.path(CacheKey("bybit-linear", "BTCUSDT", "1h"))
    before = path.read_bytes()
    server.add_fault(Fault(KLINE, status=500, body="boom", after=2, times=None))
    with pytest.raises(SourceError, match=r"after 4 attempts.*HTTP 500"):
        fetch_bybit("BTCUSDT", "1h", START, START + pd.Timedelta(hours=3099), client=client,
                    cache=cache, now=server.now)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_corrupt_cache_file_is_reported_and_refetched(
    server: FakeBybit, client: BybitClient, tmp_path: Path
) -> None:
    cache = BarCache(tmp_path)
    end = START + pd.Timedelta(hours=99)
    fetch_bybit("BTCUSDT", "1h", START, end, client=client, cache=cache, now=server.now)
    path = cache.path(CacheKey("bybit-linear", "BTCUSDT", "1h"))
    path.write_bytes(b"PAR1 this is not parquet")
    server.clear()
    with pytest.warns(CacheCorruptWarning, match="BTCUSDT_1h.parquet"):
        bars = fetch_bybit("BTCUSDT", "1h", START, end, client=client, cache=cache,
                           now=server.now)
    assert len(kline_params(server)) == 1
    assert_bars_equal(bars, expected_bars(START, end))
    cached = cache.read(CacheKey("bybit-linear", "BTCUSDT", "1h"))
    assert cached is not None and len(cached.frame) == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptWarning)
        fetch_bybit("BTCUSDT", "1h", START, end, client=client, cache=cache, now=server.now)
