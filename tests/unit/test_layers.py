"""The layering, read statically from every `import` of src/medrl, components/ and pipelines/ (ast, nothing imported):
no import cycle between medrl's first-level packages and modules (imports under `if TYPE_CHECKING:` aside), and at
most MAX_FUNCTION_IMPORTS imports of medrl's own modules inside function bodies (each one for start-up speed, an
optional heavy dependency, or a Kubeflow component's body, which kfp runs on its own)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# components/ and pipelines/ ship as medrl.components and medrl.pipelines (setup.py).
FOLDERS = {"src/medrl": "medrl", "components": "medrl.components", "pipelines": "medrl.pipelines"}
MAX_FUNCTION_IMPORTS = 30


def module_files() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported medrl module or name, line, inside a function) of each import in `path`, TYPE_CHECKING aside."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("medrl"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([child.module] if child.module else [])])
                if base.split(".")[0] == "medrl":
                    found.extend((f"{base}.{a.name}", child.lineno, in_function) for a in child.names)
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def first_level(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` lies in (`medrl.store.join` -> `medrl.store`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> tuple[dict[str, dict[str, str]], list[str]]:
    """First-level package -> {first-level package it imports: one import that does it}, and every import of
    medrl's own modules inside a function body ('path:line imports name')."""
    modules = module_files()
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    in_functions: dict[str, str] = {}  # one per import statement, however many names it imports
    for module, path in modules.items():
        for name, line, in_function in imports(module, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if in_function:
                in_functions.setdefault(f"{path}:{line}", where)
            target = resolve(name, modules)
            if target is None or target == "medrl":
                continue
            a, b = first_level(module), first_level(target)
            if a != b:
                edges[a].setdefault(b, where)
    return edges, list(in_functions.values())


def cycle(edges: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph, as the imports that make it, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == 1:
                ring = [*path[path.index(nxt) :], nxt]
                return [edges[a][b] for a, b in pairwise(ring)]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in list(edges):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_import_cycle_between_first_level_packages():
    edges, _ = graph()
    found = cycle(edges)
    assert found is None, "an import cycle between medrl's packages:\n  " + "\n  ".join(found or [])


def test_the_cycle_finder_names_the_imports_of_a_cycle():
    edges = {"a": {"b": "a.py:1 imports b"}, "b": {"c": "b.py:2 imports c"}, "c": {"a": "c.py:3 imports a"}}
    assert cycle(edges) == ["a.py:1 imports b", "b.py:2 imports c", "c.py:3 imports a"]
    assert cycle({"a": {"b": "x"}, "b": {}}) is None


def test_few_imports_of_medrl_inside_functions():
    _, in_functions = graph()
    assert len(in_functions) <= MAX_FUNCTION_IMPORTS, (
        f"{len(in_functions)} imports of medrl's own modules inside functions (at most {MAX_FUNCTION_IMPORTS}); "
        "import at the top unless it is for start-up speed or an optional heavy dependency:\n  "
        + "\n  ".join(in_functions)
    )


def test_the_import_reader_sees_function_level_and_type_checking_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nfrom medrl import store\nif TYPE_CHECKING:\n    from medrl import study\n"
        "def f():\n    from . import layout\n"
    )
    assert imports("medrl.store.mod", source) == [("medrl.store", 2, False), ("medrl.store.layout", 6, True)]


def test_the_orchestrating_steps_import_no_torch():
    """init, prep, the arms of a level, the report and the cluster launch run on the slim image and start in every
    pipeline task: they import none of the ML stack (6 s per task on 2 cores when medrl.study imported it)."""
    code = (
        "import sys, medrl.study, medrl.cluster.launch, medrl.data.prep, medrl.report\n"
        "print(','.join(m for m in ('torch', 'transformers', 'trl', 'peft', 'deepspeed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
