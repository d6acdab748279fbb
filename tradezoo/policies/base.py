"""The contract every backbone in the zoo follows.

A backbone maps a window of bars to one vector::

    x  [B, L, F]  float32 features, oldest bar first (the env's Box observation layout)
    dt [B, L]     optional; seconds since the previous bar (irregular sampling); ``None``
                  means uniform spacing (each step counts as 1.0 in the liquid networks)
    -> [B, d_model]

Each architecture lives in its own module next to this one and defines a typed dataclass
config (a subclass of :class:`BackboneConfig`) and a :class:`Backbone` subclass. The registry
(:mod:`tradezoo.policies.registry`) maps names to both; the one SB3 extractor
(:mod:`tradezoo.policies.extractor`) wraps any of them.

Rules every backbone keeps (the shared tests in ``tests/test_backbones.py`` check them for
every registered name):

- ``forward`` accepts any ``L >= min_window(config)``; a shorter window is a ``ValueError``
  raised by :meth:`Backbone.check_window` at construction time by the extractor (from the
  observation space) and at the first forward pass otherwise.
- A feature count other than ``n_features`` is a ``ValueError`` naming both numbers
  (:meth:`Backbone.check_input`).
- Backbones that emit a sequence implement :meth:`Backbone.forward_sequence` (``[B, L, D]``);
  it must be causal: position ``i`` depends on inputs ``<= i`` only.
- :meth:`Backbone.explain` returns architecture diagnostics as a dict of detached tensors.
- :meth:`Backbone.no_weight_decay` names the parameters AdamW must not decay (as in
  ``mamba_ssm``: ``A_log`` and ``D``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tradezoo.data.checks import FieldChecks


@dataclass
class BackboneConfig:
    """Fields shared by every architecture's config.

    Attributes:
        d_model: width of the backbone's output vector (and, for most, of its hidden state).
    """

    d_model: int = 64

    #: Field -> the value a saved config that lacks the field had: the form of the model from
    #: before the field existed (needed where it is not the field's default). A saved
    #: config holds every field (:meth:`to_dict`), so a missing field means it was saved
    #: before the field was added; :meth:`restore_saved` fills it from here, never from
    #: today's default, so an old checkpoint rebuilds the model it was.
    saved_absent: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        """Integer sizes must be positive; subclasses check their own other fields with
        :class:`~tradezoo.data.checks.FieldChecks` after calling this."""
        check = FieldChecks(self)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and isinstance(value, int):
                check.require(value > 0, f"{field.name} must be a positive integer, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/YAML/checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def restore_saved(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a saved config (a checkpoint's ``arch_config``) with those it lacks
        set as :attr:`saved_absent` says (other missing fields take their defaults, which
        are the forms those configs had). Only saved configs go through it: a config a user
        writes is partial on purpose and takes the defaults."""
        return {**{k: v for k, v in cls.saved_absent.items() if k not in saved}, **saved}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def for_device(self, device: torch.device) -> tuple[BackboneConfig, str | None]:
        """This config as it can run on ``device``: ``(config, None)`` when it runs there
        unchanged, else a copy whose device-specific backend (a compiled CPU kernel, a CUDA
        package) is replaced by ``"auto"`` and a note saying why. A saved config goes through
        it before a model is rebuilt on another machine
        (:func:`~tradezoo.policies.registry.portable_config`). This base config has no
        device-specific backend."""
        return self, None

    def _backend_fallback(self, name: str, reason: str | None, device: torch.device
                          ) -> tuple[BackboneConfig, str | None]:
        """:meth:`for_device` for field ``name``: unchanged when ``reason`` is ``None``, else
        ``name="auto"`` and the note."""
        if reason is None:
            return self, None
        note = (f"{name}={getattr(self, name)!r} cannot run on {device} ({reason}); using "
                f"{name}='auto'")
        return dataclasses.replace(self, **{name: "auto"}), note

    @classmethod
    def from_kwargs(cls, arch: str, **kwargs: Any) -> BackboneConfig:
        """Build the config, rejecting unknown keys with the list of valid ones."""
        valid = cls.field_names()
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown config key(s) {unknown} for architecture {arch!r}; "
                f"valid keys: {valid}"
            )
        return cls(**kwargs)


class Backbone(nn.Module):
    """Base class: ``forward(x [B, L, F], dt [B, L] | None) -> [B, d_model]``.

    Subclasses set ``name`` and ``config_cls`` and implement :meth:`forward` (and, when they
    emit a sequence, :meth:`forward_sequence`).
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[BackboneConfig]] = BackboneConfig
    #: True when ``forward_sequence`` exists and is causal (checked by the shared tests).
    emits_sequence: ClassVar[bool] = False
    #: True when ``dt`` changes the output (the liquid networks); others ignore it.
    uses_dt: ClassVar[bool] = False

    @classmethod
    def takes_timeframes(cls, config: BackboneConfig) -> bool:
        """True when a backbone of ``config`` takes several timeframes as its scales
        (``external_scales`` and ``forward_scales``): the trainers then give it closed bars of
        coarser timeframes (:func:`tradezoo.agents.data.model_timeframes`)."""
        return False

    def __init__(self, n_features: int, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_cls.__name__}, "
                f"got {type(config).__name__}"
            )
        if int(n_features) <= 0:
            raise ValueError(f"n_features must be a positive integer, got {n_features}")
        self.n_features = int(n_features)
        self.config = config
        self.d_model = int(config.d_model)

    # -- window rules -------------------------------------------------------------------

    @classmethod
    def min_window(cls, config: BackboneConfig) -> int:
        """Shortest window (bars) this configuration accepts."""
        return 1

    @classmethod
    def check_window(cls, config: BackboneConfig, window: int) -> None:
        """Raise ``ValueError`` if ``window`` is shorter than the configuration needs."""
        need = cls.min_window(config)
        if window < need:
            raise ValueError(
                f"architecture {cls.name!r} needs a window of at least {need} bars with this "
                f"config, got window={window}"
            )

    def check_input(self, x: Tensor, dt: Tensor | None = None) -> None:
        """Validate shapes; errors name the expected and the received numbers."""
        if x.dim() != 3:
            raise ValueError(
                f"{self.name}: expected x of shape [batch, window, {self.n_features}], "
                f"got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.n_features:
            raise ValueError(
                f"{self.name}: input has {x.shape[-1]} features but the backbone was "
                f"configured for n_features={self.n_features}"
            )
        self.check_window(self.config, x.shape[1])
        if dt is not None and tuple(dt.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{self.name}: dt must have shape [batch, window] = {tuple(x.shape[:2])}, "
                f"got {tuple(dt.shape)}"
            )

    # -- interface ------------------------------------------------------------------------

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, L, d_model]`` (causal); only where ``emits_sequence``."""
        raise NotImplementedError(f"{self.name} does not emit a sequence")

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """Architecture diagnostics for ``x`` (detached tensors on the model's device; see each
        subclass). :func:`tradezoo.policies.explain.explain` returns them on the CPU."""
        return {}

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) that AdamW must not decay."""
        return set()

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, config={self.config}"
