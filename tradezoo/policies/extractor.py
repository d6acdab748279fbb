"""The one Stable-Baselines3 features extractor for every architecture in the zoo.

``SequenceExtractor(observation_space, arch="mamba", features_dim=64, **cfg)`` wraps any
registered backbone (:data:`~tradezoo.policies.registry.ARCHITECTURES`; ``cfg`` goes to the
architecture's config dataclass) and maps an observation to ``[B, features_dim]``:

Box ``(window, F)`` (the env's ``observation="box"``)::

    x [B, window, F] -> backbone -> [B, d_model] -> head -> [B, features_dim]

where ``head`` is ``Linear(d_model, features_dim)`` + ReLU, or the identity when
``d_model == features_dim``.

Dict (the env's ``observation="dict"``): keys that are timeframes (``"1h"``, ``"4h"``,
``"1d"``, ... parsed by :func:`tradezoo.data.parse_interval`), each a Box
``(window_tf, F)``, plus 1-D Box vectors such as ``"account"`` ``(4,)``. Timeframes are
ordered finest first (by minutes; gymnasium sorts ``Dict`` keys alphabetically, which would
put ``"1d"`` before ``"1h"``).

- ``arch="msa"``: the timeframes are the multi-scale attention's scales
  (``MSABackbone(F, config, external_scales=[window_tf ...])``, ``forward_scales([x_tf ...])``
  -> ``[B, d_model]``).
- any other architecture: one backbone per timeframe with its own weights (``.backbones``, a
  ``ModuleDict`` keyed by timeframe), outputs concatenated ``[B, n_tf * d_model]``.

The vectors (``"account"``; several are appended in key order) are concatenated **after** the
backbone output, then ``Linear(. , features_dim)`` + ReLU.

Elapsed time (the envs' ``include_dt=True``; keys of :mod:`tradezoo.data.elapsed`): a Dict may
carry, beside each window under key ``k``, that window's per-bar elapsed seconds ``[L]``
(unscaled) under ``dt_key(k)``: ``"dt"`` beside ``"window"``, ``"dt_4h"`` beside ``"4h"``. A
Dict of ``"window"`` (the Box layout ``(window, F)``) and ``"dt"`` is the Box observation with
its elapsed times: one backbone, ``.backbone``, as for a Box. Each window's backbone gets its
``dt`` (``backbone(x, dt)``) when it uses ``dt`` (:attr:`Backbone.uses_dt`: the liquid
networks); a window without a dt key is called with ``dt=None`` (uniform bars). ``msa`` takes
no ``dt``.

Validation happens here, at construction, from the observation space: an unknown
architecture or config key (listing the valid ones), a model whose estimated size exceeds
:data:`~tradezoo.policies.size.MAX_PARAMETERS` (before anything is allocated), a window
shorter than the architecture needs (:meth:`Backbone.check_window`: names the
architecture, the window and the need), a key that is neither a timeframe window nor a
vector. For configs with a ``window`` field (``mlp``) the window is filled from the space.

Attributes for :func:`tradezoo.policies.explain.explain` and warm-starting from supervised
checkpoints: ``.backbone`` (Box observations and the ``msa`` dict path; else ``None``),
``.backbones`` (dict observations with per-timeframe backbones; else ``None``), ``.arch``,
``.timeframes`` (finest first; empty for Box), ``.vector_keys``, ``.dt_keys`` (window key ->
its elapsed-time key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from tradezoo.data.elapsed import WINDOW_KEY, dt_key, is_dt_key, window_key_of
from tradezoo.data.intervals import parse_interval
from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.registry import get_architecture, make_config
from tradezoo.policies.size import check_model_size

__all__ = ["SequenceExtractor"]


def _head(in_dim: int, out_dim: int) -> nn.Module:
    """Projection to ``features_dim``; identity when the sizes already match."""
    if in_dim == out_dim:
        return nn.Identity()
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU())


def _window_shape(key: str, space: spaces.Space) -> tuple[int, int]:
    if not isinstance(space, spaces.Box) or len(space.shape) != 2:
        shape = getattr(space, "shape", None)
        raise ValueError(
            f"SequenceExtractor: observation {key!r} must be a Box of shape "
            f"(window, n_features), got {type(space).__name__} with shape {shape}"
        )
    window, n_features = (int(n) for n in space.shape)
    return window, n_features


class SequenceExtractor(BaseFeaturesExtractor):
    """Any zoo backbone as an SB3 features extractor (see the module docstring).

    Args:
        observation_space: ``Box(window, F)`` or a ``Dict`` of timeframe windows and vectors.
        arch: a name in :data:`~tradezoo.policies.registry.ARCHITECTURES`.
        features_dim: output width (what SB3's policy and value nets receive).
        **cfg: the architecture's config fields (``d_model``, ``n_layers``, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        arch: str = "mamba",
        features_dim: int = 64,
        **cfg: Any,
    ) -> None:
        architecture = get_architecture(arch)  # ValueError listing valid names
        if isinstance(features_dim, bool) or not isinstance(features_dim, int) or features_dim <= 0:
            raise ValueError(f"features_dim must be a positive integer, got {features_dim!r}")
        super().__init__(observation_space, features_dim)
        self.arch = arch
        self.backbone: Backbone | None = None
        self.backbones: nn.ModuleDict | None = None
        self.timeframes: list[str] = []
        self.vector_keys: list[str] = []
        self.windows: dict[str, int] = {}
        self.dt_keys: dict[str, str] = {}

        if isinstance(observation_space, spaces.Dict) and WINDOW_KEY in observation_space.spaces:
            self._init_window(observation_space, architecture.backbone_cls, cfg)
        elif isinstance(observation_space, spaces.Box):
            window, n_features = _window_shape("observation", observation_space)
            self.backbone = self._make(architecture.backbone_cls, window, n_features, cfg)
            self.head = _head(self.backbone.d_model, features_dim)
        elif isinstance(observation_space, spaces.Dict):
            self._init_dict(observation_space, architecture.backbone_cls, cfg)
        else:
            raise ValueError(
                f"SequenceExtractor: observation space must be a Box (window, n_features) or a "
                f"Dict of timeframe windows, got {type(observation_space).__name__}"
            )

    # -- construction ---------------------------------------------------------------------

    def _config(self, backbone_cls: type[Backbone], window: int, cfg: dict[str, Any],
                where: str) -> BackboneConfig:
        """The config for one window; ``window`` filled in when the config has that field."""
        cfg = dict(cfg)
        if "window" in backbone_cls.config_cls.field_names() and cfg.get("window") is None:
            cfg["window"] = window
        config = make_config(self.arch, **cfg)
        try:
            backbone_cls.check_window(config, window)
        except ValueError as error:
            raise ValueError(f"SequenceExtractor ({where}): {error}") from None
        return config

    def _make(self, backbone_cls: type[Backbone], window: int, n_features: int,
              cfg: dict[str, Any], where: str = "observation") -> Backbone:
        config = self._config(backbone_cls, window, cfg, where)
        # Refuse a config whose model would not fit in memory before allocating anything.
        check_model_size(self.arch, n_features, window, config, features_dim=self.features_dim,
                         where=f"SequenceExtractor ({where})")
        return backbone_cls(n_features, config)

    def _check_dt_keys(self, space: spaces.Dict, windows: Mapping[str, int]) -> None:
        """Pair each elapsed-time key with its window (same length, 1-D) in :attr:`dt_keys`."""
        for key, sub in space.spaces.items():
            if not is_dt_key(key):
                continue
            target = window_key_of(key)
            shape = getattr(sub, "shape", None)
            if target not in windows or not isinstance(sub, spaces.Box) or shape != (
                    windows[target],):
                raise ValueError(
                    f"SequenceExtractor: elapsed-time key {key!r} must be a Box of shape "
                    f"(window,) beside a window {target!r}; windows "
                    f"{dict(windows)}, got {type(sub).__name__} with shape {shape}"
                )
            self.dt_keys[target] = key

    def _init_window(self, space: spaces.Dict, backbone_cls: type[Backbone],
                     cfg: dict[str, Any]) -> None:
        """``{"window": Box(window, F), "dt": Box(window,)}``: one backbone, as for a Box."""
        extra = sorted(set(space.spaces) - {WINDOW_KEY, dt_key(WINDOW_KEY)})
        if extra:
            raise ValueError(
                f"SequenceExtractor: a dict observation with {WINDOW_KEY!r} holds only it and "
                f"{dt_key(WINDOW_KEY)!r}; got also {extra}"
            )
        window, n_features = _window_shape(WINDOW_KEY, space.spaces[WINDOW_KEY])
        self._check_dt_keys(space, {WINDOW_KEY: window})
        self.windows = {WINDOW_KEY: window}
        self.backbone = self._make(backbone_cls, window, n_features, cfg)
        self.head = _head(self.backbone.d_model, self.features_dim)

    def _init_dict(self, space: spaces.Dict, backbone_cls: type[Backbone],
                   cfg: dict[str, Any]) -> None:
        minutes: dict[str, float] = {}
        shapes: dict[str, tuple[int, int]] = {}
        vector_dim = 0
        for key, sub in space.spaces.items():
            if is_dt_key(key):
                continue  # paired with its window below
            if isinstance(sub, spaces.Box) and len(sub.shape) == 1:
                self.vector_keys.append(key)
                vector_dim += int(sub.shape[0])
                continue
            try:
                minutes[key] = parse_interval(key).minutes
            except ValueError as error:
                raise ValueError(
                    f"SequenceExtractor: dict observation key {key!r} is neither a timeframe "
                    f"window nor a 1-D vector such as 'account' ({error})"
                ) from None
            shapes[key] = _window_shape(key, sub)
        if not minutes:
            raise ValueError(
                f"SequenceExtractor: dict observation has no timeframe window "
                f"(keys {list(space.spaces)})"
            )
        self.vector_keys.sort()
        self.timeframes = sorted(minutes, key=lambda k: (minutes[k], k))  # finest first
        self.windows = {tf: shapes[tf][0] for tf in self.timeframes}
        self._check_dt_keys(space, self.windows)

        if self.arch == "msa":
            n_features = {shapes[tf][1] for tf in self.timeframes}
            if len(n_features) != 1:
                raise ValueError(
                    "SequenceExtractor: arch 'msa' uses the timeframes as scales of one model, "
                    "so every timeframe needs the same feature count; got "
                    f"{ {tf: shapes[tf][1] for tf in self.timeframes} }"
                )
            windows = [self.windows[tf] for tf in self.timeframes]
            config = make_config(self.arch, **cfg)
            check_model_size(self.arch, n_features.copy().pop(), max(windows), config,
                             features_dim=self.features_dim, where="SequenceExtractor")
            self.backbone = backbone_cls(  # type: ignore[call-arg]
                n_features.pop(), config, external_scales=windows
            )
            encoded = self.backbone.d_model
        else:
            backbones = {
                tf: self._make(backbone_cls, self.windows[tf], shapes[tf][1], cfg,
                               where=f"timeframe {tf!r}")
                for tf in self.timeframes
            }
            self.backbones = nn.ModuleDict(backbones)
            encoded = sum(b.d_model for b in backbones.values())
        # The account vector joins after the backbones: it is not a sequence.
        self.head = nn.Sequential(nn.Linear(encoded + vector_dim, self.features_dim), nn.ReLU())

    # -- forward --------------------------------------------------------------------------

    def window_dt(self, observations: Tensor | Mapping[str, Tensor], key: str
                  ) -> Tensor | None:
        """Elapsed seconds ``[B, L]`` of the window under ``key``, ``None`` when the
        observation carries none (regular bars)."""
        if not isinstance(observations, Mapping) or key not in self.dt_keys:
            return None
        return observations.get(self.dt_keys[key])

    def _call(self, backbone: nn.Module, observations: Tensor | Mapping[str, Tensor], x: Tensor,
              key: str) -> Tensor:
        """``backbone(x, dt)`` with the window's ``dt`` when the backbone uses it."""
        if getattr(backbone, "uses_dt", False):
            return backbone(x, self.window_dt(observations, key))
        return backbone(x)

    def encode(self, observations: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Backbone output(s) before the head: ``[B, d_model]`` (Box, or a Dict of ``"window"``
        and ``"dt"``) or ``[B, encoded + vectors]`` (dict)."""
        if self.backbone is not None and not self.timeframes:
            x = observations[WINDOW_KEY] if isinstance(observations, Mapping) else observations
            return self._call(self.backbone, observations, x, WINDOW_KEY)  # [B, D]
        assert isinstance(observations, Mapping)
        windows = [observations[tf] for tf in self.timeframes]  # each [B, L_tf, F]
        if self.backbones is None:
            assert self.backbone is not None
            parts = [self.backbone.forward_scales(windows)]  # [B, D]
        else:
            parts = [self._call(self.backbones[tf], observations, x, tf)
                     for tf, x in zip(self.timeframes, windows, strict=True)]
        parts += [observations[key] for key in self.vector_keys]  # each [B, V]
        return torch.cat(parts, dim=-1)  # [B, encoded + vectors]

    def forward(self, observations: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Observation batch -> ``[B, features_dim]``."""
        return self.head(self.encode(observations))  # [B, features_dim]
