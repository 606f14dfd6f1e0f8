"""The RW functionalities study on one model: classes by layer, randomness baselines, activation
frequencies per class, class ablations (unconditional and conditional) against random controls,
the neurons of largest direct logit attribution with their classes, and the attributes rate under class ablations.

Reproduces, on the TransformerLens bridge, Gerstner & Schütze's weight-based study of gated neurons
(arXiv:2505.17936; *Weakening Neurons*, ICLR 2026 submission). Following the reference code, the
ablated sets are ``n_neurons`` neurons sampled from each class (default: as many as the model has
weakening neurons, i.e. all weakening neurons and equally many of every other class; classes with
fewer neurons are skipped), each against ``n_controls`` random sets with the same count per layer
drawn outside the class. The studies (weights, activations, DLA, ablations) are in
:mod:`experiments.rw_functionalities_studies`; this module holds the config and composes them.

    python -m experiments.rw_functionalities [--quick] [--model M] [--corpus neutral|FILE] [--n-neurons N] [--out DIR]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformer_lens.model_bridge import TransformerBridge

from experiments.checks import preflight
from experiments.common import parse_config, write_outputs
from experiments.rw_functionalities_attributes import study_attributes
from experiments.rw_functionalities_studies import (
    ABLATED_CLASSES,
    Size,
    parse_condition,
    study_ablation,
    study_activations,
    study_dla,
    study_weights,
)
from workbench.config import Config
from workbench.models import DEFAULT_MODEL, load_model
from workbench.neurons.ablation import AblationMode

__all__ = ["ABLATED_CLASSES", "RWConfig", "gated_model", "main", "parse_condition"]


@dataclass(frozen=True)
class RWConfig(Config):
    """Configuration of the RW functionalities experiment."""

    model: str = DEFAULT_MODEL
    """Registry name, local HF directory or hub id of a gated-MLP model."""
    corpus: str = "neutral"
    """An alignment of the tweet corpus (negative/neutral/positive) or a text/CSV/JSONL file."""
    n_neurons: int = 0
    """Neurons sampled per class for ablations; 0: as many as the model has weakening neurons."""
    n_texts: int = 48
    """Corpus texts used for activation statistics and ablation metrics."""
    max_len: int = 40
    """Token cut-off per text."""
    n_controls: int = 2
    """Random control sets per ablated class."""
    conditions: tuple[str, ...] = ("all", "gate-post+")
    """Ablation conditions: 'all', or signs of gate/post, e.g. 'gate-post+', 'gate+', 'post-'."""
    orient_post: bool = True
    """Conditions read post·sign(w_gate·w_in), as the paper's code does; --no-orient-post: post's raw sign."""
    mode: AblationMode = "zero"
    """Ablation mode: zero, mean, multiply or fix (see workbench.neurons.ablation.Ablation)."""
    value: float = 0.0
    """Factor (multiply) or value (fix) of the ablation."""
    threshold: float = 0.5
    """Cosine threshold of the classes."""
    weights: Literal["folded", "raw"] = "folded"
    """'folded': the compatibility-mode bridge's weights (RMSNorm gain folded in, as the paper's code); 'raw': the
    checkpoint's."""
    prompts: tuple[str, ...] = (
        "The capital of France is",
        "One, two, three, four,",
        "The Eiffel Tower is located in the city of",
    )
    """Prompts whose next-token entropy is reported per ablation."""
    dla_prompts: tuple[str, ...] = ("This movie was really",)
    """Prompts (equal token length) for per-neuron direct logit attribution."""
    dla_answers: tuple[str, ...] = (" bad", " good")
    """The (answer, other) single tokens of the attribution's logit difference, shared by all prompts."""
    attr_template: str = "{subject} is"
    """Subject prompt of the attributes rate; its greedy continuation is searched for the subject's attributes."""
    attr_tokens: int = 16
    """Tokens generated per subject for the attributes rate."""
    attr_controls: int = 3
    """Random control sets per ablated class for the attributes rate."""
    max_knowns: int = 0
    """Known facts scored by the attributes rate (0 = every fact the model knows)."""
    seed: int = 0
    """Seed of the class samples, controls and corpus shuffle."""
    quick: bool = False
    """Tiny run for tests: 8 short texts, 1 control, only the two weakening classes ablated."""
    out: str = "figures/rw_functionalities"
    """Output folder."""

    def __post_init__(self):
        if len(self.dla_answers) != 2:
            raise ValueError(f"dla_answers is one (answer, other) pair, got {self.dla_answers!r}")
        if "{subject}" not in self.attr_template:
            raise ValueError(f"attr_template must contain {{subject}}, got {self.attr_template!r}")
        if self.weights not in ("folded", "raw"):
            raise ValueError(f"weights must be 'folded' or 'raw', got {self.weights!r}")


def gated_model(cfg: RWConfig) -> TransformerBridge:
    """The bridge of ``cfg.model``; the RW classes need a gated MLP."""
    model = load_model(cfg.model)
    if not getattr(model.cfg, "gated_mlp", False):
        raise ValueError(
            f"{cfg.model} has a non-gated MLP: the RW classes need w_gate; "
            "weight_cosines/classify still give the 3 vanilla classes from cos(w_in, w_out) in the library"
        )
    return model


def attributes_cfg(cfg: RWConfig) -> RWConfig:
    """``--quick``: the attributes rate on 8 known facts, 6 tokens each, 1 control."""
    return cfg.replace(max_knowns=8, attr_tokens=6, attr_controls=1) if cfg.quick else cfg


def main(cfg: RWConfig) -> dict:
    """Run the study and write figures, tables and ``summary.json`` under ``cfg.out``.

    The config is checked first (:func:`~experiments.checks.preflight`), before the model loads.
    """
    preflight(cfg)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    size = Size.of(cfg)
    model = gated_model(cfg)
    weights = study_weights(model, cfg, size)
    t_weights = time.perf_counter() - t0
    activations = study_activations(model, cfg, size, weights.classes)
    dla = study_dla(model, cfg, weights.classes)
    ablation = study_ablation(model, cfg, size, weights.classes, activations)
    attributes = study_attributes(model, attributes_cfg(cfg), ablation.sets, weights.classes)
    parts = (weights, activations, dla, ablation, attributes)
    summary = {k: v for part in parts for k, v in part.summary().items()}
    summary["seconds"] = {"weights": round(t_weights, 1), "total": round(time.perf_counter() - t0, 1)}
    figures = {k: v for part in parts for k, v in part.figures().items()}
    tables = {k: v for part in parts for k, v in part.tables().items()}
    write_outputs(Path(cfg.out), cfg, figures=figures, tables=tables, summary=summary, png=not cfg.quick)
    return summary


if __name__ == "__main__":
    config = parse_config(RWConfig, sys.argv[1:], description=__doc__.splitlines()[0])
    result = main(config)
    print(f"wrote {config.out}; class counts: {result['class_counts']}")
