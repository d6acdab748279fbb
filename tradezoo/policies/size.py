"""The size bound on architectures: parameters estimated from a config before anything is built.

A config comes from the user or from a checkpoint someone else wrote, and one wrong number
(``d_model=1_000_000``) would make the constructor try to allocate terabytes. Every model the
zoo builds is checked first::

    estimate_parameters(arch, n_features, window, config)   # backbone only, no allocation
    check_model_size(arch, n_features, window, config, features_dim=..., extra_widths=...)

:data:`MAX_PARAMETERS` (1e9 parameters, 4 GB of float32 weights, before optimiser state) is
the one limit. The estimate is each architecture's parameter count written out from its
config (the weight matrices and vectors its constructor makes, plus position tables kept as
buffers): exact for most architectures, and within 10% below to 2x above the built module's
count for the others (tested), which is all a bound on terabyte mistakes needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tradezoo.errors import ConfigError
from tradezoo.policies.base import BackboneConfig
from tradezoo.policies.registry import make_config

__all__ = ["MAX_PARAMETERS", "ModelTooLargeError", "check_model_size", "estimate_parameters"]

MAX_PARAMETERS = 1_000_000_000
"""Largest model (backbone + heads, parameters and position tables) tradezoo builds."""


class ModelTooLargeError(ConfigError):
    """A config whose model would exceed :data:`MAX_PARAMETERS`."""


def _mamba_block(d: int, expand: int, d_state: int, d_conv: int, dt_rank: int | None,
                 bias: bool = True, conv_bias: bool = True) -> int:
    """One Mamba mixer of width ``d`` (in/out projections, conv, SSM parameters); ``bias``
    and ``conv_bias`` as :class:`~tradezoo.policies.mamba.MambaConfig`'s."""
    e = expand * d
    rank = dt_rank if dt_rank is not None else math.ceil(d / 16)
    return (d * 2 * e + 2 * e * bias  # in_proj
            + e * (d_conv + conv_bias)  # depthwise conv
            + e * (rank + 2 * d_state)  # x_proj
            + rank * e + e  # dt_proj
            + e * d_state + e  # A_log, D
            + e * d + d * bias)  # out_proj


def _mamba(c: Any, f: int, w: int) -> int:
    layer = _mamba_block(c.d_model, c.expand, c.d_state, c.d_conv, c.dt_rank, c.bias,
                         c.conv_bias) + c.d_model
    return f * c.d_model + c.d_model + c.n_layers * layer + c.d_model


def _mambats(c: Any, f: int, w: int) -> int:
    d = c.d_model
    scans = sum(_mamba_block(d, m.expand, m.d_state, m.d_conv, m.dt_rank, m.bias, m.conv_bias)
                for m in (c.mamba_config(c.d_conv), c.mamba_config(1)))  # time, variables
    layer = scans + 2 * d + (2 * d * d + d)  # two pre-norms, the gate or the fusion Linear
    if c.channel_mixing in ("hidden", "both"):  # RMSNorm, Linear(d -> h), Linear(h -> d)
        hidden = max(1, round(c.mlp_ratio * d))
        layer += d + 2 * d * hidden + hidden + d
    if c.channel_mixing in ("variables", "both"):  # RMSNorm, Linear(F -> h), Linear(h -> F)
        hidden = max(1, round(c.mlp_ratio * f))
        layer += d + 2 * f * hidden + hidden + f
    revin = 2 * f if c.revin_affine else 0
    return (revin + c.max_patches * d + f * d + c.patch_len * d + d + c.n_layers * layer
            + d + d * d + 2 * d)


def _msa(c: Any, f: int, w: int) -> int:
    d, s = c.d_model, len(c.scales)
    encoder = 4 * d + 4 * d * d + 4 * d + 2 * c.ff_mult * d * d + c.ff_mult * d + d
    layers = sum(c.depths) if c.depths is not None else s * c.n_layers
    projections = 1 if c.hierarchy == "pyramid" else s  # the pyramid's level 0 reads the bars
    if c.fusion == "mlp":  # Linear(d S -> 2d), Linear(2d -> d)
        fusion = s * d * 2 * d + 2 * d + 2 * d * d + d
    else:  # static logits, gates, hierarchical maps, output projection and norm
        fusion = s + s * s * d + s + s * (d * d + d) + 2 * d
    return (s * c.max_positions * d + projections * (f * d + d) + layers * encoder + s * 2 * d
            + 4 * d * d + 6 * d + fusion)


def _timeparticle(c: Any, f: int, w: int) -> int:
    d, p = c.d_model, c.n_particles
    convolutions = (2 ** (p + 1) - 2) * d + p * d  # kernels 2**k, k = 1..p, and biases
    layer = (convolutions
             + 4 * p * d * d + 2 * p * d  # w_in, u_rec, b_in
             + 3 * d * d  # qkv
             + p * d * p + p  # w_beta
             + d * d + d + 2 * d  # w_out, LayerNorm
             + 2 * d)  # col_scale (buffer)
    if c.message_feedback:  # C = [C_g | C_h]
        layer += 2 * p * d * d
    if c.particle_outputs:  # D^(k), d^(k)
        layer += p * d * d + p * d
    return f * d + d + c.n_layers * layer


def _cfc(c: Any, f: int, w: int) -> int:
    d = c.d_model
    if c.wiring is not None:  # sparse NCP layers: at most a dense d x (f + d) per gate
        return 4 * d * (f + d + 1) + d * (d + 1) + 2 * d
    units, layers = c.backbone_units, c.backbone_layers or 1
    backbone = units * (f + d + 1) + (layers - 1) * (units * units + units)
    return backbone + 4 * (d * units + d) + 2 * d


def _ltc(c: Any, f: int, w: int) -> int:
    d = c.d_model
    return 5 * d * d + 4 * f * d + 16 * d + 2 * f


def _recurrent(gates: int) -> Callable[[Any, int, int], int]:
    def estimate(c: Any, f: int, w: int) -> int:
        d = c.d_model
        first = gates * (d * (f + d) + 2 * d)
        return first + (c.n_layers - 1) * gates * (2 * d * d + 2 * d)

    return estimate


def _transformer(c: Any, f: int, w: int) -> int:
    d = c.d_model
    layer = (4 + 2 * c.ff_mult) * d * d + (9 + c.ff_mult) * d
    tables = 2 if c.positions == "learned" else 1
    return f * d + d + c.n_layers * layer + 2 * d + tables * c.max_len * d


def _mlp(c: Any, f: int, w: int) -> int:
    window = c.window if c.window is not None else w
    h = c.hidden
    return (window * f + 1) * h + (c.n_layers - 1) * (h * h + h) + (h + 1) * c.d_model


_ESTIMATES: dict[str, Callable[[Any, int, int], int]] = {
    "mamba": _mamba,
    "mambats": _mambats,
    "msa": _msa,
    "timeparticle": _timeparticle,
    "cfc": _cfc,
    "ltc": _ltc,
    "lstm": _recurrent(4),
    "gru": _recurrent(3),
    "transformer": _transformer,
    "mlp": _mlp,
}


def _generic(c: BackboneConfig, f: int, w: int) -> int:
    """An architecture without its own formula: every integer field taken as a width, a
    dense layer per pair (a deliberate over-estimate)."""
    widths = [v for field in dataclasses.fields(c)
              if isinstance(v := getattr(c, field.name), int) and not isinstance(v, bool)]
    total = sum(widths) + f + w
    return total * total


def estimate_parameters(arch: str, n_features: int, window: int,
                        config: BackboneConfig | Mapping[str, Any]) -> int:
    """Parameters (and position tables) of backbone ``arch`` for ``config``, without building
    it.

    Args:
        arch: a registry name.
        n_features: input columns of the backbone.
        window: bars per observation (``mlp`` sizes its first layer by it).
        config: the backbone config, or its fields as a dict (validated by
            :func:`~tradezoo.policies.registry.make_config`).

    Returns:
        The estimate (a Python int; see the module docstring for its accuracy).
    """
    cfg = config if isinstance(config, BackboneConfig) else make_config(arch, **dict(config))
    return int(_ESTIMATES.get(arch, _generic)(cfg, int(n_features), int(window)))


def _dense_chain(widths: Sequence[int]) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def check_model_size(
    arch: str,
    n_features: int,
    window: int,
    config: BackboneConfig | Mapping[str, Any],
    *,
    features_dim: int | None = None,
    heads: Sequence[Sequence[int]] = (),
    where: str = "",
) -> int:
    """Refuse a model whose estimated size exceeds :data:`MAX_PARAMETERS`.

    Args:
        arch, n_features, window, config: as :func:`estimate_parameters`.
        features_dim: the extractor's output width (adds ``Linear(d_model, features_dim)``).
        heads: widths of dense heads after the extractor, each starting at ``features_dim``
            (e.g. the policy's ``[features_dim, 64, 3]``).
        where: what the config came from, for the message (a checkpoint path, ``"config"``).

    Returns:
        The estimate.

    Raises:
        ModelTooLargeError: above the limit (names the architecture, the config's sizes, the
            estimate and the limit).
    """
    cfg = config if isinstance(config, BackboneConfig) else make_config(arch, **dict(config))
    total = estimate_parameters(arch, n_features, window, cfg)
    for width in (features_dim, *[w for head in heads for w in head]):
        if width is not None and (isinstance(width, bool) or not isinstance(width, int)
                                  or width <= 0):
            raise ValueError(f"{where or 'model'}: layer widths must be positive integers, "
                             f"got {width!r}")
    if features_dim is not None:
        total += cfg.d_model * features_dim + features_dim
    total += sum(_dense_chain(list(head)) for head in heads)
    if total > MAX_PARAMETERS:
        sizes = {k: v for k, v in dataclasses.asdict(cfg).items()
                 if isinstance(v, int) and not isinstance(v, bool)}
        raise ModelTooLargeError(
            f"{where + ': ' if where else ''}architecture {arch!r} with {sizes}"
            f"{f', features_dim {features_dim}' if features_dim is not None else ''} would have "
            f"about {total:.3g} parameters, above the limit of {MAX_PARAMETERS:.0e} "
            "(tradezoo.policies.size.MAX_PARAMETERS); use smaller sizes"
        )
    return total
