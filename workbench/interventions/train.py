"""Training trainable interventions with the model frozen (Distributed Alignment Search).

The loss is the cross-entropy of the *counterfactual* label at the last position of the intervened
base run: an intervention that makes the network behave as the causal model predicts under the same
interchange is an alignment (Geiger et al. 2023, DAS). For Boundless DAS (Wu et al. 2023), the
boundary has its own learning rate (paper: 1e-2 vs 1e-3 for the rotation), a penalty on its size
favours small subspaces, and the mask temperature is annealed from ``temperature_start`` to
``temperature_end`` (geometrically) over training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config
from workbench.data.counterfactual import CounterfactualTensors
from workbench.interventions.apply import InterventionSet, run_interventions, source_activations
from workbench.interventions.modules import BoundlessRotatedSpaceIntervention
from workbench.models import frozen

__all__ = ["AlignmentConfig", "TrainHistory", "train_interventions"]


@dataclass(frozen=True)
class AlignmentConfig(Config):
    """How to train interventions on a counterfactual dataset."""

    steps: int = 200
    """Optimiser steps (batches cycle through the shuffled dataset)."""
    batch_size: int = 64
    """Examples per step."""
    lr: float = 1e-3
    """Learning rate of rotations and other intervention weights."""
    boundary_lr: float = 1e-2
    """Learning rate of Boundless DAS boundaries."""
    boundary_penalty: float = 1.0
    """Weight of the sum of boundaries (fractions of d) added to the loss."""
    temperature_start: float = 50.0
    """Initial temperature of the boundary mask (in units of rotated coordinates)."""
    temperature_end: float = 0.1
    """Final temperature of the boundary mask."""
    seed: int = 0
    """Seed of the batch order."""


@dataclass
class TrainHistory:
    """Per-step training record."""

    loss: list[float] = field(default_factory=list)
    """Counterfactual cross-entropy."""
    temperature: list[float] = field(default_factory=list)
    widths: dict[str, list[float]] = field(default_factory=dict)
    """Per boundless intervention, the soft width ``boundary * d`` (in rotated coordinates)."""

    def to_frame(self) -> pd.DataFrame:
        """Long format: step, quantity (``loss``, ``temperature``, ``width:<name>``), value."""
        rows = [("loss", self.loss), ("temperature", self.temperature)]
        rows += [(f"width:{name}", values) for name, values in self.widths.items()]
        return pd.DataFrame(
            [{"step": i, "quantity": q, "value": v} for q, values in rows for i, v in enumerate(values)]
        )


def _batches(n: int, size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < size:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        yield torch.tensor(order[:size])
        del order[:size]


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
    opt = torch.optim.Adam(groups)
    ratio = (cfg.temperature_end / cfg.temperature_start) ** (1 / max(1, cfg.steps - 1))
    history = TrainHistory(widths={name: [] for name in boundless})
    interventions.train()
    try:
        with frozen(model):
            cached = source_activations(model, interventions, data.sources, batch_size=cfg.batch_size)
            for step, index in enumerate(
                tqdm(
                    _batches(len(data), cfg.batch_size, cfg.steps, cfg.seed),
                    total=cfg.steps,
                    desc="DAS",
                    disable=not progress,
                )
            ):
                temperature = cfg.temperature_start * ratio**step
                for m in boundless.values():
                    m.temperature.fill_(temperature)
                batch = data.batch(index)
                acts = {key: value[index] for key, value in cached.items()}
                logits = run_interventions(model, interventions, batch.base, source_acts=acts).logits[:, -1]
                loss = torch.nn.functional.cross_entropy(logits, batch.labels)
                total = loss + cfg.boundary_penalty * sum((b.clamp(0, 1) for b in boundaries), torch.tensor(0.0))
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                history.loss.append(loss.item())
                history.temperature.append(temperature)
                for name, m in boundless.items():
                    history.widths[name].append(m.boundary.clamp(0, 1).item() * m.d)
    finally:
        interventions.eval()
    return history
