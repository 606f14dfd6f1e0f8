"""Boundless DAS with ground truth: where does a model compute a causal variable?

``--task price_tagging``: a small Llama trained here on the price-tagging game of Wu et al. (2023),
"Interpretability at Scale" (where Alpaca-7B reached IIA 0.96 for the left-boundary variable), is
searched layer x position for the ``left`` (``low <= price``) or ``right`` variable. Its training
plants both variables in known subspaces after layer 1 at the last position (interchange
intervention training, :mod:`workbench.interventions.price_tagger`), so the summary's ``ground_truth`` says whether DAS
found that place and that subspace; ``--no-planted`` searches a model trained on the task alone.
Controls: a random untrained rotation with the learned width, a position before any number (cannot
carry the variable), and the no-op baseline (fraction of examples whose label the intervention
should not change).
``--task ioi``: the default model SmolLM2-135M-Instruct on indirect-object identification, variable
``io_first`` (the indirect object is the first-mentioned name).

    python -m experiments.boundless_das [--task ioi] [--no-planted] [--layer L] [--position P] [--quick] [--out DIR]
"""

from experiments.boundless_das.config import PLAIN_TAGGER, QUICK_TAGGER, TAGGER, TASKS, BoundlessDASConfig
from experiments.boundless_das.run import main

__all__ = ["PLAIN_TAGGER", "QUICK_TAGGER", "TAGGER", "TASKS", "BoundlessDASConfig", "main"]
