"""Activation statistics of MLP neurons, and per-neuron / per-residual-dimension profiles.

Activation frequencies by RW class follow Gerstner & Schütze (*Weakening Neurons*, ICLR 2026
submission, section 5; code: github.com/sjgerstner/RW_functionalities ``freqs.py``): a gated
neuron "activates" when its gate pre-activation is positive (``freq_gate_pos``, the paper's
frequency); since SiLU/GELU gates pass negative values too, the four sign combinations of gate and
linear input are counted as well (as in the authors' GLUScope tool). Magnitude is measured by what
the neuron writes into the residual, ``|post|·‖w_out‖``: its mean (the paper's "mean" metric) and
how often it exceeds ``large`` times the norm of the residual it reads (``freq_large``).

:func:`neuron_profile` joins weights (cosines, RW class, norms) and activations in one frame keyed
by ``(layer, neuron)``, so other per-neuron tables (e.g. direct logit attribution) join on the same
keys. :func:`neuron_tokens` reads one neuron's weight vectors through the unembedding, and
:func:`dimension_neurons` lists the neurons that read or write one residual dimension most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.attribution import NeuronAttribution
from workbench.data.padding import right_pad
from workbench.hooks import attach, check_layer, hook_name
from workbench.neurons.ablation import mlp_width, tokenize_texts
from workbench.neurons.weights import NeuronClasses, WeightCosines, mlp_weights

__all__ = [
    "ActivationStats",
    "activation_stats",
    "dimension_neurons",
    "frequency_by_class",
    "neuron_profile",
    "neuron_tokens",
]

SIGN_COMBOS = ("gate+in+", "gate+in-", "gate-in+", "gate-in-")


@dataclass(frozen=True)
class ActivationStats:
    """Per-neuron statistics over the tokens of a corpus."""

    n_tokens: int
    """Tokens counted (all positions of all texts)."""
    freq_gate_pos: Float[Tensor, "layer d_mlp"]
    """Fraction of tokens with gate (``hook_pre``) > 0; for non-gated MLPs, pre-activation > 0."""
    freq_post_pos: Float[Tensor, "layer d_mlp"]
    """Fraction of tokens with post-activation (``hook_post``) > 0."""
    freq_large: Float[Tensor, "layer d_mlp"]
    """Fraction of tokens where ``|post|·‖w_out‖ > large·‖resid_mid‖``."""
    mean_post: Float[Tensor, "layer d_mlp"]
    """Mean post-activation (the fill value of mean ablations)."""
    mean_write: Float[Tensor, "layer d_mlp"]
    """Mean of ``|post|·‖w_out‖``: the norm of what the neuron adds to the residual."""
    freq_combos: dict[str, Tensor]
    """Gated MLPs: fraction of tokens per sign combination of gate and linear input (:data:`SIGN_COMBOS`)."""
    large: float
    """Threshold of :attr:`freq_large`, relative to the residual norm."""

    def to_frame(self) -> pd.DataFrame:
        """One row per neuron: ``layer, neuron`` and every statistic as a column."""
        n_layers, d_mlp = self.mean_post.shape
        cols = {
            "layer": np.repeat(np.arange(n_layers), d_mlp),
            "neuron": np.tile(np.arange(d_mlp), n_layers),
            "freq_gate_pos": self.freq_gate_pos,
            "freq_post_pos": self.freq_post_pos,
            "freq_large": self.freq_large,
            "mean_post": self.mean_post,
            "mean_write": self.mean_write,
        }
        cols.update({f"freq_{k}": v for k, v in self.freq_combos.items()})
        return pd.DataFrame({k: v.flatten().numpy() if isinstance(v, Tensor) else v for k, v in cols.items()})


@torch.no_grad()
def activation_stats(
    model: TransformerBridge, texts: Sequence[str], *, large: float = 0.05, max_len: int = 64, batch_size: int = 16
) -> ActivationStats:
    """Count signs and magnitudes of every neuron's activations over a corpus.

    Hooks accumulate running sums during the forward (nothing is cached), so memory stays small.

    Args:
        model: the bridge.
        texts: corpus texts, each cut to ``max_len`` tokens.
        large: threshold of ``freq_large`` relative to the residual norm at the MLP's input.
        max_len: token cut-off.
        batch_size: sequences per forward.
    """
    n_layers, d_mlp = model.cfg.n_layers, mlp_width(model)
    gated = bool(getattr(model.cfg, "gated_mlp", False))
    out_norm = mlp_weights(model).W_out.norm(dim=-1)  # layer d_mlp
    sums = {
        k: torch.zeros(n_layers, d_mlp, dtype=torch.float64)
        for k in ("gate", "post", "large", "mean", "write", *(SIGN_COMBOS if gated else ()))
    }
    state: dict = {}

    def rows(x: Tensor) -> Tensor:  # the real (unpadded) positions: [tokens, ...]
        return x.detach()[state["mask"].to(x.device)].float().cpu()

    def add(key: str, layer: int, x: Tensor) -> None:
        sums[key][layer] += x.float().sum(0).double()

    def on_resid(layer):
        def f(x, hook):
            state["resid"] = rows(x).norm(dim=-1)

        return f

    def on_gate(layer):
        def f(x, hook):
            state["gate"] = rows(x) > 0
            add("gate", layer, state["gate"])

        return f

    def on_in(layer):
        def f(x, hook):
            state["in"] = rows(x) > 0

        return f

    def on_post(layer):
        def f(x, hook):
            post = rows(x)
            write = post.abs() * out_norm[layer]
            add("post", layer, post > 0)
            add("mean", layer, post)
            add("write", layer, write)
            add("large", layer, write > large * state["resid"][:, None])
            if gated:
                g, i = state["gate"], state["in"]
                for key, cond in zip(SIGN_COMBOS, (g & i, g & ~i, ~g & i, ~g & ~i)):
                    add(key, layer, cond)

        return f

    hooks = []
    for layer in range(n_layers):
        hooks += [
            (hook_name(model, "resid_mid", layer), on_resid(layer)),
            (hook_name(model, "mlp_pre", layer), on_gate(layer)),
        ]
        if gated:
            hooks.append((hook_name(model, "mlp_pre_linear", layer), on_in(layer)))
        hooks.append((hook_name(model, "mlp_post", layer), on_post(layer)))
    seqs = tokenize_texts(model, texts, max_len=max_len)
    n_tokens = 0
    with attach(model, hooks):
        batches = [right_pad(seqs[i : i + batch_size], 0) for i in range(0, len(seqs), batch_size)]
        for tokens, mask in tqdm(batches, desc="activation stats", leave=False):
            state["mask"] = mask
            n_tokens += int(mask.sum())
            model(tokens.to(model.cfg.device))
    if n_tokens == 0:
        raise ValueError("no tokens to count: pass texts of at least two tokens")
    freq = {k: (v / n_tokens).float() for k, v in sums.items()}
    return ActivationStats(
        n_tokens=n_tokens,
        freq_gate_pos=freq["gate"],
        freq_post_pos=freq["post"],
        freq_large=freq["large"],
        mean_post=freq["mean"],
        mean_write=freq["write"],
        freq_combos={k: freq[k] for k in SIGN_COMBOS if k in freq},
        large=large,
    )


def frequency_by_class(stats: ActivationStats, classes: NeuronClasses) -> pd.DataFrame:
    """Mean of every activation statistic per layer and RW class: ``layer, rw_class, n_neurons, <stat>...``."""
    df = stats.to_frame().merge(classes.to_frame(), on=["layer", "neuron"])
    value_cols = [c for c in df.columns if c not in ("layer", "neuron", "rw_class")]
    grouped = df.groupby(["layer", "rw_class"], observed=True)
    out = grouped[value_cols].mean()
    out.insert(0, "n_neurons", grouped.size())
    return out.reset_index()


def neuron_profile(
    model: TransformerBridge,
    cosines: WeightCosines | None = None,
    classes: NeuronClasses | None = None,
    stats: ActivationStats | None = None,
    attribution: NeuronAttribution | None = None,
) -> pd.DataFrame:
    """Everything known about every neuron, one row per ``(layer, neuron)``.

    Columns: weight norms (``norm_in, norm_gate, norm_out``), cosines, ``rw_class``, activation
    statistics and ``dla`` (direct logit attribution from
    :func:`workbench.analysis.attribution.neuron_attribution`, mean over its prompts), where given.
    """
    w = mlp_weights(model)
    n_layers, d_mlp, _ = w.W_in.shape
    df = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), d_mlp),
            "neuron": np.tile(np.arange(d_mlp), n_layers),
            "norm_in": w.W_in.norm(dim=-1).flatten().numpy(),
            "norm_gate": np.nan if w.W_gate is None else w.W_gate.norm(dim=-1).flatten().numpy(),
            "norm_out": w.W_out.norm(dim=-1).flatten().numpy(),
        }
    )
    for part in (cosines, classes, stats):
        if part is not None:
            df = df.merge(part.to_frame(), on=["layer", "neuron"], how="left")
    if attribution is not None:
        dla = attribution.to_frame()[["layer", "neuron", "value"]].rename(columns={"value": "dla"})
        df = df.merge(dla, on=["layer", "neuron"], how="left")
    return df


def neuron_tokens(model: TransformerBridge, layer: int, neuron: int, *, k: int = 10) -> pd.DataFrame:
    """The tokens each weight vector of one neuron points to through the unembedding ``W_U``.

    Returns:
        Long frame ``vector ('w_out','-w_out','w_in','-w_in','w_gate','-w_gate'), rank, token, score``.
    """
    layer = check_layer(model, layer)
    if not 0 <= neuron < mlp_width(model):
        raise IndexError(f"neuron {neuron} out of range: d_mlp = {mlp_width(model)}")
    w = mlp_weights(model)
    vectors = {"w_out": w.W_out[layer, neuron], "w_in": w.W_in[layer, neuron]}
    if w.W_gate is not None:
        vectors["w_gate"] = w.W_gate[layer, neuron]
    W_U = model.W_U.detach().float().cpu()
    rows = []
    for name, vec in vectors.items():
        for sign, label in ((1, name), (-1, f"-{name}")):
            scores, ids = torch.topk(sign * vec @ W_U, k)
            rows += [
                (label, r, model.tokenizer.decode([int(i)]), float(s)) for r, (s, i) in enumerate(zip(scores, ids))
            ]
    return pd.DataFrame(rows, columns=["vector", "rank", "token", "score"])


def dimension_neurons(model: TransformerBridge, dim: int, *, k: int = 20) -> pd.DataFrame:
    """The neurons whose weights read (``w_in``, ``w_gate``) or write (``w_out``) residual dimension ``dim`` most.

    Returns:
        Frame ``vector, rank, layer, neuron, weight, share`` with the top ``k`` neurons by ``|weight|``
        per vector, where ``share`` is ``weight² / ‖vector‖²`` (how much of the vector lies on ``dim``).
    """
    if not 0 <= dim < model.cfg.d_model:
        raise IndexError(f"residual dimension {dim} out of range: d_model = {model.cfg.d_model}")
    w = mlp_weights(model)
    rows = []
    for name, mat in (("w_out", w.W_out), ("w_in", w.W_in), ("w_gate", w.W_gate)):
        if mat is None:
            continue
        col = mat[..., dim]
        share = col**2 / (mat**2).sum(-1)
        top = torch.topk(col.abs().flatten(), min(k, col.numel())).indices
        for rank, flat in enumerate(top.tolist()):
            layer, neuron = divmod(flat, mat.shape[1])
            rows.append((name, rank, layer, neuron, float(col[layer, neuron]), float(share[layer, neuron])))
    return pd.DataFrame(rows, columns=["vector", "rank", "layer", "neuron", "weight", "share"])
