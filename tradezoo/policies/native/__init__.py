"""Optional compiled CPU kernels, built on first use with the system C compiler.

Each kernel is one C file in this folder beside a PyTorch reference in the architecture's
module, with parity tests: ``ltc.c`` (the LTC recurrence, forward and backward;
``tests/test_ltc_native.py``), ``selective_scan.c`` (Mamba's selective scan, forward only, for
inference; ``tests/test_mamba_native.py``) and ``particle_scan.c`` (TimeParticle's particle
recurrences, forward only, for inference; ``tests/test_timeparticle_native.py``);
``tz_common.h`` holds what they share. The kernels
are plain C on raw float32 buffers, called through :mod:`ctypes` (which releases the GIL, so
batch chunks run on several threads: :func:`batch_chunks`, :func:`run_chunks`): no PyTorch
headers, no build step at install time, a compile of about a second on first use.

Build: ``$CC`` (else ``cc``, ``gcc``, ``clang``) with ``-O3 -march=native -fno-math-errno
-fno-trapping-math -ffp-contract=fast -fopenmp-simd`` (a portable retry without ``-march=native``
and ``-fopenmp-simd`` if the compiler rejects them), into ``$TRADEZOO_NATIVE_DIR`` (default
``~/.cache/tradezoo/native``). The file name hashes the source, the flags, the compiler's
version and the CPU's model and flags, so a cache shared between different machines never
loads a library built for another CPU. The library is written to a temporary file and renamed
into place: an interrupted build never leaves a broken file.

When no compiler works, or ``TRADEZOO_NATIVE=0`` is set, :func:`load_kernel` returns ``None``
(with one warning naming the reason, unless disabled on purpose) and the architectures run
their PyTorch reference; ``backend="native"`` in a config turns that into an error instead.

Example::

    from tradezoo.policies.native import load_kernel, native_status
    lib = load_kernel("ltc")        # ctypes.CDLL, or None (PyTorch fallback)
    native_status("ltc")            # "ready: ..." or the reason it is unavailable
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "KERNEL_SIGNATURES",
    "NativeBuildError",
    "address",
    "batch_chunks",
    "can_run",
    "load_kernel",
    "native_dir",
    "native_status",
    "run_chunks",
]

_SOURCE_DIR = Path(__file__).resolve().parent
# -ffp-contract=fast: fused multiply-adds (ISO modes such as -std=c99 turn them off).
_BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
               "-ffp-contract=fast")
_OPTIONAL_FLAGS = ("-march=native", "-fopenmp-simd")
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p

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
    "particle_scan": {"tz_particle_scan_forward": [_I64] * 4 + [_PTR] * 3 + [_I64]},
}

_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL | None] = {}
_REASONS: dict[str, str] = {}


class NativeBuildError(RuntimeError):
    """A native kernel could not be built or loaded (the message says why)."""


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


def _compile(cc: str, source: Path, flags: tuple[str, ...], target: Path) -> None:
    """Compile ``source`` into ``target`` atomically (temporary file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        run = subprocess.run(
            [cc, *flags, "-o", tmp, str(source)], capture_output=True, text=True, timeout=300
        )
        if run.returncode != 0:
            raise NativeBuildError(
                f"{cc} failed on {source.name} (exit {run.returncode}): {run.stderr.strip()[-800:]}"
            )
        os.replace(tmp, target)
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
    for flags in attempts:
        key = hashlib.sha256(
            "\0".join([*texts, " ".join(flags), version, _cpu_identity()]).encode()
        ).hexdigest()[:20]
        target = native_dir() / f"{name}-{key}{'.dll' if os.name == 'nt' else '.so'}"
        try:
            if not target.is_file():
                _compile(cc, source, flags, target)
            lib = ctypes.CDLL(str(target))
            for function, argtypes in KERNEL_SIGNATURES.get(name, {}).items():
                getattr(lib, function).argtypes = argtypes
                getattr(lib, function).restype = ctypes.c_int
            return lib
        except (NativeBuildError, OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
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
