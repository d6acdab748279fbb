"""TimeParticle-inspired backbone: multi-scale "particles" with gated state recurrences.

The design (dilated causal convolution per scale, gated state update, cross-scale attention
messages, softmax aggregation) is **TimeParticle-inspired**: the KBS 2025 TimeParticle paper's
architecture differs, and this module does not claim to reproduce it. Unlike the public
TimeParticle code, the recurrence is an exact sequential scan (no cumsum/divide "closed form",
which is silently wrong in float32).

Equations (one layer; ``u [B, L, D]`` is the layer input, ``K = n_particles``)::

    x_k      = CausalDilatedConv_k(u)            kernel 2**k, dilation 2**(k-1), k = 1..K,
                                                 left padding (2**k - 1) * 2**(k-1) only
    g_k,t    = sigmoid(W_g,k [x_k,t ; h_k,t-1] + b_g,k)
    h~_k,t   = tanh(W_h,k x_k,t + U_h,k h_k,t-1 + b_h,k)
    h_k,t    = g_k,t * h~_k,t + (1 - g_k,t) * h_k,t-1          h_k,0 = 0 (before the window)
    alpha_kj = softmax_{j != k}( (W_q h_k,t) . (W_k h_j,t) / sqrt(D) )   diagonal masked out
    m_k,t    = sum_{j != k} alpha_kj W_v h_j,t                          cross-scale messages
    beta_t   = softmax(W_beta [h_1,t ; ... ; h_K,t])                    [K] aggregation weights
    a_t      = sum_k beta_k,t (h_k,t + m_k,t)
    out_t    = LayerNorm(u_t + Dropout(W_o a_t))                        residual + norm

The design chapter's parts (``TimeParticleConfig``) are the defaults: the ablation in
``docs/architectures.md`` found the form above (one head, no ``C m_t``, no ``D^(k)``) within
noise of each of them, so that form's parts stay options (``attention_heads=1``,
``message_feedback=False``, ``particle_outputs=False``), and a saved config without these
fields (written before they existed) is that form (``TimeParticleConfig.saved_absent``):

- ``attention_heads = H`` (default 4, the chapter's count): the messages are multi-head
  attention, ``W_q, W_k, W_v`` split into H heads of ``D / H`` channels, each with its own
  ``alpha^(h)`` (scaled by ``sqrt(D / H)``, diagonal masked), the heads' messages concatenated
  (no extra projection: ``W_o`` follows the aggregation). ``H = 1`` is the form above.
- ``message_feedback = True`` (default): the messages enter each particle's recurrence, the
  ``C m_t`` term of the chapter's state equation, computed from the states before the update
  (so the step stays causal and explicit)::

      m_k,t    = sum_{j != k} alpha_kj(h_t-1) W_v h_j,t-1
      g_k,t    = sigmoid(W_g,k [x_k,t ; h_k,t-1] + C_g,k m_k,t + b_g,k)
      h~_k,t   = tanh(W_h,k x_k,t + U_h,k h_k,t-1 + C_h,k m_k,t + b_h,k)

  ``C = [C_g | C_h]`` ``[K, D, 2D]``. The aggregation still adds ``m_k,t`` of the new states.
  The K x K attention sits inside the time loop, so the batched scan (:class:`_ParticleScan`)
  cannot run it: training runs the autograd PyTorch loop
  (:meth:`ParticleLayer.recurrence_with_messages`), and inference without autograd on
  float32 CPU tensors runs the same loop in a C kernel (:func:`particle_scan_messages_native`,
  ``backend="auto"`` or ``"native"``; tested against the PyTorch loop).
- ``particle_outputs = True`` (default): each particle has its own output projection ``D^(k)``
  before the softmax aggregation, ``a_t = sum_k beta_k,t (D^(k) (h_k,t + m_k,t) + d^(k))``.

Layers stack ``n_layers`` times after an input projection ``Linear(F, D)``. ``forward`` returns
the last position ``[B, D]``; ``forward_sequence`` returns every position ``[B, L, D]`` and is
causal (the convolutions pad on the left only, the recurrence runs forwards, messages and
aggregation mix particles of the same time step only).

Design decisions beyond the equations:

- The convolutions are causal: depthwise, dilated and padded on the LEFT only. The chapter's
  padding is symmetric ("same"), so its convolution output at bar ``t`` reads bars after
  ``t``: a look-ahead that makes every later part of the model see the future. Left padding
  keeps the receptive field (``(kernel - 1) dilation + 1`` bars) and ends it at bar ``t``.
- Particles are numbered ``k = 1..K`` (``k = 0`` would need dilation 1/2). The receptive fields
  are 2, 7, 29, 121 bars for k = 1..4, so coarser particles see longer context.
- The convolution is depthwise (one filter per channel); the channel mixing is done by
  ``W_g`` and ``W_h`` right after it, so conv + ``W_{g,h}`` is a depthwise-separable
  convolution (as Mamba's causal conv1d). A full ``D x D`` conv would cost more than the
  recurrence itself. It is computed by :func:`causal_conv_bank`, a hand-written autograd
  function, because PyTorch's CPU kernels for dilated depthwise convolution are 5-10x slower.
- ``W_g [x; h]`` is split into an input part ``W_g,x x`` and a state part ``U_g h``. The input
  parts of all K particles (``W_g,k x`` and ``W_h,k x``) are one batched matmul over the whole
  window, before the time loop; inside the loop the K state parts ``[U_g,k | U_h,k] h_k`` are
  ONE ``baddbmm`` over weights stacked ``[K, D, 2D]`` per step (no loop over particles). The
  scan is an autograd function with a hand-written backward (:class:`_ParticleScan`): the
  backward is one ``baddbmm`` per step plus one big matmul for the gradient of ``U``, instead
  of autograd's two small matmuls and a dozen bookkeeping kernels per step. The scan keeps
  ``p = (h + 1) / 2`` and uses ``tanh(a) = 2 sigmoid(2a) - 1`` (exact algebra, folded into the
  weights; see :meth:`ParticleLayer.recurrence`), so a step is a ``baddbmm``, a sigmoid and a
  lerp. Under autocast the scan and the convolutions run in float32. Without autograd
  (inference: PPO rollouts, evaluation) on float32 CPU tensors the same recurrence runs in a C
  kernel (:func:`particle_scan_native`, ``backend="auto"``; tested against the PyTorch loop),
  because at batch 1 the loop's ~20 us of dispatch per step dominates the policy's latency.
- The scan and the kernel above run the recurrence of ``message_feedback=False``, where the
  messages use the recurrent states and do not feed back into the recurrence (they are added
  to each particle's state before aggregation). Feeding them back, the default and the
  chapter's form (above), puts K x K attention inside the time loop: training runs the
  PyTorch loop (no hand-written backward), inference a second function of the same C kernel
  (:func:`particle_scan_messages_native`), which computes every step's multi-head attention
  from the states before the step in ``h`` form. The costs of both forms are measured in
  ``docs/architectures.md`` ("Speed of the defaults").
- Gate biases start at ``-(k - 1) ln 2`` so particle k starts with update rate
  ``1 / (1 + 2**(k-1))`` (0.5, 0.33, 0.2, 0.11): coarser particles start slower. This is an
  initialisation choice only; every bias is trained.
- ``explain`` reports ``beta`` and per-particle trends (see :meth:`TimeParticleBackbone.explain`).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.native import address, can_run, load_kernel, native_unavailable

__all__ = [
    "ParticleLayer",
    "TimeParticleBackbone",
    "TimeParticleConfig",
    "causal_conv_bank",
    "particle_conv_spec",
    "particle_scan_messages_native",
    "particle_scan_native",
]


#: Valid values of ``TimeParticleConfig.backend``.
PARTICLE_BACKENDS = ("auto", "native", "torch")


@dataclass
class TimeParticleConfig(BackboneConfig):
    """Configuration of :class:`TimeParticleBackbone`.

    Attributes:
        d_model: width of the input projection, of each particle's state and of the output.
        n_particles: K, the number of scales per layer (2..6; 3 or 4 recommended). At least
            2 because each particle's message comes from the others.
        n_layers: stacked particle layers (residual + LayerNorm between them).
        dropout: dropout on each layer's output projection (training only).
        backend: the particle recurrence without autograd (inference): ``"auto"`` (the
            compiled kernel of :mod:`tradezoo.policies.native` for float32 CPU tensors when
            it builds, else PyTorch), ``"native"`` (the kernel; an error where it cannot run,
            including when gradients are needed) or ``"torch"``. Training always runs the
            PyTorch recurrence (with ``message_feedback``, the autograd loop of
            :meth:`ParticleLayer.recurrence_with_messages`; without, the scan with its
            hand-written backward); the kernel runs both forms.
        attention_heads: heads of the cross-scale attention (divides ``d_model``; 1 is the
            single-head form, the chapter uses 4).
        message_feedback: the cross-scale messages enter each particle's recurrence (the
            chapter's ``C m_t`` term).
        particle_outputs: a projection ``D^(k)`` per particle before the aggregation.
    """

    d_model: int = 64
    n_particles: int = 3
    n_layers: int = 1
    dropout: float = 0.0
    backend: str = "auto"
    attention_heads: int = 4
    message_feedback: bool = True
    particle_outputs: bool = True

    saved_absent: ClassVar[Mapping[str, Any]] = {
        "attention_heads": 1, "message_feedback": False, "particle_outputs": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.choice("backend", PARTICLE_BACKENDS)
        check.integer("n_particles", 2, 6, rule="in 2..6 (each message needs another "
                      "particle; the kernel 2**k grows fast)")
        check.number("dropout", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.require(self.d_model % self.attention_heads == 0, f"attention_heads must divide "
                      f"d_model={self.d_model}, got {self.attention_heads}")

    def for_device(self, device: torch.device) -> tuple[BackboneConfig, str | None]:
        """``backend="auto"`` (the PyTorch path off the CPU) where a saved ``"native"`` cannot
        run."""
        reason = (native_unavailable("particle_scan", device) if self.backend == "native"
                  else None)
        return self._backend_fallback("backend", reason, device)


def particle_conv_spec(k: int) -> tuple[int, int, int]:
    """``(kernel, dilation, left_padding)`` of particle ``k`` (1-based): ``2**k``, ``2**(k-1)``,
    ``(2**k - 1) * 2**(k-1)``."""
    if k < 1:
        raise ValueError(f"particle index k starts at 1 (dilation 2**(k-1)), got k={k}")
    kernel, dilation = 2**k, 2 ** (k - 1)
    return kernel, dilation, (kernel - 1) * dilation


# ---------------------------------------------------------------------------------------------
# Autograd functions (device-agnostic: plain tensor ops, no custom kernels)
# ---------------------------------------------------------------------------------------------


class _CausalConvBank(torch.autograd.Function):
    """K time-major causal dilated depthwise convolutions; see :func:`causal_conv_bank`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, u: Tensor, bias: Tensor, dilations: tuple[int, ...], *weights: Tensor
    ) -> Tensor:
        length = u.shape[0]
        pads = [(w.shape[0] - 1) * dil for w, dil in zip(weights, dilations, strict=True)]
        max_pad = max(pads)
        padded = F.pad(u, (0, 0, 0, 0, max_pad, 0))  # [L + max_pad, B, D]
        out = u.new_empty((len(weights), *u.shape))  # [K, L, B, D]
        for k, (weight, dil, pad) in enumerate(zip(weights, dilations, pads, strict=True)):
            # tap i reads u[t - (kernel - 1 - i) * dil] = padded[t + max_pad - pad + i * dil]
            start = max_pad - pad
            torch.addcmul(bias[k], padded[start : start + length], weight[0], out=out[k])
            for i in range(1, weight.shape[0]):
                tap = start + i * dil
                out[k].addcmul_(padded[tap : tap + length], weight[i])  # [L, B, D]
        ctx.save_for_backward(padded, *weights)
        ctx.dilations, ctx.pads = dilations, pads  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        padded, *weights = ctx.saved_tensors
        dilations: tuple[int, ...] = ctx.dilations
        pads: list[int] = ctx.pads
        max_pad, length = max(pads), grad_out.shape[1]
        grad_out = grad_out.contiguous()  # [K, L, B, D]
        need_u, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_padded = torch.zeros_like(padded) if need_u else None  # [L + max_pad, B, D]
        grad_ws: list[Tensor | None] = []
        for k, (weight, dil, pad) in enumerate(zip(weights, dilations, pads, strict=True)):
            start, taps = max_pad - pad, []
            for i in range(weight.shape[0]):
                window = slice(start + i * dil, start + i * dil + length)
                if grad_padded is not None:
                    grad_padded[window].addcmul_(grad_out[k], weight[i])
                if ctx.needs_input_grad[3 + k]:
                    taps.append((grad_out[k] * padded[window]).sum((0, 1)))  # [D]
            grad_ws.append(torch.stack(taps) if taps else None)  # [kernel, D]
        grad_u = grad_padded[max_pad:] if grad_padded is not None else None  # [L, B, D]
        grad_b = grad_out.sum((1, 2)) if need_b else None  # [K, D]
        return grad_u, grad_b, None, *grad_ws


def causal_conv_bank(
    u: Tensor, weights: Sequence[Tensor], bias: Tensor, dilations: Sequence[int]
) -> Tensor:
    """K causal dilated depthwise convolutions along time: ``u [L, B, D] -> [K, L, B, D]``.

    Filter k: ``y_k[t] = bias[k] + sum_i weights[k][i] * u[t - (kernel_k - 1 - i) * dil_k]``
    per channel, with zeros before ``t = 0`` (left padding only: ``y_k[t]`` never sees
    ``u[t + 1:]``). Filter k equals ``F.conv1d(F.pad(u_cf, (pad_k, 0)), weights[k].T[:, None],
    bias[k], dilation=dil_k, groups=D)`` in channels-first layout. ``weights[k] [kernel_k, D]``,
    ``bias [K, D]``. Written as fused multiply-adds with a hand-written backward because
    PyTorch's CPU kernels for dilated depthwise convolution are 5-10x slower at these sizes.
    """
    return _CausalConvBank.apply(u, bias, tuple(int(d) for d in dilations), *weights)


class _ParticleScan(torch.autograd.Function):
    """The K particles' gated recurrences in the ``p = (h + 1) / 2`` form.

    Inputs: ``pre [K, L, B, 2D]`` (input terms, already in the scaled form below),
    ``u_rec [K, D, 2D]`` (scaled state weights), ``keep_all`` (return every step or the last).
    Per step: ``s = sigmoid(pre_t + p_{t-1} @ u_rec)``, ``[g | q] = s``,
    ``p_t = lerp(p_{t-1}, q, g)``, ``p_0 = 1/2``. Output time-major ``[T, K, B, D]`` (T = L or 1).

    Backward (hand-written): with ``dp`` the gradient reaching ``p_t``,
    ``dz_t = [dp g (1-g)(q - p_{t-1}) | dp g q (1-q)]`` and
    ``dp_{t-1} = dp (1 - g) + dz_t @ u_rec^T`` (one ``baddbmm`` per step); the gradient of
    ``u_rec`` is one batched matmul over all steps, ``sum_t p_{t-1}^T dz_t``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, pre: Tensor, u_rec: Tensor, keep_all: bool
    ) -> Tensor:
        k_count, length, batch, two_d = pre.shape
        d = two_d // 2
        # Every step writes into contiguous time-major slices of two preallocated buffers (no
        # per-step allocation, no stacking afterwards); the backward reads them back.
        s_buf = pre.new_empty(length, k_count, batch, two_d)  # [L, K, B, 2D] = [g | q]
        p_buf = pre.new_empty(length + 1, k_count, batch, d)  # [L+1, K, B, D]
        p_buf[0] = 0.5  # h_0 = 0
        p_steps = p_buf.unbind(0)  # L+1 x [K, B, D]
        # Views of every step's gate and candidate halves, made once (not one split per step).
        gates, cands = s_buf[..., :d].unbind(0), s_buf[..., d:].unbind(0)  # L x [K, B, D]
        for t, (pre_t, s_t) in enumerate(zip(pre.unbind(1), s_buf.unbind(0), strict=True)):
            torch.baddbmm(pre_t, p_steps[t], u_rec, out=s_t).sigmoid_()  # [K, B, 2D]
            torch.lerp(p_steps[t], cands[t], gates[t], out=p_steps[t + 1])  # [K, B, D]
        ctx.save_for_backward(u_rec)
        ctx.buffers = (s_buf, p_buf)  # type: ignore[attr-defined]
        ctx.keep_all = keep_all  # type: ignore[attr-defined]
        return p_buf[1:] if keep_all else p_buf[length:]  # [T, K, B, D]

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_states: Tensor
    ) -> tuple[Tensor, Tensor | None, None]:
        (u_rec,) = ctx.saved_tensors
        s_buf, p_buf = ctx.buffers
        length, k_count, batch, two_d = s_buf.shape
        d = two_d // 2
        p_prev = p_buf[:length]  # [L, K, B, D]
        # dz = dp * coef with coef = [g (1-g) (q - p_prev) | q (1-q) g], built in place so
        # there are only two big temporaries.
        coef = torch.addcmul(s_buf, s_buf, s_buf, value=-1.0)  # [L, K, B, 2D]: s (1 - s)
        coef[..., :d].mul_(s_buf[..., d:] - p_prev)
        coef[..., d:].mul_(s_buf[..., :d])
        grad_z = torch.empty_like(s_buf)  # [L, K, B, 2D]
        u_rec_t = u_rec.transpose(1, 2)  # [K, 2D, D]
        coef_steps = coef.view(length, k_count, batch, 2, d).unbind(0)  # L x [K, B, 2, D]
        dz_steps = grad_z.view(length, k_count, batch, 2, d).unbind(0)  # L x [K, B, 2, D]
        gate_steps = s_buf[..., :d].unbind(0)  # L x [K, B, D]
        grad_steps = grad_states.unbind(0) if ctx.keep_all else None
        dp = grad_states[-1]  # [K, B, D]: gradient reaching the last state
        for t in range(length - 1, -1, -1):
            if grad_steps is not None and t < length - 1:
                dp = dp + grad_steps[t]  # [K, B, D]
            torch.mul(coef_steps[t], dp.unsqueeze(2), out=dz_steps[t])  # [K, B, 2, D]
            if t == 0:
                break  # p_0 is a constant: no gradient flows further back
            # dp_{t-1} = dp (1 - g) + dz_t @ U'^T
            dp = torch.baddbmm(
                torch.addcmul(dp, dp, gate_steps[t], value=-1.0),
                dz_steps[t].view(k_count, batch, two_d),
                u_rec_t,
            )  # [K, B, D]
        grad_u_rec = None
        if ctx.needs_input_grad[1]:
            # sum over steps and batch of p_{t-1}^T dz_t, as one contraction
            grad_u_rec = torch.einsum("lkbd,lkbe->kde", p_prev, grad_z)  # [K, D, 2D]
        return grad_z.transpose(0, 1), grad_u_rec, None  # [K, L, B, 2D] like pre


# ---------------------------------------------------------------------------------------------
# Native inference kernel (tradezoo/policies/native/particle_scan.c), beside _ParticleScan
# ---------------------------------------------------------------------------------------------


def particle_scan_native(pre: Tensor, u_rec: Tensor, keep_all: bool) -> Tensor:
    """:class:`_ParticleScan`'s forward in C (``tradezoo/policies/native/particle_scan.c``):
    ``pre [K, L, B, 2D]``, ``u_rec [K, D, 2D]`` -> ``[T, K, B, D]`` (``T = L``, or 1 when not
    ``keep_all``). Float32 CPU tensors, no autograd (the policy's batch-1 inference).

    Raises:
        ValueError: shapes that do not fit, a tensor not float32 on CPU, or a gradient needed.
        NativeBuildError: the kernel cannot be built here.
    """
    if pre.dim() != 4 or u_rec.dim() != 3 or u_rec.shape != (
        pre.shape[0], pre.shape[3] // 2, pre.shape[3]
    ) or pre.shape[3] % 2:
        raise ValueError(
            f"particle scan: pre must be [K, L, B, 2D] and u_rec [K, D, 2D], got "
            f"{tuple(pre.shape)} and {tuple(u_rec.shape)}"
        )
    if not can_run(pre, u_rec, forward_only=True):
        raise ValueError(
            "TimeParticle backend 'native' runs float32 CPU tensors without autograd "
            "(inference); use backend='auto' (native for inference, PyTorch for training) or "
            "'torch'"
        )
    lib = load_kernel("particle_scan", required=True)
    return _particle_scan_kernel(lib, pre, u_rec, keep_all)  # type: ignore[arg-type]


def _particle_scan_kernel(lib: ctypes.CDLL, pre: Tensor, u_rec: Tensor, keep_all: bool) -> Tensor:
    """The kernel call of :func:`particle_scan_native`, for inputs already checked (the
    layer builds ``pre`` and ``u_rec`` with matching shapes; dtypes by ``can_run``)."""
    k_count, length, batch, two_d = pre.shape
    pre, u_rec = pre.detach().contiguous(), u_rec.detach().contiguous()
    out = pre.new_empty(length if keep_all else 1, k_count, batch, two_d // 2)  # [T, K, B, D]
    code = lib.tz_particle_scan_forward(
        k_count, length, batch, two_d // 2, address(pre), address(u_rec), address(out),
        int(keep_all),
    )
    if code != 0:
        raise MemoryError("the native particle-scan kernel could not allocate its buffers")
    return out


def particle_scan_messages_native(
    pre: Tensor, u_rec: Tensor, c_msg: Tensor, qkv_weight: Tensor, heads: int, keep_all: bool
) -> Tensor:
    """:meth:`ParticleLayer.recurrence_with_messages` after its input terms, in C
    (``tz_particle_scan_messages_forward`` in ``tradezoo/policies/native/particle_scan.c``):
    ``pre [K, L, B, 2D]`` (``x @ w_in + b_in``), ``u_rec [K, D, 2D]``, ``c_msg [K, D, 2D]``,
    ``qkv_weight [3D, D]`` (the layer's ``qkv.weight``), ``heads`` dividing D ->
    ``h [T, K, B, D]`` (``T = L``, or 1 when not ``keep_all``). Float32 CPU tensors, no
    autograd (the policy's batch-1 inference).

    Raises:
        ValueError: shapes that do not fit, a tensor not float32 on CPU, or a gradient needed.
        NativeBuildError: the kernel cannot be built here.
    """
    if pre.dim() != 4 or pre.shape[3] % 2:
        raise ValueError(f"particle scan with messages: pre must be [K, L, B, 2D], got "
                         f"{tuple(pre.shape)}")
    k_count, d = pre.shape[0], pre.shape[3] // 2
    if (u_rec.shape != (k_count, d, 2 * d) or c_msg.shape != (k_count, d, 2 * d)
            or qkv_weight.shape != (3 * d, d)):
        raise ValueError(
            f"particle scan with messages: with pre [K, L, B, 2D] = {tuple(pre.shape)}, u_rec "
            f"and c_msg must be [K, D, 2D] and qkv_weight [3D, D], got {tuple(u_rec.shape)}, "
            f"{tuple(c_msg.shape)} and {tuple(qkv_weight.shape)}"
        )
    if heads < 1 or d % heads:
        raise ValueError(f"particle scan with messages: heads must be >= 1 and divide D={d}, "
                         f"got {heads}")
    if not can_run(pre, u_rec, c_msg, qkv_weight, forward_only=True):
        raise ValueError(
            "TimeParticle backend 'native' runs float32 CPU tensors without autograd "
            "(inference); use backend='auto' (native for inference, PyTorch for training) or "
            "'torch'"
        )
    lib = load_kernel("particle_scan", required=True)
    return _particle_messages_kernel(  # type: ignore[arg-type]
        lib, pre, u_rec, c_msg, qkv_weight, heads, keep_all)


def _particle_messages_kernel(
    lib: ctypes.CDLL, pre: Tensor, u_rec: Tensor, c_msg: Tensor, qkv_weight: Tensor, heads: int,
    keep_all: bool,
) -> Tensor:
    """The kernel call of :func:`particle_scan_messages_native`, for inputs already checked
    (the layer builds them with matching shapes; dtypes by ``can_run``)."""
    k_count, length, batch, two_d = pre.shape
    pre, u_rec, c_msg = (t.detach().contiguous() for t in (pre, u_rec, c_msg))
    w_qkv = qkv_weight.detach().t().contiguous()  # [D, 3D]: row-vector form, h @ w_qkv
    out = pre.new_empty(length if keep_all else 1, k_count, batch, two_d // 2)  # [T, K, B, D]
    code = lib.tz_particle_scan_messages_forward(
        k_count, length, batch, two_d // 2, heads, address(pre), address(u_rec), address(c_msg),
        address(w_qkv), address(out), int(keep_all),
    )
    if code != 0:
        raise MemoryError("the native particle-scan kernel could not allocate its buffers")
    return out


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


def _full(t: Tensor) -> Tensor:
    """``t`` in float32 if it is float16/bfloat16 (autocast), else unchanged (float32/64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class ParticleLayer(nn.Module):
    """One layer of K particles: ``u [B, L, D] -> [B, L, D]`` (see the module docstring).

    Parameters (the weights of the equations, stacked over particles for the batched recurrence):
        ``conv_weight[k-1] [2**k, D]``, ``conv_bias [K, D]``: particle k's depthwise causal
        dilated convolution (kernel ``2**k``, dilation ``2**(k-1)``).
        ``w_in [K, D, 2D]`` = ``[W_g,x | W_h,x]`` (the input halves of the gate weights),
        ``u_rec [K, D, 2D]`` = ``[U_g | U_h]`` (the state halves; ``U_g`` is W_g's ``h`` part),
        ``b_in [K, 2D]`` = ``[b_g | b_h]``. Row-vector convention: ``x @ w_in[k]``.
        ``qkv``, ``w_beta``, ``w_out``, ``norm``: messages, aggregation, output.
        ``c_msg [K, D, 2D]`` = ``[C_g | C_h]`` (``message_feedback`` only): the messages'
        weights in the recurrence. ``d_out [K, D, D]``, ``b_out [K, D]`` (``particle_outputs``
        only): the per-particle output projections ``D^(k)``.
    """

    def __init__(
        self,
        d_model: int,
        n_particles: int,
        dropout: float,
        backend: str = "auto",
        *,
        attention_heads: int = 1,
        message_feedback: bool = False,
        particle_outputs: bool = False,
    ) -> None:
        super().__init__()
        if backend not in PARTICLE_BACKENDS:
            raise ValueError(f"backend must be one of {list(PARTICLE_BACKENDS)}, got {backend!r}")
        if attention_heads < 1 or d_model % attention_heads:
            raise ValueError(
                f"attention_heads must be >= 1 and divide d_model={d_model}, got "
                f"{attention_heads}"
            )
        self.backend = backend
        self.attention_heads = int(attention_heads)
        self.message_feedback = bool(message_feedback)
        d, k_count = d_model, n_particles
        self.d_model, self.n_particles = d, k_count
        self.dilations: list[int] = []
        conv_weights = []
        for k in range(1, k_count + 1):
            kernel, dilation, _ = particle_conv_spec(k)
            self.dilations.append(dilation)
            # Same scale as nn.Conv1d's default init with groups=D (fan_in = kernel).
            weight = torch.empty(kernel, d).uniform_(-1.0, 1.0) / math.sqrt(kernel)
            conv_weights.append(nn.Parameter(weight))
        self.conv_weight = nn.ParameterList(conv_weights)
        self.conv_bias = nn.Parameter(torch.zeros(k_count, d))
        bound = 1.0 / math.sqrt(d)  # nn.GRU's default init range
        self.w_in = nn.Parameter(torch.empty(k_count, d, 2 * d).uniform_(-bound, bound))
        self.u_rec = nn.Parameter(torch.empty(k_count, d, 2 * d).uniform_(-bound, bound))
        b_in = torch.empty(k_count, 2 * d).uniform_(-bound, bound)
        for k in range(k_count):
            b_in[k, :d] = -k * math.log(2.0)  # particle k+1 starts with gate 1/(1 + 2**k)
        self.b_in = nn.Parameter(b_in)
        # c = [1]*D + [2]*D of the sigmoid-only reformulation (see recurrence); not state.
        col_scale = torch.ones(2 * d)
        col_scale[d:] = 2.0
        self.register_buffer("col_scale", col_scale, persistent=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.w_beta = nn.Linear(k_count * d, k_count)
        self.w_out = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        # Option parameters come after the others, so the layer without them draws the same
        # initial weights as before the options existed.
        self.c_msg: nn.Parameter | None = None
        if message_feedback:
            self.c_msg = nn.Parameter(torch.empty(k_count, d, 2 * d).uniform_(-bound, bound))
        self.d_out: nn.Parameter | None = None
        self.b_out: nn.Parameter | None = None
        if particle_outputs:
            self.d_out = nn.Parameter(torch.empty(k_count, d, d).uniform_(-bound, bound))
            self.b_out = nn.Parameter(torch.zeros(k_count, d))

    def conv_features(self, u_tm: Tensor) -> Tensor:
        """Causal dilated convolutions of all particles: time-major ``u [L, B, D]`` ->
        ``x [K, L, B, D]``."""
        # Under autocast (bf16 training) the hand-written functions run in float32: their
        # out= buffers need one dtype, and a long recurrence should not accumulate in bf16.
        if torch.is_autocast_enabled(u_tm.device.type):
            with torch.autocast(u_tm.device.type, enabled=False):
                return causal_conv_bank(
                    _full(u_tm), [_full(w) for w in self.conv_weight], _full(self.conv_bias),
                    self.dilations,
                )
        return causal_conv_bank(u_tm, list(self.conv_weight), self.conv_bias, self.dilations)

    def recurrence(self, x: Tensor, keep_all: bool = True) -> Tensor:
        """Gated state recurrence of all K particles: ``x [K, L, B, D] -> h [T, K, B, D]``
        (``T = L``, or ``T = 1``: the final state only, when not ``keep_all``).

        Exact reformulation for speed: with ``p = (h + 1) / 2`` and
        ``tanh(a) = 2 sigmoid(2a) - 1``, ``h = g h~ + (1 - g) h`` becomes
        ``p = lerp(p, sigmoid(2 a_h), g)``, so one sigmoid over ``[K, B, 2D]`` gives both the
        gate and the candidate (tanh is about 3x slower than sigmoid on CPU) and a step is
        three kernels: one ``baddbmm`` for all K particles' state terms, a sigmoid and a lerp.
        The change of variable is folded into the weights once per call:
        ``W' = W c``, ``U' = 2 U c``, ``b' = (b - 1^T U) c`` with ``c = [1]*D + [2]*D``.
        """
        if self.message_feedback:
            return self.recurrence_with_messages(x, keep_all)
        k_count, length, batch, d = x.shape
        col_scale = self.col_scale  # [2D]
        w_in = self.w_in * col_scale  # [K, D, 2D]
        u_rec = self.u_rec * (2.0 * col_scale)  # [K, D, 2D]
        b_in = (self.b_in - self.u_rec.sum(1)) * col_scale  # [K, 2D]
        pre = torch.baddbmm(
            b_in.unsqueeze(1), x.reshape(k_count, length * batch, d), w_in
        )  # [K, L*B, 2D]
        pre = pre.view(k_count, length, batch, 2 * d)  # [K, L, B, 2D]
        lib = None
        if self.backend == "auto" and can_run(pre, u_rec, forward_only=True):
            lib = load_kernel("particle_scan")  # None where it cannot be built
        if self.backend == "native":
            p = particle_scan_native(pre, u_rec, keep_all)  # [T, K, B, D]
        elif lib is not None:  # inference on CPU (checked once, above)
            p = _particle_scan_kernel(lib, pre, u_rec, keep_all)  # [T, K, B, D]
        elif torch.is_autocast_enabled(x.device.type):  # float32 scan, see conv_features
            with torch.autocast(x.device.type, enabled=False):
                p = _ParticleScan.apply(_full(pre), _full(u_rec), keep_all)
        else:
            p = _ParticleScan.apply(pre, u_rec, keep_all)
        return 2.0 * p - 1.0  # [T, K, B, D]

    def recurrence_with_messages(self, x: Tensor, keep_all: bool = True) -> Tensor:
        """The recurrence with the messages fed back (``message_feedback``; module docstring):
        ``x [K, L, B, D] -> h [T, K, B, D]`` (``T = L``, or 1 when not ``keep_all``).

        With gradients: a plain autograd loop in ``h`` form (no :class:`_ParticleScan`: the
        attention over the K particles runs inside every step). Without (inference) on float32
        CPU tensors, the same loop in C (:func:`particle_scan_messages_native`) under
        ``backend="auto"`` or ``"native"``. Float32 under autocast.
        """
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.recurrence_with_messages(_full(x), keep_all)
        assert self.c_msg is not None
        k_count, length, batch, d = x.shape
        pre = torch.baddbmm(
            self.b_in.unsqueeze(1), x.reshape(k_count, length * batch, d), self.w_in
        ).view(k_count, length, batch, 2 * d)  # [K, L, B, 2D] input terms
        kernel_args = (pre, self.u_rec, self.c_msg, self.qkv.weight)
        if self.backend == "native":
            return particle_scan_messages_native(*kernel_args, self.attention_heads, keep_all)
        if self.backend == "auto" and can_run(*kernel_args, forward_only=True):
            lib = load_kernel("particle_scan")  # None where it cannot be built
            if lib is not None:  # inference on CPU
                return _particle_messages_kernel(lib, *kernel_args, self.attention_heads,
                                                 keep_all)  # [T, K, B, D]
        h = x.new_zeros(k_count, batch, d)  # [K, B, D] h_0 = 0
        states: list[Tensor] = []
        for pre_t in pre.unbind(1):  # [K, B, 2D]
            messages = self.messages(h.transpose(0, 1))[0].transpose(0, 1)  # [K, B, D]
            z = torch.baddbmm(torch.baddbmm(pre_t, h, self.u_rec), messages, self.c_msg)
            gate, candidate = torch.sigmoid(z[..., :d]), torch.tanh(z[..., d:])  # [K, B, D]
            h = torch.lerp(h, candidate, gate)  # [K, B, D]
            if keep_all:
                states.append(h)
        return torch.stack(states) if keep_all else h.unsqueeze(0)  # [T, K, B, D]

    def messages(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-scale messages: ``h [..., K, D]`` -> ``(m [..., K, D], alpha [..., H, K, K])``
        with ``H = attention_heads`` (each row of ``alpha`` sums to 1, zero diagonal)."""
        *lead, k_count, d = h.shape
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # 3 x [..., K, D]
        self_mask = torch.eye(k_count, dtype=torch.bool, device=h.device)  # [K, K]
        if self.attention_heads == 1:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # [..., K, K]
            alpha = scores.masked_fill(self_mask, float("-inf")).softmax(-1)  # [..., K, K]
            return alpha @ v, alpha.unsqueeze(-3)  # alpha_kk = 0, so m_k excludes h_k
        heads, width = self.attention_heads, d // self.attention_heads
        q, k, v = (t.reshape(*lead, k_count, heads, width).transpose(-2, -3) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width)  # [..., H, K, K]
        alpha = scores.masked_fill(self_mask, float("-inf")).softmax(-1)  # [..., H, K, K]
        out = (alpha @ v).transpose(-2, -3).reshape(*lead, k_count, d)  # [..., K, D]
        return out, alpha

    def mix(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Messages and aggregation at each step: ``h [B, T, K, D]`` ->
        ``(a [B, T, D], alpha [B, T, K, K], beta [B, T, K])``; ``alpha`` is averaged over the
        heads (:meth:`messages` gives each head's)."""
        batch, steps, k_count, d = h.shape
        messages, alpha_heads = self.messages(h)  # [B, T, K, D], [B, T, H, K, K]
        beta = self.w_beta(h.reshape(batch, steps, k_count * d)).softmax(-1)  # [B, T, K]
        particles = h + messages  # [B, T, K, D]
        if self.d_out is not None and self.b_out is not None:  # D^(k) per particle
            particles = torch.einsum("btkd,kde->btke", particles, self.d_out) + self.b_out
        agg = (beta.unsqueeze(-1) * particles).sum(2)  # [B, T, D]
        return agg, alpha_heads.mean(2), beta

    def forward(self, u: Tensor, last_only: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``u [B, L, D]`` -> ``(out [B, T, D], h [B, T, K, D], alpha [B, T, K, K],
        beta [B, T, K])`` with ``T = 1`` (the last position) when ``last_only`` else ``L``."""
        x = self.conv_features(u.transpose(0, 1))  # [K, L, B, D]
        h = self.recurrence(x, keep_all=not last_only)  # [T, K, B, D]
        if last_only:
            u = u[:, -1:]  # [B, 1, D]
        h = h.permute(2, 0, 1, 3)  # [B, T, K, D]
        agg, alpha, beta = self.mix(h)
        out = self.norm(u + self.dropout(self.w_out(agg)))  # [B, T, D]
        return out, h, alpha, beta


class TimeParticleBackbone(Backbone):
    """TimeParticle-inspired backbone ``x [B, L, F] -> [B, d_model]`` (``dt`` is ignored).

    Any ``L >= 1`` works (the convolutions pad on the left). See the module docstring for the
    equations and the design decisions. The scan's backward is
    hand-written, so double backward (e.g. gradient penalties) is not supported.
    """

    name: ClassVar[str] = "timeparticle"
    config_cls: ClassVar[type[BackboneConfig]] = TimeParticleConfig
    emits_sequence: ClassVar[bool] = True
    uses_dt: ClassVar[bool] = False

    def __init__(self, n_features: int, config: TimeParticleConfig) -> None:
        super().__init__(n_features, config)
        d = config.d_model
        self.input_proj = nn.Linear(self.n_features, d)
        self.layers = nn.ModuleList(
            ParticleLayer(
                d, config.n_particles, config.dropout, config.backend,
                attention_heads=config.attention_heads,
                message_feedback=config.message_feedback,
                particle_outputs=config.particle_outputs,
            )
            for _ in range(config.n_layers)
        )

    def _run(
        self, x: Tensor, dt: Tensor | None, last_only: bool
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        self.check_input(x, dt)
        u = self.input_proj(x)  # [B, L, D]
        details: list[tuple[Tensor, Tensor, Tensor]] = []
        n_layers = len(self.layers)
        for i, layer in enumerate(self.layers):
            u, h, alpha, beta = layer(u, last_only=last_only and i == n_layers - 1)
            details.append((h, alpha, beta))
        return u, details

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, d_model]``: the last position of :meth:`forward_sequence`
        (the last layer's messages and aggregation are computed at that position only)."""
        out, _ = self._run(x, dt, last_only=True)
        return out[:, -1]  # [B, D]

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, L, d_model]``; causal: position i uses ``x[:, :i+1]`` only."""
        out, _ = self._run(x, dt, last_only=False)
        return out

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Diagnostics for ``x [B, L, F]`` (detached; K = n_particles):

        - ``beta [B, L, K]``: the last layer's aggregation weights (each row sums to 1);
          ``beta_layers [n_layers, B, L, K]``: every layer's.
        - ``alpha [B, L, K, K]``: the last layer's message weights (zero diagonal, rows sum to
          1), averaged over the heads; ``alpha_heads [B, L, H, K, K]``: per head.
        - ``trend [B, L, K]``: the multiscale trend analysis. Particle k's trend at
          step t is the channel mean of its last-layer state, ``mean_c h_k,t[c]``, which lies
          in (-1, 1) (each state is a convex combination of tanh outputs, starting at 0).
          Coarser particles (wider receptive field, slower initial gates) give smoother curves.
        - ``particle_norm [B, L, K]``: ``||h_k,t||_2 / sqrt(D)``, how active particle k is.
        """
        _, details = self._run(x, dt, last_only=False)
        h, alpha, beta = details[-1]  # [B, L, K, D], [B, L, K, K], [B, L, K]
        return {
            "beta": beta,
            "beta_layers": torch.stack([b for _, _, b in details], 0),
            "alpha": alpha,
            "alpha_heads": self.layers[-1].messages(h)[1],  # [B, L, H, K, K]
            "trend": h.mean(-1),
            "particle_norm": h.norm(dim=-1) / math.sqrt(h.shape[-1]),
        }
