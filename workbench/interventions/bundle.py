"""Saving and loading interventions: a JSON description plus one safetensors file of weights.

A bundle is a folder with ``interventions.json`` (format tag, per intervention its spec, kind and
constructor config, and free metadata such as the model name) and ``weights.safetensors`` (the
interventions' ``state_dict``; never the model's). As with pyvene's saved interventions (Wu et al.
2024), a bundle is small and loads onto any copy of the model it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformer_lens.model_bridge import TransformerBridge

from workbench.interventions.apply import InterventionSet
from workbench.interventions.modules import make_intervention
from workbench.interventions.spec import InterventionSpec

__all__ = ["FORMAT", "bundle_size", "load_bundle", "save_bundle"]

FORMAT = "workbench-interventions/1"


def save_bundle(interventions: InterventionSet, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``interventions`` to the folder ``path`` (created); returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    items = [{"spec": s.to_dict(), "kind": m.kind, "config": m.config()} for s, m in interventions]
    (path / "interventions.json").write_text(
        json.dumps({"format": FORMAT, "interventions": items, "metadata": metadata or {}}, indent=2) + "\n"
    )
    state = {k: v.detach().cpu().contiguous() for k, v in interventions.state_dict().items()}
    save_file(state, path / "weights.safetensors")
    return path


def load_bundle(path: str | Path, model: TransformerBridge | None = None) -> tuple[InterventionSet, dict[str, Any]]:
    """Read a bundle written by :func:`save_bundle`.

    Args:
        path: the bundle folder.
        model: if given, every hook name is checked against it and weights move to its device.

    Returns:
        The interventions (eval mode) and the bundle's metadata.
    """
    path = Path(path)
    if not (path / "interventions.json").exists():
        raise FileNotFoundError(f"no intervention bundle at {path}: expected interventions.json written by save_bundle")
    doc = json.loads((path / "interventions.json").read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} has format {doc.get('format')!r}; this workbench reads {FORMAT!r}")
    items = [
        (InterventionSpec.from_dict(i["spec"]), make_intervention(i["kind"], **i["config"]))
        for i in doc["interventions"]
    ]
    interventions = InterventionSet(items)
    interventions.load_state_dict(load_file(path / "weights.safetensors"), strict=True)
    if model is not None:
        for spec in interventions.specs:
            spec.check(model)
        interventions.to(model.cfg.device)
    return interventions.eval(), doc["metadata"]


def bundle_size(path: str | Path) -> int:
    """Bytes on disk of a bundle folder's files."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
