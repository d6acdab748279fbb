"""The sweep behind ``tradezoo compare``: a grid of cells, run anywhere, resumable.

A *cell* is one (dataset, fold, architecture, mode, seed). The grid is every combination of
``--data`` (comma-separated bundled names, calibration markets and bars files), ``--folds``
walk-forward folds, ``--archs``, the modes of ``--mode`` (``supervised``, ``ppo``, or
``both``: ``supervised`` and ``ppo_warm``) and ``--seeds``.

Cell key. :func:`cell_key` is the first 24 hex digits of the SHA-256 of the canonical JSON of
``{cell, config, data_hash, code_version}``: ``config`` is the cell's resolved training config
(window, features, labels, costs, arch_config, the trainer sections its mode uses, the split
scheme), ``data_hash`` the SHA-256 of the validated bars (:func:`data_hash`) and
``code_version`` ``tradezoo.__version__`` plus the SHA-256 of every tradezoo source file
(:func:`code_version`). A changed config, dataset or code is therefore a new cell, never a
silent reuse. Execution settings (backend, workers, threads, device) are not in the key.

Folds. ``--folds 1`` is the split of ``split_fractions`` (``compare``'s behaviour before
folds). ``--folds K`` (K >= 2) uses :class:`~tradezoo.data.prepare.WalkForward` over the feature
rows ``T`` of each dataset (:func:`walk_forward_scheme`): the K test windows of ``floor(T *
WALK_FORWARD_SPAN / K)`` rows tile the end of the data, each fold validates on as many rows
before its test window, and trains on every row before that (``expanding``) or on the rows
fold 0 trains on, moved forward with its test window (``rolling``), so fold 0 is the same in
both modes. Parts are embargoed by ``window + horizon`` rows and each fold's scaler is fitted
on its own train part only.

Where cells run (:func:`run_grid`): ``serial`` (in the driver's process), ``pool`` (``N``
spawned local processes) or ``ray`` (Ray tasks, :mod:`ray`, an optional extra). Every cell
sets ``torch.set_num_threads(threads)`` and ``torch.set_flush_denormal(True)`` before it trains,
so its result is bit-identical on CPU wherever it ran. A cell is a pure function of its task
(:func:`run_cell`: task -> record dict); a bars file travels with the task (through Ray's
object store on Ray), results travel back, and only the driver writes the store. A cell that
raises is recorded as ``failed`` with its error and traceback and the grid goes on; on Ray a
worker that dies is retried (``max_retries``), an exception is not. Cells are submitted
longest-expected first (:data:`ARCH_COST`), so two workers are not left waiting on one slow
cell at the end.

Results store (:class:`CellStore`): ``<out>/cells/<key>.json``, one record per finished cell
(docs/scaling.md and the record contract), each written atomically (temporary file, fsync,
rename) by the driver as soon as the cell returns. A rerun of the same command skips the done
cells ("N cells done, M to run"); failed cells are kept and skipped unless ``retry_failed``.
A SIGKILL of the driver loses at most the cells in flight. ``<out>/cells.csv`` has one row per
cell of the grid (its coordinates, status and every metric).

Local work directories. Serial and pool cells train in ``<out>/runs/<dataset>/fold<k>/<arch>/
seed<s>/<mode>/`` (checkpoints and TensorBoard logs stay there); Ray cells train in a
temporary directory on the worker, deleted when the cell returns (workers need no shared
filesystem). A ``ppo_warm`` cell trains its own supervised model first (the same
deterministic model as the ``supervised`` cell of its coordinates), so cells never wait on
each other.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradezoo.errors import ConfigError

if TYPE_CHECKING:
    from tradezoo.agents.config import TrainingOptions

__all__ = [
    "ARCH_COST",
    "BASELINE_MODE",
    "CELL_MODES",
    "RECORD_FORMAT",
    "WALK_FORWARD_SPAN",
    "Cell",
    "CellStore",
    "CellTask",
    "ExecutionOptions",
    "GridResult",
    "cell_key",
    "code_version",
    "data_hash",
    "expand_grid",
    "modes_of",
    "run_cell",
    "run_grid",
    "walk_forward_scheme",
]

RECORD_FORMAT = "tradezoo.cell"
RECORD_FORMAT_VERSION = 1
CELL_MODES: tuple[str, ...] = ("supervised", "ppo", "ppo_warm")
BASELINE_MODE = "baseline"
WALK_FORWARD_SPAN = 0.3
"""Fraction of the feature rows the test windows of ``--folds K >= 2`` tile (twice the
default test fraction, so each of 2 folds is as long as the single default test part)."""
KEY_HEX_DIGITS = 24

ARCH_COST: dict[str, tuple[float, float]] = {
    # (supervised, PPO) training seconds per cell at --budget tiny on BTCUSDT 1h, 2-core CPU
    # shared with other work: the docs/results.md sweep; the PPO seconds of ltc, mambats,
    # transformer, timeparticle, lstm and mlp (not trained with PPO there) are from an earlier
    # 3-seed run (ltc then on its torch backend). timeparticle's, with its messages in the
    # recurrence, are from one --mode both cell on the idle CPU (cfc's in the same run: 4.2 and
    # 18.6, so the shared-CPU figures are about 1.5x an idle one). Only their order matters:
    # the longest cells are submitted first.
    "mambats": (198.2, 234.0), "mamba": (52.6, 313.3), "ltc": (34.5, 431.9),
    "timeparticle": (18.3, 53.7), "msa": (13.4, 45.6), "transformer": (10.3, 33.1),
    "cfc": (6.8, 26.9), "gru": (4.4, 22.8), "lstm": (3.2, 14.6), "mlp": (0.7, 6.4),
}
"""Expected relative cost of an architecture's cells; an architecture not listed counts as
the most expensive one (an unknown cost is scheduled early)."""


# ------------------------------------------------------------------------------ cells


@dataclass(frozen=True, order=True)
class Cell:
    """One (dataset, fold, architecture, mode, seed) of the grid.

    Attributes:
        dataset: the dataset's name (bundled name, calibration market, or the file's name).
        fold: walk-forward fold, 0-based (0 with ``--folds 1``).
        arch: architecture (registry name) or baseline name.
        mode: one of :data:`CELL_MODES` or :data:`BASELINE_MODE`.
        seed: the training seed.
    """

    dataset: str
    fold: int
    arch: str
    mode: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """``dataset fold k arch mode seed s`` for progress lines."""
        return f"{self.dataset} fold {self.fold} {self.arch} {self.mode} seed {self.seed}"

    @property
    def path(self) -> Path:
        """``<dataset>/fold<k>/<arch>/seed<s>/<mode>``: the cell's local work directory under
        ``<out>/runs``."""
        return Path(_safe(self.dataset)) / f"fold{self.fold}" / self.arch / f"seed{self.seed}" / (
            self.mode)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "data"


def expected_cost(cell: Cell) -> float:
    """Expected relative cost of ``cell`` (:data:`ARCH_COST`; baselines cost nothing)."""
    if cell.mode == BASELINE_MODE:
        return 0.0
    worst = max(ARCH_COST.values())
    supervised, ppo = ARCH_COST.get(cell.arch, worst)
    return {"supervised": supervised, "ppo": ppo, "ppo_warm": supervised + ppo}[cell.mode]


def modes_of(mode: str) -> tuple[str, ...]:
    """``compare --mode`` -> cell modes (``both``: supervised and the warm-started PPO)."""
    table = {"supervised": ("supervised",), "ppo": ("ppo",), "both": ("supervised", "ppo_warm")}
    if mode not in table:
        raise ConfigError(f"option 'mode' must be supervised, ppo or both, got {mode!r}")
    return table[mode]


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_key(cell: Cell, config: Mapping[str, Any], data_digest: str, code: str) -> str:
    """Stable key of a cell (module docstring): hex SHA-256 prefix of the canonical JSON of
    ``{cell, config, data_hash, code_version}``."""
    text = _canonical({"cell": cell.to_dict(), "config": config, "data_hash": data_digest,
                       "code_version": code})
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_HEX_DIGITS]


def data_hash(bars: pd.DataFrame) -> str:
    """SHA-256 of validated bars' content: the column names, the open times (int64 ns UTC)
    and the values (float64, C order)."""
    digest = hashlib.sha256()
    digest.update(_canonical([str(c) for c in bars.columns]).encode())
    index = pd.DatetimeIndex(bars.index)
    digest.update(np.ascontiguousarray(index.as_unit("ns").asi8).tobytes())
    digest.update(np.ascontiguousarray(bars.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """``<tradezoo.__version__>+<first 16 hex digits of the SHA-256 of the tradezoo package's
    source files>`` (``*.py``, ``*.c``, ``*.h``, by sorted relative path: name and content),
    computed once per process (the code the process runs is the code it started with)."""
    import tradezoo

    root = Path(tradezoo.__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".c", ".h") and p.is_file()
                   and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{tradezoo.__version__}+{digest.hexdigest()[:16]}"


# ------------------------------------------------------------------------------ folds


def walk_forward_scheme(n_rows: int, folds: int, fold_mode: str, window: int,
                        horizon: int) -> Any:
    """The :class:`~tradezoo.data.prepare.WalkForward` of ``--folds K --fold-mode`` over
    ``n_rows`` feature rows (module docstring).

    Raises:
        ConfigError: ``K < 2``, an unknown mode, or too few rows for the folds.
    """
    from tradezoo.data.prepare import WalkForward

    if fold_mode not in ("rolling", "expanding"):
        raise ConfigError(f"option 'fold_mode' must be rolling or expanding, got {fold_mode!r}")
    if folds < 2:
        raise ConfigError(f"walk-forward needs folds >= 2, got {folds}")
    size = int(n_rows * WALK_FORWARD_SPAN) // folds
    embargo = window + horizon
    train = n_rows - folds * size - size - 2 * embargo  # fold 0's expanding train part
    if size < 1 or train < max(window, 2):
        raise ConfigError(
            f"--folds {folds}: {n_rows} feature rows are too few (each fold's test and "
            f"validation windows would have {size} rows and fold 0 would train on {train}); "
            "use fewer folds or more data"
        )
    return WalkForward(n_folds=folds, test_size=size, val_size=size,
                       train_size=train if fold_mode == "rolling" else None)


# ------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (picklable, no shared filesystem).

    Attributes:
        cell, key, config, data_hash, code_version: as in the record.
        source: the bundled dataset name, or the validated bars frame of a file.
        work_dir: where the cell trains; ``None``: a temporary directory deleted afterwards.
        threads: torch intra-op threads the cell runs with.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    cell: Cell
    key: str
    config: dict[str, Any]
    data_hash: str
    code_version: str
    source: str | pd.DataFrame = field(repr=False)
    work_dir: str | None = None
    threads: int = 1
    device: str = "cpu"


def _cell_config(options: TrainingOptions, mode: str, split: Mapping[str, Any]) -> dict[str,
                                                                                          Any]:
    """The resolved, plain config of a cell of ``mode`` (the key's ``config``)."""
    saved = options.to_dict()
    config: dict[str, Any] = {k: saved[k] for k in ("window", "costs", "arch_config",
                                                    "features", "labels")}
    config["split"] = dict(split)
    if mode == BASELINE_MODE:
        return json.loads(_canonical(config))
    if mode in ("supervised", "ppo_warm"):
        config["supervised"] = {k: v for k, v in saved["supervised"].items()
                                if k not in ("progress", "tensorboard")}
    if mode in ("ppo", "ppo_warm"):
        config["ppo"] = {k: v for k, v in saved["ppo"].items() if k not in ("progress",)}
    return json.loads(_canonical(config))


def _split_config(options: TrainingOptions, folds: int, fold_mode: str,
                  n_rows: int) -> dict[str, Any]:
    if folds == 1:
        return {"fractions": list(options.split_fractions)}
    horizon = int(dict(options.labels).get("horizon", 4))
    scheme = walk_forward_scheme(n_rows, folds, fold_mode, options.window, horizon)
    return {"walk_forward": asdict(scheme), "fold_mode": fold_mode}


@dataclass(frozen=True)
class _Dataset:
    name: str
    source: str | pd.DataFrame
    digest: str
    n_rows: int


def _load_datasets(options: TrainingOptions, data: Sequence[str]) -> list[_Dataset]:
    """Load and validate each dataset once on the driver (bundled names travel as names,
    files as their validated bars)."""
    from tradezoo.data.datasets import DATASETS
    from tradezoo.data.prepare import dataset_name, load_source, prepare_loaded

    out: list[_Dataset] = []
    for i, item in enumerate(data):
        bars = load_source(item, f"data[{i}]")
        name = dataset_name(item, bars, Path(item).stem)
        prepared = prepare_loaded(bars, name, window=options.window,
                                  feature_spec=dict(options.features) or None)
        n_rows = len(prepared.features)
        source: str | pd.DataFrame = item if item in DATASETS else bars
        out.append(_Dataset(name=name, source=source, digest=data_hash(bars), n_rows=n_rows))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"option 'data': two datasets share a name ({names}); rename a file")
    return out


def expand_grid(options: TrainingOptions, *, data: Sequence[str], folds: int = 1,
                fold_mode: str = "expanding", baselines: bool = True) -> list[CellTask]:
    """Every cell of the grid as a task (work directories, threads and device unset), in
    grid order: dataset, fold, architecture, mode, seed; then, with ``baselines``, the rule
    baselines of :mod:`tradezoo.backtest.baselines` of each (dataset, fold), mode
    :data:`BASELINE_MODE`, seed 0, on the same test part.

    Raises:
        ConfigError: a bad fold count or mode, too few rows for the folds, two datasets with
            one name.
        DataError: bars that fail validation.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ConfigError(f"option 'folds' must be an integer >= 1, got {folds!r}")
    code = code_version()
    modes = modes_of(options.mode)
    seeds = [options.seed + k for k in range(options.seeds)]
    tasks: list[CellTask] = []
    for dataset in _load_datasets(options, data):
        split = _split_config(options, folds, fold_mode, dataset.n_rows)
        configs = {mode: _cell_config(options, mode, split) for mode in modes}
        for fold in range(folds):
            for arch in options.archs:
                for mode in modes:
                    if mode != "supervised" and arch not in options.ppo_archs:
                        continue
                    for seed in seeds:
                        cell = Cell(dataset.name, fold, arch, mode, seed)
                        key = cell_key(cell, configs[mode], dataset.digest, code)
                        tasks.append(CellTask(cell=cell, key=key, config=configs[mode],
                                              data_hash=dataset.digest, code_version=code,
                                              source=dataset.source))
        if not baselines:
            continue
        from tradezoo.backtest.baselines import BASELINES

        config = _cell_config(options, BASELINE_MODE, split)
        for fold in range(folds):
            for name in BASELINES:
                cell = Cell(dataset.name, fold, name, BASELINE_MODE, 0)
                tasks.append(CellTask(cell=cell, key=cell_key(cell, config, dataset.digest, code),
                                      config=config, data_hash=dataset.digest,
                                      code_version=code, source=dataset.source))
    return tasks


# ------------------------------------------------------------------------------ one cell


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))
    torch.set_flush_denormal(True)


def _prepare(task: CellTask) -> Any:
    from tradezoo.agents.config import cost_model
    from tradezoo.agents.data import prepare_data
    from tradezoo.data.prepare import WalkForward

    config, split = task.config, task.config["split"]
    scheme = WalkForward(**split["walk_forward"]) if "walk_forward" in split else None
    return prepare_data(
        task.source, window=int(config["window"]),
        feature_spec=dict(config["features"]) or None,
        label_spec=dict(config["labels"]) or None,
        split_fractions=tuple(split.get("fractions", (0.7, 0.15, 0.15))),
        costs=cost_model(config["costs"]),
        walk_forward=scheme, fold=task.cell.fold if scheme is not None else None,
    )


REPORT_METRICS: tuple[str, ...] = (
    "accuracy", "macro_f1",  # direction and multi_horizon (the horizons' means)
    "mae", "rmse", "qlike", "naive_mae", "naive_rmse", "naive_qlike",  # volatility
)
"""The headline figures of a supervised cell's task report that its record keeps beside the
backtest's metrics (docs/tasks.md): those the task's report has."""


def _metrics(backtest: Any, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cell's metrics: the backtest's, and the headline figures of its task report."""
    from tradezoo.backtest.formatting import json_safe

    metrics = dict(json_safe(backtest.metrics.to_dict()))
    if report is not None:
        metrics.update({key: report[key] for key in REPORT_METRICS if key in report})
    return metrics


def _train_and_grade(task: CellTask, work: Path) -> dict[str, Any]:
    """Train the cell's model in ``work`` and grade it on its test part."""
    from tradezoo.agents.devices import resolve_device
    from tradezoo.agents.ppo import PPOConfig, evaluate_ppo, load_ppo_policy, train_ppo
    from tradezoo.agents.supervised import SupervisedConfig, evaluate_supervised, train_supervised

    cell, config = task.cell, task.config
    device = str(resolve_device(task.device))
    data = _prepare(task)
    out: dict[str, Any] = {"device": device, "costs": data.costs.to_dict()}
    if cell.mode == BASELINE_MODE:
        return {**out, **_baseline(cell.arch, data)}
    arch_config = dict(config["arch_config"])
    checkpoint = None
    if cell.mode in ("supervised", "ppo_warm"):
        sup_cfg = SupervisedConfig.from_dict({**config["supervised"], "progress": False,
                                              "tensorboard": task.work_dir is not None})
        result = train_supervised(data, cell.arch, config=sup_cfg, arch_config=arch_config,
                                  out_dir=work / "supervised", seed=cell.seed, device=device,
                                  verbose=False)
        checkpoint = result.best_checkpoint
        if cell.mode == "supervised":
            evaluation = evaluate_supervised(result.model, data, "test", device=device)
            out.update(backtest=evaluation.backtest, targets=evaluation.positions,
                       report=evaluation.report.to_dict(),
                       train_seconds=result.train_seconds, n_parameters=result.n_parameters)
    if cell.mode in ("ppo", "ppo_warm"):
        ppo_cfg = PPOConfig.from_dict({**config["ppo"], "arch_config": (
            {} if checkpoint is not None else arch_config)})
        ppo = train_ppo(data, cell.arch, config=ppo_cfg, out_dir=work / "ppo", seed=cell.seed,
                        device=device, init_from=checkpoint, progress=False, verbose=False)
        chosen = ppo.best_model or ppo.final_model
        evaluation = evaluate_ppo(load_ppo_policy(chosen, device=device), data, "test",
                                  device=device)
        out.update(backtest=evaluation.backtest, targets=evaluation.targets,
                   report=None, train_seconds=ppo.train_seconds,
                   n_parameters=ppo.n_parameters)
    return out


def _baseline(name: str, data: Any) -> dict[str, Any]:
    """Baseline ``name`` on the bars a model's test backtest spans (the test part's decision
    rows and the bar after the last one)."""
    from tradezoo.backtest.baselines import baseline_backtest

    rows, offset = data.decision_rows("test"), data.bar_offset
    start = data.bars.index[offset + int(rows[0])]
    end = data.bars.index[offset + int(rows[-1]) + 1]
    result, targets = baseline_backtest(name, data.bars, start, end, costs=data.costs)
    return {"backtest": result, "targets": targets, "report": None,
            "train_seconds": 0.0, "n_parameters": 0}


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell: train, grade on the test part, return its record (a JSON-safe dict;
    the contract in docs/scaling.md). Never raises for a failure of the cell itself: the
    record then has ``status: "failed"``, the error and its traceback."""
    from tradezoo.backtest.diagnostics import record_test_part
    from tradezoo.backtest.formatting import json_safe

    started = time.perf_counter()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT, "format_version": RECORD_FORMAT_VERSION, "key": task.key,
        "cell": task.cell.to_dict(), "config": task.config, "data_hash": task.data_hash,
        "code_version": task.code_version, "status": "failed", "error": None,
        "traceback": None, "metrics": {}, "test": None, "periods_per_year": None,
        "costs": None, "train_seconds": None, "n_parameters": None, "device": task.device,
        "worker": f"{socket.gethostname()}:{os.getpid()}", "threads": task.threads,
    }
    previous = None
    try:
        import torch

        previous = torch.get_num_threads()
        _set_threads(task.threads)
        if code_version() != task.code_version:
            raise RuntimeError(
                f"this worker runs tradezoo {code_version()}, the driver {task.code_version}: "
                "install the driver's tradezoo on every node (the cell key names the code)")
        if task.work_dir is None:
            with tempfile.TemporaryDirectory(prefix="tradezoo-cell-") as tmp:
                outcome = _train_and_grade(task, Path(tmp))
        else:
            work = Path(task.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            outcome = _train_and_grade(task, work)
        backtest = outcome["backtest"]
        record.update(
            status="done", metrics=_metrics(backtest, outcome["report"]),
            benchmark_metrics=json_safe(backtest.benchmark_metrics.to_dict()),
            test=record_test_part(backtest, outcome["targets"]),
            periods_per_year=float(backtest.metrics.periods_per_year),
            costs=outcome["costs"], train_seconds=float(outcome["train_seconds"]),
            n_parameters=int(outcome["n_parameters"]), device=outcome["device"],
        )
    except Exception as exc:  # a failing cell is a record, not the end of the grid
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)
    record["wall_time_s"] = time.perf_counter() - started
    return json_safe(record)


# ------------------------------------------------------------------------------ store


class CellStore:
    """The results store under a sweep's output directory: ``cells/<key>.json``, one
    record per finished cell, written atomically by the driver only."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.root = Path(out)
        self.cells = self.root / "cells"

    def path(self, key: str) -> Path:
        return self.cells / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key``, or ``None`` (missing, or not a readable record: a file
        that is not one is treated as absent and rewritten when the cell runs)."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get(
                "key") != key:
            return None
        return record

    def put(self, record: Mapping[str, Any]) -> Path:
        """Write ``record`` atomically (:func:`~tradezoo.agents.rundir.write_text_atomic`)."""
        from tradezoo.agents.rundir import write_text_atomic

        self.cells.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1, allow_nan=False)
        return write_text_atomic(self.path(str(record["key"])), text + "\n")

    def records(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The stored records of ``keys`` (in that order; missing ones left out)."""
        found = (self.get(k) for k in keys)
        return [r for r in found if r is not None]


def cells_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: dataset, fold, arch, mode, seed, status, every metric, training
    and wall seconds, parameters, device, key and error."""
    rows = []
    for record in records:
        row: dict[str, Any] = dict(record["cell"])
        row["status"] = record["status"]
        for name, value in (record.get("metrics") or {}).items():
            if not isinstance(value, list | dict):
                row[name] = value
        row.update(train_s=record.get("train_seconds"), wall_time_s=record.get("wall_time_s"),
                   n_parameters=record.get("n_parameters"), device=record.get("device"),
                   key=record["key"], error=record.get("error"))
        rows.append(row)
    return pd.DataFrame(rows)


def write_cells_csv(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``cells.csv`` (:func:`cells_frame`), atomically."""
    from tradezoo.agents.rundir import write_text_atomic

    return write_text_atomic(path, cells_frame(records).to_csv(index=False))


# ------------------------------------------------------------------------------ executors


@dataclass(frozen=True)
class ExecutionOptions:
    """Where and how cells run.

    Attributes:
        backend: ``local`` (``workers == 1``: in this process; more: a spawned process pool)
            or ``ray``.
        workers: local worker processes (``local``), >= 1.
        threads: torch intra-op threads per cell, >= 1.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for every cell.
        ray_address: the Ray cluster to join (``None``: start a local Ray runtime).
        cpus_per_run, gpus_per_run: Ray resources of one cell (fractional GPUs share one).
        max_retries: Ray retries of a cell whose worker died (never of an exception).
        retry_failed: run again the cells recorded as failed.
    """

    backend: str = "local"
    workers: int = 1
    threads: int = 1
    device: str = "cpu"
    ray_address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"option 'backend' must be local or ray, got {self.backend!r}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"option '{name}' must be an integer >= 1, got {value!r}")
        if not (isinstance(self.cpus_per_run, int | float) and self.cpus_per_run > 0):
            raise ConfigError(f"option 'cpus_per_run' must be > 0, got {self.cpus_per_run!r}")
        if not (isinstance(self.gpus_per_run, int | float) and self.gpus_per_run >= 0):
            raise ConfigError(f"option 'gpus_per_run' must be >= 0, got {self.gpus_per_run!r}")
        if self.backend != "ray" and self.ray_address is not None:
            raise ConfigError("--ray-address needs --backend ray")
        if self.backend == "local" and self.gpus_per_run not in (0, 1):
            raise ConfigError(
                f"--gpus-per-run {self.gpus_per_run}: fractional GPUs need --backend ray"
            )


Executor = Callable[[Sequence[CellTask]], Iterator[dict[str, Any]]]


def _serial(tasks: Sequence[CellTask]) -> Iterator[dict[str, Any]]:
    for task in tasks:
        yield run_cell(task)


def _pool(tasks: Sequence[CellTask], workers: int) -> Iterator[dict[str, Any]]:
    """``workers`` spawned processes (spawn, not fork: a forked torch's thread pools and
    locks are not safe); results in completion order."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(run_cell, task): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # the worker process died (BrokenProcessPool)
                    yield _lost(task, exc)


def _lost(task: CellTask, exc: BaseException) -> dict[str, Any]:
    """The record of a cell whose worker died (no result came back)."""
    return {
        "format": RECORD_FORMAT, "format_version": RECORD_FORMAT_VERSION, "key": task.key,
        "cell": task.cell.to_dict(), "config": task.config, "data_hash": task.data_hash,
        "code_version": task.code_version, "status": "failed",
        "error": f"{type(exc).__name__}: {exc}", "traceback": "".join(
            traceback.format_exception(exc)), "metrics": {}, "test": None,
        "wall_time_s": None, "device": task.device, "worker": None,
    }


def _ray(tasks: Sequence[CellTask], options: ExecutionOptions) -> Iterator[dict[str, Any]]:
    """Cells as Ray tasks (``num_cpus=cpus_per_run``, ``num_gpus=gpus_per_run``,
    ``max_retries`` for worker deaths, ``retry_exceptions=False``). Bars frames go into the
    object store once per dataset."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'tradezoo[ray]'") from None
    started_here = False
    if not ray.is_initialized():
        if options.ray_address is not None:
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False)
        started_here = True
    try:
        remote = ray.remote(_ray_cell).options(
            num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run,
            max_retries=options.max_retries, retry_exceptions=False)
        frames: dict[int, Any] = {}
        refs: dict[Any, CellTask] = {}
        for task in tasks:
            source = task.source
            if isinstance(source, pd.DataFrame):
                ref = frames.setdefault(id(source), ray.put(source))
                slim = _replace_source(task, None)
                refs[remote.remote(slim, ref)] = task
            else:
                refs[remote.remote(task, None)] = task
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield ray.get(ref)
                except Exception as exc:  # the worker died more than max_retries times
                    yield _lost(refs[ref], exc)
    finally:
        if started_here:
            ray.shutdown()


def _replace_source(task: CellTask, source: Any) -> CellTask:
    from dataclasses import replace

    return replace(task, source=source if source is not None else "")


def _ray_cell(task: CellTask, bars: pd.DataFrame | None) -> dict[str, Any]:
    """Ray task body: the bars frame (resolved from the object store) back into the task."""
    if bars is not None:
        task = _replace_source(task, bars)
    return run_cell(task)


# ------------------------------------------------------------------------------ driver


@dataclass
class GridResult:
    """What :func:`run_grid` returns.

    Attributes:
        records: the records of every cell of the grid (grid order; stored ones included).
        ran: keys of the cells run this time.
        skipped: keys of the cells found done (or failed, without ``retry_failed``).
        seconds: wall time of this call.
    """

    records: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    seconds: float


def run_grid(tasks: Sequence[CellTask], out: str | os.PathLike[str],
             execution: ExecutionOptions, *, keep_work: bool = True,
             stream: IO[str] | None = None,
             labels: Mapping[str, str] | None = None) -> GridResult:
    """Run the cells of ``tasks`` not yet in the store under ``out`` (the caller holds the
    claim of ``out``), longest expected first, writing each record as it returns, then
    ``cells.csv``.

    Args:
        tasks: from :func:`expand_grid`.
        out: the sweep's output directory.
        execution: where and how (:class:`ExecutionOptions`).
        keep_work: local cells train in ``<out>/runs/...`` (else in temporary directories).
        stream: where progress lines go (default stdout).
        labels: the progress label of a cell by key (default: :attr:`Cell.label`); cells that
            differ only by their config (an ablation's forms) need their own labels.
    """
    import sys
    from dataclasses import replace

    say = stream or sys.stdout
    started = time.perf_counter()
    store = CellStore(out)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ConfigError("the grid repeats a cell (a dataset, architecture or seed given twice)")
    stored = {k: store.get(k) for k in keys}
    done = [k for k, r in stored.items() if r is not None and r["status"] == "done"]
    failed = [k for k, r in stored.items() if r is not None and r["status"] != "done"]
    todo = [t for t in tasks if stored[t.key] is None or (
        execution.retry_failed and stored[t.key]["status"] != "done")]
    skipped_failed = [] if execution.retry_failed else failed
    note = (f", {len(skipped_failed)} failed (kept; --retry-failed reruns them)"
            if skipped_failed else "")
    print(f"{len(done)} cells done, {len(todo)} to run{note}", file=say, flush=True)
    local = execution.backend == "local"
    todo = sorted(todo, key=lambda t: -expected_cost(t.cell))  # stable: grid order on ties
    todo = [replace(t, threads=execution.threads, device=execution.device,
                    work_dir=str(Path(out) / "runs" / t.cell.path) if local and keep_work
                    else None) for t in todo]
    if execution.backend == "ray":
        results = _ray(todo, execution)
    elif execution.workers > 1 and len(todo) > 1:
        results = _pool(todo, min(execution.workers, len(todo)))
    else:
        results = _serial(todo)
    ran: list[str] = []
    for count, record in enumerate(results, start=1):
        store.put(record)
        ran.append(record["key"])
        label = (labels or {}).get(record["key"]) or Cell(**record["cell"]).label
        metrics = record.get("metrics") or {}
        if record["status"] == "done":
            sharpe = metrics.get("sharpe")
            shown = f"Sharpe {sharpe:.3f}" if isinstance(sharpe, float) else "Sharpe n/a"
            line = f"done ({shown}, {record['wall_time_s']:.1f} s)"
        else:
            line = f"FAILED: {record['error']}"
        print(f"[{count}/{len(todo)}] {label}: {line}", file=say, flush=True)
    records = store.records(keys)
    write_cells_csv(records, Path(out) / "cells.csv")
    skipped = [k for k in keys if k not in set(ran)]
    return GridResult(records=records, ran=ran, skipped=skipped,
                      seconds=time.perf_counter() - started)
