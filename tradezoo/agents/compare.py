"""The architecture leaderboard (``tradezoo compare``): every architecture, the same data,
the same splits, several seeds, graded on the held-out test part.

``compare`` runs a grid of cells, (dataset, fold, architecture, mode, seed), through
:mod:`tradezoo.agents.sweep` (serially, in local worker processes or on Ray; resumable from
its results store). The modes, by ``--mode``:

- ``supervised``: train the classifier (early stopping on validation, best checkpoint);
- ``ppo``: PPO from scratch (best model on the validation reward);
- ``both``: the classifier, and PPO warm-started from it (two rows per architecture).

Every model is backtested on its test part (:func:`~tradezoo.agents.supervised_evaluation.
evaluate_supervised`, :func:`~tradezoo.agents.ppo.evaluate_ppo`: the shared engine, the
dataset's costs, fills at the next open); the rule baselines (buy-and-hold, flat, SMA cross,
momentum) are cells of mode ``baseline`` on the same test bars. The leaderboard is
:mod:`tradezoo.agents.leaderboard`'s: its columns and statistics are in docs/evaluation.md,
"The leaderboard".

Files written to ``out_dir``::

    cells/<key>.json   one record per finished cell, the results store (tradezoo.agents.sweep)
    cells.csv          one row per cell: coordinates, status, metrics, train_s, n_parameters
    leaderboard.md     one ranked table per dataset (tradezoo.agents.leaderboard)
    leaderboard.csv    the same rows unformatted, with the bookkeeping columns
    folds.png          mean-over-seeds Sharpe of each (arch, mode) x fold, per dataset
    equity.png         fold-stitched out-of-sample equity per row, per dataset
    config.json        the resolved options (a valid ``--config`` file)
    sweep.json         datasets, folds, fold mode, execution and number of cells
    runs/<dataset>/fold<k>/<arch>/seed<s>/<mode>/   local cells' runs (checkpoints, logs)

In ``cells.csv``, ``train_s`` is the wall time of that cell's own training (a ``ppo_warm``
cell excludes its supervised pre-training); ``n_parameters`` counts trainable parameters (the
PPO policy includes its value head).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from tradezoo.agents.sweep import ExecutionOptions

if TYPE_CHECKING:
    from tradezoo.agents.config import TrainingOptions

__all__ = ["CompareResult", "run_compare"]


@dataclass
class CompareResult:
    """What :func:`run_compare` returns: the leaderboard, the files and the cell records.

    Attributes:
        frame: the leaderboard (``None`` when it was not written).
        paths: the files written.
        seconds: wall time.
        cells: every cell record of the grid (:mod:`tradezoo.agents.sweep`).
        ran, skipped: keys of the cells run this time and of those found in the store.
    """

    frame: pd.DataFrame | None
    paths: dict[str, Path]
    seconds: float
    cells: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_compare(options: TrainingOptions, *, command: str | None = None,
                stream: IO[str] | None = None, data: Sequence[str] | None = None,
                folds: int = 1, fold_mode: str = "expanding",
                execution: ExecutionOptions | None = None) -> CompareResult:
    """Train and grade every cell of the grid (module docstring; :mod:`tradezoo.agents.sweep`).

    Args:
        options: the ``compare`` options (:func:`~tradezoo.agents.config.training_options`).
        command: the command line to print in ``leaderboard.md`` (reproducibility).
        stream: where progress lines go (default stdout).
        data: the datasets (default: ``options.data`` split on commas).
        folds, fold_mode: walk-forward folds (1: ``options.split_fractions``).
        execution: where cells run (default: serially in this process, ``options.threads``).

    Raises:
        ConfigError, DataError: bad options or data (raised before anything is written);
        RunDirectoryError: the output directory is in use or holds another kind of run.
    """
    from tradezoo.agents.config import torch_threads
    from tradezoo.agents.run import check_options, write_options
    from tradezoo.agents.rundir import claim_run_dir, output_error, write_text_atomic
    from tradezoo.agents.sweep import expand_grid, run_grid

    out_stream = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=out_stream, flush=True)

    started = time.perf_counter()
    datasets = list(data) if data is not None else [
        d.strip() for d in str(options.data).split(",") if d.strip()]
    if not datasets:
        from tradezoo.errors import ConfigError

        raise ConfigError("option 'data' names no dataset")
    if execution is None:
        execution = ExecutionOptions(threads=torch_threads(options.threads) or 1,
                                     device=options.device)
    out = Path(options.out) if options.out else Path("runs") / (
        f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    check_options(options)  # bad options and data fail before anything is written
    tasks = expand_grid(options, data=datasets, folds=folds, fold_mode=fold_mode)
    cells_dir = out / "cells"
    with claim_run_dir(out, resume_from=cells_dir if cells_dir.is_dir() else None,
                       resume_hint=False):
        try:
            cells_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(cells_dir, exc, "create") from None
        write_options(out, options)
        write_text_atomic(out / "sweep.json", json.dumps({
            "data": datasets, "folds": folds, "fold_mode": fold_mode,
            "execution": asdict(execution), "cells": len(tasks)}, indent=2) + "\n")
        say(f"tradezoo compare: {len(datasets)} dataset(s) x {folds} fold(s) x "
            f"{len(options.archs)} architecture(s) x {options.seeds} seed(s), mode "
            f"{options.mode}, budget {options.budget}: {len(tasks)} cells on "
            f"{execution.backend} ({execution.workers} worker(s), {execution.threads} "
            f"thread(s) each)")
        say(f"output: {out}")
        grid = run_grid(tasks, out, execution, stream=out_stream)
        sources = {t.cell.dataset: t.source for t in tasks}
        result = _write_tables(options, grid.records, out, command, sources, folds, say)
    failed = [r for r in grid.records if r["status"] != "done"]
    if failed:
        say(f"{len(failed)} cell(s) failed (their errors are in {out / 'cells.csv'}):")
        for record in failed:
            say(f"  {record['cell']}: {record['error']}")
    result.cells, result.ran, result.skipped = grid.records, grid.ran, grid.skipped
    result.paths["cells"] = out / "cells.csv"
    result.seconds = time.perf_counter() - started
    say(f"done in {result.seconds:.0f} s: {len(grid.ran)} cell(s) run, {len(grid.skipped)} "
        f"from the store; {out / 'cells.csv'}")
    return result


def _write_tables(options: TrainingOptions, cell_records: Sequence[Mapping[str, Any]],
                  out: Path, command: str | None, sources: Mapping[str, Any], folds: int,
                  say: Any) -> CompareResult:
    """The leaderboard of the cell records (:mod:`tradezoo.agents.leaderboard`): one row per
    (dataset, architecture, mode), baselines included."""
    from tradezoo.agents.leaderboard import write_leaderboard_files
    from tradezoo.data.prepare import load_source

    done = [r for r in cell_records if r["status"] == "done"]
    if not done:
        say("no cell finished: no leaderboard")
        return CompareResult(frame=None, paths={}, seconds=0.0)
    bars = {name: load_source(source) for name, source in sources.items()}
    supervised_cfg, ppo_cfg = options.supervised, options.ppo
    assert supervised_cfg is not None and ppo_cfg is not None
    seeds = [options.seed + k for k in range(options.seeds)]
    devices = sorted({str(r.get("device")) for r in done if r["cell"]["mode"] != "baseline"})
    scheme = ("split fractions " + str(list(options.split_fractions)) if folds == 1
              else f"{folds} walk-forward folds")
    notes = [
        f"Command: `{command}`" if command else "",
        f"Data {', '.join(f'`{d}`' for d in sources)}; window {options.window}; {scheme}; "
        f"budget `{options.budget}` (supervised epochs {supervised_cfg.epochs}, PPO "
        f"timesteps {ppo_cfg.timesteps:,}); seeds {seeds}; device {', '.join(devices) or 'n/a'}.",
        "Metrics on the test parts with the dataset's costs (fills at the next open); "
        "statistics and columns: docs/evaluation.md. Per-cell results: cells.csv.",
    ]
    paths = write_leaderboard_files(cell_records, out, bars=bars,
                                    notes=[n for n in notes if n],
                                    title=f"tradezoo leaderboard: {', '.join(sources)}")
    frame = pd.read_csv(paths["csv"])
    say(paths["markdown"].read_text(encoding="utf-8"))
    say(f"leaderboard: {paths['markdown']}, {paths['csv']}; plots: {paths['folds']}, "
        f"{paths['equity']}")
    return CompareResult(frame=frame, paths=dict(paths), seconds=0.0)
