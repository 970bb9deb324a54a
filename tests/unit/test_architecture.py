"""The shape of ``service/``: the import-direction contracts of pyproject.toml
(``[tool.importlinter]``: layers, front ends independent, documentation without handlers)
hold, no module imports itself back through others, and few modules sit at the top."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.helpers import REPO_ROOT


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_service() -> None:
    graph = grimp.build_graph("service", exclude_type_checking_imports=False)
    modules = set(graph.modules)
    # Packages import nothing in their __init__, so a cycle can only run through modules.
    assert cycles(graph, modules) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c", "d"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert cycles(graph, {"a", "b", "c", "d"}) == [["a", "b", "c"]]


def test_service_is_laid_out_by_concern() -> None:
    top = sorted(p.name for p in (REPO_ROOT / "service").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "bentoml_internals.py", "service.py", "settings.py"]
    packages = sorted(p.parent.name for p in (REPO_ROOT / "service").glob("*/__init__.py"))
    assert packages == ["docs", "grpc", "http", "inference", "observability", "rest", "v2"]


def test_the_documented_layout_names_every_module_of_service() -> None:
    architecture = (REPO_ROOT / "docs" / "architecture.md").read_text()
    layout = architecture[architecture.index("## Layout") :]
    layout = layout[: layout.index("\ntests/unit")]
    service = REPO_ROOT / "service"
    missing = [
        str(path.relative_to(service))
        for path in sorted(service.rglob("*.py"))
        if path.name != "__init__.py" and path.stem not in layout
    ]
    assert not missing, missing
    assert (REPO_ROOT / "docs" / "architecture.md").is_file()
