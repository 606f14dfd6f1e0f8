"""Direct logit attribution (DLA) per layer component, per attention head and per MLP neuron.

The final residual stream is a sum of component outputs (embeddings, each layer's attention and
MLP output; an attention output is a sum of head outputs ``z_h W_O^h``, an MLP output a sum of
neuron outputs ``post_n W_out[n]``). With the final norm's scale frozen at its value on the actual
run (the *cached* scale, as ``ActivationCache.apply_ln_to_stack``), the logit difference is linear
in the components, so each gets its share: ``(component - mean) / scale · (W_U[:, answer] -
W_U[:, other])`` (centring only for LayerNorm). Elhage et al., 2021, *A Mathematical Framework for
Transformer Circuits*; Wang et al., 2022, arXiv:2211.00593; Nanda, TransformerLens *Exploratory
Analysis Demo*. Values equal TransformerLens's ``decompose_resid`` / ``stack_head_results`` /
``stack_neuron_results`` with ``apply_ln=True``, projected on the direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.bridge_internals import head_result_scale, residual_contribution_scale
from workbench.hooks import capture, hook_name

__all__ = [
    "Attribution",
    "HeadAttribution",
    "NeuronAttribution",
    "head_attribution",
    "layer_attribution",
    "logit_diff_direction",
    "neuron_attribution",
]


def logit_diff_direction(model: TransformerBridge, answers: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch d_model"]:
    """``W_U[:, answer] - W_U[:, other]`` per prompt: the residual direction read by the logit difference."""
    answers = torch.as_tensor(answers, device=model.W_U.device).long()
    if answers.ndim != 2 or answers.shape[1] != 2:
        raise ValueError(f"answers must be [batch, 2] token ids (answer, other); got shape {tuple(answers.shape)}")
    return (model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]).T.detach()


def _direction(model: TransformerBridge, tokens: Tensor, answers, direction) -> Float[Tensor, "batch d_model"]:
    if (answers is None) == (direction is None):
        raise ValueError("give either answers ([batch, 2] token ids) or a direction ([d_model] or [batch, d_model])")
    if direction is None:
        return logit_diff_direction(model, answers)
    direction = torch.as_tensor(direction, dtype=torch.float32)
    return direction.expand(tokens.shape[0], -1) if direction.ndim == 1 else direction


def _centres(model: TransformerBridge) -> bool:
    """Whether the final norm subtracts the mean (LayerNorm) before scaling."""
    return model.cfg.normalization_type in ("LN", "LNPre") and not getattr(model.cfg, "final_rms", False)


def _run(model: TransformerBridge, tokens: Tensor, names: list[str], pos: int) -> dict[str, Tensor]:
    """Activations at ``names`` and the final norm's scale, at position ``pos``, one forward."""
    wanted = [*names, "ln_final.hook_scale"]
    with torch.no_grad(), capture(model, wanted) as acts:
        model(tokens)
    return {name: act[:, pos] for name, act in acts.items()}


def _project(model: TransformerBridge, stack: Tensor, scale: Tensor, direction: Tensor) -> Tensor:
    """``[component batch d_model]`` -> ``[component batch]``: final-norm-scaled, on the direction."""
    stack = stack.float()  # the final norm's scale is float32 even in half-precision models
    if _centres(model):
        stack = stack - stack.mean(-1, keepdim=True)
    direction = direction.to(stack.device, torch.float32)
    return einops.einsum(stack / scale.float(), direction, "component batch d_model, batch d_model -> component batch")


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution of each component (embed, attention and MLP of each layer)."""

    labels: tuple[str, ...]
    """Component names, TransformerLens-style: ``embed``, ``0_attn_out``, ``0_mlp_out``, ..."""
    per_prompt: Float[Tensor, "component batch"]
    """Attribution per component and prompt."""
    model: str = ""
    """Name of the model."""

    @property
    def values(self) -> Float[Tensor, " component"]:
        """Mean over prompts."""
        return self.per_prompt.mean(1)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``model, component, layer, part, value`` (layer is -1 for embeddings)."""
        layer = [int(label.split("_")[0]) if label[0].isdigit() else -1 for label in self.labels]
        part = [label.split("_")[1] if label[0].isdigit() else label for label in self.labels]
        return pd.DataFrame(
            {"model": self.model, "component": self.labels, "layer": layer, "part": part, "value": self.values.tolist()}
        )

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` components of largest absolute attribution."""
        df = self.to_frame()
        return df.loc[df["value"].abs().sort_values(ascending=False).index[:k]].reset_index(drop=True)


def layer_attribution(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], answers=None, *, direction=None, pos: int = -1
) -> Attribution:
    """DLA of the embeddings and of each layer's attention and MLP output at position ``pos``.

    Args:
        model: the bridge.
        tokens: prompts, one batch.
        answers: ``[batch, 2]`` token ids ``(answer, other)``; or give ``direction``.
        direction: a residual direction, ``[d_model]`` or ``[batch, d_model]``.
        pos: the position read.
    """
    direction = _direction(model, tokens, answers, direction)
    n = model.cfg.n_layers
    names = ["hook_embed", "hook_pos_embed"]
    names += [hook_name(model, kind, layer) for layer in range(n) for kind in ("attn_out", "mlp_out")]
    acts = _run(model, tokens, [name for name in names if name in model.hook_dict], pos)
    labels, stack = [], []
    for label, name in [("embed", "hook_embed"), ("pos_embed", "hook_pos_embed")]:
        if name in acts:  # hooks that did not fire (no learned positions) are left out, as in ActivationCache
            labels.append(label)
            stack.append(acts[name])
    for layer in range(n):
        for kind in ("attn_out", "mlp_out"):
            labels.append(f"{layer}_{kind}")
            stack.append(acts[hook_name(model, kind, layer)])
    values = _project(model, torch.stack(stack), acts["ln_final.hook_scale"], direction)
    return Attribution(tuple(labels), values, str(model.cfg.model_name))


@dataclass(frozen=True)
class HeadAttribution:
    """Direct logit attribution of each attention head (its output ``z W_O``)."""

    per_prompt: Float[Tensor, "layer head batch"]
    """Attribution per layer, head and prompt."""
    model: str = ""
    """Name of the model."""

    @property
    def values(self) -> Float[Tensor, "layer head"]:
        """Mean over prompts."""
        return self.per_prompt.mean(-1)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``model, layer, head, label, value``."""
        layers, heads = self.values.shape
        rows = [(self.model, i, h, f"L{i}H{h}", float(self.values[i, h])) for i in range(layers) for h in range(heads)]
        return pd.DataFrame(rows, columns=["model", "layer", "head", "label", "value"])

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` heads of largest absolute attribution."""
        df = self.to_frame()
        return df.loc[df["value"].abs().sort_values(ascending=False).index[:k]].reset_index(drop=True)


def head_attribution(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], answers=None, *, direction=None, pos: int = -1
) -> HeadAttribution:
    """DLA of every attention head at position ``pos`` (arguments as :func:`layer_attribution`)."""
    direction = _direction(model, tokens, answers, direction)
    names = [hook_name(model, "z", layer) for layer in range(model.cfg.n_layers)]
    acts = _run(model, tokens, names, pos)
    per_layer = []
    for layer, name in enumerate(names):
        attn = model.blocks[layer].attn
        per_head = einops.einsum(
            acts[name], attn.W_O.detach(), "batch head d_head, head d_head d_model -> head batch d_model"
        )
        result = per_head * head_result_scale(attn)
        per_layer.append(_project(model, result, acts["ln_final.hook_scale"], direction))
    return HeadAttribution(torch.stack(per_layer), str(model.cfg.model_name))


@dataclass(frozen=True)
class NeuronAttribution:
    """Direct logit attribution of every MLP neuron (``post_n · W_out[n]``)."""

    per_prompt: Float[Tensor, "layer d_mlp batch"]
    """Attribution per layer, neuron and prompt."""
    layers: tuple[int, ...]
    """The layers of the first axis."""
    model: str = ""
    """Name of the model."""

    @property
    def values(self) -> Float[Tensor, "layer d_mlp"]:
        """Mean over prompts."""
        return self.per_prompt.mean(-1)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``model, layer, neuron, value`` (one row per neuron; long for big models)."""
        values = self.values
        layer = torch.tensor(self.layers).repeat_interleave(values.shape[1])
        neuron = torch.arange(values.shape[1]).repeat(values.shape[0])
        return pd.DataFrame(
            {"model": self.model, "layer": layer.numpy(), "neuron": neuron.numpy(), "value": values.flatten().numpy()}
        )

    def top(self, k: int = 20) -> pd.DataFrame:
        """The ``k`` neurons of largest absolute attribution, with label ``L{layer}N{neuron}``."""
        flat = self.values.flatten()
        order = flat.abs().argsort(descending=True)[:k]
        d_mlp = self.values.shape[1]
        rows = [(self.model, self.layers[i // d_mlp], int(i % d_mlp), float(flat[i])) for i in order.tolist()]
        df = pd.DataFrame(rows, columns=["model", "layer", "neuron", "value"])
        df.insert(3, "label", [f"L{layer}N{n}" for layer, n in zip(df["layer"], df["neuron"])])
        return df


def neuron_attribution(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    answers=None,
    *,
    direction=None,
    pos: int = -1,
    layers=None,
) -> NeuronAttribution:
    """DLA of every MLP neuron at position ``pos``: a ``(layer × d_mlp)`` result.

    Args:
        model: the bridge.
        tokens: prompts, one batch.
        answers: ``[batch, 2]`` token ids ``(answer, other)``; or give ``direction``.
        direction: a residual direction, ``[d_model]`` or ``[batch, d_model]`` (e.g. a logit-difference direction).
        pos: the position read.
        layers: layers to include (default all).

    Returns:
        A :class:`NeuronAttribution`; ``.values`` is ``[layer, d_mlp]``, ``.top(k)`` the strongest neurons.
    """
    direction = _direction(model, tokens, answers, direction)
    layers = (
        tuple(range(model.cfg.n_layers)) if layers is None else tuple(layer % model.cfg.n_layers for layer in layers)
    )
    names = [hook_name(model, "mlp_post", layer) for layer in layers]
    acts = _run(model, tokens, names, pos)
    scale = acts["ln_final.hook_scale"]
    per_layer = []
    for layer, name in zip(layers, names):
        block = model.blocks[layer]
        w_out = block.mlp.W_out.detach()
        if _centres(model):
            w_out = w_out - w_out.mean(-1, keepdim=True)
        readout = w_out.float() @ direction.T.to(w_out.device, torch.float32)  # [d_mlp, batch]
        post = acts[name].float() * residual_contribution_scale(block)
        per_layer.append((post.T * readout) / scale[:, 0].float())
    return NeuronAttribution(torch.stack(per_layer).cpu(), layers, str(model.cfg.model_name))
