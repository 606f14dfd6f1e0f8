"""The attributes rate under neuron ablations (Gerstner & Schütze, arXiv:2505.17936, section 4).

The attributes rate of Geva et al. (2023, *Dissecting Recall of Factual Associations*) asks whether the
model, given a subject, brings up what it knows about it. Here, as in the RW paper's use of it, it is
measured on the model's output: the greedy continuation of a subject prompt (``"{subject} is"``) *states
an attribute* when it contains, as whole words, one of the subject's attribute words or phrases
(:class:`workbench.data.knowns.Known`; case and diacritics ignored). The rate is the fraction of
subjects whose continuation states one. Ablating a class of neurons and comparing its rate with random
neuron sets of the same size per layer (:func:`workbench.neurons.ablation.random_control`) tells whether
the class carries attribute knowledge beyond what any neurons of that count do; intervals are bootstrap
percentiles over subjects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.knowns import Known, greedy_continuations, plain
from workbench.neurons.ablation import Ablation, Neurons, ablated, by_layer, mlp_width, random_control

__all__ = ["SUBJECT_PROMPT", "AttributesRate", "attribute_hits", "attributes_rate_effects", "bootstrap_interval"]

SUBJECT_PROMPT = "{subject} is"
"""The subject prompt whose continuation is scored."""


def attribute_hits(text: str, attributes: Sequence[str]) -> tuple[str, ...]:
    """The attributes ``text`` states: those occurring in it as whole words (case and diacritics ignored).

    >>> attribute_hits("France is a country in Western Europe; its capital, Paris, ...", ("Paris", "Europe", "Lyon"))
    ('Paris', 'Europe')
    """
    words = plain(text)
    return tuple(a for a in attributes if re.search(rf"(?<!\w){re.escape(plain(a))}(?!\w)", words))


def bootstrap_interval(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (resampled along axis 0; rows of a 2-D array stay paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return float(low), float(high)


@dataclass(frozen=True)
class AttributesRate:
    """Continuations and attribute hits per subject, for the clean model and each ablated set and control."""

    frame: pd.DataFrame
    """Long rows: ``set, kind ('clean'|'target'|'control'), repeat, n_neurons, ablation, subject, continuation,
    hits ('; '-joined), stated (bool)``."""

    def to_frame(self) -> pd.DataFrame:
        """The long frame."""
        return self.frame

    def summary(self, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Per set: the target's rate, the controls' mean rate, the difference, each with a bootstrap interval.

        Columns ``set, n_neurons, n_subjects, rate, rate_low, rate_high, control_rate, control_low,
        control_high, delta, delta_low, delta_high`` (``delta`` = rate - control_rate; the bootstrap resamples
        subjects, keeping each subject's target and control outcomes paired). The clean model is the row
        ``set == 'clean'`` (no control).
        """
        df = self.frame
        wide = df.pivot_table(index="subject", columns=["set", "kind", "repeat"], values="stated", aggfunc="first")
        rows = []
        for name in dict.fromkeys(df.set):
            target = wide[(name, "clean" if name == "clean" else "target", 0)].to_numpy(float)
            row = {"set": name, "n_neurons": int(df[df.set == name].n_neurons.iloc[0]), "n_subjects": len(target)}
            row["rate"] = float(target.mean())
            row["rate_low"], row["rate_high"] = bootstrap_interval(target, n_boot=n_boot, seed=seed)
            if name != "clean":
                control = wide[name]["control"].to_numpy(float).mean(axis=1)
                row["control_rate"] = float(control.mean())
                row["control_low"], row["control_high"] = bootstrap_interval(control, n_boot=n_boot, seed=seed)
                row["delta"] = row["rate"] - row["control_rate"]
                row["delta_low"], row["delta_high"] = bootstrap_interval(target - control, n_boot=n_boot, seed=seed)
            rows.append(row)
        return pd.DataFrame(rows)


def attributes_rate_effects(
    model: TransformerBridge,
    knowns: Sequence[Known],
    sets: Mapping[str, Neurons],
    spec: Ablation,
    *,
    template: str = SUBJECT_PROMPT,
    n_controls: int = 3,
    exclude: Mapping[str, Neurons] | None = None,
    means: Tensor | None = None,
    seed: int = 0,
    max_new_tokens: int = 16,
) -> AttributesRate:
    """Greedy continuations of ``template`` per subject, clean and with each set (and its controls) ablated.

    Args:
        model: the bridge.
        knowns: the facts the model knows (:func:`workbench.data.knowns.known_facts`), with attribute sets.
        sets: named neuron sets to ablate.
        spec: the intervention (:class:`~workbench.neurons.ablation.Ablation`).
        template: the subject prompt, with ``{subject}``.
        n_controls: random sets per named set, same count per layer.
        exclude: per set name, neurons the controls avoid (e.g. the whole class); default the set.
        means: per-neuron means for ``mode='mean'``.
        seed: seed of the controls (the same scheme as :func:`~workbench.neurons.ablation.ablation_effects`).
        max_new_tokens: length of each continuation.
    """
    if "{subject}" not in template:
        raise ValueError(f"template {template!r} has no {{subject}} field: e.g. '{{subject}} is'")
    prompts = [template.format(subject=k.subject) for k in knowns]
    runs: list[tuple[str, str, int, dict[int, list[int]]]] = [("clean", "clean", 0, {})]
    for i, (name, neurons) in enumerate(sets.items()):
        runs.append((name, "target", 0, by_layer(neurons)))
        avoid = (exclude or {}).get(name)
        for r in range(n_controls):
            control = random_control(neurons, mlp_width(model), seed=seed + 1000 * i + r, exclude=avoid)
            runs.append((name, "control", r, control))
    rows = []
    for name, kind, repeat, neurons in tqdm(runs, desc="attributes rate", leave=False):
        with ablated(model, neurons, spec, means=means):
            texts = greedy_continuations(model, prompts, max_new_tokens)
        n = sum(len(v) for v in neurons.values())
        for known, text in zip(knowns, texts):
            hits = attribute_hits(text, known.attributes)
            rows.append(
                dict(
                    set=name,
                    kind=kind,
                    repeat=repeat,
                    n_neurons=n,
                    ablation=spec.label,
                    subject=known.subject,
                    continuation=text,
                    hits="; ".join(hits),
                    stated=bool(hits),
                )
            )
    return AttributesRate(pd.DataFrame(rows))
