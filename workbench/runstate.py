"""Which checkpoint of a training folder a consumer takes.

A consumer of a trained IRM (``model_diff --irm``, ``realignments``, the notebooks) is pointed at a checkpoint
folder (``step-*`` with ``irm.json``) or at the training folder that holds its ``checkpoints/``
(e.g. ``runs/neuron1512/card/negative/seed-0``); :func:`irm_checkpoint` resolves either to one checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from workbench.irm.checkpoint import latest_checkpoint

__all__ = ["irm_checkpoint"]


def irm_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a training folder (or of its ``checkpoints/``)."""
    path = Path(path)
    if (path / "irm.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no IRM checkpoint at {path}: pass a step-* folder written by train_irm, or the training folder above it"
        )
    return latest
