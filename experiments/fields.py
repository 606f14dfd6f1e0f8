"""The experiments' config layer: field types that check themselves, once, before any work starts.

Every experiment's config is a frozen :class:`ExperimentConfig` whose fields are typed with what they hold:
``OutDir``, ``Device``, ``ModelName``, ``Alignments``, ``Prompts``, ``Count`` (>= 1), ``ModelLayer`` ... .
:meth:`ExperimentConfig.preflight` checks them without loading weights, in this order, and raises the first
problem with a message naming the flag and the fix:

1. each field against its type and range (:mod:`workbench.config`, when the config is built);
2. list flags hold no value twice (``--seeds 0 0`` would fake agreement), unless the field is :data:`REPEATS`;
3. each field's own check (:class:`Check` metadata: a known model, alignment, corpus, hook kind, a device this
   machine has, an IRM checkpoint, prompts that are not empty);
4. layer fields (:data:`MODEL_LAYER`) against the layer count in the model's ``config.json``, read without the
   weights (``AutoConfig``; skipped when the model is not on disk yet);
5. the class's own ``check()`` (what depends on several fields or on the model, e.g. positions vs prompt length);
6. output folders (:data:`WRITABLE`) proven writable: created, a probe file written and removed (access checks
   say yes to root for ``/proc`` and ``/sys``; writing does not).

``--quick`` is a per-experiment mapping :attr:`ExperimentConfig.QUICK` of field -> smaller value (or a function of
the config giving it), applied by :func:`with_quick` only to fields the user did not set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from workbench import models
from workbench.config import Config, Count, _hints
from workbench.data.corpora import ALIGNMENTS, load_texts
from workbench.data.prompts import check_prompts
from workbench.models import check_model_dir, local_model_dir

__all__ = [
    "MODEL_LAYER",
    "REPEATS",
    "WRITABLE",
    "Alignments",
    "AnswerPairs",
    "Check",
    "Corpus",
    "Device",
    "ExperimentConfig",
    "IRMPath",
    "ModelLayer",
    "ModelName",
    "OutDir",
    "Prompts",
    "Seeds",
    "TunedFolder",
    "check_alignments",
    "check_device",
    "check_folder_path",
    "check_irm_path",
    "check_layers",
    "check_output_dir",
    "check_prompt_lengths",
    "flag",
    "model_config",
    "with_quick",
]

E = TypeVar("E", bound="ExperimentConfig")


def flag(name: str) -> str:
    """The command-line flag of field ``name``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Check:
    """``Annotated`` metadata of a field: ``fn(flag, value)`` raises naming the flag and the fix (not run on
    ``None`` or ``""``, an unset optional field)."""

    fn: Callable[[str, Any], None]


@dataclass(frozen=True)
class _Marker:
    name: str


REPEATS = _Marker("repeats")
"""``Annotated`` metadata of a list field whose values may repeat (e.g. the same answer pair for several prompts)."""
MODEL_LAYER = _Marker("model layer")
"""``Annotated`` metadata of a layer field (an int, a tuple of ints, or None): checked against the model's layers."""
WRITABLE = _Marker("writable")
"""``Annotated`` metadata of an output folder: created and written to (a probe file) as the last check."""


def check_device(flag: str, device: str) -> None:
    """Refuse a malformed device string, and a CUDA / MPS device this machine does not have."""
    try:
        models.check_device(device)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}".replace(": use ", f": use {flag} ", 1)) from None


def check_folder_path(flag: str, folder: str | os.PathLike) -> None:
    """Refuse a folder path that is a file or lies under a file (nothing is created)."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder: pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {path} cannot be created: {existing} is a file; pass another folder")


def check_output_dir(flag: str, folder: str | os.PathLike) -> Path | None:
    """Prove ``folder`` writable by writing to it: create it, write a probe file and remove it.

    Access checks (``os.access``) say yes to root for ``/proc`` and ``/sys``, where writing fails; only a write
    proves a run's results can be saved. Returns the topmost folder created here (None if it existed), which stays.
    """
    check_folder_path(flag, folder)
    path = Path(folder).expanduser()
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    probe = path / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"{flag} {path} is not writable ({type(err).__name__}: {err.strerror or err}): pass a folder you can "
            "write, e.g. one under your home or the project"
        ) from None
    return created


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


def check_alignments(flag: str, names: str | Sequence[str]) -> None:
    names = (names,) if isinstance(names, str) else names
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


def _check_prompts(flag: str, prompts: Sequence[str]) -> None:
    check_prompts(prompts)


def _check_answers(flag: str, answers: Sequence[str]) -> None:
    if len(answers) % 2:
        raise ValueError(f"{flag} takes (answer, other) pairs; got {len(answers)} strings: {list(answers)}")


def _nonempty(flag: str, values: Sequence[Any]) -> None:
    if not values:
        raise ValueError(f"{flag} is empty: give at least one value")


Device = Annotated[str, Check(check_device)]
"""A torch device this machine has (cpu, cuda, cuda:1, mps)."""
OutDir = Annotated[str, WRITABLE]
"""An output folder, proven writable before any work."""
ModelName = Annotated[str, Check(_check_model)]
"""A registry name, model folder or hub id that :func:`~workbench.models.load_model` accepts."""
TunedFolder = Annotated[str | None, Check(_check_tuned)]
"""An HF model folder (None: make one)."""
IRMPath = Annotated[str | None, Check(check_irm_path)]
"""An IRM checkpoint or the training folder above it (None: the experiment's default)."""
Alignments = Annotated[tuple[str, ...], Check(_nonempty), Check(check_alignments)]
"""Known alignments, at least one, each once."""
Corpus = Annotated[str, Check(_check_corpus)]
"""An alignment or a corpus file that reads without error."""
Prompts = Annotated[tuple[str, ...], Check(_nonempty), Check(_check_prompts)]
"""Prompts, at least one, none empty, each once."""
AnswerPairs = Annotated[tuple[str, ...], REPEATS, Check(_nonempty), Check(_check_answers)]
"""(answer, other) pairs, flattened: one pair for all prompts or one per prompt (pairs may repeat)."""
Seeds = Annotated[tuple[int, ...], Check(_nonempty)]
"""Seeds, at least one, each once (a repeated seed fakes agreement)."""
ModelLayer = Annotated[int | None, MODEL_LAYER]
"""A layer of the model (negative: from the end; None: the experiment's default)."""
Counts = Annotated[tuple[Count, ...], Check(_nonempty)]
"""Counts (each >= 1), each once."""


def model_config(model: str) -> Any | None:
    """The Hugging Face config of ``model`` read from its folder (no weights), or None when it is not on disk."""
    folder = local_model_dir(model)
    if folder is None:
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def check_layers(flag: str, layers: Sequence[int], n_layers: int, model: str) -> None:
    """Refuse layers outside ``-n_layers .. n_layers - 1``."""
    bad = [layer for layer in layers if not -n_layers <= layer < n_layers]
    if bad:
        raise IndexError(
            f"{flag} {', '.join(map(str, bad))}: out of range, {model} has layers 0..{n_layers - 1}; "
            "pass layers in that range"
        )


def check_prompt_lengths(flag: str, model: str, prompts: Sequence[str]) -> None:
    """Refuse prompts of different token lengths for ``model`` (batched analyses align positions).

    The model's tokenizer is read from disk when it is there (no weights load), else nothing is checked.
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


def _named(check: Callable[[str, Any], None], name: str, value: Any) -> None:
    """Run ``check``; an error from the library that does not name the flag gets it in front."""
    try:
        check(name, value)
    except (ValueError, OSError) as err:
        if str(err).startswith(name):
            raise
        raise type(err)(f"{name}: {err}") from err


def _metadata(cls: type, name: str) -> tuple[Any, ...]:
    hint = _hints(cls)[name]
    return getattr(hint, "__metadata__", ())


class ExperimentConfig(Config):
    """Base of every experiment's config: field types that check themselves (:meth:`preflight`) and ``--quick``."""

    QUICK: ClassVar[Mapping[str, Any]] = {}
    """``--quick``: field -> value (or a function of the config giving it), for fields the user did not set."""
    MODEL_FIELD: ClassVar[str] = "model"
    """The field naming the model whose config the layer fields are checked against."""
    INTERNAL: ClassVar[Collection[str]] = ()
    """Fields the run fills in (not flags)."""

    def model_config(self) -> Any | None:
        """The HF config of the experiment's model, read without weights (None when not on disk)."""
        return model_config(getattr(self, self.MODEL_FIELD))

    def check(self) -> None:
        """The class's own checks (several fields together, or against the model); raises naming the flag."""

    def preflight(self: E) -> E:
        """Check every field once (see the module docstring); returns ``self``. A config equal to one that passed
        before in this process is not checked again (the command line checks it, then ``main`` would)."""
        key = (type(self), json.dumps(self.to_dict(), sort_keys=True, default=str))
        if key in _PASSED:
            return self
        writable = []
        for f in dataclasses.fields(self):
            if f.name in self.INTERNAL:
                continue
            value, meta, name = getattr(self, f.name), _metadata(type(self), f.name), flag(f.name)
            if isinstance(value, tuple) and REPEATS not in meta:
                repeated = [v for v, n in Counter(value).items() if n > 1]
                if repeated:
                    raise ValueError(
                        f"{name} repeats {', '.join(map(repr, repeated))}: give each value once "
                        "(a repeated value counts twice and fakes agreement)"
                    )
            if value is None or value == "":
                continue
            for check in (m for m in meta if isinstance(m, Check)):
                _named(check.fn, name, value)
            if WRITABLE in meta:
                check_folder_path(name, value)
                writable.append((name, value))
        layer_fields = [f.name for f in dataclasses.fields(self) if MODEL_LAYER in _metadata(type(self), f.name)]
        given = {n: getattr(self, n) for n in layer_fields if getattr(self, n) is not None}
        hf = self.model_config() if given else None
        if hf is not None:
            for n, value in given.items():
                layers = (value,) if isinstance(value, int) else value
                check_layers(flag(n), layers, hf.num_hidden_layers, getattr(self, self.MODEL_FIELD))
        self.check()
        _prove_writable(writable)
        _PASSED.add(key)
        return self


def _prove_writable(folders: Sequence[tuple[str, str]]) -> None:
    """:func:`check_output_dir` on each ``(flag, folder)``; when one fails, the folders created for the others
    are removed again (a refused run leaves nothing behind)."""
    created = []
    try:
        for name, folder in folders:
            created.append(check_output_dir(name, folder))
    except OSError:
        for top in filter(None, created):
            shutil.rmtree(top, ignore_errors=True)
        raise


_PASSED: set[tuple[type, str]] = set()
"""The configs (class, JSON) that passed :meth:`ExperimentConfig.preflight` in this process."""
_QUICK_DONE: set[tuple[type, str]] = set()
"""The configs (class, JSON) that :func:`with_quick` produced: their ``--quick`` sizes are already in."""


def with_quick(cfg: E, given: Collection[str] | None = None) -> E:
    """``cfg`` with its class's ``--quick`` values in the fields the user did not set.

    Args:
        given: the fields set on the command line; None (a config built in Python): the fields at their default.
    """
    key = (type(cfg), json.dumps(cfg.to_dict(), sort_keys=True, default=str))
    if not getattr(cfg, "quick", False) or key in _QUICK_DONE:
        return cfg
    if given is None:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
        given = {k for k in getattr(cfg, "QUICK", {}) if k not in defaults or getattr(cfg, k) != defaults[k]}
    changes = {k: v for k, v in getattr(cfg, "QUICK", {}).items() if k not in given}
    cfg = cfg.replace(**{k: v(cfg) if callable(v) else v for k, v in changes.items()})
    _QUICK_DONE.add((type(cfg), json.dumps(cfg.to_dict(), sort_keys=True, default=str)))
    return cfg


def quick_help(cls: type[ExperimentConfig]) -> str:
    """One line listing ``--quick``'s values (for the ``--quick`` flag's help)."""
    words = [f"{flag(k)} {'(from the model)' if callable(v) else v}" for k, v in getattr(cls, "QUICK", {}).items()]
    return "sets " + ", ".join(words) + " unless given" if words else ""
