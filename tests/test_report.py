"""The HTML report builder, figure files that open offline, and what write_outputs adds to a run."""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from experiments.common import command_line, report_header, write_outputs
from workbench.config import Config
from workbench.plotting import PLOTLY_JS, save_figure
from workbench.report import (
    MAX_ROWS,
    ReportHeader,
    figure_caption,
    render_report,
    summary_tables,
    unpacked_libraries,
)
from workbench.views import token_values

PLOTLY_MARKER = "plotly.js v"  # the licence banner at the top of the bundle


def _bar(title: str | None = None) -> go.Figure:
    return go.Figure(go.Bar(y=[1, 3, 2]), layout={"title": title, "width": 2000})


def test_summary_tables_shapes():
    summary = {
        "model": "m",
        "loss": 1.23456789,
        "dims": [3, 1],
        "config": {"ignored": 1},
        "alignments": {"neg": {"loss": 1.0, "masking": {"1": {"top": 0.5}}}, "pos": {"loss": 2.0}},
        "by_layer": {"a": [1, 2, 3], "b": [4, 5, 6]},
        "best": {"layer": 3, "overlap": {"left": 0.9}},
        "sweep": [{"layer": 0, "iia": 0.5}, {"layer": 1, "iia": 0.75}],
    }
    tables = dict(summary_tables(summary))
    assert list(tables) == ["overview", "alignments", "by_layer", "best", "sweep"]
    assert tables["overview"]["value"].to_dict() == {"model": "m", "loss": 1.23456789, "dims": [3, 1]}
    alignments = tables["alignments"]
    assert list(alignments.columns) == ["neg", "pos"]
    assert alignments.loc["masking.1.top", "neg"] == 0.5 and pd.isna(alignments.loc["masking.1.top", "pos"])
    assert tables["by_layer"]["b"].tolist() == [4, 5, 6]
    assert tables["best"]["value"].to_dict() == {"layer": 3, "overlap.left": 0.9}
    assert tables["sweep"]["iia"].tolist() == [0.5, 0.75]


def test_report_embeds_plotly_once_and_captions(tmp_path):
    pd.DataFrame({"a": [1, 2, 3]}).to_csv(tmp_path / "numbers.csv", index=False)
    figures = {"first": _bar("First <b>title</b>"), "second": _bar(), "third": _bar("Third")}
    page = render_report(
        tmp_path,
        ReportHeader("exp", "Does it work?", {"model": "tiny", "command": "python -m experiments.exp"}),
        summary={"x": 1.5, "rows": [{"i": i} for i in range(MAX_ROWS + 5)]},
        figures=figures,
        captions={"third": "Look at the third bar."},
    )
    libraries = unpacked_libraries(page)  # plotly.js gzip + base64 inside the page (a report stays < 4 MiB)
    assert len(libraries) == 1 and libraries[0].count(PLOTLY_MARKER) == 1 and PLOTLY_MARKER not in page
    assert "var CircuitsVis=" not in page  # no views, no circuitsvis bundle
    assert len(page) < 4 * 2**20
    assert not re.search(r"<script[^>]+src=", page)  # nothing loaded from anywhere
    assert len(re.findall(r'<figure id="figure-', page)) == 3
    assert "<figcaption>First title</figcaption>" in page and "<figcaption>second</figcaption>" in page
    assert "<figcaption>Look at the third bar.</figcaption>" in page
    assert '"width":2000' not in page.replace(" ", "")  # figures fit the page
    assert '<a href="numbers.csv">numbers.csv</a> <span class="note">3 rows x 1 columns</span>' in page
    assert f"first {MAX_ROWS} of {MAX_ROWS + 5} rows" in page
    assert '<p class="question">Does it work?</p>' in page
    with pytest.raises(KeyError, match="fourth"):
        render_report(tmp_path, ReportHeader("exp"), figures=figures, captions={"fourth": "?"})


def test_report_embeds_circuitsvis_once_with_views(tmp_path):
    views = {f"v{i}": token_values(["a", "b"], {"x": [0.0, 1.0]}, title=f"view {i}") for i in range(3)}
    page = render_report(tmp_path, ReportHeader("exp"), views=views, captions={"v1": "Tokens."})
    libraries = unpacked_libraries(page)
    assert len(libraries) == 1 and libraries[0].count("var CircuitsVis=") == 1 and PLOTLY_MARKER not in libraries[0]
    assert page.count("CircuitsVis.render(") == 3 and "<figcaption>Tokens.</figcaption>" in page
    # the views render only once the library is unpacked: their scripts wait for the loader
    assert page.count('<script type="text/x-wb-deferred">CircuitsVis.render(') == 3


def test_figure_caption_falls_back_to_name():
    assert figure_caption(_bar("A<br>b"), "name") == "A b"
    assert figure_caption(_bar(), "name") == "name"


def test_save_figure_writes_plotly_js_once_per_folder(tmp_path):
    first = save_figure(_bar(), tmp_path / "a", png=False, caption="What <to> see.")
    second = save_figure(_bar(), tmp_path / "b.html", png=False)
    assert first == [tmp_path / "a.html", tmp_path / PLOTLY_JS]
    assert second == [tmp_path / "b.html"]
    page = (tmp_path / "a.html").read_text()
    assert re.findall(r"<script[^>]+src=\"([^\"]+)\"", page) == [PLOTLY_JS]
    assert "What &lt;to&gt; see." in page
    assert (tmp_path / PLOTLY_JS).read_text().count(PLOTLY_MARKER) == 1


@dataclass(frozen=True)
class _ExpConfig(Config):
    """Config of a test experiment."""

    steps: int = 10
    """Steps."""
    layers: tuple[int, ...] = ()
    """Layers."""
    progress: bool = True
    """Progress bar."""
    quick: bool = False
    """Small sizes."""
    name: str = "a b"
    """A name."""


def test_command_line_reproduces_the_config():
    assert command_line(_ExpConfig()) == f"python -m {__name__}"
    cfg = _ExpConfig(steps=3, layers=(1, 2), progress=False, quick=True, name="x y")
    assert command_line(cfg) == f"python -m {__name__} --steps 3 --layers 1 2 --no-progress --quick --name 'x y'"


def test_write_outputs_writes_a_report(tmp_path, monkeypatch):
    cfg = _ExpConfig(quick=True)
    summary = {"model": "tiny", "loss": 0.5, "seconds": 90.0}
    import experiments.common

    real_save = experiments.common.save_figure

    def save_with_png(fig, path, png=True, caption=None):  # as if kaleido wrote the PNG (keeps the test fast)
        real_save(fig, path, png=False, caption=caption)
        Path(f"{path}.png").write_bytes(b"")

    monkeypatch.setattr(experiments.common, "save_figure", save_with_png)
    write_outputs(
        tmp_path,
        cfg,
        figures={"bars": _bar("Bars")},
        tables={"t": pd.DataFrame({"a": [1]})},
        summary=summary,
        png=False,
        captions={"bars": "The middle bar is highest."},
    )
    page = (tmp_path / "report.html").read_text()
    assert "The middle bar is highest." in page and "1.5 min (90 s)" in page
    assert "Config of a test experiment." not in page  # the question is the module's docstring
    assert "The HTML report builder, figure files that open offline" in page
    assert '<a href="t.csv">t.csv</a>' in page and '<a href="bars.png">bars.png</a>' in page
    assert (tmp_path / "bars.html").is_file() and 'href="bars.html"' not in page  # git-ignored: absent on a clone
    header = report_header(cfg, summary)
    assert header.fields["model"] == "tiny" and header.fields["preset"].startswith("quick")
    assert header.title == "test_report"


FIGURE_KINDS = (".png", ".csv", ".json")
"""What a committed figure folder holds besides report.html (and intervention bundles' weights)."""


def _tracked_figure_files() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "ls-files", "figures"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed figure files cannot be listed")
    return done.stdout.splitlines()


def test_committed_figure_folders_hold_pictures_tables_and_reports():
    stray = [
        f
        for f in _tracked_figure_files()
        if not f.endswith(FIGURE_KINDS)
        and Path(f).name not in ("report.html", ".gitkeep")
        and not (Path(f).parent.name == "bundle" and f.endswith(".safetensors"))
    ]
    assert not stray, (
        f"committed figure folders hold {stray}: they keep PNG, CSV, JSON and report.html only "
        "(per-figure HTML and plotly.min.js are git-ignored; git rm --cached them)"
    )


def test_per_figure_html_is_git_ignored():
    root = Path(__file__).resolve().parents[1]
    paths = ["figures/x/a.html", "figures/x/y/plotly.min.js", "figures/x/report.html"]
    try:
        done = subprocess.run(["git", "check-ignore", *paths], cwd=root, capture_output=True, text=True)
    except OSError:
        pytest.skip("git is not installed")
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.stdout.split() == paths[:2]  # report.html stays tracked
