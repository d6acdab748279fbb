"""Batched trading envs: N accounts advanced by one numpy call per step.

:class:`BatchCore` holds the state of N episodes as arrays ``[N]`` and advances all of them
through :func:`~tradezoo.backtest.execution.execute_step` on arrays, with the observation
builder of :class:`~tradezoo.envs.market.Market`, the rules of :mod:`tradezoo.envs.core`, and
the same arithmetic, in the same order, as :class:`~tradezoo.envs.trading_env.TradingEnv`
(whose Python-float path it mirrors line by line; tests hold them equal step by step). Two
front ends share it:

- :class:`TradingVectorEnv`, a ``gymnasium.vector.VectorEnv`` with the autoreset modes
  ``NEXT_STEP`` (default), ``SAME_STEP`` and ``DISABLED`` (``metadata["autoreset_mode"]``).
  Sub-env ``i`` is seeded with ``seed + i`` and draws its episodes from its own RNG exactly as
  a :class:`TradingEnv` would, so it equals a ``SyncVectorEnv`` of single envs with the same
  seeds, infos included (keys batched as gymnasium does: an array per key plus a ``"_key"``
  mask; ``"trade"`` and ``"metrics"`` nested).
- :func:`make_sb3_vec_env`, a Stable-Baselines3 ``VecEnv`` (module
  :mod:`tradezoo.envs.sb3_vec_env`, imported lazily) on the same core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tradezoo.backtest.execution import BarTerms, ExecutionRates, bar_terms_of, execute_step
from tradezoo.backtest.metrics import Metrics
from tradezoo.envs.core import (
    DSR_MIN_VARIANCE,
    LOG_FLOOR,
    RENDER_MODES,
    RESET_INFO_KEYS,
    STEP_INFO_KEYS,
    TRADE_KEYS,
    EnvConfig,
    build_config,
    episode_costs,
    episode_returns,
    invalid_action,
)
from tradezoo.envs.market import N_ACCOUNT_FEATURES, account_scale
from tradezoo.envs.rendering import ansi_status, rgb_frame

_STEP_ONLY_KEYS = tuple(k for k in STEP_INFO_KEYS if k not in RESET_INFO_KEYS)
_MASK_KEYS = tuple(f"_{k}" for k in STEP_INFO_KEYS)
_UNSIGNED = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32),
             8: np.dtype(np.uint64)}
_TWO = {size: np.array(2, dtype) for size, dtype in _UNSIGNED.items()}  # highest action
_RATE_FIELDS = ("fee_rate", "half_spread", "slippage_fixed", "slippage_k", "max_participation",
                "borrow_per_bar")
_TRADE_MASK_KEYS = tuple(f"_{k}" for k in TRADE_KEYS)
_METRIC_NAMES = tuple(item.name for item in dataclasses.fields(Metrics))
_METRICS_BATCH = 64  # accounts per compute_metrics_batch call (see BatchCore.episode_metrics)


class BatchStep(NamedTuple):
    """What :meth:`BatchCore.advance` returns (arrays ``[N]`` unless said otherwise).

    Attributes:
        reward: float64 rewards.
        terminated, truncated: bool flags; ``done`` is ``terminated | truncated``.
        values: step info values by key (:data:`~tradezoo.envs.core.STEP_INFO_KEYS`).
        closed: bool, a trade closed on this step.
        trades: trade info values by key (:data:`~tradezoo.envs.core.TRADE_KEYS`), valid where
            ``closed``; ``None`` when no trade closed.
        metrics: slot -> episode metrics dict for the slots whose episode ended.
        any_done: whether ``done`` has a True.
    """

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    done: np.ndarray
    values: dict[str, np.ndarray]
    closed: np.ndarray
    trades: dict[str, np.ndarray] | None
    metrics: dict[int, dict[str, float]]
    any_done: bool


class BatchCore:
    """N trading accounts as arrays; the engine behind every batched env of the package.

    Args:
        config: validated settings (:func:`~tradezoo.envs.core.build_config`).
        num_envs: number of accounts ``N``.

    Speed notes (numpy's per-call overhead, not arithmetic, dominates at N = 64, so the step
    is written for few numpy calls): every account shares one ``clock`` that ticks once per
    step, so per-step writes to the box observation rings and to the time-major episode
    histories are plain rows instead of per-account scatters, and no Python loop runs over
    accounts except at episode starts and ends; the per-row inputs, including the terms of
    ``execute_step`` that depend on the bar only, come from one gather of a per-row table;
    the trade transitions work on one block per step (one masked copy opens the new
    trades, one multiplication masks the closed ones' info); constants are 0-d arrays
    (numpy applies those faster than Python scalars); the truncation test runs only once an
    account can have reached its end row; the episode metrics of accounts that end
    together are one :func:`~tradezoo.backtest.metrics.compute_metrics_batch` call.
    """

    def __init__(self, config: EnvConfig, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer):
            raise TypeError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs}")
        n = int(num_envs)
        self.config = config
        self.market = market = config.market
        self.num_envs = n
        self._all = np.arange(n)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._seeds: list[int | None] = [None] * n
        self._scheme = ("target", "signal", "continuous").index(config.action_scheme)
        self._levels = np.array(config.levels)
        self._every_bar = config.rebalance == "every_bar"
        self._next_open = config.fill == "next_open"
        self._reward_kind = ("log_return", "pnl", "differential_sharpe").index(config.reward)
        self._box = market.observation == "box"
        self._window = market.window
        self._bars_scale = account_scale(market.window)
        self._ds_offsets = np.array([d.offset for d in market.datasets], np.int64)
        self._ds_ppy = [d.periods_per_year for d in market.datasets]
        # The market's per-row execute_step inputs, then the terms of execute_step that
        # depend on the bar only (BarTerms: price gap, funding per unit, drift; the price
        # gap is also the reversal split's price term) and the decision row in its
        # dataset's index (a trade's closing bar): float64 [R, 10], one gather per step.
        table = market.step_rows
        terms = bar_terms_of(table[:, 0], table[:, 1], table[:, 2], table[:, 3],
                             config.rates[0])
        bars = np.empty(len(table))
        for dataset in market.datasets:
            span = slice(dataset.offset, dataset.offset + dataset.length)
            bars[span] = np.arange(dataset.length)
        self._step_table = np.column_stack([table, *terms, bars])
        # Constants as 0-d arrays: numpy applies an array operand faster than a Python or
        # numpy scalar (no scalar conversion per call), with the same IEEE result.
        self._log_floor = np.array(LOG_FLOOR)
        self._min_equity = np.array(config.min_equity)
        self._zero = np.array(0.0)
        self._one = np.array(1, np.int64)
        self._true = np.ones(n, bool)  # template: copied for each fresh all-True info mask
        self._init_rates(config)
        # Histories are kept only when something reads them (metrics, the rgb render).
        self._with_metrics = config.episode_metrics
        self._keep_history = config.episode_metrics or config.render_mode == "rgb_array"
        self._keep_costs = self._keep_history or config.render_mode == "ansi"
        self._history = config.capacity + 1  # columns of the circular episode histories
        self.clock = 0
        zeros_f = lambda: np.zeros(n)  # noqa: E731
        zeros_i = lambda: np.zeros(n, np.int64)  # noqa: E731
        self.ds, self.offset, self.start, self.row, self.end, self.clock0 = (
            zeros_i() for _ in range(6))
        self.units, self.equity, self.target, self.position, self.peak = (
            zeros_f() for _ in range(5))
        self.side = zeros_f()
        self.held = np.zeros(n, bool)  # side != 0
        # The open trades' entry state, one block so that opening trades is one masked copy:
        # rows entry price, entry bar (row in the dataset, as a float), base (the equity its
        # running P&L is measured from, TradingEnv._trade_transition) and equity at entry.
        self.entry = np.zeros((4, n))
        self.entry_price, self.entry_bar, self.base, self.entry_eq = self.entry
        self.cost_sums = np.zeros((5, n))  # fee, spread, slippage, funding, borrow
        self.dsr_a, self.dsr_b = zeros_f(), zeros_f()
        # Histories by clock tick (time-major, so each step writes one contiguous row).
        width = self._history if self._keep_history else 1
        self.hist_equity = np.zeros((width, n))
        self.hist_position = np.zeros((width, n))
        self.hist_notional = np.zeros((width, n))  # signed traded notional per step
        # Closed trades by clock tick: side of the trade that closed (0 where none closed,
        # so it marks the closes), its P&L and its return.
        self.hist_trades = np.zeros((width, 3, n))
        if self._box:
            self.rings = market.box_rings(n)
        self.started = np.zeros(n, bool)
        # The clock tick at which the first account can reach its end row (every account
        # moves one row per tick): no truncation test runs before it.
        self._next_truncation = 0

    def _init_rates(self, config: EnvConfig) -> None:
        rates = config.rates
        self._funding_flags: np.ndarray | None = None
        self._per_env_rates = False
        if all(r == rates[0] for r in rates):
            # The rates as 0-d arrays (see ``_log_floor``): same products, fewer conversions.
            self._rates: ExecutionRates = rates[0]._replace(**{
                name: np.array(getattr(rates[0], name)) for name in _RATE_FIELDS})
            return
        models = {r.slippage_model for r in rates}
        if len(models) > 1:
            raise ValueError(
                "the batched envs need one slippage model for every dataset (the cost models "
                f"use {sorted(c.slippage for c in config.costs)}); use the same slippage "
                "model or the single TradingEnv"
            )
        self._per_env_rates = True
        n = self.num_envs
        self._rate_table = {
            name: np.array([getattr(r, name) for r in rates], dtype=np.float64)
            for name in _RATE_FIELDS
        }
        self._rate_arrays = {name: np.zeros(n) for name in self._rate_table}
        self._funding_table = np.array([1.0 if r.funding else 0.0 for r in rates])
        self._funding_flags = np.zeros(n)
        arrays = self._rate_arrays
        self._rates = ExecutionRates(
            fee_rate=arrays["fee_rate"],  # type: ignore[arg-type]
            half_spread=arrays["half_spread"],  # type: ignore[arg-type]
            slippage_fixed=arrays["slippage_fixed"],  # type: ignore[arg-type]
            slippage_k=arrays["slippage_k"],  # type: ignore[arg-type]
            slippage_model=rates[0].slippage_model,
            max_participation=arrays["max_participation"],  # type: ignore[arg-type]
            # Datasets without funding get their rates zeroed instead (same equity: the
            # single env adds a zero charge where this one multiplies by a zero rate).
            funding=True,
            next_open=rates[0].next_open,
            borrow_per_bar=arrays["borrow_per_bar"],  # type: ignore[arg-type]
            borrow=any(r.borrow for r in rates),
        )

    # -- seeding and episode starts ------------------------------------------------------

    def seed(self, seeds: Sequence[int | None]) -> None:
        """Re-seed the accounts whose seed is not ``None`` (gymnasium's ``reset(seed=...)``)."""
        for i, seed in enumerate(seeds):
            if seed is not None:
                self._rngs[i], self._seeds[i] = seeding.np_random(seed)

    def rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], self._seeds[i] = seeding.np_random()
        return self._rngs[i]  # type: ignore[return-value]

    def begin(self, idx: np.ndarray, options: Mapping[str, Any] | None = None) -> None:
        """Start new episodes on accounts ``idx``: draw each one's dataset and first bar from
        its own RNG (as :meth:`TradingEnv.reset` does), then initialise their state."""
        config = self.config
        options = options or {}
        self.ds = self.ds.copy()  # handed out in infos: never written in place
        for i in idx.tolist():
            ds, start = config.draw_start(self.rng(i), options)
            self.ds[i] = ds
            self.start[i] = start
            self.end[i] = config.end_row(ds, start)
        self.reinit(idx)

    def reinit(self, idx: np.ndarray) -> None:
        """(Re)initialise accounts ``idx`` at the start of their current episode."""
        initial = self.config.initial_equity
        ds = self.ds[idx]
        start = self.start[idx]
        self.offset[idx] = self._ds_offsets[ds]
        self.row = self.row.copy()
        self.row[idx] = start
        self.clock0[idx] = self.clock
        # Copy-on-write for arrays an info may hold; the others are written in place.
        for name in ("units", "target", "position", "side", "equity"):
            array = getattr(self, name).copy()
            array[idx] = initial if name == "equity" else 0.0
            setattr(self, name, array)
        for array in (self.dsr_a, self.dsr_b):
            array[idx] = 0.0
        self.peak[idx] = initial
        self.held[idx] = False
        self.entry[:, idx] = ((0.0,), (0.0,), (initial,), (initial,))
        self.entry_bar[idx] = start - self.offset[idx]
        self.cost_sums[:, idx] = 0.0
        if self._keep_history:
            column = self.clock % self._history
            self.hist_equity[column, idx] = initial
            self.hist_position[column, idx] = 0.0
        if self._per_env_rates:
            for name, table in self._rate_table.items():
                self._rate_arrays[name][idx] = table[ds]
            self._funding_flags[idx] = self._funding_table[ds]  # type: ignore[index]
        if self._box:
            for i, row in zip(idx.tolist(), start.tolist(), strict=True):
                self.market.box_begin(self.rings[i], row, self.clock)
        self.started[idx] = True
        self._next_truncation = self.clock + int((self.end - self.row).min())

    # -- stepping ------------------------------------------------------------------------

    def targets(self, actions: Any) -> np.ndarray:
        """Target exposures ``[N]`` of a batch of actions (rules of :mod:`tradezoo.envs.core`).

        Raises:
            ValueError: an action outside the single action space, or a batch of the wrong
                shape.
        """
        n = self.num_envs
        array = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if self._scheme == 2:
            if array.shape == (n,):
                array = array[:, None]
            if array.shape != (n, 1) or array.dtype.kind not in "fiu":
                raise ValueError(
                    f"actions must be an array of shape ({n}, 1) for {n} envs with the "
                    f"'continuous' scheme, got shape {np.shape(actions)}"
                )
            values = array[:, 0].astype(np.float64)
            inside = np.abs(values) <= 1.0  # NaN fails too
            if np.count_nonzero(inside) != n:
                bad = int((~inside).nonzero()[0][0])
                raise invalid_action(array[bad], gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
            target = values * self.config.max_leverage
            if not self.config.allow_short:
                target = np.maximum(target, 0.0)
            return target
        if array.shape != (n,) or array.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({n},) for {n} envs, got "
                f"{array.dtype} of shape {array.shape}"
            )
        # One unsigned comparison catches negatives too (they wrap to huge values).
        outside = array.view(_UNSIGNED[array.itemsize]) > _TWO[array.itemsize]
        if np.count_nonzero(outside):
            bad = int(outside.nonzero()[0][0])
            raise invalid_action(array[bad], gym.spaces.Discrete(3))
        target = self._levels.take(array)
        if self._scheme == 1:
            target = np.where(array == 1, self.target, target)
        return target

    def advance(self, actions: Any) -> BatchStep:
        """Advance every account by one bar (the batched twin of :meth:`TradingEnv.step`)."""
        target = self.targets(actions)
        config = self.config
        trade: bool | np.ndarray = True if self._every_bar else target != self.target
        rows = self.row
        (close_prev, open_next, close_next, funding_next, range_frac, notional, gap,
         funding_per_unit, drift, bar) = self._step_table.take(rows, axis=0).T
        terms: BarTerms | None = BarTerms(gap, funding_per_unit, drift)
        if self._funding_flags is not None:
            funding_next = funding_next * self._funding_flags
            terms = None  # per-dataset funding: execute_step computes the terms
        units0 = self.units
        equity0 = self.equity
        (units, equity, traded, fill_price, fee, spread, slip, funding, borrow,
         position_pnl) = execute_step(
            units0, equity0, target, trade, close_prev, open_next, close_next, funding_next,
            range_frac, notional, self._rates, terms,
        )
        ratio = equity / equity0
        log_return = np.log(np.maximum(ratio, self._log_floor))
        if self._reward_kind == 0:
            reward = log_return
        elif self._reward_kind == 1:
            reward = (equity - equity0) / config.initial_equity
        else:
            reward = self._differential_sharpe(ratio - 1.0)
        terminated = equity <= self._min_equity
        any_terminated = np.count_nonzero(terminated)
        self.clock = clock = self.clock + 1
        column = clock % self._history
        if any_terminated:  # equity <= 0 is possible there: no 0-division
            position = np.divide(units * close_next, equity, out=np.zeros(self.num_envs),
                                 where=equity > 0.0)
            if self._keep_history:
                self.hist_position[column] = position
        elif self._keep_history:
            # Straight into this tick's history row: self.position is a view of it until the
            # next step replaces it (infos get a copy; reinit copies before it writes).
            position = np.multiply(units, close_next, out=self.hist_position[column])
            position /= equity
        else:
            position = units * close_next / equity

        rows1 = rows + self._one
        self.row = rows1
        self.units = units
        self.equity = equity
        self.target = target
        self.position = position
        if not self._box:  # the peak feeds the dict account vector's drawdown only
            np.maximum(self.peak, equity, out=self.peak)
        if self._keep_costs:  # one add of the five rows (numpy stacks the tuple)
            self.cost_sums += (fee, spread, slip, funding, borrow)
        if self._keep_history:
            self.hist_equity[column] = equity
            np.multiply(traded, fill_price, out=self.hist_notional[column])
        if self._box:
            self.market.box_push_all(self.rings, clock, rows1, position, log_return)

        side = np.sign(units)
        changed = side != self.side
        trades = None
        if np.count_nonzero(changed):
            closed, trades = self._trade_transitions(
                changed, side, equity, units0, traded, fee, spread, slip, funding,
                fill_price, bar, equity0, gap, column)
        else:
            closed = np.zeros(self.num_envs, bool)
            if self._with_metrics:
                self.hist_trades[column, 0] = 0.0

        if clock >= self._next_truncation:
            truncated = (rows1 >= self.end) > terminated  # bools: a > b is a & ~b
            done = terminated | truncated
            any_done = np.count_nonzero(done)
        else:  # no account can be at its end row yet
            truncated = np.zeros(self.num_envs, bool)
            done = terminated.copy()
            any_done = any_terminated
        # State arrays are copied for the infos (a caller may write into an info array);
        # the other values are fresh arrays of this step that the core does not keep.
        values = {
            "equity": equity.copy(), "position": position.copy(), "target": target.copy(),
            "units": units.copy(), "fill_price": fill_price, "fee": fee, "spread_cost": spread,
            "slippage_cost": slip, "funding_paid": funding, "borrow_paid": borrow,
            "position_pnl": position_pnl, "bar": rows1 - self.offset, "dataset": self.ds.copy(),
        }
        metrics: dict[int, dict[str, float]] = {}
        if self._with_metrics and any_done:
            metrics = self.episode_metrics(done.nonzero()[0])
        return BatchStep(reward, terminated, truncated, done, values, closed, trades, metrics,
                         bool(any_done))

    def _differential_sharpe(self, simple_return: np.ndarray) -> np.ndarray:
        a, b = self.dsr_a, self.dsr_b
        d_a = simple_return - a
        d_b = simple_return * simple_return - b
        variance = b - a * a
        positive = variance > DSR_MIN_VARIANCE
        value = np.zeros(self.num_envs)
        np.divide(b * d_a - 0.5 * a * d_b, variance * np.sqrt(np.maximum(variance, 0.0)),
                  out=value, where=positive)
        eta = self.config.dsr_eta
        self.dsr_a = a + eta * d_a
        self.dsr_b = b + eta * d_b
        return value

    def _trade_transitions(
        self,
        changed: np.ndarray,
        side: np.ndarray,
        equity: np.ndarray,
        units0: np.ndarray,
        traded: np.ndarray,
        fee: np.ndarray,
        spread: np.ndarray,
        slip: np.ndarray,
        funding: np.ndarray,
        fill_price: np.ndarray,
        bar: np.ndarray,
        equity0: np.ndarray,
        gap: np.ndarray,
        column: int,
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Close and open trades where the position's sign changed (the arithmetic of
        :meth:`TradingEnv._trade_transition`, on arrays). Returns the closed mask and the
        closed trades' info values, zero where no trade closed (``None`` when none closed).

        ``bar`` is the decision bar in its dataset's index (float), ``gap`` the reference
        price minus ``close[t]``. Speed: one fresh float block holds the closed trades' info
        values (rows 0-7: side, pnl, return, entry price, exit price, opened at, closed at,
        bars; masked with one multiplication, the integer fields converted in one call) and
        the new trades' entry state (rows 4, 6, 8, 10: fill price, bar, base, equity), copied
        into :attr:`entry` by one masked copy before the masking.
        """
        old_side = self.side
        held = side != self._zero
        opened = changed & held
        closed = changed & self.held
        self.side = side
        self.held = held
        entry = self.entry
        block = np.empty((11, self.num_envs))
        block[4] = fill_price
        block[6] = bar
        block[10] = equity0
        if not np.count_nonzero(closed):
            block[8] = equity0
            np.copyto(entry, block[4::2], where=opened)
            if self._with_metrics:
                self.hist_trades[column, 0] = 0.0
            return closed, None
        old_part = equity - equity0  # the closing trade's share of this step
        reversal = closed & opened
        if np.count_nonzero(reversal):
            # The closing trade gets the old position's gap, its funding and the share
            # |units0| / |traded| of the fill's costs (only read where reversal). On a
            # reversal units0 and traded have opposite signs, so that share is exactly
            # -(units0 / traded) (division rounds the magnitude; the sign is apart), and
            # adding (units0 / traded) * costs is subtracting share * costs: two abs() less.
            ratio = np.divide(units0, traded, out=np.zeros(self.num_envs), where=reversal)
            split = units0 * gap + ratio * (fee + spread + slip)
            if self._next_open:
                split -= funding
            np.copyto(old_part, split, where=reversal)
            # The reversed-into trade's base: equity0 + the closed part (TradingEnv);
            # split * False is a zero, and equity0 + 0 is equity0 for the plain opens.
            split *= reversal
            np.add(equity0, split, out=block[8])
        else:
            block[8] = equity0
        pnl = block[1]
        np.subtract(equity0, self.base, out=pnl)
        pnl += old_part
        np.divide(pnl, self.entry_eq, out=block[2])
        block[0] = old_side
        block[3:6:2] = entry[:2]  # entry price, opened at
        np.subtract(block[6], block[5], out=block[7])
        np.copyto(entry, block[4::2], where=opened)  # the new trades' entry state
        head = block[:8]
        head *= closed
        if self._with_metrics:
            self.hist_trades[column] = block[:3]
        ints = block[5:8].astype(np.int64)
        trades = {
            "side": block[0], "opened_at": ints[0], "closed_at": ints[1],
            "entry_price": block[3], "exit_price": block[4], "pnl": pnl,
            "return": block[2], "bars": ints[2],
        }
        return closed, trades

    def steps(self, i: int) -> int:
        """Steps taken in account ``i``'s current episode."""
        return self.clock - int(self.clock0[i])

    def _span(self, start: int) -> slice | np.ndarray:
        """History rows of the clock ticks ``start .. clock`` (a slice unless they wrap)."""
        stop = self.clock + 1
        if stop <= self._history:
            return slice(start, stop)
        return np.arange(start, stop) % self._history

    def episode_metrics(self, idx: np.ndarray) -> dict[int, dict[str, float]]:
        """Episode metrics of the accounts ``idx`` (what :meth:`TradingEnv._metrics` computes,
        with :func:`~tradezoo.envs.core.episode_metrics`' arithmetic).

        The accounts whose episodes started on the same clock tick (so they have the same
        length) go through :func:`~tradezoo.backtest.metrics.compute_metrics_batch`, which
        equals ``compute_metrics`` of each account to the bit, in batches of at most
        ``_METRICS_BATCH`` accounts (cache-sized ``[M, k]`` temporaries when many long
        episodes end together).
        """
        clock0 = self.clock0[idx]
        out: dict[int, dict[str, float]] = {}
        for start in np.unique(clock0).tolist():
            same_start = idx[clock0 == start]
            for first in range(0, len(same_start), _METRICS_BATCH):
                out.update(self._batch_metrics(same_start[first:first + _METRICS_BATCH], start))
        return {i: out[i] for i in idx.tolist()}

    def _batch_metrics(self, group: np.ndarray, start: int) -> dict[int, dict[str, float]]:
        """Episode metrics of the accounts ``group`` (ascending), whose episodes started at
        clock tick ``start``: one :func:`compute_metrics_batch` call."""
        from tradezoo.backtest.metrics import compute_metrics_batch

        # Consecutive accounts (the usual case): a slice, so the history reads are views.
        first, last = int(group[0]), int(group[-1])
        accounts = slice(first, last + 1) if last + 1 - first == len(group) else group
        span = self._span(start)
        # History rows of the episode's ticks and of its steps (the ticks after the first):
        # slices, or index columns that broadcast against the account indices.
        if isinstance(span, slice):
            ticks, steps = span, slice(start + 1, span.stop)
            step_rows: slice | np.ndarray = steps
        elif isinstance(accounts, slice):
            ticks, steps, step_rows = span, span[1:], span[1:]
        else:
            ticks, steps, step_rows = span[:, None], span[1:, None], span[1:]
        equity = self.hist_equity[ticks, accounts]  # [k + 1, M]
        previous = equity[:-1]
        returns = episode_returns(equity)  # [k, M]
        # |traded * fill| / equity0 == |traded| * fill / equity0 bit for bit (fill > 0)
        turnover = np.abs(self.hist_notional[steps, accounts]) / previous
        # The closed trades of every account in order, as (account, step) pairs found on a
        # contiguous [M, k] mask, then read from the history where they are.
        sides = self.hist_trades[step_rows, 0][:, accounts]  # [k, M]
        account, step = np.nonzero(np.ascontiguousarray((sides != 0.0).T))
        rows = step + (start + 1) if isinstance(span, slice) else step_rows[step]
        trade_pnl = self.hist_trades[rows, 1, group[account]]
        trade_ret = self.hist_trades[rows, 2, group[account]]
        ends = np.cumsum(np.bincount(account, minlength=len(group))).tolist()
        initial = self.config.initial_equity
        trades: list[dict[str, np.ndarray]] = []
        costs: list[dict[str, float]] = []
        begin = 0
        for i, end in zip(group.tolist(), ends, strict=True):
            pnl, ret = trade_pnl[begin:end], trade_ret[begin:end]
            begin = end
            if self.held[i]:  # the open trade counts with its unrealised P&L
                open_pnl = self.equity[i] - self.base[i]
                pnl = np.append(pnl, open_pnl)
                ret = np.append(ret, open_pnl / self.entry_eq[i])
            trades.append({"pnl": pnl, "return": ret})
            costs.append(episode_costs(self.cost_sums[:, i].tolist(), initial))
        batch = compute_metrics_batch(
            returns.T,
            periods_per_year=[self._ds_ppy[ds] for ds in self.ds[group].tolist()],
            trades=trades, positions=self.hist_position[steps, accounts].T,
            turnover=turnover.T, costs=costs,
        )
        # Metrics.to_dict(json_safe=False) as floats (float(int(n)) == float(n)).
        return {i: {name: float(getattr(metrics, name)) for name in _METRIC_NAMES}
                for i, metrics in zip(group.tolist(), batch, strict=True)}

    # -- observations --------------------------------------------------------------------

    def account(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Dict-observation account vectors ``[N or M, 4]`` (float32)."""
        sel = self._all if idx is None else idx
        held = self.held[sel]
        out = np.empty((len(sel), N_ACCOUNT_FEATURES), np.float32)
        equity = self.equity[sel]
        out[:, 0] = self.position[sel]
        out[:, 1] = np.where(held, (equity - self.base[sel]) / self.entry_eq[sel], 0.0)
        out[:, 2] = np.where(held, np.log1p(
            (self.row[sel] - self.offset[sel]) - self.entry_bar[sel])
                             / self._bars_scale, 0.0)
        out[:, 3] = equity / self.peak[sel] - 1.0
        return out

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Observations of every account (or of accounts ``idx``), fresh arrays."""
        if self._box:
            return self.market.box_observations(self.rings, self.clock, idx)
        rows = self.row if idx is None else self.row[idx]
        return self.market.dict_observations(rows, self.account(idx))

    def reset_values(self) -> dict[str, np.ndarray]:
        """Reset-info values of every account (valid for the ones just (re)started)."""
        return {"equity": self.equity.copy(), "position": self.position.copy(),
                "bar": self.row - self.offset, "dataset": self.ds.copy()}

    # -- rendering -----------------------------------------------------------------------

    def render_one(self, i: int) -> str | np.ndarray | None:
        mode = self.config.render_mode
        if mode is None or not self.started[i]:
            return None
        dataset = self.market.datasets[int(self.ds[i])]
        k = self.steps(i)
        if mode == "ansi":
            sums = self.cost_sums[:, i]
            return ansi_status(dataset, int(self.row[i]), k, float(self.equity[i]),
                               self.config.initial_equity, float(self.position[i]),
                               float(sums[0] + sums[1] + sums[2]))
        columns = (int(self.clock0[i]) + np.arange(k + 1)) % self._history
        return rgb_frame(dataset, int(self.start[i]), int(self.row[i]),
                         self.hist_position[columns, i], self.hist_equity[columns, i])


# ---------------------------------------------------------------------------- gymnasium


def _info_block(
    values: Mapping[str, np.ndarray], keys: Sequence[str], mask: np.ndarray | None,
    all_true: np.ndarray,
) -> dict[str, np.ndarray]:
    """Batched infos for ``keys`` as gymnasium's vector envs lay them out: one array per key,
    zero where ``mask`` is False, and a ``"_key"`` mask (``mask=None``: every sub-env has the
    key, and one all-True mask array serves every key)."""
    out: dict[str, np.ndarray] = {}
    if mask is None:
        for key in keys:
            out[key] = values[key]
            out[f"_{key}"] = all_true
    else:
        for key in keys:
            # Values are finite, so * mask zeroes the others (-0.0 == 0.0) faster than where.
            out[key] = values[key] * mask
            out[f"_{key}"] = mask
    return out


def _trade_block(
    trades: Mapping[str, np.ndarray], mask: np.ndarray, closed: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``"trade"`` info of the sub-envs in ``mask`` (a subset of the core's ``closed``):
    the core's values, already zero where no trade closed, plus a ``"_key"`` mask per key."""
    # With the core's own mask the core's fresh dict is used (each step's infos read it once).
    out = trades if mask is closed else {key: trades[key] * mask for key in TRADE_KEYS}
    out.update(dict.fromkeys(_TRADE_MASK_KEYS, mask))
    return out


def _metrics_block(
    metrics: Mapping[int, Mapping[str, float]], n: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Batched ``"metrics"`` infos of the sub-envs in ``metrics`` and their mask."""
    mask = np.zeros(n, bool)
    mask[list(metrics)] = True
    keys = next(iter(metrics.values())).keys()
    out: dict[str, np.ndarray] = {}
    for key in keys:
        column = np.zeros(n)
        for i, values in metrics.items():
            column[i] = values[key]
        out[key] = column
        out[f"_{key}"] = mask
    return out, mask


class TradingVectorEnv(VectorEnv):
    """``num_envs`` trading accounts stepped together by one numpy call per step.

    Takes every :class:`~tradezoo.envs.trading_env.TradingEnv` argument plus ``num_envs`` and
    ``autoreset_mode`` (``AutoresetMode.NEXT_STEP`` default, ``SAME_STEP``, ``DISABLED``, or
    their string values). Spaces are gymnasium's batches of the single env's spaces; rewards
    are float64 ``[N]``, flags bool ``[N]``. Registered as the ``vector_entry_point`` of every
    ``tradezoo/*`` id, so ``gymnasium.make_vec("tradezoo/BTCUSDT-1h-v0", num_envs=64)`` builds
    one.

    With ``DISABLED``, finished sub-envs must be reset with
    ``reset(options={"reset_mask": mask})`` before they are stepped again.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (gymnasium's attribute; copied per instance)
        "render_modes": list(RENDER_MODES),
        "render_fps": 30,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 8,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        data: Any = None,
        **kwargs: Any,
    ) -> None:
        if data is None:
            raise TypeError("TradingVectorEnv needs data= (a dataset name, path, frame or list)")
        kwargs.pop("max_episode_steps", None)  # gymnasium.make_vec passes the spec's; unused
        config = build_config(data, **kwargs)
        self._setup(config, num_envs, autoreset_mode)

    @classmethod
    def from_config(
        cls, config: EnvConfig, num_envs: int,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> TradingVectorEnv:
        env = cls.__new__(cls)
        env._setup(config, num_envs, autoreset_mode)
        return env

    def _setup(self, config: EnvConfig, num_envs: int,
               autoreset_mode: AutoresetMode | str) -> None:
        self.core = BatchCore(config, num_envs)
        self.config = config
        self.num_envs = self.core.num_envs
        self.autoreset_mode = (
            autoreset_mode if isinstance(autoreset_mode, AutoresetMode)
            else AutoresetMode(autoreset_mode)
        )
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = config.render_mode
        self.single_observation_space = config.market.observation_space()
        self.single_action_space = config.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._pending = np.zeros(self.num_envs, bool)  # autoreset on the next step
        self._any_pending = False
        self._all_started = False

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every sub-env, or those in ``options["reset_mask"]`` (a bool array [N]).

        ``seed``: ``None``, an int (sub-env ``i`` gets ``seed + i``) or one seed per sub-env.
        Other ``options`` (``"dataset"``, ``"start"``) apply to every sub-env reset.
        """
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed: a list of seeds must have num_envs={n} entries, got "
                                 f"{len(seeds)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            idx = self.core._all
        else:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
                raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape "
                                 f"({n},), got {mask!r}")
            if not mask.any():
                raise ValueError("options['reset_mask'] must select at least one sub-env")
            idx = np.flatnonzero(mask)
        self.core.seed([seeds[i] for i in range(n)] if mask is None
                       else [seeds[i] if mask[i] else None for i in range(n)])
        self.core.begin(idx, options)
        self._pending[idx] = False
        self._any_pending = bool(self._pending.any())
        self._all_started = bool(self.core.started.all())
        observations = self.core.observe()
        keep = None if mask is None else mask
        info = _info_block(self.core.reset_values(), RESET_INFO_KEYS, keep,
                           np.ones(self.num_envs, bool))
        return observations, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core = self.core
        if not self._all_started:
            raise ResetNeeded("TradingVectorEnv.step() called before reset(); call reset() "
                              "first")
        mode = self.autoreset_mode
        pending = self._pending
        any_pending = self._any_pending
        if mode == AutoresetMode.DISABLED and any_pending:
            raise ResetNeeded(
                f"sub-envs {np.flatnonzero(pending).tolist()} finished their episodes; with "
                "autoreset_mode=DISABLED reset them with reset(options={'reset_mask': mask})"
            )
        reset_idx = np.flatnonzero(pending) if any_pending else None
        if reset_idx is not None:
            core.begin(reset_idx)  # NEXT_STEP: new episodes; their actions are ignored
        result = core.advance(actions)
        reward, terminated, truncated = result.reward, result.terminated, result.truncated
        done = result.done
        info: dict[str, Any]
        if mode == AutoresetMode.SAME_STEP:
            info = self._same_step_info(result, done)
            observations = core.observe()
        else:
            if reset_idx is not None:
                core.reinit(reset_idx)  # undo the ignored step
                stepped = ~pending
                reward = np.where(stepped, reward, 0.0)
                terminated = terminated & stepped
                truncated = truncated & stepped
                done = terminated | truncated
                info = self._plain_info(result, stepped, core.reset_values())
            else:
                info = self._plain_info(result, None, None)
            observations = core.observe()
            self._pending = done  # a fresh array of this step that no output holds
            self._any_pending = result.any_done if reset_idx is None else bool(done.any())
        return observations, reward, terminated, truncated, info

    def _plain_info(
        self, result: BatchStep, stepped: np.ndarray | None,
        reset_values: Mapping[str, np.ndarray] | None,
    ) -> dict[str, Any]:
        """Infos of a step where ``stepped`` sub-envs stepped and the others (NEXT_STEP
        autoresets) were reset instead (``stepped=None``: all stepped)."""
        values = result.values
        if stepped is None:  # every sub-env stepped: one fresh all-True mask for every key
            info = values  # the core's fresh dict of this step, read once
            info.update(dict.fromkeys(_MASK_KEYS, self.core._true.copy()))
        else:
            all_true = np.ones(self.num_envs, bool)
            shared = {key: np.where(stepped, values[key], reset_values[key])  # type: ignore[index]
                      for key in RESET_INFO_KEYS}
            info = _info_block(shared, RESET_INFO_KEYS, None, all_true)
            if np.count_nonzero(stepped):  # keys no sub-env has are left out
                info.update(_info_block(values, _STEP_ONLY_KEYS, stepped, all_true))
        if stepped is None:  # the core's trades are None unless a trade closed
            closed = result.closed
            any_closed = result.trades is not None
        else:
            closed = result.closed & stepped
            any_closed = result.trades is not None and np.count_nonzero(closed)
        if any_closed:
            info["trade"] = _trade_block(result.trades, closed, result.closed)
            info["_trade"] = closed
        metrics = result.metrics
        if stepped is not None:
            metrics = {i: m for i, m in metrics.items() if stepped[i]}
        if metrics:
            info["metrics"], info["_metrics"] = _metrics_block(metrics, self.num_envs)
        return info

    def _same_step_info(self, result: BatchStep, done: np.ndarray) -> dict[str, Any]:
        core = self.core
        if not np.count_nonzero(done):
            return self._plain_info(result, None, None)
        done_idx = np.flatnonzero(done)
        final_obs = np.full(self.num_envs, None, dtype=object)
        observed = core.observe(done_idx)
        if isinstance(observed, dict):
            for j, i in enumerate(done_idx.tolist()):
                final_obs[i] = {key: value[j] for key, value in observed.items()}
        else:
            for j, i in enumerate(done_idx.tolist()):
                final_obs[i] = observed[j]
        final_info = _info_block(result.values, STEP_INFO_KEYS, done, done)
        closed_done = result.closed & done
        if result.trades is not None and np.count_nonzero(closed_done):
            final_info["trade"] = _trade_block(result.trades, closed_done, result.closed)
            final_info["_trade"] = closed_done
        if result.metrics:
            final_info["metrics"], final_info["_metrics"] = _metrics_block(result.metrics,
                                                                           self.num_envs)
        core.begin(done_idx)
        alive = ~done
        info = self._plain_info(
            result._replace(metrics={}),
            alive, core.reset_values(),
        )
        info["final_obs"] = final_obs
        info["_final_obs"] = done.copy()
        info["final_info"] = final_info
        info["_final_info"] = done.copy()
        return info

    def render(self) -> tuple[Any, ...] | None:
        """One frame per sub-env (``"ansi"`` strings or ``"rgb_array"`` images)."""
        if self.render_mode is None:
            gym.logger.warn("TradingVectorEnv.render() without a render_mode")
            return None
        return tuple(self.core.render_one(i) for i in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        return None


def make_sb3_vec_env(
    env_id: str | None = None,
    *,
    n_envs: int = 8,
    seed: int | None = None,
    **kwargs: Any,
) -> Any:
    """A Stable-Baselines3 ``VecEnv`` of ``n_envs`` accounts on the batched core.

    Args:
        env_id: a registered id (``"tradezoo/BTCUSDT-1h-v0"``...; its kwargs are the
            defaults) or ``None`` (``kwargs`` must then hold ``data=``).
        n_envs: number of accounts.
        seed: seeds the accounts ``seed, seed + 1, ...`` at the first reset.
        **kwargs: :class:`~tradezoo.envs.trading_env.TradingEnv` arguments.

    Returns:
        :class:`tradezoo.envs.sb3_vec_env.TradingSB3VecEnv` (it imports Stable-Baselines3;
        this module does not). Works behind ``VecMonitor`` and ``VecNormalize``; infos carry
        ``"terminal_observation"`` and ``"TimeLimit.truncated"`` at episode ends.
    """
    from tradezoo.envs.sb3_vec_env import TradingSB3VecEnv

    if env_id is not None:
        spec = gym.spec(env_id.split(":", 1)[-1] if ":" in env_id else env_id)
        kwargs = {**spec.kwargs, **kwargs}
    if "data" not in kwargs:
        raise TypeError("make_sb3_vec_env needs an env_id or data= (dataset name, path, frame)")
    data = kwargs.pop("data")
    config = build_config(data, **kwargs)
    venv = TradingSB3VecEnv(config, n_envs)
    if seed is not None:
        venv.seed(seed)
    return venv

