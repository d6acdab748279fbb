"""Causal wavelet and VMD decompositions of the close, as feature columns.

Two :class:`~tradezoo.data.features.FeatureSpec` groups, off by default (docs/data.md,
"Causal decompositions"). Every value at bar ``t`` is a function of the ``window`` closes
``close[t - window + 1 .. t]`` and nothing else, so it uses bars ``<= t`` only and is
bit-identical whatever follows ``t``:

- **wavelet** (:class:`WaveletSpec`): an undecimated (stationary, *à trous*) wavelet transform
  with causal filters. Level ``j`` filters the level ``j - 1`` approximation with the wavelet's
  analysis filters, upsampled by ``2^(j-1)`` and normalised by ``1/sqrt(2)`` (PyWavelets'
  ``swt(..., norm=True)``)::

      a_0 = close
      a_j[t] = sum_k h[k] a_{j-1}[t - k 2^(j-1)],   d_j[t] = sum_k g[k] a_{j-1}[t - k 2^(j-1)]

  with ``h = dec_lo / sqrt(2)``, ``g = dec_hi / sqrt(2)`` of ``pywt.Wavelet(wavelet)``. These
  are ``pywt.swt``'s coefficients without its circular boundary: each output uses the
  ``support = (len(h) - 1)(2^levels - 1) + 1`` latest closes (106 for ``db4``, 4 levels). The
  window's energy shares use the ``window - support + 1`` latest positions, whose filters lie
  inside the window.
- **vmd** (:class:`VmdSpec`): Variational Mode Decomposition (Dragomiretskiy & Zosso 2014,
  IEEE TSP 62(3)) of each trailing window ``close[t-window+1..t] / close[t] - 1`` with
  ``vmdpy.VMD(x, alpha, tau=0, K=modes, DC=0, init=1, tol)``, one independent call per bar
  (no batch whose composition could change a bit). Modes are ordered by their final centre
  frequency, lowest first (``vmd_m1`` is the trend).

Columns (``J = levels``, ``K = modes``), all scale free:

| column | definition |
|---|---|
| ``wav_d{j}``, j = 1..J | ``d_j[t] / close[t]``: detail ``j`` at bar t as a fraction of the price |
| ``wav_a{J}`` | ``a_J[t] / close[t] - 1``: the smooth part's deviation from the price |
| ``wav_e_d{j}``, ``wav_e_a{J}`` | the component's share of the window's energy (below) |
| ``vmd_m{k}``, k = 1..K | mode ``k``'s value at the window's last bar (fraction of price) |
| ``vmd_e{k}`` | mode ``k``'s share of the window's energy |
| ``vmd_f{k}`` | mode ``k``'s centre frequency, cycles per bar in ``[0, 0.5]`` |

Energy of a component over the window = sum of squared deviations from its window mean
(centred: the price level is not energy); shares divide by the sum over the group's components
and sum to 1. A flat window (every energy 0) gets equal shares ``1 / n_components``; its VMD
modes are 0 and its centre frequencies are vmdpy's initial ones (``0.5 (k - 1) / K``).
Every column's first defined row is ``window - 1``.

**Cost and cache.** The wavelet group is vectorised over the series (under a second on 19k
bars). VMD runs once per bar (~0.1 s per 256-bar window on one core); ``VmdSpec.workers``
spreads the windows over a process pool. Computed columns of either group are cached under
``$TRADEZOO_DATA_DIR/decompositions/`` (a private ``0700`` folder), one ``.npz`` per key: the
SHA-256 of the close values (their float64 bytes), the group's settings and the versions of
numpy and the decomposition library. Writes are atomic (temporary file in the same folder,
fsync, ``os.replace``); a file that fails its checksum is reported with a
:class:`~tradezoo.data.cache.CacheCorruptWarning` and recomputed. Nothing is loaded with
pickle.

The dependencies are the ``tradezoo[decomp]`` extra (PyWavelets, vmdpy), imported only when
a group is asked for; without them that request is a :class:`MissingExtraError` naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from tradezoo._fs import atomic_file, make_private_dirs
from tradezoo.data.errors import DataError
from tradezoo.errors import TradezooError

__all__ = [
    "DECOMP_EXTRA",
    "MissingExtraError",
    "VmdSpec",
    "WaveletSpec",
    "band_columns",
    "cache_dir",
    "decomposition_columns",
]

DECOMP_EXTRA = "tradezoo[decomp]"
_CACHE_FORMAT = "tradezoo.decomposition"
_CACHE_VERSION = 1
_CACHE_SUBDIR = "decompositions"
# Fewer windows than this per worker are computed in this process: starting an
# interpreter (~0.5 s) costs more than they do.
_MIN_WINDOWS_PER_WORKER = 32


class MissingExtraError(TradezooError, ImportError):
    """A decomposition group was asked for without the ``tradezoo[decomp]`` extra."""


def _require(module: str, package: str, group: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"FeatureSpec.{group} needs the {package} package, part of the optional extra "
            f"{DECOMP_EXTRA}: pip install '{DECOMP_EXTRA}' (or pip install "
            f"'tradezoo[test]'); import {module!r} failed: {exc}"
        ) from exc


def _integer(owner: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    return int(value)


def _positive_float(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}.{name} must be finite and > 0, got {value!r}")
    return float(value)


class _GroupSpec:
    """Shared parsing and serialisation of the two groups' settings."""

    group: ClassVar[str]
    # Settings that change how a result is computed, not the result: not in to_dict().
    execution_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def coerce(cls, value: object) -> Any:
        """``None``/``False`` -> off, ``True`` -> defaults, a mapping -> its fields."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
            unknown = sorted(set(map(str, value)) - known)
            if unknown:
                raise ValueError(f"FeatureSpec.{cls.group}: unknown setting(s) {unknown}; "
                                 f"valid: {sorted(known)}")
            return cls(**dict(value))
        raise ValueError(f"FeatureSpec.{cls.group} must be null/false (off), true (defaults) "
                         f"or a mapping of its settings, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings that define the columns (JSON-friendly; no execution settings)."""
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if f.name not in self.execution_fields}


@dataclass(frozen=True)
class WaveletSpec(_GroupSpec):
    """Causal stationary wavelet features (see the module docstring).

    Attributes:
        wavelet: a discrete PyWavelets wavelet name (``db4``, ``sym5``, ``haar``...).
        levels: decomposition levels ``J`` (columns ``wav_d1..wav_dJ``, ``wav_aJ``).
        window: bars each value depends on; must exceed the filters' support.
    """

    group: ClassVar[str] = "wavelet"

    wavelet: str = "db4"
    levels: int = 4
    window: int = 256

    def __post_init__(self) -> None:
        pywt = _require("pywt", "PyWavelets", self.group)
        if not isinstance(self.wavelet, str) or self.wavelet not in pywt.wavelist(
            kind="discrete"
        ):
            raise ValueError(f"FeatureSpec.wavelet.wavelet must be a discrete PyWavelets "
                             f"wavelet name (pywt.wavelist(kind='discrete')), got "
                             f"{self.wavelet!r}")
        object.__setattr__(self, "levels", _integer("FeatureSpec.wavelet", "levels",
                                                    self.levels, 1))
        object.__setattr__(self, "window", _integer("FeatureSpec.wavelet", "window",
                                                    self.window, 2))
        if self.window <= self.support:
            raise ValueError(
                f"FeatureSpec.wavelet.window must exceed the filters' support "
                f"(len(filter) - 1) (2^levels - 1) + 1 = {self.support} bars for "
                f"{self.wavelet} at {self.levels} levels, got {self.window}"
            )

    @property
    def filter_length(self) -> int:
        """Taps of the wavelet's analysis filters."""
        return int(_require("pywt", "PyWavelets", self.group).Wavelet(self.wavelet).dec_len)

    @property
    def support(self) -> int:
        """Closes one output of the last level depends on: ``(L - 1)(2^J - 1) + 1``."""
        return (self.filter_length - 1) * (2 ** self.levels - 1) + 1

    def columns(self) -> tuple[str, ...]:
        """``wav_d1..wav_dJ, wav_aJ, wav_e_d1..wav_e_dJ, wav_e_aJ``."""
        parts = [*(f"d{j}" for j in range(1, self.levels + 1)), f"a{self.levels}"]
        return (*(f"wav_{p}" for p in parts), *(f"wav_e_{p}" for p in parts))


@dataclass(frozen=True)
class VmdSpec(_GroupSpec):
    """Causal VMD features, one decomposition per trailing window (module docstring).

    Attributes:
        modes: VMD modes ``K`` (columns ``vmd_m1..K``, ``vmd_e1..K``, ``vmd_f1..K``).
        alpha: bandwidth constraint (data-fidelity balance) of VMD.
        tol: convergence tolerance of VMD's ADMM loop (vmdpy caps it at 500 iterations).
        window: bars per decomposition; even (vmdpy drops the last sample of an odd signal,
            which would be bar t itself).
        workers: processes computing windows: 1 runs in this process, ``n > 1`` a pool of
            ``n``, ``-1`` one per available core. An execution setting: it never changes a
            value, so it is not part of :meth:`to_dict`, equality or the cache key.
    """

    group: ClassVar[str] = "vmd"
    execution_fields: ClassVar[tuple[str, ...]] = ("workers",)

    modes: int = 4
    alpha: float = 2000.0
    tol: float = 1e-7
    window: int = 256
    workers: int = field(default=1, compare=False)

    def __post_init__(self) -> None:
        _require("vmdpy", "vmdpy", self.group)
        owner = "FeatureSpec.vmd"
        object.__setattr__(self, "modes", _integer(owner, "modes", self.modes, 1))
        object.__setattr__(self, "alpha", _positive_float(owner, "alpha", self.alpha))
        object.__setattr__(self, "tol", _positive_float(owner, "tol", self.tol))
        window = _integer(owner, "window", self.window, 4)
        if window % 2:
            raise ValueError(f"{owner}.window must be even (vmdpy drops the last sample of an "
                             f"odd-length signal, which would be bar t), got {window}")
        object.__setattr__(self, "window", window)
        if isinstance(self.workers, bool) or not isinstance(self.workers, (int, np.integer)) \
                or not (self.workers >= 1 or self.workers == -1):
            raise ValueError(f"{owner}.workers must be a positive integer or -1 (every core), "
                             f"got {self.workers!r}")
        object.__setattr__(self, "workers", int(self.workers))

    def columns(self) -> tuple[str, ...]:
        """``vmd_m1..K, vmd_e1..K, vmd_f1..K``."""
        k = range(1, self.modes + 1)
        return (*(f"vmd_m{i}" for i in k), *(f"vmd_e{i}" for i in k),
                *(f"vmd_f{i}" for i in k))


def band_columns(names: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """Group decomposition columns by band: ``{"wav_d3": [i(wav_d3), i(wav_e_d3)], "vmd_2":
    [i(vmd_m2), i(vmd_e2), i(vmd_f2)], ...}`` in order of first appearance; other columns are
    left out."""
    bands: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        band = None
        if name.startswith("wav_e_"):
            band = "wav_" + name.removeprefix("wav_e_")
        elif name.startswith("wav_"):
            band = name
        elif name[:5] in ("vmd_m", "vmd_e", "vmd_f") and name[5:].isdigit():
            band = f"vmd_{name[5:]}"
        if band is not None:
            bands.setdefault(band, []).append(i)
    return bands


# ------------------------------------------------------------------------------- compute --


def _shares(energy: np.ndarray) -> np.ndarray:
    """Energies ``[T, C]`` -> shares summing to 1 per row; equal shares where all are 0."""
    total = energy.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = energy / total
    flat = (total == 0.0)[:, 0]
    shares[flat] = 1.0 / energy.shape[1]
    return shares


def _causal_filter(x: np.ndarray, taps: np.ndarray, step: int) -> np.ndarray:
    """``y[t] = sum_k taps[k] x[t - k step]`` (NaN before the first full support).

    Elementwise products and sums in a fixed order of ``k``: each output is rounded the same
    whatever the series' length or the values after ``t``."""
    n0 = (len(taps) - 1) * step
    out = np.full(len(x), np.nan)
    if n0 >= len(x):
        return out
    acc = taps[0] * x[n0:]
    for k in range(1, len(taps)):
        acc = acc + taps[k] * x[n0 - k * step: len(x) - k * step]
    out[n0:] = acc
    return out


def _trailing_centred_energy(component: np.ndarray, span: int, first: int) -> np.ndarray:
    """Sum of squared deviations from the mean over ``component[t - span + 1 .. t]`` for
    ``t >= first`` (NaN before); fixed-order elementwise sums, as :func:`_causal_filter`."""
    n = len(component)
    out = np.full(n, np.nan)
    if first >= n:
        return out
    lagged = [component[first - i: n - i] for i in range(span)]
    total = lagged[0].copy()
    for values in lagged[1:]:
        total = total + values
    mean = total / span
    energy = (lagged[0] - mean) ** 2
    for values in lagged[1:]:
        energy = energy + (values - mean) ** 2
    out[first:] = energy
    return out


def _wavelet_values(close: np.ndarray, spec: WaveletSpec) -> np.ndarray:
    """``[T, 2 (J + 1)]`` float64 wavelet columns in :meth:`WaveletSpec.columns` order."""
    pywt = _require("pywt", "PyWavelets", spec.group)
    wavelet = pywt.Wavelet(spec.wavelet)
    low = np.asarray(wavelet.dec_lo, dtype=np.float64) / math.sqrt(2.0)
    high = np.asarray(wavelet.dec_hi, dtype=np.float64) / math.sqrt(2.0)
    approx = close
    components = []
    for level in range(1, spec.levels + 1):
        step = 2 ** (level - 1)
        components.append(_causal_filter(approx, high, step))
        approx = _causal_filter(approx, low, step)
    components.append(approx)
    first = spec.window - 1
    span = spec.window - spec.support + 1
    last = np.stack(components, axis=1) / close[:, None]
    last[:, -1] -= 1.0
    energy = np.stack([_trailing_centred_energy(c, span, first) for c in components], axis=1)
    out = np.concatenate([last, _shares(energy)], axis=1)
    out[:first] = np.nan
    return out


def _vmd_window(window: np.ndarray, spec_items: tuple[int, float, float]) -> np.ndarray:
    """One trailing window of closes (oldest first) -> ``[3 K]``: last values, shares, freqs."""
    from vmdpy import VMD

    modes, alpha, tol = spec_items
    x = window / window[-1] - 1.0
    if not np.any(x):  # flat window: VMD's frequency update would divide 0 by 0
        freqs = 0.5 * np.arange(modes) / modes
        return np.concatenate([np.zeros(modes), np.full(modes, 1.0 / modes), freqs])
    u, _, omega = VMD(x, alpha, 0.0, modes, 0, 1, tol)
    order = np.argsort(omega[-1], kind="stable")
    u = u[order]
    energy = ((u - u.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    total = energy.sum()
    shares = energy / total if total > 0 else np.full(modes, 1.0 / modes)
    return np.concatenate([u[:, -1], shares, omega[-1][order]])


def _vmd_chunk(closes: np.ndarray, window: int, spec_items: tuple[int, float, float]
               ) -> np.ndarray:
    """Every full window of ``closes`` -> ``[len(closes) - window + 1, 3 K]``."""
    return np.stack([_vmd_window(closes[end - window: end], spec_items)
                     for end in range(window, len(closes) + 1)])


def _workers(requested: int) -> int:
    if requested != -1:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_WORKER_CODE = "from tradezoo.data.decompositions import _worker_main; _worker_main()"


def _worker_main() -> None:
    """Worker process: closes (``.npy`` on stdin) -> VMD rows (``.npy`` on stdout).

    ``argv[1:]``: ``window modes alpha tol``."""
    import sys

    window, modes = int(sys.argv[1]), int(sys.argv[2])
    items = (modes, float(sys.argv[3]), float(sys.argv[4]))
    closes = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)
    result = io.BytesIO()
    np.save(result, _vmd_chunk(closes, window, items), allow_pickle=False)
    sys.stdout.buffer.write(result.getvalue())
    sys.stdout.buffer.flush()


def _vmd_in_workers(pieces: list[np.ndarray], window: int,
                    items: tuple[int, float, float]) -> list[np.ndarray]:
    """Each piece in its own worker process, all at once.

    Workers are fresh interpreters (``python -c``), not forks or ``multiprocessing``
    children: nothing of the caller (its threads, its ``__main__`` script) is copied or
    re-run, and each worker is pinned to one BLAS/OpenMP thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", _WORKER_CODE, str(window), str(items[0]),
            repr(items[1]), repr(items[2])]
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    with contextlib.ExitStack() as stack:
        try:
            for _ in pieces:
                log = stack.enter_context(tempfile.TemporaryFile())
                procs.append((subprocess.Popen(argv, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=log, env=env), log))
            for (proc, _), piece in zip(procs, pieces, strict=True):
                payload = io.BytesIO()
                np.save(payload, piece, allow_pickle=False)
                assert proc.stdin is not None
                proc.stdin.write(payload.getvalue())
                proc.stdin.close()
            results = []
            for proc, log in procs:
                assert proc.stdout is not None
                output = proc.stdout.read()
                if proc.wait() != 0:
                    log.seek(0)
                    detail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                    raise RuntimeError(f"VMD worker process failed (exit code "
                                       f"{proc.returncode}): " + " | ".join(detail))
                results.append(np.load(io.BytesIO(output), allow_pickle=False))
            return results
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


def _vmd_values(close: np.ndarray, spec: VmdSpec) -> np.ndarray:
    """``[T, 3 K]`` float64 VMD columns in :meth:`VmdSpec.columns` order."""
    _require("vmdpy", "vmdpy", spec.group)
    n, window = len(close), spec.window
    out = np.full((n, 3 * spec.modes), np.nan)
    if n < window:
        return out
    items = (spec.modes, spec.alpha, spec.tol)
    n_windows = n - window + 1
    workers = max(1, min(_workers(spec.workers), n_windows // _MIN_WINDOWS_PER_WORKER))
    # Contiguous runs of bar positions, one per worker; run i needs closes from
    # bounds[i] - window + 1 through bounds[i + 1] - 1.
    bounds = [window - 1 + n_windows * i // workers for i in range(workers + 1)]
    pieces = [close[a - window + 1: b] for a, b in itertools.pairwise(bounds)]
    if workers == 1:
        results = [_vmd_chunk(pieces[0], window, items)]
    else:
        results = _vmd_in_workers(pieces, window, items)
    out[window - 1:] = np.concatenate(results)
    return out


# --------------------------------------------------------------------------------- cache --


def cache_dir() -> Path:
    """``$TRADEZOO_DATA_DIR/decompositions``, created private (``0700``).

    Raises:
        PermissionError: the folder exists but belongs to another user.
    """
    from tradezoo.data.cache import data_dir

    path = data_dir() / _CACHE_SUBDIR
    make_private_dirs(path)
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"decomposition cache {path} belongs to another user (uid "
                              f"{info.st_uid}); set TRADEZOO_DATA_DIR to a folder of yours")
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
    return path


def _library_version(group: str) -> str:
    package = "PyWavelets" if group == "wavelet" else "vmdpy"
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _cache_key(close: np.ndarray, spec: WaveletSpec | VmdSpec) -> str:
    settings = {
        "format": _CACHE_FORMAT, "version": _CACHE_VERSION, "group": spec.group,
        "settings": spec.to_dict(), "numpy": np.__version__,
        "library": _library_version(spec.group),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(close, dtype="<f8").tobytes())
    return digest.hexdigest()


def _read_cached(path: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached columns, or ``None`` when absent; a bad file warns and reads as absent."""
    from tradezoo.data.cache import CacheCorruptWarning

    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            values = data["values"]
            stored_key = bytes(data["key"]).decode("ascii")
            checksum = bytes(data["sha256"]).decode("ascii")
        ok = (stored_key == key and values.dtype == np.float64 and values.shape == shape
              and hashlib.sha256(values.tobytes()).hexdigest() == checksum)
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError,
            zipfile.BadZipFile) as exc:
        ok, values = False, None
        reason = f"unreadable ({exc})"
    else:
        reason = "key, shape or checksum mismatch"
    if not ok:
        warnings.warn(f"decomposition cache file {path} is corrupt: {reason}; recomputing",
                      CacheCorruptWarning, stacklevel=3)
        return None
    return values


def _write_cached(path: Path, key: str, values: np.ndarray) -> None:
    """Atomic write (:func:`tradezoo._fs.atomic_file`)."""
    with atomic_file(path) as handle:
        np.savez(handle, values=values,
                 key=np.frombuffer(key.encode("ascii"), dtype=np.uint8),
                 sha256=np.frombuffer(hashlib.sha256(values.tobytes()).hexdigest()
                                      .encode("ascii"), dtype=np.uint8))


def decomposition_columns(
    close: np.ndarray, spec: WaveletSpec | VmdSpec, *, name: str = "bars",
    use_cache: bool = True,
) -> dict[str, np.ndarray]:
    """The group's columns for a close series, through the on-disk cache.

    Args:
        close: ``[T]`` closes (float64), oldest first.
        spec: the group's settings.
        name: the data's name, for error messages.
        use_cache: read and write ``cache_dir()``; ``False`` always computes.

    Returns:
        ``{column: [T] float64}`` in ``spec.columns()`` order, NaN on rows ``< window - 1``.

    Raises:
        DataError: a close is not finite and positive (a decomposition would spread it over
            a whole window).
    """
    close = np.ascontiguousarray(close, dtype=np.float64)
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        raise DataError(f"{name}: column 'close' must be finite and > 0 for the {spec.group} "
                        f"decomposition; first bad row {int(np.flatnonzero(bad)[0])} "
                        f"({int(bad.sum())} in all)")
    columns = spec.columns()
    shape = (len(close), len(columns))
    path = None
    values = None
    if use_cache:
        key = _cache_key(close, spec)
        path = cache_dir() / f"{spec.group}-{key[:40]}.npz"
        values = _read_cached(path, key, shape)
    if values is None:
        compute = _wavelet_values if isinstance(spec, WaveletSpec) else _vmd_values
        values = compute(close, spec)
        if path is not None:
            _write_cached(path, key, values)
    return {column: values[:, i] for i, column in enumerate(columns)}
