"""The findings of the diffing benchmark, stated from its ``summary.json``: per read-out method, how many
organisms' targets it names, beside how many controls and null pairs it names anything for (false positives)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["findings"]

_NAMES = {
    "adl_lens": "ADL logit lens",
    "patchscope": "ADL Patchscope",
    "steering": "ADL steering",
    "crosscoder": "crosscoder (tuned-only latents)",
    "blackbox": "the black-box baseline (unprompted samples)",
}


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``diffing`` summary (one tuning seed per organism)."""
    rows = summary.get("identification") or []
    if not rows:
        return []
    out = []
    for r in rows:
        name = _NAMES.get(r["method"], r["method"])
        out.append(
            f"{name[:1].upper() + name[1:]} names the target of {r['named']} of {r['organisms']} organisms and names "
            f"something for {r['false_positives']} of {r['controls']} controls and null pairs (false positives)."
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
            f"Most hits net of false positives: {_NAMES.get(best['method'], best['method'])} "
            f"({best['named']} named, {best['false_positives']} false positives)."
        )
    return out
