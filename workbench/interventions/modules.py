"""Intervention modules: what happens to an activation. One signature, ``forward(base, source=None)``.

``base`` and ``source`` are ``[..., d]`` tensors: the selected positions of a hook point, flattened
over the trailing dimensions (see :class:`~workbench.interventions.spec.InterventionSpec`). Static
interventions (zero, interchange, addition, constant source, collect) follow pyvene (Wu et al. 2024);
the trainable ones implement Distributed Alignment Search (Geiger, Wu, Potts, Icard, Goodman 2023,
"Finding Alignments Between Interpretable Causal Variables and Distributed Neural Representations")
and Boundless DAS (Wu, Geiger, Icard, Potts, Goodman 2023, "Interpretability at Scale").

Rotated interventions use an orthogonal ``R`` (``d x r``, ``r = d`` unless low-rank, kept orthogonal by
``torch.nn.utils.parametrizations.orthogonal``), rows as vectors (``x R`` are the rotated
coordinates), a mask ``m`` over rotated coordinates, and are computed in residual form::

    out = b + ((s - b) R * m) R^T          ( = (m * sR + (1 - m) * bR) R^T  when r = d )

so ``source == base`` and ``m == 0`` leave ``base`` bit-for-bit unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn.utils import parametrizations

__all__ = [
    "MODULES",
    "AdditionIntervention",
    "BoundlessRotatedSpaceIntervention",
    "CollectIntervention",
    "Collecting",
    "ConstantSourceIntervention",
    "InterchangeIntervention",
    "Intervention",
    "InterventionKind",
    "LowRankRotatedSpaceIntervention",
    "RotatedSpaceIntervention",
    "ZeroIntervention",
    "make_intervention",
]

Act = Float[Tensor, "... d"]

InterventionKind = Literal["zero", "interchange", "addition", "constant", "collect", "rotated", "low_rank", "boundless"]
"""The ``kind`` of each intervention class (the keys of :data:`MODULES`)."""


class Intervention(nn.Module):
    """Base class: ``forward(base, source=None) -> new base``; ``config()`` rebuilds it (see bundles)."""

    kind: ClassVar[InterventionKind]
    """Its key in :data:`MODULES` (each concrete class sets it)."""
    needs_source: ClassVar[bool] = False
    """Whether a source run must provide ``source``."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) that rebuild this module with the same shapes."""
        return {}

    def _need(self, source: Tensor | None) -> Tensor:
        if source is None:
            raise ValueError(f"{type(self).__name__} needs a source activation: pass source inputs when running it")
        return source


def _dim_mask(dims: tuple[int, ...] | None, like: Tensor) -> Tensor:
    mask = torch.zeros(like.shape[-1], dtype=torch.bool, device=like.device)
    mask[list(dims) if dims is not None else slice(None)] = True
    return mask


class _DimsIntervention(Intervention):
    """An intervention on the coordinates ``dims`` of the activation (all of them by default)."""

    def __init__(self, dims: tuple[int, ...] | None = None):
        super().__init__()
        self.dims = None if dims is None else tuple(dims)

    def config(self) -> dict[str, Any]:
        return {"dims": None if self.dims is None else list(self.dims)}


class ZeroIntervention(_DimsIntervention):
    """Sets the activation (or only the coordinates ``dims``) to zero."""

    kind = "zero"

    def forward(self, base: Act, source: Act | None = None) -> Act:
        return torch.where(_dim_mask(self.dims, base), torch.zeros_like(base), base)


class InterchangeIntervention(_DimsIntervention):
    """Vanilla interchange: the coordinates ``dims`` (all by default) take their value from the source run."""

    kind = "interchange"
    needs_source = True

    def forward(self, base: Act, source: Act | None = None) -> Act:
        return torch.where(_dim_mask(self.dims, base), self._need(source), base)


class AdditionIntervention(Intervention):
    """Adds a steering vector: ``base + scale * vector`` (zero vector at init: exact identity)."""

    kind = "addition"
    vector: Tensor

    def __init__(self, d: int, scale: float = 1.0):
        super().__init__()
        self.d, self.scale = d, scale
        self.register_buffer("vector", torch.zeros(d))

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "scale": self.scale}

    def forward(self, base: Act, source: Act | None = None) -> Act:
        return base + self.scale * self.vector.to(base.dtype)


class ConstantSourceIntervention(Intervention):
    """Interchange with a fixed source activation (``value``) instead of a source run."""

    kind = "constant"
    value: Tensor

    def __init__(self, d: int, dims: tuple[int, ...] | None = None):
        super().__init__()
        self.d = d
        self.dims = None if dims is None else tuple(dims)
        self.register_buffer("value", torch.zeros(d))

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "dims": None if self.dims is None else list(self.dims)}

    def forward(self, base: Act, source: Act | None = None) -> Act:
        return torch.where(_dim_mask(self.dims, base), self.value.to(base.dtype).expand_as(base), base)


class CollectIntervention(Intervention):
    """Records the activations it sees (detached) in ``self.collected`` and changes nothing."""

    kind = "collect"

    def __init__(self):
        super().__init__()
        self.collected: list[Tensor] = []

    def forward(self, base: Act, source: Act | None = None) -> Act:
        self.collected.append(base.detach())
        return base


class _Rotation(nn.Module):
    """``x -> x @ weight`` with ``weight`` (``d x r``) kept orthogonal (orthonormal columns).

    Square rotations use torch's default (matrix exponential around a stored base); low-rank ones
    use Householder reflections without the trivialisation, whose state is only ``d x r`` numbers.
    """

    def __init__(self, d: int, r: int, seed: int | None):
        super().__init__()
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        q, upper = torch.linalg.qr(torch.randn(d, r, generator=g))
        self.weight = nn.Parameter(q * torch.sign(torch.diagonal(upper)))
        parametrizations.orthogonal(self, "weight", use_trivialization=d == r)


class _RotatedBase(Intervention):
    needs_source = True

    def __init__(self, d: int, r: int, seed: int | None):
        super().__init__()
        self.d, self.seed = d, seed
        self.rotation = _Rotation(d, r, seed)

    def mask(self) -> Float[Tensor, " r"]:
        raise NotImplementedError

    def hard_mask(self) -> Float[Tensor, " r"]:
        """The mask in eval mode (0/1)."""
        return self.mask()

    def subspace(self) -> Float[Tensor, "d k"]:
        """Orthonormal basis of the subspace swapped in eval mode (the rotation's kept columns)."""
        return self.rotation.weight[:, self.hard_mask().bool()].detach()

    def forward(self, base: Act, source: Act | None = None) -> Act:
        rot = self.rotation.weight
        delta = (self._need(source) - base).to(rot.dtype) @ rot
        return base + ((delta * self.mask()) @ rot.T).to(base.dtype)


class RotatedSpaceIntervention(_RotatedBase):
    """DAS: interchange the first ``k`` coordinates of a learned rotation (Geiger et al. 2023)."""

    kind = "rotated"

    def __init__(self, d: int, k: int, seed: int | None = 0):
        if not 0 <= k <= d:
            raise ValueError(f"k={k} rotated dimensions must lie in 0..d={d}")
        super().__init__(d, d, seed)
        self.k = k

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "k": self.k, "seed": self.seed}

    def mask(self) -> Tensor:
        return (torch.arange(self.d, device=self.rotation.weight.device) < self.k).to(self.rotation.weight.dtype)


class LowRankRotatedSpaceIntervention(_RotatedBase):
    """DAS in a learned ``rank``-dimensional subspace (orthonormal ``d x rank`` basis): swap all of it."""

    kind = "low_rank"

    def __init__(self, d: int, rank: int, seed: int | None = 0):
        if not 1 <= rank <= d:
            raise ValueError(f"rank={rank} must lie in 1..d={d}")
        super().__init__(d, rank, seed)
        self.rank = rank

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "rank": self.rank, "seed": self.seed}

    def mask(self) -> Tensor:
        return torch.ones(self.rank, device=self.rotation.weight.device, dtype=self.rotation.weight.dtype)


class BoundlessRotatedSpaceIntervention(_RotatedBase):
    """Boundless DAS (Wu et al. 2023): a learned rotation and a learned boundary ``w`` in [0, 1].

    Training mode uses the soft mask ``m_i = sigmoid((w d - i - 1/2) / temperature)`` (the caller
    anneals ``temperature``); eval mode uses its limit, the hard mask ``m_i = [i + 1/2 < w d]``, i.e.
    the first :attr:`width` rotated coordinates, so a zero width is an exact identity.
    """

    kind = "boundless"
    temperature: Tensor

    def __init__(self, d: int, init_width: float = 0.5, temperature: float = 50.0, seed: int | None = 0):
        super().__init__(d, d, seed)
        self.boundary = nn.Parameter(torch.tensor(float(init_width)))
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def config(self) -> dict[str, Any]:
        return {"d": self.d, "seed": self.seed}

    @property
    def width(self) -> int:
        """Number of rotated coordinates the hard (eval) mask swaps."""
        return int(self.hard_mask().sum().item())

    def hard_mask(self) -> Tensor:
        index = torch.arange(self.d, device=self.boundary.device, dtype=self.boundary.dtype)
        return (index + 0.5 < self.boundary.clamp(0, 1) * self.d).to(self.boundary.dtype)

    def mask(self) -> Tensor:
        if not self.training:
            return self.hard_mask()
        index = torch.arange(self.d, device=self.boundary.device, dtype=self.boundary.dtype)
        return torch.sigmoid((self.boundary.clamp(0, 1) * self.d - index - 0.5) / self.temperature)


MODULES: dict[InterventionKind, type[Intervention]] = {
    cls.kind: cls
    for cls in (
        ZeroIntervention,
        InterchangeIntervention,
        AdditionIntervention,
        ConstantSourceIntervention,
        CollectIntervention,
        RotatedSpaceIntervention,
        LowRankRotatedSpaceIntervention,
        BoundlessRotatedSpaceIntervention,
    )
}
"""Intervention classes by ``kind``."""


@runtime_checkable
class Collecting(Protocol):
    """An intervention that records what it sees: ``collected`` holds one tensor per run until cleared."""

    collected: list[Tensor]


def make_intervention(kind: InterventionKind, **config: Any) -> Intervention:
    """Build an intervention module from its ``kind`` and :meth:`Intervention.config` arguments."""
    if kind not in MODULES:
        raise KeyError(f"unknown intervention kind {kind!r}; kinds: {', '.join(MODULES)}")
    if config.get("dims") is not None:
        config["dims"] = tuple(config["dims"])
    return MODULES[kind](**config)
