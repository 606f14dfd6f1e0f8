"""IRM training step time as a ratio to a forward + backward of the frozen model alone, and tokens/s.

The reference is what any IRM step must pay anyway: a forward of the frozen model and a backward
from the loss to layer 0's attention output (no parameter gradients). The IRM step is measured
through :func:`workbench.irm.train_irm` itself (IRM forward/backward and AdamW included), at the CPU
default width (1·d_model) and at the paper's (3·d_model). Target: ratio <= 1.3. Run with
``OMP_WAIT_POLICY=PASSIVE`` on a shared machine; numbers are from one run.
"""

from __future__ import annotations

import itertools
import statistics
import time

import torch

from workbench.data.corpora import load_alignment
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.irm.text import pad_batch
from workbench.irm.train import batch_order, encode_for, frozen, reply_nll
from workbench.models import load_model

STEPS = 4
CFG = TrainConfig(steps=STEPS, batch_size=8, max_len=48, eval_every=0, warmup=1)


def reference_seconds(model, data) -> float:
    """Median seconds of forward + backward (to blocks.0.hook_attn_out) of the frozen model on the training batches."""
    times = []
    with frozen(model):
        for step in range(STEPS):
            batch = [data[i] for i in batch_order(len(data), step, CFG.batch_size, CFG.seed)]
            tokens, scored = pad_batch(batch, model.tokenizer.pad_token_id)
            start = time.perf_counter()

            def leaf(x, hook):
                return x.detach().requires_grad_(True)

            with attach(model, [("blocks.0.hook_attn_out", leaf)]):
                nll, n = reply_nll(model(tokens), tokens, scored)
            (nll / n).backward()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def irm_seconds(model, texts, hidden_mult: float) -> float:
    """Median seconds per IRM training step (from the training log's clock)."""
    irm = IRM.for_model(model, IRMConfig(hidden_mult=hidden_mult))
    result = train_irm(model, irm, texts, CFG, progress=False)
    clock = [0.0] + [row["seconds"] for row in result.history]
    return statistics.median([b - a for a, b in itertools.pairwise(clock)][1:])


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
        f"frozen forward+backward: {ref:.2f} s/step, {tokens / ref:.0f} tokens/s "
        f"({CFG.batch_size} texts, {tokens:.0f} tokens)"
    )
    for mult in (1.0, 3.0):
        sec = irm_seconds(model, texts, mult)
        print(
            f"IRM step, width {mult:g}·d_model: {sec:.2f} s/step, {tokens / sec:.0f} tokens/s, "
            f"ratio {sec / ref:.2f} (target <= 1.3)"
        )


if __name__ == "__main__":
    main()
