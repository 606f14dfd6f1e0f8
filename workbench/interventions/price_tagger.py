"""Small transformers trained from scratch on a task, as ground truth for interpretability methods.

The default model cannot play the price-tagging game of Wu et al. (2023), "Interpretability at
Scale" (Alpaca-7B solves it at 0.92 accuracy), so Boundless DAS is checked on a small Llama-style
model trained here on that game: a word-level tokenizer that splits prompts as SmolLM2's does (every
digit its own token, so every prompt has the same 36 tokens), a loss on the answer token only, fresh
samples every step.

Trained on the task alone, such a model solves it (0.99) without a separable ``left`` variable:
Boundless DAS finds at best IIA ~0.8 for ``left`` (nothing makes the model compute the two
comparisons apart before it combines them). So that DAS can be checked against a known answer,
``iit_layer`` adds interchange intervention training (IIT; Geiger et al. 2022, "Inducing Causal
Structure for Interpretable Neural Networks"): every step, besides the task loss, a counterfactual
batch for ``left`` or ``right`` (alternating) is run with that variable's planted subspace of the
layer's output at the last position taken from the source run, and the counterfactual label is the
target. The model then computes both variables where :meth:`PriceTaggerConfig.planted` says, and
DAS should find them there (and nowhere else).

Trained models are cached under ``cache_dir()/tasks/`` keyed by their config, so tests, notebooks
and experiments share one training run.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel

from workbench.config import Config, Count, Positive, Range, cache_key
from workbench.data.counterfactual import (
    CounterfactualTensors,
    price_tagging_model,
    sample_counterfactuals,
    tokenize_fixed,
)
from workbench.models import atomic_dir, boot, cache_dir
from workbench.training import Batch, LoopConfig, Term, train_loop

_SAMPLING = "per-step seeded (workbench.training.Batch.rng)"
"""How training draws its prompts; part of the cache key, so a model cached under another scheme is retrained."""

VARIABLES = ("left", "right")
"""The price-tagging game's intermediate variables (``low <= price``, ``price <= high``)."""

__all__ = [
    "PLAIN_TAGGER",
    "PRICE_VOCAB",
    "QUICK_TAGGER",
    "TAGGER",
    "VARIABLES",
    "PriceTaggerConfig",
    "TrainedTaskModel",
    "price_tagger",
    "price_tokenizer",
    "task_accuracy",
]

PRICE_VOCAB = (
    "<pad>",
    "<unk>",
    "<bos>",
    "<eos>",
    *"0123456789",
    ".",
    ",",
    ":",
    " ",
    "\n",
    "Please",
    " say",
    " yes",
    " only",
    " if",
    " it",
    " costs",
    " between",
    " and",
    " dollars",
    " otherwise",
    " no",
    "Input",
    "Output",
    " Yes",
    " No",
)
"""Every token of the price-tagging prompts and answers, as SmolLM2's tokenizer splits them."""


def price_tokenizer():
    """A word-level HF tokenizer over :data:`PRICE_VOCAB` (digits, punctuation and spaces on their own).

    Saved once under ``cache_dir()/tokenizers/price`` and loaded from there, because booting a
    bridge reloads the tokenizer from its folder.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = cache_dir() / "tokenizers" / "price"
    if not (path / "tokenizer.json").exists():
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(PRICE_VOCAB)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+|\d|[^\sA-Za-z\d]|\s"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
        )
        with atomic_dir(path) as tmp:
            fast.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(path)


@dataclass(frozen=True)
class PriceTaggerConfig(Config):
    """A small Llama trained from scratch on the price-tagging game (optionally with IIT planting its variables)."""

    n_layers: Count = 2
    """Transformer blocks."""
    d_model: Count = 64
    """Residual stream width."""
    n_heads: Count = 8
    """Attention heads (half as many key/value heads: grouped-query attention as in Llama)."""
    d_mlp: Count = 256
    """Hidden width of the gated MLP."""
    steps: Count = 4000
    """Optimiser steps (each on freshly sampled prompts)."""
    batch_size: Count = 64
    """Prompts per step."""
    lr: Positive = 3e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay)."""
    decimals: int = 2
    """Decimals of the prices (2 as in the paper: X.XX dollars)."""
    eval_size: Count = 1000
    """Held-out prompts for the reported accuracy."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    iit_layer: Annotated[int, Range(ge=-1)] = -1
    """Interchange intervention training: plant ``left`` and ``right`` in ``blocks.{iit_layer}.hook_resid_post`` at the
    last position (-1: task loss only)."""
    iit_dims: Count = 4
    """Dimensions of each planted variable's subspace (orthogonal subspaces of a seeded random rotation)."""

    def key(self) -> str:
        """Cache key: a hash of the config and of the sampling scheme (models trained by another one differ)."""
        return cache_key({**self.to_dict(), "sampling": _SAMPLING})

    def planted(self) -> dict[str, torch.Tensor]:
        """Orthonormal bases (``d_model x iit_dims``) of the subspaces where IIT plants ``left`` and ``right``."""
        if self.iit_layer < 0:
            return {}
        if not 0 <= self.iit_layer < self.n_layers:
            raise ValueError(
                f"iit_layer={self.iit_layer} is out of range: the model has layers 0..{self.n_layers - 1} "
                "(-1 turns IIT off)"
            )
        if not 1 <= 2 * self.iit_dims <= self.d_model:
            raise ValueError(f"two planted subspaces of iit_dims={self.iit_dims} do not fit in d_model={self.d_model}")
        g = torch.Generator().manual_seed(self.seed)
        q = torch.linalg.qr(torch.randn(self.d_model, self.d_model, generator=g))[0]
        return {"left": q[:, : self.iit_dims], "right": q[:, self.iit_dims : 2 * self.iit_dims]}


@dataclass
class TrainedTaskModel:
    """A bridge around the trained model, its tokenizer, and how well it does."""

    model: object
    tokenizer: object
    accuracy: float
    """Held-out task accuracy (argmax over the whole vocabulary at the last position)."""
    losses: list[float]
    """Training loss per step (empty when loaded from the cache)."""
    path: Path
    """Cached HF folder."""
    planted_iia: dict[str, float] = field(default_factory=dict)
    """With IIT, per planted variable, the IIA of interchanging its planted subspace (held-out examples):
    how well the ground-truth alignment holds, the ceiling for what DAS can find."""


TAGGER = PriceTaggerConfig(n_layers=3, iit_layer=1)
"""The price tagger the experiments search: 3 layers, ``left`` and ``right`` planted after layer 1 by IIT."""
PLAIN_TAGGER = PriceTaggerConfig()
"""A price tagger trained on the task alone (2 layers, no known location of its variables)."""
QUICK_TAGGER = PriceTaggerConfig(
    n_layers=2, d_model=32, n_heads=2, d_mlp=64, steps=150, batch_size=32, eval_size=200, iit_layer=0
)
"""A price tagger for quick runs and tests (seconds to train; far from solving the task)."""


def _batch(cfg: PriceTaggerConfig, tokenizer, rng: random.Random, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    causal = price_tagging_model(cfg.decimals)
    runs = [causal.run(causal.sample_inputs(rng)) for _ in range(n)]
    tokens = tokenize_fixed(tokenizer, [causal.render(r) for r in runs])
    yes, no = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Yes", " No"))
    return tokens, torch.tensor([yes if r["answer"] else no for r in runs])


def task_accuracy(
    model: TransformerBridge | PreTrainedModel, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> float:
    """Fraction of prompts whose top next-token prediction is the label (model is a bridge or HF model)."""
    hits = 0
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            out = model(tokens[i : i + batch_size])
            logits = out.logits if hasattr(out, "logits") else out
            hits += (logits[:, -1].argmax(-1) == labels[i : i + batch_size]).sum().item()
    return hits / len(tokens)


def _last_logits(hf, tokens: torch.Tensor) -> torch.Tensor:
    return hf.lm_head(hf.model(input_ids=tokens).last_hidden_state[:, -1])


def _counterfactual_batch(cfg: PriceTaggerConfig, tokenizer, variable: str, n: int, seed: int) -> CounterfactualTensors:
    return sample_counterfactuals(price_tagging_model(cfg.decimals), variable, n, seed=seed).tokenize(tokenizer)


def _interchanged_logits(hf, layer: int, basis: torch.Tensor, data: CounterfactualTensors) -> torch.Tensor:
    """Last-position logits of the base run whose layer-``layer`` output at the last position has its
    coordinates along ``basis`` (orthonormal columns) taken from the source run.

    Raw Hugging Face hooks rather than :mod:`workbench.interventions.modules`: the tagger trains as a plain
    HF model before any bridge exists; a test checks this equals a ``RotatedSpaceIntervention`` on the bridge."""
    block = hf.model.layers[layer]
    source: dict[str, torch.Tensor] = {}

    def grab(module, args, out):
        source["last"] = (out[0] if isinstance(out, tuple) else out)[:, -1]

    def swap(module, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        b = basis.to(hidden)
        last = hidden[:, -1] + (source["last"] - hidden[:, -1]) @ b @ b.T
        hidden = torch.cat([hidden[:, :-1], last[:, None]], 1)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    for hook, tokens in ((grab, data.sources[0]), (swap, data.base)):
        handle = block.register_forward_hook(hook)
        try:
            logits = _last_logits(hf, tokens)
        finally:
            handle.remove()
    return logits


def _train(cfg: PriceTaggerConfig, tokenizer, progress: bool):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(cfg.seed)
    hf_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=max(1, cfg.n_heads // 2),
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    hf = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager")
    opt = torch.optim.AdamW(hf.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    )
    loop = LoopConfig(cfg.steps, max_grad_norm=1.0, seed=cfg.seed, desc="price tagger")
    result = train_loop(hf, opt, partial(_step, hf, cfg, tokenizer), loop, scheduler=sched, progress=progress)
    return hf.eval(), result.column("loss")


def _step(hf, cfg: PriceTaggerConfig, tokenizer, batch: Batch) -> dict[str, Term]:
    """Fresh prompts drawn from ``batch.rng()``: the task loss, and with IIT the interchange loss of one variable."""
    rng = batch.rng()
    tokens, labels = (batch.shard(t) for t in _batch(cfg, tokenizer, rng, cfg.batch_size))
    terms = {
        "task": Term(torch.nn.functional.cross_entropy(_last_logits(hf, tokens), labels, reduction="sum"), len(labels))
    }
    planted = cfg.planted()
    if planted:
        variable = VARIABLES[(batch.step - 1) % 2]
        data = _counterfactual_batch(cfg, tokenizer, variable, cfg.batch_size, rng.getrandbits(32))
        data = data.batch(torch.arange(len(data))[batch.rank :: batch.world])
        logits = _interchanged_logits(hf, cfg.iit_layer, planted[variable], data)
        terms["iit"] = Term(torch.nn.functional.cross_entropy(logits, data.labels, reduction="sum"), len(data))
    return terms


def price_tagger(
    cfg: PriceTaggerConfig = PriceTaggerConfig(), *, retrain: bool = False, progress: bool = False
) -> TrainedTaskModel:
    """The price-tagging model for ``cfg``: loaded from the cache, or trained (then cached).

    Args:
        cfg: architecture and training settings (the cache key).
        retrain: train even when a cached copy exists (and replace it).
        progress: show a progress bar while training.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cache_dir() / "tasks" / f"price_tagger-{cfg.key()}"
    tokenizer = price_tokenizer()
    eval_tokens, eval_labels = _batch(cfg, tokenizer, random.Random(f"eval-{cfg.seed}"), cfg.eval_size)
    losses: list[float] = []
    if retrain or not (path / "metrics.json").exists():
        hf, losses = _train(cfg, tokenizer, progress)
        accuracy = task_accuracy(hf, eval_tokens, eval_labels)
        with atomic_dir(path, replace=True) as tmp:
            hf.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            cfg.save_json(tmp / "task_config.json")
            (tmp / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "losses": losses}) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    planted_iia = {v: _planted_iia(hf, cfg, tokenizer, v, basis) for v, basis in cfg.planted().items()}
    model = boot(hf, tokenizer, type(hf).__name__, prepend_bos=False)
    accuracy = task_accuracy(model, eval_tokens, eval_labels)
    return TrainedTaskModel(model, tokenizer, accuracy, losses, path, planted_iia)


def _planted_iia(hf, cfg: PriceTaggerConfig, tokenizer, variable: str, basis: torch.Tensor) -> float:
    data = _counterfactual_batch(
        cfg, tokenizer, variable, cfg.eval_size, seed=random.Random(f"eval-{variable}-{cfg.seed}").getrandbits(32)
    )
    with torch.no_grad():
        return (_interchanged_logits(hf, cfg.iit_layer, basis, data).argmax(-1) == data.labels).float().mean().item()
