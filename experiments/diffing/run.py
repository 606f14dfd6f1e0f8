"""The diffing experiment's run: each organism tuned (cached), read against the base, scored; the table and figures."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch

from experiments.common import say, write_outputs
from experiments.diffing.config import DiffingConfig
from workbench.diffing import diff_readout, train_organism
from workbench.diffing.organisms import Organism, corpus_tweets, unrelated_texts
from workbench.diffing.score import METHODS, all_targets, readout_names, target_of
from workbench.models import load_model
from workbench.tuning import load_tuned

__all__ = ["CAPTIONS", "POINTS", "identification", "main", "score_organism"]

POINTS = ("converged", "early")
"""The two training points each organism is read at: tuned to the stopping rule, and the short tune of the same
recipe (the training-length control)."""

CAPTIONS = {
    "identification": "Share of organisms whose target each method names (bars; higher is better) next to the share of "
    "controls and the null pair where it names anything (false positives; lower is better), for organisms tuned to "
    "the stopping rule and for the short tunes. The black-box baseline reads the tuned model's unprompted samples "
    "and its replies to the steering prompts.",
    "names": "Which method named which organism's target (1 = named), tuned to the stopping rule: rows are organisms, "
    "columns methods.",
    "tuning": "Held-out loss of each organism's tune (its own held-out tenth) against steps, to the stopping rule.",
}


def score_organism(org: Organism, names: dict[str, list[str]]) -> list[dict]:
    """One row per method: did it name the organism's target, and what else did it name."""
    target = target_of(org)
    rows = []
    for method in METHODS:
        named = names[method]
        hit = target is not None and target.name in named
        others = [n for n in named if target is None or n != target.name]
        rows.append(
            {"organism": org.name, "kind": org.kind, "method": method, "named": hit, "others": " ".join(others)}
        )
    return rows


def identification(scores: pd.DataFrame) -> pd.DataFrame:
    """Per method (and training ``point`` where the scores have one): organisms named / total, and controls + null
    pair naming anything / total."""
    keys = ["point", "method"] if "point" in scores else ["method"]
    rows = []
    for key, frame in scores.groupby(keys, sort=False):
        real = frame[frame.kind.isin(["topic", "sentiment"])]
        null = frame[frame.kind.isin(["control", "null"])]
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                "named": int(real.named.sum()),
                "organisms": len(real),
                "rate": float(real.named.mean()) if len(real) else float("nan"),
                "false_positives": int((null.others != "").sum()),
                "controls": len(null),
                "false_positive_rate": float((null.others != "").mean()) if len(null) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _tune(org: Organism, cfg: DiffingConfig, point: str, converged_steps: int | None) -> tuple[Path | None, dict]:
    """The organism's tuned folder at ``point`` and its budget; the short tune is capped at half the converged run
    when that stopped before :attr:`DiffingConfig.early_steps`."""
    tune = cfg.tune(point)
    if point == "early" and converged_steps is not None:
        tune = replace(tune, steps=max(1, min(tune.steps, converged_steps // 2)))
    t0 = time.perf_counter()
    path = train_organism(org, tune, n_texts=cfg.tune_texts)
    row = {"organism": org.name, "point": point, "tune_s": time.perf_counter() - t0}
    if path is None:
        return None, row | {"steps": 0, "converged": None, "eval_curve": []}
    meta = json.loads((path / "tuning.json").read_text())
    row |= {"steps": meta["budget"]["steps"], "converged": meta["converged"], "eval_curve": meta["eval_curve"]}
    return path, row


def main(cfg: DiffingConfig) -> dict:
    """Tune (or take cached) every organism to the stopping rule and for the short run, read each against the base,
    score, and write the outputs."""
    cfg = cfg.preflight()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    base = load_model(cfg.base)
    readout_cfg = cfg.readout()
    texts = unrelated_texts(max(readout_cfg.n_texts, readout_cfg.cc_texts), seed=cfg.seed)
    targets = all_targets(cfg.topics)
    corpus_tweets()  # read the corpus once, outside the timed tunes
    organisms = cfg.organisms()
    rows: list[dict] = []
    readouts, timing, latents, tunes = [], [], [], []
    for i, org in enumerate(organisms, 1):
        converged_steps, read = None, None
        for point in POINTS:
            say(cfg, f"organism {i}/{len(organisms)} {org.name} ({point}): tuning (cached when done before), reading")
            path, tuned_row = _tune(org, cfg, point, converged_steps)
            converged_steps = tuned_row["steps"] if point == "converged" else converged_steps
            tuned = base if path is None else load_tuned(path)
            fresh = path is not None or read is None  # the null pair is the same model at both points: read once
            if fresh:
                read = diff_readout(base, tuned, texts, readout_cfg, name=org.name)
                timing.append(
                    {"organism": org.name, "point": point, "tune_s": tuned_row["tune_s"], **read.seconds,
                     "cc_throughput": read.cc_throughput}
                )  # fmt: skip
            assert read is not None
            rows += [row | {"point": point} for row in score_organism(org, readout_names(read, targets))]
            readouts.append(read.to_frame().assign(organism=org.name, point=point))
            latents.append(
                {"organism": org.name, "point": point, **read.latent_classes, "artefacts": read.n_artefacts,
                 "read": len(read.latents)}
            )  # fmt: skip
            tunes.append(tuned_row)
            del tuned
            gc.collect()
    scores = pd.DataFrame(rows)
    table = identification(scores)
    times = pd.DataFrame(timing)
    converged_tune = cfg.tune("converged")
    rule = converged_tune.stopping_rule
    assert rule is not None  # the converged tunes have one (patience >= 1)
    tuned_orgs = [t for t in tunes if t["steps"]]
    summary = {
        "base": cfg.base,
        "identification": table[table.point == "converged"].drop(columns="point").to_dict("records"),
        "identification_early": table[table.point == "early"].drop(columns="point").to_dict("records"),
        "organisms": [o.name for o in organisms],
        "names": scores.to_dict("records"),
        "tuning": {
            "stopping_rule": rule.describe(),
            "ceiling": converged_tune.steps,
            "steps": {t["organism"]: t["steps"] for t in tuned_orgs if t["point"] == "converged"},
            "early_steps": {t["organism"]: t["steps"] for t in tuned_orgs if t["point"] == "early"},
            "not_converged": [t["organism"] for t in tuned_orgs if t["point"] == "converged" and not t["converged"]],
        },
        "tune_seconds_median": float(times.tune_s.median()),
        "adl_seconds_median": float(times.adl.median()),
        "crosscoder_throughput_median": float(times.cc_throughput.median()),
        "seconds": time.perf_counter() - started,
    }
    converged = scores[scores.point == "converged"]
    pivot = converged.pivot(index="organism", columns="method", values="named").astype(int)[list(METHODS)]
    melted = table.melt(id_vars=["point", "method"], value_vars=["rate", "false_positive_rate"], var_name="what")
    curves = pd.DataFrame(
        [
            {"organism": t["organism"], "step": step, "held_out_loss": loss}
            for t in tuned_orgs
            if t["point"] == "converged"
            for step, loss in t["eval_curve"]
        ],
        columns=["organism", "step", "held_out_loss"],
    )
    figures = {
        "identification": px.bar(
            melted, x="method", y="value", color="what", barmode="group", facet_col="point", range_y=[0, 1],
            title="Organisms named (rate) and controls / null pair naming anything (false-positive rate)",
        ),
        "names": px.imshow(pivot, zmin=0, zmax=1, title="Target named, per organism and method (converged tunes)"),
        "tuning": px.line(
            curves, x="step", y="held_out_loss", color="organism", markers=True,
            title="Held-out loss of each organism's tune, to the stopping rule",
        ),
    }  # fmt: skip
    tables = {
        "identification": table,
        "names": scores,
        "readouts": pd.concat(readouts),
        "timing": times,
        "tuning": pd.DataFrame(tunes).drop(columns="eval_curve"),
        "crosscoder_latents": pd.DataFrame(latents),
    }
    write_outputs(
        cfg.out,
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=not cfg.quick,
        captions=CAPTIONS,
        key_figure="identification",
    )
    return summary
