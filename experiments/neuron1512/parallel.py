"""The main job's units in worker processes (``--workers N``).

Each worker loads the model once, takes ``1/N`` of this process's threads and runs whole units
(:func:`~experiments.neuron1512.unit.run_unit`: training, then the measurements), taking the next
unit when it finishes one. What every unit shares (prompts, the IRM-off replies, corpora, neuron
classes, characteristic tokens) is computed once here and sent to the workers; the units come back
in plan order. Units are independent, and on a CPU a small model's matmuls are too short for two
threads to share one well: two single-threaded units side by side used a 2-core machine better than
one unit with both threads (``docs/benchmarks.md``). Units not yet trained go first, so that the long
ones start at once.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from experiments.neuron1512.unit import Context, Unit, run_unit, unit_dir
from workbench.models import load_model
from workbench.runstate import read_run_state

if TYPE_CHECKING:
    from experiments.neuron1512.config import Neuron1512Config, Preset

__all__ = ["Planned", "run_units"]

Planned = tuple["Preset", str, int, bool]
"""One unit to run: (preset, alignment, seed, explained)."""

_WORKER: dict[str, Any] = {}
"""In a worker: its config and context (with its own model)."""


def _start(cfg: Neuron1512Config, shared: Context, threads: int, dtype: torch.dtype | None) -> None:
    torch.set_num_threads(threads)
    model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    _WORKER.update(cfg=cfg, ctx=dataclasses.replace(shared, model=model))


def _run(unit: Planned) -> Unit:
    preset, alignment, seed, explained = unit
    return run_unit(_WORKER["ctx"], _WORKER["cfg"], preset, alignment, seed, explained=explained)


def _trained(cfg: Neuron1512Config, unit: Planned) -> bool:
    preset, alignment, seed, _ = unit
    state = read_run_state(unit_dir(cfg, preset, alignment, seed))
    return cfg.resume and state is not None and state.done


def run_units(ctx: Context, cfg: Neuron1512Config, plan: Sequence[Planned], dtype: torch.dtype | None) -> list[Unit]:
    """Run ``plan``'s units in ``cfg.workers`` processes; the units in plan order.

    A unit that raises stops the others (the workers are terminated) and its error is raised here.
    """
    order = sorted(range(len(plan)), key=lambda i: _trained(cfg, plan[i]))  # stable: plan order within each group
    threads = max(1, torch.get_num_threads() // cfg.workers)
    shared = dataclasses.replace(ctx, model=None, base_losses={})
    spawn = multiprocessing.get_context("spawn")  # a forked copy of a process with torch's threads can hang
    with spawn.Pool(cfg.workers, _start, (cfg, shared, threads, dtype)) as pool:
        pending = {i: pool.apply_async(_run, (plan[i],)) for i in order}
        while not all(r.ready() for r in pending.values()):
            failed = next((r for r in pending.values() if r.ready() and not r.successful()), None)
            if failed is not None:
                failed.get()  # raises the unit's error; leaving the block terminates the other workers
            time.sleep(1.0)
        return [pending[i].get() for i in range(len(plan))]
