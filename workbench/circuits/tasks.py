"""Edge-circuit tasks: clean and counterfactual (corrupted) prompts with the answers a logit difference reads.

A task as MIB's circuit track poses it (Mueller et al., 2025, arXiv:2504.13151): each clean prompt has a
counterfactual of the same token length that flips the answer; the metric is ``logit(answer) - logit(other)``
at the last position of the clean prompt, and edges are patched from the counterfactual run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.counterfactual import ioi_counterfactuals, tokenize_fixed
from workbench.data.prompts import answer_token
from workbench.metrics import LogitDiff

__all__ = ["EdgeTask", "ioi_task", "pair_task"]


@dataclass(frozen=True)
class EdgeTask:
    """Clean prompts, their counterfactuals and answers ``(answer, other)`` per prompt."""

    name: str
    """Label for tables."""
    clean: Int[Tensor, "batch pos"]
    """Clean prompts."""
    corrupt: Int[Tensor, "batch pos"]
    """Counterfactual prompts (same shape)."""
    answers: Int[Tensor, "batch 2"]
    """Token ids ``(answer, other)`` per prompt: the clean answer and the counterfactual's."""
    pos: int = -1
    """Position the metric reads."""

    def __post_init__(self):
        if self.clean.shape != self.corrupt.shape:
            raise ValueError(
                f"clean {tuple(self.clean.shape)} and corrupt {tuple(self.corrupt.shape)} prompts differ in shape: "
                "positions must line up; use counterfactuals of the same token length"
            )
        if self.answers.shape != (self.clean.shape[0], 2):
            want = (self.clean.shape[0], 2)
            raise ValueError(f"answers must be [batch, 2] = {want}; got {tuple(self.answers.shape)}")

    def __len__(self) -> int:
        return self.clean.shape[0]

    def metric(self, index: slice, repeats: int = 1) -> LogitDiff:
        """Per-prompt logit difference of the prompts at ``index``, stacked ``repeats`` times along the batch."""
        return LogitDiff(self.answers[index].repeat(repeats, 1), self.pos, per_prompt=True)

    def subset(self, index: slice) -> EdgeTask:
        """The prompts at ``index`` as a task of their own (same name and metric position)."""
        return EdgeTask(self.name, self.clean[index], self.corrupt[index], self.answers[index], self.pos)

    def batches(self, size: int) -> Iterator[slice]:
        """Slices of at most ``size`` prompts covering the task."""
        return (slice(i, min(i + size, len(self))) for i in range(0, len(self), size))


def ioi_task(model: TransformerBridge, n: int = 32, seed: int = 0) -> EdgeTask:
    """Indirect-object identification (:func:`~workbench.data.counterfactual.ioi_counterfactuals`), every
    counterfactual flipping the answer."""
    data = ioi_counterfactuals(n, seed=seed, changed_fraction=1.0)
    tok = model.tokenizer
    ids = data.tokenize(tok)
    answers = torch.stack([ids.base_labels, ids.labels], 1)
    return EdgeTask("ioi", ids.base, ids.sources[0], answers)


def pair_task(
    model: TransformerBridge,
    name: str,
    clean: Sequence[str],
    corrupt: Sequence[str],
    answers: Sequence[tuple[str, str]],
) -> EdgeTask:
    """A task from prompt texts and ``(answer, other)`` words (single tokens; prompts of one token length)."""
    tok = model.tokenizer
    ids = torch.tensor([[answer_token(model, a), answer_token(model, b)] for a, b in answers])
    return EdgeTask(name, tokenize_fixed(tok, clean), tokenize_fixed(tok, corrupt), ids)
