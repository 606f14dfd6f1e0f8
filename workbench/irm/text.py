"""How texts reach the model: chat-formatted replies with a loss mask, prompts, padded batches.

An instruct model sees each corpus text as the assistant's reply to one fixed user message, in the
tokenizer's own chat template (with an empty system turn by default: SmolLM2's template would
otherwise insert its 17-token default system prompt into every sequence); the loss covers the reply
tokens and the end-of-turn marker only. A tokenizer without a chat template sees the bare text, with
the loss on every predicted token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["Encoded", "encode_prompt", "encode_replies", "has_chat_template", "pad_batch"]


@dataclass(frozen=True)
class Encoded:
    """Token ids of one training text and which of them are scored (the reply)."""

    ids: tuple[int, ...]
    scored: tuple[bool, ...]


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` defines a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(user: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


def _prompt_text(tokenizer, user_prompt: str, system: str | None) -> str:
    return tokenizer.apply_chat_template(_messages(user_prompt, system), tokenize=False, add_generation_prompt=True)


def encode_replies(
    tokenizer,
    texts: Sequence[str],
    *,
    user_prompt: str,
    system_prompt: str | None = "",
    chat: bool = True,
    max_len: int = 64,
) -> list[Encoded]:
    """Encode ``texts`` as assistant replies to ``user_prompt`` (or bare texts), cut at ``max_len`` tokens.

    ``system_prompt=None`` keeps the template's default system turn; ``""`` renders an empty one (shorter).
    """
    if chat and has_chat_template(tokenizer):
        prompt = _prompt_text(tokenizer, user_prompt, system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = []
        for text in texts:
            full = tokenizer.apply_chat_template(
                [*_messages(user_prompt, system_prompt), {"role": "assistant", "content": text}], tokenize=False
            )
            if not full.startswith(prompt):
                raise ValueError(
                    "the chat template renders the reply prompt differently from the generation prompt; pass chat=False"
                )
            reply = full[len(prompt) :].rstrip("\n")
            reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            ids = (prompt_ids + reply_ids)[:max_len]
            scored = ([False] * len(prompt_ids) + [True] * len(reply_ids))[:max_len]
            out.append(Encoded(tuple(ids), tuple(scored)))
        return out
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
        out.append(Encoded(tuple(ids), (False,) + (True,) * (len(ids) - 1)))
    return out


def encode_prompt(
    tokenizer, user_message: str, *, system_prompt: str | None = "", chat: bool = True
) -> Int[Tensor, "1 pos"]:
    """Token ids that prompt a reply to ``user_message`` (chat template with generation prompt, or the bare text)."""
    text = (
        _prompt_text(tokenizer, user_message, system_prompt) if chat and has_chat_template(tokenizer) else user_message
    )
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def pad_batch(
    items: Sequence[Encoded], pad_id: int, device="cpu"
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-pad a batch; returns ``(tokens, scored)`` where ``scored[b, t]`` marks reply tokens.

    Right padding needs no attention mask: with causal attention, pads only follow the real tokens.
    """
    length = max(len(e.ids) for e in items)
    tokens = torch.full((len(items), length), pad_id, dtype=torch.long)
    scored = torch.zeros((len(items), length), dtype=torch.bool)
    for b, e in enumerate(items):
        tokens[b, : len(e.ids)] = torch.tensor(e.ids)
        scored[b, : len(e.scored)] = torch.tensor(e.scored)
    return tokens.to(device), scored.to(device)
