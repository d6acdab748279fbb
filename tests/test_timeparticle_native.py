"""TimeParticle's forward-only native particle scans (tradezoo/policies/native/particle_scan.c)
against the PyTorch recurrences (:class:`_ParticleScan` without messages fed back,
:meth:`ParticleLayer.recurrence_with_messages` with them), and when ``backend="auto"`` takes
them."""

from __future__ import annotations

import pytest
import torch

import tradezoo.policies.timeparticle as tp
from tradezoo.policies import native
from tradezoo.policies.timeparticle import (
    ParticleLayer,
    TimeParticleBackbone,
    TimeParticleConfig,
    _ParticleScan,
    particle_scan_messages_native,
    particle_scan_native,
)

pytestmark = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the native kernel cannot be built here"
)
#: The form whose recurrence is the scan (messages not fed back; the default feeds them back).
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


def test_native_backend_rules_with_messages() -> None:
    model = TimeParticleBackbone(4, TimeParticleConfig(d_model=8, backend="native"))
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="without autograd"):
        model(x)
    with torch.no_grad():
        assert model(x).shape == (2, 8)
    layer = model.layers[0]
    pre = torch.randn(3, 5, 2, 16)  # [K, L, B, 2D]
    args = (layer.u_rec.detach(), layer.c_msg.detach(), layer.qkv.weight.detach())
    with pytest.raises(ValueError, match=r"pre must be \[K, L, B, 2D\]"):
        particle_scan_messages_native(pre[..., :15], *args, 4, True)
    with pytest.raises(ValueError, match=r"qkv_weight \[3D, D\]"):
        particle_scan_messages_native(pre, args[0], args[1], args[2][:, :4], 4, True)
    with pytest.raises(ValueError, match="heads must be >= 1 and divide D=8"):
        particle_scan_messages_native(pre, *args, 3, True)
    with pytest.raises(ValueError, match="float32 CPU"):
        particle_scan_messages_native(pre.double(), *(a.double() for a in args), 4, True)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torch_jit_trace_takes_the_pytorch_recurrence() -> None:
    torch.manual_seed(0)
    model = TimeParticleBackbone(4, TimeParticleConfig(d_model=8, **SCAN)).eval()
    x = torch.randn(2, 12, 4)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        other = torch.randn(2, 12, 4)
        torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=1e-5)


def _message_layers(k: int, heads: int, d: int = 16) -> tuple[ParticleLayer, ParticleLayer]:
    """A layer with messages fed back on the PyTorch loop and the same on the kernel, with
    the attention weights doubled so the attention is further from uniform (larger feedback
    weights make the recurrence amplify float32 rounding, the loop's as much as the
    kernel's)."""
    torch.manual_seed(k * 10 + heads)
    loop = ParticleLayer(d, k, 0.0, "torch", attention_heads=heads, message_feedback=True)
    with torch.no_grad():
        loop.qkv.weight.mul_(2.0)
    kernel = ParticleLayer(d, k, 0.0, "native", attention_heads=heads, message_feedback=True)
    kernel.load_state_dict(loop.state_dict())
    return loop, kernel


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 64])
@pytest.mark.parametrize("keep_all", [True, False])
def test_messages_kernel_matches_the_pytorch_loop(
    batch: int, heads: int, k: int, length: int, keep_all: bool
) -> None:
    loop, kernel = _message_layers(k, heads)
    x = torch.randn(k, length, batch, 16, generator=torch.Generator().manual_seed(length)) * 2
    with torch.no_grad():
        expected = loop.recurrence_with_messages(x, keep_all)  # [T, K, B, D]
        got = kernel.recurrence_with_messages(x, keep_all)
    assert got.shape == expected.shape == (length if keep_all else 1, k, batch, 16)
    assert expected.abs().max() > 0.1  # the states moved from h_0 = 0
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


def test_messages_kernel_matches_over_a_long_window() -> None:
    loop, kernel = _message_layers(3, 4)
    x = torch.randn(3, 257, 2, 16, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        torch.testing.assert_close(kernel.recurrence(x), loop.recurrence(x), atol=2e-6, rtol=0)


@pytest.mark.parametrize("options", [
    {},  # the default: 4 heads, messages fed back, per-particle outputs
    {"attention_heads": 1, "particle_outputs": False},
    {"n_particles": 4, "n_layers": 2},
])
def test_auto_takes_the_messages_kernel_for_inference_only(
    monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    """With ``message_feedback`` (the default) ``"auto"`` runs the kernel for float32 CPU
    inference and equals ``"torch"``; with gradients it runs the PyTorch loop. The scan's
    kernel is not called."""
    calls: list[str] = []

    def spy(real):
        def call(*args, **kwargs):
            calls.append(real.__name__)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(tp, "_particle_messages_kernel", spy(tp._particle_messages_kernel))
    monkeypatch.setattr(tp, "_particle_scan_kernel", spy(tp._particle_scan_kernel))
    torch.manual_seed(0)
    fed = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, **options)).eval()
    reference = TimeParticleBackbone(5, TimeParticleConfig(d_model=16, backend="torch",
                                                           **options)).eval()
    reference.load_state_dict(fed.state_dict())
    x = torch.randn(3, 40, 5)
    layers = options.get("n_layers", 1)
    with torch.no_grad():
        fast, sequence = fed(x), fed.forward_sequence(x)
        assert calls == ["_particle_messages_kernel"] * 2 * layers
        torch.testing.assert_close(fast, reference(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sequence, reference.forward_sequence(x), atol=1e-5,
                                   rtol=1e-5)
        alone = torch.cat([fed(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(alone, fast, atol=1e-6, rtol=1e-6)
    calls.clear()
    trained = fed(x)  # gradients needed: the PyTorch loop, with autograd
    trained.sum().backward()
    assert calls == []
    assert fed.layers[0].c_msg.grad is not None
    torch.testing.assert_close(trained.detach(), fast, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        TimeParticleBackbone(5, TimeParticleConfig(d_model=16, **SCAN)).eval()(x)
    assert calls == ["_particle_scan_kernel"]
