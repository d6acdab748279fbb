"""Performance metrics: one module for the evaluator, the PPO callbacks, the backtester and the
comparison tables (docs/design.md, "Metrics").

Conventions (every figure below is computed from ``returns`` r[0..n-1], simple per-period
returns of the account, with ``P = periods_per_year``):

- **Risk-free rate**: given annual, converted per period geometrically,
  ``rf_p = (1 + risk_free) ** (1 / P) - 1`` (quantstats' ``rf``/``periods`` convention;
  empyrical's ``risk_free`` argument *is* per period, so pass it ``rf_p``). Excess returns
  ``x = r - rf_p``.
- **Total return** ``prod(1 + r) - 1``; **CAGR** ``prod(1 + r) ** (P / n) - 1`` (years counted
  as ``n / P``, not from calendar days; empyrical ``annual_return`` and quantstats ``cagr``
  with ``periods=P``). An account whose terminal equity is <= 0 has CAGR -1 (-100 %).
- **Annual volatility** ``std(r, ddof=1) * sqrt(P)``; **Sharpe** ``mean(x) / std(x, ddof=1) *
  sqrt(P)``. NaN with fewer than 2 periods or zero dispersion (all x equal, tested exactly,
  not through a float residue of about 1e-18).
- **Sortino** ``mean(x) / DD * sqrt(P)`` with the downside deviation over **all** periods
  ``DD = sqrt(mean(min(x, 0) ** 2))`` (Sortino & Price; empyrical ``sortino_ratio`` and
  quantstats ``sortino``). NaN with fewer than 2 periods or ``DD = 0`` (no period below the
  risk-free rate).
- **Max drawdown** ``min_t(E_t / max(1, E_0..E_t) - 1)`` of the equity ``E_t = prod_{s<=t}(1 +
  r_s)``: a negative fraction (0 when equity never falls below a previous peak), the
  starting equity 1 counting as a peak, so a series that falls from its first bar has a
  drawdown. Below -1 if equity went negative (a liquidated leveraged account).
- **Calmar** ``CAGR / |max drawdown|``; NaN when the max drawdown is 0.
- **Hit rate** per bar: the fraction of bars with ``r > 0`` among bars with ``r != 0`` (bars
  spent flat without costs say nothing about the strategy); NaN when every bar is 0.
- **Trades** (a DataFrame with a ``pnl`` column in quote currency, optionally ``return``):
  ``n_trades`` rows, ``win_rate`` the fraction with ``pnl > 0`` (NaN without trades),
  ``profit_factor`` gross profit / gross loss (inf when there are winners but no losers, NaN
  without trades or when every pnl is 0), ``avg_trade_return`` the mean of ``return``.
  Without ``trades``: ``n_trades = 0`` and the trade figures NaN.
- **Turnover** annualised: ``mean(turnover) * P`` where ``turnover`` is the per-bar traded
  notional over equity (1.0 = the whole equity traded once).
- **Exposure** the fraction of bars with a non-zero position; **avg_leverage** the mean of
  ``|position|`` (positions as signed fractions of equity).
- **Costs** (``fees_paid``, ``spread_paid``, ``slippage_paid``, ``funding_paid``,
  ``borrow_paid``) as fractions of the initial equity, passed through; ``total_costs`` is their
  sum (funding may be negative: received). NaN when ``costs`` is not given.
- **Benchmark** (``benchmark_returns``, same bars): its total return, CAGR, Sharpe and max
  drawdown by the same definitions. NaN when not given.

Inputs that are not given leave their figures NaN. ``Metrics.to_dict()`` turns NaN and
infinities into ``None`` so the result is strict JSON (``json.dumps(..., allow_nan=False)``);
``to_dict(json_safe=False)`` keeps them as floats. No computation emits numpy warnings.

Periods per year (:func:`periods_per_year_for`, :func:`periods_per_year_for_interval`), from a
bar spacing of ``m`` minutes:

- ``"24/7"`` (crypto): ``365 * 1440 / m`` (1h 8,760; 15m 35,040; 1d 365).
- ``"exchange"``: 252 trading days; daily bars 252 (``252 / days`` for d-day bars); intraday
  bars ``252 * 390 / m``, 390 minutes being the NYSE/Nasdaq regular session (9:30-16:00), so 1h
  gives 1,638 (approximate for bars that do not divide the session, e.g. Yahoo's 7 hourly bars
  a day).
- Either calendar: weekly-scale bars (7 to 27 days) ``52 * 7 / days`` (1w 52), month-scale
  bars ``12 / months`` (1M 12, quarterly 4, yearly 1).

References: W. F. Sharpe, "The Sharpe Ratio", J. Portfolio Management 21(1), 1994; F. Sortino
and L. Price, "Performance Measurement in a Downside Risk Framework", J. Investing 3(3), 1994;
T. Young, "Calmar Ratio: A Smoother Tool", Futures 20(1), 1991.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd

Calendar = Literal["auto", "24/7", "exchange"]

MINUTES_PER_DAY = 1440
DAYS_PER_YEAR_24_7 = 365
TRADING_DAYS_PER_YEAR = 252
SESSION_MINUTES = 390
"""Regular session of NYSE/Nasdaq, 9:30-16:00 America/New_York."""
WEEKS_PER_YEAR = 52
DAYS_PER_MONTH = 365.25 / 12

COST_KEYS: tuple[str, ...] = (
    "fees_paid",
    "spread_paid",
    "slippage_paid",
    "funding_paid",
    "borrow_paid",
)
"""Keys of the ``costs`` mapping of :func:`compute_metrics` (fractions of initial equity)."""

_NAN = float("nan")


@dataclass(frozen=True)
class Metrics:
    """Performance figures of one return series; see the module docstring for definitions.

    Fractions are plain fractions (0.1 = 10 %), ratios are annualised. ``NaN`` marks a figure
    that is undefined or whose input was not given; ``inf`` only appears in
    ``profit_factor`` (winners, no losers) and in ``cagr`` and ``calmar`` when the growth
    rate overflows a float (e.g. +100 % in two 15-minute bars, annualised).
    """

    n_periods: int
    periods_per_year: float
    risk_free: float
    total_return: float
    cagr: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    calmar: float
    hit_rate: float
    n_trades: int
    win_rate: float
    profit_factor: float
    avg_trade_return: float
    turnover: float
    exposure: float
    avg_leverage: float
    fees_paid: float
    spread_paid: float
    slippage_paid: float
    funding_paid: float
    borrow_paid: float
    total_costs: float
    benchmark_total_return: float
    benchmark_cagr: float
    benchmark_sharpe: float
    benchmark_max_drawdown: float

    def to_dict(self, *, json_safe: bool = True) -> dict[str, float | int | None]:
        """The figures as a dict of plain Python ``int``/``float`` in field order.

        Args:
            json_safe: map NaN and +-inf to ``None`` (strict JSON has neither); with
                ``False`` they stay floats.
        """
        out: dict[str, float | int | None] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, numbers.Integral):
                out[item.name] = int(value)
            else:
                number = float(value)
                out[item.name] = None if json_safe and not math.isfinite(number) else number
        return out


# ----------------------------------------------------------------------------- validation


def _check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number > 0, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _as_series_array(name: str, values: object) -> tuple[np.ndarray, pd.Index | None]:
    """A 1-D float64 copy of ``values`` and its index (``None`` for non-pandas input)."""
    if isinstance(values, pd.DataFrame):
        raise ValueError(f"{name} must be 1-D (a Series or an array), got a DataFrame")
    index = values.index if isinstance(values, pd.Series) else None
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, could not convert to float: {exc}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array, index


def _check_finite(name: str, array: np.ndarray, rule: str = "") -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite{rule}: {int(bad.sum())} NaN/inf value(s), first at "
            f"position {first} ({array[first]!r})"
        )


def _aligned(
    name: str, values: object, n: int, returns_index: pd.Index | None
) -> np.ndarray:
    """``values`` as float64 [n], finite, on the same index as ``returns`` when both have one."""
    array, index = _as_series_array(name, values)
    if len(array) != n:
        raise ValueError(f"{name} must have one value per return ({n}), got {len(array)}")
    if index is not None and returns_index is not None and not index.equals(returns_index):
        raise ValueError(f"{name} must have the same index as returns (one value per bar)")
    _check_finite(name, array)
    return array


# ------------------------------------------------------------------------------- helpers


def equity_curve(returns: object, initial: float = 1.0) -> np.ndarray:
    """Equity after each period, ``initial * cumprod(1 + returns)``.

    Args:
        returns: simple per-period returns, shape [n] (array or Series; finite).
        initial: starting equity (> 0), not included in the output.

    Returns:
        float64 array [n]; ``equity[t]`` is the equity at the end of period t.
    """
    array, _ = _as_series_array("returns", returns)
    _check_finite("returns", array)
    start = _check_positive_number("initial", initial)
    return start * np.cumprod(1.0 + array)


def drawdown_series(equity: object, *, initial: float | None = None) -> np.ndarray:
    """Drawdown from the running peak, ``equity[t] / max(initial, equity[:t+1]) - 1``.

    Args:
        equity: equity values, shape [n] (array or Series; finite). Pass a curve that starts
            with the initial equity (as ``BacktestResult.equity`` does), or pass ``initial``.
        initial: equity before ``equity[0]``, counted as a peak (the convention of docs/design.md:
            a series that falls from its first bar is in drawdown at once).

    Returns:
        float64 array [n] of values <= 0 (below -1 if equity went negative).

    Raises:
        ValueError: the first peak (``initial``, else ``equity[0]``) is not > 0, or
            non-finite values.
    """
    array, _ = _as_series_array("equity", equity)
    _check_finite("equity", array)
    if array.size == 0:
        return array
    if initial is not None:
        first_peak = max(_check_positive_number("initial", initial), float(array[0]))
    else:
        first_peak = float(array[0])
        if not first_peak > 0:
            raise ValueError(
                f"equity[0] must be > 0 to serve as the first peak, got {first_peak!r}; "
                "pass initial= for a curve that does not start at the initial equity"
            )
    return _drawdowns(array[None, :], np.array([first_peak]))[0]


def _drawdowns(curves: np.ndarray, first_peaks: np.ndarray) -> np.ndarray:
    """Drawdown of each row of ``curves`` ``[M, n]`` from its running peak, the row's
    ``first_peaks[m]`` counting as a peak: ``curve[t] / max(first_peak, curve[:t+1]) - 1``."""
    # In place on one fresh array (the same operations; fewer large temporaries).
    out = np.maximum(curves, first_peaks[:, None])
    np.maximum.accumulate(out, axis=1, out=out)
    np.divide(curves, out, out=out)
    return np.subtract(out, 1.0, out=out)


def _cagr(growth: float, n: int, periods_per_year: float) -> float:
    if growth <= 0.0:
        return -1.0
    try:
        return math.pow(growth, periods_per_year / n) - 1.0
    except OverflowError:
        return math.inf


def _core_rows(
    values: np.ndarray, periods_per_year: np.ndarray, rf_per_period: np.ndarray
) -> list[dict[str, float]]:
    """The return-series figures of each row of ``values`` ``[M, n]`` (finite, C-contiguous).

    Every reduction runs along the rows (``axis=1``) of a C-contiguous array, so row ``m``
    is summed and multiplied exactly as the 1-D row alone would be (numpy's pairwise
    summation sees the same inner loop): a batch of one row is the single-series case.
    ``periods_per_year`` and ``rf_per_period`` are float64 ``[M]``.
    """
    m, n = values.shape
    gross = 1.0 + values
    growth = np.prod(gross, axis=1)
    curves = np.cumprod(gross, axis=1)
    finite = np.isfinite(curves)
    if not finite.all():  # the equity curve check of drawdown_series
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        _check_finite("equity" if m == 1 else f"equity (row {row})", curves[row])
    # The starting equity 1 counts as a peak: max(1, curve[0]) is the first one.
    max_drawdown = _drawdowns(curves, np.maximum(curves[:, 0], 1.0)).min(axis=1)
    excess = values - rf_per_period[:, None]
    sqrt_ppy = np.sqrt(periods_per_year)
    undefined = np.full(m, _NAN)
    if n < 2:
        volatility = sharpe = sortino = undefined
    else:
        # Exact tests: the std of identical values can come out as ~1e-18 instead of 0.
        constant = values.max(axis=1) == values.min(axis=1)
        volatility = np.std(values, axis=1, ddof=1) * sqrt_ppy
        volatility[constant] = 0.0
        mean_excess = np.mean(excess, axis=1)
        dispersed = excess.max(axis=1) != excess.min(axis=1)
        sharpe = np.divide(mean_excess, np.std(excess, axis=1, ddof=1), out=undefined.copy(),
                           where=dispersed) * sqrt_ppy
        # Downside deviation over all periods (Sortino & Price); NaN where it is 0.
        shortfall = np.minimum(excess, 0.0)
        downside = np.sqrt(np.mean(np.square(shortfall, out=shortfall), axis=1))
        sortino = np.divide(mean_excess, downside, out=undefined.copy(),
                            where=downside != 0.0) * sqrt_ppy
    out = []
    for growth_m, ppy_m, drawdown, vol, sharpe_m, sortino_m in zip(
        growth.tolist(), periods_per_year.tolist(), max_drawdown.tolist(), volatility.tolist(),
        sharpe.tolist(), sortino.tolist(), strict=True,
    ):
        cagr = _cagr(growth_m, n, ppy_m)
        out.append({
            "total_return": growth_m - 1.0,
            "cagr": cagr,
            "annual_volatility": vol,
            "sharpe": sharpe_m,
            "sortino": sortino_m,
            "max_drawdown": drawdown,
            "calmar": cagr / abs(drawdown) if drawdown < 0.0 else _NAN,
        })
    return out


def _hit_rates(values: np.ndarray) -> list[float]:
    """Fraction of bars with ``r > 0`` among bars with ``r != 0``, per row of ``[M, n]``."""
    nonzero = np.count_nonzero(values, axis=1).tolist()
    positive = np.count_nonzero(values > 0, axis=1).tolist()
    return [float(p) / z if z else _NAN for p, z in zip(positive, nonzero, strict=True)]


def _turnover_rows(traded: np.ndarray, periods_per_year: np.ndarray) -> list[float]:
    """Annualised turnover ``mean(turnover) * P`` per row of ``[M, n]``."""
    return (np.mean(traded, axis=1) * periods_per_year).tolist()


def _position_rows(held: np.ndarray) -> tuple[list[float], list[float]]:
    """Exposure (fraction of bars with a position) and mean ``|position|`` per row."""
    n = held.shape[1]
    exposure = [float(count) / n for count in np.count_nonzero(held, axis=1).tolist()]
    return exposure, np.mean(np.abs(held), axis=1).tolist()


def _trade_figures(trades: object) -> dict[str, Any]:
    if trades is None:
        return {"n_trades": 0, "win_rate": _NAN, "profit_factor": _NAN, "avg_trade_return": _NAN}
    # A DataFrame (simulate's trade list) or a mapping of columns (the envs' trade arrays,
    # which skip building a DataFrame at every episode end).
    if not isinstance(trades, pd.DataFrame | Mapping):
        raise TypeError(
            "trades must be a DataFrame (or a mapping of columns) with a 'pnl' column, got "
            f"{type(trades).__name__}"
        )
    columns = list(trades.columns) if isinstance(trades, pd.DataFrame) else list(trades)
    if "pnl" not in columns:
        raise ValueError(
            f"trades must have a 'pnl' column (quote currency), got columns {columns}"
        )
    pnl, _ = _as_series_array("trades['pnl']", trades["pnl"])
    _check_finite("trades['pnl']", pnl)
    n = int(pnl.size)
    avg_return = _NAN
    if "return" in columns and n:
        trade_returns, _ = _as_series_array("trades['return']", trades["return"])
        _check_finite("trades['return']", trade_returns)
        avg_return = float(np.mean(trade_returns))
    if n == 0:
        return {"n_trades": 0, "win_rate": _NAN, "profit_factor": _NAN,
                "avg_trade_return": _NAN}
    gross_profit = float(pnl[pnl > 0].sum())
    gross_loss = float(-pnl[pnl < 0].sum())
    if gross_loss > 0:
        profit_factor = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else _NAN
    return {
        "n_trades": n,
        "win_rate": float(np.count_nonzero(pnl > 0)) / n,
        "profit_factor": profit_factor,
        "avg_trade_return": avg_return,
    }


def _cost_figures(costs: object) -> dict[str, float]:
    if costs is None:
        return {**dict.fromkeys(COST_KEYS, _NAN), "total_costs": _NAN}
    if not isinstance(costs, Mapping):
        raise TypeError(f"costs must be a mapping with keys {COST_KEYS}, got "
                        f"{type(costs).__name__}")
    missing = [key for key in COST_KEYS if key not in costs]
    unknown = [key for key in costs if key not in COST_KEYS]
    if missing or unknown:
        raise ValueError(
            f"costs must have exactly the keys {COST_KEYS} (fractions of initial equity); "
            f"missing {missing}, unknown {unknown}"
        )
    out: dict[str, float] = {}
    for key in COST_KEYS:
        value = costs[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
            float(value)
        ):
            raise ValueError(f"costs[{key!r}] must be a finite number, got {value!r}")
        out[key] = float(value)
    out["total_costs"] = math.fsum(out.values())
    return out


# ------------------------------------------------------------------------------ metrics


def compute_metrics(
    returns: object,
    *,
    periods_per_year: float,
    risk_free: float = 0.0,
    trades: pd.DataFrame | Mapping[str, object] | None = None,
    positions: object = None,
    turnover: object = None,
    costs: Mapping[str, float] | None = None,
    benchmark_returns: object = None,
) -> Metrics:
    """All performance figures of a return series (definitions in the module docstring).

    Args:
        returns: simple per-period returns of the account, shape [n] (array, list or Series).
        periods_per_year: bars per year (:func:`periods_per_year_for`), > 0.
        risk_free: annual risk-free rate (0.04 = 4 %), converted per period geometrically.
        trades: round trips, a DataFrame (or a mapping of equal-length 1-D arrays) with a
            ``pnl`` column (quote currency) and optionally ``return`` (fraction).
        positions: exposure held over each bar (signed fraction of equity), shape [n].
        turnover: traded notional over equity per bar, shape [n], >= 0.
        costs: ``fees_paid``, ``spread_paid``, ``slippage_paid``, ``funding_paid``,
            ``borrow_paid`` as fractions of initial equity (all five keys, nothing else).
        benchmark_returns: simple returns of a benchmark over the same bars, shape [n].

    Series arguments must share the index of ``returns`` when it is a Series.

    Returns:
        A :class:`Metrics`.

    Raises:
        ValueError: empty ``returns``, NaN or inf in any series, a length or index that does
            not match ``returns``, negative turnover, a bad ``periods_per_year`` or
            ``risk_free``, a ``trades`` frame without ``pnl``, ``costs`` with wrong keys.
        TypeError: arguments of the wrong kind.
    """
    ppy = _check_positive_number("periods_per_year", periods_per_year)
    rf = _check_risk_free(risk_free)
    values, index = _as_series_array("returns", returns)
    if values.size == 0:
        raise ValueError("returns must hold at least one period, got an empty series")
    _check_finite("returns", values, " (simple per-period returns; fill or drop gaps first)")
    n = int(values.size)
    # The series as a batch of one row: the figures come from the same row-wise code as
    # compute_metrics_batch (bit for bit the 1-D computation, see _core_rows).
    ppy_rows = np.array([ppy])
    rf_rows = np.array([_rf_per_period(rf, ppy)])

    core = _core_rows(values[None, :], ppy_rows, rf_rows)[0]
    hit_rate = _hit_rates(values[None, :])[0]

    turnover_annual = _NAN
    if turnover is not None:
        traded = _aligned("turnover", turnover, n, index)
        _check_turnover(traded)
        turnover_annual = _turnover_rows(traded[None, :], ppy_rows)[0]

    exposure = avg_leverage = _NAN
    if positions is not None:
        held = _aligned("positions", positions, n, index)
        (exposure,), (avg_leverage,) = _position_rows(held[None, :])

    bench = None
    if benchmark_returns is not None:
        bench_values = _aligned("benchmark_returns", benchmark_returns, n, index)
        bench = _core_rows(bench_values[None, :], ppy_rows, rf_rows)[0]

    return _assemble(n, ppy, rf, core, hit_rate, trades, turnover_annual, exposure,
                     avg_leverage, costs, bench)


def compute_metrics_batch(
    returns: object,
    *,
    periods_per_year: float | Sequence[float] | np.ndarray,
    risk_free: float = 0.0,
    trades: Sequence[pd.DataFrame | Mapping[str, object] | None] | None = None,
    positions: object = None,
    turnover: object = None,
    costs: Sequence[Mapping[str, float] | None] | None = None,
    benchmark_returns: object = None,
) -> list[Metrics]:
    """:func:`compute_metrics` of ``M`` return series of one length at once.

    Element ``m`` of the result equals ``compute_metrics(returns[m], periods_per_year=ppy[m],
    risk_free=risk_free, trades=trades[m], positions=positions[m], turnover=turnover[m],
    costs=costs[m], benchmark_returns=benchmark_returns[m])`` to the bit: both run the same
    row-wise code, and numpy reduces each row of a C-contiguous ``[M, n]`` array exactly as
    it reduces that row alone. One numpy call per figure for all ``M`` series instead of one
    per series: the batched envs compute the metrics of the episodes that end together this
    way.

    Args:
        returns: simple per-period returns, shape ``[M, n]`` (``M, n >= 1``).
        periods_per_year: bars per year, one number for every series or a sequence of ``M``.
        risk_free: annual risk-free rate, as in :func:`compute_metrics`.
        trades: ``None``, or ``M`` entries, each ``None`` or a trades DataFrame / mapping of
            columns as in :func:`compute_metrics`.
        positions, turnover, benchmark_returns: ``None`` or arrays ``[M, n]``.
        costs: ``None``, or ``M`` entries, each ``None`` or a costs mapping.

    Returns:
        A list of ``M`` :class:`Metrics`.

    Raises:
        ValueError: as :func:`compute_metrics` (naming the row where a series is at fault),
            a shape that is not ``[M, n]`` or a sequence that does not have ``M`` entries.
        TypeError: arguments of the wrong kind.
    """
    values = _as_rows("returns", returns)
    m, n = values.shape
    _check_finite_rows("returns", values, " (simple per-period returns; fill or drop gaps first)")
    if isinstance(periods_per_year, numbers.Real) and not isinstance(periods_per_year, bool):
        ppy_list = [_check_positive_number("periods_per_year", periods_per_year)] * m
    else:
        ppy_list = [_check_positive_number(f"periods_per_year[{i}]", value)
                    for i, value in enumerate(_entries("periods_per_year", periods_per_year, m))]
    rf = _check_risk_free(risk_free)
    trades_list = _entries("trades", trades, m) if trades is not None else [None] * m
    costs_list = _entries("costs", costs, m) if costs is not None else [None] * m
    ppy_rows = np.array(ppy_list)
    rf_rows = np.array([_rf_per_period(rf, ppy) for ppy in ppy_list])

    cores = _core_rows(values, ppy_rows, rf_rows)
    hit_rates = _hit_rates(values)

    turnovers = [_NAN] * m
    if turnover is not None:
        traded = _as_rows("turnover", turnover, (m, n))
        _check_finite_rows("turnover", traded)
        _check_turnover(traded)
        turnovers = _turnover_rows(traded, ppy_rows)

    exposures = avg_leverages = [_NAN] * m
    if positions is not None:
        held = _as_rows("positions", positions, (m, n))
        _check_finite_rows("positions", held)
        exposures, avg_leverages = _position_rows(held)

    benches: list[dict[str, float] | None] = [None] * m
    if benchmark_returns is not None:
        bench_values = _as_rows("benchmark_returns", benchmark_returns, (m, n))
        _check_finite_rows("benchmark_returns", bench_values)
        benches = list(_core_rows(bench_values, ppy_rows, rf_rows))

    out = []
    for i in range(m):
        try:
            out.append(_assemble(n, ppy_list[i], rf, cores[i], hit_rates[i], trades_list[i],
                                 turnovers[i], exposures[i], avg_leverages[i], costs_list[i],
                                 benches[i]))
        except (TypeError, ValueError) as exc:  # a bad trades or costs entry: name its row
            raise type(exc)(f"series {i}: {exc}") from None
    return out


def _check_risk_free(risk_free: object) -> float:
    if isinstance(risk_free, bool) or not isinstance(risk_free, numbers.Real):
        raise TypeError(f"risk_free must be an annual rate (a number > -1), got {risk_free!r}")
    rf = float(risk_free)
    if not (math.isfinite(rf) and rf > -1.0):
        raise ValueError(f"risk_free must be a finite annual rate > -1, got {risk_free!r}")
    return rf


def _rf_per_period(rf: float, periods_per_year: float) -> float:
    """The annual risk-free rate per period, geometrically (module docstring)."""
    return (1.0 + rf) ** (1.0 / periods_per_year) - 1.0


def _check_finite_rows(name: str, array: np.ndarray, rule: str = "") -> None:
    """:func:`_check_finite` for ``[M, n]`` arrays, naming the first row at fault."""
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        _check_finite(f"{name}[{row}]", array[row], rule)


def _check_turnover(traded: np.ndarray) -> None:
    if (traded < 0).any():
        raise ValueError(
            "turnover must be >= 0 (traded notional over equity), got a minimum of "
            f"{float(traded.min())!r}"
        )


def _as_rows(name: str, values: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``values`` as a C-contiguous float64 ``[M, n]`` array (``shape`` when given; not
    copied when it already is one: nothing here writes into it)."""
    try:
        array = np.asarray(values, dtype=np.float64, order="C")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, could not convert to float: {exc}") from None
    if shape is None:
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"{name} must be 2-D [M series, n periods] with M, n >= 1, got "
                             f"shape {array.shape}")
    elif array.shape != shape:
        raise ValueError(f"{name} must have the shape of returns {shape}, got {array.shape}")
    return array


def _entries(name: str, values: object, m: int) -> list[Any]:
    """``values`` as a list of ``m`` entries, one per series."""
    if isinstance(values, str | bytes | Mapping | pd.DataFrame) or not isinstance(
        values, Sequence | np.ndarray
    ):
        raise TypeError(f"{name} must be a sequence with one entry per series ({m}), got "
                        f"{type(values).__name__}")
    entries = list(values)
    if len(entries) != m:
        raise ValueError(f"{name} must have one entry per series ({m}), got {len(entries)}")
    return entries


def _assemble(
    n: int,
    ppy: float,
    rf: float,
    core: Mapping[str, float],
    hit_rate: float,
    trades: object,
    turnover_annual: float,
    exposure: float,
    avg_leverage: float,
    costs: object,
    bench: Mapping[str, float] | None,
) -> Metrics:
    """The :class:`Metrics` of one series from its figures (validating trades and costs)."""
    if bench is None:
        bench = dict.fromkeys(("total_return", "cagr", "sharpe", "max_drawdown"), _NAN)
    return Metrics(
        n_periods=n,
        periods_per_year=ppy,
        risk_free=rf,
        **core,
        hit_rate=hit_rate,
        **_trade_figures(trades),
        turnover=turnover_annual,
        exposure=exposure,
        avg_leverage=avg_leverage,
        **_cost_figures(costs),
        benchmark_total_return=bench["total_return"],
        benchmark_cagr=bench["cagr"],
        benchmark_sharpe=bench["sharpe"],
        benchmark_max_drawdown=bench["max_drawdown"],
    )


# --------------------------------------------------------------------- periods per year


def _periods_per_year(minutes: float, calendar: str) -> float:
    """Bars per year for a bar spacing of ``minutes`` on ``calendar`` ("24/7"/"exchange")."""
    days = minutes / MINUTES_PER_DAY
    if days >= 27.5:  # month-scale bars: calendar months, whatever the market
        months = max(1, round(days / DAYS_PER_MONTH))
        return 12.0 / months
    if days >= 6.5:  # week-scale bars (a 5-day trading week is a week too)
        return WEEKS_PER_YEAR * 7.0 / round(days)
    if calendar == "24/7":
        return DAYS_PER_YEAR_24_7 * MINUTES_PER_DAY / minutes
    if minutes < MINUTES_PER_DAY:
        return TRADING_DAYS_PER_YEAR * SESSION_MINUTES / minutes
    return TRADING_DAYS_PER_YEAR / days


def _check_calendar(calendar: object, allowed: tuple[str, ...]) -> str:
    if calendar not in allowed:
        raise ValueError(f"calendar must be one of {allowed}, got {calendar!r}")
    return str(calendar)


def periods_per_year_for_interval(
    interval: str, calendar: Literal["24/7", "exchange"]
) -> float:
    """Bars per year of a bar interval on a calendar.

    Args:
        interval: any spelling :func:`tradezoo.data.parse_interval` accepts ("1h", "60",
            "1d", "D", "1w", "1M", ...).
        calendar: ``"24/7"`` (crypto) or ``"exchange"`` (252 sessions of 390 minutes).

    Returns:
        e.g. ``("1h", "24/7") -> 8760``, ``("15m", "24/7") -> 35040``,
        ``("1d", "exchange") -> 252``, ``("1h", "exchange") -> 1638``, ``("1w", _) -> 52``,
        ``("1M", _) -> 12``.
    """
    from tradezoo.data.intervals import parse_interval

    cal = _check_calendar(calendar, ("24/7", "exchange"))
    parsed = parse_interval(interval)
    if parsed.minutes is None:  # calendar month
        return 12.0
    return _periods_per_year(float(parsed.minutes), cal)


def _infer_calendar(index: pd.DatetimeIndex, attrs: Mapping[str, Any], minutes: float) -> str:
    """The calendar of a bar index; rules in :func:`periods_per_year_for`."""
    hinted = attrs.get("calendar")
    if hinted in ("24/7", "exchange"):
        return str(hinted)
    if str(attrs.get("source") or "").startswith("bybit"):
        return "24/7"
    utc = index.tz_convert("UTC") if index.tz is not None else index
    weekdays = set(np.unique(np.asarray(utc.day_of_week)).tolist())
    if len(weekdays) >= 6 or {5, 6} <= weekdays:
        return "24/7"
    span = index[-1] - index[0]
    if span >= pd.Timedelta(days=7):
        return "exchange"  # a whole week of bars and no weekend
    gaps = np.asarray((index[1:] - index[:-1]) / pd.Timedelta(minutes=1), dtype=np.float64)
    overnight = minutes < MINUTES_PER_DAY and bool((gaps > max(240.0, 2.0 * minutes)).any())
    return "exchange" if overnight else "24/7"


def periods_per_year_for(index: object, calendar: Calendar = "auto") -> float:
    """Bars per year of a bar index, from its median spacing and its calendar.

    Args:
        index: a DatetimeIndex of bar open times, or a bars frame / Series (its index, and
            its ``attrs`` for ``calendar="auto"``). At least 2 strictly increasing stamps.
        calendar: ``"24/7"``, ``"exchange"`` or ``"auto"``. ``"auto"`` takes, in order:
            ``attrs["calendar"]`` if it is ``"24/7"`` or ``"exchange"``; ``"24/7"`` for a
            ``bybit*`` ``attrs["source"]``; ``"24/7"`` when the stamps (UTC) fall on 6 or 7
            distinct weekdays or on both a Saturday and a Sunday (an exchange trades at most
            5-6 days a week, and a timezone shift moves its days by at most one); otherwise
            ``"exchange"`` when the index spans at least 7 days (a week without a weekend
            bar); for a shorter index, ``"exchange"`` only for intraday bars with a session
            break (a gap longer than 4 h and 2 bars), else ``"24/7"``.

    Returns:
        Bars per year (module docstring): 1h 24/7 8,760; 15m 24/7 35,040; 1d exchange 252.

    Raises:
        TypeError: not a DatetimeIndex (or a frame/Series with one).
        ValueError: fewer than 2 stamps, stamps not strictly increasing, unknown calendar.
    """
    cal = _check_calendar(calendar, ("auto", "24/7", "exchange"))
    attrs: Mapping[str, Any] = {}
    if isinstance(index, pd.DataFrame | pd.Series):
        attrs = index.attrs
        index = index.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(
            "index must be a DatetimeIndex (or a bars frame/Series with one), got "
            f"{type(index).__name__}"
        )
    if len(index) < 2:
        raise ValueError(f"index must hold at least 2 timestamps to infer the bar spacing, "
                         f"got {len(index)}")
    gaps = np.asarray((index[1:] - index[:-1]) / pd.Timedelta(minutes=1), dtype=np.float64)
    if not (gaps > 0).all():
        first = int(np.flatnonzero(~(gaps > 0))[0]) + 1
        raise ValueError(
            f"index must be strictly increasing; position {first} ({index[first]}) is not "
            "after the previous timestamp"
        )
    minutes = float(np.median(gaps))
    if cal == "auto":
        cal = _infer_calendar(index, attrs, minutes)
    return _periods_per_year(minutes, cal)
