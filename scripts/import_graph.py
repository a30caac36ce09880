"""The shape of the package, measured from its imports: what docs/architecture.md promises.

    python scripts/import_graph.py

Prints the modules at the top of ``src/socioseg``, the import circles, the depth of the import
graph (scripts and benchmarks included: a script sits one level above what it imports), the
private names that cross a module boundary, and the functions over 60 lines. Every import of a
``socioseg`` module counts, lazy ones inside functions included: a lazy import is still a
dependency, only a later one.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "socioseg"
LONG_FUNCTION = 60


@dataclass
class Graph:
    """Modules (dotted names) and what each imports from the package."""

    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=dict)
    private: list[str] = field(default_factory=list)  # "importer: module.name"


def module_name(path: Path) -> str:
    """``socioseg.region.area`` for src/socioseg/region/area.py; scripts as ``scripts.name``."""
    if PACKAGE in path.parents:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imported(node: ast.AST, importer: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """``(module, names)`` pairs one import statement brings in (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [(alias.name, []) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = importer.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([base] if base else []))
    return [(base, [alias.name for alias in node.names])]


def _statements(tree: ast.Module, lazy: bool):
    """Every import statement (``lazy``), or only those run when the module is imported:
    module level, including under ``if``/``try``, but not inside functions or classes."""
    if lazy:
        yield from ast.walk(tree)
        return
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                stack.append(child)


def build(paths: list[Path], lazy: bool = True) -> Graph:
    graph = Graph()
    for path in paths:
        graph.files[module_name(path)] = path
    for name, path in graph.files.items():
        deps = graph.edges.setdefault(name, set())
        tree = ast.parse(path.read_text(), str(path))
        for node in _statements(tree, lazy):
            for module, names in _imported(node, name, path.name == "__init__.py"):
                if not module.startswith("socioseg"):
                    continue
                for imported in names or [""]:
                    child = f"{module}.{imported}" if imported else module
                    target = child if child in graph.files else module
                    if target in graph.files and target != name:
                        deps.add(target)
                    if _crosses_privacy(name, module, imported):
                        graph.private.append(f"{name}: {module}.{imported}".rstrip("."))
    return graph


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _crosses_privacy(importer: str, module: str, imported: str) -> bool:
    """A ``_name`` taken from another module, or a ``_module`` from outside its package.

    The modules of one package may share its ``_private`` modules (that is what the underscore
    says in Python); a function or constant named ``_x`` is its module's own."""
    if _is_private(imported):
        return True
    parts = module.split(".")
    for depth, part in enumerate(parts):
        if _is_private(part):
            package = ".".join(parts[:depth])
            return not importer.startswith(package + ".")
    return False


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.edges[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph.edges):
        if node not in index:
            visit(node)
    return found


def levels(graph: Graph) -> dict[str, int]:
    """1 for a module that imports nothing of the package, else 1 + its deepest import.

    A package's ``__init__`` that only re-exports is counted like any module; modules inside
    one import circle share a level (the circle is reported separately)."""
    memo: dict[str, int] = {}
    visiting: set[str] = set()

    def level(node: str) -> int:
        if node in memo:
            return memo[node]
        if node in visiting:
            return 0
        visiting.add(node)
        memo[node] = 1 + max((level(dep) for dep in graph.edges[node]), default=0)
        visiting.discard(node)
        return memo[node]

    return {node: level(node) for node in graph.edges}


def chain(graph: Graph, depth: dict[str, int], start: str) -> list[str]:
    """The longest import chain down from ``start``."""
    out = [start]
    while graph.edges[out[-1]] and len(out) <= len(depth):
        out.append(max(sorted(graph.edges[out[-1]]), key=depth.get))
    return out


def long_functions(paths: list[Path], limit: int = LONG_FUNCTION) -> list[tuple[str, int]]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append((f"{module_name(path)}.{node.name}", length))
    return sorted(found, key=lambda item: -item[1])


def source_files() -> tuple[list[Path], list[Path]]:
    """``(package modules, scripts and benchmarks)``."""
    package = sorted(PACKAGE.rglob("*.py"))
    others = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    return package, others


def top_level_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def main() -> int:
    package, others = source_files()
    graph = build(package + others)
    depth = levels(graph)
    top = top_level_modules()
    wings = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    print(f"top-level modules: {len(top)} ({', '.join(top)})")
    print(f"wings: {len(wings)} ({', '.join(wings)})")
    print(f"modules in src/socioseg: {len(package)}")
    eager = levels(build(package + others, lazy=False))
    print(f"import levels (scripts and benchmarks included): {max(depth.values())}")
    print(f"  deepest: {' -> '.join(chain(graph, depth, max(depth, key=depth.get)))}")
    print(f"import levels counting module-level imports only: {max(eager.values())}")
    found = cycles(graph)
    print(f"import circles: {len(found)}")
    for circle in found:
        print("  " + " <-> ".join(circle))
    in_src = [line for line in graph.private if line.startswith("socioseg")]
    print(f"private names imported across modules in src/: {len(in_src)}")
    for line in in_src:
        print(f"  {line}")
    longest = long_functions(package)
    print(f"functions over {LONG_FUNCTION} lines in src/: {len(longest)}")
    for name, length in longest:
        print(f"  {name}: {length}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
