"""How findings are written: numbers formatted one way everywhere, and each experiment's ``findings`` looked up.

Each experiment package has a module ``findings.py`` with ``findings(summary) -> list[str]``: plain sentences
generated from its ``summary.json`` (value, interval or spread, seeds, and the control beside it), that the
report shows first. These helpers format the numbers in them; a test compares the printed numbers with
``summary.json`` rounded the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["at", "findings_function", "interval", "num", "spread", "stated_findings"]

Findings = Callable[[Mapping[str, Any]], list[str]]


def num(value: float, digits: int = 2, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` in front of a positive value when ``sign``).

    >>> num(5.1234), num(0.1156, 3, sign=True), num(-0.5, 1, sign=True)
    ('5.12', '+0.116', '-0.5')
    """
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def spread(values: Sequence[float] | None, mean: float, std: float | None, digits: int = 2) -> str:
    """``mean ± std over N seeds`` (N = ``len(values)``), or the mean of one seed said as such.

    >>> spread([4.13, 4.19, 4.17], 4.164, 0.025)
    '4.16 ± 0.03 over 3 seeds'
    >>> spread([4.13], 4.13, None)
    '4.13 (one seed, no spread)'
    """
    n = len(values) if values is not None else 0
    if n < 2 or std is None:
        return f"{num(mean, digits)} (one seed, no spread)"
    return f"{num(mean, digits)} ± {num(std, digits)} over {n} seeds"


def interval(low: float, high: float, digits: int = 2) -> str:
    """A 95% interval as ``[low, high]``.

    >>> interval(0.04515, 0.1775)
    '95% CI [0.05, 0.18]'
    """
    return f"95% CI [{num(low, digits)}, {num(high, digits)}]"


def at(summary: Mapping[str, Any], *path: str | int, default: Any = None) -> Any:
    """``summary[path[0]][path[1]]...``, or ``default`` where a key is missing or a level is not a mapping; an
    integer in ``path`` indexes a list level.

    >>> at({"a": {"b": 1}}, "a", "b"), at({"a": None}, "a", "b", default=0), at({"a": [{"b": 2}]}, "a", 0, "b")
    (1, 0, 2)
    """
    value: Any = summary
    for key in path:
        if isinstance(key, int) and isinstance(value, Sequence) and not isinstance(value, str):
            if not -len(value) <= key < len(value):
                return default
        elif not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return value


def findings_function(experiment: str) -> Findings | None:
    """The ``findings`` function of the experiment module ``experiment`` (``experiments.NAME``: its
    ``experiments.NAME.findings`` module), or None where it has none."""
    if not experiment:
        return None
    name = f"{experiment}.findings"
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    return importlib.import_module(name).findings if found else None


def stated_findings(experiment: str, summary: Mapping[str, Any] | None) -> list[str]:
    """What ``experiment``'s ``findings`` function states from ``summary`` (none without a function or summary):
    the one call a written report and its rebuild share, so both say the same."""
    state = findings_function(experiment)
    return state(summary) if state is not None and summary is not None else []
