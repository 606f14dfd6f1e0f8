"""The attributes-rate unit of :mod:`experiments.rw_functionalities` (Gerstner & Schütze, arXiv:2505.17936,
section 4): the ablated class sets of the ablation study, each against random sets of the same size per
layer, scored by how often the greedy continuation of a subject prompt states an attribute of the subject.

The knowns set replaces the paper's (ROME's ``known_1000`` filtered to the model's knowns, attributes from
Wikipedia paragraphs) with country facts from the ``countryinfo`` package filtered the same way
(:mod:`workbench.data.knowns`); the metric is :mod:`workbench.neurons.attributes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from experiments.rw_functionalities.config import parse_condition
from workbench.data.knowns import country_facts, known_facts, source_label
from workbench.neurons import plots as rw_plots
from workbench.neurons.attributes import AttributesRate, attributes_rate_effects
from workbench.neurons.weights import NeuronClasses

if TYPE_CHECKING:
    from experiments.rw_functionalities.config import RWConfig

__all__ = ["AttributesStudy", "study_attributes"]

DIFFERS_FROM_PAPER = (
    "one relation (the capital of a country) over the countries of the countryinfo package instead of ROME's "
    "known_1000 (many relations and subject types); attribute sets from structured fields (capital, region, "
    "subregion, demonym, neighbours, provinces) instead of the words of each subject's Wikipedia paragraph; "
    "the filter is the paper's (the greedy continuation of the fact's prompt contains the answer)"
)


@dataclass
class AttributesStudy:
    """The attributes rate of the clean model and of each ablated class set against random sets."""

    n_facts: int
    n_known: int
    template: str
    ablation: str
    effects: AttributesRate
    table: pd.DataFrame

    def summary(self) -> dict:
        rows = {
            row["set"]: {
                k: (round(v, 4) if isinstance(v, float) else int(v))
                for k, v in row.items()
                if k != "set" and not (isinstance(v, float) and math.isnan(v))  # the clean row has no control
            }
            for row in self.table.to_dict("records")
        }
        return {
            "attributes_rate": {
                "knowns": {
                    "source": source_label(),
                    "n_facts": self.n_facts,
                    "n_known": self.n_known,
                    "n_used": int(self.table.n_subjects.iloc[0]),
                    "differs_from_paper": DIFFERS_FROM_PAPER,
                },
                "prompt": self.template,
                "ablation": self.ablation,
                "interval": "95% bootstrap percentile interval over subjects (1000 resamples)",
                "sets": rows,
            }
        }

    def figures(self) -> dict:
        return {"attributes_rate": rw_plots.attributes_rate_figure(self.table, ablation=self.ablation)}

    def tables(self) -> dict:
        return {"attributes_rate": self.table, "attributes_rate_runs": self.effects.to_frame()}


def study_attributes(
    model: TransformerBridge, cfg: RWConfig, sets: dict[str, list[tuple[int, int]]], classes: NeuronClasses
) -> AttributesStudy:
    """Filter the country facts to the model's knowns, then score ``sets`` (the ablation study's class samples)
    under the first ablation condition, ``cfg.attr_controls`` random sets each."""
    facts = country_facts()
    known = known_facts(model, facts)
    if not known:
        raise ValueError(f"{cfg.model} completes none of the {len(facts)} capital facts: no knowns to score")
    used = known[: cfg.max_knowns] if cfg.max_knowns else known
    spec = parse_condition(cfg.conditions[0], cfg.mode, cfg.value, cfg.orient_post)
    if spec.mode == "mean":
        raise ValueError("the attributes rate runs zero, multiply or fix ablations: put such a condition first")
    effects = attributes_rate_effects(
        model,
        used,
        sets,
        spec,
        template=cfg.attr_template,
        n_controls=cfg.attr_controls,
        exclude={name: classes.neurons(name) for name in sets},
        seed=cfg.seed,
        max_new_tokens=cfg.attr_tokens,
    )
    return AttributesStudy(len(facts), len(known), cfg.attr_template, spec.label, effects, effects.summary())
