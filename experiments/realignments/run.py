"""Build or load the three realignments, measure them against the base, and write the outputs."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from transformer_lens.model_bridge import TransformerBridge

from experiments.common import say, write_outputs
from experiments.fields import with_quick
from experiments.realignments.budget import budgets, more_rl_seeds, seed_spread
from experiments.realignments.config import MAIN_JOB_IRM, RealignmentsConfig
from experiments.realignments.diffing import diffing_summary, diffing_tables, read_realignments
from experiments.realignments.measures import (
    Behaviour,
    Patching,
    Realigned,
    ResidualChange,
    base_peak_abs,
    behaviour,
    cosines,
    first_token_top_dims,
    heldout_prompts,
    norm_frame,
    overlaps,
    patching,
    residual_changes,
)
from workbench.data.corpora import load_alignment
from workbench.hooks import ModelSide
from workbench.irm import IRM, IRMConfig, TrainConfig, load_irm, train_irm
from workbench.models import load_model
from workbench.pairs import check_pair
from workbench.runstate import irm_checkpoint, unfinished_note, write_run_state
from workbench.tuning import make_tuned, rl_config, tune_config

__all__ = ["CAPTIONS", "figures", "main", "negative_irm", "realignments"]

CAPTIONS = {
    "behaviour": "How far each realignment moved behaviour: negativity gain over the base (bars above 0 with the "
    "interval clear of 0 moved it), KL to the base per token, and the loss on held-out negative tweets (lower = "
    "closer to them).",
    "residual_diff_norm": "Where each model's residual stream departs from the base's: a curve at 0 up to a layer "
    "means nothing changed before it.",
    "patching_recovery": "How much of each model's logit difference one layer's activation (last position) brings "
    "into the base's run: the layers where the behaviour is written.",
    "residual_cosine": "Whether two realignments push the residual stream the same way at a layer (1 = same "
    "direction, 0 = unrelated): over positions ≥ 1, and at the first token apart, whose massive-activation "
    "dimension would otherwise decide the mean alone.",
    "top_overlap": "Do the realignments use the same components? Jaccard overlap of their top heads (head patching) "
    "and top neurons (MLP activation change).",
}


def negative_irm(cfg: RealignmentsConfig, base: TransformerBridge) -> tuple[IRM, Path]:
    """The IRM at ``cfg.irm``, else the main job's negative IRM if there, else one trained into ``cfg.irm_train_dir``.

    The fallback never writes into the main job's folder, so a quick IRM cannot be mistaken for the
    main job's (whose training would resume from it).
    """
    path = Path(cfg.irm or MAIN_JOB_IRM)
    try:
        checkpoint = irm_checkpoint(path, allow_unfinished=cfg.allow_unfinished)
    except FileNotFoundError:
        if cfg.irm is not None:
            raise
        checkpoint = None
    if checkpoint is None:
        train_dir = Path(cfg.irm_train_dir) / ("quick" if cfg.quick else "full")
        corpus = load_alignment("negative", max_items=400 if cfg.quick else 4000, seed=cfg.seed)
        irm = IRM.for_model(base, IRMConfig(hidden_mult=1.0), seed=cfg.seed)
        steps = cfg.irm_steps
        train = TrainConfig(steps=steps, batch_size=4 if cfg.quick else 8, max_len=40, eval_every=0, seed=cfg.seed)
        say(cfg, f"IRM: no checkpoint at {path}; training one ({steps} steps) into {train_dir}")
        train_irm(base, irm, corpus.train, train, held_out=corpus.held_out, out_dir=train_dir, progress=cfg.progress)
        write_run_state(train_dir, "finished", steps, steps)
        checkpoint = irm_checkpoint(train_dir)
    return load_irm(checkpoint, base), checkpoint


def realignments(cfg: RealignmentsConfig, base: TransformerBridge) -> list[Realigned]:
    """The IRM-injected base, the RL model and the supervised model (trained or taken from the caches)."""
    irm, checkpoint = negative_irm(cfg, base)
    found = [Realigned("irm", ModelSide(base, hooks=tuple(irm.hooks(base)), name="irm"), str(checkpoint))]
    for method in ("rl", "supervised"):
        tuned = make_tuned(
            method,
            tune=tune_config(cfg.base, quick=cfg.quick, seed=cfg.seed),
            rl=rl_config(cfg.base, quick=cfg.quick, seed=cfg.rl_seeds[0]),
            progress=cfg.progress,
            say=partial(say, cfg),
        )
        found.append(Realigned(method, ModelSide(tuned.model, name=method), str(tuned.path)))
    return found


def figures(moved: list[Behaviour], changes: list[ResidualChange], patches: list[Patching], cos, overlap) -> dict:
    """One side-by-side figure per question."""
    frame = pd.DataFrame([vars(b) for b in moved])
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=["VADER negativity gain (95% CI)", "KL to base", "held-out loss"]
    )
    errors = dict(
        type="data",
        symmetric=False,
        array=[b.gain_ci[1] - b.gain for b in moved],
        arrayminus=[b.gain - b.gain_ci[0] for b in moved],
    )
    fig.add_trace(go.Bar(x=frame.name, y=frame.gain, error_y=errors, showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=frame.name, y=frame.kl_to_base, showlegend=False), row=1, col=2)
    fig.add_trace(go.Bar(x=frame.name, y=frame.heldout_loss, showlegend=False), row=1, col=3)
    fig.update_layout(title="How far behaviour moved (base vs each realignment)")
    norms = norm_frame(changes)
    recovery = pd.concat([p.recovery() for p in patches])
    return {
        "behaviour": fig,
        "residual_diff_norm": px.line(
            norms,
            x="layer",
            y="relative_norm",
            color="model",
            markers=True,
            title="‖resid − base resid‖ / ‖base resid‖",
        ),
        "patching_recovery": px.line(
            recovery,
            x="layer",
            y="recovery",
            color="model",
            facet_col="kind",
            markers=True,
            title="Patching recovery by layer (last position; 0 = base, 1 = the realigned model)",
        ),
        "residual_cosine": px.line(
            cos.rename(columns={"cosine": "positions ≥ 1", "cosine_first_token": "first token"}).melt(
                id_vars=["pair", "layer"], var_name="positions", value_name="cosine"
            ),
            x="layer",
            y="cosine",
            color="pair",
            facet_col="positions",
            markers=True,
            title="Cosine of the mean residual changes (gaps: one model did not change there)",
        ).for_each_annotation(lambda a: a.update(text=a.text.removeprefix("positions="))),
        "top_overlap": px.bar(
            overlap, x="pair", y="jaccard", color="what", barmode="group", title="Overlap of top heads / neurons"
        ),
    }


def main(cfg: RealignmentsConfig) -> dict:
    """Build or load the three realignments, measure them against the base, write figures and ``summary.json``.

    The config is checked first (:meth:`~experiments.fields.ExperimentConfig.preflight`), before any model loads.
    """
    cfg = with_quick(cfg).preflight()
    clock, seconds = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase], clock = time.perf_counter() - clock, time.perf_counter()

    torch.manual_seed(cfg.seed)
    base = load_model(cfg.base)
    say(cfg, "models: the negative IRM, the RL model and the supervised model (made here unless found or cached)")
    models = realignments(cfg, base)
    extra = more_rl_seeds(cfg)
    budget = budgets(models + extra, base)
    tokenization = [check_pair(base, r.side.model, names=("base", r.name), chat=True) for r in models].pop()
    lap("models")
    prompts = heldout_prompts(cfg)
    say(cfg, f"behaviour: sampling continuations of {len(prompts)} held-out prompts per model, KL, held-out loss")
    moved = behaviour(cfg, base, models + extra, prompts)
    lap("behaviour")
    say(cfg, "residual-stream and MLP changes against the base")
    changes = residual_changes(base, models, prompts)
    lap("residual_changes")
    say(cfg, "patching each model into the base (resid_pre, attn_out, mlp_out by layer; heads)")
    n_layers = base.cfg.n_layers
    k = cfg.patch_layers
    patches = patching(base, models, list(range(max(0, n_layers - k), n_layers)) if k else None)
    lap("patching")
    readouts = []
    if cfg.diffing:
        say(cfg, "diffing: what each model changed, in words (ADL, Patchscope, steering, crosscoder, unprompted)")
        readouts = read_realignments(cfg, base, models)
        lap("diffing")
    cos, overlap = cosines(changes), overlaps(patches, changes, cfg.top_k)
    recovery = pd.concat([p.recovery() for p in patches])
    summary = {
        **unfinished_note(models[0].source),
        "models": {r.name: r.source for r in models},
        "tokenization": tokenization.to_dict(),
        "training_budget": budget,
        "rl_gain_over_seeds": seed_spread(moved, cfg.rl_seeds),
        "behaviour": {b.name: {k: v for k, v in vars(b).items() if k != "name"} for b in moved},
        "residual_diff_norm_peak_layer": {c.name: int(c.relative_norm.argmax()) for c in changes},
        "patching_recovery_peak_layer": {
            f"{p.name}/{kind}": int(frame.loc[frame.recovery.abs().idxmax(), "layer"])
            for p in patches
            for kind, frame in p.recovery().reset_index(drop=True).groupby("kind")
        },
        "mean_cosine_by_pair": cos.groupby("pair").cosine.mean().to_dict(),
        "mean_cosine_first_token_by_pair": cos.groupby("pair").cosine_first_token.mean().to_dict(),
        "first_token_top_dim": first_token_top_dims(changes, base_peak_abs(base, prompts)),
        "top_overlap": overlap.to_dict("records"),
        **({"diffing": diffing_summary(readouts)} if readouts else {}),
        "seconds": sum(seconds.values()),
        "seconds_by_phase": seconds,
    }
    tables = {
        "behaviour": pd.DataFrame([vars(b) | budget.get(b.name, {}) for b in moved]),
        "patching_recovery": recovery,
        "residual_diff_norm": norm_frame(changes),
        "residual_cosine": cos,
        "top_overlap": overlap,
        **(diffing_tables(readouts, summary["diffing"]) if readouts else {}),
    }
    say(cfg, f"writing figures and tables to {cfg.out}")
    write_outputs(
        cfg.out,
        cfg,
        figures=figures(moved, changes, patches, cos, overlap),
        tables=tables,
        summary=summary,
        png=cfg.png,
        captions=CAPTIONS,
        key_figure="behaviour",
    )
    return summary
