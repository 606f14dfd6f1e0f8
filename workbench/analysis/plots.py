"""Figures of the model-diff analyses (each builder returns a plotly figure; no computation here)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from workbench.analysis.attribution import Attribution
from workbench.analysis.logit_lens import LogitLens
from workbench.analysis.patching import PatchResult

__all__ = ["attribution_figure", "bar_figure", "head_heatmap", "logit_lens_figure", "patching_heatmap"]


def logit_lens_figure(lenses: Sequence[LogitLens], title: str = "Logit lens: logit difference by layer") -> go.Figure:
    """One line per model: the logit difference read at each point of the residual stream."""
    df = pd.concat([lens.to_frame() for lens in lenses])
    fig = px.line(df, x="label", y="logit_diff", color="model", markers=True, title=title)
    fig.update_layout(xaxis_title="residual stream point", yaxis_title="logit difference")
    return fig


def attribution_figure(
    attributions: Sequence[Attribution], title: str = "Direct logit attribution per layer"
) -> go.Figure:
    """Attention and MLP attribution per layer, one line per model and part."""
    df = pd.concat([a.to_frame() for a in attributions])
    df = df[df["layer"] >= 0]
    fig = px.line(df, x="layer", y="value", color="model", line_dash="part", markers=True, title=title)
    fig.update_layout(yaxis_title="logit difference attributed")
    return fig


def head_heatmap(values, title: str, zlabel: str = "value", layers: Sequence[int] | None = None) -> go.Figure:
    """A layer × head heatmap, centred at zero (``layers`` labels the rows; default 0..n-1)."""
    bound = float(abs(values).max()) or 1.0
    fig = px.imshow(
        values.numpy() if hasattr(values, "numpy") else values,
        y=[str(layer) for layer in (layers if layers is not None else range(len(values)))],
        color_continuous_scale="RdBu",
        zmin=-bound,
        zmax=bound,
        labels={"x": "head", "y": "layer", "color": zlabel},
        aspect="auto",
        title=title,
    )
    return fig


def patching_heatmap(result: PatchResult, title: str | None = None, normalize: bool = True) -> go.Figure:
    """Heatmap of a patching sweep: layer × position (token labels) or layer × head."""
    values = result.normalized() if normalize else result.values
    zlabel = "normalised" if normalize else "metric"
    title = title or f"Patching {result.kind}"
    if result.axes == ("layer", "pos"):
        labels = [f"{p}:{result.tokens[p]}" for p in result.positions]
        bound = float(values.abs().max()) or 1.0
        return px.imshow(
            values.numpy(),
            x=labels,
            y=[str(layer) for layer in result.layers],
            color_continuous_scale="RdBu",
            zmin=-bound,
            zmax=bound,
            labels={"x": "position", "y": "layer", "color": zlabel},
            aspect="auto",
            title=title,
        )
    if result.axes == ("layer", "head"):
        return head_heatmap(values, title, zlabel, result.layers)
    raise ValueError(f"no heatmap for axes {result.axes}; plot result.to_frame() yourself")


def bar_figure(df: pd.DataFrame, x: str, y: str, title: str, color: str | None = None) -> go.Figure:
    """A bar chart of a table (logit differences, joint patches)."""
    return px.bar(df, x=x, y=y, color=color, barmode="group", title=title, text_auto=".3f")
