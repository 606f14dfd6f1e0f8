"""Attribution patching (AtP / AtP*) vs exact activation patching on the default model: time and fidelity.

Three tasks on SmolLM2-135M-Instruct, each a target run patched from a source run:

* ``ioi``: indirect-object prompts (Wang et al., 2022), the subject flipped between the clean
  (source) and corrupted (target) prompt; metric ``logit(IO) - logit(S)`` of the clean prompt;
* ``sentiment``: movie-review prompts whose sentiment word is flipped; metric ``logit(" good") - logit(" bad")``;
* ``irm``: base -> IRM-injected on the sentiment prompts: the target is the base model, the source
  the same model with an IRM (trained for a few steps on negative tweets) injected, as
  ``patch_sweep`` between two models.

For each task, in one run: the time of AtP* over every node kind (one pass), of our exact sweeps
(:func:`~workbench.analysis.patching.patch_sweep`) over the exact kinds, and of
``transformer_lens.patching`` on the same nodes. TransformerLens runs one full forward per node, so its
time is linear in the node count: it is timed on ``--tl-cells`` nodes per kind, spread over the
layers, and scaled to the full count (said in the output). Then fidelity of AtP against our exact
sweeps per node kind (Pearson, Spearman, recall of the exact top 10, largest miss relative to the
largest effect) and where the largest misses sit; for queries / keys / values, plain AtP and AtP*
against exact patching on ``--qkv-layers``. ``--check`` runs exact patching on AtP's top-k nodes of
every kind (neurons included), the AtP -> exact workflow.

Measured (one run, shared 2-core machine at load ~15, wall clock; IOI, 4 prompts × 14 tokens):
AtP* over all 11 node kinds (58,530 nodes) 14.7 s; our exact sweeps of the 7 exact kinds 691 s
(47x); transformer_lens on the same nodes ~10,200 s extrapolated from 12 timed nodes per kind
(~700x AtP*). Fidelity (AtP* vs exact, Pearson / Spearman / top-10 recall): attn_out
0.97/0.89/0.9, head 0.97/0.88/0.9, head_pos 0.97/0.95/0.9, mlp_out 0.72/0.88/0.8, resid_pre
0.77/0.89/0.2, resid_mid 0.26/0.77/0.6, resid_post 0.78/0.91/0.2. Where AtP fails: the residual
stream at the changed token in early layers (resid_pre L0-L2 at the subject position: AtP
+0.4..+1.7 vs exact +11.7, the whole prompt's answer flips) and MLP0 there (+1.5 vs +11.7);
recall of residual nodes is low also because the exact top 10 are ties (one position, every
layer). Queries / keys on layers 0, 15, 29: AtP* beats AtP (q: Pearson 0.84 -> 0.95, top-10
recall 0.7 -> 0.8; k: largest miss 10% -> 4% of the largest effect), values 0.999. ``--check``:
the exact effects of AtP*'s top 10 agree in sign 90-100% for every kind.

Sentiment (3 prompts × 8 tokens, CPU seconds, load ~8): AtP* over 53,310 nodes 1.2 s; our exact
sweeps 43.7 s (36x); transformer_lens ~628 s (523x). Pearson / Spearman / top-10: attn_out
0.98/0.93/0.8, head 0.98/0.99/0.8, head_pos 0.99/0.98/0.8, mlp_out 0.50/0.87/0.8, resid_pre
0.73/0.66/0.8, resid_mid 0.44/0.64/0.5, resid_post 0.76/0.67/0.9. Failures again at the changed
word in early layers (resid L1-L4 at the sentiment word: AtP -0.65 vs exact +1.69, wrong sign)
and MLP0 (-0.52 vs +1.65). Keys on layers 0 and 29: AtP Pearson 0.81 (largest miss 67%), AtP*
0.999 (5%): here the saturation fix matters. ``--check``: sign agreement 80-100%.

Base -> IRM (IRM trained 20 steps, same prompts, CPU seconds): AtP* 0.9 s; our exact sweeps 57.6 s
(64x; transformer_lens has no between-models mode to time). The IRM's small, distributed change is
AtP's easy case: Pearson 0.90-0.99 for every kind (resid_mid 0.90 lowest), top-10 recall 0.7-1.0;
largest misses in the last layers' residual at the last position (-1.87 vs -1.44).
``--check``: sign agreement 100% for every kind.

``python -m benchmarks.attribution [--check] [--tasks ioi sentiment irm]``. Times are CPU seconds of
this process; run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine; ratios are from one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import time
from collections.abc import Callable

import pandas as pd
import torch
import transformer_lens.patching as tlp

from workbench.analysis.attribution_patching import attribution_sweeps, confirm, fidelity
from workbench.analysis.patching import SWEEPS, ModelSide, PatchResult, as_side, patch_sweep
from workbench.data.counterfactual import IOI_NAMES, IOI_TEMPLATE
from workbench.data.prompts import answer_token, prompt_tokens
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, load_model

SENTIMENT = [
    ("The film was great and the acting was", "The film was awful and the acting was"),
    ("What a wonderful story, the ending was", "What a terrible story, the ending was"),
    ("What a lovely story, the ending was", "What a horrible story, the ending was"),
]
"""(clean, corrupted) review prompts of equal token length; the metric reads " good" vs " bad"."""

TL_SETTERS = {
    "resid_pre": tlp.layer_pos_patch_setter,
    "resid_mid": tlp.layer_pos_patch_setter,
    "resid_post": tlp.layer_pos_patch_setter,
    "attn_out": tlp.layer_pos_patch_setter,
    "mlp_out": tlp.layer_pos_patch_setter,
    "head": tlp.layer_head_vector_patch_setter,
    "head_pos": tlp.layer_pos_head_vector_patch_setter,
}


def ioi_task(model, n: int = 4):
    """``n`` IOI pairs: clean names the IO once and the subject twice; corrupted repeats the IO instead."""
    names = IOI_NAMES
    pairs = [(names[2 * i], names[2 * i + 1]) for i in range(n)]
    clean = [IOI_TEMPLATE.format(a=a, b=b, subject=b) for a, b in pairs]
    corrupt = [IOI_TEMPLATE.format(a=a, b=b, subject=a) for a, b in pairs]
    answers = torch.tensor([[answer_token(model, a), answer_token(model, b)] for a, b in pairs])
    return prompt_tokens(model, clean), prompt_tokens(model, corrupt), LogitDiff(answers)


def sentiment_task(model):
    """The review pairs of :data:`SENTIMENT` and the good-vs-bad logit difference."""
    clean, corrupt = (prompt_tokens(model, [pair[i] for pair in SENTIMENT]) for i in (0, 1))
    answers = torch.tensor([[answer_token(model, " good"), answer_token(model, " bad")]] * len(SENTIMENT))
    return clean, corrupt, LogitDiff(answers)


def irm_side(model, steps: int) -> ModelSide:
    """The model with an IRM trained for ``steps`` steps on negative tweets injected."""
    from workbench.data.corpora import load_alignment
    from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm

    irm = IRM.for_model(model, IRMConfig(hidden_mult=1.0))
    cfg = TrainConfig(steps=steps, batch_size=4, max_len=32, eval_every=0, warmup=1, lr=3e-3)
    train_irm(model, irm, load_alignment("negative", max_items=100).train, cfg, progress=False)
    irm.eval()
    return ModelSide(model, hooks=tuple(irm.hooks(model)), name="irm")


def _timed(fn: Callable):
    """``(result, CPU seconds of this process)``: what other load on a shared machine distorts least."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def _tl_seconds(model, kind: str, corrupt, cache, metric, cells: int) -> tuple[float, int]:
    """Seconds of transformer_lens.patching over all nodes of ``kind``, from ``cells`` timed nodes."""
    n, seq, heads = model.cfg.n_layers, corrupt.shape[1], model.cfg.n_heads
    axes = SWEEPS[kind][1]
    sizes = {"layer": n, "pos": seq, "head": heads}
    total = 1
    for axis in axes:
        total *= sizes[axis]
    step = max(1, total // cells)
    flat = list(range(0, total, step))[:cells]
    rows = []
    for i in flat:
        idx, rest = [], i
        for axis in reversed(axes):
            idx.append(rest % sizes[axis])
            rest //= sizes[axis]
        rows.append(tuple(reversed(idx)))
    index = pd.DataFrame(rows, columns=list(axes))
    act = "z" if kind.startswith("head") else kind
    _, seconds = _timed(
        lambda: tlp.generic_activation_patch(model, corrupt, cache, metric, TL_SETTERS[kind], act, index_df=index)
    )
    return seconds / len(rows) * total, total


def _misses(est: PatchResult, exact: PatchResult, k: int = 3) -> str:
    """The ``k`` cells where the estimate misses most, as ``L{layer}P{pos}H{head}: est/exact``."""
    a, b = est.values - est.baseline, exact.values - exact.baseline
    flat = (a - b).abs().flatten().topk(k).indices
    out = []
    for i in flat.tolist():
        idx = torch.unravel_index(torch.tensor(i), a.shape)
        label = "".join(f"{ax[0].upper()}{est.layers[j] if ax == 'layer' else int(j)}" for ax, j in zip(est.axes, idx))
        out.append(f"{label} {a[idx]:+.2f}/{b[idx]:+.2f}")
    return ", ".join(out)


def run_task(name: str, target, source, metric, tokens, source_tokens, args) -> dict:
    """Time and fidelity of AtP vs exact patching for one task; prints a table."""
    target = as_side(target)
    model = target.model
    estimates, t_atp = _timed(lambda: attribution_sweeps(target, source, metric, tokens, source_tokens))
    exact, t_ours = {}, {}
    for kind in SWEEPS:
        exact[kind], t_ours[kind] = _timed(
            lambda kind=kind: patch_sweep(target, source, kind, metric, tokens, source_tokens)
        )
    t_tl, nodes = {}, {}
    if source is target.model and not target.hooks:
        _, cache = model.run_with_cache(source_tokens)
        for kind in SWEEPS:
            t_tl[kind], nodes[kind] = _tl_seconds(model, kind, tokens, cache, metric, args.tl_cells)
    ours, tl = sum(t_ours.values()), sum(t_tl.values())
    n_nodes = sum(r.values.numel() for r in estimates.values())
    print(
        f"\n[{name}] {tuple(tokens.shape)} tokens, baseline {exact['resid_pre'].baseline:+.3f}, "
        f"source {exact['resid_pre'].reference:+.3f}"
    )
    print(f"  AtP* over all {len(estimates)} node kinds ({n_nodes} nodes): {t_atp:.2f} CPU s")
    line = f"  exact, {len(SWEEPS)} sweep kinds: ours {ours:.1f} s ({ours / t_atp:.0f}x AtP*)"
    if tl:
        line += f", transformer_lens {tl:.0f} s (from {args.tl_cells} timed nodes per kind; {tl / t_atp:.0f}x AtP*)"
    print(line)
    rows = []
    for kind in SWEEPS:
        fid = fidelity(estimates[kind], exact[kind])
        row = {"task": name, "kind": kind, **fid, "ours_s": t_ours[kind]}
        if kind in t_tl:
            row["tl_s"] = t_tl[kind]
        row["worst"] = _misses(estimates[kind], exact[kind])
        rows.append(row)
    qkv = {}
    if args.qkv_layers:
        plain = attribution_sweeps(
            target, source, metric, tokens, source_tokens, kinds=("head_q", "head_k"), method="atp"
        )
        layers = [layer % model.cfg.n_layers for layer in args.qkv_layers]
        for kind in ("head_q", "head_k", "head_v"):
            star = attribution_sweeps(target, source, metric, tokens, source_tokens, kinds=(kind,), layers=layers)[kind]
            full = confirm(star, target, source, metric, tokens, source_tokens, k=star.values.numel())
            cells = torch.zeros_like(star.values)
            li = {layer: i for i, layer in enumerate(star.layers)}
            for (_, row), value in zip(full.iterrows(), full["exact"]):
                cells[li[row["layer"]], row["pos"], row["head"]] = value + star.baseline
            exact_q = PatchResult(
                kind, star.axes, cells, star.baseline, star.reference, star.tokens, star.layers, star.positions
            )
            methods = {"AtP*": star} if kind == "head_v" else {"AtP": _subset(plain[kind], layers), "AtP*": star}
            for method, est in methods.items():
                fid = fidelity(est, exact_q)
                rows.append({"task": name, "kind": f"{kind} {method} (L{','.join(map(str, layers))})", **fid})
            qkv[kind] = exact_q
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_colwidth", 80, "display.float_format", "{:.3f}".format):
        print(frame.drop(columns="task").to_string(index=False))
    if args.check:
        for kind, result in estimates.items():
            top = confirm(result, target, source, metric, tokens, source_tokens, k=args.k)
            agree = float((top["estimate"].apply(lambda v: v > 0) == top["exact"].apply(lambda v: v > 0)).mean())
            ratio = (top["estimate"] - top["exact"]).abs().max() / max(top["exact"].abs().max(), 1e-9)
            print(
                f"  --check {kind:10s}: exact effect of AtP*'s top {args.k}: "
                f"{', '.join(f'{v:+.2f}' for v in top['exact'])} (sign agrees {agree:.0%}, "
                f"largest miss {ratio:.0%} of the largest effect)"
            )
    return {"atp_s": t_atp, "ours_s": ours, "tl_s": tl, "fidelity": frame}


def _subset(result: PatchResult, layers) -> PatchResult:
    keep = [result.layers.index(layer) for layer in layers]
    return PatchResult(
        result.kind,
        result.axes,
        result.values[keep],
        result.baseline,
        result.reference,
        result.tokens,
        tuple(layers),
        result.positions,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=["ioi", "sentiment", "irm"], choices=["ioi", "sentiment", "irm"])
    parser.add_argument("--tl-cells", type=int, default=12, help="nodes per kind timed for transformer_lens")
    parser.add_argument("--qkv-layers", type=int, nargs="*", default=[0, 15, 29], help="layers of the q/k/v check")
    parser.add_argument("--irm-steps", type=int, default=30)
    parser.add_argument("--check", action="store_true", help="exact patching of AtP's top-k nodes of every kind")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    model = load_model(args.model).eval()
    print(f"{model.cfg.model_name}: threads={torch.get_num_threads()}, load {os.getloadavg()[0]:.1f} (one run)")
    report = {}
    for task in args.tasks:
        if task == "ioi":
            clean, corrupt, metric = ioi_task(model)
            report[task] = run_task(task, model, model, metric, corrupt, clean, args)
        elif task == "sentiment":
            clean, corrupt, metric = sentiment_task(model)
            report[task] = run_task(task, model, model, metric, corrupt, clean, args)
        else:
            clean, _, metric = sentiment_task(model)
            injected, seconds = _timed(lambda: irm_side(model, args.irm_steps))
            print(f"\n(IRM trained for {args.irm_steps} steps in {seconds:.0f} s)")
            report[task] = run_task(task, model, injected, metric, clean, clean, args)
    return report


if __name__ == "__main__":
    main()
