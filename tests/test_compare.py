"""``tradezoo compare`` end to end on two architectures and one seed (tiny budget), and the
``--archs`` parser. The leaderboard it writes is tested in test_leaderboard.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradezoo.agents.config import parse_archs
from tradezoo.cli import main
from tradezoo.data import load_dataset
from tradezoo.policies.registry import ARCHITECTURES

# One intra-op thread for the whole module (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_archs() -> None:
    assert parse_archs("all") == list(ARCHITECTURES)
    assert parse_archs(" gru , lstm,gru") == ["gru", "lstm"]
    assert parse_archs(["cfc"]) == ["cfc"]


def test_compare_two_architectures_one_seed(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bars = tmp_path / "bars.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:1500].to_csv(bars)
    out = tmp_path / "cmp"
    argv = ["compare", "--archs", "gru,lstm", "--seeds", "1", "--mode", "both",
            "--budget", "smoke", "--data", str(bars), "--costs", "bybit-linear", "--window", "16",
            "--d-model", "16", "--set", "supervised.features_dim=16", "--set",
            "ppo.episode_length=96", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 cells done, 8 to run" in printed  # 4 models and the 4 rule baselines
    assert "[8/8] bars fold 0 " in printed
    markdown = (out / "leaderboard.md").read_text()
    assert "Command: `tradezoo compare --archs gru,lstm" in markdown
    assert "budget `smoke`" in markdown
    csv = pd.read_csv(out / "leaderboard.csv")
    rows = set(zip(csv["arch"], csv["mode"], strict=True))
    assert rows == {("gru", "supervised"), ("gru", "ppo_warm"), ("lstm", "supervised"),
                    ("lstm", "ppo_warm"), ("buy_and_hold", "baseline"), ("flat", "baseline"),
                    ("sma_cross", "baseline"), ("momentum", "baseline")}
    assert (csv["n_cells"] == 1).all()
    assert (out / "equity.png").stat().st_size > 0 and (out / "folds.png").stat().st_size > 0
    runs = out / "runs" / "bars" / "fold0"
    assert (runs / "gru" / "seed0" / "supervised" / "supervised" / "best.pt").is_file()
    assert (runs / "lstm" / "seed0" / "ppo_warm" / "ppo" / "final_model.zip").is_file()
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 8 and (cells["status"] == "done").all()
    assert cells[cells["mode"] == "supervised"]["accuracy"].between(0, 1).all()
    assert main(argv) == 0  # the same command again: every cell is in the store
    assert "8 cells done, 0 to run" in capsys.readouterr().out


def test_compare_volatility_cells_keep_the_forecast_errors(tmp_path: Path) -> None:
    """A volatility cell is graded by its trading rule like every cell, and its record keeps the
    forecast's MAE, RMSE and QLIKE with the naive forecast's (docs/tasks.md)."""
    bars = tmp_path / "bars.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:1500].to_csv(bars)
    out = tmp_path / "cmp"
    argv = ["compare", "--archs", "gru", "--seeds", "1", "--mode", "supervised",
            "--budget", "smoke", "--data", str(bars), "--costs", "bybit-linear", "--window", "16",
            "--d-model", "16", "--set", "supervised.features_dim=16",
            "--set", "labels.task=volatility", "--set", "labels.horizon=4",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    cells = pd.read_csv(out / "cells.csv")
    (row,) = cells[cells["mode"] == "supervised"].to_dict("records")
    for key in ("mae", "rmse", "qlike", "naive_mae", "naive_rmse", "naive_qlike"):
        assert np.isfinite(row[key]) and row[key] >= 0, key
    assert np.isnan(row.get("accuracy", np.nan))  # a forecaster has no class accuracy
