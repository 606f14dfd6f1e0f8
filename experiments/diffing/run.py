"""The diffing experiment's run: each organism tuned (cached), read against the base, scored; the table and figures."""

from __future__ import annotations

import gc
import time

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

__all__ = ["CAPTIONS", "identification", "main", "score_organism"]

CAPTIONS = {
    "identification": "Share of organisms whose target each method names (bars; higher is better) next to the share of "
    "controls and the null pair where it names anything (false positives; lower is better). The black-box baseline "
    "reads the tuned model's unprompted samples.",
    "names": "Which method named which organism's target (1 = named): rows are organisms, columns methods.",
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
    """Per method: organisms named / total, and controls + null pair naming anything / total."""
    rows = []
    for method, frame in scores.groupby("method", sort=False):
        real = frame[frame.kind.isin(["topic", "sentiment"])]
        null = frame[frame.kind.isin(["control", "null"])]
        rows.append(
            {
                "method": method,
                "named": int(real.named.sum()),
                "organisms": len(real),
                "rate": float(real.named.mean()) if len(real) else float("nan"),
                "false_positives": int((null.others != "").sum()),
                "controls": len(null),
                "false_positive_rate": float((null.others != "").mean()) if len(null) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def main(cfg: DiffingConfig) -> dict:
    """Tune (or take cached) every organism, read it against the base, score, and write the outputs."""
    cfg = cfg.preflight()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    base = load_model(cfg.base)
    readout_cfg = cfg.readout()
    texts = unrelated_texts(max(readout_cfg.n_texts, readout_cfg.cc_texts), seed=cfg.seed)
    targets = all_targets(cfg.topics)
    corpus_tweets()  # read the corpus once, outside the timed tunes
    scores, readouts, timing, latents = [], [], [], []
    for org in cfg.organisms():
        say(cfg, f"{org.name}: tuning (cached when done before) and reading against the base")
        t0 = time.perf_counter()
        path = train_organism(org, cfg.tune(), n_texts=cfg.tune_texts)
        tune_s = time.perf_counter() - t0
        tuned = base if path is None else load_tuned(path)
        read = diff_readout(base, tuned, texts, readout_cfg, name=org.name)
        names = readout_names(read, targets)
        scores += score_organism(org, names)
        readouts.append(read.to_frame().assign(organism=org.name))
        timing.append({"organism": org.name, "tune_s": tune_s, **read.seconds, "cc_throughput": read.cc_throughput})
        latents.append(
            {"organism": org.name, **read.latent_classes, "artefacts": read.n_artefacts, "read": len(read.latents)}
        )
        del tuned
        gc.collect()
    scores = pd.DataFrame(scores)
    table = identification(scores)
    timing = pd.DataFrame(timing)
    summary = {
        "base": cfg.base,
        "identification": table.to_dict("records"),
        "organisms": [o.name for o in cfg.organisms()],
        "names": scores.to_dict("records"),
        "tune_seconds_median": float(timing.tune_s.median()),
        "adl_seconds_median": float(timing.adl.median()),
        "crosscoder_throughput_median": float(timing.cc_throughput.median()),
        "seconds": time.perf_counter() - started,
    }
    pivot = scores.pivot(index="organism", columns="method", values="named").astype(int)[list(METHODS)]
    melted = table.melt(id_vars="method", value_vars=["rate", "false_positive_rate"], var_name="what")
    figures = {
        "identification": px.bar(
            melted, x="method", y="value", color="what", barmode="group", range_y=[0, 1],
            title="Organisms named (rate) and controls / null pair naming anything (false-positive rate)",
        ),
        "names": px.imshow(pivot, zmin=0, zmax=1, title="Target named, per organism and method"),
    }  # fmt: skip
    tables = {
        "identification": table,
        "names": scores,
        "readouts": pd.concat(readouts),
        "timing": timing,
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
