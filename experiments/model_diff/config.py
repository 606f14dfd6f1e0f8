"""The model-diff experiment's config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.checks import check_prompt_lengths
from workbench.config import Config
from workbench.data.prompts import SENTIMENT_PROMPTS
from workbench.models import DEFAULT_MODEL
from workbench.tuning import (
    TUNINGS,
)

__all__ = ["ModelDiffConfig"]


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
