"""The LTC's compiled kernel (tradezoo/policies/native/ltc.c) against its PyTorch reference,
and the kernel builder (tradezoo/policies/native/__init__.py): cache, fallback, bad input."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from tradezoo.policies import native
from tradezoo.policies.ltc import LTCBackbone, LTCConfig
from tradezoo.policies.native import NativeBuildError, load_kernel, native_status

F_IN = 6

pytestmark = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the native kernel cannot be built here"
)


def _pair(seed: int = 0, **cfg: object) -> tuple[LTCBackbone, LTCBackbone]:
    """The same LTC (same weights) on the PyTorch reference and on the kernel."""
    torch.manual_seed(seed)
    cfg.setdefault("d_model", 12)
    ref = LTCBackbone(F_IN, LTCConfig(backend="torch", **cfg))  # type: ignore[arg-type]
    fast = LTCBackbone(F_IN, LTCConfig(backend="native", **cfg))  # type: ignore[arg-type]
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _data(batch: int = 5, length: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, F_IN, generator=g) * 2
    dt = torch.rand(batch, length, generator=g) * 2 + 0.1
    return x, dt


def _grads(net: LTCBackbone, x: torch.Tensor, dt: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Output and every gradient (parameters and the input) of a weighted sum of the sequence."""
    net.zero_grad()
    x = x.clone().requires_grad_(True)
    out = net.forward_sequence(x, dt)  # [B, L, d_model]
    weight = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    return {"out": out.detach(), "x": x.grad, **grads}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "cfg", [{}, {"wiring": "ncp", "ode_unfolds": 3}, {"ode_unfolds": 1, "time_unit": 2.0}]
)
@pytest.mark.parametrize("per_sample_dt", [False, True])
def test_outputs_and_every_gradient_match_the_reference(cfg: dict, per_sample_dt: bool) -> None:
    ref, fast = _pair(**cfg)
    x, dt = _data()
    span = dt if per_sample_dt else None
    expected, got = _grads(ref, x, span), _grads(fast, x, span)
    assert expected.keys() == got.keys()
    torch.testing.assert_close(got["out"], expected["out"], atol=2e-6, rtol=0)
    for name, grad in expected.items():
        scale = grad.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(got[name] / scale, grad / scale, atol=5e-5, rtol=0, msg=name)


def test_kernel_is_as_accurate_as_the_float32_reference() -> None:
    """Against the float64 reference, the kernel's float32 outputs and gradients are within a
    small factor of the float32 PyTorch path's own error (both only round differently)."""
    ref, fast = _pair(d_model=16)
    ref64 = LTCBackbone(F_IN, LTCConfig(backend="torch", d_model=16)).double()
    ref64.load_state_dict(ref.state_dict())
    x, dt = _data(batch=4, length=24)
    exact = _grads(ref64, x.double(), dt.double())
    for name, value in exact.items():
        scale = value.abs().max().clamp_min(1e-12)
        err_ref = float(((_grads(ref, x, dt)[name] - value) / scale).abs().max())
        err_fast = float(((_grads(fast, x, dt)[name] - value) / scale).abs().max())
        assert err_fast <= max(4 * err_ref, 2e-6), (name, err_fast, err_ref)


def test_inference_and_last_step_match_the_reference() -> None:
    ref, fast = _pair(wiring="ncp", d_model=10)
    x, dt = _data(batch=3, length=17)
    with torch.no_grad():
        for span in (None, dt):
            torch.testing.assert_close(fast(x, span), ref(x, span), atol=2e-6, rtol=0)
            torch.testing.assert_close(
                fast.forward_sequence(x, span), ref.forward_sequence(x, span), atol=2e-6, rtol=0
            )


def test_samples_are_independent_and_thread_chunks_agree() -> None:
    """Each sample runs alone in the kernel: a batch equals its samples one by one bit for bit,
    and cutting the batch into thread chunks changes outputs not at all and parameter
    gradients (summed per chunk, then over chunks) only by rounding."""
    _, fast = _pair(wiring=None)  # NCP adds a Linear, whose batched matmul may round apart
    x, dt = _data(batch=6, length=11)
    with torch.no_grad():
        whole = fast(x, dt)
        alone = torch.cat([fast(x[i : i + 1], dt[i : i + 1]) for i in range(6)])
    assert torch.equal(whole, alone)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(fast, x, dt)
        torch.set_num_threads(3)
        three = _grads(fast, x, dt)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one["out"], three["out"])
    assert torch.equal(one["x"], three["x"])
    for name, grad in one.items():
        scale = grad.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(three[name] / scale, grad / scale, atol=1e-5, rtol=0, msg=name)


def test_four_sample_blocks_of_the_adjoint_equal_per_sample_gradients() -> None:
    """The backward kernel runs samples in blocks of four: the batch's parameter gradients
    equal the sum of each sample's own (run alone, on the one-sample path) to float32
    rounding, for two blocks and one sample left over."""
    _, fast = _pair(d_model=16)
    x, dt = _data(batch=9, length=6)
    summed = {name: torch.zeros_like(p) for name, p in fast.named_parameters()}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one chunk: samples 0-3 and 4-7 in blocks, 8 alone
        for i in range(9):
            fast.zero_grad()
            fast.forward_sequence(x[i : i + 1], dt[i : i + 1]).sum().backward()
            for name, p in fast.named_parameters():
                summed[name] += p.grad
        fast.zero_grad()
        fast.forward_sequence(x, dt).sum().backward()
    finally:
        torch.set_num_threads(threads)
    for name, p in fast.named_parameters():
        scale = summed[name].abs().max().clamp_min(1e-6)
        torch.testing.assert_close(p.grad / scale, summed[name] / scale, atol=2e-6, rtol=0,
                                   msg=name)


def test_same_seed_same_training_step() -> None:
    """Two runs from the same seed give identical weights after optimiser steps."""

    def train() -> list[torch.Tensor]:
        _, net = _pair(seed=3)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x, dt = _data(batch=4, length=8)
        for _ in range(3):
            opt.zero_grad()
            net(x, dt).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(train(), train(), strict=True):
        assert torch.equal(a, b)


def test_kernel_leaves_the_callers_denormal_mode_alone() -> None:
    """The kernel flushes denormals inside and restores the thread's mode on return."""
    _, fast = _pair()
    x, _ = _data(batch=1, length=3)
    torch.set_flush_denormal(False)
    with torch.no_grad():
        fast(x)
    tiny = torch.tensor([1e-39]) * torch.tensor([1.0])
    assert float(tiny) != 0.0  # a denormal survives: the mode was restored


def test_backend_rules() -> None:
    with pytest.raises(ValueError, match=r"LTCConfig.backend must be one of \['auto'"):
        LTCConfig(backend="cuda")
    _, fast = _pair()
    with pytest.raises(ValueError, match="float32 CPU tensors only"):
        fast.double()(torch.zeros(1, 4, F_IN, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"weights torch\.float64"):  # input float32, weights not
        fast(torch.zeros(1, 4, F_IN))
    ref, _ = _pair()
    auto = LTCBackbone(F_IN, LTCConfig(d_model=12)).double()
    auto.load_state_dict(ref.state_dict())
    x, _ = _data(batch=2, length=5)
    with torch.no_grad():  # float64 under "auto": the PyTorch path, no error
        torch.testing.assert_close(auto(x.double()).float(), ref(x), atol=1e-5, rtol=0)
    from tradezoo.policies.ltc import _native_run

    lib = load_kernel("ltc")
    good = [torch.zeros(1, 2, 3)] * 3 + [torch.zeros(3, 3)] * 4
    with pytest.raises(ValueError, match="a must be a contiguous float32 CPU tensor"):
        _native_run(lib, *good[:3], good[3].double(), *good[4:], 1, False, False)
    with pytest.raises(ValueError, match="inconsistent shapes for H=3"):
        _native_run(lib, *good[:3], torch.zeros(3, 4), *good[4:], 1, False, False)


# -- the builder -------------------------------------------------------------------------------


@pytest.fixture
def fresh_builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty kernel cache and no kernel loaded yet in this process."""
    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setattr(native, "_REASONS", {})
    monkeypatch.setenv("TRADEZOO_NATIVE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRADEZOO_NATIVE", raising=False)
    return tmp_path / "cache"


def _wrapper_cc(tmp_path: Path, body: str) -> Path:
    """A compiler script: logs each call to calls.log, then runs ``body``."""
    script = tmp_path / "cc.sh"
    real = native._compiler()
    script.write_text(
        f"#!/bin/sh\necho call >> {tmp_path / 'calls.log'}\n"
        + body.replace("REAL_CC", str(real))
        + "\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_builds_once_into_the_cache_and_reuses_it(
    fresh_builder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cc = _wrapper_cc(tmp_path, 'if [ "$1" = "--version" ]; then exec REAL_CC --version; fi\n'
                                'exec REAL_CC "$@"')
    monkeypatch.setenv("CC", str(cc))
    assert load_kernel("ltc") is not None
    assert native_status("ltc") == "ready"
    built = sorted(fresh_builder.iterdir())
    assert [p.suffix for p in built] == [".so"] and built[0].name.startswith("ltc-")
    compiles = (tmp_path / "calls.log").read_text().count("call")
    monkeypatch.setattr(native, "_LOADED", {})  # as a new process would: the cache is reused
    assert load_kernel("ltc") is not None
    assert (tmp_path / "calls.log").read_text().count("call") == compiles + 1  # --version only
    assert sorted(fresh_builder.iterdir()) == built


def test_failed_build_falls_back_with_a_warning_and_leaves_no_file(
    fresh_builder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A compiler that writes half an output file, then fails (as an interrupted build would).
    cc = _wrapper_cc(tmp_path, (
        'if [ "$1" = "--version" ]; then echo fakecc 1.0; exit 0; fi\n'
        'while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then out=$2; fi; shift; done\n'
        'echo partial > "$out"\n'
        'echo "boom: bad flag" >&2\n'
        "exit 1"
    ))
    monkeypatch.setenv("CC", str(cc))
    with pytest.warns(RuntimeWarning, match=r"native kernel 'ltc' is unavailable.*boom"):
        assert load_kernel("ltc") is None
    assert "build failed" in native_status("ltc")
    assert list(fresh_builder.iterdir()) == []  # no partial library, no temporary file
    # "auto" runs the PyTorch reference; "native" is an error naming the reason.
    torch.manual_seed(0)
    x = torch.randn(2, 4, F_IN)
    assert LTCBackbone(F_IN, LTCConfig(d_model=8))(x).shape == (2, 8)
    with pytest.raises(NativeBuildError, match="boom"):
        LTCBackbone(F_IN, LTCConfig(d_model=8, backend="native"))(x)


def test_disabled_by_environment(fresh_builder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEZOO_NATIVE", "0")
    assert load_kernel("ltc") is None  # no warning: disabled on purpose
    assert native_status("ltc") == "disabled by TRADEZOO_NATIVE=0"
    with pytest.raises(NativeBuildError, match="TRADEZOO_NATIVE=0"):
        load_kernel("ltc", required=True)
    assert not fresh_builder.exists()


def test_unknown_kernel_name(fresh_builder: Path) -> None:
    with (
        pytest.warns(RuntimeWarning, match="no native kernel named 'nope'"),
        pytest.raises(NativeBuildError, match="no native kernel named 'nope'"),
    ):
        load_kernel("nope", required=True)


def test_kernel_source_is_package_data() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"tradezoo.policies.native" = ["*.c", "*.h"]' in text
    for name in ("ltc.c", "selective_scan.c", "particle_scan.c", "tz_common.h"):
        assert (Path(native.__file__).parent / name).is_file(), name
    assert sys.modules["tradezoo.policies.native"] is native


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_thread_chunks() -> None:
    """A child forked after the thread pool started (fork-started SubprocVecEnv workers) gets
    its own pool instead of waiting on the parent's threads, which do not exist in it."""
    _, fast = _pair()
    x, _ = _data(batch=4, length=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            parent = fast(x)
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 when its result equals the parent's
            code = 1
            try:
                with torch.no_grad():
                    code = 0 if torch.equal(fast(x), parent) else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60  # a hang fails the test instead of blocking it
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish in 60 s")
    finally:
        torch.set_num_threads(threads)
    assert os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torch_jit_trace_takes_the_pytorch_path() -> None:
    """A ctypes call is invisible to ``torch.jit.trace``: traced models must not freeze the
    kernel's output, so under tracing ``auto`` runs the PyTorch path."""
    _, fast = _pair()
    model = LTCBackbone(F_IN, LTCConfig(d_model=12)).eval()
    model.load_state_dict(fast.state_dict())
    x, _ = _data(batch=2, length=6)
    other = x.flip(1)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.testing.assert_close(traced(other), model(other), atol=2e-6, rtol=0)
