"""The compiled-kernel cache is private: a library another user could have planted or changed is
never loaded.

Each test plants a library whose constructor writes a marker file when it is loaded (compiled
here with the system C compiler), at the place of a genuine cached kernel, in one of the ways
the cache refuses: a symbolic link, a file owned by another user, a group-writable file, a
world-writable directory, a file changed under an unchanged name. The marker must never appear,
a warning names the path and the rule, and the kernel is rebuilt from source instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

from tradezoo.policies import native
from tradezoo.policies.native import load_kernel, native_status

pytestmark = [
    pytest.mark.skipif(
        native._compiler() is None, reason="no C compiler: no kernel or planted library to build"
    ),
    pytest.mark.skipif(not hasattr(os, "geteuid"), reason="owner and mode checks need POSIX"),
]

KERNEL = "particle_scan"  # the quickest kernel to compile (a fraction of a second)
NOBODY = 65534
PLANTED_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor)) static void planted_runs(void) {
    const char *path = getenv("TZ_PLANTED_MARKER");
    if (path) {
        FILE *f = fopen(path, "w");
        if (f) { fputs("planted library ran\n", f); fclose(f); }
    }
}

int tz_particle_scan_forward(void) { return 0; }
"""


def _reset_loader(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """No kernel loaded and nothing warned yet in this process; the cache at ``cache``."""
    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setattr(native, "_REASONS", {})
    if hasattr(native, "_WARNED"):
        monkeypatch.setattr(native, "_WARNED", set())
    monkeypatch.setenv("TRADEZOO_NATIVE_DIR", str(cache))
    monkeypatch.delenv("TRADEZOO_NATIVE", raising=False)


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernel as the builder wrote it into an empty cache (one compile per module)."""
    cache = tmp_path_factory.mktemp("genuine") / "cache"
    with pytest.MonkeyPatch.context() as monkeypatch, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _reset_loader(monkeypatch, cache)
        assert load_kernel(KERNEL) is not None
    assert [str(w.message) for w in seen] == []
    (built,) = cache.iterdir()
    return built


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A library exporting the kernel's symbol whose constructor writes $TZ_PLANTED_MARKER."""
    work = tmp_path_factory.mktemp("planted")
    (work / "planted.c").write_text(PLANTED_SOURCE)
    subprocess.run(
        [native._compiler(), "-shared", "-fPIC", "-o", str(work / "planted.so"),
         str(work / "planted.c")],
        check=True, capture_output=True, timeout=60,
    )
    # The marker proves a load: loading a copy directly writes it.
    marker = work / "marker"
    os.environ["TZ_PLANTED_MARKER"] = str(marker)
    try:
        ctypes.CDLL(str(work / "planted.so"))
    finally:
        del os.environ["TZ_PLANTED_MARKER"]
    assert marker.read_text() == "planted library ran\n"
    return (work / "planted.so").read_bytes()


@pytest.fixture
def cache(genuine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache holding a copy of the genuine kernel; private temporary directories go
    to ``tmp_path/"tmp"``; the planted library's marker is ``tmp_path/"marker"``."""
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    shutil.copy2(genuine, directory / genuine.name)
    (tmp_path / "tmp").mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("TZ_PLANTED_MARKER", str(tmp_path / "marker"))
    _reset_loader(monkeypatch, directory)
    return directory


def _name_for(genuine: Path, content: bytes) -> str:
    """The name under which ``content`` passes the content-hash check, if the cache records
    hashes in names (``<kernel>-<key>-<sha256>.so``); else the genuine file's own name."""
    match = re.fullmatch(r"(.+-)[0-9a-f]{64}(\.so)", genuine.name)
    if match is None:
        return genuine.name
    return f"{match[1]}{hashlib.sha256(content).hexdigest()}{match[2]}"


def _plant(cache: Path, genuine: Path, content: bytes, mode: int = 0o700) -> Path:
    """Replace the genuine library by ``content`` under the name that passes the hash check."""
    (cache / genuine.name).unlink()
    path = cache / _name_for(genuine, content)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def _load_and_check(tmp_path: Path, path: Path, rule: str) -> list[str]:
    """Load the kernel; the planted library must not have run, one warning names ``path`` and
    ``rule``, and the kernel is the genuine one, rebuilt. Returns the warning texts."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lib = load_kernel(KERNEL)
    assert not (tmp_path / "marker").exists(), "the planted library was loaded"
    texts = [str(w.message) for w in seen]
    matching = [t for t in texts if str(path) in t and rule in t]
    assert len(matching) == 1, texts
    assert all(issubclass(w.category, native.NativeCacheWarning) for w in seen), texts
    assert lib is not None and native_status(KERNEL) == "ready"
    return texts


def _rebuilt(cache: Path, genuine: Path) -> list[str]:
    """Names in the cache after a rebuild: only the genuine library (compilers here are
    deterministic, so it hashes to the genuine file's name)."""
    names = sorted(p.name for p in cache.iterdir())
    assert names == [genuine.name]
    assert (cache / genuine.name).read_bytes() == genuine.read_bytes()
    return names


def test_symlink_is_not_loaded(cache: Path, genuine: Path, planted: bytes, tmp_path: Path) -> None:
    # Another user's library in a shared sticky directory, linked under the kernel's name.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "evil.so"
    target.write_bytes(planted)
    os.chown(target, NOBODY, NOBODY)
    (cache / genuine.name).unlink()
    link = cache / _name_for(genuine, planted)
    link.symlink_to(target)
    _load_and_check(tmp_path, link, "is a symbolic link")
    _rebuilt(cache, genuine)  # the link was removed, not its target
    assert target.read_bytes() == planted


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_file_owned_by_another_user_is_not_loaded(
    cache: Path, genuine: Path, planted: bytes, tmp_path: Path
) -> None:
    path = _plant(cache, genuine, planted, mode=0o755)
    os.chown(path, NOBODY, NOBODY)
    _load_and_check(tmp_path, path, f"is owned by uid {NOBODY}, not by the current user")
    _rebuilt(cache, genuine)


def test_group_writable_file_is_not_loaded(
    cache: Path, genuine: Path, planted: bytes, tmp_path: Path
) -> None:
    path = _plant(cache, genuine, planted, mode=0o775)
    _load_and_check(tmp_path, path, "is writable by group or others (mode 0775)")
    _rebuilt(cache, genuine)


def test_world_writable_directory_is_not_used(
    cache: Path, genuine: Path, planted: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _plant(cache, genuine, planted)
    cache.chmod(0o777)
    texts = _load_and_check(tmp_path, cache, "is writable by group or others (mode 0777)")
    assert "private temporary directory" in texts[0]
    # The directory is left as it was; the private build directory is gone once loaded.
    assert sorted(cache.iterdir()) == [path] and path.read_bytes() == planted
    assert list((tmp_path / "tmp").iterdir()) == []
    # One warning per directory and rule per process, however many loads.
    monkeypatch.setattr(native, "_LOADED", {})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_kernel(KERNEL) is not None
    assert [str(w.message) for w in seen] == []
    assert not (tmp_path / "marker").exists()


def test_tampered_file_with_unchanged_name_is_not_loaded(
    cache: Path, genuine: Path, planted: bytes, tmp_path: Path
) -> None:
    path = cache / genuine.name
    path.write_bytes(planted)  # same name, owner and mode; other bytes
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0
    _load_and_check(tmp_path, path, "does not match the content hash in its name")
    _rebuilt(cache, genuine)


def test_created_cache_directories_and_library_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "home" / "tradezoo" / "native"
    _reset_loader(monkeypatch, cache)
    previous = os.umask(0o002)  # a lax umask (group-writable by default) changes nothing
    try:
        assert load_kernel(KERNEL) is not None
    finally:
        os.umask(previous)
    for directory in (tmp_path / "home", tmp_path / "home" / "tradezoo", cache):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    (library,) = cache.iterdir()
    assert stat.S_IMODE(library.lstat().st_mode) == 0o700
