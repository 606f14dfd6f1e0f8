"""What a report is built from, stored beside it, so that ``report.html`` can be rebuilt from its folder alone.

An experiment's folder holds ``summary.json`` and ``config.json``; :func:`save_inputs` adds each plotly figure
as ``NAME.plotly.json`` (plotly's own JSON; ``plotly.io.read_json`` opens it) and ``report.json``: the header
(title, question, model, command, wall time, date), the experiment's module (whose ``findings`` function
states the findings), the figures' order, the key figure, the captions and the token views' HTML.
:func:`load_inputs` reads them back; ``python -m experiments.report FOLDER`` re-renders the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from workbench.report import ReportHeader

__all__ = ["FIGURE_SUFFIX", "INPUTS", "ReportInputs", "StoredView", "load_inputs", "save_inputs"]

FIGURE_SUFFIX = ".plotly.json"
"""A stored figure's file name is its name + this suffix (never ``summary.json``, ``config.json``, ``report.json``)."""
INPUTS = "report.json"
"""The file holding the rest of the report's inputs."""


@dataclass(frozen=True)
class StoredView:
    """A token view as the HTML it rendered to (its element ids stay those of the first render)."""

    text: str
    """The view's HTML (it calls the circuitsvis bundle the page embeds)."""

    def html(self) -> str:
        """The stored HTML."""
        return self.text


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report shows besides ``summary.json`` and its findings."""

    header: ReportHeader
    """Title, question and header lines, as first written (the date is the run's)."""
    experiment: str = ""
    """The experiment's module (``experiments.NAME``), whose ``findings`` module states its findings."""
    figures: Mapping[str, go.Figure] = field(default_factory=dict)
    """Figures by name, in the report's order."""
    captions: Mapping[str, str] = field(default_factory=dict)
    """Figure or view name -> caption."""
    views: Mapping[str, Any] = field(default_factory=dict)
    """Token views by name: anything with ``.html()`` (:class:`StoredView` once loaded)."""
    key_figure: str | None = None
    """The figure shown right after the findings."""

    def content(self) -> dict[str, Any]:
        """Keyword arguments of :func:`workbench.report.render_report` (all but summary and findings)."""
        return {
            "figures": dict(self.figures),
            "captions": dict(self.captions),
            "views": dict(self.views),
            "key_figure": self.key_figure,
        }


def save_inputs(out: str | Path, inputs: ReportInputs) -> list[Path]:
    """Write ``inputs`` into the folder ``out`` (figures as ``NAME.plotly.json``, the rest as ``report.json``);
    returns the paths written."""
    out = Path(out)
    paths = []
    for name, fig in inputs.figures.items():
        path = out / f"{name}{FIGURE_SUFFIX}"
        path.write_text(go.Figure(fig).to_json(), encoding="utf-8")
        paths.append(path)
    head = inputs.header
    record = {
        "experiment": inputs.experiment,
        "header": {"title": head.title, "question": head.question, "fields": dict(head.fields)},
        "figures": list(inputs.figures),
        "key_figure": inputs.key_figure,
        "captions": dict(inputs.captions),
        "views": {name: view.html() for name, view in inputs.views.items()},
    }
    path = out / INPUTS
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [*paths, path]


def load_inputs(out: str | Path) -> ReportInputs:
    """The inputs :func:`save_inputs` wrote into ``out``."""
    out = Path(out)
    path = out / INPUTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this folder was written before reports stored their inputs; re-run the experiment "
            "to write it"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    missing = [n for n in record["figures"] if not (out / f"{n}{FIGURE_SUFFIX}").is_file()]
    if missing:
        raise FileNotFoundError(f"stored figures {missing} are missing from {out} (expected NAME{FIGURE_SUFFIX})")
    head = record["header"]
    return ReportInputs(
        header=ReportHeader(head["title"], head.get("question", ""), head.get("fields", {})),
        experiment=record.get("experiment", ""),
        figures={n: pio.read_json(out / f"{n}{FIGURE_SUFFIX}") for n in record["figures"]},
        captions=record.get("captions", {}),
        views={n: StoredView(text) for n, text in record.get("views", {}).items()},
        key_figure=record.get("key_figure"),
    )
