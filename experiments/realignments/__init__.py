"""Do IRM, RL and supervised tuning realign the model in the same places? (``python -m experiments.realignments``)

Three realignments of the default model towards negativity, each against the base on the same
prompts: the negative IRM of *The Mysterious Case of Neuron 1512* (Smith et al., 2024; the main
job's checkpoint in ``runs/neuron1512/card/negative/seed-0`` when present, else one trained here at quick
size), the GRPO model (:func:`workbench.tuning.rl_tune`, every layer, VADER reward) and the
supervised model (:func:`workbench.tuning.tune_last_layers`, last 2 layers on the negative tweets).

* How far behaviour moved: VADER negativity of sampled continuations of held-out prompts (gain
  over the base with a paired bootstrap 95% interval), KL to the base per completion token, and
  the loss on held-out negative tweets.
* Where the model changed: per-layer norm of the residual-stream difference (relative to the
  base's), patching recovery by layer (the realigned model's resid_pre / attn_out / mlp_out at the
  last position patched into the base's run on the " bad" − " good" prompts), cosine similarity of
  the three mean residual changes per layer, and the overlap of their top heads (head patching)
  and top neurons (mean change of the MLP activations).
* What changed, in words (:mod:`.diffing`): ADL's logit-lens and Patchscope tokens, the base steered
  with the difference, a crosscoder's tuned-only latents and unprompted samples, each scored on
  whether it names the target all three were trained towards (negative sentiment).

Each realignment's training budget (steps, tokens seen, trainable parameters) stands beside its gain, and
the RL model is trained with every seed of ``--rl-seeds`` (default 3) for the spread of its gain
(:mod:`.budget`). The measurements are in :mod:`.measures`, the config in :mod:`.config`; :mod:`.run`
builds the realignments, draws and writes.
"""

from experiments.realignments.config import MAIN_JOB_IRM, RealignmentsConfig
from experiments.realignments.run import CAPTIONS, figures, main, negative_irm, realignments

__all__ = ["CAPTIONS", "MAIN_JOB_IRM", "RealignmentsConfig", "figures", "main", "negative_irm", "realignments"]
