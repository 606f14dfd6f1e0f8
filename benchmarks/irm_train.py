"""IRM training throughput: real tokens per second before and after, and the fraction of the FLOP bound.

A *real* token is one the loss scores (a reply token of a chat-wrapped tweet): padding and the chat
prompt are work, not progress. Three step kinds run on the same batches of the card preset's corpus
(negative tweets, ``max_len`` 40: an 18-token chat prompt, ~21 scored reply tokens per text):

* ``before``: the card step as it was: ``model(tokens)`` on the right-padded batch of 4 and the
  full vocabulary unembedded at every position;
* ``after``: :func:`workbench.irm.train.batch_nll`: the chat prompt every row starts with runs once
  per batch and the replies on its cached keys and values, and only scored positions are unembedded;
  at batch 4 and at the larger batches listed in ``BATCHES``.

Each is timed through :func:`workbench.training.train_loop` (IRM forward/backward and AdamW included),
in CPU seconds of this process (what other load on a shared machine distorts least), interleaved
round by round so that drifting load hits every kind alike. The FLOP bound: the matmul FLOPs of one
``after`` step (``torch.utils.flop_counter``: the frozen forward, the backward to the IRM's output,
the IRM's own forward and backward), over the float32 matmul peak measured in the same run; the
fraction is achieved FLOP/s over that peak. Run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from itertools import pairwise

import torch
from torch.utils.flop_counter import FlopCounterMode

from workbench.data.corpora import load_alignment
from workbench.data.padding import pad_id, right_pad
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, TrainConfig
from workbench.irm.loss import reply_nll
from workbench.irm.train import _step, encode_for
from workbench.models import frozen, load_model
from workbench.training import Batch, LoopConfig, Term, adamw, train_loop

CARD_IRM = IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=1.0, n_hidden=4)
CARD_MAX_LEN = 40
BATCHES = (4, 8, 16)
STEPS = 4
ROUNDS = 2


def _before_step(model, irm, data, batch_size: int, batch: Batch) -> dict[str, Term]:
    """The card step as it was: the whole padded batch through ``model`` and every position unembedded."""
    items = [data[i] for i in batch.indices(len(data), batch_size)]
    tokens, scored = right_pad([e.ids for e in items], pad_id(model.tokenizer), marks=[e.scored for e in items])
    with attach(model, irm.hooks(model)):
        nll, n = reply_nll(model(tokens), tokens, scored)
    return {"lm_loss": Term(nll, n)}


def _scored(data, batch_size: int, seed: int, micro: int) -> int:
    items = Batch(1, micro, seed).indices(len(data), batch_size)
    return sum(sum(data[i].scored) for i in items)


def run_kind(model, data, kind: str, batch_size: int, start: int) -> tuple[float, int]:
    """CPU seconds per step (median of steps after the first) and scored tokens per step."""
    irm = IRM.for_model(model, CARD_IRM, seed=0, identity=False)
    cfg = TrainConfig(batch_size=batch_size, max_len=CARD_MAX_LEN, seed=start)
    step = (
        partial(_before_step, model, irm, data, batch_size)
        if kind == "before"
        else partial(_step, model, irm, data, cfg)
    )
    clock = [time.process_time()]
    with frozen(model):
        train_loop(
            irm,
            adamw(irm.parameters(), lr=1e-3),
            step,
            LoopConfig(STEPS, seed=start),
            progress=False,
            callback=lambda row: clock.append(time.process_time()),
        )
    seconds = statistics.median(b - a for a, b in pairwise(clock[1:]))
    tokens = statistics.mean(_scored(data, batch_size, start, m) for m in range(1, STEPS))
    return seconds, tokens


def step_flops(model, data, batch_size: int) -> int:
    """Matmul FLOPs of one ``after`` step (forward, backward to the IRM, the IRM's own)."""
    irm = IRM.for_model(model, CARD_IRM, seed=0, identity=False)
    cfg = TrainConfig(batch_size=batch_size, max_len=CARD_MAX_LEN)
    with frozen(model), FlopCounterMode(display=False) as counter:
        _step(model, irm, data, cfg, Batch(1, 0, 0))["lm_loss"].total.backward()
    return counter.get_total_flops()


def matmul_peak(n: int = 1536, reps: int = 6) -> float:
    """Float32 matmul FLOP per CPU-second at size ``n`` (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best


def main() -> None:
    torch.manual_seed(0)
    model = load_model()
    texts = load_alignment("negative", min_confidence=0.8, max_items=2000, seed=0).train
    data = encode_for(model, texts, TrainConfig(max_len=CARD_MAX_LEN))
    kinds = [("before", 4)] + [("after", b) for b in BATCHES]
    results: dict[tuple[str, int], list[tuple[float, int]]] = {k: [] for k in kinds}
    peaks = []
    for r in range(ROUNDS):
        peaks.append(matmul_peak())
        for kind, batch in kinds:
            results[(kind, batch)].append(run_kind(model, data, kind, batch, start=r))
    peak = max(peaks)
    base_rate = None
    print(f"matmul peak {peak / 1e9:.0f} GFLOP per CPU-second (float32, best of {ROUNDS} rounds)")
    print("kind    batch  CPU-s/step  real tok/step  real tok/CPU-s  vs before  GFLOP/step  % of peak")
    for kind, batch in kinds:
        seconds = statistics.median(s for s, _ in results[(kind, batch)])
        tokens = statistics.mean(t for _, t in results[(kind, batch)])
        rate = tokens / seconds
        base_rate = base_rate or rate
        flops = step_flops(model, data, batch) if kind == "after" else float("nan")
        share = 100 * flops / seconds / peak
        print(
            f"{kind:7s} {batch:5d}  {seconds:10.3f}  {tokens:13.1f}  {rate:14.1f}  {rate / base_rate:8.2f}x"
            f"  {flops / 1e9:10.1f}  {share:8.0f}%"
        )


if __name__ == "__main__":
    main()
