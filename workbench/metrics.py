"""Metrics on logits for patching and model diffs: logit difference, normalised patching metric, KL.

* Logit difference between an answer and an alternative token (Wang et al., 2022, *Interpretability
  in the Wild*, arXiv:2211.00593), per prompt or averaged.
* The normalised patching metric ``(patched - baseline) / (reference - baseline)``: 0 means the
  patch did nothing (the unpatched run being patched), 1 means it fully restored the run the
  activations came from (Heimersheim & Nanda, 2024, *How to use and interpret activation
  patching*, arXiv:2404.15255).
* KL divergence ``KL(reference || model)`` of the next-token distributions at one position.
* Interchange intervention accuracy (Geiger et al., 2021; Wu et al., 2023) runs the model with
  interventions, so it lives above this module, in :mod:`workbench.interventions.evaluate`.

Metric objects (:class:`LogitDiff`, :class:`KLDivergence`, :class:`Normalized`) are callables on
``[batch pos d_vocab]`` logits, as :mod:`transformer_lens.patching` expects; they also declare the
``positions`` they read and evaluate ``on_positions(logits at those positions)``, which lets the
batched patching engine unembed only those positions; a logit difference also declares the
``vocab`` (token ids) it reads and evaluates ``on_vocab(logits of those tokens)``, so the engine
computes two logits per row instead of the whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "KLDivergence",
    "LogitDiff",
    "Metric",
    "Normalized",
    "PositionedMetric",
    "VocabMetric",
    "kl_divergence",
    "logit_diff",
    "normalized",
]


@runtime_checkable
class Metric(Protocol):
    """The metric contract: logits ``[batch pos d_vocab]`` -> a scalar (or per-prompt values)."""

    def __call__(self, logits: Tensor, /) -> Tensor: ...


@runtime_checkable
class PositionedMetric(Metric, Protocol):
    """A metric that says which positions it reads, so the patching engine unembeds only those."""

    @property
    def positions(self) -> tuple[int, ...] | None:
        """Positions of the logits read (``None``: all, then only ``__call__`` is used)."""

    def on_positions(self, logits: Tensor, /) -> Tensor:
        """The metric from the logits at :attr:`positions` only (``[batch len(positions) d_vocab]``)."""


@runtime_checkable
class VocabMetric(PositionedMetric, Protocol):
    """A positioned metric that also says which token ids' logits it reads, so the engine unembeds only those."""

    @property
    def vocab(self) -> Tensor | None:
        """Token ids whose logits are read, sorted (``None``: the whole vocabulary, then ``on_positions`` is used)."""

    def on_vocab(self, logits: Tensor, /) -> Tensor:
        """The metric from the logits at :attr:`positions` of the tokens :attr:`vocab` only (``[batch n vocab]``)."""


def _answers(answers) -> Int[Tensor, "batch 2"]:
    answers = torch.as_tensor(answers)
    if answers.ndim == 1 and answers.shape[0] == 2:
        answers = answers[None]
    if answers.ndim != 2 or answers.shape[1] != 2:
        raise ValueError(
            f"answers must be [batch, 2] token ids (answer, other) per prompt; got shape {tuple(answers.shape)}"
        )
    return answers.long()


class LogitDiff:
    """``logit[answer] - logit[other]`` at position ``pos``, averaged over the batch (or per prompt)."""

    def __init__(self, answers: Tensor | Sequence[Sequence[int]], pos: int = -1, per_prompt: bool = False):
        """``answers``: ``[batch, 2]`` token ids ``(answer, other)`` per prompt (one pair alone: ``[2]``)."""
        self.answers = _answers(answers)
        self.pos = pos
        self.per_prompt = per_prompt
        self._vocab, self._columns = torch.unique(self.answers, return_inverse=True)

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions of the logits this metric reads."""
        return (self.pos,)

    @property
    def vocab(self) -> Tensor:
        """The answer token ids, sorted and unique: the only logits this metric reads."""
        return self._vocab

    def on_positions(self, logits: Float[Tensor, "batch n d_vocab"]) -> Tensor:
        """The metric from the logits at :attr:`positions` only."""
        return self._diff(logits, self.answers)

    def on_vocab(self, logits: Float[Tensor, "batch n n_vocab"]) -> Tensor:
        """The metric from the logits at :attr:`positions` of the tokens :attr:`vocab` only."""
        return self._diff(logits, self._columns)

    def _diff(self, logits: Tensor, columns: Tensor) -> Tensor:
        if logits.shape[0] != columns.shape[0]:
            raise ValueError(
                f"logits have batch {logits.shape[0]} but there are {columns.shape[0]} answer pairs: "
                "one pair per prompt"
            )
        last = logits[:, 0]
        columns = columns.to(last.device)
        diff = last.gather(-1, columns[:, :1])[:, 0] - last.gather(-1, columns[:, 1:])[:, 0]
        return diff if self.per_prompt else diff.mean()

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        return self.on_positions(logits[:, [self.pos]])


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], answers: Int[Tensor, "batch 2"], pos: int = -1, per_prompt: bool = False
) -> Tensor:
    """Logit difference ``logit[answer] - logit[other]`` at ``pos`` (mean over the batch unless ``per_prompt``)."""
    return LogitDiff(answers, pos, per_prompt)(logits)


def normalized(value: Tensor | float, baseline: Tensor | float, reference: Tensor | float) -> Tensor:
    """``(value - baseline) / (reference - baseline)``: 0 = unpatched run, 1 = the run the activations came from."""
    value, baseline, reference = (torch.as_tensor(v, dtype=torch.float32) for v in (value, baseline, reference))
    gap = reference - baseline
    if torch.any(gap.abs() < 1e-8):
        raise ValueError(
            f"reference ({reference.tolist()}) equals baseline ({baseline.tolist()}): "
            "the normalised metric is undefined; choose runs whose metric differs"
        )
    return (value - baseline) / gap


class Normalized:
    """Wrap a metric as ``(metric - baseline) / (reference - baseline)``."""

    def __init__(self, metric: Metric, baseline: float, reference: float):
        normalized(0.0, baseline, reference)  # validates the gap
        self.metric, self.baseline, self.reference = metric, float(baseline), float(reference)

    @property
    def positions(self) -> tuple[int, ...] | None:
        """The positions the wrapped metric reads (``None`` if it does not say)."""
        return self.metric.positions if isinstance(self.metric, PositionedMetric) else None

    def on_positions(self, logits: Tensor) -> Tensor:
        """The normalised metric from the logits at :attr:`positions` only."""
        if not isinstance(self.metric, PositionedMetric):
            raise TypeError(f"{type(self.metric).__name__} reads every position: call this metric on full logits")
        return normalized(self.metric.on_positions(logits), self.baseline, self.reference)

    @property
    def vocab(self) -> Tensor | None:
        """The token ids the wrapped metric reads (``None`` if it does not say)."""
        return self.metric.vocab if isinstance(self.metric, VocabMetric) else None

    def on_vocab(self, logits: Tensor) -> Tensor:
        """The normalised metric from the logits at :attr:`positions` of the tokens :attr:`vocab` only."""
        if not isinstance(self.metric, VocabMetric):
            raise TypeError(f"{type(self.metric).__name__} reads the whole vocabulary: call on_positions instead")
        return normalized(self.metric.on_vocab(logits), self.baseline, self.reference)

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        return normalized(self.metric(logits), self.baseline, self.reference)


class KLDivergence:
    """``KL(reference || model)`` of the next-token distributions at ``pos`` (mean over the batch)."""

    def __init__(self, reference_logits: Float[Tensor, "batch pos d_vocab"], pos: int = -1, per_prompt: bool = False):
        if reference_logits.ndim != 3:
            raise ValueError(
                f"reference_logits must be [batch, pos, d_vocab]; got shape {tuple(reference_logits.shape)}"
            )
        self.pos = pos
        self.per_prompt = per_prompt
        self.reference = reference_logits[:, pos].detach().log_softmax(-1)

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions of the logits this metric reads."""
        return (self.pos,)

    def on_positions(self, logits: Float[Tensor, "batch n d_vocab"]) -> Tensor:
        """The metric from the logits at :attr:`positions` only."""
        logp = logits[:, 0].log_softmax(-1)
        if logp.shape != self.reference.shape:
            raise ValueError(
                f"logits at pos have shape {tuple(logp.shape)}, the reference {tuple(self.reference.shape)}: "
                "same batch and vocabulary needed"
            )
        kl = F.kl_div(logp, self.reference.to(logp.device), log_target=True, reduction="none").sum(-1)
        return kl if self.per_prompt else kl.mean()

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        return self.on_positions(logits[:, [self.pos]])


def kl_divergence(
    logits: Float[Tensor, "batch pos d_vocab"],
    reference_logits: Float[Tensor, "batch pos d_vocab"],
    pos: int = -1,
    per_prompt: bool = False,
) -> Tensor:
    """``KL(reference || model)`` at ``pos``, mean over the batch unless ``per_prompt``."""
    return KLDivergence(reference_logits, pos, per_prompt)(logits)
