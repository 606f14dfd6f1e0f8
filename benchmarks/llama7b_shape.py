"""Llama-2-7b's real shape on CPU: boot, the paper-preset IRM, one training step, checkpoint round trip.

Opt-in (about 15 GB of memory and about an hour of one CPU core, see below; not run by the tests or by
``python -m benchmarks``)::

    python -m benchmarks.llama7b_shape --run [--seq 16] [--out benchmarks/results/llama7b_shape.json]

What it builds and why (a 24 GB machine shared with others):

* **The LM**: Llama-2-7b's config (``benchmarks.gpu_check.LLAMA_2_7B``: 32 layers, d_model 4096, d_mlp 11008,
  32000 tokens), random bfloat16 weights, built on the meta device and materialised with **one random tensor
  per weight shape shared by all 32 blocks** (plus the embedding and unembedding). Every matmul, activation and
  hook runs at the 7B's real shape; only the LM's weight *memory* is one block's (0.9 GB instead of 13.5 GB).
* **The bridge** is booted by :func:`workbench.models.boot` with ``compat=False``: compatibility mode's weight
  processing (folding the RMSNorm gains) copies every weight through float32 state dicts; measured here on a
  3-block slice of the 7B's shape (``compat_boot_slice``), it peaks at ~11.6 GB for 0.87 B parameters, so a
  full Llama-2-7b in compatibility mode does not boot in 24 GB of CPU memory.
* **The IRM**: the paper preset (reads ``blocks.0.hook_resid_mid``, writes every layer's ``hook_resid_mid``,
  4 hidden layers of 3·4096) in bfloat16 (:class:`workbench.irm.IRM` ``dtype=``): 2.11 B parameters, 4.2 GB.
* **The step**: next-token loss of the injected model on one random sequence, backward through the frozen LM,
  SGD with momentum (one bfloat16 state, 4.2 GB). AdamW's two states would add 8.5 GB in bfloat16 (16.9 GB in
  float32) and do not fit beside the rest here; ``torch.optim.Adafactor`` (factored, a few MB of state) fits
  but its CPU update takes ~18 s per 151 M bfloat16 parameters (measured on one 12288² layer), ~4 min a step.
* **The checkpoint**: :func:`workbench.irm.save_irm` then :func:`workbench.irm.load_irm`; max |dW| must be 0
  and the reloaded IRM keeps bfloat16.

Peak memory is the process's peak resident set (``ru_maxrss``) after each phase.

Measured (``benchmarks/results/llama7b_shape.json``, ``--seq 8``, a shared 2-core AVX2 CPU): boot 1.0 s, forward
13 s, injected forward 17 s, one training step 55 min, peak 15.3 GB, checkpoint 3.9 GB saved in 5 s and reloaded
in 5 s with max |dW| = 0. The step is slow because bfloat16 ``grad @ W`` (the frozen LM's input gradients) runs
at 0.2 GFLOP/s on a CPU without native bfloat16 matmuls, against 21.8 in float32: on such a CPU a bfloat16 7B
trains only as a functional check; a GPU is the place for it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from benchmarks.gpu_check import LLAMA_2_7B
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, load_irm, save_irm
from workbench.models import DEFAULT_MODEL, boot, ensure_cached, frozen

PAPER_IRM = IRMConfig(read_hook="resid_mid", read_layer=0, write_hook="resid_mid", hidden_mult=3.0, n_hidden=4)
"""The paper's IRM (Smith et al., 2024): reads the residual after layer 0's attention, writes every layer's."""
NEEDS_GB = 16.0
"""Memory the run needs available before it starts (its measured peak is ~14 GB)."""
OUT = Path(__file__).parent / "results" / "llama7b_shape.json"


def peak_gb() -> float:
    """The process's peak resident set so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def say(phase: str) -> None:
    """Name the phase that starts (stderr, so the JSON on stdout stays clean)."""
    print(f"[llama7b_shape] {phase} (peak so far {peak_gb():.1f} GB)", file=sys.stderr, flush=True)


def available_gb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no MemAvailable in /proc/meminfo: run this on Linux")


def shared_block_llama(hf_kwargs: dict, *, seed: int = 0):
    """A Llama from ``hf_kwargs`` with random bfloat16 weights, one tensor per weight shape shared by all blocks.

    Built on the meta device (nothing allocated), then each parameter is pointed at its shared tensor;
    norm gains are ones, the rotary buffers are computed for real.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(**hf_kwargs)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed)
    shared: dict[str, torch.Tensor] = {}
    for name, param in list(hf.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        key = name.split(".", 3)[-1] if name.startswith("model.layers.") else name  # "self_attn.q_proj.weight"
        if key not in shared:
            tensor = torch.empty(param.shape, dtype=param.dtype)
            if "norm" in key:
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, config.initializer_range, generator=gen)
            shared[key] = tensor
        setattr(hf.get_submodule(owner), leaf, torch.nn.Parameter(shared[key], requires_grad=False))
    with torch.device("cpu"):
        hf.model.rotary_emb = LlamaRotaryEmbedding(config)
    hf.config.architectures = [type(hf).__name__]
    return hf.eval()


def compat_boot_slice(tok, n_layers: int = 3) -> dict:
    """Peak memory and time of compatibility mode's boot on ``n_layers`` blocks of the 7B's shape (run first)."""
    hf = shared_block_llama({**LLAMA_2_7B, "num_hidden_layers": n_layers})
    n_params = sum(p.numel() for p in hf.parameters())
    start = time.perf_counter()
    model = boot(hf, tok, type(hf).__name__, prepend_bos=False, compat=True)
    seconds = time.perf_counter() - start
    shared_after = model.blocks[0].mlp.W_in.data_ptr() == model.blocks[1].mlp.W_in.data_ptr()
    del model, hf
    return {
        "n_layers": n_layers,
        "lm_parameters": n_params,
        "boot_s": round(seconds, 1),
        "peak_rss_gb": round(peak_gb(), 2),
        "weights_still_shared_after_boot": shared_after,
    }


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, block: int = 2**24) -> float:
    """``max |a - b|`` in float32, ``block`` entries at a time.

    The paper IRM's last weight has 1.6 B entries: comparing it whole in float32 takes four 6.4 GB temporaries
    (this benchmark's first 32-layer run was killed for it at 23 GB, after its training step).

    >>> max_abs_diff(torch.zeros(3000, 2), torch.ones(3000, 2), block=1000)
    1.0
    >>> max_abs_diff(torch.tensor(1.0), torch.tensor(3.0))
    2.0
    """
    a, b = a.flatten(), b.flatten()
    return max(
        float((a[i : i + block].float() - b[i : i + block].float()).abs().max()) for i in range(0, len(a), block)
    )


def bf16_gemm_speed(n: int = 4096, tokens: int = 16) -> dict:
    """GFLOP/s of the three matmuls of a linear layer's training step, in bfloat16 and float32, on this CPU.

    The input gradient ``grad @ W`` is where a frozen bfloat16 LM's backward spends its time on a CPU without
    native bfloat16 matmuls: PyTorch falls back to a slow generic kernel there.
    """
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    x = torch.randn(tokens, n)
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        wd, xd = w.to(dtype), x.to(dtype)
        for name, a, b in (("forward x@W.T", xd, wd.T), ("input grad g@W", xd, wd), ("weight grad g.T@x", xd.T, xd)):
            torch.mm(a, b)
            start = time.perf_counter()
            torch.mm(a, b)
            seconds = time.perf_counter() - start
            out[f"{str(dtype).removeprefix('torch.')} {name}"] = round(2 * tokens * n * n / seconds / 1e9, 2)
    return out


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def _loss(model, irm: IRM | None, tokens: torch.Tensor) -> torch.Tensor:
    with attach(model, irm.hooks(model) if irm is not None else []):
        logits = model(tokens)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def _compat_slice_in_subprocess() -> dict:
    """:func:`compat_boot_slice` in its own process, so its peak does not count in this one's."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.llama7b_shape", "--compat-slice"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    seq: int, *, n_layers: int = 32, with_compat_slice: bool = True, momentum: float = 0.9, forwards: bool = True
) -> dict:
    """Build, boot, step and round-trip; returns the JSON record."""
    shape = {**LLAMA_2_7B, "num_hidden_layers": n_layers}
    out: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__},
        "available_gb_at_start": round(available_gb(), 1),
    }
    if with_compat_slice:
        say("compatibility-mode boot of a 3-block slice, in a subprocess")
        out["compat_boot_slice"] = _compat_slice_in_subprocess()
    say(f"building the {n_layers}-block LM (random bfloat16 weights)")
    tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
    start = time.perf_counter()
    hf = shared_block_llama(shape)
    out["lm"] = {
        "config": {k: shape[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")},
        "dtype": "bfloat16",
        "parameters_as_run": sum(p.numel() for p in hf.parameters()),
        "distinct_weight_bytes_gb": round(
            sum(t.numel() * t.element_size() for t in {p.data_ptr(): p for p in hf.parameters()}.values()) / 2**30, 2
        ),
        "build_s": round(time.perf_counter() - start, 1),
    }
    say("booting the bridge")
    start = time.perf_counter()
    model = boot(hf, tok, type(hf).__name__, prepend_bos=False, compat=False)
    out["lm"]["boot_s"] = round(time.perf_counter() - start, 2)
    out["lm"]["peak_rss_gb_after_boot"] = round(peak_gb(), 2)
    tokens = torch.randint(0, LLAMA_2_7B["vocab_size"], (1, seq), generator=torch.Generator().manual_seed(0))
    if forwards:
        with torch.no_grad():
            start = time.perf_counter()
            _loss(model, None, tokens)
            out["lm"]["forward_s"] = round(time.perf_counter() - start, 1)

    say("building the paper-preset IRM")
    start = time.perf_counter()
    irm = IRM.for_model(model, PAPER_IRM, seed=0, dtype=torch.bfloat16)
    out["irm"] = {
        "config": PAPER_IRM.to_dict(),
        "dtype": "bfloat16",
        "hidden_width": PAPER_IRM.hidden_width(model.cfg.d_model),
        "write_layers": len(irm.layers),
        "parameters": sum(p.numel() for p in irm.parameters()),
        "build_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb_after_build": round(peak_gb(), 2),
    }
    optimizer = torch.optim.SGD(irm.parameters(), lr=1e-3, momentum=momentum)
    with frozen(model):
        if forwards:  # the injected forward alone: the hooks' cost over the plain forward
            with torch.no_grad():
                start = time.perf_counter()
                _loss(model, irm, tokens)
                out["irm"]["injected_forward_s"] = round(time.perf_counter() - start, 1)
        say("one training step (forward, backward through the frozen LM, SGD)")
        start = time.perf_counter()
        loss = _loss(model, irm, tokens)
        loss.backward()
        grad_norm = float(torch.stack([p.grad.float().norm() for p in irm.parameters()]).norm())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s = time.perf_counter() - start
    last = irm.net[-1].weight
    out["step"] = {
        "batch": 1,
        "seq": seq,
        "optimizer": f"torch.optim.SGD (lr 1e-3, momentum {momentum:g})",
        "optimizer_state_gb": round(_state_bytes(optimizer) / 2**30, 3),
        "loss": round(float(loss), 4),
        "grad_norm": round(grad_norm, 4),
        "last_layer_moved": bool(last.abs().max() > 0),
        "step_s": round(step_s, 1),
        "peak_rss_gb_after_step": round(peak_gb(), 2),
    }
    del optimizer, loss
    say("checkpoint round trip")
    with tempfile.TemporaryDirectory(prefix="llama7b_irm_") as tmp:
        start = time.perf_counter()
        path = save_irm(Path(tmp) / "irm", irm, model=model, step=1)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        again = load_irm(path, model)
        load_s = time.perf_counter() - start
        size_gb = (path / "irm.safetensors").stat().st_size / 2**30
    mine, theirs = irm.state_dict(), again.state_dict()
    max_dw = max(max_abs_diff(mine[k], theirs[k]) for k in mine)
    out["checkpoint"] = {
        "file_gb": round(size_gb, 2),
        "save_s": round(save_s, 1),
        "load_s": round(load_s, 1),
        "max_abs_dW": max_dw,
        "reloaded_dtype": str(next(again.parameters()).dtype).removeprefix("torch."),
        "peak_rss_gb_after_reload": round(peak_gb(), 2),
    }
    out["peak_rss_gb"] = round(peak_gb(), 2)
    say("bfloat16 vs float32 matmul speed on this CPU")
    out["gemm_gflops_4096x4096_16_tokens"] = bf16_gemm_speed()
    out["not_measured"] = [
        "an LM with 32 distinct blocks (13.5 GB of bfloat16 weights; here the blocks share one block's tensors)",
        "compatibility mode on the full 7B (its boot is measured on a 3-block slice only: compat_boot_slice)",
        "AdamW (8.5 GB of bfloat16 states, 16.9 GB in float32) and a float32 IRM (8.5 GB of weights + 8.5 of grads)",
        "more than one step (a second step's time equals the first's up to the optimizer's state allocation)",
        "sequences longer than `seq`, batches above 1, data-parallel processes, GPUs",
    ]
    return out


def main(argv: list[str] | None = None) -> dict | None:
    """Run when ``--run`` is given and enough memory is available; write and print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run it (opt-in: ~15 GB of memory, about an hour of CPU)")
    parser.add_argument("--seq", type=int, default=16, help="tokens of the training sequence")
    parser.add_argument("--no-compat-slice", action="store_true", help="skip the compatibility-mode boot slice")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0: no optimizer state, -4.2 GB)")
    parser.add_argument("--no-forwards", action="store_true", help="skip the timed forwards without gradients")
    parser.add_argument("--layers", type=int, default=32, help="blocks of the LM (fewer: a smoke test)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes")
    parser.add_argument("--compat-slice", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args([] if argv is None and not sys.argv[0].endswith("llama7b_shape.py") else argv)
    if args.compat_slice:  # the child process of _compat_slice_in_subprocess
        print(json.dumps(compat_boot_slice(AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL)))))
        return None
    if not args.run:
        print("benchmarks.llama7b_shape is opt-in: python -m benchmarks.llama7b_shape --run")
        return None
    needs = NEEDS_GB - (4.5 if args.momentum == 0 else 0)
    if (free := available_gb()) < needs:
        raise SystemExit(f"only {free:.1f} GB available, the run needs {needs:.0f}: wait for a quieter moment")
    result = run(
        args.seq,
        n_layers=args.layers,
        with_compat_slice=not args.no_compat_slice,
        momentum=args.momentum,
        forwards=not args.no_forwards,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
