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
fraction is achieved FLOP/s over that peak; and one matmul of the step's shape in float32 and half
precision (is bfloat16 faster on this CPU?). This part runs single-threaded: CPU seconds of one thread
count no OpenMP spinning, so they measure the step itself.

The *machine* part measures what the main job gets from the whole machine, in scored tokens per wall
second: ``before`` as the job ran it (one process, every core's thread on one unit, batch 4, the old
step), ``after`` as it runs now (``--workers`` = cores: one single-threaded process per core, each
training its own unit at the card batch of 16 with the new step, all started together).

Last, the FLOP bound of the committed card study (``figures/neuron1512``): the optimizer steps its
converged units trained (and, as a floor no stopping rule can beat, the steps to each unit's best
evaluation), times one step's FLOPs, over every core at the measured peak; and the same steps at this
run's machine rate. Run on a quiet machine; one run's output is in
``benchmarks/results/irm_train.txt``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import statistics
import time
from functools import partial
from itertools import pairwise
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from workbench.data.corpora import load_alignment
from workbench.data.padding import pad_id, right_pad
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, TrainConfig
from workbench.irm.loss import reply_nll
from workbench.irm.text import Encoded
from workbench.irm.train import _step, encode_for
from workbench.models import frozen, load_model
from workbench.training import Batch, LoopConfig, Term, adamw, train_loop

CARD_IRM = IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=1.0, n_hidden=4)
CARD_MAX_LEN = 40
CARD_BATCH = 16
BATCHES = (4, 8, 16, 32)
STEPS = 4
ROUNDS = 2
MACHINE_STEPS = 6
WORKER_TIMEOUT = 900
STUDY = Path("figures/neuron1512")


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


def run_kind(model, data, kind: str, batch_size: int, start: int, steps: int = STEPS) -> tuple[float, float, float]:
    """CPU seconds and wall seconds per step (medians of the steps after the first) and scored tokens per step."""
    irm = IRM.for_model(model, CARD_IRM, seed=0, identity=False)
    cfg = TrainConfig(batch_size=batch_size, max_len=CARD_MAX_LEN, seed=start)
    step = (
        partial(_before_step, model, irm, data, batch_size)
        if kind == "before"
        else partial(_step, model, irm, data, cfg)
    )
    clock = [(time.process_time(), time.perf_counter())]
    with frozen(model):
        train_loop(
            irm,
            adamw(irm.parameters(), lr=1e-3),
            step,
            LoopConfig(steps, seed=start),
            progress=False,
            callback=lambda row: clock.append((time.process_time(), time.perf_counter())),
        )
    cpu = statistics.median(b[0] - a[0] for a, b in pairwise(clock[1:]))
    wall = statistics.median(b[1] - a[1] for a, b in pairwise(clock[1:]))
    tokens = statistics.mean(_scored(data, batch_size, start, m) for m in range(1, steps))
    return cpu, wall, tokens


def step_flops(model, data, batch_size: int) -> int:
    """Matmul FLOPs of one ``after`` step (forward, backward to the IRM, the IRM's own)."""
    irm = IRM.for_model(model, CARD_IRM, seed=0, identity=False)
    cfg = TrainConfig(batch_size=batch_size, max_len=CARD_MAX_LEN)
    with frozen(model), FlopCounterMode(display=False) as counter:
        _step(model, irm, data, cfg, Batch(1, 0, 0))["lm_loss"].total.backward()
    return counter.get_total_flops()


def _matmul_rate(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """FLOP per CPU-second of ``a @ b`` (best of ``reps``, after one warm-up)."""
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def matmul_peak(n: int = 1536, reps: int = 6) -> float:
    """Float32 matmul FLOP per CPU-second at size ``n`` (best of ``reps``)."""
    return _matmul_rate(torch.randn(n, n), torch.randn(n, n), reps)


def dtype_rates(rows: int = 336, d_model: int = 576, d_mlp: int = 1536, reps: int = 10) -> dict[str, float]:
    """GFLOP per CPU-second of one MLP-shaped matmul (a batch-16 step's rows) in float32, bfloat16 and float16
    (best of ``reps``): whether half precision would be faster here (it is only on CPUs with bf16/fp16 matmul
    instructions)."""
    return {
        str(dtype).removeprefix("torch."): _matmul_rate(
            torch.randn(rows, d_model, dtype=dtype), torch.randn(d_model, d_mlp, dtype=dtype), reps
        )
        / 1e9
        for dtype in (torch.float32, torch.bfloat16, torch.float16)
    }


def setup() -> tuple[object, list[Encoded]]:
    """The default model and the card preset's negative training texts, encoded."""
    model = load_model()
    texts = load_alignment("negative", min_confidence=0.8, max_items=2000, seed=0).train
    return model, encode_for(model, texts, TrainConfig(max_len=CARD_MAX_LEN))


def _worker(seed: int, ready, results) -> None:
    torch.set_num_threads(1)
    model, data = setup()
    ready.wait()
    _, wall, tokens = run_kind(model, data, "after", CARD_BATCH, start=seed, steps=MACHINE_STEPS)
    results.put(tokens / wall)


def machine_rates(model, data, cores: int) -> tuple[float, float]:
    """Scored tokens per wall second on ``cores`` cores: the old job (one process, ``cores`` threads,
    batch 4, old step) and the new one (``cores`` single-threaded processes at batch 16, new step)."""
    torch.set_num_threads(cores)
    _, wall, tokens = run_kind(model, data, "before", 4, start=0, steps=MACHINE_STEPS)
    torch.set_num_threads(1)
    spawn = multiprocessing.get_context("spawn")
    ready, results = spawn.Barrier(cores), spawn.Queue()
    workers = [spawn.Process(target=_worker, args=(seed, ready, results)) for seed in range(cores)]
    for w in workers:
        w.start()
    try:
        after = sum(results.get(timeout=WORKER_TIMEOUT) for _ in workers)
    except queue.Empty:
        raise RuntimeError(
            f"a benchmark worker gave no rate within {WORKER_TIMEOUT} s: it failed (its traceback is above) or the "
            "machine is too loaded; rerun on a quiet machine"
        ) from None
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    return tokens / wall, after


def study_steps() -> tuple[int, int] | None:
    """Optimizer steps the committed card study trained (all its units), and the steps to each unit's best
    evaluation (what a stopping rule without patience would train at best); ``None`` if the study did not
    use the card step measured here."""
    if not (STUDY / "summary.json").exists():
        return None
    runs = json.loads((STUDY / "config.json").read_text())["runs"]
    card = next((r for r in runs if r["name"] == "card"), None)
    if card is None or (card["train"]["batch_size"], card["train"]["max_len"]) != (CARD_BATCH, CARD_MAX_LEN):
        return None
    results = json.loads((STUDY / "summary.json").read_text())["results"]["card"]
    units = [v for r in results.values() for v in r["training"]["per_seed"].values()]
    best = sum(min(v["heldout_loss_curve"], key=lambda point: point[1])[0] for v in units)
    return sum(v["steps"] for v in units), best


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0))
    model, data = setup()
    kinds = [("before", 4)] + [("after", b) for b in BATCHES]
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {k: [] for k in kinds}
    peaks = []
    for r in range(ROUNDS):
        peaks.append(matmul_peak())
        for kind, batch in kinds:
            results[(kind, batch)].append(run_kind(model, data, kind, batch, start=r))
    peak = max(peaks)
    base_rate = None
    flops = {batch: step_flops(model, data, batch) for kind, batch in kinds if kind == "after"}
    print(f"one thread: matmul peak {peak / 1e9:.0f} GFLOP per CPU-second (float32, best of {ROUNDS} rounds)")
    print("kind    batch  CPU-s/step  real tok/step  real tok/CPU-s  vs before  GFLOP/step  % of peak")
    for kind, batch in kinds:
        seconds = statistics.median(s for s, _, _ in results[(kind, batch)])
        tokens = statistics.mean(t for _, _, t in results[(kind, batch)])
        rate = tokens / seconds
        base_rate = base_rate or rate
        gflop = flops.get(batch, float("nan")) if kind == "after" else float("nan")
        print(
            f"{kind:7s} {batch:5d}  {seconds:10.3f}  {tokens:13.1f}  {rate:14.1f}  {rate / base_rate:8.2f}x"
            f"  {gflop / 1e9:10.1f}  {100 * gflop / seconds / peak:8.0f}%"
        )
    rates = ", ".join(f"{name} {rate:.1f}" for name, rate in dtype_rates().items())
    print(f"one thread, GFLOP per CPU-second of a {CARD_BATCH}-text step's MLP matmul: {rates}")
    before, after = machine_rates(model, data, cores)
    print(f"\nthe machine ({cores} cores), scored tokens per wall second:")
    print(f"before: 1 process x {cores} threads, batch 4, old step: {before:.1f}")
    print(f"after:  {cores} processes x 1 thread, batch {CARD_BATCH}, new step: {after:.1f} ({after / before:.2f}x)")
    study = study_steps()
    if study is not None:
        tokens = statistics.mean(t for _, _, t in results[("after", CARD_BATCH)])
        for label, steps in zip(("trained", "to each unit's best evaluation"), study, strict=True):
            total = steps * flops[CARD_BATCH]
            print(
                f"the committed card study, {label}: {steps} steps of batch {CARD_BATCH}, {total / 1e12:.0f} TFLOP:"
                f" {total / (cores * peak):.0f} s on {cores} cores at 100% of the matmul peak,"
                f" {steps * tokens / after:.0f} s at the machine rate above (training only)"
            )


if __name__ == "__main__":
    main()
