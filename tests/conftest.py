"""Shared test fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_float_state() -> Iterator[None]:
    """Undo ``torch.set_flush_denormal(True)`` after each test.

    The trainers and benchmarks turn it on for CPU speed (docs/design.md) and leave it on for the
    process, as a training script would; in the test process it would leak into later tests
    (hypothesis refuses to run with subnormals flushed). torch is only touched when a test
    imported it.
    """
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures(
    "one_thread")``): tiny models on a busy machine run several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def native_kernel(request: pytest.FixtureRequest) -> None:
    """For tests parametrised with ``backend``: skip ``"native"`` only where no C compiler
    exists (the kernel then cannot be built, by design). Where a compiler exists a failed
    build is a test failure, not a skip."""
    backend = request.node.callspec.params.get("backend") if hasattr(
        request.node, "callspec") else None
    if backend == "native":
        from tradezoo.policies.native import _compiler

        if _compiler() is None:
            pytest.skip("no C compiler: the native LTC kernel cannot be built here")
