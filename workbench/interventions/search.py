"""Distributed Alignment Search over layers and positions, with the controls that make IIA meaningful.

For each (layer, position) a fresh rotated-space intervention (Boundless DAS by default, Wu et al.
2023; or low-rank DAS, Geiger et al. 2023) is trained on one counterfactual dataset and scored by
interchange intervention accuracy (IIA) on a held-out one. Controls: the same intervention with its
trained boundary but a random, untrained rotation; and positions that cannot carry the variable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.counterfactual import CounterfactualTensors
from workbench.hooks import HookKind, hook_name
from workbench.interventions.apply import InterventionSet
from workbench.interventions.evaluate import interchange_intervention_accuracy
from workbench.interventions.modules import (
    BoundlessRotatedSpaceIntervention,
    Intervention,
    LowRankRotatedSpaceIntervention,
)
from workbench.interventions.spec import InterventionSpec
from workbench.interventions.train import AlignmentConfig, TrainHistory, train_interventions

__all__ = ["DASFit", "DASMethod", "DASSweep", "das_sweep", "fit_das", "random_rotation_iia", "subspace_overlap"]

DASMethod = Literal["boundless", "low_rank"]
"""Boundless DAS (learns the subspace width) or low-rank DAS (a fixed rank)."""


@dataclass
class DASFit:
    """One trained alignment."""

    layer: int
    position: int
    interventions: InterventionSet
    history: TrainHistory
    iia: float
    """Held-out IIA (eval-mode, hard boundary)."""
    width: int
    """Rotated coordinates swapped (learned boundary, or the rank)."""

    @property
    def spec(self) -> InterventionSpec:
        """Where the fit's one intervention acts."""
        return next(iter(self.interventions))[0]

    @property
    def module(self) -> Intervention:
        """The fit's one trained intervention (``.subspace()`` gives the swapped subspace)."""
        return next(iter(self.interventions))[1]


@dataclass
class DASSweep:
    """IIA per layer and position, plus each fit's training history."""

    hook_kind: HookKind
    fits: list[DASFit] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Columns: layer, position, iia, width."""
        return pd.DataFrame(
            [{"layer": f.layer, "position": f.position, "iia": f.iia, "width": f.width} for f in self.fits]
        )

    def histories(self) -> pd.DataFrame:
        """Training histories of all fits, long format with layer and position columns."""
        frames = [f.history.to_frame().assign(layer=f.layer, position=f.position) for f in self.fits]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def best(self) -> DASFit:
        """The fit with the highest IIA (earliest layer, then position, on ties)."""
        return max(self.fits, key=lambda f: (f.iia, -f.layer, -f.position))


def _module(method: DASMethod, d: int, rank: int, seed: int) -> Intervention:
    if method == "boundless":
        return BoundlessRotatedSpaceIntervention(d, seed=seed)
    if method == "low_rank":
        return LowRankRotatedSpaceIntervention(d, rank, seed=seed)
    raise ValueError(f"unknown DAS method {method!r}: use 'boundless' or 'low_rank'")


def fit_das(
    model: TransformerBridge,
    train: CounterfactualTensors,
    test: CounterfactualTensors,
    layer: int,
    position: int,
    *,
    hook_kind: HookKind = "resid_post",
    method: DASMethod = "boundless",
    rank: int = 1,
    cfg: AlignmentConfig = AlignmentConfig(),
    progress: bool = False,
) -> DASFit:
    """Train one DAS intervention at ``hook_kind`` of ``layer``, at ``position`` of base and source."""
    spec = InterventionSpec(hook=hook_name(model, hook_kind, layer), positions=(position,), name="das")
    module = _module(method, model.cfg.d_model, rank, cfg.seed).to(model.cfg.device)
    interventions = InterventionSet([(spec, module)])
    history = train_interventions(model, interventions, train, cfg, progress=progress)
    width = module.width if isinstance(module, BoundlessRotatedSpaceIntervention) else rank
    return DASFit(
        layer, position, interventions, history, interchange_intervention_accuracy(model, interventions, test), width
    )


def das_sweep(
    model: TransformerBridge,
    train: CounterfactualTensors,
    test: CounterfactualTensors,
    layers: Sequence[int],
    positions: Sequence[int],
    *,
    hook_kind: HookKind = "resid_post",
    method: DASMethod = "boundless",
    rank: int = 1,
    cfg: AlignmentConfig = AlignmentConfig(),
    progress: bool = False,
) -> DASSweep:
    """:func:`fit_das` at every layer x position."""
    sweep = DASSweep(hook_kind)
    cells = list(itertools.product(layers, positions))
    for layer, position in tqdm(cells, desc="DAS sweep", disable=not progress):
        sweep.fits.append(
            fit_das(model, train, test, layer, position, hook_kind=hook_kind, method=method, rank=rank, cfg=cfg)
        )
    return sweep


def random_rotation_iia(
    model: TransformerBridge, fit: DASFit, test: CounterfactualTensors, *, seed: int = 12345
) -> float:
    """Control: IIA of ``fit``'s intervention (same place, same width) with a random untrained rotation."""
    spec, trained = fit.spec, fit.module
    control: Intervention
    if isinstance(trained, BoundlessRotatedSpaceIntervention):
        control = BoundlessRotatedSpaceIntervention(
            trained.d, init_width=float(trained.boundary.detach().clamp(0, 1)), seed=seed
        )
    elif isinstance(trained, LowRankRotatedSpaceIntervention):
        control = LowRankRotatedSpaceIntervention(trained.d, trained.rank, seed=seed)
    else:
        raise TypeError(f"a DAS fit trains a boundless or low-rank rotation, not {type(trained).__name__}")
    control = control.to(model.cfg.device).eval()
    return interchange_intervention_accuracy(model, InterventionSet([(spec, control)]), test)


def subspace_overlap(found: Tensor, truth: Tensor) -> float:
    """Fraction of the subspace spanned by ``truth``'s columns that lies inside the one spanned by ``found``'s.

    ``||Q_found^T Q_truth||_F^2 / rank(truth)`` with orthonormal bases ``Q`` (the mean squared cosine
    of the principal angles, counting ``rank(truth)`` of them): 1 when ``found`` contains ``truth``,
    0 when they are orthogonal, ``k / d`` on average for a random ``k``-dimensional ``found`` in ``R^d``.
    """
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"bases live in different spaces: {found.shape[0]} vs {truth.shape[0]} rows")
    if found.shape[1] == 0 or truth.shape[1] == 0:
        return 0.0
    q_found, q_truth = (torch.linalg.qr(m.detach().double())[0] for m in (found, truth))
    return float((q_found.T @ q_truth).pow(2).sum() / truth.shape[1])
