"""One unit of the main job (:mod:`experiments.neuron1512`): train one IRM (preset, alignment, seed) and measure it.

:func:`run_unit` trains the IRM with the LM frozen, then measures the realignment (losses, VADER of
replies with the IRM on), records the IRM output per token, layer and residual dimension (and, as
the control of the stability statistics, that of the same seed's untrained IRM), runs the masking
test, and, for the first seed of each (preset, alignment), explains it (*The Mysterious Case of
Neuron 1512*, Smith et al., 2024).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from experiments.common import say
from workbench.data.corpora import Corpus
from workbench.irm import IRM, TrainConfig, eval_loss, train_irm
from workbench.irm.dimensions import MaskingResult, masking_test
from workbench.irm.explain import Explanation, explain, probe_tokens
from workbench.irm.generate import Generation, generate_replies, generations_frame
from workbench.irm.lengths import Snapshot, SnapshotRecorder, snapshot_steps
from workbench.irm.record import OutputStats, collect_output_stats, stats_from_tokens
from workbench.irm.text import Encoded
from workbench.irm.train import encode_for
from workbench.neurons.weights import NeuronClasses
from workbench.sentiment import vader_compound
from workbench.views import Row, irm_on_off_view

if TYPE_CHECKING:
    from experiments.neuron1512.config import Neuron1512Config, Preset


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
    base_losses: dict[tuple, float] = field(default_factory=dict)
    """The base model's loss per (alignment, split, encoding): the same for every seed, computed once."""

    def base_loss(self, alignment: str, split: str, cfg: TrainConfig, data: Sequence[Encoded]) -> float:
        """The base model's loss on ``data`` (an alignment's ``split`` encoded by ``cfg``), computed once."""
        key = (alignment, split, cfg.eval_texts, cfg.max_len, cfg.user_prompt, cfg.system_prompt, cfg.chat)
        if key not in self.base_losses:
            self.base_losses[key] = eval_loss(self.model, None, data)
        return self.base_losses[key]


@dataclass(frozen=True)
class Unit:
    """One trained IRM (preset, alignment, seed) and what was measured on it."""

    preset: str
    alignment: str
    seed: int
    log: pd.DataFrame
    """Training history."""
    steps: int
    """Optimizer steps trained."""
    converged: bool
    """Whether training stopped by the convergence rule (False: it reached the step ceiling)."""
    eval_curve: list[tuple[int, float]]
    """``(step, held-out loss)`` at every evaluation during training."""
    snapshots: list[Snapshot]
    """The IRM at log-spaced steps of its run and at its final step (the training-length control)."""
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
    untrained_share: torch.Tensor
    """The control: the share per residual dimension of this seed's IRM at init (its last layer's random draw
    kept; zeroed, it writes nothing), on the same held-out texts."""
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


def untrained_share(model: Any, preset: Preset, seed: int, held: Sequence[Encoded]) -> torch.Tensor:
    """Share per residual dimension of the output of ``seed``'s IRM at init, its last layer not zeroed, on ``held``."""
    irm = IRM.for_model(model, preset.irm, seed=seed, identity=False)
    return collect_output_stats(model, irm, held).dim_share


def unit_dir(cfg: Neuron1512Config, preset: Preset, alignment: str, seed: int) -> Path:
    """The unit's training folder: checkpoints, snapshots, ``train_log.csv``, ``run_state.json``."""
    return Path(cfg.ckpt_dir) / preset.name / alignment / f"seed-{seed}"


def run_unit(
    ctx: Context, cfg: Neuron1512Config, preset: Preset, alignment: str, seed: int, *, explained: bool
) -> Unit:
    """Train one IRM and measure it (and explain it when ``explained``)."""
    model, label = ctx.model, f"{preset.name}/{alignment}/seed {seed}"
    corpus = ctx.corpora[alignment]
    train_cfg = preset.train.replace(seed=seed)
    seconds, t = {}, time.perf_counter()
    irm = IRM.for_model(model, preset.irm, seed=seed)
    rule = train_cfg.stopping_rule
    plan = f"{rule.describe()}, at most {train_cfg.steps} steps" if rule else f"{train_cfg.steps} steps"
    say(cfg, f"{label}: training ({plan})")
    held = encode_for(model, corpus.held_out[: train_cfg.eval_texts], train_cfg)
    held_base = ctx.base_loss(alignment, "held_out", train_cfg, held)
    out_dir = unit_dir(cfg, preset, alignment, seed)
    recorder = SnapshotRecorder(
        model,
        irm,
        held,
        snapshot_steps(train_cfg.steps, cfg.snapshot_first),
        out_dir / "snapshots",
        ks=cfg.mask_ks,
        n_random=cfg.n_random,
        seed=seed,
        base_loss=held_base,
    )
    result = train_irm(
        model,
        irm,
        corpus.train,
        train_cfg,
        held_out=corpus.held_out,
        out_dir=out_dir,
        resume=cfg.resume,
        progress=cfg.progress,
        desc=f"IRM {preset.name}/{alignment}/s{seed}",
        callback=recorder,
    )
    seconds["train"], t = time.perf_counter() - t, time.perf_counter()
    say(cfg, f"{label}: losses and recording the IRM output on held-out texts")
    seen = encode_for(model, corpus.train[: train_cfg.eval_texts], train_cfg)
    losses = {
        "train_loss_base": ctx.base_loss(alignment, "train", train_cfg, seen),
        "train_loss_irm": eval_loss(model, irm, seen),
        "heldout_loss_base": held_base,
        "heldout_loss_irm": eval_loss(model, irm, held),
        # the first 16 held-out texts: the evaluation set of the 30-step study (eval_texts was 16), kept comparable
        "heldout16_loss_base": ctx.base_loss(alignment, "held_out[:16]", train_cfg, held[:16]),
        "heldout16_loss_irm": eval_loss(model, irm, held[:16]),
    }
    stats = collect_output_stats(model, irm, held)
    untrained = untrained_share(model, preset, seed, held)
    ranked = stats.dim_share.argsort(descending=True).tolist()
    seconds["record"], t = time.perf_counter() - t, time.perf_counter()
    say(cfg, f"{label}: generating {2 * len(ctx.prompts)} replies with the IRM on")
    on = generate_replies(model, irm, ctx.prompts, seed=seed, max_new_tokens=cfg.max_new_tokens)
    frame = generations_frame(on, alignment).assign(preset=preset.name, seed=seed)
    outs = torch.cat([g.irm_out for _, g in on if g.irm_out is not None and len(g.tokens)])
    index, first = next((i, g) for i, (_, g) in enumerate(on) if len(g.tokens))
    seconds["generate"], t = time.perf_counter() - t, time.perf_counter()
    say(cfg, f"{label}: masking test (top-k vs random-k dimensions)")
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
    final = Snapshot(result.steps, stats.dim_share, stats.top_share([1, 10]), masking)
    snapshots = [s for s in recorder.load() if s.step < result.steps] + [final]
    explanation = None
    if explained:
        say(cfg, f"{label}: explanation (logit lens, DLA, patching, neurons, dimension profile)")
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
        result.steps,
        result.converged,
        result.eval_curve,
        snapshots,
        losses,
        vader,
        frame,
        stats,
        stats_from_tokens(outs, irm.layers),
        untrained,
        (first, [model.tokenizer.decode([t]) for t in first.tokens]),
        masking,
        sum(p.numel() for p in irm.parameters()),
        seconds,
        explanation,
        view,
    )
