"""The jobs behind the ``tradezoo`` commands: checkpoint backtests and the main job.

:func:`run_main_job` (``tradezoo run``): on the bundled BTCUSDT 1h bars (by default),

1. supervised pre-training of ``arch`` on buy/hold/sell labels (train split; early stopping
   and the best checkpoint on the validation split);
2. PPO warm-started from the best supervised checkpoint (train split; the best model by the
   deterministic validation reward is kept);
3. the backtest of the PPO model chosen on validation, and of the classifier, on the **test**
   split, each against buy-and-hold on the same bars with the dataset's costs.

It writes ``runs/<name>/``::

    config.json             the resolved options (``tradezoo run --config`` reads it back)
    run.log                 what the job printed (paths, timings, the metrics table)
    supervised/             best.pt, last.pt, tb/ (TensorBoard)
    ppo/                    best_model.zip + .pt, final_model.zip + .pt, checkpoints/, tb/
    backtest_test.json      both backtests (report_dict, with their policy flags and
                            break-even costs) and the classification report
    equity.png              PPO on the test split: price and positions, equity vs
                            buy-and-hold, drawdown
    supervised_equity.png   the same for the classifier's signals
    report.md               the summary: data, model, budget, timings, the metrics table,
                            the policy checks (flags, break-even cost; docs/evaluation.md)
    .tradezoo.lock          the run's lock (:mod:`tradezoo.agents.rundir`)

``<name>`` is one plain folder name (no path separator, ``.``, ``..`` or absolute path). The
directory is locked for the job's lifetime, and a directory that already holds a run is
refused unless ``overwrite=True`` (``--overwrite``); see :mod:`tradezoo.agents.rundir`.

:func:`backtest_checkpoint` (``tradezoo backtest``) grades any checkpoint (a supervised
``.pt``, a PPO ``.zip`` or its ``.pt`` sidecar) on a split. The data is prepared as the
checkpoint was trained (window, features, labels, split fractions and costs come from the
checkpoint; the data source from ``--data``, else the ``config.json`` the commands write
next to their checkpoints, else the checkpoint's bundled dataset name).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tradezoo.backtest.formatting import format_metric, json_safe

if TYPE_CHECKING:
    import pandas as pd

    from tradezoo.agents.config import TrainingOptions
    from tradezoo.agents.data import PreparedData
    from tradezoo.agents.multi import MultiData
    from tradezoo.backtest.diagnostics import PolicyDiagnostics
    from tradezoo.backtest.simulation import BacktestResult

__all__ = [
    "CheckpointBacktest",
    "MainJobResult",
    "backtest_checkpoint",
    "check_options",
    "checkpoint_options",
    "evaluate_checkpoint",
    "evaluate_checkpoint_datasets",
    "markdown_dataset_table",
    "markdown_metrics_table",
    "policy_diagnostics",
    "prepare_from_options",
    "run_main_job",
    "write_backtest_files",
    "write_options",
]

CONFIG_NAME = "config.json"
REPORT_METRICS: tuple[str, ...] = (
    "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate",
    "n_trades", "profit_factor", "exposure", "turnover", "fees_paid", "funding_paid",
)
"""Metrics rows of the Markdown tables (names of :class:`~tradezoo.backtest.metrics.Metrics`)."""


# ------------------------------------------------------------------------------- helpers


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Strict JSON (:func:`~tradezoo.backtest.formatting.json_safe`: no NaN tokens), UTF-8,
    trailing newline, written atomically (:func:`~tradezoo.agents.rundir.write_text_atomic`;
    a failure is an ``OutputError`` naming the file)."""
    from tradezoo.agents.rundir import write_text_atomic

    text = json.dumps(json_safe(payload), indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def write_options(out_dir: str | Path, options: TrainingOptions) -> Path:
    """Write the options as ``out_dir/config.json`` (a valid ``--config`` file of their
    command, :meth:`~tradezoo.agents.config.TrainingOptions.to_dict`).

    The output directory is left out (a re-run picks its own) and a ``data`` path that exists
    is made absolute, so the file works from any working directory.
    """
    saved = {k: v for k, v in options.to_dict().items() if k != "out"}
    data = saved.get("data")
    if isinstance(data, str | Path) and Path(data).exists():
        saved["data"] = str(Path(data).resolve())
    elif isinstance(data, str) and "," in data:  # several datasets: each path made absolute
        saved["data"] = ",".join(str(Path(d).resolve()) if Path(d).exists() else d
                                 for d in (item.strip() for item in data.split(",")) if d)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from tradezoo.agents.rundir import output_error

        raise output_error(out, exc, "create") from None
    return write_json(out / CONFIG_NAME, saved)


DATASET_TABLE_METRICS: tuple[str, ...] = (
    "total_return", "sharpe", "max_drawdown", "n_trades", "exposure", "fees_paid",
)
"""Columns of :func:`markdown_dataset_table`."""


def markdown_dataset_table(rows: Sequence[tuple[str, str, Mapping[str, Any]]],
                           metrics: tuple[str, ...] = DATASET_TABLE_METRICS) -> str:
    """A Markdown table with one row per ``(dataset, strategy, metrics)`` (a multi-dataset
    backtest: each model and buy-and-hold on each dataset), one column per metric."""
    lines = ["| dataset | strategy | " + " | ".join(metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for dataset, strategy, values in rows:
        cells = [format_metric(m, values.get(m)) for m in metrics]
        lines.append(f"| {dataset} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_metrics_table(columns: Mapping[str, Mapping[str, Any]],
                           metrics: tuple[str, ...] = REPORT_METRICS) -> str:
    """A Markdown table: one row per metric, one column per strategy (fractions as %)."""
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for metric in metrics:
        if not any(metric in columns[n] for n in names):
            continue
        cells = [format_metric(metric, columns[n].get(metric)) for n in names]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class _Tee:
    """Print to the console and append to a log file."""

    def __init__(self, path: Path | None, stream: IO[str] | None = None) -> None:
        self.path = path
        self.stream = stream or sys.stdout

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")


# -------------------------------------------------------------------------- preparation


def prepare_from_options(options: TrainingOptions | Mapping[str, Any]
                         ) -> PreparedData | MultiData:
    """:func:`~tradezoo.agents.data.prepare_data` with the options' data, window, features,
    labels, split fractions and costs (typed options, or a mapping with those keys); several
    datasets (``data: "a,b"``) are each prepared so
    (:func:`~tradezoo.agents.multi.prepare_datasets`)."""
    from tradezoo.agents.config import TrainingOptions

    if isinstance(options, TrainingOptions):
        options = options.to_dict()
    from tradezoo.agents.config import ConfigError, cost_model
    from tradezoo.agents.data import prepare_data
    from tradezoo.agents.multi import prepare_datasets, split_sources
    from tradezoo.errors import TradezooError

    costs = cost_model(options.get("costs", "auto"))
    sources = split_sources(str(options["data"]))
    try:
        if len(sources) > 1:
            return prepare_datasets(
                sources,
                window=int(options["window"]),
                feature_spec=dict(options.get("features") or {}) or None,
                label_spec=dict(options.get("labels") or {}) or None,
                split_fractions=tuple(options["split_fractions"]),
                costs=costs,
            )
        return prepare_data(
            str(options["data"]),
            window=int(options["window"]),
            feature_spec=dict(options.get("features") or {}) or None,
            label_spec=dict(options.get("labels") or {}) or None,
            split_fractions=tuple(options["split_fractions"]),
            costs=costs,
        )
    except TradezooError:  # DataError: the bars break a data-model rule
        raise
    except (ValueError, TypeError) as exc:  # an argument check: an option it refuses
        if costs is None and "no default cost model" in str(exc):
            raise ConfigError(
                f"data {options['data']!r}: its source has no default cost model; choose one "
                "with --costs bybit-linear|equities|zero (or 'costs:' in the config file)"
            ) from None
        raise ConfigError(f"data {options['data']!r}: {exc}") from exc


def _guess_data_source(path: Path, ckpt: Mapping[str, Any]) -> str | None:
    """The data a checkpoint was trained on: the ``config.json`` a command wrote next to it
    (or up to two folders above), else its dataset name when that is a bundled dataset."""
    from tradezoo.data.datasets import DATASETS

    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        config = folder / CONFIG_NAME
        if config.is_file():
            try:
                data = json.loads(config.read_text(encoding="utf-8")).get("data")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(data, str) and data:
                return data
    from tradezoo.agents.checkpoint import checkpoint_dataset_names

    names = checkpoint_dataset_names(ckpt)
    if names and all(n in DATASETS for n in names):
        return ",".join(names)
    return None


def checkpoint_options(path: str | Path, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Options that prepare data the way ``ckpt`` was trained (a layer for
    :func:`~tradezoo.agents.config.resolve_options`): ``arch``, ``window``, ``features``,
    ``labels``, ``split_fractions``, ``costs`` and, when it can be found, ``data``."""
    splits = ckpt.get("splits") or {}
    out: dict[str, Any] = {
        "arch": str(ckpt["arch"]),
        "window": int(ckpt["window"]),
        "features": dict(ckpt["feature_spec"]),
    }
    if ckpt.get("label_spec"):
        out["labels"] = dict(ckpt["label_spec"])
    elif splits.get("horizon"):
        out["labels"] = {"horizon": int(splits["horizon"])}
    if splits.get("fractions"):
        out["split_fractions"] = [float(v) for v in splits["fractions"]]
    if ckpt.get("costs"):
        out["costs"] = dict(ckpt["costs"])
    data = _guess_data_source(Path(path), ckpt)
    if data is not None:
        out["data"] = data
    return out


def _read_any_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A supervised ``.pt``, a PPO ``.zip`` (its sidecar is read) or a PPO ``.pt`` sidecar.

    Raises:
        FileNotFoundError: no such file (or a ``.zip`` without its sidecar).
        CheckpointError: unreadable, not a tradezoo checkpoint, or of an unknown kind.
    """
    from tradezoo.agents.checkpoint import CheckpointError, load_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    sidecar = path
    if path.suffix == ".zip":
        sidecar = path.with_suffix(".pt")
        if not sidecar.exists():
            raise FileNotFoundError(
                f"checkpoint {path}: no sidecar {sidecar} (the tradezoo metadata train_ppo "
                "writes next to each SB3 .zip); back it up together with the .zip"
            )
    ckpt = load_checkpoint(sidecar)
    if ckpt["kind"] not in ("supervised", "ppo"):
        raise CheckpointError(f"checkpoint {sidecar}: kind {ckpt['kind']!r}; tradezoo backtest "
                              "reads 'supervised' and 'ppo' checkpoints")
    return sidecar, ckpt


# ---------------------------------------------------------------------------- backtests


@dataclass
class CheckpointBacktest:
    """What :func:`backtest_checkpoint` returns.

    Attributes:
        checkpoint: the checkpoint file read (a PPO ``.zip``'s sidecar).
        kind: ``"supervised"`` or ``"ppo"``.
        arch: architecture.
        split: the split backtested.
        data: the data source used.
        result: the :class:`~tradezoo.backtest.simulation.BacktestResult` (buy-and-hold in its
            ``benchmark_*`` fields).
        classification: the supervised model's report dict (supervised only): the
            classification report, or the report of its task (docs/tasks.md).
        task: the supervised model's task (``LabelSpec.task``); ``None`` for PPO.
        given: the checkpoint path as given (a PPO ``.zip`` or a ``.pt``); names the files.
        json_path, png_path, html_path: the files written (``None`` before
            :func:`write_backtest_files`; ``html_path`` only with a tearsheet).
        diagnostics: the policy's flags and break-even cost
            (:func:`tradezoo.backtest.diagnostics.diagnose`).
        dataset: the name of the dataset backtested.
    """

    checkpoint: Path
    kind: str
    arch: str
    split: str
    data: str
    result: BacktestResult
    classification: dict[str, Any] | None
    given: Path | None = None
    task: str | None = None
    json_path: Path | None = None
    png_path: Path | None = None
    html_path: Path | None = None
    diagnostics: PolicyDiagnostics | None = None
    dataset: str | None = None


def policy_diagnostics(result: BacktestResult, bars: pd.DataFrame,
                       targets: Any) -> PolicyDiagnostics:
    """Flags and break-even cost of a model's backtest
    (:func:`tradezoo.backtest.diagnostics.diagnose`, the leaderboard's mechanism).

    Args:
        result: the backtest; bars: the data's bars (the backtest's span is cut from them);
        targets: the targets it was simulated with, one per bar of the backtest (a PPO
            evaluation's targets lack the last bar's: it is added as NaN).
    """
    import numpy as np

    from tradezoo.backtest.diagnostics import diagnose

    index = result.equity.index
    values = np.asarray(targets, dtype=np.float64)
    if values.size == len(index) - 1:
        values = np.append(values, np.nan)  # the last bar's decision fills nothing
    return diagnose(result, bars.loc[index[0] : index[-1]], values)


def _evaluate_checkpoint(ckpt: Mapping[str, Any], data: PreparedData, split: str, device: str
                         ) -> tuple[BacktestResult, dict[str, Any] | None, PolicyDiagnostics]:
    if ckpt["kind"] == "supervised":
        from tradezoo.agents.supervised_evaluation import evaluate_supervised

        evaluation = evaluate_supervised(ckpt, data, split, device=device)  # type: ignore[arg-type]
        return (evaluation.backtest, evaluation.report.to_dict(),
                policy_diagnostics(evaluation.backtest, data.bars, evaluation.positions))
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy

    policy = load_ppo_policy(ckpt, device=device)
    walk = evaluate_ppo(policy, data, split, device=device)
    return walk.backtest, None, policy_diagnostics(walk.backtest, data.bars, walk.targets)


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "cpu",
) -> CheckpointBacktest:
    """Backtest a supervised or PPO checkpoint on ``split`` without writing anything (the
    computing half of :func:`backtest_checkpoint`; its file fields are ``None``).

    Raises:
        FileNotFoundError, CheckpointError: a missing, unreadable or mismatched checkpoint.
        ConfigError: the data source cannot be found (pass ``data``).
        ValueError: a bad split, or data that does not fit the checkpoint.
    """
    outcomes = evaluate_checkpoint_datasets(path, data=data, split=split, device=device)
    if len(outcomes) > 1:
        raise ValueError(f"checkpoint {path}: {len(outcomes)} datasets "
                         f"({[o.data for o in outcomes]}); use evaluate_checkpoint_datasets, "
                         "or pass one dataset as data")
    return outcomes[0]


def evaluate_checkpoint_datasets(
    path: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "cpu",
) -> list[CheckpointBacktest]:
    """Backtest a checkpoint on ``split`` of each of its datasets (one
    :class:`CheckpointBacktest` each, buy-and-hold in each result's ``benchmark_*`` fields).

    The datasets are ``data`` (a name, path or comma-separated list), else those of the
    ``config.json`` next to the checkpoint, else its bundled training datasets. Each is
    prepared as for training: the checkpoint's window, features and split fractions; for a
    dataset it was trained on, that dataset's own labels, cost model and scaler
    (:mod:`tradezoo.agents.multi`); for another one, its source's cost model (a warning says
    it was not trained on it).

    Raises:
        As :func:`evaluate_checkpoint`.
    """
    from tradezoo.agents.checkpoint import checkpoint_datasets
    from tradezoo.agents.config import ConfigError, cost_model
    from tradezoo.agents.data import prepare_data
    from tradezoo.agents.multi import split_sources

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    original = Path(path)
    sidecar, ckpt = _read_any_checkpoint(original)
    options = checkpoint_options(sidecar, ckpt)
    source = str(data) if data is not None else options.get("data")
    if source is None:
        raise ConfigError(
            f"checkpoint {original}: cannot tell which data it was trained on (dataset "
            f"{(ckpt.get('dataset') or {}).get('name')!r} is not bundled and no {CONFIG_NAME} "
            "is next to it); pass --data NAME|PATH"
        )
    records = {r["name"]: r for r in checkpoint_datasets(ckpt)}
    several = len(records) > 1
    sources = split_sources(source) if several or "," in source else [source]
    outcomes = []
    for item in sources:
        labels, costs = options.get("labels"), options.get("costs")
        if several:  # each dataset's own labels and costs (its source's for a new one)
            record = records.get(_source_name(item), {})
            labels = dict(record.get("label_spec") or {**(labels or {}), "cost_bps": None})
            costs = record.get("costs")
        prepared = prepare_data(
            item,
            window=options["window"],
            feature_spec=options["features"],
            label_spec=labels,
            split_fractions=tuple(options.get("split_fractions", (0.7, 0.15, 0.15))),
            costs=cost_model(costs) if costs is not None else None,
            zero_funding=several and "funding_rate" in ckpt.get("feature_names", ()),
        )
        result, classification, diagnostics = _evaluate_checkpoint(ckpt, prepared, split,
                                                                   device)
        outcomes.append(CheckpointBacktest(
            checkpoint=sidecar, kind=str(ckpt["kind"]), arch=str(ckpt["arch"]), split=split,
            data=item, result=result, classification=classification, given=original,
            diagnostics=diagnostics, dataset=prepared.name,
            task=prepared.label_spec.task if ckpt["kind"] == "supervised" else None,
        ))
    return outcomes


def _source_name(source: str) -> str:
    """The name a bundled dataset or a file is reported by (:func:`dataset_name`)."""
    from tradezoo.data.prepare import dataset_name, load_source

    if not Path(source).suffix:
        return source
    return dataset_name(source, load_source(source))


def write_backtest_files(outcome: CheckpointBacktest, out_dir: str | Path | None = None, *,
                         tearsheet: bool = False, tag: str | None = None) -> CheckpointBacktest:
    """Write the reports of :func:`evaluate_checkpoint` (the files of
    :func:`backtest_checkpoint`) and return ``outcome`` with their paths; ``tag`` (the
    dataset of a multi-dataset backtest) goes into the file names after the split.

    Raises:
        OutputError: a folder or file that cannot be written (the message names it).
        ImportError: ``tearsheet=True`` without quantstats.
    """
    from tradezoo.agents.rundir import OutputError, output_error
    from tradezoo.backtest.report import quantstats_html, report_dict, save_png

    original = outcome.given if outcome.given is not None else outcome.checkpoint
    out = Path(out_dir) if out_dir is not None else original.parent
    stem = f"{original.stem}.{outcome.split}" + (f".{tag}" if tag else "")
    payload = {
        "checkpoint": str(original),
        "kind": outcome.kind,
        "arch": outcome.arch,
        "split": outcome.split,
        "data": outcome.data,
        "backtest": report_dict(outcome.result, outcome.diagnostics),
    }
    if outcome.classification is not None:
        payload["task"] = outcome.task
        report_key = "volatility" if outcome.task == "volatility" else "classification"
        payload[report_key] = outcome.classification
    target = out
    try:
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{stem}.backtest.json"
        json_path = write_json(target, payload)
        target = out / f"{stem}.backtest.png"
        png_path = save_png(outcome.result, target)
        target = out / f"{stem}.tearsheet.html"
        html_path = quantstats_html(outcome.result, target) if tearsheet else None
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(target, exc) from None
    outcome.json_path, outcome.png_path, outcome.html_path = json_path, png_path, html_path
    return outcome


def backtest_checkpoint(
    path: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    tearsheet: bool = False,
    device: str = "cpu",
) -> CheckpointBacktest:
    """Backtest a supervised or PPO checkpoint on ``split`` and write its reports.

    Files (in ``out_dir``, default the checkpoint's folder), for checkpoint ``X.pt``/``X.zip``:
    ``X.<split>.backtest.json`` (:func:`~tradezoo.backtest.report.report_dict` plus the
    checkpoint, split and, for a classifier, its classification report),
    ``X.<split>.backtest.png`` (price and positions, equity vs buy-and-hold, drawdown) and,
    with ``tearsheet=True``, ``X.<split>.tearsheet.html`` (quantstats).
    :func:`evaluate_checkpoint` then :func:`write_backtest_files`.

    Raises:
        FileNotFoundError, CheckpointError: a missing, unreadable or mismatched checkpoint.
        ConfigError: the data source cannot be found (pass ``data``).
        ValueError: a bad split, or data that does not fit the checkpoint.
        OutputError: a report that cannot be written (the message names it).
        ImportError: ``tearsheet=True`` without quantstats.
    """
    outcome = evaluate_checkpoint(path, data=data, split=split, device=device)
    return write_backtest_files(outcome, out_dir, tearsheet=tearsheet)


# ------------------------------------------------------------------------------ main job


@dataclass
class MainJobResult:
    """What :func:`run_main_job` returns.

    Attributes:
        out_dir: the run directory.
        report: ``out_dir/report.md``.
        supervised_metrics, ppo_metrics, buy_and_hold_metrics: test-split metrics dicts.
        classification: the classifier's test classification report dict.
        seconds: wall time of each stage (``prepare``, ``supervised``, ``ppo``, ``backtest``,
            ``total``).
        ppo_model: the PPO checkpoint backtested (best on validation, else final).
        supervised_checkpoint: the supervised ``best.pt``.
        per_dataset: with several datasets, ``{name: {"ppo", "supervised", "buy_and_hold",
            "classification"}}`` (the top-level metrics are then the first dataset's).
    """

    out_dir: Path
    report: Path
    supervised_metrics: dict[str, Any]
    ppo_metrics: dict[str, Any]
    buy_and_hold_metrics: dict[str, Any]
    classification: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    ppo_model: Path | None = None
    supervised_checkpoint: Path | None = None
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_run_name(arch: str) -> str:
    """``<arch>-<local time YYYYmmdd-HHMMSS>``."""
    return f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_options(options: TrainingOptions) -> None:
    """Check, before anything is written, what building ``options`` did not: each
    architecture name of the command and its ``arch_config`` (the trainer configs were
    checked when :func:`~tradezoo.agents.config.training_options` built them).

    Raises:
        ConfigError: an unknown architecture (listing the valid names) or a config field it
            rejects; the registry's ``ValueError``/``TypeError`` become ``ConfigError`` with
            the same message; a label task other than ``direction`` for a command that
            warm-starts PPO (``run``, ``compare --mode both``).
    """
    from tradezoo.errors import ConfigError
    from tradezoo.policies.registry import make_config

    archs = options.archs if options.command == "compare" else (options.arch,)
    try:
        for arch in archs:
            make_config(arch, **dict(options.arch_config))
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc
    warm_starts = options.command == "run" or (options.command == "compare"
                                               and options.mode == "both")
    if warm_starts:  # a non-direction task cannot seed the PPO stage (docs/tasks.md)
        from tradezoo.agents.data import LabelSpec, check_warm_start_task

        task = LabelSpec.from_dict(dict(options.labels)).task
        check_warm_start_task(task, f"tradezoo {options.command} (labels.task={task!r}; "
                                    "its PPO stage is warm-started from the supervised model; "
                                    "use `tradezoo train supervised` and `tradezoo backtest` "
                                    "for this task)")


def run_main_job(options: TrainingOptions, *, stream: IO[str] | None = None,
                 overwrite: bool = False) -> MainJobResult:
    """Supervised pre-training, warm-started PPO and the test backtest (module docstring).

    The run directory is ``options.out``, else ``runs/<options.name>`` (the name must be
    one plain folder name, :func:`~tradezoo.agents.rundir.validate_run_name`). It is claimed
    for the whole job (:func:`~tradezoo.agents.rundir.claim_run_dir`): locked, and refused
    when it already holds a run unless ``overwrite``.

    Args:
        options: the ``run`` options (:func:`~tradezoo.agents.config.training_options`).
        stream: where to print (default stdout); everything printed also goes to ``run.log``.
        overwrite: replace a run the directory already holds (its files are deleted first).

    Raises:
        ConfigError, CheckpointError, DataError: bad options or data (before anything is written).
        RunDirectoryError: a bad name, a directory that holds a run, or one in use.
        OutputError: the run directory cannot be written.
        NonFiniteLossError: training diverged.
        TrainingInterrupted: Ctrl-C (a resumable checkpoint was written and named).
    """
    from tradezoo.agents.rundir import claim_run_dir, validate_run_name

    if options.name is not None:
        validate_run_name(options.name)
    out = (Path(options.out) if options.out else Path("runs") / validate_run_name(
        options.name or default_run_name(options.arch)))
    started = time.perf_counter()
    check_options(options)  # bad options and data fail before anything is written
    data = prepare_from_options(options)
    seconds = {"prepare": time.perf_counter() - started}
    with claim_run_dir(out, overwrite=overwrite, resume_hint=False):
        return _main_job(options, data, out, stream, started=started, seconds=seconds)


def _main_job(options: TrainingOptions, data: PreparedData | MultiData, out: Path,
              stream: IO[str] | None, *, started: float,
              seconds: dict[str, float]) -> MainJobResult:
    """The stages of :func:`run_main_job` in the claimed run directory ``out`` (``started``:
    ``time.perf_counter()`` at the job's start; ``seconds``: the stage times so far)."""
    from tradezoo.agents.devices import resolve_device
    from tradezoo.agents.multi import MultiData, as_datasets
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy, train_ppo
    from tradezoo.agents.rundir import write_text_atomic
    from tradezoo.agents.supervised import evaluate_supervised, train_supervised
    from tradezoo.agents.tensorboard import tensorboard_command
    from tradezoo.backtest.report import print_report, report_dict, save_png

    arch, seed = options.arch, options.seed
    device = str(resolve_device(options.device))
    supervised_cfg, ppo_cfg = options.supervised, options.ppo
    assert supervised_cfg is not None and ppo_cfg is not None

    log_path = out / "run.log"
    log_path.write_text("", encoding="utf-8")
    say = _Tee(log_path, stream)
    write_options(out, options)
    say(f"tradezoo run: {arch} on {options.data} (seed {seed}, device {device})")
    say(f"run directory: {out}")
    say(f"logs: {log_path}; TensorBoard (both stages): {tensorboard_command(out)}")
    for part in as_datasets(data):
        summary = part.summary()
        say(f"data: {part.name}, {summary['bars']} bars, window {part.window}, "
            f"{part.n_features} features; train {summary['train']['items']}, val "
            f"{summary['val']['items']}, test {summary['test']['items']} labelled windows; test "
            f"{summary['test']['start']} .. {summary['test']['end']}")

    say(f"[1/3] supervised pre-training ({supervised_cfg.epochs} epochs max)")
    tick = time.perf_counter()
    supervised = train_supervised(
        data, arch, config=supervised_cfg, arch_config=dict(options.arch_config),
        out_dir=out / "supervised", seed=seed, device=device, verbose=True,
    )
    seconds["supervised"] = time.perf_counter() - tick
    say(f"      best epoch {supervised.best_epoch + 1}, val loss {supervised.best_val_loss:.4f}, "
        f"{supervised.n_parameters:,} parameters, {seconds['supervised']:.0f} s; "
        f"checkpoint {supervised.best_checkpoint}")

    say(f"[2/3] PPO warm-started from it ({ppo_cfg.timesteps:,} timesteps, {ppo_cfg.n_envs} "
        "envs)")
    tick = time.perf_counter()
    ppo = train_ppo(
        data, arch, config=ppo_cfg, out_dir=out / "ppo", seed=seed, device=device,
        init_from=supervised.best_checkpoint, progress=options.progress,
        verbose=True,
    )
    seconds["ppo"] = time.perf_counter() - tick
    chosen = ppo.best_model or ppo.final_model
    say(f"      {ppo.num_timesteps:,} timesteps in {ppo.train_seconds:.0f} s; backtesting "
        f"{chosen.name} ({'best on validation' if ppo.best_model else 'final'})")

    say("[3/3] backtest on the test split")
    tick = time.perf_counter()
    if isinstance(data, MultiData):
        return _main_job_datasets(options, data, out, say, started=started, seconds=seconds,
                                  tick=tick, device=device, supervised=supervised, ppo=ppo,
                                  chosen=chosen)
    sup_eval = evaluate_supervised(supervised.model, data, "test", device=device)
    ppo_eval = evaluate_ppo(load_ppo_policy(chosen, device=device), data, "test",
                            device=device)
    ppo_checks = policy_diagnostics(ppo_eval.backtest, data.bars, ppo_eval.targets)
    sup_checks = policy_diagnostics(sup_eval.backtest, data.bars, sup_eval.positions)
    seconds["backtest"] = time.perf_counter() - tick
    ppo_metrics = ppo_eval.backtest.metrics.to_dict()
    sup_metrics = sup_eval.backtest.metrics.to_dict()
    bh_metrics = ppo_eval.backtest.benchmark_metrics.to_dict()
    classification = sup_eval.report.to_dict()
    write_json(out / "backtest_test.json", {
        "split": "test",
        "ppo": {"checkpoint": str(chosen), **report_dict(ppo_eval.backtest, ppo_checks)},
        "supervised": {"checkpoint": str(supervised.best_checkpoint),
                       **report_dict(sup_eval.backtest, sup_checks),
                       "classification": classification},
    })
    save_png(ppo_eval.backtest, out / "equity.png")
    save_png(sup_eval.backtest, out / "supervised_equity.png")
    seconds["total"] = time.perf_counter() - started

    report = out / "report.md"
    write_text_atomic(report, _report_markdown(
        options, data, arch, device, seconds, supervised, ppo, chosen,
        {"PPO (warm-started)": ppo_metrics, "supervised": sup_metrics,
         "buy & hold": bh_metrics}, sup_eval.report, out,
        {"PPO (warm-started)": ppo_checks, "supervised": sup_checks},
    ))
    from rich.console import Console

    console = Console(file=stream) if stream is not None else Console()
    print_report(ppo_eval.backtest, console=console, diagnostics=ppo_checks)
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(ppo_eval.backtest.summary() + "\n")
        handle.write(markdown_metrics_table({"PPO": ppo_metrics, "buy & hold": bh_metrics})
                     + "\n")
    say(f"supervised classifier on test: accuracy {sup_eval.report.accuracy:.3f}, macro-F1 "
        f"{sup_eval.report.macro_f1:.3f}, total return "
        f"{format_metric('total_return', sup_metrics.get('total_return'))}, Sharpe "
        f"{format_metric('sharpe', sup_metrics.get('sharpe'))}")
    say(f"done in {seconds['total']:.0f} s: report {report}, equity plot {out / 'equity.png'}")
    say(f"TensorBoard: {tensorboard_command(out)}")
    return MainJobResult(
        out_dir=out, report=report, supervised_metrics=sup_metrics, ppo_metrics=ppo_metrics,
        buy_and_hold_metrics=bh_metrics, classification=classification, seconds=seconds,
        ppo_model=chosen, supervised_checkpoint=supervised.best_checkpoint,
    )


def _main_job_datasets(options: TrainingOptions, data: MultiData, out: Path, say: _Tee, *,
                       started: float, seconds: dict[str, float], tick: float, device: str,
                       supervised: Any, ppo: Any, chosen: Path) -> MainJobResult:
    """Stage 3 of :func:`run_main_job` on several datasets: both models and buy-and-hold on
    the test split of each dataset (its own bars, scaler and costs), one report row each."""
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy
    from tradezoo.agents.rundir import write_text_atomic
    from tradezoo.agents.supervised_evaluation import evaluate_supervised
    from tradezoo.agents.tensorboard import tensorboard_command
    from tradezoo.backtest.report import report_dict, save_png

    policy = load_ppo_policy(chosen, device=device)
    per_dataset: dict[str, dict[str, Any]] = {}
    payload: dict[str, Any] = {"split": "test", "datasets": {}}
    rows: list[tuple[str, str, Mapping[str, Any]]] = []
    checks: list[tuple[str, str, PolicyDiagnostics]] = []
    reports: dict[str, Any] = {}
    for part in data:
        sup_eval = evaluate_supervised(supervised.model, part, "test", device=device)
        ppo_eval = evaluate_ppo(policy, part, "test", device=device)
        ppo_checks = policy_diagnostics(ppo_eval.backtest, part.bars, ppo_eval.targets)
        sup_checks = policy_diagnostics(sup_eval.backtest, part.bars, sup_eval.positions)
        metrics = {"ppo": ppo_eval.backtest.metrics.to_dict(),
                   "supervised": sup_eval.backtest.metrics.to_dict(),
                   "buy_and_hold": ppo_eval.backtest.benchmark_metrics.to_dict(),
                   "classification": sup_eval.report.to_dict()}
        per_dataset[part.name] = metrics
        payload["datasets"][part.name] = {
            "ppo": {"checkpoint": str(chosen), **report_dict(ppo_eval.backtest, ppo_checks)},
            "supervised": {"checkpoint": str(supervised.best_checkpoint),
                           **report_dict(sup_eval.backtest, sup_checks),
                           "classification": metrics["classification"]},
        }
        rows += [(part.name, "PPO (warm-started)", metrics["ppo"]),
                 (part.name, "supervised", metrics["supervised"]),
                 (part.name, "buy & hold", metrics["buy_and_hold"])]
        checks += [(part.name, "PPO (warm-started)", ppo_checks),
                   (part.name, "supervised", sup_checks)]
        reports[part.name] = sup_eval.report
        save_png(ppo_eval.backtest, out / f"equity.{part.name}.png")
        save_png(sup_eval.backtest, out / f"supervised_equity.{part.name}.png")
    seconds["backtest"] = time.perf_counter() - tick
    write_json(out / "backtest_test.json", payload)
    seconds["total"] = time.perf_counter() - started
    table = markdown_dataset_table(rows)
    lines = [
        f"# tradezoo run: {options.arch} on {len(data)} datasets ({', '.join(data.names)})",
        "",
        "One model trained across the datasets (each prepared on its own: features, splits, "
        "a scaler fitted on its own train part, labels with its own costs; "
        "docs/multi-asset.md): supervised pre-training, then PPO warm-started from the best "
        "classifier (chosen on the pooled validation loss), both backtested on the **test "
        "split of each dataset** against that dataset's buy-and-hold, with its own costs.",
        "",
        "## Test-split metrics, per dataset",
        "",
        table,
        "",
        *(f"Classifier on {name}: accuracy {r.accuracy:.3f}, macro-F1 {r.macro_f1:.3f}."
          for name, r in reports.items()),
        "",
        "## Policy checks",
        "",
        "| dataset | model | flags | break-even cost |",
        "|---|---|---|---|",
        *(f"| {name} | {model} | {check.flags_text()} | {check.break_even_text()} |"
          for name, model, check in checks),
        "",
        "## Setup",
        "",
        f"- data: `{options.data}`, window {data.window}, split fractions "
        f"{list(options.split_fractions)}, sampling `{supervised.config.sampling}`, asset "
        f"embedding {'on' if supervised.config.asset_embedding else 'off'}",
        f"- model: `{options.arch}`, {supervised.n_parameters:,} parameters (classifier), "
        f"{ppo.n_parameters:,} (PPO policy)",
        f"- supervised: {len(supervised.history)} epochs (best {supervised.best_epoch + 1}, "
        f"pooled val loss {supervised.best_val_loss:.4f}), {seconds['supervised']:.0f} s",
        f"- PPO: {ppo.num_timesteps:,} timesteps, {seconds['ppo']:.0f} s; backtested model "
        f"`{chosen.name}`",
        f"- device {device}; seed {options.seed}; total wall time {seconds['total']:.0f} s",
        "",
        "## Files",
        "",
        "- `equity.<dataset>.png`, `supervised_equity.<dataset>.png`; `backtest_test.json`",
        f"- grade again: `tradezoo backtest {out / 'ppo' / chosen.name} --split test`",
        f"- re-run: `tradezoo run --config {out / CONFIG_NAME}`",
        "",
    ]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines))
    say(table)
    say(f"done in {seconds['total']:.0f} s: report {report}")
    say(f"TensorBoard: {tensorboard_command(out)}")
    first = per_dataset[data.names[0]]
    return MainJobResult(
        out_dir=out, report=report, supervised_metrics=first["supervised"],
        ppo_metrics=first["ppo"], buy_and_hold_metrics=first["buy_and_hold"],
        classification=first["classification"], seconds=seconds, ppo_model=chosen,
        supervised_checkpoint=supervised.best_checkpoint, per_dataset=per_dataset,
    )


def _report_markdown(options: TrainingOptions, data: PreparedData, arch: str, device: str,
                     seconds: Mapping[str, float], supervised: Any, ppo: Any, chosen: Path,
                     columns: Mapping[str, Mapping[str, Any]], report: Any, out: Path,
                     checks: Mapping[str, PolicyDiagnostics]) -> str:
    first, last = data.boundaries["test"]
    arch_config = supervised.model.backbone_config()
    lines = [
        f"# tradezoo run: {arch} on {data.name}",
        "",
        f"Supervised pre-training on buy/hold/sell labels, then PPO warm-started from the best "
        f"classifier, then both backtested on the **test split** ({first} .. {last}, never "
        f"seen in training or model selection) against buy-and-hold, with the dataset's costs "
        f"(fees, spread, slippage, funding), fills at the next bar's open.",
        "",
        "## Test-split metrics",
        "",
        markdown_metrics_table(columns),
        "",
        f"Classifier on the test split: accuracy {report.accuracy:.3f}, macro-F1 "
        f"{report.macro_f1:.3f}.",
        "",
        "## Policy checks",
        "",
        "Flags name degenerate policies; the break-even cost is the one-way trading cost at "
        "which the test-split total return is zero (positions replayed at scaled costs); "
        "docs/evaluation.md, \"The leaderboard\".",
        "",
        "| model | flags | break-even cost |",
        "|---|---|---|",
        *(f"| {name} | {check.flags_text()} | {check.break_even_text()} |"
          for name, check in checks.items()),
        "",
        "```",
        str(report),
        "```",
        "",
        "## Setup",
        "",
        f"- data: `{options.data}` ({len(data.bars)} bars), window {data.window}, "
        f"{data.n_features} features, split fractions {list(data.split_fractions)}, labels "
        f"{data.label_spec.to_dict()}",
        f"- model: `{arch}` {arch_config}, {supervised.n_parameters:,} parameters "
        f"(classifier), {ppo.n_parameters:,} (PPO policy with its value head)",
        f"- supervised: {len(supervised.history)} epochs run (best {supervised.best_epoch + 1}, "
        f"val loss {supervised.best_val_loss:.4f}), {seconds['supervised']:.0f} s",
        f"- PPO: {ppo.num_timesteps:,} timesteps, {ppo.config.n_envs} envs, "
        f"{seconds['ppo']:.0f} s; backtested model `{chosen.name}`",
        f"- device {device}; seed {options.seed}; total wall time {seconds['total']:.0f} s",
        "",
        "## Files",
        "",
        "- `equity.png`: PPO on the test split (price and positions, equity vs buy-and-hold, "
        "drawdown); `supervised_equity.png`: the classifier",
        "- `backtest_test.json`: both backtests in full; `run.log`: the console output",
        f"- `supervised/best.pt`, `ppo/{chosen.name}` (+ `.pt` sidecar): grade them again with "
        f"`tradezoo backtest {out / 'ppo' / chosen.name} --split test`",
        f"- TensorBoard: `tensorboard --logdir {out}`",
        f"- re-run: `tradezoo run --config {out / CONFIG_NAME}`",
        "",
    ]
    return "\n".join(lines)
