"""Activation patching, batched, within one model and between two models.

Activation patching (Vig et al., 2020, *Causal Mediation Analysis*, arXiv:2004.12265; Meng et al.,
2022, arXiv:2202.05262; Heimersheim & Nanda, 2024, arXiv:2404.15255) replaces one activation of a
*target* run with the same activation of a *source* run and measures the effect on a metric.

One interface covers both modes:

* **within a model**: ``target`` and ``source`` are the same model; the source runs on clean
  tokens, the target on corrupted tokens (as :mod:`transformer_lens.patching`);
* **between models**: the source is model A, the target model B, on the same tokens (both
  directions by swapping them). A model side is a bridge plus forward hooks kept attached while it
  runs (:class:`ModelSide`), so model B can be the same bridge with an injected module's hooks.

Sweeps (:func:`patch_sweep`) return a :class:`PatchResult`; the runs are stacked along the batch
and start at the patched layer and position (:mod:`workbench.analysis.patch_engine`). The values
equal ``transformer_lens.patching.get_act_patch_*`` on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.patch_engine import Patch, prune, run_full, run_staircase, trace
from workbench.hooks import HookKind, ModelSide, as_side, attach, capture, hook_name
from workbench.metrics import Metric, normalized

__all__ = ["SWEEPS", "PatchResult", "SweepKind", "patch_heads", "patch_sweep"]

SweepKind = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head", "head_pos"]
SWEEPS: dict[SweepKind, tuple[HookKind, tuple[str, ...]]] = {
    "resid_pre": ("resid_pre", ("layer", "pos")),
    "resid_mid": ("resid_mid", ("layer", "pos")),
    "resid_post": ("resid_post", ("layer", "pos")),
    "attn_out": ("attn_out", ("layer", "pos")),
    "mlp_out": ("mlp_out", ("layer", "pos")),
    "head": ("z", ("layer", "head")),
    "head_pos": ("z", ("layer", "pos", "head")),
}
"""Sweep kinds: the hook kind they patch and the axes of the result (``head`` = a head's output
``z`` at every position, as ``get_act_patch_attn_head_out_all_pos``; ``head_pos`` per position)."""


@dataclass(frozen=True)
class PatchResult:
    """Metric of each patched run of a sweep, with the unpatched and source values."""

    kind: str
    """What was patched: a sweep kind (:data:`SweepKind`) or a node kind of attribution patching."""
    axes: tuple[str, ...]
    """Names of the axes of :attr:`values` (``layer``, ``pos``, ``head``)."""
    values: Tensor
    """Metric per patched run, one dimension per axis."""
    baseline: float
    """Metric of the unpatched target run."""
    reference: float
    """Metric of the source run (the value a complete patch restores)."""
    tokens: tuple[str, ...]
    """The target's tokens (all positions)."""
    layers: tuple[int, ...]
    """The layer of each index of the ``layer`` axis."""
    positions: tuple[int, ...]
    """The position of each index of the ``pos`` axis."""

    def normalized(self) -> Tensor:
        """``(value - baseline) / (reference - baseline)``: 0 = no effect, 1 = source restored."""
        return normalized(self.values, self.baseline, self.reference)

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per patched run, columns for the axes, ``value`` and ``normalized``."""
        labels = {"layer": self.layers, "pos": self.positions}  # other axes (head, neuron) count from 0
        index = [labels.get(axis, range(n)) for axis, n in zip(self.axes, self.values.shape)]
        df = pd.DataFrame(list(product(*index)), columns=list(self.axes))
        df["value"] = self.values.flatten().tolist()
        if abs(self.reference - self.baseline) > 1e-8:
            df["normalized"] = self.normalized().flatten().tolist()
        if "pos" in self.axes:
            df.insert(self.axes.index("pos") + 1, "token", [self.tokens[p] for p in df["pos"]])
        df.insert(0, "kind", self.kind)
        return df

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` patched runs that moved the metric most from the baseline."""
        df = self.to_frame()
        return df.loc[(df["value"] - self.baseline).abs().sort_values(ascending=False).index[:k]].reset_index(drop=True)


def _check_pair(target: ModelSide, source: ModelSide, tokens: Tensor, source_tokens: Tensor) -> None:
    if tokens.shape != source_tokens.shape:
        raise ValueError(
            f"target tokens {tuple(tokens.shape)} and source tokens {tuple(source_tokens.shape)} differ in shape: "
            "patching aligns positions, so use prompts of the same token length"
        )
    a, b = target.model.cfg, source.model.cfg
    for field in ("n_layers", "d_model", "n_heads", "d_head"):
        if getattr(a, field) != getattr(b, field):
            raise ValueError(
                f"the two models differ in {field} ({getattr(a, field)} vs {getattr(b, field)}): "
                "patching needs models of the same shape"
            )


def _indices(what: str, given: Sequence[int] | None, size: int, has: str) -> list[int]:
    """``given`` as indices in ``0..size-1`` (negative ones count from the end); all of them when ``None``."""
    if given is None:
        return list(range(size))
    bad = [i for i in given if not -size <= i < size]
    if bad:
        raise IndexError(
            f"{what} {', '.join(map(str, bad))} out of range: {has} 0..{size - 1} "
            f"(or -{size}..-1 counting from the end); pass {what}s in that range"
        )
    return [i % size for i in given]


def _check_not_right_padded(model: TransformerBridge, batches: dict[str, Tensor]) -> None:
    """Refuse batches whose last position is padding in some row (metrics read the last position)."""
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    if pad is None:
        return
    for name, batch in batches.items():
        padded = ((batch[:, -1] == pad) & (batch != pad).any(-1)).nonzero().flatten().tolist()
        if padded:
            raise ValueError(
                f"rows {padded} of {name} end in the pad token (id {pad}): a right-padded batch puts padding at the "
                "last position, which the metric reads and the patches align. Use prompts of the same token length, "
                "or left-pad them (tokenizer.padding_side = 'left')"
            )


def _patches(
    model: TransformerBridge, kind: SweepKind, layers: Sequence[int], positions: Sequence[int]
) -> list[tuple[tuple[int, ...], Patch]]:
    hook_kind, axes = SWEEPS[kind]
    out: list[tuple[tuple[int, ...], Patch]] = []
    for li, layer in enumerate(layers):
        name = hook_name(model, hook_kind, layer)
        if axes == ("layer", "pos"):
            out += [((li, pi), Patch(layer, name, pos=p)) for pi, p in enumerate(positions)]
        elif axes == ("layer", "head"):
            out += [((li, h), Patch(layer, name, head=h)) for h in range(model.cfg.n_heads)]
        else:
            out += [
                ((li, pi, h), Patch(layer, name, pos=p, head=h))
                for pi, p in enumerate(positions)
                for h in range(model.cfg.n_heads)
            ]
    return out


def _value(v) -> float:
    v = torch.as_tensor(v)
    if v.ndim:
        raise ValueError(f"the metric must return a scalar (mean over the batch); got shape {tuple(v.shape)}")
    return float(v)


def patch_sweep(
    target,
    source,
    kind: SweepKind,
    metric: Metric,
    tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "source_batch source_pos"] | None = None,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    fast: bool = True,
    max_rows: int = 256,
    progress: bool = False,
) -> PatchResult:
    """Patch each activation of one kind from the source run into the target run.

    Args:
        target: the model (or :class:`ModelSide`) whose run is patched.
        source: the model (or side) whose activations are patched in; may be ``target`` itself.
        kind: a key of :data:`SWEEPS`: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
            ``mlp_out`` (layer × pos), ``head`` (layer × head, all positions), ``head_pos``.
        metric: logits ``[batch pos d_vocab]`` -> scalar; metrics with ``positions`` and
            ``on_positions`` (:mod:`workbench.metrics`) let only those positions be unembedded.
        tokens: the target's tokens.
        source_tokens: the source's tokens (default: ``tokens``, as between two models).
        layers: layers to sweep (default all); negative ones count from the end (-1: the last layer).
            Out-of-range layers raise ``IndexError``.
        positions: positions to sweep for per-position kinds (default all); negative ones count from
            the end. Out-of-range positions raise ``IndexError``; a batch whose last position is the
            pad token in some row (right padding) raises ``ValueError``.
        fast: start runs at the patched layer and position (sides with stateful hooks always
            use full forwards).
        max_rows: rows (patched runs × batch) per forward.
        progress: show a tqdm bar.
    """
    if kind not in SWEEPS:
        raise KeyError(f"unknown sweep kind {kind!r}; kinds: {', '.join(SWEEPS)}")
    target, source = as_side(target), as_side(source)
    source_tokens = tokens if source_tokens is None else source_tokens
    _check_pair(target, source, tokens, source_tokens)
    model = target.model
    _check_not_right_padded(model, {"tokens": tokens, "source_tokens": source_tokens})
    layers = _indices("layer", layers, model.cfg.n_layers, "the model has layers")
    positions = _indices("position", positions, tokens.shape[1], "the prompts have positions")
    cells = _patches(model, kind, layers, positions)
    names = sorted({patch.hook for _, patch in cells})
    source_logits, acts = source.run(source_tokens, names)
    with torch.no_grad(), attach(model, target.hooks):
        if fast and target.fast:
            base = trace(model, tokens, names)
            target_logits, target_acts = base.logits, base.acts
        else:
            with capture(model, names) as target_acts:
                target_logits = model(tokens)
        baseline = _value(metric(target_logits))
        plan = {patch: prune(patch, acts[patch.hook], target_acts[patch.hook]) for _, patch in cells}
        todo = [p for p in dict.fromkeys(plan.values()) if p is not None]
        if fast and target.fast:
            results = run_staircase(model, base, acts, todo, metric, max_rows, progress)
        else:
            results = run_full(model, tokens, acts, todo, metric, max_rows, progress)
    shape = tuple(max(idx[d] for idx, _ in cells) + 1 for d in range(len(cells[0][0])))
    values = torch.zeros(shape)
    for idx, patch in cells:
        planned = plan[patch]
        values[idx] = baseline if planned is None else _value(results[planned])
    labels = tuple(model.to_str_tokens(tokens[0]))
    return PatchResult(
        kind, SWEEPS[kind][1], values, baseline, _value(metric(source_logits)), labels, tuple(layers), tuple(positions)
    )


def patch_heads(
    target,
    source,
    heads: Sequence[tuple[int, int]],
    metric: Metric,
    tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "source_batch source_pos"] | None = None,
) -> float:
    """Metric of the target run with the outputs (``z``, all positions) of ``heads`` patched jointly from the source."""
    target, source = as_side(target), as_side(source)
    source_tokens = tokens if source_tokens is None else source_tokens
    _check_pair(target, source, tokens, source_tokens)
    model = target.model
    for _, head in heads:
        if not 0 <= head < model.cfg.n_heads:
            raise IndexError(f"head {head} is out of range: this model has heads 0..{model.cfg.n_heads - 1}")
    by_layer: dict[str, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(hook_name(model, "z", layer), []).append(head)
    _, acts = source.run(source_tokens, list(by_layer))

    def make(name: str):
        def hook(z: Tensor, hook) -> Tensor:
            z = z.clone()
            z[:, :, by_layer[name]] = acts[name][:, :, by_layer[name]].to(z.dtype)
            return z

        return hook

    with torch.no_grad(), attach(model, target.hooks), attach(model, [(n, make(n)) for n in by_layer]):
        return _value(metric(model(tokens)))
