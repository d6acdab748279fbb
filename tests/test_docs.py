"""The documentation is tested: its Python blocks run and its commands exist.

- Every fenced ``python`` block of README.md and docs/*.md runs, in order, one namespace per
  file (a later block may use names an earlier one defined), in a temporary working folder
  with a private data cache, offline. A block that is not meant to run on its own says so on
  the line right before its fence, with a reason::

      <!-- fragment: needs a trained checkpoint -->

  and is reported as skipped with that reason.
- Every ``tradezoo ...`` command the docs show exists: a command in a shell block must parse
  with ``tradezoo.cli.build_parser()`` (subcommands, flags and their values); a command in
  inline code (prose such as ``tradezoo data fetch bybit``) must name existing subcommands
  and flags.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""Files whose Python blocks run."""
COMMAND_DOCS = [*PYTHON_DOCS, ROOT / "benchmarks" / "README.md", ROOT / "scripts" / "README.md"]
"""Files whose ``tradezoo`` commands are checked."""
PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
FRAGMENT = re.compile(r"^<!--\s*fragment:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
INLINE_COMMAND = re.compile(r"`(tradezoo [^`]+)`")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, first code line (1-based) and code."""

    path: Path
    lang: str
    line: int
    code: str
    fragment: str | None
    """The fragment marker's reason, ``""`` for a marker without one, ``None`` without."""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every top-level fenced block of a Markdown file (a fence must close)."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence"
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        marker = FRAGMENT.match(previous)
        blocks.append(Block(
            path, match.group("lang").lower(), i + 2, "\n".join(lines[i + 1 : end]) + "\n",
            marker.group("reason") if marker else None,
        ))
        i = end + 1
    return blocks


def python_blocks() -> Iterator[object]:
    for path in PYTHON_DOCS:
        blocks = [b for b in code_blocks(path) if b.lang in PYTHON_LANGS]
        if blocks:
            yield pytest.param(path, blocks, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize(("path", "blocks"), list(python_blocks()))
def test_python_blocks_run(
    path: Path, blocks: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine run faster on one thread
    namespace: dict[str, object] = {"__name__": "__docs__"}
    skipped = []
    try:
        for block in blocks:
            if block.fragment is not None:
                assert block.fragment, f"{block.where}: a fragment marker needs a reason"
                skipped.append(f"{block.where}: {block.fragment}")
                continue
            code = compile(block.code, block.where, "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    exec(code, namespace)
                except Exception as exc:
                    raise AssertionError(f"the block at {block.where} fails: {exc!r}") from exc
    finally:
        torch.set_num_threads(threads)
    if skipped:
        pytest.skip("fragments, not run: " + "; ".join(skipped))


def test_every_doc_page_exists() -> None:
    names = {p.name for p in PYTHON_DOCS}
    for page in ("design.md", "data.md", "envs.md", "training.md", "performance.md",
                 "results.md", "architectures.md"):
        assert page in names, f"docs/{page} is missing"


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
WRITTEN_SEPARATELY = {"SECURITY.md"}
"""Root files the docs link to that are maintained outside the docs; checked once present."""


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped,
    spaces as hyphens)."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve() -> None:
    """Every relative link of the docs names an existing file, and its ``#anchor`` a heading
    of that file."""
    problems, pending = [], []
    for page in COMMAND_DOCS:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)} -> {target}"
            if not linked.exists():
                if linked.name in WRITTEN_SEPARATELY and linked.parent == ROOT:
                    pending.append(linked.name)
                else:
                    problems.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: no heading with that anchor")
    assert not problems, "broken links:\n" + "\n".join(problems)
    if pending:
        pytest.skip(f"linked, not yet in the repository: {sorted(set(pending))}")


# ------------------------------------------------------------------------------ commands --


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def check_command_names(argv: list[str]) -> str | None:
    """Why ``argv`` (after ``tradezoo``) names a subcommand or flag that does not exist, or
    ``None``. Alternatives written ``a|b`` are each checked; values are not."""
    from tradezoo.cli import build_parser

    parser = build_parser()
    path = ["tradezoo"]
    for token in argv:
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            if flag not in _options(parser):
                return f"{' '.join(path)} has no option {flag}"
            continue
        children = _subparsers(parser)
        if not children:
            continue  # a positional value or an option's value
        names = token.split("|")
        missing = [n for n in names if n not in children]
        if missing:
            return f"{' '.join(path)} has no subcommand {missing[0]!r} (has {sorted(children)})"
        parser = children[names[0]]
        path.append(names[0])
    return None


def parse_error(argv: list[str]) -> str | None:
    """argparse's complaint about ``tradezoo *argv``, or ``None`` when it parses."""
    from tradezoo.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def shell_commands(block: Block) -> Iterator[list[str]]:
    """``tradezoo`` commands of a shell block as argv lists (after ``tradezoo``): lines joined
    at trailing backslashes, split at ``&&``, ``||`` and ``;``, comments dropped."""
    text = block.code.replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        for part in re.split(r"&&|\|\||;", line):
            tokens = shlex.split(part, comments=True)
            if tokens[:1] == ["tradezoo"]:
                yield tokens[1:]


def documented_commands() -> Iterator[object]:
    for path in COMMAND_DOCS:
        for block in code_blocks(path):
            if block.lang in SHELL_LANGS:
                for argv in shell_commands(block):
                    yield pytest.param(block.where, argv, True,
                                       id=f"{block.where} tradezoo {' '.join(argv)}")
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if FENCE.match(line):
                continue
            for command in INLINE_COMMAND.findall(line):
                where = f"{path.relative_to(ROOT)}:{number}"
                yield pytest.param(where, command.split()[1:], False,
                                   id=f"{where} {command}")


COMMANDS = list(documented_commands())


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 10, "the command scan found almost nothing: is the pattern broken?"


@pytest.mark.parametrize(("where", "argv", "full"), COMMANDS)
def test_documented_command_exists(where: str, argv: list[str], full: bool) -> None:
    problem = check_command_names(argv)
    if problem is None and full:
        problem = parse_error(argv)
    assert problem is None, f"{where}: `tradezoo {' '.join(argv)}`: {problem}"


@pytest.mark.parametrize(
    ("argv", "ok"),
    [
        (["train", "ppo", "--timesteps", "10"], True),
        (["train", "supervised|ppo"], True),
        (["train", "dqn"], False),
        (["compare", "--no-such-flag"], False),
        (["data", "fetch", "bybit", "BTCUSDT", "--interval", "1h"], True),
    ],
)
def test_command_check_can_fail(argv: list[str], ok: bool) -> None:
    assert (check_command_names(argv) is None) is ok
