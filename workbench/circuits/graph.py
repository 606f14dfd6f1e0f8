"""The edge graph of a transformer, and the one forward pass every edge method runs on.

Nodes and edges as EAP-IG builds them (Hanna, Pezzelle & Belinkov, 2024, *Have Faith in Faithfulness*,
arXiv:2403.17806; code: hannamw/EAP-IG): *upstream* nodes write into the residual stream (the input
embedding, every attention head, every MLP), *downstream* nodes read from it (every head's query, key and
value input separately, every MLP, the logits). An edge joins an upstream node to each downstream node after
it: a downstream node's input is the sum of the writes of all upstream nodes before it (plus constant
biases), so an edge is one term of that sum. SmolLM2-135M (30 layers, 9 heads) has 123,211 edges.

Grouped-query attention is *ungrouped*: each query head gets its own key and value input, as EAP-IG does on
TransformerLens. The bridge's attention shares a key/value head between the query heads of a group, so
:func:`edge_model` boots a copy of the model whose key/value projections are repeated per query head (the
same function: checked on the tokens at hand) with the bridge's per-head input forks on
(``use_split_qkv_input``: ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` are each head's pre-norm
input), per-head outputs (``use_attn_result``) and ``hook_mlp_in``.

:func:`edge_forward` runs that copy once: it records each upstream node's write as it happens, and adds to
each downstream input an offset chosen by the caller (patching edges, or a leaf for gradients).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel

from workbench.bridge_internals import BridgeInternalsError
from workbench.hooks import attach
from workbench.models import boot

__all__ = ["EdgeModel", "Graph", "edge_forward", "edge_model"]


@dataclass(frozen=True)
class Graph:
    """Upstream and downstream nodes of a model with ``n_layers`` layers of ``n_heads`` heads, and its edges.

    Upstream index: ``0`` the input, then per layer its heads and its MLP. Downstream index: per layer each
    head's q, then k, then v inputs, then its MLP, and last the logits.

    >>> g = Graph(30, 9)
    >>> g.n_edges
    123211
    """

    n_layers: int
    """Layers."""
    n_heads: int
    """Query heads per layer."""

    @property
    def n_up(self) -> int:
        """Number of upstream nodes."""
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_down(self) -> int:
        """Number of downstream nodes."""
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def up_head(self, layer: int, head: int) -> int:
        """Upstream index of a head's output."""
        return 1 + layer * (self.n_heads + 1) + head

    def up_mlp(self, layer: int) -> int:
        """Upstream index of an MLP's output."""
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def down_qkv(self, layer: int, part: int) -> slice:
        """Downstream indices of layer ``layer``'s q (``part`` 0), k (1) or v (2) inputs, one per head."""
        start = layer * (3 * self.n_heads + 1) + part * self.n_heads
        return slice(start, start + self.n_heads)

    def down_mlp(self, layer: int) -> int:
        """Downstream index of an MLP's input."""
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def down_logits(self) -> int:
        """Downstream index of the logits."""
        return self.n_down - 1

    def available(self, down: int) -> int:
        """Upstream nodes ``[0, available)`` feed downstream node ``down`` (they come before it)."""
        if down == self.down_logits:
            return self.n_up
        layer, offset = divmod(down, 3 * self.n_heads + 1)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if offset == 3 * self.n_heads else 0)

    @cached_property
    def mask(self) -> Tensor:
        """``[n_up, n_down]`` booleans: which pairs are edges."""
        limits = torch.tensor([self.available(d) for d in range(self.n_down)])
        return torch.arange(self.n_up)[:, None] < limits[None]

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return int(self.mask.sum())

    @cached_property
    def up_names(self) -> tuple[str, ...]:
        """Upstream node names: ``input``, ``a{L}.h{H}``, ``m{L}``."""
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return tuple(names)

    @cached_property
    def down_names(self) -> tuple[str, ...]:
        """Downstream node names: ``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits``."""
        names = []
        for layer in range(self.n_layers):
            for part in "qkv":
                names += [f"a{layer}.h{h}<{part}>" for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return (*names, "logits")

    @cached_property
    def down_node(self) -> Tensor:
        """For each downstream node, the upstream index of the same component (``-1`` for the logits)."""
        out = []
        for layer in range(self.n_layers):
            out += [self.up_head(layer, h) for _ in range(3) for h in range(self.n_heads)] + [self.up_mlp(layer)]
        return torch.tensor([*out, -1])

    def edge_index(self) -> Tensor:
        """``[n_edges, 2]`` (upstream, downstream) indices of the edges, in the order of :meth:`flat`."""
        return self.mask.nonzero()

    def flat(self, scores: Shaped[Tensor, "n_up n_down"]) -> Shaped[Tensor, " n_edges"]:
        """Per-edge values of an ``[n_up, n_down]`` matrix, in the order of :meth:`edge_index`."""
        return scores[self.mask]

    def to_frame(self, scores: Float[Tensor, "n_up n_down"]) -> pd.DataFrame:
        """One row per edge: ``upstream``, ``downstream``, ``score``."""
        index = self.edge_index()
        return pd.DataFrame(
            {
                "upstream": [self.up_names[i] for i in index[:, 0].tolist()],
                "downstream": [self.down_names[j] for j in index[:, 1].tolist()],
                "score": self.flat(scores).tolist(),
            }
        )


@dataclass(frozen=True)
class EdgeModel:
    """A bridge prepared for edge analyses: ungrouped keys/values, per-head input and output hooks."""

    model: TransformerBridge
    """The prepared copy (do not use it for anything else)."""
    source: TransformerBridge
    """The model it was made from."""
    graph: Graph
    """Its edge graph."""

    def check(self, tokens: Int[Tensor, "batch pos"]) -> None:
        """Raise :class:`BridgeInternalsError` unless the copy computes the source's logits on ``tokens``."""
        with torch.no_grad():
            got, want = self.model(tokens.to(self.model.cfg.device)), self.source(tokens.to(self.source.cfg.device))
            got = got.to(want.device)
        if not torch.allclose(got, want, atol=1e-3, rtol=1e-4):
            raise BridgeInternalsError(
                f"the ungrouped copy of {self.source.cfg.model_name} does not compute its logits "
                f"(max |diff| {(got - want).abs().max().item():.1e})",
                "edge analyses need the bridge's split-qkv forks; check the architecture adapter",
            )


def edge_model(model: TransformerBridge) -> EdgeModel:
    """Copy ``model`` with each query head given its own key/value projection and the hooks edges need.

    The copy takes as much memory again as the model. Its hooks are switched on in the copy only.
    """
    cfg = model.cfg
    hf = copy.deepcopy(model.original_model)
    if not isinstance(hf, PreTrainedModel):
        raise TypeError(f"edge_model needs a bridge around a Hugging Face model, not {type(hf).__name__}")
    n_heads, n_kv = cfg.n_heads, getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    if n_kv != n_heads:
        rep = n_heads // n_kv
        layers = getattr(getattr(hf, "model", None), "layers", None)
        if layers is None:
            raise NotImplementedError(
                f"ungrouping keys/values is written for Llama-style models (model.layers[i].self_attn); "
                f"{type(hf).__name__} is not one: add its layout to workbench.circuits.graph.edge_model"
            )
        for layer in layers:
            attn = layer.self_attn
            for lin in (attn.k_proj, attn.v_proj):
                w = lin.weight.data
                w = w.view(n_kv, -1, w.shape[1]).repeat_interleave(rep, 0).reshape(-1, w.shape[1])
                lin.weight = torch.nn.Parameter(w, requires_grad=False)
                lin.out_features = w.shape[0]
                if lin.bias is not None:
                    lin.bias = torch.nn.Parameter(lin.bias.data.view(n_kv, -1).repeat_interleave(rep, 0).flatten())
            attn.num_key_value_groups = 1
        hf.config.num_key_value_heads = n_heads
    copy_ = boot(hf, model.tokenizer, str(cfg.model_name), device=str(cfg.device), prepend_bos=cfg.default_prepend_bos)
    copy_.set_use_split_qkv_input(True)
    copy_.set_use_attn_result(True)
    copy_.set_use_hook_mlp_in(True)
    for p in copy_.parameters():
        p.requires_grad_(False)
    return EdgeModel(copy_, model, Graph(cfg.n_layers, n_heads))


Offset = Callable[[int, Tensor, Tensor], Tensor | None]
"""``(first downstream index, input, writes so far) -> offset`` added to a downstream input (``None``: leave it)."""


def edge_forward(
    em: EdgeModel,
    tokens: Int[Tensor, "batch pos"],
    offset: Offset,
    *,
    embed: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Float[Tensor, "batch pos d_vocab"], Float[Tensor, "n_up batch pos d_model"]]:
    """Logits and every upstream node's write, with ``offset`` added at each downstream input.

    Downstream inputs are visited in order (layer by layer: q, k, v of all heads at once, ``[batch pos
    head d_model]``; then the MLP; the logits' input last, ``[batch pos d_model]``); ``offset`` is called
    with the index of the first node of the group, the input, and the ``[n_up batch pos d_model]`` writes
    recorded so far (filled as the forward goes; later nodes are still zero). ``embed`` replaces the input
    embedding (the residual stream entering block 0), e.g. to interpolate it.
    """
    model, g = em.model, em.graph
    tokens = tokens.to(model.cfg.device)
    batch, seq = tokens.shape
    writes = torch.zeros(g.n_up, batch, seq, model.cfg.d_model, dtype=torch.float32, device=tokens.device)

    def record_input(x: Tensor, hook) -> Tensor:
        x = embed(x) if embed is not None else x
        writes[0] = x.detach()
        return x

    def record_heads(layer: int):
        def hook(x: Tensor, hook) -> Tensor:
            start = g.up_head(layer, 0)
            writes[start : start + g.n_heads] = x.detach().permute(2, 0, 1, 3)
            return x

        return hook

    def record_mlp(layer: int):
        def hook(x: Tensor, hook) -> Tensor:
            writes[g.up_mlp(layer)] = x.detach()
            return x

        return hook

    def add(first: int):
        def hook(x: Tensor, hook) -> Tensor:
            extra = offset(first, x, writes)
            return x if extra is None else x + extra

        return hook

    hooks = [("blocks.0.hook_resid_pre", record_input)]
    for layer in range(g.n_layers):
        for part, name in enumerate(("q_input", "k_input", "v_input")):
            hooks.append((f"blocks.{layer}.hook_{name}", add(g.down_qkv(layer, part).start)))
        hooks.append((f"blocks.{layer}.attn.hook_result", record_heads(layer)))
        hooks.append((f"blocks.{layer}.hook_mlp_in", add(g.down_mlp(layer))))
        hooks.append((f"blocks.{layer}.hook_mlp_out", record_mlp(layer)))
    hooks.append(("ln_final.hook_in", add(g.down_logits)))
    with attach(model, hooks):
        logits = model(tokens)
    return logits, writes
