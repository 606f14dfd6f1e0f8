"""Batched activation patching vs ``transformer_lens.patching`` on the default model.

One full layer × position ``resid_pre`` sweep and one layer × head sweep (head outputs at all
positions), on the same bridge and inputs, in one run, for two input pairs: a typical clean /
corrupted pair sharing a prefix (the engine skips patches that cannot change anything) and a worst
case where the two prompts differ from the first token on. Prints the speedup, the batched sweep's
achieved GFLOP/s (matmul FLOPs counted by ``torch.utils.flop_counter``) and that rate as a
fraction of a matmul peak measured on the same machine. On a shared machine, compare the ratios
of one run, not absolute times. ``python -m benchmarks.patching [--model NAME] [--prompt TEXT]``.
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
    """GFLOP/s of the best of ``repeats`` float32 ``n × n`` matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


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
        f"{model.cfg.model_name}: threads={torch.get_num_threads()}, matmul peak {peak:.1f} GFLOP/s "
        "(timings from one run on this machine)"
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


def _compare(model, clean, corrupt, metric, peak: float) -> dict:
    _, cache = model.run_with_cache(clean)
    report = {}
    for kind, reference in TL.items():
        ours, t_ours = _timed(lambda kind=kind: patch_sweep(model, model, kind, metric, corrupt, clean).values)
        theirs, t_tl = _timed(lambda reference=reference: reference(model, corrupt, cache, metric))
        with FlopCounterMode(display=False) as counter:
            patch_sweep(model, model, kind, metric, corrupt, clean)
        gflops = counter.get_total_flops() / t_ours / 1e9
        err = (ours - theirs).abs().max().item()
        print(
            f"{kind:9s} {tuple(ours.shape)}: transformer_lens {t_tl:6.2f} s, batched {t_ours:6.2f} s, "
            f"speedup {t_tl / t_ours:5.1f}x, {gflops:5.1f} GFLOP/s = {gflops / peak:4.0%} of peak, max |diff| {err:.1e}"
        )
        report[kind] = {
            "tl_s": t_tl,
            "ours_s": t_ours,
            "speedup": t_tl / t_ours,
            "gflops": gflops,
            "fraction_of_peak": gflops / peak,
            "max_abs_diff": err,
        }
    return report


if __name__ == "__main__":
    main()
