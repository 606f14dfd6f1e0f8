"""Figure builders (each returns a plotly figure) and the one function that saves figures.

Builders take result objects or DataFrames and never compute analyses themselves.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

__all__ = ["PLOTLY_JS", "save_figure"]

PLOTLY_JS = "plotly.min.js"
"""File name of the plotly.js copy written once per figure folder (the HTML figures load it from there, offline)."""


def save_figure(
    fig: go.Figure, path: str | Path, *, png: bool = True, scale: float = 2.0, caption: str | None = None
) -> list[Path]:
    """Write ``fig`` as ``<path>.html`` (always) and ``<path>.png`` (through kaleido).

    The HTML loads plotly.js from ``plotly.min.js`` beside it, written once per folder, so it opens
    offline and a folder of figures holds one copy. The HTML figure fills the window's width (a fixed
    layout width would scroll); the PNG keeps the layout's width.

    Args:
        fig: the figure.
        path: destination without suffix (any suffix given is replaced); parent folders are made.
        png: also write a PNG.
        scale: PNG resolution multiplier.
        caption: a sentence shown under the figure in the HTML file (what to look at).

    Returns:
        The files written (the plotly.js copy too when this call wrote it).
    """
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [stem.with_suffix(".html")]
    fluid = go.Figure(fig).update_layout(width=None, autosize=True)  # the page fits the window; the PNG keeps the width
    page = fluid.to_html(
        include_plotlyjs="directory", full_html=True, config={"responsive": True, "displaylogo": False}
    )
    if caption:
        page = page.replace("</body>", f'<p style="font-family:sans-serif">{html.escape(caption)}</p></body>', 1)
    written[0].write_text(page, encoding="utf-8")
    js = stem.parent / PLOTLY_JS
    if not js.is_file():
        js.write_text(get_plotlyjs(), encoding="utf-8")
        written.append(js)
    if png:
        written.append(stem.with_suffix(".png"))
        fig.write_image(written[-1], scale=scale)
    return written
