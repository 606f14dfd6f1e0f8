"""The main job: reproduce *The Mysterious Case of Neuron 1512* (Smith et al., 2024) on a model, and explain it.

For each preset (where the IRM reads and writes, how it trains), alignment (negative / neutral /
positive tweets) and seed (IRM init and data order): train an IRM (the LM frozen), measure the
realignment (held-out loss and VADER sentiment of replies, IRM on vs off), record the IRM output per
token, layer and residual dimension, and test its top dimensions causally (mask the top-k vs k random
dimensions). Across seeds: the dimensions that dominate in every seed, and whether the dimension
shares agree between seeds of one alignment, alignments of one seed, or neither (a property of the
model vs of the init). Per alignment: where the IRM changes the prediction (logit lens, DLA of its
writes, patching injected -> base), which neurons carry it, and the top dimension's profile.
Writes figures, CSV tables and ``summary.json`` under ``--out``.

    python -m experiments.neuron1512 --quick
    python -m experiments.neuron1512 --presets paper --alignments negative --seeds 0 1 2
    python -m experiments.neuron1512 --model llama-2-7b-chat --device cuda --hidden-mult 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments.checks import check_against_model, preflight
from experiments.common import flag_kwargs, jsonable, write_outputs
from workbench.config import Config, field_docs
from workbench.data.chat_prompts import chat_prompts
from workbench.data.corpora import ALIGNMENTS, Corpus, load_alignment
from workbench.hooks import format_hook_name
from workbench.irm import IRM, IRMConfig, TrainConfig, eval_loss, plots, train_irm
from workbench.irm.dimensions import MaskingResult, base_magnitudes, masking_test, massive_dims, top_dims
from workbench.irm.explain import Explanation, characteristic_tokens, explain, probe_tokens
from workbench.irm.generate import Generation, generate_replies, generations_frame, vader_compound
from workbench.irm.record import OutputStats, collect_output_stats, stats_from_tokens
from workbench.irm.stability import dominant_dims, share_stats, spearman, stability, top_jaccard
from workbench.irm.train import encode_for
from workbench.models import DEFAULT_MODEL, load_model
from workbench.neurons.weights import NeuronClasses, classify, weight_cosines
from workbench.views import Row, irm_on_off_view


@dataclass(frozen=True)
class Preset(Config):
    """One preset resolved: where the IRM reads and writes, how it trains, and on which alignments."""

    name: str
    """Preset name (card, paper)."""
    irm: IRMConfig
    """Where the IRM reads and writes, and its shape."""
    train: TrainConfig
    """How it trains (its seed is replaced by each run's seed)."""
    alignments: tuple[str, ...]
    """Alignments trained under this preset."""


PRESETS: dict[str, tuple[str, IRMConfig, TrainConfig]] = {
    "card": (
        "the design card's default: read blocks.0.hook_attn_out, add into hook_resid_post of every layer, "
        "4 hidden layers of 1·d_model, lr 1e-3, batch 4",
        IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=1.0, n_hidden=4),
        TrainConfig(steps=30, batch_size=4, lr=1e-3, max_len=40, warmup=5, eval_every=10, eval_texts=16),
    ),
    "paper": (
        "the paper's code: read blocks.0.hook_resid_mid, add into hook_resid_mid of every layer, "
        "4 hidden layers of 3·d_model, lr 1e-4, batch 8",
        IRMConfig(read_hook="resid_mid", write_hook="resid_mid", hidden_mult=3.0, n_hidden=4),
        TrainConfig(steps=30, batch_size=8, lr=1e-4, max_len=40, warmup=5, eval_every=10, eval_texts=16),
    ),
}
"""Named defaults of the IRM and its training; explicit flags (``--lr``, ``--read-hook``, ...) override them."""

QUICK_TRAIN = dict(steps=6, eval_every=3, eval_texts=8, max_len=32)
"""``--quick``: training fields (flags still win)."""

QUICK = dict(
    alignments=("negative", "positive"),
    seeds=(0, 1),
    max_items=300,
    n_prompts=2,
    max_new_tokens=8,
    mask_ks=(1,),
    n_random=2,
    probe_texts=6,
    k_neurons=5,
)
"""``--quick``: experiment fields (flags still win)."""


@dataclass(frozen=True)
class Neuron1512Config(Config):
    """Train IRMs per preset, alignment and seed; find their dominant dimensions and explain the realignment."""

    model: str = DEFAULT_MODEL
    """Model name, local HF folder or hub id."""
    device: str = "cpu"
    """Torch device (cpu, cuda)."""
    presets: tuple[str, ...] = ("card", "paper")
    """Presets to run (see the list below); flags for the IRM and training override every preset's values."""
    alignments: tuple[str, ...] = ALIGNMENTS
    """Alignment corpora trained under the first preset."""
    other_alignments: tuple[str, ...] = ("negative",)
    """Alignments trained under the other presets (empty = the same as --alignments)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds per (preset, alignment): each drives the IRM init and the data order."""
    min_confidence: float = 0.8
    """Annotator confidence a tweet needs to enter a corpus."""
    max_items: int = 2000
    """Tweets per alignment corpus (train + held out)."""
    n_prompts: int = 3
    """Chat prompts for the generations (each greedy and sampled)."""
    max_new_tokens: int = 16
    """Tokens per generated reply."""
    top_k: int = 10
    """Top dimensions reported per alignment (and the k of the top-k Jaccard index)."""
    z_dominant: float = 3.0
    """A dimension is dominant if its share's z-score (against all dimensions) exceeds this in every seed."""
    mask_ks: tuple[int, ...] = (1, 10)
    """k values of the masking test."""
    n_random: int = 3
    """Random draws per k in the masking test and random neuron sets in the neuron ablation."""
    probe_texts: int = 12
    """Held-out texts whose prompt + first reply tokens form the probe batch of the explanation."""
    probe_reply_tokens: int = 3
    """Reply tokens in each probe prompt (the explanation reads the last position)."""
    k_neurons: int = 10
    """Top neurons in the explanation's table and ablation."""
    n_char_tokens: int = 20
    """Characteristic tokens per alignment (most over-represented in its corpus vs the others)."""
    out: str = "figures/neuron1512"
    """Output folder (figures, tables, summary.json)."""
    ckpt_dir: str = "runs/neuron1512"
    """Checkpoint folder (one subfolder per preset, alignment and seed)."""
    resume: bool = True
    """Resume training from checkpoints in ckpt_dir."""
    png: bool = True
    """Also write PNG figures."""
    progress: bool = True
    """Show progress bars and say which phase runs."""
    quick: bool = False
    """Small run (minutes): two alignments, two seeds, fewer steps, texts and prompts."""
    runs: tuple[Preset, ...] = ()
    """The presets resolved (filled from presets + flags; written to config.json)."""
    command: str = ""
    """The command line that ran this config (recorded in config.json)."""
    wall_seconds: float = 0.0
    """Wall time of the run that wrote this config.json (filled at the end of the run)."""

    def check(self) -> None:
        """Pre-flight (:func:`experiments.checks.preflight` runs it): each preset's IRM layers against the model."""
        for p in self.runs:
            check_against_model(self.model, {"layers": p.irm.layers, "read_layer": p.irm.read_layer})


def resolve(
    cfg: Neuron1512Config,
    *,
    irm: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    quick_sizes: bool = True,
) -> Neuron1512Config:
    """Fill ``cfg.runs``: each preset's defaults, then ``--quick``'s training sizes, then the overrides."""
    if cfg.runs:
        return cfg
    if cfg.quick and quick_sizes:  # fields left at their defaults take --quick's sizes
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        cfg = cfg.replace(**{k: v for k, v in QUICK.items() if getattr(cfg, k) == defaults[k]})
    unknown = [p for p in cfg.presets if p not in PRESETS]
    if unknown or not cfg.presets:
        raise KeyError(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
    runs = []
    for i, name in enumerate(cfg.presets):
        _, irm_cfg, train_cfg = PRESETS[name]
        changes = {**(QUICK_TRAIN if cfg.quick else {}), **(train or {})}
        alignments = cfg.alignments if i == 0 or not cfg.other_alignments else cfg.other_alignments
        runs.append(Preset(name, irm_cfg.replace(**(irm or {})), train_cfg.replace(**changes), tuple(alignments)))
    return cfg.replace(runs=tuple(runs))


# ---------------------------------------------------------------- command line


def _add_fields(parser, cls: type, skip: set[str] = frozenset()) -> None:
    """One flag per field of ``cls`` (help: the field's docstring); unset flags stay out of the namespace."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = flag_kwargs(hints[f.name])
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = f.name.upper()
        help_text = f"{docs.get(f.name, '')} [{f.default}]"
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f"{cls.__name__}.{f.name}", default=argparse.SUPPRESS, help=help_text, **kwargs)


def parse_args(argv: Sequence[str] | None = None) -> Neuron1512Config:
    """The config from command-line flags: experiment flags, then IRM and training flags that override the presets.

    ``--quick`` changes only what no flag sets.
    """
    presets = "\n".join(f"  {name}: {doc}" for name, (doc, _, _) in PRESETS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"presets (named defaults of the IRM and training flags; flags override them):\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_fields(parser.add_argument_group("experiment"), Neuron1512Config, {"runs", "command", "wall_seconds"})
    _add_fields(parser.add_argument_group("IRM (overrides the preset; [x] = IRMConfig's default)"), IRMConfig)
    _add_fields(
        parser.add_argument_group("training (overrides the preset; [x] = TrainConfig's default)"),
        TrainConfig,
        {"seed"},  # --seeds drives it
    )
    ns = vars(parser.parse_args(argv))
    given = {
        cls: {k.split(".", 1)[1]: tuple(v) if isinstance(v, list) else v for k, v in ns.items() if k.startswith(cls)}
        for cls in ("Neuron1512Config", "IRMConfig", "TrainConfig")
    }
    top = given["Neuron1512Config"]
    if top.get("quick"):
        top = {**QUICK, **top}
    cmd = "python -m experiments.neuron1512 " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        cfg = Neuron1512Config(**top, command=cmd.strip())
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    try:
        return preflight(resolve(cfg, irm=given["IRMConfig"], train=given["TrainConfig"], quick_sizes=False))
    except (ValueError, KeyError, IndexError, OSError) as err:  # a bad flag: say so before any work starts
        parser.error(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))


# ---------------------------------------------------------------- one unit


@dataclass
class Context:
    """What every unit shares: the model, prompts, the IRM-off replies, corpora, neuron classes, tokens."""

    model: Any
    prompts: list[str]
    off: pd.DataFrame
    classes: NeuronClasses
    corpora: dict[str, Corpus] = field(default_factory=dict)
    char_tokens: dict[str, pd.DataFrame] = field(default_factory=dict)
    off_replies: list[tuple[str, Generation]] = field(default_factory=list)
    """The IRM-off replies in :func:`generate_replies`' order (the token views pair them with the IRM-on ones)."""


@dataclass(frozen=True)
class Unit:
    """One trained IRM (preset, alignment, seed) and what was measured on it."""

    preset: str
    alignment: str
    seed: int
    log: pd.DataFrame
    """Training history."""
    losses: dict[str, float]
    """Train and held-out next-token loss, base and IRM."""
    vader: dict[str, float]
    """VADER compound of replies with the IRM on (all, greedy, sampled) and of the held-out corpus."""
    generations: pd.DataFrame
    """The replies with the IRM on."""
    stats: OutputStats
    """Mean |IRM output| per (layer, dimension) on held-out texts."""
    gen_stats: OutputStats
    """The same on the generated tokens."""
    example: tuple[Any, list[str]]
    """The first reply (a Generation) and its tokens, for the per-token heatmap."""
    masking: MaskingResult
    irm_params: int
    seconds: dict[str, float]
    """Wall time per phase."""
    explanation: Explanation | None = None
    """The explanation (first seed of each preset and alignment only)."""
    view: Row | None = None
    """The first reply with the IRM off and on, coloured by the IRM's output (explained units only)."""

    @property
    def label(self) -> str:
        """``preset/alignment/seed``."""
        return f"{self.preset}/{self.alignment}/s{self.seed}"

    @property
    def share(self) -> torch.Tensor:
        """Share of the IRM output mass per residual dimension (held-out texts)."""
        return self.stats.dim_share


def _say(cfg: Neuron1512Config, text: str) -> None:
    if cfg.progress:
        print(f"[neuron1512] {text}", file=sys.stderr, flush=True)


def run_unit(
    ctx: Context, cfg: Neuron1512Config, preset: Preset, alignment: str, seed: int, *, explained: bool
) -> Unit:
    """Train one IRM and measure it (and explain it when ``explained``)."""
    model, label = ctx.model, f"{preset.name}/{alignment}/seed {seed}"
    corpus = ctx.corpora[alignment]
    train_cfg = preset.train.replace(seed=seed)
    seconds, t = {}, time.perf_counter()
    irm = IRM.for_model(model, preset.irm, seed=seed)
    _say(cfg, f"{label}: training ({train_cfg.steps} steps)")
    result = train_irm(
        model,
        irm,
        corpus.train,
        train_cfg,
        held_out=corpus.held_out,
        out_dir=Path(cfg.ckpt_dir) / preset.name / alignment / f"seed-{seed}",
        resume=cfg.resume,
        progress=cfg.progress,
    )
    seconds["train"], t = time.perf_counter() - t, time.perf_counter()
    _say(cfg, f"{label}: losses and recording the IRM output on held-out texts")
    held = encode_for(model, corpus.held_out[: train_cfg.eval_texts], train_cfg)
    seen = encode_for(model, corpus.train[: train_cfg.eval_texts], train_cfg)
    losses = {
        "train_loss_base": eval_loss(model, None, seen),
        "train_loss_irm": eval_loss(model, irm, seen),
        "heldout_loss_base": eval_loss(model, None, held),
        "heldout_loss_irm": eval_loss(model, irm, held),
    }
    stats = collect_output_stats(model, irm, held)
    ranked = stats.dim_share.argsort(descending=True).tolist()
    seconds["record"], t = time.perf_counter() - t, time.perf_counter()
    _say(cfg, f"{label}: generating {2 * len(ctx.prompts)} replies with the IRM on")
    on = generate_replies(model, irm, ctx.prompts, seed=seed, max_new_tokens=cfg.max_new_tokens)
    frame = generations_frame(on, alignment).assign(preset=preset.name, seed=seed)
    outs = torch.cat([g.irm_out for _, g in on if g.irm_out is not None and len(g.tokens)])
    index, first = next((i, g) for i, (_, g) in enumerate(on) if len(g.tokens))
    seconds["generate"], t = time.perf_counter() - t, time.perf_counter()
    _say(cfg, f"{label}: masking test (top-k vs random-k dimensions)")
    masking = masking_test(
        model,
        irm,
        held,
        ranked,
        ks=cfg.mask_ks,
        n_random=cfg.n_random,
        seed=seed,
        base_loss=losses["heldout_loss_base"],
        irm_loss=losses["heldout_loss_irm"],
    )
    seconds["masking"], t = time.perf_counter() - t, time.perf_counter()
    explanation = None
    if explained:
        _say(cfg, f"{label}: explanation (logit lens, DLA, patching, neurons, dimension profile)")
        explanation = explain(
            model,
            irm,
            tokens=ctx.char_tokens[alignment],
            held_out=held,
            probe=probe_tokens(held, cfg.probe_reply_tokens, cfg.probe_texts),
            classes=ctx.classes,
            dims=ranked[:3],
            k_neurons=cfg.k_neurons,
            n_random=cfg.n_random,
            seed=seed,
        )
        seconds["explain"] = time.perf_counter() - t
    view = None
    if explained and ctx.off_replies:
        off_reply = ctx.off_replies[index][1]
        title = f"{label}: {first.prompt!r}, coloured by |IRM output| and dimension {ranked[0]}"
        view = irm_on_off_view(model, irm, off_reply, first, dim=ranked[0], title=title)
    vader = {
        "vader_on": float(frame.vader.mean()),
        "vader_on_greedy": float(frame[frame["mode"] == "greedy"].vader.mean()),
        "vader_on_sampled": float(frame[frame["mode"] == "sampled"].vader.mean()),
        "vader_corpus": float(pd.Series(vader_compound(corpus.held_out[: train_cfg.eval_texts])).mean()),
    }
    return Unit(
        preset.name,
        alignment,
        seed,
        result.to_frame().assign(preset=preset.name, alignment=alignment, seed=seed),
        losses,
        vader,
        frame,
        stats,
        stats_from_tokens(outs, irm.layers),
        (first, [model.tokenizer.decode([t]) for t in first.tokens]),
        masking,
        sum(p.numel() for p in irm.parameters()),
        seconds,
        explanation,
        view,
    )


# ---------------------------------------------------------------- across units


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    s = pd.Series(list(values), dtype=float)
    return {"mean": float(s.mean()), "std": float(s.std(ddof=0)), "values": s.round(6).tolist()}


def group_summary(units: Sequence[Unit], cfg: Neuron1512Config, vader_off: float) -> dict:
    """Across the seeds of one (preset, alignment): losses and VADER as mean / std, shares, dominant dims."""
    shares = [u.share for u in units]
    mean, std = share_stats(shares)
    dominant = dominant_dims(shares, cfg.z_dominant)
    masking = pd.concat([u.masking.to_frame().assign(seed=u.seed) for u in units])
    mask_summary = {
        str(k): {
            "top_removed": _mean_std(g[g.kind == "top"].removed),
            "random_removed": _mean_std(g[g.kind == "random"].removed),
        }
        for k, g in masking.groupby("k")
    }
    out = {
        "seeds": [u.seed for u in units],
        **{k: _mean_std([u.losses[k] for u in units]) for k in units[0].losses},
        "vader_off": vader_off,
        **{k: _mean_std([u.vader[k] for u in units]) for k in units[0].vader},
        "top10_mean_share": [(d, s, float(std[d])) for d, s in top_dims(mean.float(), cfg.top_k)],
        "top10_per_seed": {u.seed: top_dims(u.share, cfg.top_k) for u in units},
        "top_share_per_seed": {u.seed: u.stats.top_share([1, 10, 50]) for u in units},
        "dominant_dims": dominant.to_dict("records"),
        "masking": mask_summary,
        "irm_params": units[0].irm_params,
        "seconds": {k: round(sum(u.seconds.get(k, 0.0) for u in units), 1) for k in units[0].seconds | {"explain": 0}},
    }
    explained = next((u.explanation for u in units if u.explanation is not None), None)
    if explained is not None:
        out["explanation"] = explained.summary()
    return out


def main(cfg: Neuron1512Config) -> dict:
    """Run the job; returns the summary (also written to ``cfg.out/summary.json``)."""
    cfg = resolve(cfg)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if cfg.device.startswith("cuda") and cfg.model != DEFAULT_MODEL else None
    model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    prompts = chat_prompts(cfg.n_prompts)
    _say(cfg, "base model: generating replies with the IRM off; RW classes of the neurons; characteristic tokens")
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
    units: list[Unit] = []
    for preset in cfg.runs:
        for alignment in preset.alignments:
            for i, seed in enumerate(cfg.seeds):
                units.append(run_unit(ctx, cfg, preset, alignment, seed, explained=i == 0))
    _say(cfg, "summarising across seeds and drawing")
    summary, figures, tables = summarise(ctx, cfg, units, vader_off)
    _say(
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
    )
    # the wall time including the writing goes into config.json and summary.json (the report shows it without)
    summary["seconds"] = time.perf_counter() - t0
    cfg = cfg.replace(wall_seconds=round(summary["seconds"], 1))
    summary["config"] = cfg.to_dict()
    cfg.save_json(Path(cfg.out) / "config.json")
    (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable) + "\n")
    return summary


CAPTIONS = {
    "training_curves": "Training and held-out loss per preset, alignment and seed: every IRM should go down.",
    "dimension_share": (
        "Seed-mean share of the IRM output per residual dimension: a spike would be a dominant dimension."
    ),
    "sparsity": "Share of the output in the top-k dimensions vs k: the dashed line is a uniform spread.",
    "masking": (
        "Realignment lost when the top-k dimensions are masked vs k random ones (mean ± std over seeds and draws)."
    ),
    "realignment": "Held-out loss and VADER sentiment of replies with the IRM off and on (mean over seeds).",
    "massive_vs_irm": (
        "The base model's peak activation per dimension, with each alignment's top IRM dimensions marked."
    ),
    "stability": (
        "Spearman correlation of the dimension shares between runs: "
        "compare seeds of one alignment with alignments of one seed."
    ),
}
"""One sentence per figure saying what to look at (figures named per alignment get theirs in :func:`captions`)."""


def captions(figures: Mapping[str, Any]) -> dict[str, str]:
    """The report caption of each figure."""
    out = {}
    for name in figures:
        if name in CAPTIONS:
            out[name] = CAPTIONS[name]
        elif name.startswith("explanation_"):
            out[name] = (
                "Per layer: where the prediction changes (logit lens), what the IRM's writes push directly (DLA) and "
                "which activations carry the change into the base run (patching, 1 = all of it)."
            )
        elif name.startswith("heatmap_tokens_"):
            out[name] = (
                "|IRM output| per layer and dimension for the first generated tokens: vertical stripes are dimensions."
            )
        elif name.startswith("heatmap_"):
            out[name] = "Mean |IRM output| per layer and residual dimension on held-out texts (first seed)."
    return out


def summarise(ctx: Context, cfg: Neuron1512Config, units: Sequence[Unit], vader_off: float) -> tuple[dict, dict, dict]:
    """Summary, figures and tables of all units."""
    model = ctx.model
    first = [u for u in units if u.seed == cfg.seeds[0]]
    held_all = [e for u in first for e in encode_for(model, ctx.corpora[u.alignment].held_out[:8], TrainConfig())]
    magnitudes = base_magnitudes(model, held_all)
    peak = magnitudes.max(0).values
    base_rank = torch.empty(peak.numel(), dtype=torch.long)
    base_rank[peak.argsort(descending=True)] = torch.arange(peak.numel())
    groups: dict[tuple[str, str], list[Unit]] = {}
    for u in units:
        groups.setdefault((u.preset, u.alignment), []).append(u)
    results: dict[str, dict[str, dict]] = {}
    for (p, a), g in groups.items():
        results.setdefault(p, {})[a] = group_summary(g, cfg, vader_off)
    stab, dominant, matrices, pair_frames = {}, {}, {}, []
    for preset in cfg.runs:
        mine = [u for u in units if u.preset == preset.name]
        shares = {(u.alignment, u.seed): u.share for u in mine}
        every = dominant_dims([u.share for u in mine], cfg.z_dominant).dim.tolist()
        dominant[preset.name] = {
            a: [d["dim"] for d in results[preset.name][a]["dominant_dims"]] for a in preset.alignments
        }
        dominant[preset.name]["every_alignment_and_seed"] = every
        if len(shares) >= 2:
            s = stability(shares, k=cfg.top_k)
            stab[preset.name] = s.summary()
            matrices[preset.name] = (s.labels, s.spearman.numpy())
            pair_frames.append(s.pairs().assign(preset=preset.name))
    lists = [set(dominant[p.name]["every_alignment_and_seed"]) for p in cfg.runs]
    dominant["shared_by_all_presets"] = sorted(set.intersection(*lists)) if lists else []
    compare = _compare_presets(cfg, groups, results)
    summary = {
        "model": str(model.cfg.model_name),
        "device": cfg.device,
        "command": cfg.command,
        "config": cfg.to_dict(),
        "presets": {
            p.name: {
                "description": PRESETS[p.name][0],
                "read": format_hook_name(p.irm.read_hook, p.irm.read_layer),
                "write": p.irm.write_hook,
                "irm": p.irm.to_dict(),
                "train": p.train.to_dict(),
                "alignments": list(p.alignments),
                "seeds": list(cfg.seeds),
                "irm_params": groups[(p.name, p.alignments[0])][0].irm_params,
            }
            for p in cfg.runs
        },
        "results": results,
        "stability": stab,
        "dominant_dims": dominant,
        "presets_compare": compare,
        "massive_dims": massive_dims(magnitudes, cfg.top_k).to_dict(orient="records"),
        "irm_top_dims_base_rank": {
            f"{p}/{a}": [int(base_rank[d]) for d, *_ in r["top10_mean_share"]]
            for p, rs in results.items()
            for a, r in rs.items()
        },
        "seconds_by_phase": {
            k: round(sum(u.seconds.get(k, 0.0) for u in units), 1)
            for k in ("train", "record", "generate", "masking", "explain")
        },
    }
    figures = _figures(ctx, cfg, units, groups, peak, matrices)
    return summary, figures, _tables(ctx, units, groups, magnitudes, base_rank, pair_frames)


def _compare_presets(cfg: Neuron1512Config, groups: Mapping, results: Mapping) -> dict:
    """Per alignment trained under several presets: do they write to the same dimensions (seed-mean shares)?"""
    out = {}
    names = [p.name for p in cfg.runs]
    for a in dict.fromkeys(al for p in cfg.runs for al in p.alignments):
        for x, y in combinations([n for n in names if (n, a) in groups], 2):
            mx, my = (share_stats([u.share for u in groups[(n, a)]])[0] for n in (x, y))
            out[f"{a}: {x} vs {y}"] = {
                "spearman": spearman(mx, my),
                "top_jaccard": top_jaccard(mx, my, cfg.top_k),
                f"dominant_{x}": [d["dim"] for d in results[x][a]["dominant_dims"]],
                f"dominant_{y}": [d["dim"] for d in results[y][a]["dominant_dims"]],
            }
    return out


def _figures(ctx, cfg, units, groups, peak, matrices) -> dict:
    model = ctx.model
    mean_shares = {f"{p}/{a}": share_stats([u.share for u in g])[0].float() for (p, a), g in groups.items()}
    tops = {n: s.argsort(descending=True)[: cfg.top_k].tolist() for n, s in mean_shares.items()}
    table = pd.DataFrame(
        [
            {
                "alignment": f"{p}/{a}",
                **{k: pd.Series([u.losses[k] for u in g]).mean() for k in ("heldout_loss_base", "heldout_loss_irm")},
                "vader_off": float(ctx.off.vader.mean()),
                "vader_on": pd.Series([u.vader["vader_on"] for u in g]).mean(),
            }
            for (p, a), g in groups.items()
        ]
    )
    firsts = [g[0] for g in groups.values()]
    figures = {
        "training_curves": plots.training_curves({u.label: u.log for u in units}),
        "dimension_share": plots.dimension_share(mean_shares, {n: t[:5] for n, t in tops.items()}),
        "sparsity": plots.sparsity_curve(
            {u.label: u.stats for u in firsts}, [1, 2, 5, 10, 20, 50, 100, 200, model.cfg.d_model], model.cfg.d_model
        ),
        "masking": plots.masking_bars(  # error bars: spread over seeds and random draws
            {f"{p}/{a}": pd.concat([u.masking.to_frame() for u in g]) for (p, a), g in groups.items()}
        ),
        "realignment": plots.realignment_bars(table),
        "massive_vs_irm": plots.massive_vs_irm(peak, tops),
    }
    if matrices:
        figures["stability"] = plots.stability_heatmap(matrices)
    for p in cfg.runs:
        frames = {
            u.alignment: {"lens_kl": e.lens_kl, "dla": e.dla, "patching": e.patching}
            for u in firsts
            if u.preset == p.name and (e := u.explanation) is not None
        }
        if frames:
            figures[f"explanation_{p.name}"] = plots.explanation_figure(frames)
    for u in firsts:
        name = f"{u.preset}_{u.alignment}"
        figures[f"heatmap_{name}"] = plots.output_heatmap(u.stats, f"Mean |IRM output| on held-out {u.label} texts")
        gen, toks = u.example
        figures[f"heatmap_tokens_{name}"] = plots.token_heatmaps(
            gen.irm_out, toks, u.stats.layers, f"|IRM output| per generated token ({u.label}): {gen.prompt!r}", n=3
        )
    return figures


def _tables(ctx, units, groups, magnitudes, base_rank, pair_frames) -> dict:
    peak = magnitudes.max(0).values
    rows = [
        {
            "preset": u.preset,
            "alignment": u.alignment,
            "seed": u.seed,
            **u.losses,
            **u.vader,
            "irm_params": u.irm_params,
        }
        | {f"seconds_{k}": v for k, v in u.seconds.items()}
        for u in units
    ]
    dims = []
    for (p, a), g in groups.items():
        mean, std = share_stats([u.share for u in g])
        dims.append(
            pd.DataFrame(
                {
                    "preset": p,
                    "alignment": a,
                    "dim": range(len(mean)),
                    "share_mean": mean.numpy(),
                    "share_std": std.numpy(),
                    **{f"share_seed{u.seed}": u.share.numpy() for u in g},
                    "generation_share": g[0].gen_stats.dim_share.numpy(),
                    "base_peak_mean_abs": peak.numpy(),
                    "base_rank": base_rank.numpy(),
                }
            )
        )
    explained = [(u, u.explanation) for u in units if u.explanation is not None]

    def expl(attr: str) -> pd.DataFrame:
        return pd.concat([getattr(e, attr).assign(preset=u.preset, alignment=u.alignment) for u, e in explained])

    tables = {
        "summary": pd.DataFrame(rows),
        "train_log": pd.concat([u.log for u in units]),
        "generations": pd.concat([ctx.off.assign(preset="", seed=-1), *(u.generations for u in units)]),
        "dimensions": pd.concat(dims),
        "masking": pd.concat(
            [u.masking.to_frame().assign(preset=u.preset, alignment=u.alignment, seed=u.seed) for u in units]
        ),
        "massive_dims": massive_dims(magnitudes, 20),
    }
    if pair_frames:
        tables["stability_pairs"] = pd.concat(pair_frames)
    if explained:
        tables |= {
            "explain_tokens": expl("tokens"),
            "explain_logit_lens": expl("lens_kl"),
            "explain_dla": expl("dla"),
            "explain_patching": expl("patching"),
            "explain_neurons": expl("neurons"),
            "explain_ablation": expl("ablation"),
            "explain_dimension_profile": pd.concat(
                [
                    e.profile.by_layer.assign(preset=u.preset, alignment=u.alignment, dim=e.profile.dim)
                    for u, e in explained
                ]
            ),
        }
    return tables


# ---------------------------------------------------------------- terminal


def _pct(x: float | None) -> str:
    """A fraction as a percentage with two significant digits (0.06% and 0.04% stay distinguishable)."""
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.2g}%" if abs(x) < 0.1 else f"{100 * x:.1f}%"


def report(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"{summary['model']}: {summary['seconds'] / 60:.1f} min"]
    for p, info in summary["presets"].items():
        lines.append(
            f" preset {p} ({info['read']} -> {info['write']}, IRM {info['irm_params'] / 1e6:.1f} M parameters)"
        )
        for a, r in summary["results"][p].items():
            top = ", ".join(f"{d} ({_pct(s)}±{_pct(sd)})" for d, s, sd in r["top10_mean_share"][:3])
            k, m = next(iter(r["masking"].items()), ("?", None))
            mask = f"top-{k} removes {_pct(m['top_removed']['mean'])} vs random {_pct(m['random_removed']['mean'])}"
            lines.append(
                f"  {a:9s} held-out loss {r['heldout_loss_base']['mean']:.3f} -> {r['heldout_loss_irm']['mean']:.3f}"
                f"±{r['heldout_loss_irm']['std']:.3f}; VADER {r['vader_off']:+.2f} -> {r['vader_on']['mean']:+.2f}"
                f"±{r['vader_on']['std']:.2f} (corpus {r['vader_corpus']['mean']:+.2f}); top dims {top}; masking {mask}"
            )
            dom = r["dominant_dims"]
            lines.append(
                "            dominant in every seed: "
                + (", ".join(f"{d['dim']} ({_pct(d['share_mean'])})" for d in dom) if dom else "none")
            )
            if "explanation" in r:
                e = r["explanation"]
                kl = e["logit_lens_kl_by_layer"]
                first = next((lbl for lbl, v in kl.items() if v > 0.1 * max(kl.values(), default=0)), "-")
                abl = e["neuron_ablation"]
                lines.append(
                    f"            explanation: logit-lens KL first >10% of its max at {first}; "
                    f"top-{abl['k']} neurons ablated remove {_pct(abl['top_removed'])} vs random "
                    f"{_pct(abl['random_removed_mean'])}; top dim {e['dimension_profile']['dim']} peaks in the base "
                    f"at layer {e['dimension_profile']['peak_layer']}"
                )
        st = summary["stability"].get(p)
        if st:
            parts = [
                f"{kind.replace('_', ' ')} {v['spearman_mean']:.2f}" if v["n_pairs"] else f"{kind.replace('_', ' ')} -"
                for kind, v in st.items()
            ]
            lines.append("  Spearman of dimension shares: " + ", ".join(parts))
        every = summary["dominant_dims"][p]["every_alignment_and_seed"]
        lines.append(f"  dominant in every alignment and seed: {', '.join(map(str, every)) if every else 'none'}")
    for name, c in summary.get("presets_compare", {}).items():
        lines.append(f" {name}: Spearman {c['spearman']:.2f}, top-10 Jaccard {c['top_jaccard']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main(parse_args())))
