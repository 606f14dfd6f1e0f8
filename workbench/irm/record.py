"""Recording what the IRM writes: its output per token, layer and residual dimension.

The IRM output of a forward is ``(batch, pos, layer, d_model)`` (see :meth:`IRM.hooks`, ``record=``).
Teacher-forced passes over a corpus are summarised as the mean absolute output per (layer,
dimension) over the scored tokens, the quantity behind the heatmaps and the dominant dimension of
*The Mysterious Case of Neuron 1512* (Smith et al., 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.padding import pad_id as default_pad_id
from workbench.data.padding import right_pad
from workbench.hooks import attach
from workbench.irm.loss import model_device
from workbench.irm.module import IRM
from workbench.irm.text import Encoded

__all__ = ["OutputStats", "collect_output_stats", "stats_from_tokens"]


@dataclass(frozen=True)
class OutputStats:
    """Mean absolute IRM output per (layer, residual dimension) over ``n_tokens`` tokens."""

    mean_abs: Float[Tensor, "layer d_model"]
    layers: tuple[int, ...]
    n_tokens: int

    @property
    def dim_share(self) -> Float[Tensor, " d_model"]:
        """Share of the output's absolute mass (over layers and tokens) in each residual dimension; sums to 1."""
        per_dim = self.mean_abs.sum(0)
        return per_dim / per_dim.sum().clamp_min(1e-30)

    def top_share(self, ks: Sequence[int]) -> dict[int, float]:
        """Share of the output mass in the top-k dimensions, for each k (the sparsity view)."""
        sorted_share = self.dim_share.sort(descending=True).values.cumsum(0)
        return {k: float(sorted_share[min(k, len(sorted_share)) - 1]) for k in ks}

    def to_frame(self) -> pd.DataFrame:
        """Long format: layer, dim, mean_abs."""
        n_layer, d_model = self.mean_abs.shape
        return pd.DataFrame(
            {
                "layer": [self.layers[i] for i in range(n_layer) for _ in range(d_model)],
                "dim": list(range(d_model)) * n_layer,
                "mean_abs": self.mean_abs.flatten().tolist(),
            }
        )


def stats_from_tokens(outputs: Float[Tensor, "token layer d_model"], layers: Sequence[int]) -> OutputStats:
    """Summarise per-token IRM outputs (e.g. of generated tokens)."""
    return OutputStats(outputs.float().abs().mean(0).cpu(), tuple(layers), outputs.shape[0])


@torch.no_grad()
def collect_output_stats(
    model: TransformerBridge, irm: IRM, data: Sequence[Encoded], *, batch_size: int = 16, pad_id: int | None = None
) -> OutputStats:
    """Run ``model`` with ``irm`` over ``data`` (teacher forcing); average ``|IRM output|`` over the scored tokens."""
    pad = pad_id if pad_id is not None else default_pad_id(model.tokenizer)
    total = torch.zeros(len(irm.layers), irm.d_model)
    count = 0
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        tokens, scored = right_pad(
            [e.ids for e in batch], pad, marks=[e.scored for e in batch], device=model_device(model)
        )
        record: list[Tensor] = []
        with attach(model, irm.hooks(model, record=record)):
            model(tokens)
        out = record[0][scored]
        total += out.float().abs().sum(0).cpu()
        count += out.shape[0]
    return OutputStats(total / max(count, 1), irm.layers, count)
