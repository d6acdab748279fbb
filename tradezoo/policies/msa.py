"""Multi-scale attention (MSA) backbone and its supervised heads.

Multi-scale attention for trading windows, as the equations below specify. For a window
``x [B, L, F]`` (oldest bar first) and pooling factors ``f_1 < ... < f_S`` (default 1, 4,
16)::

    x^(s)   = AvgPool_{f_s}(x)                 [B, L_s, F], L_s = floor(L / f_s), end-aligned
    e^(s)   = Enc_s(W_in,s x^(s) + P_s)        per-scale pre-norm causal Transformer encoder,
                                               learnable positions P_s indexed from the END
    q_s     = e^(s)[:, -1]                     each scale's last token (it contains the last bar)
    r_s     = LN(q_s + MHA(q_s, [e^(1); ...; e^(S)]))      multi-resolution attention: every
                                               scale's last token queries all scales' tokens
    w_stat  = softmax(omega)                   static scale weights, omega [S] learnable
    g       = sigmoid(W_g [r_1; ...; r_S] + b_g)           dynamic gates [S]
    w       = w_stat * g / sum(w_stat * g)     renormalised fusion weights (computed as
                                               softmax(log_softmax(omega) + logsigmoid(.)))
    fused   = sum_s w_s r_s
    a_S     = w_S r_S;  a_s = w_s r_s + SiLU(W_a,s a_{s+1} + c_s)   hierarchical aggregation,
                                               coarsest to finest (s = S-1, ..., 1)
    out     = LN(fused + W_o a_1)              [B, d_model]

The fusion above (``w_stat`` to ``out``) is ``fusion="gated"``. The default is the design
chapter's fusion MLP, ``fusion="mlp"``, and the default hierarchy is the parallel scales
above, ``hierarchy="parallel"``: the ablation in ``docs/architectures.md`` found the gated
fusion within noise of the chapter's MLP (so the chapter's form is the default and the gated
one an option) and the chapter's attention pyramid worse than parallel scales (so it is an
option, ``MSAConfig.hierarchy``, ``MSAConfig.fusion``)::

    fusion="mlp" (default):                    instead of w_stat, g, w, fused, a_s and out
    out     = W_2 SiLU(W_1 [r_1; ...; r_S] + b_1) + b_2      d S -> 2d -> d

    hierarchy="pyramid":                       levels instead of parallel scales
    e^(1)   = Enc_1(AvgPool_{f_1}(W_in x) + P_1)
    e^(s+1) = Enc_{s+1}(AvgPool_{f_{s+1}/f_s}(e^(s)) + P_{s+1})   self-attention per level on
                                               the pooled encoded tokens of the level below
    q_s     = e^(s)[:, -1]                     each level's last token is its representation

A saved config without these fields (written before they existed) is the parallel scales with
the gated fusion (``MSAConfig.saved_absent``).

Each scale's encoder has ``depths[s]`` layers (default ``n_layers`` for every scale).

Design decisions beyond the equations:

- **Pooling alignment.** Pooled windows are non-overlapping and aligned to the END of the window,
  so the last pooled token of every scale contains the latest bar. When ``L`` is not a multiple
  of ``f``, the ``L mod f`` OLDEST bars are dropped for that scale (never padded at the end, so
  no token mixes in bars that do not exist). ``min_window(config) = max(scales)``; a shorter
  window is a ``ValueError`` (each scale needs at least one token).
- **Positions.** Learnable embeddings indexed by the distance from the last token (0 = the
  latest token), so the latest token's embedding does not depend on the window length. The
  table has ``max_positions`` rows (default 256 per scale); tokens ``max_positions - 1`` or
  more tokens back share one "far past" row, so any window length is accepted.
- **Causality.** The scale encoders use a causal mask, so each token summarises bars up to its
  own time; the output uses only bars inside the window (``emits_sequence = False``: the output
  is one vector from the scales' last tokens). In the pyramid, a pooled token averages
  encoded tokens that each see bars up to their own time, so it sees bars up to the end of
  its block and no later (:meth:`MSABackbone.encode_levels`); the pooling between levels is
  end-aligned as above (the oldest ``L_s mod (f_{s+1} / f_s)`` tokens of level ``s`` are
  dropped), so every level's last token ends at the window's last bar. Level ``s`` then has
  ``L // f_s`` tokens, as with parallel scales, and ``min_window`` is the same.
- **Pyramid inputs.** Only level 0 reads the bars (one input projection ``[D, F]``), and each
  pooling factor must divide the next. External timeframes are separate windows, not pools of
  one, so ``external_scales`` needs ``hierarchy="parallel"``.
- **External scales.** ``MSABackbone(n_features, config, external_scales=[L_1, ..., L_S])``
  takes the timeframes of a dict observation (finest first, window length of each) as the
  scales; pooling factors (``config.scales``) are then unused and :meth:`MSABackbone.forward_scales`
  is the entry point (``forward(x)`` raises a ``ValueError``).
- Activations are SiLU (in the encoders' feed-forward blocks, the aggregation and the heads):
  as smooth as GELU and about 2x cheaper on CPU, where GELU's erf dominates batch-1 latency.
- Supervised heads (:class:`MSAHeads`) return LOGITS only, for ``cross_entropy`` and
  ``binary_cross_entropy_with_logits`` (never sigmoid + BCE, which loses precision and
  saturates).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig

__all__ = ["FUSIONS", "HIERARCHIES", "MSABackbone", "MSAConfig", "MSAHeads", "end_aligned_pool"]

HIERARCHIES = ("parallel", "pyramid")
"""``MSAConfig.hierarchy`` values (the first is the default)."""
FUSIONS = ("gated", "mlp")
"""``MSAConfig.fusion`` values (the default is ``"mlp"``, the chapter's fusion MLP)."""


@dataclass
class MSAConfig(BackboneConfig):
    """Configuration of :class:`MSABackbone`.

    Attributes:
        d_model: token width and output width.
        n_heads: attention heads (scale encoders and multi-resolution attention); must divide
            ``d_model``.
        n_layers: pre-norm Transformer layers in EACH scale's encoder.
        scales: average-pooling factors in bars, strictly increasing, finest first; the window
            must hold at least ``max(scales)`` bars. Unused with ``external_scales``.
        ff_mult: feed-forward width as a multiple of ``d_model``.
        dropout: dropout in attention and feed-forward blocks (training only).
        max_positions: rows of each scale's positional table (indexed from the window's end;
            older tokens share the last row).
        hierarchy: how the scales' token sequences are built. ``"parallel"``: each scale pools
            the bars and has its own encoder. ``"pyramid"``: the chapter's attention pyramid,
            level ``s + 1`` is the average pool (factor ``scales[s+1] / scales[s]``, so each
            factor must divide the next) of level ``s``'s encoded tokens. Box windows only.
        fusion: how the scales' summaries become the output. ``"gated"``: static x dynamic
            weights and hierarchical aggregation. ``"mlp"``: the chapter's fusion MLP
            ``Linear(d S -> 2d), SiLU, Linear(2d -> d)`` on the concatenated summaries.
        depths: encoder layers per scale, finest first (one entry per scale, each >= 1);
            ``None``: ``n_layers`` for every scale.
    """

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 1
    scales: tuple[int, ...] = (1, 4, 16)
    ff_mult: int = 2
    dropout: float = 0.0
    max_positions: int = 256
    hierarchy: str = "parallel"
    fusion: str = "mlp"
    depths: tuple[int, ...] | None = None

    saved_absent: ClassVar[Mapping[str, Any]] = {"hierarchy": "parallel", "fusion": "gated"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.require(self.d_model % self.n_heads == 0, f"d_model ({self.d_model}) must be "
                      f"divisible by n_heads ({self.n_heads})")
        rule = ("a non-empty, strictly increasing sequence of positive integer pooling factors "
                "(finest first)")
        check.widths("scales", rule)
        check.require(bool(self.scales) and all(
            a < b for a, b in itertools.pairwise(self.scales)),
            f"scales must be {rule}, got {self.scales!r}")
        check.number("dropout", 0.0, 1.0, open_high=True, rule="in [0, 1)")
        check.choice("hierarchy", HIERARCHIES)
        check.choice("fusion", FUSIONS)
        if self.hierarchy == "pyramid":
            check.require(all(b % a == 0 for a, b in itertools.pairwise(self.scales)),
                          f"scales must each divide the next with hierarchy='pyramid' (level s+1 "
                          f"pools level s by scales[s+1] / scales[s]), got {self.scales!r}")
        if self.depths is not None:
            depth_rule = "None or a non-empty sequence of layer counts >= 1, one per scale"
            check.widths("depths", depth_rule)
            check.require(bool(self.depths), f"depths must be {depth_rule}, got ()")

    def scale_depths(self, n_scales: int) -> tuple[int, ...]:
        """Encoder layers of each of ``n_scales`` scales (finest first).

        Raises:
            ConfigError: ``depths`` has another length than ``n_scales``.
        """
        if self.depths is None:
            return (self.n_layers,) * n_scales
        FieldChecks(self).require(
            len(self.depths) == n_scales,
            f"depths must have one entry per scale ({n_scales}), got {self.depths!r}")
        return self.depths


def end_aligned_pool(x: Tensor, factor: int) -> Tensor:
    """Causal average pooling aligned to the window's end: ``[B, L, F] -> [B, L // f, F]``.

    Token ``j`` (oldest first) averages bars ``L - (n - j) f .. L - (n - j - 1) f - 1`` with
    ``n = L // f``; the last token averages the ``f`` latest bars. The ``L mod f`` oldest bars
    are dropped. Raises ``ValueError`` when ``L < f``.
    """
    batch, length, n_feat = x.shape
    n_tokens = length // factor
    if n_tokens == 0:
        raise ValueError(
            f"pooling factor {factor} needs a window of at least {factor} bars, got {length}"
        )
    if factor == 1:
        return x
    kept = x[:, length - n_tokens * factor :]  # [B, n*f, F]: the oldest L mod f bars dropped
    return kept.reshape(batch, n_tokens, factor, n_feat).mean(2)  # [B, n, F]


class _EncoderLayer(nn.Module):
    """Pre-norm Transformer layer with causal self-attention: ``[B, T, D] -> [B, T, D]``."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff_in = nn.Linear(d_model, ff_mult * d_model)
        self.ff_out = nn.Linear(ff_mult * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, steps, d = tokens.shape
        heads = self.n_heads
        qkv = self.qkv(self.norm_attn(tokens))  # [B, T, 3D]
        q, k, v = qkv.view(batch, steps, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout.p if self.training else 0.0
        )  # [B, H, T, D/H]
        attn = attn.transpose(1, 2).reshape(batch, steps, d)  # [B, T, D]
        tokens = tokens + self.dropout(self.attn_out(attn))  # [B, T, D]
        ff = self.ff_out(self.dropout(F.silu(self.ff_in(self.norm_ff(tokens)))))  # [B, T, D]
        return tokens + self.dropout(ff)  # [B, T, D]


class MSABackbone(Backbone):
    """Multi-scale attention backbone ``x [B, L, F] -> [B, d_model]`` (``dt`` is ignored).

    Box windows: ``forward(x)`` with scales built in-window by :func:`end_aligned_pool`.
    Dict observations: build with ``external_scales=[L_1, ..., L_S]`` (each timeframe's window
    length, finest first) and call ``forward_scales([x_1, ..., x_S])`` with ``x_s [B, L_s, F]``.
    See the module docstring for the equations.
    """

    name: ClassVar[str] = "msa"
    config_cls: ClassVar[type[BackboneConfig]] = MSAConfig
    emits_sequence: ClassVar[bool] = False
    uses_dt: ClassVar[bool] = False

    @classmethod
    def takes_timeframes(cls, config: BackboneConfig) -> bool:
        """Parallel scales take timeframes; the pyramid pools one window into its levels."""
        return isinstance(config, MSAConfig) and config.hierarchy == "parallel"

    def __init__(
        self,
        n_features: int,
        config: MSAConfig,
        external_scales: Sequence[int] | None = None,
    ) -> None:
        super().__init__(n_features, config)
        if external_scales is not None:
            try:
                lengths = tuple(operator.index(n) for n in external_scales)
            except TypeError:
                lengths = ()
            if not lengths or min(lengths) < 1:
                raise ValueError(
                    "external_scales must be a non-empty sequence of positive integer window "
                    f"lengths (one per timeframe, finest first), got {external_scales!r}"
                )
            self.external_scales: tuple[int, ...] | None = lengths
        else:
            self.external_scales = None
        n_scales = len(self.external_scales or config.scales)
        self.n_scales = n_scales
        self.pyramid = config.hierarchy == "pyramid"
        if self.pyramid and self.external_scales is not None:
            raise ValueError(
                f"{self.name}: hierarchy='pyramid' builds its levels by pooling one window; "
                "external timeframes are separate windows: use hierarchy='parallel' with "
                "external_scales"
            )
        depths = config.scale_depths(n_scales)
        d = config.d_model
        # Parallel: one projection per scale, stored side by side [S*D, F]; for in-window
        # scales it runs once on the bars before pooling (pooling is linear, so
        # pool(x W_s + b_s) = pool(x) W_s + b_s); external timeframes each use their own slice.
        # Pyramid: only level 0 sees the bars, so one projection [D, F].
        self.input_proj = nn.Linear(self.n_features, (1 if self.pyramid else n_scales) * d)
        # Row P-1-a of scale s is the embedding of age a (a = 0: the latest token), so the n
        # latest tokens' rows are the slice [P-n:] (no gather); row 0 is also "far past".
        self.pos_emb = nn.Parameter(torch.randn(n_scales, config.max_positions, d) * 0.02)
        self.encoders = nn.ModuleList(
            nn.Sequential(
                *(
                    _EncoderLayer(d, config.n_heads, config.ff_mult, config.dropout)
                    for _ in range(depth)
                ),
                nn.LayerNorm(d),
            )
            for depth in depths
        )
        # Multi-resolution attention.
        self.mr_q = nn.Linear(d, d)
        self.mr_kv = nn.Linear(d, 2 * d)
        self.mr_out = nn.Linear(d, d)
        self.mr_norm = nn.LayerNorm(d)
        self.fusion_mlp: nn.Sequential | None = None
        if config.fusion == "mlp":
            # The chapter's fusion MLP on the concatenated summaries: d S -> 2d -> d.
            self.fusion_mlp = nn.Sequential(
                nn.Linear(n_scales * d, 2 * d),
                nn.SiLU(),
                nn.Dropout(config.dropout),
                nn.Linear(2 * d, d),
            )
            return
        # Cross-scale fusion: static logits (zeros: uniform at start) and dynamic gates.
        self.static_logits = nn.Parameter(torch.zeros(n_scales))
        self.gate = nn.Linear(n_scales * d, n_scales)
        # Hierarchical aggregation, coarsest to finest: one map per finer scale.
        self.hier = nn.ModuleList(nn.Linear(d, d) for _ in range(n_scales - 1))
        self.out_proj = nn.Linear(d, d)
        self.out_norm = nn.LayerNorm(d)

    @classmethod
    def min_window(cls, config: BackboneConfig) -> int:
        """``max(scales)``: the coarsest scale needs one full pooling window."""
        assert isinstance(config, MSAConfig)
        return max(config.scales)

    def no_weight_decay(self) -> set[str]:
        return {"pos_emb"} if self.fusion_mlp is not None else {"pos_emb", "static_logits"}

    def token_input_weights(self) -> list[Tensor]:
        """Each scale's map from input columns to its tokens' inputs, ``S x [D, F]``.

        Parallel: scale ``s``'s own projection. Pyramid: the level-0 projection for every
        level, since level ``s``'s tokens are pooled from level 0 (a first-order view: the
        encoders between levels are not linear). Used by band attention in
        :func:`tradezoo.policies.explain.explain`."""
        if self.pyramid:
            return [self.input_proj.weight] * self.n_scales
        return list(self.input_proj.weight.split(self.d_model, dim=0))

    # -- entry points --------------------------------------------------------------------

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x [B, L, F] -> [B, d_model]`` with in-window pooled scales."""
        out, _ = self._core(self.encode_levels(x, dt), with_weights=False)
        return out

    def forward_scales(self, xs: Sequence[Tensor]) -> Tensor:
        """External timeframes ``[x_1 [B, L_1, F], ..., x_S [B, L_S, F]]`` -> ``[B, d_model]``."""
        out, _ = self._core(self._encode(self._external_tokens(xs)), with_weights=False)
        return out

    def encode_levels(self, x: Tensor, dt: Tensor | None = None) -> list[Tensor]:
        """Box window ``x [B, L, F]`` -> each scale's encoded tokens ``[B, L // f_s, D]``,
        finest first, oldest token first; token ``j`` of scale ``s`` depends only on bars up
        to the end of its pooling block (causal encoders, end-aligned pooling)."""
        tokens = self._pooled_tokens(x, dt)
        return self._pyramid(tokens[0]) if self.pyramid else self._encode(tokens)

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Diagnostics for a Box window ``x [B, L, F]`` (see :meth:`explain_scales`)."""
        return self._core(self.encode_levels(x, dt), with_weights=True)[1]

    @torch.no_grad()
    def explain_scales(self, xs: Sequence[Tensor]) -> dict[str, Tensor]:
        """Diagnostics (detached; S scales, T = total tokens over all scales, H heads):

        - ``attention [B, H, S, T]``: multi-resolution attention weights; row s is scale s's
          last token querying every token (rows sum to 1).
        - ``scale_attention [B, S]``: the attention each scale receives: ``attention``
          averaged over heads and querying scales, summed over the scale's tokens (rows sum
          to 1). :func:`tradezoo.policies.explain.explain` with ``feature_names`` splits it
          by decomposition band (``band_attention/<band>``).
        - ``token_scale [T]``: scale index of each key token; ``token_age [T]``: its distance
          from its scale's last token, in tokens (0 = latest).
        - ``fusion="gated"`` only: ``scale_weights_static [S]`` (softmax of the static
          logits), ``scale_gates [B, S]`` (sigmoid dynamic gates), ``scale_weights [B, S]``
          (final renormalised weights). The fusion MLP has no per-scale weights to report.
        """
        return self._core(self._encode(self._external_tokens(xs)), with_weights=True)[1]

    # -- internals -----------------------------------------------------------------------

    def _pooled_tokens(self, x: Tensor, dt: Tensor | None) -> list[Tensor]:
        """Box window ``x [B, L, F]`` -> per-scale projected tokens ``[B, L // f_s, D]``."""
        if self.external_scales is not None:
            raise ValueError(
                f"{self.name}: this backbone was built with external_scales="
                f"{list(self.external_scales)}; call forward_scales([x_1, ..., x_"
                f"{len(self.external_scales)}]) with one [batch, L_s, {self.n_features}] tensor "
                "per timeframe instead of forward(x)"
            )
        self.check_input(x, dt)
        assert isinstance(self.config, MSAConfig)
        if self.pyramid:  # level 0 only; the pyramid pools the coarser levels itself
            return [end_aligned_pool(self.input_proj(x), self.config.scales[0])]
        projected = self.input_proj(x).split(self.d_model, dim=-1)  # S x [B, L, D]
        return [
            end_aligned_pool(z, f)  # [B, L // f, D]
            for z, f in zip(projected, self.config.scales, strict=True)
        ]

    def _external_tokens(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """Timeframes ``x_s [B, L_s, F]`` (checked) -> projected tokens ``[B, L_s, D]``."""
        if self.external_scales is None:
            raise ValueError(
                f"{self.name}: forward_scales needs a backbone built with external_scales=[...]; "
                "this one pools a Box window in-window: call forward(x)"
            )
        if isinstance(xs, Tensor) or len(xs) != self.n_scales:
            got = "a single tensor" if isinstance(xs, Tensor) else f"{len(xs)} tensors"
            raise ValueError(
                f"{self.name}: forward_scales expects a list of {self.n_scales} tensors (one per "
                f"timeframe, window lengths {list(self.external_scales)}), got {got}"
            )
        batch = None
        for s, (x, length) in enumerate(zip(xs, self.external_scales, strict=True)):
            if x.dim() != 3 or x.shape[1] != length or x.shape[2] != self.n_features:
                raise ValueError(
                    f"{self.name}: timeframe {s} must have shape [batch, {length}, "
                    f"{self.n_features}] (window length {length}, n_features="
                    f"{self.n_features}), got {tuple(x.shape)}"
                )
            if batch is not None and x.shape[0] != batch:
                raise ValueError(
                    f"{self.name}: all timeframes must have the same batch size; timeframe 0 "
                    f"has {batch}, timeframe {s} has {x.shape[0]}"
                )
            batch = x.shape[0]
        weights = self.input_proj.weight.split(self.d_model, dim=0)  # S x [D, F]
        biases = self.input_proj.bias.split(self.d_model, dim=0)  # S x [D]
        return [
            F.linear(x, w, b)  # [B, L_s, D]
            for x, w, b in zip(xs, weights, biases, strict=True)
        ]

    def _positions(self, scale: int, n_tokens: int) -> Tensor:
        """Positional rows for ``n_tokens`` tokens of ``scale``, oldest first: ``[T_s, D]``.

        The token of age ``a`` (0 = latest) gets row ``P - 1 - min(a, P - 1)``."""
        table = self.pos_emb[scale]  # [P, D]
        n_rows = table.shape[0]
        if n_tokens <= n_rows:
            return table[n_rows - n_tokens :]  # [T_s, D]
        far_past = table[:1].expand(n_tokens - n_rows, -1)  # [T_s - P, D]
        return torch.cat([far_past, table], 0)  # [T_s, D]

    def _encode(self, tokens: list[Tensor]) -> list[Tensor]:
        """Parallel scales: projected tokens ``[B, L_s, D]`` per scale -> each scale's own
        encoder's output ``[B, L_s, D]``."""
        return [
            enc(z + self._positions(s, z.shape[1]))  # [B, L_s, D]
            for s, (z, enc) in enumerate(zip(tokens, self.encoders, strict=True))
        ]

    def _pyramid(self, level: Tensor) -> list[Tensor]:
        """The attention pyramid: level-0 tokens ``[B, L_0, D]`` -> encoded levels
        ``[B, L_s, D]``; level ``s + 1`` is the end-aligned average pool of level ``s``'s
        encoder output by ``scales[s+1] / scales[s]`` (the oldest remainder dropped, as in
        :func:`end_aligned_pool`), so ``L_s = L // scales[s]``."""
        scales = self.config.scales  # type: ignore[attr-defined]
        encoded: list[Tensor] = []
        for s, enc in enumerate(self.encoders):
            if s:
                level = end_aligned_pool(encoded[-1], scales[s] // scales[s - 1])
            encoded.append(enc(level + self._positions(s, level.shape[1])))  # [B, L_s, D]
        return encoded

    def _core(
        self, encoded: list[Tensor], with_weights: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Encoded tokens ``[B, L_s, D]`` per scale (finest first) ->
        ``([B, D], diagnostics)``."""
        batch = encoded[0].shape[0]
        d, heads = self.d_model, self.config.n_heads  # type: ignore[attr-defined]
        # Multi-resolution attention: each scale's last token queries every scale's tokens.
        queries = torch.stack([e[:, -1] for e in encoded], 1)  # [B, S, D]
        keys = torch.cat(encoded, 1)  # [B, T, D]
        q = self.mr_q(queries).view(batch, self.n_scales, heads, d // heads).transpose(1, 2)
        k, v = (
            self.mr_kv(keys).view(batch, keys.shape[1], 2, heads, d // heads)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )  # [B, H, T, D/H] each
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)  # [B, H, S, T]
        attn = scores.softmax(-1)  # [B, H, S, T]
        mixed = (attn @ v).transpose(1, 2).reshape(batch, self.n_scales, d)  # [B, S, D]
        summaries = self.mr_norm(queries + self.mr_out(mixed))  # [B, S, D]
        if self.fusion_mlp is not None:
            out = self.fusion_mlp(summaries.reshape(batch, self.n_scales * d))  # [B, D]
            if not with_weights:
                return out, {}
            return out, self._attention_diagnostics(attn, encoded)
        # Cross-scale fusion: static softmax weights times dynamic sigmoid gates, renormalised
        # (in log space: a product of underflowing gates cannot divide by zero).
        gate_logits = self.gate(summaries.reshape(batch, self.n_scales * d))  # [B, S]
        log_static = self.static_logits.log_softmax(0)  # [S]
        weights = (log_static + F.logsigmoid(gate_logits)).softmax(-1)  # [B, S]
        weighted = weights.unsqueeze(-1) * summaries  # [B, S, D]
        fused = weighted.sum(1)  # [B, D]
        # Hierarchical aggregation, coarsest to finest.
        agg = weighted[:, -1]  # [B, D]
        for s in range(self.n_scales - 2, -1, -1):
            agg = weighted[:, s] + F.silu(self.hier[s](agg))  # [B, D]
        out = self.out_norm(fused + self.out_proj(agg))  # [B, D]
        if not with_weights:
            return out, {}
        diagnostics = {
            **self._attention_diagnostics(attn, encoded),
            "scale_weights_static": log_static.exp(),
            "scale_gates": torch.sigmoid(gate_logits),
            "scale_weights": weights,
        }
        return out, {name: t.detach() for name, t in diagnostics.items()}

    def _attention_diagnostics(self, attn: Tensor, encoded: list[Tensor]) -> dict[str, Tensor]:
        """``attention``, ``scale_attention``, ``token_scale``, ``token_age`` (detached; see
        :meth:`explain_scales`) from the multi-resolution weights ``attn [B, H, S, T]``."""
        token_scale = torch.cat(
            [torch.full((e.shape[1],), s, dtype=torch.long) for s, e in enumerate(encoded)]
        ).to(attn.device)
        token_age = torch.cat([torch.arange(e.shape[1] - 1, -1, -1) for e in encoded])
        # Attention each key token receives, averaged over heads and querying scales [B, T],
        # summed per scale [B, S].
        received = attn.mean(dim=(1, 2))
        scale_attention = received.new_zeros(attn.shape[0], self.n_scales).index_add_(
            1, token_scale, received)
        diagnostics = {
            "attention": attn,
            "scale_attention": scale_attention,
            "token_scale": token_scale,
            "token_age": token_age.to(attn.device),
        }
        return {name: t.detach() for name, t in diagnostics.items()}


class MSAHeads(nn.Module):
    """Supervised heads on the backbone output ``z [B, d_model]``; every output is a LOGIT.

    Returns a dict:

    - ``"logits" [B, n_classes]``: class logits, order 0 sell / 1 hold / 2 buy; train with
      ``F.cross_entropy``.
    - one ``[B]`` direction logit per horizon (default ``"short"``, ``"medium"``, ``"long"``):
      ``P(up) = sigmoid(logit)``; train with ``F.binary_cross_entropy_with_logits`` (never a
      sigmoid followed by ``binary_cross_entropy``: it saturates and loses precision).
    - ``"regression" [B, n_horizons]`` (only when ``regression=True``): unbounded predictions
      (e.g. forward returns), one column per horizon in ``horizons`` order.

    :meth:`loss` computes the matching losses.
    """

    def __init__(
        self,
        d_model: int,
        n_classes: int = 3,
        horizons: Sequence[str] = ("short", "medium", "long"),
        regression: bool = False,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        names = tuple(horizons)
        if (
            not names
            or len(set(names)) != len(names)
            or {"logits", "regression"} & set(names)
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(
                "MSAHeads.horizons must be non-empty, unique, non-empty strings other than "
                f"'logits' and 'regression', got {horizons!r}"
            )
        if d_model <= 0 or n_classes < 2:
            raise ValueError(
                f"MSAHeads needs d_model > 0 and n_classes >= 2, got d_model={d_model}, "
                f"n_classes={n_classes}"
            )
        width = hidden or d_model
        self.horizons = names
        self.trunk = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, width), nn.SiLU(), nn.Dropout(dropout)
        )
        self.classifier = nn.Linear(width, n_classes)
        self.direction = nn.Linear(width, len(names))
        self.regressor = nn.Linear(width, len(names)) if regression else None

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """``z [B, d_model]`` -> dict of logits (see the class docstring)."""
        hidden = self.trunk(z)  # [B, W]
        out = {"logits": self.classifier(hidden)}  # [B, n_classes]
        direction = self.direction(hidden)  # [B, n_horizons]
        for i, name in enumerate(self.horizons):
            out[name] = direction[:, i]  # [B]
        if self.regressor is not None:
            out["regression"] = self.regressor(hidden)  # [B, n_horizons]
        return out

    def loss(
        self,
        outputs: Mapping[str, Tensor],
        labels: Tensor | None = None,
        directions: Mapping[str, Tensor] | None = None,
        targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Losses for the targets given (each optional); ``"total"`` is their sum.

        ``labels [B]`` class indices (cross-entropy on ``"logits"``); ``directions`` maps a
        horizon name to ``[B]`` targets in {0, 1} (BCE with logits); ``targets [B, n_horizons]``
        regression targets (MSE; needs ``regression=True``).
        """
        losses: dict[str, Tensor] = {}
        if labels is not None:
            losses["class"] = F.cross_entropy(outputs["logits"], labels)
        for name, target in (directions or {}).items():
            if name not in self.horizons:
                raise ValueError(f"unknown horizon {name!r}; valid: {list(self.horizons)}")
            losses[name] = F.binary_cross_entropy_with_logits(
                outputs[name], target.to(outputs[name].dtype)
            )
        if targets is not None:
            if "regression" not in outputs:
                raise ValueError("regression targets given but the heads have regression=False")
            losses["regression"] = F.mse_loss(outputs["regression"], targets)
        if not losses:
            raise ValueError("MSAHeads.loss needs at least one of labels, directions, targets")
        losses["total"] = torch.stack(list(losses.values())).sum()
        return losses
