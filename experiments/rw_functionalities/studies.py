"""The studies of :mod:`experiments.rw_functionalities`, one per question, each a dataclass with its summary,
figures and tables: RW classes from the weights with randomness baselines, activation frequencies per
class, the neurons of largest direct logit attribution, and class ablations against random controls
(Gerstner & Schütze, arXiv:2505.17936).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from experiments.rw_functionalities.config import RWConfig, parse_condition
from workbench.analysis.attribution import neuron_attribution
from workbench.data.corpora import ALIGNMENTS, load_alignment, load_texts
from workbench.data.prompts import PromptSet
from workbench.models import load_model
from workbench.neurons import plots as rw_plots
from workbench.neurons.ablation import ablation_effects
from workbench.neurons.activations import ActivationStats, activation_stats, frequency_by_class
from workbench.neurons.weights import (
    NeuronClasses,
    WeightCosines,
    beta_randomness_region,
    classify,
    empirical_randomness_region,
    mlp_weights,
    weight_cosines,
)

__all__ = [
    "ABLATED_CLASSES",
    "AblationStudy",
    "ActivationStudy",
    "DLAStudy",
    "Size",
    "WeightStudy",
    "parse_condition",
    "study_ablation",
    "study_activations",
    "study_dla",
    "study_weights",
]

ABLATED_CLASSES = (
    "strengthening",
    "conditional strengthening",
    "proportional change",
    "conditional weakening",
    "weakening",
)
"""The classes the paper ablates (the typical ones with a clear read-write relation)."""


@dataclass(frozen=True)
class Size:
    """How much of the study to run (``--quick``: seconds on a random-size corpus)."""

    n_texts: int
    max_len: int
    n_controls: int
    n_sample: int
    classes: tuple[str, ...]

    @classmethod
    def of(cls, cfg: RWConfig) -> Size:
        """The flags' sizes; ``--quick`` also samples fewer neurons and ablates only the two weakening classes."""
        sample, classes = (128, ABLATED_CLASSES[-2:]) if cfg.quick else (512, ABLATED_CLASSES)
        return cls(cfg.n_texts, cfg.max_len, cfg.n_controls, sample, classes)


@dataclass
class WeightStudy:
    """RW classes from the weights, the other weights' classes, and the randomness baselines."""

    cfg: RWConfig
    model_name: str
    n_layers: int
    d_mlp: int
    cosines: WeightCosines
    classes: NeuronClasses
    other_classes: NeuronClasses
    beta: tuple[float, float]
    empirical: pd.DataFrame

    def summary(self) -> dict:
        counts = self.classes.counts_by_layer()
        wide = counts.pivot(index="rw_class", columns="layer", values="count").reindex(
            list(dict.fromkeys(counts.rw_class))
        )
        other = self.other_classes.counts_by_layer().groupby("rw_class", sort=False)["count"].sum()
        return {
            "model": self.model_name,
            "weights": self.cfg.weights,
            "threshold": self.cfg.threshold,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "class_counts": {k: int(v) for k, v in wide.sum(axis=1).items()},
            "class_counts_by_layer": {k: [int(x) for x in row] for k, row in wide.iterrows()},
            "class_counts_other_weights": {
                "weights": "folded" if self.cfg.weights == "raw" else "raw",
                "counts": {k: int(v) for k, v in other.items()},
                "neurons_changing_class": int((self.other_classes.index != self.classes.index).sum()),
            },
            "weakening": _placement(self.classes.neurons("weakening"), self.n_layers),
            "conditional_strengthening": _placement(self.classes.neurons("conditional strengthening"), self.n_layers),
            "beta_randomness_region": list(self.beta),
            "empirical_randomness_region": self.empirical.groupby("pair")[["low", "high"]].mean().to_dict("index"),
        }

    def figures(self) -> dict:
        counts = self.classes.counts_by_layer()
        return {
            "class_fractions": rw_plots.class_fraction_figure(
                counts, title=f"RW classes by layer: {self.model_name} ({self.cfg.weights} weights)"
            ),
            "class_fractions_rare": rw_plots.class_fraction_figure(
                counts, hide=("orthogonal output",), title="RW classes by layer, orthogonal output hidden"
            ),
            "cosine_distributions": rw_plots.cosine_distribution_figure(
                self.cosines.to_frame(), beta_region=self.beta, empirical=self.empirical, threshold=self.cfg.threshold
            ),
        }

    def tables(self) -> dict:
        class_neurons = self.cosines.to_frame().merge(self.classes.to_frame(), on=["layer", "neuron"])
        return {
            "class_counts": self.classes.counts_by_layer(),
            "classified_neurons": class_neurons[class_neurons.rw_class != "orthogonal output"],
            "randomness_regions": self.empirical,
        }


def study_weights(model: TransformerBridge, cfg: RWConfig, size: Size) -> WeightStudy:
    """Classify every gated neuron by its weight cosines (``cfg.weights``; the other weights for comparison)."""
    raw = mlp_weights(load_model(cfg.model, compat=False))
    weights, other = (raw, mlp_weights(model)) if cfg.weights == "raw" else (mlp_weights(model), raw)
    cosines = weight_cosines(weights)
    return WeightStudy(
        cfg,
        model.cfg.model_name,
        model.cfg.n_layers,
        model.cfg.d_mlp,
        cosines,
        classify(cosines, cfg.threshold),
        classify(weight_cosines(other), cfg.threshold),
        beta_randomness_region(cosines.d_model),
        empirical_randomness_region(weights, n_sample=size.n_sample, seed=cfg.seed),
    )


@dataclass
class ActivationStudy:
    """Activation statistics of every neuron on the corpus, and their frequencies per class."""

    corpus: str
    texts: list[str]
    stats: ActivationStats
    classes: NeuronClasses

    @cached_property
    def frequencies(self) -> pd.DataFrame:
        """Activation frequencies and mean write per class and layer."""
        return frequency_by_class(self.stats, self.classes)

    def summary(self) -> dict:
        return {
            "corpus": self.corpus,
            "n_texts": len(self.texts),
            "n_tokens": self.stats.n_tokens,
            "activation_frequency_by_class": _freq_summary(self.stats, self.classes),
        }

    def figures(self) -> dict:
        freq = self.frequencies
        return {
            "activation_frequency": rw_plots.frequency_figure(freq, stat="freq_gate_pos"),
            "activation_write": rw_plots.frequency_figure(freq, stat="mean_write"),
        }

    def tables(self) -> dict:
        return {"frequency_by_class": self.frequencies}


def study_activations(model: TransformerBridge, cfg: RWConfig, size: Size, classes: NeuronClasses) -> ActivationStudy:
    """Run the model over ``size.n_texts`` texts of the corpus, recording each neuron's activations."""
    if cfg.corpus in ALIGNMENTS:
        n = size.n_texts
        texts = list(load_alignment(cfg.corpus, seed=cfg.seed, max_items=n + n // 9 + 2).train[:n])
    else:
        texts = load_texts(cfg.corpus)
        random.Random(cfg.seed).shuffle(texts)
        texts = texts[: size.n_texts]
    return ActivationStudy(cfg.corpus, texts, activation_stats(model, texts, max_len=size.max_len), classes)


@dataclass
class DLAStudy:
    """The neurons of largest direct logit attribution on the DLA prompts, with their classes."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    top: pd.DataFrame

    def summary(self) -> dict:
        top10 = [
            {"neuron": r.label, "rw_class": r.rw_class, "dla": round(r.value, 4)}
            for r in self.top.head(10).itertuples()
        ]
        return {
            "dla": {
                "prompts": list(self.prompts),
                "answers": list(self.answers),
                "top10": top10,
                "top50_class_counts": self.top.rw_class.value_counts().to_dict(),
            }
        }

    def figures(self) -> dict:
        return {}

    def tables(self) -> dict:
        return {"top_dla_neurons": self.top}


def study_dla(model: TransformerBridge, cfg: RWConfig, classes: NeuronClasses) -> DLAStudy:
    """Direct logit attribution of every neuron to ``dla_answers`` on ``dla_prompts``; the top 50."""
    prompts = PromptSet(cfg.dla_prompts, (tuple(cfg.dla_answers),) * len(cfg.dla_prompts))
    attribution = neuron_attribution(model, prompts.tokens(model), prompts.answer_tokens(model))
    return DLAStudy(
        cfg.dla_prompts, cfg.dla_answers, attribution.top(50).merge(classes.to_frame(), on=["layer", "neuron"])
    )


@dataclass
class AblationStudy:
    """Each class's sampled set ablated under each condition, against random controls."""

    sets: dict[str, list[tuple[int, int]]]
    """The ablated neurons of each class."""
    skipped: dict[str, int]
    """Classes with too few neurons to sample a set, and how many they have."""
    runs: pd.DataFrame
    """Every ablated run (``AblationEffects.to_frame`` of each condition)."""
    effects: pd.DataFrame
    """Per condition, set and metric: the effect, with the spread of the controls."""

    def summary(self) -> dict:
        return {
            "ablated_sets": {k: len(v) for k, v in self.sets.items()},
            "skipped_classes": self.skipped,
            "ablation": _ablation_summary(self.effects),
        }

    def figures(self) -> dict:
        return {
            "ablation_entropy": rw_plots.ablation_figure(self.effects, metric="entropy"),
            "ablation_loss": rw_plots.ablation_figure(self.effects, metric="loss"),
            "ablation_prompt_entropy": rw_plots.ablation_figure(self.effects, data="prompt", metric="entropy"),
        }

    def tables(self) -> dict:
        return {
            "ablation_summary": self.effects,
            "ablation_runs": self.runs,
            "ablated_neurons": pd.DataFrame(
                [(k, layer, n) for k, v in self.sets.items() for layer, n in v], columns=["set", "layer", "neuron"]
            ),
        }


def study_ablation(
    model: TransformerBridge, cfg: RWConfig, size: Size, classes: NeuronClasses, activations: ActivationStudy
) -> AblationStudy:
    """Sample ``n_neurons`` of each ablated class (default: as many as there are weakening neurons) and
    ablate each set under every condition of ``cfg.conditions``, against ``n_controls`` random sets."""
    n_pick = cfg.n_neurons or len(classes.neurons("weakening"))
    rng = random.Random(cfg.seed)
    sets, skipped = {}, {}
    for name in size.classes:
        members = classes.neurons(name)
        if len(members) < n_pick or n_pick == 0:
            skipped[name] = len(members)
            continue
        sets[name] = sorted(rng.sample(members, n_pick))
    runs, summaries = [], []
    for text in cfg.conditions:
        spec = parse_condition(text, cfg.mode, cfg.value, cfg.orient_post)
        effects = ablation_effects(
            model,
            activations.texts,
            sets,
            spec,
            prompts=cfg.prompts,
            n_controls=size.n_controls,
            exclude={name: classes.neurons(name) for name in sets},
            means=activations.stats.mean_post if cfg.mode == "mean" else None,
            seed=cfg.seed,
            max_len=size.max_len,
        )
        runs.append(effects.to_frame())
        summaries.append(_with_control_spread(effects.summary(), effects.to_frame()).assign(ablation=spec.label))
    return AblationStudy(sets, skipped, pd.concat(runs, ignore_index=True), pd.concat(summaries, ignore_index=True))


def _placement(neurons: list[tuple[int, int]], n_layers: int) -> dict:
    layers = [layer for layer, _ in neurons]
    return {
        "count": len(layers),
        "mean_layer": sum(layers) / len(layers) if layers else None,
        "fraction_in_last_third": sum(layer >= 2 * n_layers / 3 for layer in layers) / len(layers) if layers else None,
        "fraction_in_first_third": sum(layer < n_layers / 3 for layer in layers) / len(layers) if layers else None,
    }


def _freq_summary(stats: ActivationStats, classes: NeuronClasses) -> dict:
    df = stats.to_frame().merge(classes.to_frame(), on=["layer", "neuron"])
    agg = df.groupby("rw_class", observed=True).agg(
        n=("neuron", "size"),
        freq_gate_pos=("freq_gate_pos", "mean"),
        freq_post_pos=("freq_post_pos", "mean"),
        mean_write=("mean_write", "mean"),
    )
    return {k: {c: (int(v) if c == "n" else round(float(v), 4)) for c, v in row.items()} for k, row in agg.iterrows()}


def _with_control_spread(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``delta_std``: the spread over control repeats of their mean (NaN for targets and clean)."""
    per_repeat = frame[frame.kind == "control"].groupby(["set", "data", "metric", "repeat"])["value"].mean()
    spread = (
        per_repeat.groupby(["set", "data", "metric"]).std().rename("delta_std").reset_index().assign(kind="control")
    )
    return summary.merge(spread, on=["set", "kind", "data", "metric"], how="left")


def _ablation_summary(ablation: pd.DataFrame) -> dict:
    out: dict = {}
    for (label, data, metric), part in ablation.groupby(["ablation", "data", "metric"]):
        entry = out.setdefault(label, {}).setdefault(f"{data}_{metric}", {})
        entry["clean"] = round(float(part[part.kind == "clean"].value.iloc[0]), 4)
        for name, rows in part[part.kind != "clean"].groupby("set"):
            target = rows[rows.kind == "target"].delta
            control = rows[rows.kind == "control"].delta
            entry[name] = {
                "delta": round(float(target.iloc[0]), 4),
                "control_delta": round(float(control.iloc[0]), 4) if len(control) else None,
            }
    return out
