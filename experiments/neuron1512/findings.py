"""The findings of the main job, stated from its ``summary.json``: per preset and alignment, whether training
converged by the stopping rule, the held-out loss of the base and with the IRM over seeds, the VADER shift, the
dominant dimensions with the masking test beside a random control, the explanation's neuron ablation beside random
neurons, the agreement between seeds beside untrained IRMs, and how these move with training length."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import num, spread

__all__ = ["findings"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _training(label: str, tr: Mapping[str, Any]) -> str:
    per = tr["per_seed"]
    steps = ", ".join(str(v["steps"]) for v in per.values())
    short = [str(s) for s, v in per.items() if not v["converged"]]
    if not short:
        return f"{label}: every seed converged ({tr['stopping_rule']}), after {steps} steps."
    return (
        f"{label}: NOT converged: seed {', '.join(short)} reached the step ceiling before the rule held "
        f"({tr['stopping_rule']}; steps {steps}); its numbers describe an IRM still training."
    )


def _losses(label: str, r: Mapping[str, Any]) -> str:
    irm = r["heldout_loss_irm"]
    text = (
        f"{label}: held-out loss {num(r['heldout_loss_base']['mean'])} (base) -> "
        f"{spread(irm['values'], irm['mean'], irm['std'])} with the IRM"
    )
    if "heldout16_loss_irm" in r:
        first = r["heldout16_loss_irm"]
        text += (
            f"; on the first 16 held-out texts (the 30-step study's set) {num(r['heldout16_loss_base']['mean'])} -> "
            f"{spread(first['values'], first['mean'], first['std'])}"
        )
    return text + "."


def _dimensions(label: str, r: Mapping[str, Any], d_model: int | None) -> list[str]:
    out = []
    dom, (dim, share, _) = r["dominant_dims"], r["top10_mean_share"][0]
    uniform = f" (a uniform spread: {_pct(1 / d_model)})" if d_model else ""
    if dom:
        dims = ", ".join(f"{d['dim']} ({_pct(d['share_mean'])})" for d in dom)
        out.append(f"{label}: dimensions dominant in every seed (z > 3 against all dimensions): {dims}{uniform}.")
    else:
        out.append(
            f"{label}: no dimension is dominant in every seed; the largest seed-mean share is dimension {dim} "
            f"with {_pct(share)}{uniform}."
        )
    for k, m in r["masking"].items():
        out.append(
            f"{label}: masking the top-{k} dimension(s) removes {_pct(m['top_removed']['mean'])} of the IRM's "
            f"held-out loss gain; {k} random ones remove {_pct(m['random_removed']['mean'])}."
        )
    return out


def _explanation(label: str, e: Mapping[str, Any]) -> list[str]:
    abl = e.get("neuron_ablation")
    if not abl:
        return []
    return [
        f"{label} (first seed): setting the {abl['k']} neurons whose direct logit attribution to the alignment's "
        f"characteristic tokens changed most back to their base activations removes {_pct(abl['top_removed'])} of "
        f"the IRM's effect on those tokens' log-probability; {abl['k']} random neurons of the same layers remove "
        f"{_pct(abl['random_removed_mean'])}."
    ]


def _lengths(preset: str, section: Mapping[str, Any]) -> list[str]:
    points = section.get("points") or []
    if len(points) < 2:
        return []
    out = []
    final = points[-1]
    for alignment, v in final["alignments"].items():
        at = [
            f"{p['step']}: {num(p['alignments'][alignment]['heldout_loss_irm'])}, top-1 share "
            f"{_pct(p['alignments'][alignment]['top1_share'])}, dominant "
            f"{', '.join(str(d['dim']) for d in p['alignments'][alignment]['dominant_dims']) or 'none'}"
            for p in points
            if alignment in p["alignments"]
        ]
        out.append(
            f"{preset}/{alignment} by training length (step: held-out loss, top-1 share, dominant dims): "
            + "; ".join(at)
            + "."
        )
        kept = {d["dim"] for d in v["dominant_dims"]}
        early = points[0]["alignments"].get(alignment)
        if early is not None:
            before = {d["dim"] for d in early["dominant_dims"]}
            same = sorted(kept & before)
            out.append(
                f"{preset}/{alignment}: of the {len(kept)} dimension(s) dominant at the end, "
                f"{len(same)} ({', '.join(map(str, same)) or 'none'}) were already dominant at step {points[0]['step']}"
                f" (then: {', '.join(map(str, sorted(before))) or 'none'})."
            )
    for kind, words in (("same_alignment", "between seeds"), ("same_seed", "between alignments of one seed")):
        rhos = [(p["step"], p["spearman"][kind]) for p in points if p["spearman"].get(kind) is not None]
        if rhos:
            out.append(
                f"{preset}: Spearman of the dimension shares {words} by step: "
                + ", ".join(f"{s}: {num(rho)}" for s, rho in rhos)
                + "."
            )
    return out


def _stability(preset: str, v: Mapping[str, Any]) -> list[str]:
    out = []
    for kind, words in (("same_alignment", "between seeds"), ("same_seed", "between alignments of one seed")):
        s = v.get(kind) or {}
        if s.get("trained") is not None:
            out.append(
                f"{preset}: Spearman of the dimension shares {words} {num(s['trained'])} "
                f"(untrained IRMs of the same seeds {num(s['untrained'])}, shuffled dimensions {num(s['shuffled'])})."
            )
    return out


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``neuron1512`` summary."""
    out = []
    for preset, by_alignment in (summary.get("results") or {}).items():
        d_model = (summary.get("presets") or {}).get(preset, {}).get("d_model")
        for alignment, r in by_alignment.items():
            label = f"{preset}/{alignment}"
            out.append(_training(label, r["training"]))
            out.append(_losses(label, r))
            out.append(
                f"{label}: VADER of generated replies {num(r['vader_off'], sign=True)} with the IRM off -> "
                f"{num(r['vader_on']['mean'], sign=True)} ± {num(r['vader_on']['std'])} on "
                f"(the corpus: {num(r['vader_corpus']['mean'], sign=True)})."
            )
            out += _dimensions(label, r, d_model)
            if "explanation" in r:
                out += _explanation(label, r["explanation"])
        out += _stability(preset, (summary.get("stability_vs_controls") or {}).get(preset) or {})
        out += _lengths(preset, (summary.get("training_length") or {}).get(preset) or {})
        every = (summary.get("dominant_dims") or {}).get(preset, {}).get("every_alignment_and_seed")
        if every is not None and len(by_alignment) > 1:
            out.append(
                f"{preset}: dimensions dominant in every alignment and seed: {', '.join(map(str, every))}."
                if every
                else f"{preset}: no dimension is dominant in every alignment and seed."
            )
    return out
