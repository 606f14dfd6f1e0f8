"""Did RL tuning work? Rewards of the base and the tuned model on held-out prompts, compared.

Both models sample completions of the same prompts with the same seed; the reward gain per prompt
gets a paired percentile bootstrap interval (prompts resampled; Efron & Tibshirani, 1993), the
tuned model's KL to the base is measured token by token on its own completions (the quantity GRPO's
``beta`` penalises), and the completions are kept for a before/after table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

from workbench.models import load_hf
from workbench.sentiment import vader_negativity
from workbench.tuning.rl import RewardFn

__all__ = ["RLEvidence", "Samples", "paired_bootstrap", "rl_evidence", "sample_completions"]


def paired_bootstrap(
    before: Sequence[float], after: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``after - before`` over paired items and its percentile bootstrap interval (items resampled).

    >>> mean, low, high = paired_bootstrap([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    >>> (mean, low, high)
    (1.0, 1.0, 1.0)
    """
    diff = torch.as_tensor(after, dtype=torch.float64) - torch.as_tensor(before, dtype=torch.float64)
    if diff.ndim != 1 or len(diff) < 2:
        raise ValueError(f"need at least 2 paired values in two equal-length lists; got shape {tuple(diff.shape)}")
    g = torch.Generator().manual_seed(seed)
    means = diff[torch.randint(len(diff), (n_boot, len(diff)), generator=g)].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return float(diff.mean()), low, high


@dataclass(frozen=True)
class Samples:
    """Sampled completions of one model: ``samples`` per prompt, prompt-major."""

    texts: tuple[str, ...]
    """Completion texts (special tokens dropped)."""
    lengths: tuple[int, ...]
    """Completion lengths in tokens (up to and including the end-of-sequence token)."""
    kl_to_base: float | None
    """Mean over completion tokens of KL(model || base) of the next-token distributions (nats), or None."""


@torch.no_grad()
def sample_completions(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    base: PreTrainedModel | None = None,
) -> Samples:
    """Sample ``samples`` completions per prompt from a plain HF model; with ``base``, also its KL to it."""
    if not isinstance(hf, GenerationMixin):
        raise TypeError(f"{type(hf).__name__} cannot generate: pass a causal LM (AutoModelForCausalLM)")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    # transformers types generate's self as a Protocol written for the ty checker, which no model class matches
    seqs = hf.generate(  # type: ignore[misc]
        **batch,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=samples,
        pad_token_id=tok.pad_token_id,
    )
    n_prompt = batch["input_ids"].shape[1]
    completion = seqs[:, n_prompt:]
    ended = torch.isin(completion, torch.tensor(_eos_ids(hf, tok)))
    # a token counts up to and including the first end-of-sequence token
    mask = (ended.long().cumsum(1) - ended.long()) == 0
    kl = None
    if base is not None:
        attention = torch.cat([batch["attention_mask"].repeat_interleave(samples, 0), mask.long()], 1)
        logits = [m(input_ids=seqs, attention_mask=attention).logits[:, n_prompt - 1 : -1] for m in (hf, base)]
        logp, logq = (x.float().log_softmax(-1) for x in logits)
        per_token = (logp.exp() * (logp - logq)).sum(-1)
        kl = float(per_token[mask].mean())
    texts = tuple(tok.batch_decode([row[m] for row, m in zip(completion, mask)], skip_special_tokens=True))
    return Samples(texts, tuple(mask.sum(1).tolist()), kl)


def _eos_ids(hf, tok) -> list[int]:
    ids = hf.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted({*ids, tok.eos_token_id})


@dataclass(frozen=True)
class RLEvidence:
    """Did RL work? Reward of the base and the tuned model on the same prompts, KL, lengths, samples."""

    prompts: tuple[str, ...]
    """The prompts (held out from training, for the evidence)."""
    reward_base: tuple[float, ...]
    """Per prompt, the base model's mean reward over its samples."""
    reward_tuned: tuple[float, ...]
    """Per prompt, the tuned model's mean reward over its samples."""
    gain: float
    """Mean over prompts of tuned - base reward."""
    gain_ci: tuple[float, float]
    """Paired bootstrap 95% interval of ``gain`` (prompts resampled)."""
    kl_to_base: float
    """KL(tuned || base) per completion token (nats), on the tuned model's samples."""
    length_base: float
    """Mean completion length of the base (tokens)."""
    length_tuned: float
    """Mean completion length of the tuned model (tokens)."""
    samples: pd.DataFrame
    """One row per completion: prompt, model, sample, completion, n_tokens, reward."""

    def summary(self) -> dict:
        """The scalar results, JSON-able."""
        return {
            "n_prompts": len(self.prompts),
            "reward_base": sum(self.reward_base) / len(self.prompts),
            "reward_tuned": sum(self.reward_tuned) / len(self.prompts),
            "gain": self.gain,
            "gain_ci95": list(self.gain_ci),
            "kl_to_base": self.kl_to_base,
            "length_base": self.length_base,
            "length_tuned": self.length_tuned,
        }

    def sample_table(self, n: int = 8) -> pd.DataFrame:
        """The first sample of the first ``n`` prompts, base and tuned side by side."""
        first = self.samples[self.samples["sample"] == 0]
        table = first.pivot(index="prompt", columns="model", values="completion").reindex(list(self.prompts[:n]))
        return table.reset_index().rename(columns={"base": "base completion", "tuned": "tuned completion"})


def rl_evidence(
    base: str | Path,
    tuned: str | Path,
    prompts: Sequence[str],
    reward: RewardFn = vader_negativity,
    *,
    samples: int = 4,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
) -> RLEvidence:
    """Sample both models on ``prompts`` and compare their rewards, with a paired bootstrap over prompts.

    Args:
        base: the base model (registry name or HF folder).
        tuned: the tuned folder (e.g. from :func:`rl_tune`).
        prompts: the prompts, ideally held out (:func:`rl_prompts`).
        reward: the reward the tuning maximised.
        samples: completions per prompt and model.
        max_new_tokens: tokens per completion at most.
        temperature: sampling temperature.
        seed: sampling seed (the same for both models).
    """
    (base_hf, tok, *_), (tuned_hf, tuned_tok, *_) = load_hf(base), load_hf(tuned)
    runs = {
        "base": sample_completions(
            base_hf, tok, prompts, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        ),
        "tuned": sample_completions(
            tuned_hf,
            tuned_tok,
            prompts,
            samples=samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            base=base_hf,
        ),
    }
    rows = [
        (prompts[i // samples], name, i % samples, text, length, reward(prompts[i // samples], text))
        for name, run in runs.items()
        for i, (text, length) in enumerate(zip(run.texts, run.lengths))
    ]
    frame = pd.DataFrame(rows, columns=["prompt", "model", "sample", "completion", "n_tokens", "reward"])
    per_prompt = {
        name: frame[frame.model == name].groupby("prompt", sort=False)["reward"].mean().reindex(list(prompts)).tolist()
        for name in runs
    }
    gain, low, high = paired_bootstrap(per_prompt["base"], per_prompt["tuned"], seed=seed)
    kl = runs["tuned"].kl_to_base
    assert kl is not None  # sampled with base=
    return RLEvidence(
        prompts=tuple(prompts),
        reward_base=tuple(per_prompt["base"]),
        reward_tuned=tuple(per_prompt["tuned"]),
        gain=gain,
        gain_ci=(low, high),
        kl_to_base=kl,
        length_base=sum(runs["base"].lengths) / len(runs["base"].lengths),
        length_tuned=sum(runs["tuned"].lengths) / len(runs["tuned"].lengths),
        samples=frame,
    )
