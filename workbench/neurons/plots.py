"""Figures of the RW functionalities study (each builder takes result frames and returns a plotly figure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.neurons.weights import CLASS_NAMES, VANILLA_CLASS_NAMES

__all__ = [
    "ablation_figure",
    "attributes_rate_figure",
    "class_fraction_figure",
    "cosine_distribution_figure",
    "frequency_figure",
]

CLASS_COLORS = {
    "strengthening": "#08519c",
    "atypical strengthening": "#6baed6",
    "conditional strengthening": "#4eb3d3",
    "atypical conditional strengthening": "#ccebc5",
    "proportional change": "#238b45",
    "atypical proportional change": "#a1d99b",
    "orthogonal output": "#d9d9d9",
    "weakening": "#a50f15",
    "atypical weakening": "#fc9272",
    "conditional weakening": "#fd8d3c",
    "atypical conditional weakening": "#fdd0a2",
}


def class_fraction_figure(
    counts: pd.DataFrame, *, title: str = "RW classes by layer", hide: Sequence[str] = ()
) -> go.Figure:
    """Stacked bars of class fractions per layer, from ``NeuronClasses.counts_by_layer()``.

    Args:
        counts: frame ``layer, rw_class, count, fraction``.
        title: figure title.
        hide: classes left out (e.g. ``("orthogonal output",)`` to see the rare ones).
    """
    order = [c for c in dict.fromkeys(CLASS_NAMES + VANILLA_CLASS_NAMES) if c in set(counts.rw_class) and c not in hide]
    fig = go.Figure()
    for name in order:
        part = counts[counts.rw_class == name]
        fig.add_bar(
            x=part.layer,
            y=part.fraction,
            name=name,
            marker_color=CLASS_COLORS.get(name),
            customdata=part["count"],
            hovertemplate="layer %{x}<br>%{y:.3f} (%{customdata} neurons)",
        )
    fig.update_layout(
        barmode="stack",
        title=title,
        xaxis_title="layer",
        yaxis_title="fraction of neurons",
        legend_traceorder="normal",
        width=1000,  # the legend's long class names take ~280 px: the default 700 px clipped a model name in the title
        height=550,
    )
    return fig


def cosine_distribution_figure(
    cosines: pd.DataFrame,
    *,
    beta_region: tuple[float, float] | None = None,
    empirical: pd.DataFrame | None = None,
    threshold: float = 0.5,
    bins: int = 100,
) -> go.Figure:
    """Heatmaps of the cosine distribution per layer, one panel per weight pair.

    Args:
        cosines: ``WeightCosines.to_frame()``.
        beta_region: random-vector 95% region, drawn as dotted lines.
        empirical: ``empirical_randomness_region`` frame, drawn as dashed lines per layer.
        threshold: class threshold, drawn as solid lines.
        bins: histogram bins over ``[-1, 1]``.
    """
    pairs = [p for p in ("in_out", "gate_out", "gate_in") if cosines[f"cos_{p}"].notna().any()]
    titles = {"in_out": "cos(w_in, w_out)", "gate_out": "cos(w_gate, w_out)", "gate_in": "cos(w_gate, w_in)"}
    fig = make_subplots(rows=1, cols=len(pairs), shared_yaxes=True, subplot_titles=[titles[p] for p in pairs])
    edges = np.linspace(-1, 1, bins + 1)
    centers = (edges[1:] + edges[:-1]) / 2
    layers = sorted(cosines.layer.unique())
    for col, pair in enumerate(pairs, start=1):
        hist = np.stack(
            [np.histogram(cosines.loc[cosines.layer == layer, f"cos_{pair}"], bins=edges)[0] for layer in layers]
        )
        frac = hist / hist.sum(1, keepdims=True)
        fig.add_heatmap(
            x=centers,
            y=layers,
            z=np.log10(frac + 1e-5),
            coloraxis="coloraxis",
            customdata=frac,
            hovertemplate="cos %{x:.2f}<br>layer %{y}<br>fraction %{customdata:.4f}",
            row=1,
            col=col,
        )
        for x in (-threshold, threshold):
            fig.add_vline(x=x, line_color="black", line_width=1, row=1, col=col)
        if beta_region is not None:
            for x in beta_region:
                fig.add_vline(x=x, line_color="white", line_dash="dot", line_width=1, row=1, col=col)
        if empirical is not None:
            part = empirical[empirical.pair == pair].sort_values("layer")
            for edge in ("low", "high"):
                fig.add_scatter(
                    x=part[edge],
                    y=part.layer,
                    mode="lines",
                    line=dict(color="white", dash="dash", width=1),
                    showlegend=False,
                    hoverinfo="skip",
                    row=1,
                    col=col,
                )
    fig.update_layout(
        title=(
            "Weight cosines by layer<br><sup>colour: log10 fraction of the layer's neurons; black: class threshold;"
            "<br>white dotted: random-vector 95% region; white dashed: mismatched-pair 95% region</sup>"
        ),
        coloraxis=dict(colorscale="Viridis", colorbar_title="log10 frac"),
        yaxis_title="layer",
        width=1000,
        margin_t=130,  # three title lines above the subplot titles
    )
    fig.update_xaxes(range=[-1, 1])
    return fig


def ablation_figure(summary: pd.DataFrame, *, data: str = "corpus", metric: str = "entropy") -> go.Figure:
    """Change of a metric when each class set is ablated, next to its random controls.

    Args:
        summary: long frame ``ablation, set, kind, data, metric, delta, delta_std`` (targets and controls;
            ``delta_std`` optional, the spread over controls), as the experiment writes it.
        data: ``corpus`` or ``prompt``.
        metric: ``entropy`` or ``loss``.
    """
    part = summary[(summary.data == data) & (summary.metric == metric) & (summary.kind != "clean")]
    fig = px.bar(
        part,
        x="set",
        y="delta",
        color="kind",
        barmode="group",
        facet_col="ablation",
        error_y="delta_std" if "delta_std" in part else None,
        color_discrete_map={"target": "#de2d26", "control": "#969696"},
        labels={"delta": f"Δ {metric} (nats)", "set": "neuron set"},
    )
    fig.update_layout(
        title=f"Ablating RW classes: Δ mean next-token {metric} ({data})<br>"
        "<sup>red: the class set; grey: random sets of the same size per layer (mean ± sd over controls)</sup>",
        margin_t=120,  # the subtitle clears the facet titles
    )
    return fig


def frequency_figure(freq: pd.DataFrame, *, stat: str = "freq_gate_pos", min_neurons: int = 5) -> go.Figure:
    """Mean activation statistic per class and layer, from ``frequency_by_class``.

    Args:
        freq: frame ``layer, rw_class, n_neurons, <stat>...``.
        stat: column to plot.
        min_neurons: hide (layer, class) cells with fewer neurons.
    """
    part = freq[freq.n_neurons >= min_neurons]
    layers = pd.Index(sorted(freq.layer.unique()), name="layer")
    fig = go.Figure()
    for name in [c for c in dict.fromkeys(CLASS_NAMES + VANILLA_CLASS_NAMES) if c in set(part.rw_class)]:
        cls = part[part.rw_class == name].set_index("layer").reindex(layers).reset_index()  # gaps break the line
        fig.add_scatter(
            x=cls.layer,
            y=cls[stat],
            mode="lines+markers",
            name=name,
            line_color=CLASS_COLORS.get(name),
            customdata=cls.n_neurons,
            hovertemplate="layer %{x}<br>%{y:.3f}<br>%{customdata} neurons",
        )
    fig.update_layout(
        title=f"{stat} by RW class and layer<br><sup>cells with at least {min_neurons} neurons</sup>",
        xaxis_title="layer",
        yaxis_title=stat,
    )
    return fig


def attributes_rate_figure(table: pd.DataFrame, *, ablation: str = "") -> go.Figure:
    """Attributes rate per ablated class next to its random controls, with bootstrap intervals; the clean
    model's rate as a dashed line (from :meth:`workbench.neurons.attributes.AttributesRate.summary`)."""
    sets = table[table.set != "clean"]
    fig = go.Figure()
    for kind, col, low, high, color in (
        ("class ablated", "rate", "rate_low", "rate_high", "#a50f15"),
        ("random sets ablated", "control_rate", "control_low", "control_high", "#969696"),
    ):
        fig.add_bar(
            name=kind,
            x=sets.set,
            y=sets[col],
            marker_color=color,
            error_y=dict(type="data", symmetric=False, array=sets[high] - sets[col], arrayminus=sets[col] - sets[low]),
        )
    clean = table[table.set == "clean"]
    if len(clean):
        fig.add_hline(y=float(clean.rate.iloc[0]), line_dash="dash", annotation_text="no ablation")
    fig.update_layout(
        barmode="group",
        title=f"Attributes rate with each class ablated ({ablation}) vs random sets of the same size",
        yaxis_title="subjects whose continuation states an attribute",
        yaxis_range=[0, 1],
    )
    return fig
