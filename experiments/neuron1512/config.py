"""The main job's config: presets, ``--quick`` sizes, the resolved runs and the command line."""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from experiments.cli import Group, parse_flags
from experiments.fields import (
    Alignments,
    Check,
    Counts,
    Device,
    ExperimentConfig,
    ModelName,
    OutDir,
    Seeds,
    check_alignments,
    check_layers,
    with_quick,
)
from workbench.config import Config, Count, Fraction, NonNegative, Range
from workbench.data.chat_prompts import CHAT_PROMPTS
from workbench.data.corpora import ALIGNMENTS
from workbench.distributed import dist_state
from workbench.irm import IRMConfig, TrainConfig
from workbench.models import DEFAULT_MODEL

__all__ = ["PRESETS", "QUICK", "QUICK_TRAIN", "Neuron1512Config", "Preset", "parse_args", "resolve"]


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
        "4 hidden layers of 1·d_model, lr 3e-3, batch 16 (chosen from measurement: 1.6x the real tokens/s of batch "
        "4, and a lower held-out loss at equal wall time than batch 4 at lr 1e-3), to the stopping rule (ceiling 1000)",
        IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=1.0, n_hidden=4),
        TrainConfig(
            steps=1000, batch_size=16, lr=3e-3, max_len=40, warmup=5, eval_every=10, eval_texts=64, patience=15
        ),
    ),
    "paper": (
        "the paper's code: read blocks.0.hook_resid_mid, add into hook_resid_mid of every layer, "
        "4 hidden layers of 3·d_model, lr 1e-4, batch 8, to the stopping rule (ceiling 1500 steps)",
        IRMConfig(read_hook="resid_mid", write_hook="resid_mid", hidden_mult=3.0, n_hidden=4),
        TrainConfig(steps=1500, batch_size=8, lr=1e-4, max_len=40, warmup=5, eval_every=20, eval_texts=64, patience=15),
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
    snapshot_first=1,
)
"""``--quick``: experiment fields (flags still win)."""


def _check_presets(flag: str, names: Sequence[str]) -> None:
    unknown = [p for p in names if p not in PRESETS]
    if unknown or not names:
        raise ValueError(f"{flag}: unknown presets {unknown}; choose from {', '.join(PRESETS)}")


@dataclass(frozen=True)
class Neuron1512Config(ExperimentConfig):
    """Train IRMs per preset, alignment and seed; find their dominant dimensions and explain the realignment."""

    QUICK: ClassVar[Mapping[str, Any]] = QUICK
    INTERNAL: ClassVar[Collection[str]] = ("runs", "command", "wall_seconds")

    model: ModelName = DEFAULT_MODEL
    """Model name, local HF folder or hub id."""
    device: Device = "cpu"
    """Torch device (cpu, cuda)."""
    presets: Annotated[tuple[str, ...], Check(_check_presets)] = ("card", "paper")
    """Presets to run (see the list below); flags for the IRM and training override every preset's values."""
    alignments: Alignments = ALIGNMENTS
    """Alignment corpora trained under the first preset."""
    other_alignments: Annotated[tuple[str, ...], Check(check_alignments)] = ("negative",)
    """Alignments trained under the other presets (empty = the same as --alignments)."""
    seeds: Seeds = (0, 1, 2)
    """Seeds per (preset, alignment): each drives the IRM init and the data order."""
    min_confidence: Fraction = 0.8
    """Annotator confidence a tweet needs to enter a corpus."""
    max_items: Count = 2000
    """Tweets per alignment corpus (train + held out)."""
    n_prompts: Annotated[int, Range(ge=1, le=len(CHAT_PROMPTS))] = 3
    """Chat prompts for the generations (each greedy and sampled)."""
    max_new_tokens: Count = 16
    """Tokens per generated reply."""
    top_k: Count = 10
    """Top dimensions reported per alignment (and the k of the top-k Jaccard index)."""
    z_dominant: NonNegative = 3.0
    """A dimension is dominant if its share's z-score (against all dimensions) exceeds this in every seed."""
    snapshot_first: Count = 30
    """First training step of the training-length control (then x10/3, x3, ...: 30, 100, 300, 1000)."""
    mask_ks: Counts = (1, 10)
    """k values of the masking test."""
    n_random: Count = 3
    """Random draws per k in the masking test and random neuron sets in the neuron ablation."""
    probe_texts: Count = 12
    """Held-out texts whose prompt + first reply tokens form the probe batch of the explanation."""
    probe_reply_tokens: Count = 3
    """Reply tokens in each probe prompt (the explanation reads the last position)."""
    k_neurons: Count = 10
    """Top neurons in the explanation's table and ablation."""
    n_char_tokens: Count = 20
    """Characteristic tokens per alignment (most over-represented in its corpus vs the others)."""
    out: OutDir = "figures/neuron1512"
    """Output folder (figures, tables, summary.json)."""
    ckpt_dir: OutDir = "runs/neuron1512"
    """Checkpoint folder (one subfolder per preset, alignment and seed)."""
    resume: bool = True
    """Resume training from checkpoints in ckpt_dir."""
    workers: Count = 1
    """Processes that run the units side by side, the threads shared between them (1: every unit in this process;
    on a CPU with a small model, units side by side keep the cores busier than one unit with every thread)."""
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
        """Each preset's IRM layers (read and write, each once) and the top-k sizes against the model."""
        hf = self.model_config()
        for p in self.runs:
            repeated = sorted({layer for layer in p.irm.layers if p.irm.layers.count(layer) > 1})
            if repeated:
                raise ValueError(f"--layers repeats {', '.join(map(str, repeated))}: give each layer once")
            if hf is not None:
                check_layers("--layers", p.irm.layers, hf.num_hidden_layers, self.model)
                check_layers("--read-layer", (p.irm.read_layer,), hf.num_hidden_layers, self.model)
        if self.workers > 1 and dist_state().num_processes > 1:
            raise ValueError(
                f"--workers {self.workers}: under accelerate launch the processes are already there; pass --workers 1"
            )
        if hf is not None:
            for name, ks in (("--top-k", (self.top_k,)), ("--mask-ks", self.mask_ks)):
                if max(ks) > hf.hidden_size:
                    raise ValueError(
                        f"{name} {max(ks)}: {self.model} has {hf.hidden_size} dimensions; pass at most that"
                    )


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
    cfg = with_quick(cfg) if quick_sizes else cfg  # a config built in Python: fields at their defaults
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


def parse_args(argv: Sequence[str] | None = None) -> Neuron1512Config:
    """The checked config from command-line flags: experiment flags, then IRM and training flags that override the
    presets (``--quick`` changes only what no flag sets)."""
    presets = "\n".join(f"  {name}: {doc}" for name, (doc, _, _) in PRESETS.items())
    return parse_flags(
        Neuron1512Config,
        argv,
        description=(sys.modules[__package__].__doc__ or "").splitlines()[0],
        epilog=f"presets (named defaults of the IRM and training flags; flags override them):\n{presets}",
        groups=(
            Group("IRM (overrides the preset; [x] = IRMConfig's default)", IRMConfig),
            Group("training (overrides the preset; [x] = TrainConfig's default)", TrainConfig, {"seed"}),
        ),
        resolve=lambda cfg, given: resolve(cfg, irm=given["IRMConfig"], train=given["TrainConfig"], quick_sizes=False),
    )
