"""On-disk cache of fetched bars: one Parquet file per source/symbol/interval.

Layout: ``$TRADEZOO_DATA_DIR`` (default ``~/.cache/tradezoo``)
``/<source>/<SYMBOL>_<interval>.parquet``, e.g. ``bybit-linear/BTCUSDT_1h.parquet`` or
``yahoo/SPY_1d.parquet``.

Guarantees:

- **Atomic writes.** A file is written to a temporary name in the same folder, flushed and
  fsynced, then ``os.replace``-d over the old one. A reader sees the old file or the new one,
  never half of either; an exception or a kill during a download leaves the cache exactly as
  it was, because nothing is written until every missing range has arrived.
- **Incremental refresh.** Each file records the time range it *covers* (what was asked for
  and answered, which can be wider than the bars it holds, e.g. before a listing). A repeat
  fetch downloads only the parts of the requested range outside that coverage.
- **Corruption is detected, reported and repaired.** A file that does not parse, or whose
  frame breaks the bars-frame rules, raises a :class:`CacheCorruptWarning` and is re-fetched
  in full; the corrupt file is replaced only once the new data has arrived.
- **Concurrent fetches lose nothing.** A fetch downloads what its first read of the file
  says is missing, then takes an exclusive ``fcntl.flock`` on the file's lock file,
  ``<root>/.locks/<source>/<SYMBOL>_<interval>.lock``, and inside the lock re-reads the file
  and its coverage, downloads any hole between that coverage and its own ranges (the coverage
  stays one contiguous range), merges, and writes atomically. Two processes fetching
  different ranges of one series at once therefore leave a file holding both. Downloads run
  outside the lock, so a long download never blocks another series or a reader; readers take
  no lock (a reader never sees a half-written file). Lock files are created with the first
  write and kept (deleting one while another process waits on it would let two writers in),
  in their own folder so the data folders hold only data; the kernel drops a lock when its
  process dies, even by SIGKILL, so a crashed fetch never blocks the next.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tradezoo._fs import atomic_file, make_private_dirs
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.errors import TradezooError

_META_KEY = b"tradezoo"
_LOCK_DIR = ".locks"
# Coverage is inclusive; the next range to download starts one millisecond (Bybit's time
# resolution) past it, so a bar whose open time is not on the UTC interval grid (Yahoo daily
# bars open at New York midnight) is never skipped.
_EPSILON = pd.Timedelta(milliseconds=1)


class CacheCorruptWarning(UserWarning):
    """A cache file could not be read back; it will be re-fetched."""


def data_dir() -> Path:
    """The cache root: ``$TRADEZOO_DATA_DIR`` or ``~/.cache/tradezoo``."""
    configured = os.environ.get("TRADEZOO_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tradezoo"


@dataclass(frozen=True)
class CacheKey:
    """Identifies one cache file.

    Attributes:
        source: ``"bybit-linear"``, ``"bybit-spot"``, ``"yahoo"``...
        symbol: instrument, as the source spells it (``"BTCUSDT"``, ``"SPY"``).
        interval: canonical interval name (``"1h"``).
    """

    source: str
    symbol: str
    interval: str

    def relative_path(self) -> Path:
        safe_symbol = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.symbol)
        return Path(self.source) / f"{safe_symbol}_{self.interval}.parquet"


@dataclass(frozen=True)
class CachedBars:
    """A cache file's content: the bars and the time range they cover (inclusive, UTC)."""

    frame: pd.DataFrame
    coverage_start: pd.Timestamp
    coverage_end: pd.Timestamp


@dataclass
class FetchReport:
    """What a cached fetch did, for the CLI and for logs."""

    path: Path
    downloaded: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    rows_downloaded: int = 0
    rows_in_cache: int = 0
    replaced_corrupt: bool = False

    def summary(self) -> str:
        if not self.downloaded:
            what = "nothing downloaded (cache already covers the range)"
        else:
            spans = ", ".join(
                f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M}" for a, b in self.downloaded
            )
            what = f"downloaded {self.rows_downloaded} rows ({spans})"
        corrupt = "; replaced a corrupt cache file" if self.replaced_corrupt else ""
        return f"{what}; {self.rows_in_cache} rows cached in {self.path}{corrupt}"


class BarCache:
    """Parquet cache of bars frames. ``root`` defaults to :func:`data_dir`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else data_dir()

    def path(self, key: CacheKey) -> Path:
        return self.root / key.relative_path()

    def lock_path(self, key: CacheKey) -> Path:
        """The lock file that serialises writers of ``key``'s file (see the module docstring)."""
        return self.root / _LOCK_DIR / key.relative_path().with_suffix(".lock")

    @contextmanager
    def lock(self, key: CacheKey) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``key``'s lock file; blocks while another holds it."""
        path = self.lock_path(key)
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read(self, key: CacheKey) -> CachedBars | None:
        """The cached bars for ``key``, or None if there is no file.

        Raises:
            CacheCorruptError: the file exists but cannot be read back as a bars frame.
        """
        path = self.path(key)
        if not path.exists():
            return None
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {})[_META_KEY])
            frame = table.to_pandas()
            coverage_start = pd.Timestamp(meta["coverage_start"])
            coverage_end = pd.Timestamp(meta["coverage_end"])
        except Exception as exc:  # any parse failure means the same thing: corrupt
            raise CacheCorruptError(f"cache file {path} is unreadable ({exc})") from exc
        index = frame.index
        if (
            not isinstance(index, pd.DatetimeIndex)
            or index.tz is None
            or not index.is_monotonic_increasing
            or index.has_duplicates
        ):
            raise CacheCorruptError(f"cache file {path} does not hold a sorted UTC bars index")
        frame.attrs = dict(meta.get("attrs", {}))
        return CachedBars(frame, coverage_start, coverage_end)

    def write(self, key: CacheKey, cached: CachedBars) -> Path:
        """Atomically replace the file for ``key`` with ``cached``."""
        path = self.path(key)
        make_private_dirs(path.parent)
        table = pa.Table.from_pandas(cached.frame, preserve_index=True)
        meta = {
            "coverage_start": cached.coverage_start.isoformat(),
            "coverage_end": cached.coverage_end.isoformat(),
            "attrs": _scalar_attrs(cached.frame.attrs),
        }
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
        )
        with atomic_file(path) as handle:
            pq.write_table(table, handle, compression="zstd")
        return path

    def entries(self) -> list[tuple[CacheKey, Path]]:
        """Every cache file under the root, as (key, path)."""
        found = []
        if not self.root.exists():
            return found
        for path in sorted(self.root.glob("*/*.parquet")):
            symbol, _, interval = path.stem.rpartition("_")
            found.append((CacheKey(path.parent.name, symbol, interval), path))
        return found


class CacheCorruptError(TradezooError, OSError):
    """A cache file exists but cannot be read back."""

    exit_code = 3


def _scalar_attrs(attrs: dict) -> dict:
    """The attrs a cache entry keeps: those with a plain scalar value (text, number, flag)."""
    return {k: v for k, v in attrs.items() if isinstance(v, str | int | float | bool | type(None))}


Downloader = Callable[[pd.Timestamp, pd.Timestamp], pd.DataFrame]
"""``download(start, end)`` returns every closed bar with open time in ``[start, end]``."""


def last_closed_open(interval: Interval, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Open time of the newest bar that has closed at ``now`` (UTC)."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    if interval.minutes is None:
        return (now.normalize().replace(day=1) - pd.DateOffset(months=1)).tz_convert("UTC")
    step = pd.Timedelta(minutes=interval.minutes)
    epoch = pd.Timestamp(0, tz="UTC")
    return epoch + ((now - epoch) // step) * step - step


def uncached_fetch(
    download: Downloader,
    start: pd.Timestamp,
    end: pd.Timestamp,
    interval: Interval,
    now: pd.Timestamp | None,
    what: str,
) -> pd.DataFrame:
    """``download(start, last)`` without the cache, ``last`` being ``end`` capped at the last
    bar closed at ``now``. ``what`` names the series in the error ("BTCUSDT 1h").

    Raises:
        ValueError: the capped range is empty (start after end, or no bar has closed yet).
    """
    last = min(end, last_closed_open(interval, now))
    if last < start:
        raise ValueError(
            f"{what}: empty range {start} to {last} (start after end, or no bar of the range "
            "has closed yet)"
        )
    return download(start, last)


def cached_fetch(
    key: CacheKey,
    start: pd.Timestamp,
    end: pd.Timestamp,
    download: Downloader,
    *,
    cache: BarCache | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, FetchReport]:
    """Return bars for ``[start, end]``, downloading only what the cache does not cover.

    ``end`` is capped at the last closed bar at ``now``. Downloads happen first; the cache
    file is written once, atomically, after all of them succeed, under :meth:`BarCache.lock`
    and merged with what the file holds at that moment, so concurrent fetches of one series
    (threads or processes) each add their range to the file.

    Returns:
        The bars with open time in ``[start, end]`` (``attrs["fetch_summary"]`` says what was
        downloaded and stored) and a :class:`FetchReport`.
    """
    cache = cache or BarCache()
    interval = parse_interval(key.interval)
    start = _utc(start)
    end = min(_utc(end), last_closed_open(interval, now))
    if end < start:
        raise ValueError(
            f"{key.symbol} {key.interval}: empty range {start} to {end} "
            "(start after end, or no bar of the range has closed yet)"
        )
    report = FetchReport(path=cache.path(key))
    initial = _read_reporting_corruption(cache, key, report)
    known = [] if initial is None else [(initial.coverage_start, initial.coverage_end)]
    pieces = [] if initial is None else [initial.frame]
    for lo, hi in _uncovered(start, end, known):
        pieces.append(_download(download, lo, hi, report))
        known.append((lo, hi))
    stored = initial
    if report.downloaded:
        with cache.lock(key):
            # Another process may have written the file since the first read: merge with
            # what it holds now, and fill any hole between its coverage and ours.
            current = _read_reporting_corruption(cache, key, report)
            if current is not None:
                pieces.append(current.frame)
                known.append((current.coverage_start, current.coverage_end))
            cover_start = min(lo for lo, _ in known)
            cover_end = max(hi for _, hi in known)
            for lo, hi in _uncovered(cover_start, cover_end, known):
                pieces.append(_download(download, lo, hi, report))
            stored = CachedBars(_merge(pieces), cover_start, cover_end)
            cache.write(key, stored)
    assert stored is not None  # nothing cached means the whole range was downloaded
    report.rows_in_cache = len(stored.frame)
    frame = stored.frame.loc[start:end].copy()
    # The summary rides along in attrs so callers of fetch_bybit/fetch_yahoo (the CLI) can
    # say what was downloaded and stored.
    frame.attrs = {**stored.frame.attrs, "fetch_summary": report.summary()}
    return frame, report


def _read_reporting_corruption(
    cache: BarCache, key: CacheKey, report: FetchReport
) -> CachedBars | None:
    """``cache.read(key)``; a corrupt file is reported once (warning) and treated as absent."""
    try:
        return cache.read(key)
    except CacheCorruptError as exc:
        if not report.replaced_corrupt:
            # stacklevel 3: the caller of cached_fetch.
            warnings.warn(f"{exc}; re-fetching it in full", CacheCorruptWarning, stacklevel=3)
        report.replaced_corrupt = True
        return None


def _uncovered(
    start: pd.Timestamp, end: pd.Timestamp, known: list[tuple[pd.Timestamp, pd.Timestamp]]
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The parts of ``[start, end]`` outside every inclusive range in ``known``."""
    holes, cursor = [], start
    for lo, hi in sorted(known):
        if hi < cursor:
            continue
        if lo > cursor:
            holes.append((cursor, min(lo - _EPSILON, end)))
        cursor = max(cursor, hi + _EPSILON)
        if cursor > end:
            break
    if cursor <= end:
        holes.append((cursor, end))
    return [(lo, hi) for lo, hi in holes if lo <= hi]


def _download(
    download: Downloader, lo: pd.Timestamp, hi: pd.Timestamp, report: FetchReport
) -> pd.DataFrame:
    new = download(lo, hi)
    report.downloaded.append((lo, hi))
    report.rows_downloaded += len(new)
    return new


def _merge(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate bars frames; on a repeated stamp the later piece wins (exchanges correct
    bars rarely). ``attrs`` come from the last piece that has any."""
    attrs = next((p.attrs for p in reversed(pieces) if p.attrs), {})
    filled = [p for p in pieces if len(p)]
    merged = pd.concat(filled) if filled else pieces[-1]
    merged = merged[~merged.index.duplicated(keep="last")].sort_index()
    merged.attrs = dict(attrs)
    return merged


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
