"""Field checks shared by the trainers' config dataclasses (``SupervisedConfig``, ``PPOConfig``).

Each check validates one field of a dataclass instance in place, normalises it (``int``,
``float``, ``tuple``) and raises ``ValueError`` naming ``<Class>.<field>``, the rule and the
value, e.g. ``PPOConfig.gamma must be a number >= 0.0 and <= 1.0, got 1.5``.

Example (in a dataclass's ``__post_init__``)::

    check = FieldChecks(self)
    check.integer("epochs", 1)
    check.number("lr", 0.0, open_low=True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_known_keys(cls: type[T], data: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**data)`` for a dataclass; unknown keys are a ``ValueError`` that lists them and
    the valid ones ("unknown PPO training key(s) [...]" with ``what="PPO training"``, else
    "<Class>: unknown key(s) [...]")."""
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        head = f"unknown {what} key(s)" if what else f"{cls.__name__}: unknown key(s)"
        raise ValueError(f"{head} {unknown}; valid keys: {valid}")
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


class FieldChecks:
    """Validators bound to one config instance (messages name its class)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.owner = type(config).__name__

    def _fail(self, name: str, rule: str, optional: bool = False) -> ValueError:
        value = getattr(self.config, name)
        return ValueError(f"{self.owner}.{name} must be {rule}"
                          f"{' or None' if optional else ''}, got {value!r}")

    def integer(self, name: str, minimum: int, *, optional: bool = False) -> None:
        """An integer >= ``minimum`` (``None`` allowed when ``optional``), stored as ``int``."""
        value = getattr(self.config, name)
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise self._fail(name, f"an integer >= {minimum}", optional)
        setattr(self.config, name, int(value))

    def number(self, name: str, low: float, high: float = math.inf, *, open_low: bool = False,
               open_high: bool = False, optional: bool = False) -> None:
        """A finite real in the interval (bounds closed unless ``open_*``), stored as ``float``."""
        value = getattr(self.config, name)
        if optional and value is None:
            return
        ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
              and math.isfinite(float(value))
              and (value > low if open_low else value >= low)
              and (value < high if open_high else value <= high))
        if not ok:
            lower = f"> {low}" if open_low else f">= {low}"
            upper = "" if high == math.inf else (f" and < {high}" if open_high
                                                 else f" and <= {high}")
            raise self._fail(name, f"a number {lower}{upper}", optional)
        setattr(self.config, name, float(value))

    def choice(self, name: str, allowed: tuple[str, ...]) -> None:
        """One of ``allowed``."""
        if getattr(self.config, name) not in allowed:
            raise self._fail(name, f"one of {list(allowed)}")

    def boolean(self, name: str) -> None:
        """``True`` or ``False`` (not a truthy value)."""
        if not isinstance(getattr(self.config, name), bool):
            raise self._fail(name, "true or false")

    def widths(self, name: str, what: str = "a list of layer widths >= 1") -> None:
        """A list or tuple of integers >= 1, stored as a tuple (empty allowed)."""
        value = getattr(self.config, name)
        if isinstance(value, str) or not isinstance(value, list | tuple) or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in value
        ):
            raise self._fail(name, what)
        setattr(self.config, name, tuple(int(v) for v in value))
