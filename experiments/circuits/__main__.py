"""Which edges carry a behaviour, how faithful the circuits of each ranking are (MIB's CPR / CMD), and how the
circuit changes when the model is tuned.

Per task (IOI; sentiment: "I loved it." vs "I hated it." before the model-diff sentiment prompts, " good" vs
" bad"; capitals: "The capital of France is" vs another country, the two capitals): EAP, EAP-IG and a random
ranking of all edges, their faithfulness curves at MIB's circuit sizes, CPR (signed ranking) and CMD (absolute
ranking). Exact edge patching of every edge is out of reach on a CPU (~8 days for 123k edges, see
``benchmarks/edges.py``), so it enters as the fidelity check of the benchmark, not as a ranking here. Then the
sentiment circuit of the base model against the cached supervised model (last 2 layers tuned on negative
tweets; ``experiments.model_diff``): edges gained and lost, with both scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from experiments.cli import parse_config
from experiments.common import say, write_outputs
from experiments.fields import ExperimentConfig
from workbench.circuits.attribute import EdgeScores, attribute
from workbench.circuits.diff import circuit_diff
from workbench.circuits.faithfulness import PERCENTS, mib_scores
from workbench.circuits.graph import EdgeModel, edge_model
from workbench.circuits.plots import draw_edges, plot_curves
from workbench.circuits.tasks import EdgeTask, ioi_task, pair_task
from workbench.data.prompts import SENTIMENT_PROMPTS
from workbench.models import DEFAULT_MODEL, load_model
from workbench.pairs import check_pair
from workbench.tuning import make_tuned, tune_config

COUNTRIES = (
    (" France", " Paris"),
    (" Italy", " Rome"),
    (" Germany", " Berlin"),
    (" Spain", " Madrid"),
    (" Japan", " Tokyo"),
    (" Russia", " Moscow"),
)
"""Countries and capitals that SmolLM2 keeps as single tokens."""


@dataclass(frozen=True)
class CircuitsConfig(ExperimentConfig):
    """Edge circuits: rankings, faithfulness (CPR / CMD) and a base-vs-tuned diff."""

    model: str = DEFAULT_MODEL
    """Model: a registry name or an HF folder."""
    tasks: tuple[str, ...] = ("ioi", "sentiment", "capitals")
    """Tasks: ioi, sentiment, capitals."""
    ioi_prompts: int = 8
    """IOI prompts (sentiment has 8, capitals 6)."""
    ig_steps: int = 5
    """EAP-IG integration steps (MIB: 5)."""
    diff_with: str = "supervised"
    """The diff's tuned model: supervised (the cached model of experiments.model_diff) or self (a null pair)."""
    diff_percent: float = 1.0
    """Circuit size of the diff, in percent of the edges."""
    out: str = "figures/circuits"
    """Output folder."""
    quick: bool = False
    """Small run for tests: IOI only, 2 prompts, 2 EAP-IG steps, a null diff, no PNGs."""
    progress: bool = True
    """Say which phase runs."""
    seed: int = 0
    """Seed (the random ranking, the IOI sample)."""

    def check(self) -> None:
        """Pre-flight: known task and tuned-model names."""
        unknown = set(self.tasks) - {"ioi", "sentiment", "capitals"}
        if unknown:
            raise ValueError(f"--tasks {sorted(unknown)}: choose from ioi, sentiment, capitals")
        if self.diff_with not in ("supervised", "self"):
            raise ValueError(f"--diff-with {self.diff_with!r}: choose supervised or self")


def make_task(model, name: str, prompts: int, seed: int) -> EdgeTask:
    """The task ``name`` on ``model``'s tokenizer."""
    if name == "ioi":
        return ioi_task(model, prompts, seed)
    if name == "sentiment":
        return pair_task(
            model,
            "sentiment",
            [f"I loved it. {p}" for p in SENTIMENT_PROMPTS],
            [f"I hated it. {p}" for p in SENTIMENT_PROMPTS],
            [(" good", " bad")] * len(SENTIMENT_PROMPTS),
        )
    pairs = list(zip(COUNTRIES, COUNTRIES[1:] + COUNTRIES[:1]))
    return pair_task(
        model,
        "capitals",
        [f"The capital of{a[0]} is" for a, _ in pairs],
        [f"The capital of{b[0]} is" for _, b in pairs],
        [(a[1], b[1]) for a, b in pairs],
    )


def rankings(cfg: CircuitsConfig, em: EdgeModel, task: EdgeTask) -> list[EdgeScores]:
    """EAP, EAP-IG and a random ranking of every edge."""
    steps = 2 if cfg.quick else cfg.ig_steps
    eap = attribute(em, task, "eap", batch_size=len(task))
    ig = attribute(em, task, "eap-ig", steps=steps, batch_size=len(task))
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = (torch.rand(em.graph.n_up, em.graph.n_down, generator=gen) - 0.5) * em.graph.mask
    return [eap, ig, EdgeScores(em.graph, noise, "random", task.name)]


def main(cfg: CircuitsConfig) -> dict:
    """Rank, score and diff; write figures, tables, ``summary.json`` and ``report.html`` to ``cfg.out``."""
    cfg = cfg.preflight()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    model = load_model(cfg.model)
    em = edge_model(model)
    tasks = ("ioi",) if cfg.quick else cfg.tasks
    prompts = 2 if cfg.quick else cfg.ioi_prompts
    summary: dict = {"model": str(model.cfg.model_name), "edges": em.graph.n_edges, "percents": PERCENTS, "scores": {}}
    figures, tables, curves_all, timing = {}, {}, [], {}
    by_task: dict[str, dict[str, EdgeScores]] = {}
    for name in tasks:
        task = make_task(model, name, prompts, cfg.seed)
        if cfg.quick:
            task = EdgeTask(task.name, task.clean[:2], task.corrupt[:2], task.answers[:2])
        say(cfg, f"{name}: ranking {em.graph.n_edges} edges by EAP, EAP-IG, random ({len(task)} prompts)")
        t0 = time.perf_counter()
        ranked = rankings(cfg, em, task)
        timing[f"{name}_rank_s"] = time.perf_counter() - t0
        by_task[name] = {s.method: s for s in ranked}
        curves = []
        t0 = time.perf_counter()
        for scores in ranked:
            cpr, cmd, signed, absolute = mib_scores(em, task, scores, batch_size=len(task))
            summary["scores"].setdefault(name, {})[scores.method] = {"cpr": cpr, "cmd": cmd}
            curves += [signed, absolute]
            summary["scores"][name]["m_full"], summary["scores"][name]["m_empty"] = signed.m_full, signed.m_empty
        timing[f"{name}_faithfulness_s"] = time.perf_counter() - t0
        curves_all += curves
        figures[f"curves_{name}"] = plot_curves(curves, f"Faithfulness by circuit size ({name})")
        figures[f"edges_{name}"] = draw_edges(by_task[name]["eap-ig"], 40)
        tables[f"top_edges_{name}"] = by_task[name]["eap-ig"].to_frame().sort_values("score", ascending=False).head(200)
    tables["curves"] = pd.concat([c.to_frame() for c in curves_all], ignore_index=True)
    diff_name = "ioi" if cfg.quick else ("sentiment" if "sentiment" in tasks else tasks[0])
    tuned = "self" if cfg.quick else cfg.diff_with
    say(cfg, f"circuit diff on {diff_name}: base vs {tuned}")
    if tuned == "self":
        other = em
    else:
        tuned_model = make_tuned("supervised", tune=tune_config(cfg.model), progress=cfg.progress).model
        check_pair(model, tuned_model, names=("base", "supervised model"))
        other = edge_model(tuned_model)
    task = make_task(model, diff_name, prompts, cfg.seed)
    if cfg.quick:
        task = EdgeTask(task.name, task.clean[:2], task.corrupt[:2], task.answers[:2])
    base_scores = by_task[diff_name]["eap-ig"]
    tuned_scores = attribute(other, task, "eap-ig", steps=2 if cfg.quick else cfg.ig_steps, batch_size=len(task))
    n = max(1, round(cfg.diff_percent / 100 * em.graph.n_edges))
    diff = circuit_diff(base_scores, tuned_scores, n)
    summary["diff"] = {"task": diff_name, "tuned": tuned, "n": n, **diff.counts()}
    table = diff.to_frame()
    summary["diff"]["largest_changes"] = table.head(10).to_dict("records")
    tables["circuit_diff"] = table
    figures["edges_diff_tuned"] = draw_edges(tuned_scores, 40, f"Top 40 edges of the tuned model ({diff_name})")
    summary["seconds"] = {**timing, "total": time.perf_counter() - started}
    write_outputs(Path(cfg.out), cfg, figures=figures, tables=tables, summary=summary, png=not cfg.quick)
    return summary


if __name__ == "__main__":
    main(parse_config(CircuitsConfig, description=__doc__.splitlines()[0]))
