"""Comparison models made by fine-tuning: supervised (last N layers, :mod:`.supervised`) and RL (TRL GRPO, :mod:`.rl`,
checked by :mod:`.evidence`).

Each function trains a plain Hugging Face model and caches it as an ordinary HF folder keyed by its
config (:func:`workbench.config.cache_key`), so the tuned copy loads like any model (``load_tuned`` / ``load_model``).
"""

from workbench.tuning.evidence import RLEvidence, paired_bootstrap, rl_evidence
from workbench.tuning.recipes import TUNINGS, TunedModel, make_tuned, rl_config, tune_config
from workbench.tuning.rl import RewardError, RLConfig, rl_dir, rl_prompts, rl_tune
from workbench.tuning.supervised import (
    TuneConfig,
    decoder_layers,
    load_tuned,
    training_budget,
    tune_last_layers,
    tuned_dir,
)

__all__ = [
    "TUNINGS",
    "RLConfig",
    "RLEvidence",
    "RewardError",
    "TuneConfig",
    "TunedModel",
    "decoder_layers",
    "load_tuned",
    "make_tuned",
    "paired_bootstrap",
    "rl_config",
    "rl_dir",
    "rl_evidence",
    "rl_prompts",
    "rl_tune",
    "training_budget",
    "tune_config",
    "tune_last_layers",
    "tuned_dir",
]
