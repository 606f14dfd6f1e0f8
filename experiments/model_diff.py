"""Where does a tuned model differ from its base? (``python -m experiments.model_diff``)

Reproduces, on the default model, the analysis of an RLHF-tuned GPT-2 (lvwerra/gpt2-imdb vs
curt-tigges/gpt2-negative-movie-reviews: logit difference " bad" − " good" after "This movie was
really", logit lens, direct logit attribution per layer and head, activation patching of the tuned
model's activations into the base model's run, and a joint patch of the top heads), on several
same-length prompts. The tuned model is made by :mod:`workbench.tuning`: ``--tuning supervised``
(the default: next-token tuning of the last layers on the negative tweets) or ``--tuning rl`` (GRPO
towards VADER negativity, every layer, as the demo's PPO; also writes the held-out evidence that RL
worked), or ``--tuned FOLDER`` names an HF folder or a peft adapter folder (merged into its base). The pair
is checked first (:func:`workbench.pairs.check_pair`: same vocabulary, BOS convention and special tokens), and the
summary states the tokenization both sides used. ``--irm CHECKPOINT`` runs the same analyses on
the base vs the base with an IRM injected (e.g. the negative IRM of ``python -m
experiments.neuron1512``), into ``OUT/irm``. The analyses of one model against the base are in
:mod:`experiments.model_diff_compare`; this module makes the tuned model and runs them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from transformer_lens.model_bridge import TransformerBridge

from experiments.checks import check_prompt_lengths, preflight
from experiments.common import parse_config, say, write_outputs
from experiments.model_diff_compare import SWEEP_KINDS, VIEW_CAPTIONS, Comparison, compare, prompt_set, top_head_views
from workbench.analysis.patching import ModelSide
from workbench.config import Config
from workbench.irm import latest_checkpoint, load_irm
from workbench.models import DEFAULT_MODEL, load_model
from workbench.pairs import check_pair, share_weights
from workbench.tuning import (
    RLConfig,
    RLEvidence,
    TuneConfig,
    load_tuned,
    rl_evidence,
    rl_prompts,
    rl_tune,
    tune_last_layers,
)

__all__ = [
    "SENTIMENT_PROMPTS",
    "SWEEP_KINDS",
    "TUNINGS",
    "Comparison",
    "ModelDiffConfig",
    "TunedModel",
    "compare",
    "main",
    "make_tuned",
    "prompt_set",
    "rl_config",
    "tune_config",
]

TUNINGS = ("supervised", "rl")
SENTIMENT_PROMPTS = (
    "This movie was really",
    "This film was really",
    "The food was really",
    "The service was really",
    "The weather was really",
    "My day was really",
    "This book was really",
    "The flight was really",
)
"""Same-length prompts (4 tokens for SmolLM2) where " bad" vs " good" reads the sentiment."""


@dataclass(frozen=True)
class ModelDiffConfig(Config):
    """Base vs tuned model on prompt / answer pairs."""

    base: str = DEFAULT_MODEL
    """Base model: a registry name or an HF folder."""
    tuning: str = "supervised"
    """How the tuned model is made: supervised (last layers on the negative tweets) or rl (GRPO, VADER reward)."""
    tuned: str | None = None
    """A tuned model's HF folder, or a peft adapter folder, to compare instead (overrides --tuning)."""
    prompts: tuple[str, ...] = SENTIMENT_PROMPTS
    """Prompts (same token length)."""
    answers: tuple[str, ...] = (" bad", " good")
    """Answer and other token, one pair for all prompts or one pair per prompt (flattened)."""
    out: str | None = None
    """Output folder; default figures/model_diff (supervised), figures/model_diff_rl (rl), .._folder (--tuned)."""
    quick: bool = False
    """Small, fast run (for tests): short tuning, sweeps over the last 8 layers only, no PNGs."""
    tune_layers: int = 2
    """Layers unfrozen when making the supervised model."""
    tune_steps: int = 40
    """Tuning steps when making the supervised model (quick: 8)."""
    tune_lr: float = 1e-3
    """Tuning learning rate of the supervised model (quick: 3e-3)."""
    rl_steps: int | None = None
    """GRPO steps when making the RL model (default: RLConfig's; quick: 6)."""
    evidence_samples: int = 4
    """RL evidence: completions per held-out prompt and model (quick: 2)."""
    top_heads: int = 2
    """How many heads (largest head-patching effect) to patch jointly."""
    irm: str | None = None
    """Also compare the base with the base + an IRM: a checkpoint or a training folder (e.g. the main job's
    runs/neuron1512/card/negative/seed-0)."""
    progress: bool = True
    """Show progress bars (tuning, GRPO) and say which phase runs."""
    seed: int = 0
    """Seed."""

    def __post_init__(self):
        if self.tuning not in TUNINGS:
            raise ValueError(f"--tuning {self.tuning!r}: choose one of {', '.join(TUNINGS)} (or pass --tuned FOLDER)")

    def check(self) -> None:
        """Pre-flight: the prompts are batched together, so they must share a token length."""
        check_prompt_lengths("--prompts", self.base, self.prompts)

    @property
    def out_dir(self) -> Path:
        """Where the outputs go."""
        if self.out is not None:
            return Path(self.out)
        if self.tuned is not None:
            return Path("figures") / "model_diff_folder"
        return Path("figures") / {"supervised": "model_diff", "rl": "model_diff_rl"}[self.tuning]


def tune_config(cfg: ModelDiffConfig) -> TuneConfig:
    """The supervised tuning that makes the tuned model (quick: 8 steps, ~20 s)."""
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


def rl_config(cfg: ModelDiffConfig) -> RLConfig:
    """The GRPO tuning that makes the RL model (quick: 6 steps of 8 completions, < 2 min on CPU)."""
    if cfg.quick:
        return RLConfig(
            model=cfg.base,
            steps=cfg.rl_steps or 6,
            batch_size=8,
            num_generations=4,
            max_completion_length=12,
            n_prompts=48,
            n_held_out=12,
            lr=3e-5,
            seed=cfg.seed,
        )
    return RLConfig(model=cfg.base, seed=cfg.seed, **({"steps": cfg.rl_steps} if cfg.rl_steps else {}))


@dataclass(frozen=True)
class TunedModel:
    """The model compared with the base, and how it was made."""

    model: TransformerBridge
    """The tuned model as a bridge."""
    path: Path
    """Its HF folder."""
    method: str
    """``supervised``, ``rl`` or ``folder``."""
    rl: RLConfig | None = None
    """The RL config, when ``method == "rl"``."""


def make_tuned(cfg: ModelDiffConfig) -> TunedModel:
    """Load the folder ``cfg.tuned``, or train (or reuse from the cache) the model ``cfg.tuning`` names."""
    if cfg.tuned is not None:
        path = Path(cfg.tuned)
        if not path.is_dir():
            raise FileNotFoundError(f"--tuned {cfg.tuned!r} is not a folder: give an HF folder, or use --tuning")
        return TunedModel(load_tuned(path) if (path / "tuning.json").exists() else load_model(path), path, "folder")
    if cfg.tuning == "supervised":
        tune = tune_config(cfg)
        say(cfg, f"supervised model: tuning the last {tune.last_layers} layers, {tune.steps} steps (cached once made)")
        path = tune_last_layers(tune, progress=cfg.progress)
        return TunedModel(load_tuned(path), path, "supervised")
    rl = rl_config(cfg)
    say(
        cfg,
        f"RL model: GRPO, {rl.steps} steps of {rl.batch_size} completions, VADER reward (cached once made)",
    )
    path = rl_tune(rl, progress=cfg.progress)
    return TunedModel(load_tuned(path), path, "rl", rl)


def tuning_evidence(cfg: ModelDiffConfig, tuned: TunedModel) -> RLEvidence:
    """Held-out reward of base vs RL model with a paired bootstrap interval, KL to base, lengths, samples."""
    _, held_out = rl_prompts(tuned.rl)
    return rl_evidence(
        cfg.base,
        tuned.path,
        held_out,
        samples=2 if cfg.quick else cfg.evidence_samples,
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


def _irm_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or the newest checkpoint of a training folder (``runs/neuron1512/card/negative/seed-0``)."""
    if (path / "irm.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no IRM checkpoint at {path}: pass a step-* folder written by train_irm, or its parent"
        )
    return latest


def main(cfg: ModelDiffConfig) -> dict:
    """Run the comparison(s) and write figures, tables and ``summary.json`` under ``cfg.out_dir``.

    Base vs tuned goes to ``cfg.out_dir``; with ``--irm``, base vs the IRM-injected base goes to
    ``cfg.out_dir/irm`` and its summary under the key ``"irm"``. The config is checked first
    (:func:`~experiments.checks.preflight`), before any model loads.
    """
    preflight(cfg)
    if cfg.tuned is not None:
        check_pair(cfg.base, cfg.tuned, names=("--base", "--tuned"))  # tokenizers only, before any weights load
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    base_model = load_model(cfg.base)
    tuned = make_tuned(cfg)
    tokenization = check_pair(base_model, tuned.model, names=("base", f"{tuned.method} model"))
    shared_bytes = share_weights(base_model, tuned.model)
    prompts = prompt_set(cfg.prompts, cfg.answers)
    layers = list(range(base_model.cfg.n_layers - 8, base_model.cfg.n_layers)) if cfg.quick else None
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
        checkpoint = _irm_checkpoint(Path(cfg.irm))
        irm = load_irm(checkpoint, base_model)
        injected = ModelSide(base_model, hooks=tuple(irm.hooks(base_model)), name="irm")
        say(cfg, f"base vs base + IRM ({checkpoint}): the same analyses")
        irm_comparison = compare(base, injected, prompts, layers=layers, top_heads=cfg.top_heads)
        irm_summary = irm_comparison.summary()
        write_outputs(
            cfg.out_dir / "irm",
            cfg,
            figures=irm_comparison.figures(),
            tables=irm_comparison.tables(),
            summary=irm_summary,
            png=not cfg.quick,
            views=top_head_views(base, injected, prompts, irm_comparison.joint),
            captions=VIEW_CAPTIONS,
        )
        summary["irm"] = {"checkpoint": str(checkpoint), **irm_summary}
    summary["seconds"] = time.perf_counter() - started
    say(cfg, f"writing {len(figures)} figures and {len(tables)} tables to {cfg.out_dir}")
    write_outputs(
        cfg.out_dir,
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=not cfg.quick,
        views=top_head_views(base, tuned_side, prompts, comparison.joint),
        captions=VIEW_CAPTIONS,
    )
    return summary


if __name__ == "__main__":
    main(parse_config(ModelDiffConfig, description=__doc__.splitlines()[0]))
