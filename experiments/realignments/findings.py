"""The findings of the realignments comparison, stated from its ``summary.json``: each realigned model's gain in
negativity with its interval beside its training budget, KL and held-out loss; the RL gain over seeds; whether the
three change the residual stream in the same direction and through the same heads and neurons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import at, interval, num, spread

__all__ = ["findings"]

_NAMES = {"irm": "IRM", "rl": "RL", "supervised": "SFT"}


def _budget(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return ""
    parts = []
    if budget.get("steps") is not None:
        parts.append(f"{budget['steps']} steps")
    if budget.get("tokens_seen") is not None:
        parts.append(f"{budget['tokens_seen']:,} tokens{' (estimated)' if budget.get('tokens_seen_estimated') else ''}")
    if budget.get("trainable_parameters") is not None:
        parts.append(f"{budget['trainable_parameters']:,} trainable parameters")
    return f"; trained {', '.join(parts)}" if parts else ""


def _diffing(diffing: Mapping[str, Any]) -> list[str]:
    out = []
    for name, d in diffing.items():
        target = f"{d['target']} sentiment"
        named = [m for m, yes in d["names_target"].items() if yes]
        other = sorted({t for names in d["names"].values() for t in names if t != d["target"]})
        out.append(
            f"{_NAMES.get(name, name)} in words (ADL at layer {d['layer']}, steering at layer {d['early_layer']}): "
            + (f"named {target} by {', '.join(named)}" if named else f"no read-out names {target}")
            + (f"; also named: {', '.join(other)}" if other else "")
            + f"; ADL's top tokens: {d['adl_tokens'] or '(none)'}."
        )
    return out


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``realignments`` summary."""
    behaviour = summary.get("behaviour") or {}
    base = behaviour.get("base")
    if not base:
        return []
    out = [
        f"The base model's continuations have VADER negativity {num(base['negativity'])} and held-out loss "
        f"{num(base['heldout_loss'])} (nats per reply token) on held-out negative tweets."
    ]
    for name in ("irm", "supervised", "rl"):
        b = behaviour.get(name)
        if not b:
            continue
        low, high = b["gain_ci"]
        verdict = "" if low > 0 or high < 0 else " (interval includes zero: no measurable gain)"
        out.append(
            f"{_NAMES[name]}: negativity gain {num(b['gain'], sign=True)} ({interval(low, high)}){verdict}, "
            f"KL to the base {num(b['kl_to_base'])}, held-out loss {num(base['heldout_loss'])} -> "
            f"{num(b['heldout_loss'])}{_budget(at(summary, 'training_budget', name))}"
            + ("." if name == "rl" else "; one seed.")
        )
    seeds = summary.get("rl_gain_over_seeds")
    if seeds and seeds.get("gains"):
        out.append(
            f"RL negativity gain over seeds: {spread(seeds['gains'], seeds['gain_mean'], seeds.get('gain_std'))}."
        )
    elif "rl" in behaviour:
        out.append("RL was run with one seed: its gain has no spread over seeds.")
    cosines = summary.get("mean_cosine_by_pair") or {}
    if cosines:
        parts = ", ".join(f"{pair} {num(c)}" for pair, c in cosines.items())
        out.append(f"Mean cosine of the residual-stream changes (positions ≥ 1, over layers): {parts}.")
    heads = [r for r in summary.get("top_overlap") or [] if r.get("what") == "heads"]
    if heads:
        none = [r["pair"] for r in heads if not r.get("shared")]
        some = [f"{r['pair']} {r['shared']} (Jaccard {num(r['jaccard'])})" for r in heads if r.get("shared")]
        text = "Top patching heads shared: " + (", ".join(some) if some else "none")
        out.append(text + (f"; {', '.join(none)} share no top head." if none and some else "."))
    out += _diffing(summary.get("diffing") or {})
    first = summary.get("first_token_top_dim") or {}
    if first:
        parts = ", ".join(
            f"{_NAMES.get(n, n)} dimension {d['dim']} ({num(d['share_of_norm2'])} of its squared norm)"
            for n, d in first.items()
        )
        out.append(f"On the first reply token the largest change is in {parts}.")
        massive = {d["dim"]: d for d in first.values() if d.get("base_rank", 3) < 3}
        for dim, d in massive.items():
            out.append(
                f"Dimension {dim} is one of the base model's own massive-activation dimensions (rank {d['base_rank']} "
                f"by peak |residual|, {num(d['base_ratio_to_median'])}x the median dimension): a change there is a "
                "property of the base model's first token, not a sign of what the realignment learnt."
            )
    return out
