"""Stable-Baselines3 policies: one ``ActorCriticPolicy`` subclass per architecture.

Two ways to use an architecture with any on-policy SB3 algorithm::

    from stable_baselines3 import PPO
    from tradezoo.policies import CfCPolicy, policy_kwargs_for

    PPO(CfCPolicy, env)                                          # the cfc defaults
    PPO(CfCPolicy, env, policy_kwargs={"features_extractor_kwargs": {"d_model": 32}})
    PPO("MlpPolicy", env, policy_kwargs=policy_kwargs_for("cfc", d_model=32))

Box and Dict observation spaces both work with the policy classes: SB3's
``MultiInputPolicy`` differs from ``ActorCriticPolicy`` only by its default extractor, and
:class:`~tradezoo.policies.extractor.SequenceExtractor` handles dict observations itself
(with string aliases SB3 insists on ``"MultiInputPolicy"`` for Dict spaces; pass
``policy_kwargs_for(...)`` to it then).

The classes keep the backbone's own initialisation (Mamba's dt bias and ``A_log``, LSTM and
Transformer inits...): SB3's ``ortho_init`` re-initialises every ``nn.Linear`` of the features
extractor orthogonally; here it is applied to the policy and value heads only. The string
aliases (``"MlpPolicy"`` + :func:`policy_kwargs_for`) do not get this, as with any SB3 custom
extractor; use the classes (or :class:`SequencePolicy`) to keep it.

Import paths are part of the checkpoint format (SB3 pickles the policy class), so these
classes live here, each named by its architecture's registry entry
(:mod:`tradezoo.policies.registry`), and are re-exported by :mod:`tradezoo.policies`; do not
move them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule

from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.registry import ARCHITECTURES, get_architecture

__all__ = [
    "DEFAULT_FEATURES_DIM",
    "DEFAULT_NET_ARCH",
    "POLICY_CLASSES",
    "CfCPolicy",
    "GRUPolicy",
    "LSTMPolicy",
    "LTCPolicy",
    "MLPPolicy",
    "MSAPolicy",
    "MambaPolicy",
    "MambaTSPolicy",
    "SequencePolicy",
    "TimeParticlePolicy",
    "TransformerPolicy",
    "policy_kwargs_for",
]

DEFAULT_FEATURES_DIM = 64
DEFAULT_NET_ARCH: dict[str, list[int]] = {"pi": [64], "vf": [64]}
"""One hidden layer per head: the backbone already did the representation work."""


def policy_kwargs_for(
    arch: str,
    features_dim: int = DEFAULT_FEATURES_DIM,
    net_arch: list[int] | dict[str, list[int]] | None = None,
    **cfg: Any,
) -> dict[str, Any]:
    """Ready ``policy_kwargs`` for SB3 with ``arch``'s backbone as the features extractor.

    Args:
        arch: a name in :data:`~tradezoo.policies.registry.ARCHITECTURES`.
        features_dim: extractor output width.
        net_arch: SB3's policy/value MLP spec; default :data:`DEFAULT_NET_ARCH`.
        **cfg: the architecture's config fields (checked now: unknown keys are a
            ``ValueError`` listing the valid ones).

    Returns:
        ``{"features_extractor_class", "features_extractor_kwargs",
        "share_features_extractor", "net_arch"}``.
    """
    architecture = get_architecture(arch)
    architecture.config_cls.from_kwargs(arch, **cfg)  # reject unknown keys here, not in PPO
    return {
        "features_extractor_class": SequenceExtractor,
        "features_extractor_kwargs": {"arch": arch, "features_dim": features_dim, **cfg},
        "share_features_extractor": True,
        "net_arch": copy.deepcopy(DEFAULT_NET_ARCH if net_arch is None else net_arch),
    }


class SequencePolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` with a :class:`SequenceExtractor` (architecture from
    ``features_extractor_kwargs["arch"]``, or the subclass's ``arch``).

    User ``policy_kwargs`` override the defaults key by key; ``features_extractor_kwargs`` are
    merged (so ``{"d_model": 32}`` keeps the class's architecture). The backbone keeps its own
    initialisation (see the module docstring).
    """

    arch: ClassVar[str | None] = None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule,
                         **self._with_defaults(kwargs))

    @classmethod
    def _with_defaults(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        extractor_cls = kwargs.setdefault("features_extractor_class", SequenceExtractor)
        if not (isinstance(extractor_cls, type) and issubclass(extractor_cls, SequenceExtractor)):
            raise ValueError(
                f"{cls.__name__} needs a SequenceExtractor features_extractor_class, got "
                f"{extractor_cls!r}; use ActorCriticPolicy for other extractors"
            )
        extractor_kwargs: dict[str, Any] = {"features_dim": DEFAULT_FEATURES_DIM}
        if cls.arch is not None:
            extractor_kwargs["arch"] = cls.arch
        user = dict(kwargs.get("features_extractor_kwargs") or {})
        if cls.arch is not None and user.get("arch", cls.arch) != cls.arch:
            raise ValueError(
                f"{cls.__name__} is the {cls.arch!r} policy but features_extractor_kwargs "
                f"asks for arch={user['arch']!r}; use SequencePolicy or that architecture's "
                "policy class"
            )
        extractor_kwargs.update(user)
        kwargs["features_extractor_kwargs"] = extractor_kwargs
        if kwargs.get("net_arch") is None:
            kwargs["net_arch"] = copy.deepcopy(DEFAULT_NET_ARCH)
        return kwargs

    def _build(self, lr_schedule: Schedule) -> None:
        # SB3's ortho_init would overwrite every nn.Linear in the extractor (Mamba's dt bias,
        # the Transformer's init, ...): snapshot the extractor(s) and put them back; the
        # policy/value heads keep their orthogonal init. load_state_dict copies in place, so
        # the optimizer built by super()._build still holds the same parameters.
        extractors = {id(e): e for e in (self.features_extractor, self.pi_features_extractor,
                                         self.vf_features_extractor)}
        saved = {key: copy.deepcopy(e.state_dict()) for key, e in extractors.items()}
        super()._build(lr_schedule)
        for key, extractor in extractors.items():
            extractor.load_state_dict(saved[key])


class MambaPolicy(SequencePolicy):
    """Actor-critic policy over a ``mamba`` backbone."""

    arch: ClassVar[str | None] = "mamba"


class MambaTSPolicy(SequencePolicy):
    """Actor-critic policy over a ``mambats`` backbone."""

    arch: ClassVar[str | None] = "mambats"


class MSAPolicy(SequencePolicy):
    """Actor-critic policy over a ``msa`` (multi-scale attention) backbone."""

    arch: ClassVar[str | None] = "msa"


class TimeParticlePolicy(SequencePolicy):
    """Actor-critic policy over a ``timeparticle`` backbone."""

    arch: ClassVar[str | None] = "timeparticle"


class CfCPolicy(SequencePolicy):
    """Actor-critic policy over a ``cfc`` (closed-form continuous-time) backbone."""

    arch: ClassVar[str | None] = "cfc"


class LTCPolicy(SequencePolicy):
    """Actor-critic policy over an ``ltc`` (liquid time-constant) backbone."""

    arch: ClassVar[str | None] = "ltc"


class LSTMPolicy(SequencePolicy):
    """Actor-critic policy over an ``lstm`` backbone."""

    arch: ClassVar[str | None] = "lstm"


class GRUPolicy(SequencePolicy):
    """Actor-critic policy over a ``gru`` backbone."""

    arch: ClassVar[str | None] = "gru"


class TransformerPolicy(SequencePolicy):
    """Actor-critic policy over a causal ``transformer`` backbone."""

    arch: ClassVar[str | None] = "transformer"


class MLPPolicy(SequencePolicy):
    """Actor-critic policy over an ``mlp`` backbone (flattened window)."""

    arch: ClassVar[str | None] = "mlp"


class _PolicyClasses(Mapping[str, type[SequencePolicy]]):
    """Name -> policy class, a view of the registry entries' ``policy`` column."""

    def __getitem__(self, arch: str) -> type[SequencePolicy]:
        return ARCHITECTURES[arch].policy_cls

    def __iter__(self) -> Iterator[str]:
        return iter(ARCHITECTURES)

    def __len__(self) -> int:
        return len(ARCHITECTURES)

    def __contains__(self, arch: object) -> bool:
        return arch in ARCHITECTURES


POLICY_CLASSES: Mapping[str, type[SequencePolicy]] = _PolicyClasses()
"""Architecture name -> its policy class (derived from ``ARCHITECTURES``, same keys and
order)."""
