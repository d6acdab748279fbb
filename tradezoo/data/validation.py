"""One validator for every bars frame that enters an env or a trainer.

``validate_bars`` checks the rules of the bars frame (docs/design.md, "Data model"), repairs only
what is safe under an explicit policy, and reports everything it saw. What it cannot repair
raises one :class:`~tradezoo.data.errors.DataError` naming the source, the first offending
timestamps and the rule.

| rule | ``repair="safe"`` | ``repair="none"`` |
|---|---|---|
| ``index_type``: a DatetimeIndex | error | error |
| ``index_tz``: tz-aware | error if naive; converted to UTC if another zone | error |
| ``missing_columns``: open high low close volume present | error | error |
| ``duplicates``: no repeated timestamp | identical rows dropped; differing rows an error | error |
| ``increasing``: strictly increasing index | error | error |
| ``nan``: no NaN/inf in OHLCV, turnover, funding_rate | error | error |
| ``non_positive_price``: open, high, low, close > 0 | error | error |
| ``negative_volume`` | error | error |
| ``high_below_open_close`` / ``low_above_open_close`` | clipped to max/min(open, close) | error |
| ``time_range``: times in the years 1970 to 2100 | error | error |
| ``zero_volume`` | reported | error |
| ``spike``: a close far from both neighbours that reverts | reported, never changed | error |
| ``gaps`` against the interval | reported, never filled | error |
| ``off_grid``: open times on the interval's grid | reported, never moved | error |

Gaps follow the calendar: ``"24/7"`` (crypto) counts every missing interval; ``"exchange"``
(Yahoo sources) counts, for daily bars, missing weekdays (exchange holidays show up here and
are expected) and, for intraday bars, missing intervals within one local trading day.

The grid (``off_grid``) is the set of open times ``phase + k * interval``. Its phase is the
one most bars share (the mode of each open time modulo the interval), so the check needs no
assumption about where a source's bars open: Bybit's hourly bars open on the UTC hour,
Yahoo's hourly bars at half past, Bybit's weekly bars on Mondays. Phases are taken in the wall
time of ``attrs["timezone"]`` (set by Yahoo sources and by ``read_bars(tz=...)``), else New
York on the ``"exchange"`` calendar, else UTC, so daily bars at local midnight stay on the
grid across daylight-saving changes. (Daily bars of a file with UTC-offset times and no
``tz`` are judged in UTC, where a DST change moves them by an hour: pass ``tz``.)
Calendar-month bars must share the day of the month and the time of day of most bars. A bar
at 59:01 among bars on the hour is off the grid.

A ``spike`` is a close that moved against both neighbours and came back: with ``d_prev =
log(close[t] / close[t-1])`` and ``d_next = log(close[t] / close[t+1])``, both of one sign and
both above ``SPIKE_MADS`` (20) times the rolling scale of log returns. The scale is the median
absolute deviation (MAD) of log close-to-close returns over a centred window of
``SPIKE_WINDOW`` (101) returns, or their mean absolute deviation from the median where more
than half the window's returns are equal (a stale quote's MAD is 0). A level shift does not
revert and is not a spike; the first and last bars have one neighbour and are not judged.
Only closes are judged: wicks (high, low) legitimately reach far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from tradezoo.data.bars import OHLCV, OPTIONAL_COLUMNS, check_time_range
from tradezoo.data.errors import DataError
from tradezoo.data.intervals import infer_interval, parse_interval

Repair = Literal["safe", "none"]
Calendar = Literal["24/7", "exchange"]
Severity = Literal["error", "repaired", "warning"]

_PRICES = ("open", "high", "low", "close")
_EXAMPLES = 5

SPIKE_MADS = 20.0
"""A spike's move against each neighbour exceeds this many rolling MADs of log returns."""

SPIKE_WINDOW = 101
"""Returns in the centred window of the spike check's rolling scale."""


@dataclass(frozen=True)
class Finding:
    """One rule's outcome.

    Attributes:
        rule: rule name (see the module table).
        severity: ``"error"`` (not repaired; raised), ``"repaired"`` (fixed under the safe
            policy) or ``"warning"`` (reported, data unchanged).
        count: number of rows (or gaps) concerned.
        examples: the first few timestamps concerned.
        message: what was found and what was done.
    """

    rule: str
    severity: Severity
    count: int
    examples: tuple[pd.Timestamp, ...]
    message: str


@dataclass
class ValidationReport:
    """What ``validate_bars`` saw and did. Prints as a table; ``to_dict`` for JSON."""

    source: str
    rows_in: int
    rows_out: int = 0
    interval: str | None = None
    calendar: Calendar = "24/7"
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing had to be repaired and nothing was reported."""
        return not self.findings

    def by_rule(self, rule: str) -> Finding | None:
        return next((f for f in self.findings if f.rule == rule), None)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "interval": self.interval,
            "calendar": self.calendar,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "findings": [
                {
                    "rule": f.rule,
                    "severity": f.severity,
                    "count": f.count,
                    "examples": [t.isoformat() for t in f.examples],
                    "message": f.message,
                }
                for f in self.findings
            ],
        }

    def _headline(self) -> str:
        head = (
            f"Validation of {self.source}: {self.rows_in} rows in, {self.rows_out} rows out, "
            f"interval {self.interval}, calendar {self.calendar}"
        )
        if self.start is not None and self.end is not None:
            head += f", {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        return head

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                f.rule,
                f.severity,
                str(f.count),
                ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in f.examples),
                f.message,
            )
            for f in self.findings
        ]

    def __str__(self) -> str:
        if not self.findings:
            return self._headline() + "\n  all checks passed"
        rows = [
            ("rule", "result", "rows", "first timestamps (UTC)"),
            *(r[:4] for r in self._rows()),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [self._headline()]
        for i, row in enumerate(rows):
            cells = zip(row, widths, strict=True)
            lines.append("  " + "  ".join(cell.ljust(width) for cell, width in cells).rstrip())
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        lines.extend(f"  - {f.rule}: {f.message}" for f in self.findings)
        return "\n".join(lines)

    def __rich__(self) -> object:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        if not self.findings:
            return Group(Text(self._headline()), Text("  all checks passed"))
        table = Table()
        for name in ("rule", "result", "rows", "first timestamps (UTC)", "detail"):
            table.add_column(name, overflow="fold")
        for row in self._rows():
            table.add_row(*row)
        return Group(Text(self._headline()), table)


def _stamps(index: pd.Index, mask: np.ndarray | pd.Series) -> tuple[pd.Timestamp, ...]:
    return tuple(index[np.asarray(mask, dtype=bool)][:_EXAMPLES])


def validate_bars(
    df: pd.DataFrame,
    *,
    repair: Repair = "safe",
    calendar: Calendar | None = None,
    interval: str | None = None,
    source: str | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a bars frame, repair what is safe, and report.

    Args:
        df: a bars frame (see :mod:`tradezoo.data.bars`). It is not modified.
        repair: ``"safe"`` repairs the cases listed in the module table; ``"none"`` turns
            every finding into an error.
        calendar: ``"24/7"`` or ``"exchange"``; defaults to ``"exchange"`` for Yahoo sources
            and ``"24/7"`` otherwise.
        interval: bar interval for the gap check; defaults to ``df.attrs["interval"]``, then
            to the spacing inferred from the index.
        source: name used in messages; defaults to ``attrs["path"]``, then ``attrs["source"]``
            and ``attrs["symbol"]``.

    Returns:
        ``(validated_frame, report)``. The frame has the same attrs plus ``validated=True``.

    Raises:
        DataError: for every finding that is not repaired under ``repair``; the message names
            the source, the rule and the first offending timestamps.
    """
    if repair not in ("safe", "none"):
        raise ValueError(f"repair must be 'safe' or 'none', got {repair!r}")
    attrs = dict(df.attrs)
    name = source or str(
        attrs.get("path")
        or " ".join(str(attrs[k]) for k in ("source", "symbol") if attrs.get(k))
        or "bars"
    )
    if calendar is None:
        calendar = "exchange" if str(attrs.get("source", "")).startswith("yahoo") else "24/7"
    report = ValidationReport(source=name, rows_in=len(df), calendar=calendar)

    def fail(rule: str, message: str, examples: tuple[pd.Timestamp, ...] = ()) -> DataError:
        where = f" (first at {', '.join(str(t) for t in examples)})" if examples else ""
        return DataError(f"{name}: rule {rule!r} failed: {message}{where}")

    def finding(rule: str, count: int, examples: tuple, message: str, repaired: bool) -> None:
        if repair == "none":
            raise fail(rule, f"{count} row(s): {message} [repair='none']", examples)
        severity: Severity = "repaired" if repaired else "warning"
        report.findings.append(Finding(rule, severity, count, examples, message))

    # --- structure: unrecoverable problems first --------------------------------------------
    if len(df) == 0:
        raise fail("non_empty", "the frame has no rows")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise fail(
            "index_type", f"the index must be a DatetimeIndex, not {type(df.index).__name__}"
        )
    if df.index.tz is None:
        raise fail(
            "index_tz",
            "the index is naive; localise it (read_bars(tz=...) or index.tz_localize) first",
        )
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise fail("missing_columns", f"missing {missing}; found {list(map(str, df.columns))}")
    frame = df.copy()
    if str(frame.index.tz) != "UTC":
        finding("index_tz", len(frame), (), f"index converted from {frame.index.tz} to UTC", True)
        frame.index = frame.index.tz_convert("UTC")
    frame.index = frame.index.rename("timestamp")
    checked = [c for c in (*OHLCV, *OPTIONAL_COLUMNS) if c in frame.columns]
    for column in checked:
        if not pd.api.types.is_float_dtype(frame[column].dtype):
            frame[column] = frame[column].astype(np.float64)

    # --- duplicates, then order ---------------------------------------------------------------
    dup_mask = frame.index.duplicated(keep=False)
    if dup_mask.any():
        dups = frame[dup_mask]
        differing = dups.groupby(level=0).nunique(dropna=False).gt(1).any(axis=1)
        bad = differing[differing].index
        if len(bad):
            raise fail(
                "duplicates",
                f"{len(bad)} timestamp(s) repeated with different values; cannot tell which "
                "row is right",
                tuple(bad[:_EXAMPLES]),
            )
        extra = frame.index.duplicated(keep="first")
        finding(
            "duplicates",
            int(extra.sum()),
            _stamps(frame.index, extra),
            "identical repeated rows dropped (one kept)",
            True,
        )
        frame = frame[~extra]
    if not frame.index.is_monotonic_increasing:
        steps = np.flatnonzero(np.diff(frame.index.asi8) <= 0) + 1
        raise fail(
            "increasing",
            f"the index is not sorted ascending ({len(steps)} step(s) go back in time); "
            "sort it first if the order is known to be meaningless",
            tuple(frame.index[steps[:_EXAMPLES]]),
        )

    try:
        check_time_range(frame.index, name)
    except DataError as exc:
        raise fail("time_range", str(exc).removeprefix(f"{name}: ")) from None

    # --- values ---------------------------------------------------------------------------
    values = frame[checked].to_numpy(dtype=np.float64)
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        rows = nonfinite.any(axis=1)
        columns = [c for c, hit in zip(checked, nonfinite.any(axis=0), strict=True) if hit]
        raise fail(
            "nan",
            f"{int(rows.sum())} row(s) with NaN or infinite values in {columns}; "
            "prices are never interpolated",
            _stamps(frame.index, rows),
        )
    prices = frame[list(_PRICES)].to_numpy()
    non_positive = (prices <= 0).any(axis=1)
    if non_positive.any():
        raise fail(
            "non_positive_price",
            f"{int(non_positive.sum())} row(s) with a zero or negative price",
            _stamps(frame.index, non_positive),
        )
    volume = frame["volume"].to_numpy()
    if (volume < 0).any():
        raise fail("negative_volume", "negative volume", _stamps(frame.index, volume < 0))

    body_high = np.maximum(frame["open"].to_numpy(), frame["close"].to_numpy())
    body_low = np.minimum(frame["open"].to_numpy(), frame["close"].to_numpy())
    high_bad = frame["high"].to_numpy() < body_high
    if high_bad.any():
        finding(
            "high_below_open_close",
            int(high_bad.sum()),
            _stamps(frame.index, high_bad),
            "high < max(open, close); high clipped up to max(open, close)",
            True,
        )
        frame["high"] = np.maximum(frame["high"].to_numpy(), body_high)
    low_bad = frame["low"].to_numpy() > body_low
    if low_bad.any():
        finding(
            "low_above_open_close",
            int(low_bad.sum()),
            _stamps(frame.index, low_bad),
            "low > min(open, close); low clipped down to min(open, close)",
            True,
        )
        frame["low"] = np.minimum(frame["low"].to_numpy(), body_low)
    zero_volume = volume == 0
    if zero_volume.any():
        finding(
            "zero_volume",
            int(zero_volume.sum()),
            _stamps(frame.index, zero_volume),
            "bars with zero volume kept as they are",
            False,
        )

    spikes = _spikes(frame["close"].to_numpy())
    if spikes.any():
        finding(
            "spike",
            int(spikes.sum()),
            _stamps(frame.index, spikes),
            f"close moved more than {SPIKE_MADS:g} rolling MADs of log returns against both "
            "neighbouring closes and reverted (a bad print?); kept as it is",
            False,
        )

    # --- gaps and grid ------------------------------------------------------------------
    resolved = interval or attrs.get("interval")
    parsed = parse_interval(resolved) if resolved else infer_interval(frame.index)
    report.interval = None if parsed is None else parsed.name
    if parsed is not None and parsed.minutes is not None and len(frame) > 1:
        count, examples, detail = _gaps(frame.index, parsed.minutes, calendar)
        if count:
            finding("gaps", count, examples, detail, False)
    if parsed is not None and len(frame) > 2:
        zone = attrs.get("timezone") or ("America/New_York" if calendar == "exchange" else None)
        off = _off_grid(frame.index, parsed.minutes, None if zone is None else str(zone))
        if off.any():
            finding(
                "off_grid",
                int(off.sum()),
                _stamps(frame.index, off),
                f"open times not on the {parsed.name} grid most bars share; kept as they are",
                False,
            )

    frame.attrs = {**attrs, "interval": report.interval, "validated": True}
    report.rows_out = len(frame)
    report.start, report.end = frame.index[0], frame.index[-1]
    return frame, report


def _spikes(close: np.ndarray) -> np.ndarray:
    """Boolean mask of spike bars (module docstring); ``close`` is positive, shape ``[n]``."""
    flags = np.zeros(len(close), dtype=bool)
    if len(close) < 3:
        return flags
    returns = pd.Series(np.diff(np.log(close)))  # returns[i] = log(close[i+1] / close[i])
    rolling = returns.rolling(SPIKE_WINDOW, center=True, min_periods=1)
    centre = rolling.median()
    deviation = (returns - centre).abs()
    mad = deviation.rolling(SPIKE_WINDOW, center=True, min_periods=1).median()
    mean_dev = deviation.rolling(SPIKE_WINDOW, center=True, min_periods=1).mean()
    scale = np.where(mad > 0, mad, mean_dev)
    d_prev = returns.to_numpy()[:-1]  # bar t = 1..n-2 against t-1
    d_next = -returns.to_numpy()[1:]  # bar t against t+1
    limit = SPIKE_MADS * np.maximum(scale[:-1], scale[1:])
    same_side = np.sign(d_prev) == np.sign(d_next)
    flags[1:-1] = same_side & (np.abs(d_prev) > limit) & (np.abs(d_next) > limit)
    return flags


def _off_grid(index: pd.DatetimeIndex, minutes: int | None, zone: str | None) -> np.ndarray:
    """Boolean mask of open times off the grid most bars share, judged in ``zone``'s wall
    time (UTC when ``None``; module docstring)."""
    wall = (index if zone is None else index.tz_convert(zone)).tz_localize(None)
    if minutes is None:  # calendar months: day of the month and time of day
        phase = pd.Series(wall.day * 86_400 + (wall - wall.normalize()).total_seconds())
    else:
        step_ns = minutes * 60 * 1_000_000_000
        phase = pd.Series(wall.as_unit("ns").asi8 % step_ns)
    modal = phase.mode().iloc[0]
    return (phase != modal).to_numpy()


def _gaps(
    index: pd.DatetimeIndex, minutes: int, calendar: Calendar
) -> tuple[int, tuple[pd.Timestamp, ...], str]:
    """Count missing bars; return (count, first bars after a gap, description)."""
    step = pd.Timedelta(minutes=minutes)
    if calendar == "24/7":
        deltas = index[1:] - index[:-1]
        missing = np.asarray((deltas // step) - 1, dtype=np.int64)
        after = missing > 0
        total = int(missing[after].sum())
        return (
            total,
            tuple(index[1:][after][:_EXAMPLES]),
            f"{total} missing {minutes}-minute bar(s) in {int(after.sum())} gap(s); not filled",
        )
    if minutes >= 1440:
        local = index.tz_convert("America/New_York").normalize().tz_localize(None)
        days = local.to_numpy().astype("datetime64[D]")
        missing = np.busday_count(days[:-1], days[1:]) - 1
        after = missing > 0
        total = int(missing[after].sum())
        return (
            total,
            tuple(index[1:][after][:_EXAMPLES]),
            f"{total} missing weekday(s) in {int(after.sum())} gap(s) (exchange holidays are "
            "expected here); not filled",
        )
    local = index.tz_convert("America/New_York")
    same_day = local[1:].normalize() == local[:-1].normalize()
    deltas = index[1:] - index[:-1]
    missing = np.where(same_day, (deltas // step) - 1, 0)
    after = missing > 0
    total = int(missing[after].sum())
    return (
        total,
        tuple(index[1:][after][:_EXAMPLES]),
        f"{total} missing intraday bar(s) within trading days; not filled",
    )
