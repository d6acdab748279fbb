"""Run one measurement in a fresh interpreter and read back its JSON result.

A worker is ``python -m harness.<module> --worker ...``; it prints one line starting with
:data:`RESULT_MARK` followed by a JSON object. Everything else it prints is ignored.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1]
"""``benchmarks/``: holds the ``harness`` package and the benchmark scripts."""
REPO_ROOT = BENCH_DIR.parent
RESULT_MARK = "@@RESULT@@"


def child_env(extra: Mapping[str, str] | None = None, *, threads: int = 1) -> dict[str, str]:
    """This process's environment for a worker: ``benchmarks/`` and the repository root on
    ``PYTHONPATH`` (so ``harness`` and the benchmark modules import), and ``threads``
    BLAS/OpenMP threads unless the caller's environment already fixes them."""
    parts = [str(BENCH_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, str(threads))
    env.update(extra or {})
    return env


def run_worker(
    module: str,
    argv: Sequence[str],
    *,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python -m module *argv`` and return the JSON object it printed.

    Returns:
        The worker's result, or ``{"error": "..."}`` with the tail of its stderr when it
        printed none (an import error, a crash, a kill by the OOM killer).
    """
    proc = subprocess.run(
        [python, "-m", module, *argv],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else child_env(),
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stderr or proc.stdout).strip()[-600:]
    return {"error": f"worker exited with {proc.returncode}: {tail}"}


def emit(result: Mapping[str, Any]) -> None:
    """Print a worker's result in the form :func:`run_worker` reads."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def loadavg() -> str:
    """``/proc/loadavg`` (empty where it does not exist): the machine's load, for the log."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


def versions(packages: Iterable[str]) -> dict[str, Any]:
    """Python, platform, CPU model, CPU count and the installed version of each package."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or "",
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
