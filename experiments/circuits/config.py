"""The config of ``python -m experiments.circuits``: tasks, attribution steps, the diff's tuned model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from experiments.fields import ExperimentConfig, ModelName, OutDir
from workbench.config import Count, Range
from workbench.models import DEFAULT_MODEL

__all__ = ["CircuitsConfig"]


@dataclass(frozen=True)
class CircuitsConfig(ExperimentConfig):
    """Edge circuits: rankings, faithfulness (CPR / CMD) and a base-vs-tuned diff."""

    model: ModelName = DEFAULT_MODEL
    """Model: a registry name or an HF folder."""
    tasks: tuple[str, ...] = ("ioi", "sentiment", "capitals")
    """Tasks: ioi, sentiment, capitals."""
    ioi_prompts: Count = 8
    """IOI prompts (sentiment has 8, capitals 6)."""
    ig_steps: Count = 5
    """EAP-IG integration steps (MIB: 5)."""
    diff_with: str = "supervised"
    """The diff's tuned model: supervised (the cached model of experiments.model_diff) or self (a null pair)."""
    diff_percent: Annotated[float, Range(gt=0, le=100)] = 1.0
    """Circuit size of the diff, in percent of the edges."""
    out: OutDir = "figures/circuits"
    """Output folder."""
    quick: bool = False
    """Small run for tests: IOI only, 2 prompts, 2 EAP-IG steps, a null diff, no PNGs."""
    progress: bool = True
    """Say which phase runs."""
    seed: Annotated[int, Range(ge=0)] = 0
    """Seed (the random ranking, the IOI sample)."""

    def check(self) -> None:
        """Pre-flight: known task and tuned-model names."""
        unknown = set(self.tasks) - {"ioi", "sentiment", "capitals"}
        if unknown:
            raise ValueError(f"--tasks {sorted(unknown)}: choose from ioi, sentiment, capitals")
        if self.diff_with not in ("supervised", "self"):
            raise ValueError(f"--diff-with {self.diff_with!r}: choose supervised or self")
