"""The one registry of architectures: name -> (backbone class, config dataclass).

``ARCHITECTURES`` is a read-only mapping; each architecture's module is imported the first
time its entry is looked up, so importing the registry stays cheap and a user who only wants
``lstm`` never pays for the others.

Example::

    from tradezoo.policies import ARCHITECTURES, make_backbone
    sorted(ARCHITECTURES)                     # ['cfc', 'gru', 'lstm', 'ltc', 'mamba', ...]
    net = make_backbone("cfc", n_features=16, d_model=64, mode="default")
    y = net(torch.randn(8, 64, 16))           # [8, 64]
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tradezoo.policies.base import Backbone, BackboneConfig

# name -> (module, backbone class, config class). One line per architecture; the order is the
# order tables and leaderboards list them in.
_TABLE: dict[str, tuple[str, str, str]] = {
    "mamba": ("tradezoo.policies.mamba", "MambaBackbone", "MambaConfig"),
    "mambats": ("tradezoo.policies.mambats", "MambaTSBackbone", "MambaTSConfig"),
    "msa": ("tradezoo.policies.msa", "MSABackbone", "MSAConfig"),
    "timeparticle": (
        "tradezoo.policies.timeparticle", "TimeParticleBackbone", "TimeParticleConfig"),
    "cfc": ("tradezoo.policies.cfc", "CfCBackbone", "CfCConfig"),
    "ltc": ("tradezoo.policies.ltc", "LTCBackbone", "LTCConfig"),
    "lstm": ("tradezoo.policies.baselines", "LSTMBackbone", "LSTMConfig"),
    "gru": ("tradezoo.policies.baselines", "GRUBackbone", "GRUConfig"),
    "transformer": ("tradezoo.policies.baselines", "TransformerBackbone", "TransformerConfig"),
    "mlp": ("tradezoo.policies.baselines", "MLPBackbone", "MLPConfig"),
}


@dataclass(frozen=True)
class Architecture:
    """One registry entry."""

    name: str
    backbone_cls: type[Backbone]
    config_cls: type[BackboneConfig]


class _Registry(Mapping[str, Architecture]):
    """Mapping that imports an architecture's module on first lookup."""

    def __init__(self, table: dict[str, tuple[str, str, str]]) -> None:
        self._table = table
        self._loaded: dict[str, Architecture] = {}

    def __getitem__(self, name: str) -> Architecture:
        if name not in self._table:
            raise KeyError(unknown_architecture_message(name))
        if name not in self._loaded:
            module_name, backbone_name, config_name = self._table[name]
            module = importlib.import_module(module_name)
            self._loaded[name] = Architecture(
                name, getattr(module, backbone_name), getattr(module, config_name)
            )
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table


ARCHITECTURES: Mapping[str, Architecture] = _Registry(_TABLE)


def unknown_architecture_message(name: object) -> str:
    return f"unknown architecture {name!r}; valid names: {list(_TABLE)}"


def get_architecture(name: str) -> Architecture:
    """The registry entry for ``name`` (``ValueError`` listing valid names if unknown)."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(unknown_architecture_message(name))
    return ARCHITECTURES[name]


def make_config(name: str, **cfg: Any) -> BackboneConfig:
    """``name``'s config dataclass from keyword arguments (unknown keys rejected)."""
    return get_architecture(name).config_cls.from_kwargs(name, **cfg)


def make_backbone(name: str, n_features: int, **cfg: Any) -> Backbone:
    """Build backbone ``name`` for ``n_features`` input columns.

    Raises ``ValueError`` for an unknown name or an unknown config key, listing the valid ones.
    """
    arch = get_architecture(name)
    return arch.backbone_cls(n_features, make_config(name, **cfg))
