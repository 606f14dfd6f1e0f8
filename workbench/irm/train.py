"""Training an IRM (Smith et al., 2024): the LM frozen, AdamW on the IRM's parameters only.

The loss is the next-token loss of the injected model on an alignment corpus (reply tokens only, see
:mod:`workbench.irm.text`), plus an optional L1 penalty on the IRM output (the paper's
regularisation). Gradients flow through the frozen LM into the IRM; the LM's parameters never
require or receive gradients. Checkpoints (every ``checkpoint_every`` steps) hold the IRM, the
optimizer and scheduler state, the RNG states and the history, and resuming from one reproduces an
uninterrupted run: the data order is a pure function of the seed and the step.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Bool, Int
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import attach
from workbench.irm.checkpoint import load_train_state, model_identity, read_meta, save_irm
from workbench.irm.config import TrainConfig
from workbench.irm.module import IRM
from workbench.irm.text import Encoded, encode_replies, pad_batch
from workbench.models import frozen

__all__ = ["TrainResult", "batch_order", "encode_for", "eval_loss", "latest_checkpoint", "reply_nll", "train_irm"]

LOG_FIELDS = ("step", "loss", "lm_loss", "l1", "lr", "eval_loss", "seconds")


@dataclass(frozen=True)
class TrainResult:
    """History of one training run (one row per optimizer step; ``eval_loss`` is NaN between evaluations)."""

    history: tuple[dict, ...]
    steps: int
    resumed_from: int

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per step."""
        return pd.DataFrame(list(self.history), columns=list(LOG_FIELDS))


def reply_nll(
    logits: Tensor, tokens: Int[Tensor, "batch pos"], scored: Bool[Tensor, "batch pos"]
) -> tuple[Tensor, int]:
    """Summed next-token negative log-likelihood of the scored tokens, and how many there are."""
    target = scored[:, 1:]
    picked = logits[:, :-1][target].float()
    nll = torch.nn.functional.cross_entropy(picked, tokens[:, 1:][target], reduction="sum")
    return nll, int(target.sum())


def encode_for(model, texts: Sequence[str], cfg: TrainConfig) -> list[Encoded]:
    """Encode texts the way :func:`train_irm` sees them."""
    return encode_replies(
        model.tokenizer,
        texts,
        user_prompt=cfg.user_prompt,
        system_prompt=cfg.system_prompt,
        chat=cfg.chat,
        max_len=cfg.max_len,
    )


def _pad_id(model) -> int:
    tok = model.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


@torch.no_grad()
def eval_loss(
    model, irm: IRM | None, data: Sequence[Encoded], *, batch_size: int = 16, mask: Tensor | None = None
) -> float:
    """Mean next-token loss per scored token of ``model`` (with ``irm`` injected unless ``None``)."""
    total, count = 0.0, 0
    hooks = irm.hooks(model, mask=mask) if irm is not None else []
    with attach(model, hooks):
        for start in range(0, len(data), batch_size):
            tokens, scored = pad_batch(data[start : start + batch_size], _pad_id(model), model.cfg.device)
            nll, n = reply_nll(model(tokens), tokens, scored)
            total, count = total + float(nll), count + n
    return total / max(count, 1)


def batch_order(n: int, micro: int, batch_size: int, seed: int) -> list[int]:
    """Indices of micro-batch ``micro``: epochs of seeded permutations, so the order depends only on (seed, micro)."""
    out = []
    for i in range(micro * batch_size, (micro + 1) * batch_size):
        epoch, pos = divmod(i, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[pos]))
    return out


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete ``step-*`` checkpoint that :func:`train_irm` wrote in ``folder``, or None."""
    folder = Path(folder)
    done = sorted(p for p in folder.glob("step-*") if (p / "irm.json").is_file() and (p / "train_state.pt").is_file())
    return done[-1] if done else None


def train_irm(
    model,
    irm: IRM,
    train: Sequence[str],
    cfg: TrainConfig,
    *,
    held_out: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``irm`` (in place) to realign ``model`` towards the texts ``train``.

    Args:
        model: the bridge; frozen for the duration (flags restored after).
        irm: the IRM to train (e.g. ``IRM.for_model(model, seed=cfg.seed)``).
        train: training texts.
        cfg: hyper-parameters.
        held_out: texts for the evaluation loss (the first ``cfg.eval_texts``).
        out_dir: where ``train_log.csv`` and ``checkpoints/step-NNNNNN`` go (none written if ``None``).
        resume: continue from the latest checkpoint in ``out_dir`` if there is one.
        progress: show a tqdm bar with the loss.
        callback: called with each step's log row (e.g. to plot live, or to stop by raising).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the message names the step).
    """
    irm.check_model(model)
    device = torch.device(model.cfg.device)
    data = encode_for(model, train, cfg)
    evals = encode_for(model, held_out[: cfg.eval_texts], cfg)
    if not data:
        raise ValueError("no training texts")
    opt = torch.optim.AdamW(irm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)))
    history: list[dict] = []
    start = 0
    out = Path(out_dir) if out_dir is not None else None
    ckpts = out / "checkpoints" if out is not None else None
    if resume and ckpts is not None and (latest := latest_checkpoint(ckpts)) is not None:
        start, history = _restore(latest, model, irm, opt, sched)
    use_amp = cfg.amp and device.type == "cuda"
    log = _Log(out / "train_log.csv", history) if out is not None else None
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="IRM", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        with frozen(model):
            irm.train()
            for step in range(start + 1, cfg.steps + 1):
                opt.zero_grad(set_to_none=True)
                lm_sum, l1_sum = 0.0, 0.0
                for a in range(cfg.grad_accum):
                    idx = batch_order(len(data), (step - 1) * cfg.grad_accum + a, cfg.batch_size, cfg.seed)
                    tokens, scored = pad_batch([data[i] for i in idx], _pad_id(model), device)
                    injection = irm.injection(model)
                    with (
                        attach(model, injection.hooks),
                        torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp),
                    ):
                        logits = model(tokens)
                    nll, n = reply_nll(logits, tokens, scored)
                    lm = nll / max(n, 1)
                    l1 = injection.output[scored].float().abs().mean() if cfg.l1 > 0 else torch.zeros((), device=device)
                    loss = (lm + cfg.l1 * l1) / cfg.grad_accum
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"IRM training stopped at step {step}: the loss is {float(loss.detach())}. "
                            f"Lower the learning rate (lr={cfg.lr}) or keep max_grad_norm > 0"
                        )
                    loss.backward()
                    lm_sum += float(lm.detach()) / cfg.grad_accum
                    l1_sum += float(l1.detach()) / cfg.grad_accum
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(irm.parameters(), cfg.max_grad_norm)
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                eval_now = evals and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps)
                row = {
                    "step": step,
                    "loss": lm_sum + cfg.l1 * l1_sum,
                    "lm_loss": lm_sum,
                    "l1": l1_sum,
                    "lr": lr,
                    "eval_loss": _eval(model, irm, evals, cfg.batch_size) if eval_now else math.nan,
                    "seconds": time.perf_counter() - t0,
                }
                history.append(row)
                if log is not None:
                    log.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['lm_loss']:.3f}", eval=f"{row['eval_loss']:.3f}")
                if ckpts is not None and (
                    (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps
                ):
                    _checkpoint(ckpts, step, model, irm, opt, sched, history, cfg.keep_checkpoints)
                if callback is not None:
                    callback(row)
    finally:
        bar.close()
        irm.eval()
    return TrainResult(tuple(history), cfg.steps, start)


def _eval(model, irm: IRM, evals: list[Encoded], batch_size: int) -> float:
    irm.eval()
    value = eval_loss(model, irm, evals, batch_size=batch_size)
    irm.train()
    return value


def _checkpoint(folder: Path, step: int, model, irm: IRM, opt, sched, history: list[dict], keep: int) -> None:
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": history,
    }
    save_irm(folder / f"step-{step:06d}", irm, model=model, step=step, train_state=state)
    for old in sorted(folder.glob("step-*"))[: -max(keep, 1)]:
        shutil.rmtree(old)


def _restore(path: Path, model, irm: IRM, opt, sched) -> tuple[int, list[dict]]:
    meta = read_meta(path)
    have = model_identity(model)
    if any(meta[k] != have[k] for k in have) or meta["irm_config"] != irm.cfg.to_dict():
        raise ValueError(
            f"checkpoint {path} belongs to another model or IRM config ({meta['model_name']}, {meta['irm_config']}); "
            "use another out_dir or pass resume=False"
        )
    irm.load_state_dict(load_file(path / "irm.safetensors"))
    state = load_train_state(path)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), list(state["history"])


class _Log:
    """The CSV training log, rewritten from the restored history and then appended to row by row."""

    def __init__(self, path: Path, history: list[dict]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(history)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow(row)
