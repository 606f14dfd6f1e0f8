"""The main job's config: presets, ``--quick`` sizes, the resolved runs and the command line."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.checks import check_against_model, preflight
from experiments.common import flag_kwargs
from workbench.config import Config, field_docs
from workbench.data.corpora import ALIGNMENTS
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
        "4 hidden layers of 1·d_model, lr 1e-3, batch 4",
        IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=1.0, n_hidden=4),
        TrainConfig(steps=2000, batch_size=4, lr=1e-3, max_len=40, warmup=5, eval_every=25, eval_texts=64, patience=4),
    ),
    "paper": (
        "the paper's code: read blocks.0.hook_resid_mid, add into hook_resid_mid of every layer, "
        "4 hidden layers of 3·d_model, lr 1e-4, batch 8",
        IRMConfig(read_hook="resid_mid", write_hook="resid_mid", hidden_mult=3.0, n_hidden=4),
        TrainConfig(steps=1000, batch_size=8, lr=1e-4, max_len=40, warmup=5, eval_every=25, eval_texts=64, patience=4),
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
    snapshot_first: int = 30
    """First training step of the training-length control (then x10/3, x3, ...: 30, 100, 300, 1000)."""
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
        prog="python -m experiments.neuron1512",
        description=(sys.modules[__package__].__doc__ or "").splitlines()[0],
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
