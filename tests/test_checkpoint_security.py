"""Checkpoints from someone else: no loading path unpickles a PPO zip, pairs are verified,
crafted files and oversized architectures get a CheckpointError, resume keeps the best model.

Real runs on tiny budgets: a PPO run trained through the CLI on 1,500 bundled bars (2 envs x
64 steps, evaluations and checkpoints every 64 timesteps) and a two-epoch supervised run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import runpy
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from tradezoo.agents.callbacks import run_episodes
from tradezoo.agents.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from tradezoo.agents.data import PreparedData
from tradezoo.agents.ppo import (
    PPOConfig,
    evaluate_ppo,
    load_ppo_policy,
    make_eval_env,
    make_ppo,
    train_ppo,
)
from tradezoo.agents.supervised import (
    SupervisedConfig,
    TrainState,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.cli import main
from tradezoo.policies.registry import ARCHITECTURES, make_config
from tradezoo.policies.size import (
    MAX_PARAMETERS,
    ModelTooLargeError,
    check_model_size,
    estimate_parameters,
)

REPO = Path(__file__).resolve().parents[1]
PPO_FLAGS = ["--timesteps", "128", "--n-envs", "2", "--set", "ppo.n_steps=64",
             "--set", "ppo.batch_size=64", "--set", "ppo.episode_length=96",
             "--set", "ppo.eval_freq=64", "--set", "ppo.checkpoint_freq=64",
             "--set", "ppo.eval_figure=false", "--set", "ppo.tensorboard=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ppo_dir(bars_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO run directory written by ``tradezoo train ppo`` (config.json next to the models)."""
    out = tmp_path_factory.mktemp("ppo") / "run"
    assert main(["train", "ppo", "--data", str(bars_csv), "--costs", "bybit-linear",
                 "--window", "16", "--d-model", "16", "--device", "cpu", "--quiet",
                 *PPO_FLAGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def data(ppo_dir: Path) -> PreparedData:
    """The run's data, prepared from the run's own options (same scaler)."""
    from tradezoo.agents.run import checkpoint_options, prepare_from_options

    ckpt = load_checkpoint(ppo_dir / "final_model.pt")
    options = {"split_fractions": [0.7, 0.15, 0.15],
               **checkpoint_options(ppo_dir / "final_model.pt", ckpt)}
    return prepare_from_options(options)


def copy_run(ppo_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(ppo_dir, run)
    return run


def resave_sidecar(sidecar: Path, **changes: Any) -> None:
    """Rewrite a sidecar with some fields changed (as anyone with the file could)."""
    payload = torch.load(sidecar, weights_only=True)
    payload.update(changes)
    save_checkpoint(payload, sidecar)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zip_with_data(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Copy an SB3 zip, editing its ``data`` JSON record."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(entries["data"])
    edit(record)
    entries["data"] = json.dumps(record).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


class WriteMarker:
    """Unpickling this calls ``open(path, "w")``: the marker file appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def arm_every_serialized_field(markers: Path) -> Callable[[dict[str, Any]], None]:
    """An edit that replaces every ``:serialized:`` field of SB3's record with a payload that
    writes ``markers/<field>`` when unpickled."""

    def edit(record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, dict) and ":serialized:" in value:
                payload = pickle.dumps(WriteMarker(markers / key))
                value[":serialized:"] = base64.b64encode(payload).decode()

    return edit


def serialized_fields(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        record = json.loads(archive.read("data"))
    return [k for k, v in record.items() if isinstance(v, dict) and ":serialized:" in v]


def outcome(call: Callable[[], Any], *names: Path) -> str:
    """``"ok"``, or ``"refused"`` for a CheckpointError naming one of ``names``."""
    try:
        call()
    except CheckpointError as error:
        message = str(error)
    else:
        return "ok"
    assert any(str(name) in message for name in names), message
    return "refused"


def cli_outcome(argv: list[str], capsys: pytest.CaptureFixture[str], *names: Path) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 0:
        return "ok"
    assert code == 2 and any(str(name) in err for name in names), err
    return "refused"


# ---------------------------------------------------------------- no zip is ever unpickled


def test_no_loading_path_unpickles_a_crafted_zip(
    ppo_dir: Path, data: PreparedData, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stable_baselines3.common.save_util import json_to_data

    from tradezoo.agents.run import backtest_checkpoint

    run = copy_run(ppo_dir, tmp_path)
    zip_path, sidecar = run / "final_model.zip", run / "final_model.pt"
    fields = serialized_fields(zip_path)
    assert len(fields) >= 8, fields  # policy_class, spaces, schedules, buffers, ...
    markers, control = tmp_path / "markers", tmp_path / "control"
    markers.mkdir()
    control.mkdir()

    # Control: SB3's own reader (what PPO.load runs) fires the payload of every field.
    armed_control = tmp_path / "control.zip"
    zip_with_data(zip_path, armed_control, arm_every_serialized_field(control))
    with zipfile.ZipFile(armed_control) as archive:
        json_to_data(archive.read("data").decode())
    assert sorted(p.name for p in control.iterdir()) == sorted(fields)

    # The crafted pair is consistent: the sidecar carries the crafted zip's hash and step.
    zip_with_data(ppo_dir / "final_model.zip", zip_path, arm_every_serialized_field(markers))
    resave_sidecar(sidecar, sb3_zip_sha256=sha256(zip_path))
    names = (zip_path, sidecar)
    outcomes = {
        "load_checkpoint(zip)": outcome(lambda: load_checkpoint(zip_path), *names),
        "load_ppo_policy(zip)": outcome(lambda: load_ppo_policy(zip_path), *names),
        "evaluate_ppo(zip)": outcome(lambda: evaluate_ppo(zip_path, data, "test"), *names),
        "evaluate_ppo(pt)": outcome(lambda: evaluate_ppo(sidecar, data, "test"), *names),
        "model_from_checkpoint(zip)": outcome(lambda: model_from_checkpoint(zip_path), *names),
        "make_ppo(init_from=zip)": outcome(
            lambda: make_ppo(data, "gru", config=PPOConfig(n_envs=2, n_steps=64, batch_size=64),
                             device="cpu", init_from=zip_path), *names),
        "backtest_checkpoint(zip)": outcome(
            lambda: backtest_checkpoint(zip_path, out_dir=tmp_path / "bt"), *names),
        "tradezoo backtest zip": cli_outcome(
            ["backtest", str(zip_path), "--out", str(tmp_path / "cli")], capsys, *names),
        "train_ppo(resume_from=zip)": outcome(
            lambda: train_ppo(data, "gru", out_dir=tmp_path / "resumed", device="cpu",
                              resume_from=zip_path, progress=False, verbose=False), *names),
        "train_ppo(resume_from=pt)": outcome(
            lambda: train_ppo(data, "gru", out_dir=tmp_path / "resumed_pt", device="cpu",
                              resume_from=sidecar, progress=False, verbose=False), *names),
        "tradezoo train ppo --resume-from zip": cli_outcome(
            ["train", "ppo", "--resume-from", str(zip_path), "--timesteps", "128",
             "--device", "cpu", "--quiet", "--out", str(tmp_path / "cli_resumed")],
            capsys, *names),
    }
    monkeypatch.setattr(sys, "argv", ["backtest.py", "--checkpoint", str(zip_path),
                                      "--out", str(tmp_path / "script")])
    outcomes["scripts/backtest.py --checkpoint zip"] = outcome(
        lambda: runpy.run_path(str(REPO / "scripts" / "backtest.py"), run_name="__main__"),
        *names)
    assert list(markers.iterdir()) == [], outcomes  # nothing was unpickled
    # Everything that reads a PPO checkpoint works from the sidecar and the zip's tensors;
    # the supervised-only readers refuse it by name.
    refused = {"model_from_checkpoint(zip)", "make_ppo(init_from=zip)"}
    assert outcomes == {k: "refused" if k in refused else "ok" for k in outcomes}


def test_resume_from_the_sidecar_restores_step_weights_and_optimizer(
    ppo_dir: Path, data: PreparedData, tmp_path: Path
) -> None:
    from stable_baselines3 import PPO

    from tradezoo.agents.ppo import _resume_model, make_train_env

    zip_path = ppo_dir / "checkpoints" / "ppo_64_steps.zip"
    meta = load_checkpoint(zip_path)
    config = PPOConfig.from_dict(meta["training"])
    ours = _resume_model(zip_path, meta, config, make_train_env(data, config, 0), 0,
                         torch.device("cpu"))
    reference = PPO.load(zip_path, device="cpu")  # our own file: SB3's loader as the oracle
    assert ours.num_timesteps == reference.num_timesteps == 64
    assert ours._n_updates == reference._n_updates
    assert [e["r"] for e in ours.ep_info_buffer] == pytest.approx(
        [float(e["r"]) for e in reference.ep_info_buffer])
    for key, value in reference.policy.state_dict().items():
        assert torch.equal(ours.policy.state_dict()[key], value), key
    a, b = ours.policy.optimizer.state_dict(), reference.policy.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in b["state"].items():
        for key, value in state.items():
            assert torch.equal(a["state"][index][key], value), (index, key)


# ------------------------------------------------------------------------- pair checks


def test_a_saved_pair_records_the_zip_hash_and_step(ppo_dir: Path) -> None:
    for stem in ("final_model", "best_model", "checkpoints/ppo_64_steps",
                 "checkpoints/ppo_128_steps"):
        zip_path = ppo_dir / f"{stem}.zip"
        sidecar = torch.load(ppo_dir / f"{stem}.pt", weights_only=True)
        assert sidecar["sb3_zip_sha256"] == sha256(zip_path), stem
        with zipfile.ZipFile(zip_path) as archive:
            assert json.loads(archive.read("data"))["num_timesteps"] == sidecar["num_timesteps"]
    leftovers = [p for p in ppo_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_mismatched_and_corrupt_pairs_are_refused(
    ppo_dir: Path, data: PreparedData, tmp_path: Path
) -> None:
    from tradezoo.agents.run import backtest_checkpoint

    run = copy_run(ppo_dir, tmp_path)
    # A kill between the two renames: the zip of one save next to the sidecar of another.
    mixed_zip, mixed_pt = run / "mixed.zip", run / "mixed.pt"
    shutil.copy(run / "checkpoints" / "ppo_128_steps.zip", mixed_zip)
    shutil.copy(run / "checkpoints" / "ppo_64_steps.pt", mixed_pt)
    step_rule = r"zip is at step 128 but its sidecar records step 64"
    for call in (lambda: load_checkpoint(mixed_pt), lambda: evaluate_ppo(mixed_zip, data),
                 lambda: load_ppo_policy(mixed_pt),
                 lambda: backtest_checkpoint(mixed_zip, out_dir=tmp_path / "bt"),
                 lambda: train_ppo(data, "gru", out_dir=tmp_path / "r", device="cpu",
                                   resume_from=mixed_zip, progress=False, verbose=False)):
        with pytest.raises(CheckpointError, match=step_rule) as caught:
            call()
        assert str(mixed_zip) in str(caught.value) and str(mixed_pt) in str(caught.value)

    # Same step, other content (a field edited): the hash says so.
    edited = run / "final_model.zip"
    zip_with_data(ppo_dir / "final_model.zip", edited, lambda r: r.update(n_steps=65))
    with pytest.raises(CheckpointError, match=r"final_model.zip has SHA-256 .* changed"):
        evaluate_ppo(run / "final_model.pt", data)

    # A truncated zip.
    cut = run / "best_model.zip"
    cut.write_bytes((ppo_dir / "best_model.zip").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"best_model.zip is not a readable SB3 zip"):
        load_checkpoint(cut)

    # A sidecar without the hash cannot vouch for its zip.
    unverified = run / "checkpoints" / "ppo_64_steps.pt"
    resave_sidecar(unverified, sb3_zip_sha256=None)
    with pytest.raises(CheckpointError, match="records no valid sb3_zip_sha256"):
        load_ppo_policy(unverified.with_suffix(".zip"))


# -------------------------------------------------------------------- crafted checkpoints


def test_crafted_files_get_a_checkpoint_error(
    ppo_dir: Path, data: PreparedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradezoo.agents.run import backtest_checkpoint

    text = tmp_path / "prices.pt"  # a text file renamed .pt
    text.write_text("timestamp,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n")
    for call in (lambda: load_checkpoint(text), lambda: model_from_checkpoint(text),
                 lambda: load_ppo_policy(text), lambda: evaluate_ppo(text, data)):
        with pytest.raises(CheckpointError, match=f"{text}: cannot be read"):
            call()
    assert cli_outcome(["backtest", str(text)], capsys, text) == "refused"

    ppo_sidecar = tmp_path / "ppo_as_supervised.pt"  # a PPO sidecar relabelled supervised
    shutil.copy(ppo_dir / "checkpoints" / "ppo_64_steps.pt", ppo_sidecar)
    resave_sidecar(ppo_sidecar, kind="supervised")
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['label_spec'\] for kind"):
        model_from_checkpoint(ppo_sidecar)

    sup = tmp_path / "supervised_as_ppo.pt"  # a supervised checkpoint relabelled ppo
    payload = {k: v for k, v in torch.load(ppo_dir / "final_model.pt",
                                           weights_only=True).items()
               if k not in ("env", "net_arch", "training", "num_timesteps", "sb3_zip")}
    payload.update(kind="ppo", label_spec={})
    save_checkpoint(payload, sup)
    for call in (lambda: evaluate_ppo(sup, data), lambda: load_ppo_policy(sup),
                 lambda: backtest_checkpoint(sup, out_dir=tmp_path / "bt")):
        with pytest.raises(CheckpointError, match=rf"{sup}: incomplete, missing key\(s\) "
                                                  r"\['env', 'net_arch'"):
            call()

    unknown = tmp_path / "unknown_kind.pt"
    shutil.copy(ppo_dir / "checkpoints" / "ppo_64_steps.pt", unknown)
    resave_sidecar(unknown, kind="dqn")
    with pytest.raises(CheckpointError, match=r"unknown kind 'dqn'"):
        load_checkpoint(unknown)


@pytest.mark.parametrize("d_model", [1_000_000, 1e6])
def test_a_huge_architecture_is_refused_before_allocation(
    ppo_dir: Path, data: PreparedData, tmp_path: Path, d_model: Any
) -> None:
    sidecar = torch.load(ppo_dir / "final_model.pt", weights_only=True)
    huge_ppo = tmp_path / "huge_ppo.pt"
    save_checkpoint({**sidecar, "arch_config": {**sidecar["arch_config"], "d_model": d_model}},
                    huge_ppo)
    limit = r"would have about 3e\+12 parameters, above the limit of 1e\+09"
    for call in (lambda: load_checkpoint(huge_ppo), lambda: load_ppo_policy(huge_ppo),
                 lambda: evaluate_ppo(huge_ppo, data)):
        with pytest.raises(CheckpointError, match=f"checkpoint {huge_ppo}: .*{limit}"):
            call()
    supervised = {**{k: v for k, v in sidecar.items() if k not in ("env", "net_arch")},
                  "kind": "supervised", "label_spec": {}, "state_dict": {}}
    supervised["arch_config"] = {**sidecar["arch_config"], "d_model": d_model}
    with pytest.raises(CheckpointError, match=limit):
        model_from_checkpoint(supervised)


def test_size_estimates_follow_the_built_models() -> None:
    n_features, window = 9, 16
    for name in ARCHITECTURES:
        config: dict[str, Any] = {"d_model": 24}
        if "window" in ARCHITECTURES[name].config_cls.field_names():
            config["window"] = window
        built = ARCHITECTURES[name].backbone_cls(n_features, make_config(name, **config))
        count = sum(p.numel() for p in built.parameters())
        count += sum(b.numel() for b in built.buffers())
        estimate = estimate_parameters(name, n_features, window, config)
        assert 0.9 * count <= estimate <= 2 * count, (name, count, estimate)
        huge = {**config, "d_model": 10**7}  # cfc at 1e6 is 6.4e8, under the limit
        with pytest.raises(ModelTooLargeError, match=f"architecture {name!r}"):
            check_model_size(name, n_features, window, huge)
    assert MAX_PARAMETERS == 1_000_000_000
    with pytest.raises(ModelTooLargeError, match="features_dim 2000000000"):
        check_model_size("gru", n_features, window, {"d_model": 16}, features_dim=2_000_000_000)


@pytest.mark.parametrize("options", [
    {"hierarchy": "pyramid"},
    {"fusion": "mlp"},
    {"depths": [3, 1, 2]},
    {"hierarchy": "pyramid", "fusion": "mlp", "depths": [2, 1, 1, 1], "scales": [2, 4, 8, 16]},
])
def test_msa_size_estimate_follows_its_options(options: dict[str, Any]) -> None:
    n_features, window = 9, 16
    config: dict[str, Any] = {"d_model": 24, **options}
    built = ARCHITECTURES["msa"].backbone_cls(n_features, make_config("msa", **config))
    count = sum(p.numel() for p in built.parameters())
    estimate = estimate_parameters("msa", n_features, window, config)
    assert 0.9 * count <= estimate <= 2 * count, (options, count, estimate)
    deep = {**config, "depths": [10**6] * len(config.get("scales", (1, 4, 16)))}
    with pytest.raises(ModelTooLargeError, match="architecture 'msa'"):
        check_model_size("msa", n_features, window, deep)


@pytest.mark.parametrize(("arch", "options"), [
    ("mamba", {}),
    ("mamba", {"n_layers": 3, "bias": True, "conv_bias": False}),
    ("mambats", {}),
    ("mambats", {"fusion": "gate", "channel_mixing": "hidden"}),
    ("mambats", {"channel_mixing": "both", "mlp_ratio": 1.3, "revin_affine": False}),
    ("timeparticle", {}),
    ("timeparticle", {"attention_heads": 1, "message_feedback": False,
                      "particle_outputs": False}),
    ("timeparticle", {"n_particles": 4, "n_layers": 2, "particle_outputs": False}),
])
def test_size_estimate_counts_each_option_exactly(arch: str, options: dict[str, Any]) -> None:
    n_features, window = 9, 16
    config: dict[str, Any] = {"d_model": 24, **options}
    built = ARCHITECTURES[arch].backbone_cls(n_features, make_config(arch, **config))
    count = sum(p.numel() for p in built.parameters())
    count += sum(b.numel() for b in built.buffers())
    assert estimate_parameters(arch, n_features, window, config) == count


# ------------------------------------------------------------------ resume keeps the best


class ConstantAction:
    """A policy that always takes ``action`` (for run_episodes)."""

    def __init__(self, action: int) -> None:
        self.action = action

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.full(len(obs), self.action), None


class AlwaysAction(BaseCallback):
    """Makes the policy's greedy action ``action`` everywhere when training starts."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def _on_training_start(self) -> None:
        with torch.no_grad():
            net = self.model.policy.action_net
            net.weight.zero_()
            net.bias.fill_(-10.0)
            net.bias[self.action] = 10.0

    def _on_step(self) -> bool:
        return True


def test_ppo_resume_keeps_the_best_model(ppo_dir: Path, data: PreparedData,
                                         tmp_path: Path) -> None:
    run = copy_run(ppo_dir, tmp_path)
    start = run / "checkpoints" / "ppo_128_steps.zip"
    config = PPOConfig.from_dict(torch.load(start.with_suffix(".pt"),
                                            weights_only=True)["training"])
    # The best model's validation reward, measured as the evaluation callback does.
    best_policy, _ = load_ppo_policy(run / "best_model.pt")
    best_score = run_episodes(best_policy, make_eval_env(data, config, "val"))[0]["reward"]
    before = {p: p.read_bytes() for p in (run / "best_model.zip", run / "best_model.pt")}
    # The worst constant action on the validation episodes, clearly below the best.
    rewards = {a: run_episodes(ConstantAction(a), make_eval_env(data, config, "val"))[0]["reward"]
               for a in (0, 2)}
    worst = min(rewards, key=rewards.__getitem__)
    assert rewards[worst] < best_score, (rewards, best_score)

    result = train_ppo(data, "gru", config=PPOConfig.from_dict(
        {**config.to_dict(), "timesteps": 256}), out_dir=run, device="cpu",
        resume_from=start, progress=False, verbose=False, callbacks=[AlwaysAction(worst)])
    assert [e["timesteps"] for e in result.evaluations] == [192, 256]
    assert all(e["mean_reward"] < best_score and not e["best"]
               for e in result.evaluations)  # worse evaluations after the resume
    assert {p: p.read_bytes() for p in before} == before  # best model untouched
    assert result.best_mean_reward == pytest.approx(best_score, abs=1e-12)
    # Every checkpoint carries the best so far and the step it was reached at.
    best = load_checkpoint(run / "best_model.pt")["best"]
    assert best["metric"] == "eval/mean_reward" and best["step"] in (64, 128)
    assert best["score"] == pytest.approx(best_score, abs=1e-12)
    assert load_checkpoint(start)["best"] == best
    assert load_checkpoint(run / "final_model.pt")["best"] == best


def test_supervised_resume_keeps_the_best_model(data: PreparedData, tmp_path: Path) -> None:
    config = SupervisedConfig(epochs=2, batch_size=32, max_train_batches=3, max_eval_batches=2,
                              features_dim=16, progress=False, tensorboard=False)
    first = train_supervised(data, "gru", config=config, arch_config={"d_model": 16},
                             out_dir=tmp_path, device="cpu", verbose=False)
    before = first.best_checkpoint.read_bytes()

    def sabotage(state: TrainState) -> None:  # a confidently wrong head: a worse epoch
        with torch.no_grad():
            state.model.head.weight.mul_(-50.0)

    more = SupervisedConfig(**{**config.to_dict(), "epochs": 3})
    resumed = train_supervised(data, "gru", config=more, arch_config={"d_model": 16},
                               out_dir=tmp_path, device="cpu", verbose=False,
                               resume_from=first.last_checkpoint, callbacks=[sabotage])
    assert resumed.history[-1]["val_loss"] > first.best_val_loss  # a worse epoch
    assert first.best_checkpoint.read_bytes() == before
    assert (resumed.best_val_loss, resumed.best_epoch) == (first.best_val_loss, first.best_epoch)
    # Every checkpoint carries the best so far and the step it was reached at.
    best = {"metric": "val_loss", "mode": "min", "score": first.best_val_loss,
            "step": 3 * (first.best_epoch + 1), "epoch": first.best_epoch}
    assert load_checkpoint(first.best_checkpoint)["best"] == best
    assert load_checkpoint(resumed.last_checkpoint)["best"] == best


def test_write_files_atomically_keeps_the_old_pair_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from tradezoo.agents.checkpoint import write_files_atomically

    a, b = tmp_path / "x.zip", tmp_path / "x.pt"
    write_files_atomically([(a, b"old zip"), (b, b"old pt")])
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second file's fsync: nothing renamed yet
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_files_atomically([(a, b"new zip"), (b, b"new pt")])
    assert (a.read_bytes(), b.read_bytes()) == (b"old zip", b"old pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt", "x.zip"]
