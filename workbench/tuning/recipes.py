"""The comparison models every experiment and notebook makes the same way: a supervised tune of the last layers on
the negative tweets, or GRPO towards VADER negativity (the demo's PPO), each at a full and a quick size.

    tuned = make_tuned("supervised", tune=tune_config(DEFAULT_MODEL, quick=True))
    tuned.model, tuned.path  # the bridge and its cached HF folder
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

from workbench.models import load_model
from workbench.tuning.rl import RLConfig, rl_tune
from workbench.tuning.supervised import TuneConfig, load_tuned, tune_last_layers

__all__ = ["TUNINGS", "TunedModel", "make_tuned", "rl_config", "tune_config"]

TUNINGS = ("supervised", "rl")
"""How a comparison model is made: next-token tuning of the last layers, or GRPO with a VADER reward."""


def tune_config(
    base: str,
    *,
    quick: bool = False,
    last_layers: int = 2,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    chat: bool = True,
) -> TuneConfig:
    """The supervised tuning of ``base``'s last layers at lr 1e-3 to the IRM's stopping rule (best held-out loss
    improved by < 0.5% over the last 15 evaluations, one every 10 steps; ceiling 1000 steps, or exactly ``steps``
    when given), so the comparison model is as converged as the IRM (quick: 8 steps at lr 3e-3 on 500 short tweets
    in batches of 4, ~20 s).

    ``chat``: train on each tweet as the chat reply to "Write a tweet." (loss on the reply; how realignments scores
    it, like the IRM), or on the bare text (how model_diff's raw-text prompts and the circuits tasks score it). A
    comparison model trains on the format it is scored on.
    """
    if quick:
        return TuneConfig(
            model=base,
            last_layers=last_layers,
            steps=steps or 8,
            lr=lr or 3e-3,
            batch_size=4,
            max_length=32,
            max_items=500,
            seed=seed,
            chat=chat,
        )
    return TuneConfig(
        model=base,
        last_layers=last_layers,
        steps=steps or 1000,
        lr=lr or 1e-3,
        seed=seed,
        chat=chat,
        patience=0 if steps else 15,
        eval_every=10,
    )


def rl_config(base: str, *, quick: bool = False, steps: int | None = None, seed: int = 0) -> RLConfig:
    """The GRPO tuning of ``base`` (``steps``: RLConfig's default unless given; quick: 6 steps of 8 completions,
    < 2 min on CPU)."""
    if quick:
        return RLConfig(
            model=base,
            steps=steps or 6,
            batch_size=8,
            num_generations=4,
            max_completion_length=12,
            n_prompts=48,
            n_held_out=12,
            lr=3e-5,
            seed=seed,
        )
    return RLConfig(model=base, seed=seed, steps=steps) if steps else RLConfig(model=base, seed=seed)


@dataclass(frozen=True)
class TunedModel:
    """A model compared with its base, and how it was made."""

    model: TransformerBridge
    """The tuned model as a bridge."""
    path: Path
    """Its HF folder."""
    method: str
    """``supervised``, ``rl`` or ``folder``."""
    rl: RLConfig | None = None
    """The RL config, when ``method == "rl"``."""


def make_tuned(
    method: str,
    *,
    folder: str | Path | None = None,
    tune: TuneConfig | None = None,
    rl: RLConfig | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> TunedModel:
    """Load the HF ``folder``, or train (or reuse from the cache) the model ``method`` names.

    Args:
        method: one of :data:`TUNINGS` (ignored when ``folder`` is given).
        folder: an HF folder (written by :mod:`workbench.tuning` or ``save_pretrained``) to load instead.
        tune: the supervised recipe (:func:`tune_config`), for ``method="supervised"``.
        rl: the GRPO recipe (:func:`rl_config`), for ``method="rl"``.
        progress: progress bars while training.
        say: called with one line before a model is trained or taken from the cache.
    """
    if folder is not None:
        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"{folder!r} is not a folder: give an HF folder, or leave it out to tune a model")
        return TunedModel(load_tuned(path) if (path / "tuning.json").exists() else load_model(path), path, "folder")
    say = say or (lambda _: None)
    if method == "supervised":
        if tune is None:
            raise ValueError("make_tuned('supervised') needs tune=tune_config(base, ...)")
        length = f"to the stopping rule (at most {tune.steps} steps)" if tune.patience else f"{tune.steps} steps"
        say(f"supervised model: tuning the last {tune.last_layers} layers, {length} (cached once made)")
        path = tune_last_layers(tune, progress=progress)
        return TunedModel(load_tuned(path), path, "supervised")
    if method == "rl":
        if rl is None:
            raise ValueError("make_tuned('rl') needs rl=rl_config(base, ...)")
        say(f"RL model: GRPO, {rl.steps} steps of {rl.batch_size} completions, VADER reward (cached once made)")
        path = rl_tune(rl, progress=progress)
        return TunedModel(load_tuned(path), path, "rl", rl)
    raise ValueError(f"unknown tuning {method!r}: choose one of {', '.join(TUNINGS)}, or pass a folder")
