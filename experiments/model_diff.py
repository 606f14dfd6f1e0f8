"""Where does a tuned model differ from its base? (``python -m experiments.model_diff``)

Reproduces, on the default model, the analysis of an RLHF-tuned GPT-2 (lvwerra/gpt2-imdb vs
curt-tigges/gpt2-negative-movie-reviews: logit difference " bad" − " good" on "This movie was
really", logit lens, direct logit attribution per layer and head, activation patching of the tuned
model's activations into the base model's run, and a joint patch of the top heads). The tuned
model is the base fine-tuned on the negative tweets with only its last layers unfrozen
(:mod:`workbench.tuning`), unless ``--tuned`` names a folder. ``--irm CHECKPOINT`` runs the same
analyses on the base vs the base with an IRM injected (e.g. the negative IRM of
``python -m experiments.neuron1512``), into ``OUT/irm``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from experiments.common import parse_config, write_outputs
from workbench.analysis.attribution import head_attribution, layer_attribution
from workbench.analysis.logit_lens import logit_lens
from workbench.analysis.patching import ModelSide, patch_heads, patch_sweep
from workbench.analysis.plots import (
    attribution_figure,
    bar_figure,
    head_heatmap,
    logit_lens_figure,
    patching_heatmap,
)
from workbench.config import Config
from workbench.data.prompts import PromptSet
from workbench.hooks import attach
from workbench.irm import latest_checkpoint, load_irm
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, load_model
from workbench.tuning import TuneConfig, load_tuned, tune_last_layers

SWEEP_KINDS = ("resid_pre", "attn_out", "mlp_out", "head")


@dataclass(frozen=True)
class ModelDiffConfig(Config):
    """Base vs tuned model on prompt / answer pairs."""

    base: str = DEFAULT_MODEL
    """Base model: a registry name or an HF folder."""
    tuned: str | None = None
    """Tuned model folder; default: fine-tune the base's last layers on the negative tweets (cached)."""
    prompts: tuple[str, ...] = ("This movie was really",)
    """Prompts (same token length)."""
    answers: tuple[str, ...] = (" bad", " good")
    """Answer and other token, one pair for all prompts or one pair per prompt (flattened)."""
    out: str = "figures/model_diff"
    """Output folder."""
    quick: bool = False
    """Small, fast run (for tests): a few tuning steps, sweeps over the last 8 layers only, no PNGs."""
    tune_layers: int = 2
    """Layers unfrozen when making the tuned model."""
    tune_steps: int = 40
    """Tuning steps when making the tuned model (quick: 8)."""
    tune_lr: float = 1e-3
    """Tuning learning rate (quick: 3e-3)."""
    top_heads: int = 2
    """How many heads (largest head-patching effect) to patch jointly."""
    irm: str | None = None
    """Also compare the base with the base + an IRM: a checkpoint folder, or a training folder such as runs/neuron1512/negative."""
    seed: int = 0
    """Seed."""


def tune_config(cfg: ModelDiffConfig) -> TuneConfig:
    """The tuning that makes the tuned model when ``--tuned`` is not given (quick: 8 steps, ~20 s)."""
    if cfg.quick:
        return TuneConfig(
            model=cfg.base,
            last_layers=cfg.tune_layers,
            steps=8,
            lr=3e-3,
            batch_size=4,
            max_length=32,
            max_items=500,
            seed=cfg.seed,
        )
    return TuneConfig(model=cfg.base, last_layers=cfg.tune_layers, steps=cfg.tune_steps, lr=cfg.tune_lr, seed=cfg.seed)


def _tuned_model(cfg: ModelDiffConfig):
    if cfg.tuned is not None:
        path = Path(cfg.tuned)
        return (load_tuned(path) if (path / "tuning.json").exists() else load_model(path)), str(path)
    path = tune_last_layers(tune_config(cfg))
    return load_tuned(path), str(path)


def _prompt_set(cfg: ModelDiffConfig) -> PromptSet:
    if len(cfg.answers) % 2:
        raise ValueError(f"--answers takes pairs (answer other ...); got {len(cfg.answers)} strings")
    pairs = [tuple(cfg.answers[i : i + 2]) for i in range(0, len(cfg.answers), 2)]
    if len(pairs) == 1:
        pairs = pairs * len(cfg.prompts)
    return PromptSet(tuple(cfg.prompts), tuple(pairs))


def main(cfg: ModelDiffConfig) -> dict:
    """Run the comparison(s) and write figures, tables and ``summary.json`` under ``cfg.out``.

    Base vs tuned goes to ``cfg.out``; with ``--irm``, base vs the IRM-injected base goes to
    ``cfg.out/irm`` and its summary under the key ``"irm"``.
    """
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    base_model = load_model(cfg.base)
    tuned_model, tuned_path = _tuned_model(cfg)
    prompts = _prompt_set(cfg)
    base = ModelSide(base_model, name="base")
    summary, figures, tables = compare(base, ModelSide(tuned_model, name="tuned"), prompts, cfg)
    summary = {"base": str(base_model.cfg.model_name), "tuned": tuned_path, **summary}
    if cfg.irm is not None:
        checkpoint = _irm_checkpoint(Path(cfg.irm))
        irm = load_irm(checkpoint, base_model)
        irm_summary, irm_figures, irm_tables = compare(
            base, ModelSide(base_model, hooks=tuple(irm.hooks(base_model)), name="irm"), prompts, cfg
        )
        write_outputs(
            Path(cfg.out) / "irm", cfg, figures=irm_figures, tables=irm_tables, summary=irm_summary, png=not cfg.quick
        )
        summary["irm"] = {"checkpoint": str(checkpoint), **irm_summary}
    summary["seconds"] = time.perf_counter() - started
    write_outputs(cfg.out, cfg, figures=figures, tables=tables, summary=summary, png=not cfg.quick)
    return summary


def _irm_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or the newest checkpoint of a training folder (``runs/neuron1512/negative``)."""
    if (path / "irm.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no IRM checkpoint at {path}: pass a step-* folder written by train_irm, or its parent"
        )
    return latest


def compare(base: ModelSide, other: ModelSide, prompts: PromptSet, cfg: ModelDiffConfig) -> tuple[dict, dict, dict]:
    """The study's analyses of ``other`` against ``base`` on ``prompts``: summary, figures, tables.

    Direct logit attribution runs each side with its hooks attached, so for an injected model the
    components are those of the injected run; the injected module's own writes are not a listed
    component (they show in the logit lens gap and in patching).
    """
    name = other.label
    base_model = base.model
    tokens, answers = prompts.tokens(base_model), prompts.answer_tokens(base_model)
    metric = LogitDiff(answers)
    per_prompt = LogitDiff(answers, per_prompt=True)
    diffs = {side.label: per_prompt(side.run(tokens)[0]) for side in (base, other)}
    base_ld, other_ld = float(diffs["base"].mean()), float(diffs[name].mean())
    diff_table = pd.DataFrame(
        [
            (side, prompts.prompts[i], *prompts.answers[i], float(diffs[side][i]))
            for side in diffs
            for i in range(len(prompts.prompts))
        ],
        columns=["model", "prompt", "answer", "other", "logit_diff"],
    )

    # own-scale lens: the final-scale variant would shift every layer by the other model's new final scale
    lenses = [logit_lens(side, tokens, answers, scale="own") for side in (base, other)]
    attributions, head_attrs = [], []
    for side in (base, other):
        with attach(side.model, side.hooks):
            attributions.append(replace(layer_attribution(side.model, tokens, answers), model=side.label))
            head_attrs.append(replace(head_attribution(side.model, tokens, answers), model=side.label))
    head_diff = head_attrs[1].values - head_attrs[0].values

    # the other model's activations patched into the base model's run: 0 = base, 1 = other
    n_layers, n_heads = base_model.cfg.n_layers, base_model.cfg.n_heads
    layers = list(range(n_layers - 8, n_layers)) if cfg.quick else None
    sweeps = {kind: patch_sweep(base, other, kind, metric, tokens, layers=layers) for kind in SWEEP_KINDS}
    # heads that move the base most towards the other model
    toward = (sweeps["head"].values - sweeps["head"].baseline) * (1.0 if other_ld >= base_ld else -1.0)
    order = toward.flatten().argsort(descending=True)[: cfg.top_heads].tolist()
    top_heads = [(sweeps["head"].layers[i // n_heads], i % n_heads) for i in order]
    joint = patch_heads(base, other, top_heads, metric, tokens)
    joint_back = patch_heads(other, base, top_heads, metric, tokens)
    head_labels = " ".join(f"L{l}H{h}" for l, h in top_heads)
    joint_table = pd.DataFrame(
        [
            ("base", "none", base_ld),
            (name, "none", other_ld),
            ("base", f"{name} heads {head_labels}", joint),
            (name, f"base heads {head_labels}", joint_back),
        ],
        columns=["run", "patched", "logit_diff"],
    )

    attr_diff = attributions[1].values - attributions[0].values
    attr_top = attr_diff.abs().argsort(descending=True)[:5].tolist()
    lens_gap = lenses[1].logit_diff - lenses[0].logit_diff
    head_diff_top = head_diff.flatten().abs().argsort(descending=True)[:5].tolist()
    summary = {
        "prompts": list(prompts.prompts),
        "answers": [list(a) for a in prompts.answers],
        "logit_diff_base": base_ld,
        f"logit_diff_{name}": other_ld,
        "logit_lens_gap_by_point": dict(zip(lenses[0].labels, lens_gap.tolist())),
        "top_attribution_differences": {attributions[0].labels[i]: float(attr_diff[i]) for i in attr_top},
        "top_head_attribution_differences": {
            f"L{i // n_heads}H{i % n_heads}": float(head_diff.flatten()[i]) for i in head_diff_top
        },
        "top_patching": {kind: sweeps[kind].top(3).drop(columns="kind").to_dict("records") for kind in SWEEP_KINDS},
        "top_heads": [f"L{l}H{h}" for l, h in top_heads],
        "joint_head_patch_logit_diff": joint,
        "joint_head_patch_normalized": (joint - base_ld) / (other_ld - base_ld) if other_ld != base_ld else None,
        "joint_head_patch_flips_base": bool((joint > 0) != (base_ld > 0)),
        "reverse_joint_head_patch_logit_diff": joint_back,
    }
    figures = {
        "logit_diff": bar_figure(
            diff_table, "prompt", "logit_diff", "Logit difference (answer − other)", color="model"
        ),
        "logit_lens": logit_lens_figure(lenses),
        "layer_attribution": attribution_figure(attributions),
        "head_attribution_diff": head_heatmap(head_diff, f"Head attribution, {name} − base", "Δ logit diff"),
        "joint_head_patch": bar_figure(
            joint_table, "patched", "logit_diff", "Joint patch of the top heads", color="run"
        ),
    }
    figures.update(
        {
            f"patch_{kind}": patching_heatmap(sweeps[kind], f"{name} → base patching: {kind} (0 = base, 1 = {name})")
            for kind in SWEEP_KINDS
        }
    )
    tables = {
        "logit_diff": diff_table,
        "logit_lens": pd.concat([lens.to_frame() for lens in lenses]),
        "logit_lens_tokens": pd.concat([lens.tokens_frame() for lens in lenses]),
        "layer_attribution": pd.concat([a.to_frame() for a in attributions]),
        "head_attribution": pd.concat([h.to_frame() for h in head_attrs]),
        "joint_head_patch": joint_table,
        **{f"patch_{kind}": sweeps[kind].to_frame() for kind in SWEEP_KINDS},
    }
    return summary, figures, tables


if __name__ == "__main__":
    main(parse_config(ModelDiffConfig, description=__doc__.splitlines()[0]))
