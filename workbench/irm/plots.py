"""Figures of the IRM analyses.

Each builder returns a plotly figure; saving is :func:`workbench.plotting.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from workbench.irm.record import OutputStats

__all__ = [
    "dimension_share",
    "explanation_figure",
    "masking_bars",
    "massive_vs_irm",
    "output_heatmap",
    "realignment_bars",
    "sparsity_curve",
    "stability_heatmap",
    "token_heatmaps",
    "training_curves",
    "training_length",
]


def training_curves(logs: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Training loss (lines) and held-out loss (markers) per alignment against the step."""
    fig = go.Figure()
    for i, (name, df) in enumerate(logs.items()):
        color = px.colors.qualitative.D3[i % 10]
        fig.add_scatter(x=df.step, y=df.lm_loss, name=f"{name} train", line=dict(color=color))
        ev = df.dropna(subset=["eval_loss"])
        fig.add_scatter(
            x=ev.step, y=ev.eval_loss, name=f"{name} held-out", mode="markers+lines", line=dict(color=color, dash="dot")
        )
    return fig.update_layout(
        title="IRM training: next-token loss on the alignment corpus",
        xaxis_title="step",
        yaxis_title="loss (nats/token)",
    )


def _compact(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Values divided by their maximum and rounded to 3 decimals (keeps the HTML small), and that maximum."""
    scale = float(np.abs(z).max()) or 1.0
    return np.round(z.astype(np.float64) / scale, 3), scale  # float64: short JSON numbers


def output_heatmap(stats: OutputStats, title: str) -> go.Figure:
    """Mean |IRM output| with x = residual dimension and y = layer (relative to its maximum)."""
    z, scale = _compact(stats.mean_abs.numpy())
    fig = go.Figure(
        go.Heatmap(z=z, y=list(stats.layers), colorscale="Viridis", colorbar=dict(title=f"mean |out|<br>/ {scale:.3g}"))
    )
    return fig.update_layout(
        title=f"{title} ({stats.n_tokens} tokens)", xaxis_title="residual dimension", yaxis_title="layer", height=420
    )


def token_heatmaps(outputs: Tensor, tokens: Sequence[str], layers: Sequence[int], title: str, n: int = 6) -> go.Figure:
    """|IRM output| (x = residual dimension, y = layer) for the first ``n`` generated tokens."""
    n = min(n, outputs.shape[0])
    row_px, gap_px = 200, 60  # each token's title sits in the gap above its heatmap, clear of the one above
    height = n * row_px + (n - 1) * gap_px + 170
    fig = make_subplots(
        rows=n,
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"token {i}: {t!r}" for i, t in enumerate(tokens[:n])],
        vertical_spacing=gap_px / (height - 170),
    )
    z, scale = _compact(outputs[:n].abs().numpy())
    for i in range(n):
        fig.add_trace(
            go.Heatmap(
                z=z[i],
                y=list(layers),
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                showscale=i == 0,
                colorbar=dict(title=f"|out| / {scale:.3g}"),
            ),
            row=i + 1,
            col=1,
        )
        fig.update_yaxes(title_text="layer", row=i + 1, col=1)
    fig.update_annotations(font_size=13)
    fig.update_xaxes(title_text="residual dimension", row=n, col=1)
    return fig.update_layout(title=title, height=height, margin=dict(t=110))


def dimension_share(shares: Mapping[str, Tensor], top: Mapping[str, Sequence[int]]) -> go.Figure:
    """Share of the IRM output mass per residual dimension, one line per alignment, top dimensions labelled."""
    fig = go.Figure()
    for i, (name, share) in enumerate(shares.items()):
        color = px.colors.qualitative.D3[i % 10]
        fig.add_scatter(y=share.numpy(), name=name, line=dict(color=color, width=1))
        dims = list(top[name])
        fig.add_scatter(
            x=dims,
            y=share[dims].numpy(),
            mode="markers+text",
            text=[str(d) for d in dims],
            textposition="top center",
            marker=dict(color=color, size=7),
            showlegend=False,
        )
    return fig.update_layout(
        title="Where the IRM writes: share of |output| per residual dimension",
        xaxis_title="residual dimension",
        yaxis_title="share",
    )


def sparsity_curve(stats: Mapping[str, OutputStats], ks: Sequence[int], d_model: int) -> go.Figure:
    """Share of the IRM output mass in its top-k dimensions against k (uniform spread shown dashed)."""
    fig = go.Figure()
    for name, s in stats.items():
        shares = s.top_share(ks)
        fig.add_scatter(x=list(shares), y=list(shares.values()), name=name, mode="lines+markers")
    fig.add_scatter(x=list(ks), y=[k / d_model for k in ks], name="uniform", line=dict(dash="dash", color="grey"))
    return fig.update_layout(
        title="Sparsity of the IRM output",
        xaxis_title="k (top dimensions)",
        xaxis_type="log",
        yaxis_title="share of |output|",
    )


def masking_bars(frames: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Fraction of the realignment removed by masking the top-k vs k random dimensions (mean ± std of draws)."""
    rows = []
    for name, df in frames.items():
        for (k, kind), g in df.groupby(["k", "kind"]):
            rows.append(
                {"alignment": name, "what": f"{kind} {k}", "removed": g.removed.mean(), "std": g.removed.std(ddof=0)}
            )
    agg = pd.DataFrame(rows)
    fig = px.bar(agg, x="alignment", y="removed", color="what", error_y="std", barmode="group")
    return fig.update_layout(
        title=dict(text="Masking IRM dimensions:<br>share of the held-out loss gain lost", x=0.02),
        yaxis_title="realignment removed",
        yaxis_tickformat=".2%",
        margin=dict(t=100),
    )


def realignment_bars(table: pd.DataFrame) -> go.Figure:
    """Held-out loss and VADER sentiment with the IRM off and on, per alignment (``table`` from the experiment)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["held-out loss (nats/token)", "VADER compound of replies"])
    for col, (off, on) in enumerate([("heldout_loss_base", "heldout_loss_irm"), ("vader_off", "vader_on")], start=1):
        fig.add_bar(
            x=table.alignment, y=table[off], name="IRM off", marker_color="grey", showlegend=col == 1, row=1, col=col
        )
        fig.add_bar(
            x=table.alignment, y=table[on], name="IRM on", marker_color="crimson", showlegend=col == 1, row=1, col=col
        )
    return fig.update_layout(title="Does the realignment work?", barmode="group")


def massive_vs_irm(base_peak: Tensor, top: Mapping[str, Sequence[int]]) -> go.Figure:
    """The base model's peak mean |resid| per dimension (log scale) with each alignment's top IRM dimensions marked."""
    fig = go.Figure(
        go.Scatter(y=base_peak.numpy(), name="base model peak mean |resid_post|", line=dict(color="grey", width=1))
    )
    for i, (name, dims) in enumerate(top.items()):
        fig.add_scatter(
            x=list(dims),
            y=base_peak[list(dims)].numpy(),
            mode="markers",
            name=f"{name} IRM top dims",
            marker=dict(size=9 - 2 * i, color=px.colors.qualitative.D3[i % 10]),
        )
    return fig.update_layout(
        title="Are the IRM's dimensions the base model's massive-activation dimensions?",
        xaxis_title="residual dimension",
        yaxis_title="mean |activation| (peak over layers)",
        yaxis_type="log",
    )


def stability_heatmap(matrices: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> go.Figure:
    """Spearman correlation of the share vectors between runs (alignment/seed), one square panel per preset."""
    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"preset {n}" for n in names], horizontal_spacing=0.2)
    for i, name in enumerate(names, start=1):
        labels, rho = matrices[name]
        fig.add_trace(
            go.Heatmap(
                z=np.round(rho, 3),
                x=list(labels),
                y=list(labels),
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                reversescale=True,
                showscale=i == 1,
                colorbar=dict(title="Spearman"),
                text=np.round(rho, 2),
                texttemplate="%{text}",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    side = max(len(m[0]) for m in matrices.values())
    return fig.update_layout(
        title=dict(text="Do IRMs agree on where they write?<br>Spearman correlation of the dimension shares", x=0.02),
        height=max(420, 45 * side + 200),
        width=max(700, len(names) * (45 * side + 160)),
        margin=dict(t=110),
    )


def explanation_figure(frames: Mapping[str, Mapping[str, pd.DataFrame]]) -> go.Figure:
    """Per layer, one colour per alignment: logit-lens KL, DLA of the IRM's writes, and patching injected -> base.

    ``frames[alignment]`` holds the explanation's ``lens_kl``, ``dla`` and ``patching`` frames; patching
    kinds are told apart by the dash of the line.
    """
    titles = ["logit lens: KL(base+IRM || base)", "DLA of the IRM's write per layer", "patching injected -> base"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.08)
    dashes = dict(zip(dict.fromkeys(k for f in frames.values() for k in f["patching"].kind), ("solid", "dash", "dot")))
    for i, (name, f) in enumerate(frames.items()):
        line = dict(color=px.colors.qualitative.D3[i % 10])
        fig.add_scatter(x=f["lens_kl"].point, y=f["lens_kl"].kl, name=name, line=line, legendgroup=name, row=1, col=1)
        fig.add_scatter(
            x=f["dla"].layer, y=f["dla"].irm, name=name, line=line, legendgroup=name, showlegend=False, row=1, col=2
        )
        for kind, dash in dashes.items():
            g = f["patching"][f["patching"].kind == kind]
            fig.add_scatter(
                x=g.layer,
                y=g.normalized,
                name=f"{name} {kind}",
                line=dict(line, dash=dash),
                legendgroup=name,
                showlegend=False,
                row=1,
                col=3,
            )
    for kind, dash in dashes.items():  # legend entries for the dashes
        fig.add_scatter(x=[None], y=[None], name=f"patched: {kind}", line=dict(color="grey", dash=dash), row=1, col=3)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="KL (nats)", row=1, col=1)
    fig.update_yaxes(title_text="logit (final-norm scaled)", row=1, col=2)
    fig.update_yaxes(title_text="0 = base, 1 = base+IRM", row=1, col=3)
    fig.update_annotations(font_size=13)
    return fig.update_layout(
        title=dict(text="Where does the IRM change the prediction of the characteristic tokens?", x=0.02),
        height=460,
        width=1400,
        margin=dict(t=100),
    )


def training_length(sections: Mapping[str, Mapping]) -> go.Figure:
    """The findings against training length (:func:`workbench.irm.lengths.at_lengths` per preset).

    Panels: top-1 and top-10 share of the IRM output, top-1 masking vs random-1, held-out loss (per
    alignment), and the mean Spearman of the shares between seeds of one alignment and between alignments.
    """
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=(
            "top-1 dimension's share",
            "top-10 dimensions' share",
            "loss gain removed by masking:<br>top-k (solid) vs random k (dotted)",
            "held-out loss with the IRM",
            "Spearman of the shares: between<br>seeds (solid), alignments (dashed)",
            "",
        ),
        horizontal_spacing=0.09,
        vertical_spacing=0.16,
    )
    colors = px.colors.qualitative.D3
    i = 0
    for preset, section in sections.items():
        x = [str(p["step"]) for p in section["points"]]
        names = dict.fromkeys(a for p in section["points"] for a in p["alignments"])
        for name in names:
            color = colors[i % 10]
            i += 1
            rows = [p["alignments"].get(name) for p in section["points"]]

            def series(get, rows=rows):
                return [get(r) if r is not None else None for r in rows]

            label = f"{preset}/{name}"
            line = dict(color=color)
            fig.add_scatter(x=x, y=series(lambda r: r["top1_share"]), name=label, line=line, row=1, col=1)
            fig.add_scatter(
                x=x, y=series(lambda r: r["top10_share"]), name=label, line=line, showlegend=False, row=1, col=2
            )
            k = next((k for p in section["points"] for a in p["alignments"].values() for k in a["masking"]), None)
            if k is not None:
                fig.add_scatter(
                    x=x,
                    y=series(lambda r, k=k: r["masking"][k]["top_removed"]),
                    name=f"{label} top-{k}",
                    line=line,
                    showlegend=False,
                    row=1,
                    col=3,
                )
                fig.add_scatter(
                    x=x,
                    y=series(lambda r, k=k: r["masking"][k]["random_removed"]),
                    name=f"{label} random-{k}",
                    line=dict(color=color, dash="dot"),
                    showlegend=False,
                    row=1,
                    col=3,
                )
            fig.add_scatter(
                x=x, y=series(lambda r: r["heldout_loss_irm"]), name=label, line=line, showlegend=False, row=2, col=1
            )
        for j, kind in enumerate(("same_alignment", "same_seed")):
            fig.add_scatter(
                x=x,
                y=[p["spearman"].get(kind) for p in section["points"]],
                name=f"{preset}: between {'seeds' if kind == 'same_alignment' else 'alignments'}",
                line=dict(color="black", dash="solid" if j == 0 else "dash"),
                row=2,
                col=2,
            )
    fig.update_xaxes(type="category")
    for col in (1, 2):
        fig.update_xaxes(title_text="training step", row=2, col=col)
    fig.update_xaxes(title_text="training step", row=1, col=3)
    for col in (1, 2, 3):
        fig.update_yaxes(tickformat=".2%", row=1, col=col)
    return fig.update_layout(
        title="Findings against training length ('final': where the stopping rule or the ceiling ended training)",
        height=760,
        width=1200,
    )
