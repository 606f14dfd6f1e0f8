"""Reports opened in a real headless Chromium (Playwright): every figure and token view renders,
nothing is fetched from a network, no console error, no horizontal scrolling at 1366 px.

Checks the committed ``figures/**/report.html``, a report built here from a small summary, figures and
views, and (slow) the report of a quick ``experiments.boundless_das`` run; the per-figure HTML files of the
last two (git-ignored under ``figures/``, so not checked there) open offline too. Screenshots of the top of
each page go to the test's tmp dir. Without a browser the tests skip (set ``WORKBENCH_REQUIRE_BROWSER=1``,
as ``.ci/run`` does, to make them fail instead); ``WORKBENCH_CHROMIUM`` names another Chromium binary.
"""

import os
import re
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from workbench.plotting import save_figure
from workbench.report import ReportHeader, write_report
from workbench.views import attention_comparison, irm_token_view, side_by_side, token_values

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "figures").glob("**/report.html"))
WIDTH = 1366
INSTALL = (
    "install Chromium to run the browser test of the HTML reports: `sudo apt-get install chromium` "
    "(Debian/Ubuntu), or `python -m playwright install chromium` and set WORKBENCH_CHROMIUM to its binary"
)


def _chromium() -> str | None:
    named = os.environ.get("WORKBENCH_CHROMIUM")
    if named:
        return named
    found = [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
    return next((f for f in found if f), None)


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'") if required else pytest.skip(
            "playwright is missing: pip install -e '.[dev]'"
        )
    executable = _chromium()
    if executable is None:
        pytest.fail(f"no Chromium found; {INSTALL}") if required else pytest.skip(f"no Chromium found; {INSTALL}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


def _check_page(browser, path: Path, screenshot: Path) -> dict:
    """Open ``path`` offline; returns what the page rendered, after asserting nothing went wrong."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors, remote = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            remote.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function(
        """() => (!document.querySelector('script.wb-loader') || document.documentElement.dataset.wbReady === '1')
              && [...document.querySelectorAll('.js-plotly-plot')].every(d => d.querySelector('.main-svg'))
              && [...document.querySelectorAll('.cv-target')].every(d => d.childElementCount > 0)""",
        timeout=60_000,
    )
    page.wait_for_timeout(300)
    state = page.evaluate(
        """() => ({
            figures: document.querySelectorAll('figure[id^="figure-"]').length,
            plots: [...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('.main-svg')).length,
            views: document.querySelectorAll('.cv-target').length,
            drawn: [...document.querySelectorAll('.cv-target')]
                .filter(d => d.getBoundingClientRect().height > 20).length,
            scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
        })"""
    )
    page.screenshot(path=str(screenshot))
    page.close()
    assert not errors, f"console errors in {path}: {errors}"
    assert not remote, f"{path} asked the network for {remote}"
    assert state["scroll"] <= state["client"], f"{path} scrolls horizontally at {WIDTH} px: {state}"
    assert state["drawn"] == state["views"], f"circuitsvis views not drawn in {path}: {state}"
    return state


def _check_report(browser, path: Path, tmp_path: Path, name: str) -> dict:
    state = _check_page(browser, path, tmp_path / f"{name}.png")
    text = path.read_text(encoding="utf-8")
    assert state["figures"] == len(re.findall(r'<figure id="figure-', text))
    assert state["plots"] == state["figures"], f"{path}: {state['figures']} figures, {state['plots']} drawn"
    assert state["views"] == text.count("CircuitsVis.render(")
    return state


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.parent.relative_to(ROOT)) for p in COMMITTED])
def test_committed_report_renders(browser, path, tmp_path):
    _check_report(browser, path, tmp_path, path.parent.name)


def test_built_report_renders(browser, tmp_path, tiny_llama):
    out = tmp_path / "out"
    figures = {
        "heatmap": go.Figure(
            go.Heatmap(z=torch.randn(30, 200).tolist()), layout={"title": "A wide heatmap", "width": 1800}
        ),
        "bars": go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": "Bars"}),
    }
    for name, fig in figures.items():
        save_figure(fig, out / name, png=False)
    tokens = tiny_llama.to_tokens("The movie was really good")
    strings = [tiny_llama.tokenizer.decode([t]) for t in tokens[0].tolist()]
    irm_out = torch.randn(len(strings), 3, 64)
    views = {
        "irm": side_by_side(
            {
                "IRM off": token_values(strings, {"dim 7": torch.randn(len(strings))}),
                "IRM on": irm_token_view(strings, irm_out, dim=7),
            }
        ),
        "heads": attention_comparison({"base": tiny_llama, "tuned": tiny_llama}, tokens, [(0, 1), (1, 3)]),
    }
    summary = {
        "model": "tiny",
        "loss": 0.25,
        "per_layer": {"a": list(range(40)), "b": list(range(40))},
        "wide": {f"column_with_a_long_name_{i}": {"x": 1.0 / (i + 1)} for i in range(16)},  # scrolls inside its box
    }
    path = write_report(
        out,
        ReportHeader("built", "Does the report render?", {"model": "tiny"}),
        summary=summary,
        figures=figures,
        views=views,
    )
    state = _check_report(browser, path, tmp_path, "built")
    assert state["figures"] == 2 and state["views"] == 4
    assert _check_page(browser, out / "heatmap.html", tmp_path / "heatmap_file.png")["plots"] == 1  # offline too
    saved = _check_page(browser, views["irm"].save(out / "irm_view"), tmp_path / "irm_view.png")  # as notebooks save
    assert saved["views"] == saved["drawn"] == 2


@pytest.mark.slow
def test_quick_experiment_report_renders(browser, tmp_path):
    from experiments.boundless_das import BoundlessDASConfig, main

    out = tmp_path / "boundless_das"
    main(BoundlessDASConfig(quick=True, out=str(out)))
    state = _check_report(browser, out / "report.html", tmp_path, "boundless_das")
    assert state["figures"] == 3
    for page in ("iia_heatmap", "training_curves", "boundary_width"):
        assert _check_page(browser, out / f"{page}.html", tmp_path / f"{page}_file.png")["plots"] == 1
