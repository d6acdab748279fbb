"""scripts/ablation.py: the chapter forms against the previous forms as compare cells."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tradezoo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ablation.py"
FLAGS = {"budget": "smoke", "mode": "supervised", "seeds": 1, "seed": 0, "device": "cpu",
         "progress": False, "threads": 1}


@pytest.fixture(scope="module")
def ablation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_forms_differing_only_by_arch_config_get_distinct_keys_and_labels(
        ablation: ModuleType, bars_csv: Path) -> None:
    changes = ablation.select_changes("msa.hierarchy,msa.fusion")
    grids = ablation.plan(changes, [str(bars_csv)], FLAGS, folds=1)
    by_form = {(g.change.name, g.form): g for g in grids}
    chapter, previous = by_form["msa.hierarchy", "chapter"], by_form["msa.hierarchy", "previous"]
    (a,), (b,) = chapter.tasks, previous.tasks
    assert a.cell == b.cell and a.key != b.key  # same coordinates, the key holds the config
    assert a.config["arch_config"] == {"hierarchy": "pyramid"}
    assert b.config["arch_config"] == {}  # at the defaults (parallel scales, fusion MLP)
    assert {k: v for k, v in a.config.items() if k != "arch_config"} == {
        k: v for k, v in b.config.items() if k != "arch_config"}
    assert (chapter.text, previous.text) == ("hierarchy=pyramid", "hierarchy=parallel")
    fusion = by_form["msa.fusion", "previous"].tasks[0]
    assert fusion.config["arch_config"] == {"fusion": "gated"}
    # the model at the defaults is one cell, labelled with both forms it is
    tasks, labels = ablation.unique_tasks(grids)
    assert len(tasks) == 3
    assert labels[b.key].endswith("[msa.hierarchy previous = msa.fusion chapter]")
    assert len(set(labels.values())) == 3


def test_bad_changes_are_refused(ablation: ModuleType, bars_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown change\(s\) \['cfc.nope'\].*cfc.mode"):
        ablation.select_changes("cfc.mode,cfc.nope")
    same = ablation.Change("cfc.same", "cfc", {"arch_config.mode": "default"}, {})
    with pytest.raises(ConfigError, match=r"cfc\.same: its chapter and previous forms build"):
        ablation.plan([same], [str(bars_csv)], FLAGS, folds=1)
    bad = ablation.Change("cfc.bad", "cfc", {"arch_config.mode": "nope"}, {})
    with pytest.raises(ConfigError, match=r"change cfc\.bad, chapter form: .*mode"):
        ablation.plan([bad], [str(bars_csv)], FLAGS, folds=1)


def test_verdict_rule(ablation: ModuleType) -> None:
    rng = np.random.default_rng(0)
    noise = [rng.normal(0.0, 0.01, 2000) for _ in range(2)]
    good = [n + 0.003 for n in noise]  # the same bars, a clearly higher Sharpe in each seed
    said = ablation.verdict(good, noise, 8760.0, alpha=0.05, n_boot=500)
    assert said["verdict"] == "chapter better" and said["p_chapter"] < 0.01
    assert said["sharpe_difference"] > 0
    said = ablation.verdict(noise, good, 8760.0, alpha=0.05, n_boot=500)
    assert said["verdict"] == "previous better" and said["p_previous"] < 0.01
    said = ablation.verdict(noise, noise, 8760.0, alpha=0.05, n_boot=500)
    assert said["verdict"] == "within noise" and said["p_chapter"] == said["p_previous"] == 1.0
    # better in one seed, worse in the other: noise whatever the p-values
    said = ablation.verdict([good[0], noise[1]], [noise[0], good[1]], 8760.0, alpha=0.05,
                            n_boot=500)
    assert said["verdict"] == "within noise"
    # a form that never trades has Sharpe 0: the other form's Sharpe is tested against 0
    flat = [np.zeros(2000), np.zeros(2000)]
    said = ablation.verdict(good, flat, 8760.0, alpha=0.05, n_boot=500)
    assert said["verdict"] == "chapter better" and said["p_previous"] > 0.99


def test_makespan_takes_the_longest_cell_first(ablation: ModuleType) -> None:
    assert ablation.makespan([2.0, 3.0, 2.0, 3.0, 2.0], 2) == 7.0
    assert ablation.makespan([5.0, 1.0], 4) == 5.0
    assert ablation.makespan([], 2) == 0.0


def test_the_script_builds_the_table_and_a_rerun_resumes(
        ablation: ModuleType, bars_csv: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ablation"
    argv = ["--out", str(out), "--changes", "cfc.mode", "--datasets", str(bars_csv),
            "--seeds", "1", "--budget", "smoke", "--n-boot", "200",
            "--costs", "bybit-linear"]
    assert ablation.main([*argv, "--estimate"]) == 0
    assert "2 cells, 2 to run" in capsys.readouterr().out and not out.exists()
    assert ablation.main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 cells done, 2 to run" in printed
    assert "btc_small fold 0 cfc supervised seed 0 [cfc.mode chapter]: done" in printed
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert len(records) == 2 and len({r["key"] for r in records}) == 2
    # fields at their default are left out: the published mode is the default
    assert sorted(json.dumps(r["config"]["arch_config"]) for r in records) == [
        '{"mode": "chapter"}', "{}"]
    table = (out / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| cfc.mode | btc_small")]
    assert [row.split(" | ")[3:5] for row in rows] == [
        ["chapter", "`mode=chapter`"], ["previous", "`mode=default`"]]
    assert re.search(r"Wall time of this command: \d+ s \(2 cell\(s\) run, 0 from", table)
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["cells_run"] == 2 and summary["wall_time_s"] > 0
    verdict = summary["rows"][0]["verdict"]
    assert verdict in ablation.VERDICTS and summary["summary"][0]["verdicts"] == {
        "btc_small": verdict}
    for row in summary["rows"]:  # the leaderboard's statistics are there
        assert row["n_seeds"] == 1 and row["sharpe_mean"] is not None

    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert ablation.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 cells done, 0 to run" in printed and "[1/" not in printed
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    again = json.loads((out / "ablation.json").read_text())
    assert again["cells_run"] == 0 and again["rows"] == summary["rows"]
    assert [r["cells_run"] for r in again["runs"]] == [2, 0]  # the wall times add up
    assert "All 2 commands on this results store took" in (out / "ablation.md").read_text()


def test_the_seed_count_counts_seeds_not_folds(ablation: ModuleType, bars_csv: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    argv = ["--out", str(out), "--changes", "cfc.mode", "--datasets", str(bars_csv),
            "--seeds", "1", "--folds", "2", "--budget", "smoke", "--n-boot", "200",
            "--costs", "bybit-linear"]
    assert ablation.main(argv) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["cells_run"] == 4  # 2 forms x 1 seed x 2 folds
    assert [row["n_seeds"] for row in summary["rows"]] == [1, 1]
    rows = summary["rows"]  # each seed x fold cell is higher for one form, or a tie
    assert [row["cells_paired"] for row in rows] == [2, 2]
    assert rows[0]["cells_higher"] + rows[1]["cells_higher"] <= 2
    table = (out / "ablation.md").read_text()
    assert f"| {rows[0]['cells_higher']}/2 |" in table and "| higher in |" in table


def _documented(path: Path) -> list[list[str]]:
    text = path.read_text().replace("\\\n", " ")
    return [shlex.split(line.strip().removeprefix("$ "), comments=True)[2:]
            for line in text.splitlines()
            if line.strip().removeprefix("$ ").startswith("python scripts/ablation.py")]


def test_documented_commands_exist(ablation: ModuleType) -> None:
    commands = [argv for page in (ROOT / "docs" / "architectures.md", ROOT / "scripts" /
                                  "README.md", SCRIPT) for argv in _documented(page)]
    assert len(commands) >= 4
    for argv in commands:
        args = ablation.parser().parse_args(argv)
        ablation.select_changes(args.changes)  # names only known changes
