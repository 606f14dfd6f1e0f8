"""Reports rebuilt from their folder (python -m experiments.report) without re-running: the same page."""

import json
import re
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest

import experiments.common
from experiments.realignments.config import RealignmentsConfig
from experiments.report import main, rebuild
from workbench.report import ReportHeader, render_report
from workbench.report_store import FIGURE_SUFFIX, INPUTS, load_inputs
from workbench.views import token_values

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def _bar(title: str) -> go.Figure:
    return go.Figure(go.Bar(x=["a", "b"], y=[0.1234567, 2.5]), layout={"title": title})


@pytest.fixture()
def no_png(monkeypatch):
    real_save = experiments.common.save_figure
    monkeypatch.setattr(
        experiments.common, "save_figure", lambda fig, path, png=True, caption=None: real_save(fig, path, png=False)
    )


def test_rebuild_equals_the_written_report(tmp_path, no_png):
    summary = json.loads((FIGURES / "realignments" / "summary.json").read_text())
    out = tmp_path / "realignments"
    experiments.common.write_outputs(
        out,
        RealignmentsConfig(out=str(out)),
        figures={"behaviour": _bar("Gain"), "other": _bar("Other")},
        summary=summary,
        png=False,
        captions={"other": "Look at b.", "tokens": "Tokens."},
        views={"tokens": token_values(["a", "b"], {"x": [0.0, 1.0]})},
        key_figure="behaviour",
    )
    written = (out / "report.html").read_text()
    assert {p.name for p in out.glob(f"*{FIGURE_SUFFIX}")} == {"behaviour.plotly.json", "other.plotly.json"}
    stored = json.loads((out / INPUTS).read_text())
    assert stored["experiment"] == "experiments.realignments" and stored["key_figure"] == "behaviour"
    assert stored["figures"] == ["behaviour", "other"] and stored["captions"] == {
        "other": "Look at b.",
        "tokens": "Tokens.",
    }
    assert "CircuitsVis.render(" in stored["views"]["tokens"]
    (out / "report.html").unlink()
    assert rebuild(out) == out / "report.html"
    assert (out / "report.html").read_text() == written  # the header's date is the run's, stored
    body = written[written.index("<body") :]
    sections = re.findall(r'<h2 id="(\w+)"', body)
    assert sections[:3] == ["findings", "numbers", "figures"]
    assert body.index('id="figure-behaviour"') < body.index('id="numbers"') < body.index('id="figure-other"')
    assert "held-out loss 5.38 -&gt; 4.00; trained 390 steps, 244,920 tokens (estimated)" in body


def test_rebuild_of_a_committed_folder_equals_its_report(tmp_path):
    folder = shutil.copytree(FIGURES / "model_diff_rl", tmp_path / "model_diff_rl")
    main([str(folder)])
    assert (folder / "report.html").read_text() == (FIGURES / "model_diff_rl" / "report.html").read_text()


def test_rebuild_without_stored_inputs_names_the_fix(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="re-run the experiment"):
        load_inputs(tmp_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "report.json is missing" in capsys.readouterr().err


def test_report_without_findings_has_no_findings_section_and_readable_labels(tmp_path):
    summary = {"results": {"negative": {"train_loss_base": {"values": [1.0, 2.0]}}, "positive": {"x": 1}}}
    page = render_report(tmp_path, ReportHeader("exp"), summary=summary, figures={"f": _bar("F")})
    assert 'id="findings"' not in page
    assert "Negative › train loss base › values" not in page  # the entries are columns, the levels rows
    assert "<th>Train loss base › values</th>" in page and "negative.train_loss_base" not in page
    assert "<h3>Results</h3>" in page
    with pytest.raises(KeyError, match="key figure 'g'"):
        render_report(tmp_path, ReportHeader("exp"), figures={"f": _bar("F")}, key_figure="g")
