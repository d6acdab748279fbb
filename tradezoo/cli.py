"""The ``tradezoo`` command.

    tradezoo data list                               bundled datasets and cached files
    tradezoo data info bybit-btcusdt-1h              validation report + feature summary
    tradezoo data info path/to/bars.csv
    tradezoo data fetch bybit BTCUSDT --interval 1h --start 2024-01-01 --end 2024-02-01
    tradezoo data fetch yahoo SPY --interval 1d --start 2020-01-01 --end 2020-12-31

    tradezoo run                                     the main job (supervised -> PPO -> test)
    tradezoo run --arch cfc --epochs 20 --timesteps 1000000 --device cuda
    tradezoo train supervised --arch lstm --epochs 10 --out runs/lstm
    tradezoo train ppo --init-from runs/lstm/best.pt --timesteps 200000
    tradezoo backtest runs/lstm/best.pt --split test --tearsheet
    tradezoo compare --archs gru,lstm,cfc --mode both --seeds 3 --budget small

Training options come from the command's defaults, a YAML config file (``--config``), the
flags and ``--set KEY=VALUE`` (later wins; see :mod:`tradezoo.agents.config`). Exit codes:
0 done; 1 training diverged (non-finite loss), or a defect (any exception that is not a
:class:`~tradezoo.errors.TradezooError` or an ``OSError``: Python prints its traceback); 2 bad
input (a ``TradezooError`` or a missing input file; the message names it; a run directory in
use, or one that already holds a run without ``--resume-from``/``--overwrite``, is bad input);
3 a file or folder that cannot be written or read (the message names the path); 130
interrupted. Errors of exit codes 1 (divergence), 2 and 3 are one line, ``tradezoo: error:
<message>``; ``TRADEZOO_DEBUG=1`` shows their traceback too. The training commands check the
whole configuration, the architecture included, before they write anything. A training that
stops early, for any reason, names the resumable checkpoint it saved.

Run directories (:mod:`tradezoo.agents.rundir`): ``train supervised``, ``train ppo`` and
``run`` lock their directory for their lifetime (a second run into it fails at once), and
refuse a directory that already holds a run (``config.json`` or a checkpoint in it or in a
direct subfolder) unless ``--resume-from`` continues it or ``--overwrite`` replaces it.

Every subcommand has ``--help``. Heavy imports happen inside the handlers so ``--help`` is
instant and nothing here imports torch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradezoo import __version__

if TYPE_CHECKING:
    from tradezoo.agents.config import TrainingOptions


def _console():  # rich is imported lazily: the parser alone must be cheap
    from rich.console import Console

    return Console()


def _cmd_data_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tradezoo.data.cache import BarCache
    from tradezoo.data.datasets import list_datasets

    console = _console()
    table = Table(title="Bundled datasets", title_justify="left")
    for column in ("name", "symbol", "interval", "source", "description"):
        table.add_column(column)
    for info in list_datasets():
        table.add_row(info.name, info.symbol, info.interval, info.source, info.description)
    console.print(table)
    cache = BarCache()
    entries = cache.entries()
    if not entries:
        console.print(f"Cache {cache.root}: empty")
        return 0
    cached = Table(title=f"Cached downloads in {cache.root}", title_justify="left")
    for column in ("source", "symbol", "interval", "file", "MB"):
        cached.add_column(column)
    for key, path in entries:
        size = f"{path.stat().st_size / 1e6:.2f}"
        cached.add_row(key.source, key.symbol, key.interval, path.name, size)
    console.print(cached)
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tradezoo.data.datasets import load_bars
    from tradezoo.data.features import compute_features, describe_features

    console = _console()
    bars, report = load_bars(args.source, repair=args.repair)
    console.print(report)
    attrs = bars.attrs
    console.print(
        f"[bold]{attrs.get('symbol')}[/bold] {attrs.get('interval')} from "
        f"{attrs.get('source')}: {len(bars)} bars, {bars.index[0]} to {bars.index[-1]}; "
        f"columns {list(bars.columns)}"
    )
    if "funding_rate" in bars:
        stamps = int((bars["funding_rate"] != 0).sum())
        console.print(
            f"funding: {stamps} non-zero funding stamps, history "
            f"{attrs.get('funding_start')} to {attrs.get('funding_end')}"
        )
    if attrs.get("attribution"):
        console.print(f"data: {attrs['attribution']}")
    features = compute_features(bars)
    summary = describe_features(features)
    table = Table(
        title=f"Features: {features.shape[1]} columns x {len(features)} rows "
        f"({features.attrs.get('warmup_rows', 0)} warm-up rows dropped)",
        title_justify="left",
    )
    table.add_column("feature")
    for column in summary.columns:
        table.add_column(str(column), justify="right")
    for name, row in summary.iterrows():
        table.add_row(str(name), *(f"{value:.4g}" for value in row.to_numpy()))
    console.print(table)
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    console = _console()
    cache = not args.no_cache
    if args.source == "bybit":
        from tradezoo.data.bybit import BybitClient, fetch_bybit

        client = BybitClient(base_url=args.base_url) if args.base_url else None
        frame = fetch_bybit(
            args.symbol,
            args.interval,
            args.start,
            args.end,
            category=args.category,
            client=client,
            cache=cache,
            progress=not args.quiet,
        )
    else:
        from tradezoo.data.yahoo import fetch_yahoo

        frame = fetch_yahoo(
            args.symbol,
            args.start,
            args.end,
            interval=args.interval,
            auto_adjust=not args.no_adjust,
            cache=cache,
        )
    fetch = frame.attrs.get("fetch_summary")
    if len(frame):
        console.print(
            f"{args.symbol} {frame.attrs.get('interval')}: {len(frame)} bars from "
            f"{frame.index[0]} to {frame.index[-1]}"
        )
    else:
        console.print(f"{args.symbol}: no bars in the range")
    if fetch:
        console.print(fetch)
    return 0


# ---------------------------------------------------------------------- training commands

# flag dest -> dotted option key (tradezoo.agents.config); a flag left out is None (not given).
_FLAG_KEYS: dict[str, str] = {
    "data": "data", "arch": "arch", "seed": "seed", "device": "device", "out": "out",
    "window": "window", "d_model": "arch_config.d_model", "costs": "costs",
    "epochs": "supervised.epochs", "batch_size": "supervised.batch_size",
    "timesteps": "ppo.timesteps", "n_envs": "ppo.n_envs", "init_from": "init_from",
    "resume_from": "resume_from", "name": "name", "archs": "archs", "mode": "mode",
    "seeds": "seeds", "ppo_archs": "ppo_archs", "budget": "budget", "threads": "threads",
}


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {key: getattr(args, dest) for dest, key in _FLAG_KEYS.items()
             if getattr(args, dest, None) is not None}
    if getattr(args, "quiet", False):
        flags["progress"] = False
    return flags


def _options(command: str, args: argparse.Namespace,
             base: dict[str, Any] | None = None) -> TrainingOptions:
    """The typed options of ``command`` (built once here and handed to the jobs), every
    setting checked (nothing written yet)."""
    from tradezoo.agents.config import resolve_options, torch_threads, training_options
    from tradezoo.agents.run import check_options

    options = training_options(command, resolve_options(
        command, config_path=args.config, flags=_flags(args), assignments=args.set or (),
        base=base))
    check_options(options)
    threads = torch_threads(options.threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return options


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _checkpoint_base(path: str, *, resume: bool) -> dict[str, Any]:
    """Options a warm-start or resume checkpoint fixes (data, window, features, ...)."""
    from tradezoo.agents.checkpoint import load_checkpoint
    from tradezoo.agents.run import checkpoint_options

    location = Path(path)
    sidecar = location.with_suffix(".pt") if location.suffix == ".zip" else location
    if not sidecar.exists():
        raise FileNotFoundError(f"checkpoint {location}: no such file"
                                + (f" (nor its sidecar {sidecar})" if sidecar != location else ""))
    ckpt = load_checkpoint(sidecar)
    base = checkpoint_options(sidecar, ckpt)
    if resume:
        training = dict(ckpt.get("training") or {})
        if ckpt["kind"] == "ppo":
            base["arch_config"] = dict(training.pop("arch_config", {}) or {})
            training.pop("window", None)
            base["ppo"] = training
        else:
            base["arch_config"] = dict(ckpt["arch_config"])
            base["supervised"] = training
    return base


def _cmd_train_supervised(args: argparse.Namespace) -> int:
    from tradezoo.agents.multi import as_datasets
    from tradezoo.agents.run import prepare_from_options, write_options
    from tradezoo.agents.rundir import claim_run_dir
    from tradezoo.agents.supervised import evaluate_supervised, train_supervised

    base = _checkpoint_base(args.resume_from, resume=True) if args.resume_from else None
    options = _options("train-supervised", args, base)
    arch, resume = options.arch, options.resume_from
    default_out = Path(resume).parent if resume else Path("runs") / f"supervised-{arch}-{_stamp()}"
    out = Path(options.out or default_out)
    data = prepare_from_options(options)
    if resume:  # a mismatch is an error before anything is written
        from tradezoo.agents.checkpoint import load_checkpoint

        load_checkpoint(resume, expect_arch=arch, expect_feature_spec=data.feature_spec,
                        expect_kind="supervised")
    with claim_run_dir(out, resume_from=resume, overwrite=args.overwrite):
        write_options(out, options)
        print(f"tradezoo train supervised: {arch} on {options.data}; run directory {out}")
        result = train_supervised(
            data, arch, config=options.supervised, arch_config=dict(options.arch_config),
            out_dir=out, seed=options.seed, device=options.device, resume_from=resume,
        )
        evaluations = {part.name: evaluate_supervised(result.model, part, "val",
                                                      device=result.device)
                       for part in as_datasets(data)}
    print(f"[{arch}] {result.n_parameters:,} parameters, {result.steps} steps in "
          f"{result.train_seconds:.1f} s on {result.device}; best epoch {result.best_epoch + 1}")
    print("validation split (model selection; the test split is for `tradezoo backtest`):")
    for name, evaluation in evaluations.items():
        if len(evaluations) > 1:
            print(f"-- {name}")
        print(evaluation.report)
        print(evaluation.backtest.summary())
    print(f"checkpoint: {result.best_checkpoint} (resumable: {result.last_checkpoint})")
    print(f"next: tradezoo backtest {result.best_checkpoint} --split test")
    if data.label_spec.task == "direction":  # PPO warm start is defined for direction only
        print(f"      tradezoo train ppo --init-from {result.best_checkpoint}")
    return 0


def _cmd_train_ppo(args: argparse.Namespace) -> int:
    from tradezoo.agents.multi import as_datasets
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy, train_ppo
    from tradezoo.agents.rollout import choose_rollout_device
    from tradezoo.agents.run import prepare_from_options, write_options
    from tradezoo.agents.rundir import claim_run_dir

    if args.init_from and args.resume_from:
        from tradezoo.errors import ConfigError

        raise ConfigError("give --init-from (start from a supervised checkpoint) or --resume-from "
                         "(continue a PPO run), not both")
    checkpoint = args.init_from or args.resume_from
    base = _checkpoint_base(checkpoint, resume=bool(args.resume_from)) if checkpoint else None
    options = _options("train-ppo", args, base)
    arch = options.arch
    warm = options.init_from is not None
    default_out = Path("runs") / f"ppo-{arch}-{_stamp()}"
    if options.resume_from:  # continue in the run's own directory
        default_out = Path(options.resume_from).parent
        if default_out.name == "checkpoints":
            default_out = default_out.parent
    out = Path(options.out or default_out)
    data = prepare_from_options(options)
    if checkpoint:  # a mismatch is an error before anything is written
        from tradezoo.agents.checkpoint import load_checkpoint
        from tradezoo.agents.ppo import _check_checkpoint_fits

        sidecar = Path(checkpoint)
        ckpt = load_checkpoint(sidecar.with_suffix(".pt") if sidecar.suffix == ".zip" else sidecar,
                               expect_arch=arch, expect_feature_spec=data.feature_spec,
                               expect_kind="supervised" if warm else "ppo")
        _check_checkpoint_fits(ckpt, data)  # window, feature count, scaler
    with claim_run_dir(out, resume_from=options.resume_from, overwrite=args.overwrite):
        write_options(out, options)
        print(f"tradezoo train ppo: {arch} on {options.data}"
              f"{' warm-started from ' + str(options.init_from) if warm else ''}; run "
              f"directory {out}")
        result = train_ppo(
            data, arch, config=options.ppo, out_dir=out, seed=options.seed,
            device=options.device, init_from=options.init_from,
            resume_from=options.resume_from, progress=options.progress,
        )
        chosen = result.best_model or result.final_model
        # the validation pass steps one env: the rollout rule's device for a batch of 1
        where = choose_rollout_device(result.device, 1)
        policy = load_ppo_policy(chosen, device=where)
        evaluations = {part.name: evaluate_ppo(policy, part, "val", device=where)
                       for part in as_datasets(data)}
    print(f"[{arch}] {result.n_parameters:,} parameters, {result.num_timesteps:,} timesteps in "
          f"{result.train_seconds:.1f} s on {result.device}")
    print(f"validation split ({chosen.name}; the test split is for `tradezoo backtest`):")
    for name, evaluation in evaluations.items():
        if len(evaluations) > 1:
            print(f"-- {name}")
        print(evaluation.backtest.summary())
    print(f"checkpoint: {chosen} (final: {result.final_model})")
    print(f"next: tradezoo backtest {chosen} --split test")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from tradezoo.agents.config import torch_threads
    from tradezoo.agents.run import evaluate_checkpoint_datasets, write_backtest_files
    from tradezoo.backtest.report import print_report

    threads = torch_threads("auto")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    outcomes = evaluate_checkpoint_datasets(args.checkpoint, data=args.data, split=args.split,
                                            device=args.device)
    if len(outcomes) > 1:
        return _backtest_datasets(args, outcomes)
    outcome = outcomes[0]
    console = _console()
    console.print(f"{outcome.kind} checkpoint {args.checkpoint} ({outcome.arch}) on the "
                  f"{outcome.split} split of {outcome.data}")
    print_report(outcome.result, console=console, diagnostics=outcome.diagnostics)
    if outcome.classification is not None:
        _print_task_report(console, outcome.task, outcome.split, outcome.classification)
    try:  # the metrics are printed above even when the files cannot be written
        write_backtest_files(outcome, args.out, tearsheet=args.tearsheet)
    except ImportError as exc:  # the optional quantstats of --tearsheet
        from tradezoo.errors import ConfigError

        raise ConfigError(str(exc)) from None
    console.print(f"wrote {outcome.json_path}")
    console.print(f"wrote {outcome.png_path}")
    if outcome.html_path is not None:
        console.print(f"wrote {outcome.html_path}")
    return 0


def _print_task_report(console: Any, task: str | None, split: str,
                       report: dict[str, Any]) -> None:
    """One line per figure of a supervised model's report on ``split`` (docs/tasks.md)."""
    if task == "volatility":
        console.print(f"volatility forecast on {split} ({report['n']} rows, per bar): model MAE "
                      f"{report['mae']:.6f}, RMSE {report['rmse']:.6f}, QLIKE "
                      f"{report['qlike']:.4f}; naive (trailing) MAE {report['naive_mae']:.6f}, "
                      f"RMSE {report['naive_rmse']:.6f}, QLIKE {report['naive_qlike']:.4f}")
        return
    console.print(f"classifier on {split}: accuracy {report['accuracy']:.3f}, "
                  f"macro-F1 {report['macro_f1']:.3f}")
    if task == "multi_horizon":
        for key in (k for k in report if k.startswith("accuracy_")):
            name = key.removeprefix("accuracy_")
            console.print(f"  horizon {name}: accuracy {report[key]:.3f}, macro-F1 "
                          f"{report[f'macro_f1_{name}']:.3f}")


def _backtest_datasets(args: argparse.Namespace, outcomes: list[Any]) -> int:
    """``tradezoo backtest`` of a checkpoint on several datasets: one table row per dataset
    for the model and one for buy-and-hold, and the files of each dataset."""
    from tradezoo.agents.run import markdown_dataset_table, write_backtest_files

    console = _console()
    first = outcomes[0]
    console.print(f"{first.kind} checkpoint {args.checkpoint} ({first.arch}) on the "
                  f"{first.split} split of {len(outcomes)} datasets")
    rows = []
    for outcome in outcomes:
        name = outcome.dataset or outcome.data
        rows.append((name, outcome.kind, outcome.result.metrics.to_dict()))
        rows.append((name, "buy & hold", outcome.result.benchmark_metrics.to_dict()))
    print(markdown_dataset_table(rows), flush=True)
    for outcome in outcomes:
        if outcome.classification is not None:
            _print_task_report(console, outcome.task, f"{outcome.dataset} {outcome.split}",
                               outcome.classification)
        try:
            write_backtest_files(outcome, args.out, tearsheet=args.tearsheet,
                                 tag=outcome.dataset)
        except ImportError as exc:  # the optional quantstats of --tearsheet
            from tradezoo.errors import ConfigError

            raise ConfigError(str(exc)) from None
        console.print(f"wrote {outcome.json_path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from tradezoo.agents.compare import run_compare
    from tradezoo.agents.config import torch_threads
    from tradezoo.agents.sweep import ExecutionOptions

    options = _options("compare", args)
    command = "tradezoo " + " ".join(shlex.quote(a) for a in args.argv)
    device = options.device
    if args.gpus_per_run and device == "auto":
        device = "cuda"  # a cell given a GPU trains on it
    execution = ExecutionOptions(
        backend=args.backend, workers=args.workers,
        threads=torch_threads(options.threads) or 1, device=device,
        ray_address=args.ray_address, cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run, max_retries=args.max_retries,
        retry_failed=args.retry_failed)
    run_compare(options, command=command, folds=args.folds, fold_mode=args.fold_mode,
                execution=execution)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tradezoo.agents.run import run_main_job

    run_main_job(_options("run", args), overwrite=args.overwrite)
    return 0


def _add_common(parser: argparse.ArgumentParser, *, arch: bool = True) -> None:
    """Flags shared by the training commands (default None: "not given", see _flags)."""
    group = parser.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE",
                       help="YAML config file (flags override it; unknown keys are rejected)")
    group.add_argument("--data", metavar="NAME|PATH[,...]",
                       help="bundled dataset (default bybit-btcusdt-1h) or a CSV/Parquet bars "
                            "file; several, comma-separated, train one model across them "
                            "(docs/multi-asset.md)")
    if arch:
        group.add_argument("--arch", help="architecture (tradezoo.policies registry; default gru)")
    group.add_argument("--seed", type=int, help="random seed (default 0)")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"),
                       help="auto (CUDA when present; default), cpu or cuda")
    group.add_argument("--out", metavar="DIR", help="run directory (default runs/<name>)")
    group.add_argument("--window", type=int, help="bars per observation (default 64)")
    group.add_argument("--d-model", type=int, dest="d_model",
                       help="backbone width (arch_config.d_model; default the architecture's)")
    group.add_argument("--costs", choices=("auto", "bybit-linear", "equities", "zero"),
                       help="cost model (default auto: by the data source; a user file needs "
                            "one)")
    group.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any option, e.g. --set supervised.lr=3e-4 --set ppo.n_steps=512 "
                            "(repeatable)")
    group.add_argument("--threads", type=int,
                       help="torch CPU threads (default auto: 1 on machines with <= 4 cores)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_overwrite(parser: argparse.ArgumentParser, *, resume: bool = True) -> None:
    """``--overwrite``: replace the run a run directory already holds."""
    other = "; --resume-from continues it instead" if resume else ""
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the run the run directory already holds: a directory holds a run when "
             "it has config.json or a checkpoint (*.pt, *.zip) in it or a direct subfolder; "
             "without this flag that is an error" + other + ". The old run's files "
             "(config.json, run.log, report.md, checkpoints, reports, checkpoints/, tb/, "
             "supervised/, ppo/) are deleted first; other files are kept")


_BUDGET_HELP = ("a named overlay on the trainers' defaults (docs/training.md): smoke, tiny, "
                "small, default (the main job's budget: the SupervisedConfig and PPOConfig "
                "defaults themselves, 8 epochs and 100,352 PPO timesteps) or large (GPU); "
                "--epochs, --timesteps and --set override it")


def _add_budget_flags(parser: argparse.ArgumentParser, *, epochs: bool, timesteps: bool) -> None:
    parser.add_argument("--budget", help=_BUDGET_HELP)
    if epochs:
        parser.add_argument("--epochs", type=int, help="supervised epochs (supervised.epochs)")
    if timesteps:
        parser.add_argument("--timesteps", type=int, help="PPO timesteps (ppo.timesteps)")
        parser.add_argument("--n-envs", type=int, dest="n_envs",
                            help="parallel PPO training envs (ppo.n_envs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradezoo",
        description="Trading environments, sequence models and honest backtests on real bars.",
    )
    parser.add_argument("--version", action="version", version=f"tradezoo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="bundled datasets, files, downloads and the cache")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    listing = data_commands.add_parser("list", help="list bundled datasets and cached downloads")
    listing.set_defaults(handler=_cmd_data_list)

    info = data_commands.add_parser(
        "info", help="validation report and feature summary of a dataset or file"
    )
    info.add_argument("source", metavar="NAME|PATH", help="bundled dataset name or CSV/Parquet")
    info.add_argument(
        "--repair",
        choices=("safe", "none"),
        default="safe",
        help="validation policy: repair what is safe (default) or fail on any finding",
    )
    info.set_defaults(handler=_cmd_data_info)

    fetch = data_commands.add_parser(
        "fetch", help="download bars into the cache ($TRADEZOO_DATA_DIR, ~/.cache/tradezoo)"
    )
    sources = fetch.add_subparsers(dest="source", required=True, metavar="SOURCE")
    bybit = sources.add_parser("bybit", help="Bybit v5 klines (+ funding for perpetuals)")
    bybit.add_argument("symbol", help="e.g. BTCUSDT")
    bybit.add_argument("--interval", default="1h", help="1m..12h, 1d, 1w, 1M or Bybit codes")
    bybit.add_argument("--category", default="linear", choices=("linear", "inverse", "spot"))
    bybit.add_argument("--base-url", default=None, help="API base URL (default api.bybit.com)")
    yahoo = sources.add_parser("yahoo", help="Yahoo Finance bars through yfinance")
    yahoo.add_argument("symbol", help="ticker, e.g. SPY")
    yahoo.add_argument("--interval", default="1d", help="1m..1h, 1d, 1w, 1M")
    yahoo.add_argument(
        "--no-adjust", action="store_true", help="keep raw prices (default: dividend-adjusted)"
    )
    for sub, zone in ((bybit, "UTC"), (yahoo, "exchange-local, e.g. New York")):
        sub.add_argument("--start", required=True, help=f"first bar open time ({zone}), ISO")
        sub.add_argument("--end", required=True, help=f"last bar open time ({zone}), ISO")
        sub.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(handler=_cmd_data_fetch)

    train = commands.add_parser("train", help="train a model (supervised or PPO)")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    supervised = trainers.add_parser(
        "supervised", help="train an architecture on buy/hold/sell labels",
        description="Supervised buy/hold/sell training (early stopping on the validation "
                    "split); writes best.pt, last.pt and TensorBoard logs to --out.")
    _add_common(supervised)
    _add_budget_flags(supervised, epochs=True, timesteps=False)
    supervised.add_argument("--batch-size", type=int, dest="batch_size",
                            help="items per step (supervised.batch_size)")
    supervised.add_argument("--resume-from", metavar="CKPT",
                            help="continue from a last.pt or interrupted.pt")
    _add_overwrite(supervised)
    supervised.set_defaults(handler=_cmd_train_supervised)
    ppo = trainers.add_parser(
        "ppo", help="train with PPO, optionally warm-started from a supervised checkpoint",
        description="SB3 PPO on the train split, best model on the validation split; with "
                    "--init-from the policy starts as the classifier (data, window and "
                    "features are taken from the checkpoint).")
    _add_common(ppo)
    _add_budget_flags(ppo, epochs=False, timesteps=True)
    ppo.add_argument("--init-from", metavar="CKPT", help="supervised checkpoint to start from")
    ppo.add_argument("--resume-from", metavar="CKPT",
                     help="PPO checkpoint (.zip or its .pt) to continue")
    _add_overwrite(ppo)
    ppo.set_defaults(handler=_cmd_train_ppo)

    backtest = commands.add_parser(
        "backtest", help="backtest a supervised or PPO checkpoint against buy-and-hold",
        description="Prints the metrics table against buy-and-hold and writes "
                    "<checkpoint>.<split>.backtest.json and .png next to the checkpoint (or in "
                    "--out); --tearsheet adds a quantstats HTML page.")
    backtest.add_argument("checkpoint", metavar="CHECKPOINT",
                          help="a supervised .pt, or a PPO .zip or its .pt sidecar")
    backtest.add_argument("--split", choices=("train", "val", "test"), default="test")
    backtest.add_argument("--data", metavar="NAME|PATH[,...]",
                          help="data to backtest on, comma-separated for several (default: "
                               "what the checkpoint was trained on, each of its datasets)")
    backtest.add_argument("--out", metavar="DIR", help="where to write the reports")
    backtest.add_argument("--tearsheet", action="store_true",
                          help="also write a quantstats HTML tearsheet")
    backtest.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    backtest.set_defaults(handler=_cmd_backtest)

    compare = commands.add_parser(
        "compare", help="leaderboard: train every architecture on the same data and splits",
        description="Trains each architecture (and seed) on the same data and splits and "
                    "writes leaderboard.md, leaderboard.csv and equity.png of the test split.")
    _add_common(compare, arch=False)
    compare.add_argument("--archs", help="'all' (default) or a comma-separated list")
    compare.add_argument("--mode", choices=("supervised", "ppo", "both"),
                         help="supervised, ppo (from scratch) or both (PPO warm-started from "
                              "the classifier; default)")
    compare.add_argument("--seeds", type=int, help="seeds per architecture (default 1)")
    compare.add_argument("--ppo-archs", dest="ppo_archs",
                         help="with --mode ppo or both: the architectures that get PPO cells "
                              "('all', the default: every one of --archs; else a subset)")
    _add_budget_flags(compare, epochs=True, timesteps=True)
    grid = compare.add_argument_group(
        "grid and execution (docs/scaling.md); --data takes a comma-separated list")
    grid.add_argument("--folds", type=int, default=1,
                      help="walk-forward folds per dataset (default 1: the split fractions)")
    grid.add_argument("--fold-mode", choices=("rolling", "expanding"), default="expanding",
                      dest="fold_mode", help="training window of each fold (default expanding)")
    grid.add_argument("--backend", choices=("local", "ray"), default="local",
                      help="local processes (default) or Ray tasks")
    grid.add_argument("--workers", type=int, default=1,
                      help="local worker processes (default 1: in this process)")
    grid.add_argument("--ray-address", dest="ray_address", metavar="ADDRESS",
                      help="Ray cluster to join (default: start a local Ray runtime)")
    grid.add_argument("--cpus-per-run", type=float, default=1.0, dest="cpus_per_run",
                      help="Ray CPUs per cell (default 1)")
    grid.add_argument("--gpus-per-run", type=float, default=0.0, dest="gpus_per_run",
                      help="GPUs per cell (Ray: fractional, e.g. 0.25 runs 4 cells per GPU); "
                           "> 0 trains on CUDA")
    grid.add_argument("--max-retries", type=int, default=3, dest="max_retries",
                      help="Ray retries of a cell whose worker died (default 3; an exception "
                           "in a cell is recorded, never retried)")
    grid.add_argument("--retry-failed", action="store_true", dest="retry_failed",
                      help="run again the cells the store records as failed")
    compare.set_defaults(handler=_cmd_compare)

    run = commands.add_parser(
        "run", help="the main job: supervised pre-training, PPO warm start, test backtest",
        description="On the bundled BTCUSDT 1h bars: supervised pre-training, PPO "
                    "warm-started from it, the backtest on the test split. Writes runs/<name>/ "
                    "(logs, checkpoints, report.md, equity.png). The defaults (gru, budget "
                    "'default': 8 epochs, 100,352 PPO timesteps) take a few minutes on a 2-core "
                    "CPU; scale up with --budget large or flags, e.g. --arch mamba --epochs 30 "
                    "--timesteps 2000000 --device cuda.")
    _add_common(run)
    _add_budget_flags(run, epochs=True, timesteps=True)
    run.add_argument("--name", help="run name: the directory runs/<name>, one plain folder "
                                    "name (no '/', '..'; default <arch>-<date>-<time>)")
    _add_overwrite(run, resume=False)
    run.set_defaults(handler=_cmd_run)
    return parser


def _saved(exc: BaseException) -> str:
    """``"; resumable checkpoint: <path>"`` when a trainer saved one before ``exc``."""
    where = getattr(exc, "checkpoint", None)
    return f"; resumable checkpoint: {where}" if where else ""


def _os_error_line(exc: OSError) -> str:
    """One line naming the path of an ``OSError`` and the reason."""
    from tradezoo.errors import TradezooError

    if isinstance(exc, TradezooError) or not exc.filename:
        return str(exc)
    names = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return f"{names}: {exc.strerror or exc}"


def _exit_code(exc: Exception) -> int:
    """The error's own :attr:`~tradezoo.errors.TradezooError.exit_code`; for an
    other ``OSError`` 2 (a missing input file: bad input) or 3 (cannot be written or read)."""
    from tradezoo.errors import TradezooError

    if isinstance(exc, TradezooError):
        return exc.exit_code
    return 2 if isinstance(exc, FileNotFoundError) else 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tradezoo`` console script.

    A :class:`~tradezoo.errors.TradezooError` (bad data, config, checkpoint, run directory,
    an unwritable output) and an ``OSError`` (a missing input file, a permission refused, a
    full disk, a network failure: the machine's state, not a defect) print one line
    ``tradezoo: error: <message>``; any other exception is a defect and propagates with its
    traceback (exit code 1). ``TRADEZOO_DEBUG=1`` re-raises the one-line errors as well.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from tradezoo.errors import TradezooError

    debug = bool(os.environ.get("TRADEZOO_DEBUG"))  # show tracebacks instead of one line
    try:
        return int(args.handler(args))
    except (TradezooError, OSError) as exc:
        if debug:
            raise
        line = _os_error_line(exc) if isinstance(exc, OSError) else str(exc)
        print(f"tradezoo: error: {line}{_saved(exc)}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        # The trainers turn Ctrl-C into TrainingInterrupted after saving a checkpoint (and
        # say where); elsewhere there is nothing to save.
        where = getattr(exc, "checkpoint", None)
        print("tradezoo: interrupted" + (f"; resumable checkpoint: {where}" if where else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
