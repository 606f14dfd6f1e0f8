"""The main job: one unit per (preset, alignment, seed), then the summary across units."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from experiments.common import say, write_json, write_outputs
from experiments.neuron1512.config import PRESETS, Neuron1512Config, resolve
from experiments.neuron1512.parallel import run_units
from experiments.neuron1512.summary import captions, summarise
from experiments.neuron1512.unit import Context, run_unit
from workbench.data.chat_prompts import chat_prompts
from workbench.data.corpora import ALIGNMENTS, load_alignment
from workbench.distributed import on_main
from workbench.irm.explain import characteristic_tokens
from workbench.irm.generate import generate_replies, generations_frame
from workbench.models import DEFAULT_MODEL, load_model
from workbench.neurons.weights import classify, weight_cosines

__all__ = ["main"]


def main(cfg: Neuron1512Config) -> dict:
    """Run the job; returns the summary (also written to ``cfg.out/summary.json``).

    The config is checked first (:meth:`~experiments.fields.ExperimentConfig.preflight`), before the model loads.
    """
    cfg = resolve(cfg).preflight()
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if cfg.device.startswith("cuda") and cfg.model != DEFAULT_MODEL else None
    model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    prompts = chat_prompts(cfg.n_prompts)
    say(cfg, "base model: generating replies with the IRM off; RW classes of the neurons; characteristic tokens")
    off_replies = generate_replies(model, None, prompts, seed=cfg.seeds[0], max_new_tokens=cfg.max_new_tokens)
    off = generations_frame(off_replies, "off")
    ctx = Context(model, prompts, off, classify(weight_cosines(model)), off_replies=off_replies)
    names = dict.fromkeys([*ALIGNMENTS, *(a for p in cfg.runs for a in p.alignments)])
    for name in names:
        ctx.corpora[name] = load_alignment(name, min_confidence=cfg.min_confidence, max_items=cfg.max_items, seed=0)
    ctx.char_tokens = characteristic_tokens(
        model.tokenizer, {n: c.train for n, c in ctx.corpora.items()}, k=cfg.n_char_tokens
    )
    vader_off = float(off.vader.mean())
    plan = [
        (preset, alignment, seed, i == 0)
        for preset in cfg.runs
        for alignment in preset.alignments
        for i, seed in enumerate(cfg.seeds)
    ]
    if cfg.workers > 1:
        say(cfg, f"running {len(plan)} units in {cfg.workers} worker processes")
        units = run_units(ctx, cfg, plan, dtype)
    else:
        units = [run_unit(ctx, cfg, p, a, s, explained=e) for p, a, s, e in plan]
    say(cfg, "summarising across seeds and drawing")
    summary, figures, tables = summarise(
        ctx, cfg, units, vader_off, {name: doc for name, (doc, _, _) in PRESETS.items()}
    )
    say(
        cfg, f"writing {len(figures)} figures{' (HTML + PNG)' if cfg.png else ''} and {len(tables)} tables to {cfg.out}"
    )
    summary["seconds"] = time.perf_counter() - t0
    views = {f"irm_tokens_{u.preset}_{u.alignment}": u.view for u in units if u.view is not None}
    view_captions = {
        name: "Each generated token coloured by the IRM's output there: left, what the IRM would add to the "
        "IRM-off reply; right, the reply with the IRM on (hover a token for its value)."
        for name in views
    }
    write_outputs(
        cfg.out,
        cfg,
        figures=figures,
        tables=tables,
        summary=summary,
        png=cfg.png,
        captions=captions(figures) | view_captions,
        views=views,
        key_figure="realignment" if "realignment" in figures else None,
    )
    # the wall time including the writing goes into config.json and summary.json (the report shows it without)
    summary["seconds"] = time.perf_counter() - t0
    cfg = cfg.replace(wall_seconds=round(summary["seconds"], 1))
    summary["config"] = cfg.to_dict()
    on_main(lambda: _rewrite(cfg, summary))  # under accelerate launch: rank 0 writes, the others wait
    return summary


def _rewrite(cfg: Neuron1512Config, summary: dict) -> None:
    write_json(Path(cfg.out) / "config.json", cfg.to_dict())
    write_json(Path(cfg.out) / "summary.json", summary)
