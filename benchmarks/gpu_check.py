"""GPU check: one command that runs the CUDA path of every part once, time-boxed, into JSON.

Sections (each under its own time box, in seconds, on the full run)::

    0 environment (15)   versions, the GPU, bf16 support, whether mamba_ssm and causal_conv1d
                         import (with the exception text when not), native CPU kernels
    1 architectures (55) every registered architecture as the supervised model: float32
                         forward and gradient parity against the CPU, one bf16-autocast
                         training step and one no_grad autocast evaluation against float32
    2 mamba scans (35)   sequential, chunked (automatic chunk and whole-window chunks) and
                         mamba_ssm (when it imports) on outputs and gradients at L = 64 and
                         257, and timed forward+backward
    3 supervised (85)    train_supervised for mamba, cfc, ltc, msa and lstm (1 epoch, capped
                         batches); best.pt loaded on the CPU against the model on the device
                         (class probabilities); a resume from last.pt counting host syncs per
                         optimiser step
    4 PPO (105)          mamba, cfc and ltc: rollout steps/s with the policy on the CPU and on
                         the device, policy forward times per batch against the rollout rule
                         (tradezoo.agents.rollout), end-to-end timesteps/s of train_ppo
                         (device "auto" and, on a GPU, "cpu"), final model reloaded on the CPU
                         against the trained policy
    5 throughput (135)   benchmarks/model_throughput.py --device <device> --quick (peer:
                         nn.LSTM only, to keep within the box)
    6 sweep (90)         a two-cell compare grid (mlp and gru, supervised, smoke budget) as
                         Ray tasks on a local Ray runtime, each cell given half a GPU
                         (``--gpus-per-run 0.5``; none on the CPU): both cells done on the
                         device, records back on the driver, a rerun finds both in the store

Time boxes: the sections run in one worker process that records every finished item in the
output file as it goes; a section past its box has the worker killed, is recorded as
``"status": "timeout"`` with the items it finished, and the next sections run in a fresh
worker (a section that ends past its box before the parent's next look, every 0.2 s, is
recorded as timed out too). A worker that dies (a crash in C, an out-of-memory kill) marks
its section ``"error"`` with its stderr's tail.

Statuses: an item with a check has ``"ok"``; an item that raised has ``"error"`` (the
traceback). A section is ``ok``, ``failed`` (a check did not hold), ``error`` (an item raised
or the worker died) or ``timeout``. Exit code: 1 on any error, 2 on a failed check or a
timeout without error, 0 otherwise.

Tolerances: float32 parity CPU vs device, relative L2 error ``||a - b|| / ||b||`` at most
``FLOAT32_TOLERANCE`` (TF32 off for these); bf16 autocast against float32 at most
``BF16_TOLERANCE`` (docs/training.md, "Mixed precision"); probabilities of a reloaded model
within ``PROBABILITY_TOLERANCE`` (absolute).

Usage (repository root; docs/training.md "GPU check" lists what to install beforehand)::

    python benchmarks/gpu_check.py --out gpu_check.json                 # CUDA, < 10 minutes
    python benchmarks/gpu_check.py --device cpu --quick --out x.json    # smoke run (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

FLOAT32_TOLERANCE = 1e-3
"""Relative L2 error of float32 outputs and gradients, device against CPU (reordered
reductions over windows of recurrent steps; TF32 off)."""
BF16_TOLERANCE = 0.03
"""Relative L2 error of bf16 autocast against float32 (docs/training.md, Mixed precision)."""
PROBABILITY_TOLERANCE = 1e-4
"""Largest absolute difference of class or action probabilities, reloaded vs trained."""

#: Section id -> (name, time box in seconds). The boxes add up to 520 s, which leaves the
#: worker restarts after a timeout within the 10 minutes.
SECTIONS: dict[int, tuple[str, float]] = {
    0: ("environment", 15.0),
    1: ("architectures", 55.0),
    2: ("mamba_scans", 35.0),
    3: ("supervised", 85.0),
    4: ("ppo", 105.0),
    5: ("throughput", 135.0),
    6: ("sweep", 90.0),
}
SWEEP_ARCHS = ("mlp", "gru")
SUPERVISED_ARCHS = ("mamba", "cfc", "ltc", "msa", "lstm")
PPO_ARCHS = ("mamba", "cfc", "ltc")
SCAN_LENGTHS = (64, 257)

#: Sizes of the full run and of the smoke run (``--quick``).
SIZES: dict[bool, dict[str, Any]] = {
    False: {"bars": None, "window": 64, "d_model": 64, "batch": 64, "sup_batch": 256,
            "sup_batches": 20, "eval_batches": 4, "scan_batch": 64, "scan_inner": 128,
            "scan_state": 16, "scan_repeats": 5, "ppo_timesteps": 4096, "n_envs": 8,
            "n_steps": 256, "ppo_batch": 256, "rollout_steps": 64,
            "forward_batches": (1, 8, 64, 256), "forward_calls": 20},
    True: {"bars": 1500, "window": 16, "d_model": 8, "batch": 4, "sup_batch": 32,
           "sup_batches": 3, "eval_batches": 1, "scan_batch": 2, "scan_inner": 8,
           "scan_state": 4, "scan_repeats": 1, "ppo_timesteps": 128, "n_envs": 2,
           "n_steps": 32, "ppo_batch": 32, "rollout_steps": 8,
           "forward_batches": (1, 8), "forward_calls": 2},
}


# ------------------------------------------------------------------------------ recording


def _write_json(path: Path, data: Any) -> None:
    """Atomic write (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Recorder:
    """The worker's side: every item's result goes to ``path`` as soon as it is known."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = {"sections": {}, "current": None}
        self.section: dict[str, Any] | None = None

    def _flush(self) -> None:
        _write_json(self.path, self.state)

    def start(self, sid: int, box: float) -> None:
        self.section = {"name": SECTIONS[sid][0], "box_s": box, "status": "running",
                        "items": {}}
        self._started = time.perf_counter()
        self.state["sections"][str(sid)] = self.section
        self.state["current"] = {"section": sid, "started": time.time()}
        self._flush()

    def item(self, key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one item; record its result (or its traceback) and return the result."""
        assert self.section is not None
        started = time.perf_counter()
        try:
            result = dict(fn())
        except Exception:  # recorded: the check goes on with the next item
            result = {"error": traceback.format_exc(limit=8)}
        result["seconds"] = round(time.perf_counter() - started, 3)
        self.section["items"][key] = result
        self._flush()
        return None if "error" in result else result

    def finish(self) -> None:
        assert self.section is not None
        items = self.section["items"].values()
        seconds = time.perf_counter() - self._started
        self.section["seconds"] = round(seconds, 3)
        self.section["status"] = ("error" if any("error" in r for r in items) else
                                  "timeout" if seconds > self.section["box_s"] else
                                  "failed" if any(r.get("ok") is False for r in items)
                                  else "ok")
        self.state["current"] = None
        self._flush()


# ------------------------------------------------------------------------------- helpers


def _relative_error(got: Any, want: Any) -> float:
    import torch

    want = want.detach().double().cpu()
    got = got.detach().double().cpu()
    norm = float(torch.linalg.vector_norm(want))
    return float(torch.linalg.vector_norm(got - want)) / max(norm, 1e-30)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: Any, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


def _small_config(arch: str, d_model: int) -> dict[str, Any]:
    from tradezoo.policies.registry import get_architecture

    fields = get_architecture(arch).config_cls.field_names()
    return {"d_model": d_model, **({"n_layers": 1} if "n_layers" in fields else {})}


def _data(sizes: dict[str, Any]) -> Any:
    from tradezoo.agents.data import prepare_data
    from tradezoo.data import load_dataset

    bars = load_dataset("bybit-btcusdt-1h")
    if sizes["bars"] is not None:
        bars = bars.iloc[: sizes["bars"]]
    return prepare_data(bars, window=sizes["window"])


@contextlib.contextmanager
def count_host_reads() -> Iterator[Callable[[], int]]:
    """Count the tensor methods that copy a value to the host (each a device sync on a GPU):
    ``item``, ``tolist``, ``cpu``, ``numpy`` and ``float``/``int``/``bool`` of a tensor.
    Yields a function returning the count so far; the methods are restored on exit."""
    import torch

    names = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    count = [0]

    def counted(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return original(tensor, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield lambda: count[0]
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@contextlib.contextmanager
def count_cuda_syncs() -> Iterator[Callable[[], int]]:
    """Count CUDA synchronisations: under ``torch.cuda.set_sync_debug_mode("warn")`` every
    synchronising call warns. Yields a function returning the count so far."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield lambda: sum("synchroniz" in str(w.message) for w in caught)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------ sections


def section_environment(rec: Recorder, device: Any, sizes: dict[str, Any]) -> None:
    def versions() -> dict[str, Any]:
        import platform

        import numpy
        import stable_baselines3
        import torch

        import tradezoo

        return {"python": platform.python_version(), "platform": platform.platform(),
                "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                "numpy": numpy.__version__, "stable_baselines3": stable_baselines3.__version__,
                "tradezoo": tradezoo.__version__, "torch_threads": torch.get_num_threads(),
                "device": str(device)}

    def gpu() -> dict[str, Any]:
        import torch

        if not torch.cuda.is_available():
            return {"cuda_available": False, "bf16_supported": False}
        props = torch.cuda.get_device_properties(device)
        return {"cuda_available": True, "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "device_count": torch.cuda.device_count(),
                "bf16_supported": bool(torch.cuda.is_bf16_supported())}

    def imports() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, module in (("mamba_ssm", "mamba_ssm.ops.selective_scan_interface"),
                             ("causal_conv1d", "causal_conv1d")):
            try:
                importlib.import_module(module)
                out[name] = {"imports": True}
            except Exception as error:  # the reason is the finding
                out[name] = {"imports": False, "error": f"{type(error).__name__}: {error}"}
        from tradezoo.policies import mamba

        out["mamba_scan_auto_on_device"] = mamba.resolve_scan("auto", device)
        return out

    def kernels() -> dict[str, Any]:  # the compiled CPU kernels (CPU rollouts use them)
        import torch

        from tradezoo.policies import native

        names = sorted(p.stem for p in Path(native.__file__).parent.glob("*.c"))
        return {name: native.native_unavailable(name, torch.device("cpu")) or "available"
                for name in names}

    rec.item("versions", versions)
    rec.item("gpu", gpu)
    rec.item("imports", imports)
    rec.item("native_kernels", kernels)


def section_architectures(rec: Recorder, device: Any, sizes: dict[str, Any]) -> None:
    import torch

    from tradezoo.agents.supervised import SupervisedModel
    from tradezoo.policies.registry import ARCHITECTURES

    n_features, window, batch = 6, sizes["window"], sizes["batch"]

    def run(model: Any, obs: Any, weights: Any, amp: bool) -> tuple[Any, list[Any]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast(obs.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(obs)
        (out.float() * weights).sum().backward()
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                 for p in model.parameters()]
        return out.detach().float(), grads

    def check(arch: str) -> dict[str, Any]:
        torch.manual_seed(0)
        cpu_model = SupervisedModel(arch, n_features, window, features_dim=sizes["d_model"],
                                    arch_config=_small_config(arch, sizes["d_model"])).train()
        obs = torch.randn(batch, window, n_features + 2)
        weights = torch.randn(batch, 3)
        want, want_grads = run(cpu_model, obs, weights, amp=False)
        model = copy.deepcopy(cpu_model).to(device)
        got, got_grads = run(model, obs.to(device), weights.to(device), amp=False)
        flat = torch.cat([g.reshape(-1).cpu() for g in got_grads])
        flat_want = torch.cat([g.reshape(-1) for g in want_grads])
        result: dict[str, Any] = {"fp32_output_rel": _relative_error(got, want),
                                  "fp32_grad_rel": _relative_error(flat, flat_want)}
        # one bf16-autocast training step, then a no_grad autocast evaluation
        bf16_out, bf16_grads = run(model, obs.to(device), weights.to(device), amp=True)
        flat_bf16 = torch.cat([g.reshape(-1).cpu() for g in bf16_grads])
        result["bf16_train_output_rel"] = _relative_error(bf16_out, want)
        result["bf16_grad_rel"] = _relative_error(flat_bf16, flat_want)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        optimizer.step()
        result["bf16_step_finite"] = all(bool(p.isfinite().all()) for p in model.parameters())
        model.load_state_dict(cpu_model.state_dict())  # the float32 reference weights again
        model.eval()
        cpu_model.eval()
        with torch.no_grad():
            eval_want = cpu_model(obs)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                eval_got = model(obs.to(device))
        result["bf16_eval_rel"] = _relative_error(eval_got.float(), eval_want)
        result["ok"] = (result["fp32_output_rel"] <= FLOAT32_TOLERANCE
                        and result["fp32_grad_rel"] <= FLOAT32_TOLERANCE
                        and result["bf16_train_output_rel"] <= BF16_TOLERANCE
                        and result["bf16_grad_rel"] <= BF16_TOLERANCE
                        and result["bf16_eval_rel"] <= BF16_TOLERANCE
                        and result["bf16_step_finite"])
        return result

    for arch in ARCHITECTURES:
        rec.item(arch, lambda arch=arch: check(arch))


def section_mamba_scans(rec: Recorder, device: Any, sizes: dict[str, Any]) -> None:
    import torch

    from tradezoo.policies import mamba

    batch, inner, n_state = sizes["scan_batch"], sizes["scan_inner"], sizes["scan_state"]
    have_kernel = device.type == "cuda" and mamba.mamba_ssm_available()

    def inputs(length: int) -> list[Any]:
        g = torch.Generator().manual_seed(length)
        u = torch.randn(batch, length, inner, generator=g)
        delta = torch.nn.functional.softplus(torch.randn(batch, length, inner, generator=g))
        A = -torch.rand(inner, n_state, generator=g) - 0.1
        B = torch.randn(batch, length, n_state, generator=g)
        C = torch.randn(batch, length, n_state, generator=g)
        D = torch.randn(inner, generator=g)
        return [t.to(device).requires_grad_() for t in (u, delta, A, B, C, D)]

    def scans(length: int) -> dict[str, Callable[..., Any]]:
        out: dict[str, Callable[..., Any]] = {
            "sequential": mamba.selective_scan_sequential,
            "chunked_auto": mamba.selective_scan_chunked,
            "chunked_window": lambda *t: mamba.selective_scan_chunked(*t, chunk_size=length),
        }
        if have_kernel:
            out["mamba_ssm"] = mamba.selective_scan_mamba_ssm
        return out

    def forward_backward(fn: Callable[..., Any], tensors: list[Any],
                         weights: Any) -> tuple[Any, list[Any]]:
        for t in tensors:
            t.grad = None
        y = fn(*tensors)
        (y * weights).sum().backward()
        return y.detach(), [t.grad.detach().clone() for t in tensors]

    def check(length: int) -> dict[str, Any]:
        tensors = inputs(length)
        weights = torch.randn(batch, length, inner, device=device)
        ref_y, ref_grads = forward_backward(mamba.selective_scan_sequential, tensors, weights)
        result: dict[str, Any] = {
            "auto_chunk": mamba._chunk_length(length, batch * inner * n_state, None,
                                              device.type),
            "mamba_ssm": "compared" if have_kernel else "not importable here"}
        ok = True
        for name, fn in scans(length).items():
            y, grads = forward_backward(fn, tensors, weights)
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat_ref = torch.cat([g.reshape(-1) for g in ref_grads])
            entry = {"output_rel": _relative_error(y, ref_y),
                     "grad_rel": _relative_error(flat, flat_ref),
                     "fwd_bwd_ms": 1e3 * _timed(lambda fn=fn: forward_backward(
                         fn, tensors, weights), device, sizes["scan_repeats"])}
            ok &= entry["output_rel"] <= FLOAT32_TOLERANCE and entry["grad_rel"] <= (
                FLOAT32_TOLERANCE)
            result[name] = entry
        result["ok"] = ok
        return result

    for length in SCAN_LENGTHS:
        rec.item(f"L{length}", lambda length=length: check(length))


def section_supervised(rec: Recorder, device: Any, sizes: dict[str, Any],
                       workdir: Path) -> None:

    from tradezoo.agents.supervised import (
        SupervisedConfig,
        model_from_checkpoint,
        model_predictions,  # the evaluation's own inputs (timeframes, elapsed time)
        train_supervised,
    )

    data = _data(sizes)
    log_every = 5 if sizes["sup_batches"] > 5 else 2

    def config(epochs: int) -> Any:
        return SupervisedConfig(epochs=epochs, batch_size=sizes["sup_batch"],
                                max_train_batches=sizes["sup_batches"],
                                max_eval_batches=sizes["eval_batches"],
                                features_dim=sizes["d_model"], log_every=log_every,
                                progress=False, tensorboard=False)

    def check(arch: str) -> dict[str, Any]:
        out = workdir / "supervised" / arch
        arch_config = _small_config(arch, sizes["d_model"])
        started = time.perf_counter()
        result = train_supervised(data, arch, config=config(1), arch_config=arch_config,
                                  out_dir=out, device=device, verbose=False)
        record: dict[str, Any] = {"train_s": round(time.perf_counter() - started, 3),
                                  "steps": result.steps}
        # best.pt on the CPU against the trained model on the device (float32, no autocast)
        reloaded = model_from_checkpoint(result.best_checkpoint, map_location="cpu")
        model_data = data.for_model(arch, arch_config)
        rows = model_data.decision_rows("val")[:64]
        want = model_predictions(result.model, model_data, rows, batch_size=64)
        got = model_predictions(reloaded, model_data, rows, batch_size=64, device="cpu")
        record["best_pt_cpu_prob_max_abs"] = float(abs(got - want).max())
        # resume from last.pt for one more epoch, counting host syncs per optimiser step
        per_step: list[tuple[int, int]] = []
        counter_ctx = count_cuda_syncs() if device.type == "cuda" else count_host_reads()
        with counter_ctx as count:
            last = [count()]

            def record_step(state: Any) -> None:  # reads nothing from the device
                now = count()
                per_step.append((int(state.step), now - last[0]))
                last[0] = now

            train_supervised(data, arch, config=config(2), arch_config=arch_config,
                             out_dir=out, device=device, resume_from=result.last_checkpoint,
                             verbose=False, callbacks=[record_step])
        steady = per_step[1:]  # the first step of an epoch also pays the epoch's set-up
        record["syncs_per_step"] = {str(step): n for step, n in per_step}
        record["log_every"] = log_every
        record["max_syncs_logging_step"] = max(
            [n for s, n in steady if s % log_every == 0], default=0)
        record["max_syncs_other_step"] = max(
            [n for s, n in steady if s % log_every != 0], default=0)
        record["ok"] = (record["best_pt_cpu_prob_max_abs"] <= PROBABILITY_TOLERANCE
                        and record["max_syncs_logging_step"] <= 1
                        and record["max_syncs_other_step"] == 0)
        return record

    for arch in SUPERVISED_ARCHS:
        rec.item(arch, lambda arch=arch: check(arch))


def _env_observations(model: Any, n: int) -> Any:
    """``n`` observations of a PPO model's own env (its first reset's, repeated), as tensors:
    ``[n, ...]``, or a dict of them for Dict observations (timeframes, elapsed time)."""
    import numpy as np
    import torch

    obs = model.get_env().reset()

    def tile(values: Any) -> Any:
        repeats = -(-n // len(values))
        return torch.as_tensor(np.concatenate([values] * repeats)[:n])

    return {k: tile(v) for k, v in obs.items()} if isinstance(obs, dict) else tile(obs)


def _to(obs: Any, device: Any) -> Any:
    return {k: v.to(device) for k, v in obs.items()} if isinstance(obs, dict) else obs.to(device)


def section_ppo(rec: Recorder, device: Any, sizes: dict[str, Any], workdir: Path) -> None:
    import torch

    from tradezoo.agents.ppo import PPOConfig, load_ppo_policy, make_ppo, train_ppo
    from tradezoo.agents.rollout import choose_rollout_device

    data = _data(sizes)

    def config(**overrides: Any) -> Any:
        base = dict(timesteps=sizes["ppo_timesteps"], n_envs=sizes["n_envs"],
                    n_steps=sizes["n_steps"], batch_size=sizes["ppo_batch"], n_epochs=4,
                    episode_length=max(2 * sizes["n_steps"], 64),
                    arch_config=_small_config("mamba", sizes["d_model"]),
                    features_dim=sizes["d_model"], eval_freq=sizes["ppo_timesteps"],
                    eval_episodes=2, eval_episode_length=sizes["n_steps"], checkpoint_freq=0,
                    tensorboard=False, eval_figure=False)
        base.update(overrides)
        return PPOConfig(**base)

    trained: dict[str, Any] = {}

    def rollouts(arch: str) -> dict[str, Any]:
        cfg = config(arch_config=_small_config(arch, sizes["d_model"]))
        model = trained.pop(arch, None) or make_ppo(data, arch, config=cfg, seed=0,
                                                    device=device)
        out: dict[str, Any] = {"n_envs": cfg.n_envs,
                               "rule": str(choose_rollout_device(device, cfg.n_envs))}
        _total, callback = model._setup_learn(10**9, callback=None)
        for where in dict.fromkeys(["cpu", str(device)]):
            model.set_rollout_device(where)
            steps = sizes["rollout_steps"]
            started = time.perf_counter()
            model.collect_rollouts(model.env, callback, model.rollout_buffer, steps)
            seconds = time.perf_counter() - started
            out[f"rollout_steps_per_s_{where}"] = round(steps * cfg.n_envs / seconds, 1)
        # policy forward alone per batch, on each device, against the rule's choice
        policy_cpu = copy.deepcopy(model.policy).to("cpu").eval()
        policy_dev = model.policy.eval()
        forward: dict[str, Any] = {}
        for batch in sizes["forward_batches"]:
            obs = _env_observations(model, batch)
            row: dict[str, Any] = {}
            for name, policy in (("cpu", policy_cpu), (str(device), policy_dev)):
                x = _to(obs, policy.device)
                with torch.no_grad():
                    row[f"{name}_ms"] = round(1e3 * _timed(
                        lambda p=policy, x=x: p(x), policy.device, sizes["forward_calls"]), 3)
            faster = min(("cpu", str(device)), key=lambda n: row[f"{n}_ms"])
            row["faster"] = faster
            row["rule"] = str(choose_rollout_device(device, batch))
            forward[str(batch)] = row
        out["policy_forward"] = forward
        return out

    def end_to_end(arch: str) -> dict[str, Any]:
        cfg = config(arch_config=_small_config(arch, sizes["d_model"]))
        result = train_ppo(data, arch, config=cfg, out_dir=workdir / "ppo" / arch, seed=0,
                           device=device, progress=False, verbose=False)
        trained[arch] = result.model  # its env is built: the rollout timing reuses it
        record: dict[str, Any] = {
            "timesteps": result.num_timesteps, "device": result.device,
            "rollout_device": result.rollout_device,
            "timesteps_per_s": round(result.num_timesteps / result.train_seconds, 1)}
        loaded = load_ppo_policy(result.final_model, device="cpu")
        obs = _env_observations(result.model, 64)
        policy = result.model.policy
        policy.set_training_mode(False)
        with torch.no_grad():
            want = policy.get_distribution(_to(obs, policy.device)).distribution.probs.cpu()
            got = loaded.policy.get_distribution(obs).distribution.probs
        record["reload_cpu_prob_max_abs"] = float((got - want).abs().max())
        record["ok"] = record["reload_cpu_prob_max_abs"] <= PROBABILITY_TOLERANCE
        return record

    def cpu_baseline(arch: str) -> dict[str, Any]:
        cfg = config(arch_config=_small_config(arch, sizes["d_model"]))
        result = train_ppo(data, arch, config=cfg, out_dir=workdir / "ppo_cpu" / arch, seed=0,
                           device="cpu", progress=False, verbose=False)
        return {"timesteps_per_s": round(result.num_timesteps / result.train_seconds, 1)}

    for arch in PPO_ARCHS:
        rec.item(f"{arch}_train", lambda arch=arch: end_to_end(arch))
        rec.item(f"{arch}_rollouts", lambda arch=arch: rollouts(arch))
    if device.type != "cpu":  # the device="cpu" runs "auto" must not be slower than
        for arch in PPO_ARCHS:
            rec.item(f"{arch}_train_cpu", lambda arch=arch: cpu_baseline(arch))


def section_throughput(rec: Recorder, device: Any, sizes: dict[str, Any], workdir: Path,
                       quick: bool) -> None:
    def run() -> dict[str, Any]:
        out = workdir / "model_throughput.json"
        argv = [sys.executable, str(BENCH / "model_throughput.py"), "--device", device.type,
                "--quick", "--json", str(out)]
        if quick:  # the smoke run: one architecture, no peers, a short window
            argv += ["--archs", "mlp", "--peers", "--lengths", "16"]
        else:
            argv += ["--peers", "lstm"]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"model_throughput.py exited {done.returncode}: "
                               f"{done.stderr[-2000:]}")
        rows = json.loads(out.read_text())["results"]
        failed = [r["model"] for r in rows if "error" in r]
        table = {f"{r['model']}@L{r.get('seq_len', '?')}": {
            k: r[k] for k in ("train_sps_median", "fwd_b1_ms_median", "peak_cuda_mb")
            if k in r} for r in rows if "error" not in r}
        return {"cases": len(rows), "failed_cases": failed, "results": table,
                "ok": not failed}

    rec.item("model_throughput_quick", run)


def section_sweep(rec: Recorder, device: Any, sizes: dict[str, Any], workdir: Path) -> None:
    def run() -> dict[str, Any]:
        import ray

        from tradezoo.agents.config import resolve_options, training_options
        from tradezoo.agents.sweep import ExecutionOptions, expand_grid, run_grid
        from tradezoo.data import load_dataset

        bars = workdir / "sweep_bars.csv"
        load_dataset("bybit-btcusdt-1h").iloc[:sizes["bars"] or 4000].to_csv(bars)
        flags = {"archs": ",".join(SWEEP_ARCHS), "mode": "supervised", "seeds": 1,
                 "budget": "smoke", "costs": "bybit-linear", "window": sizes["window"],
                 "arch_config.d_model": sizes["d_model"], "progress": False}
        options = training_options("compare", resolve_options("compare", flags=flags))
        tasks = expand_grid(options, data=[str(bars)], baselines=False)
        on_gpu = device.type == "cuda"
        execution = ExecutionOptions(backend="ray", device=str(device),
                                     gpus_per_run=0.5 if on_gpu else 0.0)
        ray.init(num_cpus=2, num_gpus=1 if on_gpu else 0, include_dashboard=False,
                 log_to_driver=False)
        try:
            with open(os.devnull, "w") as quiet:
                first = run_grid(tasks, workdir / "sweep", execution, keep_work=False,
                                 stream=quiet)
                again = run_grid(tasks, workdir / "sweep", execution, keep_work=False,
                                 stream=quiet)
        finally:
            ray.shutdown()
        cells = {r["cell"]["arch"]: {"status": r["status"], "device": r["device"],
                                     "worker": r["worker"], "wall_time_s": r["wall_time_s"],
                                     "error": r.get("error")} for r in first.records}
        on_device = all(str(c["device"]).split(":")[0] == device.type for c in cells.values())
        return {"cells": cells, "seconds": round(first.seconds, 2),
                "gpus_per_run": execution.gpus_per_run, "rerun_ran": len(again.ran),
                "ok": (all(c["status"] == "done" for c in cells.values()) and on_device
                       and len(first.ran) == len(SWEEP_ARCHS) and not again.ran)}

    rec.item("ray_two_cells", run)


def run_worker(args: argparse.Namespace) -> int:
    """Run ``args.sections`` in this process, recording into ``args.progress``."""
    import torch

    torch.device(args.device)  # a malformed device fails before the slower imports
    from tradezoo.agents.devices import resolve_device

    device = resolve_device(args.device)
    if args.quick:  # the smoke run's tiny models: one thread is fastest on a shared machine
        torch.set_num_threads(1)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    else:  # float32 parity means float32: no TF32 matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sizes = SIZES[bool(args.quick)]
    rec = Recorder(Path(args.progress))
    workdir = Path(args.workdir)
    boxes = section_boxes(args)
    for sid in args.sections:
        rec.start(sid, boxes[sid])
        if sid == 0:
            section_environment(rec, device, sizes)
        elif sid == 1:
            section_architectures(rec, device, sizes)
        elif sid == 2:
            section_mamba_scans(rec, device, sizes)
        elif sid == 3:
            section_supervised(rec, device, sizes, workdir)
        elif sid == 4:
            section_ppo(rec, device, sizes, workdir)
        elif sid == 5:
            section_throughput(rec, device, sizes, workdir, bool(args.quick))
        elif sid == 6:
            section_sweep(rec, device, sizes, workdir)
        rec.finish()
    return 0


# ------------------------------------------------------------------------------- parent


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"sections": {}, "current": None}


def _kill(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_sections(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the sections in worker processes, each section under its box."""
    results: dict[str, Any] = {}
    pending = list(args.sections)
    boxes = section_boxes(args)
    attempt = 0
    while pending:
        attempt += 1
        progress = workdir / f"progress_{attempt}.json"
        stderr_path = workdir / f"worker_{attempt}.stderr"
        argv = [sys.executable, __file__, "--worker", "--device", args.device,
                "--progress", str(progress), "--workdir", str(workdir),
                "--sections", *map(str, pending), *(f"--box={k}={v}" for k, v in boxes.items())
                ] + (["--quick"] if args.quick else [])
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=stderr, stderr=stderr, text=True,
                                       start_new_session=True)
            timed_out: int | None = None
            while process.poll() is None:
                time.sleep(0.2)
                current = _read(progress).get("current")
                if current is not None:
                    box = boxes[int(current["section"])]
                    if time.time() - float(current["started"]) > box:
                        timed_out = int(current["section"])
                        _kill(process)
                        break
        state = _read(progress)
        results.update(state.get("sections", {}))
        done = {int(s) for s, r in state.get("sections", {}).items()
                if r.get("status") not in ("running", None)}
        current = state.get("current")
        if timed_out is not None:
            results[str(timed_out)]["status"] = "timeout"
            done.add(timed_out)
        elif current is not None or process.returncode != 0:
            # the worker died: in a section (that section), or outside any (the sections it
            # did not reach, e.g. a device that does not exist here)
            failed = ([int(current["section"])] if current is not None
                      else [s for s in pending if s not in done])
            for sid in failed:
                section = results.setdefault(str(sid), {"name": SECTIONS[sid][0],
                                                        "box_s": boxes[sid], "items": {}})
                section["status"] = "error"
                section["worker_exit"] = process.returncode
                section["worker_stderr_tail"] = stderr_path.read_text()[-4000:]
            done.update(failed)
        pending = [s for s in pending if s not in done]
    return results


def section_boxes(args: argparse.Namespace) -> dict[int, float]:
    """Every section's time box in seconds: ``SECTIONS``' times ``--box-scale``, or a
    ``--box SECTION=SECONDS`` given for it.

    Raises:
        SystemExit: a malformed ``--box`` (argparse's error).
    """
    boxes = {sid: box * args.box_scale for sid, (_name, box) in SECTIONS.items()}
    for text in args.box:
        sid, _, seconds = text.partition("=")
        try:
            key, value = int(sid), float(seconds)
        except ValueError:
            key, value = -1, -1.0
        if key not in SECTIONS or not value > 0:
            raise SystemExit(f"--box {text!r}: expected SECTION=SECONDS with a section in "
                             f"{list(SECTIONS)} and seconds > 0")
        boxes[key] = value
    return boxes


def exit_code(sections: dict[str, Any]) -> int:
    """1 on any error, 2 on a failed check or a timeout, 0 otherwise."""
    statuses = {s.get("status") for s in sections.values()}
    if "error" in statuses:
        return 1
    return 2 if statuses & {"failed", "timeout"} else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report")
    parser.add_argument("--sections", nargs="*", type=int, default=list(SECTIONS),
                        choices=list(SECTIONS), help="sections to run (default all)")
    parser.add_argument("--box-scale", type=float, default=1.0,
                        help="multiply every section's time box (default 1)")
    parser.add_argument("--box", action="append", default=[], metavar="SECTION=SECONDS",
                        help="one section's time box (repeatable; overrides --box-scale)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    section_boxes(args)  # a bad --box fails before anything runs
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tradezoo-gpu-check-") as tmp:
        sections = run_sections(args, Path(tmp))
    report = {
        "device": args.device, "quick": bool(args.quick), "argv": sys.argv,
        "seconds": round(time.perf_counter() - started, 1),
        "tolerances": {"float32_rel": FLOAT32_TOLERANCE, "bf16_rel": BF16_TOLERANCE,
                       "probability_abs": PROBABILITY_TOLERANCE},
        "sections": {sid: sections[sid] for sid in sorted(sections, key=int)},
    }
    code = exit_code(sections)
    report["exit_code"] = code
    _write_json(Path(args.out), report)
    for sid, section in report["sections"].items():
        print(f"section {sid} {section.get('name')}: {section.get('status')}"
              f" ({len(section.get('items', {}))} items)")
    print(f"wrote {args.out} in {report['seconds']} s; exit code {code}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
