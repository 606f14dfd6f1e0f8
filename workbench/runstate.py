"""Finished means finished: the state of a training run, and which checkpoint of it a consumer takes.

A training folder (the ``out_dir`` of :func:`workbench.irm.train_irm`, e.g. ``runs/neuron1512/card/negative/seed-0``)
holds ``checkpoints/step-*``. Its state is recorded in ``run_state.json`` beside them, written last and atomically
(a temporary file renamed into place) by :func:`write_run_state` when training ends::

    {"state": "finished", "step": 30, "steps": 30}     # or "stopped_early" (a stopping rule ended it), "running"

Where a run has no such file (written before it existed, or killed), its state is read from its newest checkpoint:
finished if that checkpoint reached the run's planned ``steps`` (recorded in every checkpoint), else unfinished.

A consumer of a trained IRM (``model_diff --irm``, ``realignments``) calls :func:`irm_checkpoint`, which returns the
final checkpoint of a finished run and refuses an unfinished one, naming the step it reached and the two ways
forward: resume the training, or pass ``--allow-unfinished`` (the consumer's report then says so).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from workbench.irm.checkpoint import latest_checkpoint, read_meta

__all__ = [
    "RUN_STATE",
    "RunState",
    "UnfinishedRunError",
    "checkpoint_state",
    "irm_checkpoint",
    "read_run_state",
    "unfinished_note",
    "write_run_state",
]

RUN_STATE = "run_state.json"
"""The file in a training folder that records the run's state."""
State = Literal["running", "finished", "stopped_early"]


class UnfinishedRunError(ValueError):
    """A consumer was pointed at a training run that did not finish; the message says how far it got and the fix."""


@dataclass(frozen=True)
class RunState:
    """Where a training run stands."""

    state: State
    """``running`` (or killed), ``finished`` (all planned steps) or ``stopped_early`` (a stopping rule ended it)."""
    step: int
    """The step its newest checkpoint reached."""
    steps: int | None = None
    """The steps it was set to run."""

    @property
    def done(self) -> bool:
        """Whether the run ended by itself (finished, or stopped early by its rule)."""
        return self.state != "running"

    def describe(self) -> str:
        """E.g. ``"step 8 of 16"``."""
        return f"step {self.step}" + (f" of {self.steps}" if self.steps is not None else "")


def write_run_state(folder: str | Path, state: State, step: int, steps: int | None = None) -> Path:
    """Record a training run's state in ``folder/run_state.json``, atomically (call it last, when training ends)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{RUN_STATE}.", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(RunState(state, step, steps)), f)
        f.write("\n")
    os.replace(tmp, folder / RUN_STATE)
    return folder / RUN_STATE


def read_run_state(folder: str | Path) -> RunState | None:
    """The state ``folder/run_state.json`` records, else the state its newest checkpoint implies, else None."""
    folder = Path(folder)
    latest = latest_checkpoint(folder)
    meta = read_meta(latest) if latest is not None else {}
    step, steps = int(meta.get("step") or 0), (meta.get("train_config") or {}).get("steps")
    recorded = folder / RUN_STATE
    if recorded.is_file():
        state = RunState(**json.loads(recorded.read_text()))
        if state.step >= step:  # else a later run resumed from it: its checkpoints say more
            return state
    if latest is None:
        return None
    return RunState("finished" if steps is not None and step >= steps else "running", step, steps)


def _training_folder(checkpoint: Path) -> Path:
    """The training folder above a ``step-*`` checkpoint (``out_dir/checkpoints/step-*`` or ``out_dir/step-*``)."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def irm_checkpoint(path: str | Path, *, allow_unfinished: bool = False) -> Path:
    """The checkpoint to use: ``path`` itself if it is one, else the newest checkpoint of the training folder
    ``path`` (or of its ``checkpoints/``); refused when that training run did not finish.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        UnfinishedRunError: the run stopped before its planned steps (unless ``allow_unfinished``).
    """
    path = Path(path)
    checkpoint = path if (path / "irm.json").is_file() else latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(
            f"no IRM checkpoint at {path}: pass a step-* folder written by train_irm, or the training folder above it"
        )
    state = read_run_state(_training_folder(checkpoint))
    if state is not None and not state.done and not allow_unfinished:
        raise UnfinishedRunError(
            f"{path} is an unfinished training run: it reached {state.describe()} (killed or still running). "
            "Resume it (run the same training command again: it continues from that step), or pass "
            "--allow-unfinished to use its newest checkpoint anyway (the report then says so)"
        )
    return checkpoint


def unfinished_note(checkpoint: str | Path) -> dict[str, str]:
    """``{"unfinished": "..."}`` for a report when ``checkpoint``'s training run did not finish, else ``{}``."""
    state = checkpoint_state(checkpoint)
    if state is None or state.done:
        return {}
    return {"unfinished": f"the IRM comes from an unfinished training run ({state.describe()}; --allow-unfinished)"}


def checkpoint_state(checkpoint: str | Path) -> RunState | None:
    """The state of the training run a checkpoint belongs to (None when it is a lone checkpoint)."""
    return read_run_state(_training_folder(Path(checkpoint)))
