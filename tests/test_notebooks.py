"""The committed notebooks are executed at full size with static outputs (figures as PNG pictures, token
views saved as pages beside the run, not inline), so they show on a code host and stay small; each still runs
at quick size (WORKBENCH_QUICK=1, files to a temp dir) the way the committed copies are made."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXECUTE = (
    "execute them in place at full size from the repository root: WORKBENCH_NOTEBOOK_PNG=1 .venv/bin/jupyter "
    "nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 notebooks/*.ipynb"
)
MAX_BYTES = 1_000_000
"""A committed notebook's size limit (outputs included)."""
INTERACTIVE = ("application/vnd.plotly.v1+json", "var CircuitsVis=")
"""Outputs a committed notebook must not hold: plotly figure JSON and the inlined circuitsvis bundle (1.3 MB)."""


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == kind]


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            parts.append(o.get("text", ""))
            parts += [str(v) for v in o.get("data", {}).values()]
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_executed_at_full_size(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert None not in counts, f"{path.name}: cells {[i for i, n in enumerate(counts) if n is None]} not run; {EXECUTE}"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} was not run top to bottom in one go; {EXECUTE}"
    errors = _outputs(nb, "error")
    assert not errors, f"{path.name} holds errors {[e.get('ename') for e in errors]}; fix, then {EXECUTE}"
    assert "size: full" in _text(nb), f"{path.name} was executed at quick size; {EXECUTE}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_small_and_static(path):
    _check_static(nbformat.read(path, as_version=4), path.stat().st_size, path.name)


def _check_static(nb, size: int, name: str) -> None:
    raw = json.dumps(nb)
    held = [marker for marker in INTERACTIVE if marker in raw]
    assert not held, f"{name} holds interactive outputs {held}; {EXECUTE}"
    assert size < MAX_BYTES, f"{name} is {size / 1e6:.2f} MB (limit {MAX_BYTES / 1e6:.0f} MB); {EXECUTE}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_QUICK", "1")
    monkeypatch.setenv("WORKBENCH_NOTEBOOK_PNG", "1")
    monkeypatch.setenv("WORKBENCH_FIGURES", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert not _outputs(nb, "error")
    assert "size: quick" in _text(nb)
    written = tmp_path / "notebook.ipynb"
    nbformat.write(nb, written)
    _check_static(nb, written.stat().st_size, path.name)
    pictures = [
        o for kind in ("display_data", "execute_result") for o in _outputs(nb, kind) if "image/png" in o["data"]
    ]
    assert pictures, f"{path.name} shows no figure"
    if "workbench.views" in "".join(c.source for c in nb.cells):  # its circuitsvis view saved as a page
        pages = list(tmp_path.glob("*/*.html"))
        assert any("CircuitsVis.render(" in p.read_text() for p in pages), pages
