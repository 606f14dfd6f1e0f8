"""The self-contained HTML report every experiment writes (``OUT/report.html``).

One file a reader opens offline: plotly.js and, when the report holds token views, the circuitsvis
bundle are embedded once in its head; then a header (the question, model, preset, command, wall time,
date), the findings (sentences the experiment generates from its numbers), the key figure, the key
numbers of ``summary.json`` as tables with readable labels, every other figure inline with a caption
saying what to look at, the circuitsvis views (:mod:`workbench.views`), and links to the CSV tables and
the PNG figures beside it. What the page is built from is stored beside it (:mod:`workbench.report_store`),
so it can be rebuilt without re-running the experiment.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from workbench.views import circuitsvis_js

__all__ = [
    "ReportHeader",
    "ViewLike",
    "figure_caption",
    "pack_page",
    "readable",
    "render_report",
    "summary_tables",
    "unpacked_libraries",
    "utc_now",
    "write_report",
]

MAX_ROWS = 30
"""Rows shown of a long table (the rest are in ``summary.json`` / the CSV files)."""

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1200px;margin:0 auto;padding:16px 24px}
h1{margin:8px 0 4px}h2{margin-top:36px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.question{font-size:1.15em;color:#444;margin:4px 0 16px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa;overflow-wrap:normal}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-width:100%;overflow-x:auto}
.tables{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}.tables>div{min-width:0;max-width:100%}
figure{margin:24px 0;padding:0}figcaption{color:#444;margin:4px 0}
.plot{width:100%}.files a{margin-right:12px;font-size:13px}
.note{color:#666;font-size:12px}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}
.findings li{margin:4px 0;line-height:1.4}
.cv-view{max-width:100%;overflow-x:auto}.cv-cell{flex:1 1 420px;min-width:0}.view-title{font-weight:600}
"""


@runtime_checkable
class ViewLike(Protocol):
    """A token view the report shows: a :class:`workbench.views.View` or ``Row``, or the HTML one rendered to
    (:class:`workbench.report_store.StoredView`)."""

    def html(self) -> str:
        """HTML that renders the view once the page has loaded the circuitsvis bundle."""
        ...


@dataclass(frozen=True)
class ReportHeader:
    """What the report says about the run before any number."""

    title: str
    """The experiment's name (page title)."""
    question: str = ""
    """The question the experiment answers."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """Further header lines in order (model, preset, command, wall time, date, ...)."""


def figure_caption(fig: go.Figure, name: str) -> str:
    """The caption used when none is given: the figure's title without markup, else its name."""
    text = fig.layout.title.text or ""
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split()) or name


_ACRONYMS = {
    "irm": "IRM", "iia": "IIA", "kl": "KL", "dla": "DLA", "rl": "RL", "sft": "SFT", "cpr": "CPR", "cmd": "CMD",
    "adl": "ADL", "ci": "CI", "ci95": "95% CI", "mlp": "MLP", "das": "DAS", "ioi": "IOI", "heldout": "held-out",
    "mb": "MB", "vader": "VADER", "eap": "EAP", "eap-ig": "EAP-IG",
}  # fmt: skip


def readable(key: str) -> str:
    """A summary key as a label: words instead of underscores, `` › `` between the levels of a flattened key,
    acronyms in capitals; the first letter capitalised.

    >>> readable("negative.train_loss_base.values")
    'Negative › train loss base › values'
    >>> readable("heldout_loss_irm")
    'Held-out loss IRM'
    """
    levels = [" ".join(_ACRONYMS.get(w.lower(), w) for w in part.split("_")) for part in str(key).split(".")]
    text = " › ".join(levels)
    return text[:1].upper() + text[1:]


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, separators=(", ", ": "))
        text = re.sub(r"(\d\.\d{4})\d+", r"\1", text)
        return text if len(text) <= 90 else text[:87] + "..."
    return str(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value)


def summary_tables(summary: Mapping[str, Any], skip: Sequence[str] = ("config",)) -> list[tuple[str, pd.DataFrame]]:
    """The key numbers of a summary as titled tables, in the summary's order.

    Top-level scalars form the first table (``overview``). A mapping of mappings (e.g. one entry per
    alignment) becomes one column per entry; a mapping of equally long lists one column per key; a
    list of records one row per record; any other mapping a key/value table with nested keys dotted.
    Long tables keep their first :data:`MAX_ROWS` rows (the full values stay in ``summary.json``).
    """
    overview: dict[str, Any] = {}
    tables: list[tuple[str, pd.DataFrame]] = []
    for key, value in summary.items():
        if key in skip:
            continue
        if isinstance(value, Mapping) and value:
            inner = list(value.values())
            if len(inner) > 1 and all(isinstance(v, Mapping) for v in inner):
                flat = {str(k): _flatten(v) for k, v in value.items()}
                frame = pd.DataFrame(flat)
            elif all(_scalar_list(v) for v in inner) and len({len(v) for v in inner}) == 1 and len(inner[0]) > 1:
                frame = pd.DataFrame({str(k): v for k, v in value.items()})
            else:
                flat = _flatten(value)
                frame = pd.DataFrame({"key": list(flat), "value": list(flat.values())}).set_index("key")
            tables.append((key, frame))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables.append((key, pd.DataFrame([_flatten(v) for v in value])))
        else:
            overview[key] = value
    if overview:
        tables.insert(0, ("overview", pd.DataFrame({"value": overview.values()}, index=list(overview))))
    return tables


def _table_html(frame: pd.DataFrame) -> str:
    shown = frame.head(MAX_ROWS)
    index = not isinstance(shown.index, pd.RangeIndex)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ([""] if index else []) + [readable(c) for c in shown.columns])
    rows = []
    for label, row in shown.iterrows():
        cells = [f"<th>{html.escape(readable(str(label)))}</th>"] if index else []
        for v in row:
            v = None if isinstance(v, float) and pd.isna(v) else v
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(_cell(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f'<div class="note">first {MAX_ROWS} of {len(frame)} rows; all in summary.json</div>'
        if len(frame) > MAX_ROWS
        else ""
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}</div>'
    )


def _figure_html(name: str, fig: go.Figure) -> str:
    fig = go.Figure(fig)
    fig.update_layout(width=None, autosize=True)  # fit the page's width (a fixed width would scroll at 1366 px)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{name}",
        config={"responsive": True, "displaylogo": False},
    )


def _figure_block(out: Path, name: str, fig: go.Figure, captions: Mapping[str, str]) -> str:
    esc = html.escape
    # the PNG only: per-figure HTML files are for local use (git-ignored under figures/, absent on a clone)
    files = f'<a href="{esc(name)}.png">{esc(name)}.png</a>' if (out / f"{name}.png").is_file() else ""
    return (
        f'<figure id="figure-{esc(name)}"><h3>{esc(name)}</h3><div class="plot">{_figure_html(name, fig)}</div>'
        f"<figcaption>{esc(captions.get(name) or figure_caption(fig, name))}</figcaption>"
        f'<div class="files">{files}</div></figure>'
    )


def _csv_rows(path: Path) -> tuple[int, int]:
    columns = len(pd.read_csv(path, nrows=0).columns)
    with path.open("rb") as f:
        lines = sum(1 for _ in f)
    return max(lines - 1, 0), columns


def render_report(
    out: str | Path,
    header: ReportHeader,
    *,
    summary: Mapping[str, Any] | None = None,
    figures: Mapping[str, go.Figure] | None = None,
    captions: Mapping[str, str] | None = None,
    views: Mapping[str, ViewLike] | None = None,
    findings: Sequence[str] = (),
    key_figure: str | None = None,
) -> str:
    """The report's HTML; ``out`` is the folder it will sit in (CSV tables, PNG figures and
    sub-reports found there are linked). Captions default to :func:`figure_caption`.

    Args:
        findings: plain sentences stating what the run found, shown first (none: no Findings section).
        key_figure: the figure shown right after the findings, before the tables (one of ``figures``).
    """
    out = Path(out)
    figures, captions, views = figures or {}, captions or {}, views or {}
    unknown = set(captions) - set(figures) - set(views)
    if unknown:
        raise KeyError(f"captions for unknown figures or views {sorted(unknown)}; names: {sorted({*figures, *views})}")
    if key_figure is not None and key_figure not in figures:
        raise KeyError(f"key figure {key_figure!r} is not among the figures {sorted(figures)}: pass one of them")
    esc = html.escape
    head_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in header.fields.items())
    parts = [f"<h1>{esc(header.title)}</h1>"]
    if header.question:
        parts.append(f'<p class="question">{esc(header.question)}</p>')
    parts.append(f'<div class="scroll"><table>{head_rows}</table></div>')
    if findings:
        items = "".join(f"<li>{esc(sentence)}</li>" for sentence in findings)
        parts.append(f'<h2 id="findings">Findings</h2><ul class="findings">{items}</ul>')
    if key_figure is not None:
        parts.append(_figure_block(out, key_figure, figures[key_figure], captions))
    if summary:
        tables = summary_tables(summary)
        blocks = "".join(f"<div><h3>{esc(readable(title))}</h3>{_table_html(frame)}</div>" for title, frame in tables)
        parts.append(f'<h2 id="numbers">Key numbers</h2><div class="tables">{blocks}</div>')
    others = {name: fig for name, fig in figures.items() if name != key_figure}
    if others:
        parts.append('<h2 id="figures">Figures</h2>')
        parts += [_figure_block(out, name, fig, captions) for name, fig in others.items()]
    if views:
        parts.append('<h2 id="views">Token views</h2>')
        for name, view in views.items():
            caption = f"<figcaption>{esc(captions[name])}</figcaption>" if name in captions else ""
            parts.append(f'<figure id="view-{esc(name)}">{view.html()}{caption}</figure>')
    csvs = sorted(out.glob("*.csv"))
    if csvs:
        items = "".join(
            f'<li><a href="{esc(p.name)}">{esc(p.name)}</a> <span class="note">{r} rows x {c} columns</span></li>'
            for p, (r, c) in ((p, _csv_rows(p)) for p in csvs)
        )
        parts.append(f'<h2 id="tables">Tables</h2><ul>{items}</ul>')
    subs = sorted(out.glob("*/report.html"))
    if subs:
        links = "".join(f'<li><a href="{esc(p.parent.name)}/report.html">{esc(p.parent.name)}</a></li>' for p in subs)
        parts.append(f'<h2 id="more">Further reports</h2><ul>{links}</ul>')
    scripts = '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>'
    scripts += f'<script type="text/javascript">{get_plotlyjs()}</script>' if figures else ""
    scripts += f'<script type="text/javascript">{circuitsvis_js()}</script>' if views else ""
    return pack_page(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(header.title)}</title><style>{_STYLE}</style>{scripts}</head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


LIBRARY_MIN_CHARS = 100_000
"""An inline script at least this long is a library (plotly.js, circuitsvis): :func:`pack_page` compresses it."""

_SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.S)
_PACKED = 'type="application/x-wb-gzip-base64"'
_DEFERRED = 'type="text/x-wb-deferred"'
_LOADER = (
    '<script class="wb-loader">(async () => {'
    "for (const el of document.querySelectorAll('script.wb-lib')) {"
    "const bytes = Uint8Array.from(atob(el.textContent), c => c.charCodeAt(0));"
    "const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));"
    "const s = document.createElement('script'); s.text = await new Response(stream).text();"
    "document.head.appendChild(s);}"
    "for (const el of document.querySelectorAll('script[type=\"text/x-wb-deferred\"]')) {"
    "const s = document.createElement('script'); s.text = el.textContent; el.replaceWith(s);}"
    "document.documentElement.dataset.wbReady = '1';})();</script>"
)


def pack_page(page: str) -> str:
    """``page`` with its inline libraries gzip-compressed and base64-encoded (plotly.js: 4.6 MB -> 1.8 MB),
    decompressed by the browser on load (``DecompressionStream``, no network), and the page's own scripts
    in ``<body>`` run after them. Keeps a self-contained report under 4 MiB. Idempotent.

    >>> packed = pack_page("<html><head></head><body><script>f()</script></body></html>")
    >>> 'type="text/x-wb-deferred">f()</script>' in packed and pack_page(packed) == packed
    True
    """
    if 'class="wb-loader"' in page:
        return page
    body_start = page.index("<body")

    def pack(match: re.Match) -> str:
        text = match.group(2)
        if len(text) >= LIBRARY_MIN_CHARS:
            data = base64.b64encode(gzip.compress(text.encode("utf-8"), mtime=0)).decode("ascii")
            return f'<script class="wb-lib" {_PACKED}>{data}</script>'
        if match.start() > body_start:
            return f"<script {_DEFERRED}>{text}</script>"
        return match.group(0)

    return _SCRIPT.sub(pack, page).replace("</body>", f"{_LOADER}</body>", 1)


def unpacked_libraries(page: str) -> list[str]:
    """The libraries :func:`pack_page` packed into ``page``, decompressed (for checks)."""
    return [
        gzip.decompress(base64.b64decode(m.group(2))).decode("utf-8")
        for m in _SCRIPT.finditer(page)
        if _PACKED in m.group(1)
    ]


def write_report(out: str | Path, header: ReportHeader, **content: Any) -> Path:
    """Write :func:`render_report` to ``out/report.html`` (the folder is made); returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(render_report(out, header, **content), encoding="utf-8")
    return path


def utc_now() -> str:
    """The current time for a report header (UTC, to the minute)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
