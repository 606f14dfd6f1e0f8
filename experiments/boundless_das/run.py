"""Set up the task, search layer x position with Boundless DAS and its controls, and write the outputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from experiments.boundless_das.config import TASKS, BoundlessDASConfig
from experiments.common import write_outputs
from experiments.fields import with_quick
from workbench.data.counterfactual import CounterfactualDataset, ioi_counterfactuals, price_tagging_counterfactuals
from workbench.hooks import hook_name
from workbench.interventions.apply import InterventionSet
from workbench.interventions.bundle import bundle_size, save_bundle
from workbench.interventions.evaluate import interchange_intervention_accuracy
from workbench.interventions.modules import InterchangeIntervention
from workbench.interventions.plots import boundary_width_figure, iia_heatmap, training_curves
from workbench.interventions.price_tagger import price_tagger, task_accuracy
from workbench.interventions.search import das_sweep, fit_das, random_rotation_iia, subspace_overlap
from workbench.interventions.spec import InterventionSpec
from workbench.interventions.train import AlignmentConfig
from workbench.models import DEFAULT_MODEL, load_model

__all__ = ["main"]


@dataclass
class _Setup:
    model: object
    tokenizer: object
    name: str
    variable: str
    make: Callable[[int, int], CounterfactualDataset]
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    irrelevant: int
    method: str
    hook: str
    planted: dict | None
    """Price tagger trained with IIT: where its variable lives (layer, position, basis) and that alignment's IIA."""


def _setup(cfg: BoundlessDASConfig) -> _Setup:
    task = TASKS.get(cfg.task)
    if task is None:
        raise ValueError(f"unknown task {cfg.task!r}; tasks: {', '.join(TASKS)}")
    variable = cfg.variable or task["variable"]
    planted = None
    if cfg.task == "price_tagging":
        tagger_cfg = cfg.tagger()
        trained = price_tagger(tagger_cfg, progress=True)
        model, tokenizer, name = trained.model, trained.tokenizer, f"price tagger ({trained.path.name})"
        make = lambda n, seed: price_tagging_counterfactuals(variable, n, seed=seed)
        layers = tuple(range(model.cfg.n_layers))
        if tagger_cfg.iit_layer >= 0 and cfg.planted:
            planted = {
                "layer": tagger_cfg.iit_layer,
                "position": task["positions"][-1],
                "bases": tagger_cfg.planted(),
                "iia": trained.planted_iia[variable],
            }
    else:
        model = load_model(DEFAULT_MODEL)
        tokenizer, name = model.tokenizer, DEFAULT_MODEL
        if variable != "io_first":
            raise ValueError(f"the ioi task has one variable, io_first (got {variable!r})")
        make = lambda n, seed: ioi_counterfactuals(n, seed=seed)
        layers = (18, 20, 22)
    if cfg.quick:
        layers = (planted["layer"],) if planted else layers[-1:]
    layers = (cfg.layer,) if cfg.layer is not None else layers
    positions = (cfg.position,) if cfg.position is not None else task["positions"]
    if cfg.quick and cfg.position is None:
        positions = (task["irrelevant"], task["positions"][-1])
    return _Setup(
        model,
        tokenizer,
        name,
        variable,
        make,
        layers,
        positions,
        task["irrelevant"],
        cfg.method or task["method"],
        cfg.hook or task["hook"],
        planted,
    )


def _ground_truth(s: _Setup, sweep) -> dict | None:
    """Whether the search found the planted alignment: IIA at the planted place, and how much of each
    planted variable's subspace the learned one contains (high for the searched variable, low for the
    other; ``overlap_chance``: the expected overlap of a random subspace of the learned width)."""
    if s.planted is None or s.hook != "resid_post":
        return None
    best = sweep.best()
    at = [f for f in sweep.fits if (f.layer, f.position) == (s.planted["layer"], s.planted["position"])]
    found = at[0] if at else None
    d = s.model.cfg.d_model
    return {
        "layer": s.planted["layer"],
        "position": s.planted["position"],
        "dims": s.planted["bases"][s.variable].shape[1],
        "planted_iia": s.planted["iia"],
        "best_is_planted": (best.layer, best.position) == (s.planted["layer"], s.planted["position"]),
        "iia_at_planted": found.iia if found else None,
        "width_at_planted": found.width if found else None,
        "overlap_at_planted": (
            {v: subspace_overlap(found.module.subspace().cpu(), b) for v, b in s.planted["bases"].items()}
            if found
            else None
        ),
        "overlap_chance": found.width / d if found else None,
    }


def _full_swap_iia(model: TransformerBridge, hook: str, layer: int, position: int, test) -> float:
    """IIA of interchanging the whole activation: the reference without a search (it also swaps everything
    else there, so DAS can beat it by isolating the variable)."""
    spec = InterventionSpec(hook_name(model, hook, layer), positions=(position,))
    return interchange_intervention_accuracy(model, InterventionSet([(spec, InterchangeIntervention())]), test)


def main(cfg: BoundlessDASConfig) -> dict:
    """Run the search and write its outputs under ``cfg.out``; the config is checked first
    (:meth:`~experiments.fields.ExperimentConfig.preflight`), before any model loads or trains."""
    cfg = with_quick(cfg).preflight()
    torch.manual_seed(cfg.seed)
    s = _setup(cfg)
    model, tokenizer, hook, method = s.model, s.tokenizer, s.hook, s.method
    n_train, n_test = cfg.n_train, cfg.n_test
    train = s.make(n_train, cfg.seed).tokenize(tokenizer)
    test_set = s.make(n_test, cfg.seed + 1)
    test = test_set.tokenize(tokenizer)
    align = AlignmentConfig(
        steps=cfg.steps,
        batch_size=min(cfg.batch_size, n_train),
        lr=cfg.lr,
        boundary_penalty=cfg.boundary_penalty,
        seed=cfg.seed,
    )

    start = time.perf_counter()
    sweep = das_sweep(
        model,
        train,
        test,
        s.layers,
        s.positions,
        hook_kind=hook,
        method=method,
        rank=cfg.rank,
        cfg=align,
        progress=True,
    )
    best = sweep.best()
    control = random_rotation_iia(model, best, test, seed=cfg.seed + 1000)
    frame = sweep.to_frame()
    frame["iia_full_swap"] = [_full_swap_iia(model, hook, f.layer, f.position, test) for f in sweep.fits]
    in_grid = frame[(frame.position == s.irrelevant) & (frame.layer == best.layer)]
    irrelevant_iia = (
        float(in_grid.iia.iloc[0])
        if len(in_grid)
        else fit_das(
            model, train, test, best.layer, s.irrelevant, hook_kind=hook, method=method, rank=cfg.rank, cfg=align
        ).iia
    )
    seconds = time.perf_counter() - start

    bundle = save_bundle(
        best.interventions, cfg.out + "/bundle", metadata={"model": s.name, "task": cfg.task, "variable": s.variable}
    )
    tokens = test.base[0].tolist()
    labels = {p: tokenizer.decode([tokens[p]]) for p in s.positions}
    summary = {
        "task": cfg.task,
        "model": s.name,
        "variable": s.variable,
        "hook": hook,
        "method": method,
        "task_accuracy": task_accuracy(model, test.base, test.base_labels),
        "noop_iia": float((test.labels == test.base_labels).float().mean()),
        "best": {
            "layer": best.layer,
            "position": best.position,
            "token": labels[best.position],
            "iia": best.iia,
            "width": best.width,
        },
        "random_rotation_iia": control,
        "irrelevant_position": {
            "position": s.irrelevant,
            "token": tokenizer.decode([tokens[s.irrelevant]]),
            "iia": irrelevant_iia,
        },
        "ground_truth": _ground_truth(s, sweep),
        "sweep": frame.to_dict(orient="records"),
        "bundle_bytes": bundle_size(bundle),
        "search_seconds": seconds,
        "d_model": model.cfg.d_model,
    }
    title = f"IIA of '{s.variable}' ({cfg.task}, {hook})"
    write_outputs(
        cfg.out,
        cfg,
        figures={
            "iia_heatmap": iia_heatmap(frame, title=title, labels=labels),
            "training_curves": training_curves(sweep.histories()),
            "boundary_width": boundary_width_figure(frame),
        },
        tables={"sweep": frame, "histories": sweep.histories(), "examples": test_set.to_frame().head(20)},
        summary=summary,
        png=cfg.png,
        key_figure="iia_heatmap",
        captions={
            "iia_heatmap": (
                f"IIA per layer and position: the brightest cell is where '{s.variable}' is computed; compare it "
                f"with the no-op baseline ({summary['noop_iia']:.2f}) and the irrelevant position."
            ),
            "training_curves": (
                "Loss and learned boundary width per step: the loss should fall and settle, and the width shrink "
                "towards the few dimensions that carry the variable."
            ),
            "boundary_width": (
                "Rotated dimensions swapped at each cell: a small width with a high IIA means the variable "
                "lives in a small subspace there."
            ),
        },
    )
    return summary
