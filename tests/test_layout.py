"""The package's layout keeps its promises: no import cycles (imports inside functions count), no layer
imports one above it, and no private name is imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdfiqa"

LAYERS = {
    # a module of the package on the left never imports one on the right (the flow: cli -> pipeline ->
    # engine/distill -> models, losses, data, metrics, budget)
    "kdfiqa.models": ("kdfiqa.engine", "kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.demo",
                      "kdfiqa.config"),
    "kdfiqa.losses": ("kdfiqa.engine", "kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.models"),
    "kdfiqa.budget": ("kdfiqa.engine", "kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.config"),
    "kdfiqa.engine": ("kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.demo", "kdfiqa.config"),
    "kdfiqa.distill": ("kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.demo"),
    "kdfiqa.pipeline": ("kdfiqa.cli", "kdfiqa.demo"),
    "kdfiqa.config": ("kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.demo"),
    "kdfiqa.data": ("kdfiqa.engine", "kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.demo",
                    "kdfiqa.config", "kdfiqa.models"),
    "kdfiqa.metrics": ("kdfiqa.engine", "kdfiqa.distill", "kdfiqa.pipeline", "kdfiqa.cli", "kdfiqa.models"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def _imports(module: str) -> list[tuple[str, str]]:
    """``(target module, imported name or "")`` for every import in ``module``, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("kdfiqa")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if not base.startswith("kdfiqa"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "") if sub in MODULES else (base, alias.name))
    return found


def _resolved(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in _imports(module):
            found = _resolved(target)
            if not found:
                continue
            # importing kdfiqa.models.deploy runs kdfiqa/models/__init__.py first: an edge to it too,
            # except to the module's own packages (already being imported)
            parts = found.split(".")
            for depth in range(2, len(parts) + 1):
                step = ".".join(parts[:depth])
                if step in MODULES and step != module and not module.startswith(step + "."):
                    edges[module].add(step)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of ``edges`` closes, as ``"a -> b -> a"``."""
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles():
    assert _cycles(_edges()) == []


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    edges = _edges()
    assert "kdfiqa.errors" in edges["kdfiqa.registry"]
    edges["kdfiqa.errors"].add("kdfiqa.registry")
    assert _cycles(edges) == ["kdfiqa.errors -> kdfiqa.registry -> kdfiqa.errors"]


@pytest.mark.parametrize("lower", sorted(LAYERS))
def test_no_layer_imports_upward(lower):
    upward = []
    for module in MODULES:
        if module != lower and not module.startswith(lower + "."):
            continue
        for target, _ in _imports(module):
            found = _resolved(target) or target
            if any(found == upper or found.startswith(upper + ".") for upper in LAYERS[lower]):
                upward.append(f"{module} imports {found}")
    assert upward == []


def test_no_private_name_is_imported_from_another_module():
    private = [f"{module} imports {name} from {target}" for module in MODULES
               for target, name in _imports(module) if name.startswith("_") and name != "__version__"]
    assert private == []
