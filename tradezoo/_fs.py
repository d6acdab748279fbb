"""File-system helpers shared by the caches and run directories (docs/design.md; SECURITY.md)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["make_private_dirs"]


def make_private_dirs(directory: str | os.PathLike[str]) -> None:
    """Create ``directory`` and its missing parents with mode 0700 (``os.makedirs`` and
    ``Path.mkdir(parents=True)`` give the parents the umask's mode); a directory that already
    exists is left as it is."""
    missing: list[Path] = []
    path = Path(directory)
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent process made it
            os.mkdir(path, 0o700)
