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
from jaxtyping import Int
from torch import Tensor

__all__ = ["Encoded", "check_texts", "encode_prompt", "encode_replies", "has_chat_template"]


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

    Raises:
        ValueError: an empty text (it would train on nothing but the end-of-turn marker), or a
            chat prompt that fills ``max_len`` by itself (no reply token would be scored).
    """
    check_texts(texts, at_least_one=False)
    if chat and has_chat_template(tokenizer):
        prompt = _prompt_text(tokenizer, user_prompt, system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(prompt_ids) >= max_len:
            raise ValueError(
                f"the chat prompt around each reply (user_prompt {user_prompt[:40]!r} in the chat template) takes "
                f"{len(prompt_ids)} tokens, so max_len={max_len} leaves no room for the reply: raise max_len above "
                f"{len(prompt_ids)} or shorten user_prompt / system_prompt"
            )
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
    if out and not any(any(e.scored) for e in out):
        raise ValueError(
            "every text is a single token, so no next token is scored: give longer texts (or max_len >= 2)"
        )
    return out


def check_texts(texts: Sequence[str], *, at_least_one: bool = True) -> None:
    """Refuse non-strings and empty (white-space) texts, naming them, and (``at_least_one``) an empty list."""
    if isinstance(texts, str):
        raise TypeError("texts is one string: pass a list of texts, e.g. [text]")
    if at_least_one and len(texts) == 0:
        raise ValueError("no texts: pass at least one text to train or evaluate on")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(texts)} texts are empty or not strings (indices {bad[:10]}"
            f"{', ...' if len(bad) > 10 else ''}): an empty reply trains on nothing but the end-of-turn marker; "
            "drop them first (load_texts and the alignment corpora already do)"
        )


def encode_prompt(
    tokenizer, user_message: str, *, system_prompt: str | None = "", chat: bool = True, max_len: int | None = None
) -> Int[Tensor, "1 pos"]:
    """Token ids that prompt a reply to ``user_message`` (chat template with generation prompt, or the bare text).

    Raises ``ValueError`` for an empty message, and for a prompt longer than ``max_len`` tokens (default: the
    tokenizer's ``model_max_length`` when it states a real one); a prompt is never cut silently.
    """
    if not isinstance(user_message, str) or not user_message.strip():
        raise ValueError(f"the prompt is empty ({user_message!r}): give a message to reply to")
    text = (
        _prompt_text(tokenizer, user_message, system_prompt) if chat and has_chat_template(tokenizer) else user_message
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    limit = max_len if max_len is not None else getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 10**7 and len(ids) > limit:
        raise ValueError(
            f"the prompt is {len(ids)} tokens, longer than the context of {limit} tokens: shorten it "
            f"(it starts {user_message[:40]!r})"
        )
    return torch.tensor([ids])
