"""The compiled step of the batched envs (tradezoo.envs.batch_kernel) against its Python source.

The kernel runs the package's scalar functions compiled by numba; the single env runs the same
functions in Python. These tests pin that the compilation changes no bit: each function on
random inputs (every slippage model, both fills, funding and borrow on and off), and a whole
vector-env trajectory computed by the compiled kernel against the same kernel interpreted
(``NUMBA_DISABLE_JIT=1`` in a subprocess). tests/test_vector_env.py holds the vector env equal
to a ``SyncVectorEnv`` of single envs step by step.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import BarTerms, StepFill, execute_step, execution_rates
from tradezoo.envs import batch_kernel
from tradezoo.envs.core import closed_trade, differential_sharpe

COSTS = {
    "fixed": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="fixed",
                       slippage_bps=1.0, funding=True, borrow_rate_annual=0.05),
    "volatility": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volatility",
                            slippage_bps=1.0, slippage_k=0.1, funding=True),
    "volume": CostModel(taker_fee_bps=5.5, half_spread_bps=0.5, slippage="volume",
                        slippage_bps=1.0, slippage_k=0.05, max_participation=0.2,
                        funding=False, borrow_rate_annual=0.3),
}


def same_bits(a: float, b: float) -> bool:
    return np.float64(a).tobytes() == np.float64(b).tobytes()


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("model", list(COSTS))
def test_compiled_execute_step_equals_python(model: str, fill: str) -> None:
    rates = execution_rates(COSTS[model], fill=fill, periods_per_year=8760.0)  # type: ignore[arg-type]
    rng = np.random.default_rng(list(COSTS).index(model))
    traded_somewhere = False
    for _ in range(300):
        close_prev = 100.0 * math.exp(rng.normal(0, 0.2))
        open_next = close_prev * math.exp(rng.normal(0, 0.01))
        close_next = open_next * math.exp(rng.normal(0, 0.02))
        funding = float(rng.normal(0, 3e-4)) * (rng.random() < 0.5)
        equity = math.exp(rng.normal(math.log(1e4), 1.0))
        units = float(rng.normal(0, 1)) * equity / close_prev * (rng.random() < 0.8)
        args = (units, equity, float(rng.uniform(-2, 2)) * (rng.random() < 0.9),
                bool(rng.random() < 0.7), close_prev, open_next, close_next, funding,
                float(rng.uniform(0, 0.05)), math.exp(rng.uniform(math.log(1e2), math.log(1e9))))
        reference = open_next if fill == "next_open" else close_prev
        terms = BarTerms(reference - close_prev, funding * open_next, close_next - reference)
        python = execute_step(*args, rates, terms)
        compiled = batch_kernel._execute_step(*args, rates, terms)
        for name, a, b in zip(StepFill._fields, python, compiled, strict=True):
            assert same_bits(a, b), (name, a, b)
        traded_somewhere |= python.traded_units != 0.0
    assert traded_somewhere


def test_compiled_trade_and_reward_functions_equal_python() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        side = float(rng.integers(-1, 2))
        args = (side, *rng.normal(0, 10, 3), *rng.exponential(1.0, 2), rng.normal(0, 1),
                bool(rng.random() < 0.5), *rng.exponential(1e4, 3))
        for a, b in zip(closed_trade(*args), batch_kernel._closed_trade(*args), strict=True):
            assert same_bits(a, b)
        moments = (rng.normal(0, 1e-3), rng.exponential(1e-5), rng.normal(0, 1e-2), 0.01)
        for a, b in zip(differential_sharpe(*moments), batch_kernel._differential_sharpe(*moments),
                        strict=True):
            assert same_bits(a, b)


def test_rates_table_round_trips_every_field() -> None:
    rates = tuple(execution_rates(c, fill="close", periods_per_year=252.0) for c in COSTS.values())
    table = batch_kernel.rates_table(rates)
    assert table.shape == (3, batch_kernel.RATE_FIELDS)
    for row, r in zip(table, rates, strict=True):
        assert tuple(type(v)(x) for v, x in zip(r, row, strict=True)) == r


TRAJECTORY = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from tradezoo.backtest.costs import CostModel
    from tradezoo.envs.vector_env import TradingVectorEnv

    env = TradingVectorEnv(
        6, data=["bybit-btcusdt-1h", "yahoo-spy-1d"], window=8, episode_length=25,
        allow_short=True, reward=sys.argv[1], action_scheme="continuous", max_leverage=3.0,
        min_equity_fraction=0.9,
        costs=[CostModel.bybit_linear(slippage="volume", slippage_k=0.2),
               CostModel.equities(borrow_rate_annual=0.5)],
    )
    digest = hashlib.sha256()
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(120):
        obs, reward, terminated, truncated, info = env.step(
            rng.uniform(-1, 1, (6, 1)).astype(np.float32))
        digest.update(obs.tobytes() + reward.tobytes() + terminated.tobytes()
                      + truncated.tobytes())
        for key in sorted(k for k in info if not k.startswith("_")):
            value = info[key]
            for sub in (sorted(value) if isinstance(value, dict) else [None]):
                array = value if sub is None else value[sub]
                digest.update(key.encode() + str(sub).encode() + np.asarray(array).tobytes())
    digest.update(env.core.state.tobytes())
    print(digest.hexdigest())
""")


@pytest.mark.parametrize("reward", ["log_return", "differential_sharpe"])
def test_compiled_kernel_equals_its_python_source(reward: str) -> None:
    """A vector-env trajectory (two datasets with their own cost models, bankruptcies,
    autoresets, trade records, episode metrics) hashes the same with the kernel compiled and
    interpreted."""
    digests = []
    for disable in ("0", "1"):
        env = {**os.environ, "NUMBA_DISABLE_JIT": disable}
        out = subprocess.run([sys.executable, "-c", TRAJECTORY, reward], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.split()[0])
    assert digests[0] == digests[1]
    assert len(digests[0]) == len(hashlib.sha256().hexdigest())


@pytest.mark.parametrize("kwargs", [
    {},
    {"action_scheme": "continuous", "reward": "pnl", "rebalance": "every_bar"},
    {"observation": "dict", "action_scheme": "signal", "episode_metrics": False},
    {"render_mode": "rgb_array", "fill": "close", "initial_equity": 1000},
])
def test_the_kernel_is_compiled_at_construction_not_in_step(kwargs: dict) -> None:
    from tradezoo.envs.vector_env import TradingVectorEnv

    env = TradingVectorEnv(3, data="bybit-btcusdt-1h", window=8, episode_length=6, **kwargs)
    compiled = set(batch_kernel.advance_accounts.signatures)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(10):  # two autoresets
        env.step(env.action_space.sample())
    assert set(batch_kernel.advance_accounts.signatures) == compiled
    assert compiled, "construction compiled nothing"
