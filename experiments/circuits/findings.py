"""The findings of the circuits experiment, stated from its ``summary.json``: per task, MIB's CPR and CMD of
EAP-IG and EAP beside a random ranking of the same edges, and the circuit diff of the base and a tuned model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import num

__all__ = ["findings"]

_METHODS = {"eap-ig": "EAP-IG", "eap": "EAP", "random": "random ranking"}


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``circuits`` summary (one seed; faithfulness is MIB's, 1 = the whole model)."""
    out = []
    edges = summary.get("edges")
    for task, scores in (summary.get("scores") or {}).items():
        parts = [
            f"{label} CPR {num(scores[m]['cpr'])}, CMD {num(scores[m]['cmd'])}"
            for m, label in _METHODS.items()
            if isinstance(scores.get(m), Mapping) and {"cpr", "cmd"} <= set(scores[m])
        ]
        if not parts:
            continue
        gap = ""
        if "m_full" in scores and "m_empty" in scores:
            gap = f" (logit difference: whole model {num(scores['m_full'])}, empty circuit {num(scores['m_empty'])})"
        over = f" over {edges} edges" if edges else ""
        out.append(f"{task}{over}: {'; '.join(parts)}{gap}; higher CPR and lower CMD are better.")
        rnd = scores.get("random") or {}
        for m in ("eap-ig", "eap"):
            mine = scores.get(m) or {}
            if "cpr" in mine and "cpr" in rnd and mine["cpr"] <= 1.1 * rnd["cpr"]:
                out.append(
                    f"On {task}, {_METHODS[m]}'s signed ranking is no better than a random one: CPR {num(mine['cpr'])} "
                    f"against {num(rnd['cpr'])} (no better: under 1.1x random)."
                )
    out += _planted(summary.get("planted"))
    diff = summary.get("diff")
    if isinstance(diff, Mapping) and "jaccard" in diff:
        tuned = "itself" if diff.get("tuned") == "self" else f"the {diff.get('tuned')} model"
        out.append(
            f"Circuit diff on {diff.get('task')} (top {diff.get('n')} edges), base vs {tuned}: {diff['kept']} kept, "
            f"{diff['gained']} gained, {diff['lost']} lost, Jaccard {num(diff['jaccard'])}."
        )
        if diff.get("tuned") == "self" and (diff["gained"] or diff["lost"]):
            out.append(
                "The model differs from itself: the diff reports changes where there are none (a false positive)."
            )
        out += _diff_noise(diff["jaccard"], diff.get("noise") or {})
    return out


DIFF_OVER_NOISE = 1.5
"""How many times the noise's distance (1 - Jaccard) a diff's distance must be to be called larger than the noise."""


def _distance_ratio(jaccard: float, noise: float) -> float:
    return (1 - jaccard) / max(1 - noise, 1e-9)


def _diff_noise(jaccard: float, noise: Mapping[str, float]) -> list[str]:
    """The diff against its noise: a second tuning seed, and the base's circuit on other prompts."""
    out, ratios = [], []
    if "tuned_vs_other_seed" in noise:
        seeds, other = noise["tuned_vs_other_seed"], noise["base_vs_other_seed"]
        out.append(
            f"Against tuning noise: the two tuning seeds' circuits have Jaccard {num(seeds)} with each other, and "
            f"{num(jaccard)} and {num(other)} with the base's."
        )
        ratios.append(("tuning seeds", min(_distance_ratio(jaccard, seeds), _distance_ratio(other, seeds))))
    if "base_halves" in noise:
        halves, tuned = noise["base_halves"], noise["base_vs_tuned_halves"]
        out.append(
            f"Against prompt noise: on half of the prompts each, the base's circuit has Jaccard {num(halves)} with its "
            f"circuit on the other half and {num(tuned)} with the tuned model's on the same half."
        )
        ratios.append(("prompt halves", _distance_ratio(tuned, halves)))
    if ratios:
        said = " and ".join(f"{ratio:.2f}x the {what}'" for what, ratio in ratios)
        larger = all(ratio >= DIFF_OVER_NOISE for _, ratio in ratios)
        out.append(
            f"The diff is {'larger than' if larger else 'within'} the noise: its distance (1 - Jaccard) is {said} "
            f"(larger needs {DIFF_OVER_NOISE}x each; for the seeds, the seed closer to the base counts)."
        )
    return out


def _planted(planted: Any) -> list[str]:
    """The known answer: recall of each method's top edges at the planted circuit's size, against random."""
    if not isinstance(planted, Mapping) or "size" not in planted:
        return []
    methods = {**_METHODS, "exact": "exact patching"}
    parts = [
        f"{label} {num(planted[m]['recall'])}"
        for m, label in methods.items()
        if m != "random" and isinstance(planted.get(m), Mapping) and "recall" in planted[m]
    ]
    rnd = (planted.get("random") or {}).get("recall")
    control = f" (a random ranking: {num(rnd)} expected)" if rnd is not None else ""
    out = [
        f"Planted circuit ({planted['size']} of {planted['edges']} edges, task accuracy "
        f"{num(planted['accuracy'])}): recall of the top {planted['size']} edges, {', '.join(parts)}{control}."
    ]
    ig = planted.get("eap-ig") or {}
    if "recall" in ig and ig["recall"] < 0.9:
        out.append("EAP-IG misses part of the planted circuit at its size: its rankings elsewhere are suspect.")
    return out
