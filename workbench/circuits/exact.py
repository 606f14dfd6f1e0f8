"""Exact edge patching: the reference edge attribution estimates.

Patching one edge ``u -> v`` (Wang et al., 2022, *Interpretability in the Wild*, arXiv:2211.00593, path
patching; Conmy et al., 2023, ACDC, arXiv:2304.14997) gives ``v`` the input it would have with ``u``'s write
taken from the counterfactual run, and leaves every other input as it is: ``x_v + a_u(corrupt) -
a_u(clean)`` (``u`` lies upstream of ``v``, so its write in the patched run is the clean one). Everything
downstream of ``v`` is recomputed. One run per edge, stacked along the batch (``max_rows`` rows a forward).
The score is ``m(clean) - m(patched)``, the quantity EAP estimates, averaged over the prompts.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.circuits.attribute import EdgeScores
from workbench.circuits.graph import EdgeModel, Graph, edge_forward
from workbench.circuits.tasks import EdgeTask

__all__ = ["exact_scores"]


def _group(g: Graph, down: int) -> tuple[int, int | None]:
    """(first downstream index of ``down``'s hook, head index within it or ``None``)."""
    if down == g.down_logits:
        return down, None
    layer, offset = divmod(down, 3 * g.n_heads + 1)
    if offset == 3 * g.n_heads:
        return down, None
    first = g.down_qkv(layer, offset // g.n_heads).start
    return first, down - first


def _edge_offset(plan: dict[int, list[tuple[int, int | None, int]]], batch: int, delta: Tensor):
    """Offsets adding, in the rows of run ``r``, upstream ``u``'s write difference to one downstream input."""

    def offset(first: int, x: Tensor, writes: Tensor) -> Tensor | None:
        if first not in plan:
            return None
        out = torch.zeros_like(x)
        for r, head, u in plan[first]:
            rows = slice(r * batch, (r + 1) * batch)
            if head is None:
                out[rows] += delta[u]
            else:
                out[rows, :, head] += delta[u]
        return out

    return offset


@torch.no_grad()
def exact_scores(
    em: EdgeModel,
    task: EdgeTask,
    edges: Int[Tensor, "n 2"] | None = None,
    *,
    batch_size: int = 8,
    max_rows: int = 64,
    progress: bool = False,
) -> EdgeScores:
    """``m(clean) - m(edge patched)`` for each edge (``[n, 2]`` upstream/downstream indices; default all).

    Edges not asked for score 0.
    """
    g = em.graph
    edges = g.edge_index() if edges is None else torch.as_tensor(edges)
    if not bool(g.mask[edges[:, 0], edges[:, 1]].all()):
        raise ValueError("some (upstream, downstream) pairs are not edges of the graph: see Graph.edge_index()")
    em.check(task.clean[:1])
    total = torch.zeros(len(edges), dtype=torch.float64)
    for index in task.batches(batch_size):
        batch = index.stop - index.start
        metric_clean = task.metric(index)
        clean_logits, clean = edge_forward(em, task.clean[index], lambda f, x, w: None)
        _, corrupt = edge_forward(em, task.corrupt[index], lambda f, x, w: None)
        base = metric_clean(clean_logits).double()
        delta = corrupt - clean
        per = max(1, max_rows // batch)
        chunks = range(0, len(edges), per)
        for start in tqdm(chunks, desc="exact edges", disable=not progress):
            chunk = edges[start : start + per]
            plan: dict[int, list[tuple[int, int | None, int]]] = defaultdict(list)
            for r, (u, v) in enumerate(chunk.tolist()):
                first, head = _group(g, v)
                plan[first].append((r, head, u))

            tokens = task.clean[index].repeat(len(chunk), 1)
            logits, _ = edge_forward(em, tokens, _edge_offset(plan, batch, delta))
            patched = task.metric(index, len(chunk))(logits).double().view(len(chunk), batch)
            total[start : start + len(chunk)] += (base[None] - patched).sum(1)
    scores = torch.zeros(g.n_up, g.n_down)
    scores[edges[:, 0], edges[:, 1]] = (total / len(task)).float()
    return EdgeScores(g, scores, "exact", task.name)
