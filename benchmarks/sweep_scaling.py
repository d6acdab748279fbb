"""How the compare grid scales on this machine: one grid of supervised smoke cells run
serially, in a local pool of 2 spawned processes, and as Ray tasks on a local Ray runtime
with 2 CPUs (docs/scaling.md).

Each backend writes its own results store (a fresh temporary folder), so every run trains
every cell. It prints, per backend: wall time, speedup over serial, the sum of the cells' own
wall times, and the per-cell overhead, ``(workers * wall - sum of cell walls) / cells``: the
worker-seconds per cell not spent inside a cell (process start, imports, scheduling, idle
workers at the end). Cells run with 1 torch thread and flush-denormal on (as every cell does);
the records of the three runs are compared for bit-identity.

    python benchmarks/sweep_scaling.py                 # 8 cells: gru, lstm, transformer, mlp x 2
    python benchmarks/sweep_scaling.py --archs gru,mlp --seeds 4 --bars 1500 --batches 4

The default cells (12 epochs, early stopping off) take about 5 s each serially: long against
a worker's start (about 3 s of imports inside its first cell), as a sweep's real cells are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _grid(archs: str, seeds: int, bars: int, batches: int, epochs: int, folder: Path) -> list:
    from tradezoo.agents.config import resolve_options, training_options
    from tradezoo.agents.sweep import expand_grid
    from tradezoo.data import load_dataset

    path = folder / "bars.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:bars].to_csv(path)
    flags = {"archs": archs, "mode": "supervised", "seeds": seeds, "budget": "smoke",
             "costs": "bybit-linear", "window": 16, "arch_config.d_model": 16,
             "supervised.features_dim": 16, "supervised.max_train_batches": batches,
             "supervised.epochs": epochs, "supervised.patience": epochs,
             "device": "cpu", "progress": False}
    options = training_options("compare", resolve_options("compare", flags=flags))
    return expand_grid(options, data=[str(path)], baselines=False)


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items()
            if k not in ("wall_time_s", "train_seconds", "worker")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="gru,lstm,transformer,mlp")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--bars", type=int, default=19_261, help="BTCUSDT 1h bars used")
    parser.add_argument("--batches", type=int, default=1000,
                        help="training batches per cell (the smoke budget's 4 make a cell "
                             "shorter than a worker's start)")
    parser.add_argument("--epochs", type=int, default=12,
                        help="training epochs per cell (cells must be long against a worker's "
                             "start, about 3 s of imports, for the pool to pay off)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from tradezoo.agents.sweep import ExecutionOptions, run_grid

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    quiet = open(os.devnull, "w")  # noqa: SIM115
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as tmp:
        folder = Path(tmp)
        tasks = _grid(args.archs, args.seeds, args.bars, args.batches, args.epochs, folder)
        backends = {"serial": (ExecutionOptions(), 1),
                    f"pool x{args.workers}": (ExecutionOptions(workers=args.workers),
                                              args.workers)}
        if not args.skip_ray:
            import ray

            ray.init(num_cpus=args.workers, log_to_driver=False, include_dashboard=False)
            backends[f"ray {args.workers} CPUs"] = (ExecutionOptions(backend="ray"),
                                                    args.workers)
        rows, reference = [], None
        for name, (execution, workers) in backends.items():
            started = time.perf_counter()
            result = run_grid(tasks, folder / name.replace(" ", "_"), execution,
                              keep_work=False, stream=quiet)
            wall = time.perf_counter() - started
            failed = [r for r in result.records if r["status"] != "done"]
            if failed:
                print(f"{name}: {len(failed)} failed: {failed[0]['error']}", file=sys.stderr)
                return 1
            cells = sum(float(r["wall_time_s"]) for r in result.records)
            same = None
            records = [_comparable(r) for r in result.records]
            if reference is None:
                reference = records
            else:
                same = records == reference
            rows.append((name, wall, cells, (workers * wall - cells) / len(tasks), same))
        if not args.skip_ray:
            ray.shutdown()
    serial = rows[0][1]
    print(f"{len(tasks)} supervised smoke cells ({args.archs} x {args.seeds} seeds, "
          f"{args.bars} bars, {args.epochs} epochs of at most {args.batches} training "
          f"batches); {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}")
    print("| backend | wall s | speedup | sum of cell walls s | overhead s/cell | bit-identical |")
    print("|---|---:|---:|---:|---:|---|")
    for name, wall, cells, overhead, same in rows:
        shown = "reference" if same is None else ("yes" if same else "NO")
        print(f"| {name} | {wall:.1f} | {serial / wall:.2f}x | {cells:.1f} | {overhead:.2f} | "
              f"{shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
