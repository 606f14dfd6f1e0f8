"""The one command-line builder of every experiment: a flag per config field, ``--quick`` that never replaces a
value the user set, and every check (:meth:`~experiments.fields.ExperimentConfig.preflight`) before any work.

Tuples take several values (``--layers 0 3 5``), booleans are ``--flag/--no-flag``, ``Literal`` fields offer
their words as ``choices``, and each flag's help is the field's docstring. A bad flag exits at once with
``python -m experiments.NAME: error: <what is wrong and the fix>`` (status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from experiments.fields import ExperimentConfig, flag, quick_help, with_quick
from workbench.config import Config, ConfigError, field_docs

__all__ = ["Group", "arg_type", "flag_kwargs", "parse_config", "parse_flags"]

E = TypeVar("E", bound=ExperimentConfig)


@dataclass(frozen=True)
class Group:
    """Flags of a nested library config (e.g. :class:`~workbench.irm.IRMConfig`) that override an experiment's
    presets: only the flags the user gives are returned, for the experiment to apply."""

    title: str
    """Heading in ``--help``."""
    cls: type[Config]
    """The library config whose fields become flags."""
    skip: Collection[str] = ()
    """Fields that are not flags (the experiment sets them)."""


def parse_flags(
    cls: type[E],
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    epilog: str | None = None,
    groups: Sequence[Group] = (),
    resolve: Callable[[E, dict[str, dict[str, Any]]], E] | None = None,
) -> E:
    """The checked config of experiment ``cls`` from command-line flags.

    Args:
        groups: nested library configs whose flags the experiment applies with ``resolve``.
        resolve: ``(cfg, {group class name: {field: value given}}) -> cfg``, run after ``--quick`` and before the
            checks (e.g. the main job fills its presets with the IRM and training flags).
    """
    module = ".".join(cls.__module__.split(".")[:2])
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    skip = {"quick", *getattr(cls, "INTERNAL", ())}
    _add_fields(parser.add_argument_group("experiment"), cls, skip - {"quick"}, quick=quick_help(cls))
    for group in groups:
        _add_fields(parser.add_argument_group(group.title), group.cls, set(group.skip))
    names = {f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)}
    given: dict[str, dict[str, Any]] = {g.cls.__name__: {} for g in groups}
    top: dict[str, Any] = {}
    for key, value in vars(parser.parse_args(argv)).items():
        owner, _, field = key.partition(".")
        value = tuple(value) if isinstance(value, list) else value
        (top if key in names else given[owner])[field] = value
    if "command" in {f.name for f in dataclasses.fields(cls)}:
        top["command"] = shlex.join([*parser.prog.split(), *(sys.argv[1:] if argv is None else argv)])
    try:
        cfg = with_quick(cls(**top), given=set(top))
        if resolve is not None:
            cfg = resolve(cfg, given)
        return cfg.preflight() if isinstance(cfg, ExperimentConfig) else cfg
    except ConfigError as err:  # "Class.field must ..." -> "--field (Class.field) must ..."
        parser.error(_flagged(str(err)))
    except (ValueError, TypeError, KeyError, IndexError, OSError) as err:
        parser.error(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))


def parse_config(cls: type[E], argv: Sequence[str] | None = None, description: str | None = None) -> E:
    """:func:`parse_flags` for an experiment without nested flag groups."""
    return parse_flags(cls, argv, description=description)


def _flagged(message: str) -> str:
    """A library config's ``"TrainConfig.lr must be > 0"`` with its flag in front: ``"--lr: TrainConfig.lr ..."``."""
    found = re.match(r"[A-Z]\w*\.(\w+)", message)
    return f"{flag(found.group(1))}: {message}" if found else message


def _add_fields(parser: Any, cls: type, skip: Collection[str], quick: str = "") -> None:
    """One flag per field of ``cls``; unset flags stay out of the namespace (so ``--quick`` knows what was set)."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = flag_kwargs(hints[f.name])
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = docs.get(f.name, "") + (f" ({quick})" if f.name == "quick" and quick else "")
        parser.add_argument(
            flag(f.name),
            dest=f"{cls.__name__}.{f.name}",
            default=argparse.SUPPRESS,
            help=f"{text} [{default}]",
            **kwargs,
        )


def flag_kwargs(hint: Any) -> dict[str, Any]:
    """argparse keywords of a field of type ``hint``: ``--flag/--no-flag`` for a bool, several values for a
    tuple, ``choices`` for a ``Literal``, the inner type of an ``Optional``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"nargs": "*", **arg_type(args[0] if args else str)}
    if typing.get_origin(hint) is typing.Literal:
        return arg_type(hint)
    if args:  # Optional[X]
        return arg_type(args[0])
    return {"type": hint}


def arg_type(hint: Any) -> dict[str, Any]:
    """argparse ``type`` (and ``choices`` for a ``Literal``) of one value of type ``hint``."""
    if typing.get_origin(hint) is typing.Literal:
        words = typing.get_args(hint)
        return {"type": type(words[0]), "choices": words}
    return {"type": hint}
