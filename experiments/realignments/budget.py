"""Each realignment's training budget beside its gain, and the RL model over several seeds."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from safetensors import safe_open
from transformer_lens.model_bridge import TransformerBridge

from experiments.common import say
from experiments.realignments.config import RealignmentsConfig
from experiments.realignments.measures import Behaviour, Realigned
from workbench.data.corpora import load_alignment
from workbench.hooks import ModelSide
from workbench.irm import TrainConfig
from workbench.irm.checkpoint import read_meta
from workbench.irm.train import encode_for
from workbench.tuning import make_tuned, rl_config, training_budget

__all__ = ["budgets", "irm_budget", "more_rl_seeds", "seed_spread"]


def more_rl_seeds(cfg: RealignmentsConfig) -> list[Realigned]:
    """The RL models of ``cfg.rl_seeds`` after the first (none under ``--quick``), named ``rl-seed<N>``."""
    found = []
    for seed in () if cfg.quick else cfg.rl_seeds[1:]:
        tuned = make_tuned(
            "rl", rl=rl_config(cfg.base, quick=cfg.quick, seed=seed), progress=cfg.progress, say=partial(say, cfg)
        )
        found.append(Realigned(f"rl-seed{seed}", ModelSide(tuned.model, name=f"rl-seed{seed}"), str(tuned.path)))
    return found


def seed_spread(moved: list[Behaviour], seeds: tuple[int, ...]) -> dict:
    """The RL gain over its seeds (``rl`` is the first seed, ``rl-seed<N>`` the others): per seed, mean, spread."""
    gains = {"rl": None, **{f"rl-seed{s}": None for s in seeds[1:]}}
    for b in moved:
        if b.name in gains:
            gains[b.name] = b.gain
    values = [g for g in gains.values() if g is not None]
    mean = sum(values) / len(values)
    std = (sum((g - mean) ** 2 for g in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"seeds": list(seeds[: len(values)]), "gains": values, "gain_mean": mean, "gain_std": std}


def irm_budget(checkpoint: str | Path, base: TransformerBridge) -> dict:
    """Steps, texts seen and trainable parameters of an IRM checkpoint (``irm.json``); tokens seen estimated as
    texts seen x the mean encoded length of negative tweets in the IRM's training format (its corpus is not stored)."""
    meta = read_meta(checkpoint)
    train = TrainConfig.from_dict(meta["train_config"]) if "train_config" in meta else TrainConfig()
    texts = (meta["step"] or 0) * train.batch_size * train.grad_accum
    with safe_open(str(Path(checkpoint) / "irm.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (no __iter__)
    sample = encode_for(base, load_alignment("negative", max_items=400).train[:200], train)
    mean_len = sum(len(e.ids) for e in sample) / len(sample)
    return {
        "steps": meta["step"],
        "texts_seen": texts,
        "tokens_seen": round(texts * mean_len),
        "tokens_seen_estimated": True,
        "trainable_parameters": params,
    }


def budgets(models: list[Realigned], base: TransformerBridge) -> dict[str, dict]:
    """Each realignment's training budget (steps, tokens seen, trainable parameters), to state beside its gain."""
    return {r.name: irm_budget(r.source, base) if r.name == "irm" else training_budget(r.source) for r in models}
