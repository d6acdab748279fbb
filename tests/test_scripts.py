"""Every script in ``scripts/`` runs (subprocess, ``--quick`` budgets, offline)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def run_script(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 300) -> str:
    environment = {**os.environ, "TRADEZOO_DATA_DIR": str(cwd / "cache"), **(env or {})}
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_every_script_is_tested() -> None:
    tested = {"train_ppo.py", "train_supervised.py", "backtest.py", "fetch_data.py",
              "ablation.py", "oracle_probe.py"}  # ablation.py: tests/test_ablation.py
    assert {p.name for p in SCRIPTS.glob("*.py")} == tested


def test_train_ppo_script(tmp_path: Path) -> None:
    out = run_script("train_ppo.py", "--quick", "--d-model", "16", cwd=tmp_path)
    assert "test split, gru PPO (1,024 timesteps): total return" in out
    assert "buy & hold" in out
    assert (tmp_path / "runs" / "scripts" / "train_ppo" / "ppo_gru.zip").is_file()


def test_train_supervised_script(tmp_path: Path) -> None:
    out = run_script("train_supervised.py", "--quick", "--window", "32", "--d-model", "16",
                     cwd=tmp_path)
    assert "epoch 1/1: train loss" in out and "macro-F1" in out
    assert "buy & hold" in out  # the backtest table


def test_train_supervised_script_gives_msa_the_trainers_timeframe_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """msa on hourly bars trains on closed 1h/4h/1d windows, the inputs the trainers give it
    (``PreparedData.for_model``, ``ModelInputs``), not on a Box window."""
    import importlib.util

    import torch

    from tradezoo.agents.data import prepare_data
    from tradezoo.agents.supervised import ModelInputs, SupervisedModel

    batches: list[tuple[object, torch.Tensor]] = []
    forward = SupervisedModel.forward

    def spy(self: SupervisedModel, obs: object, asset: torch.Tensor | None = None
            ) -> torch.Tensor:
        if self.training:
            batches.append((obs, self.timeframes))
        return forward(self, obs, asset)

    monkeypatch.setattr(SupervisedModel, "forward", spy)
    gathered: list[torch.Tensor] = []
    get = ModelInputs.get
    monkeypatch.setattr(ModelInputs, "get", lambda self, index: (
        gathered.append(index.cpu()), get(self, index))[1])
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("train_supervised_script",
                                                  SCRIPTS / "train_supervised.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    try:
        script.main(["--arch", "msa", "--quick", "--window", "16", "--d-model", "16",
                     "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)

    data = prepare_data("bybit-btcusdt-1h", window=16).for_model("msa", {"d_model": 16})
    assert data.timeframe_windows == {"1h": 16, "4h": 16, "1d": 16}
    assert batches and gathered
    obs, timeframes = batches[0]
    assert timeframes == data.timeframe_windows
    want = ModelInputs(data, data.train.decision_rows, torch.device("cpu")).get(gathered[0])
    assert isinstance(obs, dict) and isinstance(want, dict) and set(obs) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(obs[key], value, rtol=0, atol=0, msg=key)


def test_backtest_script(tmp_path: Path) -> None:
    out = run_script("backtest.py", "--quick", cwd=tmp_path)
    assert "buy & hold" in out
    folder = tmp_path / "runs" / "scripts" / "backtest"
    assert (folder / "sma_crossover.json").is_file() and (folder / "sma_crossover.png").is_file()


def test_fetch_data_script_against_the_fake_bybit(tmp_path: Path) -> None:
    from bybit_server import KLINE, FakeBybit

    with FakeBybit() as fake:
        out = run_script("fetch_data.py", "bybit", "BTCUSDT", "--quick", "--start", "2024-01-01",
                         "--out", "btc.csv", cwd=tmp_path, env={"BYBIT_BASE_URL": fake.url})
        assert fake.requests_to(KLINE)  # the script talked to the local server
    assert "BTCUSDT 1h: 169 bars, 2024-01-01 00:00:00+00:00 .. 2024-01-08 00:00:00+00:00" in out
    from tradezoo.data.datasets import load_bars

    bars, _ = load_bars(tmp_path / "btc.csv")
    assert len(bars) == 169 and "funding_rate" in bars.columns
    with pytest.raises(AssertionError, match=r"fetch_data\.py failed"):
        run_script("fetch_data.py", "nowhere", "BTCUSDT", cwd=tmp_path)


def test_oracle_probe_script(tmp_path: Path) -> None:
    out = run_script("oracle_probe.py", "--quick", "--changes", "cfc.dt_dynamics",
                     "--out", str(tmp_path / "probe"), cwd=tmp_path)
    assert "| cfc.dt_dynamics | chapter | `use_dt=True, include_dt=False` |" in out
    assert "| cfc.dt_dynamics | previous | `use_dt=False, include_dt=False` |" in out
    record = json.loads((tmp_path / "probe" / "oracle_probe.json").read_text())
    assert (tmp_path / "probe" / "oracle_probe.md").read_text().startswith("Command: ")
    runs = record["changes"]["cfc.dt_dynamics"]["runs"]
    for form in ("chapter", "previous"):
        (run,) = runs[form]
        assert -1.0 <= run["test_corr"] <= 1.0 and run["epoch"] == 1
        assert math.isfinite(run["test_sharpe"])
    kalman_dt, kalman_blind = record["reference"]
    # The filter that knows each bar's elapsed time tracks the hidden signal better.
    assert kalman_dt["test_corr"] > kalman_blind["test_corr"] + 0.2


def test_oracle_probe_rejects_an_unknown_change(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "oracle_probe.py"), "--changes",
                           "cfc.nope"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--changes: unknown ['cfc.nope']" in done.stderr


def test_oracle_probe_rejects_pairs_it_cannot_tell_apart(tmp_path: Path) -> None:
    # Both forms of a loss change are the same regression model: nothing to compare.
    done = subprocess.run([sys.executable, str(SCRIPTS / "oracle_probe.py"), "--changes",
                           "mambats.loss"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "differ only in the classifier's" in done.stderr
    # msa takes closed 1h/4h/1d bars on hourly data, which the probe's Box windows are not.
    done = subprocess.run([sys.executable, str(SCRIPTS / "oracle_probe.py"), "--quick",
                           "--changes", "msa.hierarchy"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "the probe feeds Box windows only" in done.stderr


def test_oracle_probe_verdict_is_a_one_sided_paired_test() -> None:
    spec = importlib.util.spec_from_file_location("oracle_probe_script",
                                                  SCRIPTS / "oracle_probe.py")
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    better = [0.55, 0.57, 0.54, 0.56, 0.58]
    worse = [0.49, 0.50, 0.50, 0.51, 0.49]
    p, said = probe.correlation_verdict(better, worse, 0.05)
    assert p < 0.01 and said == "chapter better"
    p, said = probe.correlation_verdict(worse, better, 0.05)
    assert p > 0.99 and said == "previous better"
    p, said = probe.correlation_verdict([0.5, 0.6, 0.4], [0.55, 0.45, 0.5], 0.05)
    assert 0.05 <= p <= 0.95 and said == "within noise"
    # The pairs are the ablation's: the classifier's options are not the probe's.
    change = next(c for c in probe.CHANGES if c.name == "cfc.dt_dynamics")
    assert probe.form_options(change, "chapter") == ({"use_dt": True}, {"include_dt": False})
