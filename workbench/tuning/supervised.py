"""Make a tuned model to compare with: fine-tune only the last N layers on an alignment corpus.

The model-diff study this workbench reproduces compared GPT-2 with an RLHF-tuned copy whose
training unfroze only the last two layers (TRLX, von Werra et al.; the analysis of
curt-tigges/gpt2-negative-movie-reviews). Here the tuned copy is made by plain next-token
fine-tuning of the last ``last_layers`` decoder layers on the alignment tweets
(:func:`workbench.data.corpora.load_alignment`), everything else frozen. Each tweet is the assistant's
reply to one user message in the tokenizer's chat template, the loss on the reply tokens only: exactly
the format the IRM trains on and every comparison scores (the same code, :func:`workbench.irm.text.encode_replies`
and :func:`workbench.irm.loss.reply_nll`), so the two are measured on their training distribution alike.
With ``patience > 0`` it trains to the IRM's stopping rule (:class:`workbench.training.StoppingRule`: held-out reply
loss every ``eval_every`` steps, ``steps`` the ceiling), so a comparison model is as converged as the IRM it is
compared with. ``tuning.json`` records the training budget (steps, tokens seen, trainable parameters), whether the
run converged and its held-out loss curve. The plain HF model is
trained and saved *before* any bridge is booted (booting rewires the modules and folds norms), and
the result is an ordinary HF folder: ``load_tuned(path)`` (or ``load_model(path)``) loads it.

Folders are cached under ``cache_dir()/tuned/<key>``, the key derived from the config (and the
texts), so reruns with the same config reuse them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from workbench.config import Config, Count, Positive, cache_key
from workbench.data.corpora import load_alignment, load_texts
from workbench.data.padding import pad_id, right_pad
from workbench.irm.config import TrainConfig
from workbench.irm.loss import reply_nll
from workbench.irm.text import Encoded, encode_replies
from workbench.models import DEFAULT_MODEL, REGISTRY, atomic_dir, cache_dir, load_hf, load_model
from workbench.training import Batch, LoopConfig, StoppingRule, Term, adamw, train_loop

_BATCHES = "seeded permutations (workbench.training.batch_order)"
"""How training orders its texts; part of the cache key, so a folder tuned under another order is retrained."""

__all__ = [
    "TuneConfig",
    "decoder_layers",
    "held_out_loss",
    "load_tuned",
    "training_budget",
    "tune_last_layers",
    "tuned_dir",
]


@dataclass(frozen=True)
class TuneConfig(Config):
    """Fine-tuning of the last layers of a model on a corpus."""

    model: str = DEFAULT_MODEL
    """Model to tune: a registry name or a local HF folder."""
    alignment: str = "negative"
    """Alignment corpus of tweets (negative / neutral / positive); ignored when ``texts`` is set."""
    texts: str | None = None
    """Your own corpus instead: a CSV / JSONL (column ``text``) or text file."""
    last_layers: int = 2
    """How many of the last decoder layers train; the rest stays frozen."""
    steps: int = 40
    """Optimizer steps: the ceiling when ``patience > 0``."""
    batch_size: int = 8
    """Texts per step."""
    max_length: Count = 48
    """Tokens per text, chat prompt included (longer texts are cut)."""
    user_prompt: str = TrainConfig.user_prompt
    """User message each text replies to in the chat format (the IRM's)."""
    system_prompt: str = TrainConfig.system_prompt
    """System turn of the chat format ("" = an empty one, as the IRM's)."""
    chat: bool = TrainConfig.chat
    """Wrap texts in the tokenizer's chat template when it has one (loss on the reply tokens only)."""
    lr: Positive = 1e-3
    """AdamW learning rate."""
    max_items: Count = 4000
    """Texts taken from the corpus at most."""
    seed: int = 0
    """Seed of the corpus shuffle and the batches."""
    patience: int = 0
    """Stopping rule: stop once the best held-out loss improved by less than ``min_improvement`` over this many
    evaluations (0: train all ``steps``)."""
    min_improvement: float = 0.005
    """Stopping rule: relative improvement below which the run has converged."""
    eval_every: int = 10
    """Held-out evaluation every this many steps (read by the stopping rule)."""
    eval_texts: Count = 64
    """Held-out texts per evaluation (the corpus's held-out split; own texts: their last tenth)."""

    def __post_init__(self):
        if self.last_layers < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("last_layers, steps and batch_size must be positive")
        if self.patience < 0:
            raise ValueError(f"patience={self.patience} must be >= 0 (0 trains all steps)")
        if self.patience and self.eval_every < 1:
            raise ValueError("the stopping rule (patience > 0) reads held-out evaluations: set eval_every >= 1")
        self.stopping_rule  # noqa: B018 (building the rule checks min_improvement now)

    @property
    def stopping_rule(self) -> StoppingRule | None:
        """The convergence rule these fields set (``None`` when patience is 0)."""
        return StoppingRule(self.patience, self.min_improvement) if self.patience else None


def decoder_layers(hf) -> torch.nn.ModuleList:
    """The list of decoder layers of a plain HF causal LM (``model.layers``, ``transformer.h``, ...)."""
    n = hf.config.num_hidden_layers
    found = [m for m in hf.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if not found:
        raise ValueError(f"found no list of {n} decoder layers in {type(hf).__name__}; tune it by hand")
    return found[0]


def _texts(cfg: TuneConfig, texts: list[str] | None) -> tuple[list[str], list[str]]:
    """Training and held-out texts: the corpus's splits, or own texts with their last tenth held out when the
    stopping rule needs an evaluation."""
    if texts is None and cfg.texts is None:
        corpus = load_alignment(cfg.alignment, seed=cfg.seed, max_items=cfg.max_items)
        return list(corpus.train), list(corpus.held_out[: cfg.eval_texts])
    texts = list(texts) if texts is not None else load_texts(cfg.texts)[: cfg.max_items]
    if not cfg.patience:
        return texts, []
    n_held = min(cfg.eval_texts, max(1, len(texts) // 10))
    return texts[:-n_held], texts[-n_held:]


def tuned_dir(cfg: TuneConfig, texts: list[str] | None = None) -> Path:
    """Where the tuned folder for ``cfg`` (and ``texts``, when given) is cached."""
    name = Path(cfg.model).name if Path(cfg.model).is_dir() else cfg.model
    corpus = "texts" if (texts is not None or cfg.texts) else cfg.alignment
    key = cache_key({"cfg": cfg.to_dict(), "texts": texts, "batches": _BATCHES})
    return cache_dir() / "tuned" / f"{name}-{corpus}-last{cfg.last_layers}-{key}"


def tune_last_layers(
    cfg: TuneConfig, texts: list[str] | None = None, *, out: str | Path | None = None, progress: bool = False
) -> Path:
    """Fine-tune the last ``cfg.last_layers`` layers on the corpus and save an HF folder (cached).

    Args:
        cfg: the tuning config.
        texts: texts to train on instead of the config's corpus (part of the cache key).
        out: folder to write; default :func:`tuned_dir`. An existing folder is returned as is.
        progress: show a tqdm bar.

    Returns:
        The folder, with ``tuning.json`` (config, base model, losses per step).
    """
    out = Path(out) if out is not None else tuned_dir(cfg, texts)
    if (out / "tuning.json").exists():
        return out
    texts, held_out = _texts(cfg, texts)
    if len(texts) < cfg.batch_size:
        raise ValueError(
            f"only {len(texts)} texts for batches of {cfg.batch_size}: give more texts or a smaller batch_size"
        )
    torch.manual_seed(cfg.seed)
    hf, tok, hf_id, spec = load_hf(cfg.model)
    encode = partial(
        encode_replies,
        tok,
        user_prompt=cfg.user_prompt,
        system_prompt=cfg.system_prompt,
        chat=cfg.chat,
        max_len=cfg.max_length,
    )
    data, evals = encode(texts), encode(held_out)
    hf.requires_grad_(False)
    trainable = [p for layer in list(decoder_layers(hf))[-cfg.last_layers :] for p in layer.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    rule = cfg.stopping_rule if evals else None
    loop = LoopConfig(cfg.steps, seed=cfg.seed, eval_every=cfg.eval_every if rule else 0, desc="tuning", stop=rule)
    seen: list[tuple[int, int]] = []
    pad = pad_id(tok)
    step = partial(_step, hf, pad, data, cfg, seen)
    evaluate = partial(held_out_loss, hf, pad, evals) if rule else None
    result = train_loop(hf, adamw(trainable, lr=cfg.lr), step, loop, evaluate=evaluate, progress=progress)
    hf.eval()
    hf.requires_grad_(False)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {
            "config": cfg.to_dict(),
            "base_hf_id": hf_id,
            "prepend_bos": spec.prepend_bos if spec else None,
            "n_texts": len(texts),
            "budget": {
                "steps": result.steps,
                "tokens_seen": sum(n for n, _ in seen),
                "scored_tokens": sum(n for _, n in seen),
                "trainable_parameters": sum(p.numel() for p in trainable),
            },
            "losses": result.column("loss"),
            "converged": result.converged,
            "stopping_rule": rule.describe() if rule else None,
            "eval_curve": result.eval_curve,
        }
        (tmp / "tuning.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _step(
    hf, pad: int, data: list[Encoded], cfg: TuneConfig, seen: list[tuple[int, int]], batch: Batch
) -> dict[str, Term]:
    """One micro-batch: the summed next-token loss of the reply tokens (as the IRM's step); ``seen`` gets
    (tokens in the batch, tokens scored)."""
    picked = [data[i] for i in batch.indices(len(data), cfg.batch_size)]
    tokens, scored = right_pad([e.ids for e in picked], pad, marks=[e.scored for e in picked])
    nll, n = reply_nll(hf(tokens).logits, tokens, scored)
    seen.append((sum(len(e.ids) for e in picked), n))
    return {"lm_loss": Term(nll, n)}


@torch.no_grad()
def held_out_loss(hf, pad: int, data: list[Encoded], batch_size: int = 16) -> float:
    """Mean next-token loss per scored (reply) token of the plain HF model on ``data``."""
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        tokens, scored = right_pad([e.ids for e in rows], pad, marks=[e.scored for e in rows])
        nll, n = reply_nll(hf(tokens).logits, tokens, scored)
        total, count = total + float(nll), count + n
    return total / max(count, 1)


def load_tuned(path: str | Path, **kwargs):
    """Load a folder written by :func:`tune_last_layers` as a bridge, with the base model's BOS convention."""
    path = Path(path)
    meta_file = path / "tuning.json"
    if not meta_file.exists():
        raise FileNotFoundError(
            f"{path} has no tuning.json: not a folder written by tune_last_layers (use load_model for other folders)"
        )
    meta = json.loads(meta_file.read_text())
    model = load_model(path, **kwargs)
    if meta.get("prepend_bos") is not None:
        model.cfg.default_prepend_bos = meta["prepend_bos"]
    base = meta["config"]["model"]
    model.cfg.model_name = f"{REGISTRY[base].hf_id if base in REGISTRY else base} (tuned: {path.name})"
    return model


def training_budget(path: str | Path) -> dict:
    """The training budget ``tuning.json`` records (steps, tokens seen, trainable parameters, ...): what a
    comparison states beside the gain it bought, and whether it converged when it trained to the stopping rule. A folder
    tuned before budgets were recorded gives its steps only."""
    meta = json.loads((Path(path) / "tuning.json").read_text())
    budget = meta.get("budget") or {"steps": meta["config"]["steps"]}
    return budget | ({"converged": meta["converged"]} if meta.get("stopping_rule") else {})
