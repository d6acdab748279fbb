"""What a larger `tradezoo compare` grid costs, from the cells of one that ran.

Reads a finished grid's ``cells.csv``, ``config.json`` and ``sweep.json`` (its ``--out``) and
scales each measured cell to the target grid (docs/scaling.md, "The full grid"):

- a supervised cell: ``overhead + train_s * (target epochs / measured epochs) * rows``, where
  ``overhead = wall_time_s - train_s`` (data preparation, the test backtest) stays as measured
  and ``rows`` is the target folds' mean training rows over the measured folds' (expanding
  walk-forward, :func:`tradezoo.agents.sweep.walk_forward_scheme`). The target epochs are an
  upper bound: early stopping (``patience``) may end a run sooner.
- a ``ppo_warm`` cell: the supervised cell of its coordinates scaled as above, plus its PPO
  ``train_s * (target timesteps / measured timesteps)`` (PPO's cost does not depend on the
  data's length), plus the rest of its wall time as measured.

Per (dataset, architecture, mode) it takes the mean over the measured folds and seeds, then
multiplies by the target's folds x seeds. The device of the figures is the device the cells
ran on (``cells.csv``'s ``device``): CPU cells give CPU-hours (one core per cell, ``--threads
1``), a grid run with ``--device cuda`` gives GPU-hours by the same command.

    python benchmarks/grid_estimate.py runs/results --folds 8 --seeds 5 \\
        --epochs 8 --timesteps 100352
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def mean_train_rows(n_rows: int, folds: int, window: int, horizon: int) -> float:
    """Mean training rows over the expanding walk-forward folds of ``--folds folds``."""
    from tradezoo.agents.sweep import walk_forward_scheme

    if folds == 1:  # the split fractions' train part (0.7 by default)
        return 0.7 * n_rows
    scheme = walk_forward_scheme(n_rows, folds, "expanding", window, horizon)
    first = n_rows - folds * scheme.test_size - scheme.val_size - 2 * (window + horizon)
    return first + scheme.test_size * (folds - 1) / 2


def feature_rows(dataset: str, window: int) -> int:
    """Feature rows of a bundled dataset or calibration market (the grid's ``n_rows``)."""
    from tradezoo.data.prepare import load_source, prepare_loaded

    bars = load_source(dataset, "dataset")
    return len(prepare_loaded(bars, dataset, window=window).features)


def estimate(cells: pd.DataFrame, config: dict, sweep: dict, *, folds: int, seeds: int,
             epochs: int, timesteps: int, ppo_all: bool = False) -> pd.DataFrame:
    """Seconds per target cell and per (dataset, arch, mode) row of the target grid.

    Args:
        cells: the measured ``cells.csv`` (done cells only are used; baselines dropped).
        config, sweep: the measured grid's ``config.json`` and ``sweep.json``.
        folds, seeds: the target grid's folds and seeds per (dataset, arch, mode).
        epochs, timesteps: the target budget's supervised epochs and PPO timesteps.
        ppo_all: also a ``ppo_warm`` row for each architecture the grid ran supervised only,
            with its PPO training seconds at the ``tiny`` budget from
            :data:`tradezoo.agents.sweep.ARCH_COST` (an earlier measured run) instead of a
            measured cell (``source`` says which).

    Returns:
        One row per (dataset, arch, mode): ``cell_s`` (estimated seconds of one cell) and
        ``row_hours`` (``cell_s * folds * seeds / 3600``).
    """
    done = cells[(cells["status"] == "done") & (cells["mode"] != "baseline")].copy()
    window = int(config["window"])
    horizon = int(config.get("labels", {}).get("horizon", 1) or 1)
    epoch_ratio = epochs / float(config["supervised"]["epochs"])
    step_ratio = timesteps / float(config["ppo"]["timesteps"])
    rows: list[dict] = []
    for dataset, part in done.groupby("dataset"):
        n_rows = feature_rows(str(dataset), window)
        row_ratio = (mean_train_rows(n_rows, folds, window, horizon)
                     / mean_train_rows(n_rows, int(sweep["folds"]), window, horizon))
        times = ["train_s", "wall_time_s"]
        sup = part[part["mode"] == "supervised"].groupby("arch")[times].mean()
        scaled_sup = (sup["wall_time_s"] - sup["train_s"]
                      + sup["train_s"] * epoch_ratio * row_ratio)
        for arch, value in scaled_sup.items():
            rows.append({"dataset": dataset, "arch": arch, "mode": "supervised",
                         "cell_s": float(value), "source": "measured"})
        warm = part[part["mode"] == "ppo_warm"].groupby("arch")[times].mean()
        for arch, (ppo_train, wall) in warm.iterrows():
            rest = wall - ppo_train - sup.loc[arch, "wall_time_s"]
            rows.append({"dataset": dataset, "arch": arch, "mode": "ppo_warm",
                         "cell_s": float(scaled_sup[arch] + ppo_train * step_ratio
                                         + max(rest, 0.0)), "source": "measured"})
        if ppo_all:
            from tradezoo.agents.config import BUDGETS
            from tradezoo.agents.sweep import ARCH_COST

            tiny_steps = BUDGETS["tiny"]["ppo"]["timesteps"]  # ARCH_COST's PPO measurement
            for arch in scaled_sup.index.difference(warm.index):
                rows.append({"dataset": dataset, "arch": arch, "mode": "ppo_warm",
                             "cell_s": float(scaled_sup[arch] + ARCH_COST[arch][1]
                                             * timesteps / tiny_steps),
                             "source": "ARCH_COST"})
    out = pd.DataFrame(rows)
    out["row_hours"] = out["cell_s"] * folds * seeds / 3600
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="a finished compare grid's --out directory")
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8,
                        help="target supervised epochs (the default budget: 8)")
    parser.add_argument("--timesteps", type=int, default=100_352,
                        help="target PPO timesteps (the default budget: 100,352)")
    parser.add_argument("--ppo-all", action="store_true",
                        help="also PPO (warm start) for the architectures the grid ran "
                             "supervised only, from ARCH_COST's tiny-budget PPO seconds")
    args = parser.parse_args(argv)

    cells = pd.read_csv(args.grid / "cells.csv")
    config = json.loads((args.grid / "config.json").read_text())
    sweep = json.loads((args.grid / "sweep.json").read_text())
    table = estimate(cells, config, sweep, folds=args.folds, seeds=args.seeds,
                     epochs=args.epochs, timesteps=args.timesteps, ppo_all=args.ppo_all)
    devices = sorted(set(cells.loc[cells["mode"] != "baseline", "device"].astype(str)))
    print(f"measured: {args.grid} ({sweep['folds']} folds, {config['supervised']['epochs']} "
          f"epochs, {config['ppo']['timesteps']} PPO timesteps, device {', '.join(devices)}); "
          f"target: {args.folds} folds x {args.seeds} seeds, {args.epochs} epochs, "
          f"{args.timesteps} PPO timesteps")
    print("| dataset | mode | cell hours (all archs) | grid hours |")
    print("|---|---|---:|---:|")
    for (dataset, mode), part in table.groupby(["dataset", "mode"]):
        print(f"| {dataset} | {mode} | {part['cell_s'].sum() / 3600:.2f} | "
              f"{part['row_hours'].sum():.1f} |")
    total = table["row_hours"].sum()
    print(f"total: {total:.1f} device-hours ({len(table)} (dataset, arch, mode) rows x "
          f"{args.folds * args.seeds} cells)")
    print("| arch | mode | seconds per cell (mean over datasets) | from |")
    print("|---|---|---:|---|")
    for (arch, mode), part in table.groupby(["arch", "mode"]):
        print(f"| {arch} | {mode} | {part['cell_s'].mean():.0f} | "
              f"{', '.join(sorted(set(part['source'])))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
