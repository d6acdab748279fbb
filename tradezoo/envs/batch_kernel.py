"""The compiled step of the batched envs: every account's step in one call.

:class:`~tradezoo.envs.vector_env.BatchCore` calls :func:`advance_accounts` once per step. Its
loop runs :func:`~tradezoo.envs.account.advance_account`, the one account step that the single
:class:`~tradezoo.envs.trading_env.TradingEnv` runs in plain Python, compiled by numba from its
source for each account (with the functions it calls:
:func:`~tradezoo.backtest.execution.execute_step`, the accounting engine,
:func:`~tradezoo.envs.core.differential_sharpe` and :func:`~tradezoo.envs.core.closed_trade`),
and then only writes the results into the batched layouts below. So the arithmetic exists
once, and each sub-env computes exactly what a ``TradingEnv`` computes: IEEE double operations
in the same order, and numba compiles without fast-math (no FMA contraction, no
reassociation), so the results are equal to the bit (tests/test_vector_env.py compares every
step against a ``SyncVectorEnv`` of single envs, and tests/test_batch_kernel.py the compiled
loop against its own Python source). :func:`account_vectors` does the same for the dict
observation's account vector (:func:`~tradezoo.envs.account.account_features`).

Why compiled: at N = 64 the work per account is some 60 floating-point operations, and as
numpy array expressions the step cost about 90 numpy calls of ~1 us overhead each (about
60 us); the compiled loop takes 5-20 us for all 64 accounts (docs/performance.md), leaving
the step to the observation copy and the infos.

The first ``BatchCore`` of a process compiles the loop when it is built (about 2 s; not
cached on disk: numba's cache tracks this file only, not the functions it compiles).
``NUMBA_DISABLE_JIT=1`` runs it as Python (about 15x slower at N = 64, for debugging).

Layouts: every batched array is read and written by the names of its field tuple, and each
index below is derived from that tuple (sizes asserted at import):

- state ``float64 [ACCOUNT_SIZE, N]``: one column per account,
  :data:`~tradezoo.envs.account.ACCOUNT_FIELDS` rows (the account's own layout);
- step table ``float64 [R, len(STEP_TABLE_FIELDS)]``: per market row, :data:`STEP_TABLE_FIELDS`;
- rates table ``float64 [D, RATE_FIELDS]``: one :class:`ExecutionRates` per dataset;
- outputs, fresh each step: ``float64 [len(OUT_FIELDS), N]`` (:data:`OUT_FIELDS`), ``int64
  [len(TRADE_INT_KEYS), N]`` and ``bool [len(FLAG_FIELDS), N]``;
- trade history ``float64 [width, len(HISTORY_TRADE_FIELDS), N]``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload, register_jitable

from tradezoo.backtest import execution
from tradezoo.backtest.execution import BarTerms, ExecutionRates, StepFill, execute_step
from tradezoo.envs.account import (
    ACCOUNT_SIZE,
    EQUITY,
    POSITION,
    TARGET,
    TRADE_SIZE,
    UNITS,
    account_features,
    advance_account,
)
from tradezoo.envs.core import STEP_INFO_KEYS, TRADE_KEYS, closed_trade, differential_sharpe

STATE_ROWS = ACCOUNT_SIZE
"""Rows of the state block: the account fields (:data:`~tradezoo.envs.account.ACCOUNT_FIELDS`)."""

# -- step table: float64 [R, STEP_COLUMNS], per market row ------------------------------------
MARKET_STEP_FIELDS: tuple[str, ...] = (
    "close", "open_next", "close_next", "funding_rate_next", "range_frac", "notional",
    "high_next", "low_next",
)
"""The columns of :attr:`~tradezoo.envs.market.Market.step_rows`, per decision row ``t``:
``close[t], open[t+1], close[t+1], funding_rate[t+1], range_frac[t], notional[t],
high[t+1], low[t+1]``."""
STEP_TABLE_FIELDS: tuple[str, ...] = (*MARKET_STEP_FIELDS, *BarTerms._fields, "bar")
"""The step table: the market's columns, the :class:`BarTerms` of the row and the row in its
dataset's index (a trade's opening and closing bar)."""
STEP_COLUMNS = 12
CLOSE = STEP_TABLE_FIELDS.index("close")
OPEN_NEXT = STEP_TABLE_FIELDS.index("open_next")
CLOSE_NEXT = STEP_TABLE_FIELDS.index("close_next")
FUNDING_RATE_NEXT = STEP_TABLE_FIELDS.index("funding_rate_next")
RANGE_FRAC = STEP_TABLE_FIELDS.index("range_frac")
NOTIONAL = STEP_TABLE_FIELDS.index("notional")
HIGH_NEXT = STEP_TABLE_FIELDS.index("high_next")
LOW_NEXT = STEP_TABLE_FIELDS.index("low_next")
PRICE_GAP = STEP_TABLE_FIELDS.index("price_gap")
FUNDING_PER_UNIT = STEP_TABLE_FIELDS.index("funding_per_unit")
DRIFT = STEP_TABLE_FIELDS.index("drift")
BAR = STEP_TABLE_FIELDS.index("bar")
assert len(STEP_TABLE_FIELDS) == len(set(STEP_TABLE_FIELDS)) == STEP_COLUMNS

# -- rates table: float64 [D, RATE_FIELDS], one ExecutionRates per dataset ---------------------
RATE_FIELDS = 13
"""Columns of the rates table: one :class:`ExecutionRates` per dataset as floats, in its field
order (ints and bools as floats)."""
FEE_RATE = ExecutionRates._fields.index("fee_rate")
HALF_SPREAD = ExecutionRates._fields.index("half_spread")
SLIPPAGE_FIXED = ExecutionRates._fields.index("slippage_fixed")
SLIPPAGE_K = ExecutionRates._fields.index("slippage_k")
SLIPPAGE_MODEL = ExecutionRates._fields.index("slippage_model")
MAX_PARTICIPATION = ExecutionRates._fields.index("max_participation")
FUNDING = ExecutionRates._fields.index("funding")
NEXT_OPEN = ExecutionRates._fields.index("next_open")
BORROW_PER_BAR = ExecutionRates._fields.index("borrow_per_bar")
BORROW = ExecutionRates._fields.index("borrow")
MAINTENANCE_MARGIN = ExecutionRates._fields.index("maintenance_margin")
LIQUIDATION_FEE_RATE = ExecutionRates._fields.index("liquidation_fee_rate")
LIQUIDATION = ExecutionRates._fields.index("liquidation")
assert len(ExecutionRates._fields) == RATE_FIELDS

# -- outputs, fresh each step ----------------------------------------------------------------
FLOAT_STEP_KEYS: tuple[str, ...] = tuple(k for k in STEP_INFO_KEYS if k not in ("bar", "dataset"))
"""The float step infos (``"bar"`` and ``"dataset"`` are ints the core adds)."""
OUT_FIELDS: tuple[str, ...] = ("reward", "log_return", *FLOAT_STEP_KEYS,
                               *(f"trade_{key}" for key in TRADE_KEYS))
"""Rows of the float output block: the reward, the log return, the float step infos and the
trade record (:data:`~tradezoo.envs.core.TRADE_KEYS`; 0 where no trade closed)."""
OUT_ROWS = 21
REWARD = OUT_FIELDS.index("reward")
LOG_RETURN = OUT_FIELDS.index("log_return")
STEP_VALUES = OUT_FIELDS.index(FLOAT_STEP_KEYS[0])
"""First of the float step info rows (``STEP_VALUES + FLOAT_STEP_KEYS.index(key)``)."""
OUT_EQUITY = OUT_FIELDS.index("equity")
OUT_POSITION = OUT_FIELDS.index("position")
OUT_TARGET = OUT_FIELDS.index("target")
OUT_UNITS = OUT_FIELDS.index("units")
OUT_FILL_PRICE = OUT_FIELDS.index("fill_price")
OUT_FEE = OUT_FIELDS.index("fee")
OUT_SPREAD_COST = OUT_FIELDS.index("spread_cost")
OUT_SLIPPAGE_COST = OUT_FIELDS.index("slippage_cost")
OUT_FUNDING_PAID = OUT_FIELDS.index("funding_paid")
OUT_BORROW_PAID = OUT_FIELDS.index("borrow_paid")
OUT_POSITION_PNL = OUT_FIELDS.index("position_pnl")
TRADE_RECORD = OUT_FIELDS.index(f"trade_{TRADE_KEYS[0]}")
"""First of the trade record rows (``TRADE_RECORD + TRADE_KEYS.index(key)``)."""
assert OUT_FIELDS[STEP_VALUES:STEP_VALUES + len(FLOAT_STEP_KEYS)] == FLOAT_STEP_KEYS
assert len(OUT_FIELDS) == len(set(OUT_FIELDS)) == OUT_ROWS
assert OUT_ROWS == TRADE_RECORD + TRADE_SIZE

TRADE_INT_KEYS: tuple[str, ...] = ("opened_at", "closed_at", "bars")
"""Rows of the int64 output block: the trade record's integer fields."""
OPENED_AT_ROW = TRADE_INT_KEYS.index("opened_at")
CLOSED_AT_ROW = TRADE_INT_KEYS.index("closed_at")
BARS_ROW = TRADE_INT_KEYS.index("bars")
OPENED_AT_OUT = TRADE_RECORD + TRADE_KEYS.index("opened_at")
CLOSED_AT_OUT = TRADE_RECORD + TRADE_KEYS.index("closed_at")
BARS_OUT = TRADE_RECORD + TRADE_KEYS.index("bars")
FLAG_FIELDS: tuple[str, ...] = ("terminated", "closed", "liquidated")
"""Rows of the bool output block: the episode ended, a trade closed, it was liquidated."""
FLAG_ROWS = 3
TERMINATED = FLAG_FIELDS.index("terminated")
CLOSED = FLAG_FIELDS.index("closed")
LIQUIDATION = FLAG_FIELDS.index("liquidated")
assert len(FLAG_FIELDS) == FLAG_ROWS and set(TRADE_INT_KEYS) <= set(TRADE_KEYS)

# -- trade history: float64 [width, HISTORY_TRADE_ROWS, N] ------------------------------------
HISTORY_TRADE_FIELDS: tuple[str, ...] = ("side", "pnl", "return")
"""Per clock tick, the trade the step's fill closed (side 0.0 where none closed)."""
HISTORY_TRADE_ROWS = 3
HIST_SIDE = HISTORY_TRADE_FIELDS.index("side")
HIST_PNL = HISTORY_TRADE_FIELDS.index("pnl")
HIST_RETURN = HISTORY_TRADE_FIELDS.index("return")
assert len(HISTORY_TRADE_FIELDS) == HISTORY_TRADE_ROWS


def rates_table(rates: tuple[ExecutionRates, ...]) -> np.ndarray:
    """float64 ``[D, RATE_FIELDS]``: each dataset's rates (ints and bools as floats)."""
    return np.array([[float(value) for value in r] for r in rates], dtype=np.float64)


def rates_of(row: np.ndarray) -> ExecutionRates:
    """The :class:`ExecutionRates` of a row of :func:`rates_table`, read by field name."""
    return ExecutionRates(
        fee_rate=row[FEE_RATE],
        half_spread=row[HALF_SPREAD],
        slippage_fixed=row[SLIPPAGE_FIXED],
        slippage_k=row[SLIPPAGE_K],
        slippage_model=int(row[SLIPPAGE_MODEL]),
        max_participation=row[MAX_PARTICIPATION],
        funding=row[FUNDING] != 0.0,
        next_open=row[NEXT_OPEN] != 0.0,
        borrow_per_bar=row[BORROW_PER_BAR],
        borrow=row[BORROW] != 0.0,
        maintenance_margin=row[MAINTENANCE_MARGIN],
        liquidation_fee_rate=row[LIQUIDATION_FEE_RATE],
        liquidation=row[LIQUIDATION] != 0.0,
    )


# execute_step's helpers that branch on the Python type (float or array); compiled code sees
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


# execute_step builds its StepFill with tuple.__new__, which numba does not compile.
@overload(execution._step_fill)
def _step_fill_compiled(values):
    return lambda values: StepFill(
        values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7],
        values[8], values[9], values[10], values[11], values[12], values[13], values[14])


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


# The account step and its callees compile from their own source wherever compiled code
# calls them (register_jitable leaves each a plain Python function for the interpreted
# callers). The step and the rates reader are inlined into the loop (LLVM's always-inline;
# numba's own IR inlining doubles the compile time): as calls, with the account's column
# and the trade record passed as array views, they cost the loop about twice as much.
for _function in (advance_account, rates_of):
    register_jitable(forceinline=True)(_function)
for _function in (account_features, differential_sharpe, closed_trade, execute_step):
    register_jitable(_function)
# The jitted engine and trade and reward functions, for tests/test_batch_kernel.py.
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
) -> tuple[int, int, int]:
    """Advance every account by one bar: :func:`~tradezoo.envs.account.advance_account` on
    each account's column of ``state``, its results written into the batched layouts.

    Args:
        state: float64 ``[STATE_ROWS, N]``, updated in place.
        step_table: float64 ``[R, STEP_COLUMNS]`` (:data:`STEP_TABLE_FIELDS`).
        rows: int64 ``[N]``, each account's decision row (market index).
        target: float64 ``[N]``, the target exposures of this step's actions.
        rate_rows: float64 ``[D, RATE_FIELDS]`` (:func:`rates_table`); ``dataset`` int64
            ``[N]`` picks each account's row.
        every_bar, reward_kind (:data:`~tradezoo.envs.account.REWARD_KINDS` index),
            min_equity, initial_equity, dsr_eta: the env's settings.
        column: this tick's column of the circular histories (time-major ``[width, N]``,
            ``hist_trades`` ``[width, HISTORY_TRADE_ROWS, N]``); written when
            ``keep_history`` / ``with_metrics``.
        out, trade_ints, flags: outputs, float64 ``[OUT_ROWS, N]``, int64
            ``[len(TRADE_INT_KEYS), N]`` and bool ``[FLAG_ROWS, N]``; the trade rows are 0
            where no trade closed, and hold the last trade the step closed.

    Returns:
        ``(terminated, closed, liquidated)``: how many accounts ended their episode, closed a
        trade and were liquidated.
    """
    n_terminated = 0
    n_closed = 0
    n_liquidated = 0
    for i in range(rows.shape[0]):
        rates = rates_of(rate_rows[dataset[i]])
        bar = step_table[rows[i]]
        account = state[:, i]
        (reward, log_return, terminated, liquidated, closed_side, closed_pnl, closed_return,
         fill) = advance_account(
            account, out[TRADE_RECORD:, i], target[i], every_bar, bar[CLOSE], bar[OPEN_NEXT],
            bar[CLOSE_NEXT], bar[FUNDING_RATE_NEXT], bar[RANGE_FRAC], bar[NOTIONAL],
            bar[HIGH_NEXT], bar[LOW_NEXT], BarTerms(bar[PRICE_GAP], bar[FUNDING_PER_UNIT],
                                                    bar[DRIFT]),
            bar[BAR], rates, reward_kind, min_equity, initial_equity, dsr_eta,
        )
        closed = closed_side != 0.0 or liquidated
        n_terminated += terminated
        n_closed += closed
        n_liquidated += liquidated
        position = account[POSITION]
        out[REWARD, i] = reward
        out[LOG_RETURN, i] = log_return
        out[OUT_EQUITY, i] = account[EQUITY]
        out[OUT_POSITION, i] = position
        out[OUT_TARGET, i] = account[TARGET]
        out[OUT_UNITS, i] = account[UNITS]
        out[OUT_FILL_PRICE, i] = fill.fill_price
        out[OUT_FEE, i] = fill.fee
        out[OUT_SPREAD_COST, i] = fill.spread_cost
        out[OUT_SLIPPAGE_COST, i] = fill.slippage_cost
        out[OUT_FUNDING_PAID, i] = fill.funding_paid
        out[OUT_BORROW_PAID, i] = fill.borrow_paid
        out[OUT_POSITION_PNL, i] = fill.position_pnl
        flags[TERMINATED, i] = terminated
        flags[CLOSED, i] = closed
        flags[LIQUIDATION, i] = liquidated
        if closed:
            trade_ints[OPENED_AT_ROW, i] = int(out[OPENED_AT_OUT, i])
            trade_ints[CLOSED_AT_ROW, i] = int(out[CLOSED_AT_OUT, i])
            trade_ints[BARS_ROW, i] = int(out[BARS_OUT, i])
        else:
            for row in range(TRADE_RECORD, OUT_ROWS):
                out[row, i] = 0.0
            for row in range(len(TRADE_INT_KEYS)):
                trade_ints[row, i] = 0
        if keep_history:
            hist_equity[column, i] = account[EQUITY]
            hist_position[column, i] = position
            hist_notional[column, i] = fill.traded_units * fill.fill_price
        if with_metrics:
            hist_trades[column, HIST_SIDE, i] = closed_side
            if closed_side != 0.0:
                hist_trades[column, HIST_PNL, i] = closed_pnl
                hist_trades[column, HIST_RETURN, i] = closed_return
    return n_terminated, n_closed, n_liquidated


advance_accounts = numba.njit(nogil=True)(_advance_accounts)
"""The compiled :func:`_advance_accounts` (``advance_accounts.py_func`` is the Python one)."""


def _account_vectors(
    state: np.ndarray, bars: np.ndarray, accounts: np.ndarray, bars_scale: float,
    out: np.ndarray,
) -> None:
    """The dict observation's account vectors of ``accounts`` (int64 ``[M]``) at their
    decision ``bars`` (int64 ``[M]``, rows of their datasets) into float32 ``out [M, 4]``:
    :func:`~tradezoo.envs.account.account_features` of each account's column."""
    for j in range(accounts.shape[0]):
        features = account_features(state[:, accounts[j]], bars[j], bars_scale)
        for k in range(len(features)):
            out[j, k] = features[k]


account_vectors = numba.njit(nogil=True)(_account_vectors)
"""The compiled :func:`_account_vectors`."""
