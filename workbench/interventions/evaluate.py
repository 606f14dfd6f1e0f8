"""Interchange intervention accuracy (IIA): how often the intervened model says what the causal model says.

IIA (Geiger et al. 2021; Wu et al. 2023) is the fraction of (base, source) pairs for which the
intervened network's top prediction equals the high-level causal model's counterfactual output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.counterfactual import CounterfactualTensors
from workbench.interventions.apply import InterventionSet, run_interventions

__all__ = ["interchange_intervention_accuracy", "intervened_predictions"]


def intervened_predictions(
    model: TransformerBridge,
    interventions: InterventionSet,
    data: CounterfactualTensors,
    *,
    batch_size: int = 128,
    candidates: Sequence[int] | None = None,
) -> Int[Tensor, " batch"]:
    """Top next-token prediction at the last position of each intervened base run.

    Args:
        candidates: if given, the argmax is taken over these token ids only (e.g. " Yes" and " No").
    """
    was_training = interventions.training
    interventions.eval()
    preds = []
    try:
        with torch.no_grad():
            for i in range(0, len(data), batch_size):
                batch = data.batch(slice(i, i + batch_size))
                logits = run_interventions(model, interventions, batch.base, batch.sources).logits[:, -1]
                if candidates is None:
                    preds.append(logits.argmax(-1))
                else:
                    ids = torch.tensor(list(candidates), device=logits.device)
                    preds.append(ids[logits[:, ids].argmax(-1)])
    finally:
        interventions.train(was_training)
    return torch.cat(preds)


def interchange_intervention_accuracy(
    model: TransformerBridge,
    interventions: InterventionSet,
    data: CounterfactualTensors,
    *,
    batch_size: int = 128,
    candidates: Sequence[int] | None = None,
) -> float:
    """Fraction of examples whose intervened top prediction is the counterfactual label (eval-mode masks)."""
    preds = intervened_predictions(model, interventions, data, batch_size=batch_size, candidates=candidates)
    return (preds == data.labels.to(preds.device)).float().mean().item()
