"""What every experiment shares: flags from its config dataclass, and writing its outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from experiments.checks import preflight
from workbench.config import Config, field_docs
from workbench.plotting import save_figure
from workbench.report import ReportHeader, utc_now, write_report
from workbench.views import Row, View

C = TypeVar("C", bound=Config)

_IMPORTED = time.perf_counter()
"""When the experiment's process imported this module: the start of a run's wall time unless it measures its own."""

__all__ = [
    "arg_type",
    "command_line",
    "flag_kwargs",
    "jsonable",
    "parse_config",
    "report_header",
    "say",
    "write_outputs",
]


def parse_config(
    cls: type[C], argv: Sequence[str] | None = None, description: str | None = None, *, check: bool = True
) -> C:
    """Build a config from command-line flags, one ``--field-name`` per dataclass field.

    Tuples take several values (``--layers 0 3 5``), booleans are ``--flag/--no-flag``, ``Literal``
    fields offer their words as ``choices``, and the help text of each flag is the field's docstring.
    The config is validated when it is built and, with ``check``, by :func:`experiments.checks.preflight`
    (devices, folders, models, corpora, hook kinds, layers), so a bad flag exits at once with
    ``error: <what is wrong and the fix>`` (status 2).
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {experiment_module(cls)}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(flag, default=default, help=docs.get(f.name, ""), **flag_kwargs(hints[f.name]))
    ns = vars(parser.parse_args(argv))
    try:
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})
        return preflight(cfg) if check else cfg
    except (ValueError, KeyError, IndexError, OSError) as err:
        parser.error(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))


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


def write_outputs(
    out: str | Path,
    cfg: Config,
    *,
    figures: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    summary: dict[str, Any] | None = None,
    png: bool = True,
    captions: Mapping[str, str] | None = None,
    views: Mapping[str, View | Row] | None = None,
    question: str | None = None,
    seconds: float | None = None,
) -> Path:
    """Write figures (HTML + PNG), tables (CSV), ``summary.json``, the resolved ``config.json`` and
    ``report.html`` (:mod:`workbench.report`: every figure inline with its caption, the summary as tables).

    Args:
        captions: figure or view name -> one sentence saying what to look at (default: the figure's title).
        views: circuitsvis views (:mod:`workbench.views`) shown in the report after the figures.
        question: what the experiment asks (default: the first line of its module's docstring).
        seconds: wall time of the run (default: ``summary["seconds"]`` (or its ``"total"``), else the time
            since the experiment imported this module).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    captions = dict(captions or {})
    cfg.save_json(out / "config.json")
    for name, fig in (figures or {}).items():
        save_figure(fig, out / name, png=png, caption=captions.get(name))
    for name, table in (tables or {}).items():
        table.to_csv(out / f"{name}.csv", index=False)
    if summary is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable) + "\n")
    if seconds is None:
        given = (summary or {}).get("seconds")
        given = given.get("total") if isinstance(given, Mapping) else given
        seconds = float(given) if isinstance(given, (int, float)) else time.perf_counter() - _IMPORTED
    summary_plain = json.loads(json.dumps(summary, default=jsonable)) if summary is not None else None
    write_report(
        out,
        report_header(cfg, summary_plain, question=question, seconds=seconds),
        summary=summary_plain,
        figures=figures,
        captions=captions,
        views=views,
    )
    return out


def experiment_module(cfg: Config | type[Config]) -> str:
    """What ``python -m`` runs for ``cfg``: the experiment's package ``experiments.NAME`` for a config defined in
    it, else the module defining ``cfg``'s class (also when that module runs as ``-m``)."""
    name = (cfg if isinstance(cfg, type) else type(cfg)).__module__
    if name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        name = spec.name if spec is not None else name
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "experiments" and len(parts) > 2 else name


def say(cfg: Config, text: str) -> None:
    """Say which phase runs: ``[experiment] text`` on stderr, when ``cfg.progress`` is on."""
    if getattr(cfg, "progress", False):
        print(f"[{experiment_module(cfg).rpartition('.')[2]}] {text}", file=sys.stderr, flush=True)


def command_line(cfg: Config) -> str:
    """The command that reproduces ``cfg``: the one it records (``cfg.command``), else ``python -m MODULE`` with a
    flag for each field not at its default."""
    if getattr(cfg, "command", ""):
        return cfg.command
    words = ["python", "-m", experiment_module(cfg)]
    defaults = type(cfg)()
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), getattr(defaults, f.name)
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            words += [flag, *map(str, value)]
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def report_header(
    cfg: Config, summary: Mapping[str, Any] | None, *, question: str | None = None, seconds: float | None = None
) -> ReportHeader:
    """The report's header: the question, model, preset, command, wall time and date of a run of ``cfg``."""
    module = sys.modules.get(experiment_module(cfg)) or sys.modules.get(type(cfg).__module__)
    doc = (module.__doc__ or "") if module is not None else ""
    question = question or (doc.strip().splitlines() or [""])[0].replace("``", "")
    summary = summary or {}
    model = summary.get("model") or summary.get("base") or getattr(cfg, "model", None) or getattr(cfg, "base", "")
    fields = {"model": str(model)}
    if "tuned" in summary:
        fields["compared with"] = str(summary["tuned"])
    fields["preset"] = "quick (--quick: small sizes, for tests)" if getattr(cfg, "quick", False) else "full"
    fields["command"] = command_line(cfg)
    fields["wall time"] = f"{seconds / 60:.1f} min ({seconds:.0f} s)" if seconds is not None else "not recorded"
    fields["date"] = utc_now()
    fields["config"] = "config.json (all settings), summary.json (all numbers)"
    return ReportHeader(experiment_module(cfg).rpartition(".")[2], question, fields)


def jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
