"""The committed notebooks are executed at full size (their outputs show on a code host), and each still runs
at quick size (WORKBENCH_QUICK=1, figures to a temp dir)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXECUTE = (
    "execute them in place at full size: .venv/bin/jupyter nbconvert --to notebook --execute --inplace "
    "--ExecutePreprocessor.timeout=-1 notebooks/*.ipynb"
)


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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_QUICK", "1")
    monkeypatch.setenv("WORKBENCH_FIGURES", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert not _outputs(nb, "error")
    assert "size: quick" in _text(nb)
    if "workbench.views" in "".join(c.source for c in nb.cells):  # its circuitsvis views came out, bundle inline
        html = [str(o["data"]["text/html"]) for o in _outputs(nb, "execute_result") if "text/html" in o.get("data", {})]
        assert any("CircuitsVis.render(" in h and "var CircuitsVis=" in h for h in html)
