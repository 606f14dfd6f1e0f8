"""The Injectable Realignment Model of *The Mysterious Case of Neuron 1512* (Smith et al., 2024).

``IRM`` reads one activation of a frozen model and adds its output into the residual stream of
chosen layers; ``inject`` runs a model with it; ``train_irm`` trains it; ``save_irm``/``load_irm``
checkpoint it; the analysis modules record its output and find its dominant dimensions.
"""

from workbench.irm.checkpoint import load_irm, load_train_state, save_irm
from workbench.irm.config import IRMConfig, TrainConfig
from workbench.irm.inject import inject
from workbench.irm.loss import eval_loss
from workbench.irm.module import IRM, Injection
from workbench.irm.train import TrainResult, latest_checkpoint, train_irm

__all__ = [
    "IRM",
    "IRMConfig",
    "Injection",
    "TrainConfig",
    "TrainResult",
    "eval_loss",
    "inject",
    "latest_checkpoint",
    "load_irm",
    "load_train_state",
    "save_irm",
    "train_irm",
]
