"""One error hierarchy, and what the command line makes of each error.

Every public exception class of tradezoo derives from :class:`tradezoo.errors.TradezooError`
(warnings are listed by name); the CLI prints those as one line and lets any other exception
through with its traceback; every command checks its input before it writes anything.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tradezoo
from tradezoo.cli import main
from tradezoo.errors import ConfigError, TradezooError

ROOT = Path(__file__).resolve().parents[1]

# Warning classes are not errors: they are listed here so that a new one is added on purpose.
WARNINGS = {"FundingAlignmentWarning", "CacheCorruptWarning", "NativeCacheWarning"}


def _tradezoo_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(tradezoo.__path__, "tradezoo."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, Exception)
                    and value.__module__ == module.__name__ and not name.startswith("_")):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_public_exception_is_a_tradezoo_error_or_a_listed_warning() -> None:
    classes = _tradezoo_exception_classes()
    warnings = {path.rsplit(".", 1)[1] for path, cls in classes.items()
                if issubclass(cls, Warning)}
    assert warnings == WARNINGS
    strays = sorted(path for path, cls in classes.items()
                    if not issubclass(cls, Warning) and not issubclass(cls, TradezooError))
    assert strays == []
    # The named errors the issue lists are all in the walk.
    names = {path.rsplit(".", 1)[1] for path in classes}
    assert {"DataError", "SourceError", "ConfigError", "CheckpointError", "OutputError",
            "RunDirectoryError", "NonFiniteLossError", "ModelTooLargeError",
            "CacheCorruptError", "NativeBuildError", "MissingExtraError"} <= names


def test_errors_keep_their_builtin_bases_and_old_import_paths() -> None:
    from tradezoo.agents.checkpoint import CheckpointError
    from tradezoo.agents.config import ConfigError as ConfigFromAgents
    from tradezoo.agents.rundir import OutputError, RunDirectoryError
    from tradezoo.agents.supervised import NonFiniteLossError
    from tradezoo.data.cache import CacheCorruptError
    from tradezoo.data.errors import BybitAPIError, DataError, SourceError
    from tradezoo.policies.size import ModelTooLargeError

    assert ConfigFromAgents is ConfigError
    for cls, builtin in ((ConfigError, ValueError), (DataError, ValueError),
                         (CheckpointError, ValueError), (ModelTooLargeError, ValueError),
                         (RunDirectoryError, ValueError), (SourceError, RuntimeError),
                         (BybitAPIError, RuntimeError), (NonFiniteLossError, RuntimeError),
                         (OutputError, OSError), (CacheCorruptError, OSError)):
        assert issubclass(cls, TradezooError) and issubclass(cls, builtin), cls
    assert issubclass(ModelTooLargeError, ConfigError)


# ----------------------------------------------------------------- the CLI's error lines


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("tradezoo: error: ") and err.count("\n") == 1, err
    return err


def _job_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    import tradezoo.agents.run as run_module

    def job(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(run_module, "run_main_job", job)


def test_tradezoo_errors_and_os_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tradezoo.agents.rundir import OutputError
    from tradezoo.data.errors import DataError

    monkeypatch.chdir(tmp_path)
    _job_raising(monkeypatch, DataError("bars.csv: row 3 has high < low"))
    assert main(["run"]) == 2
    assert "bars.csv: row 3 has high < low" in _one_line(capsys)
    _job_raising(monkeypatch, OutputError("cannot write runs/x: disk full"))
    assert main(["run"]) == 3
    assert "cannot write runs/x: disk full" in _one_line(capsys)
    _job_raising(monkeypatch, PermissionError(13, "Permission denied", "data/bars.csv"))
    assert main(["run"]) == 3
    assert "tradezoo: error: data/bars.csv: Permission denied" in _one_line(capsys)
    _job_raising(monkeypatch, FileNotFoundError(2, "No such file or directory", "in.csv"))
    assert main(["run"]) == 2
    assert "in.csv: No such file or directory" in _one_line(capsys)


def test_other_exceptions_are_defects_with_their_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for defect in (ValueError("a defect"), TypeError("a defect"), KeyError("a defect")):
        _job_raising(monkeypatch, defect)
        with pytest.raises(type(defect)):
            main(["run"])
        assert "tradezoo: error" not in capsys.readouterr().err


def test_a_defect_exits_1_with_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import tradezoo.agents.run as run_module\n"
        "def job(*args, **kwargs):\n"
        "    raise TypeError('a defect inside the job')\n"
        "run_module.run_main_job = job\n"
        "from tradezoo.cli import main\n"
        "sys.exit(main(['run']))\n"
    )
    env = {**os.environ, "TRADEZOO_DATA_DIR": str(tmp_path / "data")}
    env.pop("TRADEZOO_DEBUG", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr
    assert "TypeError: a defect inside the job" in out.stderr
    assert "tradezoo: error" not in out.stderr


# -------------------------------------------------------- nothing written before the checks


@pytest.mark.parametrize("argv", [
    ["train", "supervised", "--arch", "no-such-arch"],
    ["train", "ppo", "--arch", "no-such-arch"],
    ["run", "--arch", "no-such-arch"],
    ["compare", "--archs", "gru,no-such-arch"],
    ["train", "supervised", "--set", "arch_config.no_such_key=1"],
    ["compare", "--archs", "gru", "--mode", "ppo", "--set", "ppo.gamma=2"],
])
def test_bad_configuration_writes_nothing(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default run directories are ./runs/<name>
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path / "data"))
    assert main([*argv, "--quiet"]) == 2
    err = _one_line(capsys)
    assert "no-such-arch" in err or "no_such_key" in err or "gamma" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_backtest_and_data_fetch_write_nothing_on_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(cache))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["backtest", str(garbage), "--out", str(tmp_path / "reports")]) == 2
    assert "cannot be read as a tradezoo checkpoint" in _one_line(capsys)
    for argv, message in (
        (["bybit", "BTCUSDT", "--interval", "7m"], "unknown Bybit kline interval '7m'"),
        (["yahoo", "SPY", "--interval", "3d"], "unsupported Yahoo interval '3d'"),
    ):
        assert main(["data", "fetch", *argv, "--start", "2024-01-01", "--end", "2024-01-02",
                     "--quiet"]) == 2
        assert message in _one_line(capsys)
    assert main(["data", "fetch", "bybit", "BTCUSDT", "--start", "2024-02-01", "--end",
                 "2024-01-01", "--base-url", "http://127.0.0.1:9", "--quiet"]) == 2
    assert "is after end" in _one_line(capsys)
    assert main(["data", "fetch", "yahoo", "SPY", "--start", "someday", "--end",
                 "2024-01-01"]) == 2
    assert "start='someday' is not a date" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt", "work"]
    assert list(work.iterdir()) == []


def test_an_unknown_architecture_is_a_config_error() -> None:
    from tradezoo.policies.registry import get_architecture

    with pytest.raises(ConfigError, match="unknown architecture 'nope'; valid names"):
        get_architecture("nope")
