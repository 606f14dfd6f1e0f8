"""Training an IRM (Smith et al., 2024): the LM frozen, AdamW on the IRM's parameters only.

The loss is the next-token loss of the injected model on an alignment corpus (reply tokens only, see
:mod:`workbench.irm.text`), plus an optional L1 penalty on the IRM output (the paper's
regularisation). Gradients flow through the frozen LM into the IRM; the LM's parameters never
require or receive gradients. The loop is :func:`workbench.training.train_loop` (accumulation,
clipping, NaN stop, data-parallel under ``accelerate launch``); this module supplies the step, the
evaluation and the checkpoints (:class:`workbench.irm.checkpoint.TrainingCheckpoints`: the IRM, the
optimizer and scheduler state, the RNG states, the history and the full training config). Resuming
reproduces an uninterrupted run: the data order is a pure function of the seed and the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench import runstate  # a module, not its names: runstate reads checkpoints through workbench.irm
from workbench.hooks import attach
from workbench.irm.checkpoint import TrainingCheckpoints, latest_checkpoint
from workbench.irm.config import TrainConfig
from workbench.irm.loss import batch_nll, eval_loss, model_device
from workbench.irm.module import IRM
from workbench.irm.text import Encoded, encode_replies
from workbench.models import frozen
from workbench.training import Batch, LoopConfig, Term, TrainResult, accelerator, adamw, batch_order, train_loop

__all__ = ["TrainResult", "batch_order", "encode_for", "latest_checkpoint", "train_irm"]


def encode_for(model: TransformerBridge, texts: Sequence[str], cfg: TrainConfig) -> list[Encoded]:
    """Encode texts the way :func:`train_irm` sees them."""
    return encode_replies(
        model.tokenizer,
        texts,
        user_prompt=cfg.user_prompt,
        system_prompt=cfg.system_prompt,
        chat=cfg.chat,
        max_len=cfg.max_len,
    )


def train_irm(
    model: TransformerBridge,
    irm: IRM,
    train: Sequence[str],
    cfg: TrainConfig,
    *,
    held_out: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    desc: str = "IRM",
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``irm`` (in place) to realign ``model`` towards the texts ``train``.

    Args:
        model: the bridge; frozen for the duration (flags restored after).
        irm: the IRM to train (e.g. ``IRM.for_model(model, seed=cfg.seed)``).
        train: training texts.
        cfg: hyper-parameters.
        held_out: texts for the evaluation loss (the first ``cfg.eval_texts``).
        out_dir: where ``train_log.csv`` (columns step, loss, lm_loss, l1, lr, eval_loss, seconds) and
            ``checkpoints/step-NNNNNN`` go (none written if ``None``).
        resume: continue from the latest checkpoint in ``out_dir`` if there is one (refused if it was
            trained with another config or texts); ``False`` removes the old checkpoints and starts over.
        progress: show a tqdm bar with the loss.
        desc: the bar's label (which run it is, when several train at once).
        callback: called with each step's log row (e.g. to plot live, or to stop by raising).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the message names the step and the cause).
        ValueError: the checkpoint in ``out_dir`` belongs to another run (the message names the differences).
        CheckpointError: a checkpoint file is damaged (the message names the file and the fix).
    """
    irm.check_model(model)
    data = encode_for(model, train, cfg)
    if not data:
        raise ValueError("no training texts: give at least one non-empty text")
    evals = encode_for(model, held_out[: cfg.eval_texts], cfg)
    opt = adamw(irm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)))
    out = Path(out_dir) if out_dir is not None else None
    loop = LoopConfig(
        cfg.steps,
        cfg.grad_accum,
        cfg.max_grad_norm,
        cfg.seed,
        cfg.eval_every,
        cfg.checkpoint_every,
        desc,
        cfg.stopping_rule if evals else None,
    )
    main = accelerator().is_main_process
    if out is not None and main:
        runstate.write_run_state(out, "running", 0, cfg.steps)
    with frozen(model):
        result = train_loop(
            irm,
            opt,
            partial(_step, model, irm, data, cfg),
            loop,
            scheduler=sched,
            evaluate=partial(eval_loss, model, irm, evals, batch_size=max(cfg.batch_size, 16)) if evals else None,
            checkpoints=TrainingCheckpoints(out / "checkpoints", model, irm, cfg, [e.ids for e in data])
            if out
            else None,
            resume=resume,
            log_path=out / "train_log.csv" if out else None,
            progress=progress,
            callback=callback,
        )
    if out is not None and main:  # last, so a killed run never reads as finished (workbench.runstate)
        runstate.write_run_state(out, "stopped_early" if result.converged else "finished", result.steps, cfg.steps)
    return result


def _step(model: TransformerBridge, irm: IRM, data: list[Encoded], cfg: TrainConfig, batch: Batch) -> dict[str, Term]:
    """One micro-batch: next-token loss of the injected model on the reply tokens, and the L1 of the IRM output."""
    device = model_device(model)
    items = [data[i] for i in batch.indices(len(data), cfg.batch_size)]
    injection = irm.injection(model)
    amp = cfg.amp and device.type == "cuda"
    with attach(model, injection.hooks), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        nll, n, scored = batch_nll(model, items)
    out = injection.output
    if out is None:
        raise RuntimeError(f"the IRM read hook {irm.read_name} did not run: this model's forward skips that point")
    l1 = out[scored].float().abs() if cfg.l1 > 0 else torch.zeros(0, device=device)
    return {"lm_loss": Term(nll, n), "l1": Term(l1.sum(), max(l1.numel(), 1), cfg.l1)}
