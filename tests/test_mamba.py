"""Mamba backbone: scan backends, initialisation, causality, bad input (tradezoo.policies.mamba)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tradezoo.policies.mamba import (
    MambaBackbone,
    MambaBlock,
    MambaConfig,
    mamba_ssm_available,
    resolve_scan,
    selective_scan,
    selective_scan_chunked,
    selective_scan_mamba_ssm,
    selective_scan_sequential,
)
from tradezoo.policies.registry import make_backbone

LENGTHS = [1, 2, 3, 63, 64, 65, 255, 256, 257]


def _scan_inputs(
    batch: int, length: int, inner: int, n_state: int, seed: int, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """``(u, delta, A, B, C, D)`` with realistic ranges, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, inner, generator=gen, dtype=dtype)
    delta = F.softplus(torch.randn(batch, length, inner, generator=gen, dtype=dtype) - 1.0)
    A = -torch.exp(torch.randn(inner, n_state, generator=gen, dtype=dtype))
    B = torch.randn(batch, length, n_state, generator=gen, dtype=dtype)
    C = torch.randn(batch, length, n_state, generator=gen, dtype=dtype)
    D = torch.randn(inner, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D)]


def _outputs_and_grads(fn, inputs: list[torch.Tensor], weight: torch.Tensor):
    y = fn(*inputs)
    grads = torch.autograd.grad((y * weight).sum(), inputs)
    return y, grads


# -- chunked scan == sequential reference -------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_chunked_matches_sequential_outputs_and_gradients(
    length: int, chunk_size: int | None
) -> None:
    inputs = _scan_inputs(2, length, 4, 3, seed=length)
    weight = torch.randn(2, length, 4, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = _outputs_and_grads(selective_scan_sequential, inputs, weight)
    y, g = _outputs_and_grads(
        lambda *a: selective_scan_chunked(*a, chunk_size=chunk_size), inputs, weight
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("u", "delta", "A", "B", "C", "D"), g, g_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"grad of {name}")


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 5])
def test_chunked_backward_passes_gradcheck(chunk_size: int | None) -> None:
    # float64 finite differences against the hand-written adjoint, chunk boundaries included.
    inputs = _scan_inputs(2, 11, 3, 2, seed=7, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a, chunk_size=chunk_size), inputs
    )
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a, chunk_size=chunk_size, last_only=True), inputs
    )


def test_last_only_is_the_last_step() -> None:
    inputs = _scan_inputs(3, 40, 4, 3, seed=3)
    full = selective_scan_chunked(*inputs, chunk_size=9)
    last = selective_scan_chunked(*inputs, chunk_size=9, last_only=True)
    assert last.shape == (3, 1, 4)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)


def test_chunked_scan_is_finite_for_extreme_decays() -> None:
    # delta * A down to -1e4 per step: no exp(S_t) / exp(S_s) anywhere, so nothing overflows.
    u, delta, A, B, C, D = (t.detach() for t in _scan_inputs(2, 257, 4, 3, seed=5))
    delta = delta * 1e3
    A = A * 10.0
    y = selective_scan_chunked(u, delta, A, B, C, D)
    y_ref = selective_scan_sequential(u, delta, A, B, C, D)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-4)


def test_chunked_scan_keeps_low_precision_dtype() -> None:
    inputs = [t.detach() for t in _scan_inputs(2, 20, 4, 3, seed=2)]
    y32 = selective_scan_chunked(*inputs)
    y16 = selective_scan_chunked(*(t.to(torch.bfloat16) for t in inputs))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=0.05, atol=0.1)


def test_scan_rejects_bad_shapes_and_chunk_size() -> None:
    u, delta, A, B, C, D = (t.detach() for t in _scan_inputs(1, 5, 2, 2, seed=0))
    with pytest.raises(ValueError, match="u must have 3 dimensions"):
        selective_scan_chunked(u[0], delta, A, B, C, D)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        selective_scan_chunked(u, delta, A, B, C, D, chunk_size=0)


def test_unknown_scan_name_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"MambaConfig\.scan must be one of"):
        MambaConfig(scan="pscan")  # type: ignore[arg-type]
    inputs = [t.detach() for t in _scan_inputs(1, 4, 2, 2, seed=0)]
    with pytest.raises(ValueError, match="unknown scan 'pscan'"):
        selective_scan(*inputs, scan="pscan")


def test_auto_scan_resolves_to_chunked_on_cpu() -> None:
    assert resolve_scan("auto", torch.device("cpu")) == "chunked"
    assert resolve_scan("sequential", torch.device("cpu")) == "sequential"


@pytest.mark.skipif(mamba_ssm_available(), reason="mamba_ssm is installed here")
def test_requesting_mamba_ssm_without_it_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        MambaBackbone(4, MambaConfig(d_model=16, scan="mamba_ssm"))
    inputs = [t.detach() for t in _scan_inputs(1, 4, 2, 2, seed=0)]
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        selective_scan_mamba_ssm(*inputs)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba_ssm_available()),
    reason="needs CUDA and the optional mamba_ssm package",
)
def test_mamba_ssm_kernel_matches_chunked_scan() -> None:
    inputs = [t.detach().cuda().requires_grad_() for t in _scan_inputs(2, 257, 8, 4, seed=9)]
    weight = torch.randn(2, 257, 8, device="cuda")
    y_ref, g_ref = _outputs_and_grads(selective_scan_chunked, inputs, weight)
    y, g = _outputs_and_grads(selective_scan_mamba_ssm, inputs, weight)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for got, want in zip(g, g_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


# -- initialisation -----------------------------------------------------------------------


def test_official_initialisation() -> None:
    torch.manual_seed(0)
    config = MambaConfig(d_model=64, d_state=16, expand=2)
    block = MambaBlock(config)
    assert block.dt_rank == 4  # ceil(64 / 16)
    dt = F.softplus(block.dt_proj.bias.detach())  # [E]
    assert dt.shape == (128,)
    assert dt.min() >= config.dt_min * (1 - 1e-4)
    assert dt.max() <= config.dt_max * (1 + 1e-4)
    # log-uniform: the median sits near the geometric mean of the range (1e-2)
    assert 3e-3 < dt.median() < 3e-2
    bound = config.dt_scale * block.dt_rank**-0.5
    assert block.dt_proj.weight.abs().max() <= bound
    expected_a_log = torch.log(torch.arange(1, 17, dtype=torch.float32)).repeat(128, 1)
    torch.testing.assert_close(block.A_log.detach(), expected_a_log)
    torch.testing.assert_close(block.D.detach(), torch.ones(128))


def test_dt_floor_and_constant_init_and_dt_rank() -> None:
    config = MambaConfig(d_model=40, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4,
                         dt_init="constant")
    block = MambaBlock(config)
    assert block.dt_rank == math.ceil(40 / 16)
    torch.testing.assert_close(
        F.softplus(block.dt_proj.bias.detach()), torch.full((80,), 1e-4), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(
        block.dt_proj.weight.detach(), torch.full((80, 3), 3**-0.5)
    )
    assert MambaBlock(MambaConfig(d_model=40, dt_rank=7)).dt_rank == 7


def test_biases_zero_and_out_proj_rescaled() -> None:
    torch.manual_seed(0)
    one = MambaBackbone(4, MambaConfig(d_model=32, n_layers=1))
    torch.manual_seed(0)
    four = MambaBackbone(4, MambaConfig(d_model=32, n_layers=4))
    assert torch.count_nonzero(one.embedding.bias) == 0
    w1 = one.layers[0].mixer.out_proj.weight
    w4 = four.layers[0].mixer.out_proj.weight
    assert w4.abs().max() <= w1.abs().max() / 2 + 1e-6  # divided by sqrt(n_layers) = 2


def test_parameter_names_follow_mamba_ssm() -> None:
    names = set(dict(MambaBlock(MambaConfig(d_model=16)).named_parameters()))
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                     "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"}


def test_no_weight_decay_names_exist() -> None:
    model = MambaBackbone(5, MambaConfig(d_model=16, n_layers=3))
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    assert names == {f"layers.{i}.mixer.{p}" for i in range(3) for p in ("A_log", "D")}


# -- backbone ---------------------------------------------------------------------------


@pytest.mark.parametrize("scan", ["chunked", "sequential", "native"])
def test_forward_sequence_is_causal(scan: str) -> None:
    if scan == "native":
        from tradezoo.policies.native import _compiler

        if _compiler() is None:
            pytest.skip("no C compiler: the native scan cannot be built here")
    torch.manual_seed(0)
    model = MambaBackbone(3, MambaConfig(d_model=16, n_layers=2, scan=scan)).eval()
    x = torch.randn(2, 30, 3)
    changed = x.clone()
    changed[:, 17:] += torch.randn(2, 13, 3) * 5
    with torch.no_grad():
        a, b = model.forward_sequence(x), model.forward_sequence(changed)
    torch.testing.assert_close(a[:, :17], b[:, :17], rtol=0, atol=0)
    assert (a[:, 17] - b[:, 17]).abs().max() > 1e-3


def test_forward_is_last_position_of_forward_sequence_with_gradients() -> None:
    torch.manual_seed(0)
    model = MambaBackbone(3, MambaConfig(d_model=16, n_layers=2))
    x = torch.randn(3, 37, 3)
    y = model(x)
    torch.testing.assert_close(y, model.forward_sequence(x)[:, -1], rtol=1e-5, atol=1e-6)
    params = list(model.parameters())
    g_last = torch.autograd.grad(y.pow(2).sum(), params)
    g_seq = torch.autograd.grad(model.forward_sequence(x)[:, -1].pow(2).sum(), params)
    for a, b in zip(g_last, g_seq, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_and_sequential_backbones_agree() -> None:
    torch.manual_seed(0)
    chunked = MambaBackbone(4, MambaConfig(d_model=16, scan="chunked", chunk_size=5))
    sequential = MambaBackbone(4, MambaConfig(d_model=16, scan="sequential"))
    sequential.load_state_dict(chunked.state_dict())
    x = torch.randn(2, 23, 4)
    torch.testing.assert_close(chunked(x), sequential(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1e3, 0.0])
def test_float32_robust_to_large_and_zero_inputs(scale: float) -> None:
    torch.manual_seed(0)
    model = MambaBackbone(4, MambaConfig(d_model=16))
    x = torch.randn(2, 65, 4) * scale
    y = model(x)
    y.sum().backward()
    assert torch.isfinite(y).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_explain_reports_delta_statistics() -> None:
    torch.manual_seed(0)
    model = MambaBackbone(4, MambaConfig(d_model=16, n_layers=2))
    x = torch.randn(3, 20, 4)
    info = model.explain(x)
    for key in ("delta_mean", "delta_std", "delta_min", "delta_max"):
        assert info[key].shape == (2,)
        assert not info[key].requires_grad
    assert info["delta_by_step"].shape == (2, 3, 20)
    assert (info["delta_min"] > 0).all()
    assert (info["delta_min"] <= info["delta_mean"]).all()
    assert (info["delta_mean"] <= info["delta_max"]).all()


def test_registry_builds_mamba() -> None:
    model = make_backbone("mamba", 6, d_model=32, n_layers=1)
    assert isinstance(model, MambaBackbone)
    assert model(torch.randn(2, 7, 6)).shape == (2, 32)
    with pytest.raises(ValueError, match="unknown config key"):
        make_backbone("mamba", 6, d_sate=8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
        ({"dt_min": 0.0}, "dt_min <= dt_max"),
        ({"dt_rank": 0}, "dt_rank must be a positive integer"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"d_state": 0}, "d_state must be a positive integer"),
        ({"dt_init_floor": 0.0}, "dt_init_floor must be > 0"),
        ({"dt_scale": -1.0}, "dt_scale must be > 0"),
        ({"norm_eps": 0.0}, "norm_eps must be > 0"),
        ({"dt_init": "zeros"}, "dt_init must be 'random' or 'constant'"),
    ],
)
def test_bad_config_values_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MambaConfig(**kwargs)
