"""Pairs of models compared position by position (a base and its fine-tune): checked before they are compared.

Every comparison of two models (model diffing, patching one into the other, activation-difference lenses,
circuit diffs) feeds both the same text and reads them at the same positions. That only means something if
both turn text into the same tokens: the same vocabulary, the same BOS convention (a BOS token on one side
only shifts every position and dominates any raw-text difference) and the same special tokens.
:func:`check_pair` refuses a pair that differs in any of them, naming what differs and what to do, and
returns the shared :class:`Tokenization` for the report to state. :func:`share_weights` lets a fine-tune
reuse the base's copy of every weight tuning left unchanged.

Example:
    >>> shared = check_pair(model, model)
    >>> shared.prepend_bos, shared.vocab_size
    (False, 49152)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from workbench.models import REGISTRY, adapter_base, is_adapter_dir, load_tokenizer, tokenizer_prepends_bos

__all__ = ["PROBES", "PairMismatch", "Tokenization", "check_pair", "share_weights", "tokenization"]

PROBES = (
    "This movie was really bad.",
    "  Hello,\tworld!\n\nÜber 123 naïve émojis 🙂",
    "<|im_start|>user\nHi<|im_end|>",
)
"""Texts both sides must encode to the same ids (catches normalisers, pre-tokenisers and special-token parsing)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Tokenization:
    """How a model turns raw text into tokens: what both sides of a checked pair share."""

    vocab_size: int
    """Tokens in the vocabulary (added tokens included)."""
    vocab_sha: str
    """Hash of the whole vocabulary (token -> id)."""
    prepend_bos: bool
    """Whether a BOS token goes in front of raw text."""
    special_tokens: tuple[str, ...]
    """``role=token`` for bos / eos / unk (bos falls back to eos, as TransformerLens does), then the other special
    tokens; the pad token is left out (training code sets it, and it never enters an unpadded comparison)."""
    chat_template_sha: str | None
    """Hash of the chat template; ``None`` without one."""
    probe_ids: tuple[tuple[int, ...], ...] = field(repr=False)
    """The ids of :data:`PROBES`, as the model is fed them."""

    def describe(self) -> str:
        """One sentence for a report."""
        bos = self.special_tokens[0].removeprefix("bos=")
        roles = [t for t in self.special_tokens if t.startswith(("bos=", "eos=", "unk="))]
        more = len(self.special_tokens) - len(roles)
        return (
            f"{self.vocab_size}-token vocabulary (sha {self.vocab_sha}); "
            + (f"{bos} prepended to raw text" if self.prepend_bos else "no BOS prepended to raw text")
            + f"; special tokens {', '.join(roles)}{f' and {more} more' if more else ''}; "
            + (f"chat template sha {self.chat_template_sha}" if self.chat_template_sha else "no chat template")
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields a report's ``summary.json`` records (the probe ids left out), with :meth:`describe`."""
        return {k: v for k, v in asdict(self).items() if k != "probe_ids"} | {"description": self.describe()}


class PairMismatch(ValueError):
    """Two models tokenize differently; the message lists each difference and what to do."""


Source = TransformerBridge | PreTrainedTokenizerBase | str | os.PathLike
"""A bridge, a Hugging Face tokenizer, or a registry name / folder / adapter folder / hub id."""


def _encoder(source: Source) -> tuple[Any, bool, Callable[[str], list[int]], int | None]:
    """(tokenizer, prepend_bos, text -> ids as the model is fed them, d_vocab of the model or None)."""
    if isinstance(source, TransformerBridge):
        prepend = bool(source.cfg.default_prepend_bos)
        return source.tokenizer, prepend, lambda t: source.to_tokens(t, truncate=False)[0].tolist(), source.cfg.d_vocab
    if isinstance(source, PreTrainedTokenizerBase):
        tokenizer, override = source, None
    else:
        tokenizer = load_tokenizer(source)
        spec = REGISTRY.get(adapter_base(source) if is_adapter_dir(source) else str(source))
        override = spec.prepend_bos if spec is not None else None
    own = tokenizer_prepends_bos(tokenizer)
    prepend = own if override is None else override
    bos = tokenizer.convert_tokens_to_ids(tokenizer.bos_token or tokenizer.eos_token)
    eos = tokenizer.eos_token_id
    appends_eos = (
        eos is not None
        and tokenizer("a")["input_ids"][-1:] == [eos] != tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
    )

    def encode(text: str) -> list[int]:
        """As the bridge's ``to_tokens`` does it: the tokenizer's ids, BOS as ``prepend`` says, no trailing EOS."""
        ids = tokenizer(text)["input_ids"]
        ids = ids[1:] if own and not prepend else [bos, *ids] if prepend and not own else ids
        return ids[:-1] if appends_eos and len(ids) > 1 and ids[-1] == eos else ids

    return tokenizer, prepend, encode, None


def tokenization(source: Source) -> Tokenization:
    """The :class:`Tokenization` of a bridge, a tokenizer, or a model by name or folder (no weights load)."""
    return _tokenization(*_encoder(source)[:3])


def _tokenization(tokenizer: Any, prepend: bool, encode: Callable[[str], list[int]]) -> Tokenization:
    vocab = tokenizer.get_vocab()
    roles = {"bos": tokenizer.bos_token or tokenizer.eos_token, "eos": tokenizer.eos_token, "unk": tokenizer.unk_token}
    named = [f"{role}={token}" for role, token in roles.items() if token is not None]
    others = sorted(
        {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        - set(roles.values())
        - {tokenizer.pad_token}
    )
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return Tokenization(
        vocab_size=len(vocab),
        vocab_sha=_sha("\n".join(f"{t}\t{i}" for t, i in sorted(vocab.items(), key=lambda kv: kv[1]))),
        prepend_bos=prepend,
        special_tokens=(*named, *others),
        chat_template_sha=_sha(template) if template else None,
        probe_ids=tuple(tuple(encode(text)) for text in PROBES),
    )


def _vocab_difference(a: Any, b: Any, names: tuple[str, str]) -> str:
    va, vb = a.get_vocab(), b.get_vocab()
    only_a, only_b = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
    moved = sum(1 for t in set(va) & set(vb) if va[t] != vb[t])
    parts = [f"{names[0]} has {len(va)} tokens, {names[1]} {len(vb)}"]
    for name, only in zip(names, (only_a, only_b)):
        if only:
            parts.append(f"only in {name}: {', '.join(map(repr, only[:5]))}{', ...' if len(only) > 5 else ''}")
    if moved:
        parts.append(f"{moved} shared tokens have other ids")
    return "; ".join(parts)


def check_pair(
    base: Source, tuned: Source, *, names: tuple[str, str] = ("base", "tuned"), chat: bool = False
) -> Tokenization:
    """Refuse a pair that tokenizes differently; return the tokenization both share.

    Call it before comparing (with names or folders it loads only the tokenizers, so a bad pair fails before
    any weights load) and state :meth:`Tokenization.describe` in the report.

    Args:
        base: the base model: a bridge, a tokenizer, or a registry name / model folder / adapter folder.
        tuned: the other model, the same way.
        names: what the message calls them (e.g. the command-line flags).
        chat: also require the same chat template (for comparisons on chat-formatted text).

    Raises:
        PairMismatch: naming each difference (vocabulary, BOS convention, special tokens, encodings, model
            vocabulary size, chat template) and what to do.
    """
    (tok_a, bos_a, enc_a, d_a), (tok_b, bos_b, enc_b, d_b) = _encoder(base), _encoder(tuned)
    a, b = _tokenization(tok_a, bos_a, enc_a), _tokenization(tok_b, bos_b, enc_b)
    problems = []
    if (a.vocab_size, a.vocab_sha) != (b.vocab_size, b.vocab_sha):
        problems.append(
            f"vocabulary: {_vocab_difference(tok_a, tok_b, names)}. Compare a fine-tune with the base it was tuned "
            "from; a fine-tune that added tokens has no counterpart for them in the base"
        )
    if a.prepend_bos != b.prepend_bos:
        says = {True: "prepends BOS to raw text", False: "prepends no BOS"}
        problems.append(
            f"BOS convention: {names[0]} {says[a.prepend_bos]}, {names[1]} {says[b.prepend_bos]}. Save the base's "
            "tokenizer into the fine-tune's folder (tokenizer.save_pretrained), or set "
            "model.cfg.default_prepend_bos on one bridge to match the other"
        )
    if a.special_tokens != b.special_tokens:
        problems.append(
            f"special tokens: {names[0]} {', '.join(a.special_tokens)}; {names[1]} {', '.join(b.special_tokens)}. "
            "Save the base's tokenizer into the fine-tune's folder (tokenizer.save_pretrained)"
        )
    if not problems and a.probe_ids != b.probe_ids:
        first = next(i for i, (x, y) in enumerate(zip(a.probe_ids, b.probe_ids)) if x != y)
        problems.append(
            f"encoding: the same vocabulary splits {PROBES[first]!r} differently ({list(a.probe_ids[first])[:12]} vs "
            f"{list(b.probe_ids[first])[:12]}; normaliser or pre-tokeniser settings differ). Save the base's "
            "tokenizer into the fine-tune's folder (tokenizer.save_pretrained)"
        )
    if d_a is not None and d_b is not None and d_a != d_b:
        problems.append(
            f"model vocabulary: {names[0]}'s embedding has {d_a} rows, {names[1]}'s {d_b} (resized embeddings). "
            "Compare models with the same embedding size"
        )
    if chat and a.chat_template_sha != b.chat_template_sha:
        problems.append(
            f"chat template: {names[0]} sha {a.chat_template_sha}, {names[1]} sha {b.chat_template_sha}. Chat "
            "texts would differ: save the base's tokenizer into the fine-tune's folder, or compare on raw text"
        )
    if problems:
        raise PairMismatch(
            f"{names[0]} and {names[1]} tokenize text differently, so their positions do not line up and every "
            "difference between them would be read off different inputs:\n  - " + "\n  - ".join(problems)
        )
    return a


@torch.no_grad()
def share_weights(base: TransformerBridge, tuned: TransformerBridge) -> int:
    """Point every parameter of ``tuned`` that equals ``base``'s (same name, exactly equal) at ``base``'s tensor.

    A fine-tune that trained a few layers or LoRA matrices then holds only what changed; the rest is one copy.
    Sharing happens after both bridges are booted because compatibility mode writes new (folded, centred)
    tensors for each bridge, so the raw weights cannot be shared before; the loads' peak memory is therefore
    still two models, but what stays resident is one plus the changes. Nothing in the workbench edits weights
    in place; code that does would now edit both models.

    Returns:
        Bytes no longer held twice.
    """
    if base is tuned:
        return 0
    modules = dict(base.named_modules())
    saved = 0
    for name, module in tuned.named_modules():
        twin = modules.get(name)
        if twin is None:
            continue
        for key, param in list(module._parameters.items()):
            other = twin._parameters.get(key)
            if (
                param is None
                or other is None
                or param is other
                or param.shape != other.shape
                or param.dtype != other.dtype
                or param.device != other.device
                or not torch.equal(param, other)
            ):
                continue
            module._parameters[key] = other
            saved += param.numel() * param.element_size()
    return saved
