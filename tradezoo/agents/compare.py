"""The architecture leaderboard (``tradezoo compare``): every architecture, the same data,
the same splits, several seeds, graded on the held-out test split.

For each architecture and seed (seeds ``seed .. seed + seeds - 1``), by ``mode``:

- ``supervised``: train the classifier (early stopping on validation, best checkpoint);
- ``ppo``: PPO from scratch (best model on the validation reward);
- ``both``: the classifier, then PPO warm-started from it (two rows per architecture).

Every model is backtested on the test split (:func:`~tradezoo.agents.supervised.
evaluate_supervised`, :func:`~tradezoo.agents.ppo.evaluate_ppo`: the shared engine, the
dataset's costs, fills at the next open). All of them trade the same test bars (the test rows
do not depend on the window or the label horizon), so buy-and-hold on those bars is one row.

Files written to ``out_dir``::

    leaderboard.md     the table: mean ± std over seeds (sample std, ddof=1; one seed: no
                       std) of total return, Sharpe, max drawdown, win rate, trades, and
                       accuracy / macro-F1 for classifiers; training seconds and trainable
                       parameters; buy-and-hold as a row; sorted by mean Sharpe
    leaderboard.csv    the same numbers unformatted (``<metric>_mean``, ``<metric>_std``)
    runs.csv           one line per (architecture, mode, seed)
    equity.png         test-split equity curves (mean over seeds) and buy-and-hold
    config.json        the resolved options
    <arch>/seed<k>/{supervised,ppo}/   the runs (checkpoints, TensorBoard logs)

``train_s`` is the wall time of that row's own training (a warm-started PPO row excludes the
supervised pre-training of the row above it); ``params`` counts trainable parameters (the PPO
policy includes its value head).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradezoo.backtest.formatting import format_mean_std, format_metric

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
    """What :func:`run_compare` returns: the runs, the leaderboard and the files."""

    records: list[RunRecord]
    frame: pd.DataFrame
    paths: dict[str, Path]
    seconds: float


def run_compare(options: TrainingOptions, *, command: str | None = None,
                stream: IO[str] | None = None) -> CompareResult:
    """Train and grade every architecture of ``options.archs`` (module docstring).

    Args:
        options: the ``compare`` options (:func:`~tradezoo.agents.config.training_options`).
        command: the command line to print in ``leaderboard.md`` (reproducibility).
        stream: where progress lines go (default stdout).

    Raises:
        ConfigError, DataError: bad options or data (raised before anything is written);
        NonFiniteLossError: a diverging run;
        TrainingInterrupted: Ctrl-C.
    """
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy, train_ppo
    from tradezoo.agents.run import check_options, prepare_from_options, write_options
    from tradezoo.agents.supervised import evaluate_supervised, resolve_device, train_supervised
    from tradezoo.agents.tensorboard import tensorboard_command

    out_stream = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=out_stream, flush=True)

    started = time.perf_counter()
    archs, mode = list(options.archs), options.mode
    seeds = [options.seed + k for k in range(options.seeds)]
    device = str(resolve_device(options.device))
    out = Path(options.out) if options.out else Path("runs") / (
        f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    check_options(options)  # bad options and data fail before anything is written
    data = prepare_from_options(options)
    supervised_cfg, ppo_cfg = options.supervised, options.ppo
    assert supervised_cfg is not None and ppo_cfg is not None
    write_options(out, options)
    arch_config = dict(options.arch_config)
    stages = {"supervised": 1, "ppo": 1, "both": 2}[mode]
    total = len(archs) * len(seeds) * stages
    say(f"tradezoo compare: {len(archs)} architecture(s) x {len(seeds)} seed(s), mode {mode}, "
        f"budget {options.budget}, device {device}: {total} training runs")
    say(f"output: {out}; TensorBoard: {tensorboard_command(out)}")
    records: list[RunRecord] = []
    job = 0
    for arch in archs:
        for seed in seeds:
            run_dir = out / arch / f"seed{seed}"
            checkpoint = None
            if mode in ("supervised", "both"):
                job += 1
                say(f"[{job}/{total}] {arch} seed {seed}: supervised")
                result = train_supervised(data, arch, config=supervised_cfg,
                                          arch_config=arch_config, out_dir=run_dir / "supervised",
                                          seed=seed, device=device, verbose=False)
                checkpoint = result.best_checkpoint
                evaluation = evaluate_supervised(result.model, data, "test", device=device)
                records.append(_record(arch, "supervised", seed, evaluation.backtest,
                                       evaluation.report.to_dict(), result.train_seconds,
                                       result.n_parameters))
                say(f"      {_brief(records[-1])}")
            if mode in ("ppo", "both"):
                job += 1
                warm = checkpoint is not None
                label = "ppo (warm start)" if warm else "ppo"
                say(f"[{job}/{total}] {arch} seed {seed}: {label}")
                # A warm start takes the architecture's config from the checkpoint.
                cfg = replace(ppo_cfg, arch_config={}) if warm else ppo_cfg
                ppo = train_ppo(data, arch, config=cfg, out_dir=run_dir / "ppo", seed=seed,
                                device=device, init_from=checkpoint,
                                progress=options.progress, verbose=False)
                chosen = ppo.best_model or ppo.final_model
                evaluation_ppo = evaluate_ppo(load_ppo_policy(chosen, device=device), data,
                                              "test", device=device)
                records.append(_record(arch, label, seed, evaluation_ppo.backtest, None,
                                       ppo.train_seconds, ppo.n_parameters))
                say(f"      {_brief(records[-1])}")
    first, last = data.boundaries["test"]
    notes = [
        f"Command: `{command}`" if command else "",
        f"Data `{options.data}`, window {data.window}, test split {first} .. {last} "
        f"({len(records[0].equity) - 1} bars), split fractions {list(data.split_fractions)}; "
        f"budget `{options.budget}` (supervised epochs {supervised_cfg.epochs}, PPO "
        f"timesteps {ppo_cfg.timesteps:,}); seeds {seeds}; "
        f"device {device}.",
        "Metrics on the test split with the dataset's costs (fills at the next open); mean ± "
        "sample std over seeds; ranked by mean Sharpe. train_s: seconds of that row's own "
        "training.",
    ]
    paths = write_leaderboard(records, out, notes=[n for n in notes if n],
                              title=f"tradezoo leaderboard: {data.name}")
    frame = leaderboard_frame(records)
    elapsed = time.perf_counter() - started
    say(paths["markdown"].read_text(encoding="utf-8"))
    say(f"leaderboard: {paths['markdown']}, {paths['csv']}; equity curves: {paths['png']} "
        f"({elapsed:.0f} s)")
    return CompareResult(records=records, frame=frame, paths=paths, seconds=elapsed)


def _record(arch: str, mode: str, seed: int, backtest: Any, classification: Any,
            seconds: float, n_parameters: int) -> RunRecord:
    metrics = backtest.metrics.to_dict()
    equity = backtest.equity / float(backtest.equity.iloc[0])
    bench = backtest.benchmark_equity / float(backtest.benchmark_equity.iloc[0])
    return RunRecord(arch=arch, mode=mode, seed=seed, metrics=_pick(metrics, classification),
                     train_seconds=float(seconds), n_parameters=int(n_parameters),
                     equity=equity, benchmark_equity=bench,
                     benchmark_metrics=_pick(backtest.benchmark_metrics.to_dict(), None))


def _brief(record: RunRecord) -> str:
    def show(metric: str) -> str:
        return format_metric(metric, record.metrics.get(metric))

    parts = [f"test total return {show('total_return')}", f"Sharpe {show('sharpe')}",
             f"max drawdown {show('max_drawdown')}"]
    if "accuracy" in record.metrics:
        parts.append(f"accuracy {show('accuracy')}")
    return ", ".join(parts) + f" ({record.train_seconds:.0f} s)"
