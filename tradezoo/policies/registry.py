"""The one registry of architectures: one :class:`Architecture` entry per name.

An entry names, by import path, everything the zoo needs to build and train an architecture:
its module, the backbone and config classes in it, the SB3 policy class and the optional
auxiliary heads. Everything else that lists architectures is derived from the entries:
``ARCHITECTURES`` (name -> entry), :data:`~tradezoo.policies.sb3.POLICY_CLASSES`, the policy
classes exported by :mod:`tradezoo.policies`, :data:`AUX_HEADS`, the CLI's ``--archs all``.

Entries hold strings, and a class is imported when it is first asked for, so importing the
registry stays cheap and a user who only wants ``lstm`` never pays for the others. The policy
classes of the built-in architectures live in :mod:`tradezoo.policies.sb3` because SB3
pickles the policy class by import path into its checkpoints.

Example::

    from tradezoo.policies import ARCHITECTURES, make_backbone
    list(ARCHITECTURES)                       # ['mamba', 'mambats', 'msa', ...]
    ARCHITECTURES["cfc"].policy_cls           # tradezoo.policies.sb3.CfCPolicy
    net = make_backbone("cfc", n_features=16, d_model=64, mode="default")
    y = net(torch.randn(8, 64, 16))           # [8, 64]

Adding an architecture (docs/architectures.md)::

    register_architecture(Architecture(
        "toy", module="mypkg.toy", backbone="ToyBackbone", config="ToyConfig",
        policy="ToyPolicy"))                  # unregister_architecture("toy") undoes it
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradezoo.errors import ConfigError
from tradezoo.policies.base import Backbone, BackboneConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tradezoo.policies.sb3 import SequencePolicy

__all__ = [
    "ARCHITECTURES",
    "AUX_HEADS",
    "Architecture",
    "get_architecture",
    "make_backbone",
    "make_config",
    "portable_config",
    "register_architecture",
    "unknown_architecture_message",
    "unregister_architecture",
    "uses_dt",
    "with_time_unit",
]

NAME_RULE = re.compile(r"[a-z][a-z0-9_]*")
"""Architecture names: lowercase letters, digits and ``_``, starting with a letter (they are
CLI values, comma-separated lists and run-directory names)."""
_REF_RULE = re.compile(r"([A-Za-z_][\w.]*:)?[A-Za-z_]\w*")


@dataclass(frozen=True)
class Architecture:
    """One registry entry.

    Class references are a name defined in ``module`` (``"CfCBackbone"``) or a full import
    path ``"package.module:Class"``; they are imported when first used.

    Attributes:
        name: the registry name (``NAME_RULE``).
        module: the architecture's module (``"tradezoo.policies.cfc"``).
        backbone: its :class:`~tradezoo.policies.base.Backbone` subclass.
        config: its :class:`~tradezoo.policies.base.BackboneConfig` dataclass (the
            backbone's ``config_cls``).
        policy: its SB3 policy class, a :class:`~tradezoo.policies.sb3.SequencePolicy`
            subclass whose ``arch`` is ``name`` (the class SB3 checkpoints record).
        aux_heads: the optional auxiliary-heads class used by supervised training
            (:mod:`tradezoo.agents.supervised_model`); ``None``: none.
    """

    name: str
    module: str
    backbone: str
    config: str
    policy: str
    aux_heads: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RULE.fullmatch(self.name):
            raise ValueError(f"architecture name must match {NAME_RULE.pattern} (lowercase "
                             f"letters, digits, '_'), got {self.name!r}")
        if not isinstance(self.module, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", self.module):
            raise ValueError(f"architecture {self.name!r}: module must be a dotted import path, "
                             f"got {self.module!r}")
        for field in ("backbone", "config", "policy", "aux_heads"):
            ref = getattr(self, field)
            if (ref is not None or field != "aux_heads") and not (
                    isinstance(ref, str) and _REF_RULE.fullmatch(ref)):
                raise ValueError(f"architecture {self.name!r}: {field} must be a class name in "
                                 f"{self.module} or 'package.module:Class', got {ref!r}")

    # -- resolved classes -------------------------------------------------------------

    @property
    def backbone_cls(self) -> type[Backbone]:
        """The backbone class (its ``name`` and ``config_cls`` checked against the entry)."""
        cls = self._load(self.backbone)
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"architecture {self.name!r}: backbone {self.backbone!r} is not a "
                            "tradezoo.policies.base.Backbone subclass")
        if cls.name != self.name or cls.config_cls is not self.config_cls:
            raise TypeError(
                f"architecture {self.name!r}: {cls.__name__} has name={cls.name!r} and "
                f"config_cls={cls.config_cls.__name__}; the entry needs name={self.name!r} and "
                f"config_cls={self.config_cls.__name__}")
        return cls

    @property
    def config_cls(self) -> type[BackboneConfig]:
        """The config dataclass."""
        cls = self._load(self.config)
        if not (isinstance(cls, type) and issubclass(cls, BackboneConfig)):
            raise TypeError(f"architecture {self.name!r}: config {self.config!r} is not a "
                            "tradezoo.policies.base.BackboneConfig subclass")
        return cls

    @property
    def policy_cls(self) -> type[SequencePolicy]:
        """The SB3 policy class (imports Stable-Baselines3)."""
        from tradezoo.policies.sb3 import SequencePolicy

        cls = self._load(self.policy)
        if not (isinstance(cls, type) and issubclass(cls, SequencePolicy)) or cls.arch != self.name:
            raise TypeError(f"architecture {self.name!r}: policy {self.policy!r} must be a "
                            f"tradezoo.policies.sb3.SequencePolicy subclass with "
                            f"arch={self.name!r}")
        return cls

    @property
    def policy_name(self) -> str:
        """The policy class's name, without importing it (``"CfCPolicy"``)."""
        return self.policy.rpartition(":")[2]

    @property
    def aux_heads_cls(self) -> type[nn.Module] | None:
        """The auxiliary-heads class, or ``None`` when the entry names none or the name is not
        an ``nn.Module`` subclass (supervised training then warns and trains without)."""
        if self.aux_heads is None:
            return None
        from torch import nn

        module_name, _, attr = self._split(self.aux_heads)
        cls = getattr(importlib.import_module(module_name), attr, None)
        return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None

    def _split(self, ref: str) -> tuple[str, str, str]:
        module_name, colon, attr = ref.rpartition(":")
        return (module_name if colon else self.module), colon, attr

    def _load(self, ref: str) -> Any:
        module_name, _, attr = self._split(ref)
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ImportError(f"architecture {self.name!r}: {module_name} defines no "
                              f"{attr!r}") from None


def _builtin(name: str, module: str, prefix: str, aux_heads: str | None = None) -> Architecture:
    """A built-in entry: ``<prefix>Backbone`` and ``<prefix>Config`` in
    ``tradezoo.policies.<module>``, policy ``<prefix>Policy`` in :mod:`tradezoo.policies.sb3`."""
    return Architecture(name, f"tradezoo.policies.{module}", f"{prefix}Backbone",
                        f"{prefix}Config", f"tradezoo.policies.sb3:{prefix}Policy", aux_heads)


# One line per architecture; the order is the order tables and leaderboards list them in.
_ENTRIES: dict[str, Architecture] = {entry.name: entry for entry in (
    _builtin("mamba", "mamba", "Mamba"),
    _builtin("mambats", "mambats", "MambaTS", aux_heads="MambaTSHeads"),
    _builtin("msa", "msa", "MSA", aux_heads="MSAHeads"),
    _builtin("timeparticle", "timeparticle", "TimeParticle"),
    _builtin("cfc", "cfc", "CfC"),
    _builtin("ltc", "ltc", "LTC"),
    _builtin("lstm", "baselines", "LSTM"),
    _builtin("gru", "baselines", "GRU"),
    _builtin("transformer", "baselines", "Transformer"),
    _builtin("mlp", "baselines", "MLP"),
)}


class _Registry(Mapping[str, Architecture]):
    """Read-only name -> entry view of the registry (registration order)."""

    def __getitem__(self, name: str) -> Architecture:
        try:
            return _ENTRIES[name]
        except (KeyError, TypeError):
            raise KeyError(unknown_architecture_message(name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(list(_ENTRIES))

    def __len__(self) -> int:
        return len(_ENTRIES)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _ENTRIES


ARCHITECTURES: Mapping[str, Architecture] = _Registry()


class _AuxHeads(MutableMapping[str, str]):
    """Name -> auxiliary-heads class reference, for the entries that have one.

    A view of the entries' ``aux_heads`` column: setting or deleting a key replaces that
    architecture's entry (the name must be registered).
    """

    def __getitem__(self, name: str) -> str:
        entry = _ENTRIES.get(name)
        if entry is None or entry.aux_heads is None:
            raise KeyError(name)
        return entry.aux_heads

    def __setitem__(self, name: str, heads: str) -> None:
        _ENTRIES[name] = dataclasses.replace(get_architecture(name), aux_heads=heads)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        _ENTRIES[name] = dataclasses.replace(_ENTRIES[name], aux_heads=None)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, entry in _ENTRIES.items() if entry.aux_heads is not None])

    def __len__(self) -> int:
        return sum(entry.aux_heads is not None for entry in _ENTRIES.values())

    def __repr__(self) -> str:
        return repr(dict(self))


AUX_HEADS: MutableMapping[str, str] = _AuxHeads()
"""Architecture -> its auxiliary-heads class reference (derived from the entries)."""


def register_architecture(entry: Architecture) -> Architecture:
    """Add ``entry`` to the registry (last in the listing order).

    Nothing is imported here; the classes are checked when first used. Undo with
    :func:`unregister_architecture`.

    Raises:
        ValueError: the name is taken, or another entry's policy class has the same name
            (``tradezoo.policies`` exports policy classes by name).
    """
    if not isinstance(entry, Architecture):
        raise TypeError(f"register_architecture takes an Architecture, got {type(entry).__name__}")
    if entry.name in _ENTRIES:
        raise ValueError(f"architecture {entry.name!r} is already registered; "
                         "unregister_architecture it first to replace it")
    clash = [e.name for e in _ENTRIES.values() if e.policy_name == entry.policy_name]
    if clash:
        raise ValueError(f"architecture {entry.name!r}: policy class name "
                         f"{entry.policy_name!r} is already used by {clash[0]!r}")
    _ENTRIES[entry.name] = entry
    return entry


def unregister_architecture(name: str) -> Architecture:
    """Remove ``name`` from the registry and return its entry (``ValueError`` if unknown)."""
    entry = get_architecture(name)
    del _ENTRIES[name]
    return entry


def unknown_architecture_message(name: object) -> str:
    return f"unknown architecture {name!r}; valid names: {list(_ENTRIES)}"


def get_architecture(name: str) -> Architecture:
    """The registry entry for ``name`` (a :class:`~tradezoo.errors.ConfigError`, also a
    ``ValueError``, listing the valid names if unknown)."""
    if name not in ARCHITECTURES:
        raise ConfigError(unknown_architecture_message(name))
    return ARCHITECTURES[name]


def make_config(name: str, **cfg: Any) -> BackboneConfig:
    """``name``'s config dataclass from keyword arguments (unknown keys rejected)."""
    return get_architecture(name).config_cls.from_kwargs(name, **cfg)


def uses_dt(name: str) -> bool:
    """Whether ``name``'s backbone takes elapsed time (:attr:`Backbone.uses_dt`: the liquid
    networks); observations fed to it then carry ``dt`` (:mod:`tradezoo.data.elapsed`)."""
    return bool(get_architecture(name).backbone_cls.uses_dt)


def with_time_unit(name: str, cfg: Mapping[str, Any], bar_seconds: float) -> dict[str, Any]:
    """``cfg`` with ``time_unit`` set to ``bar_seconds`` (the data's bar interval, seconds) when
    ``name``'s config has that field and ``cfg`` leaves it unset (absent or ``None``); a
    ``time_unit`` given is kept. The one place the data's interval becomes a default of the
    backbone (so a regular bar counts as 1 time unit and a gap as its true multiple)."""
    out = dict(cfg)
    if "time_unit" in get_architecture(name).config_cls.field_names() and out.get(
            "time_unit") is None:
        out["time_unit"] = float(bar_seconds)
    return out


def portable_config(name: str, config: Mapping[str, Any], device: str | torch.device, *,
                    what: str = "saved config") -> dict[str, Any]:
    """A saved config of architecture ``name`` made runnable on ``device``: a backend that
    cannot run there (``scan="mamba_ssm"`` without the package or off CUDA, ``"native"``
    kernels off the CPU or where they do not build) becomes ``"auto"``, with a warning naming
    ``what``, the field and the reason (:meth:`BackboneConfig.for_device`). The other keys are
    returned as given (a partial config stays partial).

    Raises:
        ValueError, ConfigError: ``config`` is not a valid config of ``name``.
    """
    import torch

    given = dict(config)
    built = make_config(name, **given)
    adapted, note = built.for_device(torch.device(device))
    if note is None:
        return given
    warnings.warn(f"{what} ({name}): {note}", stacklevel=2)
    changed = {k: v for k, v in adapted.to_dict().items() if getattr(built, k) != v}
    return {**given, **changed}


def make_backbone(name: str, n_features: int, **cfg: Any) -> Backbone:
    """Build backbone ``name`` for ``n_features`` input columns.

    Raises ``ValueError`` for an unknown name or an unknown config key, listing the valid ones.
    """
    arch = get_architecture(name)
    return arch.backbone_cls(n_features, make_config(name, **cfg))
