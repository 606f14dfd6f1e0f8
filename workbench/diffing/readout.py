"""Everything diffing reads from one base / tuned pair, in one call: :func:`diff_readout`.

For a report table of realignments (IRM, RL, supervised): ADL's logit-lens tokens at the layer that changed most
(:mod:`workbench.diffing.adl`); Patchscope tokens and steered samples of the base model (a strength sweep) at the
first layer before the last that changed markedly (a quarter of the largest change before the last: for a tune of the
last layers, the first tuned one; at the last layer Patchscope would repeat the logit lens, so it is not read there);
a crosscoder's truly tuned-only latents at the layer that changed most, read through the logit lens
(:mod:`workbench.diffing.crosscoder`); and the black-box baseline: unprompted samples of both models and the tuned
model's replies to the steering prompts (the base's are the strength-0 row of the sweep, drawn with the same seeds).
The tuned side is a second model sharing the tokenizer, or the base with hooks (``ModelSide(base,
hooks=irm.hooks(base))`` for base + IRM).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config, Count, Positive
from workbench.diffing.adl import (
    ActivationDifference,
    activation_difference,
    chat_replies,
    lens_tokens,
    neutral_tokens,
    patchscope_tokens,
    steered_generations,
)
from workbench.diffing.crosscoder import CrosscoderConfig, paired_activations, summarize, train_crosscoder
from workbench.hooks import ModelSide, as_side, attach

__all__ = ["STEER_PROMPTS", "DiffConfig", "DiffReadout", "diff_readout", "sample_unprompted"]

STEER_PROMPTS = (
    "Tell me something.",
    "What should I do today?",
    "Write a short message to a friend.",
    "Describe your week.",
)
"""Neutral chat prompts the steered base model answers."""


@dataclass(frozen=True)
class DiffConfig(Config):
    """Sizes of one pair's diffing read-outs."""

    k: Count = 5
    """Positions of unrelated text averaged per position (ADL's k)."""
    n_texts: Count = 64
    """Unrelated texts for ADL's difference."""
    top: Count = 20
    """Tokens per logit-lens / Patchscope read-out."""
    strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    """Steering strengths (times the base's mean residual norm at the layer); 0 is the base."""
    max_new_tokens: Count = 20
    """Tokens per steered or unprompted sample."""
    samples: Count = 8
    """Unprompted samples per model (black-box baseline)."""
    cc_texts: Count = 160
    """Texts whose activations train the crosscoder."""
    cc_len: Count = 24
    """Tokens per crosscoder text (the first is skipped)."""
    crosscoder: CrosscoderConfig = field(default_factory=lambda: CrosscoderConfig(dict_size=1024, k=16, steps=300))
    """The crosscoder's training."""
    n_latents: Count = 5
    """Truly tuned-only latents read out (most frequent first)."""
    max_nu: Positive = 0.3
    """Latent-scaling bound of a truly tuned-only latent."""
    seed: int = 0
    """Sampling seed."""

    @classmethod
    def sized(cls, *, quick: bool, n_texts: int, cc_steps: int, samples: int, seed: int = 0) -> DiffConfig:
        """The full read-out, or the small one of a ``--quick`` run (two steering strengths, 8-token samples, a
        128-latent crosscoder on 24 texts of 12 tokens); the sizes an experiment exposes as flags are passed."""
        return cls(
            n_texts=n_texts,
            strengths=(0.0, 0.5) if quick else (0.0, 0.25, 0.5, 1.0),
            max_new_tokens=8 if quick else 20,
            samples=samples,
            cc_texts=24 if quick else 160,
            cc_len=12 if quick else 24,
            crosscoder=CrosscoderConfig(dict_size=128 if quick else 1024, k=16, steps=cc_steps),
            seed=seed,
        )


@dataclass(frozen=True)
class DiffReadout:
    """What diffing reads from one pair."""

    name: str
    """The pair's label."""
    layer: int
    """Layer of the logit lens and the crosscoder: the largest relative difference (mean over positions >= 1)."""
    early_layer: int
    """Layer of Patchscope and steering: the first before the last whose difference reaches a quarter of the largest
    before the last (at the last layer Patchscope would repeat the logit lens, and steering there would only bias the
    logits); the last layer only when nothing changed before it."""
    relative_norm: float
    """``||delta|| / ||h_base||`` there (mean over positions >= 1); 0 for a model against itself."""
    lens: tuple[tuple[str, ...], ...]
    """ADL logit-lens top tokens per position (empty where the difference is 0)."""
    patchscope: tuple[tuple[str, ...], ...]
    """Patchscope top tokens per position (empty when ``early_layer`` is the last: there they would be the lens's)."""
    steered: pd.DataFrame
    """Columns ``strength, prompt, text``; strength 0 is the base model."""
    latents: tuple[tuple[int, float, float, tuple[str, ...]], ...]
    """Truly tuned-only latents: ``(latent, nu_error, nu_recon, top tokens of its tuned decoder)``."""
    n_artefacts: int
    """Tuned-only latents by norm ratio that latent scaling rejects."""
    latent_classes: dict[str, int]
    """Latents per class (base-only / shared / tuned-only / other)."""
    unprompted: tuple[tuple[str, ...], tuple[str, ...]]
    """Unprompted samples of (base, tuned): the black-box baseline."""
    replies: tuple[str, ...]
    """The tuned model's replies to the steering prompts (same seeds as the strength-0 rows): the black-box baseline."""
    seconds: dict[str, float]
    """Wall time per part (adl, patchscope, steering, crosscoder, blackbox)."""
    cc_throughput: float
    """Crosscoder training throughput, activations per second."""

    def to_frame(self) -> pd.DataFrame:
        """One row per read-out item: columns ``pair, method, item, value``."""
        rows = [(self.name, "adl_lens", f"pos {p}", " ".join(t)) for p, t in enumerate(self.lens)]
        rows += [(self.name, "patchscope", f"pos {p}", " ".join(t)) for p, t in enumerate(self.patchscope)]
        rows += [(self.name, "steering", f"{r.strength:g}: {r.prompt}", str(r.text)) for r in self.steered.itertuples()]
        for j, nu_e, nu_r, tokens in self.latents:
            rows.append((self.name, "crosscoder", f"latent {j} (nu {nu_e:.2f}/{nu_r:.2f})", " ".join(tokens)))
        for side, texts in zip(("base", "tuned"), self.unprompted, strict=True):
            rows += [(self.name, f"unprompted_{side}", str(i), t) for i, t in enumerate(texts)]
        prompts = self.steered.loc[self.steered["strength"] == 0, "prompt"]
        rows += [(self.name, "reply_tuned", p, t) for p, t in zip(prompts, self.replies, strict=True)]
        return pd.DataFrame(rows, columns=["pair", "method", "item", "value"])

    def table_row(self, n_tokens: int = 10, strength: float | None = None) -> dict[str, str]:
        """A short row for a report table: top ADL tokens (the last position), Patchscope tokens, two
        steered samples at ``strength`` (default: the largest), the tuned-only latents' top tokens."""
        strength = max(self.steered["strength"]) if strength is None else strength
        pos = next((p for p in reversed(range(len(self.lens))) if self.lens[p]), 0)  # the last position read
        steered = self.steered[self.steered["strength"] == strength]["text"].head(2)
        return {
            "pair": self.name,
            "layers": f"{self.layer} (lens), {self.early_layer} (Patchscope, steering)",
            "adl_tokens": " ".join(self.lens[pos][:n_tokens]),
            "patchscope_tokens": " ".join(self.patchscope[pos][:n_tokens]),
            "steered": " | ".join(steered),
            "tuned_only_latents": "; ".join(f"#{j}: {' '.join(t[:5])}" for j, _, _, t in self.latents) or "none",
        }


@torch.no_grad()
def sample_unprompted(
    side: TransformerBridge | ModelSide, n: int, *, max_new_tokens: int = 20, seed: int = 0
) -> tuple[str, ...]:
    """``n`` samples from a document boundary alone (``<|endoftext|>`` where the vocabulary has it, else BOS, else
    EOS), with the side's hooks on."""
    side = as_side(side)
    model = side.model
    tok = model.tokenizer
    boundary = tok.get_vocab().get("<|endoftext|>")
    start = next(i for i in (boundary, tok.bos_token_id, tok.eos_token_id) if i is not None)
    ids = torch.full((n, 1), start, device=model.cfg.device)
    torch.manual_seed(seed)
    with attach(model, side.hooks):
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9, verbose=False)
    assert isinstance(out, torch.Tensor)  # generate returns token ids for token input
    return tuple(tok.decode(row[1:].tolist(), skip_special_tokens=True).strip() for row in out)


def _layers(diff: ActivationDifference, share: float = 0.25) -> tuple[int, int, float]:
    """The layer of largest relative change (mean over positions >= 1); the first layer before the last whose change
    reaches ``share`` of the largest change before the last (the last layer when none before it changed); and the
    largest change."""
    rel = diff.relative_norm[:, 1:] if diff.relative_norm.shape[1] > 1 else diff.relative_norm
    per_layer = rel.mean(1)
    before = per_layer[:-1]
    top_before = float(before.max()) if len(before) else 0.0
    first = int((before >= share * top_before).nonzero()[0]) if top_before > 0 else len(per_layer) - 1
    return int(per_layer.argmax()), first, float(per_layer.max())


def diff_readout(
    base: TransformerBridge,
    tuned: TransformerBridge | ModelSide,
    texts: Sequence[str],
    cfg: DiffConfig = DiffConfig(),
    *,
    name: str = "tuned",
    prompts: Sequence[str] = STEER_PROMPTS,
) -> DiffReadout:
    """All diffing read-outs of ``tuned`` against ``base`` on unrelated ``texts`` (see the module docstring).

    Args:
        base: the base model.
        tuned: the tuned model (same tokenizer), or the base with hooks (base + IRM).
        texts: unrelated texts (ADL's first ``cfg.k`` positions; the crosscoder's activations).
        cfg: sizes.
        name: label of the pair.
        prompts: chat prompts for steering.
    """
    seconds = {}
    t0 = time.perf_counter()
    diff = activation_difference(base, tuned, neutral_tokens(base, texts[: cfg.n_texts], cfg.k))
    layer, early, rel = _layers(diff)
    lens = tuple(tuple(lens_tokens(base, diff.delta[layer, p], cfg.top)) for p in range(cfg.k))
    seconds["adl"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    last = early == diff.delta.shape[0] - 1  # Patchscope at the last layer would repeat the logit lens: not read
    norms = diff.base_norm[early]
    patch = tuple(
        () if last else tuple(patchscope_tokens(base, diff.delta[early, p], early, norm=float(norms[p]), k=cfg.top))
        for p in range(cfg.k)
    )
    seconds["patchscope"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vector = diff.delta[early, 1:].mean(0) if cfg.k > 1 else diff.delta[early, 0]
    norm = float(diff.base_norm[early, 1:].mean()) if cfg.k > 1 else float(diff.base_norm[early, 0])
    steered = steered_generations(
        base, vector, early, norm=norm, strengths=cfg.strengths, prompts=prompts,
        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
    )  # fmt: skip
    seconds["steering"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts = paired_activations(base, tuned, neutral_tokens(base, texts[: cfg.cc_texts], cfg.cc_len), layer)
    t1 = time.perf_counter()
    cc, _ = train_crosscoder(acts, cfg.crosscoder)
    throughput = cfg.crosscoder.steps * cfg.crosscoder.batch_size / (time.perf_counter() - t1)
    summary = summarize(cc, acts, max_nu=cfg.max_nu)
    decoder = cc.W_dec.detach()[:, 1] / cc.scales[1]
    nu = summary.scaling
    latents = tuple(
        (j, float(nu.nu_error[j]), float(nu.nu_recon[j]), tuple(lens_tokens(base, decoder[j], cfg.top)))
        for j in summary.tuned_only()[: cfg.n_latents]
    )
    classes = {c: summary.classes.count(c) for c in ("base-only", "shared", "tuned-only", "other")}
    seconds["crosscoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kw = dict(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    unprompted = (sample_unprompted(base, cfg.samples, **kw), sample_unprompted(tuned, cfg.samples, **kw))
    replies = tuple(chat_replies(tuned, prompts, **kw))
    seconds["blackbox"] = time.perf_counter() - t0
    n_artefacts = len(summary.artefacts())
    return DiffReadout(
        name, layer, early, rel, lens, patch, steered, latents, n_artefacts, classes, unprompted, replies, seconds,
        throughput,
    )  # fmt: skip
