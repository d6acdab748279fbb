"""Yahoo Finance through the real yfinance 1.x code, offline.

yfinance's HTTP layer is patched: ``YfData.get`` and ``YfData.cache_get`` answer from
``tests/fixtures/yfinance/chart_SPY_1d_2017-12.json`` (sliced by the request's ``period1`` and
``period2`` as Yahoo slices it), from a generator of one-minute New York session bars, and
with Yahoo's real error bodies for unknown symbols. Any other URL fails the test. One test
patches one level lower (the session under ``YfData``) so that yfinance's own HTTP 429
handling raises ``YFRateLimitError``. yfinance's timezone, cookie and ISIN caches are pointed
at ``tmp_path``, and the session under ``YfData`` refuses any request, so nothing reaches the
network or the user's home.
"""

from __future__ import annotations

import copy
import http.cookiejar
import itertools
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yfinance as yf
import yfinance.base as yf_base
import yfinance.cache as yf_cache
from yfinance import const as yf_const
from yfinance.data import YfData
from yfinance.exceptions import YFRateLimitError

import tradezoo
from tradezoo.data.bars import read_bars
from tradezoo.data.cache import BarCache, CacheKey
from tradezoo.data.errors import DataError, RateLimitedError, YahooDataError
from tradezoo.data.yahoo import (
    fetch_yahoo,
    request_windows,
    yahoo_frame_to_bars,
    yahoo_interval,
)

FIXTURES = Path(__file__).parent / "fixtures" / "yfinance"
BUNDLED = Path(tradezoo.__file__).parent / "data" / "bundled"
SPY_CSV = BUNDLED / "yahoo_SPY_1d_2007-12-31_2017-12-29.csv.gz"
NOW = pd.Timestamp("2018-01-02 12:00", tz="UTC")
NY = "America/New_York"
ALL_PRICES = ("open", "high", "low", "close")
NO_QUOTE = ("open", "high", "low", "close", "adjclose", "volume")  # every field null

# The URLs yfinance asks its (patched) HTTP layer for, taken from yfinance itself so the fake
# routes exactly what the real code requests; nothing here reaches the network.
CHART_URL = f"{yf_const._BASE_URL_}/v8/finance/chart/"
QUOTE_SUMMARY_URL = f"{yf_const._BASE_URL_}/v10/finance/quoteSummary/"
QUOTE_URL = f"{yf_const._QUERY1_URL_}/v7/finance/quote"
TIMESERIES_URL = f"{yf_const._QUERY1_URL_}/ws/fundamentals-timeseries/"

# yfinance 1.7 still calls pandas' deprecated ``inplace=`` (its code, not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:The inplace keyword:DeprecationWarning",
    "ignore:The inplace keyword:pandas.errors.Pandas4Warning",
)

MINUTE_SYMBOL = "MSFT"  # served by the one-minute generator
MINUTE_NOW = pd.Timestamp("2024-03-15 21:00", tz="UTC")  # a Friday, after the close


# --------------------------------------------------------------------------------------------
# the fake Yahoo
# --------------------------------------------------------------------------------------------


class FakeResponse:
    """What yfinance reads from a response: status_code, text, content, url, json()."""

    def __init__(self, status_code: int, body: Any, url: str) -> None:
        self.status_code = status_code
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.content = self.text.encode()
        self.url = url

    def json(self) -> Any:
        return json.loads(self.text)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            from yfinance._http import HTTPError

            raise HTTPError(f"HTTP {self.status_code} for {self.url}", response=self)


def _not_found(kind: str, description: str) -> dict:
    return {kind: {"result": None, "error": {"code": "Not Found", "description": description}}}


class FakeYahoo:
    """Answers yfinance's requests; records them; fails loudly on anything unexpected."""

    def __init__(self) -> None:
        self.spy = json.loads((FIXTURES / "chart_SPY_1d_2017-12.json").read_text())
        self.requests: list[tuple[str, dict]] = []
        self.unexpected: list[str] = []
        self.violations: list[str] = []
        # From this chart data request on (1-based), raise what YfData raises on HTTP 429.
        self.rate_limit_from: int | None = None
        # This chart data request (1-based) fails like a dropped connection.
        self.drop_connection_at: int | None = None

    @property
    def chart_requests(self) -> list[dict]:
        """Price requests (period1/period2), not the timezone look-ups (range=1d)."""
        return [p for u, p in self.requests if u.startswith(CHART_URL) and "period1" in p]

    def respond(self, url: str, params: dict | None = None) -> FakeResponse:
        params = dict(params or {})
        self.requests.append((url, params))
        if url.startswith(CHART_URL):
            return self._chart(url[len(CHART_URL) :], params, url)
        if url.startswith(QUOTE_SUMMARY_URL):  # yfinance's .info fallback for a missing tz
            symbol = url[len(QUOTE_SUMMARY_URL) :]
            body = _not_found("quoteSummary", f"Quote not found for symbol: {symbol}")
            return FakeResponse(404, body, url)
        if url.startswith(QUOTE_URL):
            return FakeResponse(200, {"quoteResponse": {"result": [], "error": None}}, url)
        if url.startswith(TIMESERIES_URL):
            return FakeResponse(200, {"timeseries": {"result": [], "error": None}}, url)
        self.unexpected.append(url)
        raise AssertionError(f"unexpected Yahoo request {url} {params}")

    def _chart(self, symbol: str, params: dict, url: str) -> FakeResponse:
        if symbol not in ("SPY", MINUTE_SYMBOL):
            body = _not_found("chart", "No data found, symbol may be delisted")
            return FakeResponse(404, body, url)
        if "range" in params:  # timezone look-up: yfinance reads meta only
            meta = self._meta(symbol)
            body = {"chart": {"result": [{"meta": meta, "indicators": {"quote": [{}]}}]}}
            body["chart"]["error"] = None
            return FakeResponse(200, body, url)
        if self.rate_limit_from is not None and len(self.chart_requests) >= self.rate_limit_from:
            raise YFRateLimitError()
        if len(self.chart_requests) == self.drop_connection_at:
            raise ConnectionError("connection reset by peer")
        period1, period2 = int(params["period1"]), int(params["period2"])
        if symbol == "SPY":
            if params["interval"] != "1d":
                self.violations.append(f"SPY fixture is daily, asked for {params['interval']}")
            return FakeResponse(200, self._spy_slice(period1, period2), url)
        return self._minutes(params, period1, period2, url)

    def _meta(self, symbol: str) -> dict:
        meta = copy.deepcopy(self.spy["chart"]["result"][0]["meta"])
        if symbol == MINUTE_SYMBOL:
            meta.update(symbol=symbol, instrumentType="EQUITY", dataGranularity="1m")
        return meta

    def _spy_slice(self, period1: int, period2: int) -> dict:
        result = copy.deepcopy(self.spy["chart"]["result"][0])
        keep = [i for i, t in enumerate(result["timestamp"]) if period1 <= t < period2]
        if not keep:  # Yahoo's answer for a range without bars
            return {
                "chart": {
                    "result": [{"meta": result["meta"], "indicators": {"quote": [{}]}}],
                    "error": None,
                }
            }
        result["timestamp"] = [result["timestamp"][i] for i in keep]
        quote = result["indicators"]["quote"][0]
        for field in quote:
            quote[field] = [quote[field][i] for i in keep]
        adjclose = result["indicators"]["adjclose"][0]
        adjclose["adjclose"] = [adjclose["adjclose"][i] for i in keep]
        dividends = result["events"]["dividends"]
        result["events"]["dividends"] = {
            k: v for k, v in dividends.items() if period1 <= v["date"] < period2
        }
        return {"chart": {"result": [result], "error": None}}

    def _minutes(self, params: dict, period1: int, period2: int, url: str) -> FakeResponse:
        """One-minute bars of New York regular sessions, with Yahoo's 1m request rules."""
        if params["interval"] != "1m":
            self.violations.append(f"{MINUTE_SYMBOL} serves 1m only, asked {params['interval']}")
        if period2 - period1 > 8 * 86400:
            self.violations.append(f"1m request of {(period2 - period1) / 86400:.2f} days")
            body = {"chart": {"result": None, "error": {
                "code": "Unprocessable Entity",
                "description": "Only 8 days worth of 1m granularity data are allowed to be "
                "fetched per request.",
            }}}
            return FakeResponse(422, body, url)
        if period1 < (MINUTE_NOW - pd.Timedelta(days=30)).timestamp():
            self.violations.append("1m request older than 30 days")
        first = pd.Timestamp(period1, unit="s", tz="UTC").tz_convert(NY).date()
        last = pd.Timestamp(period2, unit="s", tz="UTC").tz_convert(NY).date()
        stamps: list[int] = []
        periods: list[list[dict]] = []
        for day in pd.date_range(first, last, freq="D"):
            if day.weekday() >= 5:
                continue
            midnight = pd.Timestamp(day.date()).tz_localize(NY)
            open_ = midnight + pd.Timedelta(hours=9, minutes=30)
            close = midnight + pd.Timedelta(hours=16)
            offset = int(open_.utcoffset().total_seconds())
            periods.append([{
                "timezone": open_.tzname(), "start": int(open_.timestamp()),
                "end": int(close.timestamp()), "gmtoffset": offset,
            }])
            minutes = pd.date_range(open_, close, freq="1min", inclusive="left")
            stamps += [t for t in (int(m.timestamp()) for m in minutes) if period1 <= t < period2]
        meta = self._meta(MINUTE_SYMBOL)
        if periods:
            meta["tradingPeriods"] = periods
        if not stamps:
            result = {"meta": meta, "indicators": {"quote": [{}]}}
            return FakeResponse(200, {"chart": {"result": [result], "error": None}}, url)
        base = np.array([100.0 + 0.01 * ((t // 60) % 500) for t in stamps])
        quote = {
            "open": base.tolist(),
            "high": (base + 0.05).tolist(),
            "low": (base - 0.05).tolist(),
            "close": (base + 0.01).tolist(),
            "volume": [1000 + (t // 60) % 7 for t in stamps],
        }
        result = {"meta": meta, "timestamp": stamps, "indicators": {"quote": [quote]}}
        return FakeResponse(200, {"chart": {"result": [result], "error": None}}, url)

    # fixture edits --------------------------------------------------------------------------

    def null_prices(self, day: str, fields: tuple[str, ...] = ALL_PRICES) -> None:
        """Make Yahoo send null for ``fields`` on ``day`` (a YYYY-MM-DD of the SPY fixture)."""
        result = self.spy["chart"]["result"][0]
        local_days = [
            pd.Timestamp(t, unit="s", tz="UTC").tz_convert(NY).strftime("%Y-%m-%d")
            for t in result["timestamp"]
        ]
        i = local_days.index(day)
        for field in fields:
            if field == "adjclose":
                result["indicators"]["adjclose"][0]["adjclose"][i] = None
            else:
                result["indicators"]["quote"][0][field][i] = None


class NoNetworkSession:
    """Stands in for the curl_cffi session under YfData: any request fails the test."""

    def __init__(self) -> None:
        self.cookies = http.cookiejar.CookieJar()
        self.proxies: dict = {}
        self.urls: list[str] = []

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        self.urls.append(url)
        raise AssertionError(f"a request reached the network layer: {url}")

    post = get


class TooManyRequestsSession(NoNetworkSession):
    """Yahoo rate-limiting everything: HTTP 429 'Too Many Requests' for every URL."""

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        self.urls.append(url)
        return FakeResponse(429, "Too Many Requests", url)

    post = get


@pytest.fixture
def yf_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NoNetworkSession]:
    """yfinance with its caches under ``tmp_path`` and a session that refuses any request.

    Every piece of process-wide yfinance state touched here is restored afterwards.
    """
    cache_dir = str(tmp_path / "yfinance-cache")
    managers = (yf_cache._TzDBManager, yf_cache._CookieDBManager, yf_cache._ISINDBManager)
    for manager in managers:
        monkeypatch.setattr(manager, "_db", None)
        monkeypatch.setattr(manager, "_cache_dir", cache_dir)
    monkeypatch.setattr(yf_cache._TzCacheManager, "_tz_cache", None)
    monkeypatch.setattr(yf_cache._CookieCacheManager, "_Cookie_cache", None)
    monkeypatch.setattr(yf_cache._ISINCacheManager, "_isin_cache", None)
    for proxy in (yf_cache.tz_db_proxy, yf_cache.Cookie_db_proxy, yf_cache.isin_db_proxy):
        monkeypatch.setattr(proxy, "obj", proxy.obj)  # restored on teardown
    monkeypatch.setattr(yf_base, "_tz_info_fetch_ctr", 0)
    data = YfData()
    session = NoNetworkSession()
    for name in ("_crumb", "_cookie", "_cookie_strategy"):
        monkeypatch.setattr(data, name, getattr(data, name))
    monkeypatch.setattr(data, "_session", session)
    real_cache_get = YfData.cache_get  # lru-cached across the process: start and end empty
    real_cache_get.cache_clear()
    yield session
    real_cache_get.cache_clear()
    for manager in managers:
        manager.close_db()
    assert session.urls == []


@pytest.fixture
def yahoo(yf_sandbox: NoNetworkSession, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeYahoo]:
    fake = FakeYahoo()

    def respond(self: YfData, url: str, params: dict | None = None, timeout: float = 30) -> Any:
        return fake.respond(url, params)

    monkeypatch.setattr(YfData, "get", respond)
    monkeypatch.setattr(YfData, "cache_get", respond)
    yield fake
    assert fake.unexpected == []
    assert fake.violations == []


def _csv_december(adjust: bool) -> pd.DataFrame:
    frame = read_bars(SPY_CSV, adjust=adjust)
    return frame.loc[pd.Timestamp("2017-12-01", tz="UTC") : pd.Timestamp("2017-12-30", tz="UTC")]


def _assert_prices(bars: pd.DataFrame, expected: pd.DataFrame, rtol: float) -> None:
    assert list(bars.index) == list(expected.index)
    for column in ("open", "high", "low", "close"):
        np.testing.assert_allclose(bars[column], expected[column], rtol=rtol, atol=0)
    np.testing.assert_array_equal(bars["volume"], expected["volume"])


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def test_raw_prices_equal_the_csv(yahoo: FakeYahoo) -> None:
    bars = fetch_yahoo("SPY", "2017-12-01", "2017-12-29", auto_adjust=False, cache=False, now=NOW)
    expected = _csv_december(adjust=False)
    assert len(bars) == 20
    _assert_prices(bars, expected, rtol=1e-9)
    np.testing.assert_allclose(bars["adj_close"], expected["adj_close"], rtol=1e-9, atol=0)
    assert list(bars.columns) == [
        "open", "high", "low", "close", "volume",
        "adj_close", "dividends", "stock_splits", "capital_gains",
    ]
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert bars.index.name == "timestamp" and str(bars.index.tz) == "UTC"
    # Daily bars open at New York midnight, as in the CSV.
    assert bars.index[0] == pd.Timestamp("2017-12-01 00:00", tz=NY)
    assert bars.index[-1] == pd.Timestamp("2017-12-29 00:00", tz=NY)
    dividends = bars["dividends"][bars["dividends"] != 0]
    assert dividends.to_dict() == {pd.Timestamp("2017-12-15 05:00", tz="UTC"): 1.351}
    assert bars.attrs["symbol"] == "SPY" and bars.attrs["interval"] == "1d"
    assert bars.attrs["source"] == "yahoo" and bars.attrs["timezone"] == NY
    assert bars.attrs["adjusted"] is False and bars.attrs["validated"] is True


def test_adjusted_prices_equal_the_csv_scaled_by_adj_close(yahoo: FakeYahoo) -> None:
    bars = fetch_yahoo("spy", "2017-12-01", "2017-12-29", cache=False, now=NOW)
    expected = _csv_december(adjust=True)
    _assert_prices(bars, expected, rtol=1e-6)
    assert "adj_close" not in bars.columns
    assert bars.attrs["adjusted"] is True and bars.attrs["symbol"] == "SPY"
    # Before the 2017-12-15 dividend adjusted prices are lower than raw ones, after it equal.
    raw = _csv_december(adjust=False)
    assert (bars["close"].iloc[:10] < raw["close"].iloc[:10]).all()
    np.testing.assert_allclose(bars["close"].iloc[10:], raw["close"].iloc[10:], rtol=1e-9)


def test_bounds_are_inclusive_bar_open_times(yahoo: FakeYahoo) -> None:
    aware = fetch_yahoo(
        "SPY",
        pd.Timestamp("2017-12-05 05:00", tz="UTC"),  # exactly the 12-05 bar's open
        pd.Timestamp("2017-12-07 05:00", tz="UTC"),  # exactly the 12-07 bar's open
        cache=False,
        now=NOW,
    )
    assert [t.strftime("%m-%d") for t in aware.index] == ["12-05", "12-06", "12-07"]
    one_ms_inside = fetch_yahoo(
        "SPY",
        pd.Timestamp("2017-12-05 05:00:00.001", tz="UTC"),
        pd.Timestamp("2017-12-07 04:59:59.999", tz="UTC"),
        cache=False,
        now=NOW,
    )
    assert [t.strftime("%m-%d") for t in one_ms_inside.index] == ["12-06"]


def test_bars_that_have_not_closed_at_now_are_not_returned(yahoo: FakeYahoo) -> None:
    # At 2017-12-29 12:00 UTC the 12-29 session has not even opened; 12-28 is still excluded
    # by the UTC-grid rule (last closed daily bar opened 2017-12-28 00:00 UTC).
    bars = fetch_yahoo(
        "SPY", "2017-12-20", "2017-12-29", cache=False, now="2017-12-29 12:00"
    )
    assert bars.index[-1] == pd.Timestamp("2017-12-27 00:00", tz=NY)


def test_naive_bounds_in_another_zone_warn(yahoo: FakeYahoo) -> None:
    with pytest.warns(UserWarning, match="SPY trades in America/New_York"):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW, tz="Europe/London")
    # Same zone: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW, tz=NY)


def test_one_minute_bars_are_paged_in_seven_day_requests(yahoo: FakeYahoo) -> None:
    bars = fetch_yahoo(
        MINUTE_SYMBOL,
        "2024-03-04 09:30",  # New York, before the 2024-03-10 DST change
        "2024-03-13 15:59",  # New York, after it
        interval="1m",
        cache=False,
        now=MINUTE_NOW,
    )
    requests = yahoo.chart_requests
    assert len(requests) >= 2
    spans = [(int(p["period2"]) - int(p["period1"])) / 86400 for p in requests]
    assert max(spans) <= 7
    for before, after in itertools.pairwise(requests):
        assert int(after["period1"]) == int(before["period2"])  # contiguous, no overlap
    # 8 sessions (Mar 4-8, 11-13) of 390 one-minute bars, first and last bar included.
    assert len(bars) == 8 * 390
    assert bars.index[0] == pd.Timestamp("2024-03-04 14:30", tz="UTC")  # 09:30 EST
    assert bars.index[-1] == pd.Timestamp("2024-03-13 19:59", tz="UTC")  # 15:59 EDT
    local = bars.index.tz_convert(NY)
    assert local.time.min() == pd.Timestamp("09:30").time()
    assert local.time.max() == pd.Timestamp("15:59").time()
    assert bars.attrs["interval"] == "1m" and not bars.index.has_duplicates


def test_one_minute_page_over_a_weekend_is_a_valid_empty_answer(yahoo: FakeYahoo) -> None:
    # Pages: Sat 03-02 09:30 (lo minus 4 days) to Sat 03-09 09:30, then the weekend alone.
    bars = fetch_yahoo(
        MINUTE_SYMBOL, "2024-03-06 09:30", "2024-03-10 11:59", interval="1m", cache=False,
        now=MINUTE_NOW,
    )
    assert len(yahoo.chart_requests) == 2
    assert len(bars) == 3 * 390
    assert bars.index[-1] == pd.Timestamp("2024-03-08 15:59", tz=NY)


def test_failed_page_is_an_error_not_a_hole(yahoo: FakeYahoo, tmp_path: Path) -> None:
    yahoo.drop_connection_at = 2  # yfinance hides the failure behind an empty frame
    with pytest.raises(YahooDataError, match=r"(?s)answered 1 of the 2 1m requests.*Retry"):
        fetch_yahoo(
            MINUTE_SYMBOL, "2024-03-04 09:30", "2024-03-13 15:59", interval="1m",
            cache=BarCache(tmp_path), now=MINUTE_NOW,
        )
    assert not list(tmp_path.rglob("*.parquet"))


def test_request_windows_for_one_minute_bars() -> None:
    lo = pd.Timestamp("2024-02-20 14:30", tz="UTC")
    hi = pd.Timestamp("2024-03-14 20:00", tz="UTC")
    windows = request_windows("1m", lo, hi, now=MINUTE_NOW)
    assert windows[0][0] == lo - pd.Timedelta(days=4)
    assert windows[-1][1] == hi + pd.Timedelta(minutes=1)
    assert all(b - a <= pd.Timedelta(days=7) for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))
    # Padding never reaches past Yahoo's 30-day limit.
    near_limit = MINUTE_NOW - pd.Timedelta(days=29, hours=23)
    first = request_windows("1m", near_limit, hi, now=MINUTE_NOW)[0][0]
    assert first == near_limit


# --------------------------------------------------------------------------------------------
# intervals and limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "name", "code"),
    [("1m", "1m", "1m"), ("2m", "2m", "2m"), ("60m", "1h", "60m"), ("1h", "1h", "60m"),
     ("90m", "90m", "90m"), ("1d", "1d", "1d"), ("D", "1d", "1d"), ("1wk", "1w", "1wk"),
     ("1mo", "1M", "1mo")],
)
def test_interval_names_map_to_yfinance_codes(spelling: str, name: str, code: str) -> None:
    parsed, yf_code = yahoo_interval(spelling)
    assert (parsed.name, yf_code) == (name, code)


@pytest.mark.parametrize("interval", ["4h", "2h", "3m", "5d", "3mo", "1s", "banana"])
def test_unsupported_interval_is_a_clear_error(yahoo: FakeYahoo, interval: str) -> None:
    with pytest.raises(ValueError, match=r"(?s)supported.*1d \(1d\).*1w \(1wk\).*1M \(1mo\)"):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", interval=interval, cache=False, now=NOW)
    assert yahoo.requests == []


@pytest.mark.parametrize(
    ("interval", "days_back", "limit"),
    [("1m", 31, 30), ("2m", 61, 60), ("5m", 61, 60), ("30m", 61, 60), ("90m", 61, 60),
     ("60m", 731, 730)],
)
def test_intraday_limit_fails_before_any_request(
    yahoo: FakeYahoo, tmp_path: Path, interval: str, days_back: int, limit: int
) -> None:
    start = MINUTE_NOW - pd.Timedelta(days=days_back)
    name = yahoo_interval(interval)[0].name
    pattern = rf"(?s){name} bars.*last {limit} days.*requested start {re.escape(str(start))}"
    with pytest.raises(YahooDataError, match=pattern):
        fetch_yahoo(
            "SPY", start, MINUTE_NOW, interval=interval, cache=BarCache(tmp_path), now=MINUTE_NOW
        )
    assert yahoo.requests == []
    assert not list(tmp_path.rglob("*.parquet"))


# --------------------------------------------------------------------------------------------
# silent failures made loud
# --------------------------------------------------------------------------------------------


def test_unknown_ticker_is_a_clear_error(yahoo: FakeYahoo, tmp_path: Path) -> None:
    with pytest.raises(YahooDataError, match=r"(?s)NOSUCH.*no rows.*unknown or delisted") as info:
        fetch_yahoo("NOSUCH", "2017-12-01", "2017-12-29", cache=BarCache(tmp_path), now=NOW)
    message = str(info.value)
    assert "no trading in the range" in message and "finance.yahoo.com/quote/NOSUCH" in message
    assert "no timezone found" in message  # yfinance's own reason, logged not raised
    assert not list(tmp_path.rglob("*.parquet"))  # nothing cached
    # yfinance asked for the timezone (chart endpoint), then fell back to .info; no prices.
    assert any(u.startswith(CHART_URL + "NOSUCH") for u, _ in yahoo.requests)
    assert yahoo.chart_requests == []


def test_known_ticker_without_bars_in_the_window_is_a_clear_error(yahoo: FakeYahoo) -> None:
    with pytest.raises(YahooDataError, match=r"(?s)SPY.*no rows.*no price data found"):
        fetch_yahoo("SPY", "2017-06-01", "2017-06-30", cache=False, now=NOW)


def test_weekend_range_is_cached_as_covered_and_reported(
    yahoo: FakeYahoo, tmp_path: Path
) -> None:
    cache = BarCache(tmp_path)
    with pytest.raises(YahooDataError, match=r"no 1d bars with open time in"):
        fetch_yahoo("SPY", "2017-12-02", "2017-12-03", cache=cache, now=NOW)
    # The padded request saw bars around the weekend, so the empty weekend is a valid answer
    # and its coverage is cached: asking again makes no request.
    calls = len(yahoo.requests)
    with pytest.raises(YahooDataError, match=r"no 1d bars"):
        fetch_yahoo("SPY", "2017-12-02", "2017-12-03", cache=cache, now=NOW)
    assert len(yahoo.requests) == calls


def test_rate_limit_from_history_is_rate_limited_error(yahoo: FakeYahoo, tmp_path: Path) -> None:
    yahoo.rate_limit_from = 1
    with pytest.raises(RateLimitedError, match=r"(?s)SPY.*rate-limited.*[Ww]ait.*retry"):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=BarCache(tmp_path), now=NOW)
    assert not list(tmp_path.rglob("*.parquet"))


def test_http_429_through_yfinance_own_transport(
    yf_sandbox: NoNetworkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One level lower: every HTTP answer is 429 and yfinance itself raises YFRateLimitError."""
    session = TooManyRequestsSession()
    monkeypatch.setattr(YfData(), "_session", session)
    with pytest.raises(RateLimitedError, match="Too Many Requests") as info:
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW)
    assert isinstance(info.value.__cause__, YFRateLimitError)
    assert any(url.startswith(CHART_URL + "SPY") for url in session.urls)
    assert all("yahoo.com" in url for url in session.urls)


def test_all_nan_prices_say_rate_limit(yahoo: FakeYahoo) -> None:
    for day in pd.bdate_range("2017-12-01", "2017-12-29").strftime("%Y-%m-%d"):
        if day != "2017-12-25":
            yahoo.null_prices(day, NO_QUOTE)
    with pytest.raises(YahooDataError, match=r"(?s)every open/high/low/close.*NaN.*rate-limited"):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW)


def test_rows_without_prices_are_named_never_dropped_silently(yahoo: FakeYahoo) -> None:
    yahoo.null_prices("2017-12-05", NO_QUOTE)
    yahoo.null_prices("2017-12-06", NO_QUOTE)
    with pytest.raises(
        YahooDataError, match=r"(?s)2 row\(s\).*no price.*2017-12-05 05:00:00\+00:00.*nan_rows"
    ):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW)
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\)"):
        bars = fetch_yahoo(
            "SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW, nan_rows="drop"
        )
    expected = _csv_december(adjust=True).drop(
        [pd.Timestamp("2017-12-05", tz=NY), pd.Timestamp("2017-12-06", tz=NY)]
    )
    _assert_prices(bars, expected, rtol=1e-6)


def test_half_empty_row_is_always_an_error(yahoo: FakeYahoo) -> None:
    yahoo.null_prices("2017-12-12", ("open",))
    for policy in ("raise", "drop"):
        with pytest.raises(YahooDataError, match=r"(?s)some prices but not others.*2017-12-12"):
            fetch_yahoo(
                "SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW, nan_rows=policy
            )


def test_other_yfinance_exceptions_are_wrapped(
    yahoo: FakeYahoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> pd.DataFrame:
        raise KeyError("exchangeTimezoneName")

    monkeypatch.setattr(yf.Ticker, "history", broken)
    with pytest.raises(YahooDataError, match=r"SPY: yfinance failed.*KeyError") as info:
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW)
    assert isinstance(info.value.__cause__, KeyError)


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------


def test_repeat_fetch_makes_no_request(yahoo: FakeYahoo, tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    first = fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=cache, now=NOW)
    assert cache.path(CacheKey("yahoo", "SPY", "1d")).exists()
    calls = len(yahoo.requests)
    assert calls > 0
    again = fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=cache, now=NOW)
    assert len(yahoo.requests) == calls
    pd.testing.assert_frame_equal(again, first)
    assert "nothing downloaded" in again.attrs["fetch_summary"]
    # Raw prices are cached apart.
    fetch_yahoo("SPY", "2017-12-01", "2017-12-29", auto_adjust=False, cache=cache, now=NOW)
    assert cache.path(CacheKey("yahoo-raw", "SPY", "1d")).exists()


def test_incremental_fetch_equals_one_full_fetch(yahoo: FakeYahoo, tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    fetch_yahoo("SPY", "2017-12-08", "2017-12-15", cache=cache, now=NOW)
    before = len(yahoo.chart_requests)
    grown = fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=cache, now=NOW)
    assert len(yahoo.chart_requests) == before + 2  # the part before and the part after
    full = fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=False, now=NOW)
    pd.testing.assert_frame_equal(grown, full)
    _assert_prices(grown, _csv_december(adjust=True), rtol=1e-6)


def test_failure_mid_fetch_leaves_the_cache_unchanged(yahoo: FakeYahoo, tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    fetch_yahoo("SPY", "2017-12-08", "2017-12-15", cache=cache, now=NOW)
    path = cache.path(CacheKey("yahoo", "SPY", "1d"))
    snapshot = path.read_bytes()
    # Two ranges are missing; the first downloads, the second is rate-limited.
    yahoo.rate_limit_from = len(yahoo.chart_requests) + 2
    with pytest.raises(RateLimitedError):
        fetch_yahoo("SPY", "2017-12-01", "2017-12-29", cache=cache, now=NOW)
    assert path.read_bytes() == snapshot
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files


def test_yfinance_caches_stay_in_the_sandbox(yahoo: FakeYahoo, tmp_path: Path) -> None:
    fetch_yahoo("SPY", "2017-12-01", "2017-12-08", cache=False, now=NOW)
    fetch_yahoo("SPY", "2017-12-11", "2017-12-15", cache=False, now=NOW)
    assert (tmp_path / "yfinance-cache" / "tkr-tz.db").exists()
    assert yf_cache.get_tz_cache().lookup("SPY") == NY
    tz_lookups = [p for u, p in yahoo.requests if u.startswith(CHART_URL) and "range" in p]
    assert len(tz_lookups) == 1  # the second Ticker read the zone from the sandboxed cache


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"ticker": ""}, ValueError, "ticker must be a non-empty string"),
        ({"ticker": 123}, ValueError, "ticker must be a non-empty string"),
        ({"start": "2017-12-29", "end": "2017-12-01"}, ValueError, "is before start"),
        ({"start": "not a date"}, ValueError, "start='not a date' is not a date"),
        ({"end": None}, ValueError, "end=None is not a date"),
        ({"tz": "Mars/Olympus"}, ValueError, "tz='Mars/Olympus' is not a time zone"),
        ({"nan_rows": "ignore"}, ValueError, "nan_rows must be 'raise' or 'drop'"),
        ({"cache": "yes"}, TypeError, "cache must be True, False, None or a BarCache"),
        ({"now": "2017-12-01 12:00"}, ValueError, "no bar of the range has closed yet"),
    ],
)
def test_bad_input_fails_before_any_request(
    yahoo: FakeYahoo, kwargs: dict, error: type[Exception], pattern: str
) -> None:
    call: dict[str, Any] = {
        "ticker": "SPY", "start": "2017-12-01", "end": "2017-12-29", "cache": False, "now": NOW,
    }
    call.update(kwargs)
    with pytest.raises(error, match=pattern):
        fetch_yahoo(**call)
    assert yahoo.requests == []


def test_not_yet_closed_range_with_cache_fails_before_any_request(
    yahoo: FakeYahoo, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no bar of the range has closed yet"):
        fetch_yahoo("SPY", "2017-12-29", "2017-12-29", cache=BarCache(tmp_path), now="2017-12-29")
    assert yahoo.requests == []


# --------------------------------------------------------------------------------------------
# yahoo_frame_to_bars on the user's own yfinance frames
# --------------------------------------------------------------------------------------------


def test_history_frame_to_bars(yahoo: FakeYahoo) -> None:
    history = yf.Ticker("SPY").history(start="2017-12-01", end="2017-12-30", auto_adjust=False)
    bars = yahoo_frame_to_bars(history, "SPY", "1d")
    expected = _csv_december(adjust=False)
    _assert_prices(bars, expected, rtol=1e-9)
    np.testing.assert_allclose(bars["adj_close"], expected["adj_close"], rtol=1e-9)
    assert bars.attrs["adjusted"] is False and bars.attrs["timezone"] == NY
    fetched = fetch_yahoo(
        "SPY", "2017-12-01", "2017-12-29", auto_adjust=False, cache=False, now=NOW
    )
    pd.testing.assert_frame_equal(bars, fetched)
    # A 'Date' column (after reset_index) works as well as the index.
    from_column = yahoo_frame_to_bars(history.reset_index(), "SPY", "1d")
    pd.testing.assert_frame_equal(from_column, bars)


def test_download_frame_with_one_ticker_is_flattened(yahoo: FakeYahoo) -> None:
    frame = yf.download("SPY", start="2017-12-01", end="2017-12-30", progress=False, threads=False)
    assert isinstance(frame.columns, pd.MultiIndex)
    assert frame.index.tz is None  # yf.download's naive exchange-local dates
    bars = yahoo_frame_to_bars(frame)
    _assert_prices(bars, _csv_december(adjust=True), rtol=1e-6)
    assert bars.attrs["symbol"] == "SPY" and bars.attrs["interval"] == "1d"
    assert bars.attrs["adjusted"] is True
    by_ticker = yf.download(
        "SPY", start="2017-12-01", end="2017-12-30", progress=False, threads=False,
        group_by="ticker",
    )
    assert list(by_ticker.columns.names) == ["Ticker", "Price"]
    pd.testing.assert_frame_equal(yahoo_frame_to_bars(by_ticker, "spy", "1d"), bars)
    with pytest.raises(ValueError, match="holds ticker 'SPY', not 'QQQ'"):
        yahoo_frame_to_bars(frame, "QQQ")


def test_download_with_an_unknown_ticker(yahoo: FakeYahoo) -> None:
    frame = yf.download(
        ["SPY", "NOSUCH"], start="2017-12-01", end="2017-12-30", progress=False, threads=False
    )
    with pytest.raises(ValueError, match=r"several tickers \['NOSUCH', 'SPY'\]|several tickers"):
        yahoo_frame_to_bars(frame)
    nosuch = frame.xs("NOSUCH", axis=1, level="Ticker")
    assert len(nosuch) == 20 and nosuch["Close"].isna().all()
    with pytest.raises(YahooDataError, match=r"(?s)NOSUCH: every open/high/low.*rate-limited"):
        yahoo_frame_to_bars(nosuch, "NOSUCH", "1d")
    spy = yahoo_frame_to_bars(frame.xs("SPY", axis=1, level="Ticker"), "SPY", "1d")
    _assert_prices(spy, _csv_december(adjust=True), rtol=1e-6)


def test_rate_limited_download_frame_is_a_clear_error(yahoo: FakeYahoo) -> None:
    yahoo.rate_limit_from = 1
    frame = yf.download("QQQ", start="2017-12-01", end="2017-12-30", progress=False, threads=False)
    assert frame.empty  # yf.download swallowed YFRateLimitError (probe: shape (0, 6))
    with pytest.raises(YahooDataError, match=r"(?s)QQQ.*no rows.*rate-limited yf.download"):
        yahoo_frame_to_bars(frame)


def test_constructed_rate_limited_download_frame() -> None:
    """The probe's all-NaN layout of a rate-limited yf.download, built by hand."""
    columns = pd.MultiIndex.from_product(
        [["Adj Close", "Close", "High", "Low", "Open", "Volume"], ["QQQ"]],
        names=["Price", "Ticker"],
    )
    index = pd.DatetimeIndex(["2017-12-01", "2017-12-04", "2017-12-05"], name="Date")
    frame = pd.DataFrame(np.nan, index=index, columns=columns)
    with pytest.raises(YahooDataError, match=r"(?s)QQQ: every.*NaN.*rate-limited.*retry"):
        yahoo_frame_to_bars(frame)


def test_frame_to_bars_bad_input() -> None:
    with pytest.raises(TypeError, match="needs a pandas DataFrame"):
        yahoo_frame_to_bars([1, 2, 3])  # type: ignore[arg-type]
    no_time = pd.DataFrame({"Open": [1.0], "High": [1.0], "Low": [1.0], "Close": [1.0]})
    with pytest.raises(DataError, match="needs a DatetimeIndex"):
        yahoo_frame_to_bars(no_time, "SPY")
    three_levels = pd.DataFrame(
        [[1.0]], columns=pd.MultiIndex.from_tuples([("Close", "SPY", "x")])
    )
    with pytest.raises(ValueError, match="3 column levels"):
        yahoo_frame_to_bars(three_levels)
    with pytest.raises(ValueError, match="unsupported Yahoo interval"):
        yahoo_frame_to_bars(no_time, "SPY", "4h")
    with pytest.raises(ValueError, match="nan_rows must be"):
        yahoo_frame_to_bars(no_time, "SPY", nan_rows="keep")  # type: ignore[arg-type]
