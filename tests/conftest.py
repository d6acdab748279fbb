"""Shared test fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 1,500 bundled BTCUSDT 1h bars as a CSV file: the small dataset the CLI and
    fault tests train on (``--data`` with ``--costs bybit-linear``)."""
    from tradezoo.data import load_dataset

    path = tmp_path_factory.mktemp("data") / "btc_small.csv"
    load_dataset("bybit-btcusdt-1h").iloc[:1500].to_csv(path)
    return path
