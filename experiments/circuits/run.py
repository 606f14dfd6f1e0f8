"""Rank every edge per task and method, score circuits as MIB does, diff base vs tuned, and write."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from experiments.circuits.config import CircuitsConfig
from experiments.common import say, write_outputs
from workbench.circuits.attribute import EdgeScores, attribute
from workbench.circuits.diff import circuit_diff
from workbench.circuits.exact import exact_scores
from workbench.circuits.faithfulness import PERCENTS, mib_scores
from workbench.circuits.graph import EdgeModel, edge_model
from workbench.circuits.planted import planted_circuit, planted_task, recovery
from workbench.circuits.plots import draw_edges, plot_curves
from workbench.circuits.tasks import EdgeTask, ioi_task, pair_task
from workbench.data.prompts import SENTIMENT_PROMPTS
from workbench.interventions.price_tagger import price_tokenizer
from workbench.models import load_model
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


def planted(cfg: CircuitsConfig) -> tuple[dict, pd.DataFrame]:
    """The known answer: EAP, EAP-IG and exact patching (all edges: affordable here) on the planted circuit.

    Precision and recall of each method's top-``k`` edges against the planted ones, with a random ranking's
    expected value beside them, and each method's CPR / CMD on the planted task.
    """
    truth_model = planted_circuit(price_tokenizer(), seed=cfg.seed)
    em = edge_model(truth_model.model)
    g = em.graph
    truth = g.flat(truth_model.edges)
    task = planted_task(len(truth_model.model.tokenizer), seed=cfg.seed + 1)
    size = int(truth.sum())
    sizes = sorted({1, size, 2 * size, 4 * size, 8 * size} & set(range(1, g.n_edges + 1)))
    ranked = [
        attribute(em, task, "eap", batch_size=len(task)),
        attribute(em, task, "eap-ig", steps=2 if cfg.quick else cfg.ig_steps, batch_size=len(task)),
        exact_scores(em, task, batch_size=len(task)),
    ]
    out: dict = {"edges": g.n_edges, "size": size, "head": list(truth_model.head), "accuracy": truth_model.accuracy}
    rows = []
    for scores in ranked:
        cpr, cmd, _, _ = mib_scores(em, task, scores, batch_size=len(task))
        found = recovery(truth, scores.flat(), sizes)
        at_size = next(r for r in found if r["k"] == size)
        out[scores.method] = {"cpr": cpr, "cmd": cmd, "recall": at_size["recall"], "precision": at_size["precision"]}
        rows += [{"method": scores.method, **r} for r in found]
    chance = size / g.n_edges
    rows += [{"method": "random (expected)", "k": k, "precision": chance, "recall": k / g.n_edges} for k in sizes]
    out["random"] = {"recall": chance, "precision": chance}
    return out, pd.DataFrame(rows)


def tuned_models(cfg: CircuitsConfig, base, seeds: tuple[int, ...]) -> list:
    """The supervised comparison model (trained on the bare texts the tasks score), once per tuning seed."""
    models = []
    for seed in seeds:
        recipe = tune_config(cfg.model, chat=False, seed=seed)
        tuned = make_tuned("supervised", tune=recipe, progress=cfg.progress).model
        check_pair(base, tuned, names=("base", f"supervised model (seed {seed})"))
        models.append(tuned)
    return models


def diff_noise(
    em: EdgeModel,
    tuned: EdgeModel,
    task: EdgeTask,
    n: int,
    ig_steps: int,
    base_scores: EdgeScores,
    tuned_scores: EdgeScores,
    other_seed: list[EdgeScores],
) -> dict[str, float]:
    """How much of a base-vs-tuned circuit diff is noise: Jaccard indices of circuits that should agree.

    * ``tuned_vs_other_seed`` / ``base_vs_other_seed``: a second tuning seed's circuit against the first's and
      against the base's (when there is a tuned model): the diff is a property of the tuning only if the two
      tuned circuits agree with each other more than with the base;
    * ``base_halves`` / ``base_vs_tuned_halves``: the base's circuit on the first half of the prompts against its
      circuit on the second half (prompt noise), and the base against the tuned model on the first half (the diff
      at the same prompt count).
    """
    half = len(task) // 2
    out: dict[str, float] = {}
    if other_seed:
        out["tuned_vs_other_seed"] = circuit_diff(tuned_scores, other_seed[0], n).jaccard
        out["base_vs_other_seed"] = circuit_diff(base_scores, other_seed[0], n).jaccard
    if half >= 1:
        first, second = task.subset(slice(0, half)), task.subset(slice(half, 2 * half))
        base_first, base_second, tuned_first = (
            attribute(m, t, "eap-ig", steps=ig_steps, batch_size=half)
            for m, t in ((em, first), (em, second), (tuned, first))
        )
        out["base_halves"] = circuit_diff(base_first, base_second, n).jaccard
        out["base_vs_tuned_halves"] = circuit_diff(base_first, tuned_first, n).jaccard
    return out


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
    made: dict[str, EdgeTask] = {}
    for name in tasks:
        task = make_task(model, name, prompts, cfg.seed)
        made[name] = task = task.subset(slice(0, 2)) if cfg.quick else task
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
    say(cfg, "planted circuit: training the known answer, ranking its edges by EAP, EAP-IG and exact patching")
    t0 = time.perf_counter()
    summary["planted"], tables["planted_recovery"] = planted(cfg)
    timing["planted_s"] = time.perf_counter() - t0
    diff_name = "ioi" if cfg.quick else ("sentiment" if "sentiment" in tasks else tasks[0])
    tuned = "self" if cfg.quick else cfg.diff_with
    say(cfg, f"circuit diff on {diff_name}: base vs {tuned}, and its noise: another tuning seed, other prompts")
    task = made[diff_name]
    ig_steps = 2 if cfg.quick else cfg.ig_steps
    tuned_ems = [em] if tuned == "self" else [edge_model(m) for m in tuned_models(cfg, model, (cfg.seed, cfg.seed + 1))]
    base_scores = by_task[diff_name]["eap-ig"]
    tuned_scores, *other_seed = [attribute(t, task, "eap-ig", steps=ig_steps, batch_size=len(task)) for t in tuned_ems]
    n = max(1, round(cfg.diff_percent / 100 * em.graph.n_edges))
    diff = circuit_diff(base_scores, tuned_scores, n)
    summary["diff"] = {"task": diff_name, "tuned": tuned, "n": n, **diff.counts()}
    summary["diff"]["noise"] = diff_noise(em, tuned_ems[0], task, n, ig_steps, base_scores, tuned_scores, other_seed)
    table = diff.to_frame()
    summary["diff"]["largest_changes"] = table.head(10).to_dict("records")
    tables["circuit_diff"] = table
    figures["edges_diff_tuned"] = draw_edges(tuned_scores, 40, f"Top 40 edges of the tuned model ({diff_name})")
    summary["seconds"] = {**timing, "total": time.perf_counter() - started}
    write_outputs(
        Path(cfg.out),
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=not cfg.quick,
        key_figure=f"curves_{tasks[0]}",
    )
    return summary
