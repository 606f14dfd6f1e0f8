"""Sentiment of text by VADER (Hutto & Gilbert, 2014, "VADER: A Parsimonious Rule-based Model for
Sentiment Analysis of Social Media Text"; the ``vaderSentiment`` package), a scorer independent of this
project's models.

One analyzer serves every user (the IRM's replies, the RL reward, the diffing organisms' scores); it
reads its lexicon once, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

__all__ = ["analyzer", "lexicon", "vader_compound", "vader_negativity"]


@cache
def analyzer() -> SentimentIntensityAnalyzer:
    """The shared VADER analyzer (built on first use)."""
    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment in [-1, 1] of each text.

    >>> [round(v, 2) for v in vader_compound(["I love it", "I hate it"])]
    [0.64, -0.57]
    """
    return [float(analyzer().polarity_scores(t)["compound"]) for t in texts]


def vader_negativity(prompt: str, completion: str) -> float:
    """The VADER negativity of the completion alone: ``-compound``, in [-1, 1] (1 = most negative).

    A reward function ``(prompt, completion) -> float`` (see :func:`workbench.tuning.rl_tune`).
    """
    return -float(analyzer().polarity_scores(completion)["compound"])


def lexicon() -> Mapping[str, float]:
    """VADER's word valences (about -4 to +4), lower-case words as keys."""
    return analyzer().lexicon
