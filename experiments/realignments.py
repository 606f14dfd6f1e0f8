"""Do IRM, RL and supervised tuning realign the model in the same places? (``python -m experiments.realignments``)

Three realignments of the default model towards negativity, each against the base on the same
prompts: the negative IRM of *The Mysterious Case of Neuron 1512* (Smith et al., 2024; the main
job's checkpoint in ``runs/neuron1512/card/negative/seed-0`` when present, else one trained here at quick
size), the GRPO model (:func:`workbench.tuning.rl_tune`, every layer, VADER reward) and the
supervised model (:func:`workbench.tuning.tune_last_layers`, last 2 layers on the negative tweets).

* How far behaviour moved: VADER negativity of sampled continuations of held-out prompts (gain
  over the base with a paired bootstrap 95% interval), KL to the base per completion token, and
  the loss on held-out negative tweets.
* Where the model changed: per-layer norm of the residual-stream difference (relative to the
  base's), patching recovery by layer (the realigned model's resid_pre / attn_out / mlp_out at the
  last position patched into the base's run on the " bad" − " good" prompts), cosine similarity of
  the three mean residual changes per layer, and the overlap of their top heads (head patching)
  and top neurons (mean change of the MLP activations).

Each realignment's training budget (steps, tokens seen, trainable parameters) stands beside its gain, and
the RL model is trained with every seed of ``--rl-seeds`` (default 3) for the spread of its gain. The
measurements are in :mod:`experiments.realignments_measures`; this module builds the realignments, draws
and writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from transformer_lens.model_bridge import TransformerBridge

from experiments.checks import preflight
from experiments.common import parse_config, say, write_outputs
from experiments.model_diff import ModelDiffConfig, make_tuned
from experiments.realignments_measures import (
    Behaviour,
    Patching,
    Realigned,
    ResidualChange,
    behaviour,
    cosines,
    first_token_top_dims,
    heldout_prompts,
    norm_frame,
    overlaps,
    patching,
    residual_changes,
)
from workbench.analysis.patching import ModelSide
from workbench.config import Config
from workbench.data.corpora import load_alignment
from workbench.irm import IRM, IRMConfig, TrainConfig, latest_checkpoint, load_irm, train_irm
from workbench.irm.checkpoint import read_meta
from workbench.irm.train import encode_for
from workbench.models import DEFAULT_MODEL, load_model
from workbench.pairs import check_pair
from workbench.tuning import training_budget

__all__ = ["CAPTIONS", "MAIN_JOB_IRM", "RealignmentsConfig", "figures", "main", "negative_irm", "realignments"]

MAIN_JOB_IRM = "runs/neuron1512/card/negative/seed-0"
"""Where ``python -m experiments.neuron1512`` trains the negative IRM."""
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


@dataclass(frozen=True)
class RealignmentsConfig(Config):
    """Three realignments towards negativity compared with the base and with each other."""

    base: str = DEFAULT_MODEL
    """Base model (registry name or HF folder)."""
    irm: str | None = None
    """The negative IRM (checkpoint or training folder); default: the main job's
    runs/neuron1512/card/negative/seed-0 if there."""
    irm_train_dir: str = "runs/realignments/irm"
    """Where an IRM is trained (resumably) when there is none to take."""
    irm_steps: int = 40
    """Steps of the IRM trained here when there is no checkpoint (quick: 10)."""
    n_prompts: int = 32
    """Held-out RL prompts for behaviour and residual differences (quick: 6)."""
    samples: int = 4
    """Sampled continuations per prompt and model (quick: 2)."""
    max_new_tokens: int = 16
    """Tokens per continuation (quick: 10)."""
    eval_texts: int = 64
    """Held-out negative tweets for the loss (quick: 12)."""
    top_k: int = 10
    """Top heads and top neurons compared between realignments."""
    rl_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the RL model, each trained (cached) and its behaviour measured for the spread of its gain; the first
    is the one compared layer by layer (quick: the first only)."""
    out: str = "figures/realignments"
    """Output folder."""
    quick: bool = False
    """Small, fast run (for tests): quick tuning and IRM, few prompts, the last 6 layers in patching, no PNGs."""
    progress: bool = True
    """Show progress bars (IRM training, tuning, GRPO) and say which phase runs."""
    seed: int = 0
    """Seed."""

    def __post_init__(self):
        if not self.rl_seeds or len(set(self.rl_seeds)) < len(self.rl_seeds):
            raise ValueError(f"--rl-seeds {self.rl_seeds}: give distinct seeds, at least one (three for a spread)")

    def sized(self, full: int, quick: int) -> int:
        """``full``, or ``quick`` under ``--quick`` (each size field's help names both)."""
        return quick if self.quick else full


def negative_irm(cfg: RealignmentsConfig, base: TransformerBridge) -> tuple[IRM, Path]:
    """The IRM at ``cfg.irm``, else the main job's negative IRM if there, else one trained into ``cfg.irm_train_dir``.

    The fallback never writes into the main job's folder, so a quick IRM cannot be mistaken for the
    main job's (whose training would resume from it).
    """
    path = Path(cfg.irm or MAIN_JOB_IRM)
    found = [path] if (path / "irm.json").is_file() else [latest_checkpoint(p) for p in (path / "checkpoints", path)]
    checkpoint = next((c for c in found if c is not None), None)
    if checkpoint is None:
        train_dir = Path(cfg.irm_train_dir) / ("quick" if cfg.quick else "full")
        corpus = load_alignment("negative", max_items=400 if cfg.quick else 4000, seed=cfg.seed)
        irm = IRM.for_model(base, IRMConfig(hidden_mult=1.0), seed=cfg.seed)
        steps = cfg.sized(cfg.irm_steps, 10)
        train = TrainConfig(steps=steps, batch_size=4 if cfg.quick else 8, max_len=40, eval_every=0, seed=cfg.seed)
        say(cfg, f"IRM: no checkpoint at {path}; training one ({steps} steps) into {train_dir}")
        train_irm(base, irm, corpus.train, train, held_out=corpus.held_out, out_dir=train_dir, progress=cfg.progress)
        checkpoint = latest_checkpoint(train_dir / "checkpoints")
    return load_irm(checkpoint, base), checkpoint


def realignments(cfg: RealignmentsConfig, base: TransformerBridge) -> list[Realigned]:
    """The IRM-injected base, the RL model and the supervised model (trained or taken from the caches)."""
    irm, checkpoint = negative_irm(cfg, base)
    found = [Realigned("irm", ModelSide(base, hooks=tuple(irm.hooks(base)), name="irm"), str(checkpoint))]
    for method, seed in (("rl", cfg.rl_seeds[0]), ("supervised", cfg.seed)):
        tuned = make_tuned(
            ModelDiffConfig(base=cfg.base, tuning=method, quick=cfg.quick, progress=cfg.progress, seed=seed)
        )
        found.append(Realigned(method, ModelSide(tuned.model, name=method), str(tuned.path)))
    return found


def more_rl_seeds(cfg: RealignmentsConfig) -> list[Realigned]:
    """The RL models of ``cfg.rl_seeds`` after the first (none under ``--quick``), named ``rl-seed<N>``."""
    found = []
    for seed in () if cfg.quick else cfg.rl_seeds[1:]:
        tuned = make_tuned(ModelDiffConfig(base=cfg.base, tuning="rl", progress=cfg.progress, seed=seed))
        found.append(Realigned(f"rl-seed{seed}", ModelSide(tuned.model, name=f"rl-seed{seed}"), str(tuned.path)))
    return found


def seed_spread(moved: list[Behaviour], seeds: tuple[int, ...]) -> dict:
    """The RL gain over its seeds (``rl`` is the first seed, ``rl-seed<N>`` the others): per seed, mean, spread."""
    gains = {"rl": None, **{f"rl-seed{s}": None for s in seeds[1:]}}
    for b in moved:
        if b.name in gains:
            gains[b.name] = b.gain
    values = [g for g in gains.values() if g is not None]
    mean = sum(values) / len(values)
    std = (sum((g - mean) ** 2 for g in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"seeds": list(seeds[: len(values)]), "gains": values, "gain_mean": mean, "gain_std": std}


def irm_budget(checkpoint: str | Path, base: TransformerBridge) -> dict:
    """Steps, texts seen and trainable parameters of an IRM checkpoint (``irm.json``); tokens seen estimated as
    texts seen x the mean encoded length of negative tweets in the IRM's training format (its corpus is not stored)."""
    from safetensors import safe_open

    meta = read_meta(checkpoint)
    train = TrainConfig.from_dict(meta["train_config"]) if "train_config" in meta else TrainConfig()
    texts = (meta["step"] or 0) * train.batch_size * train.grad_accum
    with safe_open(str(Path(checkpoint) / "irm.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (no __iter__)
    sample = encode_for(base, load_alignment("negative", max_items=400).train[:200], train)
    mean_len = sum(len(e.ids) for e in sample) / len(sample)
    return {
        "steps": meta["step"],
        "texts_seen": texts,
        "tokens_seen": round(texts * mean_len),
        "tokens_seen_estimated": True,
        "trainable_parameters": params,
    }


def budgets(models: list[Realigned], base: TransformerBridge) -> dict[str, dict]:
    """Each realignment's training budget (steps, tokens seen, trainable parameters), to state beside its gain."""
    return {r.name: irm_budget(r.source, base) if r.name == "irm" else training_budget(r.source) for r in models}


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

    The config is checked first (:func:`~experiments.checks.preflight`), before any model loads.
    """
    preflight(cfg)
    clock, seconds = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase], clock = time.perf_counter() - clock, time.perf_counter()

    torch.manual_seed(cfg.seed)
    base = load_model(cfg.base)
    say(cfg, "models: the negative IRM, the RL model and the supervised model (made here unless found or cached)")
    models = realignments(cfg, base)
    tokenization = [check_pair(base, r.side.model, names=("base", r.name), chat=True) for r in models].pop()
    extra = more_rl_seeds(cfg)
    budget = budgets(models + extra, base)
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
    patches = patching(base, models, list(range(n_layers - 6, n_layers)) if cfg.quick else None)
    lap("patching")
    cos, overlap = cosines(changes), overlaps(patches, changes, cfg.top_k)
    recovery = pd.concat([p.recovery() for p in patches])
    summary = {
        "models": {r.name: r.source for r in models},
        "tokenization": tokenization.to_dict(),
        "behaviour": {b.name: {k: v for k, v in vars(b).items() if k != "name"} for b in moved},
        "training_budget": budget,
        "rl_gain_over_seeds": seed_spread(moved, cfg.rl_seeds),
        "residual_diff_norm_peak_layer": {c.name: int(c.relative_norm.argmax()) for c in changes},
        "patching_recovery_peak_layer": {
            f"{p.name}/{kind}": int(frame.loc[frame.recovery.abs().idxmax(), "layer"])
            for p in patches
            for kind, frame in p.recovery().reset_index(drop=True).groupby("kind")
        },
        "mean_cosine_by_pair": cos.groupby("pair").cosine.mean().to_dict(),
        "mean_cosine_first_token_by_pair": cos.groupby("pair").cosine_first_token.mean().to_dict(),
        "first_token_top_dim": first_token_top_dims(changes),
        "top_overlap": overlap.to_dict("records"),
        "seconds": sum(seconds.values()),
        "seconds_by_phase": seconds,
    }
    tables = {
        "behaviour": pd.DataFrame([vars(b) | budget.get(b.name, {}) for b in moved]),
        "patching_recovery": recovery,
        "residual_diff_norm": norm_frame(changes),
        "residual_cosine": cos,
        "top_overlap": overlap,
    }
    say(cfg, f"writing figures and tables to {cfg.out}")
    write_outputs(
        cfg.out,
        cfg,
        figures=figures(moved, changes, patches, cos, overlap),
        tables=tables,
        summary=summary,
        png=not cfg.quick,
        captions=CAPTIONS,
    )
    return summary


if __name__ == "__main__":
    main(parse_config(RealignmentsConfig, description=__doc__.splitlines()[0]))
