"""The next-token loss of a model on encoded replies (reply tokens only), with an IRM injected or not.

What :func:`workbench.irm.train.train_irm` minimises and every IRM measurement reads (held-out loss, the
masking test of :mod:`workbench.irm.dimensions`, the training-length study of :mod:`workbench.irm.lengths`),
and what the supervised comparison model is trained on (:mod:`workbench.tuning.supervised`). Smith et al.,
2024, *The Mysterious Case of Neuron 1512*: the IRM is trained on the reply tokens of chat-formatted texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.bridge_internals import final_logits, shared_prefix_forward
from workbench.data.padding import pad_id, right_pad
from workbench.hooks import attach
from workbench.irm.module import IRM
from workbench.irm.text import Encoded

__all__ = ["batch_nll", "eval_loss", "model_device", "reply_nll", "shared_prefix_len"]


def reply_nll(
    logits: Tensor, tokens: Int[Tensor, "batch pos"], scored: Bool[Tensor, "batch pos"]
) -> tuple[Tensor, int]:
    """Summed next-token negative log-likelihood of the scored tokens, and how many there are."""
    target = scored[:, 1:]
    picked = logits[:, :-1][target].float()
    nll = torch.nn.functional.cross_entropy(picked, tokens[:, 1:][target], reduction="sum")
    return nll, int(target.sum())


def shared_prefix_len(items: Sequence[Encoded]) -> int:
    """How many leading positions every item shares with no scored token among them (0 if fewer than 2).

    Those positions (the chat prompt every reply follows) are the same computation in every row of a
    batch, and none of their predictions is scored except the last one's (it predicts the first reply
    token), so :func:`batch_nll` runs them once per batch.
    """
    n = min(len(e.ids) for e in items)
    first = items[0].ids
    shared = next((p for p in range(n) if any(e.ids[p] != first[p] for e in items)), n)
    unscored = min(next((p for p, s in enumerate(e.scored) if s), len(e.ids)) for e in items)
    prefix = min(shared, unscored)
    return prefix if prefix >= 2 else 0


def batch_nll(model: TransformerBridge, items: Sequence[Encoded]) -> tuple[Tensor, int, Tensor]:
    """Summed next-token loss of ``items``' scored tokens, their count, and where they sit in the last forward.

    The shared chat prompt runs once for the batch (:func:`~workbench.bridge_internals.shared_prefix_forward`)
    and only the scored positions are unembedded; the numbers equal the full forward's (:func:`reply_nll`
    of ``model(tokens)``), with the work of the prompt done once, not once per row. The third value is the
    scored mask over the positions of the model's last forward (the rows after the prefix, or all
    positions when there is no shared prefix or the model is split over devices), for the IRM output's
    L1 penalty.
    """
    device = model_device(model)
    tokens, scored = right_pad(
        [e.ids for e in items], pad_id(model.tokenizer), marks=[e.scored for e in items], device=device
    )
    prefix = shared_prefix_len(items) if not getattr(model.original_model, "hf_device_map", None) else 0
    if prefix == 0 or prefix >= tokens.shape[1]:
        nll, n = reply_nll(model(tokens), tokens, scored)
        return nll, n, scored
    head, rest = shared_prefix_forward(model, prefix, tokens)
    predicting = torch.cat([head[:, -1:].expand(tokens.shape[0], 1, -1), rest[:, :-1]], 1)
    target = scored[:, prefix:]
    logits = final_logits(model, predicting[target]).float()
    nll = torch.nn.functional.cross_entropy(logits, tokens[:, prefix:][target], reduction="sum")
    return nll, int(target.sum()), target


def model_device(model: TransformerBridge) -> torch.device:
    """The device the bridge runs on (its inputs go there)."""
    if model.cfg.device is None:
        raise ValueError("the bridge has no device: load it with load_model(name, device=...)")
    return torch.device(model.cfg.device)


@torch.no_grad()
def eval_loss(
    model: TransformerBridge,
    irm: IRM | None,
    data: Sequence[Encoded],
    *,
    batch_size: int = 16,
    mask: Tensor | None = None,
) -> float:
    """Mean next-token loss per scored token of ``model`` (with ``irm`` injected unless ``None``)."""
    total, count = 0.0, 0
    hooks = irm.hooks(model, mask=mask) if irm is not None else []
    with attach(model, hooks):
        for start in range(0, len(data), batch_size):
            nll, n, _ = batch_nll(model, data[start : start + batch_size])
            total, count = total + float(nll), count + n
    return total / max(count, 1)
