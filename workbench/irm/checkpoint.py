"""IRM checkpoints: the IRM only (never the LM), written atomically, refused by a model of another shape.

A checkpoint is a folder::

    irm.safetensors   IRM weights
    irm.json          IRM config, step, and the model it was trained for (name, d_model, n_layers, d_vocab)
    train_state.pt    optional: optimizer state, RNG states, training history (to resume training)

The folder is built under a temporary name next to the target and moved into place with ``os.replace``,
so a reader never sees a half-written checkpoint; a write killed midway leaves only its temporary
folder, which :func:`clean_stale` removes at the next start. A damaged file (truncated, garbage, or
weights of another shape than ``irm.json`` describes) raises :class:`CheckpointError` naming the file
and the fix, never a bare safetensors, json or torch traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import cache_key
from workbench.irm.config import IRMConfig, TrainConfig
from workbench.irm.module import IRM

__all__ = [
    "CheckpointError",
    "TrainingCheckpoints",
    "clean_stale",
    "latest_checkpoint",
    "load_irm",
    "load_irm_weights",
    "load_train_state",
    "model_identity",
    "read_meta",
    "save_irm",
]

_META_KEYS = ("irm_config", "step", "model_name", "d_model", "n_layers", "d_vocab")


class CheckpointError(ValueError):
    """A checkpoint file is damaged or does not match its metadata; the message names the file and the fix."""


def _damaged(path: Path, file: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{Path(path) / file} is damaged ({reason}). Delete the checkpoint folder {path}: training then resumes "
        "from the previous checkpoint (or pass --no-resume to start over); to load it elsewhere, copy it again"
    )


def model_identity(model: TransformerBridge) -> dict[str, Any]:
    """What a checkpoint records about the model an IRM belongs to."""
    cfg = model.cfg
    return {"model_name": str(cfg.model_name), "d_model": cfg.d_model, "n_layers": cfg.n_layers, "d_vocab": cfg.d_vocab}


def save_irm(
    path: str | Path,
    irm: IRM,
    *,
    model: TransformerBridge | None = None,
    step: int | None = None,
    train_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``irm`` (and optionally its training state) as a checkpoint folder at ``path``, atomically.

    Args:
        path: the checkpoint folder (replaced if it exists).
        irm: the IRM.
        model: the model it belongs to; its name and shape are recorded (else only the IRM's shape).
        step: training step reached.
        train_state: anything ``torch.save`` can write (optimizer state, RNG states, history).
        extra: more JSON-able metadata.
    """
    path = Path(path)
    identity = (
        model_identity(model)
        if model is not None
        else {"model_name": None, "d_model": irm.d_model, "n_layers": irm.n_model_layers, "d_vocab": None}
    )
    meta = {"irm_config": irm.cfg.to_dict(), "layers": list(irm.layers), "step": step, **identity, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in irm.state_dict().items()}
        save_file(tensors, tmp / "irm.safetensors", metadata={"step": str(step)})
        if train_state is not None:
            torch.save({"step": step, **train_state}, tmp / "train_state.pt")
        (tmp / "irm.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete ``step-*`` checkpoint written by training, or None.

    ``folder`` is a training output folder (the ``out_dir`` of :func:`workbench.irm.train_irm`, e.g.
    ``runs/neuron1512/card/negative/seed-0``, which holds ``checkpoints/``) or that ``checkpoints`` folder itself.
    """
    folder = Path(folder)
    done = [
        p
        for where in (folder, folder / "checkpoints")
        for p in where.glob("step-*")
        if (p / "irm.json").is_file() and (p / "irm.safetensors").is_file() and (p / "train_state.pt").is_file()
    ]
    return max(done, key=lambda p: p.name) if done else None


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove the temporary folders that killed checkpoint writes left in ``folder``; the removed paths."""
    stale = [p for pattern in (".*.tmp-*", ".*.old-*") for p in Path(folder).glob(pattern) if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``irm.json`` metadata of a checkpoint folder.

    Raises:
        FileNotFoundError: ``path`` holds no ``irm.json``.
        CheckpointError: ``irm.json`` is not valid JSON or lacks a field.
    """
    file = Path(path) / "irm.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not an IRM checkpoint (no irm.json): pass a step-* folder written by train_irm, "
            "or the training folder holding checkpoints/"
        )
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(Path(path), "irm.json", f"not valid JSON: {e}") from None
    missing = [k for k in _META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise _damaged(Path(path), "irm.json", f"no {', '.join(missing)}")
    return meta


def load_irm_weights(path: str | Path, irm: IRM) -> None:
    """Load a checkpoint's ``irm.safetensors`` into ``irm``, refusing a damaged file or tensors of other shapes."""
    path = Path(path)
    try:
        state = load_file(path / "irm.safetensors")
    except (SafetensorError, OSError) as e:
        raise _damaged(path, "irm.safetensors", f"not a readable safetensors file: {e}") from None
    want = {k: tuple(v.shape) for k, v in irm.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        raise CheckpointError(
            f"{path / 'irm.safetensors'} holds weights of other shapes than the IRM its irm.json describes "
            f"({', '.join(f'{k}: {have.get(k)} vs {want.get(k)}' for k in diff[:4])}): the two files come from "
            f"different checkpoints. Delete the folder {path} (or copy the checkpoint again as a whole)"
        )
    irm.load_state_dict(state)


def load_irm(path: str | Path, model: TransformerBridge, *, allow_other_model: bool = False) -> IRM:
    """Load the IRM of a checkpoint for ``model``, on the model's device.

    Raises:
        ValueError: the checkpoint was trained for a model of another shape (always refused) or
            another name (refused unless ``allow_other_model``).
    """
    meta = read_meta(path)
    have = model_identity(model)
    for key in ("d_model", "n_layers", "d_vocab"):
        if meta[key] is not None and meta[key] != have[key]:
            raise ValueError(
                f"checkpoint {path} was trained for {meta['model_name']} with {key}={meta[key]}; this model "
                f"({have['model_name']}) has {key}={have[key]}. Load it into the model it was trained for"
            )
    if not allow_other_model and meta["model_name"] is not None and meta["model_name"] != have["model_name"]:
        raise ValueError(
            f"checkpoint {path} was trained for {meta['model_name']}, not {have['model_name']}; "
            "pass allow_other_model=True to load it anyway (same shape)"
        )
    irm = IRM(
        IRMConfig.from_dict(meta["irm_config"]), have["d_model"], have["n_layers"], dtype=_saved_dtype(Path(path))
    )
    load_irm_weights(path, irm)
    return irm.to(model.cfg.device)


def _saved_dtype(path: Path) -> torch.dtype | None:
    """The dtype of a checkpoint's weights (``None``: float32, or unreadable: :func:`load_irm_weights` says why)."""
    try:
        with safe_open(Path(path) / "irm.safetensors", framework="pt") as f:
            dtype = f.get_slice(next(iter(f.keys()))).get_dtype()
    except (SafetensorError, OSError, StopIteration):
        return None
    return {"BF16": torch.bfloat16, "F16": torch.float16}.get(dtype)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """The training state saved with a checkpoint (optimizer, RNG, history, step), on the CPU.

    Loading onto the CPU lets a run saved on a GPU resume anywhere: the optimizer moves its state to
    its parameters' device, and RNG states must be CPU tensors anyway.
    """
    file = Path(path) / "train_state.pt"
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} has no train_state.pt: it was saved without training state, so training cannot resume from it"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises pickle, EOF, zip and runtime errors for a damaged file
        raise _damaged(Path(path), "train_state.pt", f"{type(e).__name__}: {e}") from None


RESULT_NEUTRAL = ("eval_every", "eval_texts", "checkpoint_every", "keep_checkpoints")
"""TrainConfig fields that do not change the trained weights: a resumed run may change them."""
STOPPING = ("steps", "patience", "min_improvement")
"""TrainConfig fields that say only when training stops: a resumed run may change them (and go on, or stop)."""


class TrainingCheckpoints:
    """One IRM training run's checkpoints (``folder/step-NNNNNN``), for :func:`workbench.training.train_loop`.

    Each checkpoint records the model, the IRM config, the full training config and a fingerprint of
    the training data; resuming with any other is refused (except a larger ``steps``, which continues
    training and says so), so a rerun with other settings never silently returns the old IRM.
    """

    def __init__(
        self, folder: str | Path, model: TransformerBridge, irm: IRM, cfg: TrainConfig, data: Sequence[Sequence[int]]
    ):
        self.folder = Path(folder)
        self.model, self.irm, self.cfg = model, irm, cfg
        self.fingerprint = cache_key([list(ids) for ids in data], 16)

    def prepare(self, resume: bool) -> None:
        """Clean temporary folders of killed writes; without ``resume``, remove the old checkpoints too."""
        clean_stale(self.folder)
        if not resume:
            for old in self.folder.glob("step-*"):
                shutil.rmtree(old)

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write checkpoint ``step-NNNNNN`` and keep only the newest ``cfg.keep_checkpoints``."""
        extra = {"train_config": self.cfg.to_dict(), "data_fingerprint": self.fingerprint}
        save_irm(
            self.folder / f"step-{step:06d}", self.irm, model=self.model, step=step, train_state=state, extra=extra
        )
        for old in sorted(self.folder.glob("step-*"))[: -max(self.cfg.keep_checkpoints, 1)]:
            shutil.rmtree(old)

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """Load the newest checkpoint into the IRM after checking it belongs to this run; its step and state."""
        path = latest_checkpoint(self.folder)
        if path is None:
            return None
        meta = read_meta(path)
        self._check(path, meta)
        load_irm_weights(path, self.irm)
        state = load_train_state(path)
        return int(state["step"]), state

    def _check(self, path: Path, meta: dict[str, Any]) -> None:
        ways_out = "Train into a new --ckpt-dir (out_dir), or pass --no-resume (resume=False) to start over"
        have = model_identity(self.model)
        if any(meta[k] != have[k] for k in have) or meta["irm_config"] != self.irm.cfg.to_dict():
            raise ValueError(
                f"checkpoint {path} belongs to another model or IRM config ({meta['model_name']}, "
                f"{meta['irm_config']}). {ways_out}"
            )
        if "train_config" not in meta:
            raise ValueError(f"checkpoint {path} records no training config (written by an older version). {ways_out}")
        old, new = meta["train_config"], self.cfg.to_dict()
        differ = [k for k in new if k not in (*RESULT_NEUTRAL, *STOPPING) and old.get(k) != new[k]]
        if differ:
            changes = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in differ)
            raise ValueError(
                f"checkpoint {path} was trained with another training config ({changes}); resuming would return "
                f"or continue that run, not this one. {ways_out}"
            )
        if meta.get("data_fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint {path} was trained on other texts (another corpus, --max-items, --min-confidence or "
                f"prompt format). {ways_out}"
            )
        if meta["step"] > self.cfg.steps:
            raise ValueError(
                f"checkpoint {path} is at step {meta['step']}, past steps={self.cfg.steps}: it cannot be un-trained. "
                f"Pass steps >= {meta['step']}, or: {ways_out}"
            )
        if self.cfg.steps != old["steps"]:
            warnings.warn(
                f"resuming {path} (step {meta['step']} of a run set to steps={old['steps']}) and continuing "
                f"to steps={self.cfg.steps}",
                stacklevel=5,
            )
