"""Figures for DAS sweeps (each builder returns a plotly figure; see :func:`workbench.plotting.save_figure`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

__all__ = ["boundary_width_figure", "iia_heatmap", "training_curves"]


def _grid(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    return frame.pivot(index="layer", columns="position", values=value).sort_index()


def iia_heatmap(
    frame: pd.DataFrame, *, title: str = "Interchange intervention accuracy", labels: Mapping[int, str] | None = None
) -> go.Figure:
    """Layer x position heatmap of IIA from :meth:`DASSweep.to_frame`; ``labels`` name the positions."""
    grid = _grid(frame, "iia")
    positions = [int(p) for p in grid.columns]
    x = [f"{p}: {labels[p]!r}" if labels and p in labels else str(p) for p in positions]
    fig = px.imshow(
        grid.values,
        x=x,
        y=[str(i) for i in grid.index],
        zmin=0,
        zmax=1,
        color_continuous_scale="Viridis",
        text_auto=".2f",
        aspect="auto",
        labels={"x": "position", "y": "layer", "color": "IIA"},
    )
    return fig.update_layout(title=title)


def boundary_width_figure(
    frame: pd.DataFrame, *, title: str = "Learned boundary width (rotated dims swapped)"
) -> go.Figure:
    """Layer x position heatmap of the learned subspace width."""
    grid = _grid(frame, "width")
    fig = px.imshow(
        grid.values,
        x=[str(p) for p in grid.columns],
        y=[str(i) for i in grid.index],
        text_auto=True,
        aspect="auto",
        color_continuous_scale="Blues",
        labels={"x": "position", "y": "layer", "color": "width"},
    )
    return fig.update_layout(title=title)


def training_curves(histories: pd.DataFrame, *, title: str = "Boundless DAS training") -> go.Figure:
    """Loss and boundary width per step for each (layer, position), from :meth:`DASSweep.histories`
    (colour: position, dash: layer)."""
    frame = histories[histories["quantity"].isin(["loss"]) | histories["quantity"].str.startswith("width:")].copy()
    frame["quantity"] = frame["quantity"].str.replace(r"^width:.*", "width", regex=True)
    frame["layer"], frame["position"] = frame["layer"].astype(str), frame["position"].astype(str)
    fig = px.line(
        frame, x="step", y="value", color="position", line_dash="layer", facet_row="quantity", labels={"value": ""}
    )
    fig.update_yaxes(matches=None)
    return fig.update_layout(title=title, height=600)
