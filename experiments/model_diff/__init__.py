"""Where does a tuned model differ from its base? (``python -m experiments.model_diff``)

Reproduces, on the default model, the analysis of an RLHF-tuned GPT-2 (lvwerra/gpt2-imdb vs
curt-tigges/gpt2-negative-movie-reviews: logit difference " bad" − " good" after "This movie was
really", logit lens, direct logit attribution per layer and head, activation patching of the tuned
model's activations into the base model's run, and a joint patch of the top heads), on several
same-length prompts. The tuned model is made by :mod:`workbench.tuning`: ``--tuning supervised``
(the default: next-token tuning of the last layers on the negative tweets) or ``--tuning rl`` (GRPO
towards VADER negativity, every layer, as the demo's PPO; also writes the held-out evidence that RL
worked), or ``--tuned FOLDER`` names an HF folder or a peft adapter folder (merged into its base). The
pair is checked first (:func:`workbench.pairs.check_pair`: same vocabulary, BOS convention and special
tokens), and the summary states the tokenization both sides used. ``--irm CHECKPOINT`` runs the same analyses on
the base vs the base with an IRM injected (e.g. the negative IRM of ``python -m
experiments.neuron1512``), into ``OUT/irm``. The analyses of one model against the base are in
:mod:`.compare`, the config in :mod:`.config`; :mod:`.run` makes the tuned model and runs them
(the tuned-model recipes are :mod:`workbench.tuning.recipes`).
"""

from experiments.model_diff.compare import SWEEP_KINDS, Comparison, compare
from experiments.model_diff.config import ModelDiffConfig
from experiments.model_diff.run import main

__all__ = ["SWEEP_KINDS", "Comparison", "ModelDiffConfig", "compare", "main"]
