"""Read-write (RW) functionalities of gated MLP neurons, from the cosines of their weight vectors.

Implements the weight analysis of Gerstner & Schütze, *Understanding Gated Neurons in Transformers
from Their Input-Output Functionality* (arXiv:2505.17936, 2025) and its follow-up *Weakening
Neurons: A Newly Discovered Read-Write Functionality in Transformers* (ICLR 2026 submission; code:
github.com/sjgerstner/RW_functionalities).

A gated neuron ``n`` of layer ``L`` computes ``post = act(x·w_gate) · (x·w_in)`` from the normalised
residual ``x`` and adds ``post · w_out`` to the residual. Three cosines describe what it does with
what it reads: ``cos(w_in, w_out)``, ``cos(w_gate, w_out)`` and ``cos(w_gate, w_in)``.

Classes (the paper's rules, confirmed against ``compute_category`` / ``COMBO_TO_NAME`` in the
reference code). Each cosine is rounded to +1 (``> threshold``), -1 (``< -threshold``) or 0, with
threshold 0.5; a neuron's key is the triple

* ``a = approx cos(w_in, w_out)`` in {1, 0, -1}: does the neuron write back (+) or against (-) the
  direction its linear input reads? 1 = *strengthening*, -1 = *weakening*, 0 = neither;
* ``b = |approx cos(w_gate, w_out)|`` in {1, 0}: does the gate read the output direction too? If
  not, the in/out relation holds only where the gate lets it through: *conditional* variant; if
  ``a = 0`` and ``b = 1`` the neuron changes the gate's direction in proportion to itself
  (*proportional change*); if both are 0 the output is orthogonal to what is read (*orthogonal
  output*);
* ``c`` in {1, 0}, the consistency bit: 1 if ``approx cos(w_gate, w_in) == a · approx cos(w_gate,
  w_out)`` (the three signs agree, as they must for nearly parallel vectors), and 1 for orthogonal
  output; otherwise the neuron is *atypical*.

That gives 11 classes (:data:`CLASS_NAMES`); ``(0, 0, 0)`` cannot occur. The headline finding is
that weakening neurons (``(-1, 1, 1)``) are few, sit in late layers, fire often and matter.

Non-gated MLPs (GPT-2) have no ``w_gate``: only ``cos(w_in, w_out)`` is defined and a neuron is
*strengthening*, *orthogonal output* or *weakening* by ``a`` alone, as in the reference code's
vanilla categories. :func:`weight_cosines` then leaves the gate cosines out (NaN in frames).

Which weights: the bridge's, as exposed (``model.W_in``, ``W_gate``, ``W_out``). In compatibility
mode ``fold_ln`` multiplies the RMSNorm gain into ``W_in``/``W_gate`` (``w ⊙ g``), which is the
direction the neuron really reads from the gain-free normalised residual; ``W_out`` is untouched for
RMSNorm models. The reference code also used TransformerLens-processed weights (``fold_ln`` on);
on OLMo-7B-0424, whose norms have no gain, folded and raw weights coincide. For the raw checkpoint
weights, pass a bridge loaded with ``load_model(..., compat=False)``. The two differ on models with
a gain (SmolLM2, Llama): the experiment reports which it used.

Randomness baselines: two random directions in dimension ``d`` have a cosine distributed as
``2·Beta((d-1)/2, (d-1)/2) - 1`` (:func:`beta_randomness_region`); the reference code also uses
the quantiles of the cosines of *mismatched* weight pairs (``w_in`` of one neuron with ``w_out`` of
another, same layer; :func:`empirical_randomness_region`), with ``|cos|`` for gate/in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "CLASS_KEYS",
    "CLASS_NAMES",
    "VANILLA_CLASS_NAMES",
    "MLPWeights",
    "NeuronClasses",
    "WeightCosines",
    "beta_randomness_region",
    "classify",
    "cosine_quantile",
    "empirical_randomness_region",
    "mlp_weights",
    "weight_cosines",
]

CLASS_KEYS: dict[tuple[int, int, int], str] = {
    (1, 1, 1): "strengthening",
    (1, 1, 0): "atypical strengthening",
    (1, 0, 1): "conditional strengthening",
    (1, 0, 0): "atypical conditional strengthening",
    (0, 1, 1): "proportional change",
    (0, 1, 0): "atypical proportional change",
    (0, 0, 1): "orthogonal output",
    (-1, 1, 1): "weakening",
    (-1, 1, 0): "atypical weakening",
    (-1, 0, 1): "conditional weakening",
    (-1, 0, 0): "atypical conditional weakening",
}
"""(approx cos(w_in,w_out), |approx cos(w_gate,w_out)|, consistency bit) -> class name."""

CLASS_NAMES: tuple[str, ...] = tuple(CLASS_KEYS.values())
"""The 11 classes of gated neurons, from strengthening to weakening."""

VANILLA_CLASS_NAMES: tuple[str, ...] = ("strengthening", "orthogonal output", "weakening")
"""Classes of non-gated neurons (approx cos(w_in, w_out) = 1, 0, -1)."""


@dataclass(frozen=True)
class MLPWeights:
    """One weight vector per neuron: rows are neurons, columns residual dimensions."""

    W_in: Float[Tensor, "layer d_mlp d_model"]
    """Linear ("up") input weights."""
    W_gate: Float[Tensor, "layer d_mlp d_model"] | None
    """Gate input weights; ``None`` for non-gated MLPs."""
    W_out: Float[Tensor, "layer d_mlp d_model"]
    """Output weights."""

    @property
    def gated(self) -> bool:
        """Whether the MLP has a gate."""
        return self.W_gate is not None


def mlp_weights(model: TransformerBridge) -> MLPWeights:
    """The MLP weights of a bridge as it exposes them (see the module docstring on folding)."""
    gated = bool(getattr(model.cfg, "gated_mlp", False))
    with torch.no_grad():
        w_in = model.W_in.detach().transpose(1, 2).float().cpu()
        gate = model.W_gate if gated else None
        w_gate = None if gate is None else gate.detach().transpose(1, 2).float().cpu()
        w_out = model.W_out.detach().float().cpu()
    return MLPWeights(w_in, w_gate, w_out)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)


@dataclass(frozen=True)
class WeightCosines:
    """Per-neuron cosines between its weight vectors."""

    in_out: Float[Tensor, "layer d_mlp"]
    """cos(w_in, w_out)."""
    gate_out: Float[Tensor, "layer d_mlp"] | None
    """cos(w_gate, w_out); ``None`` for non-gated MLPs."""
    gate_in: Float[Tensor, "layer d_mlp"] | None
    """cos(w_gate, w_in); ``None`` for non-gated MLPs."""
    d_model: int
    """Dimension of the vectors (for the randomness baseline)."""

    @property
    def gated(self) -> bool:
        """Whether gate cosines exist."""
        return self.gate_out is not None

    def to_frame(self) -> pd.DataFrame:
        """One row per neuron: ``layer, neuron, cos_in_out, cos_gate_out, cos_gate_in`` (NaN if not gated)."""
        n_layers, d_mlp = self.in_out.shape
        nan = np.full(n_layers * d_mlp, np.nan)
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(n_layers), d_mlp),
                "neuron": np.tile(np.arange(d_mlp), n_layers),
                "cos_in_out": self.in_out.flatten().numpy(),
                "cos_gate_out": nan if self.gate_out is None else self.gate_out.flatten().numpy(),
                "cos_gate_in": nan if self.gate_in is None else self.gate_in.flatten().numpy(),
            }
        )


def weight_cosines(source) -> WeightCosines:
    """cos(w_in, w_out), cos(w_gate, w_out), cos(w_gate, w_in) of every neuron.

    Args:
        source: a bridge, or :class:`MLPWeights`.
    """
    w = source if isinstance(source, MLPWeights) else mlp_weights(source)
    return WeightCosines(
        in_out=_cos(w.W_in, w.W_out),
        gate_out=None if w.W_gate is None else _cos(w.W_gate, w.W_out),
        gate_in=None if w.W_gate is None else _cos(w.W_gate, w.W_in),
        d_model=w.W_in.shape[-1],
    )


def _approx(x: Tensor, threshold: float) -> Tensor:
    return (x > threshold).long() - (x < -threshold).long()


@dataclass(frozen=True)
class NeuronClasses:
    """The RW class of every neuron."""

    index: Int[Tensor, "layer d_mlp"]
    """Index into :attr:`names` per neuron."""
    names: tuple[str, ...]
    """Class names (:data:`CLASS_NAMES` or :data:`VANILLA_CLASS_NAMES`)."""
    threshold: float
    """Cosine threshold used."""

    def label(self, layer: int, neuron: int) -> str:
        """Class name of one neuron."""
        return self.names[int(self.index[layer, neuron])]

    def to_frame(self) -> pd.DataFrame:
        """One row per neuron: ``layer, neuron, rw_class``."""
        n_layers, d_mlp = self.index.shape
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(n_layers), d_mlp),
                "neuron": np.tile(np.arange(d_mlp), n_layers),
                "rw_class": pd.Categorical(np.asarray(self.names)[self.index.flatten().numpy()], categories=self.names),
            }
        )

    def counts_by_layer(self) -> pd.DataFrame:
        """Long frame ``layer, rw_class, count, fraction`` (every class in every layer, zeros included)."""
        n_layers, d_mlp = self.index.shape
        counts = torch.stack([(self.index == i).sum(1) for i in range(len(self.names))], 1)  # layer class
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(n_layers), len(self.names)),
                "rw_class": np.tile(np.asarray(self.names), n_layers),
                "count": counts.flatten().numpy(),
                "fraction": (counts.flatten().double() / d_mlp).numpy(),
            }
        )

    def neurons(self, name: str) -> list[tuple[int, int]]:
        """All ``(layer, neuron)`` of one class."""
        if name not in self.names:
            raise KeyError(f"unknown class {name!r}; classes: {', '.join(self.names)}")
        return [
            (int(layer), int(neuron)) for layer, neuron in torch.nonzero(self.index == self.names.index(name)).tolist()
        ]


def classify(cosines: WeightCosines, threshold: float = 0.5) -> NeuronClasses:
    """Assign every neuron its RW class by the paper's rules (module docstring).

    Args:
        cosines: from :func:`weight_cosines`.
        threshold: a cosine counts as +1 above ``threshold``, -1 below ``-threshold``, else 0.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    a = _approx(cosines.in_out, threshold)
    if cosines.gate_out is None or cosines.gate_in is None:
        return NeuronClasses(index=1 - a, names=VANILLA_CLASS_NAMES, threshold=threshold)
    gate_out = _approx(cosines.gate_out, threshold)
    consistent = (_approx(cosines.gate_in, threshold) == a * gate_out) | ((a == 0) & (gate_out == 0))
    keys = torch.stack([a, gate_out.abs(), consistent.long()], -1)
    index = torch.full(a.shape, -1, dtype=torch.long)
    for i, key in enumerate(CLASS_KEYS):
        index[(keys == torch.tensor(key)).all(-1)] = i
    assert (index >= 0).all(), "every key triple but (0, 0, 0) is a class, and (0, 0, 0) cannot occur"
    return NeuronClasses(index=index, names=CLASS_NAMES, threshold=threshold)


def cosine_quantile(d: int, q: float | Tensor, *, grid: int = 200_001) -> Tensor:
    """Quantile ``q`` of the cosine of two independent uniformly random directions in ``R^d``.

    The angle ``θ`` has density proportional to ``sin(θ)^(d-2)`` on ``[0, π]`` (so ``cos θ`` is
    ``2·Beta((d-1)/2, (d-1)/2) - 1``); its CDF is integrated numerically (trapezoid rule in float64
    on ``grid`` points), which needs no scipy and is accurate to ~1e-6 for any ``d >= 2``.
    """
    if d < 2:
        raise ValueError(f"the cosine of random vectors needs d >= 2, got {d}")
    q = torch.as_tensor(q, dtype=torch.float64)
    if ((q < 0) | (q > 1)).any():
        raise ValueError("quantiles must lie in [0, 1]")
    theta = torch.linspace(0, math.pi, grid, dtype=torch.float64)
    log_density = (d - 2) * torch.log(torch.sin(theta).clamp_min(1e-300))
    density = torch.exp(log_density - log_density.max())
    cdf_theta = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((density[1:] + density[:-1]) / 2, 0)])
    cdf_theta = cdf_theta / cdf_theta[-1]
    # P(cos θ <= t) = P(θ >= arccos t) = 1 - F_θ(arccos t): find θ with F_θ(θ) = 1 - q.
    target = 1 - q
    idx = torch.searchsorted(cdf_theta, target.clamp(0, 1)).clamp(1, grid - 1)
    lo, hi = cdf_theta[idx - 1], cdf_theta[idx]
    frac = torch.where(hi > lo, (target - lo) / (hi - lo), torch.zeros_like(target))
    theta_q = theta[idx - 1] + frac * (theta[idx] - theta[idx - 1])
    return torch.cos(theta_q)


def beta_randomness_region(d: int, p: float = 0.05) -> tuple[float, float]:
    """The central region where the cosine of two random vectors in ``R^d`` falls with probability ``1-p``."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    low, high = cosine_quantile(d, torch.tensor([p / 2, 1 - p / 2])).tolist()
    return low, high


def empirical_randomness_region(source, p: float = 0.05, *, n_sample: int | None = 512, seed: int = 0) -> pd.DataFrame:
    """Quantiles of the cosines of mismatched weight pairs (different neurons of one layer).

    As in the reference code: for in/out and gate/out the central ``1-p`` region of
    ``cos(w_in[i], w_out[j])``, ``i != j``; for gate/in the ``1-p`` quantile of ``|cos|``, reported
    as the symmetric region ``[-q, q]`` (the sign of gate/in is arbitrary up to the neuron's sign).

    Args:
        source: a bridge or :class:`MLPWeights`.
        p: significance level.
        n_sample: neurons sampled per layer (all pairs among them are used); ``None`` for all.
        seed: seed of the sample.

    Returns:
        Long frame ``layer, pair, low, high`` with ``pair`` in ``in_out, gate_out, gate_in``.
    """
    w = source if isinstance(source, MLPWeights) else mlp_weights(source)
    n_layers, d_mlp, _ = w.W_in.shape
    gen = torch.Generator().manual_seed(seed)
    pairs = {"in_out": (w.W_in, w.W_out)}
    if w.W_gate is not None:
        pairs.update(gate_out=(w.W_gate, w.W_out), gate_in=(w.W_gate, w.W_in))
    rows = []
    for layer in range(n_layers):
        pick = (
            torch.arange(d_mlp)
            if n_sample is None or n_sample >= d_mlp
            else torch.randperm(d_mlp, generator=gen)[:n_sample]
        )
        off_diagonal = ~torch.eye(len(pick), dtype=torch.bool)
        for name, (a, b) in pairs.items():
            ua = torch.nn.functional.normalize(a[layer, pick], dim=-1)
            ub = torch.nn.functional.normalize(b[layer, pick], dim=-1)
            cos = (ua @ ub.T)[off_diagonal]
            if name == "gate_in":
                high = torch.quantile(cos.abs(), 1 - p).item()
                rows.append((layer, name, -high, high))
            else:
                low, high = torch.quantile(cos, torch.tensor([p / 2, 1 - p / 2])).tolist()
                rows.append((layer, name, low, high))
    return pd.DataFrame(rows, columns=["layer", "pair", "low", "high"])
