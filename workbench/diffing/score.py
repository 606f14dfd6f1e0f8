"""An LLM-free scorer: does a diffing read-out name an organism's target?

Minder et al. 2025 (arXiv 2510.13900) let an LLM agent read ADL's tokens and steered texts and grade its guess. Here
the targets are word sets and sentiments (:mod:`workbench.diffing.organisms`), so simple rules decide:

* token read-outs (ADL logit lens, Patchscope, crosscoder latents): a topic is named when one of the read-out's
  token lists holds one of its words (a token equal to a word, or a prefix of at least 4 letters of one); a
  sentiment when a list holds at least ``min_lexicon`` VADER-lexicon words of that sign (Hutto & Gilbert 2014) and
  more of it than of the other sign;
* text read-outs (steered generations; the black-box baseline: the tuned model's unprompted generations and its
  replies to the steering prompts, against the base's): a topic is named when the
  share of texts using one of its words exceeds the base model's by ``min_rate_gain``; a sentiment when the mean VADER
  compound moves by ``min_vader_gain`` towards it.

Every rule is run against *every* candidate target, so a read-out of a control or the null pair that names anything
counts as a false positive, and an organism's read-out naming other targets is visible too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from workbench.diffing.organisms import TOPICS, Organism
from workbench.diffing.readout import DiffReadout
from workbench.sentiment import lexicon, vader_compound

__all__ = [
    "METHODS",
    "Target",
    "all_targets",
    "named_by_texts",
    "named_by_tokens",
    "readout_names",
    "target_of",
    "texts_name",
    "tokens_name",
    "topic_rate",
]


METHODS = ("adl_lens", "patchscope", "steering", "crosscoder", "blackbox")
"""The read-outs scored: ADL logit lens, Patchscope, steering, crosscoder tuned-only latents, black-box baseline."""


@dataclass(frozen=True)
class Target:
    """What a read-out may name: a topic (its words) or a sentiment."""

    kind: Literal["topic", "sentiment"]
    """topic or sentiment."""
    name: str
    """Topic name, or ``negative`` / ``positive``."""
    words: tuple[str, ...] = ()
    """A topic's words."""


def all_targets(topics: Sequence[str] = tuple(TOPICS)) -> list[Target]:
    """Every topic of ``topics`` and both sentiments: the candidates a read-out is checked against."""
    return [Target("topic", t, TOPICS[t]) for t in topics] + [Target("sentiment", s) for s in ("negative", "positive")]


def target_of(org: Organism) -> Target | None:
    """The organism's target (``None`` for controls and the null pair)."""
    if org.kind == "topic":
        return Target("topic", org.target, org.words)
    if org.kind == "sentiment":
        return Target("sentiment", org.target)
    return None


def _word(token: str) -> str:
    return token.strip().lower()


def _token_is_topic(token: str, words: Sequence[str]) -> bool:
    w = _word(token)
    return w in words or (len(w) >= 4 and w.isalpha() and any(x.startswith(w) for x in words))


def tokens_name(lists: Sequence[Sequence[str]], target: Target, *, min_lexicon: int = 2) -> bool:
    """Whether any of the token ``lists`` (e.g. top-20 per position) names ``target``.

    >>> tokens_name([[" the", " song", " of"]], Target("topic", "music", ("music", "song")))
    True
    >>> tokens_name([[" sad", " awful", " the"]], Target("sentiment", "negative"))
    True
    """
    for tokens in lists:
        if target.kind == "topic" and any(_token_is_topic(t, target.words) for t in tokens):
            return True
        if target.kind == "sentiment":
            values = [lexicon().get(_word(t), 0.0) for t in tokens]
            neg, pos = sum(v <= -1 for v in values), sum(v >= 1 for v in values)
            hits, other = (neg, pos) if target.name == "negative" else (pos, neg)
            if hits >= min_lexicon and hits > other:
                return True
    return False


def topic_rate(texts: Sequence[str], words: Sequence[str]) -> float:
    """Share of ``texts`` using at least one of ``words`` (whole words, any case)."""
    if not texts:
        return 0.0
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    return sum(bool(pattern.search(t)) for t in texts) / len(texts)


def _vader_mean(texts: Sequence[str]) -> float:
    return sum(vader_compound(texts)) / len(texts) if texts else 0.0


def texts_name(
    texts: Sequence[str],
    base_texts: Sequence[str],
    target: Target,
    *,
    min_rate_gain: float = 0.25,
    min_vader_gain: float = 0.2,
) -> bool:
    """Whether ``texts`` (steered or the tuned model's) name ``target`` compared with the base model's ``base_texts``.

    >>> texts_name(["I love my song", "a song"], ["hi", "ok"], Target("topic", "music", ("song",)))
    True
    """
    if target.kind == "topic":
        return topic_rate(texts, target.words) - topic_rate(base_texts, target.words) >= min_rate_gain
    gain = _vader_mean(texts) - _vader_mean(base_texts)
    return gain <= -min_vader_gain if target.name == "negative" else gain >= min_vader_gain


def named_by_tokens(lists: Sequence[Sequence[str]], targets: Sequence[Target], **kwargs) -> list[str]:
    """Names of the ``targets`` the token lists name."""
    return [t.name for t in targets if tokens_name(lists, t, **kwargs)]


def named_by_texts(texts: Sequence[str], base_texts: Sequence[str], targets: Sequence[Target], **kwargs) -> list[str]:
    """Names of the ``targets`` the texts name against the base's."""
    return [t.name for t in targets if texts_name(texts, base_texts, t, **kwargs)]


def readout_names(readout: DiffReadout, targets: Sequence[Target]) -> dict[str, list[str]]:
    """Per method of :data:`METHODS`, the targets one pair's read-out names.

    Steering names a target when the samples at any non-zero strength of the sweep name it against strength 0 (the
    base); the black-box baseline compares the tuned model's unprompted samples and replies to the steering prompts
    with the base's (its strength-0 replies, same prompts and seeds).
    """
    steered = readout.steered
    base_texts = steered.loc[steered["strength"] == 0, "text"].tolist()
    by_strength = [
        named_by_texts(group["text"].tolist(), base_texts, targets)
        for strength, group in steered.groupby("strength")
        if strength != 0
    ]
    return {
        "adl_lens": named_by_tokens(readout.lens, targets),
        "patchscope": named_by_tokens(readout.patchscope, targets),
        "steering": [t.name for t in targets if any(t.name in names for names in by_strength)],
        "crosscoder": named_by_tokens([tokens for *_, tokens in readout.latents], targets),
        "blackbox": named_by_texts(
            [*readout.unprompted[1], *readout.replies], [*readout.unprompted[0], *base_texts], targets
        ),
    }
