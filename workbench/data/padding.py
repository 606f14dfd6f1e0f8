"""Right-padded token batches: the one padding helper of the workbench.

Rows of unequal length are padded on the right. Under causal attention the pads only follow a row's
real tokens, so no attention mask is needed: every real position computes what it computes alone. The
mask that comes back marks the positions a caller reads (the real tokens, or the scored ones it names).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["pad_id", "right_pad"]


def pad_id(tokenizer) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token.

    (Right padding never lets the pad reach a real position, so the choice changes no result.)
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an end-of-sequence token: set pad_token")
    return int(pad)


def right_pad(
    rows: Sequence[Sequence[int] | Tensor],
    pad: int,
    *,
    marks: Sequence[Sequence[bool]] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-pad token rows into one ``[batch, pos]`` tensor; and a mask of each row's real positions.

    Args:
        rows: token ids, one sequence per row.
        pad: the id that fills the rest of each row (e.g. :func:`pad_id`).
        marks: per row, which of its positions the mask marks (e.g. the scored reply tokens), instead
            of all of its real ones; each at most as long as its row.
        device: where both tensors go.

    >>> tokens, mask = right_pad([[5, 6, 7], [8]], 0)
    >>> tokens.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[True, True, True], [True, False, False]])
    """
    if not rows:
        raise ValueError("no rows to pad: give at least one sequence")
    if marks is not None and len(marks) != len(rows):
        raise ValueError(f"{len(marks)} rows of marks for {len(rows)} token rows: give one per row")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        if marks is None:
            mask[b, : len(row)] = True
        else:
            mask[b, : len(marks[b])] = torch.as_tensor(marks[b], dtype=torch.bool)
    return tokens.to(device), mask.to(device)
