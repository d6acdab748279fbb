"""Yahoo Finance bars through yfinance: :func:`fetch_yahoo` and :func:`yahoo_frame_to_bars`.

``fetch_yahoo`` calls ``yfinance.Ticker(ticker).history(start=, end=, interval=,
auto_adjust=, actions=True, keepna=True)`` (yfinance >= 1.0; see
https://ranaroussi.github.io/yfinance/reference/api/yfinance.Ticker.history.html), turns the
answer into a bars frame (docs/design.md, "Data model") and caches it with
:func:`~tradezoo.data.cache.cached_fetch`. ``yahoo_frame_to_bars`` applies the same
normalisation and checks to a frame a user already has from ``Ticker.history`` or
``yf.download``.

The bars frame
    UTC index named ``timestamp`` of bar **open** times as yfinance labels them: daily, weekly
    and monthly bars open at exchange-local midnight (SPY's 2017-12-01 bar is
    ``2017-12-01 05:00 UTC``), intraday bars at their real open time. Float64 columns
    ``open high low close volume`` then, where yfinance returned them, ``adj_close``
    (``auto_adjust=False`` only), ``dividends``, ``stock_splits`` and ``capital_gains``
    (ETFs and funds only). ``attrs``: ``symbol`` (upper case, as Yahoo spells it), ``interval``
    (canonical name), ``source="yahoo"``, ``timezone`` (the exchange's zone),
    ``adjusted`` (True when prices are dividend and split adjusted) and ``validated``.

Bounds
    ``start`` and ``end`` are both **inclusive** and refer to bar open times. Naive values
    are read in the exchange's local time, like yfinance reads them; tradezoo cannot know the
    exchange's zone before asking Yahoo, so it assumes ``America/New_York`` (Yahoo's home
    market, also the default of ``read_bars`` for Yahoo CSVs) unless ``tz=`` says otherwise,
    and warns when the downloaded bars turn out to trade in another zone. So
    ``fetch_yahoo("SPY", "2017-12-01", "2017-12-29")`` returns the 20 sessions of December
    2017 including the 29th. yfinance's own ``end`` is exclusive and date based; tradezoo asks
    it for a padded window and cuts the answer to ``[start, end]`` itself, so
    ``cached_fetch``'s contract (every closed bar with open time in ``[lo, hi]``) holds.

Closed bars only
    ``end`` is capped at the last bar closed at ``now`` on the UTC interval grid
    (:func:`~tradezoo.data.cache.last_closed_open`). Yahoo's daily bars open at local
    midnight, a few hours off that grid, so the newest session appears about one day after
    it closed (a month for monthly bars): conservative, never a bar still trading.

Silent failures made loud (yfinance 1.x hides most errors by default)
    - Unknown or delisted symbol, or no trading in the range: ``history`` returns an empty
      frame. -> :class:`~tradezoo.data.errors.YahooDataError` saying so and what to do.
    - Rate limit: ``history`` raises ``YFRateLimitError`` ->
      :class:`~tradezoo.data.errors.RateLimitedError`; ``yf.download`` swallows it and returns
      an empty or all-NaN frame -> ``YahooDataError`` saying Yahoo probably rate-limited the
      requests and to wait and retry.
    - Rows without prices: Yahoo lists placeholder rows with every price null (intervals
      without trades, events on non-trading days). yfinance drops them silently by default
      (``keepna=False``); tradezoo asks for them (``keepna=True``) and, by default, raises a
      ``YahooDataError`` naming them. ``nan_rows="drop"`` drops them with a warning instead.
      A row with some prices missing and others present is always an error: half a quote is
      never repaired or dropped.
    - Intraday history limits are checked before any request: Yahoo serves ``1m`` bars for
      about the last 30 days (at most 8 days per request, so tradezoo pages ``1m`` requests
      in 7-day chunks), ``2m`` to ``90m`` for 60 days and ``1h`` for 730 days.
    - A failed page of a paged ``1m`` request (a network error or a refusal that yfinance
      turns into an empty frame) is an error, not a hole: an empty page is accepted only when
      Yahoo's answer carried its chart metadata (a real "no trading in this window").
    - Anything else yfinance raises becomes a ``YahooDataError`` naming the ticker (chained).
"""

from __future__ import annotations

import datetime as _dt
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import ModuleType
from typing import Literal

import numpy as np
import pandas as pd

from tradezoo.data.bars import _snake, finalize_bars
from tradezoo.data.cache import BarCache, CacheKey, cached_fetch, uncached_fetch
from tradezoo.data.errors import DataError, RateLimitedError, YahooDataError
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.data.validation import Repair, validate_bars
from tradezoo.errors import ConfigError

NaNRows = Literal["raise", "drop"]
TimeLike = str | _dt.date | _dt.datetime | pd.Timestamp

DEFAULT_TZ = "America/New_York"
"""Zone naive ``start``/``end`` values and naive ``yf.download`` indexes are read in."""

YF_INTERVAL_CODES: dict[str, str] = {
    "1m": "1m",
    "2m": "2m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    # "60m" rather than "1h": yfinance merges dividends into intraday rows by date only for
    # codes ending in "m" (utils.safe_merge_dfs); "1h" takes its daily path, which raises on
    # an event outside the price rows.
    "1h": "60m",
    "90m": "90m",
    "1d": "1d",
    "1w": "1wk",
    "1M": "1mo",
}
"""Canonical tradezoo interval -> yfinance ``interval`` code, for every interval supported."""

INTRADAY_HISTORY_LIMITS: dict[str, pd.Timedelta] = {
    "1m": pd.Timedelta(days=30),
    "2m": pd.Timedelta(days=60),
    "5m": pd.Timedelta(days=60),
    "15m": pd.Timedelta(days=60),
    "30m": pd.Timedelta(days=60),
    "1h": pd.Timedelta(days=730),
    "90m": pd.Timedelta(days=60),
}
"""How far back Yahoo serves each intraday interval (measured from now)."""

MAX_REQUEST_SPAN: dict[str, pd.Timedelta] = {"1m": pd.Timedelta(days=7)}
"""Longest window of one request; Yahoo refuses more than 8 days of ``1m`` bars at once."""

_PRICES = ("open", "high", "low", "close")
_EVENTS = ("dividends", "stock_splits", "capital_gains")
_EXAMPLES = 5
# Padding around [lo, hi] for daily and longer bars: yfinance reads dates in the exchange's
# zone (UTC-12..UTC+14), and a window that always holds some trading days tells a valid
# symbol with no bars in [lo, hi] apart from an unknown one.
_DAILY_PAD_BEFORE = pd.Timedelta(days=7)
_INTRADAY_PAD_BEFORE = pd.Timedelta(days=4)
# Keep padded intraday requests this far inside Yahoo's history limit.
_LIMIT_MARGIN = pd.Timedelta(hours=1)


# --------------------------------------------------------------------------------------------
# intervals and limits
# --------------------------------------------------------------------------------------------


def yahoo_interval(interval: str | Interval) -> tuple[Interval, str]:
    """Map an interval in any spelling ``parse_interval`` accepts to ``(Interval, yfinance code)``.

    >>> [yahoo_interval(s)[1] for s in ("1h", "60m", "1d", "1wk", "1M")]
    ['60m', '60m', '1d', '1wk', '1mo']

    Raises:
        ValueError: the interval is not one Yahoo serves (the message lists those it does).
    """
    supported = ", ".join(f"{name} ({code})" for name, code in YF_INTERVAL_CODES.items())
    text = str(interval).strip()
    if text.lower() in ("5d", "3mo"):
        raise ConfigError(
            f"Yahoo interval {text!r} is not supported: its bars have no fixed calendar "
            "alignment that tradezoo can validate (yfinance itself calls '5d' nonsense); fetch "
            f"'1d' bars and resample instead. Supported intervals (yfinance code): {supported}"
        )
    try:
        parsed = parse_interval(interval)
    except ValueError as exc:
        raise ConfigError(
            f"unsupported Yahoo interval {interval!r} ({exc}); supported intervals "
            f"(yfinance code): {supported}"
        ) from None
    code = YF_INTERVAL_CODES.get(parsed.name)
    if code is None:
        raise ConfigError(
            f"unsupported Yahoo interval {interval!r} (= {parsed.name}): Yahoo serves only "
            f"{supported}"
        )
    return parsed, code


def check_history_limit(
    symbol: str, interval: str | Interval, start: pd.Timestamp, now: pd.Timestamp | None = None
) -> None:
    """Raise before any request if Yahoo keeps no ``interval`` bars as old as ``start``.

    Args:
        symbol: ticker, for the message.
        interval: bar interval (any accepted spelling).
        start: first requested bar open time (tz-aware, or naive UTC).
        now: the current time (default: the wall clock), tz-aware or naive UTC.

    Raises:
        YahooDataError: ``start`` is older than Yahoo's limit for the interval; the message
            names the interval, the limit and the requested start.
    """
    parsed, code = yahoo_interval(interval)
    limit = INTRADAY_HISTORY_LIMITS.get(parsed.name)
    if limit is None:
        return
    now_utc = _now(now)
    start_utc = _as_utc(start)
    earliest = now_utc - limit
    if start_utc < earliest:
        age = (now_utc - start_utc) / pd.Timedelta(days=1)
        raise YahooDataError(
            f"{symbol}: Yahoo serves {parsed.name} bars (yfinance interval {code!r}) only for "
            f"about the last {limit.days} days, but the requested start {start_utc} is "
            f"{age:.1f} days before now ({now_utc:%Y-%m-%d %H:%M} UTC; earliest allowed "
            f"{earliest:%Y-%m-%d %H:%M} UTC). Use a later start or a coarser interval "
            "(limits: 1m 30 days, 2m-90m 60 days, 1h 730 days, 1d and longer unlimited)."
        )


def request_windows(
    interval: str | Interval,
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    now: pd.Timestamp | None = None,
) -> list[tuple[_dt.date | pd.Timestamp, _dt.date | pd.Timestamp]]:
    """The ``(start, end)`` arguments of the ``history`` calls that cover ``[lo, hi]``.

    yfinance's ``end`` is exclusive. Daily and longer bars are requested by date (yfinance
    reads a ``date`` as local midnight at the exchange), padded by a week before ``lo`` and a
    few days after ``hi``, weekly windows starting on a Monday and monthly ones on the 1st so
    Yahoo's bars keep their calendar alignment. Intraday bars are requested by exact UTC time
    from a few days before ``lo`` (never past Yahoo's history limit) to one bar after ``hi``;
    ``1m`` windows are at most 7 days long. The caller cuts the answer to ``[lo, hi]``.

    Args:
        interval: bar interval.
        lo, hi: first and last bar open time wanted (inclusive), tz-aware.
        now: the current time, for the intraday limit (default: the wall clock).
    """
    parsed, _ = yahoo_interval(interval)
    lo, hi = _as_utc(lo), _as_utc(hi)
    if parsed.name in INTRADAY_HISTORY_LIMITS:
        step = pd.Timedelta(minutes=parsed.minutes or 0)
        earliest = _now(now) - INTRADAY_HISTORY_LIMITS[parsed.name] + _LIMIT_MARGIN
        first = min(lo, max(lo - _INTRADAY_PAD_BEFORE, earliest))
        last = hi + step
        span = MAX_REQUEST_SPAN.get(parsed.name)
        if span is None:
            return [(first, last)]
        windows: list[tuple[_dt.date | pd.Timestamp, _dt.date | pd.Timestamp]] = []
        cursor = first
        while cursor < last:
            windows.append((cursor, min(cursor + span, last)))
            cursor = cursor + span
        return windows
    first_day = (lo - _DAILY_PAD_BEFORE).date()
    last_day = hi.date()
    if parsed.name == "1d":
        return [(first_day, last_day + _dt.timedelta(days=3))]
    if parsed.name == "1w":
        monday = first_day - _dt.timedelta(days=first_day.weekday() + 7)
        return [(monday, last_day + _dt.timedelta(days=10))]
    # 1M: start on the 1st of the month before lo's.
    month_start = (first_day - _dt.timedelta(days=31)).replace(day=1)
    return [(month_start, last_day + _dt.timedelta(days=40))]


# --------------------------------------------------------------------------------------------
# fetching
# --------------------------------------------------------------------------------------------


def fetch_yahoo(
    ticker: str,
    start: TimeLike,
    end: TimeLike,
    interval: str = "1d",
    auto_adjust: bool = True,
    *,
    cache: bool | BarCache | None = True,
    now: TimeLike | None = None,
    tz: str | None = None,
    nan_rows: NaNRows = "raise",
    repair: Repair = "safe",
) -> pd.DataFrame:
    """Fetch validated Yahoo Finance bars through yfinance, cached incrementally.

    Args:
        ticker: Yahoo symbol (``"SPY"``, ``"BRK-B"``, ``"^GSPC"``, ``"VOD.L"``, ``"BTC-USD"``);
            case-insensitive, stored upper case.
        start, end: first and last bar open time, both inclusive (see the module docstring:
            naive values are exchange-local, ``tz``).
        interval: ``1m 2m 5m 15m 30m 1h 90m 1d 1w 1M`` in any spelling ``parse_interval``
            accepts (``"60m"``, ``"1wk"``, ``"1mo"`` too).
        auto_adjust: True (yfinance's default): open, high, low and close are dividend and
            split adjusted (multiplied by ``Adj Close / Close``). False: prices as traded
            (split adjusted only, as Yahoo serves them) plus an ``adj_close`` column. The two
            are cached apart (``yahoo`` and ``yahoo-raw``).
        cache: True: the default :class:`BarCache` (``$TRADEZOO_DATA_DIR``); a ``BarCache``:
            that cache; False or None: always download, store nothing.
        now: the current time (default: the wall clock); bars that have not closed at ``now``
            are never returned, and the intraday history limits count back from it.
        tz: zone of naive ``start``/``end`` values (default ``America/New_York``).
        nan_rows: ``"raise"`` (default): rows Yahoo sent without any price are an error naming
            them; ``"drop"``: they are dropped with a warning naming them.
        repair: policy of :func:`~tradezoo.data.validation.validate_bars`.

    Returns:
        A validated bars frame (module docstring) with ``attrs["fetch_summary"]`` when cached.

    Raises:
        ValueError: bad ``ticker``, ``interval``, bounds, ``tz`` or ``nan_rows``; ``end``
            before ``start``; or no bar of the range has closed yet.
        YahooDataError: no rows (unknown or delisted symbol, no trading in the range), an
            all-NaN answer (rate limit), rows without prices, a range beyond Yahoo's intraday
            history, or any other yfinance failure (chained).
        RateLimitedError: yfinance raised ``YFRateLimitError`` (HTTP 429).
        DataError: the bars break a data-model rule ``validate_bars`` cannot repair.
    """
    symbol = _check_ticker(ticker)
    parsed, _ = yahoo_interval(interval)
    _check_nan_rows(nan_rows)
    zone = _check_zone(tz or DEFAULT_TZ)
    lo, lo_naive = _bound(start, zone, "start")
    hi, hi_naive = _bound(end, zone, "end")
    if hi < lo:
        raise ConfigError(f"{symbol}: end={end!r} ({hi}) is before start={start!r} ({lo})")
    now_utc = _now(now)
    download = partial(
        _download,
        symbol=symbol,
        interval=parsed,
        auto_adjust=auto_adjust,
        now=now_utc,
        nan_rows=nan_rows,
        repair=repair,
        naive_zone=zone if (lo_naive or hi_naive) else None,
    )
    if cache is True or isinstance(cache, BarCache):
        store = cache if isinstance(cache, BarCache) else BarCache()
        key = CacheKey("yahoo" if auto_adjust else "yahoo-raw", symbol, parsed.name)
        frame, _report = cached_fetch(key, lo, hi, download, cache=store, now=now_utc)
    elif cache is False or cache is None:
        frame = uncached_fetch(download, lo, hi, parsed, now_utc, f"{symbol} {parsed.name}")
    else:
        raise TypeError(f"cache must be True, False, None or a BarCache, not {type(cache)}")
    if frame.empty:
        raise YahooDataError(
            f"{symbol}: no {parsed.name} bars with open time in [{lo}, {hi}] (closed at "
            f"{now_utc:%Y-%m-%d %H:%M} UTC). Yahoo answered for the days around the range, so "
            "the symbol is known: the range holds no trading session, or its bars have not "
            "closed yet. Widen the range."
        )
    validated, _ = validate_bars(frame, repair=repair)
    validated.index = validated.index.as_unit("us")  # also for cache files written in ms
    return validated


def _download(
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    *,
    symbol: str,
    interval: Interval,
    auto_adjust: bool,
    now: pd.Timestamp,
    nan_rows: NaNRows,
    repair: Repair,
    naive_zone: str | None,
) -> pd.DataFrame:
    """``cached_fetch``'s downloader: every closed bar with open time in ``[lo, hi]``."""
    check_history_limit(symbol, interval, lo, now)
    yf = _import_yfinance()
    code = YF_INTERVAL_CODES[interval.name]
    windows = request_windows(interval, lo, hi, now)
    pieces: list[pd.DataFrame] = []
    unanswered: list[str] = []
    with _yfinance_errors() as logged:
        try:
            yf_ticker = yf.Ticker(symbol)
        except Exception as exc:  # ISIN look-ups and bad symbols fail here
            raise YahooDataError(f"{symbol}: yfinance rejected the ticker ({exc})") from exc
        for window_start, window_end in windows:
            seen = len(logged)
            raw = _history(yf_ticker, symbol, code, window_start, window_end, auto_adjust)
            if len(raw):
                pieces.append(raw)
            elif len(windows) > 1 and not _yahoo_answered(yf_ticker, logged[seen:]):
                # A paged request that failed (yfinance hides network errors and Yahoo's
                # refusals behind an empty frame) would leave a silent hole in the bars.
                unanswered.append(f"{window_start} to {window_end}")
    if not pieces:
        raise YahooDataError(_no_rows_message(symbol, interval.name, lo, hi, logged))
    if unanswered:
        raise YahooDataError(
            f"{symbol}: Yahoo answered {len(windows) - len(unanswered)} of the {len(windows)} "
            f"{code} requests covering {lo} to {hi}, but not the one(s) for "
            f"{'; '.join(unanswered)}; their bars would be missing, so nothing is returned or "
            f"cached. Retry later.{_yfinance_said(logged)}"
        )
    raw = pd.concat(pieces) if len(pieces) > 1 else pieces[0]
    bars = _to_bars(raw, symbol=symbol, interval=interval.name, zone=None, adjusted=auto_adjust)
    _check_not_all_nan(bars, symbol)
    exchange_zone = str(bars.attrs["timezone"])
    if naive_zone is not None and exchange_zone != naive_zone:
        warnings.warn(
            f"{symbol} trades in {exchange_zone}, but the naive start/end were read in "
            f"{naive_zone}; pass tz={exchange_zone!r} or tz-aware bounds to cut the range at "
            "the exchange's midnight",
            UserWarning,
            stacklevel=4,
        )
    inside = (bars.index >= lo) & (bars.index <= hi)
    window = bars.loc[inside].copy()
    window.attrs = dict(bars.attrs)
    window = _apply_nan_policy(window, symbol, nan_rows)
    if window.empty:
        return window
    validated, _ = validate_bars(window, repair=repair)
    return validated


def _history(
    yf_ticker: object,
    symbol: str,
    code: str,
    start: _dt.date | pd.Timestamp,
    end: _dt.date | pd.Timestamp,
    auto_adjust: bool,
) -> pd.DataFrame:
    """One ``Ticker.history`` call, with yfinance's exceptions turned into ours."""
    from yfinance.exceptions import YFRateLimitError, YFTickerMissingError

    try:
        frame = yf_ticker.history(  # type: ignore[attr-defined]
            start=start,
            end=end,
            interval=code,
            auto_adjust=auto_adjust,
            actions=True,
            # Keep the rows Yahoo sends without prices: tradezoo reports them instead of
            # letting yfinance drop them silently.
            keepna=True,
        )
    except YFRateLimitError as exc:
        raise RateLimitedError(_rate_limit_message(symbol, f"({exc})")) from exc
    except YFTickerMissingError as exc:  # raised only with yf.config.debug.hide_exceptions off
        raise YahooDataError(
            _no_rows_message(symbol, code, _as_utc(start), _as_utc(end), [str(exc)])
        ) from exc
    except Exception as exc:
        raise YahooDataError(
            f"{symbol}: yfinance failed while fetching {code} bars from {start} to {end}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(frame, pd.DataFrame):
        raise YahooDataError(f"{symbol}: yfinance returned {type(frame).__name__}, not a frame")
    return frame


# --------------------------------------------------------------------------------------------
# frames from yfinance
# --------------------------------------------------------------------------------------------


def yahoo_frame_to_bars(
    frame: pd.DataFrame,
    ticker: str | None = None,
    interval: str | None = None,
    *,
    tz: str | None = None,
    adjusted: bool | None = None,
    nan_rows: NaNRows = "raise",
    repair: Repair = "safe",
) -> pd.DataFrame:
    """Turn a frame from ``Ticker.history`` or a one-ticker ``yf.download`` into bars.

    The same normalisation and checks as :func:`fetch_yahoo`, for users who call yfinance
    themselves: column names to lower snake case (``Adj Close`` -> ``adj_close``, ``Stock
    Splits`` -> ``stock_splits``), ``yf.download``'s two-level columns (``('Price',
    'Ticker')`` or, with ``group_by='ticker'``, ``('Ticker', 'Price')``) flattened when they
    hold one ticker, the index converted to UTC, then validated.

    Args:
        frame: the yfinance frame. A ``Date``/``Datetime`` column (after ``reset_index``) is
            accepted in place of the index.
        ticker: the symbol; taken from ``yf.download``'s ticker level when omitted. When given
            it must match that level.
        interval: the bar interval (any accepted spelling); inferred from the spacing if
            omitted.
        tz: zone of a naive index (``yf.download`` returns naive exchange-local dates for
            daily bars); default ``America/New_York``. A tz-aware index keeps its zone.
        adjusted: whether prices are dividend adjusted; default: True unless the frame has
            ``Adj Close`` (yfinance drops that column when it adjusts).
        nan_rows: ``"raise"`` or ``"drop"`` rows without any price (see :func:`fetch_yahoo`).
        repair: policy of :func:`~tradezoo.data.validation.validate_bars`.

    Returns:
        A validated bars frame with ``attrs`` ``symbol``, ``interval``, ``source="yahoo"``,
        ``timezone``, ``adjusted``.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: several tickers in the columns, a ticker that does not match, column
            levels that are not yfinance's, bad ``tz``/``nan_rows``/``interval``.
        YahooDataError: the frame has no rows (unknown symbol, no trading, or a rate-limited
            ``yf.download``), every price is NaN (rate limit), or rows lack prices.
        DataError: no usable time index or OHLCV columns, or a validation rule failed.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"yahoo_frame_to_bars needs a pandas DataFrame, not {type(frame).__name__}")
    _check_nan_rows(nan_rows)
    zone = _check_zone(tz or DEFAULT_TZ)
    canonical = yahoo_interval(interval)[0].name if interval is not None else None
    flat, level_ticker = _flatten_columns(frame, ticker)
    symbol = _check_ticker(ticker) if ticker is not None else level_ticker
    name = symbol or "yfinance frame"
    if flat.empty:
        raise YahooDataError(
            f"{name}: the yfinance frame has no rows: unknown or delisted symbol, or no "
            "trading in the range (a rate-limited yf.download also returns an empty frame: "
            "then wait a few minutes and retry). Check the symbol on finance.yahoo.com or "
            "widen the range."
        )
    if adjusted is None:
        adjusted = not any(_snake(c) == "adj_close" for c in flat.columns)
    bars = _to_bars(flat, symbol=symbol, interval=canonical, zone=zone, adjusted=adjusted)
    _check_not_all_nan(bars, name)
    bars = _apply_nan_policy(bars, name, nan_rows)
    if bars.empty:
        raise YahooDataError(f"{name}: no rows left after dropping the rows without prices")
    validated, _ = validate_bars(bars, repair=repair)
    return validated


def _flatten_columns(frame: pd.DataFrame, ticker: str | None) -> tuple[pd.DataFrame, str | None]:
    """Drop ``yf.download``'s ticker level; return the flat frame and the ticker it named."""
    if not isinstance(frame.columns, pd.MultiIndex):
        return frame, None
    if frame.columns.nlevels != 2:
        raise ValueError(
            f"yfinance frame with {frame.columns.nlevels} column levels; expected flat columns "
            "or yf.download's two levels ('Price', 'Ticker')"
        )
    price_names = {"open", "high", "low", "close", "adj close", "volume"}
    hits = [
        sum(str(v).strip().lower() in price_names for v in frame.columns.get_level_values(i))
        for i in (0, 1)
    ]
    if max(hits) == 0:
        raise ValueError(
            f"cannot tell the price level of the column levels {list(frame.columns.names)}: "
            "neither holds Open/High/Low/Close/Volume"
        )
    price_level = 0 if hits[0] >= hits[1] else 1
    ticker_level = 1 - price_level
    tickers = list(dict.fromkeys(str(v) for v in frame.columns.get_level_values(ticker_level)))
    if len(tickers) > 1:
        raise ValueError(
            f"the yfinance frame holds several tickers {tickers}; a bars frame holds one. "
            "Select one first, e.g. frame.xs('SPY', axis=1, level='Ticker'), or download one "
            "ticker with yf.download(..., multi_level_index=False)"
        )
    if ticker is not None and tickers and tickers[0].upper() != ticker.strip().upper():
        raise ValueError(f"the yfinance frame holds ticker {tickers[0]!r}, not {ticker!r}")
    flat = frame.copy()
    flat.columns = frame.columns.get_level_values(price_level)
    return flat, (tickers[0].upper() if tickers else None)


def _to_bars(
    raw: pd.DataFrame,
    *,
    symbol: str | None,
    interval: str | None,
    zone: str | None,
    adjusted: bool,
) -> pd.DataFrame:
    """Normalise columns and index, then ``finalize_bars`` (no NaN policy, no validation)."""
    frame = raw.copy()
    if not isinstance(frame.index, pd.DatetimeIndex):
        time_columns = [c for c in frame.columns if str(c).strip().lower() in ("date", "datetime")]
        if not time_columns:
            raise DataError(
                f"{symbol or 'yfinance frame'}: the frame needs a DatetimeIndex (yfinance's "
                "'Date'/'Datetime' index) or a 'Date'/'Datetime' column"
            )
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop(time_columns[0])))
    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        # yf.download gives naive exchange-local times for daily bars (ignore_tz=True).
        index = index.tz_localize(zone or DEFAULT_TZ, ambiguous="raise", nonexistent="raise")
    exchange_zone = str(index.tz)
    # yfinance gives second resolution, which Parquet cannot store (it would come back from
    # the cache as ms); microseconds match read_bars and the other sources.
    frame.index = index.as_unit("us")
    renamed = [_snake(c) for c in frame.columns]
    duplicated = sorted({c for c in renamed if renamed.count(c) > 1})
    if duplicated:
        raise DataError(
            f"{symbol or 'yfinance frame'}: columns {duplicated} appear twice after "
            f"normalising {list(map(str, raw.columns))}"
        )
    frame.columns = renamed
    return finalize_bars(
        frame,
        symbol=symbol,
        interval=interval,
        source="yahoo",
        timezone=exchange_zone,
        adjusted=bool(adjusted),
    )


def _check_not_all_nan(bars: pd.DataFrame, name: str) -> None:
    """An answer whose every price is NaN is what a rate limit leaves behind."""
    prices = bars[[c for c in (*_PRICES, "adj_close") if c in bars.columns]].to_numpy()
    if len(bars) and np.isnan(prices).all():
        raise YahooDataError(
            f"{name}: every open/high/low/close value Yahoo returned ({len(bars)} rows, "
            f"{bars.index[0]} to {bars.index[-1]}) is NaN: "
            + _rate_limit_advice()
            + " (In a multi-ticker yf.download, NaN columns for this ticker alone mean the "
            "symbol is unknown or delisted.)"
        )


def _apply_nan_policy(bars: pd.DataFrame, name: str, nan_rows: NaNRows) -> pd.DataFrame:
    """Raise on (or drop, if asked) rows without any price; always raise on half-empty rows."""
    columns = [c for c in (*_PRICES, "adj_close") if c in bars.columns]
    missing = np.isnan(bars[columns].to_numpy())
    empty_rows = missing.all(axis=1)
    partial_rows = missing.any(axis=1) & ~empty_rows
    if partial_rows.any():
        stamps = ", ".join(str(t) for t in bars.index[partial_rows][:_EXAMPLES])
        raise YahooDataError(
            f"{name}: {int(partial_rows.sum())} row(s) where Yahoo sent some prices but not "
            f"others (NaN in {columns}), first at [{stamps}]; prices are never interpolated and "
            "rows never dropped silently. Re-fetch later, or drop these rows yourself if you "
            "accept the gap."
        )
    if not empty_rows.any():
        return bars
    stamps = ", ".join(str(t) for t in bars.index[empty_rows][:_EXAMPLES])
    events = [c for c in _EVENTS if c in bars.columns]
    with_events = (
        int((bars.loc[empty_rows, events].fillna(0) != 0).any(axis=1).sum()) if events else 0
    )
    what = (
        f"{int(empty_rows.sum())} row(s) where Yahoo sent no price at all (all of {columns} "
        f"NaN; {with_events} carry only a dividend/split/capital-gain event), first at "
        f"[{stamps}]. Yahoo lists such rows for intervals without trades and for events on "
        "non-trading days"
    )
    if nan_rows == "raise":
        raise YahooDataError(
            f"{name}: {what}. They are never dropped silently: pass nan_rows='drop' to drop "
            "them (with a warning)."
        )
    warnings.warn(f"{name}: dropped {what}.", UserWarning, stacklevel=3)
    kept = bars.loc[~empty_rows].copy()
    kept.attrs = dict(bars.attrs)
    return kept


# --------------------------------------------------------------------------------------------
# messages and small helpers
# --------------------------------------------------------------------------------------------


def _rate_limit_advice() -> str:
    return (
        "Yahoo probably rate-limited the requests (HTTP 429 'Too Many Requests'). Wait a few "
        "minutes (longer if it persists) and retry; ranges already in the tradezoo cache are "
        "not downloaded again, and fewer, larger requests help."
    )


def _rate_limit_message(symbol: str, detail: str) -> str:
    return f"{symbol}: yfinance raised YFRateLimitError {detail}. " + _rate_limit_advice()


def _yfinance_said(logged: list[str]) -> str:
    # yfinance's log lines can carry whole response bodies; keep each one short.
    reasons = [m if len(m) <= 240 else m[:237] + "..." for m in dict.fromkeys(logged)]
    return f" yfinance said: {' | '.join(reasons)}." if reasons else ""


def _no_rows_message(
    symbol: str, interval: str, lo: pd.Timestamp, hi: pd.Timestamp, logged: list[str]
) -> str:
    said = _yfinance_said(logged)
    return (
        f"{symbol}: Yahoo returned no rows for {interval} bars around {lo} to {hi}: the ticker "
        "is unknown or delisted, or there was no trading in the range. Check the symbol at "
        f"https://finance.yahoo.com/quote/{symbol} (Yahoo writes 'BRK-B', '^GSPC', 'VOD.L', "
        f"'BTC-USD'), or widen the range.{said}"
    )


def _yahoo_answered(yf_ticker: object, logged: list[str]) -> bool:
    """Whether the last ``history`` call got a chart answer from Yahoo, not an error or nothing.

    A real answer carries the chart metadata, which names the exchange's zone; an error body
    or a network failure (both hidden by yfinance behind an empty frame) leaves it empty.
    """
    if any("no timezone found" in message for message in logged):
        # history() gave up before asking Yahoo; reading the metadata now would send a request.
        return False
    try:
        return "exchangeTimezoneName" in yf_ticker.history_metadata  # type: ignore[attr-defined]
    except Exception:
        # yfinance formats the metadata only when it names the zone, so a failure to format it
        # still means Yahoo answered.
        return True


class _ErrorRecorder(logging.Handler):
    """Collects yfinance's logged errors: with its default ``hide_exceptions`` it logs why
    ``history`` came back empty instead of raising, and that reason belongs in our error.

    Attaching a handler stops Python's last-resort handler from printing yfinance's records
    to stderr when the application configured no logging; ``forward`` keeps that behaviour.
    """

    def __init__(self, forward: bool) -> None:
        super().__init__(level=logging.NOTSET)
        self.forward = forward
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.messages.append(record.getMessage().strip())
        last_resort = logging.lastResort
        if self.forward and last_resort is not None and record.levelno >= last_resort.level:
            last_resort.handle(record)


@contextmanager
def _yfinance_errors() -> Iterator[list[str]]:
    logger = logging.getLogger("yfinance")
    recorder = _ErrorRecorder(forward=not logger.hasHandlers())
    logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)


def _import_yfinance() -> ModuleType:
    # Imported on first use: yfinance pulls in curl_cffi, bs4 and peewee, which
    # ``yahoo_frame_to_bars`` and ``import tradezoo.data`` do not need.
    try:
        import yfinance
    except ImportError as exc:  # a declared dependency, but say what to do if it is missing
        raise ImportError("fetch_yahoo needs yfinance: pip install 'yfinance>=1.0'") from exc
    return yfinance


def _check_ticker(ticker: object) -> str:
    if not isinstance(ticker, str) or not ticker.strip():
        raise ConfigError(f"ticker must be a non-empty string like 'SPY', got {ticker!r}")
    return ticker.strip().upper()


def _check_nan_rows(nan_rows: object) -> None:
    if nan_rows not in ("raise", "drop"):
        raise ValueError(f"nan_rows must be 'raise' or 'drop', got {nan_rows!r}")


def _check_zone(zone: str) -> str:
    try:
        pd.Timestamp("2000-01-01").tz_localize(zone)
    except Exception as exc:  # pytz/zoneinfo raise different types for unknown zones
        raise ValueError(f"tz={zone!r} is not a time zone name like 'America/New_York'") from exc
    return zone


def _bound(value: TimeLike, zone: str, name: str) -> tuple[pd.Timestamp, bool]:
    """A bound as a UTC Timestamp, and whether it was naive (read in ``zone``)."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={value!r} is not a date or timestamp") from exc
    if stamp is pd.NaT or pd.isna(stamp):
        raise ConfigError(f"{name}={value!r} is not a date or timestamp")
    if stamp.tz is not None:
        return stamp.tz_convert("UTC"), False
    try:
        local = stamp.tz_localize(zone, ambiguous="raise", nonexistent="raise")
    except Exception as exc:  # ambiguous or skipped local time at a DST change
        raise ValueError(
            f"{name}={value!r} does not name one instant in {zone} (DST change); pass a "
            "tz-aware timestamp"
        ) from exc
    return local.tz_convert("UTC"), True


def _as_utc(value: TimeLike) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _now(now: TimeLike | None) -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC") if now is None else _as_utc(now)
