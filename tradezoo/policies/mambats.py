"""``mambats``: variable-aware selective scanning over patched series (after MambaTS).

Reference: Cai et al., "MambaTS: Improved Selective State Space Models for Long-term Time
Series Forecasting" (arXiv 2405.16440), adapted to trading windows: instance normalisation,
patch tokens per variable, Mamba scans along time and across variables, random variable
permutation while training. Differences from the paper, on purpose: the paper scans one long
sequence of all variables' patches ("variable scan along time") and, at inference, an order
found by solving an asymmetric TSP on learned variable distances; here each layer runs two
shorter scans (below) and inference uses the identity order, because a trading policy needs
batch-1 latency and a fixed feature layout. The temporal Mamba keeps a short causal conv
(``d_conv``, the paper drops it); the variable Mamba has none (``d_conv = 1``), since
neighbouring variables have no order.

Shapes: ``B`` batch, ``L`` window, ``F`` variables (features), ``P`` patch length, ``S``
stride, ``n`` patches, ``d = d_model``.

1. Instance normalisation per variable over the window (RevIN, Kim et al. 2022; no look-ahead:
   the statistics are those of the observed window)::

       x~[b, :, f] = gamma_f * (x[b, :, f] - mean_f) / sqrt(var_f + eps) + beta_f

2. Patch tokens per variable: the normalised series is cut into ``n = ceil((L - P) / S) + 1``
   patches of ``P`` bars with stride ``S``; the LAST patch ends at the last bar. When
   ``L - P`` is not a multiple of ``S``, the series is padded at the START only, by repeating
   its first bar, so no patch reads past the window's end (never pad at the end: that would
   put a fake "future" bar in the newest patch)::

       e[b, f, i] = W_p patch_i + pos[n - 1 - i] + var[f]        [B, F, n, d]

   ``pos`` is learned and indexed by the patch's age (0 = newest), so the newest patch always
   gets the same code whatever the window (at most ``max_patches`` patches).

3. Per layer, variable-aware scanning, the fusion of the two scans, then the mixing MLP::

       t = MambaT(RMSNorm(e))    along patches, per variable (sequences [B F, n, d])
       v = MambaV(RMSNorm(e))    along variables, per patch (sequences [B n, F, d]), in the
                                 permuted variable order pi during training, pi^-1 after
       fusion "linear" (default; the chapter's Linear(2d -> d)):
           e = e + dropout(W_f [t; v] + b_f)
       fusion "gate":
           g = sigmoid(W_g [t; v] + b_g)                   [B, F, n, d]  (g = 1: time only)
           e = e + dropout(g * t + (1 - g) * v)
       channel_mixing "variables" (default; the chapter's MLP across variables, per patch and
       channel over the F variables, in the canonical variable order):
           e = e + dropout((V_2 GELU(V_1 RMSNorm(e)^T))^T)   V_1 [r F, F], V_2 [F, r F]
       channel_mixing "hidden" (MLP-Mixer's "channel-mixing" MLP, per token over the d
       channels):
           e = e + dropout(W_2 GELU(W_1 RMSNorm(e)))
       channel_mixing "both": the variable MLP, then the hidden MLP (MLP-Mixer's order).

   ``MambaT`` and ``MambaV`` are :class:`~tradezoo.policies.mamba.MambaBlock` (selective SSM,
   mamba_ssm initialisation).

4. Pooled output: the final RMSNorm of each variable's newest patch token ``h_f`` (it has seen
   the whole window through ``MambaT``) is pooled by attention over variables::

       w = softmax_f(u^T tanh(W_a h_f))      [B, F]      output = sum_f w_f h_f   [B, d]

Variable permutation (training only, ``permute_variables=True``): one permutation of the
``F`` variables per forward call, drawn from a ``torch.Generator`` owned by the module and
seeded from ``MambaTSConfig.seed`` (``None``: a seed drawn from torch's global RNG at
construction, so ``torch.manual_seed`` fixes it). On a GPU the permutation is drawn by a
generator on the GPU with the same seed (no host-to-device copy per forward; its sequence is
the GPU RNG's). Eval mode uses the identity order, so a batch equals its samples run one by
one. The generators' states are not part of the ``state_dict``.

The chapter's forms are the defaults, as the ablation in ``docs/architectures.md`` found the
other forms within noise of them; those stay options: ``fusion="gate"`` (a convex combination
per channel, which keeps each scan's scale) and ``channel_mixing="hidden"`` (a per-token MLP,
which does not depend on the number or order of the variables) or ``"both"``. A saved config
without these fields (written before they existed) is the gate and the hidden mixing
(``MambaTSConfig.saved_absent``).

Supervised heads (:class:`MambaTSHeads`): classification logits (0 sell, 1 hold, 2 buy),
regression and per-horizon outputs from the backbone's ``[B, d]`` vector. The supervised
trainer builds them as ``MambaTSHeads(d_model, horizons=("h4", "h24", ...), regression=True)``
(see the class docstring for both construction forms).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.mamba import SCAN_BACKENDS, MambaBlock, MambaConfig, scan_unavailable

__all__ = ["MambaTSBackbone", "MambaTSConfig", "MambaTSHeads", "patch_geometry"]

#: Valid values of ``MambaTSConfig.fusion`` and ``MambaTSConfig.channel_mixing``.
FUSIONS = ("gate", "linear")
CHANNEL_MIXINGS = ("hidden", "variables", "both")


@dataclass
class MambaTSConfig(BackboneConfig):
    """``mambats`` configuration.

    Attributes:
        d_model: token width ``d`` and output size.
        n_layers: variable-aware scanning layers (default 1: each layer runs two Mamba scans,
            and one layer keeps batch-1 latency at L=64 near the 2 ms budget on one CPU
            thread; raise it for supervised training).
        patch_len: bars per patch ``P`` (also the shortest window accepted).
        stride: bars between patch starts ``S``.
        max_patches: rows of the learned positional table (longest window:
            ``(max_patches - 1) * stride + patch_len`` bars).
        d_state: SSM state size of both Mamba blocks.
        d_conv: causal conv kernel of the temporal Mamba (patches).
        expand: inner width factor of both Mamba blocks.
        mlp_ratio: hidden width of the mixing MLP, in units of ``d_model`` (hidden mixing)
            or of the number of variables ``F`` (variable mixing).
        dropout: dropout on the residual branches.
        permute_variables: random variable order for the variable scan while training.
        seed: seed of the permutation generator (``None``: drawn from torch's global RNG).
        revin_eps: epsilon of the instance normalisation's variance.
        revin_affine: learned per-variable scale and shift after the normalisation.
        norm_eps: RMSNorm epsilon.
        scan: Mamba scan backend (see :class:`~tradezoo.policies.mamba.MambaConfig`).
        fusion: how a layer combines the temporal and variable scans: ``"gate"`` (a sigmoid
            gate per channel) or ``"linear"`` (the chapter's ``Linear(2d -> d)``).
        channel_mixing: what the mixing MLP mixes: ``"hidden"`` (the ``d`` channels of each
            token), ``"variables"`` (the chapter's MLP: the ``F`` variables of each patch and
            channel) or ``"both"``.
    """

    d_model: int = 64
    n_layers: int = 1
    patch_len: int = 16
    stride: int = 8
    max_patches: int = 512
    d_state: int = 16
    d_conv: int = 2
    expand: int = 1
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    permute_variables: bool = True
    seed: int | None = None
    revin_eps: float = 1e-5
    revin_affine: bool = True
    norm_eps: float = 1e-5
    scan: str = "auto"
    fusion: str = "linear"
    channel_mixing: str = "variables"

    saved_absent: ClassVar[Mapping[str, Any]] = {"fusion": "gate", "channel_mixing": "hidden"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.require(self.stride <= self.patch_len, "stride must be <= patch_len (patches must "
                      f"cover every bar), got stride={self.stride}, patch_len={self.patch_len}")
        check.number("mlp_ratio", 0.0, open_low=True, rule="> 0")
        check.number("dropout", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.integer("seed", 0, optional=True, rule="a non-negative integer or None")
        check.number("revin_eps", 0.0, open_low=True, rule="> 0")
        check.number("norm_eps", 0.0, open_low=True, rule="> 0")
        check.choice("scan", SCAN_BACKENDS)
        check.choice("fusion", FUSIONS)
        check.choice("channel_mixing", CHANNEL_MIXINGS)

    def for_device(self, device: torch.device) -> tuple[BackboneConfig, str | None]:
        """``scan="auto"`` where the saved scan cannot run (:func:`~tradezoo.policies.mamba.
        scan_unavailable`)."""
        return self._backend_fallback("scan", scan_unavailable(self.scan, device), device)

    def mamba_config(self, d_conv: int) -> MambaConfig:
        """The :class:`MambaConfig` of one inner Mamba block (temporal or variable)."""
        return MambaConfig(
            d_model=self.d_model, n_layers=self.n_layers, d_state=self.d_state,
            d_conv=d_conv, expand=self.expand, norm_eps=self.norm_eps, scan=self.scan,  # type: ignore[arg-type]
        )


def patch_geometry(window: int, patch_len: int, stride: int) -> tuple[int, int]:
    """``(n_patches, left_pad)`` for a window: the last patch ends at the last bar.

    ``left_pad = (-(window - patch_len)) mod stride`` bars are repeated at the start so that
    ``(window + left_pad - patch_len)`` is a multiple of ``stride``.
    """
    if window < patch_len:
        raise ValueError(f"window={window} is shorter than patch_len={patch_len}")
    left_pad = (-(window - patch_len)) % stride
    return (window + left_pad - patch_len) // stride + 1, left_pad


def _rms_norm(norm: nn.RMSNorm, x: Tensor) -> Tensor:
    """``norm(x)`` without the module-call overhead (matters for batch-1 latency)."""
    return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)


class _VariableAwareLayer(nn.Module):
    """One layer: temporal and variable Mamba scans, their fusion (gate or linear), the mixing
    MLP over hidden channels and/or variables (module docstring, step 3)."""

    def __init__(self, config: MambaTSConfig, n_var: int) -> None:
        super().__init__()
        d = config.d_model
        self.fusion, self.channel_mixing = config.fusion, config.channel_mixing
        self.norm_time = nn.RMSNorm(d, eps=config.norm_eps)
        self.time_mamba = MambaBlock(config.mamba_config(config.d_conv))
        self.norm_var = nn.RMSNorm(d, eps=config.norm_eps)
        self.var_mamba = MambaBlock(config.mamba_config(1))
        # Exactly one of gate / fuse exists (named for what it does).
        self.gate: nn.Linear | None = nn.Linear(2 * d, d) if self.fusion == "gate" else None
        self.fuse: nn.Linear | None = nn.Linear(2 * d, d) if self.fusion == "linear" else None
        residual_out: list[nn.Linear] = []
        if self.channel_mixing in ("hidden", "both"):
            self.norm_mlp = nn.RMSNorm(d, eps=config.norm_eps)
            hidden = max(1, round(config.mlp_ratio * d))
            self.mlp_in = nn.Linear(d, hidden)
            self.mlp_out = nn.Linear(hidden, d)
            residual_out.append(self.mlp_out)
        if self.channel_mixing in ("variables", "both"):
            self.norm_var_mlp = nn.RMSNorm(d, eps=config.norm_eps)
            var_hidden = max(1, round(config.mlp_ratio * n_var))
            self.var_mlp_in = nn.Linear(n_var, var_hidden)
            self.var_mlp_out = nn.Linear(var_hidden, n_var)
            residual_out.append(self.var_mlp_out)
        self.dropout = float(config.dropout)
        with torch.no_grad():
            # Residual branches start small, as mamba_ssm's prenorm rescaling does.
            for linear in (self.time_mamba.out_proj, self.var_mamba.out_proj, *residual_out):
                linear.weight.div_(math.sqrt(2 * config.n_layers))
            if self.gate is not None:
                nn.init.zeros_(self.gate.bias)
            else:
                assert self.fuse is not None
                self.fuse.weight.div_(math.sqrt(2 * config.n_layers))

    def _residual(self, h: Tensor, branch: Tensor) -> Tensor:
        drop = self.dropout if self.training else 0.0
        return h + (F.dropout(branch, drop, True) if drop else branch)

    def _fuse(self, temporal: Tensor, variable: Tensor) -> tuple[Tensor, Tensor]:
        """``(fused [B, F, n, d], temporal share [B, F, n, d])``: the share is the gate
        ``g`` (``"gate"``), or ``|W_t t| / (|W_t t| + |W_v v|)`` per channel (``"linear"``,
        ``W_f = [W_t | W_v]``), 1 = the token is updated from its own history only."""
        if self.gate is not None:
            gate = torch.sigmoid(
                F.linear(torch.cat([temporal, variable], dim=-1), self.gate.weight,
                         self.gate.bias)
            )  # [B, F, n, d]
            return torch.lerp(variable, temporal, gate), gate  # g t + (1 - g) v
        assert self.fuse is not None
        d = temporal.shape[-1]
        from_time = F.linear(temporal, self.fuse.weight[:, :d])  # [B, F, n, d]
        from_vars = F.linear(variable, self.fuse.weight[:, d:])  # [B, F, n, d]
        fused = from_time + from_vars + self.fuse.bias  # = W_f [t; v] + b_f
        share = from_time.abs() / (from_time.abs() + from_vars.abs()).clamp_min(1e-12)
        return fused, share

    def forward(self, h: Tensor, order: Tensor | None) -> tuple[Tensor, Tensor]:
        """``h [B, F, n, d]`` -> ``(h [B, F, n, d], temporal share [B, F, n, d])`` (the
        fusion gate with ``fusion="gate"``; see :meth:`_fuse`).

        ``order``: variable permutation for the variable scan (``None``: identity).
        """
        batch, n_var, n_patch, d = h.shape
        normed = _rms_norm(self.norm_time, h)  # [B, F, n, d]
        temporal = self.time_mamba(normed.reshape(batch * n_var, n_patch, d))  # [B F, n, d]
        temporal = temporal.view(batch, n_var, n_patch, d)  # [B, F, n, d]
        across = _rms_norm(self.norm_var, h if order is None else h[:, order])  # [B, F, n, d]
        across = across.transpose(1, 2).reshape(batch * n_patch, n_var, d)  # [B n, F, d]
        variable = self.var_mamba(across).view(batch, n_patch, n_var, d).transpose(1, 2)
        if order is not None:
            variable = variable[:, torch.argsort(order)]  # back to the canonical order
        fused, share = self._fuse(temporal, variable)  # [B, F, n, d] each
        h = self._residual(h, fused)  # [B, F, n, d]
        if self.channel_mixing != "hidden":  # across variables: F is the last axis
            normed = _rms_norm(self.norm_var_mlp, h).permute(0, 2, 3, 1)  # [B, n, d, F]
            hidden = F.gelu(F.linear(normed, self.var_mlp_in.weight, self.var_mlp_in.bias))
            mixed = F.linear(hidden, self.var_mlp_out.weight, self.var_mlp_out.bias)
            h = self._residual(h, mixed.permute(0, 3, 1, 2))  # [B, F, n, d]
        if self.channel_mixing != "variables":  # across the d channels of each token
            hidden = F.gelu(
                F.linear(_rms_norm(self.norm_mlp, h), self.mlp_in.weight, self.mlp_in.bias)
            )
            mixed = F.linear(hidden, self.mlp_out.weight, self.mlp_out.bias)  # [B, F, n, d]
            h = self._residual(h, mixed)  # [B, F, n, d]
        return h, share


class MambaTSBackbone(Backbone):
    """``mambats``: ``x [B, L, F] -> [B, d_model]`` (see the module docstring)."""

    name: ClassVar[str] = "mambats"
    config_cls: ClassVar[type[BackboneConfig]] = MambaTSConfig
    emits_sequence: ClassVar[bool] = False  # patches mix bars in time
    uses_dt: ClassVar[bool] = False

    config: MambaTSConfig

    def __init__(self, n_features: int, config: MambaTSConfig) -> None:
        super().__init__(n_features, config)
        d, n_var = config.d_model, self.n_features
        self.revin_weight: nn.Parameter | None = None
        self.revin_bias: nn.Parameter | None = None
        if config.revin_affine:
            self.revin_weight = nn.Parameter(torch.ones(n_var))
            self.revin_bias = nn.Parameter(torch.zeros(n_var))
        self.patch_embed = nn.Linear(config.patch_len, d)
        self.pos_embed = nn.Parameter(torch.randn(config.max_patches, d) * 0.02)  # by age
        self.var_embed = nn.Parameter(torch.randn(n_var, d) * 0.02)
        self.layers = nn.ModuleList(
            _VariableAwareLayer(config, n_var) for _ in range(config.n_layers)
        )
        self.norm_f = nn.RMSNorm(d, eps=config.norm_eps)
        self.pool_proj = nn.Linear(d, d)
        self.pool_score = nn.Linear(d, 1, bias=False)
        seed = config.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.permutation_seed = seed
        self.permutation_generator = torch.Generator().manual_seed(seed)
        # One generator per other device, seeded alike, so that a GPU forward draws its order
        # on the GPU instead of copying one from the host at every step.
        self._device_generators: dict[torch.device, torch.Generator] = {}
        #: The variable order used by the last training forward pass (``None`` in eval mode).
        self.last_permutation: Tensor | None = None

    # -- window rules ---------------------------------------------------------------------

    @classmethod
    def min_window(cls, config: BackboneConfig) -> int:
        """A window must hold at least one patch: ``patch_len`` bars."""
        return int(config.patch_len)  # type: ignore[attr-defined]

    @classmethod
    def check_window(cls, config: BackboneConfig, window: int) -> None:
        """Also rejects windows with more patches than the positional table has rows."""
        super().check_window(config, window)
        n_patches, _ = patch_geometry(window, config.patch_len, config.stride)  # type: ignore[attr-defined]
        if n_patches > config.max_patches:  # type: ignore[attr-defined]
            raise ValueError(
                f"architecture {cls.name!r}: window={window} makes {n_patches} patches, more "
                f"than max_patches={config.max_patches}; raise max_patches or the stride"  # type: ignore[attr-defined]
            )

    # -- pieces ---------------------------------------------------------------------------

    def draw_permutation(self, device: torch.device | None = None) -> Tensor:
        """Next variable permutation (``[F]`` int64) on ``device`` (``None``: the CPU), from
        the module's generator for that device: :attr:`permutation_generator` on the CPU, one
        seeded with :attr:`permutation_seed` on another device (its sequence is that device's
        RNG's, not the CPU's)."""
        if device is None or device.type == "cpu":
            generator = self.permutation_generator
        else:
            generator = self._device_generators.get(device)
            if generator is None:
                generator = torch.Generator(device).manual_seed(self.permutation_seed)
                self._device_generators[device] = generator
        return torch.randperm(self.n_features, generator=generator, device=generator.device)

    def normalise(self, x: Tensor) -> Tensor:
        """Instance normalisation per sample and variable over the window: ``[B, L, F]``."""
        mean = x.mean(dim=1, keepdim=True)  # [B, 1, F]
        var = x.var(dim=1, keepdim=True, correction=0)  # [B, 1, F]
        normed = (x - mean) * torch.rsqrt(var + self.config.revin_eps)  # [B, L, F]
        if self.revin_weight is None or self.revin_bias is None:
            return normed
        return normed * self.revin_weight + self.revin_bias  # [B, L, F]

    def patches(self, x: Tensor) -> Tensor:
        """Normalised patches ``[B, F, n, P]``, oldest first; the last one ends at the last bar
        (start padded by repeating the first bar when ``L - P`` is not a multiple of ``S``)."""
        patch_len, stride = self.config.patch_len, self.config.stride
        _, left_pad = patch_geometry(x.shape[1], patch_len, stride)
        series = self.normalise(x).transpose(1, 2)  # [B, F, L]
        if left_pad:
            series = F.pad(series, (left_pad, 0), mode="replicate")  # [B, F, L + pad]
        return series.unfold(-1, patch_len, stride)  # [B, F, n, P]

    def tokens(self, x: Tensor) -> Tensor:
        """Normalised patch tokens with positions and variable codes: ``[B, F, n, d]``."""
        patches = self.patches(x)  # [B, F, n, P]
        n_patches = patches.shape[2]
        positions = self.pos_embed[:n_patches].flip(0)  # patch i gets row n - 1 - i  [n, d]
        embedded = self.patch_embed(patches) + positions  # [B, F, n, d]
        return embedded + self.var_embed.unsqueeze(1)  # [B, F, n, d]

    def _run(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``(output [B, d], variable weights [B, F], per-layer gates [B, F, n, d])``."""
        h = self.tokens(x)  # [B, F, n, d]
        order: Tensor | None = None
        if self.training and self.config.permute_variables and self.n_features > 1:
            order = self.draw_permutation(x.device)  # drawn where it is used: no host copy
            self.last_permutation = order
        else:
            self.last_permutation = None
        gates: list[Tensor] = []
        for layer in self.layers:
            h, gate = layer(h, order)  # [B, F, n, d]
            gates.append(gate)
        newest = _rms_norm(self.norm_f, h[:, :, -1])  # [B, F, d]
        scores = self.pool_score(torch.tanh(self.pool_proj(newest))).squeeze(-1)  # [B, F]
        weights = torch.softmax(scores, dim=-1)  # [B, F]
        pooled = torch.einsum("bf,bfd->bd", weights, newest)  # [B, d]
        return pooled, weights, gates

    # -- interface ------------------------------------------------------------------------

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, d_model]`` (``dt`` is accepted and ignored)."""
        self.check_input(x, dt)
        return self._run(x)[0]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Per-variable diagnostics.

        Returns:
            ``variable_weights`` ``[B, F]``: the pooling attention over variables (which
            variables' newest tokens make up the output; rows sum to 1).
            ``temporal_gate`` ``[n_layers, B, F]``: mean fusion gate per variable (over
            patches and channels): 1 = the variable's token is updated from its own history
            (temporal scan), 0 = from the other variables (variable scan). With
            ``fusion="linear"`` it is the mean share of the temporal half of ``W_f [t; v]``,
            ``|W_t t| / (|W_t t| + |W_v v|)``, with the same reading.
            ``window_std`` ``[B, F]``: the per-variable scale the instance normalisation
            removed (the model is blind to it).
        """
        self.check_input(x, dt)
        _, weights, gates = self._run(x)
        return {
            "variable_weights": weights,
            "temporal_gate": torch.stack([g.mean(dim=(2, 3)) for g in gates]),
            "window_std": x.std(dim=1, correction=0),
        }

    def no_weight_decay(self) -> set[str]:
        """The inner Mamba blocks' ``A_log`` and ``D``, the embeddings' tables and RevIN's
        affine parameters."""
        names = {"pos_embed", "var_embed"}
        if self.revin_weight is not None:
            names.update({"revin_weight", "revin_bias"})
        for i in range(len(self.layers)):
            for block in ("time_mamba", "var_mamba"):
                names.update({f"layers.{i}.{block}.A_log", f"layers.{i}.{block}.D"})
        return names


class MambaTSHeads(nn.Module):
    """Supervised heads on the backbone's ``[B, d_model]`` vector, in two construction forms.

    The trainer's form (:mod:`tradezoo.agents.supervised_model` builds every architecture's heads
    this way)::

        MambaTSHeads(d_model, horizons=("h4", "h24"), regression=True)

    ``forward(features)`` returns ``"logits"`` ``[B, n_classes]`` (class logits, order 0 sell,
    1 hold, 2 buy; use with ``cross_entropy``), ``"direction"`` ``[B, H]`` (logits of "the price
    rises over horizon i", one column per name in ``horizons``; use with
    ``binary_cross_entropy_with_logits``) and, with ``regression=True``, ``"regression"``
    ``[B, H]`` (e.g. the forward return over each horizon).

    The positional form (no ``horizons``)::

        MambaTSHeads(d_model, n_classes=3, n_horizons=3)

    returns ``"logits"`` ``[B, n_classes]``, ``"regression"`` ``[B, 1]`` (e.g. the
    next-horizon return; with ``regression=True``, the default) and ``"multi_horizon"``
    ``[B, n_horizons]`` (one output per forecast horizon).
    """

    def __init__(
        self,
        d_model: int = 64,
        n_classes: int = 3,
        n_horizons: int | None = None,
        dropout: float = 0.0,
        *,
        horizons: Sequence[str] | None = None,
        regression: bool = True,
    ) -> None:
        super().__init__()
        if horizons is not None:
            names = tuple(horizons)
            if not names or len(set(names)) != len(names) or not all(
                isinstance(n, str) and n for n in names
            ):
                raise ValueError(
                    "MambaTSHeads.horizons must be non-empty, unique, non-empty strings, got "
                    f"{horizons!r}"
                )
            if n_horizons is not None and n_horizons != len(names):
                raise ValueError(
                    f"MambaTSHeads: n_horizons={n_horizons} does not match the {len(names)} "
                    f"horizons {names!r} (give one or the other)"
                )
            n_horizons = len(names)
        elif n_horizons is None:
            n_horizons = 3
        for name, value in (("d_model", d_model), ("n_classes", n_classes),
                            ("n_horizons", n_horizons)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MambaTSHeads.{name} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MambaTSHeads.dropout must be in [0, 1), got {dropout}")
        self.horizons: tuple[str, ...] | None = None if horizons is None else names
        self.dropout = nn.Dropout(dropout)
        self.classification = nn.Linear(d_model, n_classes)
        width = 1 if horizons is None else n_horizons  # regression columns
        self.regression = nn.Linear(d_model, width) if regression else None
        if horizons is None:
            self.multi_horizon = nn.Linear(d_model, n_horizons)
        else:
            self.direction = nn.Linear(d_model, n_horizons)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """``features [B, d_model]`` -> the dict described in the class docstring."""
        if features.dim() != 2 or features.shape[-1] != self.classification.in_features:
            raise ValueError(
                f"MambaTSHeads expects features of shape [batch, "
                f"{self.classification.in_features}], got {tuple(features.shape)}"
            )
        h = self.dropout(features)  # [B, d]
        out = {"logits": self.classification(h)}  # [B, n_classes]
        if self.regression is not None:
            out["regression"] = self.regression(h)  # [B, 1] or [B, H]
        if self.horizons is None:
            out["multi_horizon"] = self.multi_horizon(h)  # [B, n_horizons]
        else:
            out["direction"] = self.direction(h)  # [B, H]
        return out
