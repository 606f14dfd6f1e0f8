"""Circuit diffs: the same task's circuit in two models (base vs tuned), edge by edge.

Both models must share the architecture (the same graph). Each model's circuit is taken from its own edge
scores at the same size (top-n, pruned, as :func:`~workbench.circuits.faithfulness.circuit`); an edge is
*kept* when it is in both, *gained* when only the tuned model's circuit has it, *lost* when only the base's.
Scores of both models are reported for every edge in either circuit, so a gained edge can be told apart from
one that merely crossed the threshold (its base score just below the cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from workbench.circuits.attribute import EdgeScores
from workbench.circuits.faithfulness import circuit

__all__ = ["CircuitDiff", "circuit_diff"]


@dataclass(frozen=True)
class CircuitDiff:
    """Two circuits of one task and their edges' scores."""

    base: EdgeScores
    """The base model's scores."""
    tuned: EdgeScores
    """The tuned model's scores."""
    base_circuit: Tensor
    """``[n_up, n_down]`` booleans."""
    tuned_circuit: Tensor
    """``[n_up, n_down]`` booleans."""

    @property
    def jaccard(self) -> float:
        """Edges in both circuits over edges in either."""
        union = (self.base_circuit | self.tuned_circuit).sum()
        return float((self.base_circuit & self.tuned_circuit).sum() / union) if union else 1.0

    def counts(self) -> dict[str, int | float]:
        """Edges kept, gained and lost, circuit sizes, Jaccard index."""
        b, t = self.base_circuit, self.tuned_circuit
        return {
            "base_edges": int(b.sum()),
            "tuned_edges": int(t.sum()),
            "kept": int((b & t).sum()),
            "gained": int((t & ~b).sum()),
            "lost": int((b & ~t).sum()),
            "jaccard": self.jaccard,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per edge in either circuit: ``upstream``, ``downstream``, ``status``, both scores, change."""
        g = self.base.graph
        either = self.base_circuit | self.tuned_circuit
        index = either.nonzero()
        names = {(True, True): "kept", (False, True): "gained", (True, False): "lost"}
        status = [names[bool(self.base_circuit[u, v]), bool(self.tuned_circuit[u, v])] for u, v in index.tolist()]
        df = pd.DataFrame(
            {
                "upstream": [g.up_names[u] for u in index[:, 0].tolist()],
                "downstream": [g.down_names[v] for v in index[:, 1].tolist()],
                "status": status,
                "base_score": self.base.scores[index[:, 0], index[:, 1]].tolist(),
                "tuned_score": self.tuned.scores[index[:, 0], index[:, 1]].tolist(),
            }
        )
        df["change"] = df["tuned_score"] - df["base_score"]
        return df.sort_values("change", key=abs, ascending=False, ignore_index=True)


def circuit_diff(base: EdgeScores, tuned: EdgeScores, n: int, *, absolute: bool = False) -> CircuitDiff:
    """The circuits of ``n`` edges (top-n, pruned) of both models and how they differ."""
    if base.graph != tuned.graph:
        raise ValueError(f"the models' graphs differ ({base.graph} vs {tuned.graph}): diff models of one architecture")
    if base.task != tuned.task:
        raise ValueError(f"scores are for different tasks ({base.task!r} vs {tuned.task!r}): score both on one task")
    g = base.graph
    return CircuitDiff(
        base, tuned, circuit(g, base.scores, n, absolute=absolute), circuit(g, tuned.scores, n, absolute=absolute)
    )
