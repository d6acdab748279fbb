"""File-system helpers shared by the caches, checkpoints and run directories (docs/design.md;
SECURITY.md): private folders and atomic writes.

An atomic write goes to a temporary file beside the final one, named
``.<final name>.<random>.tmp`` (:func:`temp_name_prefix`, :data:`TEMP_SUFFIX`), which is
flushed, fsynced and renamed over the final name; readers never see half a file, and a kill
can leave only a temporary file that nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_SUFFIX", "atomic_file", "make_private_dirs", "temp_name_prefix"]

TEMP_SUFFIX = ".tmp"


def temp_name_prefix(final_name: str) -> str:
    """Prefix of the temporary files of an atomic write of ``final_name`` (with
    :data:`TEMP_SUFFIX`, in the final file's folder)."""
    return f".{final_name}."


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on a clean exit it is flushed,
    fsynced and renamed over ``path``, on any error it is removed and ``path`` is unchanged.

    Raises:
        OSError: the temporary file cannot be created, written or renamed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path.name), suffix=TEMP_SUFFIX,
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
