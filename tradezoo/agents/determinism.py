"""Process-wide determinism flags of a training run, set for the run and restored after it.

PyTorch keeps its determinism switches in global state: ``torch.use_deterministic_algorithms``
(with its ``warn_only`` mode), ``torch.backends.cudnn.deterministic`` and
``torch.backends.cudnn.benchmark``, and cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` from the
environment. Stable-Baselines3's ``set_random_seed(seed, using_cuda=True)`` sets
``cudnn.deterministic = True`` and ``cudnn.benchmark = False`` for the rest of the process.
A trainer that changes them (itself or through SB3) would change every later run of the same
process (``tradezoo compare`` trains many), so each trainer runs inside
:func:`determinism_scope`, which puts all of them back as they were when the run ends,
normally or by an exception.

``deterministic=True`` (:func:`use_deterministic`) follows PyTorch's reproducibility notes
(https://pytorch.org/docs/stable/notes/randomness.html): deterministic algorithms (strict: an
operation without a deterministic implementation raises and names itself), cuDNN's
deterministic convolutions, no cuDNN benchmarking, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
when the variable is not set (cuBLAS reads it when its handle is created, so set it before the
process first uses CUDA for bit-identical GPU runs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["DeterminismFlags", "determinism_scope", "use_deterministic"]

CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` value that makes cuBLAS deterministic (PyTorch's notes)."""


@dataclass(frozen=True)
class DeterminismFlags:
    """The process-wide switches :func:`determinism_scope` saves and restores.

    Attributes:
        algorithms: ``torch.are_deterministic_algorithms_enabled()``.
        warn_only: ``torch.is_deterministic_algorithms_warn_only_enabled()``.
        cudnn_deterministic: ``torch.backends.cudnn.deterministic``.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark``.
        cublas_workspace: ``os.environ["CUBLAS_WORKSPACE_CONFIG"]`` (``None``: unset).
    """

    algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cublas_workspace: str | None

    @classmethod
    def current(cls) -> DeterminismFlags:
        """The flags as they are now."""
        return cls(
            algorithms=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            cublas_workspace=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        )

    def apply(self) -> None:
        """Make these the process's flags."""
        torch.use_deterministic_algorithms(self.algorithms, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.cublas_workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = self.cublas_workspace


@contextmanager
def determinism_scope() -> Iterator[DeterminismFlags]:
    """Run a block and restore the determinism flags it found (yielded) when it ends, also
    when it raises."""
    saved = DeterminismFlags.current()
    try:
        yield saved
    finally:
        saved.apply()


def use_deterministic(enabled: bool) -> None:
    """``enabled``: deterministic algorithms (strict), cuDNN deterministic, no cuDNN
    benchmark, ``CUBLAS_WORKSPACE_CONFIG`` set when unset. ``False`` changes nothing (the
    flags stay as the process or SB3 set them). Call it inside :func:`determinism_scope`."""
    if not enabled:
        return
    DeterminismFlags(
        algorithms=True, warn_only=False, cudnn_deterministic=True, cudnn_benchmark=False,
        cublas_workspace=os.environ.get("CUBLAS_WORKSPACE_CONFIG") or CUBLAS_WORKSPACE,
    ).apply()
