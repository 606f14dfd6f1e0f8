"""Checks an experiment's config passes before any work starts (no model weights are loaded).

:func:`experiments.common.parse_config` runs :func:`preflight` on every experiment's config, so a
bad flag fails in seconds, before a model loads or a step trains, instead of after minutes of work
or at the very end when the outputs are written. Every experiment's ``main(cfg)`` runs it too, before
its model loads, so a config built in Python is checked the same way; a config that already passed
(e.g. on the command line, just before ``main``) is not checked again in the same process.

The checks go by field name, one table for all experiments (:data:`FIELD_CHECKS`); a field an
experiment names differently is not checked here, and a config class may add its own checks with a
``check(self)`` method, which runs last (e.g. :func:`check_prompt_lengths` for prompts that are
batched together).

What is checked, without loading weights:

* ``device``: a torch device string this machine has (``cuda`` needs a CUDA GPU);
* ``out`` / ``ckpt_dir``: a folder that can be created and written, not a file;
* ``model`` / ``base``: a registry name, model folder or hub id that :func:`~workbench.models.load_model`
  accepts; where its ``config.json`` is on disk, the layer fields (``read_layer``, ``layers``, ``layer``)
  against its layer count and the prompts against its context length;
* ``tuned``: a model folder; ``irm``: a folder holding an IRM checkpoint (``irm.json``);
* ``alignments`` / ``alignment`` / ``corpus`` / ``texts``: known alignments, or corpus files that read
  without error (the whole file is parsed);
* ``read_hook`` / ``write_hook`` / ``hook``: known hook kinds, and together with ``read_layer`` and
  ``layers`` a valid IRM placement (:class:`~workbench.irm.IRMConfig`);
* ``prompts`` / ``dla_prompts``: no empty prompt; ``answers``: (answer, other) pairs;
* counts and rates shared with the library configs (``steps``, ``batch_size``, ``lr``, ...): their
  ranges (:data:`FIELD_RANGES`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench import models
from workbench.config import Config, Range
from workbench.data.corpora import ALIGNMENTS, load_texts
from workbench.data.prompts import check_prompts
from workbench.hooks import HOOK_KINDS
from workbench.irm.config import READ_KINDS, WRITE_KINDS, IRMConfig
from workbench.models import check_model_dir, local_model_dir

__all__ = [
    "FIELD_CHECKS",
    "FIELD_RANGES",
    "check_against_model",
    "check_device",
    "check_irm_path",
    "check_output_dir",
    "check_prompt_lengths",
    "preflight",
]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_device(flag: str, device: str) -> None:
    """Refuse a malformed device string, and a CUDA / MPS device this machine does not have."""
    try:
        models.check_device(device)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}".replace(": use ", f": use {flag} ", 1)) from None


def check_output_dir(flag: str, folder: str | os.PathLike) -> None:
    """Refuse a folder that is a file, lies under a file, or cannot be created or written (nothing is created)."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder: pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {path} cannot be created: {existing} is a file; pass another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path} is not writable ({existing} is read-only to you): pass a folder you own")


def check_irm_path(flag: str, path: str | os.PathLike) -> None:
    """Refuse a path that does not exist or holds no IRM checkpoint (``irm.json`` in it or one or two levels down)."""
    path = Path(path)
    fix = "pass a checkpoint folder (with irm.json) or a training folder such as runs/neuron1512/card/negative/seed-0"
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {path} does not exist: {fix}")
    if not any(path.glob("irm.json")) and not any(path.glob("*/irm.json")) and not any(path.glob("*/*/irm.json")):
        raise FileNotFoundError(f"{flag} {path} holds no IRM checkpoint (no irm.json in it or below it): {fix}")


def _check_model(flag: str, name: str) -> None:
    local_model_dir(name)


def _check_tuned(flag: str, folder: str) -> None:
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"{flag} {folder} does not exist: pass a folder written by workbench.tuning (or save_pretrained), "
            "or leave it out to tune one"
        )
    check_model_dir(folder)


def _check_alignments(flag: str, names: str | Sequence[str]) -> None:
    names = (names,) if isinstance(names, str) else names
    if not names:
        raise ValueError(f"{flag} is empty: name at least one of {', '.join(ALIGNMENTS)}")
    bad = [n for n in names if n not in ALIGNMENTS]
    if bad:
        raise ValueError(
            f"{flag}: unknown alignment(s) {', '.join(map(repr, bad))}; choose from {', '.join(ALIGNMENTS)}"
        )


def _check_corpus(flag: str, source: str) -> None:
    if source not in ALIGNMENTS:
        try:
            load_texts(source)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{flag} {source!r} is neither an alignment ({', '.join(ALIGNMENTS)}) nor an existing corpus file: "
                "pass one of those, or a .txt / .csv / .jsonl file"
            ) from None


def _check_texts(flag: str, source: str) -> None:
    load_texts(source)


def _kind_check(kinds: Sequence[str]) -> Callable[[str, str], None]:
    def check(flag: str, kind: str) -> None:
        if kind not in kinds:
            raise ValueError(f"{flag} {kind!r} is not a hook kind here; choose one of {', '.join(kinds)}")

    return check


def _check_prompts(flag: str, prompts: Sequence[str]) -> None:
    if not prompts:
        raise ValueError(f"{flag} is empty: give at least one prompt")
    try:
        check_prompts(prompts)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def _check_answers(flag: str, answers: Sequence[str]) -> None:
    if len(answers) % 2:
        raise ValueError(f"{flag} takes (answer, other) pairs; got {len(answers)} strings: {list(answers)}")


FIELD_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "device": check_device,
    "out": check_output_dir,
    "ckpt_dir": check_output_dir,
    "model": _check_model,
    "base": _check_model,
    "tuned": _check_tuned,
    "irm": check_irm_path,
    "alignments": _check_alignments,
    "alignment": _check_alignments,
    "corpus": _check_corpus,
    "texts": _check_texts,
    "read_hook": _kind_check(READ_KINDS),
    "write_hook": _kind_check(WRITE_KINDS),
    "hook": _kind_check(tuple(HOOK_KINDS)),
    "prompts": _check_prompts,
    "dla_prompts": _check_prompts,
    "answers": _check_answers,
}
"""Field name -> check ``(flag, value)``; ``None`` and ``""`` (an unset optional field) are not checked."""

FIELD_RANGES: dict[str, Range] = {
    "steps": Range(ge=1),
    "batch_size": Range(ge=1),
    "max_len": Range(ge=1),
    "max_items": Range(ge=1),
    "eval_texts": Range(ge=1),
    "max_new_tokens": Range(ge=1),
    "n_texts": Range(ge=1),
    "lr": Range(gt=0),
    "l1": Range(ge=0),
    "hidden_mult": Range(ge=0),
    "min_confidence": Range(ge=0, le=1),
}
"""Field name -> the range its value must have in every experiment (the ranges of the library configs the
experiments pass these fields to, checked before the model loads rather than when those configs are built)."""

_PASSED: set[tuple[type, str]] = set()
"""The configs (class, JSON) that passed :func:`preflight` in this process."""

_LAYER_FIELDS = ("read_layer", "layers", "layer")
_PROMPT_FIELDS = ("prompts", "dla_prompts")


def preflight(cfg: Config) -> Config:
    """Check ``cfg`` before any work starts (see the module docstring); returns ``cfg``.

    Raises the first problem found (``ValueError``, ``KeyError``, ``IndexError`` or an ``OSError``), its
    message naming the flag and the fix. A config equal to one that passed before in this process is
    returned at once (the command line checks it, then the experiment's ``main`` would again).
    """
    key = (type(cfg), json.dumps(cfg.to_dict(), sort_keys=True, default=str))
    if key in _PASSED:
        return cfg
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    for name, value in values.items():
        bounds = FIELD_RANGES.get(name)
        broken = bounds.violated(value) if bounds is not None and isinstance(value, (int, float)) else None
        if broken is not None:
            raise ValueError(f"{_flag(name)} must be {broken}, got {value}")
        check = FIELD_CHECKS.get(name)
        if check is not None and value is not None and value != "":
            _named(check, _flag(name), value)
    if {"read_hook", "read_layer", "write_hook", "layers"} <= values.keys():
        IRMConfig(values["read_hook"], values["read_layer"], values["write_hook"], tuple(values["layers"]))
    model = values.get("model", values.get("base"))
    if isinstance(model, str):
        check_against_model(model, values)
    own = getattr(cfg, "check", None)
    if callable(own):
        own()
    _PASSED.add(key)
    return cfg


def check_prompt_lengths(flag: str, model: str, prompts: Sequence[str]) -> None:
    """Refuse prompts of different token lengths for ``model`` (batched analyses align positions).

    For a config's ``check()`` method, e.g. ``check_prompt_lengths("--prompts", self.base, self.prompts)``;
    the model's tokenizer is read from disk when it is there (no weights load), else nothing is checked.
    """
    folder = local_model_dir(model)
    if folder is None or len(prompts) < 2:
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    lengths = {p: len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{p!r}: {n}" for p, n in lengths.items())
        raise ValueError(
            f"{flag}: the prompts have different token lengths ({detail}); positions must align across the batch: "
            "use prompts of equal token length or run them separately"
        )


def _named(check: Callable[[str, Any], None], flag: str, value: Any) -> None:
    """Run ``check``; an error from the library that does not name the flag gets it in front."""
    try:
        check(flag, value)
    except (ValueError, OSError) as err:
        if str(err).startswith(flag):
            raise
        raise type(err)(f"{flag}: {err}") from err


def check_against_model(model: str, values: dict[str, Any]) -> None:
    """Layer fields against the model's layer count, prompts against its context (when its folder is on disk)."""
    folder = local_model_dir(model)
    if folder is None:
        return
    from transformers import AutoConfig, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(folder)
    n_layers = hf_config.num_hidden_layers
    for name in _LAYER_FIELDS:
        value = values.get(name)
        layers = (value,) if isinstance(value, int) else value or ()
        bad = [layer for layer in layers if not -n_layers <= layer < n_layers]
        if bad:
            raise IndexError(
                f"{_flag(name)} {', '.join(map(str, bad))}: out of range, {model} has layers 0..{n_layers - 1}; "
                "pass layers in that range"
            )
    prompts = {name: values[name] for name in _PROMPT_FIELDS if values.get(name)}
    n_ctx = getattr(hf_config, "max_position_embeddings", None)
    if not prompts or n_ctx is None:
        return
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for name, texts in prompts.items():
        for i, text in enumerate(texts):
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if n > n_ctx:
                raise ValueError(
                    f"{_flag(name)}: prompt {i} is {n} tokens, longer than {model}'s context of {n_ctx}: shorten it"
                )
