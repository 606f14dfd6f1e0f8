"""Counterfactual datasets as code: causal models that produce (base, source, counterfactual label).

Interchange interventions (Geiger et al. 2021, "Causal Abstractions of Neural Networks") test whether
a hidden representation plays the role of a variable of a high-level causal model: run the network
on a *base* input, overwrite the representation with its value on a *source* input, and compare
the output with what the causal model outputs when the variable is set to its source value. This
module builds such datasets from a plain Python causal model, seeded, and ships the price-tagging
game of Wu, Geiger, Icard, Potts, Goodman (2023), "Interpretability at Scale: Identifying Causal
Mechanisms in Alpaca": *"Please say yes only if it costs between X and Y dollars, otherwise no."*,
with the left-boundary (``X <= price``) and right-boundary (``price <= Y``) variables.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "IOI_NAMES",
    "IOI_TEMPLATE",
    "PRICE_TEMPLATE",
    "CausalModel",
    "CounterfactualDataset",
    "CounterfactualTensors",
    "ioi_counterfactuals",
    "ioi_model",
    "price_tagging_counterfactuals",
    "price_tagging_model",
    "sample_counterfactuals",
    "tokenize_fixed",
]

PRICE_TEMPLATE = (
    "Please say yes only if it costs between {low} and {high} dollars, otherwise no.\nInput: {price} dollars\nOutput:"
)
"""The price-tagging instruction of Wu et al. (2023), without Alpaca's chat wrapper."""


@dataclass(frozen=True)
class CausalModel:
    """A high-level causal model: sampled inputs, intermediate variables, an output variable.

    ``mechanisms`` are evaluated in order; each reads the values computed so far (inputs and earlier
    variables) and returns its own value. Intervening on a variable replaces its mechanism by a
    constant, so later variables see the intervened value.
    """

    sample_inputs: Callable[[random.Random], dict[str, Any]]
    """Draws one setting of the input variables."""
    mechanisms: Mapping[str, Callable[[dict[str, Any]], Any]]
    """Intermediate and output variables, in causal order, each a function of the values so far."""
    output: str
    """Name of the output variable (a key of ``mechanisms``)."""
    render: Callable[[dict[str, Any]], str]
    """Turns an input setting into the prompt text."""
    verbalize: Callable[[Any], str]
    """Turns an output value into the label text the model should produce (e.g. ``" Yes"``)."""

    def run(self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """All variable values for ``inputs``, with ``interventions`` (variable -> value) applied."""
        interventions = dict(interventions or {})
        unknown = set(interventions) - set(self.mechanisms) - set(inputs)
        if unknown:
            raise KeyError(
                f"cannot intervene on unknown variables {sorted(unknown)}; variables: {list(self.mechanisms)}"
            )
        values = {k: interventions.get(k, v) for k, v in inputs.items()}
        for name, mechanism in self.mechanisms.items():
            values[name] = interventions[name] if name in interventions else mechanism(values)
        return values


@dataclass(frozen=True)
class CounterfactualTensors:
    """A tokenised counterfactual dataset (every prompt of one role has the same length)."""

    base: Int[Tensor, "batch pos"]
    sources: tuple[Int[Tensor, "batch pos"], ...]
    labels: Int[Tensor, " batch"]
    """Token of the counterfactual label (what the intervened causal model outputs)."""
    base_labels: Int[Tensor, " batch"]
    """Token of the base input's own label."""

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: slice | Tensor) -> CounterfactualTensors:
        """The examples at ``index``."""
        return CounterfactualTensors(
            self.base[index], tuple(s[index] for s in self.sources), self.labels[index], self.base_labels[index]
        )


@dataclass(frozen=True)
class CounterfactualDataset:
    """Base prompts, one source prompt per intervened variable, and the counterfactual labels."""

    variables: tuple[str, ...]
    """The intervened variables; source ``i`` provides the value of ``variables[i]``."""
    base: tuple[str, ...]
    sources: tuple[tuple[str, ...], ...]
    """``sources[i][j]`` is the source prompt of variable ``i`` for example ``j``."""
    labels: tuple[str, ...]
    """Counterfactual label text of each example."""
    base_labels: tuple[str, ...]
    """Label text of the base prompt itself."""
    values: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    """Per example, the base values and the intervened variables' source values (for inspection)."""

    def __len__(self) -> int:
        return len(self.base)

    def to_frame(self) -> pd.DataFrame:
        """One row per example: base, sources, labels, and whether the intervention changes the label."""
        data = {"base": self.base, "label": self.labels, "base_label": self.base_labels}
        for name, texts in zip(self.variables, self.sources):
            data[f"source_{name}"] = texts
        frame = pd.DataFrame(data)
        frame["changed"] = frame["label"] != frame["base_label"]
        return frame

    def tokenize(self, tokenizer) -> CounterfactualTensors:
        """Token tensors; raises if prompts of one role differ in length or a label is not one token."""
        return CounterfactualTensors(
            tokenize_fixed(tokenizer, self.base),
            tuple(tokenize_fixed(tokenizer, s) for s in self.sources),
            _label_tokens(tokenizer, self.labels),
            _label_tokens(tokenizer, self.base_labels),
        )


def tokenize_fixed(tokenizer, texts: Sequence[str]) -> Int[Tensor, "batch pos"]:
    """Tokenise prompts that must all have the same number of tokens (no BOS, no padding)."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    lengths = sorted({len(i) for i in ids})
    if len(lengths) != 1:
        raise ValueError(
            f"prompts tokenise to different lengths {lengths[:5]}: positions would not line up; "
            "use templates whose slots are filled by single tokens (or equal-length token strings)"
        )
    return torch.tensor(ids, dtype=torch.long)


def _label_tokens(tokenizer, labels: Sequence[str]) -> Int[Tensor, " batch"]:
    cache: dict[str, int] = {}
    for text in set(labels):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"label {text!r} is {len(ids)} tokens; labels must be single tokens (try a leading space)")
        cache[text] = ids[0]
    return torch.tensor([cache[t] for t in labels], dtype=torch.long)


def sample_counterfactuals(
    model: CausalModel,
    variables: str | Sequence[str],
    n: int,
    *,
    seed: int = 0,
    changed_fraction: float | None = 0.5,
    max_tries: int = 1000,
) -> CounterfactualDataset:
    """Sample ``n`` interchange-intervention examples from a causal model.

    For each example a base input and one source input per variable are drawn; the label is the
    causal model's output on the base with each variable set to its value on its own source.

    Args:
        model: the causal model.
        variables: the variable(s) to intervene on (several: a multi-source intervention).
        n: number of examples.
        seed: seed of the sampler.
        changed_fraction: if set, this fraction of examples has a counterfactual label different
            from the base label (others keep it), so that an intervention that does nothing scores
            ``1 - changed_fraction``; ``None`` keeps the natural distribution.
        max_tries: draws allowed per example before giving up.
    """
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    rng = random.Random(seed)
    base, labels, base_labels = [], [], []
    sources: list[list[str]] = [[] for _ in variables]
    values: list[dict[str, Any]] = []
    for i in range(n):
        want_changed = None if changed_fraction is None else i < round(changed_fraction * n)
        for _ in range(max_tries):
            b = model.sample_inputs(rng)
            srcs = [model.sample_inputs(rng) for _ in variables]
            setting = {v: model.run(s)[v] for v, s in zip(variables, srcs)}
            base_out = model.run(b)[model.output]
            cf_out = model.run(b, setting)[model.output]
            if want_changed is None or (cf_out != base_out) == want_changed:
                break
        else:
            raise RuntimeError(
                f"no example with changed={want_changed} in {max_tries} draws: the variables {variables} rarely "
                "change the output under this input distribution; pass changed_fraction=None or reshape sample_inputs"
            )
        base.append(model.render(b))
        for slot, s in zip(sources, srcs):
            slot.append(model.render(s))
        labels.append(model.verbalize(cf_out))
        base_labels.append(model.verbalize(base_out))
        values.append({**b, **{f"source_{k}": v for k, v in setting.items()}})
    order = list(range(n))
    rng.shuffle(order)
    pick = lambda xs: tuple(xs[j] for j in order)
    return CounterfactualDataset(
        variables, pick(base), tuple(pick(s) for s in sources), pick(labels), pick(base_labels), pick(values)
    )


def price_tagging_model(decimals: int = 2, max_price: float = 9.99, near: float = 0.5) -> CausalModel:
    """The price-tagging game of Wu et al. (2023) as a causal model.

    Inputs: ``low < high`` bounds and a ``price``, all multiples of ``10**-decimals`` in
    ``[0, max_price]``; half of the prices fall inside the bracket and, with probability ``near``,
    a price outside it lies within 1.00 of a bound (hard cases). Variables: ``left`` = ``low <= price``,
    ``right`` = ``price <= high``; output ``answer`` = ``left and right``, said as ``" Yes"``/``" No"``.
    """
    scale = 10**decimals
    top = round(max_price * scale)

    def sample(rng: random.Random) -> dict[str, Any]:
        low, high = sorted(rng.sample(range(top + 1), 2))
        if rng.random() < 0.5:
            price = rng.randint(low, high)
        else:
            below = range(max(0, low - scale if rng.random() < near else 0), low)
            above = range(high + 1, min(top, high + scale if rng.random() < near else top) + 1)
            choices = [r for r in (below, above) if len(r)]
            price = rng.choice(rng.choice(choices)) if choices else rng.randint(low, high)
        return {"low": low / scale, "high": high / scale, "price": price / scale}

    fmt = f"{{:.{decimals}f}}"
    return CausalModel(
        sample_inputs=sample,
        mechanisms={
            "left": lambda v: v["low"] <= v["price"],
            "right": lambda v: v["price"] <= v["high"],
            "answer": lambda v: v["left"] and v["right"],
        },
        output="answer",
        render=lambda v: PRICE_TEMPLATE.format(
            low=fmt.format(v["low"]), high=fmt.format(v["high"]), price=fmt.format(v["price"])
        ),
        verbalize=lambda yes: " Yes" if yes else " No",
    )


IOI_TEMPLATE = "When{a} and{b} went to the store,{subject} gave a drink to"
"""Indirect-object identification prompt (Wang et al. 2022, "Interpretability in the Wild")."""

IOI_NAMES = (
    " Mary",
    " John",
    " Alice",
    " Bob",
    " Tom",
    " Sarah",
    " James",
    " Anna",
    " David",
    " Emma",
    " Paul",
    " Lisa",
    " Mark",
    " Kate",
    " Peter",
    " Laura",
)
"""Names that SmolLM2's tokenizer keeps as single tokens (with their leading space)."""


def ioi_model(names: Sequence[str] = IOI_NAMES) -> CausalModel:
    """Indirect-object identification as a causal model.

    Inputs: two distinct names ``a``, ``b`` (in order of mention) and which one is repeated as the
    subject. Variable ``io_first``: the indirect object is the first-mentioned name. Output: the
    indirect object. Interchanging ``io_first`` makes the base prompt answer with its *other* name
    when the source's indirect object sits at the other position.
    """

    def sample(rng: random.Random) -> dict[str, Any]:
        a, b = rng.sample(list(names), 2)
        return {"a": a, "b": b, "subject_first": rng.random() < 0.5}

    return CausalModel(
        sample_inputs=sample,
        mechanisms={
            "io_first": lambda v: not v["subject_first"],
            "answer": lambda v: v["a"] if v["io_first"] else v["b"],
        },
        output="answer",
        render=lambda v: IOI_TEMPLATE.format(a=v["a"], b=v["b"], subject=v["a"] if v["subject_first"] else v["b"]),
        verbalize=str,
    )


def ioi_counterfactuals(n: int = 256, *, seed: int = 0, changed_fraction: float | None = 0.5) -> CounterfactualDataset:
    """Interchange examples for the IOI ``io_first`` variable."""
    return sample_counterfactuals(ioi_model(), "io_first", n, seed=seed, changed_fraction=changed_fraction)


def price_tagging_counterfactuals(
    variables: str | Sequence[str] = "left",
    n: int = 256,
    *,
    seed: int = 0,
    decimals: int = 2,
    changed_fraction: float | None = 0.5,
) -> CounterfactualDataset:
    """Interchange examples for the price-tagging game's ``left`` / ``right`` boundary variables."""
    return sample_counterfactuals(
        price_tagging_model(decimals), variables, n, seed=seed, changed_fraction=changed_fraction
    )
