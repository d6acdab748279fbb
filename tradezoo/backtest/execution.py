"""The one execution and accounting function of tradezoo (docs/design.md, "One accounting engine").

``execute_step`` turns a target exposure decided at the close of bar t into a fill and marks
the account at the close of bar t+1. It is written once, with arithmetic that works on Python
floats (the single env's fast path) and on numpy arrays of N accounts (the vector envs and the
backtester) alike: no branches on values (only on the configuration in ``rates``), only
``+ - * /``, ``abs``, sign, square root and comparisons, with helpers that give the float and
the array path bit-identical results.
Nothing else in the package may re-implement this arithmetic.

Timeline of one step with ``fill="next_open"`` (the default, the no-look-ahead contract):

1. The account holds ``units`` (signed base units) and ``equity`` marked at ``close[t]``.
2. Gap: the old position earns ``units * (open[t+1] - close[t])``.
3. Funding stamp at the open of bar t+1 (``funding_rate[t+1]``, 0 when there is none): the
   position held at that instant, the old one (our order fills just after the opening print),
   pays ``rate * units * open[t+1]`` (longs pay positive rates, shorts receive them).
4. Fill at ``open[t+1]`` if the account trades this step: target units
   ``target_exposure * equity_before_fill / open[t+1]``; the fill price moves against the trade
   by half spread + slippage; fee on the fill notional.
5. Borrow on the new short notional for one bar (spot shorts).
6. Mark at ``close[t+1]``: the new position earns ``units_new * (close[t+1] - open[t+1])``.

Liquidation (cost models with ``maintenance_margin > 0``, :mod:`tradezoo.backtest.costs`):
the position held after the fill is liquidated when, on its price path over bar t+1 (from the
reference price to the bar's adverse extreme: ``low[t+1]`` for a long, ``high[t+1]`` for a
short), equity ``E(p) = E_fill + units_new * (p - reference)`` falls to the maintenance margin
``maintenance_margin * |units_new| * p``; ``E_fill`` is the equity after every cost of the
step (fill, funding, borrow). That happens at the liquidation price::

    p_liq = (units_new * reference - E_fill) / (units_new * (1 - side * maintenance_margin))

The position is closed at ``p_liq``, or at the first price of the path beyond it when the path
starts there (the reference price; with ``fill="close"`` also ``open[t+1]``, a gap), moved
against the liquidation by half spread and slippage, with the taker fee, and is not marked at
``close[t+1]``. The trader's loss is limited to the account's equity: where that exit would
leave equity below 0 (a gap beyond the bankruptcy price, or exit costs above the remaining
margin) the position is closed at the bankruptcy price instead, the price at which equity
after the exit costs is exactly 0 (the counterparty, an exchange's insurance fund, takes the
rest), so equity never goes negative through a liquidation. With ``fill="next_open"``, an old
position that is at or beyond its liquidation price at the open (a gap) is liquidated there
and the step's order does not fill. The identity below holds with the liquidation's costs in
``fee``, ``spread_cost`` and ``slippage_cost`` and its P&L in ``position_pnl``.

With ``fill="close"`` (optimistic, documented only) the order fills at ``close[t]``: there is no
gap term, and the position held at the funding stamp is the new one.

Identity (tested to 1e-9 on every step of every env)::

    equity_new - equity = position_pnl - fee - spread_cost - slippage_cost - funding_paid
                          - borrow_paid
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, NamedTuple, TypeVar

import numpy as np

from tradezoo.backtest.costs import BPS, CostModel

Fill = Literal["next_open", "close"]
Num = TypeVar("Num", float, np.ndarray)

MIN_BAR_NOTIONAL = 1e-300
"""Floor for ``volume * close`` so a zero-volume bar hits the participation cap, not 0/0."""


class StepFill(NamedTuple):
    """Outcome of one step for one account (floats) or N accounts (arrays of shape [N]).

    Money amounts are in the quote currency (USDT, USD); ``*_paid`` and costs are positive
    when the account pays. ``fill_price`` is the reference price (``open[t+1]``, or
    ``close[t]`` with ``fill="close"``) moved by half spread and slippage in the trade's
    direction; it equals the reference price when nothing is traded. ``units`` is 0 after a
    liquidation; ``traded_units``, ``fill_price`` are the order's. ``fee``,
    ``spread_cost`` and ``slippage_cost`` are the step's totals, the liquidation's included
    (its parts are the ``liquidation_*`` fields). ``liquidated_units``: the units the
    liquidation traded (``-units`` held after the fill; 0 when none), ``liquidation_price``
    its fill price (0 when none).
    """

    units: Num
    equity: Num
    traded_units: Num
    fill_price: Num
    fee: Num
    spread_cost: Num
    slippage_cost: Num
    funding_paid: Num
    borrow_paid: Num
    position_pnl: Num
    liquidated_units: Num
    liquidation_price: Num
    liquidation_fee: Num
    liquidation_spread_cost: Num
    liquidation_slippage_cost: Num


_new_tuple = tuple.__new__


def _step_fill(values: tuple) -> StepFill:
    """The :class:`StepFill` of ``values`` (its 15 fields in order), built by ``tuple.__new__``
    directly; compiled code calls the :class:`StepFill` constructor (tradezoo.envs.batch_kernel)."""
    return _new_tuple(StepFill, values)


class ExecutionRates(NamedTuple):
    """A :class:`CostModel` and fill rule resolved to plain floats, once, for the hot loop.

    Build it with :func:`execution_rates`; every field is a fraction, not bps.
    """

    fee_rate: float
    half_spread: float
    slippage_fixed: float
    slippage_k: float
    slippage_model: int  # 0 fixed, 1 volatility, 2 volume
    max_participation: float
    funding: bool
    next_open: bool
    borrow_per_bar: float
    borrow: bool = True  # False: no account borrows (borrow_per_bar == 0); the term is skipped
    maintenance_margin: float = 0.0
    liquidation_fee_rate: float = 0.0  # the taker fee: a liquidation is a market order
    liquidation: bool = False  # maintenance_margin > 0; False skips the liquidation terms


_SLIPPAGE_CODES = {"fixed": 0, "volatility": 1, "volume": 2}


def _sqrt(value: Num) -> Num:
    """Correctly rounded square root of a float or an array.

    ``x ** 0.5`` is not: numpy turns it into ``sqrt`` for arrays while Python floats go
    through ``pow``, which can differ in the last bit, and the float path must equal the
    array path exactly.
    """
    if isinstance(value, float):
        return math.sqrt(value)
    return np.sqrt(value)


_SCALAR_BOOLS = (bool, np.bool_)  # a tuple: `bool | np.bool_` builds a union on every call


def _select(condition: bool | np.ndarray, if_true: Num, if_false: Num) -> Num:
    """``if_true`` where ``condition`` holds, else ``if_false`` (floats or arrays, elementwise;
    the values are taken, not computed, so both paths give the same bits)."""
    if isinstance(condition, _SCALAR_BOOLS):
        return if_true if condition else if_false
    return np.where(condition, if_true, if_false)


def _any(condition: bool | np.ndarray) -> bool:
    """Whether ``condition`` holds anywhere (for skipping work that would change nothing)."""
    if isinstance(condition, _SCALAR_BOOLS):
        return bool(condition)
    return bool(condition.any())


def _slippage_rate(
    traded_notional: Num, range_frac: Num, bar_notional: Num, rates: ExecutionRates
) -> Num:
    """Slippage of an order of ``traded_notional`` as a fraction of its reference price."""
    slip = rates.slippage_fixed
    if rates.slippage_model == 1:
        slip = slip + rates.slippage_k * range_frac
    elif rates.slippage_model == 2:
        cap = rates.max_participation
        over = traded_notional > cap * bar_notional
        # Past the cap divide by traded_notional / cap (participation = cap): capping after
        # the division lost the cap to cancellation (1e303 - (1e303 - cap) = 0 on a floored
        # zero-volume bar) and overflowed to inf, then NaN, for large notionals.
        participation = traded_notional / (
            bar_notional + over * (traded_notional / cap - bar_notional)
        )
        slip = slip + rates.slippage_k * _sqrt(participation)
    return slip


def _sign(value: Num) -> Num:
    """-1.0, 0.0 or 1.0 by the sign of a float or of each array element (one numpy call)."""
    if isinstance(value, float):
        # Branches, not bool arithmetic: a np.float64 (a float too) compares to np.bool_,
        # which cannot subtract.
        return 1.0 if value > 0.0 else (-1.0 if value < 0.0 else 0.0)
    return np.sign(value)


def execution_rates(
    costs: CostModel, *, fill: Fill = "next_open", periods_per_year: float = 8760.0
) -> ExecutionRates:
    """Resolve ``costs`` and ``fill`` into :class:`ExecutionRates`.

    Args:
        periods_per_year: bars per year, to turn ``borrow_rate_annual`` into a per-bar rate.
    """
    if fill not in ("next_open", "close"):
        raise ValueError(f"fill must be 'next_open' or 'close', got {fill!r}")
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, numbers.Real)
        or not 0 < periods_per_year < math.inf  # also rejects NaN
    ):
        raise ValueError(f"periods_per_year must be a finite number > 0, got {periods_per_year!r}")
    return ExecutionRates(
        fee_rate=costs.fee_rate,
        half_spread=costs.half_spread_bps * BPS,
        slippage_fixed=costs.slippage_bps * BPS,
        slippage_k=costs.slippage_k,
        slippage_model=_SLIPPAGE_CODES[costs.slippage],
        max_participation=costs.max_participation,
        funding=costs.funding,
        next_open=fill == "next_open",
        borrow_per_bar=costs.borrow_rate_annual / periods_per_year,
        borrow=costs.borrow_rate_annual > 0.0,
        maintenance_margin=float(costs.maintenance_margin),
        liquidation_fee_rate=costs.taker_fee_bps * BPS,
        liquidation=costs.maintenance_margin > 0.0,
    )


class BarTerms(NamedTuple):
    """The terms of :func:`execute_step` that depend on the bar only, not on the account.

    ``price_gap``: the reference price minus ``close[t]`` (the old position's gap per unit;
    0 with ``fill="close"``). ``funding_per_unit``: ``funding_rate * open[t+1]``, the funding
    paid per unit held at the stamp. ``drift``: the mark's move per unit held after the fill,
    ``close[t+1] - open[t+1]`` (``close[t+1] - close[t]`` with ``fill="close"``).
    """

    price_gap: Num
    funding_per_unit: Num
    drift: Num


def bar_terms_of(
    close_prev: Num, open_next: Num, close_next: Num, funding_rate: Num, rates: ExecutionRates
) -> BarTerms:
    """:class:`BarTerms` of bars (floats or arrays), for :func:`execute_step`."""
    reference = open_next if rates.next_open else close_prev
    return BarTerms(reference - close_prev, funding_rate * open_next, close_next - reference)


def execute_step(
    units: Num,
    equity: Num,
    target_exposure: Num,
    trade: bool | np.ndarray,
    close_prev: Num,
    open_next: Num,
    close_next: Num,
    funding_rate: Num,
    range_frac: Num,
    bar_notional: Num,
    rates: ExecutionRates,
    bar_terms: BarTerms | None = None,
    high_next: Num | None = None,
    low_next: Num | None = None,
) -> StepFill:
    """Advance accounts by one bar: fill the decision made at the close of bar t, mark at t+1.

    Args:
        units: base units held over bar t (signed; negative is short).
        equity: equity marked at ``close[t]``.
        target_exposure: target position as a fraction of equity, signed.
        trade: whether each account trades this step (the env's rebalance rule: target
            changed, or ``rebalance="every_bar"``); a non-trading account keeps its units.
        close_prev, open_next, close_next: ``close[t]``, ``open[t+1]``, ``close[t+1]``.
        funding_rate: the funding rate stamped at the open of bar t+1 (0 when none).
        range_frac: the decision bar's ``(high - low) / close`` (volatility slippage).
        bar_notional: the decision bar's ``volume * close``, floored at ``MIN_BAR_NOTIONAL``
            (volume slippage).
        rates: the resolved cost model and fill rule (:func:`execution_rates`).
        bar_terms: the terms that depend on the bar only, :func:`bar_terms_of` these prices
            (callers that step many accounts over one table of bars gather them with the
            prices instead of recomputing them per account and step); ``None``: computed
            here. The same values either way.
        high_next, low_next: ``high[t+1]``, ``low[t+1]``, the bar whose adverse extreme the
            liquidation check reads (``None``: the higher and lower of ``open[t+1]`` and
            ``close[t+1]``, all a caller without intrabar prices knows).

    Returns:
        A :class:`StepFill` of floats or of arrays shaped like the inputs.
    """
    next_open = rates.next_open
    reference = open_next if next_open else close_prev
    if bar_terms is None:  # inline, not bar_terms_of(): the scalar path pays no call
        price_gap = reference - close_prev
        funding_per_unit = funding_rate * open_next
        drift = close_next - reference
    else:
        price_gap, funding_per_unit, drift = bar_terms
    gap_pnl = units * price_gap
    equity_before_fill = equity + gap_pnl
    zero = 0.0 * units  # a zero of the inputs' kind (float or array [N])
    funding_paid = zero
    if next_open and rates.funding:
        # The position at the funding stamp is the old one: the order fills after the open.
        funding_paid = funding_per_unit * units
        equity_before_fill = equity_before_fill - funding_paid

    liquidation = rates.liquidation
    if liquidation and next_open:
        # An old position at or beyond its liquidation price at the open is liquidated there
        # (below, at the reference price) and its order does not fill.
        trade = trade & (
            (units == 0.0)
            | (equity_before_fill > rates.maintenance_margin * abs(units) * reference)
        )
    traded_units = trade * (target_exposure * equity_before_fill / reference - units)
    new_units = units + traded_units
    size = abs(traded_units)
    traded_notional = size * reference

    # (The fixed model needs no call: the single env's float path is call-bound.)
    slip = (rates.slippage_fixed if rates.slippage_model == 0
            else _slippage_rate(traded_notional, range_frac, bar_notional, rates))
    spread_cost = traded_notional * rates.half_spread
    slippage_cost = traded_notional * slip
    direction = _sign(traded_units)
    fill_price = reference * (1.0 + direction * (rates.half_spread + slip))
    fee = size * fill_price * rates.fee_rate

    if not next_open and rates.funding:
        funding_paid = funding_per_unit * new_units  # the new position is held
    # Branches on the configuration, never on values: a model without borrow skips the term.
    borrow_paid = zero
    if rates.borrow:
        borrow_paid = (abs(new_units) - new_units) * (0.5 * open_next * rates.borrow_per_bar)

    position_pnl = gap_pnl + new_units * drift if next_open else new_units * drift
    new_equity = equity + position_pnl - fee - spread_cost - slippage_cost - funding_paid
    if rates.borrow:
        new_equity = new_equity - borrow_paid
    liquidated_units = liquidation_price = zero
    liquidation_fee = liquidation_spread = liquidation_slippage = zero
    if liquidation:
        # Separate names and plain `if x is None` tests: numba prunes these branches.
        if high_next is None:
            high = _select(open_next < close_next, close_next, open_next)
        else:
            high = high_next
        if low_next is None:
            low = _select(open_next < close_next, open_next, close_next)
        else:
            low = low_next
        # Equity at a price p of the bar is new_equity + new_units * (p - close_next); less the
        # maintenance margin at the low and at the high, the adverse extreme gives the smaller
        # (the low for a long, the high for a short), so one test covers both sides.
        margin = rates.maintenance_margin * abs(new_units)
        hit = (new_units != 0.0) & (
            (new_equity + new_units * (low - close_next) - margin * low <= 0.0)
            | (new_equity + new_units * (high - close_next) - margin * high <= 0.0))
        if not next_open:  # held from close[t], outside bar t+1's range
            hit = hit | ((new_units != 0.0) & (
                new_equity + new_units * (reference - close_next) - margin * reference <= 0.0))
        if _any(hit):  # skipped work: every account below would select its unliquidated value
            (new_units, new_equity, position_pnl, fee, spread_cost, slippage_cost,
             liquidated_units, liquidation_price, liquidation_fee, liquidation_spread,
             liquidation_slippage) = _liquidate(
                hit, _sign(new_units), new_units, new_equity, position_pnl, fee, spread_cost,
                slippage_cost, equity, gap_pnl, funding_paid, borrow_paid, reference,
                open_next, range_frac, bar_notional, rates, zero)
    # Not StepFill(...): the float step is call-bound, and the NamedTuple's Python-level
    # __new__ costs about 0.2 to 0.4 us more per step than this one-argument call.
    return _step_fill((
        new_units,
        new_equity,
        traded_units,
        fill_price,
        fee,
        spread_cost,
        slippage_cost,
        funding_paid,
        borrow_paid,
        position_pnl,
        liquidated_units,
        liquidation_price,
        liquidation_fee,
        liquidation_spread,
        liquidation_slippage,
    ))


def _liquidate(
    hit: bool | np.ndarray,
    side: Num,
    units: Num,
    equity_new: Num,
    position_pnl: Num,
    fee: Num,
    spread_cost: Num,
    slippage_cost: Num,
    equity: Num,
    gap_pnl: Num,
    funding_paid: Num,
    borrow_paid: Num,
    reference: Num,
    open_next: Num,
    range_frac: Num,
    bar_notional: Num,
    rates: ExecutionRates,
    zero: Num,
) -> tuple[Num, ...]:
    """The liquidation of the accounts ``hit`` (module docstring); the others keep their
    values, and ``zero`` (execute_step's) in the liquidation fields. ``units`` are held after
    the fill, ``side`` is their sign.

    Returns:
        ``(units, equity, position_pnl, fee, spread_cost, slippage_cost, liquidated_units,
        liquidation_price, liquidation_fee, liquidation_spread_cost,
        liquidation_slippage_cost)``.
    """
    # Equity after every cost of the step, before the bar moves the price.
    equity_at_fill = equity + gap_pnl - fee - spread_cost - slippage_cost - funding_paid
    if rates.borrow:
        equity_at_fill = equity_at_fill - borrow_paid
    one = zero + 1.0
    owed = units * reference - equity_at_fill
    liq_price = owed / _select(hit, units * (1.0 - side * rates.maintenance_margin), one)
    # The first price at or beyond liq_price on the path reference (-> open) -> extreme.
    exit_price = liq_price
    if not rates.next_open:
        exit_price = _select(side * open_next <= side * liq_price, open_next, exit_price)
    exit_price = _select(side * reference <= side * liq_price, reference, exit_price)
    size = abs(units)
    # (Accounts not hit get a notional of 0: their prices here mean nothing.)
    slip = _slippage_rate(_select(hit, size * exit_price, zero), range_frac, bar_notional,
                          rates)
    cost = rates.half_spread + slip  # per unit of notional; the fee is on the fill price
    fee_cost = (1.0 - side * cost) * rates.liquidation_fee_rate
    # Price at which equity after the exit costs is 0: the trader's loss stops there.
    bankrupt_price = owed / _select(hit, units * (1.0 - side * (cost + fee_cost)), one)
    exit_price = _select(side * exit_price < side * bankrupt_price, bankrupt_price, exit_price)

    notional = size * exit_price
    fill = exit_price * (1.0 - side * cost)
    liq_fee = _select(hit, size * fill * rates.liquidation_fee_rate, zero)
    liq_spread = _select(hit, notional * rates.half_spread, zero)
    liq_slippage = _select(hit, notional * slip, zero)
    fee = fee + liq_fee
    spread_cost = spread_cost + liq_spread
    slippage_cost = slippage_cost + liq_slippage
    exit_pnl = units * (exit_price - reference)
    pnl = gap_pnl + exit_pnl if rates.next_open else exit_pnl
    equity_out = equity + pnl - fee - spread_cost - slippage_cost - funding_paid
    if rates.borrow:
        equity_out = equity_out - borrow_paid
    # At the bankruptcy price equity is 0 up to rounding: never below.
    equity_out = _select(equity_out < 0.0, zero - zero, equity_out)
    return (
        _select(hit, units - units, units),  # +0.0: flat
        _select(hit, equity_out, equity_new),
        _select(hit, pnl, position_pnl),
        fee,
        spread_cost,
        slippage_cost,
        _select(hit, -units, zero),
        _select(hit, fill, zero),
        liq_fee,
        liq_spread,
        liq_slippage,
    )
