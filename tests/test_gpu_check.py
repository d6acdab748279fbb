"""benchmarks/gpu_check.py on the CPU with its smoke sizes: every section runs and reports
the keys the GPU run is read by; a section past its time box is recorded as timed out while
the others run; a worker that cannot start makes every section an error and the exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tradezoo.policies.registry import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_check(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert out.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(out.read_text())


def items(report: dict[str, Any], sid: int) -> dict[str, Any]:
    return report["sections"][str(sid)]["items"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    code, data = run_check(out, "--device", "cpu", "--quick")
    assert code == 0, json.dumps(data, indent=1)[-4000:]
    return data


def test_every_section_runs_ok_within_its_box(report: dict[str, Any]) -> None:
    names = {"0": "environment", "1": "architectures", "2": "mamba_scans", "3": "supervised",
             "4": "ppo", "5": "throughput", "6": "sweep"}
    assert {sid: s["name"] for sid, s in report["sections"].items()} == names
    for section in report["sections"].values():
        assert section["status"] == "ok", section
        assert section["box_s"] > 0
        assert all(item["seconds"] >= 0 for item in section["items"].values())
    assert report["exit_code"] == 0 and report["device"] == "cpu" and report["quick"]
    assert set(report["tolerances"]) == {"float32_rel", "bf16_rel", "probability_abs"}


def test_environment_reports_versions_gpu_and_optional_kernels(report: dict[str, Any]) -> None:
    env = items(report, 0)
    assert {"torch", "torch_cuda", "stable_baselines3", "tradezoo"} <= set(env["versions"])
    assert {"cuda_available", "bf16_supported"} <= set(env["gpu"])
    for package in ("mamba_ssm", "causal_conv1d"):
        entry = env["imports"][package]
        assert entry["imports"] or entry["error"]  # the exception text when it does not
    assert env["imports"]["mamba_scan_auto_on_device"] == "chunked"  # on the CPU


def test_architectures_parity_bf16_step_and_eval(report: dict[str, Any]) -> None:
    archs = items(report, 1)
    assert set(archs) == set(ARCHITECTURES)
    for arch, result in archs.items():
        assert result["ok"], (arch, result)
        assert {"fp32_output_rel", "fp32_grad_rel", "bf16_train_output_rel", "bf16_grad_rel",
                "bf16_eval_rel", "bf16_step_finite"} <= set(result)


def test_mamba_scans_compared_and_timed(report: dict[str, Any]) -> None:
    scans = items(report, 2)
    assert set(scans) == {"L64", "L257"}
    for result in scans.values():
        assert result["ok"] and result["auto_chunk"] >= 1
        for name in ("sequential", "chunked_auto", "chunked_window"):
            assert {"output_rel", "grad_rel", "fwd_bwd_ms"} <= set(result[name])
        assert "mamba_ssm" in result  # compared, or why not


def test_supervised_reload_and_syncs_per_step(report: dict[str, Any]) -> None:
    runs = items(report, 3)
    assert set(runs) == {"mamba", "cfc", "ltc", "msa", "lstm"}
    for result in runs.values():
        assert result["ok"] and result["steps"] >= 1
        assert result["best_pt_cpu_prob_max_abs"] <= report["tolerances"]["probability_abs"]
        assert result["syncs_per_step"] and result["max_syncs_other_step"] == 0


def test_ppo_rollouts_both_ways_training_and_reload(report: dict[str, Any]) -> None:
    runs = items(report, 4)
    for arch in ("mamba", "cfc", "ltc"):
        rollouts, train = runs[f"{arch}_rollouts"], runs[f"{arch}_train"]
        assert rollouts["rollout_steps_per_s_cpu"] > 0 and rollouts["rule"] == "cpu"
        for row in rollouts["policy_forward"].values():
            assert row["cpu_ms"] > 0 and row["faster"] == row["rule"] == "cpu"
        assert train["ok"] and train["timesteps_per_s"] > 0
        assert train["device"] == train["rollout_device"] == "cpu"


def test_throughput_runs_model_throughput(report: dict[str, Any]) -> None:
    result = items(report, 5)["model_throughput_quick"]
    assert result["ok"] and result["cases"] >= 1 and not result["failed_cases"]
    assert all(row["train_sps_median"] > 0 for row in result["results"].values())


def test_a_section_past_its_box_times_out_and_the_rest_run(tmp_path: Path) -> None:
    code, data = run_check(tmp_path / "boxed.json", "--device", "cpu", "--quick",
                           "--sections", "2", "0", "--box", "2=0.05")
    assert data["sections"]["2"]["status"] == "timeout"
    assert data["sections"]["2"]["box_s"] == 0.05
    assert data["sections"]["0"]["status"] == "ok"
    assert code == 2 and data["exit_code"] == 2


def test_a_worker_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    code, data = run_check(tmp_path / "broken.json", "--device", "no-such-device",
                           "--sections", "0", "1")
    assert code == 1
    for sid in ("0", "1"):
        section = data["sections"][sid]
        assert section["status"] == "error" and "no-such-device" in section[
            "worker_stderr_tail"]


def test_sweep_runs_two_cells_as_ray_tasks_and_resumes(report: dict[str, Any]) -> None:
    sweep = items(report, 6)["ray_two_cells"]
    assert sweep["ok"] and sweep["rerun_ran"] == 0 and sweep["gpus_per_run"] == 0.0
    assert set(sweep["cells"]) == {"mlp", "gru"}
    for cell in sweep["cells"].values():
        assert cell["status"] == "done" and cell["device"] == "cpu"
        assert cell["worker"].split(":")[-1] != str(os.getpid())  # a Ray worker process
