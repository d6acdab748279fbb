"""Bundled datasets and :func:`load_bars`, the one place that turns a name, a path or a frame
into validated bars.

Bundled (real market data shipped gzip-compressed as package data; see docs/data.md for
attribution):

- ``bybit-btcusdt-1h``: Bybit USDT perpetual BTCUSDT (category ``linear``), last-price 1h
  klines, 19,261 bars from 2023-11-29 00:00 to 2026-02-08 12:00 UTC, with ``funding_rate``
  merged from Bybit's 8-hourly funding history (which starts 2023-12-18 08:00 UTC; before it
  the column is 0 because the history is not in the source, see ``attrs["funding_start"]``).
  Bybit's ``turnover`` is not in the source and is not invented here.
- ``yahoo-spy-1d``: SPY daily bars from Yahoo Finance, 2,519 trading days from 2007-12-31 to
  2017-12-29. Prices are dividend and split adjusted (open, high, low and close multiplied by
  ``Adj Close / Close``, as yfinance's ``auto_adjust=True``) so a held position earns the total
  return; ``load_dataset("yahoo-spy-1d-raw")`` keeps the split-only prices with ``adj_close``.
  The source's two real ``Low > Open`` rows (2015-03-05, 2015-03-30) are clipped and reported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, overload

import pandas as pd

from tradezoo.data.bars import bars_from_frame, merge_funding, read_bars
from tradezoo.data.errors import DataError
from tradezoo.data.validation import Repair, ValidationReport, validate_bars

_BUNDLE = "tradezoo.data"
_BUNDLE_DIR = "bundled"


@dataclass(frozen=True)
class DatasetInfo:
    """Description of a bundled dataset.

    Attributes:
        name: the name ``load_dataset`` takes.
        symbol: instrument symbol.
        interval: canonical bar interval.
        source: ``"bybit-linear"`` or ``"yahoo"``.
        file: bundled bars file (package data).
        description: one line for ``tradezoo data list``.
        attribution: whose data it is and where it came from.
    """

    name: str
    symbol: str
    interval: str
    source: str
    file: str
    description: str
    attribution: str
    funding_file: str | None = None
    adjust: bool = False


_BYBIT_ATTRIBUTION = (
    "Bybit market data (public v5 API GET /v5/market/kline and /v5/market/funding/history), "
    "via freqtrade/ccxt in mohsenjfar/trade @ 05394495ffbb"
)
_SPY_ATTRIBUTION = (
    "Yahoo Finance data (Yahoo's terms apply), via matplotlib/mplfinance "
    "examples/data/yahoofinance-SPY-20080101-20180101.csv @ ea517959a5fd"
)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="bybit-btcusdt-1h",
            symbol="BTCUSDT",
            interval="1h",
            source="bybit-linear",
            file="bybit_linear_BTCUSDT_1h.csv.gz",
            funding_file="bybit_linear_funding_8h.csv.gz",
            description="Bybit BTCUSDT perpetual, 1h, 2023-11-29..2026-02-08, with 8h funding",
            attribution=_BYBIT_ATTRIBUTION,
        ),
        DatasetInfo(
            name="yahoo-spy-1d",
            symbol="SPY",
            interval="1d",
            source="yahoo",
            file="yahoo_SPY_1d_2007-12-31_2017-12-29.csv.gz",
            adjust=True,
            description="SPY daily, 2007-12-31..2017-12-29, dividend and split adjusted",
            attribution=_SPY_ATTRIBUTION,
        ),
        DatasetInfo(
            name="yahoo-spy-1d-raw",
            symbol="SPY",
            interval="1d",
            source="yahoo",
            file="yahoo_SPY_1d_2007-12-31_2017-12-29.csv.gz",
            adjust=False,
            description="SPY daily, as downloaded: split-adjusted prices plus adj_close",
            attribution=_SPY_ATTRIBUTION,
        ),
    )
}


def list_datasets() -> list[DatasetInfo]:
    """The bundled datasets, in name order."""
    return [DATASETS[name] for name in sorted(DATASETS)]


def bundled_path(file: str) -> Path:
    """Filesystem path of a bundled data file."""
    return Path(str(resources.files(_BUNDLE).joinpath(_BUNDLE_DIR, file)))


def _dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; bundled datasets are {sorted(DATASETS)} "
            "(or pass a CSV/Parquet path)"
        ) from None


@functools.lru_cache(maxsize=8)
def _load_bundled(name: str, repair: Repair) -> tuple[pd.DataFrame, ValidationReport]:
    info = _dataset_info(name)
    bars = read_bars(
        bundled_path(info.file),
        symbol=info.symbol,
        interval=info.interval,
        adjust=info.adjust,
    )
    bars.attrs.update(source=info.source, dataset=info.name, attribution=info.attribution)
    bars.attrs["path"] = info.file
    if info.funding_file is not None:
        funding = pd.read_csv(bundled_path(info.funding_file))
        funding = funding[funding["symbol"] == info.symbol]
        rates = pd.Series(
            funding["fundingRate"].to_numpy(dtype="float64"),
            index=pd.to_datetime(funding["timestamp"], unit="ms", utc=True),
            name="funding_rate",
        ).sort_index()
        bars = merge_funding(bars, rates)
    return validate_bars(bars, repair=repair, source=f"dataset {name} ({info.file})")


@overload
def load_dataset(
    name: str, *, repair: Repair = ..., return_report: Literal[False] = ...
) -> pd.DataFrame: ...
@overload
def load_dataset(
    name: str, *, repair: Repair = ..., return_report: Literal[True]
) -> tuple[pd.DataFrame, ValidationReport]: ...
def load_dataset(
    name: str, *, repair: Repair = "safe", return_report: bool = False
) -> pd.DataFrame | tuple[pd.DataFrame, ValidationReport]:
    """Load a bundled dataset as a validated bars frame.

    Args:
        name: one of :func:`list_datasets` (e.g. ``"bybit-btcusdt-1h"``).
        repair: validation policy (see :func:`~tradezoo.data.validation.validate_bars`).
        return_report: also return the :class:`ValidationReport`.

    Raises:
        DataError: unknown name (the message lists the bundled ones), or validation failure.

    Example:
        >>> bars = load_dataset("bybit-btcusdt-1h")
        >>> len(bars), bars.index[0].isoformat()
        (19261, '2023-11-29T00:00:00+00:00')
    """
    frame, report = _load_bundled(name, repair)
    frame = frame.copy()  # the cached frame must stay untouched by callers
    return (frame, report) if return_report else frame


def load_bars(
    source: str | Path | pd.DataFrame,
    *,
    repair: Repair = "safe",
    symbol: str | None = None,
    interval: str | None = None,
    tz: str | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validated bars from a bundled dataset name, a CSV/Parquet path, or a frame.

    This is the entry point the envs, trainers and CLI use, so every frame they see has passed
    :func:`validate_bars`.

    Raises:
        DataError: unknown dataset name that is not an existing file either, unreadable file,
            or validation failure.
    """
    if isinstance(source, pd.DataFrame):
        if source.attrs.get("validated"):
            return validate_bars(source, repair=repair)
        bars = bars_from_frame(source, symbol=symbol, interval=interval, tz=tz)
        return validate_bars(bars, repair=repair)
    if isinstance(source, str) and source in DATASETS:
        frame, report = _load_bundled(source, repair)
        return frame.copy(), report
    path = Path(source)
    if not path.exists():
        if isinstance(source, str) and path.suffix == "":
            _dataset_info(source)  # raises with the list of bundled datasets
        raise FileNotFoundError(f"no such bars file: {path}")
    return validate_bars(read_bars(path, symbol=symbol, interval=interval, tz=tz), repair=repair)
