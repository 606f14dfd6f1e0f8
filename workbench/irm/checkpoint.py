"""IRM checkpoints: the IRM only (never the LM), written atomically, refused by a model of another shape.

A checkpoint is a folder::

    irm.safetensors   IRM weights
    irm.json          IRM config, step, and the model it was trained for (name, d_model, n_layers, d_vocab)
    train_state.pt    optional: optimizer state, RNG states, training history (to resume training)

The folder is built under a temporary name next to the target and moved into place with ``os.replace``,
so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.irm.config import IRMConfig
from workbench.irm.module import IRM

__all__ = ["load_irm", "load_train_state", "model_identity", "read_meta", "save_irm"]


def model_identity(model) -> dict[str, Any]:
    """What a checkpoint records about the model an IRM belongs to."""
    cfg = model.cfg
    return {"model_name": str(cfg.model_name), "d_model": cfg.d_model, "n_layers": cfg.n_layers, "d_vocab": cfg.d_vocab}


def save_irm(
    path: str | Path,
    irm: IRM,
    *,
    model=None,
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


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``irm.json`` metadata of a checkpoint folder."""
    file = Path(path) / "irm.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an IRM checkpoint (no irm.json); save one with save_irm")
    return json.loads(file.read_text())


def load_irm(path: str | Path, model, *, allow_other_model: bool = False) -> IRM:
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
    irm = IRM(IRMConfig.from_dict(meta["irm_config"]), have["d_model"], have["n_layers"])
    state = load_file(Path(path) / "irm.safetensors")
    irm.load_state_dict(state)
    return irm.to(model.cfg.device)


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
    return torch.load(file, map_location="cpu", weights_only=False)
