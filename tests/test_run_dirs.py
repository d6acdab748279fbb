"""Run directories and write failures: one run at a time per directory (a lock the OS releases
when the process dies), no new run over an old one without ``--resume-from`` or
``--overwrite``, run names that stay inside ``runs/``, a one-line error naming the path when
an output folder cannot be written, and ``interrupted.*`` saved when training fails for any
reason.

Read-only folders are real: ``chmod 0555`` for a normal user; as root (who ignores modes) the
folder is made immutable with ``chattr +i`` (the test is skipped where neither works).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.rundir import (
    LOCK_NAME,
    RunDirectoryError,
    RunDirectoryLocked,
    claim_run_dir,
    find_temp_files,
    is_temp_file,
    run_files,
    validate_run_name,
)
from tradezoo.cli import main
from tradezoo.data import load_dataset

TINY_SUPERVISED = ["--epochs", "1", "--set", "supervised.max_train_batches=2",
                   "--set", "supervised.features_dim=8"]
TINY_PPO = ["--timesteps", "128", "--n-envs", "2", "--set", "ppo.n_steps=64",
            "--set", "ppo.batch_size=64", "--set", "ppo.episode_length=96",
            "--set", "ppo.eval_freq=0"]

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- helpers


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` made unwritable for this process for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = [lambda: folder.chmod(0o755)]
    else:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder read-only as root here: {done.stderr.strip()}")
        undo = [lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)]
    try:
        try:
            (folder / "probe").write_text("x")
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip(f"{folder} is still writable")
        yield folder
    finally:
        for step in undo:
            step()


def make_read_only(folder: Path) -> None:
    """Make ``folder`` unwritable now (inside a training callback); :func:`make_writable`
    undoes it."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:
        subprocess.run(["chattr", "+i", str(folder)], check=True)


def make_writable(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("tradezoo: error:")]
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.fixture(scope="module")
def common(bars_csv: Path) -> list[str]:
    return ["--data", str(bars_csv), "--costs", "bybit-linear", "--window", "16",
            "--d-model", "8", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def supervised_run(common: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sup") / "run"
    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../x", "..", ".", "", "  ", "a/b", "/abs/path", "a\\b",
                                  "x\0y"])
def test_bad_run_names_are_refused(name: str) -> None:
    with pytest.raises(RunDirectoryError, match=r"run name .*must be one plain folder name"):
        validate_run_name(name)


@pytest.mark.parametrize("name", ["gru-20240101", "my.run", "..hidden-but-plain", "ü"])
def test_plain_run_names_are_accepted(name: str) -> None:
    assert validate_run_name(name) == name


def test_run_name_outside_runs_is_refused_before_anything_is_written(
    common: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert main(["run", *common, *TINY_SUPERVISED, *TINY_PPO, "--name", "../../x"]) == 2
    assert "run name '../../x'" in _error_line(capsys)
    assert not (tmp_path / "a" / "x").exists() and not (cwd / "runs").exists()


# ---------------------------------------------------------------------------------- lock


def _hold(directory: Path) -> subprocess.Popen[str]:
    """Another process that claims ``directory`` and keeps it until killed."""
    code = ("import sys, time\n"
            "from tradezoo.agents.rundir import claim_run_dir\n"
            "claim = claim_run_dir(sys.argv[1])\n"
            "claim.__enter__()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_locked_directory_fails_at_once(
    common: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out)]) == 2
        assert holder.poll() is None  # refused while the lock is held: it did not wait for it
        line = _error_line(capsys)
        assert f"run directory {out} is in use by another tradezoo process" in line
        assert not (out / "config.json").exists()  # nothing of the second run was written
        with pytest.raises(RunDirectoryLocked, match="inside run directory"), claim_run_dir(
                out / "supervised"):
            pass
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock
        holder.wait()
    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out)]) == 0
    assert (out / LOCK_NAME).is_file() and (out / "best.pt").is_file()


# ----------------------------------------------------------------------------- holds a run


def test_run_files_define_holding_a_run(tmp_path: Path) -> None:
    assert run_files(tmp_path / "absent") == []
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1").write_text("")
    (tmp_path / LOCK_NAME).write_text("")
    (tmp_path / ".last.pt.abc123.tmp").write_text("")
    (tmp_path / "best.test.backtest.json").write_text("{}")
    assert run_files(tmp_path) == []
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ppo_128_steps.zip").write_text("")
    assert run_files(tmp_path) == [tmp_path / "checkpoints" / "ppo_128_steps.zip"]
    (tmp_path / "config.json").write_text("{}")
    assert tmp_path / "config.json" in run_files(tmp_path)


def test_a_directory_holding_a_run_needs_resume_from_or_overwrite(
    supervised_run: Path, common: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    shutil.copytree(supervised_run, out)
    (out / "notes.txt").write_text("mine")
    (out / "interrupted.pt").write_bytes((out / "last.pt").read_bytes())
    before = (out / "best.pt").read_bytes()

    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert f"run directory {out} already holds a run" in line
    assert "--resume-from" in line and "--overwrite" in line
    assert (out / "best.pt").read_bytes() == before  # untouched

    ppo_out = tmp_path / "ppo"
    ppo_out.mkdir()
    (ppo_out / "config.json").write_text("{}")
    assert main(["train", "ppo", "--init-from", str(out / "best.pt"), *TINY_PPO, "--quiet",
                 "--device", "cpu", "--out", str(ppo_out)]) == 2
    assert f"run directory {ppo_out} already holds a run" in _error_line(capsys)
    assert main(["run", *common, *TINY_SUPERVISED, *TINY_PPO, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "already holds a run" in line and "--resume-from" not in line  # run cannot resume

    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out),
                 "--resume-from", str(out / "last.pt"), "--overwrite"]) == 2
    assert "--overwrite would delete the run" in _error_line(capsys)
    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out),
                 "--resume-from", str(out / "last.pt")]) == 0
    capsys.readouterr()
    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "interrupted.pt").exists()  # the old run's files are gone
    assert (out / "notes.txt").read_text() == "mine"  # other files are kept
    assert load_checkpoint(out / "best.pt")["step"] >= 1


def test_claim_removes_stale_temporary_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    stale = [out / ".last.pt.k2j3h4.tmp", out / "checkpoints" / ".ppo_64_steps.zip.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
        assert is_temp_file(path)
    assert find_temp_files(out) == sorted(stale)
    with claim_run_dir(out) as claim:
        assert sorted(claim.removed_temp_files) == sorted(stale)
    assert find_temp_files(out) == []


# ------------------------------------------------------------------------ write failures


def test_unwritable_output_is_one_line_naming_the_path(
    supervised_run: Path, common: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bybit_server import FakeBybit

    monkeypatch.setenv("COLUMNS", "200")
    with read_only(tmp_path / "ro") as ro:
        commands = {
            "train supervised": ["train", "supervised", *common, *TINY_SUPERVISED],
            "train ppo": ["train", "ppo", "--init-from", str(supervised_run / "best.pt"),
                          *TINY_PPO, "--quiet", "--device", "cpu"],
            "run": ["run", *common, *TINY_SUPERVISED, *TINY_PPO],
            "compare": ["compare", *common, "--archs", "gru", "--mode", "supervised",
                        *TINY_SUPERVISED],
        }
        for label, argv in commands.items():
            assert main([*argv, "--out", str(ro / "out")]) == 3, label
            line = _error_line(capsys)
            assert str(ro / "out") in line, (label, line)

        # backtest: the metrics first, then the error naming the file it could not write
        assert main(["backtest", str(supervised_run / "best.pt"), "--out", str(ro)]) == 3
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        assert "buy & hold" in captured.out and "sharpe" in captured.out  # the metrics table
        assert "classifier on test: accuracy" in captured.out
        assert f"cannot write {ro / 'best.test.backtest.json'}" in captured.err
        assert len(captured.err.strip().splitlines()) == 1

        monkeypatch.setenv("TRADEZOO_DATA_DIR", str(ro / "cache"))
        with FakeBybit() as fake:
            assert main(["data", "fetch", "bybit", "BTCUSDT", "--interval", "1h", "--start",
                         "2024-01-01", "--end", "2024-01-03", "--quiet",
                         "--base-url", fake.url]) == 3
        assert str(ro / "cache") in _error_line(capsys)


# ----------------------------------------------------------- failures inside the training loop


@pytest.fixture(scope="module")
def data():
    from tradezoo.agents.data import prepare_data

    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1500], window=16)


def _supervised_config(**overrides):
    from tradezoo.agents.supervised import SupervisedConfig

    base = dict(epochs=2, batch_size=32, max_train_batches=3, max_eval_batches=1,
                eval_batch_size=64, progress=False, tensorboard=False, features_dim=8)
    base.update(overrides)
    return SupervisedConfig(**base)


def test_supervised_failure_of_any_kind_saves_interrupted_and_reraises(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from tradezoo.agents.supervised import TrainState, train_supervised

    kwargs = dict(config=_supervised_config(), arch_config={"d_model": 8}, device="cpu",
                  verbose=False)

    def explode(state: TrainState) -> None:
        if state.step == 4:
            raise RuntimeError("a callback broke")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a callback broke") as info:
        train_supervised(data, "gru", out_dir=out, callbacks=[explode], **kwargs)
    saved = out / "interrupted.pt"
    assert info.value.checkpoint == saved
    assert "failed (RuntimeError: a callback broke) at epoch 2, step 4" in capsys.readouterr(
    ).err
    ckpt = load_checkpoint(saved)
    assert ckpt["step"] == 4 and ckpt["resume"]["epoch"] == 1 and ckpt["resume"]["batch"] == 1
    resumed = train_supervised(data, "gru", out_dir=out, resume_from=saved, **kwargs)
    assert resumed.steps == 6


def test_supervised_run_directory_turning_read_only_saves_elsewhere(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from tradezoo.agents.supervised import TrainState, train_supervised

    out = tmp_path / "run"
    out.mkdir()

    def lock_out(state: TrainState) -> None:
        if state.step == 2:
            make_read_only(out)

    try:
        with pytest.raises(OSError) as info:
            train_supervised(data, "gru", out_dir=out, callbacks=[lock_out],
                             config=_supervised_config(), arch_config={"d_model": 8},
                             device="cpu", verbose=False)
    finally:
        make_writable(out)
    rescued = info.value.checkpoint  # type: ignore[attr-defined]
    try:
        assert rescued is not None and rescued.parent != out
        assert rescued.parent.name.startswith("tradezoo-rescue-")
        assert rescued.parent.parent == Path(tempfile.gettempdir())
        assert (rescued.parent.stat().st_mode & 0o077) == 0  # private to the user
        assert load_checkpoint(rescued)["resume"] is not None
        assert str(rescued) in capsys.readouterr().err
        assert not (out / "interrupted.pt").exists() and find_temp_files(out) == []
    finally:
        if rescued is not None:
            shutil.rmtree(rescued.parent, ignore_errors=True)


def test_ppo_failure_saves_interrupted_when_its_checkpoint_folder_turns_read_only(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from tradezoo.agents.ppo import PPOConfig, load_ppo_policy, train_ppo

    out = tmp_path / "ppo"
    out.mkdir()

    class LockOut(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 130:  # second rollout; the checkpoint at 256 will fail
                make_read_only(out / "checkpoints")
            return True

    config = PPOConfig(timesteps=384, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
                       episode_length=96, arch_config={"d_model": 8}, features_dim=8,
                       eval_freq=0, checkpoint_freq=256, tensorboard=False)
    try:
        with pytest.raises(OSError) as info:
            train_ppo(data, "gru", config=config, out_dir=out, device="cpu", progress=False,
                      verbose=False, callbacks=[LockOut()])
    finally:
        make_writable(out / "checkpoints")
    saved = info.value.checkpoint  # type: ignore[attr-defined]
    assert saved == out / "interrupted.zip"  # the run directory itself was still writable
    assert "PPO training of 'gru' failed" in capsys.readouterr().err
    _, ckpt = load_ppo_policy(saved)
    assert ckpt["num_timesteps"] == 256
    resumed = train_ppo(data, "gru", config=config, out_dir=out, device="cpu",
                        resume_from=saved, progress=False, verbose=False)
    assert resumed.num_timesteps == 384
