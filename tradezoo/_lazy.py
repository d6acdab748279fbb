"""Lazy package exports: a package names what it exports and where, and each name is imported
from its submodule on first use (PEP 562 module ``__getattr__``), so importing a package stays
cheap (no torch, pandas or matplotlib until a name that needs them is used).

Example::

    _EXPORTS = {"simulate": "simulation", "CostModel": "costs"}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        exports: exported name -> submodule (relative to ``package``) that defines it.
        namespace: the package's ``globals()``; a resolved name is cached there, so each name
            is imported once.
    """

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_name}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
