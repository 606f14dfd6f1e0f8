"""Dominant residual dimensions of the IRM output, and tests of their role.

*The Mysterious Case of Neuron 1512* (Smith et al., 2024) found that the IRM's output concentrates on
one residual dimension (1512 in Llama-2-7b), the same for every alignment. Here: the top dimensions
per alignment, their overlap across alignments, the base model's own activation magnitude at those
dimensions (are they its massive-activation dimensions? Sun et al., 2024, *Massive Activations in
Large Language Models*), and a causal test: mask the IRM output at the top-k dimensions, or at k
random ones (several draws), and measure how much of the realignment (held-out loss gain) is lost.
:func:`dimension_profile` describes one dimension in the base model: its magnitude by layer (against
the median dimension), the tokens that drive it, and the MLP neurons that write it most.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.data.padding import pad_id, right_pad
from workbench.hooks import capture, hook_names
from workbench.irm.loss import eval_loss, model_device
from workbench.irm.module import IRM
from workbench.irm.text import Encoded
from workbench.neurons.activations import dimension_neurons

__all__ = [
    "DimensionProfile",
    "MaskingResult",
    "base_magnitudes",
    "dimension_profile",
    "masking_test",
    "massive_dims",
    "overlap_table",
    "top_dims",
]


def top_dims(share: Float[Tensor, " d_model"], k: int) -> list[tuple[int, float]]:
    """The ``k`` dimensions with the largest share, as ``(dim, share)``, largest first."""
    values, idx = share.topk(min(k, share.numel()))
    return [(int(i), float(v)) for i, v in zip(idx, values)]


def overlap_table(tops: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Pairwise overlap of top-dimension lists: shared count, Jaccard index, and whether the top-1 agree."""
    rows = []
    for a, b in combinations(tops, 2):
        sa, sb = set(tops[a]), set(tops[b])
        rows.append(
            {
                "a": a,
                "b": b,
                "k": len(tops[a]),
                "shared": len(sa & sb),
                "jaccard": len(sa & sb) / max(len(sa | sb), 1),
                "same_top1": tops[a][0] == tops[b][0],
            }
        )
    return pd.DataFrame(rows, columns=["a", "b", "k", "shared", "jaccard", "same_top1"])


@torch.no_grad()
def base_magnitudes(
    model: TransformerBridge, data: Sequence[Encoded], *, batch_size: int = 16
) -> Float[Tensor, "layer d_model"]:
    """Mean ``|resid_post|`` of the base model per (layer, dimension) over the non-pad tokens of ``data``."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    count = 0
    for _, stack in _resid_post_batches(model, data, batch_size):
        total += stack.abs().sum(1)
        count += stack.shape[1]
    return total / max(count, 1)


def _resid_post_batches(
    model: TransformerBridge, data: Sequence[Encoded], batch_size: int
) -> Iterator[tuple[Tensor, Float[Tensor, "layer token d_model"]]]:
    """Per batch of ``data``: its non-pad token ids and the base model's ``resid_post`` at those tokens
    (float32, on the CPU)."""
    names = hook_names(model, "resid_post")
    pad = pad_id(model.tokenizer)
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        tokens, real = right_pad([e.ids for e in batch], pad, device=model_device(model))
        with capture(model, names) as acts:
            model(tokens)
        yield tokens[real].cpu(), torch.stack([acts[n][real].float().cpu() for n in names])


def massive_dims(magnitudes: Float[Tensor, "layer d_model"], k: int = 10) -> pd.DataFrame:
    """Dimensions ranked by their peak (over layers) mean magnitude, with the ratio to the median dimension."""
    peak = magnitudes.max(0).values
    median = peak.median().clamp_min(1e-30)
    order = peak.argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return pd.DataFrame(
        {
            "dim": order[:k].tolist(),
            "peak_mean_abs": peak[order[:k]].tolist(),
            "ratio_to_median": (peak[order[:k]] / median).tolist(),
            "peak_layer": magnitudes[:, order[:k]].argmax(0).tolist(),
        }
    ).assign(rank=range(k))


@dataclass(frozen=True)
class MaskingResult:
    """Held-out losses with the IRM output masked at the top-k or at k random dimensions."""

    base_loss: float
    irm_loss: float
    rows: tuple[dict, ...]

    def to_frame(self) -> pd.DataFrame:
        """Long format: k, kind (top / random), draw, loss, removed (fraction of the realignment lost)."""
        return pd.DataFrame(list(self.rows), columns=["k", "kind", "draw", "dims", "loss", "removed"])

    def summary(self) -> dict[str, dict[str, float]]:
        """Per k: removed fraction for the top-k, and mean / std / max over the random draws."""
        df = self.to_frame()
        out = {}
        for k, g in df.groupby("k"):
            rand = g[g.kind == "random"].removed
            out[str(k)] = {
                "top_removed": float(g[g.kind == "top"].removed.iloc[0]),
                "random_removed_mean": float(rand.mean()) if len(rand) else float("nan"),
                "random_removed_std": float(rand.std(ddof=0)) if len(rand) else float("nan"),
                "random_removed_max": float(rand.max()) if len(rand) else float("nan"),
            }
        return out


def masking_test(
    model: TransformerBridge,
    irm: IRM,
    data: Sequence[Encoded],
    ranked_dims: Sequence[int],
    *,
    ks: Sequence[int] = (1, 10),
    n_random: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    base_loss: float | None = None,
    irm_loss: float | None = None,
) -> MaskingResult:
    """Mask the IRM output at the top-k dims (from ``ranked_dims``) and at ``n_random`` draws of k random dims.

    ``removed = (masked_loss - irm_loss) / (base_loss - irm_loss)``: 0 when masking changes nothing,
    1 when it undoes the whole realignment (the held-out loss returns to the base model's).
    """
    base = base_loss if base_loss is not None else eval_loss(model, None, data, batch_size=batch_size)
    full = irm_loss if irm_loss is not None else eval_loss(model, irm, data, batch_size=batch_size)
    gain = base - full
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        draws = [("top", 0, list(ranked_dims[:k]))]
        draws += [("random", i, torch.randperm(irm.d_model, generator=gen)[:k].tolist()) for i in range(n_random)]
        for kind, draw, dims in draws:
            loss = eval_loss(model, irm, data, batch_size=batch_size, mask=irm.mask_for(dims=dims))
            removed = (loss - full) / gain if gain != 0 else float("nan")
            rows.append(
                {"k": k, "kind": kind, "draw": draw, "dims": " ".join(map(str, dims)), "loss": loss, "removed": removed}
            )
    return MaskingResult(base, full, tuple(rows))


@dataclass(frozen=True)
class DimensionProfile:
    """One residual dimension in the base model: magnitude by layer, driving tokens, writing neurons."""

    dim: int
    """The residual dimension."""
    by_layer: pd.DataFrame
    """``layer, mean, mean_abs, ratio_to_median``: base ``resid_post`` at ``dim`` per layer; the ratio is
    ``mean_abs`` over the median dimension's ``mean_abs`` in that layer."""
    peak_layer: int
    """Layer of the largest ``ratio_to_median``."""
    tokens: pd.DataFrame
    """``token, count, mean_value``: the tokens of largest mean ``|value|`` at ``dim`` in the peak layer."""
    writers: pd.DataFrame
    """The MLP neurons whose ``w_out`` writes ``dim`` most (:func:`workbench.neurons.activations.dimension_neurons`)."""

    def summary(self) -> dict:
        """The numbers ``summary.json`` keeps."""
        return {
            "dim": self.dim,
            "peak_layer": self.peak_layer,
            "ratio_to_median_by_layer": {
                int(layer): round(float(ratio), 3)
                for layer, ratio in zip(self.by_layer.layer, self.by_layer.ratio_to_median)
            },
            "top_tokens": self.tokens.to_dict("records"),
            "top_writers": self.writers[["layer", "neuron", "weight", "share"]].to_dict("records"),
        }


@torch.no_grad()
def dimension_profile(
    model: TransformerBridge,
    data: Sequence[Encoded],
    dim: int,
    *,
    k: int = 10,
    min_count: int = 2,
    batch_size: int = 16,
) -> DimensionProfile:
    """Profile residual dimension ``dim`` on ``data`` (all non-pad tokens, base model, no IRM).

    Args:
        model: the bridge.
        data: encoded texts.
        dim: the residual dimension.
        k: tokens and writing neurons listed.
        min_count: occurrences a token needs to be listed.
        batch_size: texts per forward.
    """
    if not 0 <= dim < model.cfg.d_model:
        raise IndexError(f"residual dimension {dim} out of range: d_model = {model.cfg.d_model}")
    values, ids, medians = [], [], []
    for batch_ids, stack in _resid_post_batches(model, data, batch_size):
        values.append(stack[..., dim])
        medians.append(stack.abs().sum(1))
        ids.append(batch_ids)
    value = torch.cat(values, 1)  # layer token
    n_tok = value.shape[1]
    median = (torch.stack(medians).sum(0) / max(n_tok, 1)).median(-1).values.clamp_min(1e-30)
    mean_abs = value.abs().mean(1)
    by_layer = pd.DataFrame(
        {
            "layer": range(value.shape[0]),
            "mean": value.mean(1).numpy(),
            "mean_abs": mean_abs.numpy(),
            "ratio_to_median": (mean_abs / median).numpy(),
        }
    )
    peak = int(by_layer.ratio_to_median.argmax())  # the row is the layer
    frame = pd.DataFrame({"token_id": torch.cat(ids).numpy(), "value": value[peak].numpy()})
    frame["abs"] = frame.value.abs()
    grouped = frame.groupby("token_id").agg(
        count=("value", "size"), mean_value=("value", "mean"), mean_abs=("abs", "mean")
    )
    grouped = grouped[grouped["count"] >= min_count].sort_values("mean_abs", ascending=False).head(k).reset_index()
    tokens_df = pd.DataFrame(
        {
            "token": [model.tokenizer.decode([int(t)]) for t in grouped.token_id],
            "count": grouped["count"].astype(int).tolist(),
            "mean_value": grouped.mean_value.round(4).tolist(),
        }
    )
    writers = dimension_neurons(model, dim, k=k)
    return DimensionProfile(dim, by_layer, peak, tokens_df, writers[writers.vector == "w_out"].reset_index(drop=True))
