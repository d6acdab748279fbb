"""What the single env and the batched envs share besides the market: validated settings,
the action -> target exposure rule, rewards, trade records and episode metrics.

Action schemes (class order 0 sell, 1 hold, 2 buy everywhere; ``L = max_leverage``):

- ``"target"`` (default, ``Discrete(3)``): the action is the target exposure:
  0 -> ``-L`` (short; flat, 0, when ``allow_short=False``), 1 -> 0 (flat), 2 -> ``+L`` (long).
- ``"signal"`` (``Discrete(3)``): 2 buy -> ``+L`` (opens a long, reverses a short, keeps a long);
  0 sell -> ``-L`` with ``allow_short`` (closes a long *and* opens a short, reverses, or keeps
  a short), else 0 (closes a long, stays flat); 1 hold -> keeps the current target.
- ``"continuous"`` (``Box(-1, 1, (1,), float32)``): target ``a * L``, floored at 0 without
  shorting.

An action outside the action space raises ``ValueError`` (SB3 clips continuous actions to the
space before stepping; gymnasium's samplers stay inside it); so do ``bool`` and complex
actions, which numbers would otherwise coerce into the space.

Leverage: ``max_leverage`` may not exceed the cost model's
:attr:`~tradezoo.backtest.costs.CostModel.max_leverage` (each dataset's), and a position that
falls to the model's maintenance margin inside a bar is liquidated by the engine
(:mod:`tradezoo.backtest.execution`): the step's info then carries ``"liquidated": True``,
``info["trade"]`` is the liquidated trade and the episode terminates.

Rebalancing: ``"on_change"`` (default) trades only when the target differs from the previous
one, so a held position keeps its units and its exposure drifts with the price;
``"every_bar"`` restores the exact target exposure at every bar.

Rewards (per step, Python ``float``; the step fills at ``open[t+1]`` and marks at
``close[t+1]``, all costs included, see :mod:`tradezoo.backtest.execution`):

- ``"log_return"`` (default): ``ln(E_{t+1} / E_t)``; a ratio below ``1e-12`` (the account is
  wiped out) is floored there.
- ``"pnl"``: ``(E_{t+1} - E_t) / E_0``, the equity change as a fraction of initial equity.
- ``"differential_sharpe"``: Moody & Saffell's differential Sharpe ratio of the step's simple
  return ``R_t = E_{t+1} / E_t - 1``::

      D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) / (B_{t-1} - A_{t-1}^2) ^ (3/2)
      dA_t = R_t - A_{t-1},  dB_t = R_t^2 - B_{t-1}
      A_t = A_{t-1} + eta dA_t,  B_t = B_{t-1} + eta dB_t,  A_0 = B_0 = 0

  (the first-order term of the Sharpe ratio of exponential moving averages of the first and
  second moments with decay ``eta`` as ``eta`` -> 0). ``D_t = 0`` while the variance estimate
  ``B - A^2`` is at most ``1e-12`` (at the start and while the account only sits flat).
  J. Moody and M. Saffell, "Learning to Trade via Direct Reinforcement", IEEE Trans. Neural
  Networks 12(4), 2001 (and Moody, Wu, Liao, Saffell, J. Forecasting 17, 1998).

Episodes end with ``terminated=True`` when the account is liquidated or equity falls to
``min_equity_fraction * initial_equity`` or below (bankruptcy), and ``truncated=True`` at
``episode_length`` steps or at the end of the split.

Trades (a maximal run of bars holding a position of one sign, as in
:func:`tradezoo.backtest.simulation.simulate`): P&L is the sum of the equity changes of the steps
attributed to the trade, so it is net of every cost it caused; on a reversal the closing trade
gets the old position's gap, the funding charged on it at the stamp (``fill="next_open"``) and
the share ``|units_old| / |traded_units|`` of the fill's fee, spread and slippage, the opening
trade the rest. ``return = pnl / equity at entry``. For the episode metrics a trade still open
at the end counts with its unrealised P&L. A liquidation closes the trade held after the
step's fill, with the rest of the step's equity change; when the fill reversed the position,
that step closes two trades: both count in the metrics, and ``info["trade"]`` is the
liquidated one (the last).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import ExecutionRates
from tradezoo.data.checks import check_bool, check_choice, check_int, check_number
from tradezoo.envs.costs import resolve_costs
from tradezoo.envs.market import (
    DataSource,
    Market,
    ObservationMode,
    SplitSpec,
    get_market,
)

ActionScheme = Literal["target", "signal", "continuous"]
RewardKind = Literal["log_return", "pnl", "differential_sharpe"]
Rebalance = Literal["on_change", "every_bar"]

ACTION_SCHEMES: tuple[str, ...] = ("target", "signal", "continuous")
REWARDS: tuple[str, ...] = ("log_return", "pnl", "differential_sharpe")
RENDER_MODES: tuple[str, ...] = ("ansi", "rgb_array")
DSR_MIN_VARIANCE = 1e-12
LOG_FLOOR = 1e-12
LOG_FLOOR_VALUE = math.log(LOG_FLOOR)

STEP_INFO_KEYS: tuple[str, ...] = (
    "equity",
    "position",
    "target",
    "units",
    "fill_price",
    "fee",
    "spread_cost",
    "slippage_cost",
    "funding_paid",
    "borrow_paid",
    "position_pnl",
    "bar",
    "dataset",
)
"""Keys of every ``step`` info (plus ``"trade"`` when one closed, ``"metrics"`` at the end).

``equity`` (quote currency, marked at ``close[t+1]``), ``position`` (exposure
``units * close / equity``, signed fraction of equity; 0 when equity <= 0), ``target`` (the
target exposure this action asked for), ``units`` (signed base units held), ``fill_price``
(the step's fill, or the reference price when nothing traded), ``fee``, ``spread_cost``,
``slippage_cost``, ``funding_paid``, ``borrow_paid``, ``position_pnl`` (quote currency, as
:class:`~tradezoo.backtest.execution.StepFill`), ``bar`` (the row of the new decision bar in
``env.market.datasets[dataset].index``) and ``dataset`` (index of the episode's dataset)."""
RESET_INFO_KEYS: tuple[str, ...] = ("equity", "position", "bar", "dataset")
TRADE_KEYS: tuple[str, ...] = (
    "side",
    "opened_at",
    "closed_at",
    "entry_price",
    "exit_price",
    "pnl",
    "return",
    "bars",
)
"""Keys of ``info["trade"]``: ``side`` (+1.0 long, -1.0 short), ``opened_at``/``closed_at``
(rows of the decision bars whose orders opened and closed it, in the dataset's index),
``entry_price``/``exit_price`` (fill prices), ``pnl`` (quote currency, net of its costs),
``return`` (``pnl`` over the equity at entry), ``bars`` (``closed_at - opened_at``). A
liquidated trade closes at the decision row of its step, at the liquidation's fill price."""
RESET_OPTIONS: tuple[str, ...] = ("dataset", "start")
"""Keys ``TradingEnv.reset(options=...)`` accepts (the vector envs add ``"reset_mask"``)."""
COST_KEYS: tuple[str, ...] = (
    "fees_paid", "spread_paid", "slippage_paid", "funding_paid", "borrow_paid")


@dataclass(frozen=True)
class EnvConfig:
    """Validated settings of a tradezoo env (single or batched); build with
    :func:`build_config`. See :class:`~tradezoo.envs.trading_env.TradingEnv` for meanings."""

    market: Market
    costs: tuple[CostModel, ...]
    rates: tuple[ExecutionRates, ...]
    fill: str
    action_scheme: str
    max_leverage: float
    allow_short: bool
    reward: str
    dsr_eta: float
    episode_length: int | None
    random_start: bool
    initial_equity: float
    min_equity_fraction: float
    rebalance: str
    episode_metrics: bool
    render_mode: str | None

    @property
    def levels(self) -> tuple[float, float, float]:
        """Target exposure of actions 0, 1, 2 (``"target"``; ``"signal"`` except 1)."""
        short = -self.max_leverage if self.allow_short else 0.0
        return (short, 0.0, self.max_leverage)

    @property
    def min_equity(self) -> float:
        """Equity at or below which an episode terminates (quote currency)."""
        return self.min_equity_fraction * self.initial_equity

    @property
    def capacity(self) -> int:
        """Most steps an episode can take (sizes the per-episode history buffers)."""
        if self.episode_length is not None:
            return self.episode_length
        return self.market.max_decisions

    def start_range(self, dataset: int) -> tuple[int, int]:
        """Global rows ``(lowest, highest)`` an episode on ``dataset`` may start at."""
        d = self.market.datasets[dataset]
        if not self.random_start:
            return d.first_decision, d.first_decision
        if self.episode_length is None:
            return d.first_decision, d.last_decision
        return d.first_decision, d.last_decision + 1 - self.episode_length

    def draw_start(
        self, rng: np.random.Generator, options: Mapping[str, Any]
    ) -> tuple[int, int]:
        """An episode's ``(dataset, first global row)``: each drawn from ``rng`` (dataset
        first, then the start) unless ``options`` pins it (``"dataset"``; ``"start"``, a
        decision row of that dataset's split that leaves room for the episode).

        Raises:
            ValueError: a pinned dataset or start outside its range.
        """
        n_datasets = len(self.market.datasets)
        if "dataset" in options:
            ds = operator.index(options["dataset"])
            if not 0 <= ds < n_datasets:
                raise ValueError(f"options['dataset'] must be in [0, {n_datasets}), got {ds}")
        else:
            ds = int(rng.integers(n_datasets)) if n_datasets > 1 else 0
        lo, hi = self.start_range(ds)
        dataset = self.market.datasets[ds]
        if "start" not in options:
            return ds, int(rng.integers(lo, hi + 1)) if hi > lo else lo
        start = dataset.offset + operator.index(options["start"])
        latest = dataset.last_decision + 1 - (self.episode_length or 1)
        if not lo <= start <= latest:
            raise ValueError(
                f"options['start'] must be a decision row of the split that leaves room for "
                f"the episode, in [{lo - dataset.offset}, {latest - dataset.offset}], got "
                f"{options['start']}"
            )
        return ds, start

    def end_row(self, dataset: int, start: int) -> int:
        """Row of the final state of an episode started at ``start`` (truncation row)."""
        d = self.market.datasets[dataset]
        if self.episode_length is None:
            return d.last_decision + 1
        return start + self.episode_length

    def action_space(self) -> spaces.Space:
        if self.action_scheme == "continuous":
            return spaces.Box(-1.0, 1.0, (1,), np.float32)
        return spaces.Discrete(3)


def build_config(
    data: DataSource | Sequence[DataSource],
    *,
    features: Any = None,
    feature_spec: Any = None,
    scaler: Any = None,
    window: int = 64,
    split: SplitSpec = "train",
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    observation: ObservationMode = "box",
    timeframes: Sequence[str] | Mapping[str, int] | None = None,
    include_dt: bool = False,
    action_scheme: ActionScheme = "target",
    max_leverage: float = 1.0,
    allow_short: bool = True,
    costs: CostModel | Sequence[CostModel | None] | None = None,
    fill: str = "next_open",
    rebalance: Rebalance = "on_change",
    reward: RewardKind = "log_return",
    dsr_eta: float = 0.01,
    episode_length: int | None = None,
    random_start: bool | None = None,
    initial_equity: float = 1.0,
    min_equity_fraction: float = 0.1,
    episode_metrics: bool = True,
    render_mode: str | None = None,
) -> EnvConfig:
    """Validate every env argument (each error names the argument and the rule)."""
    action_scheme = check_choice("action_scheme", action_scheme, ACTION_SCHEMES)
    reward = check_choice("reward", reward, REWARDS)
    rebalance = check_choice("rebalance", rebalance, ("on_change", "every_bar"))
    fill = check_choice("fill", fill, ("next_open", "close"))
    if render_mode is not None:
        render_mode = check_choice("render_mode", render_mode, RENDER_MODES)
    positive = "a finite number > 0"
    max_leverage = check_number("max_leverage", max_leverage, 0.0, open_low=True, rule=positive)
    initial_equity = check_number("initial_equity", initial_equity, 0.0, open_low=True,
                                  rule=positive)
    dsr_eta = check_number("dsr_eta", dsr_eta, 0.0, 1.0, open_low=True, open_high=True,
                           rule="in (0, 1)")
    min_equity_fraction = check_number(
        "min_equity_fraction", min_equity_fraction, 0.0, 1.0, open_high=True,
        rule="in [0, 1) (bankruptcy below this fraction of the initial equity)")
    allow_short = check_bool("allow_short", allow_short)
    episode_metrics = check_bool("episode_metrics", episode_metrics)
    episode_length = check_int("episode_length", episode_length, 1, optional=True,
                               rule=">= 1 bar or None")
    random_start = (episode_length is not None if random_start is None
                    else check_bool("random_start", random_start))
    market = get_market(
        data, features=features, feature_spec=feature_spec, scaler=scaler, window=window,
        split=split, split_fractions=split_fractions, observation=observation,
        timeframes=timeframes, include_dt=include_dt,
    )
    if episode_length is not None:
        for d in market.datasets:
            if episode_length > d.n_decisions:
                raise ValueError(
                    f"the {split!r} split of dataset {d.name!r} is too short for one episode: "
                    f"episode_length={episode_length} bars but only {d.n_decisions} decision "
                    f"rows ({d.index[d.local(d.first_decision)]} .. "
                    f"{d.index[d.local(d.last_decision)]}); shorten episode_length or the "
                    "window, or use a larger split"
                )
    model_list, rates = resolve_costs(market, costs, fill)
    for model, dataset in zip(model_list, market.datasets, strict=True):
        model.check_exposure(max_leverage, what=f"max_leverage (dataset {dataset.name!r})")
    return EnvConfig(
        market=market,
        costs=model_list,
        rates=rates,
        fill=fill,
        action_scheme=action_scheme,
        max_leverage=max_leverage,
        allow_short=bool(allow_short),
        reward=reward,
        dsr_eta=dsr_eta,
        episode_length=episode_length,
        random_start=bool(random_start),
        initial_equity=initial_equity,
        min_equity_fraction=min_equity_fraction,
        rebalance=rebalance,
        episode_metrics=bool(episode_metrics),
        render_mode=render_mode,
    )


def check_reset_options(
    options: object, allowed: Sequence[str]
) -> Mapping[str, Any]:
    """``options`` of a ``reset()`` call, checked: ``None`` or a mapping of ``allowed`` keys.

    Raises:
        ValueError: a non-mapping or an unknown key (the error lists the allowed keys).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"reset options must be a mapping (dict) with keys among "
                         f"{list(allowed)}, or None; got {type(options).__name__} {options!r}")
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise ValueError(f"reset options: unknown key(s) {unknown!r}; allowed keys: "
                         f"{list(allowed)}")
    return options


def invalid_action(action: object, space: spaces.Space) -> ValueError:
    """The error for an action outside the action space."""
    return ValueError(
        f"action {action!r} is outside the action space {space}: the 'target' and 'signal' "
        "schemes take an integer in {0, 1, 2} (0 sell, 1 hold, 2 buy); 'continuous' takes an "
        "array of shape (1,) with a finite value in [-1, 1]"
    )


def differential_sharpe(
    a: float, b: float, simple_return: float, eta: float
) -> tuple[float, float, float]:
    """One step of Moody & Saffell's differential Sharpe ratio (module docstring).

    Args:
        a, b: the moving first and second moments ``A_{t-1}``, ``B_{t-1}``.
        simple_return: the step's ``R_t = E_{t+1} / E_t - 1``.
        eta: the moments' decay.

    Returns:
        ``(D_t, A_t, B_t)``. Plain float arithmetic: the single env runs it in Python, the
        batched envs compiled (:mod:`tradezoo.envs.batch_kernel`), with the same results.
    """
    d_a = simple_return - a
    d_b = simple_return * simple_return - b
    variance = b - a * a
    value = 0.0
    if variance > DSR_MIN_VARIANCE:
        value = (b * d_a - 0.5 * a * d_b) / (variance * math.sqrt(variance))
    return value, a + eta * d_a, b + eta * d_b


def closed_trade(
    side: float,
    delta: float,
    units0: float,
    traded: float,
    fill_costs: float,
    funding_paid: float,
    price_gap: float,
    next_open: bool,
    equity0: float,
    base: float,
    entry_equity: float,
) -> tuple[float, float, float]:
    """The trade that closes on a step whose position sign changed (module docstring).

    Args:
        side: the new position's sign (0: flat, so no reversal).
        delta: the step's equity change (quote currency).
        units0, traded: units held before the step and units traded by it.
        fill_costs: the step's fee + spread + slippage cost.
        funding_paid: the step's funding.
        price_gap: the reference price minus ``close[t]`` (0 with ``fill="close"``).
        next_open: ``fill="next_open"`` (the funding stamp falls on the old position).
        equity0: equity at the step's decision.
        base, entry_equity: the closing trade's base and equity at entry.

    Returns:
        ``(pnl, return, closed_part)``: the trade's P&L (quote currency) and return, and the
        part of ``delta`` it got (all of it, or on a reversal the old position's gap, its
        funding and the share ``|units0| / |traded|`` of the fill costs); the trade that
        opens on a reversal starts from ``base = equity0 + closed_part``. Plain float
        arithmetic, run by the single env in Python and by the batched envs compiled.
    """
    closed_part = delta
    if side:
        closed_part = units0 * price_gap - abs(units0) / abs(traded) * fill_costs
        if next_open:
            closed_part -= funding_paid
    pnl = (equity0 - base) + closed_part
    return pnl, pnl / entry_equity, closed_part


def episode_metrics(
    equity: np.ndarray,
    positions: np.ndarray,
    turnover: np.ndarray,
    trade_pnl: np.ndarray,
    trade_return: np.ndarray,
    cost_totals: Sequence[float],
    *,
    initial_equity: float,
    periods_per_year: float,
) -> dict[str, float]:
    """The episode's :func:`~tradezoo.backtest.metrics.compute_metrics` as a dict of floats.

    Args:
        equity: float64 ``[k + 1]``, equity at the first decision bar and after each step.
        positions: float64 ``[k]``, exposure held over each bar of the episode.
        turnover: float64 ``[k]``, each step's traded notional over the equity at its decision.
        trade_pnl, trade_return: the episode's trades (an open one included, unrealised).
        cost_totals: fees, spread, slippage, funding and borrow paid (quote currency).

    Returns:
        ``Metrics.to_dict(json_safe=False)`` with every value a Python ``float`` (counts too,
        so the dicts of several envs batch into float arrays; NaN marks undefined figures).
    """
    from tradezoo.backtest.metrics import compute_metrics

    metrics = compute_metrics(
        episode_returns(equity),
        periods_per_year=periods_per_year,
        trades={"pnl": trade_pnl, "return": trade_return},
        positions=positions,
        turnover=turnover,
        costs=episode_costs(cost_totals, initial_equity),
    )
    return {key: float(value) for key, value in metrics.to_dict(json_safe=False).items()}  # type: ignore[arg-type]


def episode_returns(equity: np.ndarray) -> np.ndarray:
    """Simple returns of each step from an equity history ``[k + 1, ...]`` -> ``[k, ...]``
    (the batched env passes ``[k + 1, M]``); 0 after a step that starts at equity <= 0, where
    the account is bankrupt and the episode over."""
    previous = equity[:-1]
    alive = previous > 0
    return np.where(alive, equity[1:] / np.where(alive, previous, 1.0) - 1.0, 0.0)


def episode_costs(cost_totals: Sequence[float], initial_equity: float) -> dict[str, float]:
    """The five cost totals (quote currency, :data:`COST_KEYS` order) as the fractions of the
    initial equity that :func:`~tradezoo.backtest.metrics.compute_metrics` takes."""
    return {key: float(value) / initial_equity
            for key, value in zip(COST_KEYS, cost_totals, strict=True)}
