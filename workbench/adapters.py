"""LoRA (and other mergeable peft) adapters as models: read the folder, find its base, merge.

A folder written by ``peft`` (``PeftModel.save_pretrained``, or TRL / transformers trainers with a
``peft_config``) holds ``adapter_config.json`` and ``adapter_model.safetensors`` (sometimes the
tokenizer too), and names the model it was trained on in ``base_model_name_or_path``.
:func:`workbench.models.load_model` loads such a folder as one model: the base (a registry name,
folder or hub id; a hub id the registry knows loads offline through the registry) with the adapter
merged into its weights (``merge_and_unload``; LoRA: W + (alpha / r) B A, Hu et al. 2021,
arXiv 2106.09685), then boots the bridge as for any folder.

Note that the registry's default model is a de-quantised Q4_1 copy of SmolLM2: an adapter trained on
the fp32 release and merged here sits on slightly different base weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["adapter_base", "check_adapter_dir", "is_adapter_dir", "merge_adapter", "saved_tokenizer"]

_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a peft ``adapter_config.json``."""
    return Path(path).expanduser().joinpath("adapter_config.json").is_file()


def check_adapter_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` if its adapter config reads, names a base and has its weights, else raise naming the fix."""
    path = Path(path).expanduser()
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}/adapter_config.json does not read ({err}): write it again with peft") from None
    if not any((path / name).is_file() for name in _WEIGHTS):
        raise FileNotFoundError(
            f"{path} has adapter_config.json but no adapter weights ({' or '.join(_WEIGHTS)}): "
            "pass the folder PeftModel.save_pretrained wrote"
        )
    if not config.get("base_model_name_or_path"):
        raise ValueError(
            f"{path}/adapter_config.json names no base model (base_model_name_or_path): "
            "pass the base yourself, load_model(folder, base=...)"
        )
    return path


def saved_tokenizer(path: str | os.PathLike) -> bool:
    """Whether an adapter folder saved a tokenizer too (it is then used instead of the base's)."""
    return any(Path(path, name).is_file() for name in _TOKENIZER_FILES)


def adapter_base(path: str | os.PathLike) -> str:
    """The base an adapter folder names, as :func:`workbench.models.load_model` takes it.

    A hub id the registry knows becomes its registry name (so it loads offline); a relative folder is read
    relative to the current directory, else to the adapter folder.
    """
    from workbench.models import REGISTRY

    check_adapter_dir(path)
    named = str(json.loads(Path(path, "adapter_config.json").read_text())["base_model_name_or_path"])
    by_hub_id = {spec.hf_id: name for name, spec in REGISTRY.items()}
    if named in by_hub_id:
        return by_hub_id[named]
    beside = Path(path, named)
    if not Path(named).expanduser().is_dir() and not Path(named).is_absolute() and beside.is_dir():
        return str(beside)
    return named


def merge_adapter(hf, path: str | os.PathLike, base_name: str | os.PathLike):
    """Merge the adapter at ``path`` into the loaded base ``hf`` (in place) and return the plain merged model.

    Raises ``ValueError`` naming the fix when the adapter does not fit the base (another model's adapter) or
    cannot be merged into weights (prompt tuning and other adapters that add virtual tokens).
    """
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.utils import load_peft_weights

    config = PeftConfig.from_pretrained(str(path))
    if getattr(config, "is_prompt_learning", False):
        raise ValueError(
            f"{path} is a {config.peft_type} adapter: it adds virtual tokens instead of changing weights, so it cannot "
            "be merged into a model to diff; merge-able adapters are LoRA, LoHa, LoKr, IA3 and their kin"
        )
    fix = "pass the model it was trained on, load_model(folder, base=...) (or --base)"
    try:
        model = get_peft_model(hf, config)
        # peft annotates its return as a bare ``namedtuple``; it is torch's _IncompatibleKeys
        loaded: Any = set_peft_model_state_dict(model, load_peft_weights(str(path), device="cpu"))
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(
            f"the adapter at {path} does not fit the base {base_name} ({' '.join(str(err).split())[:300]}): {fix}"
        ) from err
    # peft ignores adapter weights with no module to go to (e.g. layers the base does not have): refuse them
    stray = list(loaded.unexpected_keys)
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(config.peft_type, "")
    unset = [k for k in loaded.missing_keys if prefix and prefix in k and ".default" in k]
    if stray or unset:
        raise ValueError(
            f"the adapter at {path} does not fit the base {base_name}: "
            + (f"{len(stray)} adapter weights have no place in it (e.g. {stray[0]})" if stray else "")
            + ("; " if stray and unset else "")
            + (f"{len(unset)} adapter weights are missing from the folder (e.g. {unset[0]})" if unset else "")
            + f": {fix}"
        )
    merged = model.merge_and_unload()
    merged.eval()
    if not merged.config.architectures:
        merged.config.architectures = [type(merged).__name__]
    return merged
