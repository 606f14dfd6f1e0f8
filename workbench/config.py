"""Frozen, typed configuration dataclasses with JSON round trips.

Every config in the workbench is ``@dataclass(frozen=True)`` inheriting :class:`Config`; each field
carries a one-line attribute docstring, which :func:`field_docs` reads (the CLI shows it as help).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import itertools
import json
import textwrap
import typing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Config", "cache_key", "field_docs"]

_C = TypeVar("_C", bound="Config")  # typing.Self, in a form beartype checks on methods of undecorated classes


class Config:
    """Mixin for frozen config dataclasses: ``to_dict``/``from_dict``, ``replace``, JSON files."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists, nested configs dicts, paths strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Inverse of :meth:`to_dict`; unknown keys raise ``KeyError`` naming the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise KeyError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _typed(hints[k], v) for k, v in data.items()})

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def key(self) -> str:
        """Cache key: :func:`cache_key` of :meth:`to_dict`."""
        return cache_key(self.to_dict())

    @classmethod
    def load_json(cls: type[_C], path: str | Path) -> _C:
        """Read a config written by :meth:`save_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def cache_key(data: Any, length: int = 12) -> str:
    """A short, stable hash of JSON-able ``data`` (keys sorted), naming a cache entry.

    >>> cache_key({"b": 1, "a": [2, 3]}) == cache_key({"a": [2, 3], "b": 1})
    True
    """
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _typed(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is tuple and isinstance(value, list):
        inner = args[0] if args else Any
        return tuple(_typed(inner, v) for v in value)
    if args and type(None) in args and value is not None:  # Optional[X]
        return _typed(next(a for a in args if a is not type(None)), value)
    return value


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (its own and inherited), each joined into one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
