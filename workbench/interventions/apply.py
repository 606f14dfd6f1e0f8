"""Running a model on base and source inputs with several interventions at once.

Each source input is run clean once (no gradient) and the activations the interventions read are
captured; then the base input runs with every intervention attached through
:func:`workbench.hooks.attach`, so nothing outlives the call, also when it raises. This is pyvene's
``IntervenableModel`` call (Wu et al. 2024) on TransformerLens hook points.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import attach, capture
from workbench.interventions.modules import Collecting, Intervention
from workbench.interventions.spec import InterventionSpec

__all__ = ["InterventionOutput", "InterventionSet", "run_interventions", "source_activations"]

SourceActs = dict[tuple[int, str], Tensor]
"""Clean source activations keyed by (source group, hook name)."""


class InterventionSet(nn.Module):
    """Specs (where) paired with intervention modules (what), applied together.

    Modules are kept in a :class:`torch.nn.ModuleList`, so ``parameters()`` and ``state_dict()``
    cover exactly the interventions, never the model.
    """

    def __init__(self, items: Sequence[tuple[InterventionSpec, Intervention]]):
        super().__init__()
        specs = [s if s.name else s.replace(name=f"{s.hook}#{i}") for i, (s, _) in enumerate(items)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"intervention names repeat: {names}; give each spec a distinct name")
        self.specs: tuple[InterventionSpec, ...] = tuple(specs)
        self.interventions = nn.ModuleList([m for _, m in items])

    def __iter__(self) -> Iterator[tuple[InterventionSpec, Intervention]]:
        modules = cast("Iterator[Intervention]", iter(self.interventions))  # __init__ holds Interventions only
        return iter(zip(self.specs, modules))

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, name: str) -> Intervention:
        for spec, module in self:
            if spec.name == name:
                return module
        raise KeyError(f"no intervention named {name!r}; names: {[s.name for s in self.specs]}")

    @property
    def groups(self) -> list[int]:
        """Source groups read by the interventions that need a source."""
        return sorted({s.group for s, m in self if m.needs_source})


@dataclass
class InterventionOutput:
    """Logits of the intervened base run and the activations collected by collect interventions."""

    logits: Float[Tensor, "batch pos d_vocab"]
    collected: dict[str, Float[Tensor, "batch _n _d"]]


def _select(x: Tensor, positions: tuple[int, ...] | None) -> Tensor:
    return (x if positions is None else x[:, list(positions)]).flatten(2)


def source_activations(
    model: TransformerBridge,
    interventions: InterventionSet,
    sources: Int[Tensor, "batch _pos"] | Sequence[Int[Tensor, "batch _pos"]] | None,
    *,
    batch_size: int | None = None,
) -> SourceActs:
    """Run each source group clean (no gradient) and keep the activations its interventions read."""
    sources = [] if sources is None else [sources] if isinstance(sources, Tensor) else list(sources)
    missing = [g for g in interventions.groups if g >= len(sources)]
    if missing:
        raise ValueError(
            f"interventions read source groups {interventions.groups} but {len(sources)} source input(s) were given"
        )
    acts: SourceActs = {}
    for group in interventions.groups:
        hooks = sorted({s.hook for s, m in interventions if m.needs_source and s.group == group})
        step = batch_size or len(sources[group])
        parts: list[dict[str, Tensor]] = []
        for i in range(0, len(sources[group]), step):
            with torch.no_grad(), capture(model, hooks) as part:
                model(sources[group][i : i + step])
            parts.append(part)
        acts.update({(group, h): torch.cat([p[h] for p in parts]) for h in hooks})
    return acts


def run_interventions(
    model: TransformerBridge,
    interventions: InterventionSet,
    base: Int[Tensor, "batch pos"],
    sources: Int[Tensor, "batch _source_pos"] | Sequence[Int[Tensor, "batch _source_pos"]] | None = None,
    *,
    source_acts: SourceActs | None = None,
) -> InterventionOutput:
    """Run ``base`` through ``model`` with ``interventions``, reading source activations from ``sources``.

    Args:
        model: the bridge (its weights are not changed; hooks are removed afterwards).
        interventions: the interventions and where they act.
        base: base token ids.
        sources: one token tensor per source group (a single tensor is group 0); the same batch
            size as ``base``; lengths may differ when every spec gives explicit positions.
        source_acts: the sources' activations from :func:`source_activations`, to skip the source
            runs (training reuses them across epochs); then ``sources`` is not read.

    Returns:
        The intervened logits (gradients flow to trainable interventions) and collected activations.
    """
    for spec in interventions.specs:
        spec.check(model)
    if source_acts is None:
        source_acts = source_activations(model, interventions, sources)
    for (group, _), acts in source_acts.items():
        if acts.shape[0] != base.shape[0]:
            raise ValueError(
                f"source {group} has batch size {acts.shape[0]}, base has {base.shape[0]}: "
                "pair every base with a source"
            )

    def hook_fn(spec: InterventionSpec, module: Intervention):
        def fn(x: Tensor, hook) -> Tensor:
            chosen = _select(x, spec.positions)
            src = None
            if module.needs_source:
                src_full = source_acts[(spec.group, spec.hook)]
                if spec.read_positions is None and src_full.shape[1] != x.shape[1]:
                    raise ValueError(
                        f"{spec.name}: base has {x.shape[1]} positions, source {src_full.shape[1]}; "
                        "give explicit positions (and source_positions) when lengths differ"
                    )
                src = _select(src_full, spec.read_positions).to(x.dtype)
            new = module(chosen, src).reshape(chosen.shape[:2] + x.shape[2:])
            if spec.positions is None:
                return new
            out = x.clone()
            out[:, list(spec.positions)] = new
            return out

        return fn

    for module in interventions.interventions:
        if isinstance(module, Collecting):
            module.collected.clear()
    with attach(model, [(s.hook, hook_fn(s, m)) for s, m in interventions]):
        logits = model(base)
    collected = {s.name: torch.cat(m.collected) for s, m in interventions if isinstance(m, Collecting) and m.collected}
    return InterventionOutput(logits, collected)
