"""Import cycles among irq's modules, and imports that break the layering.

Reads the source (no module is imported), so a function-local import counts like a top-level
one: a cycle hidden inside a function is still a cycle. ``if TYPE_CHECKING:`` imports are
left out (they never run). Run ``python -m irq.tools.cycles``; it exits 1 and prints each cycle
and each forbidden edge when there are any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

#: The packages ``irq`` installs, with where their source lives relative to the repository root.
PACKAGES = {"irq": "irq", "irq.passes": "passes", "irq.frontends": "frontends", "irq.backends": "backends"}

#: (importer prefix, imported prefix, why): data flows frontend -> IR -> passes -> backend -> verification.
FORBIDDEN = (
    ("irq.verify", "irq.compiler", "verification never calls back into the compiler"),
    ("irq.verify", "irq.pipeline.prepare", "verification measures artifacts; it does not make them"),
    ("irq.passes", "irq.backends", "passes rewrite the IR; they do not know the backends"),
    ("irq.passes", "irq.compiler", "a pass does not drive the compile"),
    ("irq.frontends", "irq.backends", "frontends import; they do not know the backends"),
    ("irq.frontends", "irq.passes", "frontends import; the passes come after"),
    ("irq.ir", "irq.pipeline", "the IR knows nothing of the passes run over it"),
    ("irq.quant", "irq.pipeline", "quantization math knows nothing of pipelines"),
)


def module_files(root: Path) -> dict[str, Path]:
    """Every module's dotted name and its file."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _canonical(name: str) -> str:
    """``passes.x`` and ``irq.passes.x`` are one module (the package is installed under both)."""
    head = name.split(".")[0]
    return f"irq.{name}" if head in ("passes", "frontends", "backends") else name


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return _canonical(node.module or "")
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [_canonical(a.name) for a in node.names]
    else:
        origin = _resolve(module, is_package, node)
        # ``from irq import compiler`` imports the module irq.compiler; ``from irq.x import f`` imports irq.x.
        names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph(root: Path) -> nx.DiGraph:
    """Module -> module edges, one per import statement that runs (top level or inside functions)."""
    files = module_files(root)
    known = set(files)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree):
            for target in _targets(module, path.name == "__init__.py", node, known):
                # A package's __init__ re-exporting its own submodules is not a cycle worth naming.
                if not target.startswith(module + ".") and not module.startswith(target + "."):
                    graph.add_edge(module, target, line=node.lineno)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each strongly connected group of more than one module, sorted."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def forbidden_edges(graph: nx.DiGraph) -> list[str]:
    """Each import that goes against the data flow, with the rule it breaks."""
    found = []
    for a, b, line in graph.edges(data="line"):
        for importer, imported, why in FORBIDDEN:
            if _under(a, importer) and _under(b, imported):
                found.append(f"{a}:{line} imports {b}: {why}")
    return sorted(found)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def main() -> int:
    """Print the cycles and forbidden imports; exit 1 if there are any."""
    root = Path(__file__).resolve().parents[2]
    graph = import_graph(root)
    problems = [" <-> ".join(c) for c in cycles(graph)] + forbidden_edges(graph)
    for line in problems:
        print(line)
    print(f"{graph.number_of_nodes()} modules, {graph.number_of_edges()} imports, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
