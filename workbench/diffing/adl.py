"""Activation-difference lens (ADL): what a tune changed, read from the mean residual difference on unrelated text.

Minder et al. 2025, *Narrow Finetuning Leaves Clearly Readable Traces in Activation Differences* (arXiv 2510.13900;
code: science-of-finetuning/diffing-toolkit, ``activation_difference_lens``). Both models read the same unrelated
texts; the difference of their residual streams (tuned minus base) is averaged over texts at each of the first
``k`` (= 5) positions and each layer: ``delta[l, p] = mean_text(h_tuned[l, p] - h_base[l, p])``. It is read three ways:

* logit lens: ``ln_final(delta) @ W_U``, the tokens it promotes (:func:`lens_tokens`);
* Patchscope (Ghandeharioun et al. 2024): the difference, scaled to a typical residual norm, replaces the residual
  of a neutral token-identity prompt of the *base* model at the same layer; the base model's next-token
  prediction says what the vector means to it (:func:`patchscope_tokens`);
* steering: the scaled difference is added to the base model's residual at every position while it generates
  (:func:`steered_generations`, a strength sweep; strength 0 is the base model exactly).

The tuned side may be a second model sharing the tokenizer, or the base model with hooks on (a
:class:`~workbench.hooks.ModelSide`), e.g. base + IRM. For an IRM writing ``w_j`` into
``resid_post`` of layers ``j in J``, the base + IRM residual at layer ``l`` is ``h_base[l] + sum_{j in J, j <= l}
w_j + c_l``, where ``c_l`` is how the blocks after each write respond to it. ADL's ``delta[l, p]`` is therefore the
mean over texts of the IRM's own cumulative write up to ``l`` plus that downstream response: at the first write
layer it *is* the IRM's mean write (:func:`irm_mean_writes`, compared in the tests); after it, ADL also sees what
the model's own components did with the write, which the IRM's output alone does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import HookFn, ModelSide, as_side, attach, hook_name, hook_names
from workbench.irm.inject import inject
from workbench.irm.module import IRM
from workbench.irm.text import encode_prompt
from workbench.models import str_tokens
from workbench.pairs import check_pair

__all__ = [
    "IDENTITY_PROMPT",
    "ActivationDifference",
    "activation_difference",
    "chat_replies",
    "irm_mean_writes",
    "lens_tokens",
    "neutral_tokens",
    "patchscope_tokens",
    "steered_generations",
    "steering_hooks",
]

IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n? ->"
"""The token-identity prompt of Patchscope (Ghandeharioun et al. 2024; as in the diffing-toolkit): the residual of its
last token is replaced, and the model's continuation says which token the vector stands for."""


def neutral_tokens(model: TransformerBridge, texts: Sequence[str], k: int = 5) -> Int[Tensor, "batch k"]:
    """The first ``k`` tokens of each text with at least ``k`` tokens (no BOS, no chat template): ADL's unrelated
    text."""
    rows = [ids[:k] for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(ids) >= k]
    if not rows:
        raise ValueError(f"none of the {len(texts)} texts has {k} tokens: give longer texts or a smaller k")
    return torch.tensor(rows, device=model.cfg.device)


@dataclass(frozen=True)
class ActivationDifference:
    """Mean tuned-minus-base residual difference (``resid_post``) per layer and position."""

    delta: Float[Tensor, "layer pos d_model"]
    """``mean_text(h_tuned - h_base)`` at each layer's ``resid_post`` and position."""
    base_norm: Float[Tensor, "layer pos"]
    """Mean norm of the base model's residual there (the scale for Patchscope and steering)."""
    n_texts: int
    """Texts averaged over."""

    @property
    def relative_norm(self) -> Float[Tensor, "layer pos"]:
        """``||delta|| / mean ||h_base||``: how much changed, per layer and position."""
        return self.delta.norm(dim=-1) / self.base_norm.clamp_min(1e-12)

    def changed(self, rtol: float = 1e-5) -> bool:
        """Whether any difference exceeds ``rtol`` of the base's norm (False for a model against itself)."""
        return bool((self.relative_norm > rtol).any())

    def read_layer(self) -> int:
        """The layer whose difference is largest relative to the base's norm (mean over positions): read there."""
        return int(self.relative_norm.mean(1).argmax())

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, pos, norm, relative_norm``."""
        n_layer, n_pos = self.base_norm.shape
        rel = self.relative_norm
        return pd.DataFrame(
            [
                (layer, pos, float(self.delta[layer, pos].norm()), float(rel[layer, pos]))
                for layer in range(n_layer)
                for pos in range(n_pos)
            ],
            columns=["layer", "pos", "norm", "relative_norm"],
        )


def activation_difference(
    base: TransformerBridge | ModelSide,
    tuned: TransformerBridge | ModelSide,
    tokens: Int[Tensor, "batch pos"],
    *,
    batch_size: int = 32,
) -> ActivationDifference:
    """ADL's difference: mean over texts of ``resid_post`` (tuned) minus ``resid_post`` (base), per layer and position.

    Args:
        base: the base model (or side).
        tuned: the tuned model, or a side with hooks (base + IRM); same tokenizer and shape as the base (two models
            are checked by :func:`workbench.pairs.check_pair`, which raises ``PairMismatch`` naming each difference).
        tokens: unrelated texts' first positions (:func:`neutral_tokens`).
        batch_size: texts per forward.
    """
    base, tuned = as_side(base), as_side(tuned)
    if tuned.model is not base.model:
        check_pair(base.model, tuned.model)
    names = hook_names(base.model, "resid_post")
    total = torch.zeros(len(names), tokens.shape[1], base.model.cfg.d_model, dtype=torch.float64)
    norms = torch.zeros(len(names), tokens.shape[1], dtype=torch.float64)
    for chunk in tokens.split(batch_size):
        _, acts_b = base.run(chunk, names)
        _, acts_t = tuned.run(chunk.to(tuned.model.cfg.device), names)
        hb = torch.stack([acts_b[n].double().cpu() for n in names])  # [layer batch pos d_model]
        ht = torch.stack([acts_t[n].double().cpu() for n in names])
        total += (ht - hb).sum(1)
        norms += hb.norm(dim=-1).sum(1)
    n = tokens.shape[0]
    return ActivationDifference((total / n).float(), (norms / n).float(), n)


def lens_tokens(model: TransformerBridge, vector: Float[Tensor, " d_model"], k: int = 20) -> list[str]:
    """Logit lens of one vector: the ``k`` tokens of highest ``ln_final(vector) @ W_U`` (none for a zero vector)."""
    if float(vector.norm()) == 0.0:
        return []
    with torch.no_grad():
        normed = model.ln_final(vector.to(model.cfg.device, model.W_U.dtype)[None, None])[0, 0]
        top = (normed @ model.W_U).topk(k).indices
    return str_tokens(model, top)


def _replace_last(vector: Tensor) -> HookFn:
    def hook(x: Tensor, hook) -> Tensor:
        x = x.clone()
        x[:, -1] = vector.to(x.device, x.dtype)
        return x

    return hook


def patchscope_tokens(
    base: TransformerBridge,
    vector: Float[Tensor, " d_model"],
    layer: int,
    *,
    norm: float,
    prompt: str = IDENTITY_PROMPT,
    k: int = 20,
) -> list[str]:
    """Patchscope: the base model's ``k`` most likely next tokens after the last residual of a token-identity
    ``prompt`` at ``resid_post`` of ``layer`` is replaced by ``vector`` scaled to ``norm`` (none for a zero vector).

    Args:
        base: the base model.
        vector: the difference to read.
        layer: where it is patched (the layer it was taken from).
        norm: the norm it is scaled to (a typical residual norm there, :attr:`ActivationDifference.base_norm`).
        prompt: the neutral prompt whose last position receives it.
        k: tokens returned.
    """
    if float(vector.norm()) == 0.0:
        return []
    tokens = base.to_tokens(prompt, prepend_bos=False)
    patched = vector / vector.norm() * norm
    with torch.no_grad(), attach(base, [(hook_name(base, "resid_post", layer), _replace_last(patched))]):
        logits = base(tokens)[0, -1]
    return str_tokens(base, logits.topk(k).indices)


def steering_hooks(
    model: TransformerBridge, vector: Float[Tensor, " d_model"], layer: int, strength: float
) -> list[tuple[str, HookFn]]:
    """Hooks adding ``strength * vector`` to ``resid_post`` of ``layer`` at every position (also while generating)."""
    added = (strength * vector).to(model.cfg.device)

    def add(x: Tensor, hook) -> Tensor:
        return x + added.to(x.dtype)

    return [(hook_name(model, "resid_post", layer), add)]


def chat_replies(
    side: TransformerBridge | ModelSide, prompts: Sequence[str], *, max_new_tokens: int = 24, seed: int = 0
) -> list[str]:
    """One sampled reply of ``side`` (its hooks on) to each chat prompt (prompt ``i`` sampled with seed ``seed + i``,
    so two sides answer with the same random draws)."""
    side = as_side(side)
    model = side.model
    texts = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(model.tokenizer, prompt).to(model.cfg.device)
        torch.manual_seed(seed + i)
        with torch.no_grad(), attach(model, side.hooks):
            out = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_p=0.9,
                stop_at_eos=True,
                verbose=False,
                use_past_kv_cache=True,
            )
        assert isinstance(out, Tensor)  # generate returns token ids for token input
        texts.append(model.tokenizer.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True).strip())
    return texts


def steered_generations(
    base: TransformerBridge,
    vector: Float[Tensor, " d_model"],
    layer: int,
    *,
    norm: float,
    strengths: Sequence[float],
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    seed: int = 0,
) -> pd.DataFrame:
    """Steer the base model with ``vector`` (unit length times ``strength * norm``) at ``layer`` and sample replies.

    Strength 0 is the base model itself (the baseline the steered texts are scored against): its replies equal
    :func:`chat_replies` of the base with the same ``seed``.

    Returns:
        Columns ``strength, prompt, text`` (one sampled reply per prompt and strength, seed ``seed + i``).
    """
    unit = vector / vector.norm() if float(vector.norm()) > 0 else vector
    rows = []
    for strength in strengths:
        side = ModelSide(base, hooks=steering_hooks(base, unit, layer, strength * norm))
        texts = chat_replies(side, prompts, max_new_tokens=max_new_tokens, seed=seed)
        rows += [(float(strength), prompt, text) for prompt, text in zip(prompts, texts, strict=True)]
    return pd.DataFrame(rows, columns=["strength", "prompt", "text"])


def irm_mean_writes(
    base: TransformerBridge, irm: IRM, tokens: Int[Tensor, "batch pos"]
) -> dict[int, Float[Tensor, "pos d_model"]]:
    """The IRM's own mean write per write layer and position on ``tokens`` (compare with ADL's ``delta`` there)."""
    record: list[Tensor] = []
    with torch.no_grad(), inject(base, irm, record=record):
        base(tokens)
    out = record[0].float().mean(0)  # [pos layer d_model]
    return {layer: out[:, i].cpu() for i, layer in enumerate(irm.layers)}
