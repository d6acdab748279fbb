"""The repository stands on its own: no file of it points outside the clone.

A user clones the repository and nothing else, so no file may refer to the team folder beside
a clone, to a planning document that only exists there, or to an absolute path of a
developer's machine (a work tree, a home folder, a temporary folder). Code and docs cite
``docs/design.md`` instead. The scan covers every file git tracks or would track (untracked
files that are not ignored), text files only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The patterns are written so that this file does not match them itself.
NOT_AFTER = r"(?<![\w.~/\\-])"
"""A path that follows a word, a dot, ``~`` or a separator is relative, a URL or a home-relative
path (``~/.cache``), not an absolute path of this machine."""
OUTSIDE_REFERENCES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("the team folder beside the clone", re.compile(r"\.\.[/\\]shared\b")),
    ("a planning document outside the repository", re.compile(r"\bDESIGN\.md\b")),
    ("an absolute work-tree path", re.compile(NOT_AFTER + r"/(?:work|workspace|srv)/")),
    ("an absolute temporary path", re.compile(NOT_AFTER + r"/(?:tmp|var/tmp|private/tmp)/")),
    ("a home folder", re.compile(NOT_AFTER + r"/(?:root|home/[\w.-]+|Users/[\w.-]+)/")),
    ("a Windows user folder", re.compile(r"\b[A-Za-z]:\\{1,2}Users\\{1,2}")),
)


def outside_references(text: str) -> list[tuple[int, str, str]]:
    """``(line number, rule, line)`` for every line of ``text`` that points outside the
    repository (line numbers from 1)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule, pattern in OUTSIDE_REFERENCES:
            if pattern.search(line):
                found.append((number, rule, line.strip()))
    return found


def repository_files() -> list[Path]:
    """Files git tracks plus untracked files it does not ignore, relative to the root."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()
    return sorted({Path(name) for name in out.split("\0") if name})


def _text(path: Path) -> str | None:
    """The file's text, or ``None`` for a binary file (a NUL byte or invalid UTF-8) or a file
    that is tracked but deleted in the work tree."""
    try:
        data = (ROOT / path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_file_refers_outside_the_repository() -> None:
    problems = []
    scanned = 0
    for path in repository_files():
        text = _text(path)
        if text is None:
            continue
        scanned += 1
        problems += [f"{path}:{n}: {rule}: {line[:120]}" for n, rule, line in
                     outside_references(text)]
    assert scanned > 50, f"only {scanned} text files found: is this the repository root?"
    assert not problems, "files refer to paths outside the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("see " + ".." + "/shared/tools/bench_models.py", "the team folder beside the clone"),
        ("TOOL = ROOT.parent / 'shared'; '" + ".." + "\\shared'", "the team folder beside "
         "the clone"),
        ("the plan in " + "DESIGN" + ".md", "a planning document outside the repository"),
        ("--out /" + "work/runs/leaderboard", "an absolute work-tree path"),
        ("python3 -m venv /" + "tmp/anchors-venv", "an absolute temporary path"),
        ("cd /" + "root/project", "a home folder"),
        ("open('/" + "home/alice/data.csv')", "a home folder"),
        ("/" + "Users/bob/src/tradezoo", "a home folder"),
        ("C:\\" + "Users\\carol\\tradezoo", "a Windows user folder"),
    ],
)
def test_scanner_finds_outside_paths(line: str, rule: str) -> None:
    assert [found[1] for found in outside_references(line)] == [rule]


@pytest.mark.parametrize(
    "line",
    [
        "see docs/design.md, section Data model",
        "cache under ~/.cache/tradezoo (TRADEZOO_DATA_DIR)",
        "https://github.com/root/project/blob/main/tmp/x.py",
        "writes runs/tmp/out.json and data/work/x.csv",
        "shared memory, shared/fixtures copied into tests/fixtures",
        "tempfile.mkdtemp() under the system temp dir",
    ],
)
def test_scanner_accepts_paths_inside_the_repository(line: str) -> None:
    assert outside_references(line) == []
