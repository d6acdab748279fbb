"""``simulate``: replay a series of target positions through the one execution engine.

The backtester is a thin loop around :func:`~tradezoo.backtest.execution.execute_step`, the
same function the environments call, fed with Python floats. It does no accounting of its own:
every unit, fill price, cost line and equity value comes out of ``execute_step``. What it adds
is bookkeeping: the per-bar series, the fills, the round-trip trades table, the metrics and the
buy-and-hold benchmark.

Timeline (docs/design.md, "Time and execution"): ``positions[t]`` is the target exposure (signed
fraction of equity) decided at the close of bar t. With ``fill="next_open"`` it fills at
``open[t+1]``; with ``fill="close"`` (optimistic, documented only) at ``close[t]``. Either way
step t is marked at ``close[t+1]`` and booked on bar t+1::

    equity[0]   = initial_equity                      (at close[0], flat)
    equity[t+1] = execute_step(units[t], equity[t], positions[t], ...).equity

The decision at the last bar has no next bar to fill on and is ignored.

Conventions the spec left open (also in the docstrings below):

- ``NaN`` in ``positions`` keeps the previous target; before the first finite target the
  target is 0 (flat).
- ``rebalance="on_change"`` trades when the target differs from the previous target (the
  first decision trades when it is non-zero); ``"every_bar"`` trades at every step.
- Bankruptcy: once equity is marked at or below 0 the account is liquidated at the next fill
  (target 0) and trades no more; ``BacktestResult.bankrupt_at`` names the bar.
- Leverage: a target whose absolute value exceeds the cost model's ``max_leverage`` is refused
  (``ValueError`` naming the bar and both values).
- Liquidation (cost models with ``maintenance_margin > 0``): the engine closes a position
  whose bar reaches its liquidation price (:mod:`tradezoo.backtest.execution`). Each event is
  a row of ``BacktestResult.liquidations``; the account is then flat, its standing target is
  reset to 0, and the next decision with a non-zero target opens a new position. A
  liquidation that leaves equity at 0 is a bankruptcy (above). The liquidation is not a row
  of ``fills`` (the strategy's orders, each with its own costs); the ``costs`` lines include
  it.
- A trade is a maximal run of bars holding a position of one sign. Resizing (``"every_bar"``,
  or a target moving from 1 to 0.5) stays in the same trade; going flat closes it; a reversal
  closes it and opens the opposite one on the same fill.
- Trade P&L (quote currency) is the sum of the equity changes of the steps attributed to the
  trade, so it is net of every cost the trade caused: entry and exit fees, spread and slippage,
  funding and borrow while it was held. On a reversal step the closing trade gets the old
  position's gap ``units_old * (reference - close[t])``, the funding charged on the old
  position at the stamp (``fill="next_open"``) and the share ``|units_old| / |traded_units|``
  of the fill's fee, spread and slippage; the opening trade gets the rest of the step's equity
  change. Hence, exactly up to float rounding, ``sum(trades.pnl) == equity[-1] - equity[0]``
  (a trade open at the end is closed at the last close in the trades table only, without an
  exit cost, so its ``pnl`` is its unrealised P&L). A liquidated trade ends in the bar of its
  liquidation (``exit_time``), at the liquidation's fill price, with ``status``
  ``"liquidated"``; if the step's order had reversed the position, the trade it closed ends on
  that fill.
- Trade return is ``pnl / equity at entry`` (equity marked at the close of the entry decision
  bar), so returns of leveraged and fractional trades are on the account's scale.
- Trade columns: ``entry_time``/``exit_time`` are fill bars (the bar whose open filled with
  ``fill="next_open"``, the decision bar with ``fill="close"``; the last bar for a trade still
  open), ``entry_price``/``exit_price`` the fill prices including spread and slippage (the
  last close for a trade still open), ``units`` the absolute units opened at entry (resizes
  inside the trade are in ``fills``), ``bars_held`` the number of marks (bar closes) the
  trade spans, ``status`` ``"closed"`` or ``"open"``.
- The buy-and-hold benchmark is ``positions = 1`` on the same bars through the same engine,
  cost model and fill rule: it buys all-in at the first fill opportunity (``open[1]``, or
  ``close[0]`` with ``fill="close"``), pays that entry's costs and any funding or borrow while
  held, and is never sold (no exit cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import (
    MIN_BAR_NOTIONAL,
    ExecutionRates,
    Fill,
    execute_step,
    execution_rates,
)

Rebalance = Literal["on_change", "every_bar"]

COST_COLUMNS: tuple[str, ...] = (
    "fee",
    "spread_cost",
    "slippage_cost",
    "funding_paid",
    "borrow_paid",
)
"""Columns of :attr:`BacktestResult.costs`, quote currency, positive when paid."""

FILL_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "decision_time",
    "side",
    "units",
    "fill_price",
    "notional",
    "fee",
    "spread",
    "slippage",
    "target",
    "units_after",
)
"""Columns of :attr:`BacktestResult.fills`."""

TRADE_COLUMNS: tuple[str, ...] = (
    "entry_time",
    "exit_time",
    "side",
    "entry_price",
    "exit_price",
    "units",
    "pnl",
    "return",
    "bars_held",
    "status",
)
"""Columns of :attr:`BacktestResult.trades`."""

LIQUIDATION_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "side",
    "price",
    "units",
    "equity_after",
    "fee",
    "spread",
    "slippage",
)
"""Columns of :attr:`BacktestResult.liquidations`."""


@dataclass
class BacktestResult:
    """Everything :func:`simulate` produces. Series are indexed by the bars' timestamps.

    Attributes:
        equity: account equity marked at each bar's close, quote currency, shape [n];
            ``equity[0]`` is the initial equity (flat at ``close[0]``).
        returns: simple per-bar returns ``equity[t] / equity[t-1] - 1``, shape [n-1] (on
            ``index[1:]``; the first bar has no return). 0 after a bankruptcy.
        positions: exposure actually held over each bar, ``units * close / equity`` (signed
            fraction of equity, marked at the close), shape [n]; 0 where equity <= 0.
        units: signed base units held over each bar (after that bar's fill), shape [n].
        position_pnl: the engine's position P&L of the step booked on each bar, shape [n].
        turnover: traded notional of the step booked on each bar over the equity at its
            decision, shape [n].
        fills: one row per step that traded (columns :data:`FILL_COLUMNS`); ``timestamp`` is
            the fill bar (``t+1`` with ``fill="next_open"``, ``t`` with ``fill="close"``),
            ``units`` and ``notional`` are absolute, ``side`` is ``"buy"`` or ``"sell"``,
            ``fee``/``spread``/``slippage`` are in quote currency.
        costs: per-bar cost lines (columns :data:`COST_COLUMNS`), quote currency, shape [n, 5].
        trades: round trips (columns :data:`TRADE_COLUMNS`), see the module docstring.
        liquidations: one row per liquidation (columns :data:`LIQUIDATION_COLUMNS`):
            ``timestamp`` the bar in which it happened, ``side`` of the position closed
            (``"long"``/``"short"``), ``price`` its fill price (spread and slippage included),
            ``units`` closed (absolute), ``equity_after`` the equity marked after it, and its
            ``fee``, ``spread`` and ``slippage`` (quote currency).
        metrics: :class:`~tradezoo.backtest.metrics.Metrics` of the strategy.
        benchmark_equity: buy-and-hold equity on the same bars and costs, shape [n].
        benchmark_returns: its simple returns, shape [n-1].
        benchmark_metrics: its metrics.
        close: the bars' close prices (for plots), shape [n].
        config: the settings of the run (symbol, interval, costs, fill, ...), JSON-safe.
        bankrupt_at: the bar at whose close equity first fell to <= 0, or ``None``.
    """

    equity: pd.Series
    returns: pd.Series
    positions: pd.Series
    units: pd.Series
    position_pnl: pd.Series
    turnover: pd.Series
    fills: pd.DataFrame
    costs: pd.DataFrame
    trades: pd.DataFrame
    metrics: Any
    benchmark_equity: pd.Series
    benchmark_returns: pd.Series
    benchmark_metrics: Any
    close: pd.Series
    config: dict[str, Any] = field(default_factory=dict)
    bankrupt_at: pd.Timestamp | None = None
    liquidations: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(LIQUIDATION_COLUMNS)))

    @property
    def cost_totals(self) -> dict[str, float]:
        """Each cost line summed over the run, quote currency."""
        return {name: float(self.costs[name].sum()) for name in COST_COLUMNS}

    def summary(self) -> str:
        """A few human-readable lines: span, final equity, the key metrics, costs."""
        cfg = self.config
        m = self.metrics.to_dict()
        b = self.benchmark_metrics.to_dict()

        def pct(value: Any) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:+.2%}"

        def num(value: Any) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"

        totals = self.cost_totals
        lines = [
            f"{cfg.get('symbol') or '?'} {cfg.get('interval') or '?'} "
            f"{cfg.get('start')} .. {cfg.get('end')} ({cfg.get('bars')} bars), "
            f"fill={cfg.get('fill')}, rebalance={cfg.get('rebalance')}",
            f"equity {cfg.get('initial_equity'):g} -> {float(self.equity.iloc[-1]):.6g}; "
            f"total return {pct(m.get('total_return'))} "
            f"(buy & hold {pct(b.get('total_return'))})",
            f"CAGR {pct(m.get('cagr'))}, Sharpe {num(m.get('sharpe'))}, "
            f"max drawdown {pct(m.get('max_drawdown'))}, "
            f"{len(self.fills)} fills, {len(self.trades)} trades",
            "costs: " + ", ".join(f"{name} {value:.6g}" for name, value in totals.items()),
        ]
        if len(self.liquidations):
            first = self.liquidations["timestamp"].iloc[0]
            lines.append(f"LIQUIDATED {len(self.liquidations)} time(s), first at {first}")
        if self.bankrupt_at is not None:
            lines.append(f"BANKRUPT at {self.bankrupt_at} (liquidated at the next fill)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class _Path:
    """Per-step outputs of one run of the engine over the bars (arrays of length n)."""

    def __init__(self, n: int) -> None:
        self.units = np.zeros(n)
        self.equity = np.zeros(n)
        self.traded = np.zeros(n)
        self.fill_price = np.zeros(n)
        self.fee = np.zeros(n)
        self.spread = np.zeros(n)
        self.slippage = np.zeros(n)
        self.funding = np.zeros(n)
        self.borrow = np.zeros(n)
        self.pnl = np.zeros(n)
        self.liq_units = np.zeros(n)
        self.liq_price = np.zeros(n)
        self.liq_fee = np.zeros(n)
        self.liq_spread = np.zeros(n)
        self.liq_slippage = np.zeros(n)
        self.target = np.zeros(n)
        self.bankrupt_step: int | None = None


def _run_engine(
    targets: list[float],
    market: dict[str, list[float]],
    *,
    every_bar: bool,
    rates: ExecutionRates,
    initial_equity: float,
) -> _Path:
    """Loop ``execute_step`` over the bars with Python floats. Row t+1 holds step t."""
    opens, closes = market["open"], market["close"]
    highs, lows = market["high"], market["low"]
    funding, range_frac, notional = market["funding_rate"], market["range_frac"], market["notional"]
    n = len(closes)
    path = _Path(n)
    rows: list[tuple[float, ...]] = []  # step t: StepFill fields + target
    units, equity, previous_target = 0.0, float(initial_equity), 0.0
    bankrupt = False
    path.equity[0] = equity
    for t in range(n - 1):
        target = targets[t]
        if target != target:  # NaN keeps the previous target
            target = previous_target
        if bankrupt:
            target, trade = 0.0, units != 0.0
        else:
            trade = every_bar or target != previous_target
        step = execute_step(
            units,
            equity,
            target,
            trade,
            closes[t],
            opens[t + 1],
            closes[t + 1],
            funding[t + 1],
            range_frac[t],
            notional[t],
            rates,
            None,
            highs[t + 1],
            lows[t + 1],
        )
        rows.append((*step, target))
        # After a liquidation the account is flat: a non-zero target re-opens a position.
        previous_target = target if step.liquidated_units == 0.0 else 0.0
        units, equity = step.units, step.equity
        if not bankrupt and equity <= 0.0:
            bankrupt = True
            path.bankrupt_step = t
    if n > 1:
        table = np.array(rows, dtype=float)  # [n-1, 16]
        (
            path.units[1:],
            path.equity[1:],
            path.traded[1:],
            path.fill_price[1:],
            path.fee[1:],
            path.spread[1:],
            path.slippage[1:],
            path.funding[1:],
            path.borrow[1:],
            path.pnl[1:],
            path.liq_units[1:],
            path.liq_price[1:],
            path.liq_fee[1:],
            path.liq_spread[1:],
            path.liq_slippage[1:],
            path.target[1:],
        ) = table.T
    return path


def _trades_table(
    path: _Path, market: dict[str, list[float]], index: pd.DatetimeIndex, *, next_open: bool
) -> pd.DataFrame:
    """Round trips from the units path; see the module docstring for the P&L attribution."""
    closes = market["close"]
    opens = market["open"]
    n = len(closes)
    units, equity = path.units, path.equity
    records: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None

    def fill_time(step: int) -> pd.Timestamp:
        return index[step + 1] if next_open else index[step]

    def open_trade(step: int, new_units: float, pnl: float) -> dict[str, Any]:
        return {
            "entry_time": fill_time(step),
            "side": "long" if new_units > 0 else "short",
            "entry_price": float(path.fill_price[step + 1]),
            "units": abs(float(new_units)),
            "pnl": pnl,
            "entry_equity": float(equity[step]),
            "entry_step": step,
        }

    def close_trade(
        trade: dict[str, Any], step: int, exit_time: Any, price: float, status: str
    ) -> None:
        trade.update(
            exit_time=exit_time,
            exit_price=price,
            bars_held=step - trade["entry_step"],
            status=status,
        )
        records.append(trade)

    for step in range(n - 1):
        liquidated = float(path.liq_units[step + 1])
        # Units after the step's fill (a liquidation then closes them).
        old, new = float(units[step]), float(units[step + 1]) - liquidated
        change = float(equity[step + 1] - equity[step])
        old_sign = (old > 0) - (old < 0)
        new_sign = (new > 0) - (new < 0)
        if old_sign == 0 and new_sign == 0:
            continue
        if old_sign == new_sign:
            assert current is not None
            current["pnl"] += change
        elif old_sign == 0:
            current = open_trade(step, new, change)
        elif new_sign == 0:
            assert current is not None
            current["pnl"] += change
            close_trade(current, step, fill_time(step), float(path.fill_price[step + 1]), "closed")
            current = None
        else:  # reversal: split the step between the closing and the opening trade
            assert current is not None
            reference = opens[step + 1] if next_open else closes[step]
            closing_share = abs(old) / abs(float(path.traded[step + 1]))
            row = step + 1
            fill_costs = float(path.fee[row] + path.spread[row] + path.slippage[row]
                               - (path.liq_fee[row] + path.liq_spread[row]
                                  + path.liq_slippage[row]))
            old_part = old * (reference - closes[step]) - closing_share * fill_costs
            if next_open:  # funding at the stamp is charged on the old position
                old_part -= float(path.funding[step + 1])
            current["pnl"] += old_part
            close_trade(current, step, fill_time(step), float(path.fill_price[step + 1]), "closed")
            current = open_trade(step, new, change - old_part)
        if liquidated:  # the position after the fill was liquidated inside bar step + 1
            assert current is not None
            close_trade(current, step, index[step + 1], float(path.liq_price[step + 1]),
                        "liquidated")
            current = None
    if current is not None:
        close_trade(current, n - 1, index[n - 1], float(closes[n - 1]), "open")

    frame = pd.DataFrame.from_records(records, columns=[*TRADE_COLUMNS, "entry_equity"])
    if len(frame):
        frame["return"] = frame["pnl"] / frame["entry_equity"]
    frame = frame.drop(columns="entry_equity")
    frame = frame.astype(
        {
            "entry_price": "float64",
            "exit_price": "float64",
            "units": "float64",
            "pnl": "float64",
            "return": "float64",
            "bars_held": "int64",
            "side": "object",
            "status": "object",
        }
    )
    if not len(frame):
        frame["entry_time"] = pd.DatetimeIndex([], tz="UTC")
        frame["exit_time"] = pd.DatetimeIndex([], tz="UTC")
    return frame


def _fills_table(path: _Path, index: pd.DatetimeIndex, *, next_open: bool) -> pd.DataFrame:
    steps = np.flatnonzero(path.traded[1:] != 0.0)  # step t is stored in row t+1
    rows = steps + 1
    traded = path.traded[rows]
    fill_bar = rows if next_open else steps
    return pd.DataFrame(
        {
            "timestamp": index[fill_bar],
            "decision_time": index[steps],
            "side": np.where(traded > 0, "buy", "sell").astype(object),
            "units": np.abs(traded),
            "fill_price": path.fill_price[rows],
            "notional": np.abs(traded) * path.fill_price[rows],
            # The order's own costs: the step's lines less a liquidation's (0 when none).
            "fee": path.fee[rows] - path.liq_fee[rows],
            "spread": path.spread[rows] - path.liq_spread[rows],
            "slippage": path.slippage[rows] - path.liq_slippage[rows],
            "target": path.target[rows],
            "units_after": path.units[rows],
        },
        columns=list(FILL_COLUMNS),
    )


def _liquidations_table(path: _Path, index: pd.DatetimeIndex) -> pd.DataFrame:
    """One row per liquidation (:data:`LIQUIDATION_COLUMNS`); step t is stored in row t+1,
    the bar in which the liquidation happened."""
    rows = np.flatnonzero(path.liq_units != 0.0)
    closed = path.liq_units[rows]  # the liquidation's trade: -units held
    return pd.DataFrame(
        {
            "timestamp": index[rows],
            "side": np.where(closed < 0, "long", "short").astype(object),
            "price": path.liq_price[rows],
            "units": np.abs(closed),
            "equity_after": path.equity[rows],
            "fee": path.liq_fee[rows],
            "spread": path.liq_spread[rows],
            "slippage": path.liq_slippage[rows],
        },
        columns=list(LIQUIDATION_COLUMNS),
    )


def _simple_returns(equity: np.ndarray) -> np.ndarray:
    """``equity[t] / equity[t-1] - 1``; 0 where the previous equity is gone (<= 0)."""
    previous = equity[:-1]
    alive = previous > 0
    safe = np.where(alive, previous, 1.0)
    return np.where(alive, equity[1:] / safe - 1.0, 0.0)


def _account_series(
    path: _Path, close: np.ndarray, initial_equity: float
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Exposure [n], turnover [n] and cost totals as fractions of initial equity of a run.

    Exposure is ``units * close / equity`` at each close; turnover of the step booked on row
    t+1 is its traded notional at the fill price over the equity at the decision (row t).
    Both are 0 where that equity is gone (<= 0), where they are undefined.
    """
    alive = path.equity > 0
    safe_equity = np.where(alive, path.equity, 1.0)
    exposure = np.where(alive, path.units * close / safe_equity, 0.0)
    turnover = np.zeros(len(close))
    turnover[1:] = np.where(
        alive[:-1], np.abs(path.traded[1:]) * path.fill_price[1:] / safe_equity[:-1], 0.0
    )
    cost_fractions = {
        "fees_paid": float(path.fee.sum()) / initial_equity,
        "spread_paid": float(path.spread.sum()) / initial_equity,
        "slippage_paid": float(path.slippage.sum()) / initial_equity,
        "funding_paid": float(path.funding.sum()) / initial_equity,
        "borrow_paid": float(path.borrow.sum()) / initial_equity,
    }
    return exposure, turnover, cost_fractions


def default_costs(bars: pd.DataFrame) -> CostModel:
    """The cost model for the bars' ``attrs["source"]``: Bybit linear for ``bybit*`` sources,
    equities for ``yahoo``.

    Raises:
        ValueError: for any other source (a user CSV could be crypto or stocks, so guessing
            would silently charge the wrong costs); pass ``costs=`` explicitly.
    """
    return CostModel.for_source(bars.attrs.get("source"), what="simulate: bars source")


def _target_array(positions: Any, index: pd.DatetimeIndex) -> np.ndarray:
    """Validate ``positions`` against the bars and return float64 targets [n] (NaN kept)."""
    n = len(index)
    if isinstance(positions, pd.DataFrame):
        raise TypeError(
            "simulate: positions must be a 1-D Series or array of target exposures, "
            f"got a DataFrame with columns {list(positions.columns)}"
        )
    if isinstance(positions, pd.Series):
        if len(positions) != n or not positions.index.equals(index):
            extra = positions.index.difference(index)
            missing = index.difference(positions.index)
            detail = (
                f"{len(missing)} bar timestamps missing (first {missing[0]})"
                if len(missing)
                else f"{len(extra)} timestamps not in the bars (first {extra[0]})"
                if len(extra)
                else "same timestamps in a different order or with duplicates"
            )
            raise ValueError(
                "simulate: positions index must equal the bars index (one target per bar, "
                f"same timestamps, same order); got {len(positions)} entries for {n} bars: "
                f"{detail}. Reindex with positions.reindex(bars.index) (NaN keeps the "
                "previous target)"
            )
        try:  # nullable dtypes: pd.NA becomes NaN (keep the previous target)
            values = positions.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            values = positions.to_numpy()
    else:
        values = np.asarray(positions)
    if values.ndim != 1:
        raise ValueError(
            f"simulate: positions must be 1-D (one target per bar), got shape {values.shape}"
        )
    if len(values) != n:
        raise ValueError(
            f"simulate: positions has length {len(values)} but the bars have {n} rows; "
            "give one target exposure per bar (NaN keeps the previous target)"
        )
    try:
        targets = values.astype("float64")
    except (TypeError, ValueError):
        raise TypeError(
            f"simulate: positions must be numeric target exposures, got dtype {values.dtype}"
        ) from None
    infinite = np.isinf(targets)
    if infinite.any():
        first = int(np.flatnonzero(infinite)[0])
        raise ValueError(
            f"simulate: positions must be finite or NaN (NaN keeps the previous target); "
            f"{int(infinite.sum())} infinite values, first at {index[first]} (row {first})"
        )
    return targets


def _validated(bars: Any) -> pd.DataFrame:
    if not isinstance(bars, pd.DataFrame):
        raise TypeError(
            f"simulate: bars must be a bars DataFrame (see tradezoo.data.load_bars), got "
            f"{type(bars).__name__}"
        )
    if bars.attrs.get("validated"):
        return bars
    from tradezoo.data.datasets import load_bars

    attrs = dict(bars.attrs)
    frame, _report = load_bars(bars, symbol=attrs.get("symbol"), interval=attrs.get("interval"))
    # load_bars re-normalises a frame with source="frame" and drops the other attrs; keep the
    # caller's descriptive attrs (the source picks the default cost model and calendar).
    for key in ("symbol", "source", "dataset", "path", "timezone", "calendar"):
        if attrs.get(key) is not None:
            frame.attrs[key] = attrs[key]
    return frame


@dataclass
class _Inputs:
    """Validated inputs of one replay (shared by :func:`simulate` and
    :func:`simulate_equity`)."""

    frame: pd.DataFrame
    index: pd.DatetimeIndex
    targets: np.ndarray
    costs: CostModel
    periods_per_year: float
    rates: ExecutionRates
    close: np.ndarray
    market: dict[str, list[float]]


def _inputs(
    bars: Any,
    positions: Any,
    *,
    costs: CostModel | None,
    fill: Fill,
    initial_equity: float,
    rebalance: Rebalance,
    periods_per_year: float | None,
    risk_free: float,
) -> _Inputs:
    """Check :func:`simulate`'s arguments and lay the bars out for the engine."""
    from tradezoo.backtest.metrics import periods_per_year_for

    if fill not in ("next_open", "close"):
        raise ValueError(f"simulate: fill must be 'next_open' or 'close', got {fill!r}")
    if rebalance not in ("on_change", "every_bar"):
        raise ValueError(
            f"simulate: rebalance must be 'on_change' or 'every_bar', got {rebalance!r}"
        )
    if (
        isinstance(initial_equity, bool)
        or not isinstance(initial_equity, int | float | np.floating | np.integer)
        or not math.isfinite(initial_equity)
        or initial_equity <= 0
    ):
        raise ValueError(
            f"simulate: initial_equity must be a finite number > 0, got {initial_equity!r}"
        )
    if not isinstance(risk_free, int | float | np.floating) or not math.isfinite(risk_free):
        raise ValueError(f"simulate: risk_free must be a finite annual rate, got {risk_free!r}")
    if costs is not None and not isinstance(costs, CostModel):
        raise TypeError(f"simulate: costs must be a CostModel or None, got {type(costs).__name__}")
    frame = _validated(bars)
    n = len(frame)
    if n < 2:
        raise ValueError(
            f"simulate: bars must have at least 2 rows (a decision and a bar to fill on), got {n}"
        )
    index = frame.index
    targets = _target_array(positions, index)
    if costs is None:
        costs = default_costs(frame)
    over = np.abs(targets) > costs.max_leverage  # NaN (keep the target) is never over
    if over.any():
        first = int(np.flatnonzero(over)[0])
        costs.check_exposure(
            float(targets[first]),
            what=f"simulate: positions at {index[first]} (row {first}; {int(over.sum())} "
                 "targets over the limit)",
        )
    if periods_per_year is None:
        periods_per_year = float(periods_per_year_for(frame))  # uses attrs['source'] too
    elif not (
        isinstance(periods_per_year, int | float | np.floating | np.integer)
        and math.isfinite(periods_per_year)
        and periods_per_year > 0
    ):
        raise ValueError(
            f"simulate: periods_per_year must be a finite number > 0, got {periods_per_year!r}"
        )
    rates = execution_rates(costs, fill=fill, periods_per_year=float(periods_per_year))

    close = frame["close"].to_numpy(dtype="float64")
    high = frame["high"].to_numpy(dtype="float64")
    low = frame["low"].to_numpy(dtype="float64")
    volume = frame["volume"].to_numpy(dtype="float64")
    funding = (
        frame["funding_rate"].to_numpy(dtype="float64")
        if "funding_rate" in frame.columns
        else np.zeros(n)
    )
    # Python lists: indexing a list yields Python floats, the engine's scalar fast path.
    market = {
        "open": frame["open"].to_numpy(dtype="float64").tolist(),
        "close": close.tolist(),
        "high": high.tolist(),
        "low": low.tolist(),
        "funding_rate": np.nan_to_num(funding, nan=0.0).tolist(),
        "range_frac": ((high - low) / close).tolist(),
        "notional": np.maximum(volume * close, MIN_BAR_NOTIONAL).tolist(),
    }
    return _Inputs(frame=frame, index=index, targets=targets, costs=costs,
                   periods_per_year=float(periods_per_year), rates=rates, close=close,
                   market=market)


def simulate_equity(
    bars: pd.DataFrame,
    positions: pd.Series | np.ndarray | list[float],
    *,
    costs: CostModel | None = None,
    fill: Fill = "next_open",
    initial_equity: float = 1.0,
    rebalance: Rebalance = "on_change",
    periods_per_year: float | None = None,
) -> pd.Series:
    """The equity path of :func:`simulate` alone, for replays that need only it (the
    break-even search of :mod:`tradezoo.backtest.diagnostics` runs it many times).

    Same arguments, checks and engine run as :func:`simulate`, so the result equals
    ``simulate(...).equity`` to the bit; it skips the buy-and-hold run, the fills and trades
    tables and the metrics.

    Returns:
        Equity at each bar's close, quote currency, shape [n], on ``bars.index``.
    """
    inputs = _inputs(bars, positions, costs=costs, fill=fill, initial_equity=initial_equity,
                     rebalance=rebalance, periods_per_year=periods_per_year, risk_free=0.0)
    path = _run_engine(inputs.targets.tolist(), inputs.market,
                       every_bar=rebalance == "every_bar", rates=inputs.rates,
                       initial_equity=float(initial_equity))
    return pd.Series(path.equity, index=inputs.index, name="equity")


def simulate(
    bars: pd.DataFrame,
    positions: pd.Series | np.ndarray | list[float],
    *,
    costs: CostModel | None = None,
    fill: Fill = "next_open",
    initial_equity: float = 1.0,
    rebalance: Rebalance = "on_change",
    periods_per_year: float | None = None,
    risk_free: float = 0.0,
) -> BacktestResult:
    """Backtest target positions on bars with the shared execution engine.

    Args:
        bars: a bars frame (docs/design.md, "Data model"), n >= 2 rows. Frames without
            ``attrs["validated"]`` go through :func:`tradezoo.data.load_bars` first (which may
            repair them; ``positions`` must then match the repaired index).
        positions: target exposure (signed fraction of equity) decided at the close of each
            bar: a Series on exactly ``bars.index`` or an array-like of length n. NaN keeps
            the previous target; the decision at the last bar is ignored (nothing to fill on).
        costs: the cost model; default by ``bars.attrs["source"]`` (:func:`default_costs`).
        fill: ``"next_open"`` (default) or ``"close"`` (optimistic: fills at the close of the
            decision bar, i.e. at a price the decision already saw).
        initial_equity: starting equity, quote currency, > 0.
        rebalance: ``"on_change"`` (trade only when the target changes, so a held position
            keeps its units and its exposure drifts) or ``"every_bar"`` (restore the target
            exposure at every fill).
        periods_per_year: bars per year for annualising and the borrow rate; default
            :func:`~tradezoo.backtest.metrics.periods_per_year_for` of the bars (index and
            ``attrs``).
        risk_free: annual risk-free rate for Sharpe and Sortino.

    Returns:
        A :class:`BacktestResult`.

    Raises:
        TypeError, ValueError: bad arguments (messages name the argument and the rule).
        tradezoo.data.DataError: bars that fail validation.

    Example:
        >>> from tradezoo.data import load_dataset
        >>> bars = load_dataset("bybit-btcusdt-1h").iloc[:500]
        >>> result = simulate(bars, np.ones(len(bars)))
        >>> round(float(result.equity.iloc[0]), 6), len(result.fills)
        (1.0, 1)
    """
    from tradezoo.backtest.metrics import compute_metrics

    inputs = _inputs(bars, positions, costs=costs, fill=fill, initial_equity=initial_equity,
                     rebalance=rebalance, periods_per_year=periods_per_year,
                     risk_free=risk_free)
    frame, index, targets, costs = inputs.frame, inputs.index, inputs.targets, inputs.costs
    periods_per_year, rates, market = inputs.periods_per_year, inputs.rates, inputs.market
    close, n = inputs.close, len(inputs.frame)
    every_bar = rebalance == "every_bar"
    path = _run_engine(
        targets.tolist(),
        market,
        every_bar=every_bar,
        rates=rates,
        initial_equity=float(initial_equity),
    )
    bench = _run_engine(
        [1.0] * n, market, every_bar=False, rates=rates, initial_equity=float(initial_equity)
    )

    exposure, turnover, cost_fractions = _account_series(path, close, float(initial_equity))
    next_open = fill == "next_open"

    equity = pd.Series(path.equity, index=index, name="equity")
    returns = pd.Series(_simple_returns(path.equity), index=index[1:], name="returns")
    positions_held = pd.Series(exposure, index=index, name="position")
    cost_frame = pd.DataFrame(
        {
            "fee": path.fee,
            "spread_cost": path.spread,
            "slippage_cost": path.slippage,
            "funding_paid": path.funding,
            "borrow_paid": path.borrow,
        },
        index=index,
    )
    fills = _fills_table(path, index, next_open=next_open)
    trades = _trades_table(path, market, index, next_open=next_open)
    benchmark_equity = pd.Series(bench.equity, index=index, name="benchmark_equity")
    benchmark_returns = pd.Series(
        _simple_returns(bench.equity), index=index[1:], name="benchmark_returns"
    )
    metrics = compute_metrics(
        returns,
        periods_per_year=float(periods_per_year),
        risk_free=float(risk_free),
        trades=trades,
        positions=positions_held.iloc[1:],
        turnover=pd.Series(turnover[1:], index=index[1:]),
        costs=cost_fractions,
        benchmark_returns=benchmark_returns,
    )
    bench_exposure, bench_turnover, bench_cost_fractions = _account_series(
        bench, close, float(initial_equity)
    )
    benchmark_metrics = compute_metrics(
        benchmark_returns,
        periods_per_year=float(periods_per_year),
        risk_free=float(risk_free),
        trades=_trades_table(bench, market, index, next_open=next_open),
        positions=pd.Series(bench_exposure[1:], index=index[1:]),
        turnover=pd.Series(bench_turnover[1:], index=index[1:]),
        costs=bench_cost_fractions,
    )
    config = {
        "symbol": frame.attrs.get("symbol"),
        "interval": frame.attrs.get("interval"),
        "source": frame.attrs.get("source"),
        "start": index[0].isoformat(),
        "end": index[-1].isoformat(),
        "bars": n,
        "fill": fill,
        "rebalance": rebalance,
        "initial_equity": float(initial_equity),
        "periods_per_year": float(periods_per_year),
        "risk_free": float(risk_free),
        "costs": costs.to_dict(),
    }
    bankrupt_at = None if path.bankrupt_step is None else index[path.bankrupt_step + 1]
    return BacktestResult(
        equity=equity,
        returns=returns,
        positions=positions_held,
        units=pd.Series(path.units, index=index, name="units"),
        position_pnl=pd.Series(path.pnl, index=index, name="position_pnl"),
        turnover=pd.Series(turnover, index=index, name="turnover"),
        fills=fills,
        costs=cost_frame,
        trades=trades,
        metrics=metrics,
        benchmark_equity=benchmark_equity,
        benchmark_returns=benchmark_returns,
        benchmark_metrics=benchmark_metrics,
        close=pd.Series(close, index=index, name="close"),
        config=config,
        bankrupt_at=bankrupt_at,
        liquidations=_liquidations_table(path, index),
    )
