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
  positions are recomputed, attending to the cached keys/values of the earlier ones (runs of
  neighbouring first positions share a chunk when that makes fewer, larger batched runs);
* only the positions the metric reads (``metric.positions``) are unembedded, and of those only the
  token ids it reads (``metric.vocab``: two per row for a logit difference, not the vocabulary);
* what cannot change is skipped: a patch whose source activation equals the target's is the
  unpatched run, and an all-position patch starts at the first position where they differ
  (prompts sharing a prefix; layers a tuned model left frozen).

The blocks are driven through :mod:`workbench.bridge_internals` (a stand-in for Hugging Face's KV
cache, the keyword arguments the bridge gives each block). One full forward per sweep guards it,
with two checks: its unpatched rows must reproduce the block-by-block trace, and its patched rows
one staircase run; either mismatch raises (a TransformerLens / transformers upgrade fails loudly,
and ``fast=False`` still works).

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
from transformer_lens.model_bridge import TransformerBridge

from workbench.bridge_internals import (
    BridgeInternalsError,
    PrefixKV,
    block_inputs,
    block_output,
    slice_block_kwargs,
    unembed_columns,
)
from workbench.hooks import attach, capture
from workbench.metrics import Metric, PositionedMetric, VocabMetric

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


@dataclass
class Trace:
    """The unpatched target run, driven block by block: what patched runs start from."""

    tokens: Tensor
    """The target's tokens."""
    resid: list[Tensor]
    """Input of each block (before its hooks), ``[batch pos d_model]``."""
    final: Tensor
    """Output of the last block."""
    kv: dict[int, tuple[Tensor, Tensor]]
    """Keys/values per layer as attention used them."""
    block_kwargs: dict
    """Keyword arguments the bridge passes each block (rotary embeddings, position ids), full length."""
    logits: Tensor
    """The unpatched logits (unembedded ``final``)."""
    acts: dict[str, Tensor]
    """Activations captured on the way."""


def _unembed(model: TransformerBridge, resid: Tensor) -> Tensor:
    return model.unembed(model.ln_final(resid))


@torch.no_grad()
def trace(model: TransformerBridge, tokens: Tensor, names: Sequence[str] = ()) -> Trace:
    """Run ``model`` on ``tokens`` block by block, keeping what patched runs need.

    The activations at ``names`` are captured on the way (a name outside the blocks costs one
    forward of the model's own). That the blocks driven one by one reproduce the model's forward
    is checked by :func:`run_staircase`, together with one patched run, in a single forward.
    """
    x, captured = block_inputs(model, tokens)
    kv = PrefixKV()
    resid = []
    with capture(model, names) as acts:
        for block in model.blocks:
            resid.append(x)
            x = block_output(block(x, past_key_values=kv, **captured))
    missing = [name for name in names if name not in acts]
    if missing:
        with capture(model, missing) as rest:
            model(tokens)
        acts.update(rest)
    return Trace(tokens, resid, x, kv.recorded, captured, _unembed(model, x), dict(acts))


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
    index: tuple[slice | int, ...]
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


def _evaluate(
    model: TransformerBridge, metric: Metric, final: Tensor, start: int, n: int, base: Trace, batch: int
) -> list[Tensor]:
    """Metric value of each of the ``n`` stacked runs whose last-block output is ``final``."""
    seq = base.final.shape[1]
    if isinstance(metric, PositionedMetric) and metric.positions is not None:
        cols = []
        for r in (p % seq for p in metric.positions):
            cols.append(final[:, r - start] if r >= start else base.final[:, r].repeat(n, 1))
        resid = torch.stack(cols, 1)
        if isinstance(metric, VocabMetric) and metric.vocab is not None:
            narrow = unembed_columns(model, resid, metric.vocab)
            if narrow is not None:
                return [metric.on_vocab(narrow[j * batch : (j + 1) * batch]) for j in range(n)]
        logits = _unembed(model, resid)
        return [metric.on_positions(logits[j * batch : (j + 1) * batch]) for j in range(n)]
    logits = _unembed(model, final)
    if start:
        logits = torch.cat([base.logits[:, :start].repeat(n, 1, 1), logits], 1)
    return [metric(logits[j * batch : (j + 1) * batch]) for j in range(n)]


def _chunks(patches: Sequence[Patch], size: int, seq: int, merge: float) -> list[list[Patch]]:
    """Patches in chunks of at most ``size``, each run from its earliest first changed position, sorted by layer.

    Patches are grouped by first changed position; a group joins the chunk before it (which then
    recomputes the group's unchanged earlier positions: identical values, more work) while the chunk
    has room and the positions recomputed grow by at most the factor ``merge``: fewer, larger batched
    runs when each group alone is small (prompts without a shared prefix).
    """
    by_start: dict[int, list[Patch]] = defaultdict(list)
    for patch in patches:
        by_start[patch.start].append(patch)
    out: list[list[Patch]] = []
    current: list[Patch] = []
    for start in sorted(by_start):
        group = by_start[start]
        if current and len(current) + len(group) <= size and seq - current[0].start <= merge * (seq - start):
            current += group
            continue
        if current:
            out.append(current)
        pieces = [group[i : i + size] for i in range(0, len(group), size)]
        out.extend(pieces[:-1])
        current = pieces[-1]
    if current:
        out.append(current)
    return [sorted(chunk, key=lambda p: p.layer) for chunk in out]


@torch.no_grad()
def run_staircase(
    model: TransformerBridge,
    base: Trace,
    source: dict[str, Tensor],
    patches: Sequence[Patch],
    metric: Callable,
    max_rows: int,
    progress: bool = False,
    verify: bool = True,
    merge: float = 1.6,
) -> dict[Patch, Tensor]:
    """Metric of each patched run, starting each at its layer and first changed position.

    With ``verify``, one full forward (cheap, once per call) recomputes the unpatched run and one of
    the patched runs, and a mismatch with the trace or the staircase raises
    :class:`~workbench.bridge_internals.BridgeInternalsError`: a library upgrade that changes how
    blocks are driven or use the cache fails loudly instead of giving wrong numbers. ``merge``:
    how much extra work (positions recomputed) a chunk may take on to run patches of several first
    changed positions together (see :func:`_chunks`; 1.6 cut the CPU time of a no-shared-prefix
    ``resid_pre`` sweep on SmolLM2 by ~10%, 1 keeps one chunk per position).
    """
    batch = base.final.shape[0]
    results: dict[Patch, Tensor] = {}
    chunks = _chunks(patches, max(1, max_rows // batch), base.final.shape[1], merge)
    for chunk in tqdm(chunks, desc="patching", disable=not progress):
        start = min(patch.start for patch in chunk)
        kwargs = slice_block_kwargs(base.block_kwargs, start)
        prefix = {layer: (k[..., :start, :], v[..., :start, :]) for layer, (k, v) in base.kv.items()}
        groups: dict[str, list[tuple[slice, Patch]]] = defaultdict(list)
        for j, patch in enumerate(chunk):
            groups[patch.hook].append((slice(j * batch, (j + 1) * batch), patch))
        joining: defaultdict[int, int] = defaultdict(int)
        for patch in chunk:
            joining[patch.layer] += 1
        first = chunk[0].layer  # the chunk's lowest layer: its runs start there
        x = base.resid[first][:, start:].repeat(joining[first], 1, 1)
        with attach(model, _patch_hooks(groups, source, start)):
            for layer in range(first, model.cfg.n_layers):
                if joining[layer] and layer > first:
                    x = torch.cat([x, base.resid[layer][:, start:].repeat(joining[layer], 1, 1)])
                kv = PrefixKV(prefix, reps=x.shape[0] // batch)
                x = block_output(model.blocks[layer](x, past_key_values=kv, **kwargs))
        for patch, value in zip(chunk, _evaluate(model, metric, x, start, len(chunk), base, batch)):
            results[patch] = value
    if verify:
        _verify(model, base, source, results, metric)
    return results


def _verify(
    model: TransformerBridge, base: Trace, source: dict[str, Tensor], results: dict[Patch, Tensor], metric: Callable
) -> None:
    """One full forward, two checks: its unpatched rows must give the trace's logits (the blocks driven one by one
    reproduce the model's forward), and its patched rows the staircase's value for one patch (the latest-starting
    one: most reuse of cached keys/values)."""
    batch = base.tokens.shape[0]
    patch = max(results, key=lambda p: (p.start, p.layer)) if results else None
    groups = {} if patch is None else {patch.hook: [(slice(batch, 2 * batch), patch)]}
    with attach(model, _patch_hooks(groups, source, 0)):
        logits = model(base.tokens.repeat(1 if patch is None else 2, 1))
    reference = logits[:batch]
    if not torch.allclose(base.logits, reference, atol=1e-3, rtol=1e-4):
        raise BridgeInternalsError(
            f"driving {model.cfg.model_name}'s blocks one by one does not reproduce its forward "
            f"(max |diff| {(base.logits - reference).abs().max().item():.2e})",
            "pass fast=False to patch with full forwards",
        )
    if patch is None:
        return
    got = torch.as_tensor(results[patch], dtype=torch.float32)
    want = torch.as_tensor(metric(logits[batch:]), dtype=torch.float32)
    if not torch.allclose(got, want, atol=1e-3, rtol=1e-3):
        raise BridgeInternalsError(
            f"a patched run started at layer {patch.layer}, position {patch.start} from cached keys/values gives "
            f"{got.tolist()}, the full forward {want.tolist()}: the blocks no longer take the cache or keyword "
            "arguments as workbench.bridge_internals assumes",
            "pass fast=False to patch with full forwards",
        )


@torch.no_grad()
def run_full(
    model: TransformerBridge,
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
