"""The layers only point down: every import in every module, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"core", "retrieval", "prompts", "assistant", "ui", "server", "evaluation", "integrations", "tests"}

# What each package may import from the others (itself always).
ALLOWED = {
    "core": set(),
    "retrieval": {"core"},
    "prompts": {"core"},
    "assistant": {"core", "retrieval", "prompts"},
    "ui": {"core", "prompts", "assistant.events", "assistant.replies"},  # the agent's event stream only
    "integrations": {"core", "retrieval", "prompts", "assistant"},
    "server": {"core", "retrieval", "prompts", "assistant", "ui", "evaluation", "integrations"},
    "evaluation": {"core", "retrieval", "prompts", "assistant", "server"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top not in OURS or top == package:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_points_up(package):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in _imports(path)
        if not _allowed(package, module)
    ]
    assert wrong == [], f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from server.app import create_app\n")
    assert [m for _, m in _imports(module) if not _allowed("assistant", m)] == ["server.app"]
