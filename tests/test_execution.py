"""The execution engine: a hand-computed three-step scenario, the reconciliation identity and an
independent cash ledger over random accounts (every slippage model, both fill rules, borrow and
funding on), the float path against the array path, the rebalance flag, funding signs, borrow,
slippage formulas, and the validation of ``CostModel`` and ``execution_rates``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import fields

import numpy as np
import pytest

from tradezoo.backtest.costs import BPS, CostModel
from tradezoo.backtest.execution import (
    MIN_BAR_NOTIONAL,
    BarTerms,
    StepFill,
    bar_terms_of,
    execute_step,
    execution_rates,
)

REL = 1e-12

# --------------------------------------------------------------- hand-computed scenario

# Costs of the scenario: taker fee 10 bps, half spread 5 bps, fixed slippage 2 bps, funding on.
SCENARIO_COSTS = CostModel(
    taker_fee_bps=10.0, half_spread_bps=5.0, slippage="fixed", slippage_bps=2.0, funding=True
)


def test_three_steps_fill_fee_funding_and_reversal_by_hand() -> None:
    """Bars 0..3 (prices in USDT) and the decisions taken at their closes:

    ======  =====  =====  ============  ====================================
    bar     open   close  funding rate  decision at the close
    ======  =====  =====  ============  ====================================
    0              100                  go long, exposure +1
    1       101    102    0             hold (no trade)
    2       103    101    +0.0001       reverse to short, exposure -1
    3       100     98    +0.0002
    ======  =====  =====  ============  ====================================

    Initial equity 1000 USDT, flat. ``fill="next_open"``: each order fills at the next open,
    funding is charged at that open on the position held before the fill.
    """
    rates = execution_rates(SCENARIO_COSTS, fill="next_open", periods_per_year=8760.0)
    fee_rate, half_spread, slip = 10 * 1e-4, 5 * 1e-4, 2 * 1e-4

    # Step 0: decide at close[0] = 100, fill at open[1] = 101, mark at close[1] = 102.
    s0 = execute_step(0.0, 1000.0, 1.0, True, 100.0, 101.0, 102.0, 0.0, 0.0, 1e12, rates)
    units0 = 1000.0 / 101.0  # exposure 1 of the 1000 equity at the fill reference price
    fill0 = 101.0 * (1 + half_spread + slip)  # a buy pays up 7 bps: 101.0707
    fee0 = units0 * fill0 * fee_rate  # 1000 * 1.0007 * 0.001 = 1.0007
    spread0 = 1000.0 * half_spread  # 0.5 on the 1000 notional
    slippage0 = 1000.0 * slip  # 0.2
    pnl0 = units0 * (102.0 - 101.0)  # the new position from open[1] to close[1]
    equity1 = 1000.0 + pnl0 - fee0 - spread0 - slippage0
    assert units0 == pytest.approx(9.900990099009901, rel=1e-15)
    assert fee0 == pytest.approx(1.0007, rel=1e-13)
    assert equity1 == pytest.approx(1008.2002900990099, rel=1e-15)
    assert_fill(s0, units=units0, equity=equity1, traded=units0, fill=fill0, fee=fee0,
                spread=spread0, slippage=slippage0, funding=0.0, pnl=pnl0)

    # Step 1: hold. Gap close[1] 102 -> open[2] 103, funding stamp at open[2] charged on the
    # long (a positive rate: longs pay), then open[2] 103 -> close[2] 101.
    s1 = execute_step(s0.units, s0.equity, 1.0, False, 102.0, 103.0, 101.0, 1e-4, 0.0, 1e12,
                      rates)
    funding1 = 1e-4 * 103.0 * units0  # 0.10198 USDT
    pnl1 = units0 * (103.0 - 102.0) + units0 * (101.0 - 103.0)  # gap + intrabar = -units0
    equity2 = equity1 + pnl1 - funding1
    assert funding1 == pytest.approx(0.10198019801980198, rel=1e-13)
    assert equity2 == pytest.approx(998.1973198019801, rel=1e-15)
    assert_fill(s1, units=units0, equity=equity2, traded=0.0, fill=103.0, fee=0.0, spread=0.0,
                slippage=0.0, funding=funding1, pnl=pnl1)

    # Step 2: reverse. Gap close[2] 101 -> open[3] 100 on the long; funding at open[3] on the
    # long (the old position: the order fills just after the opening print); then sell enough
    # to hold exposure -1 of the equity left before the fill.
    s2 = execute_step(s1.units, s1.equity, -1.0, True, 101.0, 100.0, 98.0, 2e-4, 0.0, 1e12,
                      rates)
    gap2 = units0 * (100.0 - 101.0)
    funding2 = 2e-4 * 100.0 * units0  # 0.19802 USDT
    equity_before_fill = equity2 + gap2 - funding2  # 988.0983...
    units2 = -equity_before_fill / 100.0  # short exposure 1
    traded2 = units2 - units0  # sell the long and the short at once: about -19.78 units
    fill2 = 100.0 * (1 - half_spread - slip)  # a sell receives 7 bps less: 99.93
    fee2 = abs(traded2) * fill2 * fee_rate
    spread2 = abs(traded2) * 100.0 * half_spread
    slippage2 = abs(traded2) * 100.0 * slip
    pnl2 = gap2 + units2 * (98.0 - 100.0)  # the short earns open[3] 100 -> close[3] 98
    equity3 = equity2 + pnl2 - fee2 - spread2 - slippage2 - funding2
    assert equity_before_fill == pytest.approx(988.0983099009901, rel=1e-15)
    assert traded2 == pytest.approx(-19.781973198019802, rel=1e-14)
    assert fee2 == pytest.approx(1.9768125816781188, rel=1e-13)
    assert equity3 == pytest.approx(1004.4987253934704, rel=1e-14)
    assert_fill(s2, units=units2, equity=equity3, traded=traded2, fill=fill2, fee=fee2,
                spread=spread2, slippage=slippage2, funding=funding2, pnl=pnl2)

    # The same three steps on arrays of two identical accounts give the same numbers.
    ones = np.ones(2)
    a0 = execute_step(0.0 * ones, 1000.0 * ones, ones, np.ones(2, bool), 100.0 * ones,
                      101.0 * ones, 102.0 * ones, 0.0 * ones, 0.0 * ones, 1e12 * ones, rates)
    a1 = execute_step(a0.units, a0.equity, ones, np.zeros(2, bool), 102.0 * ones,
                      103.0 * ones, 101.0 * ones, 1e-4 * ones, 0.0 * ones, 1e12 * ones, rates)
    a2 = execute_step(a1.units, a1.equity, -ones, np.ones(2, bool), 101.0 * ones,
                      100.0 * ones, 98.0 * ones, 2e-4 * ones, 0.0 * ones, 1e12 * ones, rates)
    for scalar, array in ((s0, a0), (s1, a1), (s2, a2)):
        for name in StepFill._fields:
            assert np.all(getattr(array, name) == getattr(scalar, name)), name


def assert_fill(step: StepFill, *, units: float, equity: float, traded: float, fill: float,
                fee: float, spread: float, slippage: float, funding: float, pnl: float) -> None:
    expected = {
        "units": units, "equity": equity, "traded_units": traded, "fill_price": fill,
        "fee": fee, "spread_cost": spread, "slippage_cost": slippage, "funding_paid": funding,
        "borrow_paid": 0.0, "position_pnl": pnl,
    }
    for name, value in expected.items():
        got = getattr(step, name)
        assert type(got) is float, f"{name} is {type(got).__name__}, not a Python float"
        assert math.isclose(got, value, rel_tol=REL, abs_tol=1e-12), (name, got, value)


# ------------------------------------------------------------ random accounts, N at once

N_ACCOUNTS = 400


def random_market(seed: int) -> dict[str, np.ndarray]:
    """N accounts at one step: signed units (some flat), equity > 0, targets in [-2, 2], a
    random trade mask, prices near 100, funding rates of both signs (some 0), bar ranges, and
    bar notionals from tiny (participation capped, one zero-volume bar at the floor) to deep."""
    rng = np.random.default_rng(seed)
    n = N_ACCOUNTS
    close_prev = 100.0 * np.exp(rng.normal(0, 0.2, n))
    open_next = close_prev * np.exp(rng.normal(0, 0.01, n))
    close_next = open_next * np.exp(rng.normal(0, 0.02, n))
    equity = np.exp(rng.normal(np.log(1e4), 1.0, n))
    units = rng.normal(0, 1, n) * equity / close_prev * (rng.random(n) < 0.8)
    bar_notional = np.exp(rng.uniform(np.log(1e2), np.log(1e9), n))
    bar_notional[0] = MIN_BAR_NOTIONAL
    return {
        "units": units,
        "equity": equity,
        "target_exposure": rng.uniform(-2, 2, n) * (rng.random(n) < 0.9),
        "trade": rng.random(n) < 0.7,
        "close_prev": close_prev,
        "open_next": open_next,
        "close_next": close_next,
        "funding_rate": rng.normal(0, 3e-4, n) * (rng.random(n) < 0.5),
        "range_frac": rng.uniform(0, 0.05, n),
        "bar_notional": bar_notional,
    }


COST_CASES = {
    "fixed": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="fixed",
                       slippage_bps=1.0, funding=True, borrow_rate_annual=0.05),
    "volatility": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volatility",
                            slippage_bps=1.0, slippage_k=0.1, funding=True,
                            borrow_rate_annual=0.05),
    "volume": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volume",
                        slippage_bps=1.0, slippage_k=0.05, max_participation=0.2,
                        funding=True, borrow_rate_annual=0.05),
}
FILLS = ("next_open", "close")


def run_arrays(market: dict[str, np.ndarray], costs: CostModel, fill: str) -> StepFill:
    rates = execution_rates(costs, fill=fill, periods_per_year=8760.0)  # type: ignore[arg-type]
    return execute_step(**market, rates=rates)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("model", list(COST_CASES))
def test_identity_and_cash_ledger(model: str, fill: str) -> None:
    market = random_market(seed=10 * list(COST_CASES).index(model) + FILLS.index(fill))
    step = run_arrays(market, COST_CASES[model], fill)
    equity, units = market["equity"], market["units"]
    scale = np.maximum(np.abs(equity), np.abs(step.equity))

    # The identity of the module docstring, relative 1e-9.
    booked = (step.position_pnl - step.fee - step.spread_cost - step.slippage_cost
              - step.funding_paid - step.borrow_paid)
    assert np.all(np.abs((step.equity - equity) - booked) <= 1e-9 * scale)

    # An independent cash ledger: cash = equity - units * close_prev; the trade pays its fill
    # price (which carries spread and slippage), then fee, funding and borrow leave the cash;
    # the new equity is cash plus the new units at close_next.
    cash = (equity - units * market["close_prev"] - step.traded_units * step.fill_price
            - step.fee - step.funding_paid - step.borrow_paid)
    assert np.all(np.abs(cash + step.units * market["close_next"] - step.equity) <= 1e-9 * scale)

    # Costs are paid, never received; the fill price moves against the trade.
    for cost in (step.fee, step.spread_cost, step.slippage_cost, step.borrow_paid):
        assert np.all(cost >= 0)
    reference = market["open_next"] if fill == "next_open" else market["close_prev"]
    assert np.all(step.fill_price[step.traded_units > 0] > reference[step.traded_units > 0])
    assert np.all(step.fill_price[step.traded_units < 0] < reference[step.traded_units < 0])
    idle = step.traded_units == 0
    assert np.all(step.fill_price[idle] == reference[idle])
    assert np.all(step.fee[idle] == 0)

    # Trading accounts end at the target exposure of the equity before the fill.
    funding_before = step.funding_paid if fill == "next_open" else 0.0
    before_fill = equity + units * (reference - market["close_prev"]) - funding_before
    trading = market["trade"]
    np.testing.assert_allclose(
        (step.units * reference)[trading],
        (market["target_exposure"] * before_fill)[trading],
        rtol=1e-12, atol=1e-9 * float(equity.max()),
    )
    # Borrow: one bar of the annual rate on the new short notional at open[t+1].
    borrow = np.where(step.units < 0, -step.units * market["open_next"], 0.0) * (0.05 / 8760)
    np.testing.assert_allclose(step.borrow_paid, borrow, rtol=1e-12, atol=0)
    assert np.any(step.borrow_paid > 0)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("model", list(COST_CASES))
def test_float_path_equals_array_path(model: str, fill: str) -> None:
    market = random_market(seed=100 + 10 * list(COST_CASES).index(model) + FILLS.index(fill))
    rates = execution_rates(COST_CASES[model], fill=fill, periods_per_year=8760.0)  # type: ignore[arg-type]
    arrays = execute_step(**market, rates=rates)
    for i in range(N_ACCOUNTS):
        scalars = {name: value[i].item() for name, value in market.items()}
        single = execute_step(**scalars, rates=rates)
        for name in StepFill._fields:
            got = getattr(single, name)
            assert type(got) is float, (name, type(got))
            assert got == getattr(arrays, name)[i], (model, fill, i, name)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("model", list(COST_CASES))
def test_precomputed_bar_terms_give_the_same_bits(model: str, fill: str) -> None:
    """execute_step(..., bar_terms=bar_terms_of(...)) (the vector envs gather the terms per
    row) equals the step that computes them itself, to the bit, on floats and on arrays, with
    and without funding."""
    market = random_market(seed=200 + 10 * list(COST_CASES).index(model) + FILLS.index(fill))
    for costs in (COST_CASES[model], dataclasses.replace(COST_CASES[model], funding=False)):
        rates = execution_rates(costs, fill=fill, periods_per_year=8760.0)  # type: ignore[arg-type]
        prices = [market[key] for key in ("close_prev", "open_next", "close_next",
                                           "funding_rate")]
        terms = bar_terms_of(*prices, rates)
        assert isinstance(terms, BarTerms)
        reference = market["open_next"] if fill == "next_open" else market["close_prev"]
        np.testing.assert_array_equal(terms.price_gap, reference - market["close_prev"])
        np.testing.assert_array_equal(terms.drift, market["close_next"] - reference)
        own, given = execute_step(**market, rates=rates), execute_step(
            **market, rates=rates, bar_terms=terms)
        for name in StepFill._fields:
            assert getattr(own, name).tobytes() == getattr(given, name).tobytes(), name
        # The given terms are the ones used: another drift moves the mark.
        moved = execute_step(**market, rates=rates, bar_terms=terms._replace(
            drift=terms.drift + 1.0))
        held = own.units != 0
        assert np.all(moved.position_pnl[held] != own.position_pnl[held])
        for i in range(0, N_ACCOUNTS, 7):
            scalars = {name: value[i].item() for name, value in market.items()}
            one_terms = bar_terms_of(*(p[i].item() for p in prices), rates)
            own_one = execute_step(**scalars, rates=rates)
            given_one = execute_step(**scalars, rates=rates, bar_terms=one_terms)
            for name in StepFill._fields:
                a, b = getattr(own_one, name), getattr(given_one, name)
                assert type(b) is float and math.copysign(1.0, a) == math.copysign(1.0, b)
                assert a == b or (math.isnan(a) and math.isnan(b)), (i, name)


def test_trade_false_keeps_units_and_costs_nothing_but_funding_and_borrow() -> None:
    market = random_market(seed=5)
    market["trade"] = np.zeros(N_ACCOUNTS, bool)
    for fill in FILLS:
        step = run_arrays(market, COST_CASES["volume"], fill)
        assert np.array_equal(step.units, market["units"])
        assert np.all(step.traded_units == 0)
        for cost in (step.fee, step.spread_cost, step.slippage_cost):
            assert np.all(cost == 0)
        reference = market["open_next"] if fill == "next_open" else market["close_prev"]
        np.testing.assert_allclose(
            step.position_pnl, market["units"] * (market["close_next"] - market["close_prev"]),
            rtol=1e-9, atol=1e-9,
        )
        assert np.array_equal(step.fill_price, reference)


def funding_step(units: float, target: float, trade: bool, rate: float, fill: str) -> StepFill:
    costs = CostModel(taker_fee_bps=0.0, funding=True)
    rates = execution_rates(costs, fill=fill, periods_per_year=8760.0)  # type: ignore[arg-type]
    return execute_step(units, 1000.0, target, trade, 100.0, 100.0, 100.0, rate, 0.0, 1e12,
                        rates)


def test_funding_signs() -> None:
    # next_open: the position held at the stamp (the old one) pays rate * units * open[t+1].
    long_pays = funding_step(10.0, 1.0, False, 1e-4, "next_open")
    assert long_pays.funding_paid == pytest.approx(1e-4 * 10.0 * 100.0, rel=1e-15)  # 0.1
    assert long_pays.equity == pytest.approx(1000.0 - 0.1, rel=1e-15)
    short_receives = funding_step(-10.0, -1.0, False, 1e-4, "next_open")
    assert short_receives.funding_paid == pytest.approx(-0.1, rel=1e-15)
    assert short_receives.equity == pytest.approx(1000.0 + 0.1, rel=1e-15)
    long_receives_negative = funding_step(10.0, 1.0, False, -1e-4, "next_open")
    assert long_receives_negative.funding_paid == pytest.approx(-0.1, rel=1e-15)
    assert funding_step(0.0, 0.0, False, 1e-4, "next_open").funding_paid == 0.0
    # A flat account that buys at open[t+1] is not charged at that stamp...
    assert funding_step(0.0, 1.0, True, 1e-4, "next_open").funding_paid == 0.0
    # ...and a long that closes at open[t+1] still is.
    closing = funding_step(10.0, 0.0, True, 1e-4, "next_open")
    assert closing.funding_paid == pytest.approx(0.1, rel=1e-15)
    assert closing.units == 0.0


def test_close_fill_funding_uses_the_new_position() -> None:
    # fill="close": the order fills at close[t], before the stamp at open[t+1], so the new
    # position (10 units long, exposure 1 of 1000 at 100) pays, not the old flat one.
    opened = funding_step(0.0, 1.0, True, 1e-4, "close")
    assert opened.units == pytest.approx(10.0, rel=1e-15)
    assert opened.funding_paid == pytest.approx(1e-4 * 10.0 * 100.0, rel=1e-15)
    closed = funding_step(10.0, 0.0, True, 1e-4, "close")
    assert closed.funding_paid == 0.0
    reversed_ = funding_step(10.0, -1.0, True, 1e-4, "close")
    assert reversed_.funding_paid == pytest.approx(-0.1, rel=1e-15)  # the new short receives


def test_funding_off_charges_nothing() -> None:
    rates = execution_rates(CostModel(funding=False), periods_per_year=8760.0)
    step = execute_step(10.0, 1000.0, 1.0, False, 100.0, 100.0, 100.0, 0.01, 0.0, 1e12, rates)
    assert step.funding_paid == 0.0


def test_slippage_models_by_hand() -> None:
    # Buy 10 units at open 100 (notional 1000): 2 bps fixed in every model.
    def slip(costs: CostModel, range_frac: float, bar_notional: float) -> float:
        rates = execution_rates(costs, periods_per_year=8760.0)
        step = execute_step(0.0, 1000.0, 1.0, True, 100.0, 100.0, 100.0, 0.0, range_frac,
                            bar_notional, rates)
        return step.slippage_cost / 1000.0

    base = {"taker_fee_bps": 0.0, "slippage_bps": 2.0, "slippage_k": 0.1}
    assert slip(CostModel(slippage="fixed", **base), 0.03, 1e6) == pytest.approx(2e-4)
    # volatility: 2 bps + 0.1 * range 0.03.
    assert slip(CostModel(slippage="volatility", **base), 0.03, 1e6) == pytest.approx(
        2e-4 + 0.1 * 0.03, rel=1e-12)
    # volume: 2 bps + 0.1 * sqrt(participation 1000 / 1e5 = 0.01).
    assert slip(CostModel(slippage="volume", **base), 0.03, 1e5) == pytest.approx(
        2e-4 + 0.1 * 0.1, rel=1e-12)
    # a zero-volume bar (notional floored) hits the participation cap 0.25: sqrt(0.25) = 0.5.
    capped = CostModel(slippage="volume", max_participation=0.25, **base)
    assert slip(capped, 0.03, MIN_BAR_NOTIONAL) == pytest.approx(2e-4 + 0.1 * 0.5, rel=1e-12)
    # Far past the cap (participation 1e17) the cap holds, not 1e17 - (1e17 - 0.25) = 0.
    assert slip(capped, 0.03, 1e-14) == pytest.approx(2e-4 + 0.1 * 0.5, rel=1e-12)


def test_volume_slippage_stays_finite_for_a_huge_order_on_a_zero_volume_bar() -> None:
    # 1e9 of notional over the floored notional 1e-300 would overflow to inf (then NaN).
    costs = CostModel(taker_fee_bps=0.0, slippage="volume", slippage_k=0.1,
                      max_participation=0.25)
    rates = execution_rates(costs, periods_per_year=8760.0)
    step = execute_step(0.0, 1e9, 1.0, True, 100.0, 100.0, 100.0, 0.0, 0.0, MIN_BAR_NOTIONAL,
                        rates)
    assert step.slippage_cost == pytest.approx(1e9 * 0.1 * 0.5, rel=1e-12)
    assert math.isfinite(step.equity)
    arrays = execute_step(np.zeros(2), np.full(2, 1e9), np.ones(2), np.ones(2, bool),
                          np.full(2, 100.0), np.full(2, 100.0), np.full(2, 100.0), np.zeros(2),
                          np.zeros(2), np.full(2, MIN_BAR_NOTIONAL), rates)
    assert np.all(arrays.slippage_cost == step.slippage_cost)


def test_maker_orders_pay_the_maker_fee() -> None:
    costs = CostModel(taker_fee_bps=5.5, maker_fee_bps=2.0, order_type="maker")
    rates = execution_rates(costs, periods_per_year=8760.0)
    assert rates.fee_rate == pytest.approx(2.0 * BPS)
    step = execute_step(0.0, 1000.0, 1.0, True, 100.0, 100.0, 100.0, 0.0, 0.0, 1e12, rates)
    assert step.fee == pytest.approx(1000.0 * 2.0 * BPS, rel=1e-12)


# ---------------------------------------------------------------------- CostModel


NUMERIC_FIELDS = [
    "taker_fee_bps",
    "maker_fee_bps",
    "half_spread_bps",
    "slippage_bps",
    "slippage_k",
    "max_participation",
    "borrow_rate_annual",
]


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_cost_model_rejects_bad_numbers(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"CostModel\.{name} must be a finite number >= 0"):
        CostModel(**{name: value})  # type: ignore[arg-type]


def test_cost_model_rejects_unknown_choices_and_absurd_values() -> None:
    with pytest.raises(ValueError, match=r"CostModel\.slippage must be 'fixed', 'volatility'"):
        CostModel(slippage="sqrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"CostModel\.order_type must be 'taker' or 'maker'"):
        CostModel(order_type="limit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"CostModel\.max_participation must be > 0"):
        CostModel(max_participation=0.0)
    with pytest.raises(ValueError, match="below 10,000 bps"):
        CostModel(taker_fee_bps=1e4)
    with pytest.raises(ValueError, match=r"CostModel\.half_spread_bps must be a finite number"):
        CostModel.bybit_linear(half_spread_bps=-0.5)


def test_presets_have_the_documented_values() -> None:
    bybit = CostModel.bybit_linear()
    assert (bybit.taker_fee_bps, bybit.maker_fee_bps, bybit.half_spread_bps) == (5.5, 2.0, 0.5)
    assert (bybit.slippage, bybit.slippage_bps, bybit.funding) == ("fixed", 1.0, True)
    assert bybit.borrow_rate_annual == 0.0
    assert bybit.one_way_cost_bps == pytest.approx(7.0)
    assert bybit.fee_rate == pytest.approx(5.5e-4)

    equities = CostModel.equities()
    assert (equities.taker_fee_bps, equities.maker_fee_bps) == (1.0, 1.0)
    assert (equities.half_spread_bps, equities.slippage_bps) == (0.5, 1.0)
    assert (equities.funding, equities.borrow_rate_annual) == (False, 0.02)
    assert equities.one_way_cost_bps == pytest.approx(2.5)

    zero = CostModel.zero()
    assert zero.one_way_cost_bps == 0.0
    assert (zero.funding, zero.borrow_rate_annual, zero.half_spread_bps) == (False, 0.0, 0.0)
    assert CostModel.bybit_linear(taker_fee_bps=4.0).taker_fee_bps == 4.0
    assert CostModel(**bybit.to_dict()) == bybit  # type: ignore[arg-type]
    assert {item.name for item in fields(CostModel)} == set(bybit.to_dict())


def test_execution_rates_resolve_the_cost_model() -> None:
    rates = execution_rates(COST_CASES["volume"], fill="close", periods_per_year=365.0)
    assert rates.fee_rate == pytest.approx(5.5e-4)
    assert rates.half_spread == pytest.approx(0.5e-4)
    assert rates.slippage_fixed == pytest.approx(1e-4)
    assert (rates.slippage_k, rates.slippage_model, rates.max_participation) == (0.05, 2, 0.2)
    assert (rates.funding, rates.next_open) == (True, False)
    assert rates.borrow_per_bar == pytest.approx(0.05 / 365.0)


def test_execution_rates_validate_fill_and_periods_per_year() -> None:
    costs = CostModel()
    with pytest.raises(ValueError, match="fill must be 'next_open' or 'close', got 'open'"):
        execution_rates(costs, fill="open")  # type: ignore[arg-type]
    for bad in (0.0, -8760.0, float("nan"), float("inf"), True, "8760"):
        with pytest.raises(ValueError, match="periods_per_year must be a finite number > 0"):
            execution_rates(costs, periods_per_year=bad)  # type: ignore[arg-type]
    assert execution_rates(costs, periods_per_year=np.int64(252)).borrow_per_bar == 0.0
