"""Attribution patching: a linear estimate of every node's patching effect from two forwards and one backward.

Activation patching runs the model once per node. Attribution patching (AtP; Nanda, 2023,
*Attribution Patching: Activation Patching At Industrial Scale*; Syed et al., 2023,
arXiv:2310.10348) replaces each run by its first-order Taylor term around the target run:
``metric(patched) - metric(target) ≈ (a_source - a_target) · ∂metric/∂a``, for every node ``a`` at
once: one forward of the source, one forward and one backward of the target.

AtP* (Kramár et al., 2024, *AtP\\*: An efficient and scalable method for localizing LLM behaviour
to components*, arXiv:2403.00745) fixes AtP's worst failure, attention saturation: a query or key
reaches the metric only through the attention softmax, whose linearisation is poor when the
softmax is saturated. For query and key nodes (``head_q``, ``head_k``) AtP* recomputes the
attention pattern exactly with the patched query / key and linearises only from the pattern on:
``(A_patched - A) · ∂metric/∂A``. (A head's output ``z`` is downstream of its own softmax, so the
``head`` / ``head_pos`` estimates need no fix.) GradDrop (same paper) guards against cancelling
paths: the backward is repeated once per layer ``l`` with the gradient through layer ``l``'s
attention and MLP outputs dropped, and a node's score is the mean of ``|estimate|`` over the layers
downstream of it: a magnitude for ranking candidates, not a signed effect.

The estimates come as :class:`~workbench.analysis.patching.PatchResult`\\ s with the same kinds,
axes, baseline and reference as :func:`~workbench.analysis.patching.patch_sweep`, so the two line up
cell by cell; :func:`confirm` runs exact patching on the top-k nodes (the AtP -> exact workflow)
and :func:`fidelity` compares an estimate with an exact sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.patch_engine import Patch, prune, run_full, run_staircase, trace
from workbench.analysis.patching import SWEEPS, PatchResult, _check_pair, _value
from workbench.bridge_internals import attention_pattern_from, attention_scale, attention_score_inputs, carried
from workbench.hooks import ModelSide, as_side, attach, check_hook_name, hook_name

__all__ = [
    "NODE_KINDS",
    "attribution_sweep",
    "attribution_sweeps",
    "confirm",
    "fidelity",
]

NODE_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{kind: entry for kind, entry in SWEEPS.items()},
    "neuron": ("mlp_post", ("layer", "neuron")),
    "head_q": ("q", ("layer", "pos", "head")),
    "head_k": ("k", ("layer", "pos", "head")),
    "head_v": ("v", ("layer", "pos", "head")),
}
"""Node kinds: the exact sweep kinds of :data:`~workbench.analysis.patching.SWEEPS`, MLP neurons
(``mlp.hook_post``, all positions, ``layer × neuron``) and each head's query / key / value per
position (``layer × pos × head``; keys and values have one head per key-value head). Any other
full hook name (e.g. ``ln_final.hook_normalized``) is a kind with one axis, ``pos``."""

Method = Literal["atp", "atp*"]


def _kind(model: TransformerBridge, kind: str) -> tuple[str | None, tuple[str, ...]]:
    """(hook kind or ``None`` for a full hook name, axes)."""
    if kind in NODE_KINDS:
        return NODE_KINDS[kind]
    check_hook_name(model, kind)
    return None, ("pos",)


def _names(model: TransformerBridge, kind: str, layers: Sequence[int]) -> list[str]:
    hook_kind, _ = _kind(model, kind)
    return [kind] if hook_kind is None else [hook_name(model, hook_kind, layer) for layer in layers]


def _entry_hook(model: TransformerBridge) -> str:
    return "hook_embed" if "hook_embed" in model.hook_dict else hook_name(model, "resid_pre", 0)


def _target_pass(
    side: ModelSide, tokens: Tensor, metric: Callable, names: Sequence[str], drop: int | None = None
) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    """Metric, activations and metric gradients at ``names`` of one forward + backward of ``side``.

    ``drop``: a layer whose attention and MLP outputs pass no gradient (GradDrop).
    """
    model = side.model
    store: dict[str, Tensor] = {}

    def leaf(x: Tensor, hook) -> Tensor:  # the graph starts here, whether or not the weights require grad
        return x.detach().requires_grad_(True)

    def keep(name: str):
        def save(x: Tensor, hook) -> Tensor:
            store[name] = carried(x)
            return store[name]

        return save

    stop = []
    if drop is not None:
        stop = [(hook_name(model, kind, drop), lambda x, hook: x.detach()) for kind in ("attn_out", "mlp_out")]
    with torch.enable_grad(), attach(model, [(_entry_hook(model), leaf)]), attach(model, side.hooks):
        with attach(model, [(n, keep(n)) for n in names]), attach(model, stop):
            value = metric(model(tokens))
        value = torch.as_tensor(value)
        _value(value.detach())
        wanted = [n for n in names if store[n].requires_grad]
        grads = dict(zip(wanted, torch.autograd.grad(value, [store[n] for n in wanted], allow_unused=True)))
    out = {n: torch.zeros_like(store[n]) if grads.get(n) is None else grads[n].detach() for n in names}
    return float(value.detach()), {n: store[n].detach() for n in names}, out


def _linear(delta: Tensor, grad: Tensor, axes: tuple[str, ...]) -> Tensor:
    """Per-node first-order estimate ``Δa · g`` summed over the batch and the axes a node spans."""
    prod = (delta.float() * grad.float()).sum(0)  # [pos, ...]
    if axes[1:] in (("pos",), ()):
        return prod.flatten(1).sum(-1)  # [pos]
    if axes[1:] == ("head",):
        return prod.sum(-1).sum(0)  # [head]
    if axes[1:] == ("neuron",):
        return prod.flatten(1).sum(0)  # [neuron]
    return prod.sum(-1)  # [pos, head]


def _saturation_fixed(
    model: TransformerBridge, layer: int, part: Literal["q", "k"], target: dict, source: dict, grads: dict
) -> Float[Tensor, "pos head"]:
    """AtP* estimate of each query (or key) node of ``layer``: exact pattern change, then linear."""
    q_name, k_name, pattern_name = attention_score_inputs(model, layer)
    q, k, pattern, g = target[q_name].float(), target[k_name].float(), target[pattern_name].float(), grads[pattern_name]
    attention_pattern_from(model, layer, q, k, pattern)  # raises when the scores cannot be rebuilt
    heads, kv_heads = q.shape[2], k.shape[2]
    expand = (lambda t: t.repeat_interleave(heads // kv_heads, dim=2)) if kv_heads != heads else (lambda t: t)
    scale = attention_scale(model)
    g = g.float()
    if part == "q":
        change = torch.einsum("bthd,bshd->bhts", source[q_name].float() - q, expand(k)) / scale
        scores = pattern.clamp_min(torch.finfo(torch.float32).tiny).log() + change
        scores = scores.masked_fill(pattern == 0, float("-inf"))
        est = (g * (scores.softmax(-1) - pattern)).sum(-1)  # [b, h, t]
        return est.sum(0).T  # [t, h]
    change = torch.einsum("bthd,bshd->bhts", q, expand(source[k_name].float() - k)) / scale
    # changing one key's score by δ in a softmax row: Σ g·A_new - Σ g·A = (g_s - Σ g·A) · u / (1 + u),
    # u = A_s (e^δ - 1); u / (1 + u) = 1 - exp(-logaddexp(log(1 - A_s), log A_s + δ)), stable at A_s in {0, 1}
    total = (g * pattern).sum(-1, keepdim=True)
    frac = -torch.expm1(-torch.logaddexp(torch.log1p(-pattern), pattern.log() + change))
    est = ((g - total) * frac).sum((0, 2))  # [h, s]
    return est.view(kv_heads, heads // kv_heads, -1).sum(1).T  # [s, kv_head]


def attribution_sweeps(
    target,
    source,
    metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Tensor],
    tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "batch pos"] | None = None,
    *,
    kinds: Sequence[str] = tuple(NODE_KINDS),
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    method: Method = "atp*",
    graddrop: bool = False,
) -> dict[str, PatchResult]:
    """Attribution-patching estimates of every node of each kind, from one forward/backward pass.

    Args:
        target: the model (or :class:`~workbench.hooks.ModelSide`) whose run is patched.
        source: the model (or side) whose activations are patched in; may be ``target`` itself.
        metric: logits ``[batch pos d_vocab]`` -> scalar, as for exact patching.
        tokens: the target's tokens.
        source_tokens: the source's tokens (default ``tokens``, as between two models).
        kinds: keys of :data:`NODE_KINDS` or full hook names.
        layers: layers to estimate (default all).
        positions: positions for per-position kinds (default all).
        method: ``"atp"`` (linear everywhere) or ``"atp*"`` (queries and keys through the exact softmax).
        graddrop: score nodes by GradDrop (one more forward + backward per layer; values are
            ``baseline + score`` with ``score >= 0``, a ranking magnitude).

    Returns:
        ``{kind: PatchResult}``; ``values`` are ``baseline + estimated effect``, like exact patching.
    """
    if method not in ("atp", "atp*"):
        raise ValueError(f"method must be 'atp' or 'atp*'; got {method!r}")
    target, source = as_side(target), as_side(source)
    source_tokens = tokens if source_tokens is None else source_tokens
    _check_pair(target, source, tokens, source_tokens)
    model = target.model
    n = model.cfg.n_layers
    layers = list(range(n)) if layers is None else [layer % n for layer in layers]
    seq = tokens.shape[1]
    positions = list(range(seq)) if positions is None else [p % seq for p in positions]
    names = {kind: _names(model, kind, layers) for kind in kinds}
    fixed = [k for k in ("head_q", "head_k") if k in kinds] if method == "atp*" else []
    extra = sorted({name for layer in layers for name in attention_score_inputs(model, layer)}) if fixed else []
    wanted = list(dict.fromkeys([*(x for v in names.values() for x in v), *extra]))
    source_logits, source_acts = source.run(source_tokens, wanted)
    baseline, target_acts, grads = _target_pass(target, tokens, metric, wanted)

    def estimate(grads: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for kind, kind_names in names.items():
            axes = _kind(model, kind)[1]
            per = []
            for layer, name in zip(layers, kind_names):
                if kind in fixed:
                    part: Literal["q", "k"] = "q" if kind == "head_q" else "k"
                    per.append(_saturation_fixed(model, layer, part, target_acts, source_acts, grads))
                else:
                    per.append(_linear(source_acts[name] - target_acts[name], grads[name], axes))
            values = torch.stack(per) if axes[0] == "layer" else per[0]
            out[kind] = values[:, positions] if "pos" in axes[1:] else values[positions] if axes[0] == "pos" else values
        return out

    estimates = estimate(grads)
    if graddrop:
        estimates = _graddrop(target, tokens, metric, wanted, layers, names, estimates, estimate)
    labels = tuple(model.to_str_tokens(tokens[0]))
    reference = _value(metric(source_logits))
    results = {}
    for kind, values in estimates.items():
        axes = _kind(model, kind)[1]
        kind_layers = tuple(layers) if axes[0] == "layer" else ()
        results[kind] = PatchResult(
            kind, axes, baseline + values, baseline, reference, labels, kind_layers, tuple(positions)
        )
    return results


def _graddrop(target, tokens, metric, wanted, layers, names, plain, estimate) -> dict[str, Tensor]:
    """Mean over downstream layers ``l`` of ``|estimate with layer l's gradient dropped|``."""
    model = target.model
    n = model.cfg.n_layers
    dropped = [estimate(_target_pass(target, tokens, metric, wanted, drop=drop)[2]) for drop in range(n)]
    out = {}
    for kind, values in plain.items():
        if _kind(model, kind)[1][0] != "layer":
            out[kind] = values.abs()
            continue
        rows = []
        for i, layer in enumerate(layers):
            first = layer if kind in ("resid_pre", "resid_mid") else layer + 1  # layers the node feeds
            stack = [dropped[drop][kind][i].abs() for drop in range(first, n)]
            rows.append(torch.stack(stack).mean(0) if stack else values[i].abs())
        out[kind] = torch.stack(rows)
    return out


def attribution_sweep(
    target,
    source,
    kind: str,
    metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Tensor],
    tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "batch pos"] | None = None,
    **kwargs,
) -> PatchResult:
    """Attribution-patching estimate of one node kind (arguments as :func:`attribution_sweeps`)."""
    return attribution_sweeps(target, source, metric, tokens, source_tokens, kinds=(kind,), **kwargs)[kind]


def _patch_of(model: TransformerBridge, result: PatchResult, row: pd.Series) -> Patch:
    hook_kind, axes = _kind(model, result.kind)
    layer = int(row["layer"]) if "layer" in axes else model.cfg.n_layers
    name = result.kind if hook_kind is None else hook_name(model, hook_kind, layer)
    pos = int(row["pos"]) if "pos" in axes else None
    index = int(row["head"]) if "head" in axes else int(row["neuron"]) if "neuron" in axes else None
    return Patch(layer, name, pos=pos, head=index)


def confirm(
    result: PatchResult,
    target,
    source,
    metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Tensor],
    tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "batch pos"] | None = None,
    *,
    k: int = 10,
    max_rows: int = 64,
) -> pd.DataFrame:
    """Exact patching of the ``k`` nodes an estimate ranks highest: ``result.top(k)`` plus ``exact``.

    Adds the columns ``estimate`` (the estimate's value minus baseline) and ``exact`` (the exact
    effect of patching that node alone, same inputs). Runs start at the node's layer and position
    (:mod:`~workbench.analysis.patch_engine`) unless the target has stateful hooks or a node lies
    after the last block; ``k`` as large as the result gives the exact sweep of any node kind.
    """
    target, source = as_side(target), as_side(source)
    source_tokens = tokens if source_tokens is None else source_tokens
    _check_pair(target, source, tokens, source_tokens)
    model = target.model
    top = result.top(k)
    patches = [_patch_of(model, result, row) for _, row in top.iterrows()]
    names = sorted({p.hook for p in patches})
    _, acts = source.run(source_tokens, names)
    staircase = target.fast and all(p.layer < model.cfg.n_layers for p in patches)
    with torch.no_grad(), attach(model, target.hooks):
        base = trace(model, tokens, names) if staircase else None
        target_acts = base.acts if base is not None else ModelSide(model).run(tokens, names)[1]
        plan = [prune(p, acts[p.hook], target_acts[p.hook]) for p in patches]
        todo = list(dict.fromkeys(p for p in plan if p is not None))
        if base is not None:
            values = run_staircase(model, base, acts, todo, metric, max_rows)
        else:
            values = run_full(model, tokens, acts, todo, metric, max_rows)
    top["estimate"] = top["value"] - result.baseline
    top["exact"] = [0.0 if p is None else _value(values[p]) - result.baseline for p in plan]
    return top


def fidelity(estimate: PatchResult, exact: PatchResult, k: int = 10) -> dict[str, float]:
    """How well an estimate ranks and sizes the nodes of an exact sweep of the same kind and cells.

    Returns Pearson and Spearman correlations of the effects (``value - baseline``), the recall of
    the exact top-``k`` (by |effect|) among the estimate's top-``k``, and the largest miss relative
    to the largest exact effect.
    """
    if estimate.values.shape != exact.values.shape:
        raise ValueError(
            f"estimate {tuple(estimate.values.shape)} and exact {tuple(exact.values.shape)} cover different cells: "
            "pass the same layers and positions to both sweeps"
        )
    a = (estimate.values - estimate.baseline).flatten().double()
    b = (exact.values - exact.baseline).flatten().double()

    def pearson(x: Tensor, y: Tensor) -> float:
        x, y = x - x.mean(), y - y.mean()
        den = (x.norm() * y.norm()).item()
        return float((x @ y).item() / den) if den > 0 else float("nan")

    def ranks(x: Tensor) -> Tensor:
        return x.argsort().argsort().double()

    k = min(k, len(b))
    top_exact = set(b.abs().topk(k).indices.tolist())
    top_est = set(a.abs().topk(k).indices.tolist())
    scale = b.abs().max().item()
    return {
        "pearson": pearson(a, b),
        "spearman": pearson(ranks(a), ranks(b)),
        f"top{k}_recall": len(top_exact & top_est) / k,
        "max_error": (a - b).abs().max().item() / scale if scale > 0 else float("nan"),
    }
