"""IRM training step time as a ratio to a forward + backward of the frozen model alone, and tokens/s.

The reference is what any IRM step must pay anyway: a forward of the frozen model and a backward
from the loss to layer 0's attention output (no parameter gradients). The IRM step is measured
through :func:`workbench.irm.train_irm` itself (IRM forward/backward and AdamW included), at the CPU
default width (1·d_model) and at the paper's (3·d_model). Next to each measured ratio it prints the
FLOP bound: the matmul FLOPs of one IRM step over those of the reference on the same batch, counted by
``torch.utils.flop_counter`` (AdamW's elementwise update is not a matmul and is left out of the
bound). Target: ratio <= 1.15 at 1·d_model. Run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared
machine; times are CPU seconds of this process (what other load on a shared machine distorts
least), from one run.

The IRM writes one slice of its output into each of the model's layers. Taking those slices by
indexing made the backward write a zero tensor of the whole output's size per write layer (30x the
output at SmolLM2's 30 layers); :class:`workbench.irm.module.Injection` unbinds the output once.
Measured in one sitting (CPU seconds, load ~13): at 1·d_model 1.30 before, 1.16 after (FLOP bound
1.11); at 3·d_model 1.70 -> 1.60 (bound 1.42). What was left above the bound was mostly AdamW's
elementwise passes over the IRM's 11M parameters (the per-tensor loop: 0.51 s a step on 31M
parameters, clipping 0.02 s); the fused AdamW (:func:`workbench.training.adamw`) does them in one
pass (0.12 s). After it, one run (load 3.6): 1.04 at 1·d_model (bound 1.11), 1.15 at 3·d_model
(bound 1.42). A ratio under the FLOP bound is possible: the bound counts matmul FLOPs, and the
IRM's few large matmuls run nearer the peak than the frozen model's many small ones.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from itertools import pairwise

import torch
from torch.utils.flop_counter import FlopCounterMode

from workbench.data.corpora import load_alignment
from workbench.data.padding import right_pad
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.irm.loss import reply_nll
from workbench.irm.train import batch_order, encode_for, frozen
from workbench.models import load_model

STEPS = 4
CFG = TrainConfig(steps=STEPS, batch_size=8, max_len=48, eval_every=0, warmup=1)


def reference_seconds(model, data, steps: int = STEPS) -> float:
    """Median CPU seconds of forward + backward (to blocks.0.hook_attn_out) of the frozen model on the batches."""
    times = []
    with frozen(model):
        for step in range(steps):
            batch = [data[i] for i in batch_order(len(data), step, CFG.batch_size, CFG.seed)]
            tokens, scored = right_pad(
                [e.ids for e in batch], model.tokenizer.pad_token_id, marks=[e.scored for e in batch]
            )
            start = time.process_time()

            def leaf(x, hook):
                return x.detach().requires_grad_(True)

            with attach(model, [("blocks.0.hook_attn_out", leaf)]):
                nll, n = reply_nll(model(tokens), tokens, scored)
            (nll / n).backward()
            times.append(time.process_time() - start)
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def irm_seconds(model, texts, hidden_mult: float, cfg: TrainConfig = CFG) -> float:
    """Median CPU seconds per IRM training step (clocked at each step's log callback)."""
    irm = IRM.for_model(model, IRMConfig(hidden_mult=hidden_mult))
    clock = [time.process_time()]
    train_irm(model, irm, texts, cfg, progress=False, callback=lambda row: clock.append(time.process_time()))
    steps = [b - a for a, b in pairwise(clock)]
    return statistics.median(steps[1:]) if len(steps) > 1 else steps[0]


def flop_bound(model, texts, data, hidden_mult: float) -> float:
    """Matmul FLOPs of the first IRM step over those of the reference on the same batch."""
    with FlopCounterMode(display=False) as ref:
        reference_seconds(model, data, steps=1)
    with FlopCounterMode(display=False) as step:
        irm_seconds(model, texts, hidden_mult, replace(CFG, steps=1))
    return step.get_total_flops() / ref.get_total_flops()


def main() -> None:
    torch.manual_seed(0)
    model = load_model()
    texts = load_alignment("negative", max_items=200).train
    data = encode_for(model, texts, CFG)
    tokens = (
        sum(len(data[i].ids) for step in range(STEPS) for i in batch_order(len(data), step, CFG.batch_size, CFG.seed))
        / STEPS
    )
    ref = reference_seconds(model, data)
    print(
        f"frozen forward+backward: {ref:.2f} CPU s/step, {tokens / ref:.0f} tokens per CPU s "
        f"({CFG.batch_size} texts, {tokens:.0f} tokens; load {os.getloadavg()[0]:.1f})"
    )
    for mult in (1.0, 3.0):
        sec = irm_seconds(model, texts, mult)
        bound = flop_bound(model, texts, data, mult)
        print(
            f"IRM step, width {mult:g}·d_model: {sec:.2f} CPU s/step, {tokens / sec:.0f} tokens per CPU s, "
            f"ratio {sec / ref:.2f}, FLOP bound {bound:.2f} (target <= 1.15 at 1·d_model)"
        )


if __name__ == "__main__":
    main()
