"""What every experiment shares: flags from its config dataclass, and writing its outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from workbench.config import Config, field_docs
from workbench.plotting import save_figure

C = TypeVar("C", bound=Config)

__all__ = ["parse_config", "write_outputs"]


def parse_config(cls: type[C], argv: Sequence[str] | None = None, description: str | None = None) -> C:
    """Build a config from command-line flags, one ``--field-name`` per dataclass field.

    Tuples take several values (``--layers 0 3 5``), booleans are ``--flag/--no-flag``, ``Literal``
    fields offer their words as ``choices``, and the help text of each flag is the field's docstring.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kwargs: dict[str, Any] = {"default": default, "help": docs.get(f.name, "")}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(nargs="*", **_value_type(args[0] if args else str))
        elif typing.get_origin(hint) is typing.Literal:
            kwargs.update(_value_type(hint))
        elif args:  # Optional[X]
            kwargs.update(_value_type(args[0]))
        else:
            kwargs["type"] = hint
        parser.add_argument(flag, **kwargs)
    ns = vars(parser.parse_args(argv))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})


def _value_type(hint: Any) -> dict[str, Any]:
    """argparse ``type`` (and ``choices`` for a ``Literal``) of one value of type ``hint``."""
    if typing.get_origin(hint) is typing.Literal:
        words = typing.get_args(hint)
        return {"type": type(words[0]), "choices": words}
    return {"type": hint}


def write_outputs(
    out: str | Path,
    cfg: Config,
    *,
    figures: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    summary: dict[str, Any] | None = None,
    png: bool = True,
) -> Path:
    """Write figures (HTML + PNG), tables (CSV), ``summary.json`` and the resolved ``config.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_json(out / "config.json")
    for name, fig in (figures or {}).items():
        save_figure(fig, out / name, png=png)
    for name, table in (tables or {}).items():
        table.to_csv(out / f"{name}.csv", index=False)
    if summary is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
