"""Sharded sweeps: work over many prompts split across processes, gathered in order.

Built on Hugging Face Accelerate (``PartialState``, ``split_between_processes``,
``gather_object``), so the same code runs in one process and under ``accelerate launch`` or
``torchrun`` (gloo on CPU, NCCL on GPUs). Each process holds the whole (frozen) model and takes a
contiguous block of the prompts; rank 0 gets the first block, so gathering in rank order restores
the one-process order.

* :func:`shard_map` applies a function to each item of a list; every process gets the full list of
  results, equal to ``[fn(x) for x in items]`` in one process.
* :func:`on_main` runs a function on rank 0 only and hands its result to every process (the others wait):
  the write paths of the experiments use it, so a run under ``accelerate launch`` writes its outputs once.
* :func:`sharded_patch_sweep`, :func:`sharded_attribution` and :func:`sharded_logit_lens` split one
  batch of prompts by rows and combine the parts into the result of the whole batch (patching
  metrics must be means over prompts, as :class:`~workbench.metrics.LogitDiff`).

A process that raises inside these functions makes every process raise ``RuntimeError`` with its
traceback (no process waits forever for a dead peer); collectives elsewhere time out after
``$WORKBENCH_DIST_TIMEOUT`` seconds (default 1800).
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.logit_lens import LogitLens, lens_from_residuals, lens_residuals, mean_logits
from workbench.analysis.patching import PatchResult, SweepKind, patch_sweep
from workbench.hooks import as_side
from workbench.models import str_tokens

__all__ = [
    "ShardError",
    "dist_state",
    "on_main",
    "process_device",
    "shard_map",
    "shard_rows",
    "sharded_attribution",
    "sharded_logit_lens",
    "sharded_patch_sweep",
]


class ShardError(RuntimeError):
    """A process of a sharded computation raised; the message holds its rank and traceback."""


def dist_state() -> PartialState:
    """The process's Accelerate state (one process unless launched by ``accelerate launch`` / ``torchrun``).

    CPU-only machines use the gloo backend. The process-group timeout is ``$WORKBENCH_DIST_TIMEOUT``
    seconds (default 1800), so a collective whose peer died fails instead of hanging.
    """
    seconds = float(os.environ.get("WORKBENCH_DIST_TIMEOUT", 1800))
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=seconds))


def process_device(device: str, state: PartialState | None = None) -> str:
    """The device this process should load its model on: ``"cuda"`` becomes ``"cuda:<local rank>"``
    when several processes run (one GPU each); anything else is returned unchanged."""
    state = state or dist_state()
    return f"cuda:{state.local_process_index}" if device == "cuda" and state.num_processes > 1 else device


def shard_rows(n: int, state: PartialState | None = None) -> range:
    """The rows ``0..n-1`` this process takes: a contiguous block, earlier ranks one longer when ``n`` is uneven."""
    state = state or dist_state()
    with state.split_between_processes(list(range(n))) as rows:
        return range(rows[0], rows[-1] + 1) if rows else range(0)


def _gather_checked(value: Any, state: PartialState) -> list:
    """Gather ``(ok, value)`` of every rank; raise :class:`ShardError` on every rank if one failed."""
    parts = gather_object([value]) if state.num_processes > 1 else [value]
    failed = [(rank, err) for rank, (ok, err) in enumerate(parts) if not ok]
    if failed:
        rank, err = failed[0]
        raise ShardError(f"process {rank} of {state.num_processes} failed:\n{err}")
    return [v for _, v in parts]


def _run_shard(fn: Callable[[], Any], state: PartialState) -> list:
    """Run ``fn`` on this rank and gather its result from every rank (errors re-raised everywhere)."""
    try:
        value = (True, fn())
    except Exception:
        value = (False, traceback.format_exc())
    return _gather_checked(value, state)


def shard_map(fn: Callable[[Any], Any], items: Sequence, *, state: PartialState | None = None) -> list:
    """``[fn(x) for x in items]`` with the items split across processes; every process gets all results.

    Results travel by pickling (``gather_object``): return CPU tensors or small objects.
    """
    state = state or dist_state()
    rows = shard_rows(len(items), state)
    parts = _run_shard(lambda: [fn(items[i]) for i in rows], state)
    return [result for part in parts for result in part]


def on_main(fn: Callable[[], Any], *, state: PartialState | None = None) -> Any:
    """``fn()`` on the main process only (rank 0); every process returns its result.

    The other processes wait for it (a broadcast from rank 0), so what ``fn`` writes exists on every
    process when ``on_main`` returns. In one process it is ``fn()``. If ``fn`` raises on rank 0, every
    process raises :class:`ShardError` with its traceback.

    Example: ``on_main(lambda: write_outputs(out, cfg, summary=summary))`` writes once under
    ``accelerate launch --num_processes 2``.
    """
    state = state or dist_state()
    if state.num_processes == 1:
        return fn()
    payload: list[tuple[bool, Any] | None] = [None]
    if state.is_main_process:
        try:
            payload = [(True, fn())]
        except Exception:  # handed to every process below, re-raised there
            payload = [(False, traceback.format_exc())]
    broadcast_object_list(payload, from_process=0)
    received = payload[0]
    if received is None:
        raise ShardError(f"process 0 of {state.num_processes} sent nothing: check that every process calls on_main")
    ok, value = received
    if not ok:
        raise ShardError(f"process 0 of {state.num_processes} failed:\n{value}")
    return value


def _split(tokens: Tensor, state: PartialState) -> range:
    rows = shard_rows(tokens.shape[0], state)
    if state.num_processes > tokens.shape[0]:
        raise ValueError(
            f"{tokens.shape[0]} prompts for {state.num_processes} processes: give at least one prompt per process"
        )
    return rows


def sharded_patch_sweep(
    target,
    source,
    kind: SweepKind,
    metric_for: Callable[[range], Callable[[Tensor], Tensor]],
    tokens: Tensor,
    source_tokens: Tensor | None = None,
    *,
    state: PartialState | None = None,
    **kwargs,
) -> PatchResult:
    """:func:`~workbench.analysis.patching.patch_sweep` over a batch of prompts split across processes.

    Args:
        target, source, kind: as :func:`~workbench.analysis.patching.patch_sweep`.
        metric_for: the metric for a block of rows, e.g. ``lambda rows: LogitDiff(answers[rows])``;
            it must be the mean over those prompts, so that the block means, weighted by their
            sizes, give the metric of the whole batch.
        tokens: the target's tokens, all prompts.
        source_tokens: the source's tokens (default: ``tokens``).
        state: the Accelerate state (default :func:`dist_state`).
        **kwargs: passed to ``patch_sweep`` (``layers``, ``positions``, ``fast``, ``max_rows``).

    Returns:
        The sweep of the whole batch, on every process.
    """
    state = state or dist_state()
    rows = _split(tokens, state)
    source_tokens = tokens if source_tokens is None else source_tokens
    sl = slice(rows.start, rows.stop)

    def run():
        part = patch_sweep(target, source, kind, metric_for(rows), tokens[sl], source_tokens[sl], **kwargs)
        return len(rows), dataclasses.replace(part, values=part.values.cpu())

    parts = _run_shard(run, state)
    n = sum(size for size, _ in parts)
    first = parts[0][1]
    return dataclasses.replace(
        first,
        values=sum(part.values * (size / n) for size, part in parts),
        baseline=sum(part.baseline * size for size, part in parts) / n,
        reference=sum(part.reference * size for size, part in parts) / n,
    )


def sharded_attribution(
    fn: Callable,
    model: TransformerBridge,
    tokens: Tensor,
    answers: Tensor,
    *,
    state: PartialState | None = None,
    **kwargs,
):
    """A direct logit attribution (``layer_attribution``, ``head_attribution`` or ``neuron_attribution``
    of :mod:`workbench.analysis.attribution`) with the prompts split across processes.

    ``per_prompt`` (batch on its last axis) is concatenated in prompt order, so the result equals
    ``fn(model, tokens, answers, **kwargs)`` in one process.
    """
    state = state or dist_state()
    rows = _split(tokens, state)
    answers = torch.as_tensor(answers)
    sl = slice(rows.start, rows.stop)

    def run():
        part = fn(model, tokens[sl], answers[sl], **kwargs)
        return dataclasses.replace(part, per_prompt=part.per_prompt.cpu())

    parts = _run_shard(run, state)
    return dataclasses.replace(parts[0], per_prompt=torch.cat([p.per_prompt for p in parts], dim=-1))


def sharded_logit_lens(
    model: TransformerBridge,
    tokens: Tensor,
    answers: Tensor,
    *,
    k: int = 5,
    pos: int = -1,
    scale: Literal["own", "final"] = "own",
    incl_mid: bool = True,
    state: PartialState | None = None,
) -> LogitLens:
    """:func:`~workbench.analysis.logit_lens.logit_lens` with the prompts split across processes.

    The per-prompt logit differences are concatenated in order; the top tokens come from the mean
    logits of the whole batch (block means weighted by block size), as in one process.
    """
    state = state or dist_state()
    rows = _split(tokens, state)
    answers = torch.as_tensor(answers)
    sl = slice(rows.start, rows.stop)
    side = as_side(model)

    def run():
        labels, normed = lens_residuals(side, tokens[sl], pos=pos, incl_mid=incl_mid, scale=scale)
        part = lens_from_residuals(side, labels, normed, answers[sl], k=k)
        mean = mean_logits(side.model, normed).float().cpu()
        return len(rows), dataclasses.replace(part, per_prompt=part.per_prompt.cpu()), mean

    parts = _run_shard(run, state)
    n = sum(size for size, _, _ in parts)
    logits = sum(mean * (size / n) for size, _, mean in parts)
    top = logits.topk(k, dim=-1)
    first = parts[0][1]
    return dataclasses.replace(
        first,
        per_prompt=torch.cat([lens.per_prompt for _, lens, _ in parts], dim=-1),
        top_tokens=tuple(tuple(str_tokens(side.model, row)) for row in top.indices),
        top_logits=top.values.to(first.top_logits.dtype),
    )
