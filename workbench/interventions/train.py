"""Training trainable interventions with the model frozen (Distributed Alignment Search).

The loss is the cross-entropy of the *counterfactual* label at the last position of the intervened
base run: an intervention that makes the network behave as the causal model predicts under the same
interchange is an alignment (Geiger et al. 2023, DAS). For Boundless DAS (Wu et al. 2023), the
boundary has its own learning rate (paper: 1e-2 vs 1e-3 for the rotation), a penalty on its size
favours small subspaces, and the mask temperature is annealed from ``temperature_start`` to
``temperature_end`` (geometrically) over training. The loop is :func:`workbench.training.train_loop`
(seeded batch order, data-parallel under ``accelerate launch``); this module supplies the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config, Count, NonNegative, Positive
from workbench.data.counterfactual import CounterfactualTensors
from workbench.interventions.apply import InterventionSet, run_interventions, source_activations
from workbench.interventions.modules import BoundlessRotatedSpaceIntervention
from workbench.models import frozen
from workbench.training import Batch, LoopConfig, Term, TrainResult, train_loop

__all__ = ["AlignmentConfig", "TrainHistory", "train_interventions"]


@dataclass(frozen=True)
class AlignmentConfig(Config):
    """How to train interventions on a counterfactual dataset."""

    steps: Count = 200
    """Optimiser steps (batches cycle through the shuffled dataset)."""
    batch_size: Count = 64
    """Examples per step."""
    lr: Positive = 1e-3
    """Learning rate of rotations and other intervention weights."""
    boundary_lr: Positive = 1e-2
    """Learning rate of Boundless DAS boundaries."""
    boundary_penalty: NonNegative = 1.0
    """Weight of the sum of boundaries (fractions of d) added to the loss."""
    temperature_start: Positive = 50.0
    """Initial temperature of the boundary mask (in units of rotated coordinates)."""
    temperature_end: Positive = 0.1
    """Final temperature of the boundary mask."""
    seed: int = 0
    """Seed of the batch order."""


@dataclass
class TrainHistory:
    """Per-step training record (a view of the loop's history)."""

    loss: list[float] = field(default_factory=list)
    """Counterfactual cross-entropy."""
    temperature: list[float] = field(default_factory=list)
    widths: dict[str, list[float]] = field(default_factory=dict)
    """Per boundless intervention, the soft width ``boundary * d`` (in rotated coordinates)."""

    @classmethod
    def from_result(cls, result: TrainResult, names: list[str]) -> TrainHistory:
        """The record of a :func:`workbench.training.train_loop` run; ``names`` are the boundless interventions."""
        widths = {name: result.column(f"width:{name}") for name in names}
        return cls(result.column("cross_entropy"), result.column("temperature"), widths)

    def to_frame(self) -> pd.DataFrame:
        """Long format: step, quantity (``loss``, ``temperature``, ``width:<name>``), value."""
        rows = [("loss", self.loss), ("temperature", self.temperature)]
        rows += [(f"width:{name}", values) for name, values in self.widths.items()]
        return pd.DataFrame(
            [{"step": i, "quantity": q, "value": v} for q, values in rows for i, v in enumerate(values)]
        )


def train_interventions(
    model: TransformerBridge,
    interventions: InterventionSet,
    data: CounterfactualTensors,
    cfg: AlignmentConfig = AlignmentConfig(),
    *,
    progress: bool = False,
) -> TrainHistory:
    """Fit the trainable interventions so the intervened model outputs the counterfactual labels.

    Args:
        model: the bridge; frozen during training (weights and flags restored afterwards).
        interventions: the interventions; the trainable ones are updated in place and left in eval mode.
        data: tokenised counterfactual examples (one source tensor per source group).
        cfg: optimiser, boundary and temperature settings.
        progress: show a progress bar.

    Returns:
        Loss, temperature and boundary widths per step.
    """
    boundless = {s.name: m for s, m in interventions if isinstance(m, BoundlessRotatedSpaceIntervention)}
    boundaries = [m.boundary for m in boundless.values()]
    others = [p for p in interventions.parameters() if all(p is not b for b in boundaries)]
    if not others and not boundaries:
        raise ValueError("these interventions have no trainable weights; use rotated, low_rank or boundless modules")
    groups = [
        g for g in ({"params": others, "lr": cfg.lr}, {"params": boundaries, "lr": cfg.boundary_lr}) if g["params"]
    ]
    ratio = (cfg.temperature_end / cfg.temperature_start) ** (1 / max(1, cfg.steps - 1))

    def temperature(step: int) -> float:
        return cfg.temperature_start * ratio ** (step - 1)

    def logged(step: int) -> dict[str, float]:
        return {"temperature": temperature(step)} | {
            f"width:{name}": m.boundary.clamp(0, 1).item() * m.d for name, m in boundless.items()
        }

    try:
        with frozen(model):
            cached = source_activations(model, interventions, data.sources, batch_size=cfg.batch_size)
            step = partial(_step, model, interventions, data, cached, cfg, boundless, temperature)
            loop = LoopConfig(cfg.steps, seed=cfg.seed, desc="DAS")
            result = train_loop(
                interventions, torch.optim.Adam(groups), step, loop, log_extra=logged, progress=progress
            )
    finally:
        interventions.eval()
    return TrainHistory.from_result(result, list(boundless))


def _step(
    model: TransformerBridge, interventions, data, cached, cfg, boundless, temperature, batch: Batch
) -> dict[str, Term]:
    """One micro-batch: counterfactual cross-entropy at the last position, and the boundary penalty."""
    for m in boundless.values():
        m.temperature.fill_(temperature(batch.step))
    index = torch.tensor(batch.indices(len(data), cfg.batch_size))
    acts = {key: value[index] for key, value in cached.items()}
    part = data.batch(index)
    logits = run_interventions(model, interventions, part.base, source_acts=acts).logits[:, -1]
    terms = {"cross_entropy": Term(torch.nn.functional.cross_entropy(logits, part.labels, reduction="sum"), len(index))}
    if boundless:
        penalty = sum((m.boundary.clamp(0, 1) for m in boundless.values()), torch.tensor(0.0))
        terms["boundary"] = Term(penalty, 1, cfg.boundary_penalty)
    return terms
