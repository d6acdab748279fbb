"""Batched trading envs: N accounts advanced by one numpy call per step.

:class:`BatchCore` holds the state of N episodes as one block ``[ACCOUNT_SIZE, N]`` (a
column per account in :mod:`tradezoo.envs.account`'s layout) and advances all of them with one
call of :func:`~tradezoo.envs.batch_kernel.advance_accounts`, a compiled loop that runs, for
each account, the account step the single :class:`~tradezoo.envs.trading_env.TradingEnv` runs
in Python (:func:`~tradezoo.envs.account.advance_account`), so each sub-env computes exactly
what a ``TradingEnv`` computes (tests hold them equal step by step); the episode metrics count
a final trade by the same rule (:func:`~tradezoo.envs.account.final_trade`), and the dict
observation's account vector is the same function
(:func:`~tradezoo.envs.account.account_features`); observations come from the builders of
:class:`~tradezoo.envs.market.Market`. Two
front ends share it:

- :class:`TradingVectorEnv`, a ``gymnasium.vector.VectorEnv`` with the autoreset modes
  ``NEXT_STEP`` (default), ``SAME_STEP`` and ``DISABLED`` (``metadata["autoreset_mode"]``).
  Sub-env ``i`` is seeded with ``seed + i`` and draws its episodes from its own RNG exactly as
  a :class:`TradingEnv` would, so it equals a ``SyncVectorEnv`` of single envs with the same
  seeds, infos included (keys batched as gymnasium does: an array per key plus a ``"_key"``
  mask; ``"trade"`` and ``"metrics"`` nested).
- :func:`~tradezoo.envs.sb3_vec_env.make_sb3_vec_env`, a Stable-Baselines3 ``VecEnv`` on the
  same core (its own module: this one never imports Stable-Baselines3).
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

from tradezoo.backtest.execution import bar_terms_of
from tradezoo.backtest.metrics import Metrics
from tradezoo.envs.account import (
    ACCOUNT_FIELDS,
    COSTS,
    REWARD_KINDS,
    final_trade,
    new_account,
)
from tradezoo.envs.batch_kernel import (
    CLOSED,
    FLAG_ROWS,
    FLOAT_STEP_KEYS,
    LIQUIDATION,
    LOG_RETURN,
    MARKET_STEP_FIELDS,
    OUT_ROWS,
    REWARD,
    STATE_ROWS,
    STEP_VALUES,
    TERMINATED,
    TRADE_INT_KEYS,
    TRADE_RECORD,
    account_vectors,
    advance_accounts,
    rates_table,
)
from tradezoo.envs.core import (
    RENDER_MODES,
    RESET_INFO_KEYS,
    RESET_OPTIONS,
    STEP_INFO_KEYS,
    TRADE_KEYS,
    EnvConfig,
    build_config,
    check_reset_options,
    episode_costs,
    episode_returns,
    invalid_action,
)
from tradezoo.envs.layout import N_ACCOUNT_FEATURES
from tradezoo.envs.market import account_scale
from tradezoo.envs.rendering import ansi_status, rgb_frame

_STEP_ONLY_KEYS = tuple(k for k in STEP_INFO_KEYS if k not in RESET_INFO_KEYS)
_MASK_KEYS = tuple(f"_{k}" for k in STEP_INFO_KEYS)
_UNSIGNED = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32),
             8: np.dtype(np.uint64)}
_TWO = {size: np.array(2, dtype) for size, dtype in _UNSIGNED.items()}  # highest action
# Where each trade info is in the kernel's outputs: (key, in the int64 block, row).
_TRADE_ROWS = tuple(
    (key, True, TRADE_INT_KEYS.index(key)) if key in TRADE_INT_KEYS
    else (key, False, TRADE_RECORD + k) for k, key in enumerate(TRADE_KEYS))
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
        liquidated: bool, the account was liquidated on this step; ``None`` when none was.
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
    liquidated: np.ndarray | None
    metrics: dict[int, dict[str, float]]
    any_done: bool


class BatchCore:
    """N trading accounts as arrays; the engine behind every batched env of the package.

    Args:
        config: validated settings (:func:`~tradezoo.envs.core.build_config`).
        num_envs: number of accounts ``N``.

    Speed notes (at N = 64 numpy's per-call overhead of about 1 us, not arithmetic, is what a
    batched step costs, so the step makes few numpy calls): the accounting of every account
    is one compiled call (:mod:`tradezoo.envs.batch_kernel`) that updates the state block
    in place and writes this step's outputs into one fresh block whose rows are the infos;
    every account shares one ``clock`` that ticks once per step, so per-step writes to the
    box observation rings and to the time-major episode histories are plain rows, and no
    Python loop runs over accounts except at episode starts and ends; the truncation test
    runs only once an account can have reached its end row; the episode metrics of
    accounts that end together are one
    :func:`~tradezoo.backtest.metrics.compute_metrics_batch` call.
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
        self._box = market.observation == "box"
        self._bars_scale = account_scale(market.window)
        self._ds_offsets = np.array([d.offset for d in market.datasets], np.int64)
        self._ds_ppy = [d.periods_per_year for d in market.datasets]
        # The market's per-row execute_step inputs, then the terms of execute_step that
        # depend on the bar only (BarTerms: price gap, funding per unit, drift; the price
        # gap is also the reversal split's price term) and the decision row in its
        # dataset's index (a trade's closing bar): float64 [R, STEP_COLUMNS] (batch_kernel's
        # layout), read by the compiled step.
        table = market.step_rows
        if table.shape[1] != len(MARKET_STEP_FIELDS):
            raise ValueError(f"Market.step_rows has {table.shape[1]} columns, the batched step "
                             f"reads {len(MARKET_STEP_FIELDS)}: {MARKET_STEP_FIELDS}")
        terms = bar_terms_of(table[:, 0], table[:, 1], table[:, 2], table[:, 3],
                             config.rates[0])  # reads the fill rule only, one per env
        bars = np.empty(len(table))
        for dataset in market.datasets:
            span = slice(dataset.offset, dataset.offset + dataset.length)
            bars[span] = np.arange(dataset.length)
        self._step_table = np.column_stack([table, *terms, bars])
        self._one = np.array(1, np.int64)  # a 0-d operand: numpy adds it faster than an int
        self._true = np.ones(n, bool)  # template: copied for each fresh all-True info mask
        self._rate_rows = rates_table(config.rates)  # one row per dataset
        # Histories are kept only when something reads them (metrics, the rgb render).
        self._with_metrics = config.episode_metrics
        self._keep_history = config.episode_metrics or config.render_mode == "rgb_array"
        self._history = config.capacity + 1  # columns of the circular episode histories
        self.clock = 0
        zeros_i = lambda: np.zeros(n, np.int64)  # noqa: E731
        self.ds, self.offset, self.start, self.row, self.end, self.clock0 = (
            zeros_i() for _ in range(6))
        # The accounts' float state, one block that the compiled step updates in place: a
        # column per account in the account's own layout (tradezoo.envs.account), so
        # ``state[:, i]`` is account i and ``fields[name]`` a row over the accounts (views).
        # Infos never hold these arrays: they get the step's fresh output block or copies.
        self.state = np.zeros((STATE_ROWS, n))
        self.fields = dict(zip(ACCOUNT_FIELDS, self.state, strict=True))
        self.equity, self.target, self.position = (
            self.fields["equity"], self.fields["target"], self.fields["position"])
        self.cost_sums = self.state[COSTS]  # COST_KEYS order
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
        # advance_accounts' settings arguments (every_bar, reward_kind, min_equity,
        # initial_equity, dsr_eta), as the types it is compiled for.
        self._settings = (
            config.rebalance == "every_bar",
            REWARD_KINDS.index(config.reward),
            float(config.min_equity), float(config.initial_equity), float(config.dsr_eta),
        )
        self._compile_step()

    def _compile_step(self) -> None:
        """Compile :func:`advance_accounts` for this core's argument types now (about 1.7 s,
        once per process) rather than inside the first ``step()``: a call on zero accounts,
        whose arrays are empty slices of the real ones (the same dtypes, dimensions and
        layouts, hence the same compiled signature)."""
        none = slice(0, 0)
        advance_accounts(
            self.state[:, none], self._step_table, self.row[none], np.zeros(0),
            self._rate_rows, self.ds[none], *self._settings, 0, self._keep_history,
            self._with_metrics, self.hist_equity[:, none], self.hist_position[:, none],
            self.hist_notional[:, none], self.hist_trades[:, :, none], np.empty((OUT_ROWS, 0)),
            np.empty((len(TRADE_INT_KEYS), 0), np.int64), np.empty((FLAG_ROWS, 0), bool),
        )
        if not self._box:
            account_vectors(self.state, self.row[none], self.row[none], 1.0,
                            np.empty((0, N_ACCOUNT_FEATURES), np.float32))

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
        self.row[idx] = start
        self.clock0[idx] = self.clock
        state = self.state
        state[:, idx] = np.array(new_account(initial, 0.0))[:, None]
        self.fields["entry_bar"][idx] = start - self.offset[idx]
        if self._keep_history:
            column = self.clock % self._history
            self.hist_equity[column, idx] = initial
            self.hist_position[column, idx] = 0.0
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
        """Advance every account by one bar (the batched twin of :meth:`TradingEnv.step`):
        one call of the compiled :func:`~tradezoo.envs.batch_kernel.advance_accounts`."""
        target = self.targets(actions)
        n = self.num_envs
        self.clock = clock = self.clock + 1
        column = clock % self._history
        out = np.empty((OUT_ROWS, n))
        trade_ints = np.empty((len(TRADE_INT_KEYS), n), np.int64)
        flags = np.empty((FLAG_ROWS, n), bool)
        any_terminated, any_closed, any_liquidated = advance_accounts(
            self.state, self._step_table, self.row, target, self._rate_rows, self.ds,
            *self._settings, column, self._keep_history, self._with_metrics, self.hist_equity,
            self.hist_position, self.hist_notional, self.hist_trades, out, trade_ints, flags,
        )
        rows1 = self.row + self._one
        self.row = rows1
        if self._box:
            self.market.box_push_all(self.rings, clock, rows1, self.position, out[LOG_RETURN])
        terminated = flags[TERMINATED]
        if clock >= self._next_truncation:
            truncated = (rows1 >= self.end) > terminated  # bools: a > b is a & ~b
            done = terminated | truncated
            any_done = np.count_nonzero(done)
        else:  # no account can be at its end row yet
            truncated = np.zeros(n, bool)
            done = terminated.copy()
            any_done = any_terminated
        # The float values are rows of this step's fresh output block (the core keeps none).
        values = dict(zip(FLOAT_STEP_KEYS, out[STEP_VALUES:STEP_VALUES + len(FLOAT_STEP_KEYS)],
                          strict=True))
        values["bar"] = rows1 - self.offset
        values["dataset"] = self.ds.copy()
        trades = None
        if any_closed:
            trades = {key: trade_ints[row] if is_int else out[row]
                      for key, is_int, row in _TRADE_ROWS}
        metrics: dict[int, dict[str, float]] = {}
        if self._with_metrics and any_done:
            metrics = self.episode_metrics(done.nonzero()[0])
        liquidated = flags[LIQUIDATION] if any_liquidated else None
        return BatchStep(out[REWARD], terminated, truncated, done, values, flags[CLOSED],
                         trades, liquidated, metrics, bool(any_done))

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
            counts, last_pnl, last_return = final_trade(self.state[:, i].tolist())
            if counts:
                pnl = np.append(pnl, last_pnl)
                ret = np.append(ret, last_return)
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
        out = np.empty((len(sel), N_ACCOUNT_FEATURES), np.float32)
        account_vectors(self.state, self.row[sel] - self.offset[sel], sel, self._bars_scale, out)
        return out

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Observations of every account (or of accounts ``idx``), fresh arrays."""
        if self._box:
            boxes = self.market.box_observations(self.rings, self.clock, idx)
            if not self.market.include_dt:
                return boxes
            return self.market.with_dts(boxes, self.row if idx is None else self.row[idx])
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


def _add_liquidated(info: dict[str, Any], liquidated: np.ndarray) -> None:
    """The ``"liquidated"`` info (True where the sub-env was liquidated, its own mask) when
    any of ``liquidated`` holds; single envs set it only on the step of a liquidation."""
    if np.count_nonzero(liquidated):
        info["liquidated"] = liquidated
        info["_liquidated"] = liquidated.copy()


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
        options = dict(check_reset_options(options, (*RESET_OPTIONS, "reset_mask")))
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
        if result.liquidated is not None:
            _add_liquidated(info, result.liquidated if stepped is None
                            else result.liquidated & stepped)
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
        if result.liquidated is not None:
            _add_liquidated(final_info, result.liquidated & done)
        if result.metrics:
            final_info["metrics"], final_info["_metrics"] = _metrics_block(result.metrics,
                                                                           self.num_envs)
        core.begin(done_idx)
        alive = ~done
        info = self._plain_info(
            result._replace(metrics={}, liquidated=None),  # liquidated accounts are done
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

