"""The sweep leaderboard: cell records -> one row per (dataset, architecture, mode).

Pure functions of the cell records (``<out>/cells/*.json``; format in docs/evaluation.md, "The
leaderboard") and the datasets' bars; nothing here trains. :func:`write_leaderboard_files`
writes ``leaderboard.md``, ``leaderboard.csv``, ``folds.png`` and ``equity.png``.

**Aggregation.** A row gathers the finished cells of one (dataset, arch, mode); baselines are
rows too (mode ``"baseline"``). For each seed, the test parts of its folds are concatenated in
time order (the fold-stitched out-of-sample series; parts may not overlap). Every statistic is
computed on each seed's stitched series with :mod:`tradezoo.backtest.stats` and
:func:`~tradezoo.backtest.metrics.compute_metrics`, then aggregated over seeds: the mean
(``sharpe_mean``, ``sharpe_ci_low``/``sharpe_ci_high``: the mean of the seeds' interval bounds,
``psr``, ``dsr``, ``p_vs_buy_and_hold``, ``total_return_mean``, ``max_drawdown_mean``,
``turnover_mean``, ``oracle_fraction``) or the interquartile mean (``sharpe_iqm``). Sharpe
ratios are annualised; ``psr``/``dsr`` use per-period ones.

**DSR.** ``n_trials`` is the number of rows of the dataset with a defined Sharpe (every
architecture x mode and the baselines: what a reader selects among), ``sr_variance`` the
sample variance (ddof=1) of their per-period mean Sharpe ratios (0 for a single row).

**Break-even and flags** come from :mod:`tradezoo.backtest.diagnostics`, the mechanism of the
single-run reports: the row's targets are replayed through ``simulate`` at scaled costs (the
row's total return is the mean over seeds of each seed's compounded folds); a flag holds for a
row when it holds for every seed's stitched series, and is shown as ``name (k/n seeds)`` when
it holds for some.

**Oracle fraction** (synthetic markets with an oracle, :mod:`tradezoo.data.synthetic`): each
seed's Sharpe over the oracle's Sharpe on the same stitched test parts, averaged over seeds;
``NaN`` where the oracle's Sharpe is 0 (``synthetic-noise``: its oracle never trades) and for
other datasets.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.diagnostics import (
    FLAG_NAMES,
    Replay,
    break_even_cost_bps,
    decided_targets,
    policy_flags,
)
from tradezoo.backtest.formatting import format_metric
from tradezoo.backtest.metrics import compute_metrics
from tradezoo.backtest.stats import (
    deflated_sharpe_ratio,
    iqm,
    probabilistic_sharpe_ratio,
    sharpe_confidence_interval,
    sharpe_difference_pvalue,
)

__all__ = [
    "BASELINE_MODE",
    "COLUMNS",
    "CellSeries",
    "SeedSeries",
    "leaderboard_frame",
    "leaderboard_markdown",
    "parse_cell",
    "stitch",
    "write_leaderboard_files",
]

BASELINE_MODE = "baseline"
"""``cell.mode`` of the baseline cells."""
KEYS: tuple[str, ...] = ("dataset", "arch", "mode")
COLUMNS: tuple[str, ...] = (
    "n_cells", "sharpe_mean", "sharpe_iqm", "sharpe_ci_low", "sharpe_ci_high", "psr", "dsr",
    "p_vs_buy_and_hold", "total_return_mean", "max_drawdown_mean", "turnover_mean",
    "break_even_cost_bps", "flags", "oracle_fraction",
)
"""The statistic columns of a row (after ``dataset``, ``arch``, ``mode``)."""
EXTRA_COLUMNS: tuple[str, ...] = ("n_seeds", "n_folds", "n_failed", "n_trials",
                                  "oracle_sharpe")
"""Bookkeeping columns of ``leaderboard.csv`` after :data:`COLUMNS`."""
REPLAY_TOLERANCE = 1e-9
"""Largest absolute difference between a replayed return and the record's (bars check)."""

BarsSource = Mapping[str, pd.DataFrame] | Callable[[str], pd.DataFrame] | None


# ------------------------------------------------------------------------------ cells


@dataclass
class CellSeries:
    """The test part of one finished cell record, as arrays.

    Attributes:
        key: the record's key; dataset, fold, arch, mode, seed: its cell.
        timestamps: the backtest's bars [n]; returns, gross, benchmark: [n-1] (on
            ``timestamps[1:]``); positions: held exposure [n]; targets: simulate's input [n].
        periods_per_year, costs, fill, rebalance, initial_equity: the run's settings.
        turnover: the cell's annualised turnover (``metrics["turnover"]``), NaN if absent.
    """

    key: str
    dataset: str
    fold: int
    arch: str
    mode: str
    seed: int
    timestamps: pd.DatetimeIndex
    returns: np.ndarray
    gross: np.ndarray
    benchmark: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    periods_per_year: float
    costs: CostModel
    fill: str
    rebalance: str
    initial_equity: float
    turnover: float


def _array(name: str, values: Any, size: int, where: str) -> np.ndarray:
    array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(f"{where}: test.{name} has {array.size} values, expected {size}")
    return array


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def parse_cell(record: Mapping[str, Any]) -> CellSeries:
    """A finished cell record as :class:`CellSeries`.

    Raises:
        ValueError: a missing or inconsistent field (the message names the cell and field).
    """
    where = f"cell {record.get('key', '?')}"
    try:
        cell, test = record["cell"], record["test"]
        timestamps = pd.DatetimeIndex(pd.to_datetime(test["timestamps"], utc=True))
        n = len(timestamps)
        returns = _array("returns", test["returns"], n - 1, where)
        series = CellSeries(
            key=str(record.get("key", "?")), dataset=str(cell["dataset"]),
            fold=int(cell["fold"]), arch=str(cell["arch"]), mode=str(cell["mode"]),
            seed=int(cell["seed"]), timestamps=timestamps, returns=returns,
            gross=_array("gross_returns", test["gross_returns"], n - 1, where),
            benchmark=_array("benchmark_returns", test["benchmark_returns"], n - 1, where),
            positions=_array("positions", test["positions"], n, where),
            targets=_array("targets", test["targets"], n, where),
            periods_per_year=float(record["periods_per_year"]),
            costs=CostModel.from_dict(record["costs"]),
            fill=str(test.get("fill", "next_open")),
            rebalance=str(test.get("rebalance", "on_change")),
            initial_equity=float(test.get("initial_equity", 1.0)),
            turnover=_number((record.get("metrics") or {}).get("turnover")),
        )
    except KeyError as exc:
        raise ValueError(f"{where}: the record has no field {exc.args[0]!r} (cell records: "
                         "docs/evaluation.md, 'The leaderboard')") from None
    if n < 2 or not timestamps.is_monotonic_increasing or not timestamps.is_unique:
        raise ValueError(f"{where}: test.timestamps must be >= 2 increasing bars, got {n}")
    for name in ("returns", "gross", "benchmark", "positions"):
        if not np.isfinite(getattr(series, name)).all():
            raise ValueError(f"{where}: test.{name} must be finite")
    return series


@dataclass
class SeedSeries:
    """One seed's fold-stitched test parts (folds concatenated in time order).

    Attributes:
        cells: its cells, in time order.
        timestamps: the return bars [N] (each fold's ``timestamps[1:]``).
        returns, gross, benchmark, positions: per return bar [N] (positions: held exposure).
        targets: decided targets at the decision bars (:func:`decided_targets`) [N].
        turnover: annualised turnover over the stitched bars (the folds' turnover weighted by
            their bars).
    """

    cells: list[CellSeries]
    timestamps: pd.DatetimeIndex
    returns: np.ndarray
    gross: np.ndarray
    benchmark: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    turnover: float


def stitch(cells: Sequence[CellSeries]) -> SeedSeries:
    """Concatenate one seed's cells (folds) in time order.

    Raises:
        ValueError: test parts that overlap (folds must be disjoint in time).
    """
    ordered = sorted(cells, key=lambda c: c.timestamps[0])
    for before, after in itertools.pairwise(ordered):
        if after.timestamps[1] <= before.timestamps[-1]:
            raise ValueError(f"cells {before.key} (fold {before.fold}) and {after.key} (fold "
                             f"{after.fold}) of {after.dataset}/{after.arch}/{after.mode} seed "
                             f"{after.seed} have overlapping test parts; folds must be disjoint")
    sizes = np.array([c.returns.size for c in ordered], dtype=np.float64)
    turnovers = np.array([c.turnover for c in ordered])
    return SeedSeries(
        cells=list(ordered),
        timestamps=pd.DatetimeIndex(np.concatenate([c.timestamps[1:] for c in ordered])),
        returns=np.concatenate([c.returns for c in ordered]),
        gross=np.concatenate([c.gross for c in ordered]),
        benchmark=np.concatenate([c.benchmark for c in ordered]),
        positions=np.concatenate([c.positions[1:] for c in ordered]),
        targets=np.concatenate([decided_targets(c.targets) for c in ordered]),
        turnover=float(np.sum(turnovers * sizes) / sizes.sum()),
    )


# ------------------------------------------------------------------------ statistics


def _sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe (:func:`compute_metrics`); 0 for a series of zeros (no return, no
    risk: a policy that never trades, as ``tradezoo.agents.calibration.oracle_sharpe`` reports
    it)."""
    if not (returns != 0.0).any():
        return 0.0
    return float(compute_metrics(returns, periods_per_year=periods_per_year).sharpe)


def _defined(returns: np.ndarray) -> bool:
    """A Sharpe ratio is defined: at least 2 returns, not all equal."""
    return returns.size >= 2 and bool(np.ptp(returns) > 0.0)


def _seed_statistics(seed: SeedSeries, periods_per_year: float, n_boot: int,
                     ) -> dict[str, Any]:
    """Statistics of one seed's stitched series (all from stats / compute_metrics)."""
    metrics = compute_metrics(seed.returns, periods_per_year=periods_per_year)
    out: dict[str, Any] = {
        "sharpe": _sharpe(seed.returns, periods_per_year),
        "total_return": float(metrics.total_return),
        "max_drawdown": float(metrics.max_drawdown), "turnover": seed.turnover,
        "psr": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
        "flags": policy_flags(targets=seed.targets, positions=seed.positions,
                              returns=seed.returns, gross=seed.gross,
                              benchmark_returns=seed.benchmark),
    }
    if _defined(seed.returns):
        out["psr"] = _undefined_as_nan(probabilistic_sharpe_ratio, seed.returns)
        out["ci_low"], out["ci_high"] = _undefined_as_nan(
            sharpe_confidence_interval, seed.returns, n_boot=n_boot,
            periods_per_year=periods_per_year, pair=True)
        if _defined(seed.benchmark):
            out["p"] = _undefined_as_nan(sharpe_difference_pvalue, seed.returns, seed.benchmark,
                                         n_boot=n_boot)
    return out


def _undefined_as_nan(statistic: Callable[..., Any], *args: Any, pair: bool = False,
                      **kwargs: Any) -> Any:
    """``statistic(*args, **kwargs)``, or NaN (a NaN pair) where stats refuses the series as
    degenerate (a ValueError: e.g. a two-valued series whose Sharpe estimate has no variance,
    or bootstrap resamples that are all constant)."""
    try:
        return statistic(*args, **kwargs)
    except ValueError:
        return (math.nan, math.nan) if pair else math.nan


def _mean(values: Sequence[float]) -> float:
    """The mean over seeds; NaN when any seed's value is undefined (never a subset's mean)."""
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    return float(np.mean(values))


def _flags_text(per_seed: Sequence[Sequence[str]]) -> str:
    n = len(per_seed)
    parts = []
    for name in FLAG_NAMES:
        k = sum(name in flags for flags in per_seed)
        if k == n:
            parts.append(name)
        elif k:
            parts.append(f"{name} ({k}/{n} seeds)")
    return ", ".join(parts)


def _bars_loader(bars: BarsSource) -> Callable[[str], pd.DataFrame]:
    cache: dict[str, pd.DataFrame] = {}

    def load(dataset: str) -> pd.DataFrame:
        if dataset not in cache:
            if bars is None:
                from tradezoo.data.prepare import load_source

                cache[dataset] = load_source(dataset, what=f"dataset {dataset!r}")
            elif isinstance(bars, Mapping):
                if dataset not in bars:
                    raise ValueError(f"bars: no bars for dataset {dataset!r} (given: "
                                     f"{sorted(bars)})")
                cache[dataset] = bars[dataset]
            else:
                cache[dataset] = bars(dataset)
        return cache[dataset]

    return load


def _span(full: pd.DataFrame, cell: CellSeries) -> pd.DataFrame:
    """The bars of ``cell``'s backtest, cut from the dataset's bars."""
    where = full.index.get_indexer(cell.timestamps)
    first = int(where[0])
    if (where < 0).any() or not np.array_equal(where, np.arange(first, first + where.size)):
        raise ValueError(f"cell {cell.key}: its test timestamps are not consecutive bars of "
                         f"dataset {cell.dataset!r}; the bars differ from the ones it ran on")
    return full.iloc[first : first + where.size]


def _replay(full: pd.DataFrame, cell: CellSeries, verify: bool) -> Replay:
    replay = Replay(bars=_span(full, cell), targets=cell.targets, costs=cell.costs,
                    fill=cell.fill, rebalance=cell.rebalance,
                    initial_equity=cell.initial_equity, periods_per_year=cell.periods_per_year)
    if verify:
        replayed = replay.returns()
        gap = float(np.max(np.abs(replayed - cell.returns)))
        if not gap <= REPLAY_TOLERANCE:
            raise ValueError(f"cell {cell.key} ({cell.dataset}/{cell.arch}/{cell.mode} fold "
                             f"{cell.fold} seed {cell.seed}): replaying its targets on the "
                             f"dataset's bars does not reproduce its returns (largest "
                             f"difference {gap:.3g}); the bars differ from the ones it ran on")
    return replay


def _oracle_sharpe(dataset: str, full: pd.DataFrame, cells: Sequence[CellSeries],
                   periods_per_year: float) -> float:
    """The oracle's annualised Sharpe on the stitched test parts of ``cells`` (0 when it
    earns exactly 0 on every bar); NaN for a dataset without an oracle."""
    from tradezoo.backtest.simulation import simulate
    from tradezoo.data.synthetic import MARKETS, oracle_positions

    if dataset not in MARKETS:
        return math.nan
    targets = oracle_positions(dataset)
    parts = []
    for cell in sorted(cells, key=lambda c: c.timestamps[0]):
        span = _span(full, cell)
        parts.append(simulate(span, targets.reindex(span.index), costs=cell.costs,
                              fill=cell.fill,  # type: ignore[arg-type]
                              periods_per_year=periods_per_year).returns.to_numpy())
    return _sharpe(np.concatenate(parts), periods_per_year)


def leaderboard_frame(
    records: Sequence[Mapping[str, Any]],
    *,
    bars: BarsSource = None,
    n_boot: int = 2000,
    verify_replay: bool = True,
) -> pd.DataFrame:
    """The leaderboard (module docstring): one row per (dataset, arch, mode).

    Args:
        records: cell records (dicts); ``status != "done"`` ones count in ``n_failed`` only.
        bars: the datasets' full bars: a mapping dataset -> bars frame, a function of the
            dataset name, or ``None`` (:func:`tradezoo.data.prepare.load_source`).
        n_boot: resamples of the bootstrap interval and p-value (>= 100).
        verify_replay: replay each cell at its own costs first and require its recorded
            returns (to :data:`REPLAY_TOLERANCE`), so a break-even is never computed on other
            bars than the cell ran on.

    Returns:
        Columns ``dataset``, ``arch``, ``mode``, :data:`COLUMNS`, :data:`EXTRA_COLUMNS`;
        datasets in order of first appearance, rows by ``sharpe_mean`` descending (NaN last).

    Raises:
        ValueError: no finished cell, a malformed record, overlapping folds, or bars that do
            not reproduce a cell.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100 (bootstrap resamples), got "
                         f"{n_boot!r}")
    load = _bars_loader(bars)
    done = [parse_cell(r) for r in records if r.get("status", "done") == "done"]
    if not done:
        raise ValueError("leaderboard_frame: no finished cell to aggregate")
    failed: dict[tuple[str, str, str], int] = {}
    for record in records:
        if record.get("status", "done") != "done":
            cell = record.get("cell") or {}
            key = (str(cell.get("dataset")), str(cell.get("arch")), str(cell.get("mode")))
            failed[key] = failed.get(key, 0) + 1
    groups: dict[tuple[str, str, str], dict[int, list[CellSeries]]] = {}
    for cell in done:
        groups.setdefault((cell.dataset, cell.arch, cell.mode), {}).setdefault(
            cell.seed, []).append(cell)
    oracle_cache: dict[tuple[str, tuple[pd.Timestamp, ...]], float] = {}
    rows: list[dict[str, Any]] = []
    per_seed_returns: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for (dataset, arch, mode), by_seed in groups.items():
        full = load(dataset)
        seeds = [stitch(by_seed[s]) for s in sorted(by_seed)]
        periods = {c.periods_per_year for s in seeds for c in s.cells}
        if len(periods) != 1:
            raise ValueError(f"{dataset}/{arch}/{mode}: cells disagree on periods_per_year "
                             f"({sorted(periods)})")
        ppy = periods.pop()
        stats = [_seed_statistics(s, ppy, n_boot) for s in seeds]
        replays = [[_replay(full, c, verify_replay) for c in s.cells] for s in seeds]
        fractions, oracles = [], []
        for seed, stat in zip(seeds, stats, strict=True):
            spans = tuple(c.timestamps[0] for c in seed.cells)
            if (dataset, spans) not in oracle_cache:
                oracle_cache[dataset, spans] = _oracle_sharpe(dataset, full, seed.cells, ppy)
            oracle = oracle_cache[dataset, spans]
            oracles.append(oracle)
            fractions.append(stat["sharpe"] / oracle if oracle and math.isfinite(oracle)
                             else math.nan)
        sharpes = [s["sharpe"] for s in stats]

        rows.append({
            "dataset": dataset, "arch": arch, "mode": mode,
            "n_cells": sum(len(s.cells) for s in seeds),
            "sharpe_mean": _mean(sharpes),
            "sharpe_iqm": iqm(sharpes) if all(map(math.isfinite, sharpes)) else math.nan,
            "sharpe_ci_low": _mean([s["ci_low"] for s in stats]),
            "sharpe_ci_high": _mean([s["ci_high"] for s in stats]),
            "psr": _mean([s["psr"] for s in stats]),
            "dsr": math.nan,
            "p_vs_buy_and_hold": _mean([s["p"] for s in stats]),
            "total_return_mean": _mean([s["total_return"] for s in stats]),
            "max_drawdown_mean": _mean([s["max_drawdown"] for s in stats]),
            "turnover_mean": _mean([s["turnover"] for s in stats]),
            "break_even_cost_bps": break_even_cost_bps(replays),
            "flags": _flags_text([s["flags"] for s in stats]),
            "oracle_fraction": _mean(fractions),
            "n_seeds": len(seeds),
            "n_folds": len({c.fold for s in seeds for c in s.cells}),
            "n_failed": failed.get((dataset, arch, mode), 0),
            "n_trials": 0,
            "oracle_sharpe": _mean(oracles),
            "_ppy": ppy,
        })
        per_seed_returns[dataset, arch, mode] = [s.returns for s in seeds]
    _deflate(rows, per_seed_returns)
    frame = pd.DataFrame(rows).drop(columns="_ppy")
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["dataset"]))}
    frame["_order"] = frame["dataset"].map(order)
    frame["_sharpe"] = frame["sharpe_mean"].fillna(-math.inf)
    frame = frame.sort_values(["_order", "_sharpe"], ascending=[True, False], kind="stable")
    frame = frame.drop(columns=["_order", "_sharpe"]).reset_index(drop=True)
    return frame[[*KEYS, *COLUMNS, *EXTRA_COLUMNS]]


def _deflate(rows: list[dict[str, Any]],
             per_seed_returns: Mapping[tuple[str, str, str], list[np.ndarray]]) -> None:
    """Fill ``dsr`` and ``n_trials`` per dataset (module docstring)."""
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        members = [r for r in rows if r["dataset"] == dataset and math.isfinite(r["sharpe_mean"])]
        per_period = np.array([r["sharpe_mean"] / math.sqrt(r["_ppy"]) for r in members])
        n_trials = len(members)
        variance = float(np.var(per_period, ddof=1)) if n_trials > 1 else 0.0
        for row in (r for r in rows if r["dataset"] == dataset):
            row["n_trials"] = n_trials
            values = [deflated_sharpe_ratio(returns, max(n_trials, 1), variance)
                      if _defined(returns) else math.nan
                      for returns in per_seed_returns[dataset, row["arch"], row["mode"]]]
            row["dsr"] = _mean(values)


# ---------------------------------------------------------------------------- writers

def _cell_text(column: str, value: Any) -> str:
    if column == "flags":
        return str(value) if value else ""
    return format_metric(column, value)


def leaderboard_markdown(frame: pd.DataFrame, *, title: str = "Leaderboard",
                         notes: Sequence[str] = ()) -> str:
    """The leaderboard as Markdown: a title, notes, and one table per dataset (ranked by
    ``sharpe_mean``), each preceded by its ``n_trials``."""
    lines = [f"# {title}", ""]
    lines.extend(notes)
    if notes:
        lines.append("")
    for dataset, part in frame.groupby("dataset", sort=False):
        columns = [c for c in COLUMNS
                   if c != "oracle_fraction" or part["oracle_fraction"].notna().any()]
        oracle = part["oracle_sharpe"].dropna()
        lines += [f"## {dataset}", "",
                  f"dsr deflates by n_trials = {int(part['n_trials'].iloc[0])} rows; "
                  f"baselines (mode `{BASELINE_MODE}`) are rows."
                  + (f" The oracle's Sharpe on these test parts: {oracle.iloc[0]:.3f}."
                     if len(oracle) else ""), ""]
        header = ["#", "arch", "mode", *columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---:|---|---|" + "|".join("---" if c == "flags" else "---:"
                                                  for c in columns) + "|")
        for rank, row in enumerate(part.to_dict("records"), start=1):
            arch = f"**{row['arch']}**" if row["mode"] == BASELINE_MODE else str(row["arch"])
            cells = [str(rank), arch, str(row["mode"])]
            cells += [_cell_text(c, row[c]) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _heatmap_png(records_by_row: Mapping[tuple[str, str, str], list[CellSeries]],
                 datasets: Sequence[str]) -> bytes:
    """folds.png: mean-over-seeds Sharpe of each (arch, mode) x fold, one panel per dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for dataset in datasets:
        rows = [key for key in records_by_row if key[0] == dataset]
        folds = sorted({c.fold for key in rows for c in records_by_row[key]})
        matrix = np.full((len(rows), len(folds)), np.nan)
        for i, key in enumerate(rows):
            for j, fold in enumerate(folds):
                values = [_sharpe(c.returns, c.periods_per_year)
                          for c in records_by_row[key] if c.fold == fold]
                matrix[i, j] = _mean(values)
        panels.append((dataset, [f"{a} ({m})" for _d, a, m in rows], folds, matrix))
    height = sum(max(1.5, 0.3 * len(p[1]) + 1.0) for p in panels)
    fig = Figure(figsize=(8.0, height))
    FigureCanvasAgg(fig)
    ratios = [max(1.5, 0.3 * len(p[1]) + 1.0) for p in panels]
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": ratios})
    for ax, (dataset, labels, folds, matrix) in zip(axes[:, 0], panels, strict=True):
        finite = matrix[np.isfinite(matrix)]
        bound = float(np.max(np.abs(finite))) if finite.size else 1.0
        image = ax.imshow(matrix, cmap="RdYlGn", vmin=-bound or -1.0, vmax=bound or 1.0,
                          aspect="auto")
        ax.set_xticks(range(len(folds)), [str(f) for f in folds])
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("fold")
        ax.set_title(f"{dataset}: annualised Sharpe per fold (mean over seeds)", fontsize=9)
        if matrix.size <= 400:
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, "n/a" if not math.isfinite(value) else f"{value:.2f}",
                        ha="center", va="center", fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


_BASELINE_STYLES: dict[str, Any] = {
    "buy_and_hold": "-", "momentum": "--", "sma_cross": "-.", "flat": (0, (1, 3))}
"""Line style of each baseline in ``equity.png`` (all black)."""


def _equity_png(seeds_by_row: Mapping[tuple[str, str, str], list[SeedSeries]],
                datasets: Sequence[str]) -> bytes:
    """equity.png: stitched out-of-sample equity per row, mean over seeds with the seeds'
    range as a band; one panel per dataset."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.5 * len(datasets)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(datasets), 1, squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        rows = [key for key in seeds_by_row if key[0] == dataset]
        archs = list(dict.fromkeys(a for _d, a, m in rows if m != BASELINE_MODE))
        palette = matplotlib.colormaps["tab10" if len(archs) <= 10 else "tab20"]
        for key in rows:
            _d, arch, mode = key
            seeds = seeds_by_row[key]
            if len({s.returns.size for s in seeds}) != 1:
                continue  # seeds covering different folds: no common band
            curves = np.cumprod(1.0 + np.vstack([s.returns for s in seeds]), axis=1)
            x = seeds[0].timestamps.tz_convert(None)
            if mode == BASELINE_MODE:
                ax.plot(x, curves.mean(axis=0), color="black", linewidth=1.0,
                        linestyle=_BASELINE_STYLES.get(arch, ":"), label=arch)
                continue
            color = palette(archs.index(arch) % palette.N)
            style = "-" if mode == "supervised" else "--" if mode == "ppo" else "-."
            ax.plot(x, curves.mean(axis=0), style, color=color, linewidth=1.1,
                    label=f"{arch} ({mode}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
            if len(seeds) > 1:
                ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=color,
                                alpha=0.15, linewidth=0)
        ax.set_title(f"{dataset}: fold-stitched out-of-sample equity (band: seed range)",
                     fontsize=9)
        ax.set_ylabel("equity (start = 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_leaderboard_files(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    bars: BarsSource = None,
    title: str = "Leaderboard",
    notes: Sequence[str] = (),
    n_boot: int = 2000,
) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``folds.png`` and ``equity.png``
    (each atomically) for the cell ``records``.

    Args:
        records, bars, n_boot: as :func:`leaderboard_frame`.
        out_dir: the folder (created if missing).
        title, notes: the Markdown's title and the lines under it.

    Returns:
        ``{"markdown", "csv", "folds", "equity"}`` -> path.
    """
    from tradezoo.agents.rundir import write_bytes_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = leaderboard_frame(records, bars=bars, n_boot=n_boot)
    done = [parse_cell(r) for r in records if r.get("status", "done") == "done"]
    cells_by_row: dict[tuple[str, str, str], list[CellSeries]] = {}
    for cell in done:
        cells_by_row.setdefault((cell.dataset, cell.arch, cell.mode), []).append(cell)
    seeds_by_row = {
        key: [stitch([c for c in cells if c.seed == s])
              for s in sorted({c.seed for c in cells})]
        for key, cells in cells_by_row.items()
    }
    datasets = list(dict.fromkeys(frame["dataset"]))
    failed = [r for r in records if r.get("status", "done") != "done"]
    lines = list(notes)
    if failed:
        lines.append(f"{len(failed)} failed cell(s), not aggregated (n_failed per row in "
                     "leaderboard.csv).")
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv",
             "folds": out / "folds.png", "equity": out / "equity.png"}
    write_bytes_atomic(paths["markdown"],
                       leaderboard_markdown(frame, title=title, notes=lines).encode("utf-8"))
    write_bytes_atomic(paths["csv"], frame.to_csv(index=False).encode("utf-8"))
    write_bytes_atomic(paths["folds"], _heatmap_png(cells_by_row, datasets))
    write_bytes_atomic(paths["equity"], _equity_png(seeds_by_row, datasets))
    return paths
