"""A CPU stand-in for ``mamba_ssm``'s ``selective_scan_fn`` that enforces its CUDA kernel's
contract, so that tradezoo's call site is tested without a GPU.

Source followed (state-spaces/mamba, mamba_ssm 2.x):

- ``mamba_ssm/ops/selective_scan_interface.py``: ``selective_scan_fn``'s signature and what
  ``SelectiveScanFn.forward`` does before the kernel (``.contiguous()`` where the last stride
  is not 1, a group axis added to 3-dim ``B``/``C``);
- ``csrc/selective_scan/selective_scan.cpp``, ``selective_scan_fwd``: the ``TORCH_CHECK``s on
  dtypes, shapes and strides, checked here in the same order and raised as ``RuntimeError``
  (what ``TORCH_CHECK`` raises). ``u``/``delta`` ``[B, D, L]`` float32/float16/bfloat16, one
  dtype; ``A [D, N]`` float32 (or complex64); ``B``/``C`` ``[B, G, N, L]`` (``[B, N, L]``
  before the wrapper) in ``u``'s dtype, or ``[D, N]`` in ``A``'s dtype; ``N <= 256``; ``D``
  and ``delta_bias`` ``[D]`` float32; ``z [B, D, L]`` in ``u``'s dtype.
- ``selective_scan_ref`` for the semantics: ``delta + delta_bias``, optional softplus, the
  scan in float32, ``y + D u``, ``y * silu(z)``, the result in ``u``'s dtype (the kernel's
  ``out = empty_like(delta)``).

Not enforced: ``is_cuda`` (the point is to run on CPU; all tensors must share one device
instead). Not implemented (tradezoo never calls them; ``NotImplementedError``): complex ``A``,
time-invariant ``[D, N]`` ``B``/``C`` and ``return_last_state``. The scan itself is tradezoo's
reference :func:`~tradezoo.policies.mamba.selective_scan_sequential`, run in float32 with
autocast off (the kernel computes in float32 whatever its input dtype), with autograd giving
the gradients the kernel's backward returns (in each input's dtype).

Use :func:`install` in a test (``monkeypatch``) to route tradezoo's ``mamba_ssm`` call site to
the stub on CPU, ``scan="auto"`` included.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tradezoo.policies import mamba
from tradezoo.policies.mamba import selective_scan_sequential

__all__ = ["install", "selective_scan_fn"]

_INPUT_TYPES = (torch.float32, torch.float16, torch.bfloat16)
_WEIGHT_TYPES = (torch.float32, torch.complex64)


def _check(condition: bool, expression: str, detail: str) -> None:
    """``TORCH_CHECK(expression)``: ``RuntimeError`` naming the failed check."""
    if not condition:
        raise RuntimeError(f"selective_scan_fwd: TORCH_CHECK({expression}) failed: {detail}")


def _check_last_stride(name: str, t: Tensor) -> None:
    _check(t.stride(-1) == 1 or t.size(-1) == 1, f"{name}.stride(-1) == 1 || {name}.size(-1) == 1",
           f"{name} has strides {t.stride()}")


def _check_shape(name: str, t: Tensor, *shape: int) -> None:
    """``CHECK_SHAPE(x, ...)``."""
    _check(tuple(t.shape) == shape, f"{name} must have shape {shape}",
           f"{name} has shape {tuple(t.shape)}")


def _check_kernel_contract(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    z: Tensor | None, delta_bias: Tensor | None,
) -> None:
    """The checks of ``selective_scan_fwd`` (``B``/``C`` as the wrapper passes them)."""
    input_type, weight_type = u.dtype, A.dtype
    _check(input_type in _INPUT_TYPES, "input_type is Float, Half or BFloat16", f"u is {u.dtype}")
    _check(weight_type in _WEIGHT_TYPES, "weight_type is Float or ComplexFloat",
           f"A is {A.dtype}")
    is_variable_B, is_variable_C = B.dim() >= 3, C.dim() >= 3
    is_complex = weight_type == torch.complex64
    _check(delta.dtype == input_type, "delta.scalar_type() == input_type",
           f"delta is {delta.dtype}, u is {u.dtype}")
    _check(B.dtype == (input_type if is_variable_B else weight_type),
           "B.scalar_type() == (!is_variable_B ? weight_type : input_type)",
           f"B is {B.dtype}, u is {u.dtype}, A is {A.dtype}")
    _check(C.dtype == (input_type if is_variable_C else weight_type),
           "C.scalar_type() == (!is_variable_C ? weight_type : input_type)",
           f"C is {C.dtype}, u is {u.dtype}, A is {A.dtype}")
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    _check(len({t.device for t in tensors}) == 1, "all tensors on one device (stub: is_cuda)",
           f"devices {sorted({str(t.device) for t in tensors})}")
    _check_last_stride("u", u)
    _check_last_stride("delta", delta)
    _check(u.dim() == 3, "u.dim() == 3", f"u has shape {tuple(u.shape)}")
    batch, dim, seqlen = u.shape
    _check(A.dim() == 2, "A.dim() == 2", f"A has shape {tuple(A.shape)}")
    dstate = A.size(1)
    n_groups = B.size(1) if is_variable_B else 1
    _check(dstate <= 256, "dstate <= 256", "selective_scan only supports state dimension <= 256")
    _check_shape("u", u, batch, dim, seqlen)
    _check_shape("delta", delta, batch, dim, seqlen)
    _check_shape("A", A, dim, dstate)
    length = seqlen * 2 if is_complex else seqlen
    for name, t, variable in (("B", B, is_variable_B), ("C", C, is_variable_C)):
        if variable:
            _check_shape(name, t, batch, n_groups, dstate, length)
            _check_last_stride(name, t)
        else:
            _check_shape(name, t, dim, dstate)
    # dim_ngroups_ratio = dim / n_groups, and selective_scan_ref repeats each group over it.
    _check(dim % n_groups == 0, "dim % n_groups == 0", f"dim {dim}, n_groups {n_groups}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(t.dtype == torch.float32, f"{name}.scalar_type() == at::ScalarType::Float",
                   f"{name} is {t.dtype}")
            _check_last_stride(name, t)
            _check_shape(name, t, dim)
    if z is not None:
        _check(z.dtype == input_type, "z.scalar_type() == input_type",
               f"z is {z.dtype}, u is {u.dtype}")
        _check_last_stride("z", z)
        _check_shape("z", z, batch, dim, seqlen)


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor:
    """``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` with its kernel's checks.

    Shapes: ``u, delta [B, D, L]``, ``A [D, N]``, ``B, C [B, N, L]`` or ``[B, G, N, L]``,
    ``D, delta_bias [D]``, ``z [B, D, L]`` -> ``out [B, D, L]`` in ``u``'s dtype.
    """
    # SelectiveScanFn.forward's preparation.
    u = u if u.stride(-1) == 1 else u.contiguous()
    delta = delta if delta.stride(-1) == 1 else delta.contiguous()
    D = None if D is None else D.contiguous()
    B = B if B.stride(-1) == 1 else B.contiguous()
    C = C if C.stride(-1) == 1 else C.contiguous()
    z = z if z is None or z.stride(-1) == 1 else z.contiguous()
    B = B.unsqueeze(1) if B.dim() == 3 else B  # [B, 1, N, L]
    C = C.unsqueeze(1) if C.dim() == 3 else C  # [B, 1, N, L]
    _check_kernel_contract(u, delta, A, B, C, D, z, delta_bias)
    if A.is_complex() or B.dim() < 3 or C.dim() < 3 or return_last_state:
        raise NotImplementedError(
            "mamba_ssm stub: complex A, time-invariant B/C and return_last_state are not "
            "implemented (tradezoo does not use them)"
        )
    with torch.autocast(u.device.type, enabled=False):
        delta32 = delta.float()
        if delta_bias is not None:
            delta32 = delta32 + delta_bias[..., None].float()
        if delta_softplus:
            delta32 = F.softplus(delta32)
        dim, groups = u.shape[1], B.shape[1]
        per_group = dim // groups
        outs = []
        for g in range(groups):
            ch = slice(g * per_group, (g + 1) * per_group)
            outs.append(selective_scan_sequential(
                u[:, ch].float().transpose(1, 2),  # [B, L, H]
                delta32[:, ch].transpose(1, 2),  # [B, L, H]
                A[ch],  # [H, N]
                B[:, g].float().transpose(1, 2),  # [B, L, N]
                C[:, g].float().transpose(1, 2),  # [B, L, N]
                None if D is None else D[ch],  # [H]
            ))  # [B, L, H]
        out = torch.cat(outs, -1).transpose(1, 2)  # [B, D, L]
        if z is not None:
            out = out * F.silu(z.float())
    return out.to(u.dtype)


def install(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Route :mod:`tradezoo.policies.mamba`'s ``mamba_ssm`` call site to the stub, on CPU too
    (``scan="auto"`` then picks it, as it picks the kernel on CUDA).

    Returns the list the stub appends each call's input dtype (``u``'s) to, so a test can
    assert the ``mamba_ssm`` branch ran.
    """
    calls: list[torch.dtype] = []

    @functools.wraps(selective_scan_fn)
    def recorded(*args: Any, **kwargs: Any) -> Tensor:
        out = selective_scan_fn(*args, **kwargs)
        calls.append(args[0].dtype)
        return out

    monkeypatch.setattr(mamba, "_mamba_ssm_scan_fn", lambda: recorded)
    monkeypatch.setattr(mamba, "_MAMBA_SSM_DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    return calls
