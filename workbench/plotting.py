"""Figure builders (each returns a plotly figure) and the one function that saves figures.

Builders take result objects or DataFrames and never compute analyses themselves.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

__all__ = ["save_figure"]


def save_figure(fig: go.Figure, path: str | Path, *, png: bool = True, scale: float = 2.0) -> list[Path]:
    """Write ``fig`` as ``<path>.html`` (always) and ``<path>.png`` (through kaleido).

    Args:
        fig: the figure.
        path: destination without suffix (any suffix given is replaced); parent folders are made.
        png: also write a PNG.
        scale: PNG resolution multiplier.

    Returns:
        The files written.
    """
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [stem.with_suffix(".html")]
    fig.write_html(written[0], include_plotlyjs="cdn")
    if png:
        written.append(stem.with_suffix(".png"))
        fig.write_image(written[1], scale=scale)
    return written
