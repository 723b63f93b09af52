"""The package layout: one folder per stage, nothing loose in src/fvc, and no import cycle.

The import graph is read with `ast` from the source files, so it sees every `import fvc...` and
`from fvc... import` (relative ones too) at any level: module top, inside functions, under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("core", "data", "clips", "weights", "train", "infer", "slurm", "models")
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "commands.py"}  # the `fvc` command: parsing, running


def module_names(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `package` under `src` (a package is its __init__)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that `name` (a module, or a name inside one) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its file."""
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..a import x`
                parent = base
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                origin = f"{parent}.{origin}" if origin else parent
            targets = [f"{origin}.{alias.name}" for alias in node.names]  # a submodule, or a name in origin
        found |= {t for t in (_resolve(name, modules) for name in targets) if t and t != module}
    return found


def import_graph(src: Path, package: str = "fvc") -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_names(src, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (`[a, b, ..., a]`) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                on_stack.discard(member)
                component.append(member)
            on_stack.discard(node)
            components.append([node, *component])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(c), graph) for c in components if len(c) > 1]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the component's first module back to itself through the component (breadth first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & members):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycle_in_fvc():
    graph = import_graph(SRC)
    assert "fvc.slurm.audit" in graph and graph["fvc.slurm.audit"] >= {"fvc.slurm.jobs", "fvc.infer.report"}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_every_stage_is_a_package_and_nothing_is_loose():
    root = SRC / "fvc"
    assert [stage for stage in STAGES if not (root / stage / "__init__.py").is_file()] == []
    loose = sorted(p.name for p in root.glob("*.py") if p.name not in TOP_LEVEL)
    assert loose == [], f"modules directly in src/fvc (put them in a stage package): {loose}"
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(set(unknown) - set(STAGES)) == [], "packages the layout does not list"


def write_package(src: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)


@pytest.mark.parametrize(
    ("how_b_imports_a", "kind"),
    [
        ("from pkg.one import a\n", "top level"),
        ("def f():\n    from pkg.one.a import thing\n", "inside a function"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.one.a\n", "TYPE_CHECKING"),
        ("from ..one import a\n", "relative"),
    ],
)
def test_cycles_are_found_and_named(tmp_path, how_b_imports_a, kind):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/one/__init__.py": "",
            "pkg/two/__init__.py": "",
            "pkg/one/a.py": "from pkg.two.b import helper\nimport os\n",
            "pkg/two/b.py": how_b_imports_a,
            "pkg/two/c.py": "from . import b\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.two.c"] == {"pkg.two.b"}, kind
    assert find_cycles(graph) == [["pkg.one.a", "pkg.two.b", "pkg.one.a"]], kind


def test_a_package_importing_its_own_submodules_is_no_cycle(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/models/__init__.py": "from pkg.models.cnn import Cnn\n",
            "pkg/models/cnn.py": "from pkg.models.base import Base\n",
            "pkg/models/base.py": "import torch\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.models"] == {"pkg.models.cnn"} and find_cycles(graph) == []
