"""``mamba``: the selective state-space backbone (Gu & Dao 2023), with three scan backends.

Reference followed: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces" (arXiv 2312.00752), and the official code ``state-spaces/mamba``
(``mamba_ssm/modules/mamba_simple.py`` for the block and its initialisation,
``mamba_ssm/ops/selective_scan_interface.py::selective_scan_ref`` for the scan,
``mamba_ssm/models/mixer_seq_simple.py`` for the residual stack and ``_init_weights``).

Shapes: ``B`` batch, ``L`` window, ``F`` features, ``d = d_model``, ``E = expand * d``
(inner width), ``N = d_state``, ``R = dt_rank``. One layer (pre-norm residual)::

    (x, z)     = in_proj(RMSNorm(h))                       x, z  [B, L, E]
    x          = SiLU(causal_depthwise_conv1d(x))           kernel d_conv, left padding only
    (r, B, C)  = x_proj(x)                                  r [B, L, R], B, C [B, L, N]
    delta      = softplus(dt_proj(r))     (= W r + bias)    delta [B, L, E], > 0
    A          = -exp(A_log)                                A [E, N], < 0
    A_bar_t    = exp(delta_t A)           (zero-order hold)  [B, E, N], in (0, 1]
    B_bar_t    = delta_t B_t              (as mamba_ssm)     [B, E, N]
    s_t        = A_bar_t * s_{t-1} + B_bar_t * x_t,  s_0 = 0   (selective scan)
    y_t        = C_t . s_t + D * x_t                        [B, E]
    h          = h + out_proj(y * SiLU(z))                  [B, L, d]

The backbone embeds the features (``Linear(F, d)``), stacks ``n_layers`` such layers and applies
a final RMSNorm; ``forward_sequence`` returns every position (causal: the conv pads on the
left and the scan runs forward), ``forward`` the last one.

Initialisation (mamba_ssm's): ``dt`` sampled log-uniformly in ``[dt_min, dt_max]``, floored at
``dt_init_floor``, and ``dt_proj.bias = softplus^-1(dt) = dt + log(-expm1(-dt))``, so that
``softplus(bias)`` starts in that range; ``dt_proj.weight ~ U(-s, s)``, ``s = dt_scale / sqrt(R)``
(``dt_init="random"``) or ``= s`` (``"constant"``); ``A_log[e, n] = log(n + 1)`` (S4D-real);
``D = 1``; every other Linear bias zero; ``out_proj.weight`` divided by ``sqrt(n_layers)``
(GPT-2 style prenorm-residual rescaling, ``rescale_prenorm_residual=True``). ``A_log`` and
``D`` are excluded from weight decay (:meth:`MambaBackbone.no_weight_decay`).

Scan backends (all ``(u, delta, A, B, C, D) -> y``; ``u, delta [B, L, E]``, ``A [E, N]``,
``B, C [B, L, N]``, ``D [E]`` -> ``y [B, L, E]``):

- :func:`selective_scan_sequential`: the reference; a Python loop over ``unbind(1)`` slices
  with plain autograd (O(L) backward; never indexes a big precomputed tensor per step).
- :func:`selective_scan_chunked`: a custom autograd function with a hand-written adjoint that
  works chunk by chunk. Time is cut into chunks of ``T`` steps (the last one shorter when
  ``T`` does not divide ``L``: any ``L``, no padding at all). Per chunk, time-major:
  ``A_bar`` (one ``exp2`` call), ``B_bar u`` (one outer product) for the whole chunk
  ``[T, B, E, N]``, then the recurrence in place over the chunk's ``unbind(0)`` steps from the
  state carried in, then ``y = C . s`` as one batched matmul. The chunk workspaces are reused,
  so memory is ``O(T B E N)`` plus one ``[B, E, N]`` state per chunk boundary (saved for the
  backward pass) instead of ``O(L B E N)``. Backward, chunks in reverse order: recompute the
  chunk's ``A_bar``, ``B_bar u`` and states from its saved entry state, run the adjoint
  ``lam_t = dy_t C_t + A_bar_{t+1} lam_{t+1}`` backwards through it (the carry from the next
  chunk is ``A_bar lam`` at its first step), then get ``dB, dC, d(delta u)`` as batched
  matmuls and ``d(delta A) = lam_t A_bar_t s_{t-1}`` reduced into ``d delta`` and ``dA``.
  Numerically safe in float32: the only exponentials are ``exp(delta A)`` with
  ``delta A <= 0`` and the recurrences multiply by factors in ``(0, 1]``; there is no
  ``exp(S_t) / exp(S_s)`` of unbounded cumulative sums. ``T`` (``chunk_size=None``) on CPU
  keeps a chunk block near 2^19 elements: cache-resident and reused by the allocator (on CPU,
  page-faulting fresh ``[B, L, E, N]`` tensors of hundreds of MB costs more than the
  arithmetic); small batches get one chunk (``T = L``). On CUDA, where each step costs kernel
  launches rather than cache misses, ``T = L`` unless the block would pass 2^26 elements.
- :func:`selective_scan_mamba_ssm`: ``mamba_ssm``'s fused CUDA kernel (optional extra,
  imported lazily, CUDA tensors only; one input dtype, the autocast dtype under autocast). A
  package that is installed but fails to import warns once with the exception text.
- :func:`selective_scan_native`: a forward-only C kernel for float32 CPU tensors
  (``tradezoo/policies/native/selective_scan.c``, built on first use by
  :mod:`tradezoo.policies.native`): one sample's ``[N, E]`` state stays in cache and
  ``exp(delta A)`` is fused with the update. Inference only (no autograd); it serves the
  policy's batch-1 forward at every env step.

``scan="auto"`` uses ``mamba_ssm`` for CUDA tensors when it imports; on CPU, the native kernel
when no gradient is needed (``torch.no_grad`` or inputs that do not require grad), the
inputs are float32, it builds and no ``torch.jit.trace`` is running, else ``chunked``.
"""

from __future__ import annotations

import ctypes
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.native import (
    address,
    batch_chunks,
    can_run,
    load_kernel,
    native_unavailable,
    run_chunks,
)

__all__ = [
    "SCAN_BACKENDS",
    "MambaBackbone",
    "MambaBlock",
    "MambaConfig",
    "MambaLayer",
    "check_scan_shapes",
    "mamba_ssm_available",
    "resolve_scan",
    "scan_unavailable",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_mamba_ssm",
    "selective_scan_native",
    "selective_scan_sequential",
]

ScanName = Literal["auto", "chunked", "sequential", "mamba_ssm", "native"]
#: Valid values of ``MambaConfig.scan``.
SCAN_BACKENDS: tuple[str, ...] = ("auto", "chunked", "sequential", "mamba_ssm", "native")

# Auto chunking: a chunk's block [T, B, E, N] holds about this many elements (2 MB in float32):
# small enough to stay in cache and to be reused by the allocator (blocks of hundreds of MB are
# page-faulted afresh on every call, which cost more than the arithmetic on CPU), big enough
# that the per-chunk PyTorch calls do real work. Tuned on CPU, 1 thread.
_AUTO_BLOCK_ELEMENTS = 1 << 19
# Auto chunking on CUDA: the cost there is kernel launches (one per step of the recurrence, and
# about a dozen per chunk over the forward and backward passes), not cache misses, so a chunk
# is the whole window unless its block would pass this many elements (256 MiB in float32; the
# backward pass holds 4 blocks).
# Not yet measured on a GPU: see docs/training.md, "Mixed precision".
_CUDA_BLOCK_ELEMENTS = 1 << 26


# -- configuration ------------------------------------------------------------------------


@dataclass
class MambaConfig(BackboneConfig):
    """``mamba`` configuration (defaults follow mamba_ssm's ``Mamba`` module).

    Attributes:
        d_model: residual width ``d`` and output size.
        n_layers: stacked residual Mamba layers.
        d_state: SSM state size ``N`` per channel.
        d_conv: causal depthwise conv kernel (bars).
        expand: inner width ``E = expand * d_model``.
        dt_rank: rank ``R`` of the delta projection; ``None`` means ``ceil(d_model / 16)``.
        dt_min, dt_max: range of the initial ``delta = softplus(dt_proj.bias)`` (log-uniform).
        dt_init_floor: lower bound applied to the sampled initial ``delta``.
        dt_scale: scale of ``dt_proj.weight``'s initial range ``dt_scale / sqrt(R)``.
        dt_init: ``"random"`` (uniform in ``+-dt_scale / sqrt(R)``) or ``"constant"``.
        conv_bias: bias in the depthwise conv.
        bias: bias in ``in_proj`` and ``out_proj``.
        norm_eps: RMSNorm epsilon.
        scan: ``"auto"`` (mamba_ssm on CUDA when it imports; on CPU the native kernel for
            inference, chunked for training), ``"chunked"``, ``"sequential"`` (the slow
            reference), ``"mamba_ssm"`` (CUDA only; error if the package is missing) or
            ``"native"`` (the forward-only CPU kernel; error where it cannot run).
        chunk_size: steps per chunk of the chunked scan; ``None`` sizes chunks to about 2^19
            state elements on CPU and to the whole window on CUDA (up to 2^26 elements; see
            :func:`selective_scan_chunked`).
    """

    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    dt_init: Literal["random", "constant"] = "random"
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    scan: ScanName = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.integer("dt_rank", 1, optional=True, rule="a positive integer or None")
        check.integer("chunk_size", 1, optional=True, rule="a positive integer or None")
        check.number("dt_max", 0.0, open_low=True, rule="> 0")
        check.number("dt_min", 0.0, self.dt_max, open_low=True, rule="> 0 with dt_min <= dt_max "
                     f"(dt_max={self.dt_max})")
        for name in ("dt_init_floor", "dt_scale", "norm_eps"):
            check.number(name, 0.0, open_low=True, rule="> 0")
        check.choice("dt_init", ("random", "constant"), rule="'random' or 'constant'")
        check.choice("scan", SCAN_BACKENDS)

    def for_device(self, device: torch.device) -> tuple[BackboneConfig, str | None]:
        """``scan="auto"`` where the saved scan cannot run (:func:`scan_unavailable`)."""
        return self._backend_fallback("scan", scan_unavailable(self.scan, device), device)

    @property
    def resolved_dt_rank(self) -> int:
        """``dt_rank``, with ``None`` resolved to ``ceil(d_model / 16)`` (mamba_ssm's rule)."""
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)


# -- scan backends --------------------------------------------------------------------------


def selective_scan_sequential(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> Tensor:
    """Reference selective scan: a loop over ``unbind(1)`` slices with plain autograd.

    Args:
        u: inputs ``[B, L, E]``.
        delta: step sizes ``[B, L, E]`` (already softplus-ed, > 0).
        A: state matrix diagonal ``[E, N]`` (negative).
        B, C: input and output projections ``[B, L, N]``.
        D: skip connection ``[E]`` or ``None``.

    Returns:
        ``y [B, L, E]`` with ``s_t = exp(delta_t A) * s_{t-1} + delta_t B_t u_t`` and
        ``y_t = C_t . s_t + D * u_t``.
    """
    decay = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, E, N]
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B, L, E, N]
    state = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # [B, E, N]
    outputs = []
    for a_t, b_t, c_t in zip(decay.unbind(1), drive.unbind(1), C.unbind(1), strict=True):
        state = a_t * state + b_t  # [B, E, N]
        outputs.append((state * c_t.unsqueeze(1)).sum(-1))  # [B, E]
    y = torch.stack(outputs, dim=1)  # [B, L, E]
    return y if D is None else y + u * D


def _chunk_length(
    length: int, step_elements: int, chunk_size: int | None, device_type: str = "cpu"
) -> int:
    """Steps ``T`` per chunk; ``step_elements = B * E * N`` is the state size of one step.

    ``None`` (auto) sizes a chunk's block ``[T, B, E, N]`` to about ``_AUTO_BLOCK_ELEMENTS``
    on CPU (a few MB: cache-resident, and reused from the allocator instead of page-faulted)
    and to at most ``_CUDA_BLOCK_ELEMENTS`` on CUDA (the whole window for training batches:
    fewer, larger launches), then balances the chunks so that the last one is not a short
    remainder.
    """
    if chunk_size is not None:
        return min(chunk_size, length)
    budget = _CUDA_BLOCK_ELEMENTS if device_type == "cuda" else _AUTO_BLOCK_ELEMENTS
    chunk_len = max(1, budget // max(step_elements, 1))
    if chunk_len >= length:
        return length
    return math.ceil(length / math.ceil(length / chunk_len))


def _fill_block(
    decay: Tensor,
    state: Tensor,
    delta_t: Tensor,
    drive_t: Tensor,
    B_t: Tensor,
    A2: Tensor,
    start: int,
    stop: int,
) -> tuple[Tensor, Tensor]:
    """Write ``A_bar`` and ``B_bar u`` of steps ``start:stop`` into the chunk workspaces.

    ``A_bar = 2^(delta A log2(e)) = exp(delta A)``: ``exp2`` is about twice as fast as ``exp``
    on CPU, and its argument is ``<= 0``. Returns the ``[n, B, E, N]`` views.
    """
    n = stop - start
    a, s = decay[:n], state[:n]  # [n, B, E, N]
    torch.mul(delta_t[start:stop].unsqueeze(-1), A2, out=a).exp2_()
    torch.mul(drive_t[start:stop].unsqueeze(-1), B_t[start:stop].unsqueeze(-2), out=s)
    return a, s


def _recurrence_(decay: Tensor, state: Tensor, entry: Tensor | None) -> None:
    """In place over ``[n, B, E, N]``: ``state[t] += decay[t] * state[t-1]``, ``state[-1] = entry``.

    On entry ``state`` holds ``B_bar_t u_t``; on exit the scanned states ``s_t``.
    """
    previous = entry
    for a_t, s_t in zip(decay.unbind(0), state.unbind(0), strict=True):
        if previous is not None:
            s_t.addcmul_(a_t, previous)  # [B, E, N]
        previous = s_t


def _reverse_recurrence_(decay: Tensor, adjoint: Tensor) -> None:
    """In place over ``[n, B, E, N]``: ``adjoint[t] += decay[t+1] * adjoint[t+1]``.

    On entry ``adjoint`` holds ``dL/dy_t * C_t`` (plus what flows in from later chunks at the
    last step); on exit ``lam_t = dL/ds_t``.
    """
    later_a: Tensor | None = None
    later_l: Tensor | None = None
    for a_t, l_t in zip(reversed(decay.unbind(0)), reversed(adjoint.unbind(0)), strict=True):
        if later_l is not None:
            l_t.addcmul_(later_a, later_l)  # [B, E, N]
        later_a, later_l = a_t, l_t


_LOG2_E = 1.0 / math.log(2.0)


def _chunked_forward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int | None,
    last_only: bool,
) -> tuple[Tensor, int, tuple[Tensor, ...], list[Tensor]]:
    """Forward pass of the chunked scan (no autograd).

    Returns ``y [B, L, E]`` (``C . s`` only; ``[B, 1, E]``, the last step, when ``last_only``),
    the chunk length, the time-major inputs ``(delta_t, drive_t, B_t, C_t)`` and the states
    entering chunks 1, 2, ... ``[B, E, N]``.
    """
    batch, length, inner = u.shape
    n_state = A.shape[1]
    chunk_len = _chunk_length(length, batch * inner * n_state, chunk_size, u.device.type)
    A2 = A * _LOG2_E  # [E, N]
    delta_t = delta.transpose(0, 1).contiguous()  # [L, B, E]
    drive_t = (delta * u).transpose(0, 1).contiguous()  # delta u  [L, B, E]
    B_t = B.transpose(0, 1).contiguous()  # [L, B, N]
    C_t = C.transpose(0, 1).contiguous()  # [L, B, N]
    y_t = u.new_empty(1 if last_only else length, batch, inner)  # [L or 1, B, E]
    decay = u.new_empty(chunk_len, batch, inner, n_state)  # workspace [T, B, E, N]
    state = torch.empty_like(decay)  # workspace [T, B, E, N]
    entries: list[Tensor] = []
    entry: Tensor | None = None
    for start in range(0, length, chunk_len):
        stop = min(start + chunk_len, length)
        a, s = _fill_block(decay, state, delta_t, drive_t, B_t, A2, start, stop)
        _recurrence_(a, s, entry)
        rows = (stop - start) * batch
        if not last_only:
            torch.bmm(
                C_t[start:stop].view(rows, 1, n_state),
                s.view(rows, inner, n_state).transpose(1, 2),
                out=y_t[start:stop].view(rows, 1, inner),
            )  # y_t = C_t . s_t  [rows, 1, E]
        elif stop == length:
            torch.bmm(
                C_t[-1].unsqueeze(1), s[-1].transpose(1, 2), out=y_t[0].unsqueeze(1)
            )  # y_L = C_L . s_L  [B, 1, E]
        if stop < length:
            entry = s[-1].clone()  # [B, E, N]
            entries.append(entry)
    return y_t.transpose(0, 1), chunk_len, (delta_t, drive_t, B_t, C_t), entries


class _ChunkedSelectiveScan(torch.autograd.Function):
    """``y = C . s`` of the selective scan (without ``D u``), adjoint written by hand.

    Inputs are float32 or float64, all of one dtype (the wrapper casts). Saves the small
    time-major inputs and one ``[B, E, N]`` state per chunk boundary; the backward pass
    recomputes each chunk's ``A_bar``, ``B_bar u`` and states from its entry state.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        chunk_size: int | None,
        last_only: bool,
    ) -> Tensor:
        with torch.autocast(u.device.type, enabled=False):
            y, chunk_len, time_major, entries = _chunked_forward(
                u, delta, A, B, C, chunk_size, last_only
            )
        ctx.chunk_len = chunk_len
        ctx.last_only = last_only
        ctx.save_for_backward(u, delta, A, *time_major, *entries)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        u, delta, A, delta_t, drive_t, B_t, C_t, *entries = ctx.saved_tensors
        chunk_len: int = ctx.chunk_len
        length, batch, inner = delta_t.shape
        n_state = A.shape[1]
        with torch.autocast(u.device.type, enabled=False):
            A2 = A * _LOG2_E  # [E, N]
            if ctx.last_only:  # only y_L was returned: dL/dy_t = 0 for t < L
                gy_t = delta_t.new_zeros(length, batch, inner)  # [L, B, E]
                gy_t[-1] = grad_y[:, 0]
            else:
                gy_t = grad_y.to(u.dtype).transpose(0, 1).contiguous()  # [L, B, E]
            grad_drive_t = torch.empty_like(drive_t)  # dL/d(delta u)  [L, B, E]
            grad_delta_t = torch.empty_like(delta_t)  # via A_bar  [L, B, E]
            grad_B_t = torch.empty_like(B_t)  # [L, B, N]
            grad_C_t = torch.empty_like(C_t)  # [L, B, N]
            grad_A = A.new_zeros(inner * n_state)  # [E*N]
            decay = u.new_empty(chunk_len, batch, inner, n_state)  # workspaces [T, B, E, N]
            state, adjoint, scratch = (torch.empty_like(decay) for _ in range(3))
            starts = list(range(0, length, chunk_len))
            flow: Tensor | None = None  # A_bar_{t+1} lam_{t+1} into the previous chunk
            for index in reversed(range(len(starts))):
                start = starts[index]
                stop = min(start + chunk_len, length)
                rows = (stop - start) * batch
                entry = entries[index - 1] if index else None
                a, s = _fill_block(decay, state, delta_t, drive_t, B_t, A2, start, stop)
                _recurrence_(a, s, entry)  # recompute this chunk's states
                lam = torch.mul(
                    gy_t[start:stop].unsqueeze(-1),
                    C_t[start:stop].unsqueeze(-2),
                    out=adjoint[: stop - start],
                )  # dL/dy_t C_t  [n, B, E, N]
                if flow is not None:
                    lam[-1].add_(flow)
                _reverse_recurrence_(a, lam)  # lam_t = dL/ds_t
                if index:
                    flow = a[0] * lam[0]  # [B, E, N]
                lam_rows = lam.view(rows, inner, n_state)
                torch.bmm(
                    drive_t[start:stop].view(rows, 1, inner),
                    lam_rows,
                    out=grad_B_t[start:stop].view(rows, 1, n_state),
                )  # sum_e lam delta u
                torch.bmm(
                    B_t[start:stop].view(rows, 1, n_state),
                    lam_rows.transpose(1, 2),
                    out=grad_drive_t[start:stop].view(rows, 1, inner),
                )  # sum_n lam B
                torch.bmm(
                    gy_t[start:stop].view(rows, 1, inner),
                    s.view(rows, inner, n_state),
                    out=grad_C_t[start:stop].view(rows, 1, n_state),
                )  # sum_e dL/dy s
                # dL/d(delta A) = lam_t * A_bar_t * s_{t-1}, in the adjoint's memory.
                lam.mul_(a)
                lam[1:].mul_(s[:-1])
                if entry is None:
                    lam[0].zero_()
                else:
                    lam[0].mul_(entry)
                torch.sum(
                    torch.mul(lam, A, out=scratch[: stop - start]), -1,
                    out=grad_delta_t[start:stop],
                )  # sum_n dL/d(delta A) A
                lam.mul_(delta_t[start:stop].unsqueeze(-1))
                grad_A.add_(lam_rows.view(rows, inner * n_state).sum(0))
        grad_drive = grad_drive_t.transpose(0, 1)  # [B, L, E]
        grad_u = grad_drive * delta
        grad_delta = grad_drive * u + grad_delta_t.transpose(0, 1)
        return (
            grad_u,
            grad_delta,
            grad_A.view(inner, n_state),
            grad_B_t.transpose(0, 1),
            grad_C_t.transpose(0, 1),
            None,
            None,
        )


def check_scan_shapes(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> None:
    """Raise ``ValueError`` unless ``u, delta [B, L, E]``, ``A [E, N]``, ``B, C [B, L, N]``
    and ``D [E]`` (or None) fit together (the native kernel reads raw memory by these sizes)."""
    for name, tensor, ndim in (("u", u, 3), ("delta", delta, 3), ("A", A, 2), ("B", B, 3),
                               ("C", C, 3)):
        if tensor.dim() != ndim:
            raise ValueError(f"selective scan: {name} must have {ndim} dimensions, "
                             f"got shape {tuple(tensor.shape)}")
    batch, length, inner = u.shape
    n_state = A.shape[1]
    expected = {
        "delta": (delta, (batch, length, inner)),
        "A": (A, (inner, n_state)),
        "B": (B, (batch, length, n_state)),
        "C": (C, (batch, length, n_state)),
    }
    if D is not None:
        expected["D"] = (D, (inner,))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"selective scan: {name} must have shape {shape} (from u {tuple(u.shape)} and "
                f"A {tuple(A.shape)}), got {tuple(tensor.shape)}"
            )


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    last_only: bool = False,
) -> Tensor:
    """Chunked selective scan with a hand-written, recomputing backward pass.

    Same shapes and result as :func:`selective_scan_sequential` (``u, delta [B, L, E]``,
    ``A [E, N]``, ``B, C [B, L, N]``, ``D [E]`` -> ``[B, L, E]``), for any ``L >= 1``.
    Computed in float32 (float64 if any input is float64); the result has ``u``'s dtype.

    Args:
        chunk_size: steps per chunk ``T``; ``None`` sizes the chunk block ``[T, B, E, N]`` to
            about 2^19 elements on CPU (``T = L`` for small batches) and to ``T = L`` on
            CUDA while the block stays within 2^26 elements.
        last_only: return only the last step, ``[B, 1, E]`` (what ``MambaBackbone.forward``
            needs from its last layer; the recurrence still runs over the whole window).
    """
    check_scan_shapes(u, delta, A, B, C, D)
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"selective scan: chunk_size must be a positive integer, got {chunk_size}")
    inputs = (u, delta, A, B, C)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in inputs) else torch.float32
    if any(t.dtype != dtype for t in inputs):
        u, delta, A, B, C = (t.to(dtype) for t in inputs)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        y = _ChunkedSelectiveScan.apply(u, delta, A, B, C, chunk_size, last_only)  # [B, L, E]
    elif torch.is_autocast_enabled(u.device.type):  # inference: nothing saved
        with torch.autocast(u.device.type, enabled=False):
            y = _chunked_forward(u, delta, A, B, C, chunk_size, last_only)[0]  # [B, L, E]
    else:
        y = _chunked_forward(u, delta, A, B, C, chunk_size, last_only)[0]  # [B, L, E]
    if D is not None:
        y = torch.addcmul(y, u[:, -1:] if last_only else u, D.to(dtype))  # [B, L or 1, E]
    return y.to(inputs[0].dtype)


#: Device types ``mamba_ssm``'s kernel runs on (its extension checks ``is_cuda``); the one
#: place :func:`resolve_scan` and :func:`selective_scan_mamba_ssm` read the rule from.
_MAMBA_SSM_DEVICE_TYPES: frozenset[str] = frozenset({"cuda"})


@functools.cache
def _load_mamba_ssm() -> tuple[Callable[..., Tensor] | None, str]:
    """``(selective_scan_fn, "")``, or ``(None, reason)`` when ``mamba_ssm`` does not import.

    Imported once per process. An absent package (``ModuleNotFoundError`` for ``mamba_ssm``
    itself) is the normal CPU install and stays quiet; a package that is present but fails to
    import (its CUDA extension missing or built for another torch/CUDA, a missing dependency)
    warns once with the exception text, since ``scan="auto"`` then silently runs the slower
    chunked scan on CUDA.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, or OSError/RuntimeError from the extension
        reason = f"{type(error).__name__}: {error}"
        if not (isinstance(error, ModuleNotFoundError) and error.name == "mamba_ssm"):
            warnings.warn(
                f"mamba_ssm is installed but does not import ({reason}); scan='auto' uses the "
                "chunked scan on CUDA instead",
                RuntimeWarning,
                stacklevel=2,
            )
        return None, reason
    return selective_scan_fn, ""


def _mamba_ssm_scan_fn() -> Callable[..., Tensor] | None:
    """``mamba_ssm``'s ``selective_scan_fn``, or ``None`` when it does not import."""
    return _load_mamba_ssm()[0]


def _mamba_ssm_missing_message() -> str:
    """The error for ``scan="mamba_ssm"`` where it does not import, with the reason."""
    return (
        "scan 'mamba_ssm' needs the optional package mamba-ssm (>= 2, CUDA only), which does "
        f"not import here ({_load_mamba_ssm()[1]}); install it or use scan='chunked'/'auto'"
    )


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s selective-scan kernel imports (the optional ``cuda`` extra)."""
    return _mamba_ssm_scan_fn() is not None


def _mamba_ssm_input_dtype(*inputs: Tensor) -> torch.dtype:
    """The one dtype ``mamba_ssm``'s kernel gets ``u``, ``delta``, ``B`` and ``C`` in.

    Its ``TORCH_CHECK``s want ``delta``, ``B`` and ``C`` in ``u``'s dtype. Under autocast that
    is the autocast dtype, as ``mamba_ssm``'s own ``Mamba`` module passes them (the kernel
    computes in float32 inside); otherwise the widest of the four.
    """
    device_type = inputs[0].device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return functools.reduce(torch.promote_types, (t.dtype for t in inputs))


def selective_scan_mamba_ssm(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> Tensor:
    """``mamba_ssm``'s fused CUDA selective scan, with this module's ``[B, L, *]`` layout.

    The call obeys the kernel's contract (``selective_scan.cpp``): ``u``, ``delta`` ``[B, E,
    L]`` and ``B``, ``C`` ``[B, N, L]`` in one dtype (:func:`_mamba_ssm_input_dtype`: the
    autocast dtype under autocast), ``A [E, N]`` and ``D [E]`` float32. The result has that
    dtype. ``tests/mamba_ssm_stub.py`` enforces the contract on CPU.

    Raises:
        RuntimeError: ``mamba_ssm`` does not import.
        ValueError: the tensors are not on a CUDA device.
    """
    fn = _mamba_ssm_scan_fn()
    if fn is None:
        raise RuntimeError(_mamba_ssm_missing_message())
    if u.device.type not in _MAMBA_SSM_DEVICE_TYPES:
        raise ValueError(
            f"scan 'mamba_ssm' runs on CUDA tensors only, got tensors on {u.device}; "
            "use scan='chunked' or 'auto' on CPU"
        )
    dtype = _mamba_ssm_input_dtype(u, delta, B, C)
    y = fn(
        u.transpose(1, 2).to(dtype),  # [B, E, L]
        delta.transpose(1, 2).to(dtype),  # [B, E, L]
        A.float(),
        B.transpose(1, 2).to(dtype),  # [B, N, L]
        C.transpose(1, 2).to(dtype),  # [B, N, L]
        None if D is None else D.float(),
    )  # [B, E, L] in dtype
    return y.transpose(1, 2)  # [B, L, E]


def selective_scan_native(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    last_only: bool = False,
) -> Tensor:
    """Forward-only selective scan in C (shapes as in :func:`selective_scan_sequential`;
    ``[B, 1, E]`` when ``last_only``). Float32 CPU tensors, no autograd.

    Raises:
        ValueError: a tensor is not float32 on CPU, or a gradient is needed.
        NativeBuildError: the kernel cannot be built here.
    """
    check_scan_shapes(u, delta, A, B, C, D)
    if not can_run(u, delta, A, B, C, D, forward_only=True):
        raise ValueError(
            "scan 'native' runs float32 CPU tensors without autograd (inference); use "
            "scan='auto' (native for inference, chunked for training) or 'chunked'"
        )
    lib = load_kernel("selective_scan", required=True)
    return _selective_scan_kernel(lib, u, delta, A, B, C, D, last_only)  # type: ignore[arg-type]


def _selective_scan_kernel(
    lib: ctypes.CDLL, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor | None, last_only: bool,
) -> Tensor:
    """The kernel call of :func:`selective_scan_native`, for inputs already checked (shapes
    by :func:`check_scan_shapes`, dtypes by ``can_run``)."""
    batch, length, inner = u.shape
    n_state = A.shape[1]
    u, delta, B, C = (t.detach().contiguous() for t in (u, delta, B, C))
    A_t = A.detach().t().contiguous()  # [N, E]
    D_c = None if D is None else D.detach().contiguous()
    y = u.new_empty(batch, 1 if last_only else length, inner)  # [B, L or 1, E]

    def run(b0: int, b1: int) -> int:
        return int(lib.tz_selective_scan_forward(
            b1 - b0, length, inner, n_state, address(u, b0), address(delta, b0),
            address(A_t), address(B, b0), address(C, b0),
            None if D_c is None else address(D_c), address(y, b0), int(last_only),
        ))

    run_chunks(run, batch_chunks(batch))
    return y


def scan_unavailable(scan: str, device: torch.device) -> str | None:
    """Why backend ``scan`` cannot run on ``device`` on this machine, or ``None`` when it can
    (``"auto"``, ``"chunked"`` and ``"sequential"`` run everywhere)."""
    if scan == "mamba_ssm":
        if device.type not in _MAMBA_SSM_DEVICE_TYPES:
            return f"mamba_ssm's kernel runs on CUDA, not {device.type}"
        if not mamba_ssm_available():
            return "the mamba_ssm package does not import here"
    if scan == "native":
        return native_unavailable("selective_scan", device)
    return None


def resolve_scan(scan: str, device: torch.device) -> str:
    """The backend ``scan`` stands for on ``device`` (``"auto"`` resolved for training:
    :func:`selective_scan` also runs ``"auto"`` through the native kernel when no gradient is
    needed and the tensors are float32 on CPU).

    Raises ``ValueError`` for an unknown name and the errors of
    :func:`selective_scan_mamba_ssm` when ``"mamba_ssm"`` cannot run.
    """
    if scan == "auto":
        on_kernel_device = device.type in _MAMBA_SSM_DEVICE_TYPES
        return "mamba_ssm" if on_kernel_device and mamba_ssm_available() else "chunked"
    if scan not in SCAN_BACKENDS:
        raise ValueError(f"unknown scan {scan!r}; valid scans: {list(SCAN_BACKENDS)}")
    if scan == "mamba_ssm":
        if not mamba_ssm_available():
            raise RuntimeError(_mamba_ssm_missing_message())
        if device.type not in _MAMBA_SSM_DEVICE_TYPES:
            raise ValueError(
                f"scan 'mamba_ssm' runs on CUDA tensors only, got device {device}; use "
                "scan='chunked' or 'auto' on CPU"
            )
    return scan


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    scan: str = "auto",
    chunk_size: int | None = None,
    last_only: bool = False,
) -> Tensor:
    """Dispatch to a scan backend by name (shapes as in :func:`selective_scan_sequential`).

    ``last_only`` returns ``y[:, -1:]`` only (``[B, 1, E]``); the chunked backend then skips
    the other steps' outputs.
    """
    backend = resolve_scan(scan, u.device)
    if backend == "native":
        return selective_scan_native(u, delta, A, B, C, D, last_only=last_only)
    if scan == "auto" and backend == "chunked" and can_run(u, delta, A, B, C, D,
                                                           forward_only=True):
        lib = load_kernel("selective_scan")
        if lib is not None:  # inference on CPU: the kernel (checked once, here)
            check_scan_shapes(u, delta, A, B, C, D)
            return _selective_scan_kernel(lib, u, delta, A, B, C, D, last_only)
    if backend == "chunked":
        return selective_scan_chunked(
            u, delta, A, B, C, D, chunk_size=chunk_size, last_only=last_only
        )
    if backend == "mamba_ssm":
        y = selective_scan_mamba_ssm(u, delta, A, B, C, D)
    else:
        y = selective_scan_sequential(u, delta, A, B, C, D)
    return y[:, -1:] if last_only else y


# -- modules --------------------------------------------------------------------------------


def _inverse_softplus(x: Tensor) -> Tensor:
    """``softplus^-1(x) = x + log(-expm1(-x))`` for ``x > 0`` (mamba_ssm's dt bias init)."""
    return x + torch.log(-torch.expm1(-x))


class MambaBlock(nn.Module):
    """The Mamba mixer (mamba_ssm's ``Mamba`` module): ``[B, L, d] -> [B, L, d]``.

    Parameter names match ``mamba_ssm.modules.mamba_simple.Mamba`` (``in_proj``, ``conv1d``,
    ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so its state dicts load here.
    """

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        d_model, inner = config.d_model, config.expand * config.d_model
        self.d_inner = inner
        self.d_state = config.d_state
        self.d_conv = config.d_conv
        self.dt_rank = config.resolved_dt_rank
        self.scan = config.scan
        self.chunk_size = config.chunk_size
        if self.scan == "mamba_ssm":
            resolve_scan("mamba_ssm", torch.device("cuda"))  # fail at construction if missing

        self.in_proj = nn.Linear(d_model, 2 * inner, bias=config.bias)
        self.conv1d = nn.Conv1d(
            inner, inner, config.d_conv, groups=inner, padding=config.d_conv - 1,
            bias=config.conv_bias,
        )
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * config.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(inner, config.d_state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=config.bias)
        self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: MambaConfig) -> None:
        """mamba_ssm's initialisation of ``dt_proj``, ``A_log`` and ``D`` (module docstring)."""
        dt_std = config.dt_scale * self.dt_rank**-0.5
        if config.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        log_lo, log_hi = math.log(config.dt_min), math.log(config.dt_max)
        dt = torch.exp(torch.rand(self.d_inner) * (log_hi - log_lo) + log_lo)  # [E]
        dt = dt.clamp(min=config.dt_init_floor)
        self.dt_proj.bias.copy_(_inverse_softplus(dt))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32)  # [N]
        self.A_log.copy_(torch.log(states).repeat(self.d_inner, 1))  # [E, N]
        self.D.fill_(1.0)

    def _conv(self, x: Tensor) -> Tensor:
        """Causal depthwise conv over time: ``[B, L, E] -> [B, L, E]`` (left padding only).

        ``y_t = bias + sum_k w[:, k] * x_{t - (d_conv - 1) + k}`` (``x_{<0} = 0``), written as
        ``d_conv`` multiply-adds: on CPU this beats oneDNN's depthwise conv for small batches
        and matches it for training batches, and needs no ``[B, E, L]`` transposes.
        """
        length = x.shape[1]
        weight = self.conv1d.weight.view(self.d_inner, self.d_conv)  # [E, K]
        padded = F.pad(x, (0, 0, self.d_conv - 1, 0))  # [B, L + K - 1, E]
        bias = self.conv1d.bias
        out = padded[:, :length] * weight[:, 0] if bias is None else torch.addcmul(
            bias, padded[:, :length], weight[:, 0]
        )  # [B, L, E]
        for k in range(1, self.d_conv):
            out = torch.addcmul(out, padded[:, k : k + length], weight[:, k])  # [B, L, E]
        return out

    def forward(
        self, x: Tensor, *, last_only: bool = False, return_delta: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x [B, L, d] -> [B, L, d]`` (``[B, 1, d]``, the last step, when ``last_only``).

        With ``return_delta`` also returns ``delta [B, L, E]``. The projections are called
        through ``F.linear`` on the submodules' parameters (saves the module-call overhead
        that matters for batch-1 latency; parameter names are unchanged).
        """
        inner = self.d_inner
        weight, bias = self.in_proj.weight, self.in_proj.bias
        if last_only:  # z is only needed at the last step
            u = F.linear(x, weight[:inner], None if bias is None else bias[:inner])  # [B, L, E]
            z = F.linear(x[:, -1:], weight[inner:], None if bias is None else bias[inner:])
        else:
            u, z = F.linear(x, weight, bias).chunk(2, dim=-1)  # [B, L, E] each
        u = F.silu(self._conv(u))  # [B, L, E]
        r, B, C = F.linear(u, self.x_proj.weight).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )  # [B, L, R], [B, L, N], [B, L, N]
        delta = F.softplus(F.linear(r, self.dt_proj.weight, self.dt_proj.bias))  # [B, L, E]
        A = -torch.exp(self.A_log.float())  # [E, N]
        y = selective_scan(
            u, delta, A, B, C, self.D, scan=self.scan, chunk_size=self.chunk_size,
            last_only=last_only,
        )  # [B, L or 1, E]
        out = F.linear(y * F.silu(z), self.out_proj.weight, self.out_proj.bias)  # [B, L or 1, d]
        return (out, delta) if return_delta else out


class MambaLayer(nn.Module):
    """Pre-norm residual layer ``h + MambaBlock(RMSNorm(h))`` (mamba_ssm's ``Block``)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = MambaBlock(config)

    def forward(
        self, h: Tensor, *, last_only: bool = False, return_delta: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``h [B, L, d] -> [B, L, d]`` (``[B, 1, d]`` when ``last_only``; and the block's
        ``delta`` when ``return_delta``)."""
        normed = F.rms_norm(h, self.norm.normalized_shape, self.norm.weight, self.norm.eps)
        out = self.mixer(normed, last_only=last_only, return_delta=return_delta)
        residual = h[:, -1:] if last_only else h
        if return_delta:
            return residual + out[0], out[1]
        return residual + out


class MambaBackbone(Backbone):
    """``mamba``: ``Linear(F, d)`` embedding, ``n_layers`` residual Mamba layers, RMSNorm.

    ``forward_sequence(x) [B, L, d]`` is causal; ``forward(x)`` is its last position.
    ``dt`` is accepted and ignored (the selective ``delta`` is learned from the inputs).
    """

    name: ClassVar[str] = "mamba"
    config_cls: ClassVar[type[BackboneConfig]] = MambaConfig
    emits_sequence: ClassVar[bool] = True
    uses_dt: ClassVar[bool] = False

    config: MambaConfig

    def __init__(self, n_features: int, config: MambaConfig) -> None:
        super().__init__(n_features, config)
        self.embedding = nn.Linear(self.n_features, config.d_model)
        self.layers = nn.ModuleList(MambaLayer(config) for _ in range(config.n_layers))
        self.norm_f = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mamba_ssm's ``_init_weights``: Linear biases zero (except ``dt_proj``'s, which holds
        the delta initialisation) and ``out_proj.weight / sqrt(n_layers)``."""
        for name, module in self.named_modules():
            is_linear = isinstance(module, nn.Linear) and module.bias is not None
            if is_linear and not name.endswith("dt_proj"):
                nn.init.zeros_(module.bias)
        for layer in self.layers:
            layer.mixer.out_proj.weight.div_(math.sqrt(self.config.n_layers))

    def _run(
        self, x: Tensor, *, last_only: bool = False, collect_delta: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        h = F.linear(x, self.embedding.weight, self.embedding.bias)  # [B, L, d]
        deltas: list[Tensor] = []
        for index, layer in enumerate(self.layers):
            final = last_only and index == len(self.layers) - 1
            if collect_delta:
                h, delta = layer(h, last_only=final, return_delta=True)  # [B, L, E] delta
                deltas.append(delta)
            else:
                h = layer(h, last_only=final)  # [B, L, d] ([B, 1, d] for the final one)
        norm = self.norm_f
        return F.rms_norm(h, norm.normalized_shape, norm.weight, norm.eps), deltas

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, L, d_model]``; position ``i`` depends on ``x[:, :i+1]`` only."""
        self.check_input(x, dt)
        return self._run(x)[0]

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, d_model]``: the last position of :meth:`forward_sequence`.

        The last layer computes its output at the last step only (same values, less work).
        """
        self.check_input(x, dt)
        return self._run(x, last_only=True)[0][:, -1]  # [B, d]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Statistics of the selective step size ``delta`` per layer.

        Returns:
            ``delta_mean``, ``delta_std``, ``delta_min``, ``delta_max``: ``[n_layers]`` over
            batch, time and channels; ``delta_by_step``: ``[n_layers, B, L]``, the mean over
            channels per bar (large delta = the state is overwritten by that bar's input,
            small = the bar is mostly ignored and older context kept).
        """
        self.check_input(x, dt)
        _, deltas = self._run(x, last_only=True, collect_delta=True)
        stacked = torch.stack([d.float() for d in deltas])  # [n_layers, B, L, E]
        flat = stacked.flatten(1)  # [n_layers, B*L*E]
        return {
            "delta_mean": flat.mean(1),
            "delta_std": flat.std(1, correction=0),
            "delta_min": flat.amin(1),
            "delta_max": flat.amax(1),
            "delta_by_step": stacked.mean(-1),
        }

    def no_weight_decay(self) -> set[str]:
        """``layers.{i}.mixer.A_log`` and ``layers.{i}.mixer.D`` (as mamba_ssm)."""
        return {
            f"layers.{i}.mixer.{param}"
            for i in range(len(self.layers))
            for param in ("A_log", "D")
        }
