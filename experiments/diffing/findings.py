"""The findings of the diffing benchmark, stated from its ``summary.json``: per read-out method, how many
organisms' targets it names, beside how many controls and null pairs it names anything for (false positives), for
organisms tuned to the stopping rule; whether ADL beats the black-box baseline; and whether the same holds for the
short tunes (the training-length control)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["findings"]

_NAMES = {
    "adl_lens": "ADL logit lens",
    "patchscope": "ADL Patchscope",
    "steering": "ADL steering",
    "crosscoder": "crosscoder (tuned-only latents)",
    "blackbox": "the black-box baseline (unprompted samples and replies)",
}


def _name(method: str) -> str:
    return _NAMES.get(method, method)


def _rate(row: Mapping[str, Any]) -> str:
    return f"{row['named']}/{row['organisms']}"


def _adl_vs_baseline(rows: list[Mapping[str, Any]]) -> str | None:
    by = {r["method"]: r for r in rows}
    if "adl_lens" not in by or "blackbox" not in by:
        return None
    adl, box = by["adl_lens"], by["blackbox"]
    verdict = "beats" if adl["named"] > box["named"] else "does not beat"
    return f"ADL logit lens {_rate(adl)} {verdict} the black-box baseline {_rate(box)}"


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``diffing`` summary."""
    rows = summary.get("identification") or []
    if not rows:
        return []
    out = []
    tuning = summary.get("tuning") or {}
    if tuning.get("steps"):
        steps = sorted(tuning["steps"].values())
        missed = tuning.get("not_converged") or []
        state = (
            f"NOT converged: {', '.join(missed)} reached the ceiling of {tuning.get('ceiling')} steps"
            if missed
            else "every tune converged"
        )
        out.append(
            f"Organisms tuned to the stopping rule ({tuning.get('stopping_rule')}): {state}; "
            f"{steps[0]}-{steps[-1]} steps (median {steps[len(steps) // 2]})."
        )
    for r in rows:
        name = _name(r["method"])
        out.append(
            f"{name[:1].upper() + name[1:]} names the target of {r['named']} of {r['organisms']} organisms and names "
            f"something for {r['false_positives']} of {r['controls']} controls and null pairs (false positives)."
        )
    adl = next((r for r in rows if r["method"] == "adl_lens"), None)
    extra = [
        n
        for n in summary.get("names") or []
        if n["method"] == "adl_lens" and n.get("point", "converged") == "converged" and n["others"]
        and n["kind"] in ("topic", "sentiment")
    ]  # fmt: skip
    if adl and extra:
        others = ", ".join(sorted({o for n in extra for o in n["others"].split()}))
        out.append(
            f"ADL logit lens also names a target other than the organism's for {len(extra)} of {adl['organisms']} "
            f"organisms ({others}): a hit is not always a clean one."
        )
    perfect = [r for r in rows if r["organisms"] and r["named"] == r["organisms"]]
    if not perfect:
        out.append("No method names the target of every organism.")
    clean = [r for r in rows if r["controls"] and r["false_positives"] == 0]
    if rows and not clean:
        out.append("No method is free of false positives on the controls and null pairs.")
    best = max(rows, key=lambda r: (r["named"] - r["false_positives"], r["named"]))
    if best["named"]:
        out.append(
            f"Most hits net of false positives: {_name(best['method'])} "
            f"({best['named']} named, {best['false_positives']} false positives)."
        )
    versus = _adl_vs_baseline(rows)
    early = summary.get("identification_early") or []
    if versus:
        early_versus = _adl_vs_baseline(early)
        steps = sorted((tuning.get("early_steps") or {}).values())
        at = f" after {steps[0]}-{steps[-1]} steps" if steps else ""
        out.append(
            f"{versus}; on the short tunes{at}: {early_versus}." if early_versus else f"{versus}; no short tunes read."
        )
    return out
