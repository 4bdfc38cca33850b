"""The package's layers: imports go down, never up and never in a circle.

    cli -> cluster / run / ci -> stages / lab / published -> planning -> tools -> catalogue
        -> (errors, settings, names, console)

(``ci`` writes the plan as CI data: it uses the planner, never runs a stage.)

A module may also import modules of its own package.  Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
RANKS = {"pipeline": 0, "pipeline.catalogue": 1, "pipeline.tools": 2, "pipeline.planning": 3,
         "pipeline.stages": 4, "pipeline.lab": 4, "pipeline.run": 5, "pipeline.ci": 5,
         "pipeline.forge": 5, "pipeline.published": 4, "pipeline.cluster": 5,
         "pipeline.cli": 6, "pipeline.__main__": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    candidate = ".".join(parts[:2])
    return candidate if candidate in RANKS else "pipeline"


def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        targets = found.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "pipeline"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(
                        ".py").exists() or (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                    targets.add(sub if is_module else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("pipeline"))
    return found


def test_imports_only_go_down_the_layers():
    wrong = []
    for module, targets in imports().items():
        for target in targets:
            if layer(target) == layer(module) or target == "pipeline":
                continue
            if RANKS[layer(target)] >= RANKS[layer(module)]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_module_imports_itself_in_a_circle():
    graph = {m: {t for t in ts if t in imports_of_modules(ts)} for m, ts in imports().items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt):], node, nxt]) if nxt in path
                              else f"{node} -> {nxt}")
            elif nxt not in state and nxt in graph:
                visit(nxt, [*path, node])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [])
    assert cycles == []


def imports_of_modules(targets: set[str]) -> set[str]:
    """The targets that are modules of the package (not the package itself)."""
    return {t for t in targets if t != "pipeline"}
