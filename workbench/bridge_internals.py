"""What depends on the TransformerBridge's internals, in one place, with the versions it was checked against.

The rest of the library talks to the bridge through its public surface (hook names, ``cfg``,
weights, ``forward``). The few analyses that need more go through this module:

* the patch engine drives ``model.blocks[i]`` directly, passing a stand-in for Hugging Face's KV
  cache (:class:`PrefixKV`) and the keyword arguments the bridge gives each block (rotary
  embeddings, position ids), captured by :func:`block_inputs`;
* AtP* rebuilds attention patterns from the queries and keys the scores are made of
  (:func:`attention_score_inputs`, :func:`attention_pattern_from`);
* attribution patching takes gradients at hook points, which some hook points carry only when a
  hook returns a tensor (:func:`carried`);
* IRM training runs the chat prompt that every text of a batch starts with once, and the replies
  on top of its cached keys and values (:func:`shared_prefix_forward`), and unembeds only the
  scored positions (:func:`final_logits`);
* the patch engine unembeds only the token ids a metric reads, from the weight of the linear layer
  the bridge's unembedding wraps (:func:`unembed_columns`);
* direct logit attribution reads the scale the bridge applies to a head's result
  (:func:`head_result_scale`) and to an MLP's contribution (:func:`residual_contribution_scale`).

Each of these is checked at run time where it is used (the patch engine compares one staircase
patch with a full forward once per sweep; AtP* compares its rebuilt pattern with the captured one),
so an upgrade that changes them fails loudly. :data:`CHECKED_WITH` records the versions they were
written and tested against.
"""

from __future__ import annotations

from importlib.metadata import version

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import hook_name

__all__ = [
    "CHECKED_WITH",
    "BridgeInternalsError",
    "PrefixKV",
    "attention_pattern_from",
    "attention_scale",
    "attention_score_inputs",
    "block_inputs",
    "block_output",
    "carried",
    "final_logits",
    "head_result_scale",
    "residual_contribution_scale",
    "shared_prefix_forward",
    "slice_block_kwargs",
    "unembed_columns",
]

CHECKED_WITH = {"transformer_lens": "4.3", "transformers": "5.23"}
"""Package versions (major.minor) these internals were checked against."""


class BridgeInternalsError(RuntimeError):
    """The bridge no longer behaves as this module assumes (likely a TransformerLens/transformers upgrade)."""

    def __init__(self, what: str, fallback: str):
        found = ", ".join(f"{name} {version(name)}" for name in CHECKED_WITH)
        checked = ", ".join(f"{k} {v}" for k, v in CHECKED_WITH.items())
        super().__init__(f"{what} (found {found}; checked with {checked}). {fallback}")


class PrefixKV:
    """Stands in for a Hugging Face cache in attention: records keys/values, or prepends a cached prefix."""

    def __init__(self, prefix: dict[int, tuple[Tensor, Tensor]] | None = None, reps: int = 1):
        self.prefix, self.reps = prefix, reps
        self.recorded: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, k: Tensor, v: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.prefix is None:
            self.recorded[layer_idx] = (k, v)
            return k, v
        pk, pv = self.prefix[layer_idx]
        if pk.shape[-2] == 0:
            return k, v
        return torch.cat([pk.repeat(self.reps, 1, 1, 1), k], -2), torch.cat([pv.repeat(self.reps, 1, 1, 1), v], -2)


def block_inputs(model: TransformerBridge, tokens: Tensor) -> tuple[Tensor, dict]:
    """The input of block 0 (before its hooks) and the keyword arguments the bridge passes every block."""
    captured: dict = {}
    first: list[Tensor] = []

    def grab(module, args, kwargs):  # the input before block 0's own hooks (stop_at_layer returns it after them)
        first.append(args[0] if args else kwargs["hidden_states"])
        captured.update({k: kwargs[k] for k in ("position_embeddings", "position_ids") if k in kwargs})

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(tokens, stop_at_layer=0)
    finally:
        handle.remove()
    if not first:
        raise BridgeInternalsError("block 0 was not called by model(tokens, stop_at_layer=0)", "pass fast=False")
    return first[0], captured


def block_output(out) -> Tensor:
    """The hidden states from a block's return value (a tuple in Hugging Face blocks)."""
    return out[0] if isinstance(out, tuple) else out


def slice_block_kwargs(kwargs: dict, start: int) -> dict:
    """Block keyword arguments for positions ``start:`` only."""
    return _cut_kwargs(kwargs, slice(None), slice(start, None))


def _cut_kwargs(kwargs: dict, rows: slice, positions: slice) -> dict:
    """Block keyword arguments cut to ``rows`` (where a tensor has more than one) and ``positions``."""

    def cut(v):
        if isinstance(v, tuple):
            return tuple(cut(t) for t in v)
        if not torch.is_tensor(v) or v.ndim < 2:
            return v
        return v[rows if v.shape[0] > 1 else slice(None), positions]

    return {k: cut(v) for k, v in kwargs.items()}


def shared_prefix_forward(model: TransformerBridge, prefix_len: int, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Final residuals (before ``ln_final``) of ``tokens`` whose rows all start with the same ``prefix_len`` ids.

    The shared prefix runs once (batch 1), the rest of every row on top of the prefix's keys and values
    (repeated over the rows, so gradients from every row reach the prefix once): the same numbers as
    ``model(tokens)``'s final residual, with the prefix's work done once instead of once per row. Hooks
    attached to the model fire in both passes: first for the prefix (batch 1), then for the rest.

    Returns:
        ``(prefix [1, prefix_len, d_model], rest [batch, pos - prefix_len, d_model])``.
    """
    if not 0 < prefix_len < tokens.shape[1]:
        raise ValueError(f"prefix_len {prefix_len} must be in 1..{tokens.shape[1] - 1} for rows of {tokens.shape[1]}")
    x, kwargs = block_inputs(model, tokens)
    p, head = x[:1, :prefix_len], _cut_kwargs(kwargs, slice(0, 1), slice(0, prefix_len))
    recorded = PrefixKV()
    for block in model.blocks:
        p = block_output(block(p, past_key_values=recorded, **head))
    rest, tail = x[:, prefix_len:], slice_block_kwargs(kwargs, prefix_len)
    cached = PrefixKV(recorded.recorded, reps=tokens.shape[0])
    for block in model.blocks:
        rest = block_output(block(rest, past_key_values=cached, **tail))
    return p, rest


def final_logits(model: TransformerBridge, resid: Tensor) -> Tensor:
    """``model.unembed(model.ln_final(resid))`` for residual rows ``[..., d_model]`` (any leading shape)."""
    return model.unembed(model.ln_final(resid))


def unembed_columns(model: TransformerBridge, resid: Tensor, vocab: Tensor) -> Tensor | None:
    """``model.unembed(model.ln_final(resid))[..., vocab]`` without computing the rest of the vocabulary.

    ``None`` when the unembedding does not wrap a plain linear layer (then unembed everything).
    The patch engine's once-per-sweep full forward checks the values it gives.
    """
    head = getattr(model.unembed, "original_component", None)
    if not isinstance(head, torch.nn.Linear):
        return None
    vocab = vocab.to(head.weight.device)
    bias = None if head.bias is None else head.bias[vocab]
    return torch.nn.functional.linear(model.ln_final(resid), head.weight[vocab], bias)


def attention_score_inputs(model: TransformerBridge, layer: int) -> tuple[str, str, str]:
    """Hook names of the queries and keys the attention scores of ``layer`` are made of, and of its pattern.

    Rotary models score rotated queries and keys (``attn.hook_rot_q`` / ``hook_rot_k``); others the
    plain ``attn.hook_q`` / ``hook_k``.
    """
    rot_q, rot_k = f"blocks.{layer}.attn.hook_rot_q", f"blocks.{layer}.attn.hook_rot_k"
    if rot_q in model.hook_dict and model.cfg.positional_embedding_type == "rotary":
        q, k = rot_q, rot_k
    else:
        q, k = hook_name(model, "q", layer), hook_name(model, "k", layer)
    return q, k, hook_name(model, "pattern", layer)


def attention_scale(model: TransformerBridge) -> float:
    """The divisor of ``q·k`` in the attention scores (the bridge leaves ``cfg.attn_scale`` at -1: ``sqrt(d_head)``)."""
    if not model.cfg.use_attn_scale:
        return 1.0
    return model.cfg.attn_scale if model.cfg.attn_scale > 0 else model.cfg.d_head**0.5


def attention_pattern_from(
    model: TransformerBridge, layer: int, q: Tensor, k: Tensor, pattern: Tensor | None = None
) -> Tensor:
    """Causal softmax of ``q·k / attn_scale`` (keys repeated over grouped-query heads), ``[batch head q_pos k_pos]``.

    With ``pattern`` (the captured one), raises :class:`BridgeInternalsError` when they differ.
    """
    heads, kv_heads = q.shape[2], k.shape[2]
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / attention_scale(model)
    seq = scores.shape[-1]
    mask = torch.ones(seq, seq, dtype=torch.bool, device=scores.device).tril()
    rebuilt = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    if pattern is not None and not torch.allclose(rebuilt, pattern.float(), atol=1e-4, rtol=1e-3):
        raise BridgeInternalsError(
            f"layer {layer}'s attention pattern is not the causal softmax of its hooked queries and keys "
            f"(max |diff| {(rebuilt - pattern.float()).abs().max().item():.1e}; padding, ALiBi, soft-capping "
            "or a changed hook are not handled)",
            "use method='atp'",
        )
    return rebuilt


def carried(x: Tensor) -> Tensor:
    """A new tensor equal to a hook's input, for the hook to return so that the forward goes on from it.

    Some hook points (``attn.hook_q/k/v/z``, ``hook_resid_mid``, a norm's ``hook_normalized``) see a
    reshaped view or a side copy that the bridge uses only when a hook returns a replacement; a
    gradient taken at the view itself is then zero or partial. Returning this tensor puts it on the
    forward's path, so its gradient is the full one.
    """
    return x.view_as(x)


def head_result_scale(attn) -> float | Tensor:
    """The factor the bridge applies to each head's ``z W_O`` in the residual (1 unless the architecture scales it)."""
    return getattr(attn, "_result_contribution_scale", 1.0)


def residual_contribution_scale(block) -> float | Tensor:
    """The factor the bridge applies to an MLP's output before adding it to the residual (1 by default)."""
    return getattr(block, "residual_contribution_scale", 1.0)
