"""Make the tuned model, compare it (and an IRM) with the base, and write the outputs."""

from __future__ import annotations

import json
import time
from functools import partial

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

from experiments.common import say, write_outputs
from experiments.fields import with_quick
from experiments.model_diff.compare import VIEW_CAPTIONS, compare, top_head_views
from experiments.model_diff.config import ModelDiffConfig
from workbench.data.prompts import prompt_set
from workbench.hooks import ModelSide
from workbench.irm import load_irm
from workbench.models import load_model
from workbench.pairs import check_pair, share_weights
from workbench.runstate import irm_checkpoint, unfinished_note
from workbench.tuning import (
    RLEvidence,
    TunedModel,
    make_tuned,
    rl_config,
    rl_evidence,
    rl_prompts,
    tune_config,
)

__all__ = ["main", "rl_figures", "tuning_evidence"]


def tuning_evidence(cfg: ModelDiffConfig, tuned: TunedModel) -> RLEvidence:
    """Held-out reward of base vs RL model with a paired bootstrap interval, KL to base, lengths, samples."""
    _, held_out = rl_prompts(tuned.rl)
    return rl_evidence(
        cfg.base,
        tuned.path,
        held_out,
        samples=cfg.evidence_samples,
        max_new_tokens=tuned.rl.max_completion_length,
        temperature=tuned.rl.temperature,
        seed=cfg.seed,
    )


def rl_figures(evidence: RLEvidence, history: pd.DataFrame) -> dict[str, go.Figure]:
    """GRPO's training curve (reward and KL per step) and the held-out reward per prompt, base vs tuned."""
    curve = history.melt(id_vars="step", value_vars=[c for c in ("reward", "kl") if c in history], var_name="metric")
    low, high = evidence.gain_ci
    per_prompt = pd.DataFrame(
        {"base": evidence.reward_base, "tuned": evidence.reward_tuned, "prompt": evidence.prompts}
    )
    scatter = px.scatter(
        per_prompt,
        x="base",
        y="tuned",
        hover_name="prompt",
        title=f"Held-out reward per prompt: gain {evidence.gain:+.3f} (95% CI {low:+.3f} to {high:+.3f})",
    )
    bound = [per_prompt[["base", "tuned"]].min().min(), per_prompt[["base", "tuned"]].max().max()]
    scatter.add_trace(go.Scatter(x=bound, y=bound, mode="lines", name="no change", line={"dash": "dot"}))
    return {
        "rl_training": px.line(
            curve, x="step", y="value", facet_row="metric", title="GRPO training (per step)"
        ).update_yaxes(matches=None),
        "rl_heldout_reward": scatter,
    }


def main(cfg: ModelDiffConfig) -> dict:
    """Run the comparison(s) and write figures, tables and ``summary.json`` under ``cfg.out_dir``.

    Base vs tuned goes to ``cfg.out_dir``; with ``--irm``, base vs the IRM-injected base goes to
    ``cfg.out_dir/irm`` and its summary under the key ``"irm"``. The config is checked first
    (:meth:`~experiments.fields.ExperimentConfig.preflight`), before any model loads.
    """
    cfg = with_quick(cfg).preflight()
    if cfg.tuned is not None:
        check_pair(cfg.base, cfg.tuned, names=("--base", "--tuned"))  # tokenizers only, before any weights load
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    base_model = load_model(cfg.base)
    tuned = make_tuned(
        cfg.tuning,
        folder=cfg.tuned,
        tune=tune_config(  # bare texts: the analyses read raw-text prompts, the TRLX demo's format
            cfg.base,
            quick=cfg.quick,
            last_layers=cfg.tune_layers,
            steps=cfg.tune_steps,
            lr=cfg.tune_lr,
            seed=cfg.seed,
            chat=False,
        ),
        rl=rl_config(cfg.base, quick=cfg.quick, steps=cfg.rl_steps, seed=cfg.seed),
        progress=cfg.progress,
        say=partial(say, cfg),
    )
    tokenization = check_pair(base_model, tuned.model, names=("base", f"{tuned.method} model"))
    shared_bytes = share_weights(base_model, tuned.model)
    prompts = prompt_set(cfg.prompts, cfg.answers)
    n_layers, k = base_model.cfg.n_layers, cfg.sweep_layers
    layers = list(range(max(0, n_layers - k), n_layers)) if k else None
    base = ModelSide(base_model, name="base")
    tuned_side = ModelSide(tuned.model, name="tuned")
    say(cfg, f"base vs {tuned.method} model: logit differences, logit lens, attribution, patching sweeps")
    comparison = compare(base, tuned_side, prompts, layers=layers, top_heads=cfg.top_heads)
    summary = {"base": str(base_model.cfg.model_name), "tuned": str(tuned.path), "method": tuned.method}
    summary |= {"tokenization": tokenization.to_dict(), "weights_shared_mb": shared_bytes / 2**20}
    summary |= comparison.summary()
    figures, tables = comparison.figures(), comparison.tables()
    if tuned.rl is not None:
        say(cfg, "RL evidence: sampling base and RL model on held-out prompts")
        evidence = tuning_evidence(cfg, tuned)
        summary["rl_evidence"] = evidence.summary()
        history = pd.DataFrame(json.loads((tuned.path / "tuning.json").read_text())["history"])
        tables |= {"rl_samples": evidence.samples, "rl_sample_table": evidence.sample_table(), "rl_history": history}
        figures |= rl_figures(evidence, history)
    if cfg.irm is not None:
        checkpoint = irm_checkpoint(cfg.irm, allow_unfinished=cfg.allow_unfinished)
        irm = load_irm(checkpoint, base_model)
        unfinished = unfinished_note(checkpoint)
        injected = ModelSide(base_model, hooks=tuple(irm.hooks(base_model)), name="irm")
        say(cfg, f"base vs base + IRM ({checkpoint}): the same analyses")
        irm_comparison = compare(base, injected, prompts, layers=layers, top_heads=cfg.top_heads)
        irm_summary = irm_comparison.summary() | unfinished
        write_outputs(
            cfg.out_dir / "irm",
            cfg,
            figures=irm_comparison.figures(),
            tables=irm_comparison.tables(),
            summary=irm_summary,
            png=cfg.png,
            key_figure="logit_lens",
            views=top_head_views(base, injected, prompts, irm_comparison.joint),
            captions=VIEW_CAPTIONS,
        )
        summary["irm"] = {"checkpoint": str(checkpoint), **irm_summary}
        summary |= unfinished
    summary["seconds"] = time.perf_counter() - started
    say(cfg, f"writing {len(figures)} figures and {len(tables)} tables to {cfg.out_dir}")
    write_outputs(
        cfg.out_dir,
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=cfg.png,
        key_figure="logit_lens",
        views=top_head_views(base, tuned_side, prompts, comparison.joint),
        captions=VIEW_CAPTIONS,
    )
    return summary
