"""Cost of the causal decompositions on the bundled BTCUSDT 1h bars: first and cached runs.

For each group (``wavelet``, ``vmd``, defaults unless flags say otherwise) it times
``compute_features(bars, FeatureSpec(**{group: settings}))`` twice in a fresh, private cache
folder: the first call computes and writes the cache, the second reads it. ``--bars N`` keeps
the last ``N`` bars only; the VMD figure for the whole series is then also printed as an
extrapolation (seconds per window x windows of the whole series), labelled as such.

Usage (repository root, ``pip install -e ".[decomp]"``)::

    python benchmarks/decompositions.py --workers 2                # whole series
    python benchmarks/decompositions.py --workers 2 --bars 2000    # a slice, extrapolated
    python benchmarks/decompositions.py --workers 2 --cache-dir ~/tz-cache   # keep the cache

``--cache-dir`` times the first call into that data folder (``TRADEZOO_DATA_DIR``) and keeps
it, so a training command run with the same ``TRADEZOO_DATA_DIR`` reads the computed columns;
the folder must not hold them already (the first call would then be a cached one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time

import pandas as pd

from tradezoo.data import load_dataset
from tradezoo.data.features import FeatureSpec, compute_features


def _timed(bars: pd.DataFrame, spec: FeatureSpec) -> float:
    start = time.perf_counter()
    compute_features(bars, spec)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="VmdSpec.workers")
    parser.add_argument("--bars", type=int, default=None, help="time the last N bars only")
    parser.add_argument("--groups", default="wavelet,vmd")
    parser.add_argument("--cache-dir", default=None,
                        help="data folder to compute into and keep (default: a temporary one)")
    args = parser.parse_args()

    full = load_dataset("bybit-btcusdt-1h")
    bars = full if args.bars is None else full.iloc[-args.bars:]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"bybit-btcusdt-1h: {len(bars)} of {len(full)} bars; {cores} cores; "
          f"{platform.processor() or platform.machine()}")
    with contextlib.ExitStack() as stack:
        cache = args.cache_dir or stack.enter_context(tempfile.TemporaryDirectory())
        os.environ["TRADEZOO_DATA_DIR"] = os.path.expanduser(cache)
        for group in args.groups.split(","):
            settings = {"workers": args.workers} if group == "vmd" else {}
            spec = FeatureSpec(**{group: settings})
            window = getattr(spec, group).window
            first = _timed(bars, spec)
            cached = _timed(bars, spec)
            print(f"{group:8s} first {first:9.2f} s   cached {cached:6.3f} s   "
                  f"settings {getattr(spec, group).to_dict()}")
            if group == "vmd" and args.bars is not None and len(bars) < len(full):
                windows, all_windows = len(bars) - window + 1, len(full) - window + 1
                print(f"{'':8s} extrapolated to all {len(full)} bars: "
                      f"{first / windows * all_windows:9.1f} s "
                      f"({first / windows * 1e3:.1f} ms per window x {all_windows} windows)")


if __name__ == "__main__":
    main()
