"""Package-level promises: cheap import, version, console script, CI/README agreement."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tradezoo

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == tradezoo.__version__


def test_import_is_cheap_and_never_imports_torch() -> None:
    # A fresh interpreter: this test process may already have torch loaded by other tests.
    code = (
        "import json, sys\n"
        "import tradezoo, tradezoo.data, tradezoo.cli\n"
        "from tradezoo.data import load_dataset, compute_features, make_labels, time_splits\n"
        "load_dataset('bybit-btcusdt-1h')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'stable_baselines3', 'tensorboard', 'yfinance', 'matplotlib', 'numba'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_layout_exists() -> None:
    for package in ("data", "envs", "backtest", "policies", "agents"):
        assert (ROOT / "tradezoo" / package / "__init__.py").is_file(), package
    for folder in ("scripts", "benchmarks", "tests"):
        assert (ROOT / folder).is_dir(), folder


def test_bundled_files_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"tradezoo.data" = ["bundled/*.csv.gz"]' in text
    from tradezoo.data.datasets import bundled_path, list_datasets

    for info in list_datasets():
        if info.generated:  # generated at load time from a seed: no file to ship
            assert info.file is None, info.name
            continue
        assert info.file is not None and bundled_path(info.file).is_file(), info.file


def _readme_command(kind: str) -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n(.*?)\n## ", readme, re.S)
    assert block, "README.md needs a Quickstart section"
    commands = re.findall(r"^(pip install .+)$", block.group(1), re.M)
    assert len(commands) == 2, f"the Quickstart has exactly two commands, found {commands}"
    return commands[1] if kind == "test" else commands[0]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    assert "pip install torch==2.13.0" in script
    assert _readme_command("test") in script.splitlines()
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run needs its run bit"


def test_readme_main_job_is_tradezoo_run() -> None:
    """The Quickstart's first command installs and runs the main job; the command
    exists in the CLI with defaults (tests/test_cli_train.py runs it with tiny budgets)."""
    from tradezoo.cli import build_parser

    assert _readme_command("main") == "pip install -e . && tradezoo run"
    args = build_parser().parse_args(["run"])
    assert args.handler.__name__ == "_cmd_run"


def test_exported_functions_survive_their_submodule_import() -> None:
    """Every exported name of a package stays what it names after all the package's submodules
    were imported (the import system binds a submodule onto its package, over a lazily resolved
    function of the same name)."""
    code = (
        "import importlib, pkgutil, types\n"
        "for pkg_name in ('tradezoo.backtest', 'tradezoo.policies', 'tradezoo.data',"
        " 'tradezoo.envs', 'tradezoo.agents'):\n"
        "    pkg = importlib.import_module(pkg_name)\n"
        "    for info in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg_name}.{info.name}')\n"
        "    for name in pkg.__all__:\n"
        "        if isinstance(getattr(pkg, name), types.ModuleType):\n"
        "            print(f'{pkg_name}.{name}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == []
