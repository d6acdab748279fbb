"""Bar intervals: one canonical spelling, with conversions to pandas and to Bybit codes.

Canonical names are ``1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d 1w 1M`` (``M`` is a calendar
month). ``parse_interval`` also accepts Bybit codes (``"60"``, ``"D"``), pandas aliases
(``"60min"``, ``"1h"``, ``"1D"``, ``"H"``) and yfinance codes (``"1d"``, ``"60m"``, ``"1wk"``,
``"1mo"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from tradezoo.errors import ConfigError

_MINUTES_TO_CANONICAL: dict[int, str] = {
    1: "1m",
    2: "2m",
    3: "3m",
    5: "5m",
    15: "15m",
    30: "30m",
    60: "1h",
    90: "90m",
    120: "2h",
    240: "4h",
    360: "6h",
    720: "12h",
    1440: "1d",
    10080: "1w",
}
_BYBIT_CODES: dict[str, str] = {
    "1m": "1",
    "3m": "3",
    "5m": "5",
    "15m": "15",
    "30m": "30",
    "1h": "60",
    "2h": "120",
    "4h": "240",
    "6h": "360",
    "12h": "720",
    "1d": "D",
    "1w": "W",
    "1M": "M",
}
_UNIT_MINUTES = {"m": 1, "min": 1, "t": 1, "h": 60, "d": 1440, "w": 10080, "wk": 10080}


@dataclass(frozen=True)
class Interval:
    """A bar interval.

    Attributes:
        name: canonical name, e.g. ``"1h"``.
        minutes: length in minutes; ``None`` for calendar months.
    """

    name: str
    minutes: int | None

    @property
    def timedelta(self) -> pd.Timedelta | None:
        """Bar length, or ``None`` for calendar months."""
        return None if self.minutes is None else pd.Timedelta(minutes=self.minutes)

    @property
    def seconds(self) -> float | None:
        return None if self.minutes is None else float(self.minutes * 60)

    @property
    def bybit_code(self) -> str:
        """Bybit v5 ``interval`` parameter; raises ``ValueError`` if Bybit has no such interval."""
        try:
            return _BYBIT_CODES[self.name]
        except KeyError:
            raise ConfigError(
                f"interval {self.name!r} has no Bybit kline code; Bybit supports "
                f"{sorted(_BYBIT_CODES, key=_sort_key)}"
            ) from None

    @property
    def pandas_freq(self) -> str:
        """A pandas frequency string for resampling (``"60min"``, ``"1440min"``, ``"MS"``)."""
        return "MS" if self.minutes is None else f"{self.minutes}min"

    def __str__(self) -> str:
        return self.name


def _sort_key(name: str) -> int:
    return 10**9 if name == "1M" else parse_interval(name).minutes or 0


def parse_interval(value: str | Interval) -> Interval:
    """Parse an interval in any of the accepted spellings.

    >>> parse_interval("60").name, parse_interval("1H").name, parse_interval("D").name
    ('1h', '1h', '1d')
    """
    if isinstance(value, Interval):
        return value
    text = str(value).strip()
    if text in ("M", "1M", "1mo", "1MS", "MS", "mo"):
        return Interval("1M", None)
    if text in ("D", "W"):
        return Interval("1d" if text == "D" else "1w", 1440 if text == "D" else 10080)
    if text.isdigit():  # Bybit minute codes ("1", "60", "240")
        minutes = int(text)
    else:
        match = re.fullmatch(r"(\d*)\s*([A-Za-z]+)", text)
        if not match:
            raise ConfigError(
                f"cannot parse interval {value!r}; use e.g. '1h', '15m', '1d' or '60'")
        count = int(match.group(1) or 1)
        unit = match.group(2).lower()
        if unit not in _UNIT_MINUTES:
            raise ConfigError(
                f"cannot parse interval {value!r}: unknown unit {match.group(2)!r} "
                "(use m/min, h, d, w or M)"
            )
        minutes = count * _UNIT_MINUTES[unit]
    if minutes <= 0:
        raise ConfigError(f"interval {value!r} must be positive")
    name = _MINUTES_TO_CANONICAL.get(minutes)
    if name is None:
        name = f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
    return Interval(name, minutes)


def infer_interval(index: pd.DatetimeIndex) -> Interval | None:
    """The most common spacing of ``index`` as an interval, or ``None`` if it cannot be told.

    Daily exchange bars (weekday spacing with weekend gaps) infer as ``1d``.
    """
    if len(index) < 2:
        return None
    deltas = pd.Series(index[1:] - index[:-1])
    mode = deltas.mode()
    if mode.empty or mode.iloc[0] <= pd.Timedelta(0):
        return None
    minutes = mode.iloc[0] / pd.Timedelta(minutes=1)
    if minutes != int(minutes):
        return None
    return parse_interval(str(int(minutes)))
