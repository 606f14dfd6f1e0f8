"""The model-diff experiment's config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from experiments.fields import (
    AnswerPairs,
    ExperimentConfig,
    IRMPath,
    ModelName,
    Prompts,
    TunedFolder,
    check_output_dir,
    check_prompt_lengths,
    model_config,
)
from workbench.config import Count, Positive
from workbench.data.prompts import SENTIMENT_PROMPTS
from workbench.models import DEFAULT_MODEL
from workbench.runstate import irm_checkpoint

__all__ = ["ModelDiffConfig"]


@dataclass(frozen=True)
class ModelDiffConfig(ExperimentConfig):
    """Base vs tuned model on prompt / answer pairs."""

    QUICK: ClassVar[Mapping[str, Any]] = {
        "tune_steps": 8,
        "tune_lr": 3e-3,
        "rl_steps": 6,
        "evidence_samples": 2,
        "sweep_layers": lambda cfg: _last_layers(cfg.base, 8),
        "png": False,
    }
    MODEL_FIELD: ClassVar[str] = "base"

    base: ModelName = DEFAULT_MODEL
    """Base model: a registry name or an HF folder."""
    tuning: Literal["supervised", "rl"] = "supervised"
    """How the tuned model is made: supervised (last layers on the negative tweets) or rl (GRPO, VADER reward)."""
    tuned: TunedFolder = None
    """A tuned model's HF folder, or a peft adapter folder, to compare instead (overrides --tuning)."""
    prompts: Prompts = SENTIMENT_PROMPTS
    """Prompts (same token length)."""
    answers: AnswerPairs = (" bad", " good")
    """Answer and other token, one pair for all prompts or one pair per prompt (flattened)."""
    out: str | None = None
    """Output folder; default figures/model_diff (supervised), figures/model_diff_rl (rl), .._folder (--tuned)."""
    png: bool = True
    """Also write PNG figures."""
    quick: bool = False
    """Small, fast run (for tests): short tuning, sweeps over the last 8 layers only, no PNGs."""
    tune_layers: Count = 2
    """Layers unfrozen when making the supervised model."""
    tune_steps: Count = 40
    """Tuning steps when making the supervised model."""
    tune_lr: Positive = 1e-3
    """Tuning learning rate of the supervised model."""
    rl_steps: Count | None = None
    """GRPO steps when making the RL model (default: RLConfig's)."""
    evidence_samples: Count = 4
    """RL evidence: completions per held-out prompt and model."""
    sweep_layers: Count | None = None
    """Patching sweeps over the last this many layers (default: every layer)."""
    top_heads: Count = 2
    """How many heads (largest head-patching effect) to patch jointly."""
    irm: IRMPath = None
    """Also compare the base with the base + an IRM: a checkpoint or a training folder (e.g. the main job's
    runs/neuron1512/card/negative/seed-0)."""
    allow_unfinished: bool = False
    """Use --irm's newest checkpoint even when its training run did not finish (the report says so)."""
    progress: bool = True
    """Show progress bars (tuning, GRPO) and say which phase runs."""
    seed: int = 0
    """Seed."""

    def check(self) -> None:
        """The prompts are batched together (one token length); the answers pair up with them; the layer and head
        counts fit the model; the output folder is written to."""
        check_prompt_lengths("--prompts", self.base, self.prompts)
        pairs = len(self.answers) // 2
        if pairs not in (1, len(self.prompts)):
            raise ValueError(
                f"--answers: {pairs} pairs for {len(self.prompts)} prompts: give one pair for all or one per prompt"
            )
        hf = self.model_config()
        if hf is not None:
            n_layers, n_heads = hf.num_hidden_layers, hf.num_attention_heads
            for name, value, most in (
                ("--sweep-layers", self.sweep_layers, n_layers),
                ("--tune-layers", self.tune_layers, n_layers),
                ("--top-heads", self.top_heads, n_layers * n_heads),
            ):
                if value is not None and value > most:
                    raise ValueError(f"{name} {value}: {self.base} has {most}; pass 1..{most}")
        if self.irm is not None:
            irm_checkpoint(self.irm, allow_unfinished=self.allow_unfinished)
        check_output_dir("--out", self.out_dir)

    @property
    def out_dir(self) -> Path:
        """Where the outputs go."""
        if self.out is not None:
            return Path(self.out)
        if self.tuned is not None:
            return Path("figures") / "model_diff_folder"
        return Path("figures") / {"supervised": "model_diff", "rl": "model_diff_rl"}[self.tuning]


def _last_layers(model: str, k: int) -> int:
    """``k``, or all the layers of a model with fewer (``--quick`` on a small model)."""
    hf = model_config(model)
    return k if hf is None else min(k, hf.num_hidden_layers)
