"""Batched activation patching vs ``transformer_lens.patching`` on the default model.

One full layer × position ``resid_pre`` sweep and one layer × head sweep (head outputs at all
positions), on the same bridge and inputs, in one run, for two input pairs: a typical clean /
corrupted pair sharing a prefix (the engine skips patches that cannot change anything) and a worst
case where the two prompts differ from the first token on. Times are CPU seconds of this process
(a shared machine's other load distorts them least; the wall-clock ratio is printed beside). For
each sweep it prints the speedup, the matmul work of both (FLOPs counted by
``torch.utils.flop_counter``; transformer_lens's is one full forward per node), each side's rate as
a fraction of a matmul peak measured the same way, and the roofline bound on the speedup.
``python -m benchmarks.patching [--model NAME] [--corrupt TEXT] [--clean TEXT ...]``.

The bound. ``speedup = (work_TL / work_ours) × (rate_ours / rate_TL)``. transformer_lens runs one
full forward per node: 8 tokens × 30 layers plus the unembedding of every position (109 of its 517
GFLOP for ``resid_pre``). Without a shared prefix a ``resid_pre`` patch at (layer ``l``, position
``p``) still needs layers ``l..29`` at positions ``p..7``: 465 × 36 = 16,740 token-layers, about 119
GFLOP, and two logits per row (:class:`workbench.metrics.VocabMetric`); merging neighbouring first
positions into larger batched runs adds some work back, 151 GFLOP in all, a work ratio of 3.4x. A
head patch changes every position, so only the layers before it are saved: 582 vs 246 GFLOP, 2.4x.
transformer_lens runs at 12-13% of the matmul peak (batch-1 forwards of 8 tokens). 20x therefore
needs ``20 × 13 / 3.4 ≈ 76%`` of peak for ``resid_pre`` and ``20 × 13 / 2.4 ≈ 108%`` for heads:
beyond the bound at the work this exact method must do. One run (2026-12-03, load 1.1, peak 105
GFLOP per CPU-second): with a shared prefix 27.6x (resid_pre) and 20.7x (head); without, 14.3x at
55% of peak (wall 16.5x) and 11.6x at 62% of peak (wall 14.4x); earlier runs on a slower machine
(transformer_lens at 9-12% of peak) gave 16-19x and 14x without a prefix. What keeps ``resid_pre``
at ~55%: its runs are one block call per layer per start-position group, and float32 matmuls of
few rows are slow here (a 7 × 576 by 576 × 1536 product runs at ~30 GFLOP/s, packing overhead,
while the marginal rows of a batched run go at ~95% of peak); merging groups trades that for extra
work, and merge factors from 1 to 9 moved the time by no more than the run-to-run noise (±5-10%).
Packing every group of a layer into one token matrix for the per-token matmuls would reach the
marginal rate without the extra work, but means re-implementing each architecture's block outside
the bridge (bypassing hooks that inject models); it is not done. A single thread lowers our CPU
seconds by ~18% (2.6 -> 2.1 for resid_pre) at a 20% longer wall time, so the benchmark keeps the
default threads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse under load
os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching draws a bar per sweep

import argparse
import time

import torch
import transformer_lens.patching as tlp
from torch.utils.flop_counter import FlopCounterMode

from workbench.analysis.patching import patch_sweep
from workbench.data.prompts import answer_token
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, load_model

TL = {"resid_pre": tlp.get_act_patch_resid_pre, "head": tlp.get_act_patch_attn_head_out_all_pos}


def matmul_peak(n: int = 1536, repeats: int = 5) -> float:
    """GFLOP per CPU-second of the best of ``repeats`` float32 ``n × n`` matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b)[2] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    """``(result, wall seconds, CPU seconds of this process)``; CPU time is what a shared machine does not distort."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--corrupt", default="This movie was really bad, I hated")
    parser.add_argument(
        "--clean", nargs="+", default=["This movie was really good, I loved", "That film is truly great and we liked"]
    )
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    metric = LogitDiff(torch.tensor([[answer_token(model, " it"), answer_token(model, " the")]]))
    peak = matmul_peak()
    print(
        f"{model.cfg.model_name}: threads={torch.get_num_threads()}, matmul peak {peak:.1f} GFLOP per CPU-second, "
        f"load {os.getloadavg()[0]:.1f} (timings from one run on this machine)"
    )
    report = {"matmul_peak_gflops": peak}
    corrupt = model.to_tokens(args.corrupt)
    for clean_text in args.clean:
        clean = model.to_tokens(clean_text)
        if clean.shape != corrupt.shape:
            raise SystemExit(
                f"{clean_text!r} and --corrupt must have the same token length ({clean.shape[1]} vs {corrupt.shape[1]})"
            )
        shared = int((clean[0] == corrupt[0]).cumprod(0).sum())
        print(f"clean {clean_text!r} / corrupt {args.corrupt!r}: {clean.shape[1]} tokens, shared prefix {shared}")
        report[clean_text] = _compare(model, clean, corrupt, metric, peak)
    return report


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _compare(model, clean, corrupt, metric, peak: float) -> dict:
    _, cache = model.run_with_cache(clean)
    forward = _flops(lambda: model(corrupt))  # transformer_lens.patching runs one such forward per node
    report = {}
    for kind, reference in TL.items():
        ours, wall_ours, t_ours = _timed(
            lambda kind=kind: patch_sweep(model, model, kind, metric, corrupt, clean).values
        )
        theirs, wall_tl, t_tl = _timed(lambda reference=reference: reference(model, corrupt, cache, metric))
        flops_ours = _flops(lambda kind=kind: patch_sweep(model, model, kind, metric, corrupt, clean))
        flops_tl = forward * ours.numel()
        rate, rate_tl = flops_ours / t_ours / 1e9, flops_tl / t_tl / 1e9
        err = (ours - theirs).abs().max().item()
        bound = flops_tl / flops_ours * peak / rate_tl  # our sweep's work at the matmul peak, theirs as measured
        print(
            f"{kind:9s} {tuple(ours.shape)}: CPU s transformer_lens {t_tl:6.1f}, batched {t_ours:5.1f}: "
            f"speedup {t_tl / t_ours:5.1f}x (wall {wall_tl / wall_ours:4.1f}x), max |diff| {err:.1e}\n"
            f"{'':10s}work {flops_tl / 1e9:.0f} vs {flops_ours / 1e9:.0f} GFLOP ({flops_tl / flops_ours:.1f}x less); "
            f"ours at {rate / peak:4.0%}, transformer_lens at {rate_tl / peak:4.0%} of peak; "
            f"speedup bound at our peak {bound:.0f}x, at 50% of peak {bound / 2:.0f}x"
        )
        report[kind] = {
            "tl_cpu_s": t_tl,
            "ours_cpu_s": t_ours,
            "speedup": t_tl / t_ours,
            "wall_speedup": wall_tl / wall_ours,
            "gflops_per_cpu_s": rate,
            "fraction_of_peak": rate / peak,
            "tl_fraction_of_peak": rate_tl / peak,
            "flop_ratio": flops_tl / flops_ours,
            "speedup_bound": bound,
            "max_abs_diff": err,
        }
    return report


if __name__ == "__main__":
    main()
