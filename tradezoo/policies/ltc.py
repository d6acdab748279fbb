"""Liquid time-constant network (``ltc``): Hasani et al. 2021, written here.

Reference: R. Hasani, M. Lechner, A. Amini, D. Rus, R. Grosu, "Liquid Time-constant Networks",
AAAI 2021 (arXiv 2006.04439), with the parametrisation and fused solver of
``ncps.torch.LTCCell`` 1.0.1 (``implicit_param_constraints=True``), which this module matches
for batch 1 / uniform time spans (see ``tests/test_ltc.py``).

The ODE of neuron ``j`` (potential ``v_j``; presynaptic neurons ``i``, inputs ``x_i``)::

    cm_j dv_j/dt = gleak_j (vleak_j - v_j) + sum_i W_ij s_ij(v_i) (erev_ij - v_j)
                                          + sum_i Ws_ij ss_ij(x_i) (erevs_ij - v_j)
    s_ij(v)  = sigmoid(sigma_ij (v - mu_ij)),   ss_ij(x) = sigmoid(sigmas_ij (x - mus_ij))

i.e. ``dv/dt = -(1/tau + f(v, x)) v + f(v, x) A`` with ``1/tau = gleak / cm``, ``f = sum W s /
cm`` and the reversal potentials ``erev`` playing ``A``. Positivity of ``W = softplus(w_raw) *
mask``, ``Ws = softplus(sensory_w_raw) * sensory_mask``, ``cm = softplus(cm_raw)`` and
``gleak = softplus(gleak_raw)`` holds by construction (no clipping step to remember); the
initial effective values are drawn in ncps's ranges (``w, Ws, gleak`` in [0.001, 1], ``cm`` in
[0.4, 0.6], ``sigma`` in [3, 8], ``mu`` in [0.3, 0.8], ``vleak`` in [-0.2, 0.2]) and the raw
parameters set by the inverse softplus. ``erev`` starts at the wiring's polarity (+-1).

Solver: the fused semi-implicit Euler step, ``ode_unfolds`` times per bar with step
``dt_t / ode_unfolds`` (``dt`` per sample, ``[B, L]``, divided by ``time_unit``)::

    cm_t = cm / (dt_t / ode_unfolds)                           # [B, H] per sample
    v <- (cm_t v + gleak vleak + sum_i W s (v) erev + num_s) / (cm_t + gleak + sum_i W s(v)
                                                             + den_s + epsilon)

where ``num_s = sum_i Ws ss(x) erevs`` and ``den_s = sum_i Ws ss(x)`` depend on the inputs only
and are computed for all steps at once, outside the time loop. Inputs pass an affine map
``x * input_w + input_b`` first; the output is the motor neurons' potential through an affine
map ``v[:, :motor] * output_w + output_b`` and, for NCP wiring, a Linear to ``d_model``.

Memory and speed: ncps materialises ``[B, H, H]`` sigmoid tensors per unfold and autograd keeps
them all: O(L x unfolds x B x H^2) (8.5 GB at B=64, L=256, H=64). Here the whole recurrence is
one ``torch.autograd.Function`` whose backward is written by hand: the forward keeps only the
potentials ``v`` entering each unfold and the denominators (``[L, unfolds, B, H]``) and the
backward recomputes each unfold's sigmoids from them.

Two backends run that recurrence (``LTCConfig.backend``):

- ``"torch"``, the reference: :class:`_LTCRecurrence` (``[B, H, H]`` tensor ops per unfold,
  parameter gradients accumulated elementwise and reduced over the batch once at the end) and,
  under ``torch.no_grad``, :func:`_run_inference` (the two synaptic sums as one product and one
  reduction into preallocated buffers, tested equal to the autograd path to 1e-6). Runs on any
  device and dtype. Batch-1 latency is bounded by ``L x ode_unfolds`` sequential updates of ~7
  small ops each.
- ``"native"``: the same forward and adjoint in C (``tradezoo/policies/native/ltc.c``, built on
  first use, see :mod:`tradezoo.policies.native`), for float32 CPU tensors:
  :class:`_LTCRecurrenceNative` and :class:`_SensorySynapsesNative`. One sample's whole window
  runs in one loop nest with each sigmoid fused into both synaptic sums, so the ``[H, H]``
  working set stays in cache, and the sensory gates ``[B, L, F, H]`` are never materialised.
  Saved for backward: the same ``v`` and denominators (``[B, L, unfolds, H]``) and ``x``.
  Tested against the reference (outputs and every gradient) in ``tests/test_ltc_native.py``.
- ``"auto"`` (default): native for float32 CPU tensors when the kernel builds, else torch
  (also under ``torch.jit.trace``, which cannot see the C call).

Effective time constant (:meth:`LTCBackbone.explain`, :meth:`LTCBackbone.
effective_time_constants`): ``tau_j = cm_j / (gleak_j + sum_i W_ij s_ij(v) + den_s_j)``, the
time constant of the linearised ODE at the state reached after each bar, ``[B, L, H]``, in units
of ``dt / time_unit``.

Differences from ncps 1.0.1 (``ncps.torch.LTC``): per-sample time spans work (ncps computes
``cm / (ts / unfolds)`` with ``ts`` of shape ``[B]`` against ``cm`` ``[H]``, broadcasting the
batch against the units: wrong when ``B == H``, an error otherwise); initial effective values
are in the ranges above (ncps with implicit constraints draws the RAW values in those ranges, so
its effective ``w`` starts in [0.69, 1.31]); a weight copied from ncps gives the same function.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.cfc import check_dt
from tradezoo.policies.native import (
    address,
    batch_chunks,
    can_run,
    load_kernel,
    native_unavailable,
    run_chunks,
)
from tradezoo.policies.wiring import AutoNCP, FullyConnected, Wiring

__all__ = ["LTCBackbone", "LTCCell", "LTCConfig"]

#: Valid values of ``LTCConfig.backend``.
LTC_BACKENDS = ("auto", "native", "torch")

_INIT_RANGES: dict[str, tuple[float, float]] = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}


def _inverse_softplus(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` (``y > 0``)."""
    return y + torch.log(-torch.expm1(-y))


@dataclass
class LTCConfig(BackboneConfig):
    """Configuration of :class:`LTCBackbone`.

    Attributes:
        d_model: output width and number of LTC neurons ``H``.
        ode_unfolds: semi-implicit Euler steps per bar.
        wiring: ``"ncp"`` (default, the chapter's: :class:`AutoNCP`, sensory -> inter ->
            command -> motor) or ``None`` (:class:`FullyConnected`).
        ncp_output_size: motor neurons of the NCP (``None`` = ``max(1, d_model // 4)``).
        sparsity_level: NCP sparsity in ``[0, 1)`` (0.5, the chapter's).
        seed: seed of the wiring draws (parameters follow torch's global RNG).
        epsilon: added to the solver's denominator.
        time_unit: ``dt`` is divided by this, seconds: one unit of elapsed time. ``None``
            (default) takes ``dt`` as given; the trainers, the backtests and the scripts fill in
            the data's bar interval (:func:`~tradezoo.policies.registry.with_time_unit`), so a
            regular bar counts 1 and a gap its true multiple.
        use_dt: ``False`` ignores ``dt`` (every bar counts as one unit, as with ``dt=None``):
            the "no elapsed time" ablation of the same model.
        backend: ``"auto"`` (the compiled kernel of :mod:`tradezoo.policies.native` for CPU
            float32 tensors when it builds, else PyTorch), ``"native"`` (the kernel; an error
            where it cannot run) or ``"torch"`` (the PyTorch reference). Same results to
            float32 rounding (``tests/test_ltc_native.py``).
    """

    d_model: int = 64
    ode_unfolds: int = 6
    wiring: str | None = "ncp"
    ncp_output_size: int | None = None
    sparsity_level: float = 0.5
    seed: int = 1111
    epsilon: float = 1e-8
    time_unit: float | None = None
    backend: str = "auto"
    use_dt: bool = True
    #: Saved before ``use_dt`` existed: a model that never received elapsed time.
    saved_absent: ClassVar[Mapping[str, Any]] = {"use_dt": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.choice("backend", LTC_BACKENDS)
        check.choice("wiring", (None, "ncp"), rule="None or 'ncp'")
        check.number("sparsity_level", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.require(self.wiring != "ncp" or self.d_model >= 4,
                      f"d_model must be >= 4 with wiring='ncp', got {self.d_model}")
        check.integer("ncp_output_size", 1, self.d_model - 3, optional=True,
                      rule=f"in [1, d_model - 3] = [1, {self.d_model - 3}]")
        check.number("epsilon", 0.0, rule="finite and >= 0")
        check.number("time_unit", 0.0, open_low=True, optional=True,
                     rule="finite and > 0 (seconds), or None")
        check.boolean("use_dt")

    def for_device(self, device: torch.device) -> tuple[BackboneConfig, str | None]:
        """``backend="auto"`` (the PyTorch path off the CPU) where a saved ``"native"`` cannot
        run."""
        reason = native_unavailable("ltc", device) if self.backend == "native" else None
        return self._backend_fallback("backend", reason, device)

    def make_wiring(self, n_features: int) -> Wiring:
        """The built wiring: :class:`FullyConnected` or :class:`AutoNCP`."""
        if self.wiring is None:
            return FullyConnected(self.d_model, seed=self.seed).build(n_features)
        out = self.ncp_output_size or max(1, self.d_model // 4)
        return AutoNCP(self.d_model, out, self.sparsity_level, seed=self.seed).build(n_features)


# -- the recurrence ---------------------------------------------------------------------------


def _unfold(
    v: Tensor, a: Tensor, c: Tensor, e: Tensor, w: Tensor, cmt: Tensor, c1: Tensor, c2: Tensor
) -> tuple[Tensor, Tensor]:
    """One fused solver step. ``v [B, H]``; ``a = sigma``, ``c = -sigma mu``, ``e = W erev``,
    ``w = W`` ``[H, H]`` (source i, target j); ``cmt, c1, c2`` ``[B, H]``. Returns the new
    ``v`` and its denominator ``[B, H]``."""
    s = torch.addcmul(c, a, v.unsqueeze(-1)).sigmoid_()  # [B, H_i, H_j]
    num = (s * e).sum(1)  # [B, H]
    den = (s.mul_(w)).sum(1).add_(c2)  # [B, H]
    return torch.addcmul(c1, cmt, v).add_(num).div_(den), den


def _run(
    c1: Tensor, c2: Tensor, cmt: Tensor, a: Tensor, c: Tensor, e: Tensor, w: Tensor,
    unfolds: int, save: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """All steps: ``c1, c2, cmt`` ``[B, L, H]`` -> potentials after each bar ``[B, L, H]``
    (and, when ``save``, the unfold inputs ``[L, unfolds, B, H]`` and denominators)."""
    B, L, H = c1.shape
    v = c1.new_zeros(B, H)
    outs = []
    v_in = c1.new_empty(L, unfolds, B, H) if save else None
    dens = c1.new_empty(L, unfolds, B, H) if save else None
    for t, (c1_t, c2_t, cmt_t) in enumerate(
        zip(c1.unbind(1), c2.unbind(1), cmt.unbind(1), strict=True)
    ):
        for k in range(unfolds):
            if v_in is not None and dens is not None:
                v_in[t, k] = v
                v, dens[t, k] = _unfold(v, a, c, e, w, cmt_t, c1_t, c2_t)
            else:
                v = _unfold(v, a, c, e, w, cmt_t, c1_t, c2_t)[0]
        outs.append(v)
    return torch.stack(outs, 1), v_in, dens  # [B, L, H]


def _run_inference(
    c1: Tensor, c2: Tensor, cmt: Tensor, a: Tensor, c: Tensor, e: Tensor, w: Tensor,
    unfolds: int, last_only: bool = False,
) -> Tensor:
    """:func:`_run` without autograd, for latency: potentials ``[B, L, H]`` (``[B, H]`` after
    the last bar when ``last_only``). Same update, fewer and cheaper ops per unfold:

    - the two synaptic sums ``sum_i s e`` and ``sum_i s W`` are one broadcast product with
      ``[e; W]`` ``[2, H, H]`` and one reduction, into a preallocated ``[B, 2, H]``;
    - the input-only terms ``c1, c2`` are stacked ``[B, L, 2, H]`` once, so adding them to
      numerator and denominator is one ``add_``;
    - the sigmoid argument ``sigma v + (-sigma mu)`` is one ``addcmul`` into a reused
      ``[B, H, H]`` buffer, and every op writes ``out=`` / in place (no allocation per unfold).
    """
    B, L, H = c1.shape
    ew = torch.stack([e, w])  # [2, H_i, H_j]
    const = torch.stack([c1, c2], 2)  # [B, L, 2, H]
    v = c1.new_zeros(B, H)  # [B, H] potentials, updated in place
    v_col = v.unsqueeze(-1)  # [B, H_i, 1] view of v
    s = c1.new_empty(B, H, H)  # [B, H_i, H_j]
    s_4d = s.unsqueeze(1)  # [B, 1, H_i, H_j]
    prod = c1.new_empty(B, 2, H, H)  # [B, 2, H_i, H_j]
    sums = c1.new_empty(B, 2, H)  # [B, 2, H_j]: numerator, denominator
    num, den = sums[:, 0], sums[:, 1]  # [B, H] views
    out = None if last_only else c1.new_empty(B, L, H)
    steps = range(unfolds)
    for t, (const_t, cmt_t) in enumerate(zip(const.unbind(1), cmt.unbind(1), strict=True)):
        for _ in steps:
            torch.addcmul(c, a, v_col, out=s).sigmoid_()  # [B, H_i, H_j]
            torch.sum(torch.mul(s_4d, ew, out=prod), 2, out=sums)  # [B, 2, H_j]
            sums.add_(const_t)  # + [c1; c2]
            num.addcmul_(cmt_t, v)  # + cm_t v
            torch.div(num, den, out=v)  # [B, H]
        if out is not None:
            out[:, t] = v
    return v if out is None else out


class _LTCRecurrence(torch.autograd.Function):
    """The unfolded LTC recurrence with a hand-written, recomputing backward.

    Saved for backward: the potentials entering each unfold and the denominators,
    ``[L, unfolds, B, H]`` each, instead of ncps's ``[B, H, H]`` tensors per unfold.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, c1: Tensor, c2: Tensor, cmt: Tensor, a: Tensor, c: Tensor, e: Tensor,
        w: Tensor, unfolds: int,
    ) -> Tensor:
        out, v_in, dens = _run(c1, c2, cmt, a, c, e, w, unfolds, save=True)
        ctx.save_for_backward(cmt, a, c, e, w, v_in, dens, out)
        ctx.unfolds = unfolds
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        cmt, a, c, e, w, v_in, dens, out = ctx.saved_tensors
        unfolds: int = ctx.unfolds
        B, L, H = out.shape
        g_c1 = torch.zeros_like(cmt)  # [B, L, H]
        g_c2 = torch.zeros_like(cmt)  # [B, L, H]
        g_cmt = torch.zeros_like(cmt)  # [B, L, H]
        # Elementwise accumulators over steps and unfolds, reduced over the batch at the end.
        acc_e = cmt.new_zeros(B, H, H)  # [B, H_i, H_j]
        acc_w = cmt.new_zeros(B, H, H)
        acc_a = cmt.new_zeros(B, H, H)
        acc_c = cmt.new_zeros(B, H, H)
        g = cmt.new_zeros(B, H)  # dLoss / dv, carried backwards in time
        grads_out = grad_out.unbind(1)
        for t in range(L - 1, -1, -1):
            g = g + grads_out[t]
            cmt_t = cmt[:, t]  # [B, H]
            g_num_t = cmt.new_zeros(B, H)
            g_den_t = cmt.new_zeros(B, H)
            g_cm_t = cmt.new_zeros(B, H)
            for k in range(unfolds - 1, -1, -1):
                v = v_in[t, k]  # [B, H] input of this unfold
                v_next = v_in[t, k + 1] if k + 1 < unfolds else out[:, t]  # [B, H]
                g_n = g / dens[t, k]  # dLoss / dnumerator [B, H]
                g_d = -g_n * v_next  # dLoss / ddenominator [B, H]
                g_num_t += g_n
                g_den_t += g_d
                g_cm_t.addcmul_(g_n, v)
                s = torch.addcmul(c, a, v.unsqueeze(-1)).sigmoid_()  # [B, H_i, H_j]
                g_n3, g_d3 = g_n.unsqueeze(1), g_d.unsqueeze(1)  # [B, 1, H_j]
                acc_e.addcmul_(s, g_n3)
                acc_w.addcmul_(s, g_d3)
                g_s = (e * g_n3).addcmul_(w, g_d3)  # dLoss / ds [B, H_i, H_j]
                g_z = torch.ops.aten.sigmoid_backward(g_s, s)  # [B, H_i, H_j]
                acc_a.addcmul_(g_z, v.unsqueeze(-1))
                acc_c.add_(g_z)
                g = g_n * cmt_t + (g_z.mul_(a)).sum(-1)  # dLoss / dv [B, H]
            g_c1[:, t] = g_num_t
            g_c2[:, t] = g_den_t
            g_cmt[:, t] = g_cm_t
        return (
            g_c1, g_c2, g_cmt, acc_a.sum(0), acc_c.sum(0), acc_e.sum(0), acc_w.sum(0), None
        )


# -- the native fast path ---------------------------------------------------------------------
#
# ``tradezoo/policies/native/ltc.c`` runs the same recurrence as :func:`_run` and the same
# adjoint as :meth:`_LTCRecurrence.backward`, one sample's whole window per loop nest with the
# sigmoid fused into both synaptic sums. It keeps ``v_in`` / ``dens`` as ``[B, L, U, H]`` (per
# sample contiguous). The batch is cut into ``torch.get_num_threads()`` chunks run on threads
# (``batch_chunks``, ``run_chunks``); parameter gradients are summed over the chunks in order.

def _check_buffers(**tensors: Tensor) -> None:
    """The kernels read raw float32 memory: refuse anything else (never read past a buffer)."""
    for name, t in tensors.items():
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(
                f"native LTC kernel: {name} must be a contiguous float32 CPU tensor, got "
                f"{t.dtype} on {t.device}"
            )


def _chunk_grads(chunks: list[tuple[int, int]], like: Tensor, *shape: int) -> dict[
    tuple[int, int], Tensor
]:
    """One zeroed parameter-gradient buffer ``shape`` per chunk (summed after the threads)."""
    buffers = like.new_zeros(len(chunks), *shape)
    return {chunk: buffers[n] for n, chunk in enumerate(chunks)}


_p = address  # short name for the many kernel arguments below


def _native_run(
    lib: ctypes.CDLL, c1: Tensor, c2: Tensor, cmt: Tensor, a: Tensor, c: Tensor, e: Tensor,
    w: Tensor, unfolds: int, last_only: bool, save: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_run` (``save``) / :func:`_run_inference` in the native kernel: potentials
    ``[B, L, H]`` (``[B, H]`` when ``last_only``) and, when ``save``, ``v_in`` and ``dens``
    ``[B, L, U, H]``."""
    c1, c2, cmt, a, c, e, w = (t.detach().contiguous() for t in (c1, c2, cmt, a, c, e, w))
    _check_buffers(c1=c1, c2=c2, cmt=cmt, a=a, c=c, e=e, w=w)
    B, L, H = c1.shape
    if c2.shape != c1.shape or cmt.shape != c1.shape or any(
        t.shape != (H, H) for t in (a, c, e, w)
    ):
        raise ValueError(f"native LTC kernel: inconsistent shapes for H={H}")
    out = c1.new_empty((B, H) if last_only else (B, L, H))
    v_in = c1.new_empty(B, L, unfolds, H) if save else None
    dens = c1.new_empty(B, L, unfolds, H) if save else None

    def run(b0: int, b1: int) -> int:
        return int(lib.tz_ltc_forward(
            b1 - b0, L, unfolds, H, _p(c1, b0), _p(c2, b0), _p(cmt, b0),
            _p(a), _p(c), _p(e), _p(w), _p(out, b0), int(last_only),
            _p(v_in, b0) if v_in is not None else None,
            _p(dens, b0) if dens is not None else None,
        ))

    run_chunks(run, batch_chunks(B))
    return out, v_in, dens


class _LTCRecurrenceNative(torch.autograd.Function):
    """:class:`_LTCRecurrence` with forward and backward in the native kernel."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, lib: ctypes.CDLL, c1: Tensor, c2: Tensor, cmt: Tensor, a: Tensor, c: Tensor,
        e: Tensor, w: Tensor, unfolds: int,
    ) -> Tensor:
        out, v_in, dens = _native_run(lib, c1, c2, cmt, a, c, e, w, unfolds, False, True)
        ctx.save_for_backward(cmt.detach().contiguous(), a, c, e, w, v_in, dens, out)
        ctx.lib, ctx.unfolds = lib, unfolds
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        cmt, a, c, e, w, v_in, dens, out = ctx.saved_tensors
        a, c, e, w = (t.contiguous() for t in (a, c, e, w))
        grad_out = grad_out.contiguous()
        B, L, H = out.shape
        g_c1, g_c2, g_cmt = (torch.empty_like(out) for _ in range(3))  # [B, L, H]
        chunks = batch_chunks(B)
        slots = _chunk_grads(chunks, out, 4, H, H)  # per chunk: a, c, e, w

        def run(b0: int, b1: int) -> int:
            g = slots[(b0, b1)]
            return int(ctx.lib.tz_ltc_backward(
                b1 - b0, L, ctx.unfolds, H, _p(cmt, b0), _p(a), _p(c), _p(e), _p(w),
                _p(v_in, b0), _p(dens, b0), _p(out, b0), _p(grad_out, b0),
                _p(g_c1, b0), _p(g_c2, b0), _p(g_cmt, b0),
                _p(g[0]), _p(g[1]), _p(g[2]), _p(g[3]),
            ))

        run_chunks(run, chunks)
        g_a, g_c, g_e, g_w = torch.stack(list(slots.values())).sum(0).unbind(0)  # [H, H] each
        return None, g_c1, g_c2, g_cmt, g_a, g_c, g_e, g_w, None


class _SensorySynapsesNative(torch.autograd.Function):
    """:meth:`LTCCell.sensory_terms` in the native kernel: ``x [B, L, F]`` (after the input
    map) and ``a, c, e, w`` ``[F, H]`` -> ``num_s, den_s`` ``[B, L, H]``. Saves only ``x``
    (the backward recomputes the ``[B, L, F, H]`` gates per sample and bar)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, lib: ctypes.CDLL, x: Tensor, a: Tensor, c: Tensor, e: Tensor, w: Tensor
    ) -> tuple[Tensor, Tensor]:
        x, a, c, e, w = (t.detach().contiguous() for t in (x, a, c, e, w))
        _check_buffers(x=x, a=a, c=c, e=e, w=w)
        B, L, Fi = x.shape
        H = a.shape[1]
        if any(t.shape != (Fi, H) for t in (a, c, e, w)):
            raise ValueError(f"native LTC kernel: sensory weights must be [{Fi}, {H}]")
        num, den = x.new_empty(B, L, H), x.new_empty(B, L, H)

        def run(b0: int, b1: int) -> int:
            return int(lib.tz_ltc_sensory_forward(
                b1 - b0, L, Fi, H, _p(x, b0), _p(a), _p(c), _p(e), _p(w),
                _p(num, b0), _p(den, b0),
            ))

        run_chunks(run, batch_chunks(B))
        ctx.save_for_backward(x, a, c, e, w)
        ctx.lib = lib
        return num, den

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, g_num: Tensor, g_den: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, a, c, e, w = ctx.saved_tensors
        B, L, Fi = x.shape
        H = a.shape[1]
        g_num, g_den = g_num.contiguous(), g_den.contiguous()
        g_x = torch.empty_like(x)  # [B, L, F]
        chunks = batch_chunks(B)
        slots = _chunk_grads(chunks, x, 4, Fi, H)  # per chunk: a, c, e, w

        def run(b0: int, b1: int) -> int:
            g = slots[(b0, b1)]
            return int(ctx.lib.tz_ltc_sensory_backward(
                b1 - b0, L, Fi, H, _p(x, b0), _p(a), _p(c), _p(e), _p(w),
                _p(g_num, b0), _p(g_den, b0), _p(g_x, b0),
                _p(g[0]), _p(g[1]), _p(g[2]), _p(g[3]),
            ))

        run_chunks(run, chunks)
        g_a, g_c, g_e, g_w = torch.stack(list(slots.values())).sum(0).unbind(0)  # [F, H]
        return None, g_x, g_a, g_c, g_e, g_w


class LTCCell(nn.Module):
    """LTC neurons over a wiring; :meth:`forward` runs a whole window.

    Parameters (``*_raw`` go through softplus; properties without the suffix give the positive
    values): ``gleak_raw, vleak, cm_raw`` ``[H]``; ``w_raw, sigma, mu, erev`` ``[H, H]``;
    ``sensory_w_raw, sensory_sigma, sensory_mu, sensory_erev`` ``[F, H]``; ``input_w,
    input_b`` ``[F]``; ``output_w, output_b`` ``[motor]``. Buffers ``sparsity_mask`` ``[H, H]``
    and ``sensory_sparsity_mask`` ``[F, H]`` (0/1).

    Args:
        input_size: ``F``.
        wiring: a :class:`Wiring` (built here for ``F``).
        ode_unfolds, epsilon, backend: see :class:`LTCConfig`.
    """

    def __init__(
        self, input_size: int, wiring: Wiring, ode_unfolds: int = 6, epsilon: float = 1e-8,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if int(ode_unfolds) < 1:
            raise ValueError(f"ode_unfolds must be >= 1, got {ode_unfolds}")
        if backend not in LTC_BACKENDS:
            raise ValueError(f"backend must be one of {list(LTC_BACKENDS)}, got {backend!r}")
        self.backend = backend
        wiring.build(input_size)
        self.wiring = wiring
        self.input_size = int(input_size)
        self.hidden_size = H = wiring.units
        self.motor_size = wiring.output_dim
        self.ode_unfolds = int(ode_unfolds)
        self.epsilon = float(epsilon)
        Fi = self.input_size

        def uniform(name: str, *shape: int) -> Tensor:
            lo, hi = _INIT_RANGES[name]
            return torch.rand(*shape) * (hi - lo) + lo

        self.gleak_raw = nn.Parameter(_inverse_softplus(uniform("gleak", H)))
        self.vleak = nn.Parameter(uniform("vleak", H))
        self.cm_raw = nn.Parameter(_inverse_softplus(uniform("cm", H)))
        self.sigma = nn.Parameter(uniform("sigma", H, H))
        self.mu = nn.Parameter(uniform("mu", H, H))
        self.w_raw = nn.Parameter(_inverse_softplus(uniform("w", H, H)))
        self.erev = nn.Parameter(torch.from_numpy(wiring.erev_initializer()))
        self.sensory_sigma = nn.Parameter(uniform("sensory_sigma", Fi, H))
        self.sensory_mu = nn.Parameter(uniform("sensory_mu", Fi, H))
        self.sensory_w_raw = nn.Parameter(_inverse_softplus(uniform("sensory_w", Fi, H)))
        self.sensory_erev = nn.Parameter(torch.from_numpy(wiring.sensory_erev_initializer()))
        self.input_w = nn.Parameter(torch.ones(Fi))
        self.input_b = nn.Parameter(torch.zeros(Fi))
        self.output_w = nn.Parameter(torch.ones(self.motor_size))
        self.output_b = nn.Parameter(torch.zeros(self.motor_size))
        self.register_buffer(
            "sparsity_mask", torch.from_numpy(np.abs(wiring.adjacency_matrix).astype(np.float32))
        )
        self.register_buffer(
            "sensory_sparsity_mask",
            torch.from_numpy(np.abs(wiring._require_built()).astype(np.float32)),
        )

    # -- positive parameters -----------------------------------------------------------------

    @property
    def gleak(self) -> Tensor:
        return F.softplus(self.gleak_raw)

    @property
    def cm(self) -> Tensor:
        return F.softplus(self.cm_raw)

    @property
    def w(self) -> Tensor:
        """Synaptic weights ``softplus(w_raw) * mask`` ``[H, H]`` (>= 0)."""
        return F.softplus(self.w_raw) * self.sparsity_mask

    @property
    def sensory_w(self) -> Tensor:
        """Sensory weights ``softplus(sensory_w_raw) * sensory_mask`` ``[F, H]`` (>= 0)."""
        return F.softplus(self.sensory_w_raw) * self.sensory_sparsity_mask

    # -- pieces ------------------------------------------------------------------------------

    def sensory_terms(self, x: Tensor, lib: ctypes.CDLL | None) -> tuple[Tensor, Tensor]:
        """Input-only synapse sums ``num_s, den_s`` ``[B, L, H]`` for all steps at once (in
        the native kernel ``lib`` when given, see :meth:`native_kernel`)."""
        x = x * self.input_w + self.input_b  # [B, L, F]
        weight = self.sensory_w  # [F, H]
        a, c = self.sensory_sigma, -self.sensory_sigma * self.sensory_mu  # [F, H]
        if lib is not None:
            num_s, den_s = _SensorySynapsesNative.apply(
                lib, x, a, c, weight * self.sensory_erev, weight
            )
            return num_s, den_s
        gate = torch.addcmul(c, a, x.unsqueeze(-1)).sigmoid_()  # [B, L, F, H]
        num = (gate * (weight * self.sensory_erev)).sum(2)  # [B, L, H]
        den = (gate * weight).sum(2)  # [B, L, H]
        return num, den

    def _inputs(
        self, x: Tensor, ts: Tensor | float, lib: ctypes.CDLL | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``c1, c2, cm_t`` ``[B, L, H]`` and ``a, c, e, w`` ``[H, H]`` for :func:`_run`
        (the sensory sums through the kernel ``lib`` when given)."""
        if torch.is_grad_enabled() and lib is None:
            # Recompute the [B, L, F, H] sensory gates in backward instead of storing them.
            num_s, den_s = checkpoint(self.sensory_terms, x, None, use_reentrant=False)
        else:
            num_s, den_s = self.sensory_terms(x, lib)
        gleak, cm = self.gleak, self.cm  # [H]
        if isinstance(ts, Tensor):
            cmt = cm * (self.ode_unfolds / ts.unsqueeze(-1))  # [B, L, H]
        else:
            cmt = (cm * (self.ode_unfolds / ts)).expand_as(num_s)  # [B, L, H]
        c1 = num_s + gleak * self.vleak  # [B, L, H]
        c2 = den_s + cmt + (gleak + self.epsilon)  # [B, L, H]
        w = self.w  # [H, H]
        return c1, c2, cmt.contiguous(), self.sigma, -self.sigma * self.mu, w * self.erev, w

    def native_kernel(self, x: Tensor) -> ctypes.CDLL | None:
        """The compiled kernel to run on ``x``, or None for the PyTorch path (``backend``)."""
        if self.backend == "torch":
            return None
        weights = self.sigma
        runnable = can_run(x, weights, forward_only=False)
        if self.backend == "native" and not runnable:
            raise ValueError(
                "LTC backend='native' runs float32 CPU tensors only, outside torch.jit.trace; "
                "got input "
                f"{x.dtype} on {x.device} and weights {weights.dtype} on {weights.device}; use "
                "backend='auto' or 'torch'"
            )
        if not runnable:
            return None
        lib = load_kernel("ltc")
        if lib is None and self.backend == "native":
            load_kernel("ltc", required=True)  # raises, naming the reason
        return lib

    def potentials(self, x: Tensor, ts: Tensor | float, last_only: bool = False) -> Tensor:
        """Neuron potentials after each bar ``[B, L, H]`` (after the last bar ``[B, H]`` when
        ``last_only``); ``ts`` is ``[B, L]`` or a float. Runs the native kernel when
        :meth:`native_kernel` gives one; else :class:`_LTCRecurrence` with autograd and,
        without (``torch.no_grad``), :func:`_run_inference`, the same update with fewer ops."""
        lib = self.native_kernel(x)
        c1, c2, cmt, a, c, e, w = self._inputs(x, ts, lib)
        if lib is not None:
            if torch.is_grad_enabled():
                seq: Tensor = _LTCRecurrenceNative.apply(
                    lib, c1, c2, cmt, a, c, e, w, self.ode_unfolds
                )
                return seq[:, -1] if last_only else seq
            return _native_run(lib, c1, c2, cmt, a, c, e, w, self.ode_unfolds, last_only, False)[0]
        if torch.is_grad_enabled():
            out: Tensor = _LTCRecurrence.apply(c1, c2, cmt, a, c, e, w, self.ode_unfolds)
            return out[:, -1] if last_only else out
        return _run_inference(c1, c2, cmt, a, c, e, w, self.ode_unfolds, last_only)

    def readout(self, v: Tensor) -> Tensor:
        """Motor outputs ``v[..., :motor] * output_w + output_b``."""
        return v[..., : self.motor_size] * self.output_w + self.output_b

    def time_constants(self, x: Tensor, ts: Tensor | float, v: Tensor) -> Tensor:
        """``cm / (gleak + sum_i W s(v) + den_s)`` at the potentials ``v [B, L, H]``."""
        _, den_s = self.sensory_terms(x, self.native_kernel(x))  # [B, L, H]
        s = torch.addcmul(-self.sigma * self.mu, self.sigma, v.unsqueeze(-1)).sigmoid_()
        den = (s * self.w).sum(-2)  # [B, L, H]
        return self.cm / (self.gleak + den + den_s)  # [B, L, H]

    def forward(self, x: Tensor, ts: Tensor | float = 1.0) -> Tensor:
        """``x [B, L, F]`` -> motor outputs after each bar ``[B, L, motor]``."""
        return self.readout(self.potentials(x, ts))


class LTCBackbone(Backbone):
    """LTC over the window: ``x [B, L, F]``, ``dt [B, L] | None`` -> ``[B, d_model]``.

    Fully connected: ``H = d_model`` neurons, output the affine readout of all of them. NCP:
    ``d_model`` neurons, output ``Linear(motor readout)``.
    """

    name: ClassVar[str] = "ltc"
    config_cls: ClassVar[type[BackboneConfig]] = LTCConfig
    emits_sequence: ClassVar[bool] = True
    uses_dt: ClassVar[bool] = True

    def __init__(self, n_features: int, config: LTCConfig) -> None:
        super().__init__(n_features, config)
        self.config: LTCConfig = config
        self.cell = LTCCell(
            self.n_features, config.make_wiring(self.n_features), config.ode_unfolds,
            config.epsilon, config.backend,
        )
        self.project: nn.Module = (
            nn.Identity()
            if self.cell.motor_size == config.d_model
            else nn.Linear(self.cell.motor_size, config.d_model)
        )

    @property
    def wiring(self) -> Wiring:
        return self.cell.wiring

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F]``, ``dt [B, L]`` (None = every bar 1.0) -> ``[B, d_model]``."""
        self.check_input(x, dt)
        ts = check_dt(self.name, dt, self.config.time_unit, self.config.use_dt)
        v = self.cell.potentials(x, ts, last_only=True)  # [B, H]
        return self.project(self.cell.readout(v))  # [B, d_model]

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, L, d_model]``; position ``i`` depends on bars ``<= i`` only."""
        self.check_input(x, dt)
        ts = check_dt(self.name, dt, self.config.time_unit, self.config.use_dt)
        return self.project(self.cell(x, ts))  # [B, L, d_model]

    @torch.no_grad()
    def effective_time_constants(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``tau = cm / (gleak + sum_i W s(v) + den_s)`` per bar and neuron ``[B, L, H]``."""
        self.check_input(x, dt)
        ts = check_dt(self.name, dt, self.config.time_unit, self.config.use_dt)
        v = self.cell.potentials(x, ts)
        return self.cell.time_constants(x, ts, v)

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """``time_constant`` (see :meth:`effective_time_constants`) and ``hidden`` (the
        potentials), both ``[B, L, H]`` in neuron-id order (motor neurons first)."""
        self.check_input(x, dt)
        ts = check_dt(self.name, dt, self.config.time_unit, self.config.use_dt)
        v = self.cell.potentials(x, ts)
        return {"time_constant": self.cell.time_constants(x, ts, v), "hidden": v}
