"""Fault test: ``tradezoo train supervised`` and ``tradezoo train ppo`` killed with SIGKILL.

Real subprocesses of the CLI with tiny budgets are killed at seeded moments: a random delay
after the run has written a checkpoint (a kill before the first checkpoint leaves nothing to
check), or the moment a temporary file of an atomic write appears (a kill in the middle of a
checkpoint write). After every kill:

- the run directory holds at least one consistent, loadable checkpoint: ``last.pt`` through
  :func:`~tradezoo.agents.checkpoint.load_checkpoint`; for PPO a ``.zip`` + ``.pt`` pair that
  :func:`~tradezoo.agents.ppo.load_ppo_policy` loads and whose zip is a readable archive at
  the sidecar's step (read here from the zip's JSON ``data`` entry); a pair the loader accepts
  is never inconsistent;
- nothing but final names and temporary files named as :mod:`tradezoo.agents.rundir` says
  (``.<name>.<random>.tmp``) is left, and those are gone once the next run claims the
  directory;
- starting a fresh run there is refused (the directory holds an interrupted run);
- ``--resume-from`` continues the run, and the last resume finishes it. The last resume
  sets the budget to what is done plus two epochs (PPO: two rollouts), so the test's time
  does not depend on where the kills landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.rundir import (
    LOCK_NAME,
    RunDirectoryError,
    claim_run_dir,
    find_temp_files,
    is_temp_file,
)

SEED = 20_240_612
"""Seeds the kill moments."""
KILLS = ("delay", "mid-write")
"""The moments of the kills of each trainer, in order (then one resume runs to the end)."""
MAX_DELAY_S = 1.0
"""Longest seeded delay after the trigger checkpoint."""
MID_WRITE_WAIT_S = 4.0
"""How long to watch for a temporary file before killing anyway."""
START_TIMEOUT_S = 120.0
"""Longest wait for a run to write its trigger checkpoint."""

SUPERVISED_EPOCHS = 400
PPO_TIMESTEPS = 100_000


def _common(bars_csv: Path) -> list[str]:
    return ["--data", str(bars_csv), "--costs", "bybit-linear", "--window", "16",
            "--d-model", "8", "--device", "cpu", "--quiet", "--threads", "1"]


@dataclass
class KillLog:
    """What happened at the kills (printed with the test's output)."""

    moments: list[str] = field(default_factory=list)
    stale_temp_files: list[Path] = field(default_factory=list)


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "tradezoo.cli", *argv], stdout=handle,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONHASHSEED": "0"})


def _wait_until(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before the kill:\n"
                                 + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no checkpoint in time:\n" + log.read_text()[-3000:])
        time.sleep(0.005)


def _temp_files_now(folders: list[Path]) -> bool:
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                if any(is_temp_file(entry.name) for entry in entries):
                    return True
        except FileNotFoundError:
            continue
    return False


def _kill_at(moment: str, rng: random.Random, process: subprocess.Popen[bytes],
             folders: list[Path], log: KillLog) -> None:
    """SIGKILL ``process`` at ``moment`` (the trigger checkpoint already exists)."""
    if moment == "delay":
        delay = rng.uniform(0.0, MAX_DELAY_S)
        time.sleep(delay)
        label = f"delay {delay:.3f} s"
    else:
        deadline = time.monotonic() + MID_WRITE_WAIT_S
        while not _temp_files_now(folders) and time.monotonic() < deadline:
            time.sleep(0.0005)
        label = "mid-write" if _temp_files_now(folders) else "mid-write (none seen: at timeout)"
    assert process.poll() is None, "the run finished before its kill; raise the budget"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    log.moments.append(label)


def _check_leftovers(run: Path, log: KillLog) -> list[Path]:
    """Only final names and documented temporary files; returns the temporary files."""
    for path in run.rglob(".*"):
        assert path.name == LOCK_NAME or is_temp_file(path), f"unexpected leftover {path}"
    temps = find_temp_files(run)
    log.stale_temp_files.extend(temps)
    return temps


def _refuses_a_fresh_start(run: Path) -> None:
    """A new run may not start in ``run`` (the claim every training command makes; the CLI's
    error for it is tested in test_run_dirs.py)."""
    with pytest.raises(RunDirectoryError, match="already holds a run"), claim_run_dir(run):
        pass


# ---------------------------------------------------------------------------- supervised


def _supervised_state(run: Path) -> int:
    """Checks the run's checkpoints; returns ``last.pt``'s step."""
    last = load_checkpoint(run / "last.pt", expect_kind="supervised")
    assert last["resume"] is not None
    if (run / "best.pt").exists():
        load_checkpoint(run / "best.pt", expect_kind="supervised")
    return int(last["step"])


def _supervised_chain(bars_csv: Path, tmp_path: Path) -> KillLog:
    run = tmp_path / "sup"
    console = tmp_path / "sup.log"
    rng = random.Random(SEED)
    log = KillLog()
    argv = ["train", "supervised", *_common(bars_csv), "--epochs", str(SUPERVISED_EPOCHS),
            "--set", "supervised.max_train_batches=2", "--set", "supervised.max_eval_batches=1",
            "--set", "supervised.features_dim=8", "--set", "supervised.patience=100000",
            "--set", "supervised.tensorboard=false", "--out", str(run)]
    process = _start(argv, console)
    _wait_until(lambda: (run / "last.pt").exists(), process, console, START_TIMEOUT_S)
    previous_temps: list[Path] = []
    step = 0
    for k, moment in enumerate(KILLS):
        if k:  # a resumed run: wait until it has written a newer checkpoint
            stamp = (run / "last.pt").stat().st_mtime_ns
            process = _start([*argv, "--resume-from", str(run / "last.pt")], console)
            _wait_until(lambda s=stamp: (run / "last.pt").stat().st_mtime_ns != s, process,
                        console, START_TIMEOUT_S)
            assert not any(p.exists() for p in previous_temps)  # the claim removed them
        _kill_at(moment, rng, process, [run], log)
        now = _supervised_state(run)
        assert now >= step  # progress is never lost
        step = now
        previous_temps = _check_leftovers(run, log)
        if k == 0:
            _refuses_a_fresh_start(run)
    done = int(load_checkpoint(run / "last.pt")["resume"]["epoch"])
    final = _start([*argv, "--resume-from", str(run / "last.pt"), "--epochs", str(done + 2)],
                   console)
    assert final.wait(timeout=600) == 0, console.read_text()[-3000:]
    last = load_checkpoint(run / "last.pt")
    assert last["resume"]["epoch"] == done + 2 and last["step"] == _supervised_state(run)
    assert find_temp_files(run) == []
    return log


# ----------------------------------------------------------------------------------- PPO


def _zip_step(zip_path: Path) -> int:
    """``num_timesteps`` recorded in an SB3 zip (its ``data`` entry is JSON; not unpickled)."""
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        return int(json.loads(archive.read("data"))["num_timesteps"])


def _ppo_pairs(run: Path) -> dict[Path, int]:
    """Consistent, loadable pairs ``{zip: step}``; a pair the loader accepts must be
    consistent."""
    from tradezoo.agents.checkpoint import CheckpointError
    from tradezoo.agents.ppo import load_ppo_policy

    good: dict[Path, int] = {}
    for sidecar in sorted([*run.glob("*.pt"), *run.glob("checkpoints/*.pt")]):
        zip_path = sidecar.with_suffix(".zip")
        try:
            _, ckpt = load_ppo_policy(zip_path)
        except (CheckpointError, FileNotFoundError):
            continue
        step = int(ckpt["num_timesteps"])
        assert zip_path.is_file() and _zip_step(zip_path) == step, (
            f"the loader accepted an inconsistent pair {zip_path}")
        good[zip_path] = step
    return good


def _ppo_chain(bars_csv: Path, tmp_path: Path) -> KillLog:
    run = tmp_path / "ppo"
    console = tmp_path / "ppo.log"
    rng = random.Random(SEED + 1)
    log = KillLog()
    argv = ["train", "ppo", *_common(bars_csv), "--timesteps", str(PPO_TIMESTEPS),
            "--n-envs", "2", "--set", "ppo.n_steps=32", "--set", "ppo.batch_size=64",
            "--set", "ppo.n_epochs=1", "--set", "ppo.episode_length=64",
            "--set", "ppo.checkpoint_freq=64", "--set", "ppo.eval_freq=128",
            "--set", "ppo.eval_episode_length=64", "--set", "ppo.features_dim=8",
            "--set", "ppo.tensorboard=false", "--out", str(run)]
    folders = [run, run / "checkpoints"]
    process = _start(argv, console)
    _wait_until(lambda: any((run / "checkpoints").glob("*.pt")), process, console,
                START_TIMEOUT_S)
    previous_temps: list[Path] = []
    newest = 0
    for k, moment in enumerate(KILLS):
        if k:
            pairs = _ppo_pairs(run)
            resume = max(pairs, key=pairs.__getitem__)
            before = set(run.glob("checkpoints/*.pt"))
            process = _start([*argv, "--resume-from", str(resume)], console)
            _wait_until(lambda b=before: bool(set(run.glob("checkpoints/*.pt")) - b), process,
                        console, START_TIMEOUT_S)
            assert not any(p.exists() for p in previous_temps)
        _kill_at(moment, rng, process, folders, log)
        pairs = _ppo_pairs(run)
        assert pairs, f"no consistent checkpoint pair after kill {k} ({log.moments[-1]})"
        assert max(pairs.values()) >= newest
        newest = max(pairs.values())
        previous_temps = _check_leftovers(run, log)
        if k == 0:
            _refuses_a_fresh_start(run)
    resume = max(pairs, key=pairs.__getitem__)
    final = _start([*argv, "--resume-from", str(resume), "--timesteps", str(newest + 128)],
                   console)
    assert final.wait(timeout=600) == 0, console.read_text()[-3000:]
    finished = _ppo_pairs(run)
    assert finished[run / "final_model.zip"] >= newest + 128
    assert find_temp_files(run) == []
    return log


def test_sigkill_supervised_and_ppo_training(bars_csv: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Both chains at once (each process uses one thread): half the wall time on 2 cores."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        supervised = pool.submit(_supervised_chain, bars_csv, tmp_path)
        ppo = pool.submit(_ppo_chain, bars_csv, tmp_path)
        logs = {"supervised": supervised.result(), "ppo": ppo.result()}
    with capsys.disabled():
        for name, log in logs.items():
            print(f"\n{name} kills: {log.moments}; stale temporary files removed on resume: "
                  f"{[p.name for p in log.stale_temp_files]}")
        print(f"fault test: {time.perf_counter() - started:.1f} s")
