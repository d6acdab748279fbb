"""The compiled step of the batched envs: every account's fill, reward and trade record in one call.

:class:`~tradezoo.envs.vector_env.BatchCore` calls :func:`advance_accounts` once per step. Its
loop runs, for each account, the package's own scalar functions, compiled by numba from their
one source: :func:`~tradezoo.backtest.execution.execute_step` (the accounting engine),
:func:`~tradezoo.envs.core.differential_sharpe` and :func:`~tradezoo.envs.core.closed_trade`,
which the single :class:`~tradezoo.envs.trading_env.TradingEnv` runs in plain Python. So the
arithmetic exists once, and each sub-env computes exactly what a ``TradingEnv`` computes:
IEEE double operations in the same order, and numba compiles without fast-math (no FMA
contraction, no reassociation), so the results are equal to the bit (tests/test_vector_env.py
compares every step against a ``SyncVectorEnv`` of single envs, and tests/test_batch_kernel.py
the compiled loop against its own Python source).

Why compiled: at N = 64 the work per account is some 60 floating-point operations, and as
numpy array expressions the step cost about 90 numpy calls of ~1 us overhead each (about
60 us); the compiled loop takes 5-20 us for all 64 accounts (docs/performance.md), leaving
the step to the observation copy and the infos.

The first ``BatchCore`` of a process compiles the loop when it is built (about 1.7 s; not
cached on disk: numba's cache tracks this file only, not ``execute_step``'s).
``NUMBA_DISABLE_JIT=1`` runs it as Python (about 15x slower at N = 64, for debugging). Layouts
(row numbers below) are module constants that ``BatchCore`` shares.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from tradezoo.backtest import execution
from tradezoo.backtest.execution import BarTerms, ExecutionRates, execute_step
from tradezoo.envs.core import LOG_FLOOR, LOG_FLOOR_VALUE, closed_trade, differential_sharpe

# -- state rows: float64 [STATE_ROWS, N], the accounts' state between steps ----------------
UNITS, EQUITY, TARGET, POSITION, SIDE = 0, 1, 2, 3, 4
ENTRY_PRICE, ENTRY_BAR, BASE, ENTRY_EQUITY = 5, 6, 7, 8  # the open trade (ENTRY_BAR: float row)
DSR_A, DSR_B, PEAK = 9, 10, 11
COSTS = 12  # rows 12-16: fees, spread, slippage, funding, borrow paid in the episode
# The trade the liquidation closed (LIQUIDATED 1.0) with its P&L and return, for the episode
# metrics (a liquidation ends the episode; the step's order may have closed another trade).
LIQUIDATED, LIQUIDATED_PNL, LIQUIDATED_RETURN = 17, 18, 19
STATE_ROWS = 20

# -- output rows: float64 [OUT_ROWS, N], fresh each step --------------------------------------
REWARD, LOG_RETURN = 0, 1
STEP_VALUES = 2
"""Rows 2-12: the float step infos in STEP_INFO_KEYS order (equity ... position_pnl)."""
TRADE_SIDE, TRADE_ENTRY_PRICE, TRADE_EXIT_PRICE, TRADE_PNL, TRADE_RETURN = 13, 14, 15, 16, 17
OUT_ROWS = 18
# int64 [3, N]: the closed trades' opened_at, closed_at, bars; bool [3, N]: terminated, a
# trade closed, liquidated.
TERMINATED, CLOSED, LIQUIDATION = 0, 1, 2
FLAG_ROWS = 3

# -- step table columns: float64 [R, STEP_COLUMNS], per market row -----------------------------
# close[t], open[t+1], close[t+1], funding_rate[t+1], range_frac[t], notional[t], high[t+1],
# low[t+1] (Market.step_rows), the BarTerms price_gap, funding_per_unit, drift, and the row in
# its dataset's index.
PRICE_GAP, BAR_ROW = 8, 11
STEP_COLUMNS = 12

RATE_FIELDS = len(ExecutionRates._fields)
"""Columns of the rates table: one :class:`ExecutionRates` per dataset as floats."""


def rates_table(rates: tuple[ExecutionRates, ...]) -> np.ndarray:
    """float64 ``[D, RATE_FIELDS]``: each dataset's rates (ints and bools as floats)."""
    return np.array([[float(value) for value in r] for r in rates], dtype=np.float64)


# execute_step's two helpers branch on the Python type (float or array); compiled code sees
# floats only, so numba gets their float versions.
@overload(execution._sign)
def _sign_float(value):  # unannotated: numba rejected the annotated typing functions
    return lambda value: 1.0 if value > 0.0 else (-1.0 if value < 0.0 else 0.0)


@overload(execution._sqrt)
def _sqrt_float(value):
    return lambda value: math.sqrt(value)


@overload(execution._select)
def _select_float(condition, if_true, if_false):
    return lambda condition, if_true, if_false: if_true if condition else if_false


@overload(execution._any)
def _any_float(condition):
    return lambda condition: condition


# Helpers without a type branch compile from their own source (jitted once; the overloads
# wrap them because numba wants an implementation without the source's annotations).
_slippage_rate_jit = numba.njit(execution._slippage_rate)
_liquidate_jit = numba.njit(execution._liquidate)


@overload(execution._slippage_rate)
def _slippage_rate_compiled(traded_notional, range_frac, bar_notional, rates):
    return lambda traded_notional, range_frac, bar_notional, rates: _slippage_rate_jit(
        traded_notional, range_frac, bar_notional, rates)


@overload(execution._liquidate)
def _liquidate_compiled(hit, side, units, equity_new, position_pnl, fee, spread_cost,
                        slippage_cost, equity, gap_pnl, funding_paid, borrow_paid, reference,
                        open_next, range_frac, bar_notional, rates, zero):
    def impl(hit, side, units, equity_new, position_pnl, fee, spread_cost, slippage_cost,
             equity, gap_pnl, funding_paid, borrow_paid, reference, open_next, range_frac,
             bar_notional, rates, zero):
        return _liquidate_jit(hit, side, units, equity_new, position_pnl, fee, spread_cost,
                              slippage_cost, equity, gap_pnl, funding_paid, borrow_paid,
                              reference, open_next, range_frac, bar_notional, rates, zero)
    return impl


_execute_step = numba.njit(execute_step)
_differential_sharpe = numba.njit(differential_sharpe)
_closed_trade = numba.njit(closed_trade)


def _advance_accounts(
    state: np.ndarray,
    step_table: np.ndarray,
    rows: np.ndarray,
    target: np.ndarray,
    rate_rows: np.ndarray,
    dataset: np.ndarray,
    every_bar: bool,
    reward_kind: int,
    min_equity: float,
    initial_equity: float,
    dsr_eta: float,
    column: int,
    keep_history: bool,
    with_metrics: bool,
    hist_equity: np.ndarray,
    hist_position: np.ndarray,
    hist_notional: np.ndarray,
    hist_trades: np.ndarray,
    out: np.ndarray,
    trade_ints: np.ndarray,
    flags: np.ndarray,
) -> tuple[int, int]:
    """Advance every account by one bar (the loop of :meth:`TradingEnv.step`, per account).

    Args:
        state: float64 ``[STATE_ROWS, N]``, updated in place.
        step_table: float64 ``[R, STEP_COLUMNS]``: per market row ``close[t], open[t+1],
            close[t+1], funding_rate[t+1], range_frac[t], notional[t], high[t+1], low[t+1]``,
            the :class:`BarTerms` ``price_gap, funding_per_unit, drift`` and the row in its
            dataset's index.
        rows: int64 ``[N]``, each account's decision row (market index).
        target: float64 ``[N]``, the target exposures of this step's actions.
        rate_rows: float64 ``[D, RATE_FIELDS]`` (:func:`rates_table`); ``dataset`` int64
            ``[N]`` picks each account's row.
        every_bar, reward_kind (0 log_return, 1 pnl, 2 differential_sharpe), min_equity,
            initial_equity, dsr_eta: the env's settings.
        column: this tick's column of the circular histories (time-major ``[width, N]``,
            ``hist_trades`` ``[width, 3, N]``: side, pnl, return of the trade that closed,
            side 0 where none closed); written when ``keep_history`` / ``with_metrics``.
        out, trade_ints, flags: outputs, float64 ``[OUT_ROWS, N]``, int64 ``[3, N]`` and bool
            ``[FLAG_ROWS, N]``; the trade rows are 0 where no trade closed, and hold the last
            trade the step closed (the liquidated one where the order closed another).

    Returns:
        ``(terminated, closed, liquidated)``: how many accounts ended their episode, closed a
        trade and were liquidated.
    """
    n_terminated = 0
    n_closed = 0
    n_liquidated = 0
    for i in range(rows.shape[0]):
        r = rate_rows[dataset[i]]
        rates = ExecutionRates(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6] != 0.0,
                               r[7] != 0.0, r[8], r[9] != 0.0, r[10], r[11], r[12] != 0.0)
        bar = step_table[rows[i]]
        units0 = state[UNITS, i]
        equity0 = state[EQUITY, i]
        new_target = target[i]
        trade = every_bar or new_target != state[TARGET, i]
        fill = _execute_step(units0, equity0, new_target, trade, bar[0], bar[1], bar[2], bar[3],
                             bar[4], bar[5], rates, BarTerms(bar[8], bar[9], bar[10]),
                             bar[6], bar[7])
        units = fill.units
        equity = fill.equity
        liquidated = fill.liquidated_units != 0.0

        ratio = equity / equity0
        log_return = math.log(ratio) if ratio > LOG_FLOOR else LOG_FLOOR_VALUE
        if reward_kind == 0:
            reward = log_return
        elif reward_kind == 1:
            reward = (equity - equity0) / initial_equity
        else:
            reward, state[DSR_A, i], state[DSR_B, i] = _differential_sharpe(
                state[DSR_A, i], state[DSR_B, i], ratio - 1.0, dsr_eta)
        position = units * bar[2] / equity if equity > 0.0 else 0.0
        terminated = liquidated or equity <= min_equity
        n_terminated += terminated
        n_liquidated += liquidated

        state[UNITS, i] = units
        state[EQUITY, i] = equity
        state[TARGET, i] = new_target
        state[POSITION, i] = position
        if equity > state[PEAK, i]:
            state[PEAK, i] = equity
        state[COSTS, i] += fill.fee
        state[COSTS + 1, i] += fill.spread_cost
        state[COSTS + 2, i] += fill.slippage_cost
        state[COSTS + 3, i] += fill.funding_paid
        state[COSTS + 4, i] += fill.borrow_paid
        if keep_history:
            hist_equity[column, i] = equity
            hist_position[column, i] = position
            hist_notional[column, i] = fill.traded_units * fill.fill_price

        out[REWARD, i] = reward
        out[LOG_RETURN, i] = log_return
        out[STEP_VALUES, i] = equity
        out[STEP_VALUES + 1, i] = position
        out[STEP_VALUES + 2, i] = new_target
        out[STEP_VALUES + 3, i] = units
        out[STEP_VALUES + 4, i] = fill.fill_price
        out[STEP_VALUES + 5, i] = fill.fee
        out[STEP_VALUES + 6, i] = fill.spread_cost
        out[STEP_VALUES + 7, i] = fill.slippage_cost
        out[STEP_VALUES + 8, i] = fill.funding_paid
        out[STEP_VALUES + 9, i] = fill.borrow_paid
        out[STEP_VALUES + 10, i] = fill.position_pnl
        flags[TERMINATED, i] = terminated
        flags[LIQUIDATION, i] = liquidated

        # Trades: a trade closes when the position's sign changes from non-zero, and one
        # opens when it changes to non-zero (TradingEnv._trade_transition), at the fill; a
        # liquidation then closes the trade open after the fill.
        fill_units = units - fill.liquidated_units  # units after the fill
        side = 1.0 if fill_units > 0.0 else (-1.0 if fill_units < 0.0 else 0.0)
        old_side = state[SIDE, i]
        closed = side != old_side and old_side != 0.0
        closed_part = 0.0
        if closed:
            pnl, trade_return, closed_part = _closed_trade(
                side, equity - equity0, units0, fill.traded_units,
                fill.fee + fill.spread_cost + fill.slippage_cost
                - (fill.liquidation_fee + fill.liquidation_spread_cost
                   + fill.liquidation_slippage_cost),
                fill.funding_paid, bar[PRICE_GAP], rates.next_open, equity0, state[BASE, i],
                state[ENTRY_EQUITY, i])
            out[TRADE_SIDE, i] = old_side
            out[TRADE_ENTRY_PRICE, i] = state[ENTRY_PRICE, i]
            out[TRADE_EXIT_PRICE, i] = fill.fill_price
            out[TRADE_PNL, i] = pnl
            out[TRADE_RETURN, i] = trade_return
            trade_ints[0, i] = int(state[ENTRY_BAR, i])
            trade_ints[1, i] = int(bar[BAR_ROW])
            trade_ints[2, i] = int(bar[BAR_ROW] - state[ENTRY_BAR, i])
            if with_metrics:
                hist_trades[column, 0, i] = old_side
                hist_trades[column, 1, i] = pnl
                hist_trades[column, 2, i] = trade_return
            n_closed += 1
        else:
            for row in range(TRADE_SIDE, OUT_ROWS):
                out[row, i] = 0.0
            trade_ints[0, i] = 0
            trade_ints[1, i] = 0
            trade_ints[2, i] = 0
            if with_metrics:
                hist_trades[column, 0, i] = 0.0
        if side != old_side and side != 0.0:  # a trade opens
            state[ENTRY_PRICE, i] = fill.fill_price
            state[ENTRY_BAR, i] = bar[BAR_ROW]
            state[BASE, i] = equity0 + closed_part
            state[ENTRY_EQUITY, i] = equity0
        if liquidated:  # closes the trade open after the fill: all of the step is its own
            pnl, trade_return, _ = _closed_trade(
                0.0, equity - equity0, 0.0, 0.0, 0.0, 0.0, 0.0, rates.next_open, equity0,
                state[BASE, i], state[ENTRY_EQUITY, i])
            out[TRADE_SIDE, i] = side
            out[TRADE_ENTRY_PRICE, i] = state[ENTRY_PRICE, i]
            out[TRADE_EXIT_PRICE, i] = fill.liquidation_price
            out[TRADE_PNL, i] = pnl
            out[TRADE_RETURN, i] = trade_return
            trade_ints[0, i] = int(state[ENTRY_BAR, i])
            trade_ints[1, i] = int(bar[BAR_ROW])
            trade_ints[2, i] = int(bar[BAR_ROW] - state[ENTRY_BAR, i])
            state[LIQUIDATED, i] = 1.0
            state[LIQUIDATED_PNL, i] = pnl
            state[LIQUIDATED_RETURN, i] = trade_return
            n_closed += not closed
            closed = True
            side = 0.0
        flags[CLOSED, i] = closed
        state[SIDE, i] = side
    return n_terminated, n_closed, n_liquidated


advance_accounts = numba.njit(nogil=True)(_advance_accounts)
"""The compiled :func:`_advance_accounts` (``advance_accounts.py_func`` is the Python one)."""
