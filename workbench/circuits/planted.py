"""A small model with a planted circuit: ground truth for edge attribution.

As :mod:`workbench.interventions.price_tagger` plants a variable by training, this module trains a tiny
Llama-style model (2 layers, 4 heads, width 64) on a copy task, *first-token recall*: the answer after a
sequence of ``seq`` random tokens is its first token. Only one head may write to the residual stream (the
other heads' output projections and both MLPs' down projections are zero and kept zero by masking their
gradients), so the task can be solved only by that head reading the first token and writing it to the last
position. The edges that carry the first token when it is swapped for another (the counterfactual) are then
known: the input into the planted head's value input, and the head into the logits. (Its query and key
learn to attend to the first *position* whatever the token, so swapping the token does not act through them;
exact patching confirms both edges at 0.) Everything else is present in the graph (110 edges) with writes
that do not reach the answer: a small, fully known ground truth, not a realistic circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.circuits.graph import Graph
from workbench.circuits.tasks import EdgeTask
from workbench.models import boot

__all__ = ["PlantedCircuit", "planted_circuit", "planted_task", "recovery"]


@dataclass(frozen=True)
class PlantedCircuit:
    """The trained model, its planted head and the edges that must carry the task."""

    model: TransformerBridge
    """The trained model."""
    head: tuple[int, int]
    """(layer, head) of the only head that writes."""
    edges: torch.Tensor
    """``[n_up, n_down]`` booleans: the planted circuit."""
    accuracy: float
    """Task accuracy on fresh samples."""


def planted_task(vocab: int, n: int = 32, seq: int = 4, seed: int = 1) -> EdgeTask:
    """First-token recall prompts and counterfactuals with another first token (the rest unchanged)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, seq), generator=g)
    corrupt = clean.clone()
    corrupt[:, 0] = (clean[:, 0] + torch.randint(1, vocab, (n,), generator=g)) % vocab
    return EdgeTask("planted", clean, corrupt, torch.stack([clean[:, 0], corrupt[:, 0]], 1))


def planted_circuit(tokenizer, *, steps: int = 150, seq: int = 4, seed: int = 0, lr: float = 1e-2) -> PlantedCircuit:
    """Train the first-token-recall model (seconds on a CPU) with head ``(1, 0)`` as the only writer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    vocab = len(tokenizer)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    layer, head = 1, 0
    d_head = cfg.hidden_size // cfg.num_attention_heads
    masks = {}
    for i, block in enumerate(hf.model.layers):
        keep = torch.zeros_like(block.self_attn.o_proj.weight)
        if i == layer:
            keep[:, head * d_head : (head + 1) * d_head] = 1
        masks[block.self_attn.o_proj.weight] = keep
        masks[block.mlp.down_proj.weight] = torch.zeros_like(block.mlp.down_proj.weight)
    with torch.no_grad():
        for p, keep in masks.items():
            p.mul_(keep)
    for p, keep in masks.items():
        p.register_hook(lambda grad, keep=keep: grad * keep)
    opt = torch.optim.Adam(hf.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    hf.train()
    for _ in range(steps):
        tokens = torch.randint(0, vocab, (64, seq), generator=rng)
        logits = hf(tokens).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, tokens[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    hf.eval()
    with torch.no_grad():
        tokens = torch.randint(0, vocab, (512, seq), generator=rng)
        accuracy = float((hf(tokens).logits[:, -1].argmax(-1) == tokens[:, 0]).float().mean())
    model = boot(hf, tokenizer, "planted", prepend_bos=False)
    g = Graph(cfg.num_hidden_layers, cfg.num_attention_heads)
    edges = torch.zeros(g.n_up, g.n_down, dtype=torch.bool)
    edges[0, g.down_qkv(layer, 2).start + head] = True
    edges[g.up_head(layer, head), g.down_logits] = True
    return PlantedCircuit(model, (layer, head), edges, accuracy)


def recovery(truth: torch.Tensor, scores: torch.Tensor, sizes: list[int]) -> list[dict[str, float]]:
    """Precision and recall of the top-``k`` edges by (signed) score against the planted edges, per ``k``.

    ``truth`` and ``scores`` are flat over the graph's edges (:meth:`Graph.flat`). A random ranking's expected
    precision is ``|truth| / n`` and its expected recall ``k / n``.
    """
    if truth.shape != scores.shape or truth.ndim != 1:
        raise ValueError(f"truth and scores must be flat and alike; got {tuple(truth.shape)}, {tuple(scores.shape)}")
    n, planted = truth.numel(), int(truth.sum())
    if planted == 0:
        raise ValueError("the planted circuit has no edges")
    order = scores.argsort(descending=True, stable=True)
    rows = []
    for k in sizes:
        if not 1 <= k <= n:
            raise ValueError(f"size {k} must be in 1..{n}")
        hit = int(truth[order[:k]].sum())
        rows.append({"k": k, "precision": hit / k, "recall": hit / planted})
    return rows
