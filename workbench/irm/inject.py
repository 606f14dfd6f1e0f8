"""Running a model with an IRM injected: a context manager over :meth:`IRM.hooks`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import attach
from workbench.irm.module import IRM, Injection

__all__ = ["inject"]


@contextmanager
def inject(
    model: TransformerBridge, irm: IRM | None, *, record: list | None = None, mask: Tensor | None = None
) -> Iterator[Injection | None]:
    """Run ``model`` with ``irm`` injected for the duration of a ``with`` block.

    ``irm=None`` runs the base model (handy for on/off comparisons). The hooks are removed when the
    block ends, also when it raises.

    Example:
        >>> with inject(model, irm, record=outs):
        ...     text = model.generate(prompt, max_new_tokens=20, verbose=False)
    """
    if irm is None:
        yield None
        return
    injection = irm.injection(model, record=record, mask=mask)
    with attach(model, injection.hooks):
        yield injection
