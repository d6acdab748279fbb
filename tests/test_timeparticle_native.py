"""TimeParticle's forward-only native particle scan (tradezoo/policies/native/particle_scan.c)
against the PyTorch recurrence (:class:`_ParticleScan`), and when ``backend="auto"`` takes it."""

from __future__ import annotations

import pytest
import torch

import tradezoo.policies.timeparticle as tp
from tradezoo.policies import native
from tradezoo.policies.timeparticle import (
    TimeParticleBackbone,
    TimeParticleConfig,
    _ParticleScan,
    particle_scan_native,
)

pytestmark = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the native kernel cannot be built here"
)
#: The kernel runs the recurrence without messages fed back (the default feeds them back).
SCAN = {"message_feedback": False}


def _inputs(k: int = 3, length: int = 17, batch: int = 2, d: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pre = torch.randn(k, length, batch, 2 * d, generator=gen) * 2
    u_rec = torch.randn(k, d, 2 * d, generator=gen) / d**0.5
    return pre, u_rec


@pytest.mark.parametrize("length", [1, 2, 64, 257])
@pytest.mark.parametrize("keep_all", [True, False])
def test_matches_the_pytorch_recurrence(length: int, keep_all: bool) -> None:
    pre, u_rec = _inputs(length=length)
    with torch.no_grad():
        expected = _ParticleScan.apply(pre, u_rec, keep_all)  # [T, K, B, D]
        got = particle_scan_native(pre, u_rec, keep_all)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


def test_auto_takes_the_kernel_for_inference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tp._particle_scan_kernel  # the kernel call of every native path

    def spy(*args, **kwargs):
        calls.append("native")
        return real(*args, **kwargs)

    monkeypatch.setattr(tp, "_particle_scan_kernel", spy)
    torch.manual_seed(0)
    model = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, **SCAN)).eval()
    reference = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, backend="torch",
                                                           **SCAN)).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, 40, 5)
    with torch.no_grad():
        fast = model(x)
        slow = reference(x)
        sequence = model.forward_sequence(x)
    assert calls == ["native", "native"]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sequence, reference.forward_sequence(x).detach(), atol=1e-5,
                               rtol=1e-5)
    calls.clear()
    trained = model(x)  # gradients needed: the PyTorch recurrence with its backward
    trained.sum().backward()
    assert calls == []
    torch.testing.assert_close(trained.detach(), fast, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a batch equals its samples one by one (the matmuls around the
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])  # kernel round by batch)
    torch.testing.assert_close(alone, fast, atol=1e-6, rtol=1e-6)


def test_native_backend_rules() -> None:
    with pytest.raises(ValueError, match=r"TimeParticleConfig.backend must be one of"):
        TimeParticleConfig(backend="cuda")
    model = TimeParticleBackbone(4, TimeParticleConfig(d_model=8, backend="native", **SCAN))
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="without autograd"):
        model(x)  # parameters require grad: training needs 'auto' or 'torch'
    with torch.no_grad():
        assert model(x).shape == (2, 8)
    pre, u_rec = _inputs()
    with pytest.raises(ValueError, match=r"pre must be \[K, L, B, 2D\]"):
        particle_scan_native(pre, u_rec[:, :5], True)
    with pytest.raises(ValueError, match="float32 CPU"):
        particle_scan_native(pre.double(), u_rec.double(), True)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torch_jit_trace_takes_the_pytorch_recurrence() -> None:
    torch.manual_seed(0)
    model = TimeParticleBackbone(4, TimeParticleConfig(d_model=8, **SCAN)).eval()
    x = torch.randn(2, 12, 4)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        other = torch.randn(2, 12, 4)
        torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=1e-5)


def test_message_feedback_never_takes_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel implements the recurrence without messages: with ``message_feedback`` the
    ``"auto"`` backend runs the PyTorch loop for inference too (and equals ``"torch"``), while
    the same model without feedback does take the kernel."""
    calls: list[str] = []
    real = tp._particle_scan_kernel

    def spy(*args, **kwargs):
        calls.append("native")
        return real(*args, **kwargs)

    monkeypatch.setattr(tp, "_particle_scan_kernel", spy)
    torch.manual_seed(0)
    fed = TimeParticleBackbone(5, TimeParticleConfig(d_model=16)).eval()  # the default
    reference = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, backend="torch")).eval()
    reference.load_state_dict(fed.state_dict())
    plain = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, **SCAN)).eval()
    x = torch.randn(3, 40, 5)
    with torch.no_grad():
        fast, sequence = fed(x), fed.forward_sequence(x)
        assert calls == []
        torch.testing.assert_close(fast, reference(x), atol=0, rtol=0)
        torch.testing.assert_close(sequence[:, -1], fast, atol=1e-6, rtol=1e-6)
        plain(x)
    assert calls == ["native"]
    with pytest.raises(ValueError, match="cannot run message_feedback"):
        TimeParticleConfig(backend="native")  # the default feeds the messages back
