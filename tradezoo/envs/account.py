"""One account step: everything a step does to an account after the fill, written once.

:func:`advance_account` advances one account by one bar. It runs the accounting engine
(:func:`~tradezoo.backtest.execution.execute_step`), then the reward switch, the log floor,
the position, peak and cost bookkeeping, the trade open/close records (liquidation included)
and the bankruptcy test, by the rules of :mod:`tradezoo.envs.core`. The single
:class:`~tradezoo.envs.trading_env.TradingEnv` calls it interpreted on its own account (a
Python list of floats); the batched envs call it compiled by numba from this same source,
once per account, on the columns of their state block (:mod:`tradezoo.envs.batch_kernel`).
:func:`account_features` (the dict observation's account vector), :func:`final_trade` (the
trade an episode's metrics count at its end) and :func:`new_account` complete the account's
life cycle, for both.

The functions are plain float arithmetic on a sequence read by the names of
:data:`ACCOUNT_FIELDS` (a ``list`` here, a float64 column of the state block there): no
numpy scalars, no objects, so the interpreted call stays cheap and numba compiles it without
fast-math to the same bits (docs/design.md, "One account step").
"""

from __future__ import annotations

import math
from collections.abc import MutableSequence, Sequence

from tradezoo.backtest.execution import BarTerms, ExecutionRates, StepFill, execute_step
from tradezoo.envs.core import (
    COST_KEYS,
    LOG_FLOOR,
    LOG_FLOOR_VALUE,
    TRADE_KEYS,
    closed_trade,
    differential_sharpe,
)

ACCOUNT_FIELDS: tuple[str, ...] = (
    "units",
    "equity",
    "target",
    "position",
    "side",
    "entry_price",
    "entry_bar",
    "base",
    "entry_equity",
    "dsr_a",
    "dsr_b",
    "peak",
    *COST_KEYS,
    "liquidated",
    "liquidated_pnl",
    "liquidated_return",
)
"""An account between steps, one float each.

``units`` (signed base units), ``equity`` (quote currency, marked at the last close),
``target`` (the last action's target exposure), ``position`` (exposure
``units * close / equity``), ``side`` (the open trade's sign, -1.0, 0.0 or 1.0); the open
trade: ``entry_price`` (its fill price), ``entry_bar`` (the row, in its dataset's index, of
the decision that opened it), ``base`` (the equity its running P&L is measured from,
:func:`~tradezoo.envs.core.closed_trade`) and ``entry_equity`` (equity at its opening
decision); ``dsr_a``, ``dsr_b`` (the differential Sharpe ratio's moments), ``peak`` (highest
equity of the episode); the costs paid in the episode (:data:`~tradezoo.envs.core.COST_KEYS`,
quote currency); and the trade a liquidation closed (``liquidated`` 1.0, its P&L and return),
which the episode's metrics count last."""

ACCOUNT_SIZE = 20
UNITS = ACCOUNT_FIELDS.index("units")
EQUITY = ACCOUNT_FIELDS.index("equity")
TARGET = ACCOUNT_FIELDS.index("target")
POSITION = ACCOUNT_FIELDS.index("position")
SIDE = ACCOUNT_FIELDS.index("side")
ENTRY_PRICE = ACCOUNT_FIELDS.index("entry_price")
ENTRY_BAR = ACCOUNT_FIELDS.index("entry_bar")
BASE = ACCOUNT_FIELDS.index("base")
ENTRY_EQUITY = ACCOUNT_FIELDS.index("entry_equity")
DSR_A = ACCOUNT_FIELDS.index("dsr_a")
DSR_B = ACCOUNT_FIELDS.index("dsr_b")
PEAK = ACCOUNT_FIELDS.index("peak")
FEES_PAID = ACCOUNT_FIELDS.index("fees_paid")
SPREAD_PAID = ACCOUNT_FIELDS.index("spread_paid")
SLIPPAGE_PAID = ACCOUNT_FIELDS.index("slippage_paid")
FUNDING_PAID = ACCOUNT_FIELDS.index("funding_paid")
BORROW_PAID = ACCOUNT_FIELDS.index("borrow_paid")
COSTS = slice(FEES_PAID, FEES_PAID + len(COST_KEYS))
"""The cost fields, in :data:`~tradezoo.envs.core.COST_KEYS` order."""
LIQUIDATED = ACCOUNT_FIELDS.index("liquidated")
LIQUIDATED_PNL = ACCOUNT_FIELDS.index("liquidated_pnl")
LIQUIDATED_RETURN = ACCOUNT_FIELDS.index("liquidated_return")
assert len(ACCOUNT_FIELDS) == len(set(ACCOUNT_FIELDS)) == ACCOUNT_SIZE
assert ACCOUNT_FIELDS[COSTS] == COST_KEYS

TRADE_SIZE = 8
"""Fields of a trade record, :data:`~tradezoo.envs.core.TRADE_KEYS` (the ``info["trade"]``
keys) in that order."""
TRADE_SIDE = TRADE_KEYS.index("side")
OPENED_AT = TRADE_KEYS.index("opened_at")
CLOSED_AT = TRADE_KEYS.index("closed_at")
TRADE_ENTRY_PRICE = TRADE_KEYS.index("entry_price")
TRADE_EXIT_PRICE = TRADE_KEYS.index("exit_price")
TRADE_PNL = TRADE_KEYS.index("pnl")
TRADE_RETURN = TRADE_KEYS.index("return")
TRADE_BARS = TRADE_KEYS.index("bars")
assert len(TRADE_KEYS) == TRADE_SIZE

REWARD_KINDS: tuple[str, ...] = ("log_return", "pnl", "differential_sharpe")
"""``reward_kind`` codes of :func:`advance_account` (the env's ``reward`` setting)."""


def new_account(initial_equity: float, bar: float) -> list[float]:
    """An account at the first decision ``bar`` of an episode: flat, ``initial_equity`` of
    cash (it is also the peak and the base of the first trade), nothing paid.

    Returns:
        ``[ACCOUNT_SIZE]`` values in :data:`ACCOUNT_FIELDS` order.
    """
    account = [0.0] * ACCOUNT_SIZE
    account[EQUITY] = account[PEAK] = initial_equity
    account[BASE] = account[ENTRY_EQUITY] = initial_equity
    account[ENTRY_BAR] = bar
    return account


def advance_account(
    account: MutableSequence[float],
    trade: MutableSequence[float],
    target: float,
    every_bar: bool,
    close_prev: float,
    open_next: float,
    close_next: float,
    funding_rate: float,
    range_frac: float,
    bar_notional: float,
    high_next: float,
    low_next: float,
    bar_terms: BarTerms | None,
    bar: float,
    rates: ExecutionRates,
    reward_kind: int,
    min_equity: float,
    initial_equity: float,
    dsr_eta: float,
) -> tuple[float, float, bool, bool, float, float, float, StepFill]:
    """Advance one account by one bar: fill the target decided at the close of bar t, mark
    at ``close[t+1]``, and update every account field (:data:`ACCOUNT_FIELDS`).

    Args:
        account: the account, ``[ACCOUNT_SIZE]`` by :data:`ACCOUNT_FIELDS`, updated in place.
        trade: ``[TRADE_SIZE]`` by :data:`~tradezoo.envs.core.TRADE_KEYS`, written only when
            the step closes a trade: the last trade it closed (the liquidated one when the
            fill closed another). Untouched otherwise.
        target: the action's target exposure; the account trades when it differs from the
            last one, or at every bar with ``every_bar``.
        close_prev ... low_next: bar t and t+1 prices, as
            :func:`~tradezoo.backtest.execution.execute_step` takes them; ``bar_terms`` its
            precomputed :class:`~tradezoo.backtest.execution.BarTerms`, or ``None``.
        bar: the decision bar t as a row of its dataset's index (a trade's opening and
            closing bar; an int stays an int in the trade record).
        rates: the dataset's :class:`~tradezoo.backtest.execution.ExecutionRates`.
        reward_kind: index into :data:`REWARD_KINDS`.
        min_equity: the bankruptcy level (quote currency); initial_equity, dsr_eta: the
            env's settings.

    Returns:
        ``(reward, log_return, terminated, liquidated, closed_side, closed_pnl,
        closed_return, fill)``: the step's reward; ``ln(E_{t+1} / E_t)`` floored at
        ``ln(1e-12)``; whether the episode ends (liquidated, or equity at or below
        ``min_equity``); whether it was liquidated; the side, P&L and return of the trade the
        fill closed (side 0.0 when none: a trade the liquidation closed is in the account's
        ``liquidated`` fields); and the engine's :class:`StepFill`.
    """
    units0 = account[UNITS]
    equity0 = account[EQUITY]
    fill = execute_step(
        units0, equity0, target, every_bar or target != account[TARGET], close_prev,
        open_next, close_next, funding_rate, range_frac, bar_notional, rates, bar_terms,
        high_next, low_next,
    )
    (units, equity, traded, fill_price, fee, spread, slip, funding, borrow, _position_pnl,
     liq_units, liq_price, liq_fee, liq_spread, liq_slip) = fill
    ratio = equity / equity0
    log_return = math.log(ratio) if ratio > LOG_FLOOR else LOG_FLOOR_VALUE
    if reward_kind == 0:
        reward = log_return
    elif reward_kind == 1:
        reward = (equity - equity0) / initial_equity
    else:
        reward, account[DSR_A], account[DSR_B] = differential_sharpe(
            account[DSR_A], account[DSR_B], ratio - 1.0, dsr_eta)
    account[UNITS] = units
    account[EQUITY] = equity
    account[TARGET] = target
    account[POSITION] = units * close_next / equity if equity > 0.0 else 0.0
    if equity > account[PEAK]:
        account[PEAK] = equity
    # A cost is 0.0 where its branch is skipped (no fill and no liquidation, no funding
    # stamp, no borrow): adding 0.0 changes no sum, and the interpreted step saves the work.
    liquidated = liq_units != 0.0
    if traded != 0.0 or liquidated:
        account[FEES_PAID] += fee
        account[SPREAD_PAID] += spread
        account[SLIPPAGE_PAID] += slip
    if funding != 0.0:
        account[FUNDING_PAID] += funding
    if borrow != 0.0:
        account[BORROW_PAID] += borrow

    # Trades: one closes when the sign held after the fill differs from the open trade's,
    # one opens when that sign is not 0, at the fill (core's rules); a liquidation then
    # closes the trade held after the fill. The record gets the last trade closed.
    fill_units = units - liq_units
    side = 1.0 if fill_units > 0.0 else (-1.0 if fill_units < 0.0 else 0.0)
    old_side = account[SIDE]
    closed_side = closed_pnl = closed_return = 0.0
    if side != old_side:
        closed_part = 0.0
        if old_side != 0.0:
            price_gap = 0.0  # a reversal only: the old position's gap
            if side != 0.0 and rates.next_open:
                price_gap = open_next - close_prev
            closed_pnl, closed_return, closed_part = closed_trade(
                side, equity - equity0, units0, traded,
                fee + spread + slip - (liq_fee + liq_spread + liq_slip), funding, price_gap,
                rates.next_open, equity0, account[BASE], account[ENTRY_EQUITY])
            closed_side = old_side
            record_side, exit_price, pnl, trade_return = (
                old_side, fill_price, closed_pnl, closed_return)
            entry_price, entry_bar = account[ENTRY_PRICE], account[ENTRY_BAR]
        if side != 0.0:
            account[ENTRY_PRICE] = fill_price
            account[ENTRY_BAR] = bar
            account[BASE] = equity0 + closed_part
            account[ENTRY_EQUITY] = equity0
        account[SIDE] = side
    if liquidated:  # all of the step's change beyond the reversal's part is this trade's
        pnl, trade_return, _ = closed_trade(
            0.0, equity - equity0, 0.0, 0.0, 0.0, 0.0, 0.0, rates.next_open, equity0,
            account[BASE], account[ENTRY_EQUITY])
        record_side, exit_price = side, liq_price
        entry_price, entry_bar = account[ENTRY_PRICE], account[ENTRY_BAR]
        account[LIQUIDATED] = 1.0
        account[LIQUIDATED_PNL] = pnl
        account[LIQUIDATED_RETURN] = trade_return
        account[SIDE] = 0.0
    if closed_side != 0.0 or liquidated:  # the record's values are set in one branch above
        trade[TRADE_SIDE] = record_side
        trade[OPENED_AT] = entry_bar
        trade[CLOSED_AT] = bar
        trade[TRADE_ENTRY_PRICE] = entry_price
        trade[TRADE_EXIT_PRICE] = exit_price
        trade[TRADE_PNL] = pnl
        trade[TRADE_RETURN] = trade_return
        trade[TRADE_BARS] = bar - entry_bar
    terminated = liquidated or equity <= min_equity
    return (reward, log_return, terminated, liquidated, closed_side, closed_pnl,
            closed_return, fill)


def account_features(
    account: Sequence[float], bar: float, bars_scale: float
) -> tuple[float, float, float, float]:
    """The dict observation's account vector at decision ``bar`` (a row of the dataset).

    Returns:
        ``(position, unrealised, held, drawdown)``: the exposure held; the open trade's
        return so far (``(equity - base) / entry_equity``) and ``log1p(bars held) /
        bars_scale``, both 0 when flat; ``equity / peak - 1``.
    """
    equity = account[EQUITY]
    unrealised = held = 0.0
    if account[SIDE] != 0.0:
        unrealised = (equity - account[BASE]) / account[ENTRY_EQUITY]
        held = math.log1p(bar - account[ENTRY_BAR]) / bars_scale
    return account[POSITION], unrealised, held, equity / account[PEAK] - 1.0


def final_trade(account: Sequence[float]) -> tuple[bool, float, float]:
    """The trade an episode's metrics count after its closed ones, at the episode's end.

    Returns:
        ``(counts, pnl, return)``: the open trade with its unrealised P&L, else the trade a
        liquidation closed (the episode's last), else ``(False, 0.0, 0.0)``.
    """
    if account[SIDE] != 0.0:
        pnl = account[EQUITY] - account[BASE]
        return True, pnl, pnl / account[ENTRY_EQUITY]
    if account[LIQUIDATED] != 0.0:
        return True, account[LIQUIDATED_PNL], account[LIQUIDATED_RETURN]
    return False, 0.0, 0.0
