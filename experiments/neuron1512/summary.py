"""The main job's results across units (:mod:`experiments.neuron1512`): summary, figures, tables, terminal report.

Per (preset, alignment): losses and VADER over seeds, the top and dominant dimensions, the masking
test; per preset: the stability of the dimension shares between seeds and alignments
(:mod:`workbench.irm.stability`); across presets: whether they write to the same dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from experiments.neuron1512.unit import Context, Unit
from workbench.hooks import format_hook_name
from workbench.irm import TrainConfig, plots
from workbench.irm.dimensions import base_magnitudes, massive_dims, top_dims
from workbench.irm.lengths import at_lengths, snapshot_steps
from workbench.irm.stability import (
    PAIR_KINDS,
    controls,
    dominant_dims,
    kinds_frame,
    share_stats,
    side_by_side,
    spearman,
    stability,
    top_jaccard,
)
from workbench.irm.train import encode_for

if TYPE_CHECKING:
    from experiments.neuron1512.config import Neuron1512Config

__all__ = ["CAPTIONS", "captions", "group_summary", "report", "summarise"]

# ---------------------------------------------------------------- across units


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    s = pd.Series(list(values), dtype=float)
    return {"mean": float(s.mean()), "std": float(s.std(ddof=0)), "values": s.round(6).tolist()}


def group_summary(units: Sequence[Unit], cfg: Neuron1512Config, vader_off: float) -> dict:
    """Across the seeds of one (preset, alignment): losses and VADER as mean / std, shares, dominant dims."""
    shares = [u.share for u in units]
    mean, std = share_stats(shares)
    dominant = dominant_dims(shares, cfg.z_dominant)
    masking = pd.concat([u.masking.to_frame().assign(seed=u.seed) for u in units])
    mask_summary = {
        str(k): {
            "top_removed": _mean_std(g[g.kind == "top"].removed),
            "random_removed": _mean_std(g[g.kind == "random"].removed),
        }
        for k, g in masking.groupby("k")
    }
    rule = next((p.train.stopping_rule for p in cfg.runs if p.name == units[0].preset), None)
    out = {
        "seeds": [u.seed for u in units],
        "training": {
            "stopping_rule": rule.describe() if rule else "none: a fixed number of steps",
            "all_converged": all(u.converged for u in units),
            "per_seed": {
                u.seed: {"steps": u.steps, "converged": u.converged, "heldout_loss_curve": u.eval_curve} for u in units
            },
        },
        **{k: _mean_std([u.losses[k] for u in units]) for k in units[0].losses},
        "vader_off": vader_off,
        **{k: _mean_std([u.vader[k] for u in units]) for k in units[0].vader},
        "top10_mean_share": [(d, s, float(std[d])) for d, s in top_dims(mean.float(), cfg.top_k)],
        "top10_per_seed": {u.seed: top_dims(u.share, cfg.top_k) for u in units},
        "top_share_per_seed": {u.seed: u.stats.top_share([1, 10, 50]) for u in units},
        "dominant_dims": dominant.to_dict("records"),
        "masking": mask_summary,
        "irm_params": units[0].irm_params,
        "seconds": {k: round(sum(u.seconds.get(k, 0.0) for u in units), 1) for k in units[0].seconds | {"explain": 0}},
    }
    explained = next((u.explanation for u in units if u.explanation is not None), None)
    if explained is not None:
        out["explanation"] = explained.summary()
    return out


CAPTIONS = {
    "training_curves": "Training and held-out loss per preset, alignment and seed: every IRM should go down.",
    "dimension_share": (
        "Seed-mean share of the IRM output per residual dimension: a spike would be a dominant dimension."
    ),
    "sparsity": "Share of the output in the top-k dimensions vs k: the dashed line is a uniform spread.",
    "masking": (
        "Realignment lost when the top-k dimensions are masked vs k random ones (mean ± std over seeds and draws)."
    ),
    "realignment": "Held-out loss and VADER sentiment of replies with the IRM off and on (mean over seeds).",
    "massive_vs_irm": (
        "The base model's peak activation per dimension, with each alignment's top IRM dimensions marked."
    ),
    "training_length": (
        "The findings at log-spaced training steps and where training stopped ('final'): a finding that moves "
        "between the last two points does not yet hold at convergence."
    ),
    "stability": (
        "Spearman correlation of the dimension shares between runs: compare seeds of one alignment with alignments "
        "of one seed, and each with its controls in the table stability_vs_controls (untrained IRMs, shuffled dims)."
    ),
}
"""One sentence per figure saying what to look at (figures named per alignment get theirs in :func:`captions`)."""


def captions(figures: Mapping[str, Any]) -> dict[str, str]:
    """The report caption of each figure."""
    out = {}
    for name in figures:
        if name in CAPTIONS:
            out[name] = CAPTIONS[name]
        elif name.startswith("explanation_"):
            out[name] = (
                "Per layer: where the prediction changes (logit lens), what the IRM's writes push directly (DLA) and "
                "which activations carry the change into the base run (patching, 1 = all of it)."
            )
        elif name.startswith("heatmap_tokens_"):
            out[name] = (
                "|IRM output| per layer and dimension for the first generated tokens: vertical stripes are dimensions."
            )
        elif name.startswith("heatmap_"):
            out[name] = "Mean |IRM output| per layer and residual dimension on held-out texts (first seed)."
    return out


def summarise(
    ctx: Context, cfg: Neuron1512Config, units: Sequence[Unit], vader_off: float, descriptions: Mapping[str, str]
) -> tuple[dict, dict, dict]:
    """Summary, figures and tables of all units (``descriptions``: one line per preset name)."""
    model = ctx.model
    first = [u for u in units if u.seed == cfg.seeds[0]]
    held_all = [e for u in first for e in encode_for(model, ctx.corpora[u.alignment].held_out[:8], TrainConfig())]
    magnitudes = base_magnitudes(model, held_all)
    peak = magnitudes.max(0).values
    base_rank = torch.empty(peak.numel(), dtype=torch.long)
    base_rank[peak.argsort(descending=True)] = torch.arange(peak.numel())
    groups: dict[tuple[str, str], list[Unit]] = {}
    for u in units:
        groups.setdefault((u.preset, u.alignment), []).append(u)
    results: dict[str, dict[str, dict]] = {}
    for (p, a), g in groups.items():
        results.setdefault(p, {})[a] = group_summary(g, cfg, vader_off)
    stab, dominant, matrices, pair_frames = {}, {}, {}, []
    for preset in cfg.runs:
        mine = [u for u in units if u.preset == preset.name]
        shares = {(u.alignment, u.seed): u.share for u in mine}
        every = dominant_dims([u.share for u in mine], cfg.z_dominant).dim.tolist()
        dominant[preset.name] = {
            a: [d["dim"] for d in results[preset.name][a]["dominant_dims"]] for a in preset.alignments
        }
        dominant[preset.name]["every_alignment_and_seed"] = every
        if len(shares) >= 2:
            s = stability(shares, k=cfg.top_k)
            untrained = {(u.alignment, u.seed): u.untrained_share for u in mine}
            stab[preset.name] = s.summary() | {"control": controls(shares, untrained, peak, k=cfg.top_k)}
            matrices[preset.name] = (s.labels, s.spearman.numpy())
            pair_frames.append(s.pairs().assign(preset=preset.name, irm="trained"))
            pair_frames.append(stability(untrained, k=cfg.top_k).pairs().assign(preset=preset.name, irm="untrained"))
    lengths = {
        p.name: at_lengths(
            {(u.alignment, u.seed): u.snapshots for u in units if u.preset == p.name},
            snapshot_steps(p.train.steps, cfg.snapshot_first),
            z=cfg.z_dominant,
            k=cfg.top_k,
        )
        for p in cfg.runs
    }
    lists = [set(dominant[p.name]["every_alignment_and_seed"]) for p in cfg.runs]
    dominant["shared_by_all_presets"] = sorted(set.intersection(*lists)) if lists else []
    compare = _compare_presets(cfg, groups, results)
    summary = {
        "model": str(model.cfg.model_name),
        "device": cfg.device,
        "command": cfg.command,
        "config": cfg.to_dict(),
        "presets": {
            p.name: {
                "description": descriptions[p.name],
                "read": format_hook_name(p.irm.read_hook, p.irm.read_layer),
                "write": p.irm.write_hook,
                "irm": p.irm.to_dict(),
                "train": p.train.to_dict(),
                "alignments": list(p.alignments),
                "seeds": list(cfg.seeds),
                "irm_params": groups[(p.name, p.alignments[0])][0].irm_params,
                "d_model": int(ctx.model.cfg.d_model),
            }
            for p in cfg.runs
        },
        "results": results,
        "training_length": lengths,
        "stability": stab,
        "stability_vs_controls": {p: side_by_side(st, st["control"]) for p, st in stab.items()},
        "dominant_dims": dominant,
        "presets_compare": compare,
        "massive_dims": massive_dims(magnitudes, cfg.top_k).to_dict(orient="records"),
        "irm_top_dims_base_rank": {
            f"{p}/{a}": [int(base_rank[d]) for d, *_ in r["top10_mean_share"]]
            for p, rs in results.items()
            for a, r in rs.items()
        },
        "seconds_by_phase": {
            k: round(sum(u.seconds.get(k, 0.0) for u in units), 1)
            for k in ("train", "record", "generate", "masking", "explain")
        },
    }
    figures = _figures(ctx, cfg, units, groups, peak, matrices)
    figures["training_length"] = plots.training_length(lengths)
    tables = _tables(ctx, units, groups, magnitudes, base_rank, pair_frames)
    tables["training_length"] = length_frame(lengths)
    if stab:  # the controls beside the trained statistics
        sets = {p: {"trained": st} | {k: st["control"][k] for k in ("untrained", "shuffled")} for p, st in stab.items()}
        tables["stability_kinds"] = pd.concat([kinds_frame(s).assign(preset=p) for p, s in sets.items()])
    return summary, figures, tables


def _compare_presets(cfg: Neuron1512Config, groups: Mapping, results: Mapping) -> dict:
    """Per alignment trained under several presets: do they write to the same dimensions (seed-mean shares)?"""
    out = {}
    names = [p.name for p in cfg.runs]
    for a in dict.fromkeys(al for p in cfg.runs for al in p.alignments):
        for x, y in combinations([n for n in names if (n, a) in groups], 2):
            mx, my = (share_stats([u.share for u in groups[(n, a)]])[0] for n in (x, y))
            out[f"{a}: {x} vs {y}"] = {
                "spearman": spearman(mx, my),
                "top_jaccard": top_jaccard(mx, my, cfg.top_k),
                f"dominant_{x}": [d["dim"] for d in results[x][a]["dominant_dims"]],
                f"dominant_{y}": [d["dim"] for d in results[y][a]["dominant_dims"]],
            }
    return out


def _figures(ctx, cfg, units, groups, peak, matrices) -> dict:
    model = ctx.model
    mean_shares = {f"{p}/{a}": share_stats([u.share for u in g])[0].float() for (p, a), g in groups.items()}
    tops = {n: s.argsort(descending=True)[: cfg.top_k].tolist() for n, s in mean_shares.items()}
    table = pd.DataFrame(
        [
            {
                "alignment": f"{p}/{a}",
                **{k: pd.Series([u.losses[k] for u in g]).mean() for k in ("heldout_loss_base", "heldout_loss_irm")},
                "vader_off": float(ctx.off.vader.mean()),
                "vader_on": pd.Series([u.vader["vader_on"] for u in g]).mean(),
            }
            for (p, a), g in groups.items()
        ]
    )
    firsts = [g[0] for g in groups.values()]
    figures = {
        "training_curves": plots.training_curves({u.label: u.log for u in units}),
        "dimension_share": plots.dimension_share(mean_shares, {n: t[:5] for n, t in tops.items()}),
        "sparsity": plots.sparsity_curve(
            {u.label: u.stats for u in firsts}, [1, 2, 5, 10, 20, 50, 100, 200, model.cfg.d_model], model.cfg.d_model
        ),
        "masking": plots.masking_bars(  # error bars: spread over seeds and random draws
            {f"{p}/{a}": pd.concat([u.masking.to_frame() for u in g]) for (p, a), g in groups.items()}
        ),
        "realignment": plots.realignment_bars(table),
        "massive_vs_irm": plots.massive_vs_irm(peak, tops),
    }
    if matrices:
        figures["stability"] = plots.stability_heatmap(matrices)
    for p in cfg.runs:
        frames = {
            u.alignment: {"lens_kl": e.lens_kl, "dla": e.dla, "patching": e.patching}
            for u in firsts
            if u.preset == p.name and (e := u.explanation) is not None
        }
        if frames:
            figures[f"explanation_{p.name}"] = plots.explanation_figure(frames)
    for u in firsts:
        name = f"{u.preset}_{u.alignment}"
        figures[f"heatmap_{name}"] = plots.output_heatmap(u.stats, f"Mean |IRM output| on held-out {u.label} texts")
        gen, toks = u.example
        figures[f"heatmap_tokens_{name}"] = plots.token_heatmaps(
            gen.irm_out, toks, u.stats.layers, f"|IRM output| per generated token ({u.label}): {gen.prompt!r}", n=3
        )
    return figures


def _tables(ctx, units, groups, magnitudes, base_rank, pair_frames) -> dict:
    peak = magnitudes.max(0).values
    rows = [
        {
            "preset": u.preset,
            "alignment": u.alignment,
            "seed": u.seed,
            **u.losses,
            **u.vader,
            "irm_params": u.irm_params,
        }
        | {f"seconds_{k}": v for k, v in u.seconds.items()}
        for u in units
    ]
    dims = []
    for (p, a), g in groups.items():
        mean, std = share_stats([u.share for u in g])
        dims.append(
            pd.DataFrame(
                {
                    "preset": p,
                    "alignment": a,
                    "dim": range(len(mean)),
                    "share_mean": mean.numpy(),
                    "share_std": std.numpy(),
                    **{f"share_seed{u.seed}": u.share.numpy() for u in g},
                    "generation_share": g[0].gen_stats.dim_share.numpy(),
                    "untrained_share_mean": share_stats([u.untrained_share for u in g])[0].numpy(),
                    "base_peak_mean_abs": peak.numpy(),
                    "base_rank": base_rank.numpy(),
                }
            )
        )
    explained = [(u, u.explanation) for u in units if u.explanation is not None]

    def expl(attr: str) -> pd.DataFrame:
        return pd.concat([getattr(e, attr).assign(preset=u.preset, alignment=u.alignment) for u, e in explained])

    tables = {
        "summary": pd.DataFrame(rows),
        "train_log": pd.concat([u.log for u in units]),
        "generations": pd.concat([ctx.off.assign(preset="", seed=-1), *(u.generations for u in units)]),
        "dimensions": pd.concat(dims),
        "masking": pd.concat(
            [u.masking.to_frame().assign(preset=u.preset, alignment=u.alignment, seed=u.seed) for u in units]
        ),
        "massive_dims": massive_dims(magnitudes, 20),
    }
    if pair_frames:
        tables["stability_pairs"] = pd.concat(pair_frames)
    if explained:
        tables |= {
            "explain_tokens": expl("tokens"),
            "explain_logit_lens": expl("lens_kl"),
            "explain_dla": expl("dla"),
            "explain_patching": expl("patching"),
            "explain_neurons": expl("neurons"),
            "explain_ablation": expl("ablation"),
            "explain_dimension_profile": pd.concat(
                [
                    e.profile.by_layer.assign(preset=u.preset, alignment=u.alignment, dim=e.profile.dim)
                    for u, e in explained
                ]
            ),
        }
    return tables


# ---------------------------------------------------------------- terminal


def _pct(x: float | None) -> str:
    """A fraction as a percentage with two significant digits (0.06% and 0.04% stay distinguishable)."""
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.2g}%" if abs(x) < 0.1 else f"{100 * x:.1f}%"


def _stability_lines(v: Mapping[str, dict]) -> list[str]:
    """The stability statistics of one preset beside their controls (a ``stability_vs_controls`` entry)."""
    parts = [
        f"{kind.replace('_', ' ')} {v[kind]['trained']:.2f} (untrained {v[kind]['untrained']:.2f}, shuffled "
        f"{v[kind]['shuffled']:.2f})"
        if v[kind]["trained"] is not None
        else f"{kind.replace('_', ' ')} -"
        for kind in PAIR_KINDS
    ]
    return [
        "  Spearman of dimension shares, trained (controls): " + ", ".join(parts),
        f"  Spearman of the shares with the base's peak |resid| per dimension: trained "
        f"{v['base_profile']['trained']:.2f}, untrained {v['base_profile']['untrained']:.2f}",
    ]


def _length_lines(section: Mapping) -> list[str]:
    """The dominant dimensions, top-1 share and seed agreement at each training length."""
    lines = ["  by training length (step: per alignment dominant dims, top-1 share; Spearman between seeds):"]
    for point in section["points"]:
        parts = [
            f"{a} {[d['dim'] for d in v['dominant_dims']] or 'none'} {_pct(v['top1_share'])}"
            for a, v in point["alignments"].items()
        ]
        rho = point["spearman"].get("same_alignment")
        lines.append(f"    {point['step']}: " + "; ".join(parts) + (f"; {rho:.2f}" if rho is not None else ""))
    return lines


def length_frame(sections: Mapping[str, Mapping]) -> pd.DataFrame:
    """The training-length section as a table: one row per preset, point and alignment."""
    rows = []
    for preset, section in sections.items():
        for point in section["points"]:
            for a, v in point["alignments"].items():
                rows.append(
                    {
                        "preset": preset,
                        "step": point["step"],
                        "alignment": a,
                        "n_seeds": v["n_seeds"],
                        "heldout_loss_irm": v["heldout_loss_irm"],
                        "dominant_dims": " ".join(str(d["dim"]) for d in v["dominant_dims"]),
                        "dominant_z_min": " ".join(f"{d['z_min']:.1f}" for d in v["dominant_dims"]),
                        "top1_share": v["top1_share"],
                        "top10_share": v["top10_share"],
                        **{
                            f"mask{k}_{kind}": m[f"{kind}_removed"]
                            for k, m in v["masking"].items()
                            for kind in ("top", "random")
                        },
                        **{f"spearman_{kind}": rho for kind, rho in point["spearman"].items()},
                    }
                )
    return pd.DataFrame(rows)


def report(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"{summary['model']}: {summary['seconds'] / 60:.1f} min"]
    for p, info in summary["presets"].items():
        lines.append(
            f" preset {p} ({info['read']} -> {info['write']}, IRM {info['irm_params'] / 1e6:.1f} M parameters)"
        )
        for a, r in summary["results"][p].items():
            top = ", ".join(f"{d} ({_pct(s)}±{_pct(sd)})" for d, s, sd in r["top10_mean_share"][:3])
            k, m = next(iter(r["masking"].items()), ("?", None))
            mask = f"top-{k} removes {_pct(m['top_removed']['mean'])} vs random {_pct(m['random_removed']['mean'])}"
            lines.append(
                f"  {a:9s} held-out loss {r['heldout_loss_base']['mean']:.3f} -> {r['heldout_loss_irm']['mean']:.3f}"
                f"±{r['heldout_loss_irm']['std']:.3f}; VADER {r['vader_off']:+.2f} -> {r['vader_on']['mean']:+.2f}"
                f"±{r['vader_on']['std']:.2f} (corpus {r['vader_corpus']['mean']:+.2f}); top dims {top}; masking {mask}"
            )
            tr = r["training"]
            steps = ", ".join(
                f"{v['steps']}{'' if v['converged'] else ' (ceiling, NOT converged)'}" for v in tr["per_seed"].values()
            )
            lines.append(f"            trained {steps} steps; rule: {tr['stopping_rule']}")
            dom = r["dominant_dims"]
            lines.append(
                "            dominant in every seed: "
                + (", ".join(f"{d['dim']} ({_pct(d['share_mean'])})" for d in dom) if dom else "none")
            )
            if "explanation" in r:
                e = r["explanation"]
                kl = e["logit_lens_kl_by_layer"]
                first = next((lbl for lbl, v in kl.items() if v > 0.1 * max(kl.values(), default=0)), "-")
                abl = e["neuron_ablation"]
                lines.append(
                    f"            explanation: logit-lens KL first >10% of its max at {first}; "
                    f"top-{abl['k']} neurons ablated remove {_pct(abl['top_removed'])} vs random "
                    f"{_pct(abl['random_removed_mean'])}; top dim {e['dimension_profile']['dim']} peaks in the base "
                    f"at layer {e['dimension_profile']['peak_layer']}"
                )
        if p in summary["stability"]:
            lines += _stability_lines(summary["stability_vs_controls"][p])
        lines += _length_lines(summary["training_length"][p])
        every = summary["dominant_dims"][p]["every_alignment_and_seed"]
        lines.append(f"  dominant in every alignment and seed: {', '.join(map(str, every)) if every else 'none'}")
    for name, c in summary.get("presets_compare", {}).items():
        lines.append(f" {name}: Spearman {c['spearman']:.2f}, top-10 Jaccard {c['top_jaccard']:.2f}")
    return "\n".join(lines)
