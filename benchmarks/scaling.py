"""How a patching sweep, an IRM step and a DAS step grow with sequence length, batch and depth (CPU).

Tiny random Llamas (width 128, 4 heads, vocabulary 1024 so the unembedding does not hide the
layers) of 2-16 layers. Each axis is varied with the others fixed (``--at``: seq 32, batch 4, depth 4):

* **patching sweep**: a full layer × position ``resid_pre`` sweep
  (:func:`~workbench.analysis.patching.patch_sweep`) of a corrupted prompt differing from the
  first token on (no patch can be skipped);
* **IRM step**: forward with the paper-shaped IRM (3·d_model, 4 hidden layers, all layers),
  next-token loss, backward, AdamW (as :mod:`benchmarks.gpu_check`);
* **DAS step**: a rank-4 rotated-space interchange at the middle layer's last position, loss on the
  last logits, backward, Adam.

Times are CPU seconds of one thread (``time.process_time``), which other processes on a shared
machine do not inflate as they do wall time: steps the least of 3 after a warm-up, sweeps one run
(after the steps warmed the model up). Writes ``benchmarks/results/scaling.csv`` and
``scaling.md`` (the table and the fitted log-log exponents) and a figure (``--fig``, not committed).
``python -m benchmarks.scaling [--seq 8 16 ...] [--batch 1 2 ...] [--depth 2 4 ...]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse under load
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from transformers import AutoTokenizer, LlamaConfig

from benchmarks.gpu_check import paper_irm
from workbench.analysis.patching import patch_sweep
from workbench.interventions import InterventionSet, RotatedSpaceIntervention, run_interventions, source_activations
from workbench.interventions.spec import spec_at
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, ensure_cached, from_config, frozen
from workbench.plotting import save_figure

RESULTS = Path(__file__).parent / "results"
VOCAB = 1024
OPS = ("patching sweep", "IRM step", "DAS step")


def tiny_llama(n_layers: int, tok):
    """A random Llama of width 128 and ``n_layers`` layers (vocabulary 1024)."""
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return from_config(cfg, tok, seed=0, prepend_bos=False)


def cpu_seconds(fn, repeats: int) -> float:
    """Least CPU time (``time.process_time``, one thread) of ``repeats`` calls: unlike wall time, it does
    not count the time other processes of a shared machine take."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def patch_seconds(model, tokens: torch.Tensor) -> float:
    """Seconds of a full layer × position ``resid_pre`` sweep of ``tokens`` against shuffled tokens."""
    corrupt = (tokens + 1) % VOCAB  # differs at every position: nothing to skip
    metric = LogitDiff(torch.tensor([[1, 2]]).expand(tokens.shape[0], 2))
    return cpu_seconds(lambda: patch_sweep(model, model, "resid_pre", metric, corrupt, tokens), 1)


def das_seconds(model, tokens: torch.Tensor) -> float:
    """Seconds of one DAS training step (rank-4 rotation at the middle layer's last position)."""
    spec = spec_at(model, "resid_post", model.cfg.n_layers // 2, tokens.shape[1] - 1)
    interventions = InterventionSet([(spec, RotatedSpaceIntervention(model.cfg.d_model, 4, seed=0))])
    opt = torch.optim.Adam(interventions.parameters(), lr=1e-3)
    labels = tokens[:, 0]
    with frozen(model):
        acts = source_activations(model, interventions, tokens.flip(0))

        def step():
            logits = run_interventions(model, interventions, tokens, source_acts=acts).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up
        return cpu_seconds(step, 3)


def measure(depth: int, batch: int, seq: int, tok) -> dict[str, float]:
    """Seconds of each operation for one (depth, batch, seq)."""
    model = tiny_llama(depth, tok)
    tokens = torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq + batch))
    _, irm_step = paper_irm(model, tokens)
    with frozen(model):
        irm_step()  # warm-up
        irm = cpu_seconds(irm_step, 3)
    das = das_seconds(model, tokens)
    with torch.no_grad():  # after the steps warmed the model up
        patch = patch_seconds(model, tokens)
    return {"patching sweep": patch, "IRM step": irm, "DAS step": das}


def run(seqs, batches, depths, fixed: dict[str, int]) -> pd.DataFrame:
    """Long table ``op, axis, x, depth, batch, seq, seconds``; each axis varies with the others at ``fixed``."""
    tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
    rows = []
    for axis, values in (("seq", seqs), ("batch", batches), ("depth", depths)):
        for x in values:
            point = {**fixed, axis: x}
            for op, seconds in measure(point["depth"], point["batch"], point["seq"], tok).items():
                rows.append({"op": op, "axis": axis, "x": x, **point, "seconds": seconds})
                where = f"depth={point['depth']} batch={point['batch']} seq={point['seq']}"
                print(f"{op:15s} {axis}={x:<4d} {where}: {seconds:.4f} s")
    return pd.DataFrame(rows)


def exponents(df: pd.DataFrame, last: int = 0) -> pd.DataFrame:
    """Slope of log(seconds) against log(x) per operation and axis (least squares), over all sizes or the
    ``last`` largest (where fixed costs per call matter least)."""
    rows = []
    for (op, axis), g in df.groupby(["op", "axis"], sort=False):
        g = g.sort_values("x").iloc[-last:]
        rows.append({"op": op, "axis": axis, "exponent": float(np.polyfit(np.log(g["x"]), np.log(g["seconds"]), 1)[0])})
    return pd.DataFrame(rows).pivot(index="op", columns="axis", values="exponent").loc[list(OPS)]


def figure(df: pd.DataFrame, fits: pd.DataFrame) -> go.Figure:
    """Log-log seconds against each axis, one line per operation, fitted exponents in the legend."""
    axes = list(dict.fromkeys(df["axis"]))
    fig = make_subplots(rows=1, cols=len(axes), subplot_titles=axes)
    for col, axis in enumerate(axes, 1):
        for op in OPS:
            g = df[(df["axis"] == axis) & (df["op"] == op)]
            name = f"{op} (∝ {axis}^{fits.loc[op, axis]:.2f})"
            fig.add_trace(go.Scatter(x=g["x"], y=g["seconds"], mode="lines+markers", name=name), row=1, col=col)
        fig.update_xaxes(type="log", title_text=axis, row=1, col=col)
        fig.update_yaxes(type="log", title_text="seconds" if col == 1 else None, row=1, col=col)
    fig.update_layout(title="Scaling on CPU (tiny Llamas, width 128)", height=420, width=1200)
    return fig


def markdown(df: pd.DataFrame, fits: pd.DataFrame) -> str:
    """The table of seconds and the fitted exponents, as markdown."""
    lines = ["# Scaling on CPU (benchmarks/scaling.py)", ""]
    for axis in dict.fromkeys(df["axis"]):
        g = df[df["axis"] == axis]
        fixed = ", ".join(f"{k}={g[k].iloc[0]}" for k in ("depth", "batch", "seq") if k != axis)
        table = g.pivot(index="x", columns="op", values="seconds")[list(OPS)]
        lines += [f"## seconds vs {axis} ({fixed})", "", f"| {axis} | " + " | ".join(OPS) + " |", "|---" * 4 + "|"]
        lines += [f"| {x} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for x, row in table.iterrows()]
        lines.append("")
    for title, table in (("all sizes", fits), ("the two largest sizes of each axis", exponents(df, last=2))):
        lines += [f"## fitted exponents (seconds ∝ x^k, log-log least squares), {title}", ""]
        lines += ["| op | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
        lines += [f"| {op} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for op, row in table.iterrows()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--depth", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--at", type=int, nargs=3, default=[32, 4, 4], metavar=("SEQ", "BATCH", "DEPTH"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for scaling.csv and scaling.md")
    parser.add_argument("--fig", type=Path, default=Path("figures/scaling/scaling"), help="figure path (no suffix)")
    parser.add_argument("--png", action="store_true", help="also write a PNG")
    parser.add_argument("--from-csv", action="store_true", help="redo the table and figure from OUT/scaling.csv")
    args = parser.parse_args(argv)
    if args.from_csv:
        df = pd.read_csv(args.out / "scaling.csv")
    else:
        torch.manual_seed(0)
        torch.set_num_threads(1)  # on a shared machine, one thread per process times most steadily
        df = run(args.seq, args.batch, args.depth, dict(zip(("seq", "batch", "depth"), args.at)))
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "scaling.csv", index=False, float_format="%.5f")
    fits = exponents(df)
    (args.out / "scaling.md").write_text(markdown(df, fits))
    save_figure(figure(df, fits), args.fig, png=args.png)
    print(fits.round(2).to_string())
    return df


if __name__ == "__main__":
    main()
