"""The package's structure: every module imports in a fresh interpreter, edge's modules import each other without a
cycle, and a module imports another of edge's inside a function only with a comment saying why.

The graph is read from each module's source (ast): every import of an edge module, at the top or inside a function
(a function-level import still ties the two modules together), except those under `if TYPE_CHECKING:`. Importing
edge.a.b also runs the package edge.a's __init__, so that counts as an edge to edge.a, unless the importer is
inside edge.a itself (Python has already begun it then).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge

PACKAGE = Path(edge.__file__).parent


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """(import node, whether it is inside a function) for every import not under `if TYPE_CHECKING:`."""

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for grandchild in child.orelse:
                    yield from walk(grandchild, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from walk(tree, False)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The edge modules an import statement runs: each module it names, and the packages above that one which
    do not hold the importer (Python has begun those already)."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        submodules = [f"{prefix}.{alias.name}" for alias in node.names]
        # `from P import name`: P's own code is used unless every name is a submodule of P
        named = [name for name in submodules if name in modules] or [prefix]
    targets = set()
    for name in filter(modules.__contains__, named):
        if name != module:
            targets.add(name)
        parts = name.split(".")
        for depth in range(1, len(parts)):
            package = ".".join(parts[:depth])
            if not (module == package or module.startswith(package + ".")):
                targets.add(package)
    return targets


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str, bool]]]:
    """module -> the edge modules it imports; and every import of an edge module as (module, line, target,
    inside a function)."""
    files = module_files()
    modules = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    imports = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, in_function in _imports(tree):
            targets = _targets(name, path.name == "__init__.py", node, modules)
            graph[name] |= targets
            imports += [(name, node.lineno, target, in_function) for target in sorted(targets)]
    return graph, imports


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(module_files())
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_no_import_cycle():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_function_level_imports_of_edge_modules_say_why():
    """An import of edge's own module inside a function hides a dependency; it needs a comment saying why it is not
    at the top, such as an optional heavy dependency (pycuda, tensorrt, torch): on its line, or on the line above
    the run of import lines it belongs to."""
    _, imports = import_graph()
    files = module_files()
    unexplained = []
    for module, line, target, in_function in imports:
        if not in_function:
            continue
        lines = files[module].read_text(encoding="utf-8").splitlines()
        above = line - 2
        while above >= 0 and lines[above].strip().startswith(("from ", "import ", ")")):
            above -= 1
        if "#" not in lines[line - 1] and not lines[above].strip().startswith("#"):
            unexplained.append(f"{files[module].relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert unexplained == []


def test_the_graph_reader_finds_a_cycle_and_a_function_level_import(tmp_path):
    """The reader itself, on a made-up graph: a -> b -> c -> a is one cycle; d, alone, none."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    tree = ast.parse("import os\ndef f():\n    from . import x\nif TYPE_CHECKING:\n    from . import y\n")
    found = [(type(node).__name__, inside) for node, inside in _imports(tree)]
    assert found == [("Import", False), ("ImportFrom", True)]
