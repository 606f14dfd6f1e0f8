"""The findings of the RW-functionalities study, stated from its ``summary.json``: how many gated neurons fall in
each class, where the weakening and conditional-strengthening neurons sit, which classes the neurons with the
largest direct effect belong to, and what ablating each class does beside a random set of the same size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import interval, num

__all__ = ["findings"]


def _placement(summary: Mapping[str, Any], key: str, name: str) -> str | None:
    p = summary.get(key)
    if not p or "mean_layer" not in p:
        return None
    return (
        f"{name} neurons ({p['count']}) have mean layer {num(p['mean_layer'], 1)}, {num(p['fraction_in_first_third'])} "
        f"of them in the first third of the layers and {num(p['fraction_in_last_third'])} in the last"
    )


def _ablation(summary: Mapping[str, Any]) -> list[str]:
    out = []
    for mode, metrics in (summary.get("ablation") or {}).items():
        entry = metrics.get("corpus_loss")
        if not entry:
            continue
        sets = {k: v for k, v in entry.items() if isinstance(v, Mapping)}
        parts = [
            f"{name} {num(v['delta'], 3, sign=True)} (random set {num(v['control_delta'], 3, sign=True)})"
            for name, v in sets.items()
            if v.get("control_delta") is not None
        ]
        if not parts:
            continue
        size = next(iter((summary.get("ablated_sets") or {}).values()), None)
        each = f" of {size} neurons" if size else ""
        out.append(
            f"Ablating ({mode}) each class set{each} changes the corpus loss (clean {num(entry['clean'], 3)}) by: "
            + "; ".join(parts)
            + "."
        )
        beyond = [n for n, v in sets.items() if v.get("control_delta") is not None and abs(v["delta"]) > 0.05]
        if not beyond:
            out.append(f"No class set moves the corpus loss by more than 0.05 nats when ablated ({mode}).")
    return out


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``rw_functionalities`` summary."""
    counts = summary.get("class_counts")
    if not counts:
        return []
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{n} {name}" for name, n in ranked[:5])
    shape = (
        f" ({summary['n_layers']} layers x {summary['d_mlp']})" if "n_layers" in summary and "d_mlp" in summary else ""
    )
    out = [
        f"Of {total} gated MLP neurons{shape}, by the cosines of their {summary.get('weights', '')} weights "
        f"(threshold {summary.get('threshold', '?')}): {listed}."
    ]
    other = summary.get("class_counts_other_weights") or {}
    if "neurons_changing_class" in other:
        out.append(
            f"With {other.get('weights', 'the other')} weights, {other['neurons_changing_class']} neurons change class."
        )
    places = [
        p
        for p in (
            _placement(summary, "weakening", "Weakening"),
            _placement(summary, "conditional_strengthening", "conditional strengthening"),
        )
        if p
    ]
    if places:
        out.append("; ".join(places) + ".")
    dla = summary.get("dla") or {}
    top = {k: v for k, v in (dla.get("top50_class_counts") or {}).items() if v}
    if top:
        answers = dla.get("answers") or []
        on = f" on {answers[0]!r} vs {answers[1]!r}" if len(answers) == 2 else ""
        parts = ", ".join(f"{n} {name}" for name, n in sorted(top.items(), key=lambda kv: -kv[1]))
        out.append(f"Of the 50 neurons with the largest direct logit attribution{on}: {parts}.")
    out += _ablation(summary)
    skipped = summary.get("skipped_classes") or {}
    if skipped:
        parts = ", ".join(f"{name} ({n} neurons)" for name, n in skipped.items())
        out.append(f"Not ablated, too few neurons for a set of the common size: {parts}.")
    sets = (summary.get("attributes_rate") or {}).get("sets") or {}
    if "clean" in sets and "rate" in sets["clean"]:
        clean = sets["clean"]
        parts = [
            f"{name} {num(v['delta'], sign=True)} ({interval(v['delta_low'], v['delta_high'])})"
            for name, v in sets.items()
            if name != "clean" and {"delta", "delta_low", "delta_high"} <= set(v)
        ]
        n = clean.get("n_subjects", "?")
        text = f"The attributes rate of the clean model is {num(clean['rate'])} over {n} subjects"
        out.append(
            text
            + (f"; ablating each class set changes it, against random sets, by {'; '.join(parts)}." if parts else ".")
        )
    return out
