"""The leaderboard: aggregation over seeds (mean, sample std), the buy-and-hold row, the files,
and ``tradezoo compare`` end to end on two architectures and one seed (tiny budget)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradezoo.agents.compare import (
    BUY_AND_HOLD,
    RunRecord,
    leaderboard_frame,
    leaderboard_markdown,
    write_leaderboard,
)
from tradezoo.agents.config import parse_archs
from tradezoo.cli import main
from tradezoo.data import load_dataset
from tradezoo.policies.registry import ARCHITECTURES

INDEX = pd.date_range("2025-01-01", periods=5, freq="h", tz="UTC")
BENCH = pd.Series([1.0, 1.01, 0.99, 1.02, 1.03], index=INDEX)


# One intra-op thread for the whole module (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def record(arch: str, mode: str, seed: int, sharpe: float, total_return: float,
           benchmark: pd.Series = BENCH) -> RunRecord:
    metrics = {"total_return": total_return, "sharpe": sharpe, "max_drawdown": -0.1,
               "win_rate": 0.5, "n_trades": 10.0}
    if mode == "supervised":
        metrics.update(accuracy=0.4, macro_f1=0.3)
    equity = pd.Series(np.linspace(1.0, 1.0 + total_return, len(INDEX)), index=INDEX)
    return RunRecord(arch=arch, mode=mode, seed=seed, metrics=metrics, train_seconds=2.0 + seed,
                     n_parameters=1234, equity=equity, benchmark_equity=benchmark,
                     benchmark_metrics={"total_return": 0.03, "sharpe": 1.5,
                                        "max_drawdown": -0.02, "win_rate": 1.0, "n_trades": 1.0})


def test_leaderboard_means_stds_ranking_and_buy_and_hold() -> None:
    records = [record("gru", "supervised", 0, 1.0, 0.10), record("gru", "supervised", 1, 3.0, 0.30),
               record("lstm", "ppo", 0, 2.5, 0.05), record("lstm", "ppo", 1, 2.5, 0.07)]
    frame = leaderboard_frame(records)
    assert list(frame["model"]) == ["lstm", "gru", BUY_AND_HOLD]  # by mean Sharpe 2.5, 2.0, 1.5
    gru = frame[frame["model"] == "gru"].iloc[0]
    assert gru["sharpe_mean"] == pytest.approx(2.0)
    assert gru["sharpe_std"] == pytest.approx(math.sqrt(2.0))  # sample std (ddof=1) of 1 and 3
    assert gru["total_return_mean"] == pytest.approx(0.2)
    assert gru["accuracy_mean"] == pytest.approx(0.4) and gru["seeds"] == 2
    assert gru["train_s_mean"] == pytest.approx(2.5) and gru["params"] == 1234
    lstm = frame[frame["model"] == "lstm"].iloc[0]
    assert math.isnan(lstm["accuracy_mean"])  # no classification metrics for PPO
    bh = frame[frame["model"] == BUY_AND_HOLD].iloc[0]
    assert bh["total_return_mean"] == pytest.approx(0.03) and math.isnan(bh["sharpe_std"])
    text = leaderboard_markdown(frame, title="T", notes=["note"])
    assert "| 3 | **buy & hold** | benchmark | 1 | 3.00% | 1.500 |" in text
    assert "20.00% ± 14.14%" in text and "2.000 ± 1.414" in text


def test_single_seed_has_no_std_and_other_bars_are_refused() -> None:
    frame = leaderboard_frame([record("gru", "ppo", 0, 1.0, 0.1)])
    assert math.isnan(frame.loc[0, "sharpe_std"])
    assert "±" not in leaderboard_markdown(frame)
    other = BENCH.copy()
    other.iloc[2] = 0.5
    with pytest.raises(ValueError, match="other bars than the first run"):
        leaderboard_frame([record("gru", "ppo", 0, 1.0, 0.1),
                           record("lstm", "ppo", 0, 1.0, 0.1, benchmark=other)])
    with pytest.raises(ValueError, match="no runs"):
        leaderboard_frame([])


def test_write_leaderboard_files(tmp_path: Path) -> None:
    records = [record("gru", "supervised", 0, 1.0, 0.1), record("gru", "ppo (warm start)", 0,
                                                                 0.5, 0.05)]
    paths = write_leaderboard(records, tmp_path, title="T")
    csv = pd.read_csv(paths["csv"])
    assert set(csv["model"]) == {"gru", BUY_AND_HOLD}
    assert {"sharpe_mean", "sharpe_std", "accuracy_mean", "train_s_mean", "params"} <= set(csv)
    assert len(pd.read_csv(paths["runs"])) == 2
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
