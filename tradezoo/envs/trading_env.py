"""``TradingEnv``: a Gymnasium env that replays validated bars with honest execution.

One episode is a walk over consecutive decision bars of one dataset's split. At each step the
agent sees data known at the close of bar ``t`` (observation), picks an action (a target
exposure, :mod:`tradezoo.envs.core`), and :func:`~tradezoo.backtest.execution.execute_step` —
the package's one execution and accounting function, here fed Python floats — fills it at
``open[t+1]`` (``fill="next_open"``, default) with half spread, slippage and fee, charges funding
at the stamp and borrow on shorts, and marks equity at ``close[t+1]``. The batched envs
(:mod:`tradezoo.envs.vector_env`) run the same function on arrays and the same observation
builder (:class:`~tradezoo.envs.market.Market`), and are tested equal to this env step by step.

Example::

    import gymnasium as gym
    import tradezoo  # registers the envs

    env = gym.make("tradezoo/BTCUSDT-1h-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(2)   # go long
    info["equity"], info["fee"], info["funding_paid"]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import execute_step
from tradezoo.envs.core import (
    LOG_FLOOR,
    LOG_FLOOR_VALUE,
    RENDER_MODES,
    ActionScheme,
    EnvConfig,
    Rebalance,
    RewardKind,
    build_config,
    check_reset_options,
    closed_trade,
    differential_sharpe,
    episode_metrics,
    invalid_action,
)
from tradezoo.envs.market import (
    DataSource,
    Market,
    MarketDataset,
    ObservationMode,
    SplitSpec,
    account_scale,
)
from tradezoo.envs.rendering import ansi_status, rgb_frame

ObsType = np.ndarray | dict[str, np.ndarray]


class TradingEnv(gym.Env[ObsType, Any]):
    """Trade one instrument (or one of several, sampled per episode) bar by bar.

    Args:
        data: a bundled dataset name (``"bybit-btcusdt-1h"``, ``"yahoo-spy-1d"``), a CSV or
            Parquet path, a bars frame, or a list of them; each episode then samples one with
            the env's seeded RNG (each keeps its own costs and periods per year; their feature
            columns must match, and a dataset without a ``funding_rate`` column gets a zero
            one when another has it).
        features: precomputed features (one frame per dataset, indexed by a consecutive run
            of the bars' timestamps; box observation only). Default: computed with
            ``feature_spec``.
        feature_spec: :class:`~tradezoo.data.features.FeatureSpec` (default ``FeatureSpec()``).
        scaler: a fitted :class:`~tradezoo.data.features.FeatureScaler` (or a mapping
            timeframe -> scaler); default: one fitted on each dataset's train split.
        window: bars per observation (base timeframe), default 64.
        split: ``"train"`` (default), ``"val"``, ``"test"`` (from
            :func:`~tradezoo.data.splits.time_splits` with ``lookback=window, horizon=1``) or a
            ``(start, end)`` pair of timestamps (inclusive; ``None`` for an open end).
        split_fractions: ``(train, val, test)`` fractions, default ``(0.7, 0.15, 0.15)``.
        observation: ``"box"`` (default) or ``"dict"`` (see :mod:`tradezoo.envs.market`).
        timeframes: dict observation timeframes: a list (each with ``window`` bars) or a
            mapping timeframe -> window; default the base interval.
        action_scheme: ``"target"`` (default), ``"signal"`` or ``"continuous"``
            (:mod:`tradezoo.envs.core`).
        max_leverage: target exposure of a full position, > 0 (default 1).
        allow_short: whether targets may be negative (default ``True``).
        costs: a :class:`~tradezoo.backtest.costs.CostModel`, one per dataset, or ``None``:
            ``CostModel.bybit_linear()`` for Bybit data, ``CostModel.equities()`` for Yahoo.
        fill: ``"next_open"`` (default) or ``"close"`` (optimistic: fills at the close the
            decision already saw; documented, not recommended).
        rebalance: ``"on_change"`` (default) or ``"every_bar"``.
        reward: ``"log_return"`` (default), ``"pnl"`` or ``"differential_sharpe"``.
        dsr_eta: decay of the differential Sharpe ratio's moving moments, in (0, 1).
        episode_length: steps per episode, or ``None`` to run to the end of the split.
        random_start: draw each episode's first bar with the env's RNG (default: ``True``
            when ``episode_length`` is set, else ``False``, a full sequential pass).
        initial_equity: starting equity, quote currency (default 1.0).
        min_equity_fraction: bankruptcy level as a fraction of initial equity, in [0, 1)
            (default 0.1): the episode terminates when equity falls to it or below.
        episode_metrics: add ``info["metrics"]`` (``compute_metrics`` of the episode) at the
            last step (default ``True``; about a millisecond per episode).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.

    Spaces: ``observation_space`` is a float32 ``Box(window, F + 2)`` or a ``Dict``;
    ``action_space`` is ``Discrete(3)`` or ``Box(-1, 1, (1,), float32)``.

    ``info`` keys: :data:`~tradezoo.envs.core.STEP_INFO_KEYS`; plus ``"trade"`` (a dict,
    :data:`~tradezoo.envs.core.TRADE_KEYS`) on steps that close a trade and ``"metrics"`` on
    the last step of an episode. Both keys are left out otherwise rather than set to
    ``None``: gymnasium's vector envs batch infos key by key and cannot mix ``None`` with
    dicts, and ``"episode"`` is left to the wrappers that own it (``RecordEpisodeStatistics``,
    SB3's ``Monitor``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": list(RENDER_MODES), "render_fps": 30}

    def __init__(
        self,
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
    ) -> None:
        config = build_config(
            data, features=features, feature_spec=feature_spec, scaler=scaler, window=window,
            split=split, split_fractions=split_fractions, observation=observation,
            timeframes=timeframes, action_scheme=action_scheme, max_leverage=max_leverage,
            allow_short=allow_short, costs=costs, fill=fill, rebalance=rebalance, reward=reward,
            dsr_eta=dsr_eta, episode_length=episode_length, random_start=random_start,
            initial_equity=initial_equity, min_equity_fraction=min_equity_fraction,
            episode_metrics=episode_metrics, render_mode=render_mode,
        )
        self._setup(config)

    @classmethod
    def from_config(cls, config: EnvConfig) -> TradingEnv:
        """An env on an already validated :class:`~tradezoo.envs.core.EnvConfig`."""
        env = cls.__new__(cls)
        env._setup(config)
        return env

    def _setup(self, config: EnvConfig) -> None:
        self.config = config
        self.market: Market = config.market
        self.render_mode = config.render_mode
        self.observation_space = config.market.observation_space()
        self.action_space = config.action_space()
        market = config.market
        lists = market.lists
        # Python lists: indexing yields Python floats, execute_step's scalar fast path.
        self._close = lists["close"]
        self._open = lists["open"]
        self._high = lists["high"]
        self._low = lists["low"]
        self._funding = lists["funding_rate"]
        self._range = lists["range_frac"]
        self._notional = lists["notional"]
        self._scheme = ("target", "signal", "continuous").index(config.action_scheme)
        self._levels = config.levels
        self._leverage = config.max_leverage
        self._allow_short = config.allow_short
        self._every_bar = config.rebalance == "every_bar"
        self._next_open = config.fill == "next_open"
        self._reward_kind = ("log_return", "pnl", "differential_sharpe").index(config.reward)
        self._eta = config.dsr_eta
        self._initial = config.initial_equity
        self._min_equity = config.min_equity
        self._box = market.observation == "box"
        self._window = market.window
        self._bars_scale = account_scale(market.window)
        self._with_metrics = config.episode_metrics
        capacity = config.capacity
        # Per-episode histories (Python lists: cheaper to write than numpy scalars), sized
        # once: reset only rewinds counters, so it does no O(episode) work.
        self._eq_hist = [0.0] * (capacity + 1)
        self._pos_hist = [0.0] * (capacity + 1)
        self._turn_hist = [0.0] * (capacity + 1)
        self._trade_pnl = [0.0] * (capacity + 1)
        self._trade_ret = [0.0] * (capacity + 1)
        self._ring = market.box_ring() if self._box else None
        self._needs_reset = True
        self._row = -1
        self._offset = 0
        self._ds = 0
        self._dataset: MarketDataset = market.datasets[0]

    # -- gymnasium API ---------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Start an episode: sample the dataset (when there are several) and the first bar.

        ``options`` may hold ``"dataset"`` (index) and ``"start"`` (a row of that dataset's
        ``index``, which must leave room for the episode) to pin the episode; the RNG is not
        drawn for what is pinned. Any other key, or options that are not a mapping, raise
        ``ValueError``.
        """
        options = check_reset_options(options, ("dataset", "start"))
        super().reset(seed=seed)
        ds, start = self.config.draw_start(self.np_random, options)
        dataset = self.market.datasets[ds]
        self._begin(ds, start)
        return self._observe(), {"equity": self._equity, "position": 0.0,
                                 "bar": start - dataset.offset, "dataset": ds}

    def _begin(self, ds: int, start: int) -> None:
        config = self.config
        self._ds = ds
        self._dataset = dataset = self.market.datasets[ds]
        self._offset = dataset.offset
        self._rates = config.rates[ds]
        self._ppy = dataset.periods_per_year
        self._start = self._row = start
        self._end = config.end_row(ds, start)
        self._steps = 0
        self._units = 0.0
        self._equity = self._peak = self._initial
        self._target = 0.0
        self._position = 0.0
        self._side = 0
        self._base = self._initial
        self._entry_eq = self._initial
        self._entry_row = start
        self._entry_price = 0.0
        self._n_trades = 0
        self._fee_sum = self._spread_sum = self._slip_sum = 0.0
        self._funding_sum = self._borrow_sum = 0.0
        self._dsr_a = self._dsr_b = 0.0
        self._eq_hist[0] = self._initial
        self._pos_hist[0] = 0.0
        if self._box:
            self.market.box_begin(self._ring, start, 0)
        self._needs_reset = False

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded(
                "TradingEnv.step() called before reset() or after the episode ended "
                "(terminated or truncated); call reset() first"
            )
        # -- action -> target exposure (fast checks instead of space.contains) ------------
        scheme = self._scheme
        if scheme == 2:
            target = self._continuous_target(action)
        else:
            try:
                choice = operator.index(action)
            except TypeError:
                raise invalid_action(action, self.action_space) from None
            if not 0 <= choice <= 2 or action.__class__ is bool:
                raise invalid_action(action, self.action_space)
            target = self._target if scheme == 1 and choice == 1 else self._levels[choice]
        trade = self._every_bar or target != self._target

        # -- one bar of execution and accounting (the shared engine) ---------------------
        t = self._row
        t1 = t + 1
        close = self._close
        units0 = self._units
        equity0 = self._equity
        close_prev = close[t]
        close_next = close[t1]
        (units, equity, traded, fill_price, fee, spread, slip, funding, borrow,
         position_pnl, liq_units, liq_price, liq_fee, liq_spread, liq_slip) = execute_step(
            units0, equity0, target, trade, close_prev, self._open[t1], close_next,
            self._funding[t1], self._range[t], self._notional[t], self._rates, None,
            self._high[t1], self._low[t1],
        )
        ratio = equity / equity0
        log_return = math.log(ratio) if ratio > LOG_FLOOR else LOG_FLOOR_VALUE
        kind = self._reward_kind
        if kind == 0:
            reward = log_return
        elif kind == 1:
            reward = (equity - equity0) / self._initial
        else:
            reward = self._differential_sharpe(ratio - 1.0)
        position = units * close_next / equity if equity > 0.0 else 0.0

        # -- bookkeeping ------------------------------------------------------------------
        steps = self._steps + 1
        self._steps = steps
        self._row = t1
        self._units = units
        self._equity = equity
        self._target = target
        self._position = position
        if equity > self._peak:
            self._peak = equity
        self._fee_sum += fee
        self._spread_sum += spread
        self._slip_sum += slip
        self._funding_sum += funding
        self._borrow_sum += borrow
        self._eq_hist[steps] = equity
        self._pos_hist[steps] = position
        self._turn_hist[steps] = abs(traded) * fill_price / equity0
        if self._box:
            self.market.box_push(self._ring, steps, t1, position, log_return)
        info = {
            "equity": equity, "position": position, "target": target, "units": units,
            "fill_price": fill_price, "fee": fee, "spread_cost": spread,
            "slippage_cost": slip, "funding_paid": funding, "borrow_paid": borrow,
            "position_pnl": position_pnl, "bar": t1 - self._offset, "dataset": self._ds,
        }
        fill_units = units - liq_units  # held after the fill (a liquidation then closes them)
        side = (fill_units > 0.0) - (fill_units < 0.0)
        if side != self._side:
            self._trade_transition(info, side, equity - equity0, units0, traded,
                                   fee + spread + slip - (liq_fee + liq_spread + liq_slip),
                                   funding, fill_price, t, equity0)
        liquidated = liq_units != 0.0
        if liquidated:
            self._liquidation_close(info, equity - equity0, liq_price, t, equity0)
            info["liquidated"] = True

        terminated = liquidated or equity <= self._min_equity
        truncated = not terminated and t1 >= self._end
        if terminated or truncated:
            self._needs_reset = True
            if self._with_metrics:
                info["metrics"] = self._metrics()
        return self._observe(), reward, terminated, truncated, info

    def _continuous_target(self, action: Any) -> float:
        try:
            array = np.asarray(action)
        except (TypeError, ValueError):
            raise invalid_action(action, self.action_space) from None
        if array.shape != (1,) or array.dtype.kind not in "fiu":  # no bool, complex, text
            raise invalid_action(action, self.action_space)
        value = float(array[0])
        if not -1.0 <= value <= 1.0:  # NaN fails too
            raise invalid_action(action, self.action_space)
        target = value * self._leverage
        if not self._allow_short and target < 0.0:
            target = 0.0
        return target

    def _differential_sharpe(self, simple_return: float) -> float:
        value, self._dsr_a, self._dsr_b = differential_sharpe(
            self._dsr_a, self._dsr_b, simple_return, self._eta)
        return value

    def _trade_transition(
        self,
        info: dict[str, Any],
        side: int,
        delta: float,
        units0: float,
        traded: float,
        fill_costs: float,
        funding: float,
        fill_price: float,
        row: int,
        equity0: float,
    ) -> None:
        """Close and/or open a trade on a step whose position sign changed.

        A trade's running P&L is ``equity - base``: ``base`` is the equity at its opening
        decision, plus, when it opened by reversing a position, the part of that step that
        belongs to the closed trade (:mod:`tradezoo.envs.core`).
        """
        old_side = self._side
        if old_side:
            price_gap = 0.0  # read on a reversal only
            if side and self._next_open:
                price_gap = self._open[row + 1] - self._close[row]
            pnl, trade_return, old_part = closed_trade(
                side, delta, units0, traded, fill_costs, funding, price_gap, self._next_open,
                equity0, self._base, self._entry_eq)
            n = self._n_trades
            self._trade_pnl[n] = pnl
            self._trade_ret[n] = trade_return
            self._n_trades = n + 1
            offset = self._offset
            info["trade"] = {
                "side": float(old_side), "opened_at": self._entry_row - offset,
                "closed_at": row - offset, "entry_price": self._entry_price,
                "exit_price": fill_price, "pnl": pnl, "return": trade_return,
                "bars": row - self._entry_row,
            }
        else:
            old_part = 0.0
        if side:
            self._base = equity0 + old_part
            self._entry_eq = equity0
            self._entry_row = row
            self._entry_price = fill_price
        self._side = side

    def _liquidation_close(
        self, info: dict[str, Any], delta: float, exit_price: float, row: int, equity0: float
    ) -> None:
        """Close the trade held after the fill at its liquidation (the step's last close):
        all of the step's equity change ``delta`` beyond what a reversal gave the trade it
        closed is this trade's (:func:`~tradezoo.envs.core.closed_trade` with side 0)."""
        pnl, trade_return, _ = closed_trade(0, delta, 0.0, 0.0, 0.0, 0.0, 0.0,
                                            self._next_open, equity0, self._base,
                                            self._entry_eq)
        n = self._n_trades
        self._trade_pnl[n] = pnl
        self._trade_ret[n] = trade_return
        self._n_trades = n + 1
        offset = self._offset
        info["trade"] = {
            "side": float(self._side), "opened_at": self._entry_row - offset,
            "closed_at": row - offset, "entry_price": self._entry_price,
            "exit_price": exit_price, "pnl": pnl, "return": trade_return,
            "bars": row - self._entry_row,
        }
        self._side = 0

    def _metrics(self) -> dict[str, float]:
        k = self._steps
        n = self._n_trades
        pnl, ret = self._trade_pnl[:n], self._trade_ret[:n]
        if self._side:  # an open trade counts with its unrealised P&L
            open_pnl = self._equity - self._base
            pnl.append(open_pnl)
            ret.append(open_pnl / self._entry_eq)
        return episode_metrics(
            np.array(self._eq_hist[: k + 1]), np.array(self._pos_hist[1 : k + 1]),
            np.array(self._turn_hist[1 : k + 1]), np.array(pnl), np.array(ret),
            (self._fee_sum, self._spread_sum, self._slip_sum, self._funding_sum,
             self._borrow_sum),
            initial_equity=self._initial, periods_per_year=self._ppy,
        )

    def _account_vector(self) -> np.ndarray:
        if self._side:
            unrealised = (self._equity - self._base) / self._entry_eq
            held = math.log1p(self._row - self._entry_row) / self._bars_scale
        else:
            unrealised = held = 0.0
        return np.array(
            (self._position, unrealised, held, self._equity / self._peak - 1.0), np.float32
        )

    def _observe(self) -> ObsType:
        if self._box:
            return self.market.box_observation(self._ring, self._steps)
        return self.market.dict_observation(self._row, self._account_vector())

    # -- rendering and introspection -------------------------------------------------------

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        """``"ansi"``: one status line; ``"rgb_array"``: uint8 ``[H, W, 3]`` figure of the
        episode so far; ``None`` without a render mode."""
        if self.render_mode is None or self._row < 0:
            if self.render_mode is not None:
                gym.logger.warn("TradingEnv.render() before reset(): nothing to draw yet")
            return None
        if self.render_mode == "ansi":
            return ansi_status(self._dataset, self._row, self._steps, self._equity,
                               self._initial, self._position,
                               self._fee_sum + self._spread_sum + self._slip_sum)
        k = self._steps
        return rgb_frame(self._dataset, self._start, self._row,
                         np.array(self._pos_hist[: k + 1]), np.array(self._eq_hist[: k + 1]))

    @property
    def dataset(self) -> MarketDataset:
        """The dataset of the current (or last) episode."""
        return self._dataset

    @property
    def row(self) -> int:
        """The current decision bar as a row of ``dataset.index`` (-1 before reset)."""
        return self._row - self._offset if self._row >= 0 else -1

    @property
    def equity(self) -> float:
        return self._equity

    @property
    def position(self) -> float:
        """Exposure held (``units * close / equity``)."""
        return self._position

    @property
    def target(self) -> float:
        """The target exposure of the last action (0 at the start of an episode)."""
        return self._target

    def episode_history(self) -> dict[str, np.ndarray]:
        """Copies of this episode's per-bar ``equity`` and ``position`` ``[k + 1]`` (bar 0 is
        the first decision bar) and ``turnover`` ``[k]``."""
        k = self._steps
        return {"equity": np.array(self._eq_hist[: k + 1]),
                "position": np.array(self._pos_hist[: k + 1]),
                "turnover": np.array(self._turn_hist[1 : k + 1])}
