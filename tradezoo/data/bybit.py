"""Bybit v5 REST market data: klines, funding history, instrument info and server time.

:class:`BybitClient` talks to the public endpoints ``GET /v5/market/kline``,
``/v5/market/funding/history``, ``/v5/market/instruments-info`` and ``/v5/market/time``
(https://bybit-exchange.github.io/docs/v5/market/kline and siblings) over one
``requests.Session``. :func:`fetch_bybit` turns them into a validated bars frame (see
:mod:`tradezoo.data.bars`) with ``turnover`` and, for perpetuals, ``funding_rate``, cached on
disk through :func:`tradezoo.data.cache.cached_fetch`.

Response envelope
    ``{retCode: int, retMsg: str, result: object, retExtInfo: object, time: int ms}``. Success
    is ``retCode == 0``; every number inside ``result`` is a string. ``retExtInfo`` and
    ``time`` are optional (recorded testnet answers lack ``retExtInfo``). A body that is not
    this envelope (not JSON, no integer ``retCode``, no ``result`` object on success, a
    ``list`` of the wrong shape) raises :class:`~tradezoo.data.errors.SourceError` naming the
    endpoint and the parameters; it is never retried, because repeating the request would not
    change what the server sends.

Kline paging rule
    Bybit does not document which end of a ``start..end`` range holding more than ``limit``
    candles it returns, so the client never asks for such a range. ``[start, end]`` is cut
    into contiguous windows ``[start + k*W, start + (k+1)*W - 1 ms]`` with ``W = limit *
    interval`` (calendar months for ``M``). A window is shorter than ``limit`` intervals, so
    it holds at most ``limit`` candles whatever the alignment of ``start``, and every request
    sets both ``start`` and ``end`` (ms). Pages (newest first on the wire) are concatenated,
    clipped to ``[start, end]``, sorted ascending and de-duplicated (a later page wins).
    ``retCode 0`` with an empty ``list`` means "no candles there" (before the listing), not an
    error. When the first window is empty and there are many windows, the first non-empty
    window is found by bisection on prefix ranges ``[start of window 1, end of window m]``
    with ``limit=1``: whether such a range is empty does not depend on which end the server
    returns, so this skips the pre-listing years in O(log n) requests without ever skipping
    a candle.

Still-open candle rule
    The newest candle Bybit returns is usually still forming. A candle is kept only if it has
    closed, ``open + interval <= now``, where ``now`` is the earliest of the caller's clock
    (``now=`` or the client's ``clock``) and the ``time`` stamp of the response that carried
    the candle (Bybit's own clock when it produced the data). Taking the earlier of the two
    means a local clock running ahead of Bybit's can never let a partial candle through.
    :func:`fetch_bybit` additionally raises if a candle its range claims closed was dropped
    as open (local clock ahead of Bybit's), because the cache would otherwise record a
    permanent hole.

Retry policy
    Retried, with exponential backoff and "equal jitter": HTTP 429, HTTP 5xx, network
    timeouts and connection errors (``requests.Timeout``, ``requests.ConnectionError``,
    ``requests.exceptions.ChunkedEncodingError``) and ``retCode`` 10006 ("Too many visits").
    Retry ``k`` (1-based) sleeps ``d * U(0.5, 1)`` with ``d = min(backoff_max, backoff_base *
    2**(k-1))``. When the response carries ``X-Bapi-Limit-Reset-Timestamp`` (ms epoch) in
    the future, the client instead sleeps exactly until then, measured against the
    response's ``time`` stamp (else the client's clock) and capped at ``backoff_max``. At most
    ``max_retries`` retries follow the first attempt; when they are exhausted the client raises
    :class:`~tradezoo.data.errors.RateLimitedError` (last failure 429/10006) or
    :class:`~tradezoo.data.errors.SourceError` (5xx, timeouts), naming the attempts.
    Never retried: HTTP 403 (Bybit bans the IP for at least 10 minutes after 600 requests in
    5 s; raises ``RateLimitedError`` at once, since retrying only extends the ban), any other
    ``retCode != 0`` (raises :class:`~tradezoo.data.errors.BybitAPIError`), other HTTP
    errors, and malformed bodies.

Funding
    ``/v5/market/funding/history`` takes ``startTime``/``endTime`` (not ``start``/``end``),
    ``limit <= 200`` and answers newest first; the client pages backwards, moving ``endTime``
    to one millisecond before the oldest stamp received, until a page is empty or reaches
    ``startTime``. :func:`fetch_bybit` writes each rate into ``funding_rate`` at the bar whose
    open time equals the funding stamp (0.0 elsewhere), through the data layer's one
    :func:`~tradezoo.data.bars.merge_funding`. A stamp that falls on no bar open (bars of 6h,
    12h, 1d... do not open at every 8-hourly funding time, or a bar is missing) is never
    dropped: it is charged at the next bar's open with a :class:`FundingAlignmentWarning`
    naming the count and the first stamps (or a :class:`~tradezoo.data.errors.DataError`
    with ``unmatched_funding="error"``). Funding is downloaded with the bars it belongs to and
    cached with them; it is assumed published by the time the bar at its stamp has closed.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import requests
from tqdm import tqdm

from tradezoo.data.bars import finalize_bars, merge_funding
from tradezoo.data.cache import BarCache, CacheKey, cached_fetch, uncached_fetch
from tradezoo.data.errors import (
    BybitAPIError,
    DataError,
    FundingAlignmentWarning,
    RateLimitedError,
    SourceError,
)
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.data.validation import validate_bars
from tradezoo.errors import ConfigError

__all__ = [
    "BYBIT_INTERVALS",
    "BybitClient",
    "FundingAlignmentWarning",
    "bybit_interval",
    "fetch_bybit",
    "kline_windows",
    "merge_funding",
    "parse_envelope",
    "parse_funding",
    "parse_instrument",
    "parse_klines",
    "parse_server_time",
]

logger = logging.getLogger(__name__)

BYBIT_INTERVALS: tuple[str, ...] = (
    "1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M",
)
"""Bybit v5 kline ``interval`` codes (minutes, then day, week, month)."""

KLINE_CATEGORIES: tuple[str, ...] = ("spot", "linear", "inverse")
FUNDING_CATEGORIES: tuple[str, ...] = ("linear", "inverse")
INSTRUMENT_CATEGORIES: tuple[str, ...] = ("spot", "linear", "inverse", "option")
RETRYABLE_RET_CODES: frozenset[int] = frozenset({10006})
"""``retCode`` values that mean "slow down" rather than "your request is wrong"."""
MAX_KLINE_LIMIT = 1000
MAX_FUNDING_LIMIT = 200
KLINE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "turnover")
"""Fields 2..7 of a kline row, after ``startTime`` (ms)."""
RESET_HEADER = "X-Bapi-Limit-Reset-Timestamp"

# Below this many windows, bisecting for the first non-empty one costs more requests than it
# can save (1 + log2(n) probes against n - 1 pages).
_BISECT_MIN_WINDOWS = 8
_EXCERPT = 120

Clock = Callable[[], pd.Timestamp]
TimeLike = str | date | datetime | pd.Timestamp | np.datetime64


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _to_utc(value: TimeLike, name: str) -> pd.Timestamp:
    """Parse a user-given time; naive values are UTC.

    Raises:
        TypeError: ``value`` is a number (epoch units would be ambiguous) or another type.
        ValueError: ``value`` cannot be parsed as a time.
    """
    if isinstance(value, bool | int | float | np.number):
        raise TypeError(
            f"{name}={value!r}: pass a date/time string, datetime or pd.Timestamp, not a "
            "number (for epoch ms use pd.Timestamp(ms, unit='ms', tz='UTC'))"
        )
    if not isinstance(value, str | date | datetime | pd.Timestamp | np.datetime64):
        raise TypeError(
            f"{name}={value!r}: expected a date/time string, datetime or pd.Timestamp, "
            f"got {type(value).__name__}"
        )
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={value!r} is not a date/time pandas can parse ({exc})") from None
    if pd.isna(stamp):
        raise ConfigError(f"{name}={value!r} is not a date/time (NaT)")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _ms(stamp: pd.Timestamp) -> int:
    """Milliseconds since the epoch (floor), Bybit's time unit."""
    return int(stamp.value // 1_000_000)


def _from_ms(value: int) -> pd.Timestamp:
    return pd.Timestamp(int(value), unit="ms", tz="UTC")


def _describe(endpoint: str, params: Mapping[str, Any]) -> str:
    return f"GET {endpoint} with params {dict(params)}"


def _excerpt(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


def bybit_interval(interval: str | Interval) -> Interval:
    """Parse ``interval`` and check Bybit has klines of that length.

    Accepts Bybit codes (``"60"``, ``"D"``) and canonical names (``"1h"``, ``"1d"``).

    Raises:
        ValueError: unknown interval; the message lists Bybit's intervals.
    """
    try:
        parsed = parse_interval(interval)
        parsed.bybit_code  # noqa: B018 - raises ValueError when Bybit has no such interval
    except ValueError:
        canonical = " ".join(parse_interval(code).name for code in BYBIT_INTERVALS)
        raise ConfigError(
            f"unknown Bybit kline interval {interval!r}: Bybit v5 supports the codes "
            f"{' '.join(BYBIT_INTERVALS)} (that is {canonical})"
        ) from None
    return parsed


def _check_category(category: str, allowed: tuple[str, ...], what: str) -> None:
    if category not in allowed:
        raise ConfigError(
            f"category={category!r} is not valid for Bybit {what}; use one of {list(allowed)}"
        )


def _check_symbol(symbol: str) -> None:
    if not isinstance(symbol, str) or not symbol or symbol != symbol.strip():
        raise ConfigError(
            f"symbol={symbol!r} must be a non-empty string without spaces, as Bybit spells it "
            "(e.g. 'BTCUSDT')"
        )


def _bar_close(open_times: pd.DatetimeIndex, interval: Interval) -> pd.DatetimeIndex:
    """Close times of bars opening at ``open_times`` (calendar months for ``M``)."""
    if interval.minutes is None:
        return open_times + pd.DateOffset(months=1)
    return open_times + pd.Timedelta(minutes=interval.minutes)


def kline_windows(
    start: pd.Timestamp, end: pd.Timestamp, interval: Interval, limit: int
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Cut ``[start, end]`` into request windows of at most ``limit`` candles each.

    Window ``k`` is ``[start + k*W, start + (k+1)*W - 1 ms]`` (the last one ends at ``end``)
    with ``W = limit`` intervals. A closed window shorter than ``limit`` intervals holds at
    most ``limit`` bar opens whether or not ``start`` is on the bar grid, and consecutive
    windows leave no gap, so no candle can fall between two requests.

    Returns:
        ``[(window_start, window_end), ...]`` in ascending order (UTC, inclusive); empty if
        ``end < start``.
    """
    windows: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    one_ms = pd.Timedelta(milliseconds=1)
    k = 0
    while True:
        # Offsets from the anchor (not from the previous window) keep month windows from
        # drifting when a day-of-month is clamped (Jan 31 + 1 month = Feb 28).
        if interval.minutes is None:
            lo = start + pd.DateOffset(months=k * limit)
            nxt = start + pd.DateOffset(months=(k + 1) * limit)
        else:
            width = pd.Timedelta(minutes=interval.minutes) * limit
            lo, nxt = start + k * width, start + (k + 1) * width
        if lo > end:
            return windows
        windows.append((lo, min(nxt - one_ms, end)))
        k += 1


# --------------------------------------------------------------------------------------------
# parsers (pure functions of a response; the tests feed them recorded bodies)
# --------------------------------------------------------------------------------------------


def parse_envelope(
    body: bytes | str, *, endpoint: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Decode a Bybit v5 response body and check the envelope.

    Args:
        body: the raw HTTP body.
        endpoint: e.g. ``"/v5/market/kline"`` (for messages).
        params: the query parameters sent (for messages).

    Returns:
        The decoded envelope: a dict with an integer ``retCode`` and, when ``retCode == 0``,
        a dict ``result``. ``retExtInfo`` and ``time`` are not required.

    Raises:
        SourceError: the body is not JSON, not an object, lacks an integer ``retCode``, or
            lacks the ``result`` object on success.
    """
    where = _describe(endpoint, params or {})
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"Bybit {where}: the response is not JSON ({exc}); body starts {_excerpt(body)}"
        ) from None
    if not isinstance(payload, dict):
        raise SourceError(
            f"Bybit {where}: expected the v5 JSON envelope object, got a JSON "
            f"{type(payload).__name__}; body starts {_excerpt(body)}"
        )
    code = payload.get("retCode")
    if isinstance(code, bool) or not isinstance(code, int):
        raise SourceError(
            f"Bybit {where}: the response is not the v5 envelope: 'retCode' is "
            f"{'missing' if code is None else f'not an integer ({code!r})'}; "
            f"body starts {_excerpt(body)}"
        )
    if code == 0 and not isinstance(payload.get("result"), dict):
        raise SourceError(
            f"Bybit {where}: retCode 0 but 'result' is not an object "
            f"({type(payload.get('result')).__name__}); body starts {_excerpt(body)}"
        )
    return payload


def _result_list(result: Mapping[str, Any], where: str) -> list[Any]:
    rows = result.get("list")
    if not isinstance(rows, list):
        raise SourceError(
            f"Bybit {where}: result.list must be a JSON array, got "
            f"{'nothing' if rows is None else type(rows).__name__}"
        )
    return rows


def _number(value: Any, where: str, field: str, row: int) -> float:
    # Bybit sends strings; plain JSON numbers are accepted too since they are unambiguous.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SourceError(f"Bybit {where}: row {row} field {field!r} is {value!r}, not a number")
    try:
        return float(value)
    except ValueError:
        raise SourceError(
            f"Bybit {where}: row {row} field {field!r} is {value!r}, not a number"
        ) from None


def _stamp_ms(value: Any, where: str, field: str, row: int) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SourceError(f"Bybit {where}: row {row} field {field!r} is {value!r}, not ms")
    try:
        return int(value)
    except ValueError:
        raise SourceError(
            f"Bybit {where}: row {row} field {field!r} is {value!r}, not an integer ms stamp"
        ) from None


def parse_klines(
    result: Mapping[str, Any], *, endpoint: str = "/v5/market/kline",
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Parse ``result`` of ``GET /v5/market/kline``.

    Each row of ``result.list`` is ``[startTime ms, open, high, low, close, volume,
    turnover]`` as strings, newest first.

    Returns:
        A frame indexed by candle open time (UTC, named ``timestamp``) **in the order sent**
        (newest first), float64 columns ``open high low close volume turnover``. Empty (with
        those columns) for an empty list.

    Raises:
        SourceError: ``list`` is not an array of 7-element arrays of numbers.
    """
    where = _describe(endpoint, params or {})
    rows = _result_list(result, where)
    width = 1 + len(KLINE_COLUMNS)
    index_name = "timestamp"
    if all(isinstance(row, list) and len(row) == width for row in rows) and all(
        isinstance(x, str) for row in rows for x in row
    ):
        # Fast path for the documented all-string rows: numpy parses the whole page at once.
        # Anything it rejects is re-parsed below, field by field, to name the bad value.
        table = np.array(rows, dtype=str).reshape(len(rows), width)
        try:
            stamps = table[:, 0].astype(np.int64)
            values = table[:, 1:].astype(np.float64)
        except ValueError:
            pass
        else:
            index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ms", utc=True), name=index_name)
            return pd.DataFrame(values, index=index, columns=list(KLINE_COLUMNS))
    stamps = np.empty(len(rows), dtype=np.int64)
    values = np.empty((len(rows), len(KLINE_COLUMNS)), dtype=np.float64)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 1 + len(KLINE_COLUMNS):
            raise SourceError(
                f"Bybit {where}: kline row {i} must be an array of 7 strings [startTime, open, "
                f"high, low, close, volume, turnover], got {row!r}"
            )
        stamps[i] = _stamp_ms(row[0], where, "startTime", i)
        for j, column in enumerate(KLINE_COLUMNS):
            values[i, j] = _number(row[1 + j], where, column, i)
    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ms", utc=True), name="timestamp")
    return pd.DataFrame(values, index=index, columns=list(KLINE_COLUMNS))


def parse_funding(
    result: Mapping[str, Any], *, endpoint: str = "/v5/market/funding/history",
    params: Mapping[str, Any] | None = None, symbol: str | None = None,
) -> pd.Series:
    """Parse ``result`` of ``GET /v5/market/funding/history``.

    Rows are ``{symbol, fundingRate, fundingRateTimestamp}`` strings, newest first.

    Args:
        symbol: if given, every row must be for this symbol.

    Returns:
        ``funding_rate`` (float64, rate per funding interval) indexed by funding time (UTC,
        named ``timestamp``) in the order sent.

    Raises:
        SourceError: wrong shape, a non-numeric field, or a row for another symbol.
    """
    where = _describe(endpoint, params or {})
    rows = _result_list(result, where)
    stamps = np.empty(len(rows), dtype=np.int64)
    rates = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "fundingRate" not in row or (
            "fundingRateTimestamp" not in row
        ):
            raise SourceError(
                f"Bybit {where}: funding row {i} must be an object with fundingRate and "
                f"fundingRateTimestamp, got {row!r}"
            )
        if symbol is not None and row.get("symbol", symbol) != symbol:
            raise SourceError(
                f"Bybit {where}: funding row {i} is for {row.get('symbol')!r}, asked {symbol!r}"
            )
        stamps[i] = _stamp_ms(row["fundingRateTimestamp"], where, "fundingRateTimestamp", i)
        rates[i] = _number(row["fundingRate"], where, "fundingRate", i)
    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ms", utc=True), name="timestamp")
    return pd.Series(rates, index=index, name="funding_rate", dtype=np.float64)


def _optional_float(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _optional_time(value: Any) -> pd.Timestamp | None:
    # Bybit writes "0" for "no delivery" (perpetuals) and "" for "not set".
    if value in (None, "", "0", 0):
        return None
    try:
        return _from_ms(int(value))
    except (TypeError, ValueError):
        return None


def parse_instrument(
    result: Mapping[str, Any], symbol: str, *, endpoint: str = "/v5/market/instruments-info",
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Parse the entry for ``symbol`` from ``result`` of ``GET /v5/market/instruments-info``.

    Returns:
        A dict with ``symbol``, ``category``, ``status`` (``"Trading"``, ``"PreLaunch"``...),
        ``contractType``, ``baseCoin``, ``quoteCoin``, ``settleCoin``, ``launchTime`` and
        ``deliveryTime`` (UTC Timestamps, None when Bybit sends 0/empty), ``tickSize``,
        ``minPrice``, ``maxPrice``, ``qtyStep``, ``minOrderQty``, ``maxOrderQty``,
        ``minNotionalValue``, ``maxLeverage``, ``upperFundingRate``, ``lowerFundingRate``
        (floats or None), ``fundingInterval`` (minutes, int, None for spot/options),
        ``priceScale`` (int or None), and ``raw`` (the entry as sent). Spot entries have no
        ``qtyStep``; their ``lotSizeFilter.basePrecision`` (the base-quantity increment) is
        reported as ``qtyStep``.

    Raises:
        SourceError: wrong shape, or ``symbol`` is not in the list (unknown symbol: Bybit
            answers retCode 0 with an empty list).
    """
    where = _describe(endpoint, params or {})
    rows = _result_list(result, where)
    entry = next((r for r in rows if isinstance(r, dict) and r.get("symbol") == symbol), None)
    if entry is None:
        raise SourceError(
            f"Bybit {where}: no instrument {symbol!r} in the answer "
            f"(got {[r.get('symbol') for r in rows if isinstance(r, dict)]}); "
            "check the symbol and the category"
        )
    price = entry.get("priceFilter") or {}
    lot = entry.get("lotSizeFilter") or {}
    leverage = entry.get("leverageFilter") or {}
    if not isinstance(price, dict) or not isinstance(lot, dict) or not isinstance(leverage, dict):
        raise SourceError(f"Bybit {where}: priceFilter/lotSizeFilter of {symbol} are not objects")
    funding_interval = entry.get("fundingInterval")
    price_scale = entry.get("priceScale")
    return {
        "symbol": symbol,
        "category": result.get("category"),
        "status": entry.get("status"),
        "contractType": entry.get("contractType"),
        "baseCoin": entry.get("baseCoin"),
        "quoteCoin": entry.get("quoteCoin"),
        "settleCoin": entry.get("settleCoin"),
        "launchTime": _optional_time(entry.get("launchTime")),
        "deliveryTime": _optional_time(entry.get("deliveryTime")),
        "tickSize": _optional_float(price.get("tickSize")),
        "minPrice": _optional_float(price.get("minPrice")),
        "maxPrice": _optional_float(price.get("maxPrice")),
        "qtyStep": _optional_float(lot.get("qtyStep", lot.get("basePrecision"))),
        "minOrderQty": _optional_float(lot.get("minOrderQty")),
        "maxOrderQty": _optional_float(lot.get("maxOrderQty")),
        "minNotionalValue": _optional_float(lot.get("minNotionalValue", lot.get("minOrderAmt"))),
        "maxLeverage": _optional_float(leverage.get("maxLeverage")),
        "upperFundingRate": _optional_float(entry.get("upperFundingRate")),
        "lowerFundingRate": _optional_float(entry.get("lowerFundingRate")),
        "fundingInterval": None if funding_interval in (None, "") else int(funding_interval),
        "priceScale": None if price_scale in (None, "") else int(price_scale),
        "raw": dict(entry),
    }


def parse_server_time(
    result: Mapping[str, Any], *, endpoint: str = "/v5/market/time",
    params: Mapping[str, Any] | None = None,
) -> pd.Timestamp:
    """Parse ``result`` of ``GET /v5/market/time`` (``timeNano``, else ``timeSecond``)."""
    where = _describe(endpoint, params or {})
    try:
        if result.get("timeNano") not in (None, ""):
            return pd.Timestamp(int(result["timeNano"]), unit="ns", tz="UTC")
        return pd.Timestamp(int(result["timeSecond"]), unit="s", tz="UTC")
    except (KeyError, TypeError, ValueError):
        raise SourceError(
            f"Bybit {where}: result has no integer timeNano/timeSecond: {dict(result)!r}"
        ) from None


# --------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------


def _server_ms(body: bytes) -> int | None:
    """The envelope's ``time`` (Bybit's clock, ms) if ``body`` is an envelope that has one."""
    try:
        stamp = json.loads(body).get("time")
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object
        return None
    return stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None


class _Retry(Exception):
    """Internal: one attempt failed in a way the retry policy covers."""

    def __init__(self, problem: str, rate_limited: bool, wait_s: float | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.rate_limited = rate_limited
        self.wait_s = wait_s


class BybitClient:
    """A small, retrying client for Bybit's public v5 market endpoints.

    Args:
        base_url: API root (``https://api.bybit.com``; ``https://api-testnet.bybit.com`` for
            testnet; a local fake in tests).
        timeout: seconds per HTTP request (connect and read).
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts).
        backoff_base: seconds before the first retry (before jitter); doubles each retry.
        backoff_max: cap on any single sleep, seconds, including a reset-timestamp wait.
        session: a ``requests.Session`` to use (and not close); one is created otherwise.
        sleep: called with seconds to wait between attempts (inject a recorder in tests).
        clock: returns the current UTC time; decides which candles have closed and measures
            reset timestamps when a response has no ``time`` stamp. Defaults to the local
            clock.
        rng: jitter source (seed it for reproducible sleeps).

    See the module docstring for the paging, still-open-candle and retry rules.
    """

    def __init__(
        self,
        base_url: str = "https://api.bybit.com",
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
        if not backoff_base >= 0:
            raise ValueError(f"backoff_base={backoff_base!r} must be >= 0 seconds")
        if not backoff_max >= backoff_base:
            raise ValueError(
                f"backoff_max={backoff_max!r} must be >= backoff_base={backoff_base!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()
        if self._owns_session:
            self.session.headers["User-Agent"] = "tradezoo"
        self.sleep = sleep
        self.clock: Clock = clock or _utc_now
        self.rng = rng or random.Random()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> BybitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BybitClient(base_url={self.base_url!r}, max_retries={self.max_retries})"

    def now(self) -> pd.Timestamp:
        """The client's clock, as a UTC Timestamp."""
        return _to_utc(self.clock(), "clock()")

    # -- transport and retry policy ------------------------------------------------------------

    def _backoff(self, retry: int) -> float:
        """Jittered exponential delay before retry ``retry`` (1-based): ``d * U(0.5, 1)``."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        # "Equal jitter": spreads clients apart but never retries sooner than half the delay.
        return ceiling * (0.5 + 0.5 * self.rng.random())

    def _reset_wait(self, response: requests.Response, server_ms: int | None) -> float | None:
        """Seconds until ``X-Bapi-Limit-Reset-Timestamp``, capped; None if absent or past."""
        raw = response.headers.get(RESET_HEADER)
        if raw is None:
            return None
        try:
            reset_ms = int(raw)
        except ValueError:
            logger.warning("ignoring unparsable %s header %r", RESET_HEADER, raw)
            return None
        reference_ms = server_ms if server_ms is not None else _ms(self.now())
        wait = (reset_ms - reference_ms) / 1000.0
        return min(wait, self.backoff_max) if wait > 0 else None

    def _attempt(self, endpoint: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One HTTP request; returns the envelope or raises ``_Retry`` / a final error."""
        where = _describe(endpoint, params)
        try:
            response = self.session.get(
                self.base_url + endpoint, params=dict(params), timeout=self.timeout
            )
        except (
            requests.Timeout,
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}", rate_limited=False, wait_s=None) from exc
        status = response.status_code
        if status == 403:
            raise RateLimitedError(
                f"Bybit answered HTTP 403 to {where}: the IP address is banned for at least "
                "10 minutes for exceeding the IP limit (600 requests per 5 seconds); wait 10 "
                f"minutes or more before any further request (not retried). Body: "
                f"{_excerpt(response.content)}"
            )
        if status == 429 or 500 <= status <= 599:
            raise _Retry(
                f"HTTP {status} (body {_excerpt(response.content)})",
                rate_limited=status == 429,
                wait_s=self._reset_wait(response, _server_ms(response.content)),
            )
        if not 200 <= status <= 299:
            try:
                envelope = parse_envelope(response.content, endpoint=endpoint, params=params)
            except SourceError:
                raise SourceError(
                    f"Bybit answered HTTP {status} to {where}; body starts "
                    f"{_excerpt(response.content)}"
                ) from None
            if envelope["retCode"] == 0:
                raise SourceError(f"Bybit answered HTTP {status} to {where} with retCode 0")
        else:
            envelope = parse_envelope(response.content, endpoint=endpoint, params=params)
        code = envelope["retCode"]
        if code == 0:
            return envelope
        message = str(envelope.get("retMsg", ""))
        if code in RETRYABLE_RET_CODES:
            raise _Retry(
                f"retCode {code} ({message!r})",
                rate_limited=True,
                wait_s=self._reset_wait(response, _server_ms(response.content)),
            )
        raise BybitAPIError(code, message, endpoint, params)

    def request(self, endpoint: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``GET endpoint`` with the retry policy; returns the decoded envelope.

        Raises:
            RateLimitedError: HTTP 403, or retries exhausted on HTTP 429 / retCode 10006.
            BybitAPIError: ``retCode`` other than 0 and 10006.
            SourceError: retries exhausted on 5xx or network errors; malformed body; another
                HTTP error status.
        """
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(endpoint, params)
            except _Retry as failure:
                last = failure
                if attempt == attempts:
                    break
                wait = failure.wait_s if failure.wait_s is not None else self._backoff(attempt)
                logger.info(
                    "Bybit GET %s %s: %s; retry %d/%d in %.3f s",
                    endpoint, dict(params), failure.problem, attempt, self.max_retries, wait,
                )
                self.sleep(wait)
        error = RateLimitedError if last.rate_limited else SourceError
        raise error(
            f"Bybit {_describe(endpoint, params)} failed after {attempts} attempts "
            f"({self.max_retries} retries with exponential backoff); last failure: "
            f"{last.problem}"
        )

    # -- endpoints ---------------------------------------------------------------------------

    def server_time(self) -> pd.Timestamp:
        """Bybit's clock (``GET /v5/market/time``) as a UTC Timestamp (ns precision)."""
        endpoint = "/v5/market/time"
        envelope = self.request(endpoint, {})
        return parse_server_time(envelope["result"], endpoint=endpoint, params={})

    def get_instrument_info(self, symbol: str, category: str = "linear") -> dict[str, Any]:
        """Trading rules of one instrument (``GET /v5/market/instruments-info``).

        Returns:
            See :func:`parse_instrument` (tick size, quantity step, minimum order,
            funding interval in minutes, status, launch time, ...).
        """
        _check_symbol(symbol)
        _check_category(category, INSTRUMENT_CATEGORIES, "instruments-info")
        endpoint = "/v5/market/instruments-info"
        params = {"category": category, "symbol": symbol}
        envelope = self.request(endpoint, params)
        return parse_instrument(envelope["result"], symbol, endpoint=endpoint, params=params)

    def get_funding_history(
        self, symbol: str, start: TimeLike, end: TimeLike, category: str = "linear"
    ) -> pd.Series:
        """Settled funding rates with funding time in ``[start, end]``.

        Pages backwards from ``end`` with ``startTime``/``endTime`` and ``limit=200``.

        Returns:
            ``funding_rate`` (float64, per funding interval; positive: longs pay shorts)
            indexed by funding time (UTC, ascending, unique, named ``timestamp``).
        """
        _check_symbol(symbol)
        _check_category(category, FUNDING_CATEGORIES, "funding history")
        lo, hi = _to_utc(start, "start"), _to_utc(end, "end")
        if hi < lo:
            raise ConfigError(f"start={lo} is after end={hi}")
        endpoint = "/v5/market/funding/history"
        lo_ms, end_ms = _ms(lo), _ms(hi)
        pages: list[pd.Series] = []
        while end_ms >= lo_ms:
            params = {
                "category": category,
                "symbol": symbol,
                "startTime": lo_ms,
                "endTime": end_ms,
                "limit": MAX_FUNDING_LIMIT,
            }
            envelope = self.request(endpoint, params)
            page = parse_funding(envelope["result"], endpoint=endpoint, params=params,
                                 symbol=symbol)
            if page.empty:
                break
            pages.append(page)
            oldest_ms = _ms(page.index.min())
            if oldest_ms >= end_ms + 1:
                # The server ignored endTime; going on would loop forever.
                raise SourceError(
                    f"Bybit {_describe(endpoint, params)}: returned funding newer than endTime "
                    f"(oldest {page.index.min()}); cannot page backwards"
                )
            end_ms = oldest_ms - 1
        if not pages:
            return pd.Series(
                [], index=pd.DatetimeIndex([], tz="UTC", name="timestamp"),
                name="funding_rate", dtype=np.float64,
            )
        funding = pd.concat(pages).sort_index()
        funding = funding[~funding.index.duplicated(keep="last")]
        return funding.loc[lo:hi].rename("funding_rate")

    def get_klines(
        self,
        symbol: str,
        interval: str | Interval,
        start: TimeLike,
        end: TimeLike,
        category: str = "linear",
        limit: int = MAX_KLINE_LIMIT,
        progress: bool = False,
        *,
        now: TimeLike | None = None,
    ) -> pd.DataFrame:
        """Closed candles with open time in ``[start, end]`` (``GET /v5/market/kline``).

        Args:
            symbol: e.g. ``"BTCUSDT"``.
            interval: Bybit code or canonical name (``"60"`` or ``"1h"``).
            start, end: inclusive bounds on the open time; naive means UTC.
            category: ``"linear"``, ``"inverse"`` or ``"spot"``.
            limit: candles per request window, 1..1000.
            progress: show a tqdm bar over pages on stderr.
            now: the caller's "now" for the still-open-candle rule; defaults to the clock.

        Returns:
            A bars frame (not validated) with ``turnover``; ``attrs['source']`` is
            ``f"bybit-{category}"``. Empty (same columns) when Bybit has no candles there.
        """
        frame, _ = self._klines(symbol, interval, start, end, category, limit, progress, now)
        return frame

    def _klines(
        self,
        symbol: str,
        interval: str | Interval,
        start: TimeLike,
        end: TimeLike,
        category: str,
        limit: int,
        progress: bool,
        now: TimeLike | None,
    ) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        """:meth:`get_klines`, also returning the open time of the newest candle dropped as
        still open (None if none was)."""
        _check_symbol(symbol)
        parsed = bybit_interval(interval)
        _check_category(category, KLINE_CATEGORIES, "klines")
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
            1 <= limit <= MAX_KLINE_LIMIT
        ):
            raise ValueError(f"limit={limit!r} must be an integer in 1..{MAX_KLINE_LIMIT}")
        lo, hi = _to_utc(start, "start"), _to_utc(end, "end")
        if hi < lo:
            raise ConfigError(f"start={lo} is after end={hi}")
        local_now = _to_utc(now, "now") if now is not None else self.now()
        # No candle opens after "now": never ask for windows in the future.
        windows = kline_windows(lo, min(hi, local_now), parsed, limit)
        endpoint = "/v5/market/kline"
        base = {"category": category, "symbol": symbol, "interval": parsed.bybit_code}

        def page(
            w_lo: pd.Timestamp, w_hi: pd.Timestamp, size: int
        ) -> tuple[pd.DataFrame, pd.Timestamp]:
            params = {**base, "start": _ms(w_lo), "end": _ms(w_hi), "limit": size}
            envelope = self.request(endpoint, params)
            rows = parse_klines(envelope["result"], endpoint=endpoint, params=params)
            server_ms = envelope.get("time")
            reference = local_now
            if isinstance(server_ms, int) and not isinstance(server_ms, bool):
                # The candle's state is as of the server's clock when it answered.
                reference = min(reference, _from_ms(server_ms))
            return rows, reference

        pieces: list[pd.DataFrame] = []
        dropped_open: pd.Timestamp | None = None
        with tqdm(
            total=len(windows), disable=not progress, file=sys.stderr, unit="page",
            desc=f"Bybit {category} {symbol} {parsed.name}",
        ) as bar:
            k = 0
            while k < len(windows):
                rows, reference = page(*windows[k], limit)
                bar.update(1)
                is_open = np.asarray(_bar_close(rows.index, parsed) > reference, dtype=bool)
                if is_open.any():
                    newest_open = rows.index[is_open].max()
                    dropped_open = newest_open if dropped_open is None else max(
                        dropped_open, newest_open
                    )
                pieces.append(rows[~is_open])
                k += 1
                if k == 1 and rows.empty and len(windows) >= _BISECT_MIN_WINDOWS:
                    first = self._first_nonempty_window(windows, page)
                    bar.update(first - k)
                    k = first
        frame = pd.concat(pieces) if pieces else parse_klines({"list": []})
        frame = frame.sort_index(kind="stable")
        frame = frame[~frame.index.duplicated(keep="last")].loc[lo:hi]
        bars = finalize_bars(frame, symbol=symbol, interval=parsed.name, source=f"bybit-{category}")
        return bars, dropped_open

    @staticmethod
    def _first_nonempty_window(
        windows: list[tuple[pd.Timestamp, pd.Timestamp]],
        page: Callable[[pd.Timestamp, pd.Timestamp, int], tuple[pd.DataFrame, pd.Timestamp]],
    ) -> int:
        """Index of the first window (>= 1) holding a candle, or ``len(windows)`` if none.

        Bisects on prefix ranges ``[windows[1] start, windows[m] end]`` fetched with
        ``limit=1``: a prefix is empty exactly when all its windows are, whichever end of a
        long range the server returns, and emptiness only grows with ``m``.
        """
        first_lo = windows[1][0]
        low, high = 1, len(windows) - 1
        if page(first_lo, windows[high][1], 1)[0].empty:
            return len(windows)
        while low < high:
            middle = (low + high) // 2
            if page(first_lo, windows[middle][1], 1)[0].empty:
                low = middle + 1
            else:
                high = middle
        return low


# --------------------------------------------------------------------------------------------
# fetch_bybit
# --------------------------------------------------------------------------------------------


def fetch_bybit(
    symbol: str,
    interval: str | Interval,
    start: TimeLike,
    end: TimeLike,
    category: str = "linear",
    *,
    client: BybitClient | None = None,
    cache: bool | BarCache | None = True,
    progress: bool = False,
    now: TimeLike | None = None,
    unmatched_funding: Literal["next_bar", "error"] = "next_bar",
) -> pd.DataFrame:
    """Validated Bybit bars with open time in ``[start, end]``, cached on disk.

    Klines come from :meth:`BybitClient.get_klines`; for ``linear`` and ``inverse`` the
    funding history of the same range is merged into ``funding_rate`` (see
    :func:`merge_funding`). ``end`` is capped at the last closed bar at ``now``. With a cache,
    only the part of the range the cache file does not cover is downloaded, and the file is
    replaced atomically once every part has arrived (an error leaves it untouched).

    Args:
        symbol: e.g. ``"BTCUSDT"``.
        interval: Bybit code or canonical name (``"60"``, ``"1h"``, ``"D"``, ``"1d"``).
        start, end: inclusive bounds on bar open times: str, datetime or Timestamp; naive
            means UTC.
        category: ``"linear"`` (USDT perpetuals, default), ``"inverse"`` or ``"spot"``.
        client: a :class:`BybitClient`; a default one is created (and closed) otherwise.
        cache: ``True`` for :class:`BarCache` under ``$TRADEZOO_DATA_DIR``, a ``BarCache``
            to use, or ``False``/``None`` to skip the cache.
        progress: tqdm progress bar over kline pages, on stderr.
        now: "now" for the closed-bar rule (defaults to the client's clock).
        unmatched_funding: ``"next_bar"`` (charge at the next bar's open, with a warning) or
            ``"error"`` for funding stamps on no bar open.

    Returns:
        A validated bars frame (``validate_bars(repair="safe")``): ``open high low close
        volume turnover`` and, for perpetuals, ``funding_rate``; ``attrs['source']`` is
        ``f"bybit-{category}"``.

    Raises:
        ValueError: bad interval, category, symbol, range or ``cache``.
        DataError: no bars in the range (e.g. before the listing), or the validator refused
            the bars.
        SourceError, RateLimitedError, BybitAPIError: see :meth:`BybitClient.request`.
    """
    _check_symbol(symbol)
    parsed = bybit_interval(interval)
    _check_category(category, KLINE_CATEGORIES, "klines")
    if unmatched_funding not in ("next_bar", "error"):
        raise ValueError(
            f"unmatched_funding={unmatched_funding!r} must be 'next_bar' or 'error'"
        )
    if cache is True:
        store: BarCache | None = BarCache()
    elif isinstance(cache, BarCache):
        store = cache
    elif cache is False or cache is None:
        store = None
    else:
        raise ValueError(f"cache={cache!r} must be True, False, None or a BarCache")
    lo, hi = _to_utc(start, "start"), _to_utc(end, "end")
    if hi < lo:
        raise ConfigError(f"start={lo} is after end={hi}")
    owns_client = client is None
    client = client if client is not None else BybitClient()
    at = _to_utc(now, "now") if now is not None else client.now()

    def download(a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
        bars, dropped_open = client._klines(
            symbol, parsed, a, b, category, MAX_KLINE_LIMIT, progress, at
        )
        if dropped_open is not None and dropped_open <= b:
            # The range was capped at the last bar closed by the local clock, yet Bybit says
            # this one is still open: caching the range would record a permanent hole.
            raise SourceError(
                f"Bybit {category} {symbol} {parsed.name}: the bar opening at {dropped_open} "
                f"is still open by Bybit's clock but closed by the local one (now={at}); the "
                "local clock is ahead of Bybit's. Sync the clock, retry after the bar closes, "
                "or pass an earlier end/now."
            )
        if category in FUNDING_CATEGORIES:
            funding = client.get_funding_history(symbol, a, b, category)
            bars = merge_funding(bars, funding, unmatched=unmatched_funding)
        return bars

    try:
        if store is None:
            frame = uncached_fetch(download, lo, hi, parsed, at, f"{symbol} {parsed.name}")
        else:
            key = CacheKey(f"bybit-{category}", symbol, parsed.name)
            frame, report = cached_fetch(key, lo, hi, download, cache=store, now=at)
            logger.info("fetch_bybit %s %s %s: %s", category, symbol, parsed.name, report.summary())
    finally:
        if owns_client:
            client.close()
    if frame.empty:
        raise DataError(
            f"Bybit {category} {symbol} {parsed.name}: no bars with open time in [{lo}, {hi}] "
            "(before the listing, after a delisting, or an unknown range)"
        )
    validated, report = validate_bars(frame)
    if not report.ok:
        logger.info("%s", report)
    return validated
