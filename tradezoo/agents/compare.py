"""The architecture leaderboard (``tradezoo compare``): every architecture, the same data,
the same splits, several seeds, graded on the held-out test part.

``compare`` runs a grid of cells, (dataset, fold, architecture, mode, seed), through
:mod:`tradezoo.agents.sweep` (serially, in local worker processes or on Ray; resumable from
its results store). The modes, by ``--mode``:

- ``supervised``: train the classifier (early stopping on validation, best checkpoint);
- ``ppo``: PPO from scratch (best model on the validation reward);
- ``both``: the classifier, and PPO warm-started from it (two rows per architecture).

Every model is backtested on its test part (:func:`~tradezoo.agents.supervised.
evaluate_supervised`, :func:`~tradezoo.agents.ppo.evaluate_ppo`: the shared engine, the
dataset's costs, fills at the next open). All cells of one (dataset, fold) trade the same test
bars (the test rows do not depend on the window or the label horizon), so buy-and-hold on
those bars is one row.

Files written to ``out_dir``::

    cells/<key>.json   one record per finished cell (tradezoo.agents.sweep)
    cells.csv          one row per cell: dataset, fold, arch, mode, seed, status, metrics
    leaderboard.md     one dataset and one fold: mean ± std over seeds (sample std, ddof=1;
                       one seed: no std) of total return, Sharpe, max drawdown, win rate,
                       trades, and accuracy / macro-F1 for classifiers; training seconds and
                       trainable parameters; buy-and-hold as a row; sorted by mean Sharpe
    leaderboard.csv    the same numbers unformatted (``<metric>_mean``, ``<metric>_std``)
    runs.csv           one line per (architecture, mode, seed)
    equity.png         test-part equity curves (mean over seeds) and buy-and-hold
    config.json        the resolved options; sweep.json: datasets, folds, execution
    runs/<dataset>/fold<k>/<arch>/seed<s>/<mode>/   local cells' runs (checkpoints, logs)

``train_s`` is the wall time of that row's own training (a warm-started PPO row excludes the
supervised pre-training); ``params`` counts trainable parameters (the PPO policy includes its
value head).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradezoo.agents.sweep import ExecutionOptions
from tradezoo.backtest.formatting import format_mean_std

if TYPE_CHECKING:
    from tradezoo.agents.config import TrainingOptions

__all__ = [
    "LEADERBOARD_METRICS",
    "CompareResult",
    "RunRecord",
    "leaderboard_frame",
    "leaderboard_markdown",
    "run_compare",
    "write_leaderboard",
]

LEADERBOARD_METRICS: tuple[str, ...] = (
    "total_return", "sharpe", "max_drawdown", "win_rate", "n_trades", "accuracy", "macro_f1",
)
"""Columns of the leaderboard (test-split metrics; accuracy and macro-F1 for classifiers)."""
BUY_AND_HOLD = "buy & hold"


@dataclass
class RunRecord:
    """One trained model's test-split result.

    Attributes:
        arch: architecture; mode: ``"supervised"``, ``"ppo"`` or ``"ppo (warm start)"``.
        seed: its seed.
        metrics: the :data:`LEADERBOARD_METRICS` it has (floats, NaN when undefined).
        train_seconds: wall time of its training; n_parameters: trainable parameters.
        equity: test-split equity curve (starts at 1); benchmark_equity: buy-and-hold on the
            same bars.
    """

    arch: str
    mode: str
    seed: int
    metrics: dict[str, float]
    train_seconds: float
    n_parameters: int
    equity: pd.Series = field(repr=False)
    benchmark_equity: pd.Series = field(repr=False)
    benchmark_metrics: dict[str, float] = field(default_factory=dict, repr=False)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _pick(metrics: Mapping[str, Any], classification: Mapping[str, Any] | None) -> dict[str,
                                                                                        float]:
    out = {k: _number(metrics.get(k)) for k in LEADERBOARD_METRICS if k in metrics}
    if classification is not None:
        out["accuracy"] = _number(classification.get("accuracy"))
        out["macro_f1"] = _number(classification.get("macro_f1"))
    return out


def leaderboard_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Aggregate runs into the leaderboard: one row per (arch, mode) plus buy-and-hold.

    Columns: ``model``, ``mode``, ``seeds``, ``<metric>_mean`` and ``<metric>_std`` for each
    of :data:`LEADERBOARD_METRICS`, ``train_s_mean``, ``params``. Sorted by ``sharpe_mean``
    (descending, NaN last).

    Raises:
        ValueError: no records, or runs whose buy-and-hold differ (not the same test bars).
    """
    if not records:
        raise ValueError("leaderboard_frame: no runs to aggregate")
    reference = records[0].benchmark_equity
    for record in records[1:]:
        other = record.benchmark_equity
        if not (other.index.equals(reference.index)
                and np.allclose(other.to_numpy(), reference.to_numpy(), rtol=0, atol=1e-9)):
            raise ValueError(
                f"run {record.arch}/{record.mode}/seed {record.seed} was backtested on other "
                "bars than the first run: the leaderboard needs one test span"
            )
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.arch, record.mode), []).append(record)
    rows = []
    for (arch, mode), runs in groups.items():
        row: dict[str, Any] = {"model": arch, "mode": mode, "seeds": len(runs)}
        for metric in LEADERBOARD_METRICS:
            values = np.array([r.metrics.get(metric, math.nan) for r in runs], dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(finite.mean()) if finite.size else math.nan
            row[f"{metric}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        row["train_s_mean"] = float(np.mean([r.train_seconds for r in runs]))
        row["params"] = int(runs[0].n_parameters)
        rows.append(row)
    benchmark = records[0].benchmark_metrics
    bh: dict[str, Any] = {"model": BUY_AND_HOLD, "mode": "benchmark", "seeds": 1}
    for metric in LEADERBOARD_METRICS:
        bh[f"{metric}_mean"] = _number(benchmark.get(metric))
        bh[f"{metric}_std"] = math.nan
    bh["train_s_mean"] = math.nan
    bh["params"] = 0
    rows.append(bh)
    frame = pd.DataFrame(rows)
    return frame.sort_values("sharpe_mean", ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def leaderboard_markdown(frame: pd.DataFrame, *, title: str = "Leaderboard",
                         notes: Sequence[str] = ()) -> str:
    """The leaderboard as a Markdown document (a title, notes, the table)."""
    header = ["#", "model", "mode", "seeds", *LEADERBOARD_METRICS, "train_s", "params"]
    lines = [f"# {title}", ""]
    lines.extend(notes)
    if notes:
        lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---:|---|---|---:|" + "---:|" * (len(LEADERBOARD_METRICS) + 2))
    for rank, row in enumerate(frame.itertuples(index=False), start=1):
        values = row._asdict()
        cells = [str(rank), f"**{values['model']}**" if values["model"] == BUY_AND_HOLD
                 else str(values["model"]), str(values["mode"]), str(values["seeds"])]
        cells += [format_mean_std(m, values[f"{m}_mean"], values[f"{m}_std"])
                  for m in LEADERBOARD_METRICS]
        train = values["train_s_mean"]
        cells.append("n/a" if not math.isfinite(train) else f"{train:.1f}")
        cells.append(f"{int(values['params']):,}" if values["params"] else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _equity_figure(records: Sequence[RunRecord], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups: dict[tuple[str, str], list[pd.Series]] = {}
    for record in records:
        groups.setdefault((record.arch, record.mode), []).append(record.equity)
    # One colour per architecture, one line style per mode, so 10 architectures x 2 modes
    # stay distinguishable (matplotlib's default cycle repeats after 10 lines).
    archs = list(dict.fromkeys(arch for arch, _mode in groups))
    palette = matplotlib.colormaps["tab10" if len(archs) <= 10 else "tab20"]
    for (arch, mode), curves in groups.items():
        mean = pd.concat(curves, axis=1).mean(axis=1)
        style = "-" if mode == "supervised" else "--" if mode == "ppo" else "-."
        ax.plot(mean.index, mean.to_numpy(), style, linewidth=1.2,
                color=palette(archs.index(arch) % palette.N),
                label=f"{arch} ({mode}, n={len(curves)})")
    bench = records[0].benchmark_equity
    ax.plot(bench.index, bench.to_numpy(), color="black", linewidth=2.0, label=BUY_AND_HOLD)
    ax.set_title(title)
    ax.set_ylabel("equity (start = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def write_leaderboard(records: Sequence[RunRecord], out_dir: str | Path, *,
                      notes: Sequence[str] = (), title: str = "Leaderboard") -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``runs.csv`` and ``equity.png``.

    Returns:
        ``{"markdown", "csv", "runs", "png"}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = leaderboard_frame(records)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv",
             "runs": out / "runs.csv", "png": out / "equity.png"}
    paths["markdown"].write_text(leaderboard_markdown(frame, title=title, notes=notes),
                                 encoding="utf-8")
    frame.to_csv(paths["csv"], index=False)
    pd.DataFrame([{"model": r.arch, "mode": r.mode, "seed": r.seed, **r.metrics,
                   "train_s": r.train_seconds, "params": r.n_parameters} for r in records]
                 ).to_csv(paths["runs"], index=False)
    seeds = sorted({r.seed for r in records})
    _equity_figure(records, paths["png"], f"{title}: test-split equity, mean over "
                   f"{len(seeds)} seed(s)")
    return paths


@dataclass
class CompareResult:
    """What :func:`run_compare` returns: the runs, the leaderboard and the files.

    Attributes:
        records: the leaderboard's runs (empty when the grid has several datasets or folds:
            its aggregation is the leaderboard module's).
        frame: the leaderboard (``None`` when it was not written).
        paths: the files written.
        seconds: wall time.
        cells: every cell record of the grid (:mod:`tradezoo.agents.sweep`).
        ran, skipped: keys of the cells run this time and of those found in the store.
    """

    records: list[RunRecord]
    frame: pd.DataFrame | None
    paths: dict[str, Path]
    seconds: float
    cells: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


MODE_LABELS = {"supervised": "supervised", "ppo": "ppo", "ppo_warm": "ppo (warm start)"}
"""Leaderboard mode label of each cell mode."""


def _equity(timestamps: Sequence[str], returns: Sequence[float | None]) -> pd.Series:
    """Equity starting at 1 on ``timestamps[0]`` from the per-bar returns on
    ``timestamps[1:]`` (``None`` = 0)."""
    values = np.array([0.0 if r is None else r for r in returns], dtype=np.float64)
    return pd.Series(np.concatenate([[1.0], np.cumprod(1.0 + values)]),
                     index=pd.DatetimeIndex(timestamps))


def record_from_cell(cell_record: Mapping[str, Any]) -> RunRecord:
    """A done cell record (:func:`~tradezoo.agents.sweep.run_cell`) as a leaderboard run."""
    cell, test = cell_record["cell"], cell_record["test"]
    metrics = _pick(cell_record["metrics"], None)
    for name in ("accuracy", "macro_f1"):
        if name in cell_record["metrics"]:
            metrics[name] = _number(cell_record["metrics"][name])
    return RunRecord(
        arch=cell["arch"], mode=MODE_LABELS.get(cell["mode"], cell["mode"]), seed=cell["seed"],
        metrics=metrics, train_seconds=float(cell_record.get("train_seconds") or math.nan),
        n_parameters=int(cell_record.get("n_parameters") or 0),
        equity=_equity(test["timestamps"], test["returns"]),
        benchmark_equity=_equity(test["timestamps"], test["benchmark_returns"]),
        benchmark_metrics=_pick(cell_record.get("benchmark_metrics") or {}, None))


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
        return CompareResult(records=[], frame=None, paths={}, seconds=0.0)
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
    records = [record_from_cell(r) for r in done if r["cell"]["mode"] != "baseline"]
    return CompareResult(records=records, frame=frame, paths=dict(paths), seconds=0.0)
