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

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tradezoo.backtest.execution import ExecutionRates, execute_step
from tradezoo.envs.core import (
    DSR_MIN_VARIANCE,
    LOG_FLOOR,
    RENDER_MODES,
    RESET_INFO_KEYS,
    STEP_INFO_KEYS,
    TRADE_KEYS,
    EnvConfig,
    build_config,
    episode_metrics,
    invalid_action,
)
from tradezoo.envs.market import N_ACCOUNT_FEATURES, account_scale
from tradezoo.envs.rendering import ansi_status, rgb_frame

_STEP_ONLY_KEYS = tuple(k for k in STEP_INFO_KEYS if k not in RESET_INFO_KEYS)
_MASK_KEYS = tuple(f"_{k}" for k in STEP_INFO_KEYS)
_UNSIGNED = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32),
             8: np.dtype(np.uint64)}


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
    """

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    done: np.ndarray
    values: dict[str, np.ndarray]
    closed: np.ndarray
    trades: dict[str, np.ndarray] | None
    metrics: dict[int, dict[str, float]]


class BatchCore:
    """N trading accounts as arrays; the engine behind every batched env of the package.

    Args:
        config: validated settings (:func:`~tradezoo.envs.core.build_config`).
        num_envs: number of accounts ``N``.

    Speed notes (numpy's per-call overhead, not arithmetic, dominates at N = 64): every
    account shares one ``clock`` that ticks once per step, so per-step writes to the box
    observation rings and the episode histories are plain column slices instead of
    per-account gathers, and no Python loop runs over accounts except at episode starts and
    ends.
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
        self._log_floor = np.float64(LOG_FLOOR)
        self._min_equity = np.float64(config.min_equity)
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
        self.side, self.base, self.entry_eq, self.entry_price = (zeros_f() for _ in range(4))
        self.entry_row = zeros_i()
        self.cost_sums = np.zeros((5, n))  # fee, spread, slippage, funding, borrow
        self.dsr_a, self.dsr_b = zeros_f(), zeros_f()
        width = self._history if self._keep_history else 1
        self.hist_equity = np.zeros((n, width))
        self.hist_position = np.zeros((n, width))
        self.hist_notional = np.zeros((n, width))  # signed traded notional per step
        # Closed trades by clock column, like the other histories: a column write per step
        # instead of a scatter; ``hist_closed`` marks the columns where a trade closed.
        self.hist_closed = np.zeros((n, width), bool)
        self.hist_trade_pnl = np.zeros((n, width))
        self.hist_trade_return = np.zeros((n, width))
        if self._box:
            self.rings = market.box_rings(n)
        self.started = np.zeros(n, bool)

    def _init_rates(self, config: EnvConfig) -> None:
        rates = config.rates
        self._funding_flags: np.ndarray | None = None
        self._per_env_rates = False
        if all(r == rates[0] for r in rates):
            self._rates: ExecutionRates = rates[0]
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
            for name in ("fee_rate", "half_spread", "slippage_fixed", "slippage_k",
                         "max_participation", "borrow_per_bar")
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
        market = self.market
        n_datasets = len(market.datasets)
        options = options or {}
        self.ds = self.ds.copy()  # handed out in infos: never written in place
        for i in idx.tolist():
            rng = self.rng(i)
            if "dataset" in options:
                ds = int(options["dataset"])
                if not 0 <= ds < n_datasets:
                    raise ValueError(f"options['dataset'] must be in [0, {n_datasets}), got {ds}")
            else:
                ds = int(rng.integers(n_datasets)) if n_datasets > 1 else 0
            lo, hi = config.start_range(ds)
            dataset = market.datasets[ds]
            if "start" in options:
                start = dataset.offset + int(options["start"])
                latest = dataset.last_decision + 1 - (config.episode_length or 1)
                if not lo <= start <= latest:
                    raise ValueError(
                        f"options['start'] must be a decision row of the split that leaves room "
                        f"for the episode, in [{lo - dataset.offset}, {latest - dataset.offset}], "
                        f"got {options['start']}"
                    )
            else:
                start = int(rng.integers(lo, hi + 1)) if hi > lo else lo
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
        for array in (self.entry_price, self.dsr_a, self.dsr_b):
            array[idx] = 0.0
        for array in (self.peak, self.entry_eq, self.base):
            array[idx] = initial
        self.entry_row[idx] = start
        self.cost_sums[:, idx] = 0.0
        if self._keep_history:
            column = self.clock % self._history
            self.hist_equity[idx, column] = initial
            self.hist_position[idx, column] = 0.0
        if self._per_env_rates:
            for name, table in self._rate_table.items():
                self._rate_arrays[name][idx] = table[ds]
            self._funding_flags[idx] = self._funding_table[ds]  # type: ignore[index]
        if self._box:
            for i, row in zip(idx.tolist(), start.tolist(), strict=True):
                self.market.box_begin(self.rings[i], row, self.clock)
        self.started[idx] = True

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
        outside = array.view(_UNSIGNED[array.itemsize]) > 2
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
        close_prev, open_next, close_next, funding_next, range_frac, notional = (
            self.market.step_rows.take(rows, axis=0).T)
        if self._funding_flags is not None:
            funding_next = funding_next * self._funding_flags
        units0 = self.units
        equity0 = self.equity
        (units, equity, traded, fill_price, fee, spread, slip, funding, borrow,
         position_pnl) = execute_step(
            units0, equity0, target, trade, close_prev, open_next, close_next, funding_next,
            range_frac, notional, self._rates,
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
        if np.count_nonzero(terminated):  # equity <= 0 is possible there: no 0-division
            position = np.divide(units * close_next, equity, out=np.zeros(self.num_envs),
                                 where=equity > 0.0)
        else:
            position = units * close_next / equity

        self.clock = clock = self.clock + 1
        rows1 = rows + 1
        self.row = rows1
        self.units = units
        self.equity = equity
        self.target = target
        self.position = position
        if not self._box:  # the peak feeds the dict account vector's drawdown only
            np.maximum(self.peak, equity, out=self.peak)
        if self._keep_costs:
            sums = self.cost_sums
            sums[0] += fee
            sums[1] += spread
            sums[2] += slip
            sums[3] += funding
            sums[4] += borrow
        if self._keep_history:
            column = clock % self._history
            self.hist_equity[:, column] = equity
            self.hist_position[:, column] = position
            self.hist_notional[:, column] = traded * fill_price
        if self._box:
            self.market.box_push_all(self.rings, clock, rows1, position, log_return)

        side = np.sign(units)
        changed = side != self.side
        trades = None
        if np.count_nonzero(changed):
            closed, trades = self._trade_transitions(
                changed, side, equity - equity0, units0, traded, fee + spread + slip, funding,
                fill_price, rows, equity0, close_prev, open_next)
        else:
            closed = np.zeros(self.num_envs, bool)
        if self._with_metrics:
            self.hist_closed[:, clock % self._history] = closed

        truncated = (rows1 >= self.end) > terminated  # bools: a > b is a & ~b
        # State arrays are copied for the infos (a caller may write into an info array);
        # the other values are fresh arrays of this step that the core does not keep.
        values = {
            "equity": equity.copy(), "position": position.copy(), "target": target.copy(),
            "units": units.copy(), "fill_price": fill_price, "fee": fee, "spread_cost": spread,
            "slippage_cost": slip, "funding_paid": funding, "borrow_paid": borrow,
            "position_pnl": position_pnl, "bar": rows1 - self.offset, "dataset": self.ds.copy(),
        }
        done = terminated | truncated
        metrics: dict[int, dict[str, float]] = {}
        if self._with_metrics and np.count_nonzero(done):
            for i in done.nonzero()[0].tolist():
                metrics[i] = self.metrics(i)
        return BatchStep(reward, terminated, truncated, done, values, closed, trades, metrics)

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
        delta: np.ndarray,
        units0: np.ndarray,
        traded: np.ndarray,
        fill_costs: np.ndarray,
        funding: np.ndarray,
        fill_price: np.ndarray,
        rows: np.ndarray,
        equity0: np.ndarray,
        close_prev: np.ndarray,
        open_next: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Close and open trades where the position's sign changed (the arithmetic of
        :meth:`TradingEnv._trade_transition`, on arrays). Returns the closed mask and the
        closed trades' info values, zero where no trade closed (``None`` when none closed).

        The info values come as rows of two fresh blocks (float and int64 fields), each
        masked with one multiplication: a handful of numpy calls instead of one per key."""
        old_side = self.side
        opened = changed & (side != 0.0)
        closed = changed & (old_side != 0.0)
        trades = None
        reversal = None
        if np.count_nonzero(closed):
            old_part = delta
            reversal = closed & opened
            if np.count_nonzero(reversal):
                reference = open_next if self._next_open else close_prev
                # Non-reversal accounts divide by |traded| + 1 (unused; avoids 0 / 0).
                share = np.abs(units0) / (np.abs(traded) + ~reversal)
                split = units0 * (reference - close_prev) - share * fill_costs
                if self._next_open:
                    split = split - funding
                old_part = np.where(reversal, split, delta)
            else:
                reversal = None
            reals = np.empty((5, self.num_envs))
            pnl = np.add(equity0 - self.base, old_part, out=reals[3])
            trade_return = np.divide(pnl, self.entry_eq, out=reals[4])
            if self._with_metrics:
                column = self.clock % self._history
                self.hist_trade_pnl[:, column] = pnl
                self.hist_trade_return[:, column] = trade_return
            reals[0] = old_side
            reals[1] = self.entry_price
            reals[2] = fill_price
            reals *= closed
            ints = np.empty((3, self.num_envs), np.int64)
            np.subtract(self.entry_row, self.offset, out=ints[0])
            np.subtract(rows, self.offset, out=ints[1])
            np.subtract(rows, self.entry_row, out=ints[2])
            ints *= closed
            trades = {
                "side": reals[0], "opened_at": ints[0], "closed_at": ints[1],
                "entry_price": reals[1], "exit_price": reals[2], "pnl": reals[3],
                "return": reals[4], "bars": ints[2],
            }
        # New trades: running P&L is equity - base (see TradingEnv._trade_transition). These
        # arrays never reach an info, so they are updated in place.
        np.copyto(self.base, equity0, where=opened)
        if reversal is not None:
            np.add(self.base, old_part, out=self.base, where=reversal)
        np.copyto(self.entry_eq, equity0, where=opened)
        np.copyto(self.entry_row, rows, where=opened)
        np.copyto(self.entry_price, fill_price, where=opened)
        self.side = side
        return closed, trades

    def steps(self, i: int) -> int:
        """Steps taken in account ``i``'s current episode."""
        return self.clock - int(self.clock0[i])

    def metrics(self, i: int) -> dict[str, float]:
        """Episode metrics of account ``i`` (what :meth:`TradingEnv._metrics` computes)."""
        k = self.steps(i)
        columns = (int(self.clock0[i]) + np.arange(k + 1)) % self._history
        closed = columns[1:][self.hist_closed[i, columns[1:]]]
        pnl = self.hist_trade_pnl[i, closed]
        ret = self.hist_trade_return[i, closed]
        if self.side[i] != 0.0:
            open_pnl = self.equity[i] - self.base[i]
            pnl = np.append(pnl, open_pnl)
            ret = np.append(ret, open_pnl / self.entry_eq[i])
        return episode_metrics(
            self.hist_equity[i, columns], self.hist_position[i, columns[1:]],
            # |traded * fill| / equity0 == |traded| * fill / equity0 bit for bit (fill > 0)
            np.abs(self.hist_notional[i, columns[1:]]) / self.hist_equity[i, columns[:-1]],
            pnl, ret, self.cost_sums[:, i].tolist(),
            initial_equity=self.config.initial_equity,
            periods_per_year=self._ds_ppy[int(self.ds[i])],
        )

    # -- observations --------------------------------------------------------------------

    def account(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Dict-observation account vectors ``[N or M, 4]`` (float32)."""
        sel = self._all if idx is None else idx
        held = self.side[sel] != 0.0
        out = np.empty((len(sel), N_ACCOUNT_FEATURES), np.float32)
        equity = self.equity[sel]
        out[:, 0] = self.position[sel]
        out[:, 1] = np.where(held, (equity - self.base[sel]) / self.entry_eq[sel], 0.0)
        out[:, 2] = np.where(held, np.log1p(self.row[sel] - self.entry_row[sel])
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
                         self.hist_position[i, columns], self.hist_equity[i, columns])


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
    out = dict(trades) if mask is closed else {key: trades[key] * mask for key in TRADE_KEYS}
    for key in TRADE_KEYS:
        out[f"_{key}"] = mask
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
        any_pending = bool(np.count_nonzero(pending))
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
            self._pending = done.copy()
        return observations, reward, terminated, truncated, info

    def _plain_info(
        self, result: BatchStep, stepped: np.ndarray | None,
        reset_values: Mapping[str, np.ndarray] | None,
    ) -> dict[str, Any]:
        """Infos of a step where ``stepped`` sub-envs stepped and the others (NEXT_STEP
        autoresets) were reset instead (``stepped=None``: all stepped)."""
        values = result.values
        if stepped is None:  # every sub-env stepped: one fresh all-True mask for every key
            info = {**values, **dict.fromkeys(_MASK_KEYS, np.ones(self.num_envs, bool))}
        else:
            all_true = np.ones(self.num_envs, bool)
            shared = {key: np.where(stepped, values[key], reset_values[key])  # type: ignore[index]
                      for key in RESET_INFO_KEYS}
            info = _info_block(shared, RESET_INFO_KEYS, None, all_true)
            if np.count_nonzero(stepped):  # keys no sub-env has are left out
                info.update(_info_block(values, _STEP_ONLY_KEYS, stepped, all_true))
        closed = result.closed if stepped is None else result.closed & stepped
        if result.trades is not None and np.count_nonzero(closed):
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

