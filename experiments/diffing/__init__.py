"""Does model diffing name what a tune changed? (``python -m experiments.diffing``)

Model organisms with a known answer (:mod:`workbench.diffing.organisms`: supervised tunes of the default model's last
layers on tweets about one topic or of one sentiment, random-mix controls, the null pair) are tuned to a stopping rule
on their own held-out tweets, and for a short run of the same recipe (the training-length control); each is diffed
against the base by the activation-difference lens (logit lens, Patchscope, steering; Minder et al. 2025, arXiv
2510.13900), a BatchTopK crosscoder's truly tuned-only latents (latent scaling; Minder, Dumas et al. 2025, arXiv
2504.02922) and a black-box baseline (the tuned model's unprompted samples and its replies to the steering prompts).
An LLM-free scorer (:mod:`workbench.diffing.score`) decides whether each read-out names the target; the identification
table counts organisms named per method, and read-outs of controls and the null pair that name anything as false
positives.
"""

from experiments.diffing.config import DiffingConfig
from experiments.diffing.run import CAPTIONS, main

__all__ = ["CAPTIONS", "DiffingConfig", "main"]
