"""The ablation of the design chapters' forms: each change, chapter form against previous form.

    python scripts/ablation.py --out runs/ablation --workers 2    # the table of the docs
    python scripts/ablation.py --out runs/ablation --estimate     # expected wall time only
    python scripts/ablation.py --out runs/ablation-cfc --changes cfc.mode --seeds 1
    python scripts/ablation.py --quick                            # smoke budget: checks setup

Every change is one line of ``CHANGES``: an architecture and the options of its two forms,
as ``tradezoo compare`` keys (``--set`` syntax). Each form is a ``compare`` grid, supervised
cells by default (``tradezoo.agents.sweep.expand_grid``), on the calibration markets and the
Bybit bars, and all cells run as one grid (``run_grid``: longest first, ``--workers``
processes) into the results store under ``--out``, so a rerun of the command skips finished
cells. Forms that resolve to the same model (both at the defaults, e.g. ``msa.hierarchy``'s
previous form and ``msa.fusion``'s chapter form) share their cells.

Statistics are the leaderboard's (``tradezoo.agents.leaderboard.leaderboard_frame``: Sharpe
mean and IQM over seeds, bootstrap interval, PSR, DSR, oracle fraction), one row per form,
the DSR deflated over the rows of the change on the dataset. The verdict of a pair, per
dataset, uses the paired stationary bootstrap of ``tradezoo.backtest.stats`` on each seed's
test returns (both forms trade the same bars):

- ``p`` = the one-sided p-value of H0: mean SR(chapter) <= mean SR(previous) over the seeds
  (``pooled_sharpe_difference_pvalue``: each resample draws the seeds with replacement and the
  bars by the stationary bootstrap, so it counts the seeds' spread and the market's noise, and
  gains power as seeds are added; a form that never trades in a seed counts as Sharpe 0);
- **chapter better**: ``p < --alpha`` (0.05); **previous better**: the same the other way
  round; otherwise **within noise**.

The defaults follow the verdicts (docs/architectures.md, "Ablation"): a change that loses keeps
the previous form as the default; one within noise or better takes the chapter's form, the
other form staying an option. ``CHANGES`` keeps both forms of every pair whichever is the
default, so a rerun measures the same comparison.

Files in ``--out``: ``ablation.md`` (the tables), ``ablation.csv`` (one row per form and
dataset, unformatted), ``ablation.json`` (the command, wall time, rows and summary),
``cells/`` and ``cells.csv`` (the compare cells). Cells train in temporary directories
(forms differ only by their config, so the compare layout would put two in one folder).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_DATASET = "bybit-btcusdt-1h"
"""The dataset of ``tradezoo.agents.sweep.ARCH_COST``'s timings (the estimate scales them)."""
DATASETS: tuple[str, ...] = ("synthetic-regime", "synthetic-irregular", REFERENCE_DATASET)
FORMS: tuple[str, ...] = ("chapter", "previous")
VERDICTS = ("chapter better", "previous better", "within noise")


@dataclass(frozen=True)
class Change:
    """One change of the design chapters, as its two forms.

    Attributes:
        name: ``<arch>.<part>``, the name ``--changes`` takes.
        arch: the architecture (registry name).
        chapter, previous: each form's options as dotted ``compare`` keys -> value
            (``"arch_config.mode"``, ``"supervised.loss"``); all other options are shared.
    """

    name: str
    arch: str
    chapter: Mapping[str, Any]
    previous: Mapping[str, Any]

    def options(self, form: str) -> Mapping[str, Any]:
        """The dotted options of ``form`` (``"chapter"`` or ``"previous"``)."""
        return self.chapter if form == "chapter" else self.previous


def _pair(arch: str, key: str, chapter: Any, previous: Any) -> Change:
    """The change of one ``arch_config`` field: ``chapter`` against ``previous``."""
    return Change(f"{arch}.{key}", arch, {f"arch_config.{key}": chapter},
                  {f"arch_config.{key}": previous})


CHANGES: tuple[Change, ...] = (
    _pair("cfc", "mode", "chapter", "default"),
    _pair("cfc", "wiring", "ncp", None),
    _pair("ltc", "wiring", "ncp", None),
    _pair("cfc", "use_dt", True, False),
    Change("cfc.chapter_use_dt", "cfc", {"arch_config.mode": "chapter", "arch_config.use_dt": True},
           {"arch_config.mode": "chapter", "arch_config.use_dt": False}),
    _pair("ltc", "use_dt", True, False),
    *(Change(f"{arch}.elapsed_time", arch, {"arch_config.use_dt": True},
             {"arch_config.use_dt": False, "features.include_dt": False})
      for arch in ("cfc", "ltc")),
    *(Change(f"{arch}.dt_dynamics", arch,
             {"arch_config.use_dt": True, "features.include_dt": False},
             {"arch_config.use_dt": False, "features.include_dt": False})
      for arch in ("cfc", "ltc")),
    *(Change(f"{arch}.dt_column", arch,
             {"arch_config.use_dt": True, "features.include_dt": False},
             {"arch_config.use_dt": True})
      for arch in ("cfc", "ltc")),
    _pair("mambats", "fusion", "linear", "gate"),
    _pair("mambats", "channel_mixing", "variables", "hidden"),
    _pair("msa", "hierarchy", "pyramid", "parallel"),
    _pair("msa", "fusion", "mlp", "gated"),
    _pair("timeparticle", "attention_heads", 4, 1),
    _pair("timeparticle", "message_feedback", True, False),
    _pair("timeparticle", "particle_outputs", True, False),
    *(Change(f"{arch}.loss", arch, {"supervised.loss": "scale_aware+sharpe"},
             {"supervised.loss": "ce"}) for arch in ("mambats", "timeparticle")),
)
"""The changes of docs/architectures.md "Against the design chapters" that have a chapter form
and a previous one (``msa.depths`` has no chapter value: not a pair; ``use_dt`` switches the
elapsed time in the liquid networks' dynamics only, for ``cfc`` in its default (published)
form and, ``chapter_use_dt``, in the chapter's form; ``dt_dynamics`` does the same for models
without the scaled ``dt`` input column, so the dynamics are the only difference;
``dt_column`` compares the default model with the same model without that column (the
chapter's networks see elapsed time through their dynamics only); ``elapsed_time`` compares
the default model with one that sees no elapsed time at all, neither in its dynamics nor as
the scaled ``dt`` input column), and the trading
objective of the TimeParticle and Mamba chapters (docs/training.md, "Losses") for their
architectures: the scale-aware and Sharpe terms (the multi-horizon term needs other labels)."""


# ------------------------------------------------------------------------------ grid


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=list)


def _arch_config(arch: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` checked against ``arch``'s config class, without those at their default (so
    forms that build the same model get the same cell key)."""
    from tradezoo.policies import ARCHITECTURES

    config_cls = ARCHITECTURES[arch].config_cls
    config_cls.from_kwargs(arch, **fields)  # unknown fields and bad values fail here
    defaults = config_cls().to_dict()
    return {k: v for k, v in fields.items() if _canonical(v) != _canonical(defaults[k])}


def form_options(change: Change, form: str, flags: Mapping[str, Any]) -> Any:
    """The :class:`~tradezoo.agents.config.TrainingOptions` of one form: ``compare``'s
    options from ``flags`` with the form's options over them."""
    from tradezoo.agents.config import resolve_options, training_options

    overrides = change.options(form)
    arch_fields = {k.removeprefix("arch_config."): v for k, v in overrides.items()
                   if k.startswith("arch_config.")}
    others = {k: v for k, v in overrides.items() if not k.startswith("arch_config.")}
    layer = {**flags, **others, "archs": change.arch,
             "arch_config": _arch_config(change.arch, arch_fields)}
    return training_options("compare", resolve_options("compare", flags=layer))


def form_text(change: Change, form: str) -> str:
    """The form's options as the table shows them: ``mode=chapter``."""
    return ", ".join(f"{k.removeprefix('arch_config.')}={json.dumps(v)}"
                     for k, v in change.options(form).items()).replace('"', "")


@dataclass
class FormGrid:
    """One form of one change: its label and its cells (``CellTask``)."""

    change: Change
    form: str
    text: str
    tasks: list[Any] = field(default_factory=list)


def plan(changes: Sequence[Change], datasets: Sequence[str], flags: Mapping[str, Any],
         folds: int) -> list[FormGrid]:
    """Every form's grid (no baselines: the forms are compared with each other).

    Raises:
        ConfigError: a form the config class rejects, or a change whose forms are one model.
    """
    from tradezoo.agents.sweep import expand_grid
    from tradezoo.errors import ConfigError

    grids = []
    for change in changes:
        pair = []
        for form in FORMS:
            try:
                options = form_options(change, form, flags)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"change {change.name}, {form} form: {exc}") from None
            tasks = expand_grid(options, data=datasets, folds=folds, baselines=False)
            pair.append(FormGrid(change, form, form_text(change, form), tasks))
        if [t.key for t in pair[0].tasks] == [t.key for t in pair[1].tasks]:
            raise ConfigError(f"change {change.name}: its chapter and previous forms build the "
                              "same model")
        grids += pair
    return grids


def unique_tasks(grids: Sequence[FormGrid]) -> tuple[list[Any], dict[str, str]]:
    """The cells to run, once each (forms may share cells), and their progress labels."""
    tasks: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for grid in grids:
        for task in grid.tasks:
            tasks.setdefault(task.key, task)
            names = labels.setdefault(task.key, [])
            name = f"{grid.change.name} {grid.form}"
            if name not in names:
                names.append(name)
    return list(tasks.values()), {
        key: f"{tasks[key].cell.label} [{' = '.join(names)}]" for key, names in labels.items()}


# ------------------------------------------------------------------------------ estimate


def expected_seconds(tasks: Sequence[Any]) -> list[float]:
    """Each cell's expected seconds: ``ARCH_COST`` (tiny budget, BTCUSDT 1h, 2-core CPU)
    scaled by its dataset's bars over the reference dataset's bars."""
    from tradezoo.agents.sweep import expected_cost
    from tradezoo.data.prepare import load_source

    bars: dict[str, int] = {}

    def size(source: Any) -> int:
        name = source if isinstance(source, str) else id(source)
        if name not in bars:
            bars[name] = len(load_source(source))
        return bars[name]

    reference = size(REFERENCE_DATASET)
    return [expected_cost(t.cell) * size(t.source) / reference for t in tasks]


def makespan(seconds: Sequence[float], workers: int) -> float:
    """Wall time of ``seconds`` on ``workers`` processes taking the longest cell first (the
    order ``run_grid`` submits them in)."""
    finish = [0.0] * workers
    for cost in sorted(seconds, reverse=True):
        heapq.heapreplace(finish, finish[0] + cost)
    return max(finish)


# ------------------------------------------------------------------------------ verdicts


def _seed_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe; 0 for a form that never trades (the leaderboard's convention)."""
    from tradezoo.backtest.metrics import compute_metrics

    if not (returns != 0.0).any():
        return 0.0
    return float(compute_metrics(returns, periods_per_year=periods_per_year).sharpe)


def pooled_pvalue(better: Sequence[np.ndarray], other: Sequence[np.ndarray],
                  n_boot: int) -> float:
    """One-sided p-value of H0: mean SR(better) <= mean SR(other) over the seeds, on the same
    bars (``pooled_sharpe_difference_pvalue``: seeds and bars resampled; a seed that never
    trades counts as Sharpe 0); NaN where the series are too short for a test."""
    from tradezoo.backtest.stats import pooled_sharpe_difference_pvalue

    try:
        return pooled_sharpe_difference_pvalue(np.stack(better), np.stack(other),
                                               n_boot=n_boot)
    except ValueError:
        return math.nan


def verdict(chapter: Sequence[np.ndarray], previous: Sequence[np.ndarray],
            periods_per_year: float, *, alpha: float, n_boot: int) -> dict[str, Any]:
    """The verdict of a pair on one dataset from each seed's test returns (same seeds in the
    same order, each pair on the same bars): ``verdict``, ``p_chapter`` (H0: the chapter
    form is not better on average over the seeds), ``p_previous`` (H0: the previous form is
    not better) and ``sharpe_difference`` (mean over seeds of chapter minus previous,
    annualised)."""
    diffs = []
    for a, b in zip(chapter, previous, strict=True):
        if a.shape != b.shape:
            raise ValueError("the forms' test parts differ; a pair must trade the same bars")
        diffs.append(_seed_sharpe(a, periods_per_year) - _seed_sharpe(b, periods_per_year))
    p_ch = pooled_pvalue(chapter, previous, n_boot)
    p_prev = pooled_pvalue(previous, chapter, n_boot)
    said = ("chapter better" if p_ch < alpha else "previous better" if p_prev < alpha
            else "within noise")
    return {"verdict": said, "p_chapter": p_ch, "p_previous": p_prev,
            "sharpe_difference": float(np.mean(diffs)) if diffs else math.nan}


def _cell_sharpe(record: Mapping[str, Any]) -> float:
    """A cell's test Sharpe; 0 where it is undefined (a form that never trades: the
    leaderboard's convention)."""
    sharpe = record["metrics"].get("sharpe")
    return float(sharpe) if sharpe is not None and math.isfinite(sharpe) else 0.0


def _seed_returns(records: Sequence[Mapping[str, Any]]) -> dict[int, np.ndarray]:
    """Each seed's fold-stitched test returns (the leaderboard's ``stitch``)."""
    from tradezoo.agents.leaderboard import parse_cell, stitch

    cells = [parse_cell(r) for r in records]
    return {seed: stitch([c for c in cells if c.seed == seed]).returns
            for seed in sorted({c.seed for c in cells})}


# ------------------------------------------------------------------------------ table


STAT_COLUMNS = ("sharpe_mean", "sharpe_iqm", "sharpe_ci_low", "sharpe_ci_high", "psr", "dsr",
                "oracle_fraction")


def change_rows(change: Change, grids: Sequence[FormGrid], store: Mapping[str, Any],
                bars: Mapping[str, Any], *, alpha: float, n_boot: int) -> list[dict[str, Any]]:
    """One row per (dataset, cell mode, form) of ``change``: the leaderboard's statistics of
    the form's finished cells and the pair's verdict."""
    from tradezoo.agents.leaderboard import leaderboard_frame

    own = [g for g in grids if g.change is change]
    relabelled = []  # the leaderboard groups by (dataset, arch, mode): mode carries the form
    for grid in own:
        for task in grid.tasks:
            record = store.get(task.key)
            if record is not None:
                cell = {**record["cell"], "mode": f"{record['cell']['mode']}:{grid.form}"}
                relabelled.append({**record, "cell": cell})
    done = [r for r in relabelled if r["status"] == "done"]
    frame = (leaderboard_frame(relabelled, bars=bars, n_boot=n_boot).to_dict("records")
             if done else [])
    stats = {(r["dataset"], r["mode"]): r for r in frame}
    rows = []
    coordinates = dict.fromkeys((t.cell.dataset, t.cell.mode) for t in own[0].tasks)
    for dataset, mode in coordinates:
        per_form = {}
        for grid in own:
            label = f"{mode}:{grid.form}"
            records = [r for r in done
                       if r["cell"]["dataset"] == dataset and r["cell"]["mode"] == label]
            expected = sum(t.cell.dataset == dataset and t.cell.mode == mode
                           for t in grid.tasks)
            per_form[grid.form] = (records, expected)
        complete = all(len(r) == n and n for r, n in per_form.values())
        judged = {"verdict": "incomplete", "p_chapter": math.nan, "p_previous": math.nan,
                  "sharpe_difference": math.nan}
        higher = {form: 0 for form in FORMS}
        paired = 0
        if complete:
            sharpes = {f: {(r["cell"]["seed"], r["cell"]["fold"]): _cell_sharpe(r)
                           for r in per_form[f][0]} for f in FORMS}
            for cell, sharpe in sharpes["chapter"].items():
                other = sharpes["previous"].get(cell)
                if other is not None:
                    paired += 1
                    higher["chapter"] += sharpe > other
                    higher["previous"] += other > sharpe
            chapter, previous = (_seed_returns(per_form[f][0]) for f in FORMS)
            ppy = float(per_form["chapter"][0][0]["periods_per_year"])
            judged = verdict([chapter[s] for s in sorted(chapter)],
                             [previous[s] for s in sorted(chapter)], ppy,
                             alpha=alpha, n_boot=n_boot)
        for grid in own:
            row = stats.get((dataset, f"{mode}:{grid.form}"), {})
            rows.append({
                "change": change.name, "arch": change.arch, "dataset": dataset, "mode": mode,
                "form": grid.form, "options": grid.text,
                "n_seeds": len({r["cell"]["seed"] for r in per_form[grid.form][0]}),
                **{c: row.get(c, math.nan) for c in STAT_COLUMNS},
                "cells_higher": higher[grid.form], "cells_paired": paired,
                "p_better": judged["p_chapter" if grid.form == "chapter" else "p_previous"],
                "sharpe_difference": judged["sharpe_difference"],
                "verdict": judged["verdict"],
            })
    return rows


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per (change, cell mode): its verdict on each dataset and overall (``chapter
    wins``: better somewhere, worse nowhere; ``previous wins`` the other way round;
    ``mixed``: both; ``within noise``; ``incomplete`` when a dataset has no verdict)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row["form"] != "chapter":
            continue
        entry = out.setdefault((row["change"], row["mode"]), {
            "change": row["change"], "arch": row["arch"], "mode": row["mode"], "verdicts": {}})
        entry["verdicts"][row["dataset"]] = row["verdict"]
    for entry in out.values():
        said = set(entry["verdicts"].values())
        wins, losses = "chapter better" in said, "previous better" in said
        entry["overall"] = ("incomplete" if "incomplete" in said else "mixed" if wins and losses
                            else "chapter wins" if wins else "previous wins" if losses
                            else "within noise")
    return list(out.values())


def _number(column: str, value: Any) -> str:
    from tradezoo.backtest.formatting import format_metric

    return format_metric(column, value)


def markdown(rows: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
             notes: Sequence[str]) -> str:
    """``ablation.md``: the notes, the summary (a line per change) and the table (a row per
    form and dataset; the seed x fold cells where the form's test Sharpe is the higher of the
    two, the pair's p-value of each form being better, the verdict on the chapter row)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    text = ["# Ablation of the design chapters' forms", "", *notes, "",
            "| change | mode | " + " | ".join(datasets) + " | overall |",
            "|---|---|" + "---|" * (len(datasets) + 1)]
    for line in lines:
        verdicts = [line["verdicts"].get(d, "") for d in datasets]
        text.append(f"| {line['change']} | {line['mode']} | " + " | ".join(verdicts)
                    + f" | {line['overall']} |")
    text += ["", "| change | dataset | mode | form | options | seeds | Sharpe | IQM | 95% CI | "
             "PSR | DSR | oracle | higher in | p better | verdict |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        interval = (f"[{_number('sharpe_ci_low', row['sharpe_ci_low'])}, "
                    f"{_number('sharpe_ci_high', row['sharpe_ci_high'])}]")
        cells = [row["change"], row["dataset"], row["mode"], row["form"], f"`{row['options']}`",
                 str(row["n_seeds"]), *(_number(c, row[c]) for c in (
                     "sharpe_mean", "sharpe_iqm")), interval,
                 *(_number(c, row[c]) for c in ("psr", "dsr", "oracle_fraction")),
                 f"{row['cells_higher']}/{row['cells_paired']}",
                 _number("p_vs_buy_and_hold", row["p_better"]),
                 row["verdict"] if row["form"] == "chapter" else ""]
        text.append("| " + " | ".join(cells) + " |")
    return "\n".join(text) + "\n"


def previous_runs(path: Path) -> list[dict[str, Any]]:
    """The ``runs`` of an earlier ``ablation.json`` (command, finish time, wall time, cells
    run), so the wall time of a resumed ablation adds up; none when absent or unreadable."""
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError, AttributeError):
        return []
    keys = {"command", "finished", "wall_time_s", "cells_run"}
    return [r for r in runs if isinstance(r, dict) and keys <= set(r)]


def write_outputs(out: Path, rows: Sequence[Mapping[str, Any]],
                  lines: Sequence[Mapping[str, Any]], notes: Sequence[str],
                  facts: Mapping[str, Any]) -> dict[str, Path]:
    """``ablation.md``, ``ablation.csv`` and ``ablation.json``, each atomically."""
    import pandas as pd

    from tradezoo.agents.rundir import write_text_atomic
    from tradezoo.backtest.formatting import json_safe

    paths = {"markdown": out / "ablation.md", "csv": out / "ablation.csv",
             "json": out / "ablation.json"}
    write_text_atomic(paths["markdown"], markdown(rows, lines, notes))
    write_text_atomic(paths["csv"], pd.DataFrame(list(rows)).to_csv(index=False))
    payload = json_safe({**facts, "rows": list(rows), "summary": list(lines)})
    write_text_atomic(paths["json"], json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return paths


# ------------------------------------------------------------------------------ main


def parser() -> argparse.ArgumentParser:
    """The command line (docs/architectures.md, "Ablation")."""
    names = [c.name for c in CHANGES]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ablation", help="results folder (a rerun resumes)")
    p.add_argument("--changes", default="all",
                   help=f"comma-separated changes or 'all' ({', '.join(names)})")
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help="comma-separated bundled datasets, calibration markets or bars files")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    p.add_argument("--folds", type=int, default=1, help="walk-forward folds (1: 70/15/15)")
    p.add_argument("--budget", default="tiny", help="compare --budget (smoke, tiny, small, ...)")
    p.add_argument("--mode", default="supervised", help="compare --mode: supervised, ppo, both")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--costs", default="auto",
                   help="compare --costs (auto: each bundled dataset's own; a bars file needs "
                        "bybit-linear, equities or zero)")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.add_argument("--alpha", type=float, default=0.05, help="the verdict's significance level")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--estimate", action="store_true",
                   help="print the expected wall time of the cells still to run and stop")
    p.add_argument("--quick", action="store_true",
                   help="smoke budget, cfc.mode, synthetic-regime, 1 seed: checks the setup")
    return p


def select_changes(text: str) -> list[Change]:
    """``--changes`` -> the changes (``all``: every one)."""
    from tradezoo.errors import ConfigError

    by_name = {c.name: c for c in CHANGES}
    if text.strip() == "all":
        return list(CHANGES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ConfigError(f"--changes: unknown change(s) {unknown or [text]}; known: "
                          f"{list(by_name)} or 'all'")
    return [by_name[n] for n in dict.fromkeys(names)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.budget, args.seeds, args.changes = "smoke", 1, "cfc.mode"
        args.datasets = "synthetic-regime"
    from tradezoo.agents.rundir import claim_run_dir
    from tradezoo.agents.sweep import ExecutionOptions, run_grid
    from tradezoo.data.prepare import load_source
    from tradezoo.errors import ConfigError

    started = time.perf_counter()
    command = "python scripts/ablation.py " + shlex.join(
        list(sys.argv[1:] if argv is None else argv))
    try:
        if not 0.0 < args.alpha < 1.0:
            raise ConfigError(f"--alpha must be in (0, 1), got {args.alpha}")
        changes = select_changes(args.changes)
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        if not datasets:
            raise ConfigError("--datasets names no dataset")
        flags = {"budget": args.budget, "mode": args.mode, "seeds": args.seeds, "seed": 0,
                 "device": args.device, "progress": False, "threads": args.threads,
                 "costs": args.costs}
        execution = ExecutionOptions(workers=args.workers, threads=args.threads,
                                     device=args.device, retry_failed=args.retry_failed)
        grids = plan(changes, datasets, flags, args.folds)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tasks, labels = unique_tasks(grids)
    out = Path(args.out)
    from tradezoo.agents.sweep import CellStore

    todo = [t for t in tasks if CellStore(out).get(t.key) is None]
    costs = expected_seconds(todo)
    expected = makespan(costs, args.workers)
    print(f"ablation: {len(changes)} change(s) x {len(datasets)} dataset(s) x {args.seeds} "
          f"seed(s), budget {args.budget}: {len(tasks)} cells, {len(todo)} to run; expected "
          f"wall time {expected / 60:.1f} min on {args.workers} worker(s) (ARCH_COST)",
          flush=True)
    if args.estimate:
        for change in changes:
            own = [t for g in grids if g.change is change for t in g.tasks]
            keys = {t.key for t in own}
            seconds = sum(c for t, c in zip(todo, costs, strict=True) if t.key in keys)
            print(f"  {change.name}: {len(keys)} cells, {seconds / 60:.1f} min of cell time")
        return 0
    with claim_run_dir(out, resume_hint=False):
        grid = run_grid(tasks, out, execution, keep_work=False, labels=labels)
        store = {r["key"]: r for r in grid.records}
        sources = {t.cell.dataset: t.source for t in tasks}
        bars = {name: load_source(source) for name, source in sources.items()}
        rows = [row for change in changes for row in change_rows(
            change, grids, store, bars, alpha=args.alpha, n_boot=args.n_boot)]
        lines = summary(rows)
        seconds = time.perf_counter() - started
        cell_seconds = sum(float(r.get("wall_time_s") or 0.0) for r in grid.records)
        runs = [*previous_runs(out / "ablation.json"), {
            "command": command, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_time_s": seconds, "cells_run": len(grid.ran)}]
        total = sum(float(r["wall_time_s"]) for r in runs)
        failed = sum(r["status"] != "done" for r in grid.records)
        notes = [
            f"Command: `{command}`",
            *([f"{failed} cell(s) failed: their forms are incomplete (cells.csv)."]
              if failed else []),
            f"Wall time of this command: {seconds:.0f} s ({len(grid.ran)} cell(s) run, "
            f"{len(grid.skipped)} from the store; the cells' own wall times add up to "
            f"{cell_seconds:.0f} s) on {os.cpu_count()} CPU(s), {args.workers} worker(s) of "
            f"{args.threads} thread(s)."
            + (f" All {len(runs)} commands on this results store took {total:.0f} s and ran "
               f"{sum(int(r['cells_run']) for r in runs)} cells." if len(runs) > 1 else ""),
            f"Budget `{args.budget}`, mode `{args.mode}`, seeds 0..{args.seeds - 1}, "
            f"{args.folds} fold(s); statistics: the leaderboard's (docs/evaluation.md), DSR "
            "over the rows of a change on a dataset; verdict: paired bootstrap, alpha "
            f"{args.alpha} (scripts/ablation.py).",
        ]
        facts = {"command": command, "wall_time_s": seconds, "cells_run": len(grid.ran),
                 "cells_from_store": len(grid.skipped), "cell_seconds": cell_seconds,
                 "expected_s": expected, "workers": args.workers, "budget": args.budget,
                 "mode": args.mode, "seeds": args.seeds, "folds": args.folds,
                 "datasets": datasets, "alpha": args.alpha, "runs": runs}
        paths = write_outputs(out, rows, lines, notes, facts)
    print(paths["markdown"].read_text(encoding="utf-8"))
    failed = [r for r in grid.records if r["status"] != "done"]
    for record in failed:
        print(f"failed: {labels[record['key']]}: {record['error']}")
    print(f"ablation: done in {seconds:.0f} s; {paths['markdown']}, {paths['csv']}"
          + (f"; {len(failed)} cell(s) failed (--retry-failed runs them again)" if failed
             else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
