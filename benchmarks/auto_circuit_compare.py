"""Our edge attribution (EAP, EAP-IG) against the ``auto-circuit`` package's (PyPI auto-circuit 1.0.1).

auto-circuit does not import beside our stack (it imports ``transformer_lens.past_key_value_caching``, which
TransformerLens 4 removed), so its half runs in a separate venv with TransformerLens 2 and transformers 4, reusing
our torch through a ``.pth`` file (the venv's own site-packages come first on ``sys.path``, so its older packages
shadow ours). Set-up (git-ignored, outside the repository)::

    /root/.pyenv/versions/3.11.7/bin/python -m venv /work/acvenv2
    /work/acvenv2/bin/pip install --no-deps transformer-lens==2.18.0 transformers==4.57.6 huggingface_hub==0.36.2 \
        tokenizers==0.22.2 datasets==4.4.1 better-abc blobfile lxml pycryptodomex ordered-set vscode-tqdm \
        auto_circuit-1.0.1-py3-none-any.whl
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /work/acvenv2/lib/python3.11/site-packages/zz_main_venv.pth

(``--no-deps``: auto-circuit's tracr, word2word and kaleido serve only its bundled toy tasks, which this script
does not import; everything else comes from our venv through the ``.pth`` file.)

Three steps, each its own sub-command; ``all`` runs them in order (the middle one in the other venv):

1. ``ours`` (our venv): 8 IOI prompts from :func:`~workbench.circuits.tasks.ioi_task` on SmolLM2-135M-Instruct,
   tokenized by our code; our EAP and EAP-IG (5 steps) scores of all 123,211 edges; the bridge's logits.
2. ``ac`` (the auto-circuit venv): the same HF weights loaded into TransformerLens 2's ``HookedTransformer``
   (TL 2 has no SmolLM2 entry: a ``HookedTransformerConfig`` built from the HF config, weights by TL 2's llama
   conversion, no weight processing, keys/values ungrouped per query head), its logits checked against
   transformers 4's and our bridge's; then auto-circuit's scores on the same token ids: its EAP prune algorithm
   (``mask_gradient_prune_scores`` with ``grad_function="logit"``, ``answer_function="avg_diff"``,
   ``mask_val=0``, the algorithm its ``LOGIT_DIFF_GRAD_PRUNE_ALGO`` registers as "EAP"), its slow hook-based
   ``edge_attribution_patching_prune_scores`` (a cross-check within auto-circuit), and with ``--ig-samples N``
   its integrated edge gradients (a different integration path than EAP-IG, see below; ~100 s per sample here,
   so off by default). Scores keyed by
   auto-circuit's edge names go to ``<work>/ac_scores.json``.
3. ``compare`` (our venv): maps edge names (auto-circuit ``A{L}.{H}->A{L'}.{H'}.Q`` / ``MLP {L}`` / ``Resid
   Start`` / ``Resid End`` to our ``a{L}.h{H}`` / ``a{L'}.h{H'}<q>`` / ``m{L}`` / ``input`` / ``logits``) and writes
   ``benchmarks/results/auto_circuit_compare.json``: matched edges, Pearson, Spearman, max |difference|, the
   least-squares scale, top-20 overlap.

Conventions found in auto-circuit's source: its loss is minus the batch-mean logit difference and an edge's mask
interpolates from the clean (0) to the counterfactual (1) activation, so the gradient at mask 0 is the estimated
change of the loss when the edge is patched, i.e. the estimated *drop* of the logit difference: the same sign and
scale as ours (no flip needed). Its integrated variant moves every edge mask together from 0 to 1 in
``integrated_grad_samples + 1`` points (both ends included) and *sums* the gradients; we divide by the number of
points. That integrates along edge masks, not along the input embedding as EAP-IG (Hanna et al., 2024) does, so it
is reported beside our EAP-IG, not as a replication of it.

Measured (one run, shared 2-core CPU; ``benchmarks/results/auto_circuit_compare.json``): all 123,211 edges match
by name; auto-circuit's EAP against ours: Pearson 1.000000, Spearman 1.000000, least-squares scale 1.0000, max
|difference| 1.8e-6 (largest |score| 2.28), top-20 (and top-100) by |score| identical; TL 2's logits equal
transformers 4's to 2.6e-5 and our bridge's (up to the bridge's centred unembedding) to 2.7e-5. The slow hook-based
cross-check and the integrated edge gradients did not finish: a memory watchdog (room for a concurrent 14 GB run)
stopped the process.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.auto_circuit_compare all \
        --ac-python /work/acvenv2/bin/python

``python -m benchmarks`` imports this module and calls :func:`main` without arguments: it then does nothing (the
comparison needs the second venv), and it imports nothing beyond the standard library at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "auto_circuit_compare.json"
WORK = Path("/tmp/auto_circuit_compare")
IG_STEPS = 5
"""Our EAP-IG's steps (MIB's 5)."""


# ---------------------------------------------------------------- step 1: ours (our venv)


def run_ours(work: Path, prompts: int) -> None:
    import torch

    from workbench.circuits.attribute import attribute
    from workbench.circuits.graph import edge_model
    from workbench.circuits.tasks import ioi_task
    from workbench.models import DEFAULT_MODEL, ensure_cached, load_model

    torch.manual_seed(0)
    model = load_model(DEFAULT_MODEL)
    task = ioi_task(model, prompts)
    em = edge_model(model)
    with torch.no_grad():
        logits = model(task.clean)[:, -1].float()
    times, frames = {}, {}
    for method in ("eap", "eap-ig"):
        start = time.perf_counter()
        scores = attribute(em, task, method, steps=IG_STEPS, batch_size=prompts)
        times[method] = time.perf_counter() - start
        df = scores.to_frame()
        frames[method] = dict(zip(df.upstream + "->" + df.downstream, df.score.tolist(), strict=True))
    work.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": DEFAULT_MODEL,
            "hf_dir": str(ensure_cached(DEFAULT_MODEL)),
            "clean": task.clean,
            "corrupt": task.corrupt,
            "answers": task.answers,
            "pos": task.pos,
            "logits_last": logits,
        },
        work / "prompts.pt",
    )
    (work / "ours_scores.json").write_text(json.dumps({"seconds": times, "scores": frames}))
    print(f"ours: {len(task)} prompts x {task.clean.shape[1]} tokens, {em.graph.n_edges} edges; {times}")


# ---------------------------------------------------------------- step 2: auto-circuit (its venv)


def _hooked_transformer(hf_dir: str):
    """SmolLM2 (a Llama) as a TL 2 HookedTransformer, keys/values ungrouped, plus the transformers-4 model."""
    import torch
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    raw = json.loads((Path(hf_dir) / "config.json").read_text())
    # the folder was written by transformers 5 (``rope_parameters``); transformers 4 reads ``rope_theta``
    theta = raw.get("rope_theta") or raw["rope_parameters"]["rope_theta"]
    if (raw.get("rope_parameters") or {}).get("rope_type", "default") != "default" or raw.get("rope_scaling"):
        raise NotImplementedError("only default RoPE is converted here")
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, rope_theta=theta)
    hf.eval()
    c = hf.config
    if c.rope_theta != theta:
        raise RuntimeError(f"transformers {transformers.__version__} read rope_theta {c.rope_theta}, not {theta}")
    n_kv = c.num_key_value_heads
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=512,  # not 8192: TL 2 keeps an n_ctx x n_ctx causal mask per layer (2 GB at 8192); prompts are short
        eps=c.rms_norm_eps,
        d_vocab=c.vocab_size,
        act_fn=c.hidden_act,
        n_key_value_heads=n_kv if n_kv != c.num_attention_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=theta,
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        ungroup_grouped_query_attention=True,
        dtype=torch.float32,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_llama_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, hf


def run_ac(work: Path, ig_samples: int, batch_size: int) -> None:
    import torch
    import transformer_lens
    import transformers
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.edge_attribution_patching import edge_attribution_patching_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model

    torch.manual_seed(0)
    data = torch.load(work / "prompts.pt")
    clean, corrupt, answers = data["clean"], data["corrupt"], data["answers"]
    if data["pos"] != -1:
        raise NotImplementedError("auto-circuit's slice_output='last_seq' reads the last position only")
    model, hf = _hooked_transformer(data["hf_dir"])
    if clean.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"prompts of {clean.shape[1]} tokens are longer than n_ctx {model.cfg.n_ctx}")
    with torch.no_grad():
        hf_logits = hf(clean).logits[:, -1]
        model.set_use_split_qkv_input(True)
        model.set_use_attn_result(True)
        model.set_use_hook_mlp_in(True)
        tl_logits = model(clean)[:, -1]
    ours = data["logits_last"]

    def centred(x):  # our bridge's compatibility mode centres the unembedding: logits differ by a per-row constant
        return x - x.mean(-1, keepdim=True)

    check = {
        "max_abs_tl2_vs_hf4": float((tl_logits - hf_logits).abs().max()),
        "max_abs_centred_tl2_vs_our_bridge": float((centred(tl_logits) - centred(ours)).abs().max()),
        "max_abs_centred_hf4_vs_our_bridge": float((centred(hf_logits) - centred(ours)).abs().max()),
        "logit_scale": float(hf_logits.abs().max()),
    }
    print("logit check (last position, 8 prompts):", check)
    if check["max_abs_tl2_vs_hf4"] > 1e-3 or check["max_abs_centred_tl2_vs_our_bridge"] > 1e-3:
        raise RuntimeError(f"TL 2's model does not reproduce the logits: {check}")
    del hf

    pm = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    dataset = PromptDataset(clean, corrupt, answers[:, :1], answers[:, 1:])
    # auto-circuit keeps every dest's [n_src batch pos d_model] difference for the backward (~9 GB at batch 8
    # here): batches of 2. Its scores sum the batch means, so they are divided by the number of batches.
    if len(clean) % batch_size:
        raise ValueError(f"{len(clean)} prompts do not split into batches of {batch_size} (it drops the last)")
    n_batches = len(clean) // batch_size
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=batch_size, shuffle=False)

    def keyed(prune_scores, scale: float = 1.0) -> dict[str, float]:
        return {e.name: float(e.prune_score(prune_scores)) * scale / n_batches for e in pm.edges}

    out: dict = {"check": check, "seconds": {}, "scores": {}, "n_edges": len(pm.edges), "versions": {}}
    runs = {
        "eap": lambda: keyed(
            mask_gradient_prune_scores(
                pm, loader, None, grad_function="logit", answer_function="avg_diff", mask_val=0.0
            )
        ),
        "ieg": lambda: keyed(
            mask_gradient_prune_scores(
                pm, loader, None, "logit", "avg_diff", integrated_grad_samples=ig_samples, mask_val=None
            ),
            1.0 / (ig_samples + 1),  # it sums the gradients of ig_samples + 1 mask values
        ),
        "eap_slow": lambda: keyed(edge_attribution_patching_prune_scores(pm, loader, None)),
    }
    out["versions"] = {
        "transformer_lens": transformer_lens.__version__ if hasattr(transformer_lens, "__version__") else "?",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "ig_samples": ig_samples,
    }
    if ig_samples <= 0:
        del runs["ieg"]
    for name, fn in runs.items():
        start = time.perf_counter()
        out["scores"][name] = fn()
        out["seconds"][name] = time.perf_counter() - start
        print(f"auto-circuit {name}: {out['seconds'][name]:.1f} s")
        (work / "ac_scores.json").write_text(json.dumps(out))  # kept as each one ends
    (work / "ac_scores.json").write_text(json.dumps(out))


# ---------------------------------------------------------------- step 3: compare (our venv)


def ac_to_ours(name: str) -> str:
    """auto-circuit's edge name (``src->dest``) in our convention (``upstream->downstream``).

    >>> ac_to_ours("A3.4->A7.1.K"), ac_to_ours("Resid Start->MLP 0"), ac_to_ours("MLP 29->Resid End")
    ('a3.h4->a7.h1<k>', 'input->m0', 'm29->logits')
    """
    src, dest = name.split("->")

    def node(n: str) -> str:
        if n == "Resid Start":
            return "input"
        if n == "Resid End":
            return "logits"
        if n.startswith("MLP "):
            return f"m{int(n[4:])}"
        parts = n[1:].split(".")
        head = f"a{int(parts[0])}.h{int(parts[1])}"
        return head if len(parts) == 2 else f"{head}<{parts[2].lower()}>"

    return f"{node(src)}->{node(dest)}"


def _stats(x, y, names: list[str]) -> dict:
    import numpy as np
    import pandas as pd

    x, y = np.asarray(x, float), np.asarray(y, float)
    top = {}
    for k in (20, 100):
        a = set(np.argsort(-np.abs(x))[:k].tolist())
        b = set(np.argsort(-np.abs(y))[:k].tolist())
        top[f"top{k}_overlap_abs"] = len(a & b)
        a = set(np.argsort(-x)[:k].tolist())
        b = set(np.argsort(-y)[:k].tolist())
        top[f"top{k}_overlap_signed"] = len(a & b)
    diff = np.abs(x - y)
    worst = int(diff.argmax())
    return {
        "pearson": float(np.corrcoef(x, y)[0, 1]),
        "spearman": float(pd.Series(x).rank().corr(pd.Series(y).rank())),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_edge": names[worst],
        "max_abs_score": float(np.abs(x).max()),
        "rel_max_abs_diff": float(diff.max() / np.abs(x).max()),
        "lstsq_scale_theirs_on_ours": float((x * y).sum() / (x * x).sum()),
        "sign_agreement": float(np.mean(np.sign(x) == np.sign(y))),
        **top,
    }


def run_compare(work: Path) -> dict:
    ours = json.loads((work / "ours_scores.json").read_text())
    ac = json.loads((work / "ac_scores.json").read_text())
    mapped = {m: {ac_to_ours(k): v for k, v in s.items()} for m, s in ac["scores"].items()}
    names = sorted(ours["scores"]["eap"])
    theirs_names = set(mapped["eap"])
    common = [n for n in names if n in theirs_names]
    pairs = {
        "ours_eap_vs_ac_eap": ("eap", "eap"),
        "ours_eap_vs_ac_eap_slow": ("eap", "eap_slow"),
        "ours_eap_ig_vs_ac_ieg": ("eap-ig", "ieg"),
        "ours_eap_vs_ac_ieg": ("eap", "ieg"),
    }
    comparisons = {}
    for label, (mine, theirs) in pairs.items():
        if theirs not in mapped:
            continue
        x = [ours["scores"][mine][n] for n in common]
        y = [mapped[theirs][n] for n in common]
        comparisons[label] = _stats(x, y, common)
    if "eap_slow" in mapped:
        x = [mapped["eap"][n] for n in common]
        y = [mapped["eap_slow"][n] for n in common]
        comparisons["ac_eap_vs_ac_eap_slow"] = _stats(x, y, common)

    def top(scores: dict[str, float], k: int = 20) -> list[list]:
        return [[n, scores[n]] for n in sorted(common, key=lambda n: -abs(scores[n]))[:k]]

    out = {
        "model": "SmolLM2-135M-Instruct (same HF weights in both stacks)",
        "task": "IOI, workbench.circuits.tasks.ioi_task(model, 8): the same token ids in both",
        "edges_ours": len(names),
        "edges_auto_circuit": len(theirs_names),
        "edges_matched": len(common),
        "logit_check": ac["check"],
        "versions_auto_circuit_side": {"auto_circuit": "1.0.1", **ac["versions"]},
        "seconds": {"ours": ours["seconds"], "auto_circuit": ac["seconds"]},
        "conventions": (
            "Both score an edge by the estimated drop of the logit difference when the edge is patched from the "
            "counterfactual, averaged over prompts: auto-circuit's loss is -mean(logit diff) and its mask moves an "
            "edge from clean (0) to counterfactual (1), so d loss / d mask at 0 = our score; no sign flip or "
            "rescaling applied. auto-circuit's integrated edge gradients sum ig_samples+1 mask points (0..1, both "
            "ends) moving all edges at once; divided here by the number of points. Our EAP-IG integrates along the "
            "input embedding (k/5, k=1..5), so 'ours_eap_ig_vs_ac_ieg' compares two different IG paths."
        ),
        "comparisons": comparisons,
        "top20_ours_eap": top(ours["scores"]["eap"]),
        "top20_ac_eap": top(mapped["eap"]),
        "top20_ours_eap_ig": top(ours["scores"]["eap-ig"]),
        **({"top20_ac_ieg": top(mapped["ieg"])} if "ieg" in mapped else {}),
    }
    RESULT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"matched {len(common)} of {len(names)} (ours) / {len(theirs_names)} (auto-circuit) edges")
    for label, s in comparisons.items():
        print(
            f"{label}: Pearson {s['pearson']:.6f}, Spearman {s['spearman']:.6f}, max |diff| {s['max_abs_diff']:.2e} "
            f"(max |score| {s['max_abs_score']:.2e}), scale {s['lstsq_scale_theirs_on_ours']:.4f}, "
            f"top-20 overlap {s['top20_overlap_abs']}/20"
        )
    print(f"wrote {RESULT.relative_to(ROOT)}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("ours", "ac", "compare", "all"))
    parser.add_argument("--work", type=Path, default=WORK, help="folder for prompts and per-edge scores")
    parser.add_argument("--prompts", type=int, default=8, help="IOI prompts")
    parser.add_argument(
        "--ig-samples", type=int, default=0, help="also auto-circuit's integrated edge gradients with this many samples"
    )
    parser.add_argument("--ac-batch", type=int, default=2, help="prompts per auto-circuit batch (memory)")
    parser.add_argument("--ac-python", default="/work/acvenv2/bin/python", help="python of the auto-circuit venv")
    args = parser.parse_args(argv)
    if args.command is None:
        print("auto_circuit_compare: needs a command (ours / ac / compare / all) and the auto-circuit venv; skipped")
        return {}
    if args.command in ("ours", "all"):
        run_ours(args.work, args.prompts)
    if args.command == "ac":
        run_ac(args.work, args.ig_samples, args.ac_batch)
    if args.command == "all":
        cmd = [args.ac_python, __file__, "ac", "--work", str(args.work), "--ig-samples", str(args.ig_samples)]
        cmd += ["--ac-batch", str(args.ac_batch)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": ""})
    if args.command in ("compare", "all"):
        return run_compare(args.work)
    return {}


if __name__ == "__main__":
    main()
