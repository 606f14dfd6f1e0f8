"""Is a dominant IRM dimension a property of the model or of the IRM's initialisation?

*The Mysterious Case of Neuron 1512* (Smith et al., 2024) reports that the IRM output of every
alignment concentrates on one residual dimension. With one IRM per (alignment, seed), the share
vectors (share of the output mass per residual dimension) can be compared three ways:

* **same alignment, different seeds**: high agreement = the alignment's dimensions do not depend on the init;
* **same seed, different alignments**: high agreement that is *not* matched by the next kind points at the init;
* **different alignments and seeds**: agreement here is a property of the model (shared by every realignment).

Agreement is Spearman's rank correlation of the share vectors and the Jaccard index of their top-k
dimensions. A dimension is *dominant* for a set of runs only if its share stands out (z-score
against all dimensions' shares of that run above a threshold) in every run.

Controls (:func:`controls`) say what these numbers would be without training: the same statistics of
*untrained* IRMs (each seed's IRM at init; its last layer keeps its random draw, since the zeroed
one writes nothing), of the trained shares with each run's dimensions shuffled (the chance level),
and the rank correlation of each run's shares with a profile of the base model (e.g. its residual
magnitude per dimension): agreement that untrained IRMs or the base's own profile already show is
structural, not learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "PAIR_KINDS",
    "Stability",
    "controls",
    "dominant_dims",
    "kinds_frame",
    "permuted",
    "share_stats",
    "side_by_side",
    "spearman",
    "stability",
    "top_jaccard",
]

PAIR_KINDS = ("same_alignment", "same_seed", "different")
"""Kinds of pairs of runs: seeds of one alignment, alignments of one seed, neither shared."""

Run = tuple[str, int]
"""A run: ``(alignment, seed)``."""


def _spearman_matrix(vectors: Sequence[Tensor]) -> Tensor:
    """Spearman correlation between every pair of vectors (pandas' rank correlation, average ranks for ties)."""
    frame = pd.DataFrame({i: v.double().cpu().numpy() for i, v in enumerate(vectors)})
    return torch.tensor(frame.corr(method="spearman").to_numpy())


def spearman(a: Float[Tensor, " d_model"], b: Float[Tensor, " d_model"]) -> float:
    """Spearman rank correlation of two share vectors."""
    return float(_spearman_matrix([a, b])[0, 1])


def top_jaccard(a: Float[Tensor, " d_model"], b: Float[Tensor, " d_model"], k: int = 10) -> float:
    """Jaccard index of the top-``k`` dimensions of two share vectors."""
    sa, sb = set(a.topk(k).indices.tolist()), set(b.topk(k).indices.tolist())
    return len(sa & sb) / len(sa | sb)


def _kind(x: Run, y: Run) -> str:
    if x[0] == y[0]:
        return "same_alignment"
    return "same_seed" if x[1] == y[1] else "different"


@dataclass(frozen=True)
class Stability:
    """Pairwise agreement of the share vectors of several runs."""

    runs: tuple[Run, ...]
    """The runs, ``(alignment, seed)``, in the order of the matrices."""
    spearman: Float[Tensor, "run run"]
    """Spearman rank correlation of the share vectors."""
    jaccard: Float[Tensor, "run run"]
    """Jaccard index of the top-k dimensions."""
    k: int
    """The k of the top-k Jaccard index."""

    @property
    def labels(self) -> list[str]:
        """``alignment/seed`` per run."""
        return [f"{a}/s{s}" for a, s in self.runs]

    def _pair(self, i: int, j: int) -> tuple[float, float]:
        return float(self.spearman[i, j]), float(self.jaccard[i, j])

    def pairs(self) -> pd.DataFrame:
        """One row per unordered pair of runs: ``a, b, kind, spearman, jaccard``."""
        rows = [
            (self.labels[i], self.labels[j], _kind(self.runs[i], self.runs[j]), *self._pair(i, j))
            for i, j in combinations(range(len(self.runs)), 2)
        ]
        return pd.DataFrame(rows, columns=["a", "b", "kind", "spearman", "jaccard"])

    def summary(self) -> dict[str, dict]:
        """Per pair kind: number of pairs, Spearman mean / std / min and all values, top-k Jaccard mean.

        Kinds without pairs (e.g. ``same_seed`` with one alignment) have ``n_pairs = 0`` and ``None`` statistics.
        """
        df = self.pairs()
        out = {}
        for kind in PAIR_KINDS:
            g = df[df.kind == kind]
            stats = (
                {
                    "spearman_mean": float(g.spearman.mean()),
                    "spearman_std": float(g.spearman.std(ddof=0)),
                    "spearman_min": float(g.spearman.min()),
                    "jaccard_mean": float(g.jaccard.mean()),
                }
                if len(g)
                else dict.fromkeys(("spearman_mean", "spearman_std", "spearman_min", "jaccard_mean"))
            )
            out[kind] = {"n_pairs": len(g), **stats, "spearman": g.spearman.round(4).tolist(), "k": self.k}
        return out


def stability(shares: Mapping[Run, Float[Tensor, " d_model"]], k: int = 10) -> Stability:
    """Spearman correlation and top-``k`` Jaccard index between the share vectors of every pair of runs.

    Args:
        shares: share of the IRM output mass per residual dimension, keyed by ``(alignment, seed)``.
        k: size of the top-dimension sets.

    Example:
        >>> s = stability({("negative", 0): share_a, ("negative", 1): share_b, ("positive", 0): share_c})
        >>> -1 <= s.summary()["same_alignment"]["spearman_mean"] <= 1
        True
    """
    if len(shares) < 2:
        raise ValueError("stability needs at least two runs (e.g. two seeds of one alignment)")
    runs = tuple(shares)
    d = {len(v) for v in shares.values()}
    if len(d) != 1:
        raise ValueError(f"share vectors differ in length ({sorted(d)}): compare runs of one model")
    rho = _spearman_matrix([shares[r] for r in runs])
    n = len(runs)
    jac = torch.ones(n, n, dtype=torch.float64)
    for i, j in combinations(range(n), 2):
        jac[i, j] = jac[j, i] = top_jaccard(shares[runs[i]], shares[runs[j]], k)
    return Stability(runs, rho, jac, k)


def permuted(shares: Mapping[Run, Float[Tensor, " d_model"]], seed: int = 0) -> dict[Run, Tensor]:
    """Each run's share vector with its dimensions shuffled (one seeded permutation per run): chance agreement."""
    gen = torch.Generator().manual_seed(seed)
    return {run: share[torch.randperm(len(share), generator=gen)] for run, share in shares.items()}


def controls(
    trained: Mapping[Run, Float[Tensor, " d_model"]],
    untrained: Mapping[Run, Float[Tensor, " d_model"]],
    reference: Float[Tensor, " d_model"],
    k: int = 10,
    seed: int = 0,
) -> dict[str, dict]:
    """What the pair statistics of ``trained`` shares would be without training.

    Args:
        trained: the trained IRMs' share vectors, keyed by ``(alignment, seed)``.
        untrained: the same runs' IRMs at init (their last layer's random draw kept), recorded the same way.
        reference: a per-dimension profile of the base model, e.g. its peak mean ``|resid|`` per dimension.
        k: size of the top-dimension sets.
        seed: seed of the dimension shuffles.

    Returns:
        ``untrained`` and ``shuffled`` (the trained shares with each run's dimensions shuffled): the
        per-kind summary of :meth:`Stability.summary`; ``base_profile``: per set (``trained``,
        ``untrained``), the Spearman correlation of each run's shares with ``reference`` (mean, min, max).
    """
    if set(trained) != set(untrained):
        raise ValueError(f"trained and untrained runs differ: {sorted(set(trained) ^ set(untrained))}")
    profile = {}
    for name, shares in (("trained", trained), ("untrained", untrained)):
        rho = torch.tensor([spearman(s, reference) for s in shares.values()])
        profile[name] = {"mean": float(rho.mean()), "min": float(rho.min()), "max": float(rho.max())}
    return {
        "untrained": stability(untrained, k).summary(),
        "shuffled": stability(permuted(trained, seed), k).summary(),
        "base_profile": profile,
    }


def kinds_frame(summaries: Mapping[str, Mapping[str, dict]]) -> pd.DataFrame:
    """One row per set of runs (``summaries``' keys, e.g. trained / untrained) and pair kind: the statistics of
    :meth:`Stability.summary` without the per-pair values (columns ``irm, kind, n_pairs, spearman_mean, ...``)."""
    rows = [
        {"irm": name, "kind": kind, **{k: v for k, v in summary[kind].items() if k not in ("spearman", "k")}}
        for name, summary in summaries.items()
        for kind in PAIR_KINDS
    ]
    return pd.DataFrame(rows)


def side_by_side(summary: Mapping[str, dict], control: Mapping[str, dict]) -> dict[str, dict]:
    """Mean Spearman per pair kind of the trained shares (``summary``, from :meth:`Stability.summary`) and of their
    controls (``control``, from :func:`controls`) side by side, and each set's mean Spearman with the base's profile.
    """
    sets = {"trained": summary, "untrained": control["untrained"], "shuffled": control["shuffled"]}
    out = {kind: {name: block[kind]["spearman_mean"] for name, block in sets.items()} for kind in PAIR_KINDS}
    return out | {"base_profile": {k: v["mean"] for k, v in control["base_profile"].items()}}


def share_stats(
    shares: Sequence[Float[Tensor, " d_model"]],
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """Mean and standard deviation (over runs, ``ddof=0``) of each dimension's share."""
    stack = torch.stack([s.double() for s in shares])
    return stack.mean(0), stack.std(0, correction=0)


def dominant_dims(shares: Sequence[Float[Tensor, " d_model"]], z: float = 3.0) -> pd.DataFrame:
    """Dimensions whose share stands out in every run: z-score (against all dimensions of that run) above ``z``.

    Returns:
        Frame ``dim, share_mean, share_std, z_min, z_mean`` sorted by mean share; empty when no
        dimension stands out in every run (then nothing is dominant, whatever a single run shows).
    """
    if not shares:
        raise ValueError("dominant_dims needs the share vectors of at least one run")
    stack = torch.stack([s.double() for s in shares])  # run dim
    scores = (stack - stack.mean(1, keepdim=True)) / stack.std(1, keepdim=True).clamp_min(1e-30)
    keep = (scores > z).all(0)
    mean, std = share_stats(shares)
    idx = keep.nonzero().flatten()
    df = pd.DataFrame(
        {
            "dim": idx.numpy().astype(np.int64),
            "share_mean": mean[idx].numpy(),
            "share_std": std[idx].numpy(),
            "z_min": scores[:, idx].min(0).values.numpy(),
            "z_mean": scores[:, idx].mean(0).numpy(),
        }
    )
    return df.sort_values("share_mean", ascending=False).reset_index(drop=True)
