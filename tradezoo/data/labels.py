"""Buy/hold/sell labels computed under the environment's own fill rule.

The label of a decision at bar ``t`` (made with data known at the close of bar ``t``, see
docs/design.md, "Time and execution") is judged on the trade that decision would really make: an
order placed at ``t`` fills at the **open of bar t+1** and, for a ``horizon`` of ``h`` bars, is
closed at the open of bar ``t+1+h``. Its gross return is

    gross[t] = open[t+1+h] / open[t+1] - 1

and, with a one-way cost ``c1 = cost_bps / 1e4`` per side (fee + half spread + slippage), the
round trip costs ``c = 2 * c1``. The class (0 = sell, 1 = hold, 2 = buy, the order used by every
env and model in the package) is

- 2 (buy)  when the long's net return   ``gross - c > threshold``;
- 0 (sell) when the short's net return ``-gross - c > threshold``;
- 1 (hold) otherwise.

Both cannot hold at once since ``threshold >= 0`` and ``c >= 0``. A classifier's argmax is
therefore directly an env action (``target`` scheme: 0 short, 1 flat, 2 long).

The last ``1 + h`` rows have no complete horizon and are NaN: a label is never guessed. A NaN
open inside a row's horizon also makes that row's label NaN (``validate_bars`` is the place to
repair missing prices; labels never fill them in).

With ``threshold="vol"`` the threshold adapts to the volatility known at ``t``:

    thr[t] = vol_k * std_{ddof=1}(r[t-w+1], ..., r[t]) * sqrt(h),  r[s] = log(close[s] / close[s-1])

with ``w = vol_window``. It uses closes up to and including ``t`` only (causal) and is NaN for
the first ``w`` rows (``r[0]`` does not exist), so those rows are unlabelled too. ``sqrt(h)``
scales a one-bar volatility to the horizon under the random-walk approximation.

Reference: the triple-barrier family of labels in M. Lopez de Prado, *Advances in Financial
Machine Learning* (Wiley, 2018), ch. 3, reduced here to a fixed horizon with a symmetric,
cost-aware barrier.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import numpy as np
import pandas as pd

from tradezoo.data.checks import check_int
from tradezoo.data.errors import DataError

CLASS_NAMES: tuple[str, str, str] = ("sell", "hold", "buy")
"""Class names in label order: 0 = sell, 1 = hold, 2 = buy."""

SELL, HOLD, BUY = 0, 1, 2


def _check_nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number > 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _check_bars(bars: object, columns: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(bars, pd.DataFrame):
        raise TypeError(f"bars must be a bars frame (pandas DataFrame), got {type(bars).__name__}")
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        raise DataError(
            f"bars: missing column(s) {missing} needed for labels "
            f"(found {list(map(str, bars.columns))})"
        )
    for column in columns:
        values = bars[column].to_numpy(dtype=np.float64)
        bad = np.isfinite(values) & (values <= 0)
        if bad.any():
            where = list(bars.index[bad][:3])
            raise DataError(
                f"bars: column {column!r} has non-positive prices at {where}; "
                "prices must be > 0 (run validate_bars first)"
            )
    return bars


def forward_returns(bars: pd.DataFrame, horizon: int = 1) -> pd.Series:
    """Gross return of a position opened at the next open and closed ``horizon`` bars later.

    ``out[t] = open[t+1+horizon] / open[t+1] - 1``, the env's default fill rule (docs/design.md).

    Args:
        bars: a bars frame with an ``open`` column, ``T`` rows.
        horizon: holding period in bars, an integer >= 1.

    Returns:
        float64 Series ``[T]`` named ``forward_return`` on ``bars.index``; the last
        ``1 + horizon`` rows are NaN (no complete horizon).

    Raises:
        TypeError, ValueError: ``horizon`` is not an integer >= 1.
        DataError: ``open`` is missing or not positive.
    """
    horizon = check_int("horizon", horizon, 1)
    bars = _check_bars(bars, ("open",))
    opens = bars["open"].to_numpy(dtype=np.float64)
    gross = np.full(len(opens), np.nan)
    n_complete = len(opens) - 1 - horizon
    if n_complete > 0:
        entry = opens[1 : 1 + n_complete]  # open[t+1]
        exit_ = opens[1 + horizon : 1 + horizon + n_complete]  # open[t+1+h]
        gross[:n_complete] = exit_ / entry - 1.0
    return pd.Series(gross, index=bars.index, name="forward_return")


def vol_threshold(
    bars: pd.DataFrame, *, horizon: int = 1, vol_k: float = 1.0, vol_window: int = 20
) -> pd.Series:
    """The causal volatility threshold used by ``make_labels(threshold="vol")``.

    ``thr[t] = vol_k * std(r[t-vol_window+1..t], ddof=1) * sqrt(horizon)`` with
    ``r[s] = log(close[s] / close[s-1])``: only closes up to and including ``t``.

    Returns:
        float64 Series ``[T]`` named ``threshold`` (a fraction, like a return) on
        ``bars.index``; NaN for the first ``vol_window`` rows (warm-up).
    """
    horizon = check_int("horizon", horizon, 1)
    vol_window = check_int("vol_window", vol_window, 2)
    vol_k = _check_positive("vol_k", vol_k)
    bars = _check_bars(bars, ("close",))
    closes = bars["close"].to_numpy(dtype=np.float64)
    log_returns = np.full(len(closes), np.nan)
    log_returns[1:] = np.log(closes[1:] / closes[:-1])
    # pandas' rolling window runs forward through the data, so the value at t depends on
    # rows <= t only: a change after t cannot reach it (tested by the perturbation test).
    rolling_std = (
        pd.Series(log_returns).rolling(vol_window, min_periods=vol_window).std(ddof=1).to_numpy()
    )
    threshold = vol_k * rolling_std * math.sqrt(horizon)
    return pd.Series(threshold, index=bars.index, name="threshold")


def make_labels(
    bars: pd.DataFrame,
    *,
    horizon: int = 1,
    threshold: float | Literal["vol"] = 0.005,
    vol_k: float = 1.0,
    vol_window: int = 20,
    cost_bps: float = 0.0,
) -> pd.Series:
    """Label each decision row 0 (sell), 1 (hold) or 2 (buy); see the module docstring.

    Args:
        bars: a bars frame (``open``, and ``close`` for ``threshold="vol"``), ``T`` rows.
        horizon: bars between entry (open[t+1]) and exit (open[t+1+horizon]), integer >= 1.
        threshold: minimum net return (a fraction: 0.005 = 0.5 %) a side must earn to be
            labelled, >= 0; or ``"vol"`` for the causal volatility threshold.
        vol_k: multiplier of the rolling volatility (``threshold="vol"`` only), > 0.
        vol_window: number of 1-bar log returns in the rolling std, integer >= 2.
        cost_bps: **one-way** cost in basis points (fee + half spread + slippage per side),
            >= 0; a round trip costs ``2 * cost_bps / 1e4``. Take it from the accounting
            engine's cost model so labels and backtests net out the same costs, e.g.
            ``cost_bps=CostModel.bybit_linear().one_way_cost_bps`` (7.0 bps: 5.5 taker fee +
            0.5 half spread + 1 slippage; :mod:`tradezoo.backtest.costs`).

    Returns:
        float64 Series ``[T]`` named ``label`` on ``bars.index`` with values 0.0, 1.0, 2.0 or
        NaN (last ``1 + horizon`` rows; the ``vol_window`` warm-up rows with ``"vol"``).

    Raises:
        TypeError, ValueError: an argument breaks its rule (the message names it).
        DataError: a needed price column is missing or not positive.
    """
    horizon = check_int("horizon", horizon, 1)
    cost = _check_nonnegative("cost_bps", cost_bps) * 2.0 / 1e4  # round trip, as a fraction
    if isinstance(threshold, str):
        if threshold != "vol":
            raise ValueError(f"threshold must be a number >= 0 or 'vol', got {threshold!r}")
        thresholds = vol_threshold(
            bars, horizon=horizon, vol_k=vol_k, vol_window=vol_window
        ).to_numpy()
    else:
        # vol_k and vol_window only matter for "vol", but a bad value is still a mistake.
        check_int("vol_window", vol_window, 2)
        _check_positive("vol_k", vol_k)
        thresholds = np.full(len(bars), _check_nonnegative("threshold", threshold))
    gross = forward_returns(bars, horizon).to_numpy()
    long_net = gross - cost
    short_net = -gross - cost
    labels = np.full(len(gross), float(HOLD))
    labels[long_net > thresholds] = float(BUY)
    labels[short_net > thresholds] = float(SELL)
    labels[~(np.isfinite(gross) & np.isfinite(thresholds))] = np.nan
    return pd.Series(labels, index=bars.index, name="label", dtype=np.float64)


def label_balance(labels: pd.Series | np.ndarray) -> pd.DataFrame:
    """Class counts and fractions of a label series.

    Args:
        labels: values 0, 1, 2 (sell, hold, buy) or NaN (unlabelled), any length.

    Returns:
        DataFrame indexed by ``class`` with rows ``sell, hold, buy, nan`` and columns
        ``count`` (int64) and ``fraction``. For the three classes ``fraction`` is the share of
        the *labelled* rows (they sum to 1; NaN when nothing is labelled); for ``nan`` it is the
        share of *all* rows.

    Raises:
        ValueError: a finite value other than 0, 1 or 2.
    """
    values = np.asarray(labels, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    unknown = finite & ~np.isin(values, (SELL, HOLD, BUY))
    if unknown.any():
        raise ValueError(
            f"labels must be 0 (sell), 1 (hold), 2 (buy) or NaN; found "
            f"{sorted(set(values[unknown].tolist()))[:5]}"
        )
    counts = np.array([(values == k).sum() for k in (SELL, HOLD, BUY)], dtype=np.int64)
    n_labelled = int(counts.sum())
    n_nan = len(values) - n_labelled
    class_fraction = counts / n_labelled if n_labelled else np.full(3, np.nan)
    nan_fraction = n_nan / len(values) if len(values) else np.nan
    return pd.DataFrame(
        {
            "count": np.append(counts, n_nan).astype(np.int64),
            "fraction": np.append(class_fraction, nan_fraction),
        },
        index=pd.Index([*CLASS_NAMES, "nan"], name="class"),
    )


def _log_returns(prices: np.ndarray) -> np.ndarray:
    """``[T]`` float64 ``log(p[s] / p[s-1])``; NaN at ``s = 0``."""
    out = np.full(len(prices), np.nan)
    out[1:] = np.log(prices[1:] / prices[:-1])
    return out


def _root_mean_square(returns: np.ndarray, horizon: int) -> np.ndarray:
    """``[T]``: ``sqrt(mean(returns[s-horizon+1 .. s]**2))`` ending at each ``s`` (NaN where
    the window is incomplete or holds a NaN)."""
    squares = pd.Series(returns**2)
    mean = squares.rolling(horizon, min_periods=horizon).mean().to_numpy()
    return np.sqrt(mean)


def realised_volatility(bars: pd.DataFrame, horizon: int = 1) -> pd.Series:
    """Forward realised volatility per bar, the target of ``LabelSpec(task="volatility")``.

    ``vol[t] = sqrt(mean_{k=1..h} r[t+k]**2)`` with ``r[t+k] = log(open[t+1+k] / open[t+k])``:
    the ``h`` open-to-open log returns from ``open[t+1]`` (the fill of a decision at ``t``) to
    ``open[t+1+h]`` (where the direction label's trade exits). It is a per-bar volatility
    (the horizon's total is ``vol * sqrt(h)``), the mean taken as 0 (the convention of
    realised volatility: the mean return is negligible next to its spread at these horizons).

    Args:
        bars: a bars frame with an ``open`` column, ``T`` rows.
        horizon: ``h``, returns in the window, integer >= 1.

    Returns:
        float64 Series ``[T]`` named ``volatility`` on ``bars.index``, >= 0; NaN for the last
        ``1 + h`` rows (no complete horizon), as :func:`make_labels`.
    """
    horizon = check_int("horizon", horizon, 1)
    bars = _check_bars(bars, ("open",))
    trailing = _root_mean_square(_log_returns(bars["open"].to_numpy(dtype=np.float64)), horizon)
    forward = np.full(len(bars), np.nan)
    # trailing[s] covers the returns into open[s-h+1 .. s]; the label at t covers those into
    # open[t+2 .. t+1+h], i.e. trailing[t + 1 + h].
    if len(bars) > 1 + horizon:
        forward[: len(bars) - 1 - horizon] = trailing[1 + horizon :]
    return pd.Series(forward, index=bars.index, name="volatility")


def trailing_volatility(bars: pd.DataFrame, horizon: int = 1) -> pd.Series:
    """The naive volatility forecast: realised volatility per bar of the last ``h`` bars.

    ``naive[t] = sqrt(mean_{s=t-h+1..t} r[s]**2)`` with ``r[s] = log(close[s] / close[s-1])``:
    closes up to and including ``t`` only (known at the decision), the same returns as
    :func:`vol_threshold` uses, over the same horizon as :func:`realised_volatility`.

    Returns:
        float64 Series ``[T]`` named ``naive_volatility`` on ``bars.index``; NaN for the first
        ``h`` rows.
    """
    horizon = check_int("horizon", horizon, 1)
    bars = _check_bars(bars, ("close",))
    values = _root_mean_square(_log_returns(bars["close"].to_numpy(dtype=np.float64)), horizon)
    return pd.Series(values, index=bars.index, name="naive_volatility")


def make_multi_horizon_labels(
    bars: pd.DataFrame,
    *,
    horizons: tuple[int, ...] = (1, 6, 12, 24),
    threshold: float | Literal["vol"] = 0.005,
    vol_k: float = 1.0,
    vol_window: int = 20,
    cost_bps: float = 0.0,
) -> pd.DataFrame:
    """Buy/hold/sell labels at several horizons: column ``h<n>`` is
    ``make_labels(bars, horizon=n, ...)`` with the other arguments as given.

    Returns:
        float64 DataFrame ``[T, H]`` on ``bars.index``, columns ``h1, h6, ...`` in
        ``horizons`` order; each column NaN where :func:`make_labels` is.
    """
    if not horizons:
        raise ValueError("horizons must name at least one horizon (bars >= 1)")
    columns = {
        f"h{int(h)}": make_labels(bars, horizon=h, threshold=threshold, vol_k=vol_k,
                                  vol_window=vol_window, cost_bps=cost_bps)
        for h in horizons
    }
    return pd.DataFrame(columns, index=bars.index)
