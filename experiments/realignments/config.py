"""The realignments experiment's config."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config import Config
from workbench.models import DEFAULT_MODEL

__all__ = ["MAIN_JOB_IRM", "RealignmentsConfig"]


MAIN_JOB_IRM = "runs/neuron1512/card/negative/seed-0"
"""Where ``python -m experiments.neuron1512`` trains the negative IRM."""


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
    out: str = "figures/realignments"
    """Output folder."""
    quick: bool = False
    """Small, fast run (for tests): quick tuning and IRM, few prompts, the last 6 layers in patching, no PNGs."""
    progress: bool = True
    """Show progress bars (IRM training, tuning, GRPO) and say which phase runs."""
    seed: int = 0
    """Seed."""

    def sized(self, full: int, quick: int) -> int:
        """``full``, or ``quick`` under ``--quick`` (each size field's help names both)."""
        return quick if self.quick else full
