"""Training-length control: does a finding about an IRM hold at several points of its training run?

A claim about a trained IRM (which residual dimensions dominate its output, how much seeds agree,
what masking its top dimensions removes) is a claim about one point of a run. :class:`SnapshotRecorder`
records, at log-spaced steps of a run (:func:`snapshot_steps`: 30, 100, 300, 1000, ...), the IRM's
output share per residual dimension on fixed probe texts and its masking test; :func:`at_lengths`
then states, for every step of that grid and for the final (converged) IRM, the statistics the main
job reports at the end: dominant dimensions per alignment with their z-scores, top-1 / top-10 share,
the masking test, and the Spearman agreement between seeds and between alignments
(:mod:`workbench.irm.stability`). A unit that stopped before a grid step enters it with its final
state (it was not trained further). Snapshots are files in the run's folder, so a resumed run keeps
the ones it recorded before the interruption.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.irm.dimensions import MaskingResult, masking_test
from workbench.irm.loss import eval_loss
from workbench.irm.module import IRM
from workbench.irm.record import collect_output_stats
from workbench.irm.stability import PAIR_KINDS, dominant_dims, share_stats, stability
from workbench.irm.text import Encoded

__all__ = ["Snapshot", "SnapshotRecorder", "at_lengths", "load_snapshots", "snapshot_steps", "take_snapshot"]


def snapshot_steps(max_steps: int, first: int = 30) -> tuple[int, ...]:
    """Log-spaced steps up to ``max_steps``, two per decade: ``first`` and ``first``·10/3 times powers of 10.

    Example:
        >>> snapshot_steps(1200)
        (30, 100, 300, 1000)
    """
    if first < 1:
        raise ValueError(f"first={first} must be >= 1")
    steps: list[int] = []
    while (step := round(first * 10 ** (len(steps) // 2) * (10 / 3 if len(steps) % 2 else 1))) <= max_steps:
        steps.append(step)
    return tuple(steps)


@dataclass(frozen=True)
class Snapshot:
    """The IRM at one step of its run: its output share per residual dimension, held-out loss, masking test."""

    step: int
    share: Tensor
    """Share of the IRM output mass per residual dimension on the probe texts (sums to 1)."""
    top_share: dict[int, float]
    """Share of the output in the top-1 and top-10 dimensions."""
    masking: MaskingResult
    """Top-k vs random-k masking on the probe texts."""

    def state(self) -> dict:
        """A ``torch.save``-able dict (read back by :meth:`from_state`)."""
        m = self.masking
        return {
            "step": self.step,
            "share": self.share,
            "top_share": self.top_share,
            "masking": (m.base_loss, m.irm_loss, m.rows),
        }

    @classmethod
    def from_state(cls, state: Mapping) -> Snapshot:
        """The snapshot :meth:`state` saved."""
        base, full, rows = state["masking"]
        return cls(int(state["step"]), state["share"], dict(state["top_share"]), MaskingResult(base, full, tuple(rows)))


def take_snapshot(
    model: TransformerBridge,
    irm: IRM,
    probe: Sequence[Encoded],
    step: int,
    *,
    ks: Sequence[int],
    n_random: int,
    seed: int,
    base_loss: float,
) -> Snapshot:
    """Measure ``irm`` now: its output share per dimension on ``probe`` and the masking test there."""
    stats = collect_output_stats(model, irm, probe)
    ranked = stats.dim_share.argsort(descending=True).tolist()
    masking = masking_test(
        model,
        irm,
        probe,
        ranked,
        ks=ks,
        n_random=n_random,
        seed=seed,
        base_loss=base_loss,
        irm_loss=eval_loss(model, irm, probe),
    )
    return Snapshot(step, stats.dim_share, stats.top_share([1, 10]), masking)


class SnapshotRecorder:
    """A :func:`workbench.irm.train_irm` callback that snapshots the IRM at ``steps`` into ``folder``.

    Args:
        model: the bridge the IRM is trained in.
        irm: the IRM being trained.
        probe: the texts every snapshot is measured on (the same at every step).
        steps: the steps to snapshot at (e.g. :func:`snapshot_steps`).
        folder: where ``step-NNNNNN.pt`` files go (atomic writes); those already there are kept (a resumed run).
        ks, n_random, seed: the masking test's.
        base_loss: the base model's loss on ``probe`` if known (else computed at the first snapshot).
    """

    def __init__(
        self,
        model: TransformerBridge,
        irm: IRM,
        probe: Sequence[Encoded],
        steps: Sequence[int],
        folder: str | Path,
        *,
        ks: Sequence[int] = (1, 10),
        n_random: int = 3,
        seed: int = 0,
        base_loss: float | None = None,
    ):
        self.model, self.irm, self.probe, self.steps = model, irm, list(probe), set(steps)
        self.folder = Path(folder)
        self.ks, self.n_random, self.seed = tuple(ks), n_random, seed
        self._base = base_loss

    def base_loss(self) -> float:
        """The base model's loss on the probe texts (computed once)."""
        if self._base is None:
            self._base = eval_loss(self.model, None, self.probe)
        return self._base

    def __call__(self, row: Mapping) -> None:
        step = int(row["step"])
        if step in self.steps:
            self.save(self.snapshot(step))

    def snapshot(self, step: int) -> Snapshot:
        """Measure the IRM as it is now, as the snapshot of ``step``."""
        return take_snapshot(
            self.model,
            self.irm,
            self.probe,
            step,
            ks=self.ks,
            n_random=self.n_random,
            seed=self.seed,
            base_loss=self.base_loss(),
        )

    def save(self, snap: Snapshot) -> None:
        """Write ``snap`` atomically (a killed write leaves no half file under the final name)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step-{snap.step:06d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(snap.state(), tmp)
        os.replace(tmp, path)

    def load(self) -> list[Snapshot]:
        """Every snapshot in the folder, by step."""
        return load_snapshots(self.folder)


def load_snapshots(folder: str | Path) -> list[Snapshot]:
    """The snapshots a :class:`SnapshotRecorder` wrote into ``folder``, by step."""
    files = sorted(Path(folder).glob("step-*.pt"))
    return [Snapshot.from_state(torch.load(f, weights_only=False)) for f in files]


def _at(snaps: Sequence[Snapshot], step: int | None) -> Snapshot | None:
    """A unit's IRM at ``step``: its final one if it stopped by then, else its snapshot there (``None``: final)."""
    final = snaps[-1] if snaps else None
    if final is None or step is None or final.step <= step:
        return final
    return next((s for s in snaps if s.step == step), None)


def at_lengths(
    runs: Mapping[tuple[str, int], Sequence[Snapshot]],
    grid: Sequence[int],
    *,
    z: float = 3.0,
    k: int = 10,
) -> dict:
    """The findings at every step of ``grid`` and at the final step, from each run's snapshots.

    Args:
        runs: per ``(alignment, seed)``, its snapshots by step, the last one the final (trained) IRM.
        grid: the steps to report (a run that stopped before a step enters it with its final state; steps after
            every run stopped are left out: they would repeat the final point).
        z: the dominance threshold of :func:`workbench.irm.stability.dominant_dims`.
        k: the top-k of the Jaccard index.

    Returns:
        ``{"grid": grid, "points": [...]}``: per point (``step`` or ``"final"``), per alignment,
        the dominant dimensions with their z-scores, top-1 / top-10 share and masking (means over seeds), and the
        mean Spearman of the shares per pair kind (seeds of one alignment, alignments of one seed, neither).
    """
    points = []
    last = max((snaps[-1].step for snaps in runs.values() if snaps), default=0)
    for step in [*(s for s in grid if s < last), None]:  # a step after every run stopped would repeat "final"
        at = {run: s for run, snaps in runs.items() if (s := _at(snaps, step)) is not None}
        if not at:
            continue
        alignments = {}
        for alignment in dict.fromkeys(a for a, _ in at):
            snaps = [s for (a, _), s in at.items() if a == alignment]
            dom = dominant_dims([s.share for s in snaps], z)
            mean, _ = share_stats([s.share for s in snaps])
            masking = pd.concat([s.masking.to_frame() for s in snaps])
            alignments[alignment] = {
                "n_seeds": len(snaps),
                "steps": [s.step for s in snaps],
                "dominant_dims": [{"dim": int(d), "z_min": float(z)} for d, z in zip(dom.dim, dom.z_min)],
                "top_dims": mean.argsort(descending=True)[:k].tolist(),
                "top1_share": float(pd.Series([s.top_share[1] for s in snaps]).mean()),
                "top10_share": float(pd.Series([s.top_share[10] for s in snaps]).mean()),
                "masking": {
                    str(kk): {
                        "top_removed": float(g[g.kind == "top"].removed.mean()),
                        "random_removed": float(g[g.kind == "random"].removed.mean()),
                    }
                    for kk, g in masking.groupby("k")
                },
                "heldout_loss_irm": float(pd.Series([s.masking.irm_loss for s in snaps]).mean()),
            }
        spearman = {}
        if len(at) >= 2:
            summary = stability({run: s.share for run, s in at.items()}, k).summary()
            spearman = {kind: summary[kind]["spearman_mean"] for kind in PAIR_KINDS}
        points.append({"step": "final" if step is None else step, "alignments": alignments, "spearman": spearman})
    return {"grid": list(grid), "points": points}
