"""``explain(model, x)``: each architecture's diagnostics for an observation batch.

Accepts a :class:`~tradezoo.policies.base.Backbone`, a
:class:`~tradezoo.policies.extractor.SequenceExtractor`, an SB3 policy whose features extractor
is one, or an SB3 algorithm (``PPO``...). ``x`` is a tensor or numpy observation, batched or
single: a window ``[B, L, F]`` / ``[L, F]`` (Box) or a mapping of them (dict observations).
What comes back is the backbone's :meth:`~tradezoo.policies.base.Backbone.explain` dict
(attention and scale weights for ``msa``, beta weights and per-particle trends for
``timeparticle``, effective time constants for ``cfc``/``ltc``, delta statistics for ``mamba``,
...), its keys prefixed by the timeframe (``"4h/hidden_norm"``) when a dict observation has one
backbone per timeframe.

**Elapsed time.** The liquid networks' diagnostics depend on each bar's elapsed seconds ``dt``.
An observation of the envs' ``include_dt=True`` (``{"window": ..., "dt": ...}``, or timeframe
windows with ``"dt_<tf>"``) carries them, and ``explain`` passes them on as the extractor's
forward does; an explicit ``dt=`` argument takes precedence. Without either, bars count as
regular (``dt=None``).

**Decomposition bands in ``msa``.** With ``feature_names`` (the observation's leading columns,
e.g. ``data.feature_names``) holding causal wavelet or VMD columns (docs/data.md, "Causal
decompositions"), an ``msa`` model's result gains ``band_attention/<band> [B, S]`` per band
(``wav_d1``... ``wav_a4``, ``vmd_1``...) and ``band_attention/other [B, S]`` (every other
column, bias included in none): the attention scale ``s`` receives (``scale_attention``),
split over its tokens' inputs. A token's input projection is linear,
``z = sum_k x_k W_k + b`` over column groups ``k``, so each received attention weight is
divided among the groups in proportion to ``||x_k W_k||``; summed over groups it is
``scale_attention``. This is a first-order attribution at the model's input (the encoders
mix tokens afterwards), a guide to which frequency bands the attended tokens carry, not a
measured causal effect.

Modules run in eval mode (no dropout, no MambaTS training permutation) and their training
flags are restored afterwards; the inputs are moved to the model's device and the model runs
there, and tensors come back detached and on the CPU, whatever that device: diagnostics are
read, plotted or saved (``.numpy()``), and the same call gives the same kind of result on a
CPU-only and on a CUDA machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from tradezoo.data.decompositions import band_columns
from tradezoo.data.elapsed import WINDOW_KEY, dt_key
from tradezoo.policies.base import Backbone
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.msa import MSABackbone, end_aligned_pool

__all__ = ["explain"]

ArrayLike = Tensor | np.ndarray
Observation = ArrayLike | Mapping[str, ArrayLike]


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; each submodule's own training flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _as_batch(value: ArrayLike, sample_ndim: int, device: torch.device, name: str) -> Tensor:
    """float32 tensor on ``device`` with a leading batch axis (added to a single sample)."""
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    tensor = tensor.to(device=device, dtype=torch.float32)
    if tensor.dim() == sample_ndim:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != sample_ndim + 1:
        raise ValueError(
            f"explain: {name} must have {sample_ndim} dims (one sample) or {sample_ndim + 1} "
            f"(a batch), got shape {tuple(tensor.shape)}"
        )
    return tensor


def _resolve(model: Any) -> Backbone | SequenceExtractor:
    """The backbone or extractor inside ``model`` (algorithm -> policy -> extractor)."""
    policy = getattr(model, "policy", None)
    if isinstance(policy, nn.Module) and not isinstance(model, nn.Module):
        model = policy  # an SB3 algorithm
    if isinstance(model, (Backbone, SequenceExtractor)):
        return model
    extractor = getattr(model, "pi_features_extractor", None) or getattr(
        model, "features_extractor", None
    )
    if isinstance(extractor, SequenceExtractor):
        return extractor
    raise TypeError(
        "explain: model must be a Backbone, a SequenceExtractor, an SB3 policy using "
        f"SequenceExtractor, or an SB3 algorithm with such a policy; got {type(model).__name__}"
    )


def _explain_extractor(
    extractor: SequenceExtractor, x: Observation, dt: Any
) -> dict[str, Tensor]:
    device = _device_of(extractor)
    space = extractor._observation_space
    windowed = isinstance(space, spaces.Dict) and WINDOW_KEY in extractor.windows
    if isinstance(space, spaces.Box) or windowed:
        if isinstance(x, Mapping):
            if not windowed:
                raise ValueError("explain: this model takes a Box window, got a dict "
                                 "observation")
            if dt is None:
                dt = x.get(dt_key(WINDOW_KEY))
            x = x[WINDOW_KEY]
        assert extractor.backbone is not None
        xb = _as_batch(x, 2, device, "x")
        dtb = None if dt is None else _as_batch(dt, 1, device, "dt")
        return dict(extractor.backbone.explain(xb, dtb))
    if not isinstance(x, Mapping):
        raise ValueError(
            f"explain: this model takes dict observations with keys {list(extractor.timeframes)}"
            f" + {extractor.vector_keys}, got {type(x).__name__}"
        )
    missing = [tf for tf in extractor.timeframes if tf not in x]
    if missing:
        raise ValueError(f"explain: dict observation lacks timeframe(s) {missing}")
    windows = {tf: _as_batch(x[tf], 2, device, f"x[{tf!r}]") for tf in extractor.timeframes}
    if extractor.backbones is None:  # msa: timeframes are its scales
        assert extractor.backbone is not None
        backbone: Any = extractor.backbone
        return dict(backbone.explain_scales([windows[tf] for tf in extractor.timeframes]))
    out: dict[str, Tensor] = {}
    for tf in extractor.timeframes:
        given = dt[tf] if dt is not None and tf in dt else x.get(dt_key(tf))
        dt_tf = None if given is None else _as_batch(given, 1, device, f"dt[{tf!r}]")
        for key, value in extractor.backbones[tf].explain(windows[tf], dt_tf).items():
            out[f"{tf}/{key}"] = value
    return out


def _band_groups(feature_names: Sequence[str], n_features: int) -> dict[str, list[int]]:
    """Decomposition bands -> column indices, plus ``"other"`` (every remaining column)."""
    names = [str(n) for n in feature_names]
    if len(names) > n_features:
        raise ValueError(f"explain: {len(names)} feature_names for a model of {n_features} "
                         "input columns")
    bands = band_columns(names)
    if not bands:
        raise ValueError("explain: feature_names hold no decomposition column (wav_*, vmd_*; "
                         "FeatureSpec.wavelet / FeatureSpec.vmd): no band to report")
    used = {i for cols in bands.values() for i in cols}
    other = [i for i in range(n_features) if i not in used]
    return {**bands, "other": other} if other else bands


def _band_attention(backbone: MSABackbone, inputs: Sequence[Tensor],
                    diagnostics: Mapping[str, Tensor], feature_names: Sequence[str]
                    ) -> dict[str, Tensor]:
    """``band_attention/<band> [B, S]`` (module docstring) from each scale's token inputs
    ``inputs[s] [B, L_s, F]`` (pooled bars, or a timeframe's window)."""
    groups = _band_groups(feature_names, backbone.n_features)
    received = diagnostics["attention"].mean(dim=(1, 2))  # [B, T]
    weights = backbone.token_input_weights()  # S x [D, F]
    per_scale: list[Tensor] = []  # S x [B, K]
    start = 0
    for x_s, w_s in zip(inputs, weights, strict=True):
        norms = torch.stack([
            torch.linalg.vector_norm(x_s[..., cols] @ w_s[:, cols].T, dim=-1)  # [B, L_s]
            for cols in groups.values()
        ], -1)  # [B, L_s, K]
        total = norms.sum(-1, keepdim=True)
        shares = torch.where(total > 0, norms / total.clamp_min(torch.finfo(norms.dtype).tiny),
                             1.0 / len(groups))
        tokens = received[:, start: start + x_s.shape[1]]  # [B, L_s]
        per_scale.append((tokens.unsqueeze(-1) * shares).sum(1))  # [B, K]
        start += x_s.shape[1]
    stacked = torch.stack(per_scale, 1)  # [B, S, K]
    return {f"band_attention/{band}": stacked[..., k] for k, band in enumerate(groups)}


def _msa_of(target: Backbone | SequenceExtractor) -> MSABackbone | None:
    backbone = target.backbone if isinstance(target, SequenceExtractor) else target
    return backbone if isinstance(backbone, MSABackbone) else None


def explain(model: Any, x: Observation, dt: Any = None, *,
            feature_names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Architecture diagnostics for observation(s) ``x`` (see the module docstring).

    Args:
        model: a Backbone, a SequenceExtractor, an SB3 policy or an SB3 algorithm.
        x: ``[B, L, F]`` or ``[L, F]`` (tensor or numpy), or a mapping timeframe -> window
            for dict observations (extra keys such as ``"account"`` are ignored).
        dt: optional seconds since the previous bar, ``[B, L]`` / ``[L]`` (a mapping per
            timeframe for dict observations); only backbones with ``uses_dt`` use it. Default:
            the observation's own (``"dt"``, ``"dt_<tf>"``; module docstring).
        feature_names: names of the observation's leading columns (``msa`` only); when they
            include decomposition bands, ``band_attention/<band>`` is added (module
            docstring). Columns past the names (account state) count as ``other``.

    Returns:
        ``{name: detached CPU tensor}`` (dtype as the backbone computed it); keys prefixed
        ``"<timeframe>/"`` for per-timeframe backbones.
    """
    target = _resolve(model)
    msa = _msa_of(target)
    if feature_names is not None and msa is None:
        raise ValueError("explain: feature_names (band attention) is reported for msa models "
                         "only")
    with _eval_mode(target), torch.no_grad():
        if isinstance(target, SequenceExtractor):
            result = _explain_extractor(target, x, dt)
        else:
            if isinstance(x, Mapping):
                raise ValueError("explain: a Backbone takes a window [B, L, F], not a dict")
            device = _device_of(target)
            xb = _as_batch(x, 2, device, "x")
            dtb = None if dt is None else _as_batch(dt, 1, device, "dt")
            result = dict(target.explain(xb, dtb))
        if feature_names is not None:
            assert msa is not None
            result.update(_band_attention(msa, _msa_inputs(target, msa, x), result,
                                          feature_names))
    return {key: value.detach().cpu() for key, value in result.items()}


def _msa_inputs(target: Backbone | SequenceExtractor, msa: MSABackbone, x: Observation
                ) -> list[Tensor]:
    """Each scale's token inputs ``[B, L_s, F]``: the pooled window, or each timeframe."""
    device = _device_of(msa)
    if isinstance(x, Mapping):
        assert isinstance(target, SequenceExtractor)
        return [_as_batch(x[tf], 2, device, f"x[{tf!r}]") for tf in target.timeframes]
    xb = _as_batch(x, 2, device, "x")
    return [end_aligned_pool(xb, f) for f in msa.config.scales]  # type: ignore[attr-defined]
