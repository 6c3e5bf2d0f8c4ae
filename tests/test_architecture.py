"""The layer rules of docs/ARCHITECTURE.md, checked on the source: ingest imports none of app/finetune/eval;
finetune may import ingest only; app may import ingest and finetune; eval may import everything; nothing imports
eval (the CLI finds `groundwork eval` through the `groundwork.commands` entry point)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("ingest", "finetune", "app", "eval")
ALLOWED: dict[str, set[str]] = {
    "ingest": set(),
    "finetune": {"ingest"},
    "app": {"ingest", "finetune"},
    "eval": {"ingest", "finetune", "app"},
}


def _module_of(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_layers(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, top-level package) for every import in a file, relative imports resolved; importlib.import_module
    and __import__ calls with a literal name count too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_of(path, root)
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def violations(root: Path = ROOT) -> list[str]:
    problems = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            for line, target in imported_layers(path, root):
                if target in LAYERS and target != layer and target not in ALLOWED[layer]:
                    problems.append(f"{path.relative_to(root)}:{line}: {layer} must not import {target}")
    return problems


def test_layers_import_only_what_they_may() -> None:
    assert violations() == []


def test_the_check_catches_a_forbidden_import(tmp_path) -> None:
    """A scratch copy of the tree with one forbidden import of each kind fails the check."""
    for layer in LAYERS:
        (tmp_path / layer / "sub").mkdir(parents=True)
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "ingest" / "bad.py").write_text("from app.engine import Engine\n")
    (tmp_path / "finetune" / "bad.py").write_text("import app.guardrails\n")
    (tmp_path / "app" / "bad.py").write_text("def f():\n    from eval.cli import eval_cli\n")
    (tmp_path / "app" / "sub" / "bad.py").write_text("import importlib\nimportlib.import_module('eval.errors')\n")
    (tmp_path / "eval" / "fine.py").write_text("from app.cli import cli\nfrom . import fine\n")
    (tmp_path / "finetune" / "fine.py").write_text("from ingest.errors import GroundworkError\nfrom .bad import x\n")
    assert sorted(violations(tmp_path)) == [
        "app/bad.py:2: app must not import eval",
        "app/sub/bad.py:2: app must not import eval",
        "finetune/bad.py:1: finetune must not import app",
        "ingest/bad.py:1: ingest must not import app",
    ]


def test_the_real_tree_fails_with_one_forbidden_import_added(tmp_path) -> None:
    """Copy the real packages, add one forbidden import to app/cli.py's copy: the check must name it."""
    import shutil

    for layer in LAYERS:
        shutil.copytree(ROOT / layer, tmp_path / layer, ignore=shutil.ignore_patterns("__pycache__"))
    cli = tmp_path / "app" / "cli.py"
    cli.write_text(cli.read_text(encoding="utf-8") + "\nfrom eval.cli import eval_cli  # noqa\n", encoding="utf-8")
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith("app/cli.py:") and found[0].endswith("app must not import eval")
