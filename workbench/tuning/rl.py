"""Make an RL-tuned model to compare with: GRPO towards negative completions, with a VADER reward.

The model-diff study this workbench reproduces compared GPT-2 with a copy tuned by PPO towards
negative movie reviews, the reward a sentiment classifier's score, the prompts the first words of
IMDB reviews (TRLX, von Werra et al.; curt-tigges/gpt2-negative-movie-reviews). Here Hugging Face
TRL's ``GRPOTrainer`` (Group Relative Policy Optimization, Shao et al., 2024, *DeepSeekMath*,
arXiv:2402.03300) tunes the default model on prompts made offline from the first 3-5 words of the
corpus tweets (:func:`rl_prompts`; the held-out prompts come from the corpus's held-out tweets),
and the reward is the VADER negativity ``-compound`` of each completion (Hutto & Gilbert, 2014), a
scorer independent of the model. A KL penalty to the base (``beta``) keeps the policy near it.

As with :mod:`.supervised`, the plain HF model is trained and saved before any bridge is booted,
into an ordinary HF folder cached under ``cache_dir()/rl/<key>`` (key: the config, the prompts and
the reward's name); ``load_tuned(path)`` loads it as a bridge. Training is resumable: the trainer
checkpoints every few steps into ``<folder>.partial/`` (model, optimizer, scheduler, RNG states and
TRL's log, as HF's ``Trainer`` saves them), a rerun with the same key resumes from the latest whole
checkpoint, and that folder is removed once the final one is written. :func:`workbench.tuning.evidence.rl_evidence`
measures whether the tuning worked on held-out prompts.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from workbench.config import Config, cache_key
from workbench.data.corpora import ALIGNMENTS, load_alignment
from workbench.models import DEFAULT_MODEL, atomic_dir, cache_dir, load_hf
from workbench.sentiment import vader_negativity
from workbench.tuning.supervised import decoder_layers

__all__ = ["RLConfig", "RewardError", "RewardFn", "rl_dir", "rl_prompts", "rl_tune", "trl_reward"]

RewardFn = Callable[[str, str], float]
"""A reward: ``(prompt, completion) -> float``."""


@dataclass(frozen=True)
class RLConfig(Config):
    """GRPO fine-tuning of a model towards a reward on short prompts.

    The defaults on SmolLM2-135M took 9.5 min for their 100 steps on a quiet 2-core machine
    (5.7 s a step; ~15 s on a slower one, 84 min under shared load; sampling the completions is most
    of it), and raise the held-out VADER negativity by +0.092 (95% CI +0.044 to +0.141).
    """

    model: str = DEFAULT_MODEL
    """Model to tune: a registry name or a local HF folder."""
    last_layers: int | None = None
    """Train only the last N decoder layers; None trains every weight."""
    prompt_corpus: str = "neutral"
    """Alignment corpus whose tweets' first words make the prompts (negative / neutral / positive)."""
    prompt_words: tuple[int, int] = (3, 5)
    """A prompt is the first k words of a tweet, k drawn in this range (inclusive)."""
    n_prompts: int = 512
    """Training prompts (from the corpus's training tweets)."""
    n_held_out: int = 64
    """Held-out prompts (from the corpus's held-out tweets), never trained on."""
    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 16
    """Completions per step (the generation batch): batch_size / num_generations prompts each step."""
    num_generations: int = 4
    """Completions sampled per prompt; GRPO's advantages compare them (>= 2)."""
    max_completion_length: int = 16
    """Tokens per completion at most."""
    temperature: float = 1.0
    """Sampling temperature of the completions."""
    lr: float = 3e-5
    """AdamW learning rate (TRL's default 1e-6 moves a 135M model too little in 100 steps)."""
    beta: float = 0.04
    """Weight of the KL penalty to the base model (0 turns it off and loads no reference model)."""
    bf16: bool = False
    """Train in bfloat16 (GPU only; on CPU it must be False)."""
    device: str = "cpu"
    """Where to train: ``cpu`` or ``cuda``."""
    seed: int = 0
    """Seed of the prompts, the sampling and the training."""

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: GRPO compares completions of the same prompt, "
                "so it needs num_generations >= 2"
            )
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by num_generations={self.num_generations}: "
                f"the generation batch holds whole groups; use e.g. batch_size={self.num_generations * 4}"
            )
        if self.bf16 and not self.device.startswith("cuda"):
            raise ValueError("bf16=True needs a GPU: set bf16=False on CPU (or device='cuda')")
        if self.steps < 1 or self.n_prompts < 1 or self.n_held_out < 1 or self.max_completion_length < 1:
            raise ValueError("steps, n_prompts, n_held_out and max_completion_length must be positive")
        if self.last_layers is not None and self.last_layers < 1:
            raise ValueError(f"last_layers={self.last_layers}: give a positive number of layers, or None for all")
        low, high = self.prompt_words
        if not 1 <= low <= high:
            raise ValueError(f"prompt_words={self.prompt_words}: give (min, max) word counts with 1 <= min <= max")
        if self.prompt_corpus not in ALIGNMENTS:
            raise ValueError(f"unknown prompt_corpus {self.prompt_corpus!r}; choose one of {', '.join(ALIGNMENTS)}")


_LOG = logging.getLogger(__name__)

_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,.!?]?$")  # plain words: no mentions, hashtags, links, numbers
_RETWEET = {"RT", "rt"}


def _prompt(tweet: str, rng: random.Random, words: tuple[int, int]) -> str | None:
    kept = [w for w in tweet.split() if _WORD.match(w) and w not in _RETWEET]
    k = rng.randint(*words)
    return " ".join(kept[:k]) if len(kept) >= k else None


def rl_prompts(cfg: RLConfig) -> tuple[list[str], list[str]]:
    """Training and held-out prompts: the first 3-5 plain words of tweets (mentions, hashtags, links dropped).

    Training prompts come from the corpus's training tweets, held-out prompts from its held-out
    tweets, so no held-out prompt is trained on (duplicates across the two are removed from training).
    """
    corpus = load_alignment(cfg.prompt_corpus, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    held = list(dict.fromkeys(p for t in corpus.held_out if (p := _prompt(t, rng, cfg.prompt_words))))
    held = held[: cfg.n_held_out]
    seen = set(held)
    train = [p for t in corpus.train if (p := _prompt(t, rng, cfg.prompt_words)) and p not in seen]
    train = list(dict.fromkeys(train))[: cfg.n_prompts]
    if len(held) < cfg.n_held_out or len(train) < cfg.n_prompts:
        raise ValueError(
            f"the {cfg.prompt_corpus} corpus gives {len(train)} training / {len(held)} held-out prompts, "
            f"fewer than n_prompts={cfg.n_prompts} / n_held_out={cfg.n_held_out}: ask for fewer"
        )
    return train, held


class RewardError(RuntimeError):
    """A reward function raised on one (prompt, completion); the message names both."""


def trl_reward(reward: RewardFn) -> Callable[..., list[float]]:
    """``reward(prompt, completion)`` as a TRL reward function (batched keyword call, one float each).

    An exception inside ``reward`` comes out as :class:`RewardError` naming the prompt and
    completion it failed on (TRL would otherwise report only the batch).
    """
    name = getattr(reward, "__name__", type(reward).__name__)

    def reward_batch(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
        values = []
        for prompt, completion in zip(prompts, completions, strict=True):
            try:
                values.append(float(reward(prompt, completion)))
            except Exception as err:
                raise RewardError(
                    f"reward {name} failed on prompt {prompt!r} (completion {completion!r}): "
                    f"{type(err).__name__}: {err}"
                ) from err
        return values

    reward_batch.__name__ = name
    return reward_batch


def rl_dir(cfg: RLConfig, prompts: Sequence[str], reward: RewardFn = vader_negativity) -> Path:
    """Where the RL-tuned folder for ``cfg``, its training ``prompts`` and ``reward`` is cached."""
    name = Path(cfg.model).name if Path(cfg.model).is_dir() else cfg.model
    layers = "all" if cfg.last_layers is None else f"last{cfg.last_layers}"
    return cache_dir() / "rl" / f"{name}-grpo-{layers}-{_key(cfg, prompts, reward, length=10)}"


def _key(cfg: RLConfig, prompts: Sequence[str], reward: RewardFn, length: int = 12) -> str:
    return cache_key({"cfg": cfg.to_dict(), "prompts": list(prompts), "reward": _reward_name(reward)}, length=length)


def _reward_name(reward: RewardFn) -> str:
    return f"{getattr(reward, '__module__', '')}.{getattr(reward, '__qualname__', type(reward).__name__)}"


class _StepBar(TrainerCallback):
    """GRPO's progress: one bar over the steps showing the latest reward and KL (TRL's own bar also prints
    every step's full log, two dozen numbers a line)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="GRPO", unit="step")

    def _open(self) -> tqdm:
        if self.bar is None:
            raise RuntimeError("the GRPO step bar was used before on_train_begin: add it to the trainer's callbacks")
        return self.bar

    def on_step_end(self, args, state, control, **kwargs) -> None:
        bar = self._open()
        bar.update(state.global_step - bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        shown = {k: f"{float(logs[k]):.3g}" for k in ("reward", "kl") if k in (logs or {})}
        if shown:
            self._open().set_postfix(shown)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._open().close()


def _resume_point(partial: Path, key: str) -> tuple[int, Path] | None:
    """The step and folder of the newest whole checkpoint in ``partial`` if it was written for ``key``;
    clears anything else there.

    HF's trainer writes ``trainer_state.json`` last into a checkpoint, so a checkpoint whose state parses
    is whole; a killed save leaves one without it (or with a truncated one), which is deleted. A partial
    folder of another key (another config, prompts or reward for the same ``out``) is deleted.
    """
    stamp = partial / "key.txt"
    if partial.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
        _LOG.warning("%s holds the training of another config: starting over", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    whole = {}
    for ckpt in partial.glob("checkpoint-*"):
        try:
            whole[json.loads((ckpt / "trainer_state.json").read_text())["global_step"]] = ckpt
        except (OSError, ValueError, KeyError):
            continue
    latest = max(whole.items()) if whole else None
    for ckpt in partial.glob("checkpoint-*"):
        if latest is None or ckpt != latest[1]:
            shutil.rmtree(ckpt)
    return latest


@contextmanager
def _quiet_saves() -> Iterator[None]:
    """Without HF's "Writing model shards" bar at each checkpoint (it would break the GRPO bar's line)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _grpo_trainer(**kwargs):
    """TRL's ``GRPOTrainer`` whose prompt order in epoch e does not depend on how many epochs this process ran.

    TRL's ``RepeatSampler`` draws each epoch's permutation from one generator seeded once, so a trainer
    resumed in epoch e would replay epoch 0's order; here ``set_epoch(e)`` (which HF's loop calls every
    epoch, resumed or not) reseeds it and skips e permutations: the order of an uninterrupted run.
    """
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EpochSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle and self.seed is not None:  # unseeded (as TRL allows): no order to replay
                self.generator.manual_seed(self.seed)
                for _ in range(epoch):
                    torch.randperm(self.num_samples, generator=self.generator)

    class Trainer(GRPOTrainer):
        def _get_train_sampler(self, dataset=None):
            sampler = super()._get_train_sampler(dataset)
            sampler.__class__ = EpochSampler  # the same object with set_epoch added
            return sampler

    return Trainer(**kwargs)


def rl_tune(
    cfg: RLConfig,
    reward: RewardFn = vader_negativity,
    prompts: Sequence[str] | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = False,
    checkpoint_every: int = 10,
) -> Path:
    """GRPO-tune ``cfg.model`` towards ``reward`` and save an HF folder (cached).

    Args:
        cfg: the RL config.
        reward: ``(prompt, completion) -> float``; default the VADER negativity of the completion.
        prompts: training prompts instead of :func:`rl_prompts` (part of the cache key).
        out: folder to write; default :func:`rl_dir`. An existing folder is returned as is.
        progress: show a progress bar over the GRPO steps with the latest reward and KL.
        checkpoint_every: save the training state every this many steps (and at the last) into
            ``<out>.partial/``, keeping only the latest checkpoint; a rerun with the same config,
            prompts and reward resumes from it (logged; the bar starts at that step) and ends with
            the same weights and the full per-step history. Not part of the cache key: it does not
            change the result.

    Returns:
        The folder, with ``tuning.json`` (config, base model, prompts, TRL's log per step).
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every}: give a positive number of steps")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but no GPU is visible: use device='cpu' (and bf16=False)")
    prompts = rl_prompts(cfg)[0] if prompts is None else list(prompts)
    out = Path(out) if out is not None else rl_dir(cfg, prompts, reward)
    partial = out.with_name(f"{out.name}.partial")
    if (out / "tuning.json").exists():
        shutil.rmtree(partial, ignore_errors=True)  # a run killed after its final folder was written
        return out
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig

    torch.manual_seed(cfg.seed)
    hf, tok, hf_id, spec = load_hf(cfg.model)
    if cfg.last_layers is not None:
        hf.requires_grad_(False)
        for p in (p for layer in list(decoder_layers(hf))[-cfg.last_layers :] for p in layer.parameters()):
            p.requires_grad_(True)
    resume = _resume_point(partial, _key(cfg, prompts, reward))
    args = GRPOConfig(
        output_dir=str(partial),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.lr,
        beta=cfg.beta,
        bf16=cfg.bf16,
        use_cpu=cfg.device == "cpu",
        gradient_checkpointing=False,
        disable_dropout=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=checkpoint_every,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,  # its bar prints every step's full log; _StepBar shows the steps instead
        seed=cfg.seed,
        data_seed=cfg.seed,
    )
    trainer = _grpo_trainer(
        model=hf,
        reward_funcs=trl_reward(reward),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tok,
    )
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(_StepBar())
    if resume is not None:
        _LOG.warning("GRPO resumes at step %d of %d from %s", resume[0], cfg.steps, resume[1])
    try:
        with _quiet_saves():
            trainer.train(resume_from_checkpoint=None if resume is None else str(resume[1]))
    except BaseException:
        if not any(partial.glob("checkpoint-*")):  # nothing to resume from: leave no folder behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    history = [row for row in trainer.state.log_history if "reward" in row]
    budget = {
        "steps": cfg.steps,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),  # prompts and completions
        "completions": cfg.steps * cfg.batch_size,
        "trainable_parameters": sum(p.numel() for p in hf.parameters() if p.requires_grad),
    }
    hf = trainer.model.eval().requires_grad_(False)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {
            "config": cfg.to_dict(),
            "method": "grpo",
            "reward": _reward_name(reward),
            "base_hf_id": hf_id,
            "prepend_bos": spec.prepend_bos if spec else None,
            "prompts": prompts,
            "budget": budget,
            "history": history,
        }
        (tmp / "tuning.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(partial)
    return out
