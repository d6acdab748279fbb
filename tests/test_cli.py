"""The ``tradezoo`` command, run as users run it (a subprocess) and in process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tradezoo.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradezoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"TRADEZOO_DATA_DIR": str(env_dir), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "list"],
        ["data", "info"],
        ["data", "fetch"],
        ["data", "fetch", "bybit"],
        ["data", "fetch", "yahoo"],
    ],
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tradezoo" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    exe = shutil.which("tradezoo") or str(Path(sys.executable).parent / "tradezoo")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("tradezoo 0.1.0")


def test_data_info_bundled(tmp_path: Path) -> None:
    out = _run("data", "info", "bybit-btcusdt-1h", env_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "19261 rows in, 19261 rows out" in out.stdout
    assert "all checks passed" in out.stdout
    assert "funding: 2348 non-zero funding stamps" in out.stdout
    assert "rsi_14" in out.stdout and "warm-up rows dropped" in out.stdout


def test_data_info_path_reports_repairs(tmp_path: Path) -> None:
    src = ROOT / "tradezoo" / "data" / "bundled" / "yahoo_SPY_1d_2007-12-31_2017-12-29.csv.gz"
    out = _run("data", "info", str(src), env_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "low_above_open_close" in out.stdout
    assert "2015-03-05" in out.stdout and "2015-03-30" in out.stdout


def test_data_info_strict_policy_fails_with_clear_message(tmp_path: Path) -> None:
    out = _run("data", "info", "yahoo-spy-1d", "--repair", "none", env_dir=tmp_path)
    assert out.returncode == 2
    assert "tradezoo: error:" in out.stderr and "low_above_open_close" in out.stderr


def test_data_info_unknown_name_lists_datasets(tmp_path: Path) -> None:
    out = _run("data", "info", "btc-hourly", env_dir=tmp_path)
    assert out.returncode == 2
    assert "unknown dataset 'btc-hourly'" in out.stderr and "bybit-btcusdt-1h" in out.stderr


def test_data_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "bybit-btcusdt-1h" in out and "yahoo-spy-1d" in out
    assert "empty" in out


def test_data_fetch_bybit_writes_cache_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bybit_server import FakeBybit

    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    argv = ["data", "fetch", "bybit", "BTCUSDT", "--interval", "1h", "--start", "2024-01-01",
            "--end", "2024-03-01"]
    with FakeBybit() as fake:
        assert main([*argv, "--base-url", fake.url]) == 0
        first = capsys.readouterr()
        assert "BTCUSDT 1h: 1441 bars from 2024-01-01 00:00:00+00:00" in first.out
        assert "downloaded 1441 rows" in first.out
        assert (tmp_path / "bybit-linear" / "BTCUSDT_1h.parquet").is_file()
        assert "%" in first.err  # tqdm's progress bar over the two kline pages
        pages = len(fake.requests)
        assert main([*argv, "--base-url", fake.url, "--quiet"]) == 0
        assert "nothing downloaded" in capsys.readouterr().out
        assert len(fake.requests) == pages  # served from the cache
    assert main(["data", "list"]) == 0
    assert "BTCUSDT_1h.parquet" in capsys.readouterr().out
