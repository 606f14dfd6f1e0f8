"""The engine behind :mod:`workbench.analysis.patching`: many patched runs, stacked along the batch.

Activation patching (Vig et al., 2020; Meng et al., 2022, *Locating and Editing Factual
Associations in GPT*, arXiv:2202.05262) runs the model once per patched activation.
:mod:`transformer_lens.patching` does exactly that, one full forward per patch. This engine gives
the same numbers with much less work:

* patched runs are stacked along the batch dimension (chunked to ``max_rows`` rows);
* a run patched at layer ``L`` starts at block ``L`` from the cached residual of the unpatched
  run (earlier layers are identical). The blocks are driven directly (the bridge's
  ``start_at_layer`` still runs every earlier block); runs patched at later layers join the batch
  when the stack reaches their layer (a "staircase");
* attention is causal, so positions before the first patched one are unchanged: only later
  positions are recomputed, attending to the cached keys/values of the earlier ones;
* only the positions the metric reads (``metric.positions``) are unembedded;
* what cannot change is skipped: a patch whose source activation equals the target's is the
  unpatched run, and an all-position patch starts at the first position where they differ
  (prompts sharing a prefix; layers a tuned model left frozen).

A model side whose extra hooks carry state across layers (e.g. an injected module that reads
layer 0 and writes to later layers) cannot start mid-way: its patched runs are full forwards,
still stacked along the batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import attach, capture
from workbench.metrics import Metric, PositionedMetric

__all__ = ["Patch", "Trace", "prune", "run_full", "run_staircase", "trace"]


@dataclass(frozen=True)
class Patch:
    """One patched run: replace the activation at ``hook`` (block ``layer``) with the source's.

    ``pos`` / ``head`` select a position / head; ``None`` means all of them. ``first`` is the first
    position where source and target differ, for all-position patches (set by :func:`prune`).
    """

    layer: int
    hook: str
    pos: int | None = None
    head: int | None = None
    first: int = 0

    @property
    def start(self) -> int:
        """The first position this patch changes."""
        return self.first if self.pos is None else self.pos


class _PrefixKV:
    """Stands in for an HF cache: records keys/values, or prepends a cached prefix to new ones."""

    def __init__(self, prefix: dict[int, tuple[Tensor, Tensor]] | None = None, reps: int = 1):
        self.prefix, self.reps, self.recorded = prefix, reps, {}

    def update(self, k: Tensor, v: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.prefix is None:
            self.recorded[layer_idx] = (k, v)
            return k, v
        pk, pv = self.prefix[layer_idx]
        if pk.shape[-2] == 0:
            return k, v
        return torch.cat([pk.repeat(self.reps, 1, 1, 1), k], -2), torch.cat([pv.repeat(self.reps, 1, 1, 1), v], -2)


@dataclass
class Trace:
    """The unpatched target run, driven block by block: what patched runs start from."""

    resid: list[Tensor]
    """Input of each block (before its hooks), ``[batch pos d_model]``."""
    final: Tensor
    """Output of the last block."""
    kv: dict[int, tuple[Tensor, Tensor]]
    """Keys/values per layer as attention used them."""
    block_kwargs: dict
    """Keyword arguments the bridge passes each block (rotary embeddings, position ids), full length."""
    logits: Tensor
    """The unpatched logits (of the model's own forward)."""
    acts: dict[str, Tensor]
    """Activations captured in the model's own forward."""


def _block_out(out) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


def _slice_kwargs(kwargs: dict, start: int) -> dict:
    def cut(v):
        if isinstance(v, tuple):
            return tuple(cut(t) for t in v)
        return v[:, start:] if torch.is_tensor(v) and v.ndim >= 2 else v

    return {k: cut(v) for k, v in kwargs.items()}


def _unembed(model, resid: Tensor) -> Tensor:
    return model.unembed(model.ln_final(resid))


@torch.no_grad()
def trace(model, tokens: Tensor, names: Sequence[str] = ()) -> Trace:
    """Run ``model`` on ``tokens`` block by block, keeping what patched runs need.

    The activations at ``names`` are captured from the model's own forward.

    Raises if the block-by-block logits differ from the model's own forward (an architecture whose
    forward does more than embed, blocks, final norm and unembed); use full forwards then.
    """
    captured: dict = {}
    first: list[Tensor] = []

    def grab(module, args, kwargs):
        # the input before block 0's own hooks (stop_at_layer returns it after them)
        first.append(args[0] if args else kwargs["hidden_states"])
        captured.update({k: kwargs[k] for k in ("position_embeddings", "position_ids") if k in kwargs})

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(tokens, stop_at_layer=0)
    finally:
        handle.remove()
    x = first[0]
    kv = _PrefixKV()
    resid = []
    for block in model.blocks:
        resid.append(x)
        x = _block_out(block(x, past_key_values=kv, **captured))
    logits = _unembed(model, x)
    with capture(model, names) as acts:
        reference = model(tokens)
    if not torch.allclose(logits, reference, atol=1e-3, rtol=1e-4):
        raise RuntimeError(
            f"driving {model.cfg.model_name}'s blocks one by one does not reproduce its forward "
            f"(max |diff| {(logits - reference).abs().max().item():.2e}); pass fast=False to patch with full forwards"
        )
    return Trace(resid, x, kv.recorded, captured, reference, dict(acts))


def prune(patch: Patch, source: Tensor, target: Tensor) -> Patch | None:
    """``patch`` with ``first`` set, or ``None`` when source and target agree where it writes."""
    if patch.head is not None:
        source, target = source[:, :, patch.head], target[:, :, patch.head]
    differs = (source != target).reshape(*source.shape[:2], -1).any(-1).any(0)  # per position
    if patch.pos is not None:
        return patch if bool(differs[patch.pos]) else None
    where = differs.nonzero()
    return replace(patch, first=int(where[0, 0])) if len(where) else None


def _set(act: Tensor, rows: slice, patch: Patch, src: Tensor, start: int) -> None:
    """Write the source activation into ``act[rows]`` (whose positions begin at ``start``)."""
    if patch.pos is None:
        index = (rows, slice(None)) if patch.head is None else (rows, slice(None), patch.head)
        source = src[:, start:] if patch.head is None else src[:, start:, patch.head]
    else:
        index = (rows, patch.pos - start) if patch.head is None else (rows, patch.pos - start, patch.head)
        source = src[:, patch.pos] if patch.head is None else src[:, patch.pos, patch.head]
    act[index] = source.to(act.dtype)


def _patch_hooks(groups: dict[str, list[tuple[slice, Patch]]], source: dict[str, Tensor], start: int):
    def make(name: str):
        def hook(act: Tensor, hook) -> Tensor:
            act = act.clone()
            for rows, patch in groups[name]:
                _set(act, rows, patch, source[name], start)
            return act

        return hook

    return [(name, make(name)) for name in groups]


def _evaluate(model, metric: Metric, final: Tensor, start: int, n: int, base: Trace, batch: int) -> list[Tensor]:
    """Metric value of each of the ``n`` stacked runs whose last-block output is ``final``."""
    seq = base.final.shape[1]
    positions = metric.positions if isinstance(metric, PositionedMetric) else None
    if positions is not None:
        cols = []
        for r in (p % seq for p in positions):
            cols.append(final[:, r - start] if r >= start else base.final[:, r].repeat(n, 1))
        logits = _unembed(model, torch.stack(cols, 1))
        return [metric.on_positions(logits[j * batch : (j + 1) * batch]) for j in range(n)]
    logits = _unembed(model, final)
    if start:
        logits = torch.cat([base.logits[:, :start].repeat(n, 1, 1), logits], 1)
    return [metric(logits[j * batch : (j + 1) * batch]) for j in range(n)]


def _chunks(patches: Sequence[Patch], size: int) -> list[list[Patch]]:
    """Patches grouped by first changed position, sorted by layer, cut into chunks of ``size``."""
    by_start: dict[int, list[Patch]] = defaultdict(list)
    for patch in patches:
        by_start[patch.start].append(patch)
    out = []
    for start in sorted(by_start):
        group = sorted(by_start[start], key=lambda p: p.layer)
        out.extend(group[i : i + size] for i in range(0, len(group), size))
    return out


@torch.no_grad()
def run_staircase(
    model,
    base: Trace,
    source: dict[str, Tensor],
    patches: Sequence[Patch],
    metric: Callable,
    max_rows: int,
    progress: bool = False,
) -> dict[Patch, Tensor]:
    """Metric of each patched run, starting each at its layer and first changed position."""
    batch = base.final.shape[0]
    results: dict[Patch, Tensor] = {}
    chunks = _chunks(patches, max(1, max_rows // batch))
    for chunk in tqdm(chunks, desc="patching", disable=not progress):
        start = chunk[0].start
        kwargs = _slice_kwargs(base.block_kwargs, start)
        prefix = {layer: (k[..., :start, :], v[..., :start, :]) for layer, (k, v) in base.kv.items()}
        groups: dict[str, list[tuple[slice, Patch]]] = defaultdict(list)
        for j, patch in enumerate(chunk):
            groups[patch.hook].append((slice(j * batch, (j + 1) * batch), patch))
        joining = defaultdict(int)
        for patch in chunk:
            joining[patch.layer] += 1
        x = None
        with attach(model, _patch_hooks(groups, source, start)):
            for layer in range(chunk[0].layer, model.cfg.n_layers):
                if joining[layer]:
                    new = base.resid[layer][:, start:].repeat(joining[layer], 1, 1)
                    x = new if x is None else torch.cat([x, new])
                kv = _PrefixKV(prefix, reps=x.shape[0] // batch)
                x = _block_out(model.blocks[layer](x, past_key_values=kv, **kwargs))
        for patch, value in zip(chunk, _evaluate(model, metric, x, start, len(chunk), base, batch)):
            results[patch] = value
    return results


@torch.no_grad()
def run_full(
    model,
    tokens: Tensor,
    source: dict[str, Tensor],
    patches: Sequence[Patch],
    metric: Callable,
    max_rows: int,
    progress: bool = False,
) -> dict[Patch, Tensor]:
    """Metric of each patched run, as full forwards stacked along the batch."""
    batch = tokens.shape[0]
    size = max(1, max_rows // batch)
    results: dict[Patch, Tensor] = {}
    chunks = [list(patches[i : i + size]) for i in range(0, len(patches), size)]
    for chunk in tqdm(chunks, desc="patching", disable=not progress):
        groups: dict[str, list[tuple[slice, Patch]]] = defaultdict(list)
        for j, patch in enumerate(chunk):
            groups[patch.hook].append((slice(j * batch, (j + 1) * batch), patch))
        with attach(model, _patch_hooks(groups, source, 0)):
            logits = model(tokens.repeat(len(chunk), 1))
        for j, patch in enumerate(chunk):
            results[patch] = metric(logits[j * batch : (j + 1) * batch])
    return results
