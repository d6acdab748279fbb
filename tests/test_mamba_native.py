"""Mamba's forward-only native selective scan (tradezoo/policies/native/selective_scan.c)
against the sequential reference, and when ``scan="auto"`` picks it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tradezoo.policies.mamba as mamba_module
from tradezoo.policies import native
from tradezoo.policies.mamba import (
    MambaBackbone,
    MambaConfig,
    selective_scan,
    selective_scan_chunked,
    selective_scan_native,
    selective_scan_sequential,
)
from tradezoo.policies.mambats import MambaTSBackbone, MambaTSConfig

pytestmark = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the native kernel cannot be built here"
)


def _inputs(batch: int, length: int, inner: int = 24, n_state: int = 16, seed: int = 0):
    """``(u, delta, A, B, C, D)`` float32 with realistic ranges, no grad."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, inner, generator=gen) * 2
    delta = F.softplus(torch.randn(batch, length, inner, generator=gen) - 1.0)
    A = -torch.exp(torch.randn(inner, n_state, generator=gen))
    B = torch.randn(batch, length, n_state, generator=gen)
    C = torch.randn(batch, length, n_state, generator=gen)
    D = torch.randn(inner, generator=gen)
    return u, delta, A, B, C, D


@pytest.mark.parametrize("length", [1, 2, 3, 63, 64, 65, 257])
@pytest.mark.parametrize("with_d", [True, False])
def test_matches_the_sequential_reference(length: int, with_d: bool) -> None:
    u, delta, A, B, C, D = _inputs(3, length)
    D = D if with_d else None
    expected = selective_scan_sequential(u, delta, A, B, C, D)  # [B, L, E]
    got = selective_scan_native(u, delta, A, B, C, D)
    scale = expected.abs().max()
    torch.testing.assert_close(got / scale, expected / scale, atol=2e-6, rtol=0)
    last = selective_scan_native(u, delta, A, B, C, D, last_only=True)
    assert last.shape == (3, 1, u.shape[2])
    torch.testing.assert_close(last / scale, expected[:, -1:] / scale, atol=2e-6, rtol=0)


def test_samples_are_independent_and_thread_chunks_agree() -> None:
    u, delta, A, B, C, D = _inputs(5, 40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = selective_scan_native(u, delta, A, B, C, D)
        torch.set_num_threads(2)
        two = selective_scan_native(u, delta, A, B, C, D)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    alone = torch.cat([
        selective_scan_native(u[i : i + 1], delta[i : i + 1], A, B[i : i + 1], C[i : i + 1], D)
        for i in range(5)
    ])
    assert torch.equal(one, alone)


def test_native_is_inference_only_and_float32_cpu_only() -> None:
    u, delta, A, B, C, D = _inputs(1, 8)
    with pytest.raises(ValueError, match="without autograd"):
        selective_scan_native(u.requires_grad_(), delta, A, B, C, D)
    with pytest.raises(ValueError, match="float32 CPU"):
        selective_scan_native(*(t.double() for t in _inputs(1, 8)))
    model = MambaBackbone(4, MambaConfig(d_model=16, scan="native"))
    x = torch.randn(2, 9, 4)
    with pytest.raises(ValueError, match="scan 'native' runs float32 CPU tensors without"):
        model(x)  # parameters require grad: training needs 'auto' or 'chunked'
    with torch.no_grad():
        assert model(x).shape == (2, 16)


def test_auto_picks_native_for_inference_and_chunked_for_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``scan="auto"`` on CPU: the kernel under ``torch.no_grad``, the chunked scan (with its
    hand-written backward) when gradients are needed; both give the same outputs."""
    calls: list[str] = []
    # The kernel call both the explicit and the auto path go through.
    real_native, real_chunked = mamba_module._selective_scan_kernel, selective_scan_chunked

    def spy_native(*args, **kwargs):
        calls.append("native")
        return real_native(*args, **kwargs)

    def spy_chunked(*args, **kwargs):
        calls.append("chunked")
        return real_chunked(*args, **kwargs)

    monkeypatch.setattr(mamba_module, "_selective_scan_kernel", spy_native)
    monkeypatch.setattr(mamba_module, "selective_scan_chunked", spy_chunked)
    torch.manual_seed(0)
    model = MambaBackbone(4, MambaConfig(d_model=16, n_layers=2)).eval()
    x = torch.randn(3, 33, 4)
    with torch.no_grad():
        fast = model(x)
    assert calls == ["native", "native"]
    calls.clear()
    trained = model(x)
    trained.sum().backward()
    assert calls == ["chunked", "chunked"]
    torch.testing.assert_close(fast, trained.detach(), atol=1e-5, rtol=1e-5)
    calls.clear()
    with torch.no_grad():  # float64: the kernel does not apply, auto falls back quietly
        model.double()(x.double())
    assert calls == ["chunked", "chunked"]
    u, delta, A, B, C, D = _inputs(1, 6)
    assert selective_scan(u, delta, A, B, C, D, scan="auto").shape == u.shape


def test_mambats_inference_equals_its_training_path() -> None:
    """MambaTS runs two Mamba blocks per layer: eval-mode outputs are the same through the
    kernel (no_grad) and through the chunked scan (autograd)."""
    torch.manual_seed(0)
    model = MambaTSBackbone(5, MambaTSConfig(d_model=16)).eval()
    x = torch.randn(2, 64, 5)
    with torch.no_grad():
        fast = model(x)
    torch.testing.assert_close(fast, model(x).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("which", "shape", "match"),
    [
        ("delta", (2, 7, 24), r"delta must have shape \(2, 8, 24\)"),
        ("A", (24, 8), r"B must have shape \(2, 8, 8\)"),
        ("C", (2, 8, 15), r"C must have shape \(2, 8, 16\)"),
        ("D", (23,), r"D must have shape \(24,\)"),
        ("u", (8, 24), "u must have 3 dimensions"),
    ],
)
def test_mismatched_shapes_are_rejected_before_the_kernel_reads_memory(
    which: str, shape: tuple[int, ...], match: str
) -> None:
    inputs = dict(zip(["u", "delta", "A", "B", "C", "D"], _inputs(2, 8), strict=True))
    inputs[which] = torch.zeros(shape)
    with pytest.raises(ValueError, match=match):
        selective_scan_native(*inputs.values())
    with pytest.raises(ValueError, match=match):
        selective_scan_chunked(*inputs.values())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torch_jit_trace_takes_the_chunked_scan() -> None:
    torch.manual_seed(0)
    model = MambaBackbone(4, MambaConfig(d_model=16)).eval()
    x = torch.randn(2, 12, 4)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        other = torch.randn(2, 12, 4)
        torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=1e-5)
