"""One model against the base (:mod:`experiments.model_diff`'s analyses): logit differences, logit lens,
direct logit attribution by layer and head, activation patching other -> base, and the joint patch of
the top heads, with their figures, tables and attention views.

Each side is a :class:`~workbench.hooks.ModelSide`, so the other one can be a tuned
model or the base with an IRM injected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import torch

from workbench.analysis.attribution import Attribution, HeadAttribution, head_attribution, layer_attribution
from workbench.analysis.logit_lens import LogitLens, logit_lens
from workbench.analysis.patching import PatchResult, patch_heads, patch_sweep
from workbench.analysis.plots import attribution_figure, bar_figure, head_heatmap, logit_lens_figure, patching_heatmap
from workbench.data.prompts import PromptSet
from workbench.hooks import ModelSide, attach
from workbench.metrics import LogitDiff, normalized
from workbench.views import Row, attention_comparison

__all__ = [
    "SWEEP_KINDS",
    "VIEW_CAPTIONS",
    "Attributions",
    "Comparison",
    "JointPatch",
    "LogitDiffs",
    "attributions",
    "compare",
    "joint_patch",
    "logit_diffs",
    "patching",
    "top_head_views",
]

SWEEP_KINDS = ("resid_pre", "attn_out", "mlp_out", "head")


@dataclass(frozen=True)
class LogitDiffs:
    """Logit difference per prompt of the base and the other model."""

    prompts: PromptSet
    """The prompts and answers."""
    base: torch.Tensor
    """Per prompt, the base model's logit difference."""
    other: torch.Tensor
    """Per prompt, the other model's."""
    name: str
    """The other model's label."""

    def to_frame(self) -> pd.DataFrame:
        """Columns ``model, prompt, answer, other, logit_diff``."""
        rows = [
            (label, prompt, *pair, float(values[i]))
            for label, values in (("base", self.base), (self.name, self.other))
            for i, (prompt, pair) in enumerate(zip(self.prompts.prompts, self.prompts.answers))
        ]
        return pd.DataFrame(rows, columns=["model", "prompt", "answer", "other", "logit_diff"])


def logit_diffs(base: ModelSide, other: ModelSide, prompts: PromptSet) -> LogitDiffs:
    """The logit difference answer − other of both sides on every prompt."""
    tokens, answers = prompts.tokens(base.model), prompts.answer_tokens(base.model)
    per_prompt = LogitDiff(answers, per_prompt=True)
    return LogitDiffs(prompts, per_prompt(base.run(tokens)[0]), per_prompt(other.run(tokens)[0]), other.label)


@dataclass(frozen=True)
class Attributions:
    """Direct logit attribution by layer and by head, base and other."""

    layers: tuple[Attribution, Attribution]
    """Per layer (attention, MLP), base then other."""
    heads: tuple[HeadAttribution, HeadAttribution]
    """Per head, base then other."""

    @property
    def layer_diff(self) -> torch.Tensor:
        """Other − base, per component."""
        return self.layers[1].values - self.layers[0].values

    @property
    def head_diff(self) -> torch.Tensor:
        """Other − base, per layer and head."""
        return self.heads[1].values - self.heads[0].values


def attributions(base: ModelSide, other: ModelSide, prompts: PromptSet) -> Attributions:
    """DLA of each side, with its hooks attached (an injected module's own writes are not a listed component)."""
    tokens, answers = prompts.tokens(base.model), prompts.answer_tokens(base.model)
    layers, heads = [], []
    for side in (base, other):
        with attach(side.model, side.hooks):
            layers.append(replace(layer_attribution(side.model, tokens, answers), model=side.label))
            heads.append(replace(head_attribution(side.model, tokens, answers), model=side.label))
    return Attributions(tuple(layers), tuple(heads))


def patching(base: ModelSide, other: ModelSide, prompts: PromptSet, layers: list[int] | None) -> dict[str, PatchResult]:
    """The other model's activations patched into the base's run, per kind: 0 = base, 1 = other."""
    tokens, metric = prompts.tokens(base.model), LogitDiff(prompts.answer_tokens(base.model))
    return {kind: patch_sweep(base, other, kind, metric, tokens, layers=layers) for kind in SWEEP_KINDS}


@dataclass(frozen=True)
class JointPatch:
    """The top heads patched together, other → base and back."""

    heads: tuple[tuple[int, int], ...]
    """(layer, head) of the heads that moved the base most towards the other model."""
    base: float
    """Mean logit difference of the base."""
    other: float
    """Of the other model."""
    joint: float
    """Of the base with the heads' outputs patched from the other model."""
    back: float
    """Of the other model with the heads' outputs patched from the base."""
    name: str
    """The other model's label."""

    @property
    def labels(self) -> str:
        """``L28H3 L29H1``."""
        return " ".join(f"L{layer}H{head}" for layer, head in self.heads)

    @property
    def normalized(self) -> float | None:
        """How much of the gap the joint patch closes (None when the two models agree)."""
        return None if self.other == self.base else float(normalized(self.joint, self.base, self.other))

    def to_frame(self) -> pd.DataFrame:
        """Columns ``run, patched, logit_diff``."""
        rows = [
            ("base", "none", self.base),
            (self.name, "none", self.other),
            ("base", f"{self.name} heads {self.labels}", self.joint),
            (self.name, f"base heads {self.labels}", self.back),
        ]
        return pd.DataFrame(rows, columns=["run", "patched", "logit_diff"])


def joint_patch(base: ModelSide, other: ModelSide, prompts: PromptSet, head_sweep: PatchResult, k: int) -> JointPatch:
    """Patch jointly the ``k`` heads whose single patch moved the base most towards the other model."""
    tokens, metric = prompts.tokens(base.model), LogitDiff(prompts.answer_tokens(base.model))
    sign = 1.0 if head_sweep.reference >= head_sweep.baseline else -1.0
    order = ((head_sweep.values - head_sweep.baseline) * sign).flatten().argsort(descending=True)[:k].tolist()
    n_heads = head_sweep.values.shape[1]
    heads = tuple((head_sweep.layers[i // n_heads], i % n_heads) for i in order)
    joint = patch_heads(base, other, heads, metric, tokens)
    back = patch_heads(other, base, heads, metric, tokens)
    return JointPatch(heads, head_sweep.baseline, head_sweep.reference, joint, back, other.label)


@dataclass(frozen=True)
class Comparison:
    """Every analysis of one model against the base."""

    diffs: LogitDiffs
    """Logit differences per prompt."""
    lenses: tuple[LogitLens, LogitLens]
    """Logit lens of base and other (own final scale)."""
    attributions: Attributions
    """DLA by layer and head."""
    sweeps: dict[str, PatchResult]
    """Patching other → base, per kind of :data:`SWEEP_KINDS`."""
    joint: JointPatch
    """The joint patch of the top heads."""

    def summary(self) -> dict:
        """Key numbers, JSON-able."""
        name, n_heads = self.diffs.name, self.attributions.head_diff.shape[1]
        layer_diff, head_diff = self.attributions.layer_diff, self.attributions.head_diff.flatten()
        lens_gap = self.lenses[1].logit_diff - self.lenses[0].logit_diff
        return {
            "prompts": list(self.diffs.prompts.prompts),
            "answers": [list(a) for a in self.diffs.prompts.answers],
            "logit_diff_base": float(self.diffs.base.mean()),
            f"logit_diff_{name}": float(self.diffs.other.mean()),
            "logit_lens_gap_by_point": dict(zip(self.lenses[0].labels, lens_gap.tolist())),
            "top_attribution_differences": {
                self.attributions.layers[0].labels[i]: float(layer_diff[i])
                for i in layer_diff.abs().argsort(descending=True)[:5].tolist()
            },
            "top_head_attribution_differences": {
                f"L{i // n_heads}H{i % n_heads}": float(head_diff[i])
                for i in head_diff.abs().argsort(descending=True)[:5].tolist()
            },
            "top_patching": {kind: s.top(3).drop(columns="kind").to_dict("records") for kind, s in self.sweeps.items()},
            "top_heads": [f"L{layer}H{head}" for layer, head in self.joint.heads],
            "joint_head_patch_logit_diff": self.joint.joint,
            "joint_head_patch_normalized": self.joint.normalized,
            "joint_head_patch_flips_base": bool((self.joint.joint > 0) != (self.joint.base > 0)),
            "reverse_joint_head_patch_logit_diff": self.joint.back,
        }

    def figures(self) -> dict:
        """The demo's figures."""
        name = self.diffs.name
        return {
            "logit_diff": bar_figure(
                self.diffs.to_frame(), "prompt", "logit_diff", "Logit difference (answer − other)", color="model"
            ),
            "logit_lens": logit_lens_figure(self.lenses),
            "layer_attribution": attribution_figure(self.attributions.layers),
            "head_attribution_diff": head_heatmap(
                self.attributions.head_diff, f"Head attribution, {name} − base", "Δ logit diff"
            ),
            "joint_head_patch": bar_figure(
                self.joint.to_frame(), "patched", "logit_diff", "Joint patch of the top heads", color="run"
            ),
            **{
                f"patch_{kind}": patching_heatmap(
                    sweep,
                    f"{name} → base patching: {kind} (0 = base, 1 = {name})"
                    if changed
                    else f"{name} → base patching: {kind} (metric; {name} and base give the same)",
                    normalize=changed,
                )
                for kind, sweep in self.sweeps.items()
                for changed in [abs(sweep.reference - sweep.baseline) > 1e-8]
            },
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables behind the figures."""
        return {
            "logit_diff": self.diffs.to_frame(),
            "logit_lens": pd.concat([lens.to_frame() for lens in self.lenses]),
            "logit_lens_tokens": pd.concat([lens.tokens_frame() for lens in self.lenses]),
            "layer_attribution": pd.concat([a.to_frame() for a in self.attributions.layers]),
            "head_attribution": pd.concat([h.to_frame() for h in self.attributions.heads]),
            "joint_head_patch": self.joint.to_frame(),
            **{f"patch_{kind}": sweep.to_frame() for kind, sweep in self.sweeps.items()},
        }


def compare(
    base: ModelSide, other: ModelSide, prompts: PromptSet, *, layers: list[int] | None = None, top_heads: int = 2
) -> Comparison:
    """The study's analyses of ``other`` against ``base`` on ``prompts`` (patching sweeps over ``layers``)."""
    tokens, answers = prompts.tokens(base.model), prompts.answer_tokens(base.model)
    # own-scale lens: the final-scale variant would shift every layer by the other model's new final scale
    lenses = tuple(logit_lens(side, tokens, answers, scale="own") for side in (base, other))
    sweeps = patching(base, other, prompts, layers)
    return Comparison(
        logit_diffs(base, other, prompts),
        lenses,
        attributions(base, other, prompts),
        sweeps,
        joint_patch(base, other, prompts, sweeps["head"], top_heads),
    )


def top_head_views(base: ModelSide, other: ModelSide, prompts: PromptSet, joint: JointPatch) -> dict[str, Row]:
    """Attention patterns of the joint patch's top heads on the first prompt, base and other side by side."""
    heads = ", ".join(f"L{layer}H{head}" for layer, head in joint.heads)
    row = attention_comparison(
        {base.label: base, other.label: other},
        prompts.tokens(base.model)[:1],
        list(joint.heads),
        title=f"top heads {heads}: {prompts.prompts[0]!r}",
    )
    return {"top_heads": row}


VIEW_CAPTIONS = {
    "top_heads": "Attention of the heads whose joint patch moves the logit difference most, base vs the other model: "
    "a changed pattern means the head reads different tokens, an unchanged one that it writes differently."
}
"""Captions of the report's token views."""
