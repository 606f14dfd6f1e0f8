"""Prompt / answer pairs for logit-difference analyses.

A prompt comes with a pair of answers, ``(answer, other)``: the metric is the logit of ``answer``
minus the logit of ``other`` at the last position, as in the logit-difference analyses of Wang et
al. (2022), *Interpretability in the Wild* (arXiv:2211.00593). Both answers must be single tokens
of the model's vocabulary, and batched prompts must have the same token length so that positions
line up across the batch (and between the two runs of activation patching).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "MOVIE_SENTIMENT",
    "SENTIMENT_PROMPTS",
    "PromptSet",
    "answer_token",
    "check_prompts",
    "prompt_set",
    "prompt_tokens",
]


def check_prompts(prompts: Sequence[str]) -> None:
    """Refuse prompts that are not strings or are empty (only white space): a run on them measures nothing."""
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} is a {type(prompt).__name__} ({prompt!r}), not a string: pass text")
        if not prompt.strip():
            raise ValueError(f"prompt {i} is empty ({prompt!r}): give every prompt some text")


@dataclass(frozen=True)
class PromptSet:
    """Prompts and, per prompt, the answer whose logit is counted positively and the one subtracted."""

    prompts: tuple[str, ...]
    """The prompts (one batch: same token length)."""
    answers: tuple[tuple[str, str], ...]
    """Per prompt, ``(answer, other)``: the metric is ``logit(answer) - logit(other)``."""

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("a PromptSet needs at least one prompt")
        check_prompts(self.prompts)
        if len(self.answers) != len(self.prompts):
            raise ValueError(
                f"{len(self.prompts)} prompts but {len(self.answers)} answer pairs: "
                "give one (answer, other) pair per prompt"
            )
        for pair in self.answers:
            if len(pair) != 2:
                raise ValueError(f"each answer pair is (answer, other); got {pair!r}")

    def tokens(self, model: TransformerBridge) -> Int[torch.Tensor, "batch pos"]:
        """The prompts as one token batch; raises if their token lengths differ."""
        return prompt_tokens(model, self.prompts)

    def answer_tokens(self, model: TransformerBridge) -> Int[torch.Tensor, "batch 2"]:
        """Token ids of ``(answer, other)`` per prompt; raises if an answer is not a single token."""
        return torch.tensor(
            [[answer_token(model, a), answer_token(model, b)] for a, b in self.answers], device=model.cfg.device
        )


def prompt_set(prompts: Sequence[str], answers: Sequence[str]) -> PromptSet:
    """Prompts with one (answer, other) pair for all, or one pair per prompt, given flat: ``(" bad", " good")``."""
    if len(answers) % 2:
        raise ValueError(f"answers come in (answer, other) pairs; got {len(answers)} strings: {list(answers)}")
    pairs = [(answers[i], answers[i + 1]) for i in range(0, len(answers), 2)]
    if len(pairs) == 1:
        pairs = pairs * len(prompts)
    return PromptSet(tuple(prompts), tuple(pairs))


SENTIMENT_PROMPTS = (
    "This movie was really",
    "This film was really",
    "The food was really",
    "The service was really",
    "The weather was really",
    "My day was really",
    "This book was really",
    "The flight was really",
)
"""Same-length prompts (4 tokens for SmolLM2) where " bad" vs " good" reads the sentiment."""

MOVIE_SENTIMENT = PromptSet(("This movie was really",), ((" bad", " good"),))
"""The prompt of the RLHF model-diff study: does the model prefer " bad" over " good"?"""


def answer_token(model: TransformerBridge, answer: str) -> int:
    """The id of ``answer``, which must encode to exactly one token (without BOS)."""
    ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        pieces = model.to_str_tokens(answer, prepend_bos=False)
        raise ValueError(
            f"answer {answer!r} is {len(ids)} tokens {pieces}, not one: pick a single-token answer "
            f"(check with model.to_str_tokens(answer, prepend_bos=False)); a leading space is often part of the token"
        )
    return ids[0]


def prompt_tokens(
    model: TransformerBridge, prompts: str | tuple[str, ...] | list[str]
) -> Int[torch.Tensor, "batch pos"]:
    """Tokenize prompts as one batch without padding; raises naming the lengths when they differ, and
    when a prompt is empty or longer than the model's context (``model.cfg.n_ctx``; never cut silently)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_prompts(prompts)
    rows = [model.to_tokens(p, truncate=False)[0] for p in prompts]
    n_ctx = model.cfg.n_ctx
    for i, row in enumerate(rows):
        if len(row) > n_ctx:
            raise ValueError(
                f"prompt {i} is {len(row)} tokens, longer than the model's context of {n_ctx} tokens "
                f"(model.cfg.n_ctx): shorten it (it starts {prompts[i][:40]!r})"
            )
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        detail = ", ".join(f"{p!r}: {len(r)}" for p, r in zip(prompts, rows))
        raise ValueError(
            f"prompts have different token lengths ({detail}); positions must align across the batch: "
            "use prompts of equal token length or analyse them separately"
        )
    return torch.stack(rows)
