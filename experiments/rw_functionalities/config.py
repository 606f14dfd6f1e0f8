"""The RW functionalities experiment's config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from experiments.fields import (
    AnswerPairs,
    Check,
    Corpus,
    ExperimentConfig,
    ModelName,
    OutDir,
    Prompts,
    check_prompt_lengths,
)
from workbench.config import Count, Fraction, Range
from workbench.models import DEFAULT_MODEL
from workbench.neurons.ablation import Ablation, AblationMode

__all__ = ["RWConfig", "parse_condition"]


def parse_condition(text: str, mode: str, value: float, orient_post: bool = False) -> Ablation:
    """'all' -> unconditional; 'gate-post+' -> gate<0 and post>0; 'gate+' / 'post-' alone also work."""
    if text == "all":
        return Ablation(mode=mode, value=value)
    cond = {}
    rest = text
    for key in ("gate", "post"):
        if rest.startswith(key) and len(rest) > len(key) and rest[len(key)] in "+-":
            cond[key], rest = rest[len(key)], rest[len(key) + 1 :]
    if rest or not cond:
        raise ValueError(
            f"cannot read condition {text!r}: use 'all', 'gate+', 'gate-', 'post+', 'post-' or e.g. 'gate-post+'"
        )
    return Ablation(mode=mode, value=value, orient_post=orient_post and "post" in cond, **cond)


def _check_conditions(flag: str, conditions: Sequence[str]) -> None:
    """Each condition parses (``all`` or signs of gate / post, e.g. ``gate-post+``)."""
    for text in conditions:
        try:
            parse_condition(text, "zero", 0.0)
        except ValueError as err:
            raise ValueError(f"{flag} {text!r}: {err}") from None


@dataclass(frozen=True)
class RWConfig(ExperimentConfig):
    """Configuration of the RW functionalities experiment."""

    QUICK: ClassVar[Mapping[str, Any]] = {
        "n_texts": 8,
        "max_len": 16,
        "n_controls": 1,
        "png": False,
        "max_knowns": 8,
        "attr_tokens": 6,
        "attr_controls": 1,
    }

    model: ModelName = DEFAULT_MODEL
    """Registry name, local HF directory or hub id of a gated-MLP model."""
    corpus: Corpus = "neutral"
    """An alignment of the tweet corpus (negative/neutral/positive) or a text/CSV/JSONL file."""
    n_neurons: int = 0
    """Neurons sampled per class for ablations; 0: as many as the model has weakening neurons."""
    n_texts: Count = 48
    """Corpus texts used for activation statistics and ablation metrics."""
    max_len: Count = 40
    """Token cut-off per text."""
    n_controls: Count = 2
    """Random control sets per ablated class."""
    conditions: Annotated[tuple[str, ...], Check(_check_conditions)] = ("all", "gate-post+")
    """Ablation conditions: 'all', or signs of gate/post, e.g. 'gate-post+', 'gate+', 'post-'."""
    orient_post: bool = True
    """Conditions read post·sign(w_gate·w_in), as the paper's code does; --no-orient-post: post's raw sign."""
    mode: AblationMode = "zero"
    """Ablation mode: zero, mean, multiply or fix (see workbench.neurons.ablation.Ablation)."""
    value: float = 0.0
    """Factor (multiply) or value (fix) of the ablation."""
    threshold: Fraction = 0.5
    """Cosine threshold of the classes."""
    weights: Literal["folded", "raw"] = "folded"
    """'folded': the compatibility-mode bridge's weights (RMSNorm gain folded in, as the paper's code); 'raw': the
    checkpoint's."""
    prompts: Prompts = (
        "The capital of France is",
        "One, two, three, four,",
        "The Eiffel Tower is located in the city of",
    )
    """Prompts whose next-token entropy is reported per ablation."""
    dla_prompts: Prompts = ("This movie was really",)
    """Prompts (equal token length) for per-neuron direct logit attribution."""
    dla_answers: AnswerPairs = (" bad", " good")
    """The (answer, other) single tokens of the attribution's logit difference, shared by all prompts."""
    attr_template: str = "{subject} is"
    """Subject prompt of the attributes rate; its greedy continuation is searched for the subject's attributes."""
    attr_tokens: Count = 16
    """Tokens generated per subject for the attributes rate."""
    attr_controls: Count = 3
    """Random control sets per ablated class for the attributes rate."""
    max_knowns: Annotated[int, Range(ge=0)] = 0
    """Known facts scored by the attributes rate (0 = every fact the model knows)."""
    seed: int = 0
    """Seed of the class samples, controls and corpus shuffle."""
    quick: bool = False
    """Tiny run for tests: 8 short texts, 1 control, only the two weakening classes ablated."""
    out: OutDir = "figures/rw_functionalities"
    """Output folder."""
    png: bool = True
    """Also write PNG figures."""

    def check(self) -> None:
        """The attribution's answers are one pair, shared by all its prompts, and those share a token length."""
        if len(self.dla_answers) != 2:
            raise ValueError(f"--dla-answers is one (answer, other) pair, got {list(self.dla_answers)}")
        check_prompt_lengths("--dla-prompts", self.model, self.dla_prompts)
        if "{subject}" not in self.attr_template:
            raise ValueError(f"--attr-template must contain {{subject}}, got {self.attr_template!r}")
