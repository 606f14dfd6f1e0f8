"""The Boundless DAS experiment's config: the price taggers searched, the tasks and the flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.config import Config, Count, Index, NonNegative, Positive
from workbench.interventions.price_tagger import PLAIN_TAGGER, QUICK_TAGGER, TAGGER

__all__ = ["PLAIN_TAGGER", "QUICK_TAGGER", "TAGGER", "TASKS", "BoundlessDASConfig"]


TASKS = {
    # positions: candidate positions of the sweep; irrelevant: a position that cannot carry the variable
    "price_tagging": {
        "variable": "left",
        "positions": (2, 31, 32, 33, 34, 35),
        "irrelevant": 2,
        "method": "boundless",
        "hook": "resid_post",
    },
    "ioi": {"variable": "io_first", "positions": (13,), "irrelevant": 2, "method": "low_rank", "hook": "resid_post"},
}


@dataclass(frozen=True)
class BoundlessDASConfig(Config):
    """Boundless DAS layer x position search with controls."""

    task: Literal["price_tagging", "ioi"] = "price_tagging"
    """price_tagging (small model trained here, with ground truth) or ioi (SmolLM2-135M-Instruct)."""
    variable: str = ""
    """Causal variable to align (default: left for price_tagging, io_first for ioi)."""
    planted: bool = True
    """price_tagging: search the tagger whose variables IIT planted at a known place (false: the plainly trained
    one)."""
    layer: Index | None = None
    """Only this layer (default: every layer for price_tagging; for ioi 18, 20, 22, where swapping the whole
    last-position residual starts to move the answer)."""
    position: Index | None = None
    """Only this position (default: the task's candidate positions)."""
    hook: str = ""
    """Hook kind intervened on (default: resid_post, where the price tagger's variables are planted)."""
    method: str = ""
    """boundless or low_rank (default: boundless for price_tagging; low_rank, cheaper, for ioi on SmolLM2)."""
    rank: Count = 1
    """Subspace dimension of low_rank DAS."""
    n_train: Count = 1024
    """Counterfactual training examples."""
    n_test: Count = 512
    """Held-out counterfactual examples for IIA."""
    steps: Count = 400
    """Training steps per (layer, position) (200 reach the IIA; the boundary needs 400 to shrink to the variable's
    dims)."""
    batch_size: Count = 64
    """Examples per step."""
    lr: Positive = 5e-3
    """Learning rate of the rotation (the boundary's is 1e-2, as in the paper)."""
    boundary_penalty: NonNegative = 0.1
    """Weight of the boundary size in the loss (favours small subspaces)."""
    seed: int = 0
    """Seed of data, rotations and batch order."""
    quick: bool = False
    """Tiny model (price tagging), few examples and steps: for tests."""
    out: str = "figures/boundless_das"
    """Output folder."""
