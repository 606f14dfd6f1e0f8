"""Ablating sets of MLP neurons, unconditionally or only where the gate / output have given signs.

The ablation experiments of Gerstner & Schütze (*Weakening Neurons*, ICLR 2026 submission; code:
github.com/sjgerstner/RW_functionalities, itself adapted from Gurnee et al. 2024, *Universal
Neurons in GPT2 Language Models*): a neuron set's post-activations are replaced (zero, mean,
multiplied by a factor, or fixed to a value) and the effect is read as next-token entropy and loss,
against random neuron sets with the same number of neurons per layer.

Where the intervention acts, on a gated MLP bridge (checked against the weights in the tests):

* ``blocks.L.mlp.hook_pre``: the gate projection ``x·W_gate`` (pre-activation) -- the "gate";
* ``blocks.L.mlp.hook_pre_linear``: the linear ("up", "in") projection ``x·W_in``;
* ``blocks.L.mlp.hook_post``: ``act(gate) ⊙ in``, the input of the down projection -- the "post".

Interventions replace entries of ``hook_post``. A *conditional* ablation touches only the entries
(token, neuron) where the gate and/or the post-activation have the requested signs, e.g.
``Ablation(gate="-", post="+")``: the paper's "gate<0, post>0" under which ablating OLMo-7B's
weakening neurons raised next-token entropy. The reference code multiplies the post-activation by
the sign of ``w_gate·w_in`` before testing its sign (so "post+" means "the input is on the gate's
side"); ``orient_post=True`` does that, the default tests the raw sign of ``hook_post``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config
from workbench.data.padding import right_pad
from workbench.hooks import attach, hook_name

__all__ = [
    "MODES",
    "Ablation",
    "AblationEffects",
    "AblationMode",
    "Neurons",
    "ablated",
    "ablation_effects",
    "ablation_hooks",
    "by_layer",
    "mlp_width",
    "next_token_metrics",
    "random_control",
    "tokenize_texts",
]

Neurons = Sequence[tuple[int, int]] | Mapping[int, Sequence[int]]
"""A neuron set: ``[(layer, neuron), ...]`` or ``{layer: [neuron, ...]}``."""

AblationMode = Literal["zero", "mean", "multiply", "fix"]
MODES: tuple[AblationMode, ...] = get_args(AblationMode)
Sign = Literal["+", "-"]


@dataclass(frozen=True)
class Ablation(Config):
    """What to do to the post-activations of a neuron set, and where."""

    mode: AblationMode = "zero"
    """zero: set to 0; mean: set to the neuron's mean; multiply: times value; fix: set to value."""
    value: float = 0.0
    """The factor (multiply) or the fixed activation (fix); unused otherwise."""
    gate: Sign | None = None
    """Only where the gate pre-activation is '+' (>0) or '-' (<0); None: regardless of the gate."""
    post: Sign | None = None
    """Only where the post-activation is '+' (>0) or '-' (<0); None: regardless of its sign."""
    orient_post: bool = False
    """Test the sign of post·sign(w_gate·w_in) instead of post's (as the reference code does)."""

    @property
    def label(self) -> str:
        """Short description, e.g. ``zero[gate-,post+]`` (``post~+`` when the post sign is oriented)."""
        post = "post~" if self.orient_post else "post"
        cond = ",".join(f"{k}{v}" for k, v in (("gate", self.gate), (post, self.post)) if v)
        val = f"({self.value:g})" if self.mode in ("multiply", "fix") else ""
        return f"{self.mode}{val}" + (f"[{cond}]" if cond else "")


def by_layer(neurons: Neurons) -> dict[int, list[int]]:
    """Group a neuron set by layer (sorted, duplicates removed)."""
    items = neurons.items() if isinstance(neurons, Mapping) else _pairs_by_layer(neurons).items()
    return {int(layer): sorted({int(n) for n in ns}) for layer, ns in sorted(items) if len(ns)}


def _pairs_by_layer(pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for layer, neuron in pairs:
        grouped.setdefault(int(layer), []).append(int(neuron))
    return grouped


def _sign_mask(x: Tensor, sign: str | None) -> Tensor | None:
    if sign is None:
        return None
    return x > 0 if sign == "+" else x < 0


def ablation_hooks(
    model: TransformerBridge, neurons: Neurons, spec: Ablation, *, means: Float[Tensor, "layer d_mlp"] | None = None
) -> list[tuple[str, Callable]]:
    """Forward hooks that apply ``spec`` to ``neurons`` (for :func:`workbench.hooks.attach`).

    Args:
        model: the bridge (a gated MLP if ``spec`` conditions on the gate).
        neurons: the neuron set.
        spec: the intervention.
        means: per-neuron mean post-activations, required for ``mode="mean"``
            (e.g. ``ActivationStats.mean_post`` from :mod:`workbench.neurons.activations`).
    """
    if spec.mode == "mean" and means is None:
        raise ValueError("mode='mean' needs means: pass activation_stats(model, texts).mean_post")
    gated = bool(getattr(model.cfg, "gated_mlp", False))
    if (spec.gate is not None or spec.orient_post) and not gated:
        raise ValueError(
            "conditions on the gate (gate=..., orient_post) need a gated MLP; this model's MLP has no gate"
        )
    hooks = []
    for layer, idx_list in by_layer(neurons).items():
        idx = torch.tensor(idx_list)
        if idx.max() >= mlp_width(model):
            raise IndexError(f"neuron {int(idx.max())} out of range in layer {layer}: d_mlp = {mlp_width(model)}")
        store: dict[str, Tensor] = {}
        if spec.gate is not None:
            hooks.append((hook_name(model, "mlp_pre", layer), _gate_saver(store, idx)))
        orient = None
        if spec.orient_post:
            w = model.blocks[layer].mlp
            orient = torch.sign((w.W_gate[:, idx] * w.W_in[:, idx]).sum(0)).detach()
        fill = means[layer, idx].detach() if means is not None else None
        hooks.append((hook_name(model, "mlp_post", layer), _post_editor(spec, idx, store, orient, fill)))
    return hooks


def _gate_saver(store: dict[str, Tensor], idx: Tensor) -> Callable:
    def save(gate: Tensor, hook) -> None:
        store["gate"] = gate[..., idx.to(gate.device)].detach()

    return save


def _post_editor(
    spec: Ablation, idx: Tensor, store: dict[str, Tensor], orient: Tensor | None, fill: Tensor | None
) -> Callable:
    def edit(post: Tensor, hook) -> Tensor:
        dev_idx = idx.to(post.device)
        old = post[..., dev_idx]
        if spec.mode == "zero":
            new = torch.zeros_like(old)
        elif spec.mode == "mean":
            if fill is None:
                raise ValueError("mode='mean' needs means: pass activation_stats(model, texts).mean_post")
            new = fill.to(old).expand_as(old)
        elif spec.mode == "multiply":
            new = old * spec.value
        else:
            new = torch.full_like(old, spec.value)
        mask = torch.ones_like(old, dtype=torch.bool)
        gate_mask = _sign_mask(store.get("gate", old), spec.gate)
        if gate_mask is not None:
            mask &= gate_mask
        post_mask = _sign_mask(old * orient.to(old) if orient is not None else old, spec.post)
        if post_mask is not None:
            mask &= post_mask
        post = post.clone()
        post[..., dev_idx] = torch.where(mask, new, old)
        return post

    return edit


@contextmanager
def ablated(model: TransformerBridge, neurons: Neurons, spec: Ablation, *, means: Tensor | None = None) -> Iterator:
    """Context manager: ``model`` with ``neurons`` ablated by ``spec`` inside the block."""
    with attach(model, ablation_hooks(model, neurons, spec, means=means)):
        yield model


def mlp_width(model: TransformerBridge) -> int:
    """The number of neurons per MLP layer (``d_mlp``); ``ValueError`` for a model without MLPs."""
    if model.cfg.d_mlp is None:
        raise ValueError(f"{model.cfg.model_name} has no MLP layers (attention-only): neuron analyses need MLPs")
    return model.cfg.d_mlp


def random_control(
    neurons: Neurons, d_mlp: int, *, seed: int = 0, exclude: Neurons | None = None
) -> dict[int, list[int]]:
    """A random neuron set with as many neurons per layer as ``neurons``, disjoint from ``exclude``.

    ``exclude`` defaults to ``neurons`` itself (the reference code excludes the whole class).
    """
    gen = torch.Generator().manual_seed(seed)
    excluded = by_layer(neurons if exclude is None else exclude)
    control = {}
    for layer, ns in by_layer(neurons).items():
        pool = torch.tensor(sorted(set(range(d_mlp)) - set(excluded.get(layer, ()))))
        if len(pool) < len(ns):
            raise ValueError(
                f"layer {layer}: {len(ns)} neurons asked for but only {len(pool)} outside the excluded set"
            )
        control[layer] = sorted(pool[torch.randperm(len(pool), generator=gen)[: len(ns)]].tolist())
    return control


def tokenize_texts(model: TransformerBridge, texts: Sequence[str], *, max_len: int = 64) -> list[Tensor]:
    """Token ids of each text (the model's BOS convention), cut to ``max_len``; texts shorter than 2 tokens dropped."""
    out = [model.to_tokens(t, truncate=False)[0, :max_len].cpu() for t in texts]
    return [t for t in out if len(t) >= 2]


@torch.no_grad()
def next_token_metrics(model: TransformerBridge, seqs: Sequence[Tensor], *, batch_size: int = 16) -> dict[str, Tensor]:
    """Per-sequence next-token entropy (nats) and loss of the model as it is (hooks included).

    Sequences are right-padded (causal attention: padding never reaches real positions).

    Returns:
        ``mean_entropy`` and ``mean_loss`` (mean over each sequence's predicted positions),
        ``last_entropy`` (entropy of the prediction after the last token), each ``[n_seqs]``.
    """
    device = model.cfg.device
    ent_mean, loss_mean, ent_last = [], [], []
    for start in range(0, len(seqs), batch_size):
        tokens, mask = right_pad(seqs[start : start + batch_size], 0)
        logits = model(tokens.to(device)).float().cpu()
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)  # batch pos
        loss = -logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        pred_mask = mask[:, 1:]
        ent_mean.append((entropy[:, :-1] * pred_mask).sum(1) / pred_mask.sum(1))
        loss_mean.append((loss * pred_mask).sum(1) / pred_mask.sum(1))
        ent_last.append(entropy[torch.arange(len(tokens)), mask.sum(1) - 1])
    return {"mean_entropy": torch.cat(ent_mean), "mean_loss": torch.cat(loss_mean), "last_entropy": torch.cat(ent_last)}


@dataclass(frozen=True)
class AblationEffects:
    """Entropy and loss with each neuron set ablated, its random controls, and the clean model."""

    frame: pd.DataFrame
    """Long rows: ``set, kind ('clean'|'target'|'control'), repeat, n_neurons, ablation, data ('corpus'|'prompt'),
    item, metric, value``."""

    def to_frame(self) -> pd.DataFrame:
        """The long frame."""
        return self.frame

    def summary(self) -> pd.DataFrame:
        """Mean per set and kind over items (and controls): ``set, kind, data, metric, value, delta``."""
        df = self.frame
        means = df.groupby(["set", "kind", "repeat", "data", "metric"], as_index=False)["value"].mean()
        means = means.groupby(["set", "kind", "data", "metric"], as_index=False)["value"].mean()
        clean = means[means.kind == "clean"].set_index(["data", "metric"])["value"]
        means["delta"] = [v - clean[(d, m)] for v, d, m in zip(means.value, means.data, means.metric)]
        return means


def ablation_effects(
    model: TransformerBridge,
    texts: Sequence[str],
    sets: Mapping[str, Neurons],
    spec: Ablation,
    *,
    prompts: Sequence[str] = (),
    n_controls: int = 3,
    exclude: Mapping[str, Neurons] | None = None,
    means: Tensor | None = None,
    seed: int = 0,
    max_len: int = 64,
    batch_size: int = 16,
) -> AblationEffects:
    """Next-token entropy and loss on a corpus (and last-position entropy on prompts) per ablated set.

    Args:
        model: the bridge.
        texts: corpus texts (each cut to ``max_len`` tokens).
        sets: named neuron sets to ablate.
        spec: the intervention (see :class:`Ablation`).
        prompts: texts whose next-token entropy after the last token is reported per prompt.
        n_controls: random sets per named set, same count per layer (:func:`random_control`).
        exclude: per set name, neurons the controls must avoid (e.g. the whole class); default the set.
        means: per-neuron means for ``mode='mean'``.
        seed: seed of the controls.
        max_len: token cut-off of the corpus texts.
        batch_size: sequences per forward.
    """
    corpus = tokenize_texts(model, texts, max_len=max_len)
    prompt_seqs = [model.to_tokens(p)[0].cpu() for p in prompts]
    runs: list[tuple[str, str, int, dict[int, list[int]]]] = [("clean", "clean", 0, {})]
    for i, (name, neurons) in enumerate(sets.items()):
        runs.append((name, "target", 0, by_layer(neurons)))
        avoid = (exclude or {}).get(name)
        for r in range(n_controls):
            runs.append(
                (name, "control", r, random_control(neurons, mlp_width(model), seed=seed + 1000 * i + r, exclude=avoid))
            )
    rows = []
    for name, kind, repeat, neurons in tqdm(runs, desc="ablations", leave=False):
        with ablated(model, neurons, spec, means=means):
            corpus_m = next_token_metrics(model, corpus, batch_size=batch_size)
            prompt_m = next_token_metrics(model, prompt_seqs, batch_size=batch_size) if prompt_seqs else None
        n = sum(len(v) for v in neurons.values())
        base = dict(set=name, kind=kind, repeat=repeat, n_neurons=n, ablation=spec.label)
        for metric in ("mean_entropy", "mean_loss"):
            rows += [
                dict(base, data="corpus", item=j, metric=metric.removeprefix("mean_"), value=v)
                for j, v in enumerate(corpus_m[metric].tolist())
            ]
        if prompt_m is not None:
            rows += [
                dict(base, data="prompt", item=j, metric="entropy", value=v)
                for j, v in enumerate(prompt_m["last_entropy"].tolist())
            ]
    return AblationEffects(pd.DataFrame(rows))
