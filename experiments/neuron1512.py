"""The main job: reproduce *The Mysterious Case of Neuron 1512* (Smith et al., 2024) on a model.

For each alignment (negative / neutral / positive tweets): train an IRM (the LM frozen), measure the
realignment (held-out loss and VADER sentiment of replies, IRM on vs off), record the IRM output per
token, layer and residual dimension, find its dominant dimensions, compare them across alignments and
with the base model's massive-activation dimensions, and test them causally (mask the top-k vs k
random dimensions). Writes figures, CSV tables and ``summary.json`` under ``--out``.

    python -m experiments.neuron1512 --quick
    python -m experiments.neuron1512 --model llama-2-7b-chat --device cuda
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from experiments.common import parse_config, write_outputs
from workbench.config import Config
from workbench.data.chat_prompts import chat_prompts
from workbench.data.corpora import ALIGNMENTS, load_alignment
from workbench.irm import IRM, IRMConfig, TrainConfig, eval_loss, plots, train_irm
from workbench.irm.dimensions import base_magnitudes, masking_test, massive_dims, overlap_table, top_dims
from workbench.irm.generate import generate_replies, generations_frame, vader_compound
from workbench.irm.record import collect_output_stats, stats_from_tokens
from workbench.irm.train import encode_for
from workbench.models import DEFAULT_MODEL, load_model


@dataclass(frozen=True)
class Neuron1512Config(Config):
    """Train one IRM per alignment and look for its dominant residual dimension."""

    model: str = DEFAULT_MODEL
    """Model name, local HF folder or hub id."""
    alignments: tuple[str, ...] = ALIGNMENTS
    """Alignment corpora to train an IRM on."""
    device: str = "cpu"
    """Torch device (cpu, cuda)."""
    read_hook: str = "attn_out"
    """Hook kind the IRM reads (attn_out, resid_mid, ...)."""
    read_layer: int = 0
    """Layer of the read hook."""
    write_hook: str = "resid_post"
    """Hook kind the IRM adds into (resid_post, resid_mid, resid_pre)."""
    layers: tuple[int, ...] = ()
    """Write layers (empty = all)."""
    hidden_mult: float = 0.0
    """IRM hidden width / d_model (paper: 3); 0 = 3 on CUDA, 1 on CPU (keeps the default run within 30 minutes)."""
    n_hidden: int = 4
    """IRM hidden layers (paper: 4)."""
    steps: int = 80
    """Training steps per alignment."""
    batch_size: int = 8
    """Texts per training batch."""
    lr: float = 1e-3
    """AdamW learning rate."""
    l1: float = 0.0
    """L1 penalty on the IRM output (the paper's regularisation)."""
    max_len: int = 48
    """Longest training sequence (tokens)."""
    min_confidence: float = 0.8
    """Annotator confidence a tweet needs to enter a corpus."""
    max_items: int = 3000
    """Tweets per alignment corpus (train + held out)."""
    eval_texts: int = 32
    """Held-out texts for the losses, the recorded outputs and the masking test."""
    n_prompts: int = 8
    """Chat prompts for the generations (each greedy and sampled)."""
    max_new_tokens: int = 24
    """Tokens per generated reply."""
    top_k: int = 10
    """Top dimensions reported per alignment."""
    mask_ks: tuple[int, ...] = (1, 10)
    """k values of the masking test."""
    n_random: int = 3
    """Random k-dimension draws per k in the masking test."""
    seed: int = 0
    """Seed of IRM init, data order and sampling."""
    out: str = "figures/neuron1512"
    """Output folder (figures, tables, summary.json)."""
    ckpt_dir: str = "runs/neuron1512"
    """Checkpoint folder (one subfolder per alignment)."""
    resume: bool = True
    """Resume training from checkpoints in ckpt_dir."""
    checkpoint_every: int = 20
    """Checkpoint every this many steps."""
    png: bool = True
    """Also write PNG figures."""
    progress: bool = True
    """Show progress bars."""
    quick: bool = False
    """Small run (minutes): fewer steps, texts and prompts."""


QUICK = dict(
    steps=10,
    batch_size=4,
    max_len=40,
    max_items=400,
    eval_texts=12,
    n_prompts=2,
    max_new_tokens=12,
    n_random=2,
    checkpoint_every=5,
)


def resolve(cfg: Neuron1512Config) -> Neuron1512Config:
    """Apply ``--quick`` to the fields left at their defaults, and the automatic IRM width."""
    if cfg.quick:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        cfg = cfg.replace(**{k: v for k, v in QUICK.items() if getattr(cfg, k) == defaults[k]})
    if cfg.hidden_mult == 0:
        cfg = cfg.replace(hidden_mult=3.0 if cfg.device.startswith("cuda") else 1.0)
    return cfg


def main(cfg: Neuron1512Config) -> dict:
    """Run the job; returns the summary (also written to ``cfg.out/summary.json``)."""
    cfg = resolve(cfg)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if cfg.device.startswith("cuda") and cfg.model != DEFAULT_MODEL else None
    model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    irm_cfg = IRMConfig(cfg.read_hook, cfg.read_layer, cfg.write_hook, cfg.layers, cfg.hidden_mult, cfg.n_hidden)
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        l1=cfg.l1,
        max_len=cfg.max_len,
        eval_every=max(cfg.steps // 4, 1),
        eval_texts=min(cfg.eval_texts, 16),
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
    )
    prompts = chat_prompts(cfg.n_prompts)
    off = generate_replies(model, None, prompts, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)
    gen_frames = [generations_frame(off, "off")]
    vader_off = float(gen_frames[0].vader.mean())
    logs, stats, gen_stats, shares, tops, mask_frames, rows, per = {}, {}, {}, {}, {}, {}, [], {}
    held_all = []
    for name in cfg.alignments:
        corpus = load_alignment(name, min_confidence=cfg.min_confidence, max_items=cfg.max_items, seed=cfg.seed)
        irm = IRM.for_model(model, irm_cfg, seed=cfg.seed)
        result = train_irm(
            model,
            irm,
            corpus.train,
            train_cfg,
            held_out=corpus.held_out,
            out_dir=Path(cfg.ckpt_dir) / name,
            resume=cfg.resume,
            progress=cfg.progress,
        )
        logs[name] = result.to_frame().assign(alignment=name)
        held = encode_for(model, corpus.held_out[: cfg.eval_texts], train_cfg)
        seen = encode_for(model, corpus.train[: cfg.eval_texts], train_cfg)
        held_all += held
        losses = {
            "train_loss_base": eval_loss(model, None, seen),
            "train_loss_irm": eval_loss(model, irm, seen),
            "heldout_loss_base": eval_loss(model, None, held),
            "heldout_loss_irm": eval_loss(model, irm, held),
        }
        stats[name] = collect_output_stats(model, irm, held)
        shares[name] = stats[name].dim_share
        ranked = shares[name].argsort(descending=True).tolist()
        tops[name] = ranked[: cfg.top_k]
        on = generate_replies(model, irm, prompts, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)
        frame = generations_frame(on, name)
        gen_frames.append(frame)
        outs = torch.cat([g.irm_out for _, g in on if g.irm_out is not None and len(g.tokens)])
        gen_stats[name] = stats_from_tokens(outs, irm.layers)
        first = next(g for _, g in on if len(g.tokens))
        per[name] = (first, [model.tokenizer.decode([t]) for t in first.tokens], irm.layers)
        masking = masking_test(
            model,
            irm,
            held,
            ranked,
            ks=cfg.mask_ks,
            n_random=cfg.n_random,
            seed=cfg.seed,
            base_loss=losses["heldout_loss_base"],
            irm_loss=losses["heldout_loss_irm"],
        )
        mask_frames[name] = masking.to_frame().assign(alignment=name)
        rows.append(
            {
                "alignment": name,
                **losses,
                "vader_corpus": float(pd.Series(vader_compound(corpus.held_out[: cfg.eval_texts])).mean()),
                "vader_off": vader_off,
                "vader_on": float(frame.vader.mean()),
                "vader_on_greedy": float(frame[frame["mode"] == "greedy"].vader.mean()),
                "vader_on_sampled": float(frame[frame["mode"] == "sampled"].vader.mean()),
                "top10": top_dims(shares[name], cfg.top_k),
                "top_share": stats[name].top_share([1, 10, 50]),
                "generation_top10": top_dims(gen_stats[name].dim_share, cfg.top_k),
                "masking": masking.summary(),
                "irm_params": sum(p.numel() for p in irm.parameters()),
            }
        )
        del irm
    magnitudes = base_magnitudes(model, held_all)
    peak = magnitudes.max(0).values
    massive = massive_dims(magnitudes, cfg.top_k)
    base_rank = torch.empty(peak.numel(), dtype=torch.long)
    base_rank[peak.argsort(descending=True)] = torch.arange(peak.numel())
    overlap = overlap_table(tops)
    table = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows])
    dims_table = pd.concat(
        [
            pd.DataFrame(
                {
                    "alignment": n,
                    "dim": range(len(s)),
                    "share": s.numpy(),
                    "generation_share": gen_stats[n].dim_share.numpy(),
                    "base_peak_mean_abs": peak.numpy(),
                    "base_rank": base_rank.numpy(),
                }
            )
            for n, s in shares.items()
        ]
    )
    figures = {
        "training_curves": plots.training_curves(logs),
        "dimension_share": plots.dimension_share(shares, {n: t[:5] for n, t in tops.items()}),
        "sparsity": plots.sparsity_curve(stats, [1, 2, 5, 10, 20, 50, 100, 200, model.cfg.d_model], model.cfg.d_model),
        "masking": plots.masking_bars(mask_frames),
        "realignment": plots.realignment_bars(table),
        "massive_vs_irm": plots.massive_vs_irm(peak, tops),
    }
    for name in cfg.alignments:
        figures[f"heatmap_{name}"] = plots.output_heatmap(stats[name], f"Mean |IRM output| on held-out {name} replies")
        gen, toks, layers = per[name]
        figures[f"heatmap_tokens_{name}"] = plots.token_heatmaps(
            gen.irm_out, toks, layers, f"|IRM output| per generated token ({name}): {gen.prompt!r}", n=3
        )
    summary = {
        "model": str(model.cfg.model_name),
        "device": cfg.device,
        "config": cfg.to_dict(),
        "irm": {
            "hidden_mult": cfg.hidden_mult,
            "n_hidden": cfg.n_hidden,
            "params": rows[0]["irm_params"] if rows else 0,
            "read": f"blocks.{cfg.read_layer}.hook_{cfg.read_hook}",
            "write": cfg.write_hook,
        },
        "alignments": {r["alignment"]: {k: v for k, v in r.items() if k != "alignment"} for r in rows},
        "overlap": overlap.to_dict(orient="records"),
        "same_top1_all": len({t[0] for t in tops.values()}) == 1 if tops else False,
        "massive_dims": massive.to_dict(orient="records"),
        "irm_top_dims_base_rank": {n: [int(base_rank[d]) for d in t] for n, t in tops.items()},
        "seconds": time.perf_counter() - t0,
    }
    tables = {
        "summary": table,
        "train_log": pd.concat(logs.values()),
        "generations": pd.concat(gen_frames),
        "dimensions": dims_table,
        "masking": pd.concat(mask_frames.values()),
        "overlap": overlap,
        "massive_dims": massive,
    }
    write_outputs(cfg.out, cfg, figures=figures, tables=tables, summary=summary, png=cfg.png)
    return summary


def report(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{summary['model']}: IRM with {summary['irm']['params'] / 1e6:.1f} M parameters, {summary['seconds'] / 60:.1f} min"
    ]
    for name, a in summary["alignments"].items():
        top = ", ".join(f"{d} ({s:.1%})" for d, s in a["top10"][:3])
        m = next(iter(a["masking"].values()), {})
        lines.append(
            f"  {name:9s} held-out loss {a['heldout_loss_base']:.3f} -> {a['heldout_loss_irm']:.3f}; "
            f"VADER {a['vader_off']:+.2f} -> {a['vader_on']:+.2f} (corpus {a['vader_corpus']:+.2f}); top dims {top}; "
            f"masking top-{next(iter(a['masking']), '?')} removes {m.get('top_removed', float('nan')):.0%} vs random {m.get('random_removed_mean', float('nan')):.0%}"
        )
    lines.append(f"  same top dimension for every alignment: {summary['same_top1_all']}")
    return "\n".join(lines)


if __name__ == "__main__":
    config = parse_config(Neuron1512Config, sys.argv[1:], description=__doc__.splitlines()[0])
    print(report(main(config)))
