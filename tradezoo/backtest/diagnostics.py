"""What a backtest's policy is: degenerate-policy flags and the break-even trading cost.

One mechanism for every report that shows them: ``tradezoo backtest``, ``tradezoo run``'s
``report.md`` and the ``compare`` leaderboard (:mod:`tradezoo.agents.leaderboard`, which
applies the same functions to the fold-stitched series of each seed). Definitions, thresholds
and the search are in ``docs/evaluation.md`` ("The leaderboard").

**Flags** (:func:`policy_flags`), on the bars a policy was tested on:

- ``never_trades``: the held exposure is 0 on every bar (no position was ever opened).
- ``constant_action``: every decision asks for the same non-zero target exposure (a policy
  that ignores its inputs; an always-flat one is ``never_trades`` instead).
- ``buy_and_hold_clone``: exposure (the share of bars holding a position, as
  :class:`~tradezoo.backtest.metrics.Metrics` ``exposure``) above
  :data:`CLONE_EXPOSURE` and the Pearson correlation of its per-bar returns with buy-and-hold's
  on the same bars above :data:`CLONE_CORRELATION`.
- ``cost_dominated``: the costs paid (fees, spread, slippage, funding, borrow; the sum over bars
  of ``gross_return - return``, fractions of equity) exceed the absolute gross P&L (the sum of
  the per-bar returns before costs): what trading cost more than whatever edge, positive or
  negative, the positions had.

**Break-even cost** (:func:`break_even_cost_bps`): the one-way trading cost, in bps, at which
the total return is 0. The positions are replayed through
:func:`~tradezoo.backtest.simulation.simulate` with every trading cost of the cost model
(taker and maker fee, half spread, fixed slippage and the slippage models' ``k``) multiplied by
a scale ``s`` (funding and borrow, carry rather than trading costs, unchanged); the one-way
cost at scale ``s`` is ``s * CostModel.one_way_cost_bps`` (fee + half spread + fixed
slippage). The root of the total return in ``s`` is bracketed on ``[0, s_max]`` (``s_max``:
one-way cost :data:`MAX_BREAK_EVEN_BPS`) and narrowed by the Illinois variant of false
position (a bracketing method: every step keeps a sign change, so it converges like bisection
at worst) until the bracket is narrower than ``max(atol_bps, rtol * cost)``. ``NaN`` when the
policy loses money even without trading costs (or never trades); ``inf`` when it still earns
at :data:`MAX_BREAK_EVEN_BPS`. A cost model with zero one-way cost is scaled from a 1 bp fee.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.formatting import format_metric

if TYPE_CHECKING:
    from tradezoo.backtest.simulation import BacktestResult

__all__ = [
    "CLONE_CORRELATION",
    "CLONE_EXPOSURE",
    "FLAG_NAMES",
    "MAX_BREAK_EVEN_BPS",
    "PolicyDiagnostics",
    "Replay",
    "break_even_cost_bps",
    "decided_targets",
    "diagnose",
    "gross_returns",
    "policy_flags",
    "record_test_part",
    "scaled_costs",
]

FLAG_NAMES: tuple[str, ...] = (
    "never_trades", "constant_action", "buy_and_hold_clone", "cost_dominated")
"""Every flag, in the order reports list them."""
CLONE_EXPOSURE = 0.95
"""``buy_and_hold_clone`` needs an exposure (share of bars in the market) above this."""
CLONE_CORRELATION = 0.95
"""... and a correlation of per-bar returns with buy-and-hold above this."""
MAX_BREAK_EVEN_BPS = 5000.0
"""Upper end of the break-even search, one-way bps (50 % of the notional per side)."""
TRADING_COST_FIELDS: tuple[str, ...] = (
    "taker_fee_bps", "maker_fee_bps", "half_spread_bps", "slippage_bps", "slippage_k")
"""The :class:`CostModel` fields a cost scale multiplies (funding and borrow are carry)."""


# ------------------------------------------------------------------------------ series


def gross_returns(result: BacktestResult) -> pd.Series:
    """Per-bar returns before costs, shape [n-1] on ``result.returns``' index.

    ``(equity[t] - equity[t-1] + costs[t]) / equity[t-1]`` with ``costs[t]`` the sum of the
    bar's cost lines (fee, spread, slippage, funding, borrow; quote currency), so
    ``gross - returns`` is the cost of each bar as a fraction of equity; 0 after equity
    reached 0.
    """
    equity = result.equity.to_numpy(dtype=np.float64)
    costs = result.costs.sum(axis=1).to_numpy(dtype=np.float64)
    before = equity[:-1]
    change = np.diff(equity) + costs[1:]
    gross = np.divide(change, before, out=np.zeros_like(change), where=before > 0.0)
    return pd.Series(gross, index=result.returns.index, name="gross_returns")


def decided_targets(targets: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """The target in force at each decision bar: ``simulate``'s rule applied to its
    ``positions`` argument (NaN keeps the previous target, 0 before the first finite one), all
    bars but the last (whose decision has no bar to fill on). Shape [n-1]."""
    values = np.asarray(pd.Series(np.asarray(targets, dtype=np.float64)).ffill().fillna(0.0))
    return values[:-1]


def record_test_part(result: BacktestResult,
                 targets: Sequence[float] | np.ndarray | pd.Series) -> dict[str, Any]:
    """The ``test`` section of a cell record (docs/evaluation.md, "The leaderboard"): plain,
    JSON-ready lists.

    Args:
        result: the backtest of the cell's test part.
        targets: the ``positions`` argument ``result`` was simulated with, length n (NaN
            allowed: keep the previous target); a Series is aligned on the backtest's bars
            (a PPO evaluation's targets, which lack the last bar's decision, get NaN there).

    Returns:
        ``timestamps`` [n] (ISO 8601, the backtest's bars), ``returns``, ``gross_returns``,
        ``benchmark_returns`` [n-1] (on ``timestamps[1:]``), ``positions`` [n] (held exposure),
        ``targets`` [n] (``None`` where NaN), and ``fill``, ``rebalance``,
        ``initial_equity`` of the run (what a replay needs besides the bars and the costs).
    """
    if isinstance(targets, pd.Series):
        targets = targets.reindex(result.equity.index)
    values = np.asarray(targets, dtype=np.float64)
    if values.shape != (len(result.equity),):
        raise ValueError(f"targets must hold one target per bar of the backtest "
                         f"({len(result.equity)}), got shape {values.shape}")
    config = result.config
    return {
        "timestamps": [stamp.isoformat() for stamp in result.equity.index],
        "returns": result.returns.to_numpy(dtype=np.float64).tolist(),
        "gross_returns": gross_returns(result).to_numpy().tolist(),
        "benchmark_returns": result.benchmark_returns.to_numpy(dtype=np.float64).tolist(),
        "positions": result.positions.to_numpy(dtype=np.float64).tolist(),
        "targets": [None if math.isnan(v) else v for v in values.tolist()],
        "fill": config.get("fill", "next_open"),
        "rebalance": config.get("rebalance", "on_change"),
        "initial_equity": float(config.get("initial_equity", 1.0)),
    }


# ------------------------------------------------------------------------------- flags


def policy_flags(
    *,
    targets: np.ndarray,
    positions: np.ndarray,
    returns: np.ndarray,
    gross: np.ndarray,
    benchmark_returns: np.ndarray,
) -> list[str]:
    """The :data:`FLAG_NAMES` that hold for one policy (module docstring).

    Args:
        targets: decided targets at the decision bars (:func:`decided_targets`; stitched
            folds concatenated), shape [m].
        positions: held exposure over each return bar (``result.positions[1:]``), shape [n].
        returns: per-bar net returns, shape [n].
        gross: per-bar returns before costs (:func:`gross_returns`), shape [n].
        benchmark_returns: buy-and-hold's per-bar returns on the same bars, shape [n].

    Returns:
        The flags that hold, in :data:`FLAG_NAMES` order.
    """
    positions = np.asarray(positions, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64)
    gross = np.asarray(gross, dtype=np.float64)
    benchmark = np.asarray(benchmark_returns, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = returns.size
    for name, values in (("positions", positions), ("gross", gross),
                         ("benchmark_returns", benchmark)):
        if values.size != n:
            raise ValueError(f"policy_flags: {name} has {values.size} values, returns {n}: "
                             "one value per return bar")
    flags: list[str] = []
    never = not np.any(positions != 0.0)
    if never:
        flags.append("never_trades")
    elif targets.size and np.all(targets == targets[0]) and targets[0] != 0.0:
        flags.append("constant_action")
    exposure = float(np.count_nonzero(positions)) / n if n else 0.0
    if exposure > CLONE_EXPOSURE and _correlation(returns, benchmark) > CLONE_CORRELATION:
        flags.append("buy_and_hold_clone")
    costs = float(np.sum(gross - returns))
    if costs > 0.0 and costs > abs(float(np.sum(gross))):
        flags.append("cost_dominated")
    return flags


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either series is constant (or too short)."""
    if a.size < 2 or np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------ break-even


def scaled_costs(costs: CostModel, scale: float) -> CostModel:
    """``costs`` with every :data:`TRADING_COST_FIELDS` multiplied by ``scale`` (>= 0)."""
    if not (math.isfinite(scale) and scale >= 0.0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return replace(costs, **{name: getattr(costs, name) * scale
                             for name in TRADING_COST_FIELDS})


def _unit_costs(costs: CostModel) -> CostModel:
    """The model a scale multiplies: ``costs``, or a 1 bp fee when its one-way cost is 0."""
    if costs.one_way_cost_bps > 0.0:
        return costs
    return replace(costs, taker_fee_bps=1.0, maker_fee_bps=1.0)


@dataclass(frozen=True)
class Replay:
    """One backtest to replay at scaled costs: ``simulate(bars, targets, costs=..., ...)``.

    Attributes:
        bars: the backtest's bars (n rows); targets: its ``positions`` argument [n].
        costs: the cost model at scale 1.
        fill, rebalance, initial_equity, periods_per_year: as given to ``simulate``.
    """

    bars: pd.DataFrame
    targets: np.ndarray
    costs: CostModel
    fill: str = "next_open"
    rebalance: str = "on_change"
    initial_equity: float = 1.0
    periods_per_year: float | None = None

    def equity(self, scale: float | None = None) -> np.ndarray:
        """Equity at each close of the replay with the trading costs multiplied by ``scale``
        (``None``: the cost model as given; a model with zero one-way cost is scaled from a
        1 bp fee), by :func:`~tradezoo.backtest.simulation.simulate_equity` (``simulate``'s
        engine run, equal to ``simulate(...).equity``). Shape [n]."""
        from tradezoo.backtest.simulation import simulate_equity

        costs = self.costs if scale is None else scaled_costs(_unit_costs(self.costs), scale)
        return simulate_equity(self.bars, self.targets, costs=costs,
                               fill=self.fill,  # type: ignore[arg-type]
                               rebalance=self.rebalance,  # type: ignore[arg-type]
                               initial_equity=self.initial_equity,
                               periods_per_year=self.periods_per_year).to_numpy()

    def returns(self, scale: float | None = None) -> np.ndarray:
        """Per-bar returns of :meth:`equity` as ``simulate`` computes them, shape [n-1]."""
        from tradezoo.backtest.simulation import _simple_returns

        return _simple_returns(self.equity(scale))

    def total_return(self, scale: float | None = None) -> float:
        """Total return of the replay at ``scale``."""
        equity = self.equity(scale)
        return float(equity[-1] / equity[0] - 1.0)


def _stitched_total_return(seeds: Sequence[Sequence[Replay]], scale: float) -> float:
    """Mean over seeds of the compounded total return of each seed's replays (its folds)."""
    totals = [math.prod(1.0 + replay.total_return(scale) for replay in folds) - 1.0
              for folds in seeds]
    return float(np.mean(totals))


def break_even_cost_bps(
    seeds: Sequence[Sequence[Replay]],
    *,
    rtol: float = 1e-3,
    atol_bps: float = 0.01,
    max_cost_bps: float = MAX_BREAK_EVEN_BPS,
    max_iterations: int = 100,
) -> float:
    """One-way cost (bps) at which the mean total return over ``seeds`` is 0 (module docstring).

    Args:
        seeds: for each seed, its replays (folds) in time order; a seed's total return is the
            compounded total return of its folds, the row's the mean over seeds. Every replay
            has the same cost model.
        rtol, atol_bps: stop when the bracket is narrower than ``max(atol_bps, rtol * cost)``.
        max_cost_bps: upper end of the search, one-way bps.
        max_iterations: cap on the replays per seed and fold.

    Returns:
        The break-even one-way cost in bps (the bracket's midpoint); NaN when the total return
        is <= 0 without trading costs; inf when it is > 0 at ``max_cost_bps``.
    """
    replays = [replay for folds in seeds for replay in folds]
    if not replays:
        raise ValueError("break_even_cost_bps: no replay to search")
    base = replays[0].costs
    if any(replay.costs != base for replay in replays):
        raise ValueError("break_even_cost_bps: every replay must have the same cost model")
    unit_bps = _unit_costs(base).one_way_cost_bps
    s_max = max_cost_bps / unit_bps

    def f(scale: float) -> float:
        return _stitched_total_return(seeds, scale)

    at_zero = f(0.0)
    if not at_zero > 0.0:
        return math.nan
    lo, f_lo, hi = 0.0, at_zero, min(1.0, s_max)
    f_hi = f(hi)
    if f_hi > 0.0:  # the root is above scale 1: aim past the secant's root, then double
        lo, f_lo = hi, f_hi
        slope = at_zero - f_hi
        guess = at_zero / slope if slope > 0.0 else 2.0 * hi
        hi = min(s_max, max(2.0 * lo, 1.25 * guess))
        f_hi = f(hi)
        while f_hi > 0.0:
            if hi >= s_max:
                return math.inf
            lo, f_lo = hi, f_hi
            hi = min(s_max, 2.0 * hi)
            f_hi = f(hi)
    return _illinois(f, lo, f_lo, hi, f_hi, unit_bps, rtol, atol_bps,
                     max_iterations) * unit_bps


def _illinois(f: Callable[[float], float], lo: float, f_lo: float, hi: float, f_hi: float,
              unit_bps: float, rtol: float, atol_bps: float, max_iterations: int) -> float:
    """Root of ``f`` in ``[lo, hi]`` (``f(lo) > 0 >= f(hi)``) by the Illinois method."""
    side = 0
    for _ in range(max_iterations):
        width_bps = (hi - lo) * unit_bps
        if width_bps <= max(atol_bps, rtol * lo * unit_bps):
            break
        guess = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        # keep the guess strictly inside, at least 1 % of the bracket from each end
        margin = 0.01 * (hi - lo)
        guess = min(max(guess, lo + margin), hi - margin)
        value = f(guess)
        if value > 0.0:
            lo, f_lo = guess, value
            if side == -1:
                f_hi /= 2.0
            side = -1
        else:
            hi, f_hi = guess, value
            if side == 1:
                f_lo /= 2.0
            side = 1
        if value == 0.0:
            return guess
    return (lo + hi) / 2.0


# ------------------------------------------------------------------------ single runs


@dataclass(frozen=True)
class PolicyDiagnostics:
    """Flags and break-even cost of one backtest (module docstring).

    Attributes:
        flags: the :data:`FLAG_NAMES` that hold.
        break_even_cost_bps: one-way bps; NaN or inf as :func:`break_even_cost_bps` says.
    """

    flags: tuple[str, ...]
    break_even_cost_bps: float

    def to_dict(self) -> dict[str, Any]:
        """``{"flags": [...], "break_even_cost_bps": float, "break_even": text}`` (the text
        tells NaN from inf once JSON has made both ``null``)."""
        return {"flags": list(self.flags), "break_even_cost_bps": self.break_even_cost_bps,
                "break_even": self.break_even_text()}

    def flags_text(self) -> str:
        """The flags comma-separated, ``none`` when no flag holds."""
        return ", ".join(self.flags) or "none"

    def break_even_text(self) -> str:
        """The break-even cost in words: ``12.345 bps one-way``, or why there is none."""
        cost = self.break_even_cost_bps
        if math.isnan(cost):
            return "none (no profit before trading costs)"
        if math.isinf(cost):
            return f"above {MAX_BREAK_EVEN_BPS:,.0f} bps one-way"
        return f"{format_metric('break_even_cost_bps', cost)} bps one-way"

    def summary(self) -> str:
        """One line: ``policy flags: ...; break-even cost: ...``."""
        return f"policy flags: {self.flags_text()}; break-even cost: {self.break_even_text()}"


def diagnose(result: BacktestResult, bars: pd.DataFrame,
             targets: Sequence[float] | np.ndarray | pd.Series,
             costs: CostModel | None = None) -> PolicyDiagnostics:
    """Flags and break-even cost of a single backtest.

    Args:
        result: the backtest; bars: the bars it ran on (n rows); targets: its ``positions``
            argument [n]; costs: its cost model (default ``result.config["costs"]``).
    """
    values = np.asarray(targets, dtype=np.float64)
    if len(bars) != len(result.equity) or values.shape != (len(bars),):
        raise ValueError(f"diagnose: bars ({len(bars)} rows) and targets (shape "
                         f"{values.shape}) must match the backtest's {len(result.equity)} bars")
    config = result.config
    model = costs if costs is not None else CostModel.from_dict(config["costs"])
    flags = policy_flags(
        targets=decided_targets(values),
        positions=result.positions.to_numpy(dtype=np.float64)[1:],
        returns=result.returns.to_numpy(dtype=np.float64),
        gross=gross_returns(result).to_numpy(),
        benchmark_returns=result.benchmark_returns.to_numpy(dtype=np.float64),
    )
    replay = Replay(bars=bars, targets=values, costs=model, fill=config.get("fill", "next_open"),
                    rebalance=config.get("rebalance", "on_change"),
                    initial_equity=float(config.get("initial_equity", 1.0)),
                    periods_per_year=config.get("periods_per_year"))
    return PolicyDiagnostics(flags=tuple(flags), break_even_cost_bps=break_even_cost_bps(
        [[replay]]))
