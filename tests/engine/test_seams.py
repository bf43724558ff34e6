"""Seams of the package, read from the source with ``ast`` (nothing is imported):

- the engine depends on no model, network builder or data loader;
- the modules of ``tfmedgan`` import one another without a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "tfmedgan"
FORBIDDEN_IN_ENGINE = ("tfmedgan.models", "tfmedgan.networks", "tfmedgan.data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def resolve(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package(path):
        base = base[:-1]  # a plain module's relative imports start from its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_names(tree: ast.AST, module: str, path: Path, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``; ``from X import Y`` yields both X
    and X.Y (Y may be a submodule). ``importlib.import_module("...")`` calls with a constant name
    count too. With ``top_level_only``, imports inside functions and ``if TYPE_CHECKING:`` blocks
    (which do not run when the module is imported) are left out."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, inside_function: bool) -> None:
        if top_level_only and inside_function:
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, path, node.level, node.module)
            found.append((node.lineno, source))
            found.extend((node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
        if top_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            children = node.orelse
        else:
            children = list(ast.iter_child_nodes(node))
        nested = inside_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in children:
            visit(child, nested)

    for statement in tree.body:
        visit(statement, False)
    return found


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_engine_imports_no_model_network_or_data_module():
    engine = sorted((PACKAGE_ROOT / "engine").rglob("*.py"))
    assert len(engine) >= 5, engine  # the reader found the engine
    offences = []
    for path in engine:
        module = module_name(path)
        for line, name in imported_names(parse(path), module, path, top_level_only=False):
            if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN_IN_ENGINE):
                offences.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} imports {name}")
    assert not offences, "the engine must not depend on models, networks or data:\n" + "\n".join(offences)


def import_graph(top_level_only: bool = True) -> dict[str, set[str]]:
    """Module -> the tfmedgan modules it imports (when it is imported, with ``top_level_only``;
    otherwise also those imported later inside its functions).

    Importing ``tfmedgan.models.base`` also runs ``tfmedgan/models/__init__.py``, so an import adds
    an edge to every package above the imported module too, except the importer's own packages
    (already being imported when the importer runs)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for _, name in imported_names(parse(path), module, path, top_level_only):
            # 'from tfmedgan.engine import checkpoint' -> tfmedgan.engine.checkpoint when that is a
            # module, else the package itself; 'import a.b.c' -> the longest known module
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if not name or name == module:
                continue
            parts = name.split(".")
            for length in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:length])
                if not (module == ancestor or module.startswith(ancestor + ".")):
                    edges.add(ancestor)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, iterators = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while path:
            child = next(iterators[-1], None)
            if child is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                iterators.append(iter(sorted(graph[child])))
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "tfmedgan.engine.checkpoint" in graph["tfmedgan.engine.trainer"]
    assert {"tfmedgan.engine", "tfmedgan.engine.config"} <= graph["tfmedgan.api"]  # packages above count
    cycle = find_cycle(graph)
    assert cycle is None, "import circle at import time: " + " -> ".join(cycle)


#: Circles through imports deferred into functions that are known and due to be removed, as the
#: edge that closes them. They do not break an import, but the architecture wants none.
KNOWN_DEFERRED_EDGES = {("tfmedgan.inference.generate", "tfmedgan.api"), ("tfmedgan.inference.volumes", "tfmedgan.api")}


def test_no_circle_even_through_imports_deferred_into_functions():
    graph = import_graph(top_level_only=False)
    known = sorted((a, b) for a, b in KNOWN_DEFERRED_EDGES if b in graph.get(a, ()))
    for importer, imported in known:
        graph[importer].discard(imported)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle (counting imports inside functions): " + " -> ".join(cycle)
    circles = [f"{a} -> {b}" for a, b in known if find_cycle({**graph, a: graph[a] | {b}})]
    if circles:
        pytest.xfail("known circle through a deferred import: " + "; ".join(circles))


@pytest.mark.parametrize("source, expected", [
    ("from tfmedgan.models import dcgan", {"tfmedgan.models", "tfmedgan.models.dcgan"}),
    ("from tfmedgan import networks", {"tfmedgan", "tfmedgan.networks"}),
    ("from ..data import png", {"tfmedgan.data", "tfmedgan.data.png"}),
    ("from .. import models as m", {"tfmedgan", "tfmedgan.models"}),
    ("from .recipe import Recipe", {"tfmedgan.engine.recipe", "tfmedgan.engine.recipe.Recipe"}),
    ("import tfmedgan.data.hdf5 as h", {"tfmedgan.data.hdf5"}),
    ("def f():\n    import importlib\n    importlib.import_module('tfmedgan.networks.x')",
     {"importlib", "tfmedgan.networks.x"}),
])
def test_the_import_reader_sees_every_spelling(source, expected):
    """The checks above are only as good as the reader: absolute, relative and dynamic imports."""
    path = PACKAGE_ROOT / "engine" / "example.py"
    assert {name for _, name in imported_names(ast.parse(source), "tfmedgan.engine.example", path, False)} == expected


def test_top_level_reading_skips_function_bodies_and_type_checking_blocks():
    source = ("from typing import TYPE_CHECKING\nimport tfmedgan.errors\n"
              "if TYPE_CHECKING:\n    import tfmedgan.models\nelse:\n    import tfmedgan.io\n"
              "def f():\n    import tfmedgan.data\n")
    path = PACKAGE_ROOT / "engine" / "example.py"
    names = {name for _, name in imported_names(ast.parse(source), "tfmedgan.engine.example", path, True)}
    assert names == {"typing", "typing.TYPE_CHECKING", "tfmedgan.errors", "tfmedgan.io"}


def test_the_cycle_finder_reports_the_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None
