"""Logit lens: what the residual stream at each layer "predicts" (nostalgebraist, 2020,
*interpreting GPT: the logit lens*; Belrose et al., 2023, *Eliciting Latent Predictions with the
Tuned Lens*, arXiv:2303.08112, for its limits).

The accumulated residual stream before each layer (and, optionally, between attention and MLP) is
put through the final norm and the unembedding. Two ways to normalise:

* ``scale="own"``: each point gets the final norm with its own statistics (the classic lens; equal
  to ``ActivationCache.accumulated_resid(apply_ln=True)``);
* ``scale="final"``: each point is divided by the final norm's scale on the actual run (linear,
  as in direct logit attribution; ``ActivationCache.apply_ln_to_stack(..., layer=-1)``).

Projected on a logit-difference direction (one line per model) and on the whole vocabulary (top
tokens per point). Bias-free (``x @ W_U``), as TransformerLens's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.attribution import logit_diff_direction
from workbench.hooks import ModelSide, as_side, hook_name
from workbench.models import str_tokens

__all__ = ["LogitLens", "lens_from_residuals", "lens_residuals", "logit_lens", "mean_logits"]


@dataclass(frozen=True)
class LogitLens:
    """Logit difference and top tokens at each point of the residual stream."""

    labels: tuple[str, ...]
    """Points, TransformerLens-style: ``0_pre``, ``0_mid``, ``1_pre``, ..., ``final_post``."""
    per_prompt: Float[Tensor, "point batch"]
    """Logit difference per point and prompt."""
    top_tokens: tuple[tuple[str, ...], ...]
    """Per point, the ``k`` tokens of highest logit (logits averaged over the batch)."""
    top_logits: Float[Tensor, "point k"]
    """Their logits."""
    model: str = ""
    """Name of the model (side)."""

    @property
    def logit_diff(self) -> Float[Tensor, " point"]:
        """Mean logit difference over prompts, per point."""
        return self.per_prompt.mean(1)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``model, point, label, logit_diff``."""
        return pd.DataFrame(
            {
                "model": self.model,
                "point": range(len(self.labels)),
                "label": self.labels,
                "logit_diff": self.logit_diff.tolist(),
            }
        )

    def tokens_frame(self) -> pd.DataFrame:
        """Columns ``model, point, label, rank, token, logit``."""
        rows = [
            (self.model, i, label, r, tok, float(self.top_logits[i, r]))
            for i, label in enumerate(self.labels)
            for r, tok in enumerate(self.top_tokens[i])
        ]
        return pd.DataFrame(rows, columns=["model", "point", "label", "rank", "token", "logit"])


def logit_lens(
    model: TransformerBridge | ModelSide,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, "batch 2"],
    *,
    pos: int = -1,
    incl_mid: bool = True,
    scale: Literal["own", "final"] = "own",
    k: int = 5,
) -> LogitLens:
    """Logit lens of one model (or :class:`~workbench.hooks.ModelSide`, hooks on).

    Args:
        model: the bridge or a model side.
        tokens: prompts, one batch.
        answers: ``[batch, 2]`` token ids ``(answer, other)``.
        pos: the position read.
        incl_mid: also the points between attention and MLP (``resid_mid``).
        scale: ``"own"`` (final norm recomputed per point) or ``"final"`` (the run's final scale).
        k: top tokens per point.
    """
    side = as_side(model)
    labels, normed = lens_residuals(side, tokens, pos=pos, incl_mid=incl_mid, scale=scale)
    return lens_from_residuals(side, labels, normed, answers, k=k)


def lens_residuals(
    model: TransformerBridge | ModelSide,
    tokens: Int[Tensor, "batch pos"],
    *,
    pos: int = -1,
    incl_mid: bool = True,
    scale: Literal["own", "final"] = "own",
) -> tuple[tuple[str, ...], Float[Tensor, "point batch d_model"]]:
    """The lens's points (labels as :attr:`LogitLens.labels`) and their residuals at ``pos`` through the
    final norm (arguments as :func:`logit_lens`): one forward."""
    if scale not in ("own", "final"):
        raise ValueError(f"scale must be 'own' or 'final', got {scale!r}")
    side = as_side(model)
    model = side.model
    n = model.cfg.n_layers
    names, labels = [], []
    for layer in range(n):
        names.append(hook_name(model, "resid_pre", layer))
        labels.append(f"{layer}_pre")
        if incl_mid:
            names.append(hook_name(model, "resid_mid", layer))
            labels.append(f"{layer}_mid")
    names.append(hook_name(model, "resid_post", n - 1))
    labels.append("final_post")
    with torch.no_grad():
        _, acts = side.run(tokens, [*names, "ln_final.hook_scale"])
        stack = torch.stack([acts[name][:, pos] for name in names])  # [point batch d_model]
        if scale == "own":
            return tuple(labels), model.ln_final(stack)
        if model.cfg.normalization_type in ("LN", "LNPre"):
            stack = stack - stack.mean(-1, keepdim=True)
        return tuple(labels), stack.float() / acts["ln_final.hook_scale"][:, pos].float()  # the scale is fp32


def mean_logits(
    model: TransformerBridge, normed: Float[Tensor, "point batch d_model"]
) -> Float[Tensor, "point d_vocab"]:
    """The unembedded mean over the batch of normalised residuals (the logits the lens's top tokens come from)."""
    with torch.no_grad():
        return normed.mean(1).to(model.W_U.dtype) @ model.W_U.detach()


def lens_from_residuals(
    model: TransformerBridge | ModelSide,
    labels: tuple[str, ...],
    normed: Float[Tensor, "point batch d_model"],
    answers: Int[Tensor, "batch 2"],
    *,
    k: int = 5,
) -> LogitLens:
    """The :class:`LogitLens` of residuals from :func:`lens_residuals`."""
    side = as_side(model)
    model = side.model
    with torch.no_grad():
        direction = logit_diff_direction(model, answers).float()
        per_prompt = einops.einsum(normed.float(), direction, "point batch d_model, batch d_model -> point batch")
        top = mean_logits(model, normed).topk(k, dim=-1)
    tokens_out = tuple(tuple(str_tokens(model, row)) for row in top.indices)
    return LogitLens(labels, per_prompt, tokens_out, top.values, side.label)
