"""Figures of edge circuits: faithfulness curves, and the top edges drawn on the model's layout."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from workbench.circuits.attribute import EdgeScores
from workbench.circuits.faithfulness import Curve

__all__ = ["draw_edges", "plot_curves"]


def plot_curves(curves: Sequence[Curve], title: str = "Faithfulness by circuit size") -> go.Figure:
    """Faithfulness against the percent of edges kept (log x), one line per method (and ranking)."""
    fig = go.Figure()
    for c in curves:
        label = f"{c.method} ({'|score|' if c.absolute else 'signed'})"
        fig.add_scatter(x=list(c.percents), y=list(c.faithfulness), mode="lines+markers", name=label)
    fig.add_hline(y=1, line_dash="dot", line_color="gray")
    fig.update_layout(title=title, xaxis_title="edges kept (%)", yaxis_title="faithfulness", xaxis_type="log")
    return fig


def draw_edges(scores: EdgeScores, k: int = 40, title: str | None = None) -> go.Figure:
    """The ``k`` edges of largest ``|score|``: components placed by layer (x) and head (y; MLPs on top,
    the input at the left, the logits at the right), edges as lines, blue positive and red negative, width
    by ``|score|``."""
    g = scores.graph
    flat = scores.flat()
    top = flat.abs().topk(min(k, len(flat)))
    index = g.edge_index()[top.indices]

    def up_xy(u: int) -> tuple[float, float]:
        if u == 0:
            return -1.0, g.n_heads / 2
        layer, offset = divmod(u - 1, g.n_heads + 1)
        return (layer, offset) if offset < g.n_heads else (layer + 0.5, g.n_heads + 1)

    def down_xy(v: int) -> tuple[float, float]:
        if v == g.down_logits:
            return g.n_layers + 0.5, g.n_heads / 2
        node = int(g.down_node[v])
        return up_xy(node)

    fig = go.Figure()
    biggest = float(top.values.abs().max()) or 1.0
    for (u, v), value in zip(index.tolist(), flat[top.indices].tolist()):
        (x0, y0), (x1, y1) = up_xy(u), down_xy(v)
        fig.add_scatter(
            x=[x0, x1],
            y=[y0, y1],
            mode="lines",
            line={"width": 0.5 + 6 * abs(value) / biggest, "color": "royalblue" if value > 0 else "crimson"},
            hovertext=f"{g.up_names[u]} -> {g.down_names[v]}: {value:.3g}",
            hoverinfo="text",
            showlegend=False,
        )
    nodes = sorted({n for u, v in index.tolist() for n in (u, int(g.down_node[v]) if v != g.down_logits else -1)})
    xy = [up_xy(n) if n >= 0 else down_xy(g.down_logits) for n in nodes]
    fig.add_scatter(
        x=[p[0] for p in xy],
        y=[p[1] for p in xy],
        mode="markers+text",
        text=[g.up_names[n] if n >= 0 else "logits" for n in nodes],
        textposition="top center",
        marker={"size": 8, "color": "black"},
        showlegend=False,
    )
    fig.update_layout(
        title=title or f"Top {len(index)} edges by |{scores.method}| ({scores.task})",
        xaxis_title="layer",
        yaxis_title="head (MLP above)",
    )
    return fig
