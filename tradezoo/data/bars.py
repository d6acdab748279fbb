"""The bars frame and ``read_bars``: CSV and Parquet in the layouts users have.

A bars frame (docs/design.md, "Data model") is a pandas DataFrame with

- a UTC, tz-aware, strictly increasing ``DatetimeIndex`` named ``timestamp`` holding bar
  **open** times;
- float64 columns ``open high low close volume``, optionally ``turnover`` (quote volume) and
  ``funding_rate`` (perpetual funding rate charged at that bar's open, 0 elsewhere), and any
  extra numeric columns the source carried (``adj_close``, ``dividends``, ...), lower snake
  case;
- ``attrs``: ``symbol``, ``interval`` (canonical name, see :mod:`tradezoo.data.intervals`),
  ``source`` and, where known, ``path`` and ``timezone`` (the exchange zone naive times were
  read in).

``read_bars`` only parses and normalises. It does not repair or drop anything; that is
``validate_bars``'s job, so every loaded frame is judged by the same rules.

Times are never guessed
    Epoch numbers in a time column are read in the unit their magnitude implies
    (:data:`EPOCH_UNIT_RANGES`): seconds for values in ``[1e9, 1e10)``, milliseconds in
    ``[1e12, 1e13)``, microseconds in ``[1e15, 1e16)``, nanoseconds in ``[1e18, 1e19)``. Each
    band holds the dates 2001-09-09 to 2286-11-20 in its unit, and no two bands overlap, so a
    value in a band has one reading. A value in no band (seconds before 2001, a compact
    ``20240101`` date, a negative number) is ambiguous and a ``DataError`` naming the row;
    ``time_unit=`` states the unit instead. A column whose rows fall in different bands (half
    seconds, half milliseconds) is a ``DataError`` naming the first row of each unit. Every
    time, however it was written, must lie in the years 1970 to 2100 (:data:`TIME_RANGE`);
    anything else is a ``DataError`` naming the row. Rows are counted from 1, the first row
    after the header.

Source labels
    ``attrs["source"]`` decides the default costs (:meth:`CostModel.for_source`), so it is
    never guessed from a time format. A file is labelled ``"bybit"`` only in Bybit's own kline
    shape (:func:`is_bybit_kline_export`): the columns of a ``/v5/market/kline`` row in
    Bybit's order, ``startTime, openPrice, highPrice, lowPrice, closePrice, volume,
    turnover`` (or this package's names for them, ``timestamp, open, high, low, close, volume,
    turnover``), optionally followed by ``funding_rate`` as :func:`fetch_bybit` adds it, with
    integer epoch-millisecond times. Yahoo layouts are ``"yahoo"``. Anything else, a plain
    ``timestamp,open,high,low,close,volume`` file with millisecond times included, is
    ``"file"``, and an env or trainer then needs explicit costs. Frames from the Bybit client
    are ``"bybit-<category>"``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tradezoo.data.errors import DataError, FundingAlignmentWarning
from tradezoo.data.intervals import infer_interval, parse_interval

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Required columns of a bars frame, in order."""

OPTIONAL_COLUMNS: tuple[str, ...] = ("turnover", "funding_rate")
"""Known optional columns; they follow OHLCV in this order."""

_TIME_COLUMNS = ("timestamp", "datetime", "date", "time", "open_time", "start_time", "starttime")
_YAHOO_TZ = "America/New_York"

Layout = Literal["auto", "bybit", "yahoo", "yfinance", "generic"]
TimeUnit = Literal["s", "ms", "us", "ns"]

EPOCH_UNIT_RANGES: dict[str, tuple[float, float]] = {
    "s": (1e9, 1e10),
    "ms": (1e12, 1e13),
    "us": (1e15, 1e16),
    "ns": (1e18, 1e19),
}
"""Half-open magnitude band of epoch numbers read in each unit (see the module docstring)."""

_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

TIME_RANGE: tuple[pd.Timestamp, pd.Timestamp] = (
    pd.Timestamp("1970-01-01", tz="UTC"),
    pd.Timestamp("2101-01-01", tz="UTC"),
)
"""Bar times must lie in ``[TIME_RANGE[0], TIME_RANGE[1])``: the years 1970 to 2100."""

_PRICE_ALIASES = {f"{p}_price": p for p in ("open", "high", "low", "close")}

# Bybit's kline row (startTime, openPrice, highPrice, lowPrice, closePrice, volume, turnover)
# as snake-case names; each position also accepts this package's name for the field.
_BYBIT_KLINE_FIELDS: tuple[tuple[str, ...], ...] = (
    ("start_time", "timestamp"),
    ("open_price", "open"),
    ("high_price", "high"),
    ("low_price", "low"),
    ("close_price", "close"),
    ("volume",),
    ("turnover",),
)


def _snake(name: object) -> str:
    text = re.sub(r"[^0-9a-zA-Z]+", "_", str(name).strip()).strip("_")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()


def finalize_bars(
    frame: pd.DataFrame,
    *,
    symbol: str | None,
    interval: str | None,
    source: str,
    **attrs: object,
) -> pd.DataFrame:
    """Put a frame with a tz-aware index and lower-case columns into the bars-frame form.

    Orders columns (OHLCV, the known optional ones, then extras), casts them to float64,
    converts the index to UTC and names it ``timestamp``, and sets ``attrs``. It neither sorts
    nor drops rows: the validator reports what is wrong instead.

    Raises:
        DataError: required columns are missing, a column is not numeric, or the index is not
            a tz-aware DatetimeIndex.
    """
    name = attrs.get("path") or source
    missing = [c for c in OHLCV if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: missing required column(s) {missing}; a bars frame needs {list(OHLCV)} "
            f"(found {list(map(str, frame.columns))})"
        )
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise DataError(f"{name}: the index must be a tz-aware DatetimeIndex of bar open times")
    check_time_range(frame.index, str(name))
    extras = [c for c in frame.columns if c not in OHLCV and c not in OPTIONAL_COLUMNS]
    ordered = [*OHLCV, *[c for c in OPTIONAL_COLUMNS if c in frame.columns], *extras]
    out = pd.DataFrame(index=frame.index.tz_convert("UTC").rename("timestamp"))
    for column in ordered:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            values = pd.to_numeric(values, errors="coerce")
            bad = values.isna() & frame[column].notna()
            if bad.any():
                where = list(frame.index[bad.to_numpy()][:3])
                raise DataError(f"{name}: column {column!r} is not numeric at {where}")
        elif not (pd.api.types.is_numeric_dtype(values.dtype) or values.dtype == bool):
            raise DataError(f"{name}: column {column!r} has non-numeric dtype {values.dtype}")
        out[column] = np.asarray(values, dtype=np.float64)
    if interval is None:
        inferred = infer_interval(out.index)
        interval = inferred.name if inferred is not None else None
    else:
        interval = parse_interval(interval).name
    out.attrs = {"symbol": symbol, "interval": interval, "source": source, **attrs}
    return out


def check_time_range(index: pd.DatetimeIndex, name: str) -> None:
    """Raise a ``DataError`` naming the first time outside :data:`TIME_RANGE` (1970-2100).

    ``index`` is tz-aware; rows are reported from 1.
    """
    if len(index) == 0:
        return
    lo, hi = TIME_RANGE
    outside = np.asarray((index < lo) | (index >= hi), dtype=bool)
    if outside.any():
        row = int(np.argmax(outside))
        raise DataError(
            f"{name}: row {row + 1} has time {index[row]}, outside the years 1970 to 2100 "
            f"({int(outside.sum())} row(s) outside); bar times must lie in that range (epoch "
            "numbers in the wrong unit land outside it: pass time_unit='s'|'ms'|'us'|'ns')"
        )


def is_bybit_kline_export(columns: list[str], epoch_unit: str | None) -> bool:
    """True when a file is in Bybit's own kline shape (see the module docstring).

    Args:
        columns: the file's column names, in file order (any capitalisation).
        epoch_unit: the unit its time column was read in (``"ms"`` for Bybit's epoch
            milliseconds), ``None`` when the times were not epoch integers.
    """
    if epoch_unit != "ms":
        return False
    names = [_snake(c) for c in columns]
    if names[-1:] == ["funding_rate"]:
        names = names[:-1]
    return len(names) == len(_BYBIT_KLINE_FIELDS) and all(
        name in accepted for name, accepted in zip(names, _BYBIT_KLINE_FIELDS, strict=True)
    )


def read_bars(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    tz: str | None = None,
    layout: Layout = "auto",
    adjust: bool = False,
    time_unit: TimeUnit | None = None,
) -> pd.DataFrame:
    """Read bars from a CSV or Parquet file into a bars frame.

    Layouts (detected from the header unless ``layout`` is given) say how times are read:

    - ``bybit``: ``timestamp`` (or ``startTime``) in integer ms since the epoch (UTC),
      ``open..volume[, turnover]``. The layout does not make the source Bybit: only Bybit's
      kline shape does (module docstring, "Source labels").
    - ``yahoo``: a Yahoo Finance CSV download, ``Date, Open, High, Low, Close, Adj Close,
      Volume`` with naive exchange-local dates (America/New_York unless ``tz`` says otherwise);
      a daily bar's timestamp is local midnight, as yfinance gives it.
    - ``yfinance``: ``DataFrame.to_csv`` of ``Ticker.history`` (tz-aware ``Date``/``Datetime``
      column, event columns ``Dividends``, ``Stock Splits``...) or of ``yf.download`` (the
      two extra header rows ``Ticker`` and ``Date`` of its MultiIndex are understood; one
      ticker per file).
    - ``generic``: ``timestamp,open,high,low,close,volume`` with epoch numbers (unit from
      their magnitude, or ``time_unit``), or date strings; naive strings are UTC unless
      ``tz`` is given.

    Parquet files written by this package (index ``timestamp``) read back unchanged.

    Args:
        path: a ``.csv``, ``.csv.gz`` or ``.parquet`` file.
        symbol: stored in ``attrs["symbol"]``; defaults to the file's stem.
        interval: stored in ``attrs["interval"]``; inferred from the spacing if omitted.
        tz: time zone of naive timestamps (overrides the layout's default).
        layout: force a layout instead of detecting it.
        adjust: Yahoo layouts with ``Adj Close`` only: multiply open, high, low and close by
            ``Adj Close / Close`` (dividend and split adjusted, as yfinance's
            ``auto_adjust=True``). When False the raw prices are kept and ``adj_close`` is kept
            as an extra column.
        time_unit: unit of epoch numbers in the time column (``"s"``, ``"ms"``, ``"us"``,
            ``"ns"``); by default it follows their magnitude (module docstring).

    Returns:
        A bars frame (see the module docstring). It is not validated yet: pass it through
        ``validate_bars``.

    Raises:
        DataError: the file is empty, unreadable, or lacks a time or OHLCV column; epoch
            times are ambiguous or in mixed units; a time lies outside 1970-2100.
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``time_unit`` is not one of ``s ms us ns``.
    """
    _check_time_unit(time_unit)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such bars file: {path}")
    suffixes = "".join(path.suffixes).lower()
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
        try:
            raw = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        if isinstance(raw.index, pd.DatetimeIndex):
            raw = raw.reset_index(names="timestamp")
    else:
        raw = _read_csv(path)
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    frame, detected, source = _normalise(
        raw, path=path, tz=tz, layout=layout, adjust=adjust, time_unit=time_unit
    )
    attrs: dict[str, object] = {"path": str(path), "layout": detected}
    if detected in ("yahoo", "yfinance"):
        attrs["adjusted"] = bool(adjust and "adj_close" not in frame.columns)
    zone = tz or (_YAHOO_TZ if detected == "yahoo" else None)
    if zone is not None:
        attrs["timezone"] = zone  # the validator judges the bar grid in this wall time
    return finalize_bars(
        frame,
        symbol=symbol or _symbol_from_path(path),
        interval=interval,
        source=source,
        **attrs,
    )


def _symbol_from_path(path: Path) -> str:
    return path.name.split(".")[0]


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        text = pd.read_csv(path, header=None, dtype=str, nrows=3, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (UnicodeDecodeError, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    first = [str(v).strip() for v in text.iloc[0]]
    # ``yf.download(...).to_csv()`` writes the column MultiIndex as extra header rows:
    # "Price,Close,..." / "Ticker,SPY,..." / "Date,,,". Keep the price level, skip the rest.
    if first and first[0] in ("Price", "Ticker") and len(text) >= 2:
        second = [str(v).strip() for v in text.iloc[1]]
        names = first if first[0] == "Price" else second
        tickers = second if first[0] == "Price" else first
        if len(set(tickers[1:])) > 1:
            raise DataError(
                f"{path}: a yf.download CSV with several tickers {sorted(set(tickers[1:]))}; "
                "save one ticker per file"
            )
        frame = pd.read_csv(path, header=None, skiprows=3)
        frame.columns = ["Date", *names[1:]]
        return frame
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc


def _find_time_column(columns: list[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in _TIME_COLUMNS:
        if name in lowered:
            return lowered[name]
    return None


def _normalise(
    raw: pd.DataFrame,
    *,
    path: Path,
    tz: str | None,
    layout: Layout,
    adjust: bool,
    time_unit: str | None,
) -> tuple[pd.DataFrame, str, str]:
    columns = [str(c) for c in raw.columns]
    raw = raw.copy()
    raw.columns = columns
    time_col = _find_time_column(columns)
    if time_col is None:
        raise DataError(
            f"{path}: no time column; expected one of {list(_TIME_COLUMNS)} (found {columns})"
        )
    snake = {c: _snake(c) for c in columns if c != time_col}
    # Bybit's kline field names (openPrice...) are the OHLC columns.
    snake = {c: _PRICE_ALIASES.get(v, v) for c, v in snake.items()}
    has_adj = any(v == "adj_close" for v in snake.values())
    if layout == "auto" and time_col.lower() in ("date", "datetime") and columns[0][:1].isupper():
        layout = "yfinance" if _looks_tz_aware(raw[time_col]) else "yahoo"
    index, unit = _parse_times(
        raw[time_col], name=str(path), layout=layout, tz=tz, time_unit=time_unit
    )
    if layout == "auto":
        bybit_times = (
            _snake(time_col) in ("timestamp", "start_time")
            and unit == "ms"
            and pd.api.types.is_integer_dtype(raw[time_col])
        )
        layout = "bybit" if bybit_times else "generic"
    frame = raw.drop(columns=[time_col]).rename(columns=snake)
    frame.index = index
    frame = frame.drop(columns=[c for c in frame.columns if c in ("symbol", "ticker")])
    if layout in ("yahoo", "yfinance") and adjust and has_adj:
        factor = frame["adj_close"] / frame["close"]
        for column in ("open", "high", "low", "close"):
            frame[column] = frame[column] * factor
        frame = frame.drop(columns=["adj_close"])
    if layout in ("yahoo", "yfinance"):
        source = "yahoo"
    elif is_bybit_kline_export(columns, unit if _integral(raw[time_col]) else None):
        source = "bybit"
    else:
        source = "file"
    return frame, layout, source


def _integral(values: pd.Series) -> bool:
    """True for an integer column, or a numeric one whose values are all whole numbers."""
    if pd.api.types.is_integer_dtype(values):
        return True
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    numbers = values.to_numpy(dtype=np.float64)
    return bool(np.isfinite(numbers).all() and (numbers == np.floor(numbers)).all())


def _looks_tz_aware(values: pd.Series) -> bool:
    sample = str(values.iloc[0])
    return bool(re.search(r"([+-]\d\d:?\d\d|Z)$", sample.strip()))


def _check_time_unit(time_unit: str | None) -> None:
    if time_unit is not None and time_unit not in EPOCH_UNIT_RANGES:
        raise ValueError(
            f"time_unit must be one of {list(EPOCH_UNIT_RANGES)} or None, got {time_unit!r}"
        )


def epoch_unit(numbers: np.ndarray, name: str) -> str:
    """The unit of epoch numbers, read from their magnitude (module docstring).

    Args:
        numbers: the time column as numbers, in row order.
        name: names the input in errors.

    Raises:
        DataError: a value lies in no band (ambiguous), or the rows span several units; the
            message names the first row of each unit.
    """
    numbers = np.asarray(numbers, dtype=np.float64)
    codes = np.full(len(numbers), -1, dtype=np.int64)
    units = list(EPOCH_UNIT_RANGES)
    for code, (lo, hi) in enumerate(EPOCH_UNIT_RANGES.values()):
        codes[(numbers >= lo) & (numbers < hi)] = code
    if (codes < 0).any():
        row = int(np.argmax(codes < 0))
        bands = ", ".join(
            f"{_UNIT_NAMES[u]} {lo:.0e}..{hi:.0e}" for u, (lo, hi) in EPOCH_UNIT_RANGES.items()
        )
        raise DataError(
            f"{name}: row {row + 1} has the epoch time {numbers[row]:.17g}, which is in no "
            f"unit's range ({bands}), so its unit is ambiguous; pass time_unit='s'|'ms'|'us'|"
            "'ns', or write times as ISO dates"
        )
    present = sorted(set(codes.tolist()))
    if len(present) > 1:
        firsts = ", ".join(
            f"{_UNIT_NAMES[units[c]]} from row {int(np.argmax(codes == c)) + 1} "
            f"({numbers[int(np.argmax(codes == c))]:.17g})"
            for c in sorted(present, key=lambda c: int(np.argmax(codes == c)))
        )
        raise DataError(
            f"{name}: the time column mixes epoch units: {firsts}; one column must use one "
            "unit (convert the file, or split it)"
        )
    return units[present[0]]


def _check_epoch_range(numbers: np.ndarray, unit: str, name: str) -> None:
    """Refuse epoch numbers that in ``unit`` lie outside :data:`TIME_RANGE` (checked on the
    numbers, before a conversion that could overflow)."""
    lo, hi = (t.value // 1_000_000_000 * _PER_SECOND[unit] for t in TIME_RANGE)
    outside = (numbers < lo) | (numbers >= hi)
    if outside.any():
        row = int(np.argmax(outside))
        raise DataError(
            f"{name}: row {row + 1} has the epoch time {numbers[row]:.17g}, which in "
            f"{_UNIT_NAMES[unit]} lies outside the years 1970 to 2100 ({int(outside.sum())} "
            "row(s) outside); bar times must lie in that range"
        )


def _parse_times(
    values: pd.Series, *, name: str, layout: str, tz: str | None, time_unit: str | None
) -> tuple[pd.DatetimeIndex, str | None]:
    """The time column as a UTC index, and the epoch unit it was read in (``None`` for
    date strings and datetimes)."""
    unit = None
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            index = pd.DatetimeIndex(values)
            if index.tz is None:
                index = index.tz_localize(tz or "UTC", ambiguous="raise", nonexistent="raise")
            return _checked(index, name), None
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            text = values.astype(str).str.strip()
            if len(text) and text.str.fullmatch(r"[+-]?\d+(\.\d*)?").all():
                values = pd.to_numeric(text)  # epoch numbers stored as text
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64)
            if np.isnan(numbers).any():
                raise DataError(f"{name}: empty timestamps in the time column")
            unit = time_unit or epoch_unit(numbers, name)
            _check_epoch_range(numbers, unit, name)
            # Integers convert exactly; float64 would round nanosecond stamps.
            exact = values.to_numpy(np.int64) if _integral(values) else numbers
            index = pd.DatetimeIndex(pd.to_datetime(exact, unit=unit, utc=True))
        else:
            text = values.astype(str).str.strip()
            if text.str.contains(r"[+-]\d\d:?\d\d$|Z$", regex=True).all():
                index = pd.DatetimeIndex(pd.to_datetime(text, utc=True, format="mixed"))
            else:
                naive = pd.DatetimeIndex(pd.to_datetime(text, format="mixed"))
                zone = tz or (_YAHOO_TZ if layout in ("yahoo", "yfinance") else "UTC")
                index = naive.tz_localize(zone, ambiguous="raise", nonexistent="raise")
    except DataError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{name}: cannot parse the time column ({exc})") from exc
    return _checked(index, name), unit


def _checked(index: pd.DatetimeIndex, name: str) -> pd.DatetimeIndex:
    index = index.tz_convert("UTC").rename("timestamp")
    check_time_range(index, name)
    return index


def bars_from_frame(
    frame: pd.DataFrame,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    source: str | None = None,
    tz: str | None = None,
    time_unit: TimeUnit | None = None,
) -> pd.DataFrame:
    """Normalise an in-memory frame (e.g. from ``yf.download`` or a user's own code).

    Accepts a DatetimeIndex (naive is read in ``tz``, default UTC) or a time column (read as
    :func:`read_bars` reads one: epoch numbers in the unit their magnitude implies unless
    ``time_unit`` is given, or date strings), any capitalisation of the OHLCV names, and
    returns a bars frame (not yet validated). The frame's own ``attrs`` are kept; ``symbol``,
    ``interval`` and ``source`` default to them (``source`` to ``"frame"`` when unknown).
    """
    _check_time_unit(time_unit)
    attrs = dict(frame.attrs)
    symbol = symbol if symbol is not None else attrs.get("symbol")
    interval = interval if interval is not None else attrs.get("interval")
    source = source if source is not None else attrs.get("source", "frame")
    if frame.empty:
        raise DataError(f"{source}: the frame is empty")
    raw = frame.copy()
    if isinstance(raw.columns, pd.MultiIndex):
        raise DataError(
            f"{source}: MultiIndex columns; select one ticker first "
            "(e.g. yf.download(..., multi_level_index=False))"
        )
    if not isinstance(raw.index, pd.DatetimeIndex):
        time_col = _find_time_column([str(c) for c in raw.columns])
        if time_col is None:
            raise DataError(
                f"{source}: the frame needs a DatetimeIndex of bar open times or one of the "
                f"time columns {list(_TIME_COLUMNS)}"
            )
        raw.index, _unit = _parse_times(
            raw.pop(time_col), name=str(source), layout="generic", tz=tz, time_unit=time_unit
        )
    if raw.index.tz is None:
        raw.index = raw.index.tz_localize(tz or "UTC")
    raw = raw.rename(columns={c: _snake(c) for c in raw.columns})
    rest = {k: v for k, v in attrs.items() if k not in ("symbol", "interval", "source")}
    return finalize_bars(raw, symbol=symbol, interval=interval, source=source, **rest)


def merge_funding(
    bars: pd.DataFrame,
    funding: pd.Series,
    *,
    unmatched: Literal["next_bar", "error"] = "next_bar",
) -> pd.DataFrame:
    """Return ``bars`` with a ``funding_rate`` column from a funding-rate history.

    The rate of a funding stamp goes to the bar whose open time equals the stamp (docs/design.md:
    "rate charged at that bar's open; 0 elsewhere"). A stamp inside the bars' span that falls
    on no bar open (bars of 6h, 12h or 1d do not open at every 8-hourly stamp; a bar may be
    missing) is charged at the next bar's open, where the position held through the stamp is
    the one the engine charges, and a :class:`FundingAlignmentWarning` says so; rates are
    never dropped (dropping them would make holding a perpetual free). Stamps outside the
    span are outside the data and are ignored. Stamps landing on one bar add up.

    Args:
        bars: a bars frame (UTC index of bar open times).
        funding: funding rates as fractions per funding interval (``0.0001`` = 0.01 %),
            indexed by UTC funding timestamps.
        unmatched: ``"next_bar"`` (default, with a warning) or ``"error"`` (raise
            ``DataError``) for stamps that fall on no bar open.

    Returns:
        A copy of ``bars`` with ``funding_rate`` (float64) and ``attrs["funding_start"]``
        / ``attrs["funding_end"]`` (the covered funding history, ISO strings) set.
    """
    if not isinstance(funding.index, pd.DatetimeIndex) or funding.index.tz is None:
        raise DataError("funding: the index must be a tz-aware DatetimeIndex of funding stamps")
    if not np.isfinite(funding.to_numpy(dtype=np.float64)).all():
        bad = list(funding.index[~np.isfinite(funding.to_numpy(dtype=np.float64))][:3])
        raise DataError(f"funding: non-finite funding rates at {bad}")
    out = bars.copy()
    if bars.empty:
        out["funding_rate"] = np.zeros(0, dtype=np.float64)
        return out
    stamps = funding.index.tz_convert("UTC")
    inside = (stamps >= bars.index[0]) & (stamps <= bars.index[-1])
    stamps, rates = stamps[inside], funding.to_numpy(dtype=np.float64)[inside]
    positions = bars.index.searchsorted(stamps, side="left")
    if unmatched not in ("next_bar", "error"):
        raise ValueError(f"unmatched={unmatched!r} must be 'next_bar' or 'error'")
    moved = bars.index[positions] != stamps
    if moved.any():
        name = " ".join(str(bars.attrs.get(k)) for k in ("source", "symbol", "interval"))
        message = (
            f"{name}: {int(moved.sum())} funding stamp(s) fall on no bar open (first: "
            f"{', '.join(str(t) for t in stamps[moved][:3])})"
        )
        if unmatched == "error":
            raise DataError(message + "; use bars that open at every funding stamp")
        warnings.warn(
            message + "; each is charged at the next bar's open",
            FundingAlignmentWarning,
            stacklevel=2,
        )
    column = np.zeros(len(bars), dtype=np.float64)
    np.add.at(column, positions, rates)
    out["funding_rate"] = column
    out = finalize_bars(out, **_attr_args(bars.attrs))
    if len(stamps):
        out.attrs["funding_start"] = stamps[0].isoformat()
        out.attrs["funding_end"] = stamps[-1].isoformat()
    return out


def _attr_args(attrs: dict) -> dict:
    rest = {k: v for k, v in attrs.items() if k not in ("symbol", "interval", "source")}
    return {
        "symbol": attrs.get("symbol"),
        "interval": attrs.get("interval"),
        "source": attrs.get("source", "frame"),
        **rest,
    }
