"""The project's import graph: a Mermaid drawing for docs/architecture.md, and the layering checks.

    python tools/import_graph.py                    # Mermaid `graph`: every module, grouped by package
    python tools/import_graph.py --level package    # one node per package
    python tools/import_graph.py --check            # exit 1 on a cycle, a long file or a wrong direction
    dvc dag --md | python tools/import_graph.py --update docs/architecture.md --dvc-dag -   # `make arch`

Reads every .py file under flanmoe/, stages/ and pipelines/ with `ast` (nothing is imported) and keeps
the imports of project modules, wherever they are: at module level and inside functions. What counts
as an edge `a -> b` (module a needs module b):

- `import x.y.z`: the longest prefix that is a project module; relative imports are resolved against
  the importing module's package.
- `from x import name`: `x.name` when that is a module (a submodule import), else the module that
  provides `name`: `x` itself, or for a lazy package (a PEP 562 `__init__` with a module-level
  `_LAZY = {"name": "module.path"}` dict, as flanmoe.model, flanmoe.train and flanmoe.parallel have)
  the module `_LAZY[name]`, because `from x import name` calls `x.__getattr__(name)`, which imports
  that module at once.
- `importlib.import_module("x.y")` or `__import__("x.y")` with a string literal (a relative literal
  needs `package=` as a literal too).
- Not edges: imports under `if TYPE_CHECKING:` (type hints only, never executed); a lazy package's
  `__init__` to the modules of its `_LAZY` dict (its `importlib.import_module(_LAZY[name])` runs on
  attribute access, not at import, and its argument is no literal); the implicit import of a module's
  parent packages; attribute access on an imported package (`import flanmoe.model as m; m.X`).

`--check` reports, and exits 1 on: every import cycle (a strongly connected component of more than
one module, or a module that imports itself), every file over --max-lines lines (450), and every
import against the one-way direction flanmoe <- stages <- pipelines (flanmoe imports neither stages
nor pipelines; stages does not import pipelines). Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flanmoe", "stages", "pipelines")
MAX_LINES = 450
# who may not import whom: the library knows nothing of the stages, the stages nothing of the flows
FORBIDDEN = {"flanmoe": ("stages", "pipelines"), "stages": ("pipelines",)}
MARKERS = {"dvc-dag": "dvc dag --md", "import-graph": "python tools/import_graph.py"}


@dataclass
class Module:
    name: str  # dotted: flanmoe.model.hf; a package's __init__ is the package's name
    path: str  # relative to the root: flanmoe/model/hf.py
    is_package: bool
    lines: int
    tree: ast.Module
    lazy: dict[str, str] = field(default_factory=dict)  # a PEP 562 package's _LAZY: name -> module


@dataclass
class Graph:
    modules: dict[str, Module]
    edges: dict[str, set[str]]  # importer -> imported, project modules only


def discover(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every .py file under root/<package>/, parsed, keyed by its dotted module name."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, filename=str(path))
            name = ".".join(parts)
            modules[name] = Module(
                name,
                path.relative_to(root).as_posix(),
                is_package,
                len(text.splitlines()),
                tree,
                _lazy_map(tree),
            )
    return modules


def _lazy_map(tree: ast.Module) -> dict[str, str]:
    """A module-level `_LAZY = {"name": "module.path", ...}` of string literals, else {}."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            if isinstance(node.value, ast.Dict):
                return {
                    k.value: v.value
                    for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(k, ast.Constant)
                    and isinstance(k.value, str)
                    and isinstance(v, ast.Constant)
                    and isinstance(v.value, str)
                }
    return {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects (absolute dotted target, imported names or None) for every executed import."""

    def __init__(self, module: Module):
        self.module = module
        self.found: list[tuple[str, list[str] | None]] = []

    def _package(self) -> str:
        name = self.module.name
        return name if self.module.is_package else name.rpartition(".")[0]

    def _absolute(self, target: str, level: int, package: str | None = None) -> str | None:
        if level == 0:
            return target
        parts = (package if package is not None else self._package()).split(".")
        if level - 1 > len(parts) - 1:
            return None  # beyond the top-level package
        base = parts[: len(parts) - (level - 1)]
        return ".".join(base + ([target] if target else []))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.visit(node.test)
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, None))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = self._absolute(node.module or "", node.level)
        if target:
            self.found.append((target, [alias.name for alias in node.names]))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        )
        if called in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                level = len(name) - len(name.lstrip("."))
                package = None
                for kw in node.keywords:
                    if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                        package = kw.value.value
                if level and package is None:
                    name = ""  # relative, package unknown without running the code
                elif level:
                    name = self._absolute(name[level:], level, package) or ""
                if name:
                    self.found.append((name, None))
        self.generic_visit(node)


def _provider(modules: dict[str, Module], target: str) -> str | None:
    """The longest prefix of a dotted name that is a project module."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def build_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Parse the packages under root and resolve their imports into module -> module edges."""
    modules = discover(root, packages)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        visitor = _Imports(module)
        visitor.visit(module.tree)
        for target, names in visitor.found:
            if names is None:
                provider = _provider(modules, target)
                if provider:
                    edges[module.name].add(provider)
                continue
            for name in names:
                if f"{target}.{name}" in modules:  # from pkg import submodule
                    edges[module.name].add(f"{target}.{name}")
                elif target in modules and name in modules[target].lazy:
                    lazy = _provider(modules, modules[target].lazy[name])
                    edges[module.name].add(lazy or target)
                else:
                    provider = _provider(modules, target)
                    if provider:
                        edges[module.name].add(provider)
    return Graph(modules, edges)


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module, and self-imports (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    for start in sorted(graph.edges):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.edges[node]:
                    found.append(sorted(component))
    return sorted(found)


def long_files(graph: Graph, max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    """(path relative to the root, lines) of every file over max_lines."""
    return sorted((m.path, m.lines) for m in graph.modules.values() if m.lines > max_lines)


def wrong_direction(graph: Graph) -> list[tuple[str, str]]:
    """(importer, imported) pairs against flanmoe <- stages <- pipelines."""
    bad = []
    for importer, imported in sorted((a, b) for a, targets in graph.edges.items() for b in targets):
        forbidden = FORBIDDEN.get(importer.split(".")[0], ())
        if imported.split(".")[0] in forbidden:
            bad.append((importer, imported))
    return bad


def check(graph: Graph, max_lines: int = MAX_LINES) -> list[str]:
    """Every problem as one line; empty when the tree is clean."""
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    problems += [f"over {max_lines} lines: {path} ({n} lines)" for path, n in long_files(graph, max_lines)]
    problems += [f"wrong direction: {a} imports {b}" for a, b in wrong_direction(graph)]
    return problems


def _group(name: str, graph: Graph) -> str:
    """The package a module is drawn in: itself for a package's __init__, else its parent."""
    return name if graph.modules[name].is_package else name.rpartition(".")[0]


def _folder(package: str) -> str:
    return package.replace(".", "/") + "/"


def _node_id(name: str) -> str:
    return name.replace(".", "_")


def mermaid(graph: Graph, level: str = "module") -> str:
    """A Mermaid `graph LR`: one node per module in a subgraph per folder, or (package) one node per folder."""
    lines = ["graph LR"]
    if level == "package":
        groups = sorted({_group(n, graph) for n in graph.modules})
        lines += [f'    {_node_id(g)}["{_folder(g)}*.py"]' for g in groups]
        pairs = {
            (_group(a, graph), _group(b, graph))
            for a, targets in graph.edges.items()
            for b in targets
            if _group(a, graph) != _group(b, graph)
        }
        lines += [f"    {_node_id(a)} --> {_node_id(b)}" for a, b in sorted(pairs)]
        return "\n".join(lines) + "\n"
    by_group: dict[str, list[str]] = defaultdict(list)
    for name in sorted(graph.modules):
        by_group[_group(name, graph)].append(name)
    for group, names in sorted(by_group.items()):
        lines.append(f'    subgraph {_node_id(group)}__group["{_folder(group)}"]')
        for name in names:
            label = "__init__" if graph.modules[name].is_package else name.rpartition(".")[2]
            lines.append(f'        {_node_id(name)}["{label}"]')
        lines.append("    end")
    lines += [
        f"    {_node_id(a)} --> {_node_id(b)}" for a in sorted(graph.edges) for b in sorted(graph.edges[a])
    ]
    return "\n".join(lines) + "\n"


def splice(text: str, marker: str, block: str) -> str:
    """text with what lies between `<!-- BEGIN marker -->` and `<!-- END marker -->` replaced by block."""
    begin, end = f"<!-- BEGIN {marker} -->", f"<!-- END {marker} -->"
    head, found_begin, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found_begin and found_end):
        raise SystemExit(f"error: markers {begin} ... {end} not found")
    note = f"<!-- generated by `make arch` ({MARKERS[marker]}); do not edit by hand -->\n"
    return f"{head}{begin}\n{note}{block.rstrip()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), help="top-level packages to read")
    parser.add_argument("--level", choices=("module", "package"), default="module")
    parser.add_argument("--check", action="store_true", help="exit 1 on cycles, long files, wrong direction")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    parser.add_argument("--update", type=Path, help="write the graphs between the markers of this file")
    parser.add_argument("--dvc-dag", help="with --update: file (or -) holding `dvc dag --md` output")
    args = parser.parse_args(argv)

    graph = build_graph(args.root, tuple(args.packages))
    if args.check:
        problems = check(graph, args.max_lines)
        for line in problems:
            print(line)
        if not problems:
            n = sum(len(t) for t in graph.edges.values())
            print(
                f"ok: {len(graph.modules)} modules, {n} imports, no cycle, none over {args.max_lines} lines"
            )
        return 1 if problems else 0
    if args.update:
        text = args.update.read_text(encoding="utf-8")
        if args.dvc_dag:
            dag = sys.stdin.read() if args.dvc_dag == "-" else Path(args.dvc_dag).read_text(encoding="utf-8")
            if "```mermaid" not in dag:  # dvc failed upstream of the pipe: keep the page as it was
                raise SystemExit("error: --dvc-dag: no `dvc dag --md` output (a ```mermaid block) to write")
            text = splice(text, "dvc-dag", dag)
        blocks = [f"```mermaid\n{mermaid(graph, 'package')}```", f"```mermaid\n{mermaid(graph)}```"]
        text = splice(text, "import-graph", "\n\n".join(blocks))
        args.update.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(mermaid(graph, args.level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
