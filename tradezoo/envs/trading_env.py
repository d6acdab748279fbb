"""``TradingEnv``: a Gymnasium env that replays validated bars with honest execution.

One episode is a walk over consecutive decision bars of one dataset's split. At each step the
agent sees data known at the close of bar ``t`` (observation), picks an action (a target
exposure, :mod:`tradezoo.envs.core`), and :func:`~tradezoo.envs.account.advance_account` —
the package's one account step, here run in Python on the env's own account — has
:func:`~tradezoo.backtest.execution.execute_step` fill it at ``open[t+1]``
(``fill="next_open"``, default) with half spread, slippage and fee, charge funding at the stamp
and borrow on shorts, and mark equity at ``close[t+1]``; it then computes the reward and keeps
the account's books and trade records. The batched envs (:mod:`tradezoo.envs.vector_env`) run
the same function compiled, once per account, and the same observation builder
(:class:`~tradezoo.envs.market.Market`), and are tested equal to this env step by step.

Example::

    import gymnasium as gym
    import tradezoo  # registers the envs

    env = gym.make("tradezoo/BTCUSDT-1h-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(2)   # go long
    info["equity"], info["fee"], info["funding_paid"]
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from tradezoo.backtest.costs import CostModel
from tradezoo.envs.account import (
    CLOSED_AT,
    COSTS,
    EQUITY,
    FEES_PAID,
    OPENED_AT,
    POSITION,
    REWARD_KINDS,
    SLIPPAGE_PAID,
    SPREAD_PAID,
    TARGET,
    TRADE_BARS,
    TRADE_ENTRY_PRICE,
    TRADE_EXIT_PRICE,
    TRADE_PNL,
    TRADE_RETURN,
    TRADE_SIDE,
    TRADE_SIZE,
    account_features,
    advance_account,
    final_trade,
    new_account,
)
from tradezoo.envs.core import (
    RENDER_MODES,
    ActionScheme,
    EnvConfig,
    Rebalance,
    RewardKind,
    build_config,
    check_reset_options,
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
        include_dt: add each window's elapsed seconds since the previous bar, unscaled, under
            its own key (default ``False``): the box observation becomes a ``Dict`` of
            ``"window"`` and ``"dt"``, the dict observation gains ``"dt_<tf>"`` (see
            :mod:`tradezoo.envs.market`). What the liquid networks (``ltc``, ``cfc``) need.
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
    ) -> None:
        config = build_config(
            data, features=features, feature_spec=feature_spec, scaler=scaler, window=window,
            split=split, split_fractions=split_fractions, observation=observation,
            timeframes=timeframes, include_dt=include_dt, action_scheme=action_scheme,
            max_leverage=max_leverage,
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
        self._reward_kind = REWARD_KINDS.index(config.reward)
        self._eta = config.dsr_eta
        self._initial = config.initial_equity
        self._min_equity = config.min_equity
        # The box fast path returns the ring's window as the whole observation.
        self._box = market.observation == "box" and not market.include_dt
        self._window = market.window
        self._bars_scale = account_scale(market.window)
        self._with_metrics = config.episode_metrics
        capacity = config.capacity
        # Per-episode histories (Python lists: cheaper to write than numpy scalars), sized
        # once: reset only rewinds counters, so it does no O(episode) work.
        self._eq_hist = [0.0] * (capacity + 1)
        self._pos_hist = [0.0] * (capacity + 1)
        self._notional_hist = [0.0] * (capacity + 1)  # signed traded notional per step
        self._trade_pnl = [0.0] * (capacity + 1)
        self._trade_ret = [0.0] * (capacity + 1)
        # The account (tradezoo.envs.account's layout) and the record of a closing trade.
        self._account = new_account(self._initial, 0)
        self._trade = [0.0] * TRADE_SIZE
        self._ring = market.box_ring() if market.observation == "box" else None
        self._box_push = market.box_push  # bound once: the step calls them on every bar
        self._box_observation = market.box_observation
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
        return self._observe(), {"equity": self._initial, "position": 0.0,
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
        self._account = new_account(self._initial, start - dataset.offset)
        self._n_trades = 0
        self._eq_hist[0] = self._initial
        self._pos_hist[0] = 0.0
        if self._ring is not None:
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
            if action.__class__ is int and 0 <= action <= 2:  # a plain int: nothing to convert
                choice = action
            else:
                try:
                    choice = operator.index(action)
                except TypeError:
                    raise invalid_action(action, self.action_space) from None
                if not 0 <= choice <= 2 or action.__class__ is bool:
                    raise invalid_action(action, self.action_space)
            target = (self._account[TARGET] if scheme == 1 and choice == 1
                      else self._levels[choice])

        # -- one bar for the account (the shared account step, interpreted) --------------
        t = self._row
        t1 = t + 1
        bar = t - self._offset
        account = self._account
        (reward, log_return, terminated, liquidated, closed_side, closed_pnl, closed_return,
         fill) = advance_account(
            account, self._trade, target, self._every_bar, self._close[t], self._open[t1],
            self._close[t1], self._funding[t1], self._range[t], self._notional[t],
            self._high[t1], self._low[t1], None, bar, self._rates, self._reward_kind,
            self._min_equity, self._initial, self._eta,
        )
        (units, equity, traded, fill_price, fee, spread, slip, funding, borrow, position_pnl,
         _liq_units, _liq_price, _liq_fee, _liq_spread, _liq_slip) = fill
        position = account[POSITION]

        # -- the episode's histories and the infos ------------------------------------------
        steps = self._steps + 1
        self._steps = steps
        self._row = t1
        self._eq_hist[steps] = equity
        self._pos_hist[steps] = position
        self._notional_hist[steps] = traded * fill_price
        if self._ring is not None:
            self._box_push(self._ring, steps, t1, position, log_return)
        info = {
            "equity": equity, "position": position, "target": target, "units": units,
            "fill_price": fill_price, "fee": fee, "spread_cost": spread,
            "slippage_cost": slip, "funding_paid": funding, "borrow_paid": borrow,
            "position_pnl": position_pnl, "bar": bar + 1, "dataset": self._ds,
        }
        if closed_side or liquidated:
            if closed_side:
                n = self._n_trades
                self._trade_pnl[n] = closed_pnl
                self._trade_ret[n] = closed_return
                self._n_trades = n + 1
            record = self._trade  # the last trade the step closed
            info["trade"] = {
                "side": record[TRADE_SIDE], "opened_at": record[OPENED_AT],
                "closed_at": record[CLOSED_AT], "entry_price": record[TRADE_ENTRY_PRICE],
                "exit_price": record[TRADE_EXIT_PRICE], "pnl": record[TRADE_PNL],
                "return": record[TRADE_RETURN], "bars": record[TRADE_BARS],
            }
            if liquidated:
                info["liquidated"] = True
        truncated = not terminated and t1 >= self._end
        if terminated or truncated:
            self._needs_reset = True
            if self._with_metrics:
                info["metrics"] = self._metrics()
        if self._box:
            return self._box_observation(self._ring, steps), reward, terminated, truncated, info
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

    def _metrics(self) -> dict[str, float]:
        k = self._steps
        n = self._n_trades
        pnl, ret = self._trade_pnl[:n], self._trade_ret[:n]
        counts, last_pnl, last_return = final_trade(self._account)
        if counts:
            pnl.append(last_pnl)
            ret.append(last_return)
        return episode_metrics(
            np.array(self._eq_hist[: k + 1]), np.array(self._pos_hist[1 : k + 1]),
            self._turnover(), np.array(pnl), np.array(ret),
            self._account[COSTS], initial_equity=self._initial, periods_per_year=self._ppy,
        )

    def _account_vector(self) -> np.ndarray:
        return np.array(
            account_features(self._account, self._row - self._offset, self._bars_scale),
            np.float32,
        )

    def _observe(self) -> ObsType:
        if self._box:
            return self.market.box_observation(self._ring, self._steps)
        if self._ring is not None:
            return self.market.with_dt(self.market.box_observation(self._ring, self._steps),
                                       self._row)
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
            account = self._account
            return ansi_status(self._dataset, self._row, self._steps, account[EQUITY],
                               self._initial, account[POSITION],
                               account[FEES_PAID] + account[SPREAD_PAID]
                               + account[SLIPPAGE_PAID])
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
        return self._account[EQUITY]

    @property
    def position(self) -> float:
        """Exposure held (``units * close / equity``)."""
        return self._account[POSITION]

    @property
    def target(self) -> float:
        """The target exposure of the last action (0 at the start of an episode)."""
        return self._account[TARGET]

    def episode_history(self) -> dict[str, np.ndarray]:
        """Copies of this episode's per-bar ``equity`` and ``position`` ``[k + 1]`` (bar 0 is
        the first decision bar) and ``turnover`` ``[k]``."""
        k = self._steps
        return {"equity": np.array(self._eq_hist[: k + 1]),
                "position": np.array(self._pos_hist[: k + 1]),
                "turnover": self._turnover()}

    def _turnover(self) -> np.ndarray:
        """Each step's traded notional over the equity at its decision, float64 ``[k]``."""
        k = self._steps
        return np.abs(np.array(self._notional_hist[1 : k + 1])) / np.array(self._eq_hist[:k])
