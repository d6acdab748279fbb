"""Run directories: one run at a time in a directory, runs never mixed, stale temporaries removed.

A *run directory* is where a command writes a run: the ``--out`` of ``tradezoo train
supervised|ppo`` and ``tradezoo compare``, ``runs/<name>`` (or ``--out``) of ``tradezoo run``.

Lock. A command claims its run directory (:func:`claim_run_dir`) before it writes anything
there and holds the claim for the run's lifetime: an exclusive ``fcntl.flock`` on
``<dir>/.tradezoo.lock`` (:data:`LOCK_NAME`). The operating system releases it when the process
exits or is killed, so a crashed run never leaves a stale lock; the lock file itself stays (it
is empty and harmless, and deleting a lock file others may be waiting on is a race). A second
claim of a locked directory, or of a directory inside a locked run directory, fails at once
with :class:`RunDirectoryLocked`.

Holds a run. A directory *holds a run* (:func:`run_files`) when it contains ``config.json``
(every command writes it first), or a checkpoint (``*.pt`` or ``*.zip``), directly or in a
direct subfolder (``checkpoints/``, ``supervised/``, ``ppo/``). TensorBoard logs, the lock
file, temporary files and backtest reports alone do not make a run. Starting a new run in a
directory that holds one is a :class:`RunDirectoryError` unless the user resumes it
(``--resume-from`` a checkpoint of that directory) or replaces it (``--overwrite``: the files a
run writes, :data:`RUN_FILE_PATTERNS` and :data:`RUN_FOLDERS`, are deleted first; anything else
in the directory is left alone).

Temporary files. Every atomic write in a run directory goes to a temporary file in the same
folder named ``.<final name>.<random>.tmp`` (:func:`temp_name_prefix`, :data:`TEMP_SUFFIX`),
fsynced, then renamed over the final name. A kill during a write can leave one behind; it is
never read (loaders open final names only). The next claim of the directory removes them
(:func:`remove_temp_files`) while it holds the lock, so no live writer owns them; a subfolder
with its own lock held by another process is skipped.

Write failures. :class:`OutputError` is an ``OSError`` whose message names the path that could
not be written and the reason, for a one-line error in the CLI.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tradezoo._fs import TEMP_SUFFIX, atomic_file, temp_name_prefix
from tradezoo.agents.config import ConfigError
from tradezoo.errors import TradezooError

__all__ = [
    "LOCK_NAME",
    "RUN_FILE_PATTERNS",
    "RUN_FOLDERS",
    "TEMP_SUFFIX",
    "OutputError",
    "RunDirectoryError",
    "RunDirectoryLocked",
    "claim_run_dir",
    "find_temp_files",
    "is_temp_file",
    "output_error",
    "remove_temp_files",
    "run_files",
    "save_where_possible",
    "temp_name_prefix",
    "validate_run_name",
    "write_bytes_atomic",
    "write_text_atomic",
]

LOCK_NAME = ".tradezoo.lock"
CONFIG_NAME = "config.json"
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".zip")
RUN_FILE_PATTERNS: tuple[str, ...] = (
    "config.json", "run.log", "report.md", "backtest_test.json", "equity.png",
    "supervised_equity.png", "*.pt", "*.zip", "*.backtest.json", "*.backtest.png",
    "*.tearsheet.html",
)
"""Files of a run at the top of its directory (``--overwrite`` deletes them)."""
RUN_FOLDERS: tuple[str, ...] = ("checkpoints", "tb", "supervised", "ppo")
"""Subfolders a run writes (``--overwrite`` deletes them with their contents)."""


class RunDirectoryError(ConfigError):
    """A run directory that cannot take this run: it holds another run, its name is not a
    plain folder name, or it is in use (:class:`RunDirectoryLocked`)."""


class RunDirectoryLocked(RunDirectoryError):
    """Another live process holds the run directory (or a run directory around it)."""


class OutputError(TradezooError, OSError):
    """A file or directory that cannot be written; the message names the path and why
    (``errno`` and ``filename`` are those of the underlying error)."""

    exit_code = 3

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot write"


def output_error(path: str | os.PathLike[str], exc: OSError, what: str = "write") -> OutputError:
    """An :class:`OutputError` ``cannot <what> <path>: <reason>`` for ``exc`` (errno kept)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    error = OutputError(f"cannot {what} {path}: {reason}")
    error.errno = exc.errno
    error.filename = str(path)
    return error


# ------------------------------------------------------------------------------- names


def validate_run_name(name: str) -> str:
    """``name`` if it is one plain folder name (the ``runs/<name>`` of ``tradezoo run``).

    Raises:
        RunDirectoryError: an empty name, ``.`` or ``..``, a path separator (``/`` or ``\\``),
            an absolute path or a NUL byte: each would put the run outside ``runs/``.
    """
    text = str(name)
    bad = (not text.strip() or text in (".", "..") or "/" in text or "\\" in text
           or "\0" in text or os.path.isabs(text)
           or (os.altsep is not None and os.altsep in text))
    if bad:
        raise RunDirectoryError(
            f"run name {text!r}: must be one plain folder name under runs/ (no '/', '\\', "
            "'.', '..', absolute path or empty name); use --out DIR to write elsewhere"
        )
    return text


# ------------------------------------------------------------------------ temporary files


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temporary file of an atomic write."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and len(name) > 1 + len(
        TEMP_SUFFIX)


def _locked_by_another(lock_file: Path) -> bool:
    """Whether another open file description holds ``lock_file`` (a test, not a claim)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the shared test lock, if it was taken
    return False


def _walk_owned(root: Path) -> Iterator[Path]:
    """``root`` and its subfolders, leaving out subtrees whose own lock another process
    holds."""
    yield root
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if _locked_by_another(child / LOCK_NAME):
            continue
        yield from _walk_owned(child)


def find_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of atomic writes under ``root`` (all depths), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(f".*{TEMP_SUFFIX}") if p.is_file() and is_temp_file(p))


def remove_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files left by interrupted writes under ``root`` (call it holding
    the claim of ``root``). Returns the files removed."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for folder in _walk_owned(root):
        for path in sorted(folder.glob(f".*{TEMP_SUFFIX}")):
            if path.is_file() and not path.is_symlink() and is_temp_file(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file in the same folder
    (named as the module docstring says), fsynced, then renamed over ``path``.

    Raises:
        OutputError: the file cannot be written (the message names it).
    """
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], content: bytes) -> Path:
    """Write ``content`` to ``path`` atomically, as :func:`write_text_atomic` does.

    Raises:
        OutputError: the file cannot be written (the message names it).
    """
    path = Path(path)
    try:
        with atomic_file(path) as handle:
            handle.write(content)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from None
    return path


# ------------------------------------------------------------------------------- runs


def run_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files that make ``directory`` hold a run (module docstring): ``config.json`` and
    checkpoints (``*.pt``, ``*.zip``) directly in it or in a direct subfolder. Empty when it
    holds none (or does not exist)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found: list[Path] = []
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.is_file() or is_temp_file(path):
                continue
            if (folder == root and path.name == CONFIG_NAME) or path.suffix in (
                    CHECKPOINT_SUFFIXES):
                found.append(path)
    return found


def _delete_run(root: Path) -> list[Path]:
    """Delete the files and folders a run writes (:data:`RUN_FILE_PATTERNS`,
    :data:`RUN_FOLDERS`) at the top of ``root``."""
    removed: list[Path] = []
    for pattern in RUN_FILE_PATTERNS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
    for name in RUN_FOLDERS:
        folder = root / name
        if folder.is_symlink():
            folder.unlink()
            removed.append(folder)
        elif folder.is_dir():
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_ancestors(root: Path) -> None:
    """Refuse a directory inside a run directory another process holds."""
    for parent in root.resolve().parents:
        if _locked_by_another(parent / LOCK_NAME):
            raise RunDirectoryLocked(
                f"run directory {root}: it is inside run directory {parent}, which another "
                "tradezoo process is using; choose another --out"
            )


@dataclass
class RunClaim:
    """A claimed run directory (what :func:`claim_run_dir` yields).

    Attributes:
        path: the run directory.
        lock_path: ``path / LOCK_NAME``.
        removed_temp_files: stale temporary files removed when it was claimed.
        overwritten: files and folders of the previous run deleted by ``overwrite=True``.
    """

    path: Path
    lock_path: Path
    removed_temp_files: list[Path]
    overwritten: list[Path]


def _acquire(root: Path) -> int:
    """Create ``root`` and take its lock; the file descriptor holding it."""
    lock_path = root / LOCK_NAME
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            root.mkdir(mode=0o700)  # a new run directory is private to its user
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise output_error(root, exc, "write the run directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirectoryLocked(
                f"run directory {root} is in use by another tradezoo process (it holds "
                f"{lock_path}); wait for it to finish or choose another --out"
            ) from None
        raise output_error(lock_path, exc, "lock") from None
    return fd


@contextmanager
def claim_run_dir(
    directory: str | os.PathLike[str],
    *,
    resume_from: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume_hint: bool = True,
) -> Iterator[RunClaim]:
    """Claim ``directory`` for one run (module docstring): create it, lock it, remove stale
    temporary files and check that it may take a new run. The lock is held until the
    ``with`` block ends (or the process dies).

    Args:
        directory: the run directory.
        resume_from: the checkpoint the run resumes from: the directory may hold a run when
            the checkpoint is inside it (a run continues in its own directory).
        overwrite: delete the previous run's files (:data:`RUN_FILE_PATTERNS`,
            :data:`RUN_FOLDERS`) first.
        resume_hint: whether the error for a directory holding a run suggests
            ``--resume-from`` (``tradezoo run`` has no such flag).

    Raises:
        RunDirectoryLocked: another process holds the directory or a run directory around it.
        RunDirectoryError: the directory holds a run and neither ``resume_from`` (inside it)
            nor ``overwrite`` is given; or ``overwrite`` would delete ``resume_from``.
        OutputError: the directory or its lock file cannot be created.
    """
    root = Path(directory)
    resumes_here = resume_from is not None and _is_inside(Path(resume_from), root)
    if overwrite and resumes_here:
        raise RunDirectoryError(
            f"--overwrite would delete the run in {root}, which --resume-from {resume_from} "
            "continues; give one of them"
        )
    _check_ancestors(root)
    fd = _acquire(root)
    try:
        removed = remove_temp_files(root)
        overwritten: list[Path] = []
        held = run_files(root)
        if held and overwrite:
            overwritten = _delete_run(root)
        elif held and not resumes_here:
            shown = ", ".join(str(p.relative_to(root)) for p in held[:4])
            more = f" and {len(held) - 4} more" if len(held) > 4 else ""
            resume = ("continue it with --resume-from <one of its checkpoints>, "
                      if resume_hint else "")
            raise RunDirectoryError(
                f"run directory {root} already holds a run ({shown}{more}); {resume}replace "
                "it with --overwrite, or choose another directory"
            )
        yield RunClaim(path=root, lock_path=root / LOCK_NAME, removed_temp_files=removed,
                       overwritten=overwritten)
    finally:
        os.close(fd)  # releases the flock


# ------------------------------------------------------------------------- rescue saves


def save_where_possible(
    save: Callable[[Path], Path], out_dir: str | os.PathLike[str], name: str = "interrupted",
) -> tuple[Path | None, list[str]]:
    """Save a checkpoint of a run that is failing: ``save(out_dir / name)``, else, when that
    cannot be written, ``save(<private new folder in the system temp dir> / name)``.

    Args:
        save: writes a checkpoint at a path without suffix and returns the file to name.
        out_dir: the run directory.
        name: the checkpoint's file stem.

    Returns:
        ``(path saved or None, one line per failed attempt)``.
    """
    failures: list[str] = []
    try:
        return save(Path(out_dir) / name), failures
    except Exception as exc:  # any failure moves on to the next place
        failures.append(f"{Path(out_dir) / name}: {type(exc).__name__}: {exc}")
    try:
        rescue = Path(tempfile.mkdtemp(prefix="tradezoo-rescue-"))  # mode 0700
        return save(rescue / name), failures
    except Exception as exc:
        failures.append(f"system temp dir: {type(exc).__name__}: {exc}")
    return None, failures
