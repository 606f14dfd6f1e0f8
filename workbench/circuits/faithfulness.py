"""Circuits from edge scores, their faithfulness, and MIB's CPR and CMD.

A circuit is a set of edges. Its faithfulness (MIB, Mueller et al., 2025, arXiv:2504.13151;
hannamw/MIB-circuit-track ``evaluation.py``) is ``f = (m(C) - m(∅)) / (m(N) - m(∅))``: ``m(C)`` is the metric
with every edge *outside* the circuit patched from the counterfactual run (each downstream input gets the
counterfactual write of those upstream nodes instead of the current one), ``m(N)`` the full model (nothing
patched) and ``m(∅)`` the empty circuit (everything patched: the counterfactual run). Circuits are taken at
0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50 and 100% of the edges, by top-n (then pruned to the edges on a path from
the input to the logits) or greedily grown from the logits. CPR is the trapezoid area under ``f`` over the
edge fraction with edges ranked by signed score (higher is better, can exceed 1); CMD the trapezoid area
of ``|1 - f|`` with edges ranked by absolute score (lower is better).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.circuits.attribute import EdgeScores
from workbench.circuits.graph import EdgeModel, Graph, edge_forward
from workbench.circuits.tasks import EdgeTask

__all__ = [
    "PERCENTS",
    "Curve",
    "area",
    "circuit",
    "cmd",
    "cpr",
    "faithfulness_curve",
    "greedy",
    "mib_scores",
    "patched_metric",
    "prune",
    "top_n",
]

PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
"""MIB's circuit sizes, in percent of the edges."""

Circuit = Bool[Tensor, "n_up n_down"]


def top_n(graph: Graph, scores: Float[Tensor, "n_up n_down"], n: int, absolute: bool = False) -> Circuit:
    """The ``n`` edges of highest score (of highest ``|score|`` with ``absolute``)."""
    values = graph.flat(scores.abs() if absolute else scores)
    keep = values.topk(min(n, len(values))).indices
    index = graph.edge_index()[keep]
    out = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
    out[index[:, 0], index[:, 1]] = True
    return out


def prune(graph: Graph, edges: Circuit) -> Circuit:
    """The edges of ``edges`` on some path from the input to the logits through ``edges`` (an edge into a
    node cut off from the logits, or out of one cut off from the input, cannot carry the input to the logits)."""
    node = graph.down_node
    reach = torch.zeros(graph.n_up, dtype=torch.bool)  # components the input reaches through the circuit
    reach[0] = True
    for u in range(1, graph.n_up):
        reach[u] = bool((edges[:, node == u] & reach[:, None]).any())
    alive = torch.zeros(graph.n_up, dtype=torch.bool)  # components that reach the logits through the circuit
    for u in range(graph.n_up - 1, -1, -1):
        alive[u] = bool((edges[u] & _feeds(graph, alive)).any())
    return edges & reach[:, None] & _feeds(graph, alive)[None]


def _feeds(graph: Graph, alive: Tensor) -> Tensor:
    """Downstream nodes whose component reaches the logits (the logits themselves always)."""
    out = alive[graph.down_node.clamp_min(0)]
    out[graph.down_logits] = True
    return out


def greedy(graph: Graph, scores: Float[Tensor, "n_up n_down"], n: int, absolute: bool = False) -> Circuit:
    """Grow a circuit from the logits: repeatedly add the best edge into a node already in the circuit."""
    values = scores.abs() if absolute else scores
    node = graph.down_node.tolist()
    ins: list[list[int]] = [[] for _ in range(graph.n_up)]  # downstream indices of each upstream node's component
    for j, u in enumerate(node):
        if u >= 0:
            ins[u].append(j)
    out = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
    heap: list[tuple[float, int, int]] = []

    def open_(j: int) -> None:
        for u in range(graph.available(j)):
            heapq.heappush(heap, (-float(values[u, j]), u, j))

    open_(graph.down_logits)
    added: set[int] = set()
    while heap and int(out.sum()) < n:
        _, u, j = heapq.heappop(heap)
        out[u, j] = True
        if u > 0 and u not in added:
            added.add(u)
            for k in ins[u]:
                open_(k)
    return out


def circuit(
    graph: Graph, scores: Float[Tensor, "n_up n_down"], n: int, how: Literal["topn", "greedy"] = "topn", absolute=False
) -> Circuit:
    """A circuit of (at most) ``n`` edges: top-n then pruned, or greedy."""
    if how == "greedy":
        return greedy(graph, scores, n, absolute)
    return prune(graph, top_n(graph, scores, n, absolute))


def _circuit_offset(g: Graph, w: Tensor, corrupt: Tensor, batch: int):
    """Offsets giving each downstream input, in run ``r``, the counterfactual write of the upstream nodes
    ``w[r]`` marks (patched) instead of the current one."""
    r = len(w)

    def offset(first: int, x: Tensor, writes: Tensor) -> Tensor | None:
        span = g.n_heads if x.ndim == 4 else 1
        avail = g.available(first)
        ws = w[:, :avail, first : first + span]  # [r, avail, span]
        if not bool(ws.any()):
            return None
        current = writes[:avail].view(avail, r, batch, x.shape[1], -1)
        diff = corrupt[:avail, None] - current  # [avail, r, batch, pos, d]
        out = torch.einsum("rus,urbpd->rbpsd", ws, diff).reshape(r * batch, x.shape[1], span, -1)
        return out if x.ndim == 4 else out[:, :, 0]

    return offset


@torch.no_grad()
def patched_metric(
    em: EdgeModel,
    task: EdgeTask,
    circuits: Bool[Tensor, "n_circuits n_up n_down"],
    *,
    batch_size: int = 8,
    max_rows: int = 32,
) -> Float[Tensor, " n_circuits"]:
    """Mean metric with every edge outside each circuit (``[n_circuits, n_up, n_down]``) patched."""
    g = em.graph
    weights = (g.mask & ~circuits).float()  # 1 = patched
    total = torch.zeros(len(circuits), dtype=torch.float64)
    for index in task.batches(batch_size):
        batch = index.stop - index.start
        _, corrupt = edge_forward(em, task.corrupt[index], lambda f, x, w: None)
        per = max(1, max_rows // batch)
        for start in range(0, len(circuits), per):
            w = weights[start : start + per].to(corrupt.device)
            r = len(w)

            tokens = task.clean[index].repeat(r, 1)
            logits, _ = edge_forward(em, tokens, _circuit_offset(g, w, corrupt, batch))
            total[start : start + r] += task.metric(index, r)(logits).double().view(r, batch).sum(1).cpu()
    return (total / len(task)).float()


@dataclass(frozen=True)
class Curve:
    """Faithfulness of the circuits of one edge ranking at several sizes."""

    method: str
    """The scores' method."""
    task: str
    """The task."""
    absolute: bool
    """Edges ranked by ``|score|`` (CMD's ranking) or by signed score (CPR's)."""
    percents: tuple[float, ...]
    """Circuit sizes asked for, in percent of the edges."""
    n_edges: tuple[int, ...]
    """Edges in each circuit after pruning."""
    faithfulness: tuple[float, ...]
    """``(m(C) - m(∅)) / (m(N) - m(∅))`` per size."""
    m_full: float
    """``m(N)``: the model with nothing patched."""
    m_empty: float
    """``m(∅)``: every edge patched."""

    def to_frame(self) -> pd.DataFrame:
        """One row per size: ``percent``, ``n_edges``, ``faithfulness``, ``method``, ``task``, ``absolute``."""
        return pd.DataFrame(
            {
                "percent": self.percents,
                "n_edges": self.n_edges,
                "faithfulness": self.faithfulness,
                "method": self.method,
                "task": self.task,
                "absolute": self.absolute,
            }
        )


def faithfulness_curve(
    em: EdgeModel,
    task: EdgeTask,
    scores: EdgeScores,
    *,
    absolute: bool = False,
    how: Literal["topn", "greedy"] = "topn",
    percents: tuple[float, ...] = PERCENTS,
    batch_size: int = 8,
    max_rows: int = 32,
) -> Curve:
    """Faithfulness of the circuits ``scores`` gives at each size (one batched evaluation for all of them)."""
    g = em.graph
    sizes = [max(1, round(p / 100 * g.n_edges)) for p in percents]
    circuits = [circuit(g, scores.scores, n, how, absolute) for n in sizes]
    stack = torch.stack([*circuits, g.mask, torch.zeros_like(g.mask)])
    values = patched_metric(em, task, stack, batch_size=batch_size, max_rows=max_rows)
    m_full, m_empty = float(values[-2]), float(values[-1])
    if abs(m_full - m_empty) < 1e-6:
        raise ValueError(
            f"the full model and the empty circuit give the same metric ({m_full:.4g}) on {task.name!r}: "
            "faithfulness is undefined; use counterfactuals that change the answer"
        )
    f = ((values[:-2] - m_empty) / (m_full - m_empty)).tolist()
    n_edges = tuple(int(c.sum()) for c in circuits)
    return Curve(scores.method, task.name, absolute, tuple(percents), n_edges, tuple(f), m_full, m_empty)


def area(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Trapezoid area under ``y(x)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2).sum())


def cpr(curve: Curve) -> float:
    """MIB's circuit performance ratio: area under faithfulness over the edge fraction (signed ranking)."""
    return area(np.asarray(curve.percents) / 100, curve.faithfulness)


def cmd(curve: Curve) -> float:
    """MIB's circuit-model distance: area of ``|1 - faithfulness|`` over the edge fraction (absolute ranking)."""
    return area(np.asarray(curve.percents) / 100, np.abs(1 - np.asarray(curve.faithfulness)))


def mib_scores(em: EdgeModel, task: EdgeTask, scores: EdgeScores, **kwargs) -> tuple[float, float, Curve, Curve]:
    """``(CPR, CMD, signed curve, absolute curve)`` of one edge ranking (``kwargs`` as :func:`faithfulness_curve`)."""
    signed = faithfulness_curve(em, task, scores, absolute=False, **kwargs)
    absolute = faithfulness_curve(em, task, scores, absolute=True, **kwargs)
    return cpr(signed), cmd(absolute), signed, absolute
