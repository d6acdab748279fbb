"""The GPU path's contracts, checked on the CPU: no host syncs between logging steps of
supervised training, checkpoints whose backend cannot run here load with ``"auto"``,
determinism flags restored after every run, the autocast option from the CLI, the CUDA RNG
restored on resume. Tests marked ``cuda`` run the same contracts on a GPU where one exists.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mamba_ssm_stub
import pytest
import torch

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.determinism import DeterminismFlags
from tradezoo.agents.supervised import (
    SupervisedConfig,
    TrainState,
    evaluate_supervised,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.data import load_dataset
from tradezoo.policies import mamba, native

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 16
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny(**overrides: Any) -> SupervisedConfig:
    base: dict[str, Any] = dict(epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1,
                                eval_batch_size=64, features_dim=8, progress=False,
                                tensorboard=False)
    base.update(overrides)
    return SupervisedConfig(**base)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1500], window=WINDOW)


# ------------------------------------------------------------------------ host syncs


class SyncCounter:
    """Counts the calls that copy a tensor's value to the host (each a device sync on a
    GPU): ``item``, ``tolist``, ``cpu``, ``numpy`` and ``float``/``int``/``bool`` of a
    tensor."""

    METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(original))

    def _counted(self, original: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(tensor, *args, **kwargs)

        return counted


@pytest.mark.parametrize("arch", ["lstm", "mambats"])
def test_training_steps_sync_once_at_logging_steps_only(
    data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    per_step: list[int] = []
    counter: SyncCounter | None = None
    last = 0

    def record(state: TrainState) -> None:  # reads nothing from the device
        nonlocal last
        assert counter is not None
        per_step.append(counter.count - last)
        last = counter.count

    config = tiny(max_train_batches=7, log_every=3, aux_horizons=(4,) if arch == "mambats"
                  else ())

    def start(state: TrainState) -> None:
        nonlocal counter, last
        if counter is None:  # counting starts after the first step (set-up is not a step)
            counter = SyncCounter(monkeypatch)
            last = 0

    train_supervised(data, arch, config=config, arch_config={"d_model": 8}, out_dir=tmp_path,
                     device="cpu", verbose=False, callbacks=[start, record])
    monkeypatch.undo()
    # per_step[k] covers step k + 1 (the first callback only started the counter).
    steps = list(range(2, 8))
    assert dict(zip(steps, per_step[1:], strict=True)) == {
        s: (1 if s % 3 == 0 else 0) for s in steps}


@needs_cuda
def test_cuda_training_steps_between_logging_steps_do_not_sync(
    data: PreparedData, tmp_path: Path
) -> None:
    steps = 6

    def guard(state: TrainState) -> None:  # steps 2 .. steps run under "error"
        torch.cuda.set_sync_debug_mode("error" if state.step < steps else "default")

    try:
        for arch in ("lstm", "mambats", "mamba"):
            train_supervised(data, arch, config=tiny(max_train_batches=steps, log_every=100),
                             arch_config={"d_model": 8}, out_dir=tmp_path / arch,
                             device="cuda", verbose=False, callbacks=[guard])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
def test_mambats_draws_its_permutation_on_the_gpu() -> None:
    from tradezoo.policies.registry import make_backbone

    net = make_backbone("mambats", 5, d_model=8).cuda().train()
    torch.cuda.set_sync_debug_mode("error")
    try:
        net(torch.randn(2, 32, 5, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert net.last_permutation is not None and net.last_permutation.is_cuda


# -------------------------------------------------------------- portable checkpoints


@pytest.fixture(scope="module")
def trained(data: PreparedData, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, dict[str, Any]]:
    """A tiny supervised checkpoint of each architecture with a device-specific backend."""
    out: dict[str, dict[str, Any]] = {}
    for arch in ("mamba", "mambats", "ltc", "timeparticle"):
        run = train_supervised(data, arch, config=tiny(), arch_config={"d_model": 8},
                               out_dir=tmp_path_factory.mktemp(arch), device="cpu",
                               verbose=False)
        out[arch] = load_checkpoint(run.best_checkpoint)
    return out


def _unavailable(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Make the availability probe of ``which`` say no (the loaders are left alone)."""
    if which == "mamba_ssm":
        mamba_ssm_stub.install(monkeypatch)  # the scan's call site routes to the stub ...
        monkeypatch.setattr(mamba, "mamba_ssm_available", lambda: False)  # ... not importable
    else:
        monkeypatch.setattr(native, "kernel_available", lambda name: False)


BACKENDS = [("mamba", "scan", "mamba_ssm"), ("mambats", "scan", "mamba_ssm"),
            ("mamba", "scan", "native"), ("ltc", "backend", "native"),
            ("timeparticle", "backend", "native")]


@pytest.mark.parametrize(("arch", "field", "value"), BACKENDS)
def test_checkpoint_with_an_unavailable_backend_loads_with_auto(
    trained: dict[str, dict[str, Any]], data: PreparedData, monkeypatch: pytest.MonkeyPatch,
    arch: str, field: str, value: str,
) -> None:
    ckpt = dict(trained[arch])
    ckpt["arch_config"] = {**ckpt["arch_config"], field: value}  # as saved on the other machine
    reference = model_from_checkpoint(trained[arch])
    _unavailable(monkeypatch, value)
    with pytest.warns(UserWarning, match=rf"{field}='{value}' cannot run on cpu .*using "
                                         rf"{field}='auto'"):
        model = model_from_checkpoint(ckpt)
    assert model.backbone_config()[field] == "auto"
    x = torch.randn(4, WINDOW, data.n_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x))


def test_ppo_checkpoint_with_an_unavailable_backend_loads_with_auto(
    data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradezoo.agents.ppo import PPOConfig, load_ppo_policy, train_ppo

    config = PPOConfig(timesteps=64, n_envs=2, n_steps=32, batch_size=32, n_epochs=1,
                       episode_length=48, eval_freq=0, checkpoint_freq=0, tensorboard=False,
                       arch_config={"d_model": 8, "backend": "native"}, features_dim=8)
    result = train_ppo(data, "ltc", config=config, out_dir=tmp_path, device="cpu",
                       progress=False, verbose=False)
    _unavailable(monkeypatch, "native")
    with pytest.warns(UserWarning, match="backend='native' cannot run on cpu"):
        policy, _ = load_ppo_policy(result.final_model)
    assert policy.features_extractor.backbone.config.backend == "auto"


def test_a_runnable_backend_is_kept_without_a_warning(
    trained: dict[str, dict[str, Any]],
) -> None:
    ckpt = dict(trained["ltc"])
    ckpt["arch_config"] = {**ckpt["arch_config"], "backend": "torch"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model_from_checkpoint(ckpt).backbone_config()["backend"] == "torch"


@needs_cuda
@pytest.mark.parametrize(("arch", "field", "value"), [BACKENDS[2], BACKENDS[3], BACKENDS[4]])
def test_native_checkpoint_loads_on_cuda(trained: dict[str, dict[str, Any]], arch: str,
                                         field: str, value: str) -> None:
    ckpt = dict(trained[arch])
    ckpt["arch_config"] = {**ckpt["arch_config"], field: value}
    with pytest.warns(UserWarning, match="cannot run on cuda"):
        model = model_from_checkpoint(ckpt, map_location="cuda")
    model(torch.zeros(2, WINDOW, model.n_features + 2, device="cuda"))


# ---------------------------------------------------------------------- evaluation


@needs_cuda
def test_evaluate_supervised_leaves_the_model_on_its_device(
    trained: dict[str, dict[str, Any]], data: PreparedData
) -> None:
    model = model_from_checkpoint(trained["ltc"], map_location="cuda")
    evaluate_supervised(model, data, "val", device="cpu")
    assert next(model.parameters()).is_cuda


# ---------------------------------------------------------------------- determinism


@pytest.fixture
def odd_flags() -> Iterator[DeterminismFlags]:
    """Process flags unlike both the defaults and ``deterministic=True``; restored after."""
    before = DeterminismFlags.current()
    odd = DeterminismFlags(algorithms=False, warn_only=False, cudnn_deterministic=False,
                           cudnn_benchmark=True, cublas_workspace=None)
    odd.apply()
    yield odd
    before.apply()


def _flag_recorder(seen: list[DeterminismFlags]) -> Any:
    def record(_: Any) -> None:
        seen.append(DeterminismFlags.current())
    return record


DETERMINISTIC = DeterminismFlags(algorithms=True, warn_only=False, cudnn_deterministic=True,
                                 cudnn_benchmark=False, cublas_workspace=":4096:8")


def test_supervised_deterministic_flags_hold_for_the_run_only(
    data: PreparedData, tmp_path: Path, odd_flags: DeterminismFlags
) -> None:
    seen: list[DeterminismFlags] = []
    train_supervised(data, "gru", config=tiny(deterministic=True), arch_config={"d_model": 8},
                     out_dir=tmp_path / "ok", device="cpu", verbose=False,
                     callbacks=[_flag_recorder(seen)])
    assert seen and set(seen) == {DETERMINISTIC}
    assert DeterminismFlags.current() == odd_flags

    def explode(state: TrainState) -> None:
        raise RuntimeError("a callback broke")

    with pytest.raises(RuntimeError, match="a callback broke"):
        train_supervised(data, "gru", config=tiny(deterministic=True),
                         arch_config={"d_model": 8}, out_dir=tmp_path / "fails", device="cpu",
                         verbose=False, callbacks=[explode])
    assert DeterminismFlags.current() == odd_flags


def test_ppo_restores_the_determinism_flags(
    data: PreparedData, tmp_path: Path, odd_flags: DeterminismFlags
) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from tradezoo.agents.ppo import PPOConfig, train_ppo

    seen: list[DeterminismFlags] = []

    class Record(BaseCallback):
        def __init__(self, fail: bool) -> None:
            super().__init__()
            self.fail = fail

        def _on_step(self) -> bool:
            seen.append(DeterminismFlags.current())
            if self.fail:
                raise RuntimeError("a callback broke")
            return True

    config = PPOConfig(timesteps=64, n_envs=2, n_steps=32, batch_size=32, n_epochs=1,
                       episode_length=48, eval_freq=0, checkpoint_freq=0, tensorboard=False,
                       arch_config={"d_model": 8}, features_dim=8, deterministic=True)
    train_ppo(data, "gru", config=config, out_dir=tmp_path / "ok", device="cpu",
              progress=False, verbose=False, callbacks=[Record(False)])
    assert seen and set(seen) == {DETERMINISTIC}
    assert DeterminismFlags.current() == odd_flags
    with pytest.raises(RuntimeError, match="a callback broke"):
        train_ppo(data, "gru", config=config, out_dir=tmp_path / "fails", device="cpu",
                  progress=False, verbose=False, callbacks=[Record(True)])
    assert DeterminismFlags.current() == odd_flags


# ---------------------------------------------------------------------------- resume


def test_resume_restores_the_cuda_rng_state_too(
    data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA half of the RNG round trip, with torch.cuda's RNG functions standing in for a
    GPU (the training itself runs on the CPU)."""
    saved_state = torch.arange(16, dtype=torch.uint8)
    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [saved_state.clone()])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    first = train_supervised(data, "gru", config=tiny(), arch_config={"d_model": 8},
                             out_dir=tmp_path, device="cpu", verbose=False)
    assert restored == []
    train_supervised(data, "gru", config=tiny(epochs=2), arch_config={"d_model": 8},
                     out_dir=tmp_path, device="cpu", verbose=False,
                     resume_from=first.last_checkpoint)
    assert len(restored) == 1 and torch.equal(restored[0][0], saved_state)


@needs_cuda
def test_cuda_resume_keeps_adam_step_counters_where_the_optimiser_wants_them(
    data: PreparedData, tmp_path: Path
) -> None:
    first = train_supervised(data, "gru", config=tiny(), arch_config={"d_model": 8},
                             out_dir=tmp_path, device="cuda", verbose=False)
    more = train_supervised(data, "gru", config=tiny(epochs=2), arch_config={"d_model": 8},
                            out_dir=tmp_path, device="cuda", verbose=False,
                            resume_from=first.last_checkpoint)
    assert more.steps == 4


# --------------------------------------------------------------- autocast from the CLI


@pytest.mark.parametrize("arch", ["cfc", "mamba"])
def test_cli_trains_under_cpu_bf16_autocast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    from tradezoo.cli import main

    calls = mamba_ssm_stub.install(monkeypatch)
    csv = tmp_path / "bars.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:1500].to_csv(csv)
    out = tmp_path / "run"
    assert main(["train", "supervised", "--data", str(csv), "--costs", "bybit-linear",
                 "--window", "16", "--d-model", "8", "--device", "cpu", "--quiet",
                 "--arch", arch, "--epochs", "1", "--set", "supervised.max_train_batches=2",
                 "--set", "supervised.features_dim=8", "--set", "supervised.amp=bf16",
                 "--out", str(out)]) == 0
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(out / name)
        assert ckpt["training"]["amp"] == "bf16"
        model_from_checkpoint(ckpt)
    if arch == "mamba":  # scan="auto" took the (stubbed) kernel, under bf16
        assert torch.bfloat16 in calls
