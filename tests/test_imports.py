"""The import structure of ``crdtmem`` and ``transport``, read from the source with ``ast``.

- No cycle, counting every import: module level, inside functions, and in
  ``if TYPE_CHECKING:`` blocks (a cycle hidden there is still a cycle in the design).
- Imports come first: none below a module-level statement that is not an import, and
  none inside a function (an import there hides a dependency, often a cycle).
- No module reads another's private names: no ``from X import _name``, no
  ``module._name``, and no other module reads ``Replica``'s private members.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crdtmem", "transport")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}
TREES: dict[str, ast.Module] = {
    name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()
}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``from ... import`` refers to (relative imports included)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules ``node`` imports: ``from crdtmem import codec`` imports
    ``crdtmem.codec``; ``from crdtmem import Replica`` imports the package itself."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        source = _resolve(module, node)
        names = set()
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            names.add(submodule if submodule in MODULES else source)
    return {name for name in names if name in MODULES and name != module}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, tree in TREES.items():
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(module, node)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component: list[str] = []
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


def test_the_parser_sees_the_modules_and_their_imports() -> None:
    graph = _graph()
    assert {"crdtmem.replica", "crdtmem.fields", "crdtmem.storage", "transport"} <= set(graph)
    assert "crdtmem.updatelog" in graph["crdtmem.replica"]
    assert "crdtmem.host" in graph["crdtmem.fields"]


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _only_imports(node: ast.stmt) -> bool:
    """An import, or a block (``if TYPE_CHECKING:``, ``try``) holding only imports."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return True
    if isinstance(node, ast.If | ast.Try):
        body = [*node.body, *node.orelse]
        if isinstance(node, ast.Try):
            body += [stmt for handler in node.handlers for stmt in handler.body]
        return all(_only_imports(stmt) or isinstance(stmt, ast.Pass) for stmt in body)
    return False


def _contains_import(node: ast.stmt) -> bool:
    return any(isinstance(inner, ast.Import | ast.ImportFrom) for inner in ast.walk(node))


@pytest.mark.parametrize("module", sorted(TREES))
def test_imports_come_first(module: str) -> None:
    body = TREES[module].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    late: list[int] = []
    seen_other = False
    for node in body:
        if _only_imports(node):
            if seen_other:
                late.append(node.lineno)
        elif _contains_import(node) and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        ):
            late.append(node.lineno)
        else:
            seen_other = True
    assert late == [], f"{module}: imports below other statements at lines {late}"


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_import_inside_a_function(module: str) -> None:
    inside = [
        node.lineno
        for function in ast.walk(TREES[module])
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert inside == [], f"{module}: imports inside functions at lines {inside}"


def _replica_privates() -> set[str]:
    """Names of ``Replica``'s private methods and attributes."""
    tree = TREES["crdtmem.replica"]
    (replica,) = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Replica"
    ]
    names: set[str] = set()
    for node in ast.walk(replica):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            names.add(node.name)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr.startswith("_")
        ):
            names.add(node.attr)
    return {name for name in names if not name.startswith("__")}


def _module_aliases(module: str, tree: ast.Module) -> set[str]:
    """Local names bound to project modules (``from crdtmem import codec``, ``import x``)."""
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases.add(alias.asname or alias.name)
    return aliases


def _private_reads(module: str, replica_privates: set[str]) -> list[str]:
    tree = TREES[module]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] in PACKAGES:
                found += [
                    f"line {node.lineno}: from {source} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    aliases = _module_aliases(module, tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in aliases:
            found.append(f"line {node.lineno}: {owner.id}.{node.attr}")
        elif module != "crdtmem.replica" and node.attr in replica_privates:
            if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                continue  # the module's own class's member of the same name
            found.append(f"line {node.lineno}: {ast.unparse(node)} (a private of Replica)")
    return found


# Reads of another module's private names that are known and allowed, by module: none.
EXEMPT: dict[str, set[str]] = {}


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_module_reads_another_modules_private_names(module: str) -> None:
    reads = _private_reads(module, _replica_privates())
    assert [r for r in reads if r not in EXEMPT.get(module, set())] == []


def test_the_private_read_finder_finds_them() -> None:
    source = (
        "from crdtmem.replica import _Hidden\n"
        "from crdtmem import codec\n"
        "def f(replica):\n"
        "    codec._secret\n"
        "    return replica._fields\n"
    )
    TREES["crdtmem._probe"] = ast.parse(source)
    MODULES["crdtmem._probe"] = MODULES["crdtmem.replica"]
    try:
        reads = _private_reads("crdtmem._probe", _replica_privates())
    finally:
        del TREES["crdtmem._probe"], MODULES["crdtmem._probe"]
    assert len(reads) == 3, reads
