"""Where an intervention acts: a typed spec (hook point, positions, subspace, source group).

Follows pyvene's representation configs (Wu et al. 2024, "pyvene: A Library for Understanding and
Improving PyTorch Models via Interventions"), keyed by TransformerLens hook names instead of module
paths. The intervention module itself (what it does) is separate: see
:mod:`workbench.interventions.modules`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config, Index
from workbench.hooks import HookKind, check_hook_name, hook_name

__all__ = ["InterventionSpec", "spec_at"]


@dataclass(frozen=True)
class InterventionSpec(Config):
    """Where an intervention reads and writes.

    The module sees, at each selected position, the activation flattened over its trailing
    dimensions (``d_model`` for the residual stream, ``head * d_head`` for ``attn.hook_z``).
    """

    hook: str
    """Full TransformerLens hook name, e.g. ``blocks.3.hook_resid_post``."""
    positions: tuple[Index, ...] | None = None
    """Base positions to intervene on (negative counts from the end); ``None``: every position."""
    source_positions: tuple[Index, ...] | None = None
    """Source positions read at the same slots (may differ from ``positions``); ``None``: same as ``positions``."""
    group: int = 0
    """Which source input feeds this intervention (multi-source runs pass several sources)."""
    name: str = ""
    """Key of the intervention in outputs and bundles; empty: ``<hook>#<index>``."""

    def __post_init__(self) -> None:
        if self.positions is not None and len(set(self.positions)) != len(self.positions):
            raise ValueError(f"positions repeat: {self.positions}; list each position once")
        if self.source_positions is not None:
            if self.positions is None:
                raise ValueError("source_positions need positions (the base slots they are written to)")
            if len(self.source_positions) != len(self.positions):
                raise ValueError(
                    f"source_positions {self.source_positions} and positions {self.positions} differ in length; "
                    "give one source position per base position"
                )
        if self.group < 0:
            raise ValueError(f"group must be >= 0, got {self.group}")

    @property
    def read_positions(self) -> tuple[int, ...] | None:
        """Positions read from the source run."""
        return self.positions if self.source_positions is None else self.source_positions

    def check(self, model: TransformerBridge) -> InterventionSpec:
        """Return ``self`` if the hook exists on ``model`` (``KeyError`` with close matches otherwise)."""
        check_hook_name(model, self.hook)
        return self


def spec_at(
    model: TransformerBridge, kind: HookKind, layer: int, positions: tuple[int, ...] | int | None = None, **kwargs
) -> InterventionSpec:
    """A spec from a short hook kind (``"resid_post"``, ``"z"``, ...) and a layer, checked on ``model``."""
    if isinstance(positions, int):
        positions = (positions,)
    return InterventionSpec(hook=hook_name(model, kind, layer), positions=positions, **kwargs)
