"""The findings of a base-vs-tuned comparison, stated from its ``summary.json``: the logit difference of both
models, the components whose direct attribution changed most, how much of the gap patching one site or the top
heads recovers, and for an RL model its held-out reward gain with its interval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.findings import interval, num

__all__ = ["findings"]


def _site(key: str) -> str:
    """``27_mlp_out`` -> ``layer 27 mlp_out``."""
    layer, _, kind = key.partition("_")
    return f"layer {layer} {kind}" if layer.isdigit() else key


def findings(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences from a ``model_diff`` summary (or its ``irm/`` sub-report's; one tuning seed)."""
    other = next(
        (k.removeprefix("logit_diff_") for k in summary if k.startswith("logit_diff_") and k != "logit_diff_base"), None
    )
    if other is None or "logit_diff_base" not in summary:
        return []
    method = {"rl": "RL"}.get(summary.get("method", ""), summary.get("method", "tuned"))
    label = {"tuned": f"the {method} model", "irm": "the IRM-injected model"}.get(other, other)
    answers = summary.get("answers") or []
    pair = f" ({answers[0][0]!r} − {answers[0][1]!r})" if answers and len(answers[0]) == 2 else ""
    n = len(summary.get("prompts") or [])
    out = [
        f"Mean logit difference{pair} over {n} prompts: base {num(summary['logit_diff_base'])}, {label} "
        f"{num(summary[f'logit_diff_{other}'])} (one {'IRM' if other == 'irm' else 'tuning'} seed)."
    ]
    layers = summary.get("top_attribution_differences") or {}
    heads = summary.get("top_head_attribution_differences") or {}
    if layers:
        (site, change), *_ = layers.items()
        text = f"The largest change in direct logit attribution is {_site(site)} ({num(change, sign=True)})"
        if heads:
            (head, head_change), *_ = heads.items()
            text += f"; among heads, {head} ({num(head_change, sign=True)})"
        out.append(text + ".")
    resid = (summary.get("top_patching") or {}).get("resid_pre") or []
    if resid:
        top = resid[0]
        out.append(
            f"Patching {label}'s residual stream into the base at layer {top['layer']}, position {top['pos']} "
            f"({top.get('token', '')!r}) recovers {num(top['normalized'])} of the gap (1 = all of it), the most of "
            "any single resid_pre site."
        )
    if "joint_head_patch_normalized" in summary:
        heads_named = ", ".join(summary.get("top_heads") or [])
        flips = summary.get("joint_head_patch_flips_base")
        verdict = "and flips the base's preference" if flips else "and does not flip the base's preference"
        out.append(
            f"Patching the top heads ({heads_named}) together recovers {num(summary['joint_head_patch_normalized'])} "
            f"of the gap {verdict}."
        )
        if summary["joint_head_patch_normalized"] < 0.5:
            out.append("Most of the change is not carried by these few heads.")
    rl = summary.get("rl_evidence")
    if rl:
        low, high = rl["gain_ci95"]
        out.append(
            f"On {rl['n_prompts']} held-out prompts the RL model's reward is {num(rl['reward_tuned'])} against the "
            f"base's {num(rl['reward_base'])}: gain {num(rl['gain'], sign=True)} ({interval(low, high)}), "
            f"KL to the base {num(rl['kl_to_base'], 3)} nats per token."
        )
        if low <= 0 <= high:
            out.append("The RL gain's interval includes zero: RL did not measurably move the reward.")
    irm = summary.get("irm")
    if isinstance(irm, Mapping) and "logit_diff_irm" in irm:
        out.append(
            f"The IRM ({irm.get('checkpoint', '')}) moves the same logit difference to {num(irm['logit_diff_irm'])} "
            "(its own analyses: irm/report.html)."
        )
    return out
