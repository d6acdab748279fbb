"""Mamba backbone: scan backends, initialisation, causality, bad input (tradezoo.policies.mamba)."""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import mamba_ssm_stub
import pytest
import torch
import torch.nn.functional as F
from mixed_precision import BF16_RELATIVE_TOLERANCE, relative_error

from tradezoo.policies import mamba
from tradezoo.policies.mamba import (
    MambaBackbone,
    MambaBlock,
    MambaConfig,
    _chunk_length,
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


# -- mamba_ssm's contract, on CPU (tests/mamba_ssm_stub.py) --------------------------------


def _kernel_layout(
    batch: int, length: int, inner: int, n_state: int, seed: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Valid ``selective_scan_fn`` arguments: ``u, delta [B, E, L]``, ``B, C [B, N, L]`` in
    ``dtype``; ``A [E, N]``, ``D [E]`` float32."""
    u, delta, A, B, C, D = (t.detach() for t in _scan_inputs(batch, length, inner, n_state, seed))
    return {"u": u.transpose(1, 2).to(dtype), "delta": delta.transpose(1, 2).to(dtype), "A": A,
            "B": B.transpose(1, 2).to(dtype), "C": C.transpose(1, 2).to(dtype), "D": D}


def test_stub_has_mamba_ssm_signature() -> None:
    parameters = inspect.signature(mamba_ssm_stub.selective_scan_fn).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        ("u", inspect.Parameter.empty), ("delta", inspect.Parameter.empty),
        ("A", inspect.Parameter.empty), ("B", inspect.Parameter.empty),
        ("C", inspect.Parameter.empty), ("D", None), ("z", None), ("delta_bias", None),
        ("delta_softplus", False), ("return_last_state", False),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stub_computes_the_reference_scan_in_u_dtype(dtype: torch.dtype) -> None:
    args = _kernel_layout(2, 13, 6, 4, seed=3, dtype=dtype)
    out = mamba_ssm_stub.selective_scan_fn(**args)
    assert out.dtype == dtype and out.shape == (2, 6, 13)
    want = selective_scan_sequential(*(args[k].float().transpose(1, 2) if k in "u delta B C"
                                       else args[k] for k in ("u", "delta", "A", "B", "C", "D")))
    torch.testing.assert_close(out.float(), want.transpose(1, 2).to(dtype).float())
    # delta_bias + softplus and the z gate, as selective_scan_ref; two groups of channels.
    bias, z = torch.randn(6), torch.randn(2, 6, 13).to(dtype)
    grouped_B = torch.stack([args["B"], args["B"].flip(-1)], 1)  # [B, 2, N, L]
    grouped_C = torch.stack([args["C"].flip(-1), args["C"]], 1)  # [B, 2, N, L]
    raw = args["delta"]
    gated = mamba_ssm_stub.selective_scan_fn(
        args["u"], raw, args["A"], grouped_B, grouped_C, args["D"], z=z, delta_bias=bias,
        delta_softplus=True,
    )
    softened = F.softplus(raw.float() + bias[:, None]).to(dtype)
    for group, channels in enumerate((slice(0, 3), slice(3, 6))):
        plain = mamba_ssm_stub.selective_scan_fn(
            args["u"][:, channels], softened[:, channels], args["A"][channels],
            grouped_B[:, group], grouped_C[:, group], args["D"][channels],
        )
        torch.testing.assert_close(
            gated[:, channels].float(), (plain.float() * F.silu(z[:, channels].float())),
            rtol=0.02 if dtype == torch.bfloat16 else 1e-5, atol=0.02 if dtype == torch.bfloat16
            else 1e-5,
        )


_BREACHES: dict[str, Callable[[dict[str, torch.Tensor]], None]] = {
    "B.scalar_type": lambda a: a.update(B=a["B"].bfloat16()),  # the autocast crash
    "C.scalar_type": lambda a: a.update(C=a["C"].bfloat16()),
    "delta.scalar_type": lambda a: a.update(delta=a["delta"].bfloat16()),
    "weight_type is Float": lambda a: a.update(A=a["A"].bfloat16()),
    "input_type is Float": lambda a: a.update(
        u=a["u"].double(), delta=a["delta"].double(), B=a["B"].double(), C=a["C"].double()),
    "D.scalar_type": lambda a: a.update(D=a["D"].bfloat16()),
    "D must have shape": lambda a: a.update(D=a["D"][:-1]),
    "delta_bias.scalar_type": lambda a: a.update(delta_bias=torch.zeros(6, dtype=torch.float16)),
    "z.scalar_type": lambda a: a.update(z=torch.zeros(2, 6, 13, dtype=torch.bfloat16)),
    "z must have shape": lambda a: a.update(z=torch.zeros(2, 6, 12)),
    "B must have shape": lambda a: a.update(B=a["B"][..., :-1]),
    "A must have shape": lambda a: a.update(A=a["A"][:-1]),
    "dstate <= 256": lambda a: a.update(A=torch.full((6, 257), -1.0),
                                        B=torch.zeros(2, 257, 13), C=torch.zeros(2, 257, 13)),
}


@pytest.mark.parametrize("check", list(_BREACHES))
def test_stub_rejects_what_the_kernel_rejects(check: str) -> None:
    args = _kernel_layout(2, 13, 6, 4, seed=3, dtype=torch.float32)
    _BREACHES[check](args)
    with pytest.raises(RuntimeError, match=r"TORCH_CHECK\(.*" + re.escape(check)):
        mamba_ssm_stub.selective_scan_fn(**args)


def _twin_backbones(arch: str, scan: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``arch`` with ``scan`` and the same weights with the chunked scan (training mode)."""
    cfg = {"d_model": 16, "n_layers": 1}
    torch.manual_seed(0)
    net = make_backbone(arch, 5, scan=scan, **cfg).train()
    torch.manual_seed(0)
    reference = make_backbone(arch, 5, scan="chunked", **cfg).train()
    reference.load_state_dict(net.state_dict())
    return net, reference


def _train_and_eval(net: torch.nn.Module, x: torch.Tensor, amp: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(training output, flat gradient, no_grad eval output)``, under CPU bf16 autocast
    when ``amp``."""
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = net(x)
    grads = torch.autograd.grad(out.float().pow(2).sum(), list(net.parameters()))
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        evaluated = net(x)
    return out.detach(), torch.cat([g.flatten() for g in grads]), evaluated


@pytest.mark.parametrize("scan", ["auto", "mamba_ssm"])
@pytest.mark.parametrize("arch", ["mamba", "mambats"])
def test_mamba_ssm_call_site_obeys_the_kernel_contract(
    monkeypatch: pytest.MonkeyPatch, arch: str, scan: str
) -> None:
    """The mamba_ssm branch (``scan="auto"`` picks it where the kernel runs) under the stub:
    float32 equals the chunked scan; under bf16 autocast (training and no_grad evaluation)
    the kernel gets one input dtype, the autocast dtype, and the result stays within the bf16
    tolerance of float32."""
    calls = mamba_ssm_stub.install(monkeypatch)
    net, reference = _twin_backbones(arch, scan)
    x = torch.randn(3, 32, 5, generator=torch.Generator().manual_seed(4))
    want = _train_and_eval(reference, x, amp=False)
    got = _train_and_eval(net, x, amp=False)
    assert calls and set(calls) == {torch.float32}
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    calls.clear()
    mixed = _train_and_eval(net, x, amp=True)
    assert calls and set(calls) == {torch.bfloat16}
    for what, a, b in zip(("training output", "gradient", "evaluation"), mixed, want,
                          strict=True):
        error = relative_error(a, b)
        assert error <= BF16_RELATIVE_TOLERANCE, f"{arch}: {what} off by {error:.4f}"


def _clear_mamba_ssm_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the cached import (before and after the test) and any loaded mamba_ssm."""
    mamba._load_mamba_ssm.cache_clear()
    for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def fresh_mamba_ssm_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _clear_mamba_ssm_import(monkeypatch)
    yield
    mamba._load_mamba_ssm.cache_clear()


def test_a_broken_mamba_ssm_install_warns_once_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_mamba_ssm_import: None
) -> None:
    """A mamba_ssm package that is there but fails to import (here its CUDA runtime is
    missing) warns once, naming the exception; scan='auto' falls back to chunked."""
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ImportError("libcudart.so.12: cannot open shared object file")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not mamba_ssm_available()
        assert resolve_scan("auto", torch.device("cuda")) == "chunked"
        assert not mamba_ssm_available()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "mamba_ssm is installed but does not import" in messages[0]
    assert "ImportError: libcudart.so.12" in messages[0]
    with pytest.raises(RuntimeError, match=r"libcudart\.so\.12"):
        resolve_scan("mamba_ssm", torch.device("cuda"))


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is not None,
                    reason="mamba_ssm is installed here")
def test_an_absent_mamba_ssm_is_quiet(fresh_mamba_ssm_import: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not mamba_ssm_available()
    assert [w for w in caught if "mamba_ssm" in str(w.message)] == []
    with pytest.raises(RuntimeError, match="No module named 'mamba_ssm'"):
        resolve_scan("mamba_ssm", torch.device("cuda"))


def test_auto_chunks_are_the_whole_window_on_cuda_and_cache_sized_on_cpu() -> None:
    step = 256 * 128 * 16  # one step's state at batch 256, E = 128, N = 16
    assert _chunk_length(64, step, None, "cpu") == 1  # 2^19 elements: one step per chunk
    assert _chunk_length(64, step, None, "cuda") == 64  # one chunk: the whole window
    assert _chunk_length(64, step, 8, "cuda") == 8  # an explicit chunk_size is kept
    assert _chunk_length(64, 16 * step, None, "cuda") == 8  # capped at 2^26 elements
    assert _chunk_length(257, 4096, None, "cpu") == 86  # 3 balanced chunks, not 128 + 128 + 1
