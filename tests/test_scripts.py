"""Every script in ``scripts/`` runs (subprocess, ``--quick`` budgets, offline)."""

from __future__ import annotations

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
              "ablation.py"}  # ablation.py: tests/test_ablation.py
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
