"""Closed-form continuous-time network (``cfc``): Hasani et al. 2022, written here.

Reference: R. Hasani, M. Lechner, A. Amini, L. Liebenwein, A. Ray, M. Tschaikowski, G. Teschl,
D. Rus, "Closed-form continuous-time neural networks", Nature Machine Intelligence 4 (2022)
992-1003 (arXiv 2106.13898); the formulation matches ``ncps.torch.CfCCell`` 1.0.1 where the two
coincide (see "Differences from ncps" below).

Equations, one step ``t`` with elapsed time ``ts = dt[:, t] / time_unit`` (per sample)::

    z     = backbone([x_t ; h_{t-1}])             # Linear(F + H -> U) + activation, x layers
                                                  # (backbone_layers = 0: z = [x_t ; h_{t-1}])
    ff1   = W_1 z + b_1,  ff2 = W_2 z + b_2,  t_a = W_a z + b_a,  t_b = W_b z + b_b
    mode "default":  g = sigmoid(t_a * ts + t_b)
                     h_t = tanh(ff1) * (1 - g) + g * tanh(ff2)
    mode "no_gate":  h_t = tanh(ff1) + g * tanh(ff2)
    mode "pure":     h_t = -A * exp(-ts * (|w_tau| + |ff1|)) * ff1 + A   (the direct
                     closed-form solution of the LTC ODE; ``A``, ``w_tau`` per unit)
    mode "chapter":  f_tau = softplus(W_tau z + b_tau),  f_A = W_A z + b_A
                     g = sigmoid(-f_tau * (log(ts / tau) + f_A))
                     h_t = g * tanh(ff1) + (1 - g) * A     (``tau > 0``, ``A`` per unit)

``h_0 = 0``. The backbone activation defaults to LeCun's ``1.7159 * tanh(0.666 x)`` (as ncps).

``mode="default"`` (ncps' name), the default, is the published CfC (Hasani et al. 2022); the
``chapter`` mode is the design chapter's CfC gate ``sigmoid(-f_tau (log(dt / tau) + f_A))``
with a learned steady state ``A``. The ablation in ``docs/architectures.md`` finds the
published form better on ``synthetic-cycle`` (the calibration market where elapsed time decides
the trade: after a long gap the chapter's state relaxes to ``A``, so it drops the new bar's
input with the stale memory) and the two within noise on the others, so the published form is
the default and the chapter's an option.
In ``chapter`` mode the gate is the share of the instantaneous response ``tanh(ff1)`` that is
left after ``ts``: it equals ``1 / (1 + (ts / tau)^f_tau e^(f_tau f_A))``, 1 at ``ts -> 0`` and
0 at ``ts -> inf``, so the state relaxes to ``A`` over elapsed time by a power law in ``ts``
(the published gate ``sigmoid(t_a ts + t_b)`` is logistic in ``ts`` instead). What the chapter
gives is the gate and ``A``; the rest follows the published CfC's structure: the heads
read the backbone output ``z`` (so ``f_tau``, ``f_A`` depend on ``x_t`` and ``h_{t-1}``), and
``f_tau`` goes through softplus so the long-time limit is always ``A`` (a negative rate would
make ``A`` the short-time limit instead). ``tau = exp(log_tau)`` and ``A`` are learned per unit
(initialised 1, in units of ``dt / time_unit``, and 0, the initial state).

NCP wiring (``wiring="ncp"``, :class:`~tradezoo.policies.wiring.AutoNCP`): as in
``ncps.torch.WiredCfCCell`` the units are split into layers inter -> command -> motor, each a
backbone-free CfC cell that reads ``[input of the layer ; own previous state]`` where the
layer's input is ``x_t`` (inter), the NEW inter state (command) or the NEW command state
(motor). Every weight matrix of the layer, ``W_1``, ``W_2`` **and the time gates** ``W_a``,
``W_b``, is multiplied by the layer's 0/1 mask: the wiring's synapses from the layer input,
plus the wiring's synapses inside the layer plus the self-connection ``i -> i`` (each neuron
keeps its own memory). The output is the motor neurons' state projected by a Linear to
``d_model``. Without wiring the output is the hidden state itself (``H = d_model``).

Differences from ncps 1.0.1 (``ncps.torch.CfC``), deliberate:

- Per-sample time spans: ncps takes ``ts = timespans[:, t].squeeze()`` (shape ``[B]``) and
  computes ``t_a * ts`` with ``t_a`` ``[B, H]``, so ``ts`` broadcasts along the HIDDEN axis:
  unit ``j`` of every sample gets sample ``j``'s time span when ``B == H`` (silently wrong) and
  it raises when ``B != H`` (``B > 1``). Here ``ts`` is ``[B, 1]``: each sample its own span.
- Wired mode: ncps masks only ``ff1``/``ff2``; its time gates ``time_a``/``time_b`` are dense,
  so the gate of a neuron reads inputs the wiring forbids, and the intra-layer recurrent block
  is dense (all ones). Here every head is masked and the intra-layer block follows the wiring
  (plus the diagonal).
- Backbone dropout follows every backbone layer (ncps adds it only after the 2nd and later).

Inference path: without autograd (``torch.no_grad``, and no active dropout) the scan runs
:meth:`CfCBackbone._scan_inference`, the same equations with less overhead per step (batch-1
policy steps re-encode the whole window): weights prepared once per call, preallocated buffers,
the uniform-``dt`` gate folded into one head, and the wired layers evaluated as a wavefront
(one block matmul per step for all layers). ``tests/test_cfc.py`` checks it against the
autograd path to 1e-6.

Mixed precision: under ``torch.autocast`` the whole scan (both paths, and the NCP readout) runs
in float32 with autocast off, and returns float32 (as the ``timeparticle`` scan does); see
``docs/training.md``, "Mixed precision".

Effective time constants (:meth:`CfCBackbone.explain`): in the gated modes the gate's logit
moves with elapsed time at rate ``t_a``, so ``tau = 1 / |t_a|`` (same unit as ``dt /
time_unit``) is the time over which the interpolation between ``ff1`` and ``ff2`` changes by one
logit unit; ``gate`` is ``g`` itself. In ``pure`` mode ``tau = 1 / (|w_tau| + |ff1|)``, the
liquid time constant of the closed-form solution. Both are ``[B, L, H]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.wiring import AutoNCP, Wiring

__all__ = ["CfCBackbone", "CfCCell", "CfCConfig", "WiredCfCCell", "check_dt"]

_MODES = ("default", "no_gate", "pure", "chapter")
#: Heads of each mode, in the order they are stacked (rows of ``W``, columns of the scan).
_HEAD_NAMES: dict[str, tuple[str, ...]] = {
    "default": ("ff1", "ff2", "time_a", "time_b"),
    "no_gate": ("ff1", "ff2", "time_a", "time_b"),
    "pure": ("ff1",),
    "chapter": ("ff1", "f_tau", "f_A"),
}
#: name -> (activation applied to pre-scaled input, pre-scale, post-scale). LeCun's tanh
#: ``1.7159 tanh(0.666 z)`` is written as tanh with both scales folded into the weights.
_ACTIVATIONS: dict[str, tuple[str, float, float]] = {
    "lecun_tanh": ("tanh", 0.666, 1.7159),
    "tanh": ("tanh", 1.0, 1.0),
    "silu": ("silu", 1.0, 1.0),
    "relu": ("relu", 1.0, 1.0),
    "gelu": ("gelu", 1.0, 1.0),
}


def _activation(name: str, z: Tensor) -> Tensor:
    if name == "tanh":
        return torch.tanh(z)
    if name == "silu":
        return F.silu(z)
    if name == "relu":
        return torch.relu(z)
    return F.gelu(z)


def _activation_(name: str, z: Tensor) -> Tensor:
    """:func:`_activation` in place where torch has it (inference only)."""
    if name == "tanh":
        return z.tanh_()
    if name == "silu":
        return F.silu(z, inplace=True)
    if name == "relu":
        return z.relu_()
    return F.gelu(z)


def _pure_update(
    w_tau_abs: Tensor, A: Tensor, ff1: Tensor, ts: Tensor | float, work: Tensor, out: Tensor
) -> None:
    """``out = A - A exp(-ts (|w_tau| + |ff1|)) ff1`` (inference; ``work`` ``[B, H]`` is
    scratch), the ``pure`` update of :meth:`CfCCell.step` with the same operation order."""
    torch.abs(ff1, out=work).add_(w_tau_abs)  # [B, H] rate
    if isinstance(ts, Tensor):
        work.mul_(ts).neg_()
    else:
        work.mul_(-ts)
    work.exp_().mul_(A)  # [B, H] A * decay
    torch.addcmul(A, work, ff1, value=-1.0, out=out)  # [B, H]


def _log_time(ts: Tensor | float) -> Tensor | float:
    """``log(ts)`` of an elapsed time (float, or a tensor of any shape)."""
    return torch.log(ts) if isinstance(ts, Tensor) else math.log(ts)


def _chapter_update(
    log_tau: Tensor, A: Tensor, ff1: Tensor, f_tau: Tensor, f_A: Tensor, ts: Tensor | float,
    work: Tensor, out: Tensor,
) -> None:
    """``out = lerp(A, tanh(ff1), sigmoid(-softplus(f_tau) (log ts - log_tau + f_A)))``
    (inference; the ``chapter`` update of :meth:`CfCCell.step`; ``ff1``, ``f_tau`` ``[B, H]``
    are overwritten, ``work [B, H]`` is scratch)."""
    torch.sub(f_A, log_tau, out=work).add_(_log_time(ts))  # [B, H] log(ts / tau) + f_A
    work.mul_(F.softplus(f_tau)).neg_().sigmoid_()  # [B, H] gate
    torch.lerp(A.expand_as(work), ff1.tanh_(), work, out=out)  # [B, H]


def _head_updater(
    cells: list[CfCCell], heads: Tensor, n: int, folded: bool
) -> Callable[[Tensor | float, Tensor], None]:
    """Inference head update ``update(ts_t, out)``: the new state ``out [B, n]`` from the heads
    buffer ``heads [B, k n]`` (``ff1; ff2; folded gate logit`` when ``folded``, else ``ff1;
    ff2; t_a; t_b``; ``ff1`` alone in ``pure`` mode; ``ff1; f_tau; f_A`` in ``chapter``
    mode), as :meth:`CfCCell.step`. ``heads`` is overwritten (in-place activations); ``cells``
    all share one mode and give ``w_tau``/``A`` (``pure``) or ``log_tau``/``A`` (``chapter``),
    concatenated in the order of ``out``'s columns."""
    mode = cells[0].mode
    work = heads.new_empty(heads.shape[0], n)  # [B, n] gate / scratch
    if mode == "pure":
        w_tau_abs = torch.cat([cell.w_tau for cell in cells]).abs()  # [n]
        A = torch.cat([cell.A for cell in cells])  # [n]

        def pure(ts_t: Tensor | float, out: Tensor) -> None:
            _pure_update(w_tau_abs, A, heads, ts_t, work, out)

        return pure
    if mode == "chapter":
        log_tau = torch.cat([cell.log_tau for cell in cells])  # [n]
        A = torch.cat([cell.A for cell in cells])  # [n]
        ff1, f_tau, f_A = heads[:, :n], heads[:, n : 2 * n], heads[:, 2 * n :]  # views

        def chapter(ts_t: Tensor | float, out: Tensor) -> None:
            _chapter_update(log_tau, A, ff1, f_tau, f_A, ts_t, work, out)

        return chapter
    ff, ff1, ff2 = heads[:, : 2 * n], heads[:, :n], heads[:, n : 2 * n]  # views
    t_a, t_b = heads[:, 2 * n : 3 * n], heads[:, 3 * n :]  # views [B, n] ([B, 0] if folded)
    gated = mode == "default"

    def gated_update(ts_t: Tensor | float, out: Tensor) -> None:
        ff.tanh_()  # [B, 2n]
        # [B, n]: the folded logit, or t_a ts + t_b
        gate = t_a.sigmoid_() if folded else torch.addcmul(t_b, t_a, ts_t, out=work).sigmoid_()
        if gated:
            torch.lerp(ff1, ff2, gate, out=out)  # [B, n]
        else:
            torch.addcmul(ff1, gate, ff2, out=out)  # [B, n]

    return gated_update


def _block_index(
    cells: list[CfCCell], k: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Gather indices for :meth:`CfCBackbone._block_weights`: ``[F + N, k N]`` (flattened)
    positions in the concatenation of the flattened head weights (layer-major, then head) and of the
    flattened masks, the last position (a zero) where no weight goes."""
    n_in = cells[0].input_size
    widths = [cell.hidden_size for cell in cells]
    offsets = np.cumsum([0, *widths])
    N = int(offsets[-1])
    w_index = np.full((n_in + N, k * N), -1, dtype=np.int64)
    m_index = np.full((n_in + N, k * N), -1, dtype=np.int64)
    w_pos = m_pos = 0
    for layer, cell in enumerate(cells):
        n, lo, width = widths[layer], int(offsets[layer]), cell.input_size + widths[layer]
        # Row of [x ; all states] read by column c of this layer's weight [n, in + n].
        if layer == 0:
            inputs = np.arange(cell.input_size)
        else:
            inputs = n_in + int(offsets[layer - 1]) + np.arange(cell.input_size)
        rows = np.concatenate([inputs, n_in + lo + np.arange(n)])  # [in + n]
        local = np.arange(n)[None, :] * width + np.arange(width)[:, None]  # [in + n, n]
        for head in range(k):
            cols = head * N + lo + np.arange(n)
            w_index[np.ix_(rows, cols)] = w_pos + local
            m_index[np.ix_(rows, cols)] = m_pos + local
            w_pos += n * width
        m_pos += n * width
    w_index[w_index < 0] = w_pos
    m_index[m_index < 0] = m_pos
    return (
        torch.from_numpy(w_index.reshape(-1)).to(device),
        torch.from_numpy(m_index.reshape(-1)).to(device),
    )


def check_dt(name: str, dt: Tensor | None, time_unit: float | None = None,
             use_dt: bool = True) -> Tensor | float:
    """Elapsed time per step in units of ``time_unit``: ``dt / time_unit`` ``[B, L]``, or
    ``1.0`` (one unit per bar: regular bars) when ``dt`` is ``None`` or ``use_dt`` is off.

    ``dt`` must be finite and strictly positive (seconds since the previous bar, or any unit
    consistent with ``time_unit``); the error names ``dt`` and the rule. ``time_unit=None``
    takes ``dt`` in its own unit (divides by 1).
    """
    if dt is None or not use_dt:
        return 1.0
    message = f"{name}: dt must be finite and > 0 (elapsed time per bar)"
    # an asynchronous assert reads nothing back to the host: no device sync per forward on
    # a GPU (there a violation surfaces as a device-side assert at the next sync)
    try:
        torch._assert_async((torch.isfinite(dt) & (dt > 0)).all(), message)
    except RuntimeError:  # the CPU checks at once
        raise ValueError(message) from None
    return dt if time_unit is None else dt / time_unit  # [B, L]


@dataclass
class CfCConfig(BackboneConfig):
    """Configuration of :class:`CfCBackbone`.

    Attributes:
        d_model: output width; also the number of CfC units ``H`` (the state size).
        mode: ``"default"`` (the default, ncps' name for the published CfC's gated
            interpolation), ``"chapter"`` (the design chapter's power-law gate toward a learned
            steady state; see the module docstring), ``"no_gate"`` or ``"pure"``.
        backbone_units: width ``U`` of the backbone MLP (dense mode only).
        backbone_layers: backbone depth; ``None`` = 1 without wiring, 0 with ``wiring="ncp"``
            (which allows no backbone: it would mix what the wiring keeps apart).
        backbone_dropout: dropout after each backbone layer, in ``[0, 1)``.
        backbone_activation: ``lecun_tanh`` | ``tanh`` | ``silu`` | ``relu`` | ``gelu``.
        wiring: ``"ncp"`` (default, the chapter's: :class:`AutoNCP` over the ``d_model``
            units, sensory -> inter -> command -> motor) or ``None`` (fully connected, dense).
        ncp_output_size: motor neurons of the NCP (``None`` = ``max(1, d_model // 4)``).
        sparsity_level: NCP sparsity in ``[0, 1)`` (0.5, the chapter's).
        seed: seed of the wiring draws (parameters follow torch's global RNG).
        time_unit: ``dt`` is divided by this, seconds (e.g. 3600 for hourly bars): one unit of
            elapsed time. ``None`` (default) takes ``dt`` as given; the trainers, the backtests
            and the scripts fill in the data's bar interval
            (:func:`~tradezoo.policies.registry.with_time_unit`), so a regular bar counts 1
            and a gap its true multiple.
        use_dt: ``False`` ignores ``dt`` (every bar counts as one unit, as with ``dt=None``):
            the "no elapsed time" ablation of the same model.
    """

    d_model: int = 64
    mode: str = "default"
    backbone_units: int = 128
    backbone_layers: int | None = None
    backbone_dropout: float = 0.0
    backbone_activation: str = "lecun_tanh"
    wiring: str | None = "ncp"
    ncp_output_size: int | None = None
    sparsity_level: float = 0.5
    seed: int = 22222
    time_unit: float | None = None
    use_dt: bool = True
    #: Saved before ``use_dt`` existed: a model that never received elapsed time.
    saved_absent: ClassVar[Mapping[str, Any]] = {"use_dt": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.choice("mode", _MODES)
        check.choice("backbone_activation", _ACTIVATIONS)
        check.choice("wiring", (None, "ncp"), rule="None or 'ncp'")
        check.integer("backbone_layers", 0, optional=True, rule=">= 0 (or None)")
        check.require(self.wiring != "ncp" or not self.backbone_layers,
                      "backbone_layers must be 0 or None with wiring='ncp' (a backbone would mix "
                      f"the neurons the wiring separates), got {self.backbone_layers}")
        check.number("backbone_dropout", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.number("sparsity_level", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.integer("ncp_output_size", 1, self.d_model - 3, optional=True,
                      rule=f"in [1, d_model - 3] = [1, {self.d_model - 3}]")
        check.require(self.wiring != "ncp" or self.d_model >= 4,
                      f"d_model must be >= 4 with wiring='ncp', got {self.d_model}")
        check.number("time_unit", 0.0, open_low=True, optional=True,
                     rule="finite and > 0 (seconds), or None")
        check.boolean("use_dt")

    @property
    def resolved_backbone_layers(self) -> int:
        if self.backbone_layers is None:
            return 0 if self.wiring == "ncp" else 1
        return self.backbone_layers

    def make_wiring(self, n_features: int) -> Wiring | None:
        """The built :class:`AutoNCP` for ``wiring="ncp"``, else ``None``."""
        if self.wiring is None:
            return None
        out = self.ncp_output_size or max(1, self.d_model // 4)
        return AutoNCP(self.d_model, out, self.sparsity_level, seed=self.seed).build(n_features)


class CfCCell(nn.Module):
    """One CfC cell over ``H`` units (dense, or one masked layer of a wired network).

    Parameter names and shapes follow ``ncps.torch.CfCCell`` (``backbone`` is a ModuleList of
    the Linear layers; ``ff1``, ``ff2``, ``time_a``, ``time_b`` Linear ``[H, cat]``; ``w_tau``,
    ``A`` ``[H]`` in ``pure`` mode), so weights can be copied across. ``chapter`` mode has
    ``ff1``, ``f_tau``, ``f_A`` Linear ``[H, cat]`` and ``log_tau``, ``A`` ``[H]``.

    Args:
        input_size: ``F``, width of the cell's input ``x_t``.
        hidden_size: ``H``.
        mode, backbone_units, backbone_layers, backbone_dropout, backbone_activation: see
            :class:`CfCConfig`.
        sparsity_mask: optional 0/1 array ``[F + H, H]`` (rows = presynaptic ``[x ; h]``,
            columns = units); only with ``backbone_layers = 0``; applied to every head.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_dropout: float = 0.0,
        backbone_activation: str = "lecun_tanh",
        sparsity_mask: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        if backbone_activation not in _ACTIVATIONS:
            raise ValueError(
                f"backbone_activation must be one of {list(_ACTIVATIONS)}, "
                f"got {backbone_activation!r}"
            )
        if sparsity_mask is not None and backbone_layers > 0:
            raise ValueError("sparsity_mask needs backbone_layers=0 (the heads read [x; h])")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.mode = mode
        self.backbone_layers = int(backbone_layers)
        self.activation, self._pre, self._post = _ACTIVATIONS[backbone_activation]
        cat = self.input_size + self.hidden_size
        self.backbone = nn.ModuleList()
        width = cat
        for _ in range(self.backbone_layers):
            self.backbone.append(nn.Linear(width, backbone_units))
            width = backbone_units
        self.dropout = nn.Dropout(backbone_dropout) if backbone_dropout > 0 else None
        self.ff1 = nn.Linear(width, hidden_size)
        if mode == "pure":
            # Xavier on a [1, H] view, as ncps (its init_weights touches every 2-D parameter);
            # w_tau must not start at 0, where d|w_tau|/dw_tau = 0 would freeze it.
            self.w_tau = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, hidden_size))[0])
            self.A = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, hidden_size))[0])
        elif mode == "chapter":
            self.f_tau = nn.Linear(width, hidden_size)
            self.f_A = nn.Linear(width, hidden_size)
            self.log_tau = nn.Parameter(torch.zeros(hidden_size))  # tau = 1 (dt / time_unit)
            self.A = nn.Parameter(torch.zeros(hidden_size))  # steady state starts at h_0 = 0
        else:
            self.ff2 = nn.Linear(width, hidden_size)
            self.time_a = nn.Linear(width, hidden_size)
            self.time_b = nn.Linear(width, hidden_size)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        if sparsity_mask is not None:
            mask = np.abs(np.asarray(sparsity_mask)).astype(np.float32)
            if mask.shape != (cat, hidden_size):
                raise ValueError(
                    f"sparsity_mask must have shape [input + hidden, hidden] = "
                    f"{(cat, hidden_size)}, got {mask.shape}"
                )
            # Buffer [H, F + H] in Linear's [out, in] layout; moves with .to(device).
            self.register_buffer("sparsity_mask", torch.from_numpy(mask.T.copy()))
        else:
            self.sparsity_mask: Tensor | None = None

    # -- weights as used by the scan (masked, activation scales folded) ------------------------

    def _heads(self) -> tuple[Tensor, Tensor]:
        """Stacked head weight ``[k H, width]`` and bias ``[k H]`` (masked), k = 1, 3 or 4."""
        heads = [getattr(self, name) for name in _HEAD_NAMES[self.mode]]
        weight = torch.cat([m.weight for m in heads], 0)  # [kH, width]
        if self.sparsity_mask is not None:
            weight = weight * self.sparsity_mask.repeat(len(heads), 1)  # [kH, F + H]
        bias = torch.cat([m.bias for m in heads], 0)  # [kH]
        return weight, bias

    def stage0(self) -> tuple[Tensor, Tensor, Tensor]:
        """First matmul split into input and recurrent parts: ``W_x [K, F]``, ``W_h [K, H]``,
        ``b [K]`` with ``K = U`` (backbone) or ``k H`` (heads); pre-scaled for the activation."""
        if self.backbone_layers:
            first = self.backbone[0]
            weight, bias = first.weight * self._pre, first.bias * self._pre
        else:
            weight, bias = self._heads()
        return weight[:, : self.input_size], weight[:, self.input_size :], bias

    def head_weights_t(self, ts: float | None) -> tuple[Tensor, Tensor]:
        """Inference form of the heads of a cell without ``sparsity_mask`` (the backbone
        path): ``W^T [width, k H]`` contiguous and ``b [k H]``, rows of ``W`` ordered ``ff1;
        ff2; t_a; t_b`` (``k = 4``), ``ff1`` alone (``pure``, ``k = 1``) or, for a uniform
        elapsed time ``ts`` (float) in the gated modes, ``ff1; ff2; W_b + ts W_a`` (``k =
        3``): the gate logit ``t_a ts + t_b`` is linear in the heads' input, so folding it
        into one head saves an op per step (same function; rounding differs at the float32
        ulp level)."""
        if self.sparsity_mask is not None:
            raise ValueError("head_weights_t: masked cells use CfCBackbone._block_weights")
        if self.mode in ("pure", "chapter"):
            heads = [getattr(self, name) for name in _HEAD_NAMES[self.mode]]
            weight = torch.cat([m.weight for m in heads], 0).t().contiguous()  # [width, kH]
            return weight, torch.cat([m.bias for m in heads])
        heads = [self.ff1, self.ff2]
        if ts is None:
            heads += [self.time_a, self.time_b]
            weights = [m.weight.t() for m in heads]
            biases = [m.bias for m in heads]
        else:
            a, b = self.time_a, self.time_b
            weights = [m.weight.t() for m in heads]
            weights.append(torch.add(b.weight, a.weight, alpha=ts).t())
            biases = [heads[0].bias, heads[1].bias, torch.add(b.bias, a.bias, alpha=ts)]
        return torch.cat(weights, 1), torch.cat(biases)  # [width, kH], [kH]

    def inference_weights(
        self, ts: float | None
    ) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor, float]]]:
        """Backbone weights for :meth:`CfCBackbone._scan_backbone` (dense, ``backbone_layers >=
        1``): ``W_x^T [F, U]`` (a view), ``W_h^T [H, U]`` (contiguous) and ``b [U]`` of the
        first layer (to be scaled by the activation's pre-scale ``alpha`` in ``addmm``), then
        ``(W^T, b, alpha)`` of the later layers and of the heads (:meth:`head_weights_t`): each
        layer is ``addmm(b, u, W^T, alpha=alpha)``, the same as :meth:`later_layers` with the
        scales moved from the weights into ``alpha``."""
        first = self.backbone[0]
        weight = first.weight  # [U, F + H]
        w_x_t = weight[:, : self.input_size].t()  # [F, U]
        w_h_t = weight[:, self.input_size :].t().contiguous()  # [H, U]
        later: list[tuple[Tensor, Tensor, float]] = []
        for layer in list(self.backbone)[1:]:
            w_t = layer.weight.t().contiguous()  # [U, U]
            later.append((w_t, layer.bias * self._pre, self._post * self._pre))
        heads_t, heads_b = self.head_weights_t(ts)
        later.append((heads_t, heads_b, self._post))
        return w_x_t, w_h_t, first.bias, later

    def later_layers(self) -> list[tuple[Tensor, Tensor]]:
        """``(W, b)`` of backbone layers 2.. and of the heads, activation scales folded in."""
        if not self.backbone_layers:
            return []
        out = []
        for layer in list(self.backbone)[1:]:
            out.append((layer.weight * (self._post * self._pre), layer.bias * self._pre))
        weight, bias = self._heads()
        out.append((weight * self._post, bias))
        return out

    def step(
        self,
        z0: Tensor,
        h: Tensor,
        w_h: Tensor,
        later: list[tuple[Tensor, Tensor]],
        ts: Tensor | float,
        collect: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One step from the precomputed input part ``z0 = x_t W_x^T + b`` ``[B, K]``.

        Returns ``(h_t [B, H], tau [B, H] | None, gate [B, H] | None)`` (the last two only
        when ``collect``; see the module docstring for their meaning).
        """
        z = torch.addmm(z0, h, w_h.t())  # [B, K]
        if self.backbone_layers:
            for w, b in later:
                z = _activation(self.activation, z)  # [B, U]
                if self.dropout is not None:
                    z = self.dropout(z)
                z = torch.addmm(b, z, w.t())  # [B, U] or [B, kH]
        H = self.hidden_size
        if self.mode == "pure":
            rate = self.w_tau.abs() + z.abs()  # [B, H]
            decay = torch.exp(-rate * ts)  # [B, H]
            h_new = self.A - self.A * decay * z  # [B, H]
            tau = 1.0 / rate if collect else None
            return h_new, tau, None
        if self.mode == "chapter":
            ff1, f_tau, f_A = z[:, :H], z[:, H : 2 * H], z[:, 2 * H :]  # [B, H] each
            log_time = (f_A - self.log_tau) + _log_time(ts)  # [B, H] log(ts / tau) + f_A
            gate = torch.sigmoid(-F.softplus(f_tau) * log_time)  # [B, H]
            h_new = torch.lerp(self.A.expand_as(gate), torch.tanh(ff1), gate)  # [B, H]
            # Half-life of the instantaneous response: g = 1/2 at ts = tau exp(-f_A).
            tau = torch.exp(self.log_tau - f_A) if collect else None
            return h_new, tau, (gate if collect else None)
        ff = torch.tanh(z[:, : 2 * H])  # [B, 2H]
        t_a, t_b = z[:, 2 * H : 3 * H], z[:, 3 * H :]  # [B, H] each
        if isinstance(ts, Tensor):
            gate = torch.sigmoid(torch.addcmul(t_b, t_a, ts))  # [B, H]
        else:
            gate = torch.sigmoid(torch.add(t_b, t_a, alpha=ts))  # [B, H]
        if self.mode == "no_gate":
            h_new = torch.addcmul(ff[:, :H], gate, ff[:, H:])  # [B, H]
        else:
            h_new = torch.lerp(ff[:, :H], ff[:, H:], gate)  # [B, H]
        tau = 1.0 / t_a.abs() if collect else None
        return h_new, tau, (gate if collect else None)

    def forward(self, x: Tensor, h: Tensor, ts: Tensor | float = 1.0) -> Tensor:
        """Single step: ``x [B, F]``, ``h [B, H]``, ``ts`` ``[B, 1]`` or float -> ``[B, H]``."""
        w_x, w_h, b = self.stage0()
        return self.step(torch.addmm(b, x, w_x.t()), h, w_h, self.later_layers(), ts)[0]


class WiredCfCCell(nn.Module):
    """CfC over a layered wiring (NCP): one backbone-free masked :class:`CfCCell` per layer.

    The state ``[B, units]`` is kept per layer; :meth:`to_neuron_order` puts it back in the
    wiring's neuron-id order (motor first). See the module docstring for the masks.
    """

    def __init__(self, input_size: int, wiring: Wiring, mode: str = "default") -> None:
        super().__init__()
        wiring.build(input_size)
        self.wiring = wiring
        sensory = np.abs(wiring._require_built())
        adjacency = np.abs(wiring.adjacency_matrix)
        self.layer_ids = [wiring.get_neurons_of_layer(i) for i in range(wiring.num_layers)]
        self.layers = nn.ModuleList()
        in_features = int(input_size)
        for index, ids in enumerate(self.layer_ids):
            if index == 0:
                into = sensory[:, ids]  # [F, n]
            else:
                into = adjacency[np.ix_(self.layer_ids[index - 1], ids)]  # [n_prev, n]
            # Intra-layer synapses of the wiring plus i -> i (each neuron's own memory).
            own = np.maximum(adjacency[np.ix_(ids, ids)], np.eye(len(ids), dtype=np.int32))
            mask = np.concatenate([into, own], axis=0)  # [in + n, n]
            self.layers.append(
                CfCCell(in_features, len(ids), mode, backbone_layers=0, sparsity_mask=mask)
            )
            in_features = len(ids)
        order = np.concatenate(self.layer_ids)
        self.register_buffer(
            "neuron_order", torch.from_numpy(np.argsort(order).astype(np.int64)), persistent=False
        )

    @property
    def output_size(self) -> int:
        return len(self.layer_ids[-1])

    def to_neuron_order(self, per_layer: list[Tensor]) -> Tensor:
        """Concatenate per-layer ``[..., n_l]`` tensors into neuron-id order ``[..., units]``."""
        return torch.cat(per_layer, -1).index_select(-1, self.neuron_order)


def _float32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is float16/bfloat16 (autocast), else unchanged (float32/64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _steps(ts: Tensor | float, length: int) -> list[Tensor] | list[float]:
    """Per-step elapsed time: ``[B, 1]`` slices (``unbind``) or the same float ``length`` times."""
    if isinstance(ts, Tensor):
        return list(ts.unsqueeze(-1).unbind(1))  # L x [B, 1]
    return [ts] * length


class CfCBackbone(Backbone):
    """CfC over the window: ``x [B, L, F]``, ``dt [B, L] | None`` -> ``[B, d_model]``.

    Dense: ``H = d_model`` units, output ``h_L``. Wired (``wiring="ncp"``): ``d_model`` units
    in an :class:`AutoNCP`, output ``Linear(motor state)`` ``[B, d_model]``.
    """

    name: ClassVar[str] = "cfc"
    config_cls: ClassVar[type[BackboneConfig]] = CfCConfig
    emits_sequence: ClassVar[bool] = True
    uses_dt: ClassVar[bool] = True

    def __init__(self, n_features: int, config: CfCConfig) -> None:
        super().__init__(n_features, config)
        self.config: CfCConfig = config
        wiring = config.make_wiring(self.n_features)
        self.cell: CfCCell | WiredCfCCell
        if wiring is None:
            self.cell = CfCCell(
                self.n_features,
                config.d_model,
                config.mode,
                config.backbone_units,
                config.resolved_backbone_layers,
                config.backbone_dropout,
                config.backbone_activation,
            )
            self.readout: nn.Module = nn.Identity()
        else:
            self.cell = WiredCfCCell(self.n_features, wiring, config.mode)
            self.readout = nn.Linear(self.cell.output_size, config.d_model)
        # Device -> gather indices of :meth:`_block_weights` (they depend on the wiring only).
        self._block_indices: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @property
    def wiring(self) -> Wiring | None:
        return self.cell.wiring if isinstance(self.cell, WiredCfCCell) else None

    def _scan(
        self, x: Tensor, dt: Tensor | None, *, sequence: bool, collect: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the recurrence; returns outputs ``[B, L, d_model]`` (``sequence``) or
        ``[B, d_model]``, and (``collect``) ``tau``/``gate``/``hidden`` ``[B, L, units]``.
        Float32 under autocast (module docstring, "Mixed precision")."""
        if torch.is_autocast_enabled(x.device.type):
            # The recurrence runs in float32 under autocast: the inference path writes into
            # float32 out= buffers (autocast does not cover out= calls), the gate mixes the
            # heads with float32 elapsed times, and a long recurrence should not round its
            # state to bf16 at every step.
            with torch.autocast(x.device.type, enabled=False):
                return self._scan(
                    _float32(x), None if dt is None else _float32(dt), sequence=sequence,
                    collect=collect,
                )
        ts = check_dt(self.name, dt, self.config.time_unit, self.config.use_dt)
        if not collect and not torch.is_grad_enabled() and not self._dropout_active():
            return self._scan_inference(x, ts, sequence), {}
        B, L, _ = x.shape
        cells = [self.cell] if isinstance(self.cell, CfCCell) else list(self.cell.layers)
        prepared = []
        for cell in cells:
            w_x, w_h, b = cell.stage0()
            prepared.append((w_x, w_h, b, cell.later_layers()))
        # Input-only part of the first stage for all steps at once (one big matmul).
        w_x0, _, b0, _ = prepared[0]
        z0_all = torch.addmm(b0, x.reshape(B * L, -1), w_x0.t()).view(B, L, -1)  # [B, L, K]
        states = [x.new_zeros(B, cell.hidden_size) for cell in cells]
        outs: list[Tensor] = []
        taus: list[list[Tensor]] = [[] for _ in cells]
        gates: list[list[Tensor]] = [[] for _ in cells]
        hiddens: list[list[Tensor]] = [[] for _ in cells]
        for z0, ts_t in zip(z0_all.unbind(1), _steps(ts, L), strict=True):
            below: Tensor | None = None
            for index, (cell, (w_x, w_h, b, later)) in enumerate(
                zip(cells, prepared, strict=True)
            ):
                if index > 0:
                    assert below is not None
                    z0 = torch.addmm(b, below, w_x.t())  # [B, kH]
                h, tau, gate = cell.step(z0, states[index], w_h, later, ts_t, collect)
                states[index] = below = h
                if collect:
                    hiddens[index].append(h)
                    assert tau is not None
                    taus[index].append(tau)
                    if gate is not None:
                        gates[index].append(gate)
            if sequence:
                outs.append(states[-1])
        extras: dict[str, Tensor] = {}
        if collect:
            extras["time_constant"] = self._gather(taus)
            extras["hidden"] = self._gather(hiddens)
            if gates[0]:
                extras["gate"] = self._gather(gates)
        if sequence:
            return self.readout(torch.stack(outs, 1)), extras  # [B, L, d_model]
        return self.readout(states[-1]), extras  # [B, d_model]

    def _dropout_active(self) -> bool:
        return isinstance(self.cell, CfCCell) and self.cell.dropout is not None and self.training

    def _scan_inference(self, x: Tensor, ts: Tensor | float, sequence: bool) -> Tensor:
        """The recurrence of :meth:`_scan` without autograd, for latency (batch-1 policy
        steps): the same equations, tested equal to the autograd path to 1e-6.

        Only the bookkeeping differs: weights are masked, transposed and (uniform ``ts``)
        gate-folded once per call (:meth:`CfCCell.inference_weights`); the input part of the
        first matmul is one matmul over all steps; every step writes into preallocated buffers
        (``out=``, in-place activations) with no per-step attribute lookups.
        """
        uniform = None if isinstance(ts, Tensor) else float(ts)
        if isinstance(self.cell, CfCCell) and self.cell.backbone_layers:
            out = self._scan_backbone(self.cell, x, ts, uniform, sequence)
        else:
            out = self._scan_wavefront(x, ts, uniform, sequence)
        return self.readout(out)  # [B, d_model] or [B, L, d_model]

    @staticmethod
    def _scan_backbone(
        cell: CfCCell, x: Tensor, ts: Tensor | float, uniform: float | None, sequence: bool
    ) -> Tensor:
        """Inference scan of a dense cell with a backbone MLP -> ``[B, H]`` or ``[B, L, H]``.

        Per step: ``addmm`` (recurrent part of backbone layer 1), activation, ``addmm`` per
        later layer, then the head update (``tanh``, gate ``sigmoid``, ``lerp``).
        """
        B, L, n_in = x.shape
        H = cell.hidden_size
        w_x_t, w_h_t, bias, later = cell.inference_weights(uniform)
        pre = cell._pre
        # z0 = pre (x W_x^T + b) for all steps: the input half of layer 1's pre-activation.
        z0_all = torch.addmm(bias, x.reshape(B * L, n_in), w_x_t, beta=pre, alpha=pre)
        h = x.new_zeros(B, H)  # [B, H] state, updated in place
        first = x.new_empty(B, w_h_t.shape[1])  # [B, U]
        stages = [(w, b, alpha, x.new_empty(B, w.shape[1])) for w, b, alpha in later]
        update = _head_updater([cell], stages[-1][3], H, uniform is not None)
        activation = cell.activation
        outs: list[Tensor] = []
        for z0, ts_t in zip(z0_all.view(B, L, -1).unbind(1), _steps(ts, L), strict=True):
            below = torch.addmm(z0, h, w_h_t, alpha=pre, out=first)  # [B, U]
            for w_t, b, alpha, out in stages:
                below = torch.addmm(b, _activation_(activation, below), w_t, alpha=alpha, out=out)
            update(ts_t, h)
            if sequence:
                outs.append(h.clone())
        return torch.stack(outs, 1) if sequence else h  # [B, L, H] or [B, H]

    def _scan_wavefront(
        self, x: Tensor, ts: Tensor | float, uniform: float | None, sequence: bool
    ) -> Tensor:
        """Inference scan of backbone-free cells (dense ``backbone_layers=0``, or the layers
        of a wired network) -> last layer's state ``[B, n_last]`` or ``[B, L, n_last]``.

        Wired layers form a chain inside each step (layer ``l`` at step ``t`` reads layer
        ``l-1`` at step ``t``), which costs one small matmul per layer per step. Skewed in time
        (a wavefront), the work of iteration ``i`` is layer ``l`` at step ``t = i - l`` for
        every ``l`` at once: each of those reads only states finished in iteration ``i - 1``.
        So all layers share ONE block-structured matmul ``[B, N] @ [N, k N]`` and one set of
        elementwise ops per iteration, for ``L + n_layers - 1`` iterations: the same values
        as the layer-by-layer order (block zeros add exact zeros). Layers not started yet
        (``t < 0``) are reset to the zero initial state; what layers compute after their last
        step (``t >= L``) is never read by a valid step.
        """
        B, L, n_in = x.shape
        cells = [self.cell] if isinstance(self.cell, CfCCell) else list(self.cell.layers)
        widths = [cell.hidden_size for cell in cells]
        offsets = np.cumsum([0, *widths]).tolist()
        N, skew = offsets[-1], len(cells) - 1
        weight, bias = self._block_weights(cells, uniform)  # [F + N, kN], [kN]
        z0_all = torch.addmm(bias, x.reshape(B * L, n_in), weight[:n_in])  # [BL, kN]
        z0_steps = list(z0_all.view(B, L, -1).unbind(1)) + [bias] * skew  # L + skew
        w_h_t = weight[n_in:]  # [N, kN]
        k = w_h_t.shape[1] // N
        if isinstance(ts, Tensor) and skew:
            # Layer l's elapsed time at iteration i is ts[:, i - l] (padding: any value).
            padded = F.pad(ts, (skew, skew), value=1.0)  # [B, L + 2 skew]
            ts = torch.cat(
                [
                    padded[:, skew - i : skew - i + L + skew, None].expand(-1, -1, n)
                    for i, n in enumerate(widths)
                ],
                -1,
            )  # [B, L + skew, N]
        elif isinstance(ts, Tensor):
            ts = ts.unsqueeze(-1)  # [B, L, 1]
        state = x.new_zeros(B, N)  # [B, N] all layers' states (layer order), in place
        z = x.new_empty(B, k * N)  # [B, kN]
        update = _head_updater(cells, z, N, uniform is not None)
        ts_steps = ts.unbind(1) if isinstance(ts, Tensor) else [ts] * (L + skew)
        last = state[:, offsets[-2] :]  # [B, n_last]
        outs: list[Tensor] = []
        for i, (z0, ts_i) in enumerate(zip(z0_steps, ts_steps, strict=True)):
            torch.addmm(z0, state, w_h_t, out=z)  # [B, kN]
            update(ts_i, state)
            if i < skew:
                state[:, offsets[i + 1] :].zero_()  # layers l > i have not started (t < 0)
            elif sequence:
                outs.append(last.clone())
        return torch.stack(outs, 1) if sequence else last  # [B, L, n_last] or [B, n_last]

    def _block_weights(self, cells: list[CfCCell], uniform: float | None) -> tuple[Tensor, Tensor]:
        """Heads of all backbone-free ``cells`` as one matrix over ``[x ; all states]``:
        ``W^T [F + N, k N]`` (columns head-major: ``ff1`` of all neurons, then ``ff2``, ...;
        ``k`` and the folded gate as in :meth:`CfCCell.head_weights_t`) and ``b [k N]``.

        Entries outside a layer's blocks are zero; inside, ``weight * mask`` as in training.
        It is assembled by gathering (``index_select``) from the flattened weights with an
        index that depends only on the wiring (cached per device), which costs a few ops per
        call instead of one slice assignment per block.
        """
        foldable = cells[0].mode in ("default", "no_gate")
        N = sum(cell.hidden_size for cell in cells)
        names = _HEAD_NAMES[cells[0].mode]
        device = cells[0].ff1.weight.device
        if device not in self._block_indices:
            self._block_indices[device] = _block_index(cells, len(names), device)
        w_index, m_index = self._block_indices[device]
        zero = cells[0].ff1.weight.new_zeros(1)
        heads = [getattr(cell, name) for cell in cells for name in names]
        flat = torch.cat([m.weight.reshape(-1) for m in heads] + [zero])
        weight = flat.index_select(0, w_index).view(-1, len(names) * N)  # [F + N, kN]
        masks = [cell.sparsity_mask for cell in cells]
        if masks[0] is not None:
            flat_masks = torch.cat([m.reshape(-1) for m in masks if m is not None] + [zero])
            weight.mul_(flat_masks.index_select(0, m_index).view_as(weight))  # [F + N, kN]
        bias = torch.cat([getattr(cell, name).bias for name in names for cell in cells])  # [kN]
        if uniform is not None and foldable:
            gate_w = torch.add(weight[:, 3 * N :], weight[:, 2 * N : 3 * N], alpha=uniform)
            gate_b = torch.add(bias[3 * N :], bias[2 * N : 3 * N], alpha=uniform)
            weight = torch.cat([weight[:, : 2 * N], gate_w], 1)  # [F + N, 3N]
            bias = torch.cat([bias[: 2 * N], gate_b])  # [3N]
        return weight, bias

    def _gather(self, per_layer: list[list[Tensor]]) -> Tensor:
        stacked = [torch.stack(steps, 1) for steps in per_layer]  # [B, L, n_l] each
        if isinstance(self.cell, WiredCfCCell):
            return self.cell.to_neuron_order(stacked)  # [B, L, units]
        return stacked[0]  # [B, L, H]

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F]``, ``dt [B, L]`` (None = every step 1.0) -> ``[B, d_model]``."""
        self.check_input(x, dt)
        return self._scan(x, dt, sequence=False)[0]

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, L, d_model]``; position ``i`` depends on steps ``<= i`` only."""
        self.check_input(x, dt)
        return self._scan(x, dt, sequence=True)[0]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Diagnostics ``[B, L, units]`` (units in wiring neuron-id order when wired):

        - ``time_constant``: ``1 / |t_a|`` (gated modes), ``1 / (|w_tau| + |ff1|)``
          (``pure``) or ``tau exp(-f_A)``, the elapsed time at which the gate is 1/2
          (``chapter``), in units of ``dt / time_unit``;
        - ``gate``: the interpolation gate ``sigmoid(t_a ts + t_b)`` (gated modes) or
          ``sigmoid(-f_tau (log(ts / tau) + f_A))`` (``chapter``);
        - ``hidden``: the state ``h_t``.
        """
        self.check_input(x, dt)
        return self._scan(x, dt, sequence=False, collect=True)[1]
