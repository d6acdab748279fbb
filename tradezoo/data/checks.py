"""Field checks: the one way tradezoo checks a config field or a constructor argument.

Every check validates one value, returns it normalised (``int``, ``float``, ``tuple``) and,
when the value breaks its rule, raises :class:`~tradezoo.errors.ConfigError` with one message
format that names the field, the rule and the value::

    PPOConfig.gamma must be a number >= 0.0 and <= 1.0, got 1.5
    window must be an integer >= 1, got 0

A value of the wrong type (text where a number belongs, ``True`` where an integer belongs)
raises :class:`ConfigTypeError`, a ``ConfigError`` that is also a ``TypeError``. Each check
words its rule from its bounds; ``rule=`` words it otherwise where a field's rule reads better
in its own terms ("a positive integer", "in [0, 1)"). Rules across fields use
:meth:`FieldChecks.require`.

In a config dataclass (messages name ``<Class>.<field>``; the normalised value is stored)::

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.integer("epochs", 1)
        check.number("lr", 0.0, open_low=True)
        check.require(self.batch_size <= self.n_envs * self.n_steps,
                      f"batch_size must be <= n_envs * n_steps, got {self.batch_size}")

For a plain argument (messages name the argument)::

    window = check_int("window", window, 1)

Nothing here imports anything heavier than the standard library.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from tradezoo.errors import ConfigError

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "FieldChecks",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_widths",
    "field_error",
]


class ConfigTypeError(ConfigError, TypeError):
    """A config field or argument of the wrong type (also a ``TypeError``)."""


def field_error(name: str, value: Any, rule: str, *, wrong_type: bool = False) -> ConfigError:
    """The error of ``name`` (``"PPOConfig.lr"`` or ``"window"``) breaking ``rule``:
    ``"<name> must be <rule>, got <value!r>"`` (a :class:`ConfigTypeError` when
    ``wrong_type``)."""
    error = ConfigTypeError if wrong_type else ConfigError
    return error(f"{name} must be {rule}, got {value!r}")


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
              *, optional: bool = False, rule: str | None = None) -> int | None:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``None`` passes when ``optional``;
    ``rule`` words the range, a wrong type is always called one).

    Raises:
        ConfigTypeError: not an integer (``bool`` counts as not one).
        ConfigError: an integer outside the bounds.
    """
    if optional and value is None:
        return None
    bound = ("" if minimum is None and maximum is None
             else f" >= {minimum}" if maximum is None
             else f" <= {maximum}" if minimum is None
             else f" in [{minimum}, {maximum}]")
    if not _is_int(value):  # a wrong type is named as such, whatever ``rule`` words
        raise field_error(name, value, f"an integer{bound}" + (" or None" if optional else ""),
                          wrong_type=True)
    if rule is None:
        rule = f"an integer{bound}" + (" or None" if optional else "")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise field_error(name, value, rule)
    return int(value)


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 open_low: bool = False, open_high: bool = False, optional: bool = False,
                 rule: str | None = None) -> float | None:
    """``value`` as a finite ``float`` in the interval (bounds closed unless ``open_*``;
    ``None`` passes when ``optional``).

    Raises:
        ConfigTypeError: not a real number (``bool`` counts as not one).
        ConfigError: NaN, infinite or outside the interval.
    """
    if optional and value is None:
        return None
    if rule is None:
        lower = "" if low == -math.inf else f" > {low}" if open_low else f" >= {low}"
        upper = "" if high == math.inf else f" < {high}" if open_high else f" <= {high}"
        rule = f"a number{lower}{' and' if lower and upper else ''}{upper}" + (
            " or None" if optional else "")
    if not _is_real(value):
        raise field_error(name, value, rule, wrong_type=True)
    number = float(value)
    ok = (math.isfinite(number) and (number > low if open_low else number >= low)
          and (number < high if open_high else number <= high))
    if not ok:
        raise field_error(name, value, rule)
    return number


def check_choice(name: str, value: Any, allowed: Sequence[Any], *,
                 rule: str | None = None) -> Any:
    """``value`` when it is one of ``allowed``.

    Raises:
        ConfigError: anything else.
    """
    if value not in allowed:
        raise field_error(name, value, rule or f"one of {list(allowed)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy's ``bool_`` too), never a merely truthy value.

    Raises:
        ConfigTypeError: anything else.
    """
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool):
        raise field_error(name, value, "true or false", wrong_type=True)
    return bool(value)


def check_widths(name: str, value: Any, rule: str = "a list of layer widths >= 1"
                 ) -> tuple[int, ...]:
    """A list or tuple of integers >= 1 (empty allowed), as a tuple.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, str) or not isinstance(value, list | tuple) or any(
        not _is_int(v) or v < 1 for v in value
    ):
        raise field_error(name, value, rule)
    return tuple(int(v) for v in value)


class FieldChecks:
    """The checks above bound to one config instance: messages name ``<Class>.<field>`` and
    each normalised value is stored back on the instance (frozen dataclasses included)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.owner = type(config).__name__

    def _name(self, name: str) -> str:
        return f"{self.owner}.{name}"

    def _store(self, name: str, value: Any) -> None:
        object.__setattr__(self.config, name, value)

    def integer(self, name: str, minimum: int | None = None, maximum: int | None = None, *,
                optional: bool = False, rule: str | None = None) -> None:
        """:func:`check_int` on the field ``name``."""
        self._store(name, check_int(self._name(name), getattr(self.config, name), minimum,
                                    maximum, optional=optional, rule=rule))

    def number(self, name: str, low: float = -math.inf, high: float = math.inf, *,
               open_low: bool = False, open_high: bool = False, optional: bool = False,
               rule: str | None = None) -> None:
        """:func:`check_number` on the field ``name``."""
        self._store(name, check_number(self._name(name), getattr(self.config, name), low, high,
                                       open_low=open_low, open_high=open_high,
                                       optional=optional, rule=rule))

    def choice(self, name: str, allowed: Sequence[Any], *, rule: str | None = None) -> None:
        """:func:`check_choice` on the field ``name``."""
        check_choice(self._name(name), getattr(self.config, name), allowed, rule=rule)

    def boolean(self, name: str) -> None:
        """:func:`check_bool` on the field ``name``."""
        self._store(name, check_bool(self._name(name), getattr(self.config, name)))

    def widths(self, name: str, rule: str = "a list of layer widths >= 1") -> None:
        """:func:`check_widths` on the field ``name``."""
        self._store(name, check_widths(self._name(name), getattr(self.config, name), rule))

    def require(self, ok: bool, text: str) -> None:
        """A rule the checks above cannot word (across fields, divisibility): unless ``ok``,
        ``ConfigError("<Class>.<text>")``, where ``text`` names the field, the rule and the
        value, e.g. ``f"stride must be <= patch_len, got stride={s}, patch_len={p}"``."""
        if not ok:
            raise ConfigError(f"{self.owner}.{text}")
