"""Optional compiled CPU kernels, built on first use with the system C compiler.

Each kernel is one C file in this folder beside a PyTorch reference in the architecture's
module, with parity tests: ``ltc.c`` (the LTC recurrence, forward and backward;
``tests/test_ltc_native.py``), ``selective_scan.c`` (Mamba's selective scan, forward only, for
inference; ``tests/test_mamba_native.py``) and ``particle_scan.c`` (TimeParticle's particle
recurrences, without and with ``message_feedback``, forward only, for inference;
``tests/test_timeparticle_native.py``);
``tz_common.h`` holds what they share. The kernels
are plain C on raw float32 buffers, called through :mod:`ctypes` (which releases the GIL, so
batch chunks run on several threads: :func:`batch_chunks`, :func:`run_chunks`): no PyTorch
headers, no build step at install time, a compile of about a second on first use.

Build: ``$CC`` (else ``cc``, ``gcc``, ``clang``) with ``-O3 -march=native -fno-math-errno
-fno-trapping-math -ffp-contract=fast -fopenmp-simd`` (a portable retry without ``-march=native``
and ``-fopenmp-simd`` if the compiler rejects them), into ``$TRADEZOO_NATIVE_DIR`` (default
``~/.cache/tradezoo/native``). A library is named ``<kernel>-<key>-<sha256>.so``: ``key`` hashes
the source, the flags, the compiler's version and the CPU's model and flags (so a cache copied
to another machine never loads a library built for another CPU), ``sha256`` is the hash of the
library's own bytes, written by the build. The library is compiled to a temporary file, made
mode 0700, fsynced and renamed into place: an interrupted build never leaves a broken file.

The cache is private (a loaded library runs code as the user). Directories tradezoo creates for
it are made mode 0700, and a library is loaded only when all of these hold, checked on open file
descriptors (:func:`_open_verified`):

- the directory is owned by the current user and not writable by group or others;
- the file is a regular file, not a symbolic link (opened with ``O_NOFOLLOW``), owned by the
  current user and not writable by group or others;
- its bytes hash to the SHA-256 in its name (a file changed under an unchanged name is refused).

The hash is an integrity check, not a signature: only the user (and root) can write a directory
that passes the owner and mode checks, so it catches corruption and files changed in place.

The verified descriptor itself is what is loaded (``/proc/self/fd/N`` on Linux, kept open for
the life of the process), so the file cannot be swapped between the check and the load; where
``/proc`` does not exist the checked path is loaded. A directory that fails a check is not
used: one :class:`NativeCacheWarning` names it and the rule, and the kernel is built in a fresh
private temporary directory for this process (deleted once loaded; where that cannot load a
library, e.g. a ``noexec`` temporary file system, the PyTorch path runs). A library that fails a
check is never loaded: one warning names it and the rule, the file is deleted from the
(verified) directory and the kernel is rebuilt. Platforms without user ids (Windows) check
only the file type and the content hash.

When no compiler works, or ``TRADEZOO_NATIVE=0`` is set, :func:`load_kernel` returns ``None``
(with one warning naming the reason, unless disabled on purpose) and the architectures run
their PyTorch reference; ``backend="native"`` in a config turns that into an error instead.

Example::

    from tradezoo.policies.native import load_kernel, native_status
    lib = load_kernel("ltc")        # ctypes.CDLL, or None (PyTorch fallback)
    native_status("ltc")            # "ready: ..." or the reason it is unavailable
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from tradezoo._fs import make_private_dirs
from tradezoo.errors import TradezooError

__all__ = [
    "KERNEL_SIGNATURES",
    "NativeBuildError",
    "NativeCacheWarning",
    "address",
    "batch_chunks",
    "can_run",
    "kernel_available",
    "load_kernel",
    "native_dir",
    "native_status",
    "native_unavailable",
    "run_chunks",
]

_SOURCE_DIR = Path(__file__).resolve().parent
# -ffp-contract=fast: fused multiply-adds (ISO modes such as -std=c99 turn them off).
_BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
               "-ffp-contract=fast")
_OPTIONAL_FLAGS = ("-march=native", "-fopenmp-simd")
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SUFFIX = ".dll" if os.name == "nt" else ".so"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Owner, mode and descriptor-relative checks need POSIX user ids, O_NOFOLLOW and dir_fd.
_POSIX_CHECKS = (
    hasattr(os, "geteuid") and hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd
)
_PROC_FD = Path("/proc/self/fd")

#: The C functions each kernel exports and their argument types (all return an ``int`` status:
#: 0, or -1 when a work buffer could not be allocated). Declared on the library when it loads.
KERNEL_SIGNATURES: dict[str, dict[str, list[type]]] = {
    "ltc": {
        "tz_ltc_forward": [_I64] * 4 + [_PTR] * 8 + [_I64, _PTR, _PTR],
        "tz_ltc_backward": [_I64] * 4 + [_PTR] * 16,
        "tz_ltc_sensory_forward": [_I64] * 4 + [_PTR] * 7,
        "tz_ltc_sensory_backward": [_I64] * 4 + [_PTR] * 12,
    },
    "selective_scan": {"tz_selective_scan_forward": [_I64] * 4 + [_PTR] * 7 + [_I64]},
    "particle_scan": {
        "tz_particle_scan_forward": [_I64] * 4 + [_PTR] * 3 + [_I64],
        "tz_particle_scan_messages_forward": [_I64] * 5 + [_PTR] * 5 + [_I64],
    },
}

_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL | None] = {}
_REASONS: dict[str, str] = {}
_WARNED: set[tuple[str, str]] = set()  # (path, rule) pairs already warned about
# Descriptors of loaded libraries, open for the life of the process: glibc identifies a loaded
# library by the name it was opened with, so a "/proc/self/fd/N" must never name another file.
_PINNED_FDS: list[int] = []


class NativeBuildError(TradezooError, RuntimeError):
    """A native kernel could not be built or loaded (the message says why)."""


class NativeCacheWarning(RuntimeWarning):
    """A kernel cache directory or library failed a safety check and was not used."""


class _UnsafeEntry(Exception):
    """``path`` breaks a rule of the private cache; ``rule`` completes "<path> ..."."""

    def __init__(self, path: Path, rule: str) -> None:
        super().__init__(f"{path} {rule}")
        self.path = path
        self.rule = rule


def native_dir() -> Path:
    """Where built kernels are cached: ``$TRADEZOO_NATIVE_DIR`` or ``~/.cache/tradezoo/native``."""
    configured = os.environ.get("TRADEZOO_NATIVE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tradezoo" / "native"


def _disabled() -> bool:
    return os.environ.get("TRADEZOO_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _cpu_identity() -> str:
    """Model name and feature flags of this CPU (part of the cache key)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    lines = {line.split(":", 1)[0].strip(): line for line in text.splitlines() if ":" in line}
    return "\n".join(lines[k] for k in wanted if k in lines) + platform.machine()


def _compiler_version(cc: str) -> str:
    try:
        run = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"compiler {cc!r} does not run: {exc}") from exc
    return run.stdout


def _warn_unsafe(path: Path, rule: str, action: str) -> None:
    """One :class:`NativeCacheWarning` per path and rule per process."""
    if (str(path), rule) in _WARNED:
        return
    _WARNED.add((str(path), rule))
    warnings.warn(
        f"tradezoo native kernel cache: {path} {rule}; {action}", NativeCacheWarning, stacklevel=5
    )


def _ownership_rule(status: os.stat_result) -> str | None:
    """Why a file or directory with this status is not private to the current user, or ``None``
    (always ``None`` without POSIX user ids)."""
    if not _POSIX_CHECKS:
        return None
    euid = os.geteuid()
    if status.st_uid != euid:
        return f"is owned by uid {status.st_uid}, not by the current user (uid {euid})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(status.st_mode):04o})"
    return None


def _type_rule(status: os.stat_result) -> str | None:
    """``None`` for a regular file, else what it is instead."""
    if stat.S_ISLNK(status.st_mode):
        return "is a symbolic link, not a regular file"
    if not stat.S_ISREG(status.st_mode):
        return "is not a regular file"
    return None


def _cache_directory() -> tuple[Path, bool]:
    """The directory to build in, and whether it is a fresh private temporary one (to delete
    once the kernel is loaded): :func:`native_dir` when it is private to the user, else a
    ``mkdtemp`` directory (mode 0700) after one warning naming the directory and the rule."""
    directory = native_dir()
    try:
        make_private_dirs(directory)
        status = os.stat(directory)
        rule = "is not a directory" if not stat.S_ISDIR(status.st_mode) else _ownership_rule(
            status)
    except OSError as exc:
        rule = f"cannot be created or read ({exc.strerror or exc})"
    if rule is None:
        return directory, False
    _warn_unsafe(directory, rule, "not used: building in a private temporary directory instead")
    return Path(tempfile.mkdtemp(prefix="tradezoo-native-")), True


def _sha256_fd(fd: int) -> str:
    """SHA-256 (hex) of the whole file open on ``fd``."""
    os.lseek(fd, 0, os.SEEK_SET)
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _open_checked(directory: Path, file_name: str) -> int:
    """A read-only descriptor on ``directory/file_name``, after the directory (on its own
    descriptor) and the name (``lstat``) passed the checks; never follows a symbolic link."""
    path = directory / file_name
    if not _POSIX_CHECKS:
        rule = _type_rule(os.lstat(path))
        if rule is not None:
            raise _UnsafeEntry(path, rule)
        return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rule = _ownership_rule(os.fstat(dir_fd))
        if rule is not None:
            raise _UnsafeEntry(directory, rule)
        rule = _type_rule(os.stat(file_name, dir_fd=dir_fd, follow_symlinks=False))
        if rule is not None:
            raise _UnsafeEntry(path, rule)
        try:  # O_NONBLOCK: a FIFO swapped in after the lstat cannot block the open
            return os.open(file_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _UnsafeEntry(path, "is a symbolic link, not a regular file") from exc
            raise
    finally:
        os.close(dir_fd)


def _open_verified(directory: Path, file_name: str, sha256: str) -> int:
    """A read-only descriptor on the library ``directory/file_name``, which passed every check
    of the module docstring on that descriptor and hashes to ``sha256``; raises
    :class:`_UnsafeEntry` naming the path and the rule it breaks."""
    path = directory / file_name
    fd = _open_checked(directory, file_name)
    try:
        status = os.fstat(fd)  # the opened file itself: the name may have changed since lstat
        rule = _type_rule(status) or _ownership_rule(status)
        if rule is not None:
            raise _UnsafeEntry(path, rule)
        actual = _sha256_fd(fd)
        if actual != sha256:
            raise _UnsafeEntry(
                path, f"does not match the content hash in its name (sha256 {actual[:16]}..., "
                f"recorded {sha256[:16]}...)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _load_verified(directory: Path, file_name: str, sha256: str) -> ctypes.CDLL:
    """Load the library ``directory/file_name`` after :func:`_open_verified`: on Linux the
    verified descriptor itself, so what runs is the file that was checked."""
    fd = _open_verified(directory, file_name, sha256)
    if not (_POSIX_CHECKS and _PROC_FD.is_dir()):
        os.close(fd)
        return ctypes.CDLL(str(directory / file_name))
    try:
        lib = ctypes.CDLL(f"{_PROC_FD}/{fd}")
    except OSError as exc:
        os.close(fd)
        raise OSError(f"{directory / file_name} does not load: {exc}") from exc
    _PINNED_FDS.append(fd)
    return lib


def _load_cached(directory: Path, prefix: str) -> ctypes.CDLL | None:
    """A library ``<prefix><sha256><suffix>`` from ``directory`` that passes every check, or
    ``None``. Each one that fails is warned about, never loaded, and deleted."""
    for entry in sorted(os.listdir(directory)):
        sha256 = entry[len(prefix):-len(_SUFFIX)]
        if not (entry.startswith(prefix) and entry.endswith(_SUFFIX)
                and _SHA256_HEX.fullmatch(sha256)):
            continue
        try:
            return _load_verified(directory, entry, sha256)
        except _UnsafeEntry as exc:
            if exc.path == directory:  # it changed since _cache_directory checked it
                raise NativeBuildError(str(exc)) from exc
            _warn_unsafe(exc.path, exc.rule, "not loaded: deleted, and the kernel rebuilt")
            with contextlib.suppress(OSError):
                os.unlink(directory / entry)
    return None


def _compile(cc: str, source: Path, flags: tuple[str, ...], directory: Path, prefix: str) -> str:
    """Compile ``source`` into ``directory`` atomically (temporary file, mode 0700, fsync,
    rename) as ``<prefix><sha256 of the library><suffix>``; returns that file name."""
    fd, tmp = tempfile.mkstemp(suffix=f"{_SUFFIX}.tmp", dir=directory)
    os.close(fd)
    try:
        run = subprocess.run(
            [cc, *flags, "-o", tmp, str(source)], capture_output=True, text=True, timeout=300
        )
        if run.returncode != 0:
            raise NativeBuildError(
                f"{cc} failed on {source.name} (exit {run.returncode}): {run.stderr.strip()[-800:]}"
            )
        # The linker may recreate its output with the umask's mode: make it private.
        out = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(out, 0o700)
            sha256 = _sha256_fd(out)
            os.fsync(out)
        finally:
            os.close(out)
        file_name = f"{prefix}{sha256}{_SUFFIX}"
        os.replace(tmp, directory / file_name)
        return file_name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(name: str) -> ctypes.CDLL:
    source = _SOURCE_DIR / f"{name}.c"
    if not source.is_file():
        raise NativeBuildError(f"no native kernel named {name!r} ({source} does not exist)")
    cc = _compiler()
    if cc is None:
        raise NativeBuildError("no C compiler found ($CC, cc, gcc, clang)")
    version = _compiler_version(cc)
    # The kernel and the headers it may include (all in this folder) make the cache key.
    texts = [source.read_text()] + [h.read_text() for h in sorted(_SOURCE_DIR.glob("*.h"))]
    # Try the fast flags first; a compiler that rejects one of them still gets a portable build.
    attempts = (_BASE_FLAGS + _OPTIONAL_FLAGS, _BASE_FLAGS)
    errors: list[str] = []
    directory, private = _cache_directory()
    try:
        for flags in attempts:
            key = hashlib.sha256(
                "\0".join([*texts, " ".join(flags), version, _cpu_identity()]).encode()
            ).hexdigest()[:20]
            prefix = f"{name}-{key}-"
            try:
                lib = _load_cached(directory, prefix)
                if lib is None:
                    file_name = _compile(cc, source, flags, directory, prefix)
                    lib = _load_verified(
                        directory, file_name, file_name[len(prefix):-len(_SUFFIX)]
                    )
                for function, argtypes in KERNEL_SIGNATURES.get(name, {}).items():
                    getattr(lib, function).argtypes = argtypes
                    getattr(lib, function).restype = ctypes.c_int
                return lib
            except (NativeBuildError, _UnsafeEntry, OSError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
    finally:
        if private:  # a loaded library stays mapped after its file is deleted
            shutil.rmtree(directory, ignore_errors=True)
    raise NativeBuildError("; ".join(errors))


def load_kernel(name: str, *, required: bool = False) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (built and cached on first use), or ``None``.

    Returns ``None`` when ``TRADEZOO_NATIVE=0`` or the build fails (one warning per kernel
    and process, naming the reason); with ``required=True`` raises :class:`NativeBuildError`
    instead.
    """
    with _LOCK:
        if name not in _LOADED:
            if _disabled():
                _LOADED[name] = None
                _REASONS[name] = "disabled by TRADEZOO_NATIVE=0"
            else:
                try:
                    _LOADED[name] = _build(name)
                    _REASONS[name] = "ready"
                except NativeBuildError as exc:
                    _LOADED[name] = None
                    _REASONS[name] = f"build failed: {exc}"
                    warnings.warn(
                        f"tradezoo native kernel {name!r} is unavailable ({exc}); using the "
                        "PyTorch implementation (slower, same results)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        lib = _LOADED[name]
    if lib is None and required:
        raise NativeBuildError(f"native kernel {name!r} is unavailable: {_REASONS[name]}")
    return lib


def can_run(*tensors: Tensor | None, forward_only: bool) -> bool:
    """True when a kernel may take these tensors: all float32 on the CPU, no
    ``torch.jit.trace`` running (a trace cannot see a C call and would freeze its output)
    and, for a ``forward_only`` kernel, no gradient needed. ``None`` entries are skipped."""
    if torch.jit.is_tracing():
        return False
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in present):
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in present)
    return not (forward_only and needs_grad)


def kernel_available(name: str) -> bool:
    """True when kernel ``name`` loads here (builds it if not tried yet): the availability
    probe behind :func:`native_unavailable`."""
    return load_kernel(name) is not None


def native_unavailable(name: str, device: torch.device) -> str | None:
    """Why kernel ``name`` cannot run on ``device`` on this machine, or ``None`` when it can
    (a backend named ``"native"`` falls back to ``"auto"`` on such a machine:
    :meth:`~tradezoo.policies.base.BackboneConfig.for_device`)."""
    if device.type != "cpu":
        return f"the native kernels run on the CPU, not {device.type}"
    if not kernel_available(name):
        return f"native kernel {name!r} is unavailable here: {_REASONS.get(name, 'not built')}"
    return None


def native_status(name: str) -> str:
    """``"ready"`` or why kernel ``name`` is unavailable (builds it if not tried yet)."""
    load_kernel(name)
    return _REASONS[name]


# -- calling the kernels ----------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None
_POOL_KEY = (0, 0)  # (process id, workers) of _POOL: a forked child must not reuse its threads


def batch_chunks(batch: int) -> list[tuple[int, int]]:
    """``[b0, b1)`` batch ranges, one per torch CPU thread (at most one per sample)."""
    n = max(1, min(torch.get_num_threads(), batch))
    edges = [round(k * batch / n) for k in range(n + 1)]
    return [(edges[k], edges[k + 1]) for k in range(n)]


def run_chunks(fn: Callable[[int, int], int], chunks: list[tuple[int, int]]) -> None:
    """Run ``fn(b0, b1)`` (a kernel call returning its status) for every chunk, on a thread
    pool when there are several; raises ``MemoryError`` if a kernel could not allocate."""
    global _POOL, _POOL_KEY
    if len(chunks) == 1:
        codes = [fn(*chunks[0])]
    else:
        if _POOL is None or _POOL_KEY[0] != os.getpid() or len(chunks) > _POOL_KEY[1]:
            _POOL = ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="tz-native")
            _POOL_KEY = (os.getpid(), len(chunks))
        codes = list(_POOL.map(lambda lo_hi: fn(*lo_hi), chunks))
    if any(code != 0 for code in codes):
        raise MemoryError("a native kernel could not allocate its work buffers")


def address(t: Tensor, offset: int = 0) -> int:
    """Address of sample ``offset`` (along dim 0) of a contiguous tensor, for a kernel call."""
    return t.data_ptr() + offset * t.stride(0) * t.element_size()
