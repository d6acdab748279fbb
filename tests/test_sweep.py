"""The compare grid (tradezoo.agents.sweep): cell keys, walk-forward folds, failure isolation,
bit-identical cells serially / in a spawned local pool / on a real local Ray runtime, and a
driver killed with SIGKILL at seeded moments that a rerun resumes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tradezoo.agents.config import resolve_options, training_options
from tradezoo.agents.sweep import (
    CellStore,
    ExecutionOptions,
    cell_key,
    expand_grid,
    run_grid,
    walk_forward_scheme,
)
from tradezoo.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = {"budget": "smoke", "costs": "bybit-linear", "window": 16, "arch_config.d_model": 8,
         "supervised.features_dim": 8, "ppo.episode_length": 64, "device": "cpu",
         "progress": False, "seeds": 1}


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "btc.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:1200].to_csv(path)
    return path


def options(**flags):
    return training_options("compare", resolve_options("compare", flags={**SMOKE, **flags}))


def comparable(record: dict) -> dict:
    """A record without what depends on where and when it ran."""
    return {k: v for k, v in record.items()
            if k not in ("wall_time_s", "train_seconds", "worker")}


# ------------------------------------------------------------------------------ keys, folds


def test_cell_key_changes_with_config_data_and_code(bars_file: Path) -> None:
    tasks = expand_grid(options(archs="gru,mlp", mode="supervised", seeds=2),
                        data=[str(bars_file)])
    assert [(t.cell.arch, t.cell.mode, t.cell.seed) for t in tasks] == [
        ("gru", "supervised", 0), ("gru", "supervised", 1), ("mlp", "supervised", 0),
        ("mlp", "supervised", 1), ("buy_and_hold", "baseline", 0), ("flat", "baseline", 0),
        ("sma_cross", "baseline", 0), ("momentum", "baseline", 0)]
    assert len({t.key for t in tasks}) == 8
    again = expand_grid(options(archs="gru,mlp", mode="supervised", seeds=2),
                        data=[str(bars_file)])
    assert [t.key for t in again] == [t.key for t in tasks]  # stable
    other = expand_grid(options(archs="gru", mode="supervised", **{"supervised.epochs": 2}),
                        data=[str(bars_file)])
    assert other[0].key != tasks[0].key  # a changed config is a new cell
    task = tasks[0]
    assert cell_key(task.cell, task.config, task.data_hash, task.code_version) == task.key
    assert cell_key(task.cell, task.config, "0" * 64, task.code_version) != task.key
    assert cell_key(task.cell, task.config, task.data_hash, "0.1.0+other") != task.key


def test_ppo_archs_limits_the_ppo_cells_to_a_subset(bars_file: Path) -> None:
    tasks = expand_grid(options(archs="gru,mlp,cfc", mode="both", ppo_archs="mlp"),
                        data=[str(bars_file)], baselines=False)
    assert [(t.cell.arch, t.cell.mode) for t in tasks] == [
        ("gru", "supervised"), ("mlp", "supervised"), ("mlp", "ppo_warm"),
        ("cfc", "supervised")]
    every = expand_grid(options(archs="gru,mlp,cfc", mode="both"), data=[str(bars_file)],
                        baselines=False)
    assert {t.key for t in tasks} <= {t.key for t in every}  # the same cells, fewer of them


def test_walk_forward_folds_rolling_and_expanding(bars_file: Path) -> None:
    rolling = walk_forward_scheme(1000, 3, "rolling", 16, 4)
    expanding = walk_forward_scheme(1000, 3, "expanding", 16, 4)
    assert rolling.test_size == expanding.test_size == 100 and expanding.train_size is None
    from tradezoo.data.splits import walk_forward

    a = walk_forward(1000, n_folds=3, test_size=100, val_size=100, lookback=16, horizon=4)
    b = walk_forward(1000, n_folds=3, test_size=100, val_size=100, lookback=16, horizon=4,
                     train_size=rolling.train_size)
    assert (a[0].train == b[0].train).all()  # fold 0 is the same in both modes
    assert b[2].train[0] > 0 and a[2].train[0] == 0
    with pytest.raises(Exception, match="too few"):
        walk_forward_scheme(60, 8, "rolling", 16, 4)
    tasks = expand_grid(options(archs="mlp", mode="supervised"), data=[str(bars_file)],
                        folds=2, fold_mode="rolling", baselines=False)
    assert [t.cell.fold for t in tasks] == [0, 1]
    assert tasks[0].config["split"]["walk_forward"]["train_size"] > 0  # rolling
    assert tasks[0].key != tasks[1].key


# ------------------------------------------------------------------------------ running


def test_failing_cell_is_recorded_and_the_grid_goes_on(bars_file: Path, tmp_path: Path) -> None:
    tasks = expand_grid(options(archs="mlp,gru", mode="supervised"), data=[str(bars_file)],
                        baselines=False)
    broken = replace(tasks[0], config={**tasks[0].config, "window": 100_000})
    out = tmp_path / "sweep"
    result = run_grid([broken, tasks[1]], out, ExecutionOptions(), keep_work=False,
                      stream=open(os.devnull, "w"))  # noqa: SIM115
    by_key = {r["key"]: r for r in result.records}
    failed, done = by_key[broken.key], by_key[tasks[1].key]
    assert failed["status"] == "failed" and failed["error"].startswith("ValueError")
    assert "Traceback" in failed["traceback"]
    assert done["status"] == "done" and len(done["test"]["returns"]) > 10
    csv = pd.read_csv(out / "cells.csv")
    assert sorted(csv["status"]) == ["done", "failed"]
    # a rerun keeps the failure unless asked to retry it
    lines = tmp_path / "log.txt"
    with lines.open("w") as log:
        again = run_grid([broken, tasks[1]], out, ExecutionOptions(), keep_work=False,
                         stream=log)
    assert again.ran == []
    assert "1 cells done, 0 to run, 1 failed" in lines.read_text()
    with lines.open("w") as log:
        retried = run_grid([broken, tasks[1]], out, ExecutionOptions(retry_failed=True),
                           keep_work=False, stream=log)
    assert retried.ran == [broken.key]


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_cells_are_bit_identical_serial_pool_and_ray(bars_file: Path, tmp_path: Path,
                                                     ray_runtime) -> None:
    tasks = expand_grid(options(archs="gru,mlp", mode="supervised", seeds=2),
                        data=[str(bars_file)])[1:5]  # gru seed 1, mlp seeds 0-1, buy_and_hold
    quiet = open(os.devnull, "w")  # noqa: SIM115
    runs = {
        "serial": run_grid(tasks, tmp_path / "serial", ExecutionOptions(), keep_work=False,
                           stream=quiet),
        "pool": run_grid(tasks, tmp_path / "pool", ExecutionOptions(workers=2),
                         keep_work=False, stream=quiet),
        "ray": run_grid(tasks, tmp_path / "ray", ExecutionOptions(backend="ray"),
                        stream=quiet),
    }
    for name, result in runs.items():
        assert [r["status"] for r in result.records] == ["done"] * 4, name
    serial = [comparable(r) for r in runs["serial"].records]
    assert [comparable(r) for r in runs["pool"].records] == serial
    assert [comparable(r) for r in runs["ray"].records] == serial
    workers = {r["worker"] for r in runs["pool"].records + runs["ray"].records}
    assert f"{os.uname().nodename}:{os.getpid()}" not in workers  # they ran elsewhere


def test_ppo_cell_is_bit_identical_serial_and_ray(bars_file: Path, tmp_path: Path,
                                                  ray_runtime) -> None:
    tiny_ppo = {"ppo.timesteps": 256, "ppo.n_steps": 128, "ppo.batch_size": 64,
                "ppo.n_epochs": 1}
    tasks = expand_grid(options(archs="mlp", mode="ppo", **tiny_ppo), data=[str(bars_file)],
                        baselines=False)
    quiet = open(os.devnull, "w")  # noqa: SIM115
    serial = run_grid(tasks, tmp_path / "serial", ExecutionOptions(), keep_work=False,
                      stream=quiet)
    remote = run_grid(tasks, tmp_path / "ray", ExecutionOptions(backend="ray"), stream=quiet)
    assert serial.records[0]["status"] == "done", serial.records[0]["error"]
    assert [comparable(r) for r in remote.records] == [comparable(r) for r in serial.records]


def test_ray_records_an_exception_once_and_ships_the_bars(bars_file: Path, tmp_path: Path,
                                                          ray_runtime) -> None:
    tasks = expand_grid(options(archs="mlp", mode="supervised"), data=[str(bars_file)],
                        baselines=False)
    assert isinstance(tasks[0].source, pd.DataFrame)  # a file travels as its bars
    broken = replace(tasks[0], config={**tasks[0].config, "window": 100_000})
    result = run_grid([broken], tmp_path / "ray", ExecutionOptions(backend="ray"),
                      stream=open(os.devnull, "w"))  # noqa: SIM115
    assert result.records[0]["status"] == "failed"
    assert "ValueError" in result.records[0]["error"]


# ------------------------------------------------------------------------------ kill, resume


def _compare_argv(bars_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tradezoo.cli", "compare", "--archs", "mlp,gru", "--mode",
            "supervised", "--seeds", "2", "--budget", "smoke", "--data", str(bars_file),
            "--costs", "bybit-linear", "--window", "16", "--d-model", "8", "--set",
            "supervised.features_dim=8", "--device", "cpu", "--quiet", "--threads", "1",
            "--out", str(out)]


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_of_the_driver_loses_only_cells_in_flight(bars_file: Path, tmp_path: Path,
                                                          seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "sweep"
    argv = _compare_argv(bars_file, out)
    kill_after = rng.randint(1, 3)  # records written before the kill
    delay = rng.uniform(0.0, 0.5)  # then a little into the next cell
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cells = out / "cells"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if cells.is_dir() and len(list(cells.glob("*.json"))) >= kill_after:
            break
        time.sleep(0.05)
    time.sleep(delay)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored = sorted(p.stem for p in cells.glob("*.json"))
    assert len(stored) >= kill_after
    for path in cells.glob("*.json"):
        assert json.loads(path.read_text())["status"] == "done"  # whole records only
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    total = 8  # 4 models and the 4 rule baselines
    assert f"{len(stored)} cells done, {total - len(stored)} to run" in rerun.stdout
    assert rerun.stdout.count(": done (") == total - len(stored)  # only the missing cells ran
    store = CellStore(out)
    keys = sorted(p.stem for p in cells.glob("*.json"))
    assert len(keys) == total and set(stored) <= set(keys)
    assert all(store.get(k)["status"] == "done" for k in keys)
    assert len(pd.read_csv(out / "cells.csv")) == total
    assert (out / "leaderboard.md").is_file()
    assert not list(cells.glob(".*.tmp"))  # the claim removed any half-written temporary


def test_a_worker_with_other_code_refuses_the_cell(bars_file: Path, tmp_path: Path) -> None:
    tasks = expand_grid(options(archs="mlp", mode="supervised"), data=[str(bars_file)],
                        baselines=False)
    other = replace(tasks[0], code_version="0.0.0+elsewhere")
    result = run_grid([other], tmp_path / "sweep", ExecutionOptions(), keep_work=False,
                      stream=open(os.devnull, "w"))  # noqa: SIM115
    assert result.records[0]["status"] == "failed"
    assert "the driver 0.0.0+elsewhere" in result.records[0]["error"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--folds", "0"], "'folds' must be an integer >= 1"),
    (["--ray-address", "127.0.0.1:1"], "--ray-address needs --backend ray"),
    (["--workers", "0"], "'workers' must be an integer >= 1"),
    (["--gpus-per-run", "0.5"], "fractional GPUs need --backend ray"),
    (["--folds", "400"], "too few"),
    (["--ppo-archs", "cfc"], "'ppo_archs': ['cfc'] not in option 'archs'"),
])
def test_bad_grid_flags_are_one_line_errors_before_any_write(
        bars_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flags: list[str], message: str) -> None:
    from tradezoo.cli import main

    out = tmp_path / "out"
    argv = _compare_argv(bars_file, out)[3:]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_folds_ppo_env_trades_the_folds_test_part(bars_file: Path) -> None:
    from tradezoo.agents.data import prepare_data
    from tradezoo.agents.ppo import PPOConfig, env_kwargs
    from tradezoo.backtest.costs import CostModel
    from tradezoo.envs import TradingEnv

    scheme = walk_forward_scheme(1100, 2, "rolling", 16, 4)
    data = prepare_data(str(bars_file), window=16, costs=CostModel.bybit_linear(),
                        walk_forward=scheme, fold=0)
    assert data.walk_forward == scheme and data.fold == 0
    rows = data.decision_rows("test")
    env = TradingEnv(episode_length=None, random_start=False,
                     **env_kwargs(data, PPOConfig(), "test"))
    _obs, info = env.reset()
    first = env.dataset.bar_offset + int(info["bar"])
    assert env.dataset.bars.index[first] == data.bars.index[data.bar_offset + int(rows[0])]
    assert data.env_split("test")[0] >= data.boundaries["val"][1]  # after the fold's val part
