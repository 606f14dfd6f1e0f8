"""What each realignment changed, in words: the diffing read-outs (:func:`workbench.diffing.diff_readout`) of the
IRM-injected base, the RL model and the supervised model against the base, each scored on whether it names the
target every one of them was trained towards (negative sentiment), or something else (a topic, positive sentiment).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from experiments.realignments.config import RealignmentsConfig
from experiments.realignments.measures import Realigned
from workbench.diffing import DiffReadout, all_targets, diff_readout
from workbench.diffing.organisms import unrelated_texts
from workbench.diffing.score import METHODS, readout_names

__all__ = ["TARGET", "diffing_summary", "diffing_tables", "read_realignments"]

TARGET = "negative"
"""What every realignment here was trained towards: the known answer its read-outs are scored on."""


def read_realignments(
    cfg: RealignmentsConfig, base: TransformerBridge, models: Sequence[Realigned]
) -> list[DiffReadout]:
    """One read-out per realignment, on the same unrelated texts (the standard library's docstrings)."""
    readout = cfg.readout()
    texts = unrelated_texts(max(readout.n_texts, readout.cc_texts), seed=cfg.seed)
    return [diff_readout(base, r.side, texts, readout, name=r.name) for r in models]


def diffing_summary(readouts: Sequence[DiffReadout]) -> dict:
    """Per realignment: the layers read, its relative change, the read-outs in short, and per method what it names
    (``names``) and whether that includes the ``target`` (``names_target``)."""
    targets = all_targets()
    out = {}
    for read in readouts:
        names = readout_names(read, targets)
        out[read.name] = {
            **read.table_row(),
            "layer": read.layer,
            "early_layer": read.early_layer,
            "relative_norm": read.relative_norm,
            "latent_classes": read.latent_classes,
            "artefacts": read.n_artefacts,
            "target": TARGET,
            "names": names,
            "names_target": {m: TARGET in names[m] for m in METHODS},
            "seconds": read.seconds,
        }
    return out


def diffing_tables(readouts: Sequence[DiffReadout], summary: dict) -> dict[str, pd.DataFrame]:
    """``diffing``: one row per realignment (the read-outs in short, the methods that name the target);
    ``diffing_readouts``: every read-out item."""
    rows = [
        read.table_row()
        | {"names_target": ", ".join(m for m, yes in summary[read.name]["names_target"].items() if yes) or "none"}
        for read in readouts
    ]
    return {"diffing": pd.DataFrame(rows), "diffing_readouts": pd.concat([r.to_frame() for r in readouts])}
