"""The findings of a DAS search, stated from its ``summary.json``: where the variable is found, its IIA beside
the controls (a random rotation of the same size, an irrelevant position, the no-op baseline, the whole-activation
swap) and, for the planted tagger, whether the search found the planted place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import at, num

__all__ = ["findings"]


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``boundless_das`` summary (one search seed; IIA on the test pairs)."""
    best = summary.get("best")
    if not best:
        return []
    out = []
    if "task_accuracy" in summary:
        task = summary.get("task", "")
        out.append(f"The model solves the {task} task with accuracy {num(summary['task_accuracy'])}.")
    d_model = f" of {summary['d_model']}" if "d_model" in summary else ""
    out.append(
        f"'{summary.get('variable', '?')}' is best found at layer {best['layer']}, position {best['position']} "
        f"({best.get('token', '')!r}): IIA {num(best['iia'], 3)} with {best.get('width', '?')}{d_model} rotated "
        f"dimensions swapped ({summary.get('method', '')} DAS on {summary.get('hook', '')}, one search seed)."
    )
    controls = []
    if "random_rotation_iia" in summary:
        controls.append(f"a random rotation of the same size {num(summary['random_rotation_iia'], 3)}")
    irrelevant = summary.get("irrelevant_position") or {}
    if irrelevant:
        controls.append(f"the irrelevant position {irrelevant.get('token', '')!r} {num(irrelevant['iia'], 3)}")
    if "noop_iia" in summary:
        controls.append(f"no intervention {num(summary['noop_iia'], 3)}")
    full = [
        r["iia_full_swap"]
        for r in summary.get("sweep", [])
        if (r.get("layer"), r.get("position")) == (best["layer"], best["position"]) and "iia_full_swap" in r
    ]
    if full:
        controls.append(f"swapping the whole activation there {num(full[0], 3)}")
    if controls:
        out.append("Controls: " + "; ".join(controls) + ".")
    floor = max(summary.get("random_rotation_iia", 0.0), summary.get("noop_iia", 0.0), at(irrelevant, "iia", default=0))
    if best["iia"] - floor < 0.1:
        out.append("The best IIA is within 0.1 of a control: no place in the grid carries the variable clearly.")
    truth = summary.get("ground_truth")
    if truth:
        found = "finds" if truth.get("best_is_planted") else "misses"
        out.append(
            f"The search {found} the planted place (layer {truth['layer']}, position {truth['position']}, "
            f"{truth.get('dims', '?')} dimensions, IIA of the planted subspace itself {num(truth['planted_iia'], 3)})."
        )
        overlap = at(truth, "overlap_at_planted", default={}) or {}
        if overlap and truth.get("overlap_chance") is not None:
            parts = ", ".join(f"'{k}' {num(v)}" for k, v in overlap.items())
            out.append(
                f"The learned subspace overlaps the planted ones by {parts}; a random subspace of its size: "
                f"{num(truth['overlap_chance'])}."
            )
    elif "ground_truth" in summary:
        out.append("This model has no planted ground truth: the location is a finding, not a check.")
    return out
