"""Frozen, typed configuration dataclasses with JSON round trips, validated at construction.

Every config in the workbench is ``@dataclass(frozen=True)`` inheriting :class:`Config`; each field
carries a one-line attribute docstring, which :func:`field_docs` reads (the CLI shows it as help).

Every field is checked against its type when a config is built (also by ``replace`` and
``from_dict``), before the class's own ``__post_init__`` runs:

* ``int``: an integer (not a bool, not ``2.5``), and ``>= 0`` (ints are counts, sizes and indices);
* ``float``: a finite real number (no ``nan``/``inf``);
* ``bool``: ``True`` or ``False``; a ``Literal[...]``: one of its values;
* ``tuple[X, ...]`` and ``X | None``: each element, or ``None`` (a list given for a tuple is stored as a tuple).

A field narrows or widens the default range with :class:`Range` metadata, e.g.
``steps: Count = 200`` (``Count = Annotated[int, Range(ge=1)]``) or ``position: Index = -1``
(any integer; negative indices count from the end). ``bool`` and ``str`` fields are not ranged.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import math
import numbers
import textwrap
import typing
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

__all__ = [
    "Config",
    "ConfigError",
    "Count",
    "Fraction",
    "Index",
    "NonNegative",
    "Positive",
    "Range",
    "cache_key",
    "check_fields",
    "field_docs",
]


_C = TypeVar("_C", bound="Config")  # typing.Self, in a form beartype checks on methods of undecorated classes


class ConfigError(ValueError):
    """A config field holds a value its type or range does not allow."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field, attached as ``Annotated[int, Range(ge=1)]``; ``None``: unbounded."""

    ge: float | None = None
    """Smallest allowed value."""
    gt: float | None = None
    """Values must be greater than this."""
    le: float | None = None
    """Largest allowed value."""
    lt: float | None = None
    """Values must be less than this."""

    def violated(self, value: numbers.Real) -> str | None:
        """What ``value`` breaks (e.g. ``">= 1"``), or ``None`` when it is in range."""
        for bound, op, ok in (
            (self.ge, ">=", lambda b: value >= b),
            (self.gt, ">", lambda b: value > b),
            (self.le, "<=", lambda b: value <= b),
            (self.lt, "<", lambda b: value < b),
        ):
            if bound is not None and not ok(bound):
                return f"{op} {bound:g}"
        return None


_COUNT_RANGE = Range(ge=0)  # the range of a plain int field
Count = Annotated[int, Range(ge=1)]
"""An integer >= 1 (steps, batch sizes, lengths)."""
Index = Annotated[int, Range()]
"""Any integer: a layer or position where negative values count from the end."""
Positive = Annotated[float, Range(gt=0)]
"""A finite float > 0 (learning rates, widths)."""
NonNegative = Annotated[float, Range(ge=0)]
"""A finite float >= 0 (penalties, weight decay, clip norms)."""
Fraction = Annotated[float, Range(ge=0, le=1)]
"""A finite float in [0, 1]."""


class Config:
    """Mixin for frozen config dataclasses: ``to_dict``/``from_dict``, ``replace``, JSON files.

    Fields are validated at construction (see the module docstring); a subclass's own
    ``__post_init__`` runs after that check, so it may assume well-typed values.
    """

    if TYPE_CHECKING:  # every subclass is a dataclass
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        check_fields(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_checks_fields", False):
            return

        @functools.wraps(own)
        def __post_init__(self) -> None:
            if type(self).__post_init__ is __post_init__:  # only the outermost override checks
                check_fields(self)
            own(self)

        marked: Any = __post_init__  # a function attribute and a method replaced on the class: dynamic by design
        marked._checks_fields = True
        klass: Any = cls
        klass.__post_init__ = marked

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
        """Read a config written by :meth:`save_json` (``ValueError`` naming the file if it is not one)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not a config file ({err}): write it with {cls.__name__}.save_json, "
                "or fix the JSON (one object of field: value pairs)"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object of {cls.__name__} fields")
        return cls.from_dict(data)


def cache_key(data: Any, length: int = 12) -> str:
    """A short, stable hash of JSON-able ``data`` (keys sorted), naming a cache entry.

    >>> cache_key({"b": 1, "a": [2, 3]}) == cache_key({"a": [2, 3], "b": 1})
    True
    """
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


@cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError as err:
        raise TypeError(
            f"cannot resolve the field types of {cls.__name__} ({err}): define the config at module level "
            "and import every type its annotations name"
        ) from err


def check_fields(config: Config) -> None:
    """Check every field of a config dataclass against its type and :class:`Range` (``ConfigError`` if not)."""
    # typeshed's lru_cache wants Hashable arguments, and mypy does not count a class object as one
    hints = _hints(type(config))  # type: ignore[arg-type]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list) and _is_tuple(hints[f.name]):  # a list for a tuple field: stored as the tuple
            value = tuple(value)
            object.__setattr__(config, f.name, value)
        problem = _problem(hints[f.name], value)
        if problem is not None:
            where, text = problem
            raise ConfigError(f"{type(config).__name__}.{f.name}{where} {text}")


def _is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.get_origin(hint) is tuple or (
        type(None) in typing.get_args(hint) and len(args) == 1 and _is_tuple(args[0])
    )


def _problem(hint: Any, value: Any) -> tuple[str, str] | None:
    """``(where inside the value, what is wrong and the fix)``, or ``None`` when ``value`` fits ``hint``."""
    bounds = _COUNT_RANGE
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        bounds = next((e for e in extras if isinstance(e, Range)), bounds)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        return _problem(rest[0], value) if len(rest) == 1 else None
    if origin is Literal:
        if value not in args:
            return "", f"{value!r} is not a valid choice; choose one of {', '.join(map(repr, args))}"
        return None
    if origin is tuple:
        if not isinstance(value, tuple):
            return "", f"must be a tuple, got {type(value).__name__} {value!r}"
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        for i, item in enumerate(value):
            problem = _problem(inner if inner is not None else args[i] if i < len(args) else Any, item)
            if problem is not None:
                return f"[{i}]{problem[0]}", problem[1]
        return None
    if hint is bool:
        if not isinstance(value, bool):
            return "", f"must be True or False, got {value!r}"
        return None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return "", f"must be a whole number (it counts or indexes something), got {value!r}"
        return _out_of_range(bounds, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "", f"must be a number, got {type(value).__name__} {value!r}"
        if not math.isfinite(value):
            return "", f"must be a finite number, got {value!r}"
        return _out_of_range(Range() if bounds is _COUNT_RANGE else bounds, value)
    return None


def _out_of_range(bounds: Range, value: numbers.Real) -> tuple[str, str] | None:
    broken = bounds.violated(value)
    return None if broken is None else ("", f"must be {broken}, got {value!r}")


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
        definition = tree.body[0]
        if not isinstance(definition, ast.ClassDef):
            continue
        for node, after in itertools.pairwise(definition.body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
