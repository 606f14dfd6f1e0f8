"""One prepared GPU check, printing one JSON: ``python -m benchmarks.gpu_check [--dry-run] [--out FILE]``.

1. **CUDA vs CPU equality** on tiny random Llama and GPT-2 bridges built from the same weights
   (float32, TF32 off): logits, greedy generation, patching sweeps, direct logit attribution, the
   logit lens, and the IRM weights after a few AdamW steps.
2. **A Llama-2-7b-shaped model** with random weights, built from Llama-2-7b's config (no
   download) in bfloat16: bridge boot time, forward tokens/s; the IRM at the paper's width
   (3·d_model, 4 hidden layers, writes into all 32 layers): parameters, training step time,
   tokens/s, peak memory; a ``resid_pre`` patching sweep's speedup over ``transformer_lens.patching``.
3. **Models across GPUs** (with 2+ GPUs): a tiny model split over two GPUs gives the one-GPU
   logits, and ``train_irm`` on it (reads on the first GPU, each write on its layer's GPU) the
   one-GPU IRM.

Finishes in a few minutes on one H100/H200. ``--dry-run`` runs everything on the CPU instead:
the equality checks compare the CPU with itself, and part 2 uses a small Llama-shaped config, so
every code path but CUDA's is checked (the tests run it). Whenever a session has a GPU, run it
and commit the JSON as ``benchmarks/results/gpu_check_<date>_<gpu>.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # keep stdout to the one JSON

import argparse
import contextlib
import copy
import datetime
import json
import math
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import torch
import transformer_lens.patching as tlp
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from workbench.analysis.attribution import layer_attribution
from workbench.analysis.logit_lens import logit_lens
from workbench.analysis.patching import patch_sweep
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, boot, ensure_cached, frozen

LLAMA_2_7B = {
    # meta-llama/Llama-2-7b-hf config.json
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
DRY_RUN_LLAMA = {**LLAMA_2_7B, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4}
"""Same shape family as Llama-2-7b (32 heads, 32000 tokens, SwiGLU ratio), 4 layers of width 128."""
TOLERANCE = 1e-4
"""Largest CUDA-vs-CPU difference accepted in float32 (logits, patching, DLA, lens, IRM weights)."""


def _tokenizer():
    return AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable, device: str, repeats: int = 3) -> tuple[object, float]:
    """Result and median seconds of ``repeats`` calls after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def _pair(hf_config, tok, device: str):
    """The same random-weight model as a CPU bridge and a ``device`` bridge."""
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    hf.config.architectures = [type(hf).__name__]
    other = copy.deepcopy(hf).to(device)
    name = type(hf).__name__
    return boot(hf, tok, name, prepend_bos=False), boot(other, tok, name, device=device, prepend_bos=False)


def _irm_steps(model, tokens, steps: int = 3) -> IRM:
    """An IRM (seed 0) after ``steps`` AdamW steps of next-token loss on ``tokens``."""
    irm = IRM.for_model(model, IRMConfig(hidden_mult=1.0, n_hidden=2), seed=0)
    opt = torch.optim.AdamW(irm.parameters(), lr=1e-2)
    tokens = tokens.to(model.cfg.device)
    with frozen(model):
        for _ in range(steps):
            with attach(model, irm.hooks(model)):
                logits = model(tokens)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten().to(logits.device)
            )
            loss.backward()
            opt.step()
            opt.zero_grad()
    return irm


def _diff(a, b) -> float:
    return float((torch.as_tensor(a).float().cpu() - torch.as_tensor(b).float().cpu()).abs().max())


def equality_checks(device: str, tok) -> dict:
    """Max |device - CPU| of each analysis on tiny Llama and GPT-2 bridges with the same weights."""
    llama = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    gpt2 = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128)
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randint(0, len(tok), (2, 3, 7), generator=gen)
    answers = torch.randint(0, len(tok), (3, 2), generator=gen)
    out = {}
    for name, hf_config in (("llama", llama), ("gpt2", gpt2)):
        cpu, dev = _pair(hf_config, tok, device)
        diffs = {}
        with torch.no_grad():
            diffs["logits"] = _diff(cpu(clean), dev(clean.to(device)))
            greedy = [
                m.generate(clean[:1].to(m.cfg.device), max_new_tokens=8, do_sample=False, verbose=False).cpu()
                for m in (cpu, dev)
            ]
            diffs["greedy_tokens_differ"] = int((greedy[0] != greedy[1]).sum())
        metric = LogitDiff(answers)
        for kind in ("resid_pre", "head"):
            sweeps = [
                patch_sweep(m, m, kind, metric, corrupt.to(m.cfg.device), clean.to(m.cfg.device)) for m in (cpu, dev)
            ]
            diffs[f"patch_{kind}"] = _diff(sweeps[0].values, sweeps[1].values)
        dla = [layer_attribution(m, clean.to(m.cfg.device), answers).per_prompt for m in (cpu, dev)]
        diffs["dla"] = _diff(*dla)
        lens = [logit_lens(m, clean.to(m.cfg.device), answers).per_prompt for m in (cpu, dev)]
        diffs["logit_lens"] = _diff(*lens)
        irms = [_irm_steps(m, clean) for m in (cpu, dev)]
        diffs["irm_weights_after_3_steps"] = max(
            _diff(a, b) for a, b in zip(irms[0].state_dict().values(), irms[1].state_dict().values())
        )
        diffs["ok"] = diffs["greedy_tokens_differ"] == 0 and all(
            v <= TOLERANCE for k, v in diffs.items() if k != "greedy_tokens_differ"
        )
        out[name] = diffs
    return out


def _peak_memory_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def big_model(hf_kwargs: dict, device: str, tok, *, batch: int, seq: int, patch_seq: int) -> dict:
    """Boot, forward, IRM-step and patching numbers of a random-weight Llama in bfloat16."""
    hf_config = LlamaConfig(**hf_kwargs)
    out = {"config": {k: hf_kwargs[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}}
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16, attn_implementation="eager").eval()
    hf.config.architectures = [type(hf).__name__]
    _sync(device)
    out["build_s"] = time.perf_counter() - start
    out["lm_parameters"] = sum(p.numel() for p in hf.parameters())
    start = time.perf_counter()
    model = boot(hf, tok, type(hf).__name__, device=device, prepend_bos=False)
    _sync(device)
    out["boot_s"] = time.perf_counter() - start
    vocab = hf_kwargs["vocab_size"]
    tokens = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        _, seconds = timed(lambda: model(tokens), device)
    out["forward"] = {"batch": batch, "seq": seq, "s": seconds, "tokens_per_s": batch * seq / seconds}

    out["irm"] = irm_step(model, tokens, device)  # the IRM and its optimizer are freed on return
    out["patching"] = patching_speedup(model, device, vocab, patch_seq)
    return out


def paper_irm(model, tokens) -> tuple[IRM, Callable[[], float]]:
    """The paper's IRM for ``model`` (3·d_model, 4 hidden layers, all layers) and a function that runs one
    training step on ``tokens`` (forward with the IRM, next-token loss, backward, AdamW) and returns the loss.
    Call it with the model frozen."""
    irm = IRM.for_model(model, IRMConfig(hidden_mult=3.0, n_hidden=4), seed=0)
    opt = torch.optim.AdamW(irm.parameters(), lr=1e-4)

    def step() -> float:
        with attach(model, irm.hooks(model)):
            logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return irm, step


def irm_step(model, tokens, device: str) -> dict:
    """Median step time of 3 steps after a warm-up, tokens/s and peak memory of training :func:`paper_irm`."""
    irm, step = paper_irm(model, tokens)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with frozen(model):
        loss, seconds = timed(step, device)
    return {
        "hidden_width": irm.cfg.hidden_width(model.cfg.d_model),
        "write_layers": len(irm.layers),
        "parameters": sum(p.numel() for p in irm.parameters()),
        "step_s": seconds,
        "tokens_per_s": tokens.numel() / seconds,
        "peak_memory_gb": _peak_memory_gb(device),
        "finite_loss": bool(torch.isfinite(torch.tensor(loss))),
    }


def patching_speedup(model, device: str, vocab: int, seq: int) -> dict:
    """A full layer × position ``resid_pre`` sweep: ours vs ``transformer_lens.patching`` (one run each)."""
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, vocab, (1, seq), generator=gen).to(device)
    corrupt = clean.clone()
    corrupt[0, seq // 2 :] = torch.randint(0, vocab, (seq - seq // 2,), generator=gen).to(device)
    metric = LogitDiff(torch.randint(0, vocab, (1, 2), generator=gen))
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        _sync(device)
        start = time.perf_counter()
        ours = patch_sweep(model, model, "resid_pre", metric, corrupt, clean).values
        _sync(device)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = tlp.get_act_patch_resid_pre(model, corrupt, cache, metric)
        _sync(device)
        t_tl = time.perf_counter() - start
    return {
        "seq": seq,
        "patches": int(ours.numel()),
        "ours_s": t_ours,
        "transformer_lens_s": t_tl,
        "speedup": t_tl / t_ours,
        "max_abs_diff_bf16": _diff(ours, theirs),
    }


def split_check(tok) -> dict:
    """A tiny Llama dispatched over two GPUs gives the one-GPU logits, and ``train_irm`` on it the one-GPU IRM."""
    if torch.cuda.device_count() < 2:
        return {"skipped": f"needs 2 GPUs, found {torch.cuda.device_count()}"}
    from accelerate import dispatch_model

    hf_config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4
    )
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    hf.config.architectures = [type(hf).__name__]
    one = copy.deepcopy(hf).to("cuda:0")
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1}
    device_map |= {f"model.layers.{i}": 0 if i < 2 else 1 for i in range(4)}
    split = boot(dispatch_model(hf, device_map), tok, "LlamaForCausalLM")
    single = boot(one, tok, "LlamaForCausalLM", device="cuda:0")
    tokens = torch.randint(0, len(tok), (2, 9), generator=torch.Generator().manual_seed(0)).to("cuda:0")
    out = {"devices": sorted({str(p.device) for p in split.parameters()})}
    with torch.no_grad():
        out["logits"] = _diff(split(tokens), single(tokens))
    # the real training path (train_irm, the loop, the reply loss) on the split model vs one GPU
    cfg = TrainConfig(steps=3, batch_size=2, lr=1e-3, warmup=1, max_len=16, eval_every=0, amp=False)
    texts = [f"tweet {i}: the weather is {w}" for i, w in enumerate(["fine", "awful", "grey", "warm"])]
    weights = []
    try:
        for m in (split, single):
            irm = IRM.for_model(m, IRMConfig(hidden_mult=1.0, n_hidden=1), seed=0)
            train_irm(m, irm, texts, cfg, progress=False)
            weights.append(irm.state_dict())
        out["train_irm_weights_after_3_steps"] = max(_diff(a, b) for a, b in zip(*(w.values() for w in weights)))
    except Exception as err:  # report it beside the logits check
        out["train_irm_error"] = f"{type(err).__name__}: {err}"
    out["ok"] = out["logits"] <= TOLERANCE and out.get("train_irm_weights_after_3_steps", math.inf) <= TOLERANCE
    return out


def _run(name: str, fn: Callable[[], dict]) -> dict:
    """Run one part; a failure is recorded (with its error) instead of ending the check."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # the JSON reports every part, failed or not
        result = {"error": f"{type(err).__name__}: {err}", "ok": False}
    result["seconds"] = time.perf_counter() - start
    print(f"[gpu_check] {name}: {result['seconds']:.1f} s", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="everything on the CPU, small Llama-shaped model")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    if not args.dry_run and dry:
        print("[gpu_check] no CUDA device: running --dry-run", file=sys.stderr)
    device = "cpu" if dry else "cuda"
    if not dry:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    tok = _tokenizer()
    start = time.perf_counter()
    report = {
        "date": datetime.date.today().isoformat(),
        "dry_run": dry,
        "device": torch.cuda.get_device_name(0) if not dry else "cpu",
        "versions": {p: version(p) for p in ("torch", "transformer-lens", "transformers", "accelerate")},
    }
    with contextlib.redirect_stdout(sys.stderr):  # libraries' prints must not break the JSON
        report["equality"] = _run("equality", lambda: equality_checks(device, tok))
        shape = DRY_RUN_LLAMA if dry else LLAMA_2_7B
        sizes = {"batch": 2, "seq": 32, "patch_seq": 8} if dry else {"batch": 4, "seq": 256, "patch_seq": 16}
        report["llama_2_7b_shaped"] = _run("llama_2_7b_shaped", lambda: big_model(shape, device, tok, **sizes))
        report["split_across_gpus"] = _run("split_across_gpus", lambda: split_check(tok))
    report["ok"] = (
        all(v.get("ok", True) for k, v in report["equality"].items() if isinstance(v, dict))
        and "error" not in report["equality"]
        and "error" not in report["llama_2_7b_shaped"]
        and report["split_across_gpus"].get("ok", True)
    )
    report["seconds"] = time.perf_counter() - start
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
