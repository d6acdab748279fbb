"""Building the trainers' config dataclasses from dicts (unknown keys rejected).

Their fields are checked by :mod:`tradezoo.data.checks` in each ``__post_init__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from tradezoo.errors import ConfigError

T = TypeVar("T")


def from_known_keys(cls: type[T], data: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**data)`` for a dataclass; unknown keys are a ``ConfigError`` that lists them and
    the valid ones ("unknown PPO training key(s) [...]" with ``what="PPO training"``, else
    "<Class>: unknown key(s) [...]")."""
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        head = f"unknown {what} key(s)" if what else f"{cls.__name__}: unknown key(s)"
        raise ConfigError(f"{head} {unknown}; valid keys: {valid}")
    return cls(**dict(data))


def coerce_config(cls: type[T], value: T | Mapping[str, Any] | None, argument: str) -> T | None:
    """``value`` as a ``cls`` instance: an instance as it is, a mapping through
    ``cls.from_dict``, ``None`` as ``None`` (the caller picks its default); anything else is a
    ``TypeError`` naming ``argument`` ("config must be a PPOConfig or a dict, got list")."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_dict(value)  # type: ignore[attr-defined, no-any-return]
    raise TypeError(f"{argument} must be a {cls.__name__} or a dict, got {type(value).__name__}")
