"""Rebuild ``report.html`` from an experiment's output folder without re-running it.

    python -m experiments.report figures/model_diff [figures/realignments ...]

The page is rendered again from ``summary.json``, the stored figures (``NAME.plotly.json``) and ``report.json``
(header, captions, views, key figure; :mod:`workbench.report_store`), with the findings the experiment's
``findings`` function states from the summary today.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.findings import stated_findings
from workbench.report import write_report
from workbench.report_store import load_inputs

__all__ = ["main", "rebuild"]


def rebuild(folder: str | Path) -> Path:
    """Re-render ``folder/report.html`` from what the folder holds; returns its path."""
    folder = Path(folder)
    inputs = load_inputs(folder)
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    findings = stated_findings(inputs.experiment, summary)
    return write_report(folder, inputs.header, summary=summary, findings=findings, **inputs.content())


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: rebuild each folder given."""
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="experiment output folders (holding report.json)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            path = rebuild(folder)
        except FileNotFoundError as err:
            parser.exit(2, f"error: {err}\n")
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
