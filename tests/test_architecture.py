"""The import graph of app/, read from the code with `ast`: the layers point one way.

    api -> schemas / services -> storage -> core / models

- the usage core (`app/core`) imports nothing of the app above it, and nothing that does
  I/O, even indirectly (no Flask, NDB, google.*, gRPC, Redis);
- core and storage import no service, view or schema; schemas and models no service;
- no module imports another that imports it back, at module level or inside a function;
- an import inside a function says why beside it (a comment on its line or the one above);
- each constant the layers share is defined once (the epoch, slots per day, the largest
  key id, the aggregation types, the org name rule).

Every import counts, module-level and function-level: a cycle through a function's
import is still a cycle, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

#: Libraries whose import means I/O (network, database, web framework, files of a cache).
IO_LIBRARIES = (
    "flask",
    "werkzeug",
    "google",
    "grpc",
    "redis",
    "gunicorn",
    "requests",
    "httpx",
    "urllib",
    "socket",
    "subprocess",
    "http",
    "hashids",
    "click",
    "cryptography",
    "marshmallow",
    "apispec",
)
#: The layers above storage, which neither core nor storage may import.
ABOVE_STORAGE = (
    "app.services",
    "app.api",
    "app.schemas",
    "app.openapi",
    "app.tenancy",
    "app.cli",
    "app.dashboard",
)
#: Constants defined exactly once, in the core (a leading underscore counts the same).
SHARED_CONSTANTS = {
    "EPOCH",
    "SLOTS_PER_DAY",
    "MAX_ID",
    "AGGREGATION_TYPES",
    "AGGREGATIONS",
    "ORG_NAME",
    "ORG_NAME_PATTERN",
    "SLOT",
}
AGGREGATION_NAMES = {"sum", "count", "last", "min", "max", "avg", "unique_count"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(APP.rglob("*.py"))}
TREES = {
    name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()
}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports included)."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, node, inside a function) of every import of a module. `from a
    import b` names `a.b` when that is a module of the app, else `a`."""
    found: list[tuple[str, ast.stmt, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                source = _resolve(module, child)
                for alias in child.names:
                    target = f"{source}.{alias.name}"
                    found.append((target if target in MODULES else source, child, in_function))
            visit(child, nested)

    visit(TREES[module], False)
    return found


GRAPH = {module: {target for target, _, _ in imports_of(module)} for module in MODULES}


def _app_edges(module: str) -> set[str]:
    return {target for target in GRAPH[module] if target in MODULES and target != module}


def _in(module: str, prefixes) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for target in _app_edges(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_is_read():
    """The reader itself: it sees the modules and both kinds of import."""
    assert "app.core.windows" in MODULES and "app.services.ingest" in MODULES
    assert "app.core.cells" in GRAPH["app.core.windows"]
    assert "app.storage.rollups" in GRAPH["app.services.ingest"]
    assert any(inside for _, _, inside in imports_of("app.cli"))  # the command's lazy imports


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, ("app.core", "app.storage"))])
def test_core_and_storage_import_nothing_above_storage(module):
    above = {target for target in GRAPH[module] if _in(target, ABOVE_STORAGE)}
    assert not above, f"{module} imports {sorted(above)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, ("app.schemas", "app.models"))])
def test_schemas_and_models_import_no_service_or_view(module):
    """Schemas describe requests and models describe stored kinds: a rule both need (the
    org name, the aggregation types) lives in the core, not in a service."""
    above = {
        target
        for target in GRAPH[module]
        if _in(target, ("app.services", "app.api", "app.openapi", "app.tenancy"))
        or (_in(module, ("app.models",)) and _in(target, ("app.storage", "app.schemas")))
    }
    assert not above, f"{module} imports {sorted(above)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, ("app.core",))])
def test_the_core_imports_only_the_core_and_no_io(module):
    """Not even through another module of the app: the core is pure all the way down."""
    outside = {target for target in _app_edges(module) if not _in(target, ("app.core",))}
    assert not outside, f"{module} imports {sorted(outside)} of the app"
    io = {target for target in GRAPH[module] if _in(target, IO_LIBRARIES)}
    assert not io, f"{module} imports {sorted(io)}"


def test_there_is_no_import_cycle():
    """Tarjan's strongly connected components over every import of app/."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(_app_edges(node)):
            if target not in index:
                connect(target)
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
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            connect(module)
    # A package's __init__ importing its own submodules (app.api -> app.api.admin) is how
    # a package gathers its parts, not a cycle between layers: the submodules import
    # `app.api` only through the package path, which is not an edge here.
    assert not cycles, f"import cycles: {cycles}"


def _is_import(line: str) -> bool:
    text = line.strip()
    return text.startswith("import ") or (text.startswith("from ") and " import " in text)


def _says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above its block of imports (blank lines and
    other imports between them)."""
    if "#" in lines[lineno - 1]:
        return True
    above = lineno - 2
    while above >= 0 and (not lines[above].strip() or _is_import(lines[above])):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_imports_inside_functions_say_why():
    silent = []
    for module in MODULES:
        lines = MODULES[module].read_text(encoding="utf-8").splitlines()
        for _, node, inside in imports_of(module):
            if inside and not _says_why(lines, node.lineno):
                silent.append(f"{MODULES[module].relative_to(APP.parent)}:{node.lineno}")
    assert not silent, f"imports inside functions without a reason beside them: {silent}"


def _defined_names(tree: ast.Module):
    """(name, value) of every module- and class-level assignment."""
    bodies = [tree.body] + [node.body for node in tree.body if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for node in body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            yield name.id, node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                yield node.target.id, node.value


def test_shared_constants_are_defined_once():
    where: dict[str, list[str]] = {}
    for module, tree in TREES.items():
        for name, _ in _defined_names(tree):
            if name.lstrip("_") in SHARED_CONSTANTS:
                where.setdefault(name.lstrip("_"), []).append(module)
    twice = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert not twice, f"defined more than once: {twice}"
    assert set(where) >= {"EPOCH", "SLOTS_PER_DAY", "MAX_ID", "AGGREGATION_TYPES"}
    assert all(_in(modules[0], ("app.core",)) for modules in where.values()), where


def _strings(node: ast.AST) -> set[str]:
    return {
        child.value
        for child in ast.walk(node)
        if isinstance(child, ast.Constant) and isinstance(child.value, str)
    }


def test_the_aggregation_types_are_listed_once():
    """Whatever its name: a literal naming all seven aggregations exists only in the core
    (the `Aggregation` enum); everyone else derives from it."""
    listed = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict, ast.ClassDef))
                and _strings(node) >= AGGREGATION_NAMES
                and (
                    isinstance(node, ast.ClassDef)
                    or not any(
                        isinstance(child, (ast.Tuple, ast.List, ast.Set, ast.Dict))
                        and _strings(child) >= AGGREGATION_NAMES
                        for child in ast.iter_child_nodes(node)
                    )
                )
            ):
                listed.append(f"{module}:{node.lineno}")
    assert len(listed) == 1 and listed[0].startswith("app.core.aggregation:"), listed


def test_the_epoch_is_built_once():
    """Whatever its name: `datetime(1970, 1, 1, ...)` appears only in the core's slots."""
    built = [
        f"{module}:{node.lineno}"
        for module, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "datetime"
        and [getattr(arg, "value", None) for arg in node.args[:3]] == [1970, 1, 1]
    ]
    assert built == [built[0]] and built[0].startswith("app.core.slots:"), built
