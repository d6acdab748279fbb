"""Environment throughput: tradezoo's envs against gym-anytrading and Gym-Trading-Env.

One run measures, on the same bars with window 32, the full Bybit linear cost model and the
account state in the observation:

- ``TradingEnv`` steps/s against gym-anytrading, Gym-Trading-Env (GTE) and the harness's lean
  numpy reference env ``ref``;
- the time of ``TradingEnv.reset()`` after a full 20,000-step episode;
- ``TradingVectorEnv`` env-steps/s at N = 64 and N = 1024, against the same peers and the
  harness's batched reference ``ref_vec64``;

and prints a table with absolute figures, ratios and the targets (single env >= 2x GTE;
reset < 0.1 ms after 20,000 steps; vector env at N = 64 >= 20x GTE), each marked met or not
met. It is a benchmark, not a test: it asserts nothing and exits 0 when a target is missed.

The measuring instrument is ``benchmarks/harness/envs.py``. Every env, ours and the peers', is
stepped by the same timed loop, each in its own fresh worker process of this interpreter, with
random actions drawn up front. The peers come with ``pip install -e ".[bench]"``.

Bars: the harness's seeded synthetic series (20,000 hourly bars, geometric random walk with
volatility clustering, seed 42), identical OHLCV for every env. That frame has no funding,
so :func:`bench_bars` adds a deterministic funding rate of 0.01 % at every 8-hourly stamp (00,
08, 16 UTC; Bybit's base rate) for tradezoo only: the peers have no funding to charge, and this
way our funding code path runs on non-zero rates instead of being measured on zeros. Our env
computes its default causal features from the bars (28 columns with funding) and appends its
2 account columns ([32, 30]); the peers use the 5 ``feature_*`` columns (GTE: [32, 7]) or 2
price columns (gym-anytrading: [32, 2]), so our observations are the widest of the three.
Like-for-like rows run our single and N = 64 envs once more on the peers' own 5 ``feature_*``
columns (passed as precomputed ``features``), so the observation has GTE's shape [32, 7]; the
targets are judged on the default rows, the like-for-like ratio is printed beside them.

Episodes: the single env makes one sequential pass over the data (``random_start=False``), as
the peers do, with ``min_equity_fraction=0`` (random actions would otherwise go bankrupt after
about 3,000 steps; the check still runs every step). The vector env uses seeded random starts
and ``episode_length=4096`` (the episode length of the batched reference ``ref_vec64``; still
five times more episode ends than the peers' 20,000-bar pass), and its timed loop is long
enough that every sub-env autoresets inside it. Episode metrics at the last step stay on (the
envs' default) everywhere.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/env_throughput.py                 # one round, 30-90 s by machine load
    python benchmarks/env_throughput.py --rounds 3 --json bench.json
    python benchmarks/env_throughput.py --quick         # under a minute, for a smoke check

The machine is usually shared: quote ratios (measured seconds apart in the same run) rather
than absolute figures, and prefer ``--rounds 3`` (medians over rounds) for published numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import envs as harness
from harness import workers

if TYPE_CHECKING:  # the factories import these lazily so the workers start fast
    import gymnasium as gym
    import pandas as pd

MODULE = Path(__file__).stem  # the workers import the factories as ``env_throughput:factory``

WINDOW = 32
"""Observation window (bars) of every env in this benchmark."""
BARS = 20_000
SEED = 42
FUNDING_RATE = 1e-4
"""Synthetic funding rate per 8-hourly stamp (0.01 %, Bybit's base rate), tradezoo only."""
FUNDING_HOURS = (0, 8, 16)
VEC_EPISODE_LENGTH = 4096
"""Episode length (bars) of the vector env's sub-envs. The timed loop runs ``--vec-calls``
(default 2x this) calls, so every sub-env autoresets inside it and per-episode work (the
episode metrics at the last step, the reset) is paid at its steady-state rate."""
QUICK_VEC_EPISODE_LENGTH = 128
VEC_EPISODE_ENV = "TRADEZOO_BENCH_VEC_EPISODE_LENGTH"
"""Environment variable that passes ``--quick``'s shorter episodes to the workers."""
RESET_EPISODE_STEPS = 20_000
"""Steps taken before each timed reset in the reset measurement (the reset target)."""
PEERS = ("gte", "anytrading", "ref", "ref_vec64")
VECTOR_SIZES = (64, 1024)

TARGET_SINGLE_VS_GTE = 2.0
TARGET_RESET_MS = 0.1
TARGET_VEC64_VS_GTE = 20.0


# ------------------------------------------------------------------------------ factories --
# ``harness.envs --custom env_throughput:factory`` imports this module inside its worker
# (PYTHONPATH holds the repository root and benchmarks/) and calls ``factory(df, window)``.


def bench_bars(df: pd.DataFrame) -> pd.DataFrame:
    """The harness's frame as a validated tradezoo bars frame with synthetic funding stamps.

    Args:
        df: ``harness.envs.make_ohlcv`` output: tz-naive hourly DatetimeIndex (UTC wall
            time, named ``date``), float64 ``open high low close volume`` and ``feature_*``
            columns (the peers' features; dropped here, our env computes its own).

    Returns:
        A bars frame (UTC index of bar open times, float64 OHLCV + ``funding_rate``) that has
        passed ``validate_bars``; ``funding_rate`` is :data:`FUNDING_RATE` on bars opening at
        00, 08 and 16 UTC and 0 elsewhere.
    """
    from tradezoo.data.datasets import load_bars

    frame = df[["open", "high", "low", "close", "volume"]].copy()
    stamped = frame.index.hour.isin(FUNDING_HOURS) & (frame.index.minute == 0)
    frame["funding_rate"] = stamped * FUNDING_RATE
    bars, _report = load_bars(frame, symbol="SYNUSDT", interval="1h", tz="UTC")
    return bars


def make_env(df: pd.DataFrame, window: int, **overrides: Any) -> gym.Env:
    """``TradingEnv`` on the harness's bars: Bybit linear costs with funding, account state on."""
    from tradezoo.backtest import CostModel
    from tradezoo.envs import TradingEnv

    kwargs: dict[str, Any] = {
        "window": window,
        "split": (None, None),  # every bar; the scaler is still fitted on the train part only
        "costs": CostModel.bybit_linear(),
        "random_start": False,  # one sequential pass over the data, as the peers do
        "episode_length": None,
        # Random actions pay ~7 bps per trade on 2 of 3 steps and would hit the default
        # bankruptcy level (10 % of initial equity) after ~3,000 steps; with 0 the episode is
        # the full pass, like the peers' episodes (the check itself still runs every step).
        "min_equity_fraction": 0.0,
    }
    kwargs.update(overrides)
    return TradingEnv(bench_bars(df), **kwargs)


def make_vector_env(df: pd.DataFrame, window: int, num_envs: int, **overrides: Any) -> Any:
    """``TradingVectorEnv`` of ``num_envs`` sub-envs on the harness's bars (same settings)."""
    from tradezoo.backtest import CostModel
    from tradezoo.envs import TradingVectorEnv

    kwargs: dict[str, Any] = {
        "window": window,
        "split": (None, None),
        "costs": CostModel.bybit_linear(),
        "random_start": True,
        "episode_length": int(os.environ.get(VEC_EPISODE_ENV, VEC_EPISODE_LENGTH)),
        "min_equity_fraction": 0.0,
    }
    kwargs.update(overrides)
    return TradingVectorEnv(num_envs, data=bench_bars(df), **kwargs)


def peer_features(df: pd.DataFrame) -> pd.DataFrame:
    """The harness's 5 ``feature_*`` columns (the peers' observation features) on our bars' UTC
    index, for the like-for-like rows: with them our box observation is ``[window, 7]``, the
    shape of Gym-Trading-Env's (5 features + 2 account columns there as here)."""
    features = df[[c for c in df.columns if c.startswith("feature_")]].copy()
    features.index = features.index.tz_localize("UTC").rename("timestamp")
    return features


def factory(df: pd.DataFrame, window: int) -> gym.Env:
    """``--custom env_throughput:factory``: the single ``TradingEnv``."""
    return make_env(df, window)


def factory_peer_features(df: pd.DataFrame, window: int) -> gym.Env:
    """The single ``TradingEnv`` observing the peers' 5 features (``[window, 7]``)."""
    return make_env(df, window, features=peer_features(df))


def factory_vec64(df: pd.DataFrame, window: int) -> Any:
    """``--custom env_throughput:factory_vec64 --custom-batch 64``."""
    return make_vector_env(df, window, 64)


def factory_vec1024(df: pd.DataFrame, window: int) -> Any:
    """``--custom env_throughput:factory_vec1024 --custom-batch 1024``."""
    return make_vector_env(df, window, 1024)


def factory_vec64_peer_features(df: pd.DataFrame, window: int) -> Any:
    """``TradingVectorEnv`` N = 64 observing the peers' 5 features (``[64, window, 7]``)."""
    return make_vector_env(df, window, 64, features=peer_features(df))


VECTOR_FACTORIES: dict[int, str] = {64: "factory_vec64", 1024: "factory_vec1024"}
LIKE_FOR_LIKE: dict[str, tuple[str, int]] = {
    "tradezoo_peerfeat": ("factory_peer_features", 1),
    "tradezoo_vec64_peerfeat": ("factory_vec64_peer_features", 64),
}
"""Our envs on the peers' 5 features: result name -> (factory, batch)."""


# ---------------------------------------------------------------- reset after an episode --


def measure_reset(samples: int, window: int, episode_steps: int, seed: int) -> dict[str, Any]:
    """Median wall time of ``TradingEnv.reset()`` right after ``episode_steps`` steps.

    Runs in a worker process of this interpreter, like the throughput runs. The bars come
    from the harness's generator, made just long enough for a sequential episode of
    ``episode_steps`` steps with every feature warmed up (the 20,000-bar series of the
    throughput runs ends about 130 steps short of that). Each sample steps one full episode with
    seeded random actions, then times one ``reset()``.

    Returns:
        ``reset_ms_median``, ``reset_ms`` (every sample), ``reset_cpu_ms_median`` (CPU
        time), ``episode_steps`` (steps actually
        taken before each reset) and ``bars``.
    """
    import numpy as np

    from tradezoo.data import FeatureSpec

    warmup = FeatureSpec().warmup_rows
    n_bars = episode_steps + warmup + window + 2
    df = harness.make_ohlcv(n_bars, seed)
    env = make_env(df, window, episode_length=episode_steps)
    rng = np.random.default_rng(seed)
    times, cpu_times, steps_taken = [], [], []
    env.reset(seed=seed)
    for _ in range(samples):
        actions = rng.integers(0, 3, episode_steps + 1).tolist()
        steps = 0
        for action in actions:
            _obs, _reward, terminated, truncated, _info = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        start, cpu_start = time.perf_counter(), time.process_time()
        env.reset()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        steps_taken.append(steps)
    return {
        "reset_ms_median": 1e3 * statistics.median(times),
        "reset_ms": [1e3 * t for t in times],
        "reset_cpu_ms_median": 1e3 * statistics.median(cpu_times),
        "episode_steps": steps_taken,
        "bars": n_bars,
    }


# ----------------------------------------------------------------------------- running --


@dataclass(frozen=True)
class Plan:
    """What one round runs; ``--quick`` shrinks it."""

    steps: int
    repeats: int
    resets: int
    vec_calls: int
    vec_episode_length: int
    reset_samples: int
    rounds: int
    window: int


def _child_env(plan: Plan) -> dict[str, str]:
    """Workers' environment: one BLAS/OpenMP thread (the envs are latency bound, threads
    would only add noise) and the plan's vector episode length."""
    return workers.child_env({VEC_EPISODE_ENV: str(plan.vec_episode_length)}, threads=1)


def measure_env(
    name: str, plan: Plan, *, steps: int, custom: str | None = None, custom_batch: int = 1
) -> dict[str, Any]:
    """One env (a peer's name, or ``"custom"`` with a factory of this module) in a fresh
    worker, stepped by the harness's timed loop on the shared bars."""
    case = harness.EnvCase(
        bars=BARS, seed=SEED, window=plan.window, steps=steps, repeats=plan.repeats,
        resets=plan.resets,
    )
    spec = f"{MODULE}:{custom}" if custom is not None else None
    return harness.run_isolated(
        name, case, custom=spec, custom_batch=custom_batch, env=_child_env(plan)
    )


def run_reset_worker(plan: Plan) -> dict[str, Any]:
    """:func:`measure_reset` in a fresh worker (``python -m env_throughput --reset-worker``)."""
    argv = ["--reset-worker", "--reset-samples", str(plan.reset_samples)]
    argv += ["--window", str(plan.window)]
    result = workers.run_worker(MODULE, argv, env=_child_env(plan))
    if "error" in result:
        return {"skipped": "reset worker failed: " + result["error"]}
    return result


def run_round(index: int, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """One round: our single env, the peers, our vector envs, the reset measurement."""
    results: dict[str, dict[str, Any]] = {}

    log(f"round {index + 1}: TradingEnv ...")
    results["tradezoo"] = measure_env("custom", plan, steps=plan.steps, custom="factory")

    for peer in PEERS:
        log(f"round {index + 1}: peer {peer} ...")
        results[peer] = measure_env(peer, plan, steps=plan.steps)

    for n in VECTOR_SIZES:
        log(f"round {index + 1}: TradingVectorEnv N={n} ...")
        results[f"tradezoo_vec{n}"] = measure_env(
            "custom", plan, steps=n * plan.vec_calls, custom=VECTOR_FACTORIES[n],
            custom_batch=n,
        )

    for name, (factory_name, batch) in LIKE_FOR_LIKE.items():
        log(f"round {index + 1}: {factory_name} (the peers' 5 features) ...")
        steps = plan.steps if batch == 1 else batch * plan.vec_calls
        results[name] = measure_env(
            "custom", plan, steps=steps, custom=factory_name, custom_batch=batch
        )

    log(f"round {index + 1}: reset after {RESET_EPISODE_STEPS:,}-step episodes ...")
    reset = run_reset_worker(plan)
    return {"results": results, "reset": reset}


# --------------------------------------------------------------------------- summarising --


def _rate(res: dict[str, Any] | None, key: str = "steps_per_s_median") -> float:
    if not res or "skipped" in res:
        return math.nan
    return float(res[key])


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; ratios as the median over rounds of same-round ratios.

    Same-round ratios are what a noisy shared machine measures best: both figures were taken
    seconds apart, under (nearly) the same background load.
    """
    names = sorted({name for r in rounds for name in r["results"]})
    absolute: dict[str, dict[str, float]] = {}
    for name in names:
        entries = [r["results"].get(name) for r in rounds]
        absolute[name] = {
            "steps_per_s": _median([_rate(e) for e in entries]),
            "steps_per_cpu_s": _median([_rate(e, "steps_per_cpu_s_median") for e in entries]),
            "reset_ms_after_256": _median([_rate(e, "reset_ms_median") for e in entries]),
            "reset_ms_episode_end": _median(
                [
                    statistics.median(e["reset_ms_episode_end"])
                    if e and "skipped" not in e and e.get("reset_ms_episode_end")
                    else math.nan
                    for e in entries
                ]
            ),
            "build_s": _median([_rate(e, "build_s_median") for e in entries]),
        }
    reset_ms = _median([r["reset"].get("reset_ms_median", math.nan) for r in rounds])
    ours = ["tradezoo", *[f"tradezoo_vec{n}" for n in VECTOR_SIZES], *LIKE_FOR_LIKE]
    ratios: dict[str, dict[str, float]] = {}
    for mine in ours:
        ratios[mine] = {}
        for peer in PEERS:
            for key, suffix in (("steps_per_s_median", ""), ("steps_per_cpu_s_median", "_cpu")):
                per_round = [
                    _rate(r["results"].get(mine), key) / _rate(r["results"].get(peer), key)
                    for r in rounds
                ]
                ratios[mine][peer + suffix] = _median(per_round)
    reset_cpu_ms = _median([r["reset"].get("reset_cpu_ms_median", math.nan) for r in rounds])
    single, vec64 = ratios["tradezoo"], ratios["tradezoo_vec64"]
    vec64_like = ratios["tradezoo_vec64_peerfeat"]
    # The verdict uses wall time (what "steps/s" means); the CPU-time figure is printed next
    # to it because on a loaded machine it is the steadier of the two.
    targets = [
        {
            "target": f"TradingEnv >= {TARGET_SINGLE_VS_GTE:g}x Gym-Trading-Env steps/s",
            "measured": single["gte"],
            "measured_cpu": single["gte_cpu"],
            "unit": "x",
            "met": bool(single["gte"] >= TARGET_SINGLE_VS_GTE),
            "met_cpu": bool(single["gte_cpu"] >= TARGET_SINGLE_VS_GTE),
        },
        {
            "target": (
                f"reset < {TARGET_RESET_MS:g} ms after a {RESET_EPISODE_STEPS:,}-step episode"
            ),
            "measured": reset_ms,
            "measured_cpu": reset_cpu_ms,
            "unit": "ms",
            "met": bool(reset_ms < TARGET_RESET_MS),
            "met_cpu": bool(reset_cpu_ms < TARGET_RESET_MS),
        },
        {
            "target": f"TradingVectorEnv N=64 >= {TARGET_VEC64_VS_GTE:g}x Gym-Trading-Env",
            "measured": vec64["gte"],
            "measured_cpu": vec64["gte_cpu"],
            "unit": "x",
            "met": bool(vec64["gte"] >= TARGET_VEC64_VS_GTE),
            "met_cpu": bool(vec64["gte_cpu"] >= TARGET_VEC64_VS_GTE),
        },
        {  # like for like: the same observation shape as GTE's
            "target": "  the same on the peers' 5 features, obs [32, 7] as GTE's",
            "measured": vec64_like["gte"],
            "measured_cpu": vec64_like["gte_cpu"],
            "unit": "x",
            "met": bool(vec64_like["gte"] >= TARGET_VEC64_VS_GTE),
            "met_cpu": bool(vec64_like["gte_cpu"] >= TARGET_VEC64_VS_GTE),
        },
    ]
    return {
        "absolute": absolute,
        "reset_ms_after_episode": reset_ms,
        "reset_cpu_ms_after_episode": reset_cpu_ms,
        "ratios": ratios,
        "targets": targets,
    }


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:,.{digits}f}"


def _ratio(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def format_report(summary: dict[str, Any], rounds: list[dict[str, Any]], plan: Plan) -> str:
    """The printed tables: ours with ratios, the peers, the targets."""
    absolute, ratios = summary["absolute"], summary["ratios"]
    lines: list[str] = []
    add = lines.append
    ref_for = {
        "tradezoo": "ref",
        "tradezoo_vec64": "ref_vec64",
        "tradezoo_vec1024": "ref_vec64",
        "tradezoo_peerfeat": "ref",
        "tradezoo_vec64_peerfeat": "ref_vec64",
    }
    label = {
        "tradezoo": "TradingEnv",
        "tradezoo_vec64": "TradingVectorEnv N=64",
        "tradezoo_vec1024": "TradingVectorEnv N=1024",
        "tradezoo_peerfeat": "TradingEnv",
        "tradezoo_vec64_peerfeat": "TradingVectorEnv N=64",
    }
    sections = (
        ("our 28 default features, obs [32, 30]",
         ("tradezoo", "tradezoo_vec64", "tradezoo_vec1024")),
        ("the peers' 5 features, obs [32, 7] as Gym-Trading-Env's",
         ("tradezoo_peerfeat", "tradezoo_vec64_peerfeat")),
    )
    add("")
    add(f"tradezoo (window {plan.window}, Bybit linear costs + funding, account state on)")
    header = (
        f"{'env':<24}{'env-steps/s':>13}{'per CPU-s':>13}{'x GTE':>8}{'(CPU)':>8}"
        f"{'x anytrading':>14}{'x ref':>8}  {'(ref is)':<10}"
    )
    add(header)
    for title, mines in sections:
        add(f"-- {title} " + "-" * max(0, len(header) - len(title) - 4))
        for mine in mines:
            skipped = rounds[0]["results"].get(mine, {}).get("skipped")
            if skipped:
                add(f"{label[mine]:<24}skipped: {skipped[:200]}")
                continue
            ref = ref_for[mine]
            add(
                f"{label[mine]:<24}{_num(absolute[mine]['steps_per_s']):>13}"
                f"{_num(absolute[mine]['steps_per_cpu_s']):>13}"
                f"{_ratio(ratios[mine]['gte']):>8}{_ratio(ratios[mine]['gte_cpu']):>8}"
                f"{_ratio(ratios[mine]['anytrading']):>14}{_ratio(ratios[mine][ref]):>8}"
                f"  {ref:<10}"
            )
    add("")
    reset = rounds[0]["reset"]
    if "skipped" in reset:
        add(
            f"TradingEnv reset after a {RESET_EPISODE_STEPS:,}-step episode: "
            f"skipped: {reset['skipped'][:300]}"
        )
    else:
        add(
            f"TradingEnv reset after a {reset['episode_steps'][0]:,}-step episode: "
            f"{summary['reset_ms_after_episode']:.4f} ms wall, "
            f"{summary['reset_cpu_ms_after_episode']:.4f} ms CPU (median of "
            f"{len(reset['reset_ms'])} per round); after 256 steps (the peers' figure) "
            f"{absolute['tradezoo']['reset_ms_after_256']:.4f} ms; "
            f"build {absolute['tradezoo']['build_s']:.2f} s"
        )
    add("")
    add("peers (same bars, same window, same timed loop; benchmarks/harness/envs.py)")
    header = (
        f"{'env':<12}{'steps/s':>12}{'per CPU-s':>12}{'reset ms':>10}"
        f"{'reset ms at ep. end':>21}{'build s':>9}  obs"
    )
    add(header)
    add("-" * len(header))
    for name in ("tradezoo", *PEERS):
        res = rounds[0]["results"].get(name, {})
        if "skipped" in res:
            add(f"{name:<12}skipped: {res['skipped'][:200]}")
            continue
        a = absolute[name]
        add(
            f"{name:<12}{_num(a['steps_per_s']):>12}{_num(a['steps_per_cpu_s']):>12}"
            f"{_num(a['reset_ms_after_256'], 3):>10}{_num(a['reset_ms_episode_end'], 3):>21}"
            f"{_num(a['build_s'], 3):>9}  {res.get('obs_shape')}"
        )
    add("")
    add("targets")
    add(f"  {'':<58}{'wall':>10}{'CPU':>10}")
    for t in summary["targets"]:
        if t["unit"] == "x":
            value, cpu = _ratio(t["measured"]), _ratio(t["measured_cpu"])
        else:
            value, cpu = f"{_num(t['measured'], 4)} ms", f"{_num(t['measured_cpu'], 4)} ms"
        verdict = "met" if t["met"] else "NOT MET"
        if t["met"] != t["met_cpu"]:
            verdict += f" (per CPU time: {'met' if t['met_cpu'] else 'not met'})"
        add(f"  {t['target']:<58}{value:>10}{cpu:>10}  {verdict}")
    add("")
    add(
        f"{len(rounds)} round(s); figures are medians over rounds of each run's median over "
        f"{plan.repeats} repeat(s); ratios are medians over rounds of same-round ratios."
    )
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main --


def _json_safe(value: Any) -> Any:
    """NaN (a skipped env's figures) as JSON null, so strict JSON readers accept the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--steps",
        type=int,
        default=20_000,
        help="single-env steps per timed repeat (default 20,000: one full episode)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per run (median)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times; report medians (default 1)",
    )
    p.add_argument(
        "--vec-calls",
        type=int,
        default=2 * VEC_EPISODE_LENGTH,
        help="step() calls per timed repeat of the vector envs (default "
        f"{2 * VEC_EPISODE_LENGTH}: two episodes of every sub-env)",
    )
    p.add_argument(
        "--reset-samples",
        type=int,
        default=5,
        help="timed resets, each after a 20,000-step episode (default 5)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"observation window of every env (default {WINDOW})",
    )
    p.add_argument("--json", default=None, help="write config, raw results and summary here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (well under a minute); figures are rough",
    )
    p.add_argument("--reset-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reset_worker:
        res = measure_reset(args.reset_samples, args.window, RESET_EPISODE_STEPS, SEED)
        workers.emit(res)
        return 0
    if args.quick:
        # Shorter sub-episodes, so that every sub-env still autoresets in the timed loop.
        plan = Plan(
            steps=min(args.steps, 5_000),
            repeats=1,
            resets=2,
            vec_calls=2 * QUICK_VEC_EPISODE_LENGTH,
            vec_episode_length=QUICK_VEC_EPISODE_LENGTH,
            reset_samples=3,
            rounds=1,
            window=args.window,
        )
    else:
        plan = Plan(
            steps=args.steps,
            repeats=args.repeats,
            resets=5,
            vec_calls=args.vec_calls,
            vec_episode_length=VEC_EPISODE_LENGTH,
            reset_samples=args.reset_samples,
            rounds=args.rounds,
            window=args.window,
        )

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    started = time.perf_counter()
    print(
        f"env throughput: {BARS:,} synthetic hourly bars (harness.envs.make_ohlcv, seed "
        f"{SEED}), window {plan.window}; single env {plan.steps:,} steps x {plan.repeats} "
        f"repeats; vector envs {plan.vec_calls} calls x {plan.repeats} (episodes of "
        f"{plan.vec_episode_length} bars); {plan.rounds} round(s)",
        flush=True,
    )
    versions = harness.environment()
    print(
        f"every env under {sys.executable} (Python {versions['python']}, numpy "
        f"{versions['numpy']}, gymnasium {versions['gymnasium']}, gym-anytrading "
        f"{versions['gym-anytrading']}, gym-trading-env {versions['gym-trading-env']}); "
        f"loadavg {workers.loadavg()} on {os.cpu_count()} CPUs",
        flush=True,
    )
    rounds = [run_round(i, plan, log) for i in range(plan.rounds)]
    summary = summarise(rounds)
    print(format_report(summary, rounds, plan))
    print(f"loadavg at end {workers.loadavg()}; wall {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {
            "config": {
                **plan.__dict__,
                "bars": BARS,
                "seed": SEED,
                "funding_rate": FUNDING_RATE,
                "python_executable": sys.executable,
                "argv": sys.argv,
                "versions": versions,
            },
            "rounds": rounds,
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(_json_safe(payload), indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
