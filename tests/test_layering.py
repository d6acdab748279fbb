"""The package layers of docs/design.md (layering): data -> backtest, policies -> envs -> agents
-> cli. No module imports a module of a higher layer, at module level or inside a function,
and the two middle layers do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tradezoo"
LAYERS: dict[str, int] = {
    "errors": 0, "data": 1, "backtest": 2, "policies": 2, "envs": 3, "agents": 4, "cli": 5,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tradezoo" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_no_module_imports_a_higher_or_sibling_layer() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        own = _layer(module.removesuffix(".__init__"))
        if own not in LAYERS:
            continue
        for line, target in _imports(path):
            other = _layer(target)
            if other not in LAYERS or other == own:
                continue
            if LAYERS[other] >= LAYERS[own]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert violations == [], "\n".join(violations)
