"""The training commands: ``tradezoo train supervised|ppo``, ``backtest``, ``run``; options from
flags, config files and ``--set``; bad input -> one clear line and exit code 2.

Tiny budgets on 1,500 bundled bars written to a CSV (the user-file path of ``--data``): these
check the plumbing, not skill.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.config import (
    BUDGETS,
    ConfigError,
    parse_assignment,
    read_config_file,
    resolve_options,
)
from tradezoo.backtest.formatting import json_safe
from tradezoo.cli import main

TINY_SUPERVISED = ["--epochs", "1", "--set", "supervised.max_train_batches=3",
                   "--set", "supervised.features_dim=16"]
TINY_PPO = ["--timesteps", "128", "--n-envs", "2", "--set", "ppo.n_steps=64",
            "--set", "ppo.batch_size=64", "--set", "ppo.episode_length=96"]


# One intra-op thread for the whole module (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def common(bars_csv: Path) -> list[str]:
    return ["--data", str(bars_csv), "--costs", "bybit-linear", "--window", "16",
            "--d-model", "16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def supervised_dir(common: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sup") / "run"
    assert main(["train", "supervised", *common, *TINY_SUPERVISED, "--out", str(out)]) == 0
    return out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("tradezoo: error: "), captured.err
    return captured.err


def test_help_of_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["train", "supervised"], ["train", "ppo"], ["backtest"], ["compare"], ["run"]):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--help"])
        assert info.value.code == 0
        assert "usage: tradezoo" in capsys.readouterr().out


def test_train_supervised_writes_checkpoint_config_and_logs(
    supervised_dir: Path, bars_csv: Path
) -> None:
    for name in ("best.pt", "last.pt", "config.json"):
        assert (supervised_dir / name).is_file(), name
    assert any((supervised_dir / "tb").iterdir())
    ckpt = load_checkpoint(supervised_dir / "best.pt", expect_kind="supervised")
    assert ckpt["arch"] == "gru" and ckpt["window"] == 16
    assert ckpt["arch_config"]["d_model"] == 16 and ckpt["features_dim"] == 16
    saved = json.loads((supervised_dir / "config.json").read_text())
    assert saved["data"] == str(bars_csv.resolve()) and saved["supervised"]["epochs"] == 1
    # The saved options are a valid --config file of the same command.
    again = resolve_options("train-supervised", config_path=supervised_dir / "config.json")
    assert again["window"] == 16 and again["arch_config"] == {"d_model": 16}


def test_backtest_supervised_checkpoint_uses_the_shared_metrics(
    supervised_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradezoo.agents.run import checkpoint_options, prepare_from_options
    from tradezoo.agents.supervised import evaluate_supervised

    capsys.readouterr()
    assert main(["backtest", str(supervised_dir / "best.pt"), "--out", str(tmp_path),
                 "--tearsheet"]) == 0
    out = capsys.readouterr().out
    assert "buy & hold" in out and "sharpe" in out
    report = json.loads((tmp_path / "best.test.backtest.json").read_text())
    assert report["kind"] == "supervised" and report["split"] == "test"
    assert set(report["classification"]) >= {"accuracy", "macro_f1", "confusion"}
    assert (tmp_path / "best.test.backtest.png").stat().st_size > 0
    assert (tmp_path / "best.test.tearsheet.html").stat().st_size > 0
    # Same numbers as evaluate_supervised (simulate -> compute_metrics) on the same data.
    ckpt = load_checkpoint(supervised_dir / "best.pt")
    options = {"split_fractions": [0.7, 0.15, 0.15], **checkpoint_options(
        supervised_dir / "best.pt", ckpt)}
    evaluation = evaluate_supervised(ckpt, prepare_from_options(options), "test")
    metrics = evaluation.backtest.metrics.to_dict()
    assert report["backtest"]["metrics"]["total_return"] == pytest.approx(
        metrics["total_return"], abs=1e-12)
    assert report["backtest"]["metrics"]["sharpe"] == pytest.approx(metrics["sharpe"], abs=1e-12)
    # The policy checks (flags, break-even cost) are those of the leaderboard's mechanism.
    from tradezoo.backtest.diagnostics import diagnose

    assert "policy flags:" in out and "break-even cost:" in out
    data = prepare_from_options(options)
    index = evaluation.backtest.equity.index
    checks = diagnose(evaluation.backtest, data.bars.loc[index[0] : index[-1]],
                      evaluation.positions)
    assert report["backtest"]["diagnostics"] == json.loads(json.dumps(json_safe(
        checks.to_dict())))


def test_train_ppo_init_from_then_backtest_the_zip(
    supervised_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ppo"
    best = supervised_dir / "best.pt"
    # No --data/--window/--costs: the checkpoint and its config.json fix them.
    assert main(["train", "ppo", "--init-from", str(best), *TINY_PPO, "--set", "ppo.eval_freq=0",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tensorboard --logdir" in printed
    sidecar = load_checkpoint(out / "final_model.pt", expect_kind="ppo")
    assert sidecar["init_from"] == str(best) and sidecar["window"] == 16
    assert sidecar["num_timesteps"] >= 128
    assert main(["backtest", str(out / "final_model.zip")]) == 0
    report = json.loads((out / "final_model.test.backtest.json").read_text())
    assert report["kind"] == "ppo" and "classification" not in report
    assert report["backtest"]["benchmark_metrics"]["total_return"] is not None
    assert (out / "final_model.test.backtest.png").is_file()
    # Resume continues the timestep count in the run's own directory (the saved settings).
    assert main(["train", "ppo", "--resume-from", str(out / "final_model.zip"),
                 "--timesteps", "256", "--device", "cpu", "--quiet"]) == 0
    resumed = load_checkpoint(out / "final_model.pt", expect_kind="ppo")
    assert resumed["num_timesteps"] >= 256 > sidecar["num_timesteps"]
    assert resumed["training"]["n_steps"] == 64  # from the checkpoint, not the defaults


def test_bad_checkpoints_are_one_clear_error_with_exit_code_2(
    supervised_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = str(supervised_dir / "best.pt")
    assert main(["backtest", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: no such file" in _error_line(capsys)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert main(["backtest", str(garbage)]) == 2
    assert "garbage.pt: cannot be read as a tradezoo checkpoint" in _error_line(capsys)

    lonely = tmp_path / "lonely.zip"
    lonely.write_bytes(b"PK")
    assert main(["backtest", str(lonely)]) == 2
    assert "no sidecar" in _error_line(capsys)

    out = tmp_path / "never"
    assert main(["train", "ppo", "--init-from", best, "--arch", "lstm", "--quiet",
                 "--out", str(out)]) == 2
    assert "architecture mismatch: the checkpoint holds 'gru', expected 'lstm'" in _error_line(
        capsys)
    assert main(["train", "ppo", "--init-from", best, "--set", "features.return_windows=[1, 2]",
                 "--quiet", "--out", str(out)]) == 2
    assert "feature spec mismatch (return_windows" in _error_line(capsys)
    assert main(["train", "ppo", "--init-from", best, "--window", "24", "--quiet",
                 "--out", str(out)]) == 2
    assert "window mismatch" in _error_line(capsys)
    assert not out.exists()  # nothing written before the checks


def test_user_file_without_costs_asks_for_them(
    bars_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default run directory is ./runs/<name>
    assert main(["train", "supervised", "--data", str(bars_csv), "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "choose one with --costs bybit-linear|equities|zero" in _error_line(capsys)
    assert main(["run", "--data", str(tmp_path / "nope.csv")]) == 2
    assert "no such bars file" in _error_line(capsys)
    assert not (tmp_path / "runs").exists()  # nothing written for bad data


def test_unknown_config_keys_are_rejected_with_the_valid_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "top.yaml"
    top.write_text(json.dumps({"arch": "gru", "epochs": 3}))
    assert main(["run", "--config", str(top)]) == 2
    err = _error_line(capsys)
    assert "unknown key(s) ['epochs']" in err and "valid keys: ['data', 'arch'" in err

    section = tmp_path / "section.yaml"
    section.write_text(json.dumps({"supervised": {"epoch": 3}}))
    assert main(["train", "supervised", "--config", str(section)]) == 2
    err = _error_line(capsys)
    assert "['supervised.epoch']" in err and "valid keys in 'supervised': ['epochs'" in err

    assert main(["train", "ppo", "--set", "ppo.arch_config={}"]) == 2
    assert "arch_config and window are top-level keys" in _error_line(capsys)
    assert main(["run", "--set", "nonsense=1"]) == 2
    assert "--set: unknown key(s) ['nonsense']" in _error_line(capsys)
    assert main(["run", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: no such file" in _error_line(capsys)
    assert main(["compare", "--archs", "gru,nope"]) == 2
    assert "unknown architecture(s) ['nope']" in _error_line(capsys)
    assert main(["compare", "--budget", "huge"]) == 2
    assert f"one of {list(BUDGETS)}" in _error_line(capsys)


def test_options_layers_defaults_file_flags_set(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"arch": "lstm", "supervised": {"epochs": 5, "lr": 0.01},
                                "arch_config": {"d_model": 8}}))
    options = resolve_options("train-supervised", config_path=path,
                              flags={"supervised.epochs": 2, "seed": None},
                              assignments=["supervised.batch_size=32", "arch_config.n_layers=2"])
    assert options["arch"] == "lstm"  # file over defaults
    assert options["supervised"]["epochs"] == 2  # flags over the file
    assert options["supervised"]["lr"] == 0.01  # the file's other keys stay
    assert options["supervised"]["batch_size"] == 32  # --set
    assert options["supervised"]["patience"] == 3  # defaults fill the rest
    assert options["arch_config"] == {"d_model": 8, "n_layers": 2}
    assert options["seed"] == 0  # a flag left out (None) does not override
    assert parse_assignment("ppo.lr=3e-4") == ("ppo.lr", pytest.approx(3e-4))
    assert parse_assignment("labels.threshold=vol") == ("labels.threshold", "vol")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("ppo.lr")
    with pytest.raises(ConfigError, match="option 'seed' must be an integer >= 0"):
        resolve_options("run", flags={"seed": -1})
    with pytest.raises(ConfigError, match="option 'device'"):
        resolve_options("run", assignments=["device=tpu"])
    budget = resolve_options("compare", flags={"budget": "smoke", "supervised.epochs": 2})
    assert budget["ppo"]["timesteps"] == BUDGETS["smoke"]["ppo"]["timesteps"]
    assert budget["supervised"]["epochs"] == 2  # flags over the budget


def test_yaml_config_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text("arch: cfc\nwindow: 32\nsupervised:\n  epochs: 4\nppo: {timesteps: 5000}\n")
    options = resolve_options("run", config_path=path, flags={"ppo.timesteps": 6000})
    assert (options["arch"], options["window"]) == ("cfc", 32)
    assert options["supervised"]["epochs"] == 4 and options["ppo"]["timesteps"] == 6000
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)


def test_yaml_without_pyyaml_names_the_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    path = tmp_path / "config.yaml"
    path.write_text("arch: gru\n")
    with pytest.raises(ConfigError, match=r"needs the pyyaml package \(pip install pyyaml\)"):
        read_config_file(path)
    path.write_text('{"arch": "gru"}')  # JSON is YAML: still read
    assert read_config_file(path) == {"arch": "gru"}
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_config_file(path)


def test_run_main_job_writes_the_run_directory(
    common: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "tiny"
    assert main(["run", *common, *TINY_SUPERVISED, *TINY_PPO, "--set", "ppo.eval_freq=64",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {out}" in printed
    assert "buy & hold" in printed  # the metrics table
    for name in ("config.json", "run.log", "report.md", "equity.png", "supervised_equity.png",
                 "backtest_test.json", "supervised/best.pt", "ppo/final_model.zip",
                 "ppo/final_model.pt", "ppo/best_model.zip"):
        assert (out / name).is_file(), name
    assert any((out / "supervised" / "tb").iterdir()) and any((out / "ppo" / "tb").iterdir())
    report = (out / "report.md").read_text()
    assert "## Test-split metrics" in report
    assert "| metric | PPO (warm-started) | supervised | buy & hold |" in report
    assert "| sharpe |" in report and "tradezoo run --config" in report
    assert "## Policy checks" in report and "| PPO (warm-started) | " in report
    assert "policy flags:" in printed
    both = json.loads((out / "backtest_test.json").read_text())
    assert both["ppo"]["checkpoint"].endswith("best_model.zip")
    assert both["supervised"]["classification"]["accuracy"] >= 0
    # PPO and the classifier trade the same test bars: one buy-and-hold.
    assert both["ppo"]["benchmark_metrics"] == both["supervised"]["benchmark_metrics"]
    for part in ("ppo", "supervised"):
        checks = both[part]["diagnostics"]
        assert set(checks["flags"]) <= {"never_trades", "constant_action",
                                        "buy_and_hold_clone", "cost_dominated"}
        assert checks["break_even"] in report
    assert "done in" in (out / "run.log").read_text()


def test_interrupt_and_divergence_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    import tradezoo.agents.run as run_module
    from tradezoo.agents.supervised import NonFiniteLossError, TrainingInterrupted

    def interrupted(options, **kwargs):
        raise TrainingInterrupted("stopped", tmp_path / "interrupted.pt")

    monkeypatch.setattr(run_module, "run_main_job", interrupted)
    assert main(["run"]) == 130
    assert f"resumable checkpoint: {tmp_path / 'interrupted.pt'}" in capsys.readouterr().err

    def diverged(options, **kwargs):
        raise NonFiniteLossError("non-finite training loss (nan) at step 3 for 'gru'")

    monkeypatch.setattr(run_module, "run_main_job", diverged)
    assert main(["run"]) == 1
    assert "non-finite training loss (nan) at step 3" in _error_line(capsys)
