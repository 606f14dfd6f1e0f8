"""The RW functionalities study on one model: classes by layer, randomness baselines, activation
frequencies per class, class ablations (unconditional and conditional) against random controls,
and the neurons of largest direct logit attribution with their classes.

Reproduces, on the TransformerLens bridge, Gerstner & Schütze's weight-based study of gated neurons
(arXiv:2505.17936; *Weakening Neurons*, ICLR 2026 submission). Following the reference code, the
ablated sets are ``n_neurons`` neurons sampled from each class (default: as many as the model has
weakening neurons, i.e. all weakening neurons and equally many of every other class; classes with
fewer neurons are skipped), each against ``n_controls`` random sets with the same count per layer
drawn outside the class. The studies (weights, activations, DLA, ablations) are in
:mod:`.studies`, the config in :mod:`.config`; :mod:`.run` composes them.

    python -m experiments.rw_functionalities [--quick] [--model M] [--corpus neutral|FILE] [--n-neurons N] [--out DIR]
"""

from experiments.rw_functionalities.config import RWConfig, parse_condition
from experiments.rw_functionalities.run import gated_model, main
from experiments.rw_functionalities.studies import ABLATED_CLASSES

__all__ = ["ABLATED_CLASSES", "RWConfig", "gated_model", "main", "parse_condition"]
