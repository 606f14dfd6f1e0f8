"""Compose the studies (weights, activations, DLA, ablations) and write the outputs."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from experiments.common import write_outputs
from experiments.fields import with_quick
from experiments.rw_functionalities.attributes import study_attributes
from experiments.rw_functionalities.config import RWConfig
from experiments.rw_functionalities.studies import (
    Size,
    study_ablation,
    study_activations,
    study_dla,
    study_weights,
)
from workbench.models import load_model

__all__ = ["gated_model", "main"]


def gated_model(cfg: RWConfig) -> TransformerBridge:
    """The bridge of ``cfg.model``; the RW classes need a gated MLP."""
    model = load_model(cfg.model)
    if not getattr(model.cfg, "gated_mlp", False):
        raise ValueError(
            f"{cfg.model} has a non-gated MLP: the RW classes need w_gate; "
            "weight_cosines/classify still give the 3 vanilla classes from cos(w_in, w_out) in the library"
        )
    return model


def main(cfg: RWConfig) -> dict:
    """Run the study and write figures, tables and ``summary.json`` under ``cfg.out``.

    The config is checked first (:meth:`~experiments.fields.ExperimentConfig.preflight`), before the model loads.
    """
    cfg = with_quick(cfg).preflight()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    size = Size.of(cfg)
    model = gated_model(cfg)
    weights = study_weights(model, cfg, size)
    t_weights = time.perf_counter() - t0
    activations = study_activations(model, cfg, size, weights.classes)
    dla = study_dla(model, cfg, weights.classes)
    ablation = study_ablation(model, cfg, size, weights.classes, activations)
    attributes = study_attributes(model, cfg, ablation.sets, weights.classes)
    parts = (weights, activations, dla, ablation, attributes)
    summary = {k: v for part in parts for k, v in part.summary().items()}
    summary["seconds"] = {"weights": round(t_weights, 1), "total": round(time.perf_counter() - t0, 1)}
    figures = {k: v for part in parts for k, v in part.figures().items()}
    tables = {k: v for part in parts for k, v in part.tables().items()}
    key = "class_fractions" if "class_fractions" in figures else None
    write_outputs(
        Path(cfg.out),
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=cfg.png,
        key_figure=key,
    )
    return summary
