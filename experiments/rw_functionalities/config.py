"""The RW functionalities experiment's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.config import Config
from workbench.models import DEFAULT_MODEL
from workbench.neurons.ablation import AblationMode

__all__ = ["RWConfig", "attributes_cfg"]


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


def attributes_cfg(cfg: RWConfig) -> RWConfig:
    """``--quick``: the attributes rate on 8 known facts, 6 tokens each, 1 control."""
    return cfg.replace(max_knowns=8, attr_tokens=6, attr_controls=1) if cfg.quick else cfg
