"""The realignments experiment's config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from experiments.fields import ExperimentConfig, IRMPath, ModelName, OutDir, Seeds, model_config
from workbench.config import Count
from workbench.diffing import DiffConfig
from workbench.models import DEFAULT_MODEL
from workbench.runstate import irm_checkpoint

__all__ = ["MAIN_JOB_IRM", "RealignmentsConfig"]


MAIN_JOB_IRM = "runs/neuron1512/card/negative/seed-0"
"""Where ``python -m experiments.neuron1512`` trains the negative IRM."""


@dataclass(frozen=True)
class RealignmentsConfig(ExperimentConfig):
    """Three realignments towards negativity compared with the base and with each other."""

    QUICK: ClassVar[Mapping[str, Any]] = {
        "irm_steps": 10,
        "n_prompts": 6,
        "samples": 2,
        "max_new_tokens": 10,
        "eval_texts": 12,
        "patch_layers": lambda cfg: _last_layers(cfg.base, 6),
        "diff_texts": 16,
        "cc_steps": 30,
        "png": False,
    }
    MODEL_FIELD: ClassVar[str] = "base"

    base: ModelName = DEFAULT_MODEL
    """Base model (registry name or HF folder)."""
    irm: IRMPath = None
    """The negative IRM (checkpoint or training folder); default: the main job's
    runs/neuron1512/card/negative/seed-0 if there."""
    irm_train_dir: OutDir = "runs/realignments/irm"
    """Where an IRM is trained (resumably) when there is none to take."""
    irm_steps: Count = 40
    """Steps of the IRM trained here when there is no checkpoint."""
    n_prompts: Count = 32
    """Held-out RL prompts for behaviour and residual differences."""
    samples: Count = 4
    """Sampled continuations per prompt and model."""
    max_new_tokens: Count = 16
    """Tokens per continuation."""
    eval_texts: Count = 64
    """Held-out negative tweets for the loss."""
    top_k: Count = 10
    """Top heads and top neurons compared between realignments."""
    rl_seeds: Seeds = (0, 1, 2)
    """Seeds of the RL model, each trained (cached) and its behaviour measured for the spread of its gain; the first
    is the one compared layer by layer (quick: the first only)."""
    patch_layers: Count | None = None
    """Patching sweeps over the last this many layers (default: every layer)."""
    diffing: bool = True
    """Read what each realignment changed, in words (:mod:`workbench.diffing`): ADL's logit-lens and Patchscope
    tokens, the base steered with the difference, a crosscoder's tuned-only latents, unprompted samples; each
    scored on whether it names the known target (negative sentiment)."""
    diff_texts: Count = 64
    """Unrelated texts for ADL's difference (the crosscoder trains on 160, quick: 24)."""
    cc_steps: Count = 300
    """Crosscoder training steps per realignment."""
    out: OutDir = "figures/realignments"
    """Output folder."""
    png: bool = True
    """Also write PNG figures."""
    quick: bool = False
    """Small, fast run (for tests): quick tuning and IRM, few prompts, the last 6 layers in patching, no PNGs."""
    allow_unfinished: bool = False
    """Use --irm's newest checkpoint even when its training run did not finish (the report says so)."""
    progress: bool = True
    """Show progress bars (IRM training, tuning, GRPO) and say which phase runs."""
    seed: int = 0
    """Seed."""

    def readout(self) -> DiffConfig:
        """How each realignment is read against the base (:func:`workbench.diffing.diff_readout`)."""
        return DiffConfig.sized(
            quick=self.quick,
            n_texts=self.diff_texts,
            cc_steps=self.cc_steps,
            samples=2 if self.quick else 8,
            seed=self.seed,
        )

    def check(self) -> None:
        """The patched layers against the model's layers; --irm a finished training run (or allowed not to be)."""
        if self.irm is not None:
            irm_checkpoint(self.irm, allow_unfinished=self.allow_unfinished)
        hf = self.model_config()
        if hf is not None and self.patch_layers is not None and self.patch_layers > hf.num_hidden_layers:
            raise ValueError(
                f"--patch-layers {self.patch_layers}: {self.base} has {hf.num_hidden_layers} layers; "
                f"pass 1..{hf.num_hidden_layers}"
            )


def _last_layers(model: str, k: int) -> int:
    """``k``, or all the layers of a model with fewer (``--quick`` on a small model)."""
    hf = model_config(model)
    return k if hf is None else min(k, hf.num_hidden_layers)
