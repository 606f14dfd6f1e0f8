"""Generating with the IRM on and off, recording its output for every generated token, and scoring sentiment.

Generation uses the bridge's own KV-cached ``generate``: the IRM hooks fire on the prompt forward and
then on each single new position, so the record of a generation holds one IRM output per generated
token (the output at the position whose logits produced it). Sentiment is scored with VADER
(:mod:`workbench.sentiment`), a scorer independent of this project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.irm.inject import inject
from workbench.irm.module import IRM
from workbench.irm.text import encode_prompt
from workbench.sentiment import vader_compound

__all__ = ["Generation", "generate_one", "generate_replies", "generations_frame", "per_token_outputs"]


@dataclass(frozen=True)
class Generation:
    """One generated reply; ``irm_out`` is the IRM output per generated token (``None`` with the IRM off)."""

    prompt: str
    text: str
    tokens: tuple[int, ...]
    irm_out: Float[Tensor, "token layer d_model"] | None


def per_token_outputs(record: Sequence[Tensor], n_new: int) -> Float[Tensor, "token layer d_model"]:
    """IRM outputs that produced each of ``n_new`` generated tokens (batch 1), from the per-forward record.

    Forward 0 covers the prompt (its last position produced token 1); forward i covers token i alone.
    """
    steps = [record[0][0, -1]] + [r[0, -1] for r in record[1:]]
    if len(steps) != n_new:
        raise RuntimeError(
            f"the IRM ran {len(steps)} times for {n_new} generated tokens; was generate run without the KV cache?"
        )
    return torch.stack(steps)


@torch.no_grad()
def generate_one(
    model: TransformerBridge,
    irm: IRM | None,
    prompt: str,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float | None = 0.9,
    system_prompt: str | None = "",
    mask: Tensor | None = None,
) -> Generation:
    """Reply to the chat message ``prompt`` (greedy, or sampled with ``seed``), with ``irm`` injected unless
    ``None``."""
    tokens = encode_prompt(model.tokenizer, prompt, system_prompt=system_prompt).to(model.cfg.device)
    record: list[Tensor] = []
    torch.manual_seed(seed)
    with inject(model, irm, record=record, mask=mask):
        out = model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p if do_sample else None,
            stop_at_eos=True,
            verbose=False,
            use_past_kv_cache=True,
        )
    assert isinstance(out, Tensor)  # generate returns token ids for token input
    new = out[0, tokens.shape[1] :].tolist()
    text = model.tokenizer.decode(new, skip_special_tokens=True).strip()
    irm_out = per_token_outputs(record, len(new)).float().cpu() if irm is not None else None
    return Generation(prompt, text, tuple(new), irm_out)


def generate_replies(
    model: TransformerBridge,
    irm: IRM | None,
    prompts: Sequence[str],
    *,
    modes: Sequence[str] = ("greedy", "sampled"),
    seed: int = 0,
    progress: bool = False,
    **kwargs,
) -> list[tuple[str, Generation]]:
    """:func:`generate_one` for every prompt and mode (``greedy`` / ``sampled``, sample seeds ``seed + i``)."""
    jobs = [(mode, i, p) for mode in modes for i, p in enumerate(prompts)]
    return [
        (mode, generate_one(model, irm, p, do_sample=mode == "sampled", seed=seed + i, **kwargs))
        for mode, i, p in tqdm(jobs, disable=not progress, desc="generate")
    ]


def generations_frame(results: Sequence[tuple[str, Generation]], irm_label: str) -> pd.DataFrame:
    """Long format: prompt, mode, irm (label), text, n_tokens, vader."""
    texts = [g.text for _, g in results]
    return pd.DataFrame(
        {
            "prompt": [g.prompt for _, g in results],
            "mode": [m for m, _ in results],
            "irm": irm_label,
            "text": texts,
            "n_tokens": [len(g.tokens) for _, g in results],
            "vader": vader_compound(texts),
        }
    )
