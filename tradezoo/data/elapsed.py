"""Elapsed time per bar, and the observation keys that carry it next to a window.

The liquid networks (``ltc``, ``cfc``) take each window's per-bar elapsed time ``dt`` ``[L]``:
seconds from the previous bar's open to this bar's open, **unscaled** (the feature scaler never
sees it; the scaled ``dt`` feature column is an ordinary input feature). It travels beside the
window, under its own observation key, in every observation that carries it:

- a window under key ``k`` has its elapsed times under :func:`dt_key` ``(k)``: ``"dt"`` for the
  base window :data:`WINDOW_KEY` (``"window"``), ``"dt_<tf>"`` for a timeframe window ``"<tf>"``
  (``"dt_4h"`` beside ``"4h"``);
- a dt key holds float32 ``[L]`` (``[B, L]`` batched), the same ``L`` as its window.

The first bar of a series has no predecessor in the data given; it gets the nominal bar length
(:func:`nominal_seconds`), i.e. it counts as a regular bar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradezoo.data.intervals import Interval

__all__ = [
    "DT_KEY",
    "DT_PREFIX",
    "MONTH_SECONDS",
    "WINDOW_KEY",
    "dt_key",
    "elapsed_seconds",
    "is_dt_key",
    "nominal_seconds",
    "window_key_of",
]

WINDOW_KEY = "window"
"""Key of the base window ``[L, F + 2]`` (the Box observation's layout) in a Dict observation
that carries elapsed times."""
DT_KEY = "dt"
"""Key of the base window's elapsed times ``[L]`` (seconds, unscaled)."""
DT_PREFIX = "dt_"
"""Prefix of a timeframe window's elapsed-time key (``"dt_4h"`` beside ``"4h"``)."""
MONTH_SECONDS = 365.2425 / 12 * 86400.0
"""Nominal length of a calendar month (the Gregorian mean), seconds."""


def dt_key(window_key: str) -> str:
    """Observation key of the elapsed times of the window under ``window_key``."""
    return DT_KEY if window_key == WINDOW_KEY else DT_PREFIX + window_key


def is_dt_key(key: str) -> bool:
    """Whether ``key`` names elapsed times (``"dt"`` or ``"dt_<window key>"``)."""
    return key == DT_KEY or key.startswith(DT_PREFIX)


def window_key_of(key: str) -> str:
    """The window key whose elapsed times ``key`` holds (inverse of :func:`dt_key`)."""
    if key == DT_KEY:
        return WINDOW_KEY
    if not key.startswith(DT_PREFIX):
        raise ValueError(f"{key!r} is not an elapsed-time key ('dt' or 'dt_<window key>')")
    return key[len(DT_PREFIX):]


def nominal_seconds(interval: Interval) -> float:
    """Nominal bar length of ``interval`` in seconds (a calendar month: :data:`MONTH_SECONDS`);
    the ``time_unit`` of the liquid networks on data of this interval."""
    seconds = interval.seconds
    return MONTH_SECONDS if seconds is None else float(seconds)


def elapsed_seconds(
    open_times: pd.DatetimeIndex, interval: Interval, previous: pd.Timestamp | None = None
) -> np.ndarray:
    """Seconds from each bar's predecessor's open to its open, float32 ``[T]``.

    Args:
        open_times: the bars' open times, increasing.
        interval: the bars' interval (the first bar's ``dt`` when ``previous`` is ``None``).
        previous: open time of the bar before ``open_times[0]``, when the data has one.
    """
    times = pd.DatetimeIndex(open_times).as_unit("ns").asi8
    out = np.empty(len(times), dtype=np.float64)
    if len(times):
        out[1:] = np.diff(times) / 1e9
        first = nominal_seconds(interval)
        if previous is not None:
            first = (times[0] - pd.Timestamp(previous).as_unit("ns").value) / 1e9
        out[0] = first
    if not bool((out > 0).all()):
        raise ValueError("open_times must be strictly increasing (elapsed time > 0 per bar)")
    return out.astype(np.float32)
