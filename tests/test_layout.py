"""The experiment layer's shape: one package per experiment, no import circles, and a library that never imports
an experiment (recipes and prompt sets live in ``workbench``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("boundless_das", "model_diff", "neuron1512", "realignments", "rw_functionalities")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (explicit imports only, ``TYPE_CHECKING`` blocks included;
    a submodule's implicit import of its parent package is not an edge)."""
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by depth-first search (each as the path that closes it)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_cycle_finder_finds_a_circle_and_only_that():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circles_under_experiments():
    graph = import_graph("experiments")
    assert graph["experiments.neuron1512.run"] >= {"experiments.neuron1512.config", "experiments.neuron1512.unit"}
    assert cycles(graph) == []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_is_a_package_with_a_main_and_a_config(name):
    folder = ROOT / "experiments" / name
    assert {"__init__.py", "__main__.py", "config.py", "run.py"} <= {p.name for p in folder.glob("*.py")}
    assert not (ROOT / "experiments" / f"{name}.py").exists()


@pytest.mark.parametrize("folder", ["workbench", "notebooks"])
def test_the_library_and_notebooks_never_import_an_experiment(folder):
    hits = [
        f"{p.relative_to(ROOT)}: {line.strip()}"
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".ipynb")
        for line in p.read_text().splitlines()
        if "from experiments" in line or "import experiments" in line
    ]
    assert hits == []


@pytest.mark.slow
def test_every_top_module_imports_first_in_a_fresh_process():
    """A module imported before any other (as ``python -m experiments.NAME`` does) must not meet a partially
    initialised one: ``workbench.runstate`` first used to fail through workbench.irm -> train -> runstate.
    Each top-level module and package of workbench, and each experiment, first in its own interpreter."""
    import subprocess
    import sys

    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts[:2])
        for folder in ("workbench", "experiments")
        for p in sorted((ROOT / folder).iterdir())
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    ]
    from concurrent.futures import ThreadPoolExecutor

    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"

    def first_import(name: str) -> str | None:  # in its own interpreter, imported first
        proc = subprocess.run([sys.executable, "-c", script, name], cwd=ROOT, capture_output=True, text=True)
        return f"{name}: {proc.stderr.strip().splitlines()[-1]}" if proc.returncode else None

    with ThreadPoolExecutor(max_workers=2) as pool:  # the interpreters' start-up dominates: two at a time
        failed = [f for f in pool.map(first_import, names) if f is not None]
    assert failed == []


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "__main__"))
)
def test_every_benchmark_imports(name):
    """A benchmark is run by hand, not by the suite: a library move that breaks its imports shows here first."""
    import importlib

    importlib.import_module(f"benchmarks.{name}")
