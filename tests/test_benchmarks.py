"""The benchmarks' own harness runs, on tiny sizes: it never asserts speed, only that every
part of the measurement works (bars, the timed loops, the worker processes, our factories)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from harness import envs, models, workers  # noqa: E402


def test_synthetic_bars_are_seeded_and_causal() -> None:
    a, b = envs.make_ohlcv(400, seed=7), envs.make_ohlcv(400, seed=7)
    assert a.equals(b) and len(a) == 400
    assert list(a.columns[:5]) == ["open", "high", "low", "close", "volume"]
    assert set(envs.FEATURES) <= set(a.columns)
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all()
    assert (a["low"] <= a[["open", "close"]].min(axis=1)).all()
    assert not a.isna().any().any()


@pytest.mark.parametrize("name", ["ref", "ref_vec64"])
def test_timed_loop_measures_the_reference_envs(name: str) -> None:
    make, batch = envs.resolve(name, seed=0, custom=None, custom_batch=1)
    # ref_vec64 draws 4,096-bar sub-episodes, so the series must be longer than that.
    case = envs.EnvCase(bars=4_500, window=16, steps=256, repeats=2, resets=2, reset_after=64)
    result = envs.measure(make, envs.make_ohlcv(case.bars, case.seed), case, batch)
    assert result["batch"] == batch
    assert result["steps_per_s_median"] > 0 and len(result["steps_per_s_runs"]) == 2
    assert result["obs_shape"][-2:] == [16, 6]


def test_worker_process_reports_results_and_failures() -> None:
    case = envs.EnvCase(bars=600, window=16, steps=200, repeats=1, resets=1, reset_after=32)
    result = envs.run_isolated("ref", case)
    assert result["env"] == "ref" and result["steps_per_s_median"] > 0
    broken = envs.run_isolated("custom", case, custom="no_such_module:factory")
    assert broken["env"] == "custom" and "ModuleNotFoundError" in broken["skipped"]


def test_our_env_factories_build_and_step() -> None:
    import env_throughput

    df = envs.make_ohlcv(600, seed=1)
    single = env_throughput.factory(df, 16)
    single.reset(seed=0)
    _obs, _reward, _terminated, _truncated, info = single.step(2)
    assert info["equity"] > 0 and {"fee", "funding_paid", "slippage_cost"} <= set(info)
    assert single.observation_space.shape == (16, 30)  # 28 features (with funding) + account
    like = env_throughput.factory_peer_features(df, 16)
    assert like.observation_space.shape == (16, 7)


def test_model_harness_times_a_peer_and_ours() -> None:
    import model_throughput

    registry = {**models.PEERS, **model_throughput.factories()}
    case = models.ModelCase(batch=4, repeats=1, min_time=0.0)
    for name in ("lstm", "tz_gru"):
        row = models.run_case(registry, name, 16, case)
        assert "error" not in row, row
        assert row["params"] > 0 and row["train_sps_median"] > 0 and row["fwd_b1_ms_median"] > 0


def test_model_benchmark_runs_only_the_peers_asked_for() -> None:
    import model_throughput as mt

    every = mt.parse_args([]).peers
    assert mt.peer_groups(every, quick=False) == (list(mt.PEERS), list(mt.SLOW_PEERS))
    assert mt.peer_groups(every, quick=True) == (list(mt.PEERS), [])
    assert mt.peer_groups(mt.parse_args(["--peers"]).peers, quick=False) == ([], [])
    assert mt.peer_groups(["lstm", "mamba_loop"], quick=False) == (["lstm"], ["mamba_loop"])


def test_textbook_scans_agree() -> None:
    import torch

    torch.manual_seed(0)
    x, delta = torch.randn(2, 9, 4), torch.rand(2, 9, 4)
    a, b, c, d = -torch.rand(4, 3), torch.randn(2, 9, 3), torch.randn(2, 9, 3), torch.randn(4)
    loop = models.loop_selective_scan(x, delta, a, b, c, d)
    unbind = models.unbind_selective_scan(x, delta, a, b, c, d)
    torch.testing.assert_close(loop, unbind)


def test_worker_environment_finds_the_harness() -> None:
    env = workers.child_env()
    assert str(BENCH) in env["PYTHONPATH"].split(os.pathsep)


def test_model_benchmark_variant_rows_build_the_forms_they_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The like-for-like overrides of a ``tz_<arch>`` row (fully connected, the published CfC)
    belong to that row only: a variant row is the library default plus its own options."""
    import model_throughput as mt

    from tradezoo.policies import ARCHITECTURES

    monkeypatch.setitem(mt.BENCH_CONFIGS, "cfc", {"wiring": None, "mode": "pure"})
    made = mt.factories()

    def config(row: str) -> Any:
        return made[row](16, 32, 8).backbone.config

    assert config("tz_cfc").mode == "pure" and config("tz_cfc").wiring is None
    default_mode = ARCHITECTURES["cfc"].config_cls().mode
    assert (config("tz_cfc_ncp").mode, config("tz_cfc_ncp").wiring) == (default_mode, "ncp")
    assert config("tz_cfc_ncp_dt").mode == default_mode
    assert config("tz_cfc_ncp_chapter").mode == "chapter"
    assert (config("tz_ltc_torch").wiring, config("tz_ltc_torch").backend) == (None, "torch")
