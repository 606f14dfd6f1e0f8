"""What every experiment shares: writing its outputs and its report's header (its flags: :mod:`experiments.cli`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from experiments.findings import stated_findings
from workbench.config import Config
from workbench.distributed import on_main
from workbench.plotting import save_figure
from workbench.report import ReportHeader, utc_now, write_report
from workbench.report_store import ReportInputs, load_inputs, save_inputs
from workbench.views import Row, View

C = TypeVar("C", bound=Config)

_IMPORTED = time.perf_counter()
"""When the experiment's process imported this module: the start of a run's wall time unless it measures its own."""

__all__ = [
    "command_line",
    "jsonable",
    "report_header",
    "say",
    "write_json",
    "write_outputs",
]


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
    key_figure: str | None = None,
) -> Path:
    """Write figures (HTML + PNG), tables (CSV), ``summary.json``, the resolved ``config.json`` and
    ``report.html`` (:mod:`workbench.report`: the findings first, then the key figure, the summary as tables
    and every other figure inline with its caption), and what the report is built from (``NAME.plotly.json``
    per figure and ``report.json``, :mod:`workbench.report_store`), so that ``python -m experiments.report OUT``
    rebuilds it without re-running.

    The folder is written as a unit: everything goes into a hidden sibling (``.NAME.writing-*``) that replaces
    ``out`` only when complete, so a run killed while writing leaves the previous complete folder (and a
    ``.writing-`` folder, recognisably unfinished), never one that mixes two runs. Subfolders of the previous
    ``out`` that this call does not write (another unit's outputs, e.g. ``model_diff``'s ``irm/``) are kept.
    Under ``accelerate launch`` only the main process writes; the others wait until it has
    (:func:`workbench.distributed.on_main`).

    Args:
        captions: figure or view name -> one sentence saying what to look at (default: the figure's title).
        views: circuitsvis views (:mod:`workbench.views`) shown in the report after the figures.
        question: what the experiment asks (default: the first line of its module's docstring).
        seconds: wall time of the run (default: ``summary["seconds"]`` (or its ``"total"``), else the time
            since the experiment imported this module).
        key_figure: the figure shown right after the findings.

    The findings shown first are what the experiment's ``findings`` module (:mod:`experiments.findings`, found
    from ``cfg``'s experiment) states from ``summary`` as written to ``summary.json``: the rebuild states them
    again the same way.
    """
    report = {"captions": captions, "views": views, "question": question, "key": key_figure}
    return on_main(lambda: _write_unit(Path(out), cfg, figures, tables, summary, png, report, seconds))


def _write_unit(target, cfg, figures, tables, summary, png, report, seconds) -> Path:
    """:func:`write_outputs` on one process: into a hidden sibling, then swapped into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    out.chmod(0o777 & ~umask)  # an ordinary folder's permissions, not mkdtemp's private 0700
    try:
        _write_all(out, cfg, figures, tables, summary, png, report, seconds)
        _swap_into_place(out, target)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return target


def _write_all(out, cfg, figures, tables, summary, png, report, seconds) -> None:
    captions = dict(report["captions"] or {})
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
    header = report_header(cfg, summary_plain, question=report["question"], seconds=seconds)
    experiment = experiment_module(cfg)
    inputs = ReportInputs(header, experiment, figures or {}, captions, report["views"] or {}, report["key"])
    save_inputs(out, inputs)
    stored = load_inputs(out)  # the page is drawn from what is stored, so that a rebuild draws the same page
    findings = stated_findings(experiment, summary_plain)
    write_report(out, header, summary=summary_plain, findings=findings, **stored.content())


def _swap_into_place(new: Path, target: Path) -> None:
    """Replace ``target`` by the complete folder ``new`` (two renames; the old folder's untouched subfolders move
    into ``new`` first)."""
    if not target.exists():
        os.replace(new, target)
        return
    for sub in target.iterdir():
        if sub.is_dir() and not (new / sub.name).exists():
            os.replace(sub, new / sub.name)
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2, default=jsonable) + "\n")
    os.replace(tmp, path)


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
    if "unfinished" in summary:
        fields["unfinished input"] = str(summary["unfinished"])
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
