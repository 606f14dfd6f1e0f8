"""The findings of the main job, stated from its ``summary.json`` (the lead extends this module): per preset
and alignment, the held-out loss of the base and with the IRM over seeds, and whether any residual dimension is
dominant in every seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import num, spread

__all__ = ["findings"]


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``neuron1512`` summary."""
    out = []
    for preset, by_alignment in (summary.get("results") or {}).items():
        for alignment, r in by_alignment.items():
            base, irm = r.get("heldout_loss_base"), r.get("heldout_loss_irm")
            if not (isinstance(base, Mapping) and isinstance(irm, Mapping)):
                continue
            out.append(
                f"{preset}/{alignment}: held-out loss {num(base['mean'])} -> "
                f"{spread(irm.get('values'), irm['mean'], irm.get('std'))} with the IRM."
            )
    for preset, dims in (summary.get("dominant_dims") or {}).items():
        if not isinstance(dims, Mapping) or "every_alignment_and_seed" not in dims:
            continue
        every = dims["every_alignment_and_seed"]
        out.append(
            f"{preset}: dimensions dominant in every alignment and seed: {', '.join(map(str, every))}."
            if every
            else f"{preset}: no dimension is dominant in every alignment and seed."
        )
    return out
