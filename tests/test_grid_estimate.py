"""benchmarks/grid_estimate.py: a measured cell scales to the target budget and folds by the
documented rule (training time by epochs and mean training rows, PPO by timesteps, the rest
as measured)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "grid_estimate.py"


@pytest.fixture(scope="module")
def grid_estimate():
    spec = importlib.util.spec_from_file_location("grid_estimate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = {"window": 64, "labels": {}, "supervised": {"epochs": 1}, "ppo": {"timesteps": 8192}}


def cells() -> pd.DataFrame:
    rows = [("supervised", 0, 10.0, 12.0), ("supervised", 1, 14.0, 16.0),
            ("ppo_warm", 0, 30.0, 46.0), ("ppo_warm", 1, 30.0, 50.0)]
    out = [{"dataset": "synthetic-noise", "fold": 0, "arch": "gru", "mode": mode, "seed": seed,
            "status": "done", "train_s": train, "wall_time_s": wall, "device": "cpu"}
           for mode, seed, train, wall in rows]
    out.append({"dataset": "synthetic-noise", "fold": 0, "arch": "momentum", "mode": "baseline",
                "seed": 0, "status": "done", "train_s": 0.0, "wall_time_s": 0.1,
                "device": "cpu"})
    return pd.DataFrame(out)


def test_same_budget_and_folds_reproduce_the_measured_cells(grid_estimate) -> None:
    table = grid_estimate.estimate(cells(), CONFIG, {"folds": 3}, folds=3, seeds=2, epochs=1,
                                   timesteps=8192).set_index("mode")
    assert table.loc["supervised", "cell_s"] == pytest.approx(14.0)
    assert table.loc["ppo_warm", "cell_s"] == pytest.approx(48.0)
    assert table.loc["supervised", "row_hours"] == pytest.approx(14.0 * 3 * 2 / 3600)


def test_epochs_timesteps_and_folds_scale_only_their_parts(grid_estimate) -> None:
    n_rows = grid_estimate.feature_rows("synthetic-noise", 64)
    rows = (grid_estimate.mean_train_rows(n_rows, 8, 64, 1)
            / grid_estimate.mean_train_rows(n_rows, 3, 64, 1))
    assert rows > 1  # 8 folds train on more rows on average than 3
    table = grid_estimate.estimate(cells(), CONFIG, {"folds": 3}, folds=8, seeds=5, epochs=8,
                                   timesteps=81920).set_index("mode")
    supervised = 2.0 + 12.0 * 8 * rows  # overhead as measured + scaled training
    assert table.loc["supervised", "cell_s"] == pytest.approx(supervised)
    # ppo_warm: scaled supervised + PPO x 10 + the rest (48 - 30 - 14 = 4) as measured
    assert table.loc["ppo_warm", "cell_s"] == pytest.approx(supervised + 300.0 + 4.0)
