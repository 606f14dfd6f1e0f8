"""Model diffing: what a realignment changed, in words, scored on organisms with a known answer.

* :mod:`.adl`: the activation-difference lens (Minder et al. 2025): mean residual difference on unrelated text, read
  by logit lens, Patchscope and steering;
* :mod:`.crosscoder`: a BatchTopK crosscoder over paired activations with latent scaling (Minder, Dumas et al. 2025);
* :mod:`.organisms`: supervised tunes with a known target (topic, sentiment), controls and the null pair;
* :mod:`.score`: an LLM-free scorer of read-outs;
* :mod:`.readout`: :func:`diff_readout`, every read-out of one pair (for report tables of realignments).
"""

from workbench.diffing.adl import (
    IDENTITY_PROMPT,
    ActivationDifference,
    activation_difference,
    irm_mean_writes,
    lens_tokens,
    neutral_tokens,
    patchscope_tokens,
    steered_generations,
    steering_hooks,
)
from workbench.diffing.crosscoder import (
    Crosscoder,
    CrosscoderConfig,
    CrosscoderSummary,
    latent_scaling,
    paired_activations,
    summarize,
    train_crosscoder,
)
from workbench.diffing.organisms import TOPICS, Organism, make_organisms, organism_texts, train_organism
from workbench.diffing.readout import STEER_PROMPTS, DiffConfig, DiffReadout, diff_readout, sample_unprompted
from workbench.diffing.score import Target, all_targets, named_by_texts, named_by_tokens, target_of

__all__ = [
    "IDENTITY_PROMPT",
    "STEER_PROMPTS",
    "TOPICS",
    "ActivationDifference",
    "Crosscoder",
    "CrosscoderConfig",
    "CrosscoderSummary",
    "DiffConfig",
    "DiffReadout",
    "Organism",
    "Target",
    "activation_difference",
    "all_targets",
    "diff_readout",
    "irm_mean_writes",
    "latent_scaling",
    "lens_tokens",
    "make_organisms",
    "named_by_texts",
    "named_by_tokens",
    "neutral_tokens",
    "organism_texts",
    "paired_activations",
    "patchscope_tokens",
    "sample_unprompted",
    "steered_generations",
    "steering_hooks",
    "summarize",
    "target_of",
    "train_crosscoder",
    "train_organism",
]
