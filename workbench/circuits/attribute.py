"""Edge attribution: EAP and EAP-IG scores of every edge at once.

EAP (Syed, Rager & Conmy, 2023, *Attribution Patching Outperforms Automated Circuit Discovery*,
arXiv:2310.10348) scores an edge ``u -> v`` by the first-order estimate of patching it from the
counterfactual run: ``(a_u(corrupt) - a_u(clean)) · ∂m/∂x_v`` at the clean run, where ``a_u`` is ``u``'s
write and ``x_v`` ``v``'s input. EAP-IG (Hanna, Pezzelle & Belinkov, 2024, arXiv:2403.17806) averages
the gradient over ``steps`` points on the straight line from the counterfactual's input embedding to the
clean one (``k / steps`` of the way, ``k = 1..steps``; integrated gradients over the inputs, as MIB runs
it with 5 steps); with one step it is EAP.

Scores are signed as EAP-IG signs them (its metric is a loss, minus the logit difference): a positive
score is an estimated *drop* of the metric when the edge is patched, so edges that carry the behaviour
score high. Values are means over the task's prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.circuits.graph import EdgeModel, Graph, edge_forward
from workbench.circuits.tasks import EdgeTask

__all__ = ["EdgeScores", "attribute"]


@dataclass(frozen=True)
class EdgeScores:
    """A score per edge (``[n_up, n_down]``, zero off the graph) and how it was made."""

    graph: Graph
    """The graph."""
    scores: Float[Tensor, "n_up n_down"]
    """Estimated drop of the metric when the edge is patched from the counterfactual."""
    method: str
    """``eap``, ``eap-ig``, ``exact`` or ``random``."""
    task: str
    """The task's name."""

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: ``upstream``, ``downstream``, ``score``, ``method``, ``task``."""
        df = self.graph.to_frame(self.scores)
        df["method"], df["task"] = self.method, self.task
        return df

    def flat(self) -> Float[Tensor, " n_edges"]:
        """Scores in the order of :meth:`Graph.edge_index`."""
        return self.graph.flat(self.scores)


def _interpolate(start: Tensor, end: Tensor, t: float):
    """An input embedding ``t`` of the way from ``start`` (counterfactual) to ``end`` (clean)."""
    return lambda x: start + t * (end - start)


def _grads(em: EdgeModel, task: EdgeTask, index: slice, embed_at, stores: list[tuple[int, Tensor]]) -> Tensor:
    """Sum over the batch of the metric, with a zero leaf added at every downstream input (kept in ``stores``)."""

    def leaf(first: int, x: Tensor, writes: Tensor) -> Tensor:
        z = torch.zeros_like(x, requires_grad=True)
        stores.append((first, z))
        return z

    with torch.enable_grad():
        logits, _ = edge_forward(em, task.clean[index], leaf, embed=embed_at)
        return task.metric(index)(logits).sum()


def attribute(
    em: EdgeModel,
    task: EdgeTask,
    method: Literal["eap", "eap-ig"] = "eap-ig",
    *,
    steps: int = 5,
    batch_size: int = 8,
) -> EdgeScores:
    """EAP or EAP-IG scores of every edge of ``em``'s graph on ``task``.

    Args:
        em: the prepared model (:func:`~workbench.circuits.graph.edge_model`).
        task: clean / counterfactual prompts and answers.
        method: ``"eap"`` (gradient at the clean run) or ``"eap-ig"`` (integrated gradients over inputs).
        steps: integration steps of EAP-IG (MIB uses 5); ignored by EAP.
        batch_size: prompts per forward/backward.
    """
    if method not in ("eap", "eap-ig"):
        raise ValueError(f"method must be 'eap' or 'eap-ig'; got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    steps = 1 if method == "eap" else steps
    g = em.graph
    total = torch.zeros(g.n_up, g.n_down, dtype=torch.float64)
    em.check(task.clean[:1])
    for index in task.batches(batch_size):
        with torch.no_grad():
            _, corrupt = edge_forward(em, task.corrupt[index], lambda f, x, w: None)
            _, clean = edge_forward(em, task.clean[index], lambda f, x, w: None)
        delta = (corrupt - clean).flatten(1)  # [n_up, batch*pos*d_model]
        grad = torch.zeros(g.n_down, *clean.shape[1:])
        for k in range(1, steps + 1):
            stores: list[tuple[int, Tensor]] = []
            value = _grads(em, task, index, _interpolate(corrupt[0], clean[0], k / steps), stores)
            for (first, _), gz in zip(stores, torch.autograd.grad(value, [z for _, z in stores])):
                if gz.ndim == 4:  # [batch pos head d_model]
                    grad[first : first + gz.shape[2]] += gz.permute(2, 0, 1, 3)
                else:
                    grad[first] += gz
        total -= (delta @ grad.flatten(1).T).double() / steps
    scores = (total / len(task)).float() * g.mask
    return EdgeScores(g, scores, method, task.name)
