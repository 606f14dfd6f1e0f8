"""Interventions at TransformerLens hook points and (Boundless) Distributed Alignment Search.

What pyvene (Wu et al. 2024) and align-transformers offer, on the bridge: typed specs (where),
modules with one signature ``forward(base, source=None)`` (what), runs with several interventions
and source inputs, training with the model frozen, interchange intervention accuracy, and bundles
(JSON + safetensors). See Wu, Geiger, Icard, Potts, Goodman (2023), "Interpretability at Scale".
"""

from workbench.interventions.apply import InterventionOutput, InterventionSet, run_interventions, source_activations
from workbench.interventions.bundle import bundle_size, load_bundle, save_bundle
from workbench.interventions.evaluate import interchange_intervention_accuracy, intervened_predictions
from workbench.interventions.modules import (
    MODULES,
    AdditionIntervention,
    BoundlessRotatedSpaceIntervention,
    CollectIntervention,
    ConstantSourceIntervention,
    InterchangeIntervention,
    Intervention,
    LowRankRotatedSpaceIntervention,
    RotatedSpaceIntervention,
    ZeroIntervention,
    make_intervention,
)
from workbench.interventions.search import DASFit, DASSweep, das_sweep, fit_das, random_rotation_iia
from workbench.interventions.spec import InterventionSpec, spec_at
from workbench.interventions.train import AlignmentConfig, TrainHistory, train_interventions

__all__ = [
    "MODULES",
    "AdditionIntervention",
    "AlignmentConfig",
    "BoundlessRotatedSpaceIntervention",
    "CollectIntervention",
    "ConstantSourceIntervention",
    "DASFit",
    "DASSweep",
    "InterchangeIntervention",
    "Intervention",
    "InterventionOutput",
    "InterventionSet",
    "InterventionSpec",
    "LowRankRotatedSpaceIntervention",
    "RotatedSpaceIntervention",
    "TrainHistory",
    "ZeroIntervention",
    "bundle_size",
    "das_sweep",
    "fit_das",
    "interchange_intervention_accuracy",
    "intervened_predictions",
    "load_bundle",
    "make_intervention",
    "random_rotation_iia",
    "run_interventions",
    "save_bundle",
    "source_activations",
    "spec_at",
    "train_interventions",
]
